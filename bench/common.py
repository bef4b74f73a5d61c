"""Small pieces the benchmark scripts share (imported as `common`: bench/ is the script's path)."""

from __future__ import annotations

import statistics
import subprocess


def git(*args: str) -> str:
    """`git ARGS` in the current directory, its stdout stripped ('' outside a checkout)."""
    return subprocess.run(["git", *args], capture_output=True, text=True).stdout.strip()


def median_p20_p80(xs: list[float]) -> tuple[float, float, float]:
    """(median, p20, p80) of timing samples; one sample gives itself three times."""
    if len(xs) == 1:
        return xs[0], xs[0], xs[0]
    q = statistics.quantiles(xs, n=10, method="inclusive")
    return statistics.median(xs), q[1], q[7]
