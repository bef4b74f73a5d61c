"""The one-shot GPU check (bench/gpu_check.sh) as far as a CPU machine can take it: the script
refuses a machine without a GPU in one line, the GPU training-step benchmark runs all its arms
on the tiny preset on the CPU (the code path the GPU runs, on another device), and the summary
reports every step's outcome, a failed one included, with the figures of those that ran."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import gpu_summary  # noqa: E402


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU refusal")
def test_check_refuses_a_machine_without_a_gpu_in_one_line(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable}
    run = subprocess.run(
        ["bash", str(ROOT / "bench" / "gpu_check.sh"), str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert run.returncode == 2
    assert run.stderr.strip() == (
        f"gpu_check: {sys.executable} has no torch that sees a CUDA GPU; run this on a GPU machine"
    )
    assert not (tmp_path / "out").exists()


def test_train_step_arms_on_the_cpu(tmp_path):
    cmd = [sys.executable, str(ROOT / "bench" / "gpu_train_step.py"), "--preset", "tiny"]
    cmd += ["--device", "cpu", "--steps", "2", "--out", str(tmp_path)]
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads((tmp_path / "gpu_train_step.json").read_text())
    assert result["device"] == "CPU" and result["machine"]["cpu"]
    rows = {r["arm"]: r for r in result["rows"]}
    assert list(rows) == ["fp32", "bf16", "fp16", "fused"]
    assert all(r["status"] == "ok" for r in rows.values()), rows
    assert rows["fp32"]["speedup"] == 1.0 and rows["fp32"]["loss_gap_initial"] == 0.0
    for r in rows.values():
        assert r["samples_per_s"] > 0 and r["p20_ms"] <= r["ms"] <= r["p80_ms"]
    # Reduced precision changes the numbers a little, and only a little, at step 1.
    for arm in ("bf16", "fp16", "fused"):
        assert 0 < rows[arm]["loss_gap_initial"] < 0.1, (arm, rows[arm])


def _fake_check(out: Path) -> None:
    """What gpu_check.sh leaves when the tests and the train step ran, one train-step arm ran
    out of memory and the kernel benchmark timed out (no kernels.json)."""
    out.mkdir()
    (out / "gpu.txt").write_text("NVIDIA H100 80GB HBM3, 580.159.04, 81559 MiB\n")
    steps = [("tests", 0, 40), ("kernels", 124, 150), ("train_step", 0, 61), ("latency", 1, 3)]
    with open(out / "steps.jsonl", "w") as f:
        for name, rc, seconds in steps:
            f.write(json.dumps({"name": name, "rc": rc, "seconds": seconds, "log": f"{name}.log"}))
            f.write("\n")
    (out / "kernels.log").write_text("mfcc ... \nKilled by timeout\n")
    (out / "latency.log").write_text("Traceback ...\nModuleNotFoundError: No module named 'av'\n")
    (out / "pytest-gpu.xml").write_text(
        '<?xml version="1.0"?><testsuites><testsuite name="pytest" tests="4" failures="1" '
        'errors="0" skipped="1"><testcase classname="tests.test_a" name="test_ok"/>'
        '<testcase classname="tests.test_a" name="test_bad"><failure message="x"/></testcase>'
        '<testcase classname="tests.test_b" name="test_skip"><skipped/></testcase>'
        '<testcase classname="tests.test_b" name="test_ok2"/></testsuite></testsuites>'
    )
    rows = [
        {"arm": "fp32", "status": "ok", "samples_per_s": 100.0, "speedup": 1.0},
        {"arm": "bf16", "status": "ok", "samples_per_s": 250.0, "speedup": 2.5},
        {"arm": "fp16", "status": "failed: OutOfMemoryError: CUDA out of memory"},
        {"arm": "fused", "status": "ok", "samples_per_s": 300.0, "speedup": 3.0},
    ]
    train = {"device": "NVIDIA H100", "preset": "paper", "stage": "gen", "batch": 36,
             "steps": 10, "rows": rows, "machine": {}}  # fmt: skip
    (out / "gpu_train_step.json").write_text(json.dumps(train))


def test_summary_reports_every_step_a_failed_one_included(tmp_path, capsys):
    out = tmp_path / "check"
    _fake_check(out)
    assert gpu_summary.main([str(out)]) == 0
    summary = json.loads((out / "gpu_check.json").read_text())
    assert summary["gpu"].startswith("NVIDIA H100")
    status = {s["name"]: s["status"] for s in summary["steps"]}
    assert status == {
        "tests": "ok", "kernels": "timed out", "train_step": "ok", "latency": "failed (exit 1)",
    }  # fmt: skip
    tails = {s["name"]: s.get("log_tail") for s in summary["steps"]}
    assert "No module named 'av'" in tails["latency"] and tails["tests"] is None
    assert summary["tests"] == {
        "tests": 4, "failures": 1, "errors": 0, "skipped": 1, "passed": 2,
        "not_passed": ["tests.test_a::test_bad"],
    }  # fmt: skip
    assert summary["kernels"] is None and summary["latency"] == []
    arms = {r["arm"]: r["status"] for r in summary["train_step"]["rows"]}
    assert arms["fp16"].startswith("failed: OutOfMemoryError") and arms["fused"] == "ok"
    printed = capsys.readouterr().out
    assert "kernels     timed out" in printed and "fp16   failed: OutOfMemoryError" in printed
    assert "fused     300.0 samples/s 3.00x fp32" in printed


def test_summary_of_an_empty_directory_says_nothing_ran(tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    assert gpu_summary.main([str(out)]) == 0
    summary = json.loads((out / "gpu_check.json").read_text())
    assert summary == {
        "gpu": None, "steps": [], "tests": None, "kernels": None, "train_step": None,
        "latency": [],
    }  # fmt: skip
    assert shutil.which("bash")  # the check itself is a bash script
