"""`fastdavs-build-engine`: checkpoint -> engine directory (artifacts + config.json).

    fastdavs-build-engine --checkpoint RUN/checkpoints/gen_000450 --backend onnxruntime \
        --precision fp32 --batch 1:25:50 --out engines/small-ort
    fastdavs-build-engine --checkpoint RUN --backend openvino --precision int8 --out DIR
    fastdavs-build-engine --checkpoint RUN --backend auto --out DIR   # the fastest here

Exports the identity and frame graphs to ONNX, builds them with the backend, checks the engine
against eager PyTorch on fresh random inputs and writes DIR only if that parity holds. int8
calibrates on real faces and speech: --calibration-data, or the data the run was trained on.
Every build flag is a field of `fastdavs.engines.builder.BuildConfig`, with its default.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from fastdavs.cli import Parser, add_dataclass_args, dataclass_from_args, run
from fastdavs.engines.builder import BuildConfig, build_engine

PROG = "fastdavs-build-engine"


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog=PROG,
        description="Export the per-frame generator to ONNX and build an engine directory.",
    )
    parser.add_argument(
        "--checkpoint", metavar="CKPT", required=True,
        help="a checkpoint directory, or a run directory (its latest checkpoint)",
    )  # fmt: skip
    parser.add_argument("--out", metavar="DIR", required=True, help="the engine directory")
    add_dataclass_args(parser.add_argument_group("build configuration"), BuildConfig)
    return parser


def _build(argv: Sequence[str] | None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    build_engine(args.checkpoint, args.out, dataclass_from_args(BuildConfig, args))


def main(argv: Sequence[str] | None = None) -> int:
    return run(PROG, _build, argv)


if __name__ == "__main__":
    sys.exit(main())
