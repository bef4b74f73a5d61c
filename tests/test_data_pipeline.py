"""SynthLRW -> mp4 -> fastdavs-prepare -> shards -> DataLoader, end to end, plus the
audio/video sync of the whole decode -> align -> MFCC path."""

import json
import shutil
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch

from fastdavs.config import DavsConfig
from fastdavs.data import face, phonemes, voice
from fastdavs.data.audio import HOP, WIN
from fastdavs.data.dataset import DavsDataset, make_loader
from fastdavs.data.prepare import main as prepare_main
from fastdavs.data.prepare import prepare, prepare_clip
from fastdavs.data.shards import ShardSet, load_index
from fastdavs.data.synth import (
    SynthConfig,
    generate,
    load_manifest,
    plan,
    preview,
    render_example,
)
from fastdavs.data.video_io import read_clip, write_mp4
from fastdavs.errors import DataError

SYNTH = SynthConfig(identities=4, held_out=2, words=3, takes=1, seed=3, size=64)


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthlrw")
    generate(SYNTH, out, workers=1)
    return out


def test_synthlrw_layout_and_streams(synth_dir):
    manifest = load_manifest(synth_dir)
    assert manifest["clips"] == 4 * 3 * 1
    assert len(manifest["vocabulary"]) == 3
    splits = {i["id"]: i["split"] for i in manifest["identities"]}
    assert splits == {0: "train", 1: "train", 2: "val", 3: "test"}
    mp4s = sorted(synth_dir.glob("*/*/*.mp4"))
    assert len(mp4s) == 12
    for mp4 in mp4s:
        word, split = mp4.parent.parent.name, mp4.parent.name
        assert mp4.name.startswith(word + "_") and split in ("train", "val", "test")
        assert mp4.with_suffix(".txt").read_text().startswith(f"Word: {word}\n")
        meta = json.loads(mp4.with_suffix(".json").read_text())
        assert splits[meta["identity"]] == split  # held-out identities only in val/test
        assert np.asarray(meta["landmarks"]).shape == (29, 5, 2)
        assert np.asarray(meta["visemes"]).shape == (29, 4)
        assert meta["viseme_order"] == ["jaw_open", "lip_width", "lip_round", "teeth"]
    with av.open(str(mp4s[0])) as container:
        (v,) = container.streams.video
        (a,) = container.streams.audio
        assert v.codec_context.name == "h264" and v.codec_context.pix_fmt == "yuv420p"
        assert a.codec_context.name == "aac" and a.codec_context.sample_rate == 16000
        assert a.codec_context.layout.nb_channels == 1
    clip = read_clip(mp4s[0])
    assert clip.frames.shape == (29, 64, 64, 3) and clip.fps == 25
    assert len(clip.audio) == 18560


def test_render_example_is_the_written_clip(synth_dir):
    """The renderer call gives exact ground truth: it reproduces a written clip (up to H.264)."""
    job = plan(SYNTH, synth_dir)[5]
    ex = render_example(SYNTH, job.identity, job.word, job.take)
    again = render_example(SYNTH, job.identity, job.word, job.take)
    assert np.array_equal(ex.frames, again.frames) and np.array_equal(ex.audio, again.audio)
    clip = read_clip(job.path)
    mse = np.mean((clip.frames.astype(np.float64) - ex.frames) ** 2)
    assert 10 * np.log10(255**2 / mse) > 30  # PSNR of the H.264 round trip
    other = render_example(SYNTH, (job.identity + 1) % SYNTH.identities, job.word, job.take)
    assert np.abs(other.frames.astype(int) - ex.frames).mean() > 5  # another face
    # The sidecar's visemes are the ones the mouth was drawn from, rounded to 1e-4.
    sidecar = np.asarray(json.loads(Path(job.path).with_suffix(".json").read_text())["visemes"])
    assert np.abs(sidecar - ex.visemes).max() <= 0.5e-4 and ex.visemes[:, 0].max() > 0.3


def test_prepare_and_load_batches(synth_dir, tmp_path):
    cfg = DavsConfig.from_preset("tiny")
    out = tmp_path / "shards"
    index = prepare(synth_dir, out, cfg.image_size, workers=1)
    assert {s: e["clips"] for s, e in index.splits.items()} == {"train": 6, "val": 3, "test": 3}
    assert index.skipped == [] and len(index.identities) == 4
    train = ShardSet(out, "train")
    assert sorted(set(train.identities.tolist())) == [0, 1]
    ds = DavsDataset(train, cfg, train=True, seed=0)
    batch = next(iter(make_loader(ds, batch_size=4, shuffle=True, num_workers=0)))
    s = cfg.image_size
    assert batch["frames"].shape == (4, cfg.seq_len, 3, s, s)
    assert batch["mfcc"].shape == (4, cfg.seq_len, 20, 12)
    assert batch["adv_frames"].shape == (4, cfg.adv_frames, 3, s, s)
    assert batch["identity"].shape == (4, 3, s, s)
    assert torch.isfinite(batch["mfcc"]).all() and batch["mfcc"].abs().max() > 1
    assert 0.05 < batch["frames"].mean() < 0.95
    words = {w: i for i, w in enumerate(index.vocabulary)}
    for clip_id, label in zip(train.clip_ids, train.words.tolist(), strict=True):
        assert words[clip_id.split("/")[0]] == label
    # The ground-truth visemes of the stored frames 2..26, clip by clip.
    assert train.visemes.shape == (6, 25, 4) and train.visemes.dtype == np.float32
    for i, clip_id in enumerate(train.clip_ids):
        sidecar = json.loads((synth_dir / clip_id).with_suffix(".json").read_text())
        assert np.array_equal(train.visemes[i], np.float32(sidecar["visemes"])[2:27])
    meta = json.loads((out / "train/shard_00000/meta.json").read_text())
    assert meta["format_version"] == 2 and meta["arrays"]["viseme"]["shape"] == [6, 25, 4]
    # Each item's visemes are those of its sequence frames (stride 2 from the plan's start).
    assert batch["visemes"].shape == (4, cfg.seq_len, 4)
    for i in range(len(ds)):
        start = ds.plan(i, ds.epoch).seq_start
        want = train.visemes[i][start : start + 2 * cfg.seq_len - 1 : 2]
        assert np.array_equal(ds[i]["visemes"].numpy(), want)

    # A rerun finds every shard complete and does no work.
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/shard_*/frames.npy")}
    prepare(synth_dir, out, cfg.image_size, workers=1)
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/shard_*/frames.npy")} == stamps


def test_sidecars_without_visemes_prepare_without_the_array(synth_dir, tmp_path):
    """Real LRW and SynthLRW sets of format 1 have no visemes: the shards then hold no
    viseme.npy and ShardSet.visemes is None; one clip without them drops its shard's array."""
    src = shutil.copytree(synth_dir, tmp_path / "lrw")
    sidecars = sorted(src.glob("*/*/*.json"))
    for path in sidecars:
        meta = json.loads(path.read_text())
        if path.parent.name != "val":  # val keeps them
            del meta["visemes"]
        path.write_text(json.dumps(meta))
    index = prepare(src, tmp_path / "out", 32, workers=1)
    assert {s: e["clips"] for s, e in index.splits.items()} == {"train": 6, "val": 3, "test": 3}
    assert ShardSet(tmp_path / "out", "train").visemes is None
    assert ShardSet(tmp_path / "out", "val").visemes.shape == (3, 25, 4)
    assert not (tmp_path / "out/train/shard_00000/viseme.npy").exists()
    meta = json.loads((tmp_path / "out/train/shard_00000/meta.json").read_text())
    assert set(meta["arrays"]) == {"frames", "mfcc", "word", "identity"}
    cfg = DavsConfig.from_preset("tiny")
    assert "visemes" not in DavsDataset(ShardSet(tmp_path / "out", "train"), cfg, train=False)[0]
    assert DavsDataset(ShardSet(tmp_path / "out", "val"), cfg, train=False)[0]["visemes"].shape == (
        cfg.seq_len,
        4,
    )


def test_a_synthlrw_set_of_format_1_is_read_but_not_reused(synth_dir, tmp_path):
    src = shutil.copytree(synth_dir, tmp_path / "lrw")
    manifest = src / "synthlrw.json"
    manifest.write_text(manifest.read_text().replace('"format_version": 2', '"format_version": 1'))
    assert load_manifest(src)["format_version"] == 1  # fastdavs-prepare still reads it
    with pytest.raises(DataError, match="format 1 .*visemes.*delete it or choose another"):
        generate(SYNTH, src, workers=1)


def test_corrupt_clip_is_skipped_and_reported(synth_dir, tmp_path, capsys):
    src = tmp_path / "lrw"
    shutil.copytree(synth_dir, src)
    word = sorted(p.name for p in src.iterdir() if p.is_dir())[0]
    bad = src / word / "train" / f"{word}_00099.mp4"
    bad.write_text("this is not a video")
    assert (
        prepare_main([str(src), str(tmp_path / "out"), "--preset", "tiny", "--workers", "1"]) == 0
    )
    printed = capsys.readouterr().out
    assert "train: 6 clips" in printed and "skipped 1 clips:" in printed
    assert f"{word}/train/{word}_00099.mp4: " in printed and str(bad) in printed
    (entry,) = load_index(tmp_path / "out").skipped
    assert entry["clip"] == f"{word}/train/{word}_00099.mp4"


def test_prepare_rejects_a_tree_that_is_not_lrw(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert prepare_main([str(tmp_path / "empty"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fastdavs-prepare: error: ") and "no LRW layout found" in err


def test_mouth_and_audio_peak_meet_in_the_frame_window(tmp_path):
    """A clip whose mouth opens only on frame k and whose vowel is centred on frame k: after
    decode -> align -> MFCC, the widest mouth is stored frame k - 2, so is the sidecar viseme
    that opens the jaw, and the audio energy peak sits in the middle of that frame's 20-step
    MFCC window [4k - 8, 4k + 12)."""
    k, size = 13, 64
    rng = np.random.default_rng(0)
    who, how = face.random_identity(rng), voice.random_voice(rng)
    visemes = np.tile(np.asarray(phonemes.REST, np.float32), (29, 1))
    visemes[k] = (1.0, 0.5, 0.0, 0.0)  # jaw wide open on frame k only
    still = np.zeros((29, 4), np.float32)
    still[:, 3] = 1.0  # no head motion: only the mouth changes
    frames, landmarks = face.render_clip(who, visemes, still, np.zeros(29, np.float32), size=size)
    centre = (k + 0.5) / 25
    vowel = [phonemes.Segment("a", centre - 0.02, centre + 0.02)]
    audio = voice.synthesize(vowel, how, phonemes.Take())
    path = tmp_path / "SYNC" / "test" / "SYNC_00001.mp4"
    path.parent.mkdir(parents=True)
    write_mp4(path, frames, audio)
    sidecar = {"landmarks": landmarks.tolist(), "visemes": visemes.tolist()}
    path.with_suffix(".json").write_text(json.dumps(sidecar))

    aligned, windows, _, stored_visemes, share = prepare_clip(path, image_size=32)
    assert share == 1.0  # the sidecar has a face in every frame
    change = np.abs(aligned.astype(int) - aligned[0]).sum(axis=(1, 2, 3))
    assert int(np.argmax(change)) == k - 2
    assert np.array_equal(stored_visemes, visemes[2:27])
    assert int(np.argmax(stored_visemes[:, 0])) == k - 2

    decoded = read_clip(path).audio
    n_steps = (len(decoded) - WIN) // HOP + 1
    energy = [np.sum(decoded[c * HOP : c * HOP + WIN] ** 2) for c in range(n_steps)]
    peak = int(np.argmax(energy))
    first, last = 4 * k - 8, 4 * k + 12  # the window of frame k
    middle = (first + last) / 2  # MFCC step 4k + 2
    # One video frame of misalignment moves the peak by 4 steps: the bound catches it.
    assert abs(peak - middle) <= 2, (peak, first, last)
    # Stored windows are indexed like stored frames: the vowel is in the windows around k - 2.
    loudness = np.abs(windows - windows[0]).sum(axis=(1, 2))
    assert abs(int(np.argmax(loudness)) - (k - 2)) <= 2


def test_synthlrw_is_deterministic_by_seed(tmp_path):
    cfg = SynthConfig(identities=3, held_out=2, words=2, takes=1, seed=11, size=32)
    generate(cfg, tmp_path / "a", workers=1)
    generate(cfg, tmp_path / "b", workers=1)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.*"))
    assert len(files) == 3 * 2 * 3 + 1  # mp4 + txt + json per clip, and the manifest
    for rel in files:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    other = SynthConfig(identities=3, held_out=2, words=2, takes=1, seed=12, size=32)
    assert (
        render_example(other, 0, 0, 0).audio.tobytes()
        != render_example(cfg, 0, 0, 0).audio.tobytes()
    )


def test_preview_grid(tmp_path):
    path = preview(SYNTH, tmp_path / "grid.png", identities=4, frames=3)
    grid = cv2.imread(str(path))
    assert grid.shape == (4 * 64, 3 * 64, 3)
    assert grid.std() > 20  # faces, not a blank image
