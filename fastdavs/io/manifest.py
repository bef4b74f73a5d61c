"""Sealed directories: a `config.json` that vouches for the files beside it by size and SHA-256.

Checkpoints (`fastdavs.io.checkpoint`) and engine directories (`fastdavs.engines.engine_dir`) are
both written this way and checked this way before anything in them is read: the config's format
and version first, then every listed file. Each caller passes its own error type and the remedy
its messages end with ("rebuild it with fastdavs-build-engine", ...).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path

from fastdavs import __version__


def file_entry(path: Path) -> dict:
    """{"size", "sha256"} of a file as it is on disk."""
    with open(path, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
        return {"size": os.fstat(f.fileno()).st_size, "sha256": digest}


def read_config(
    cfg_file: Path, fmt: str, version: int, what: str, error: type[Exception], remedy: str
) -> dict:
    """Parse `cfg_file` and check its "format" is `fmt` and its "format_version" `version`.

    `what` names the kind in messages ("checkpoint", "engine"); `remedy` ends the message of a
    damaged or older file. Raises `error`.
    """
    try:
        meta = json.loads(cfg_file.read_bytes())
    except OSError as e:
        raise error(f"{cfg_file}: cannot read it ({e.strerror})") from None
    except ValueError as e:
        raise error(f"{cfg_file}: not valid JSON ({e}); {remedy}") from None
    if not isinstance(meta, dict) or meta.get("format") != fmt:
        raise error(f'{cfg_file}: not a fastdavs {what} (no "format": "{fmt}")')
    have = meta.get("format_version")
    if have != version:
        newer = isinstance(have, int) and have > version
        raise error(
            f"{cfg_file}: unknown {what} format version {have!r}; fastdavs {__version__} reads "
            f"version {version}; " + ("upgrade fastdavs to load it" if newer else remedy)
        )
    return meta


def check_files(
    directory: Path,
    entries: Mapping[str, object],
    cfg_file: Path,
    error: type[Exception],
    remedy: str,
) -> None:
    """Every file named in `entries` (name -> {"size", "sha256"}) exists in `directory` with
    that size and digest. Raises `error` naming the first one that does not."""
    for name, entry in entries.items():
        file = directory / name
        if not (
            isinstance(entry, dict)
            and isinstance(entry.get("size"), int)
            and isinstance(entry.get("sha256"), str)
        ):
            raise error(f"{cfg_file}: no valid entry for {name}; {remedy}")
        try:
            size = file.stat().st_size
        except FileNotFoundError:
            raise error(f"{file}: missing (listed in {cfg_file}); {remedy}") from None
        if size != entry["size"]:
            what = "truncated" if size < entry["size"] else "size mismatch"
            raise error(f"{file}: {what} ({size} bytes, {cfg_file} says {entry['size']}); {remedy}")
        digest = file_entry(file)["sha256"]
        if digest != entry["sha256"]:
            raise error(
                f"{file}: checksum mismatch (sha256 {digest[:16]}..., {cfg_file} says "
                f"{entry['sha256'][:16]}...); {remedy}"
            )
