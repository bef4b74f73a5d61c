"""Shared plumbing of the command-line tools: config flags derived from `DavsConfig`, and the
wrapper that turns a user error into one line on stderr and a non-zero exit (never a traceback).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from collections.abc import Callable, Sequence

from fastdavs.config import PRESETS, DavsConfig
from fastdavs.errors import FastdavsError
from fastdavs.kernels.dispatch import KernelError

EXIT_USER_ERROR = 2


class Parser(argparse.ArgumentParser):
    """The commands' argument parser: a bad option is one line on stderr and exit status 2, like
    every other user error (argparse's default prints the usage block first)."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def add_config_args(parser: argparse.ArgumentParser, default_preset: str | None = "paper") -> None:
    """`--preset` plus one `--field` flag per DavsConfig field (`--loss-pid-uniform` for nested
    ones). Flags default to None so the preset's value stands unless the user overrides it."""
    group = parser.add_argument_group("model configuration (defaults come from --preset)")
    group.add_argument("--preset", choices=sorted(PRESETS), default=default_preset)
    for flag, dest, hint in _config_flags():
        kwargs: dict = {"dest": dest, "default": None}
        if hint is tuple:
            kwargs.update(nargs=4, type=float, metavar=("TOP", "BOTTOM", "LEFT", "RIGHT"))
        else:
            kwargs["type"] = hint
        group.add_argument(flag, **kwargs)


def config_from_args(args: argparse.Namespace, preset: str | None = None) -> DavsConfig:
    """The preset named by `--preset` (or `preset`) with every flag the user gave applied."""
    cfg = DavsConfig.from_preset(preset or args.preset).to_dict()
    for _, dest, _ in _config_flags():
        value = getattr(args, dest)
        if value is None:
            continue
        *parents, leaf = dest.split("__")
        node = cfg
        for name in parents:
            node = node[name]
        node[leaf] = value
    return DavsConfig.from_dict(cfg)


def _config_flags() -> list[tuple[str, str, type]]:
    """(flag, argparse dest, scalar type) for every leaf field of DavsConfig except `preset`."""
    flags = []

    def walk(cls, prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            hint = hints[f.name]
            if dataclasses.is_dataclass(hint):
                walk(hint, prefix + f.name + "__")
            elif f.name != "preset":
                scalar = hint if hint in (int, float, str) else tuple
                dest = prefix + f.name
                flags.append(("--" + dest.replace("__", "-").replace("_", "-"), dest, scalar))

    walk(DavsConfig, "")
    return flags


def run(
    prog: str, main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None
) -> int:
    """Run a command's body; a FastdavsError or a KernelError (a fused op asked for what it
    cannot do) becomes `prog: error: message` and exit status 2."""
    try:
        return main(argv) or 0
    except (FastdavsError, KernelError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
