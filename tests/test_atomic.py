"""fastdavs.io.atomic: a file or directory appears whole or not at all, and durably."""

import ctypes
import errno
import json
import os
import shutil
import sys

import pytest

from fastdavs.io import atomic
from fastdavs.io.atomic import (
    atomic_dir,
    fsync_dir,
    leftovers,
    publish_dir,
    replace_with,
    write_json,
    write_text,
)

linux_only = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/self/fd")


def test_write_text_and_json_replace_the_target(tmp_path):
    path = tmp_path / "a.json"
    write_text(path, "old")
    assert write_json(path, {"x": [1, 2]}, fsync=True) == path
    assert json.loads(path.read_text()) == {"x": [1, 2]}
    assert path.read_text().endswith("}\n")
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_a_failing_writer_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "grid.png"
    path.write_bytes(b"previous")

    def half_then_crash(tmp):
        assert tmp.suffix == ".png" and tmp.parent == tmp_path and tmp.name.startswith(".")
        tmp.write_bytes(b"half")
        assert leftovers(path) == [tmp]  # what a crash at this point would leave
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        replace_with(path, half_then_crash)
    assert path.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["grid.png"]


# ---- recording what reaches the disk, and in which order --------------------------------------
@pytest.fixture
def events(monkeypatch):
    """("fsync", path) for every os.fsync, ("rename", src, dst) for every rename or exchange."""
    log = []
    real_fsync, real_rename, real_replace = os.fsync, os.rename, os.replace

    def fsync(fd):
        log.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def rename(real):
        def call(src, dst, *args, **kwargs):
            log.append(("rename", str(src), str(dst)))
            return real(src, dst, *args, **kwargs)

        return call

    real_renameat2 = atomic._renameat2

    def renameat2(src, dst, flags):
        done = real_renameat2(src, dst, flags)
        if done:
            log.append(("rename", str(src), str(dst)))
        return done

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "rename", rename(real_rename))
    monkeypatch.setattr(os, "replace", rename(real_replace))
    monkeypatch.setattr(atomic, "_renameat2", renameat2)
    return log


@linux_only
def test_write_text_fsyncs_the_file_then_renames_then_fsyncs_the_parent(tmp_path, events):
    path = tmp_path / "latest"
    write_text(path, "step_000001\n", fsync=True)
    (fsync_file, tmp), rename, parent = events
    assert fsync_file == "fsync" and os.path.basename(tmp).startswith(".latest.tmp-")
    assert rename == ("rename", tmp, str(path))
    assert parent == ("fsync", str(tmp_path))
    events.clear()
    write_text(path, "step_000002\n")  # without fsync: no fsync at all
    assert [e[0] for e in events] == ["rename"] and path.read_text() == "step_000002\n"


# ---- directories -------------------------------------------------------------------------------
def _tree(root):
    """{relative path: content, or None for a directory} of everything under `root`."""
    return {
        os.path.relpath(os.path.join(d, n), root): (
            None if n in dirs else open(os.path.join(d, n)).read()
        )
        for d, dirs, files in os.walk(root)
        for n in dirs + files
    }


def _write(root, files):
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


OLD = {"a.txt": "old a", "gone.txt": "old only"}
NEW = {"a.txt": "new a", "sub/b.txt": "new b", "sub/deeper/c.txt": "new c"}


def test_atomic_dir_publishes_the_whole_tree_and_leaves_no_staging(tmp_path):
    final = tmp_path / "parent" / "engine"  # parents are created
    with atomic_dir(final) as tmp:
        assert tmp.parent == final.parent and tmp.name.startswith(".engine.tmp-")
        assert not final.exists()  # nothing visible until the block ends
        _write(tmp, NEW)
    assert _tree(final) == {**NEW, "sub": None, "sub/deeper": None}
    assert os.listdir(final.parent) == ["engine"] and leftovers(final) == []


def test_an_exception_in_the_block_removes_staging_and_keeps_final(tmp_path):
    final = tmp_path / "ckpt"
    _write(final, OLD)
    with pytest.raises(OSError, match="No space"), atomic_dir(final, replace=True) as tmp:
        _write(tmp, NEW)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert _tree(final) == OLD
    assert os.listdir(tmp_path) == ["ckpt"]


def test_a_name_of_the_callers_is_used_for_staging(tmp_path):
    final = tmp_path / "shard_00003"
    with atomic_dir(final, staging="shard_00003.tmp") as tmp:
        assert tmp == tmp_path / "shard_00003.tmp"
        _write(tmp, NEW)
    assert _tree(final)["sub/b.txt"] == "new b" and os.listdir(tmp_path) == ["shard_00003"]


def test_without_replace_an_existing_final_is_refused(tmp_path):
    final = tmp_path / "step_000001"
    _write(final, OLD)
    ran = False
    with pytest.raises(FileExistsError), atomic_dir(final):
        ran = True
    assert not ran and _tree(final) == OLD and os.listdir(tmp_path) == ["step_000001"]


def _unavailable(err):
    """A stand-in for `_libc_renameat2`: None (not Linux) or a renameat2 failing with `err`."""
    if err is None:
        return lambda: None

    def renameat2(*args):
        ctypes.set_errno(err)
        return -1

    return lambda: renameat2


@pytest.mark.parametrize("err", [0, errno.ENOSYS], ids=["renameat2", "no-renameat2"])
def test_without_replace_a_final_that_appears_meanwhile_is_not_overwritten(
    tmp_path, monkeypatch, err
):
    if err:
        monkeypatch.setattr(atomic, "_libc_renameat2", _unavailable(err))
    final = tmp_path / "shard_00000"
    with pytest.raises(FileExistsError), atomic_dir(final) as tmp:
        _write(tmp, NEW)
        final.mkdir()  # another writer, say; an empty directory a plain rename would replace
    assert _tree(final) == {} and os.listdir(tmp_path) == ["shard_00000"]


@pytest.fixture
def final_always_there(monkeypatch):
    """Check, at every rename, exchange and deletion, that `final` (set by the test) exists."""
    watch = {}
    real_rename, real_renameat2, real_rmtree = os.rename, atomic._renameat2, shutil.rmtree

    def checked(real):
        def call(*args, **kwargs):
            assert watch["final"].is_dir(), f"{watch['final']} missing before {real.__name__}"
            out = real(*args, **kwargs)
            assert watch["final"].is_dir(), f"{watch['final']} missing after {real.__name__}"
            watch["calls"].append(real.__name__)
            return out

        return call

    monkeypatch.setattr(os, "rename", checked(real_rename))
    monkeypatch.setattr(atomic, "_renameat2", checked(real_renameat2))
    monkeypatch.setattr(shutil, "rmtree", checked(real_rmtree))
    return watch


@linux_only
def test_replace_swaps_the_trees_so_final_never_goes_missing(tmp_path, final_always_there):
    final = tmp_path / "engine"
    _write(final, OLD)
    final_always_there.update(final=final, calls=[])
    with atomic_dir(final, replace=True) as tmp:
        _write(tmp, NEW)
    assert _tree(final) == {**NEW, "sub": None, "sub/deeper": None}
    assert os.listdir(tmp_path) == ["engine"]
    # One exchange, then the old tree (now under the staging name) is deleted.
    assert final_always_there["calls"] == ["_renameat2", "rmtree"]


@pytest.mark.parametrize("err", [errno.ENOSYS, errno.EINVAL, None])
def test_replace_falls_back_to_rename_aside_where_the_exchange_is_unavailable(
    tmp_path, monkeypatch, events, err
):
    monkeypatch.setattr(atomic, "_libc_renameat2", _unavailable(err))
    final = tmp_path / "ckpt"
    _write(final, OLD)
    with atomic_dir(final, replace=True) as tmp:
        _write(tmp, NEW)
    aside = f"{tmp}.old"
    assert [e for e in events if e[0] == "rename"] == [
        ("rename", str(final), aside),
        ("rename", str(tmp), str(final)),
    ]
    assert _tree(final) == {**NEW, "sub": None, "sub/deeper": None}
    assert os.listdir(tmp_path) == ["ckpt"]


def test_the_fallback_puts_the_old_tree_back_when_the_second_rename_fails(tmp_path, monkeypatch):
    monkeypatch.setattr(atomic, "_libc_renameat2", _unavailable(errno.ENOSYS))
    final = tmp_path / "ckpt"
    _write(final, OLD)
    real_rename = os.rename

    def rename(src, dst):
        if str(dst) == str(final) and not str(src).endswith(".old"):
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(OSError, match="Input/output"), atomic_dir(final, replace=True) as tmp:
        _write(tmp, NEW)
    assert _tree(final) == OLD and os.listdir(tmp_path) == ["ckpt"]


def test_other_exchange_errors_are_raised_and_leave_final(tmp_path, monkeypatch):
    monkeypatch.setattr(atomic, "_libc_renameat2", _unavailable(errno.EACCES))
    final = tmp_path / "ckpt"
    _write(final, OLD)
    with pytest.raises(PermissionError) as e, atomic_dir(final, replace=True) as tmp:
        _write(tmp, NEW)
    assert e.value.filename == str(tmp) and e.value.filename2 == str(final)
    assert _tree(final) == OLD and os.listdir(tmp_path) == ["ckpt"]


@linux_only
@pytest.mark.parametrize("replace", [False, True])
def test_fsync_order_files_then_directories_then_rename_then_parent(tmp_path, events, replace):
    final = tmp_path / "shard_00000"
    if replace:
        _write(final, OLD)
    with atomic_dir(final, replace=replace) as tmp:
        _write(tmp, NEW)
        (tmp / "empty").mkdir()
        os.symlink("a.txt", tmp / "link")  # not a regular file: not fsynced (nor followed)
    at = {e: i for i, e in enumerate(events)}
    fsynced = [e[1] for e in events if e[0] == "fsync"]
    staged = {str(tmp / rel) for rel in [*NEW, "sub", "sub/deeper", "empty"]} | {str(tmp)}
    assert sorted(fsynced) == sorted([*staged, str(tmp_path)])  # each once; the parent last
    for rel in [*NEW, "sub/deeper", "empty"]:  # everything before the directory holding it
        path = tmp / rel
        assert at["fsync", str(path)] < at["fsync", str(path.parent)]
    assert at["fsync", str(tmp / "sub")] < at["fsync", str(tmp)]
    (rename,) = [e for e in events if e[0] == "rename"]
    assert rename == ("rename", str(tmp), str(final))
    assert at["fsync", str(tmp)] < at[rename] < at["fsync", str(tmp_path)] == len(events) - 1


def _failing_directory_fsync(err):
    """os.fsync failing with `err` on a directory (as some file systems do), real on a file."""
    real = os.fsync

    def fsync(fd):
        if os.path.isdir(f"/proc/self/fd/{fd}"):
            raise OSError(err, os.strerror(err))
        real(fd)

    return fsync


@linux_only
@pytest.mark.parametrize("err", [errno.EINVAL, errno.ENOTSUP])
def test_a_directory_fsync_the_file_system_cannot_do_is_tolerated(tmp_path, monkeypatch, err):
    monkeypatch.setattr(os, "fsync", _failing_directory_fsync(err))
    fsync_dir(tmp_path)
    with atomic_dir(tmp_path / "ckpt") as tmp:
        _write(tmp, NEW)
    write_text(tmp_path / "latest", "ckpt\n", fsync=True)
    assert _tree(tmp_path) == {
        **{f"ckpt/{rel}": text for rel, text in NEW.items()},
        **{"ckpt": None, "ckpt/sub": None, "ckpt/sub/deeper": None, "latest": "ckpt\n"},
    }


@linux_only
def test_any_other_directory_fsync_error_is_raised_before_the_rename(tmp_path, monkeypatch):
    final = tmp_path / "ckpt"
    _write(final, OLD)
    monkeypatch.setattr(os, "fsync", _failing_directory_fsync(errno.EIO))
    with pytest.raises(OSError, match="Input/output"):
        fsync_dir(tmp_path)
    with pytest.raises(OSError, match="Input/output"), atomic_dir(final, replace=True) as tmp:
        _write(tmp, NEW)
    assert _tree(final) == OLD and os.listdir(tmp_path) == ["ckpt"]


def test_publish_dir_removes_staging_when_it_fails(tmp_path):
    final = tmp_path / "shard_00001"
    _write(final, OLD)
    staging = tmp_path / "shard_00001.tmp"
    _write(staging, NEW)
    with pytest.raises(FileExistsError):
        publish_dir(staging, final)
    assert _tree(final) == OLD and os.listdir(tmp_path) == ["shard_00001"]


def test_leftovers_are_the_temporaries_named_after_a_target(tmp_path):
    final = tmp_path / "latest"
    for name in (".latest.tmp-0badc0de", ".latest.tmp-12345678.json", ".latest.tmp-1.old"):
        (tmp_path / name).write_text("x")
    for name in ("latest", ".latest", ".latest2.tmp-0badc0de", ".other.tmp-0badc0de"):
        (tmp_path / name).write_text("x")
    assert [p.name for p in leftovers(final)] == [
        ".latest.tmp-0badc0de",
        ".latest.tmp-1.old",
        ".latest.tmp-12345678.json",
    ]
