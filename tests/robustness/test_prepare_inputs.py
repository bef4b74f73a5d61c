"""`fastdavs-prepare` on hostile LRW trees. The documented
recovery for a clip that cannot be used is to skip it: the good clips are prepared, the run
exits 0 and lists every skipped clip with the reason, and `index.json` keeps them. A tree where
no clip can be used, and an OUT that cannot be written, are errors: exit 2, one line, and no
index or skip-only shard left behind.

Covered elsewhere, not repeated here: a missing tree (tests/test_cli.py::
test_prepare_of_a_missing_tree_is_one_line), each reader error of a damaged mp4
(tests/test_video_io.py), a killed prepare resuming (tests/test_shards.py).
"""

import errno
import json
import os
import shutil
from pathlib import Path

import pytest

import fastdavs.data.shards as shards_module
from fastdavs.data.prepare import main as prepare_main
from fastdavs.data.synth import SynthConfig, generate

WORD_DIR = "LALONKETAM/train"  # the first word of the seed-5 set


@pytest.fixture(scope="module")
def lrw(tmp_path_factory) -> Path:
    """A SynthLRW tree of 6 good clips: 2 words x 1 take x 3 identities (1 each split)."""
    root = tmp_path_factory.mktemp("lrw") / "lrw"
    generate(SynthConfig(identities=3, held_out=2, words=2, takes=1, seed=5, size=64), root, 1)
    return root


def _prepare(capsys, src: Path, out: Path) -> tuple[int, str, list[str]]:
    rc = prepare_main([str(src), str(out), "--preset", "tiny", "--workers", "1"])
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if "error" in line or "Trace" in line]
    return rc, captured.out, errors


def test_corrupt_clips_among_good_ones_are_skipped_and_listed(lrw, tmp_path, capsys, robustness):
    src = Path(shutil.copytree(lrw, tmp_path / "lrw"))
    words = src / WORD_DIR
    good = next(words.glob("*.mp4")).read_bytes()
    bad = {
        "cut": words / "LALONKETAM_00002.mp4",
        "text": words / "LALONKETAM_00003.mp4",
        "empty": words / "LALONKETAM_00004.mp4",
    }
    bad["cut"].write_bytes(good[: len(good) // 2])
    bad["text"].write_text("not a video\n")
    bad["empty"].write_bytes(b"")
    out = tmp_path / "shards"
    rc, stdout, errors = _prepare(capsys, src, out)
    assert (rc, errors) == (0, [])
    reasons = {
        "cut": "is damaged or truncated (Invalid data found when processing input); re-download "
        "or re-encode it",
        "text": "is not a readable media file (Invalid data found when processing input); "
        "re-download or re-encode it, e.g. ffmpeg -i IN -c:v libx264 -c:a aac OUT.mp4",
        "empty": "is empty (0 bytes); re-download or re-create it",
    }
    skipped = [f"  {f.relative_to(src)}: {f}: {reasons[k]}" for k, f in bad.items()]
    assert stdout.splitlines() == [
        "train: 2 clips in 1 shards",
        "val: 2 clips in 1 shards",
        "test: 2 clips in 1 shards",
        "faces: found in every frame of 6 of 6 clips; share of frames with a face: mean 100.0%, "
        "lowest 100.0%",
        "skipped 3 clips:",
        *skipped,
        f"index: {out / 'index.json'}",
    ]
    index = json.loads((out / "index.json").read_text())
    assert [s["clip"] for s in index["skipped"]] == [str(f.relative_to(src)) for f in bad.values()]
    robustness.record(
        "fastdavs-prepare LRW OUT (a cut, a text and an empty .mp4 among 6 good clips)",
        "exit 0; 6 clips prepared; the 3 bad ones listed with the reason",
    )


def test_a_tree_of_only_corrupt_clips_is_an_error(tmp_path, capsys, robustness):
    words = tmp_path / "lrw" / "WORD" / "train"
    words.mkdir(parents=True)
    (words / "WORD_00001.mp4").write_bytes(b"")
    (words / "WORD_00002.mp4").write_text("not a video\n")
    out = tmp_path / "shards"
    rc, stdout, errors = _prepare(capsys, tmp_path / "lrw", out)
    first = words / "WORD_00001.mp4"
    assert rc == 2
    assert errors == [
        f"fastdavs-prepare: error: {tmp_path / 'lrw'}: none of its 2 clips could be prepared; "
        f"first: {first}: is empty (0 bytes); re-download or re-create it (and 1 more)"
    ]
    assert stdout == "" and not out.exists()  # no index, no skip-only shard
    robustness.record(
        "fastdavs-prepare LRW OUT (every clip corrupt)",
        "exit 2, one line: none of its 2 clips could be prepared; OUT not created",
    )


def test_out_under_a_file_is_an_error(lrw, tmp_path, capsys, robustness):
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a directory\n")
    rc, stdout, errors = _prepare(capsys, lrw, blocker / "shards")
    assert rc == 2
    assert errors == [
        f"fastdavs-prepare: error: {blocker / 'shards'}: cannot write the "
        "shards (Not a directory); choose a writable --out with free space, then rerun (complete "
        "shards are kept)"
    ]
    assert stdout == "" and sorted(os.listdir(tmp_path)) == ["file"]
    robustness.record(
        "fastdavs-prepare LRW FILE/shards (OUT below a regular file)",
        "exit 2, one line naming the path: Not a directory",
    )


def test_full_disk_is_an_error_and_leaves_no_partial_shard(
    lrw, tmp_path, capsys, monkeypatch, robustness
):
    """The disk fills while the first shard is being committed (root ignores permissions here,
    so an unwritable OUT is simulated by the write failure itself)."""

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "meta.json")

    monkeypatch.setattr(shards_module, "write_json", disk_full)
    out = tmp_path / "shards"
    rc, stdout, errors = _prepare(capsys, lrw, out)
    assert rc == 2
    assert errors == [
        "fastdavs-prepare: error: meta.json: cannot write the shards (No space left on device); "
        "choose a writable --out with free space, then rerun (complete shards are kept)"
    ]
    assert stdout == "" and not out.exists()  # no .tmp shard, no index, no empty folder
    robustness.record(
        "fastdavs-prepare LRW OUT (ENOSPC while writing a shard)",
        "exit 2, one line: No space left on device; no shard, no index",
    )
