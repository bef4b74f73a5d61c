"""`python -m fastdavs.train` / `fastdavs-train`: the three DAVS training stages (pid, wid, gen).

The command line is final; the training loop itself is delivered by issue 4.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import torch

from fastdavs.cli import add_config_args, config_from_args, run
from fastdavs.errors import NotImplementedYet

PROG = "fastdavs-train"
STAGES = ("all", "pid", "wid", "gen")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Train DAVS end to end: identity pretraining (pid), the shared word space "
        "(wid), then joint generation with adversarial disentangling (gen). With no --data, the "
        "embedded SynthLRW data set is generated once and used.",
    )
    parser.add_argument("--amp", action="store_true", help="bfloat16 autocast (CPU) / fp16 (CUDA)")
    parser.add_argument("--data", metavar="DIR", help="prepared shards of LRW-format data")
    parser.add_argument("--out", metavar="DIR", help="run directory (default: runs/<timestamp>)")
    parser.add_argument("--stage", choices=STAGES, default="all")
    parser.add_argument("--steps", type=int, metavar="N", help="bound each stage to N steps")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    add_config_args(parser, default_preset=None)
    parser.epilog = "--preset defaults to 'small' without a GPU and 'paper' with one."
    return parser


def default_preset() -> str:
    return "paper" if torch.cuda.is_available() else "small"


def _train(argv: Sequence[str] | None) -> None:
    args = build_parser().parse_args(argv)
    config_from_args(args, args.preset or default_preset())
    raise NotImplementedYet("training is not implemented yet (issue 4: the training stages)")


def main(argv: Sequence[str] | None = None) -> int:
    return run(PROG, _train, argv)


if __name__ == "__main__":
    sys.exit(main())
