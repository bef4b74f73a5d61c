"""The robustness report: every test under tests/robustness/ is one case, recorded
with the command it ran, its outcome, its time and its peak memory, and printed as one table
at the end of the session:

    pytest tests/robustness -q                       # the table follows the test summary
    FASTDAVS_ROBUSTNESS_REPORT=report.md pytest tests/robustness -q   # also written as Markdown

A test names its command and the outcome it asserted through the `robustness` fixture
(`robustness.record("fastdavs-prepare SRC OUT", "exit 2, one line")`); a test that does not is
listed under its test id with pytest's verdict. Peak memory is the largest resident set of the
test process during the test (Linux's VmHWM, reset before each test) or of any child process it
waited for (getrusage), whichever is larger; "+N" is how far the test process grew above its
size when the test began (the pytest process itself, torch loaded, is most of the figure). Time
is the test's own call: shared fixtures (a prepared shard set, a built engine) are left out.
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass
from pathlib import Path

import pytest

REPORT_ENV = "FASTDAVS_ROBUSTNESS_REPORT"


@dataclass
class Case:
    """One row of the table; tests fill `command` and `outcome` through `record`."""

    name: str
    command: str = ""
    outcome: str = ""
    verdict: str = ""
    seconds: float = 0.0
    peak_mib: float = 0.0
    growth_mib: float = 0.0  # peak minus the resident set when the test began

    def record(self, command: str, outcome: str) -> None:
        self.command, self.outcome = command, outcome


_cases: dict[str, Case] = {}


def _reset_peak() -> bool:
    """Reset this process's peak RSS (Linux >= 4.0); False where the kernel does not allow it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _status_mib(field: str) -> float | None:
    """A memory figure of this process from /proc/self/status ("VmHWM", "VmRSS"), or None."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _peak_self_mib() -> float:
    peak = _status_mib("VmHWM")
    if peak is None:  # not Linux: the peak since the session began
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return peak


def _children_mib() -> float:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def _case(item: pytest.Item) -> Case:
    return _cases.setdefault(item.nodeid, Case(item.nodeid.split("::", 1)[-1]))


@pytest.fixture
def robustness(request) -> Case:
    """This test's row of the robustness table."""
    return _case(request.node)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    case = _case(item)
    _reset_peak()
    start, children = _status_mib("VmRSS") or 0.0, _children_mib()
    yield
    peak = _peak_self_mib()
    case.growth_mib = max(0.0, peak - start)
    if _children_mib() > children:  # a child process of this test set a new high
        peak = max(peak, _children_mib())
    case.peak_mib = peak


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    report = (yield).get_result()
    case = _case(item)
    if report.when == "call":
        case.seconds = report.duration
        case.verdict = report.outcome
    elif report.failed or (report.skipped and not case.verdict):
        case.verdict = report.outcome  # a setup or teardown error, or a skip


def _table() -> str:
    rows = [("case", "command", "outcome", "time (s)", "peak RSS MiB (+ in the test)")]
    for c in _cases.values():
        outcome = f"{c.verdict}: {c.outcome}" if c.outcome else c.verdict
        memory = f"{c.peak_mib:.0f} (+{c.growth_mib:.0f})"
        rows.append((c.name, c.command or "-", outcome, f"{c.seconds:.2f}", memory))
    return "\n".join("| " + " | ".join(r) + " |" for r in [rows[0], ("---",) * 5, *rows[1:]])


def pytest_terminal_summary(terminalreporter):
    if not _cases:
        return
    terminalreporter.section("robustness report")
    table = _table()
    terminalreporter.write_line(table)
    if path := os.environ.get(REPORT_ENV):
        Path(path).write_text(table + "\n")
        terminalreporter.write_line(f"written: {path}")
