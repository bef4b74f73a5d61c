"""`fastdavs-build-engine`: checkpoint -> engine directory (artifacts + config.json).

    fastdavs-build-engine --checkpoint RUN/checkpoints/gen_000450 --backend onnxruntime \
        --precision fp32 --batch 1:25:50 --out engines/small-ort
    fastdavs-build-engine --checkpoint RUN --backend openvino --precision int8 --out DIR
    fastdavs-build-engine --checkpoint RUN --backend auto --out DIR   # the fastest here

Exports the identity and frame graphs to ONNX, builds them with the backend, checks the engine
against eager PyTorch on fresh random inputs and writes DIR only if that parity holds. int8
calibrates on real faces and speech: --calibration-data, or the data the run was trained on.
Defaults come from `fastdavs.engines.builder.BuildConfig`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from fastdavs.cli import Parser, run
from fastdavs.engines.builder import AUTO, BACKENDS, PRECISIONS, BuildConfig, build_engine

PROG = "fastdavs-build-engine"
DEFAULTS = BuildConfig()


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
    parser = Parser(
        prog=PROG,
        description="Export the per-frame generator to ONNX and build an engine directory.",
    )
    parser.add_argument(
        "--checkpoint", metavar="CKPT", required=True,
        help="a checkpoint directory, or a run directory (its latest checkpoint)",
    )  # fmt: skip
    parser.add_argument(
        "--backend", choices=(*BACKENDS, AUTO), default=DEFAULTS.backend,
        help="auto: build every engine this machine can, keep the fastest that holds parity "
        "(default: %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--precision", choices=(*PRECISIONS, AUTO), default=DEFAULTS.precision,
        help="of the frame graph; kept only where parity with eager fp32 holds; bf16 with "
        "openvino on CPUs with native bf16; auto: the fastest (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--calibration-data", metavar="SHARDS", default=DEFAULTS.calibration_data,
        help="int8: prepared shards (fastdavs-prepare output at the model's image size) whose "
        "faces and speech calibrate it (default: the data the checkpoint's run was trained on)",
    )  # fmt: skip
    parser.add_argument(
        "--no-rewrite", dest="rewrite", action="store_false",
        help="export the graphs as the model is, without folding BatchNorm and turning "
        "stride-1 ConvTranspose2d into Conv2d",
    )  # fmt: skip
    parser.add_argument(
        "--batch", type=parse_batch_profile, default=DEFAULTS.batch, metavar="MIN:OPT:MAX",
        help="frames per call: TensorRT's optimization profile (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument("--out", metavar="DIR", required=True)
    return parser


def _build(argv: Sequence[str] | None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = BuildConfig(
        backend=args.backend, precision=args.precision, batch=args.batch,
        calibration_data=args.calibration_data, rewrite=args.rewrite,
    )  # fmt: skip
    build_engine(args.checkpoint, args.out, cfg)


def main(argv: Sequence[str] | None = None) -> int:
    return run(PROG, _build, argv)


if __name__ == "__main__":
    sys.exit(main())
