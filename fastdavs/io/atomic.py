"""Files and directories that appear whole or not at all, and stay after a power cut.

Everything is first written under a temporary name beside its target (same directory, so the
final rename never crosses file systems), made durable, then renamed over the target:

    replace_with / write_text / write_json    one file: `.NAME.tmp-XXXXXXXX[.suffix]`
    atomic_dir / publish_dir                  one directory tree: `.NAME.tmp-XXXXXXXX` or a name
                                              of the caller's (checkpoints, shards)

A crash or an error while writing leaves whatever was at the target before; an error removes
the temporary, a crash may leave it behind (`leftovers` finds those of a target). Checkpoints
(`fastdavs.io.checkpoint`), shards (`fastdavs.data.shards`), engine directories
(`fastdavs.engines.engine_dir`) and every JSON, CSV and image the project writes build on this.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import glob
import json
import logging
import os
import secrets
import shutil
import stat
import sys
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Self

log = logging.getLogger(__name__)

_TMP = ".tmp-"  # every temporary is named `.{target name}{_TMP}{8 hex digits}[suffix]`
# renameat2(2) flags and the "relative to the working directory" descriptor (linux/fs.h, fcntl.h).
_RENAME_NOREPLACE, _RENAME_EXCHANGE, _AT_FDCWD = 1, 2, -100


def _temporary(path: Path, suffix: str = "") -> Path:
    return path.with_name(f".{path.name}{_TMP}{secrets.token_hex(4)}{suffix}")


def leftovers(path: str | os.PathLike) -> list[Path]:
    """The temporaries named after `path` (by `replace_with`, or `atomic_dir` without a name of
    the caller's) that a killed process left beside it. A running writer owns its own."""
    path = Path(path)
    return sorted(path.parent.glob(f".{glob.escape(path.name)}{_TMP}*"))


class CommitOnExit:
    """A writer that publishes on `close()` and discards on `abort()` (shards, mp4s), as a
    context manager: `close` when the block ends normally, `abort` when it raises. Subclasses
    define both."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


# ---- files ----------------------------------------------------------------------------------
def replace_with(path: str | os.PathLike, write: Callable[[Path], object], *, fsync=False) -> Path:
    """Call `write(tmp)` to write the file at a temporary path, then rename it to `path`.

    The temporary name keeps `path`'s suffix, so writers that pick a format from the name
    (OpenCV, matplotlib) work. With `fsync`, the data reaches the disk before the rename and
    the rename itself (the parent directory) after it.
    """
    path = Path(path)
    tmp = _temporary(path, path.suffix)
    try:
        write(tmp)
        if fsync:
            _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if fsync:
        fsync_dir(path.parent)
    return path


def write_text(path: str | os.PathLike, text: str, *, fsync: bool = False) -> Path:
    """`path.write_text(text)`, atomically."""
    return replace_with(path, lambda tmp: tmp.write_text(text), fsync=fsync)


def write_json(path: str | os.PathLike, data, *, indent: int | None = 2, fsync=False) -> Path:
    """`data` as JSON (one trailing newline), atomically."""
    return write_text(path, json.dumps(data, indent=indent) + "\n", fsync=fsync)


def _fsync_file(path: str | os.PathLike) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a directory's entries (creations, renames, deletions) durable.

    Some network and FUSE file systems cannot sync a directory and answer EINVAL or ENOTSUP;
    that is tolerated (they give no stronger guarantee to ask for). Every other error is raised.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


# ---- directories ----------------------------------------------------------------------------
@contextlib.contextmanager
def atomic_dir(
    final: str | os.PathLike, *, replace: bool = False, staging: str | None = None
) -> Iterator[Path]:
    """Yield an empty staging directory; when the block ends, `publish_dir` it to `final`.

    Args:
        final (str or Path): the directory to create; its parents are created if missing.
        replace (bool): replace whatever is at `final`. Without it an existing `final` raises
            FileExistsError, before the block runs. (Default: False)
        staging (str, optional): the staging directory's name beside `final`, for callers whose
            resume code recognises their own leftovers; it must not exist. (Default:
            ``.FINAL.tmp-XXXXXXXX``, which `leftovers(final)` finds)

    An exception inside the block or while publishing removes the staging directory and leaves
    whatever was at `final` untouched; it is raised.
    """
    final = Path(final)
    if not replace and os.path.lexists(final):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(final))
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(staging) if staging else _temporary(final)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    publish_dir(tmp, final, replace=replace)


def publish_dir(
    staging: str | os.PathLike, final: str | os.PathLike, *, replace: bool = False
) -> Path:
    """Rename the finished directory `staging` to `final`, durably; return `final`.

    In order: every regular file under `staging` is fsynced, then each directory (deepest
    first, `staging` last); the rename; the parent of `final`. `staging` must be on the same
    file system as `final` (a sibling is). Replacing swaps the two trees in one step
    (renameat2 with RENAME_EXCHANGE), so `final` exists at every moment, then deletes the old
    tree (a crash leaves it under the staging name). Where the swap is unavailable (not Linux,
    a kernel or file system without it), the old tree is first renamed aside to
    ``STAGING.old``: a crash in the short window between that and the second rename leaves no
    `final`, both trees beside it.

    Without `replace`, an existing `final` raises FileExistsError. An error before the rename
    removes `staging` and leaves `final` untouched; an error syncing the parent after it is
    raised with the new tree at `final` and the old one (if any) left under the staging name.
    """
    staging, final = Path(staging), Path(final)
    try:
        for root, _, files in os.walk(staging, topdown=False):
            for name in files:
                if stat.S_ISREG(os.lstat(os.path.join(root, name)).st_mode):
                    _fsync_file(os.path.join(root, name))
            fsync_dir(root)
        old = _rename(staging, final, replace)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    fsync_dir(final.parent)
    if old is not None:
        try:
            shutil.rmtree(old)
        except OSError as e:  # the new tree is in place; the old one is a recognisable leftover
            log.warning("cannot remove the replaced %s (now %s): %s", final, old, e)
    return final


def _rename(staging: Path, final: Path, replace: bool) -> Path | None:
    """Move `staging` to `final`; return where the tree that was at `final` now is, if any."""
    if not replace:
        if not _renameat2(staging, final, _RENAME_NOREPLACE):
            if os.path.lexists(final):  # the check and the rename are two steps here
                raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(final))
            os.rename(staging, final)
        return None
    if not os.path.lexists(final):
        os.rename(staging, final)
        return None
    if _renameat2(staging, final, _RENAME_EXCHANGE):
        return staging
    aside = staging.with_name(staging.name + ".old")
    os.rename(final, aside)
    try:
        os.rename(staging, final)
    except BaseException:
        os.rename(aside, final)
        raise
    return aside


def _renameat2(src: Path, dst: Path, flags: int) -> bool:
    """renameat2(src, dst, flags): True when done, False where this kernel, file system or OS
    does not offer it (ENOSYS, EINVAL); any other failure raises OSError."""
    fn = _libc_renameat2()
    if fn is None:
        return False
    if fn(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), flags) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL):
        return False
    raise OSError(err, os.strerror(err), str(src), None, str(dst))


@cache
def _libc_renameat2() -> Callable | None:
    """glibc's renameat2 (2.28 and later; returns 0, or -1 and sets errno), or None."""
    if sys.platform != "linux":
        return None
    fn = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if fn is not None:
        fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
        fn.restype = ctypes.c_int
    return fn
