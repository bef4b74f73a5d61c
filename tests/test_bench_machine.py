"""Benchmark results name their machine: the JSON carries `fastdavs.machine.machine_info()` and
every CSV row its `machine_summary()`, so either file alone says which CPU a figure came from.

Runs the cheapest benchmark, `bench/profile_step.py` on one tiny case (a few seconds), in a
subprocess as a user would.
"""

import csv
import json
import subprocess
import sys
from pathlib import Path

from fastdavs.machine import machine_info, machine_summary

ROOT = Path(__file__).resolve().parents[1]


def test_profile_step_records_the_machine_in_its_json_and_csv(tmp_path):
    cmd = [sys.executable, str(ROOT / "bench" / "profile_step.py"), "--preset", "tiny"]
    cmd += ["--batch-size", "2", "--reps", "1", "--cases", "audio", "--variants", "fp32"]
    cmd += ["--no-full-step", "--no-heap-phase", "--out", str(tmp_path)]
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]

    result = json.loads((tmp_path / "profile_step.json").read_text())
    machine = result["machine"]
    assert machine["cpu"] and machine["versions"]["torch"]
    assert set(machine["isa"]) >= {"avx2", "avx512f", "avx512_bf16"}
    # the child inherits this process's environment (FASTDAVS_NATIVE_BF16 included): same answer
    assert machine == machine_info()
    assert machine_summary(machine) in run.stdout  # the printed header names it too

    with (tmp_path / "profile_step.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows and [r["case"] for r in rows] == ["audio"]
    assert {r["machine"] for r in rows} == {machine_summary(machine)}
