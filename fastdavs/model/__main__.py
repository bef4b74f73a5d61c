"""`python -m fastdavs.model --preset paper [--json]`: parameters and GFLOP per frame per module."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from fastdavs.cli import add_config_args, config_from_args, run
from fastdavs.model.summary import as_json, as_table, summarize

PROG = "python -m fastdavs.model"


def _summary(argv: Sequence[str] | None) -> None:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_config_args(parser, default_preset="paper")
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    rows = summarize(cfg)
    print(json.dumps(as_json(cfg, rows), indent=2) if args.json else as_table(cfg, rows))


def main(argv: Sequence[str] | None = None) -> int:
    return run(PROG, _summary, argv)


if __name__ == "__main__":
    sys.exit(main())
