"""`fastdavs-generate`: a talking-face mp4 from one face image or video and driving speech
(audio, or a silent video of someone speaking).

The command line is final; generation itself is delivered by issue 7.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from fastdavs.cli import run
from fastdavs.errors import NotImplementedYet

PROG = "fastdavs-generate"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Synthesize a talking face saying the given speech."
    )
    parser.add_argument("--checkpoint", metavar="CKPT", help="checkpoint directory of a run")
    parser.add_argument("--engine", metavar="DIR", help="engine from fastdavs-build-engine")
    parser.add_argument("--face", metavar="FACE", required=True, help="face image or video")
    driver = parser.add_mutually_exclusive_group(required=True)
    driver.add_argument("--audio", metavar="AUDIO", help="speech to say (any PyAV-readable file)")
    driver.add_argument("--driving-video", metavar="VIDEO", help="video whose mouth to follow")
    parser.add_argument("-o", "--output", metavar="OUT.mp4", required=True)
    parser.add_argument("--batch-size", type=int, default=25, help="frames per pass")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", action="store_true", help="reduced-precision autocast")
    return parser


def _generate(argv: Sequence[str] | None) -> None:
    build_parser().parse_args(argv)
    raise NotImplementedYet("generation is not implemented yet (issue 7: fastdavs-generate)")


def main(argv: Sequence[str] | None = None) -> int:
    return run(PROG, _generate, argv)


if __name__ == "__main__":
    sys.exit(main())
