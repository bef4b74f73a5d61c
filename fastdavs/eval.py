"""`fastdavs-eval RUN_OR_CHECKPOINT`: lip reading, audio-video retrieval, disentanglement probes
and generation quality, as a metrics JSON and a readable table.

The command line is final; the evaluation itself is delivered by issue 4.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from fastdavs.cli import run
from fastdavs.errors import NotImplementedYet

PROG = "fastdavs-eval"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Evaluate a trained DAVS model.")
    parser.add_argument("run_dir", metavar="RUN_OR_CHECKPOINT")
    parser.add_argument("--data", metavar="DIR", help="prepared shards (default: SynthLRW test)")
    parser.add_argument("--out", metavar="FILE", help="metrics JSON (default: beside the run)")
    return parser


def _evaluate(argv: Sequence[str] | None) -> None:
    build_parser().parse_args(argv)
    raise NotImplementedYet("evaluation is not implemented yet (issue 4: fastdavs-eval)")


def main(argv: Sequence[str] | None = None) -> int:
    return run(PROG, _evaluate, argv)


if __name__ == "__main__":
    sys.exit(main())
