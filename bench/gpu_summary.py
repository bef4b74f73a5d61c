"""The one JSON summary of `bench/gpu_check.sh`: every step's outcome and its key figures.

    python bench/gpu_summary.py OUT

Reads what the check's steps left in OUT: steps.jsonl (one line per step: name, exit status,
seconds, log file), gpu.txt (nvidia-smi's line), pytest-gpu.xml (the `gpu`-marked tests,
JUnit), kernels.json (bench/kernels.py), gpu_train_step.json (bench/gpu_train_step.py) and
latency-paper-*.json (bench/latency.py). Writes OUT/gpu_check.json and prints a short table. A
step that failed or left no file is reported as such, with the end of its log, and the other
sections are still filled: the summary never hides a failure and never fails on one.
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from fastdavs.io.atomic import write_json

LOG_TAIL = 1500  # characters of a failed step's log kept in the summary


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def steps(out: Path) -> list[dict]:
    """steps.jsonl, each with its status ("ok", "timed out" or "failed (exit N)") and, when not
    ok, the end of its log."""
    rows = []
    path = out / "steps.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    for line in lines:
        row = json.loads(line)
        rc = row["rc"]
        row["status"] = "ok" if rc == 0 else "timed out" if rc == 124 else f"failed (exit {rc})"
        if rc:
            try:
                row["log_tail"] = (out / row["log"]).read_text()[-LOG_TAIL:]
            except OSError:
                row["log_tail"] = "(no log)"
        rows.append(row)
    return rows


def tests(out: Path) -> dict | None:
    """Counts of the JUnit report and the names of the tests that failed or errored."""
    try:
        root = ET.parse(out / "pytest-gpu.xml").getroot()
    except (OSError, ET.ParseError):
        return None
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    counts = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors")}
    counts["skipped"] = sum(int(s.get("skipped", 0)) for s in suites)
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    counts["not_passed"] = [
        f"{case.get('classname')}::{case.get('name')}"
        for case in root.iter("testcase")
        if case.find("failure") is not None or case.find("error") is not None
    ]
    return counts


def kernels(out: Path) -> list[dict] | None:
    data = _read_json(out / "kernels.json")
    if data is None:
        return None
    keep = ("op", "case", "mode", "path", "median_s", "speedup", "max_abs_err", "note")
    return [{k: row.get(k) for k in keep} for row in data["rows"]]


def train_step(out: Path) -> dict | None:
    data = _read_json(out / "gpu_train_step.json")
    if data is None:
        return None
    return {k: data[k] for k in ("device", "preset", "stage", "batch", "steps", "rows")}


def latency(out: Path) -> list[dict]:
    found = []
    for path in sorted(out.glob("latency-paper-*.json")):
        data = _read_json(path)
        if data is None:
            continue
        keep = ("path", "fps", "speedup", "psnr_min_db", "error")
        rows = [{k: row.get(k) for k in keep} for row in data["rows"]]
        found.append({"generator": data["generator"], "builds": data["builds"], "rows": rows})
    return found


def summarise(out: Path) -> dict:
    gpu = (out / "gpu.txt").read_text().strip() if (out / "gpu.txt").exists() else None
    return {
        "gpu": gpu,
        "steps": steps(out),
        "tests": tests(out),
        "kernels": kernels(out),
        "train_step": train_step(out),
        "latency": latency(out),
    }


def report(summary: dict) -> str:
    lines = [f"GPU: {summary['gpu'] or 'unknown'}"]
    for s in summary["steps"]:
        lines.append(f"  {s['name']:11s} {s['status']:16s} {s['seconds']:6.0f} s")
    t = summary["tests"]
    if t is not None:
        lines.append(
            f"gpu tests: {t['passed']} passed, {t['failures']} failed, {t['errors']} errors, "
            f"{t['skipped']} skipped" + "".join(f"\n  not passed: {n}" for n in t["not_passed"])
        )
    ts = summary["train_step"]
    if ts is not None:
        lines.append(f"train step ({ts['preset']} {ts['stage']}, batch {ts['batch']}):")
        for r in ts["rows"]:
            if r["status"] != "ok":
                lines.append(f"  {r['arm']:6s} {r['status']}")
                continue
            gain = f"{r['speedup']:.2f}x fp32" if "speedup" in r else ""
            lines.append(f"  {r['arm']:6s} {r['samples_per_s']:8.1f} samples/s {gain}")
    for lat in summary["latency"]:
        lines.append(f"latency (paper, {lat['generator']}):")
        for r in lat["rows"]:
            fps = r.get("fps")
            lines.append(f"  {r['path']:18s} " + (f"{fps:8.1f} frames/s" if fps else r["error"]))
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    out = Path(argv[0])
    summary = summarise(out)
    write_json(out / "gpu_check.json", summary)
    print(report(summary))
    print(f"wrote {out / 'gpu_check.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
