"""bench/word_space_limits.py on the tiny prepared set: every measurement runs and reads sane
values (the test split there holds one person, so its identity probe has nothing to split)."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_word_space_limits_on_tiny_shards(shards):
    run = subprocess.run(
        [sys.executable, "bench/word_space_limits.py", "--data", str(shards), "--preset", "tiny"]
        + ["--mouth-steps", "30"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    out = run.stdout
    assert out.count("identity from clip-mean MFCC") == 3
    assert "need 2 classes" in out  # one test person
    ceiling = float(
        re.search(r"words from the ground-truth visemes \(test people\) +([\d.]+)", out)[1]
    )
    assert 1 / 3 < ceiling <= 1  # 3 words: the visemes tell them apart
    r2 = re.findall(r"mouth box CNN, R\^2 of .*, (training|test) people: (.*)", out)
    assert [p for p, _ in r2] == ["training", "test"]
    values = {p: [float(v) for v in vs.split(" / ")] for p, vs in r2}
    assert all(v <= 1 for vs in values.values() for v in vs)
    assert sum(values["training"]) > 0  # 30 steps already read something of the mouth
