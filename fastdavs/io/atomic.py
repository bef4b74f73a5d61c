"""Files that appear whole or not at all: write to a hidden temporary name in the same
directory, then `os.replace` it over the target (atomic on POSIX). A crash or an error while
writing leaves whatever was at the target before, and removes the temporary file.

Checkpoints (`fastdavs.io.checkpoint`) and mp4s (`fastdavs.data.video_io.write_mp4`) build on the
same rule with more steps of their own.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path


def replace_with(path: str | os.PathLike, write: Callable[[Path], object], *, fsync=False) -> Path:
    """Call `write(tmp)` to write the file at a temporary path, then rename it to `path`.

    The temporary name keeps `path`'s suffix, so writers that pick a format from the name
    (OpenCV, matplotlib) work. With `fsync`, the data reaches the disk before the rename.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp{path.suffix}")
    try:
        write(tmp)
        if fsync:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_text(path: str | os.PathLike, text: str, *, fsync: bool = False) -> Path:
    """`path.write_text(text)`, atomically."""
    return replace_with(path, lambda tmp: tmp.write_text(text), fsync=fsync)


def write_json(path: str | os.PathLike, data, *, indent: int | None = 2, fsync=False) -> Path:
    """`data` as JSON (one trailing newline), atomically."""
    return write_text(path, json.dumps(data, indent=indent) + "\n", fsync=fsync)
