"""bench/probe_drift.py on two checkpoints of a tiny `wid` run: the same checkpoint twice reads
no drift and the same score both ways; two different steps report both modalities."""

import re
import subprocess
import sys
from pathlib import Path

from fastdavs.train.cli import main as train_main

ROOT = Path(__file__).resolve().parents[1]
LINE = re.compile(
    r"  (audio|video): features changed by ([\d.]+)% of their norm; person named "
    r"([\d.]+)% by a probe fitted on the new features, ([\d.]+)% by one fitted on the old"
)


def drift(old: Path, new: Path) -> dict[str, tuple[float, float, float]]:
    run = subprocess.run(
        [sys.executable, "bench/probe_drift.py", str(old), str(new), "--clips", "12"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    found = {m[1]: tuple(float(x) for x in m.groups()[1:]) for m in LINE.finditer(run.stdout)}
    assert set(found) == {"audio", "video"}, run.stdout
    return found


def test_probe_drift_between_two_checkpoints(shards, tmp_path):
    run = tmp_path / "run"
    args = ["--preset", "tiny", "--workers", "0", "--data", str(shards), "--out", str(run)]
    assert train_main([*args, "--stage", "wid", "--no-eval"]) == 0
    old, new = run / "checkpoints" / "wid_000002", run / "checkpoints" / "wid_000004"
    same = drift(new, new)
    for change, fresh, stale in same.values():
        assert change == 0.0 and fresh == stale
    moved = drift(old, new)
    for change, fresh, stale in moved.values():
        assert change > 0.0 and 0.0 <= fresh <= 100.0 and 0.0 <= stale <= 100.0
