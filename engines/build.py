"""`fastdavs-build-engine`: checkpoint -> engine directory (artifact + config.json).

The command line is final; export and the builders are delivered by issue 6.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from fastdavs.cli import run
from fastdavs.errors import NotImplementedYet

PROG = "fastdavs-build-engine"
BACKENDS = ("onnxruntime", "tensorrt")
PRECISIONS = ("fp32", "fp16", "bf16", "int8")


def parse_batch_profile(text: str) -> tuple[int, int, int]:
    """'MIN:OPT:MAX' -> (min, opt, max) with 1 <= min <= opt <= max."""
    try:
        lo, opt, hi = (int(v) for v in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected MIN:OPT:MAX, e.g. 1:25:50") from None
    if not 1 <= lo <= opt <= hi:
        raise argparse.ArgumentTypeError(f"{text!r}: need 1 <= MIN <= OPT <= MAX")
    return lo, opt, hi


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Export the per-frame generator to ONNX and build an engine directory.",
    )
    parser.add_argument("--checkpoint", metavar="CKPT", required=True)
    parser.add_argument("--backend", choices=BACKENDS, default="onnxruntime")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32")
    parser.add_argument(
        "--batch", type=parse_batch_profile, default=(1, 25, 50), metavar="MIN:OPT:MAX"
    )
    parser.add_argument("--out", metavar="DIR", required=True)
    return parser


def _build(argv: Sequence[str] | None) -> None:
    build_parser().parse_args(argv)
    raise NotImplementedYet("engine building is not implemented yet (issue 6: engines)")


def main(argv: Sequence[str] | None = None) -> int:
    return run(PROG, _build, argv)


if __name__ == "__main__":
    sys.exit(main())
