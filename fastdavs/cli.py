"""Shared plumbing of the command-line tools: flags derived from dataclass fields, and the
wrapper that turns a user error into one line on stderr and a non-zero exit (never a traceback).

Every option of a command is a field of a dataclass (`DavsConfig`, the training `RunOptions`,
`BuildConfig`, `GenerateOptions`...), and `add_dataclass_args` makes its flag from the field:
`--field-name` (`--loss-pid-uniform` for a nested field), the field's type and default, and
what its metadata adds (`option(default, help=..., ...)` or `field(metadata=...)`):

    help     the flag's help text ("(default: ...)" is added unless it says "default")
    flag     another spelling (`--steps` for `max_steps`); a bool's `--no-` form follows it
    short    a one-letter alias such as `-o`
    metavar, choices
    parse    a function str -> value, for a field whose type argparse cannot parse (a
             "MIN:OPT:MAX" triple, an "X,Y,W,H" box)

A bool that defaults to False is a switch (`--amp`); one that defaults to True has both forms
(`--channels-last` / `--no-channels-last`). A field `X | None` takes an X and defaults to None.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import types
import typing
from collections.abc import Callable, Collection, Iterator, Sequence

from fastdavs.config import PRESETS, DavsConfig
from fastdavs.errors import FastdavsError
from fastdavs.kernels.dispatch import KernelError

EXIT_USER_ERROR = 2


def option(default=dataclasses.MISSING, *, help: str, **cli):
    """A dataclass field that is also a flag: its default, its help text and what else the flag
    needs (`flag`, `short`, `metavar`, `choices`, `parse`; module docstring), kept together."""
    return dataclasses.field(default=default, metadata={"help": help, **cli})


class Parser(argparse.ArgumentParser):
    """The commands' argument parser: a bad option is one line on stderr and exit status 2, like
    every other user error (argparse's default prints the usage block first)."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _leaves(cls, path: tuple[str, ...] = ()) -> Iterator[tuple[str, dataclasses.Field, object]]:
    """(dotted name, field, type) of every leaf field of dataclass `cls`, nested ones included."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            yield from _leaves(hint, (*path, f.name))
        else:
            yield ".".join((*path, f.name)), f, hint


def _dest(name: str) -> str:
    return name.replace(".", "__")


def _flag(name: str, f: dataclasses.Field) -> str:
    return f.metadata.get("flag") or "--" + name.replace(".", "-").replace("_", "-")


def _default(f: dataclasses.Field):
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None if f.default is dataclasses.MISSING else f.default


def add_dataclass_args(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls,
    *,
    only: Collection[str] | None = None,
    exclude: Collection[str] = (),
    unset: bool = False,
) -> None:
    """One flag per leaf field of dataclass `cls` (dotted names, e.g. "loss.pid_uniform", in
    `only` / `exclude` pick them). A field without a default is a required flag. `unset`: every
    flag defaults to None, so that `dataclass_from_args` changes only what the user gave (the
    preset's values stand for the rest)."""
    for name, f, hint in _leaves(cls):
        if name in exclude or (only is not None and name not in only):
            continue
        meta = f.metadata
        default = None if unset else _default(f)
        kwargs: dict = {"dest": _dest(name), "help": meta.get("help"), "default": default}
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            kwargs["required"] = not unset
        if isinstance(hint, types.UnionType) and type(None) in typing.get_args(hint):
            (hint,) = (a for a in typing.get_args(hint) if a is not type(None))
        if hint is bool:
            on = _default(f) is False and not unset
            kwargs["action"] = "store_true" if on else argparse.BooleanOptionalAction
        elif "parse" in meta:
            kwargs["type"] = meta["parse"]
        elif typing.get_origin(hint) is tuple:
            items = typing.get_args(hint)
            kwargs.update(nargs=len(items), type=items[0])
        else:
            kwargs["type"] = hint
        for key in ("metavar", "choices"):
            if key in meta:
                kwargs[key] = meta[key]
        if hint is not bool and "choices" not in kwargs:
            kwargs.setdefault("metavar", name.rsplit(".", 1)[-1].upper())
        help_ = kwargs["help"]
        shown = default is not None and hint is not bool
        if help_ and shown and "default" not in help_:
            kwargs["help"] += " (default: %(default)s)"
        flags = (meta["short"], _flag(name, f)) if "short" in meta else (_flag(name, f),)
        parser.add_argument(*flags, **kwargs)


def dataclass_from_args(cls, args: argparse.Namespace, base=None):
    """`base` (default: `cls()`) with the value of every flag of `cls` found in `args` that is
    not None; nested dataclasses are replaced field by field."""

    def build(cls, node, path: tuple[str, ...]):
        changes = {}
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            name = ".".join((*path, f.name))
            if dataclasses.is_dataclass(hints[f.name]):
                current = getattr(node, f.name) if node is not None else None
                changes[f.name] = build(hints[f.name], current, (*path, f.name))
            elif getattr(args, _dest(name), None) is not None:
                value = getattr(args, _dest(name))
                changes[f.name] = tuple(value) if isinstance(value, list) else value
        return cls(**changes) if node is None else dataclasses.replace(node, **changes)

    return build(cls, base, ())


def add_config_args(
    parser: argparse.ArgumentParser,
    default_preset: str | None = "paper",
    *,
    only: Collection[str] | None = None,
    exclude: Collection[str] = (),
    title: str = "model configuration (defaults come from --preset)",
) -> None:
    """`--preset` plus one flag per DavsConfig field (`--loss-pid-uniform` for nested ones), or
    those named in `only`. Flags default to None so the preset's value stands unless the user
    overrides it."""
    group = parser.add_argument_group(title)
    group.add_argument("--preset", choices=sorted(PRESETS), default=default_preset)
    add_dataclass_args(group, DavsConfig, only=only, exclude={"preset", *exclude}, unset=True)


def config_from_args(args: argparse.Namespace, preset: str | None = None) -> DavsConfig:
    """The preset named by `--preset` (or `preset`) with every config flag the user gave
    applied, validated."""
    base = DavsConfig.from_preset(preset or args.preset)
    return DavsConfig.from_dict(dataclass_from_args(DavsConfig, args, base).to_dict())


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
