"""`fastdavs-prepare SRC OUT`: an LRW-layout tree of mp4 clips -> packed training shards.

The command line is final; the preparation itself is delivered by issue 3.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from fastdavs.cli import add_config_args, run
from fastdavs.errors import NotImplementedYet

PROG = "fastdavs-prepare"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Decode, align and pack an LRW-layout tree (ROOT/WORD/{train,val,test}/"
        "WORD_00001.mp4) into memory-mappable shards at the preset's resolution.",
    )
    parser.add_argument("src", metavar="SRC", help="root of the LRW-layout tree")
    parser.add_argument("out", metavar="OUT", help="output directory for the shards")
    parser.add_argument("--workers", type=int, metavar="N", help="processes (default: all cores)")
    add_config_args(parser, default_preset="small")
    return parser


def _prepare(argv: Sequence[str] | None) -> None:
    build_parser().parse_args(argv)
    raise NotImplementedYet("data preparation is not implemented yet (issue 3: data)")


def main(argv: Sequence[str] | None = None) -> int:
    return run(PROG, _prepare, argv)


if __name__ == "__main__":
    sys.exit(main())
