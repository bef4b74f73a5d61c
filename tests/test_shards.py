"""Packed shards (write, index, memory-mapped read, atomic resume) and the training Dataset.

The fake clips need no video: pixel (y, x) of stored frame f of clip c is (25 c + f, x, y), so
every output image says which clip and frame it came from and where it was cropped and whether
it was flipped; MFCC window w of clip c carries 32 c + w in its [0, 0] entry (exact in float16).
"""

import json
import pickle
import shutil

import numpy as np
import pytest
import torch

from fastdavs.config import ConfigError, DavsConfig
from fastdavs.data.dataset import DavsDataset, EpochSampler, _item_rng, make_loader, take_run
from fastdavs.data.shards import (
    FRAMES_PER_CLIP,
    ShardSet,
    ShardWriter,
    complete_shards,
    is_complete,
    load_index,
    remove_stale_tmp,
    write_index,
)
from fastdavs.errors import DataError

T = FRAMES_PER_CLIP
S, A = 32, 36  # crop offsets 0..4 in each axis, as for 256 from 260
N_CLIPS, CAPACITY = 7, 3
VOCAB = ["about", "bring", "could"]
PEOPLE = ["p0", "p1"]


def fake_clip(c: int):
    f = np.arange(T)[:, None, None]
    y = np.arange(A)[None, :, None]
    x = np.arange(A)[None, None, :]
    frames = np.stack(np.broadcast_arrays(25 * c + f, x, y), axis=-1).astype(np.uint8)
    mfcc = np.random.default_rng(c).normal(0, 8, (T, 20, 12))
    mfcc[:, 0, 0] = 32 * c + np.arange(T)
    return frames, mfcc


def write_set(out):
    with ShardWriter(out / "train", A, CAPACITY) as w:
        for c in range(N_CLIPS):
            frames, mfcc = fake_clip(c)
            w.add(frames, mfcc, word=c % 3, identity=c % 2 if c < 5 else -1, clip_id=f"w/{c}.mp4")
    with ShardWriter(out / "val", A, CAPACITY) as w:
        w.add(*fake_clip(9), word=1, identity=-1, clip_id="v/0.mp4")
        w.skip("v/1.mp4", "no face found")
    return write_index(out, image_size=S, aligned_size=A, vocabulary=VOCAB, identities=PEOPLE)


@pytest.fixture
def out(tmp_path):
    write_set(tmp_path)
    return tmp_path


def decode(imgs: torch.Tensor) -> list[tuple[int, int, int, int, bool]]:
    """(clip, frame, crop_y, crop_x, flip) of each [3, S, S] image of [N, 3, S, S] (or one image);
    checks that each is an intact crop of one stored frame. (NumPy: one thread, so a loaded
    2-core machine does not slow it down.)"""
    x = imgs.numpy().reshape(-1, 3, S, S) * 255
    v = x.round().astype(np.int64)
    assert np.abs(x - v).max() < 1e-4, "pixel values are not k / 255"
    code, cols, rows = v[:, 0, 0, 0], v[:, 1, 0, :], v[:, 2, :, 0]  # [N], [N, S], [N, S]
    assert (v[:, 0] == code[:, None, None]).all()
    assert (v[:, 1] == cols[:, None, :]).all() and (v[:, 2] == rows[:, :, None]).all()
    flip = cols[:, 0] > cols[:, -1]
    cols = np.where(flip[:, None], cols[:, ::-1], cols)
    ramp = np.arange(S)
    assert (cols == cols[:, :1] + ramp).all() and (rows == rows[:, :1] + ramp).all()
    return [
        (c // 25, c % 25, y, x, f)
        for c, y, x, f in zip(
            code.tolist(), rows[:, 0].tolist(), cols[:, 0].tolist(), flip.tolist(), strict=True
        )
    ]


def cfg(**kw):
    lengths = {"seq_len": 12, "adv_frames": 20, "gan_frames": 6}  # the paper's
    return DavsConfig.from_preset("tiny", **{**lengths, **kw})


# ---- shards -------------------------------------------------------------------------------------
def test_roundtrip_by_capacity_memmapped(tmp_path):
    index = write_set(tmp_path)
    assert [p.name for p in complete_shards(tmp_path / "train")] == [
        "shard_00000",
        "shard_00001",
        "shard_00002",
    ]
    assert index.splits["train"] == {
        "shards": ["train/shard_00000", "train/shard_00001", "train/shard_00002"],
        "clips": 7,
    }
    assert index.splits["val"]["clips"] == 1
    assert index.skipped == [{"split": "val", "clip": "v/1.mp4", "reason": "no face found"}]

    loaded = load_index(tmp_path)
    assert (loaded.image_size, loaded.aligned_size, loaded.frames_per_clip) == (S, A, 25)
    assert loaded.vocabulary == VOCAB and loaded.identities == PEOPLE
    on_disk = json.loads((tmp_path / "index.json").read_text())
    assert on_disk["splits"] == index.splits and on_disk["first_frame"] == 2

    ss = ShardSet(tmp_path, "train")
    assert len(ss) == 7
    assert [ss.locate(i) for i in (0, 2, 3, 6)] == [(0, 0), (0, 2), (1, 0), (2, 0)]
    np.testing.assert_array_equal(ss.words, [0, 1, 2, 0, 1, 2, 0])
    np.testing.assert_array_equal(ss.identities, [0, 1, 0, 1, 0, -1, -1])
    assert ss.clip_ids == [f"w/{c}.mp4" for c in range(7)]
    for c in range(7):
        frames, mfcc = fake_clip(c)
        got_f, got_m = ss.frames(c), ss.mfcc(c)
        # Views into read-only maps of the files, not copies in RAM.
        assert isinstance(got_f, np.memmap) and isinstance(got_m, np.memmap)
        assert not got_f.flags.owndata and not got_f.flags.writeable
        np.testing.assert_array_equal(got_f, frames)
        assert got_m.dtype == np.float16
        np.testing.assert_array_equal(got_m, mfcc.astype(np.float16))
        err = np.abs(got_m.astype(np.float64) - mfcc)
        assert (err <= 2.0**-11 * np.abs(mfcc) + 2.0**-25).all()  # float16 round-to-nearest
        assert err.max() > 0  # the random windows really went through float16
    # Each array is a self-describing .npy (row count written at close).
    arr = np.load(tmp_path / "train/shard_00002/frames.npy", mmap_mode="r")
    assert arr.shape == (1, T, A, A, 3) and arr.dtype == np.uint8

    # Pickling (DataLoader workers under spawn) must not serialise the mapped data.
    blob = pickle.dumps(ss)
    assert len(blob) < 10_000
    np.testing.assert_array_equal(pickle.loads(blob).frames(4), fake_clip(4)[0])


def test_stale_tmp_ignored_and_cleaned_complete_shards_kept(tmp_path):
    write_set(tmp_path)
    # A killed run: a half-written shard (never renamed) and one with junk.
    w = ShardWriter(tmp_path / "train", A, CAPACITY, first_shard=3)
    w.add(*fake_clip(0), word=0, identity=0, clip_id="w/0.mp4")
    del w
    (tmp_path / "train/shard_00004.tmp").mkdir()
    assert not is_complete(tmp_path / "train/shard_00003.tmp")
    assert not (tmp_path / "train/shard_00003").exists()
    assert len(complete_shards(tmp_path / "train")) == 3
    index = write_index(tmp_path, image_size=S, aligned_size=A, vocabulary=VOCAB, identities=[])
    assert index.splits["train"]["clips"] == 7 and len(ShardSet(tmp_path, "train")) == 7

    stale = remove_stale_tmp(tmp_path / "train")
    assert [p.name for p in stale] == ["shard_00003.tmp", "shard_00004.tmp"]
    assert sorted(p.name for p in (tmp_path / "train").iterdir()) == [
        "shard_00000",
        "shard_00001",
        "shard_00002",
    ]
    # Resume: complete shards are done and are never overwritten.
    assert all(is_complete(p) for p in complete_shards(tmp_path / "train"))
    with pytest.raises(DataError, match="shard_00001: shard already complete"):
        ShardWriter(tmp_path / "train", A, CAPACITY, first_shard=1).skip("x", "y")
    # The writer of shard 3 replaces its own leftover .tmp and commits it.
    (tmp_path / "train/shard_00003.tmp").mkdir()
    (tmp_path / "train/shard_00003.tmp/junk").write_text("x")
    with ShardWriter(tmp_path / "train", A, CAPACITY, first_shard=3) as w:
        w.add(*fake_clip(3), word=2, identity=1, clip_id="w/3b.mp4")
    assert sorted(p.name for p in (tmp_path / "train/shard_00003").iterdir()) == [
        "frames.npy",
        "identity.npy",
        "meta.json",
        "mfcc.npy",
        "word.npy",
    ]
    write_index(tmp_path, image_size=S, aligned_size=A, vocabulary=VOCAB, identities=[])
    ss = ShardSet(tmp_path, "train")
    assert len(ss) == 8 and ss.clip_ids[-1] == "w/3b.mp4"
    np.testing.assert_array_equal(ss.frames(7), fake_clip(3)[0])


def test_writer_discards_shard_on_error_and_rejects_bad_clips(tmp_path):
    with pytest.raises(RuntimeError), ShardWriter(tmp_path / "train", A, 4) as w:
        w.add(*fake_clip(0), word=0, identity=0, clip_id="a")
        raise RuntimeError("decode crashed")
    assert list((tmp_path / "train").iterdir()) == []
    w = ShardWriter(tmp_path / "train", A, 4)
    frames, mfcc = fake_clip(0)
    with pytest.raises(DataError, match=r"bad\.mp4: frames are uint8 \[24, 36, 36, 3\]"):
        w.add(frames[:24], mfcc, 0, 0, "bad.mp4")
    with pytest.raises(DataError, match="float16"):
        w.add(frames, mfcc * 1e4, 0, 0, "loud.mp4")
    with pytest.raises(DataError, match="float16"):
        w.add(frames, np.full_like(mfcc, np.nan), 0, 0, "nan.mp4")
    with pytest.raises(DataError, match=r"few\.mp4: visemes are \[24, 4\]"):
        w.add(frames, mfcc, 0, 0, "few.mp4", visemes=np.zeros((24, 4)))
    with pytest.raises(DataError, match="NaN"):
        w.add(frames, mfcc, 0, 0, "nan.mp4", visemes=np.full((T, 4), np.nan))


def fake_visemes(c: int) -> np.ndarray:
    return np.random.default_rng(100 + c).random((T, 4))


def test_visemes_round_trip_and_are_absent_where_a_clip_lacks_them(tmp_path):
    # Shard 0 and 1 have them for every clip; shard 2 misses one: it stores none.
    with ShardWriter(tmp_path / "train", A, CAPACITY) as w:
        for c in range(N_CLIPS):
            visemes = None if c == 6 else fake_visemes(c)
            w.add(*fake_clip(c), word=c % 3, identity=0, clip_id=f"w/{c}.mp4", visemes=visemes)
    with ShardWriter(tmp_path / "val", A, CAPACITY) as w:
        for c in range(2):
            w.add(*fake_clip(c), word=c, identity=0, clip_id=f"v/{c}.mp4", visemes=fake_visemes(c))
        w.skip("v/9.mp4", "no face found")  # skipped clips do not count
    write_index(tmp_path, image_size=S, aligned_size=A, vocabulary=VOCAB, identities=PEOPLE)
    val = ShardSet(tmp_path, "val")
    assert val.visemes.dtype == np.float32 and val.visemes.shape == (2, T, 4)
    np.testing.assert_array_equal(val.visemes, np.float32([fake_visemes(0), fake_visemes(1)]))
    meta = json.loads((tmp_path / "val/shard_00000/meta.json").read_text())
    assert meta["arrays"]["viseme"] == {"shape": [2, T, 4], "dtype": "float32"}
    assert ShardSet(tmp_path, "train").visemes is None  # one shard of the split lacks them
    assert (tmp_path / "train/shard_00001/viseme.npy").exists()
    assert not (tmp_path / "train/shard_00002/viseme.npy").exists()

    (tmp_path / "val/shard_00000/viseme.npy").unlink()
    with pytest.raises(DataError, match="viseme.npy: unreadable shard array"):
        ShardSet(tmp_path, "val")
    np.save(tmp_path / "val/shard_00000/viseme.npy", np.zeros((3, T, 4), np.float32))
    with pytest.raises(DataError, match="viseme.npy: float32 \\(3, 25, 4\\) does not match"):
        ShardSet(tmp_path, "val")


def test_shards_of_format_1_are_still_read(tmp_path):
    """Format 2 only added the optional viseme.npy: a version-1 set reads, without visemes."""
    write_set(tmp_path)
    for path in [tmp_path / "index.json", *tmp_path.glob("*/shard_*/meta.json")]:
        path.write_text(path.read_text().replace('"format_version": 2', '"format_version": 1'))
    ss = ShardSet(tmp_path, "train")
    assert len(ss) == 7 and ss.visemes is None
    np.testing.assert_array_equal(ss.frames(3), fake_clip(3)[0])


def test_shard_of_only_skipped_clips_is_complete_and_empty(tmp_path):
    with ShardWriter(tmp_path / "test", A, 5) as w:
        w.skip("t/0.mp4", "no audio")
        w.skip("t/1.mp4", "too short")
    assert is_complete(tmp_path / "test/shard_00000")
    index = write_index(tmp_path, image_size=S, aligned_size=A, vocabulary=VOCAB, identities=[])
    assert index.splits["test"]["clips"] == 0
    assert [s["reason"] for s in index.skipped] == ["no audio", "too short"]
    assert len(ShardSet(tmp_path, "test")) == 0


def test_load_errors_name_the_file_and_the_fix(out, tmp_path):
    with pytest.raises(DataError, match="run fastdavs-prepare first"):
        load_index(tmp_path / "nothing")
    with pytest.raises(DataError, match="no split 'test'"):
        ShardSet(out, "test")

    meta = out / "train/shard_00001/meta.json"
    good = meta.read_text()
    meta.write_text(good[:40])
    with pytest.raises(DataError, match=f"{meta}: unreadable shard metadata"):
        load_index(out)
    meta.write_text(good.replace('"complete": true', '"complete": false'))
    with pytest.raises(DataError, match=f"{meta}: shard is incomplete"):
        ShardSet(out, "train")
    meta.write_text(good)

    shutil.rmtree(out / "train/shard_00002")
    with pytest.raises(DataError, match="shard_00002: shard of split 'train' is missing"):
        load_index(out)

    index = out / "index.json"
    index.write_text(index.read_text().replace('"format_version": 2', '"format_version": 99'))
    with pytest.raises(DataError, match="format version 99"):
        load_index(out)
    index.write_text("{")
    with pytest.raises(DataError, match="index.json: unreadable shard index"):
        load_index(out)

    frames = out / "val/shard_00000/frames.npy"
    frames.write_bytes(frames.read_bytes()[:1000])  # truncated
    write_index(out, image_size=S, aligned_size=A, vocabulary=VOCAB, identities=[])
    with pytest.raises(DataError, match="frames.npy"):
        ShardSet(out, "val").frames(0)


# ---- dataset ------------------------------------------------------------------------------------
def check_item(item, index, c, train):
    """Decode one item and check every invariant; return its choices."""
    L, P, G = c.seq_len, c.adv_frames, c.gan_frames
    assert item["identity"].shape == (3, S, S) and item["identity"].dtype == torch.float32
    assert item["frames"].shape == (L, 3, S, S) and item["adv_frames"].shape == (P, 3, S, S)
    assert item["mfcc"].shape == (L, 20, 12) and item["mfcc"].dtype == torch.float32
    assert item["word"].dtype == item["identity_label"].dtype == torch.int64
    assert int(item["word"]) == index % 3
    assert int(item["identity_label"]) == (index % 2 if index < 5 else -1)

    (clip, ident_frame, *crop), *_ = decode(item["identity"])
    assert clip == index and 0 <= ident_frame < T
    seq, adv = decode(item["frames"]), decode(item["adv_frames"])
    # Same clip and the same crop and flip on every frame of the item.
    assert all(d[0] == index and list(d[2:]) == crop for d in seq + adv)
    y0, x0, flip = crop
    assert 0 <= y0 <= A - S and 0 <= x0 <= A - S
    seq_frames = [d[1] for d in seq]
    start = seq_frames[0]
    assert seq_frames == list(range(start, start + 2 * L, 2)) and seq_frames[-1] < T
    window = item["mfcc"][:, 0, 0].round().long().tolist()
    assert window == [32 * index + f for f in seq_frames]  # each frame's own MFCC window
    adv_frames = [d[1] for d in adv]
    assert adv_frames == list(range(adv_frames[0], adv_frames[0] + P)) and adv_frames[-1] < T
    gen = int(item["gen_start"])
    assert 0 <= gen <= L - G
    if not train:
        assert (y0, x0, flip, gen) == ((A - S) // 2, (A - S) // 2, False, 0)
    return ident_frame, start, gen, adv_frames[0], y0, x0, flip


def test_items_over_many_epochs_stay_in_range_and_use_the_whole_range(out):
    c = cfg()
    ds = DavsDataset(ShardSet(out, "train"), c, train=True, seed=3)
    seen = []
    for epoch in range(29):
        ds.set_epoch(epoch)
        for i in range(N_CLIPS):  # 203 items, every clip incl. both ends of every shard
            seen.append(check_item(ds[i], i, c, train=True))
    ident, start, gen, adv, y0, x0, flip = map(set, zip(*seen, strict=True))
    assert ident == set(range(T))  # 0..24: never the original's 25..28
    assert start == {0, 1} and gen == set(range(7)) and adv == set(range(6))
    assert y0 == x0 == set(range(A - S + 1)) and flip == {False, True}


def test_eval_is_centred_and_deterministic(out):
    c = cfg()
    ds = DavsDataset(ShardSet(out, "train"), c, train=False, seed=3)
    for i in range(N_CLIPS):
        a = ds[i]
        ident, start, gen, adv, *_ = check_item(a, i, c, train=False)
        assert (start, gen, adv) == (0, 0, 2)
        ds.set_epoch(5)
        b = ds[i]
        ds.set_epoch(0)
        assert all(torch.equal(a[k], b[k]) for k in a)
        assert torch.equal(a["mfcc"], torch.from_numpy(ds.shards.mfcc(i)[0:23:2].astype("f4")))


def test_train_reproducible_per_seed_epoch_index(out):
    c = cfg()
    one = DavsDataset(ShardSet(out, "train"), c, train=True, seed=3)
    two = DavsDataset(ShardSet(out, "train"), c, train=True, seed=3)
    other_seed = DavsDataset(ShardSet(out, "train"), c, train=True, seed=4)
    for i in range(N_CLIPS):
        a, b = one[(2, i)], two[(2, i)]
        assert all(torch.equal(a[k], b[k]) for k in a)
        two.set_epoch(2)
        assert all(torch.equal(a[k], v) for k, v in two[i].items())
        two.set_epoch(0)
    plans = {e: [one.plan(i, e) for i in range(N_CLIPS)] for e in (0, 1)}
    assert plans[0] != plans[1]
    assert plans[0] != [other_seed.plan(i, 0) for i in range(N_CLIPS)]


def test_item_streams_do_not_overlap():
    # Each (seed, epoch, index) must own its random stream: neighbouring items, epochs or seeds
    # sharing a block of the counter-based generator would make their choices correlated.
    draws = {
        key: set(_item_rng(*key).random(64).tolist())
        for key in [(0, 0, 0), (0, 0, 1), (0, 1, 0), (0, 1, 1), (1, 0, 0), (0, 0, 2**40)]
    }
    keys = list(draws)
    for a in range(len(keys)):
        for b in range(a + 1, len(keys)):
            assert not draws[keys[a]] & draws[keys[b]], (keys[a], keys[b])


def test_tiny_lengths(out):
    c = DavsConfig.from_preset("tiny")  # seq_len 4, adv_frames 4, gan_frames 2
    starts = set()
    for train in (True, False):
        ds = DavsDataset(ShardSet(out, "train"), c, train=train, seed=0)
        for epoch in range(6):
            for i in range(N_CLIPS):
                _, start, *_ = check_item(ds[(epoch, i)], i, c, train)
                starts.add((train, start))
    assert starts == {(True, 8), (True, 9), (False, 8)}  # the centre of the clip


def test_lengths_and_image_size_validated(out):
    ss = ShardSet(out, "train")
    DavsDataset(ss, cfg(seq_len=13, gan_frames=6, adv_frames=25), train=True)  # 25 frames: fits
    with pytest.raises(ConfigError, match="seq_len=14: frames at stride 2 span 27"):
        DavsDataset(ss, cfg(seq_len=14), train=True)
    with pytest.raises(ConfigError, match="adv_frames=26"):
        DavsDataset(ss, cfg(adv_frames=26), train=True)
    with pytest.raises(ConfigError, match="gan_frames=5"):
        DavsDataset(ss, cfg(seq_len=4, gan_frames=5), train=True)
    with pytest.raises(DataError, match="prepared for image_size 32"):
        DavsDataset(ss, cfg(image_size=64), train=True)


def test_take_run_cuts_the_generation_run(out):
    c = cfg()
    ds = DavsDataset(ShardSet(out, "train"), c, train=True, seed=1)
    batch = next(iter(make_loader(ds, batch_size=N_CLIPS, shuffle=False, num_workers=0)))
    run = take_run(batch["frames"], batch["gen_start"], c.gan_frames)
    mfcc = take_run(batch["mfcc"], batch["gen_start"], c.gan_frames)
    assert run.shape == (N_CLIPS, c.gan_frames, 3, S, S)
    assert len(set(batch["gen_start"].tolist())) > 1
    for b, s in enumerate(batch["gen_start"].tolist()):
        assert torch.equal(run[b], batch["frames"][b, s : s + c.gan_frames])
        assert torch.equal(mfcc[b], batch["mfcc"][b, s : s + c.gan_frames])


def test_loader_batches_identical_for_0_and_2_workers_across_epochs(out):
    c = DavsConfig.from_preset("tiny")
    runs = {}
    for workers in (0, 2):
        ds = DavsDataset(ShardSet(out, "train"), c, train=True, seed=7)
        loader = make_loader(ds, batch_size=3, shuffle=True, num_workers=workers, seed=11)
        assert loader.persistent_workers == (workers > 0)
        epochs = []
        for epoch in (0, 1):  # the same persistent workers serve both epochs
            ds.set_epoch(epoch)
            epochs.append([b for b in loader])
        runs[workers] = epochs
    for e0, e2 in zip(runs[0], runs[2], strict=True):
        assert len(e0) == len(e2) == 3  # 7 clips: 3 + 3 + 1
        for b0, b2 in zip(e0, e2, strict=True):
            assert b0.keys() == b2.keys()
            assert all(torch.equal(b0[k], b2[k]) for k in b0)
    # Each epoch visits every clip once, in a new order and with new crops.
    for epoch in runs[0]:
        clips = [d[0] for b in epoch for d in decode(b["identity"])]
        assert sorted(clips) == list(range(N_CLIPS))
    order = [[d[0] for b in epoch for d in decode(b["identity"])] for epoch in runs[0]]
    assert order[0] != order[1]


class _People:
    """The part of a DavsDataset that EpochSampler reads: its length, epoch and identities."""

    def __init__(self, identities: list[int]):
        self.shards = type("Shards", (), {"identities": np.array(identities)})()
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.shards.identities)


def _runs(keys: list[int], identities: np.ndarray) -> list[int]:
    """Lengths of the runs of consecutive keys with one identity."""
    lengths = [1]
    for a, b in zip(keys, keys[1:], strict=False):
        same = identities[a] == identities[b]
        lengths[-1:] = [lengths[-1] + 1] if same else [lengths[-1], 1]
    return lengths


def test_sampler_identity_group_runs_cover_every_item_once():
    # 7 people, interleaved: 5 with 5 clips and 2 with 4; and 2 clips of unknown identity
    people = [i % 7 for i in range(33)] + [-1, -1]
    data = _People(people)
    ids = data.shards.identities
    orders = []
    for epoch in (0, 1):
        data.epoch = epoch
        keys = [i for e, i in EpochSampler(data, shuffle=True, seed=4, group=4)]
        assert sorted(keys) == list(range(len(people)))
        # each person's clips come as a run of 4 (and a run of 1 for the people with 5)
        runs = _runs(keys, ids)
        assert max(runs) <= 5  # a person's run of 1 may land beside their run of 4
        assert sum(r >= 4 for r in runs) == 7
        orders.append(keys)
    assert orders[0] != orders[1]
    data.epoch = 0
    again = [i for e, i in EpochSampler(data, shuffle=True, seed=4, group=4)]
    assert again == orders[0]  # reproducible from (seed, epoch)
    plain = [i for e, i in EpochSampler(data, shuffle=True, seed=4)]
    assert max(_runs(plain, ids)) <= 3  # group 1 is a plain shuffle


def test_sampler_identity_group_ranks_share_whole_runs():
    data = _People([i // 6 for i in range(48)])  # 8 people x 6 clips
    whole = [i for e, i in EpochSampler(data, shuffle=True, seed=2, group=3)]
    shares = [[i for e, i in EpochSampler(data, True, 2, rank, 2, group=3)] for rank in (0, 1)]
    assert sorted(shares[0] + shares[1]) == list(range(48))
    assert shares[0] == [k for p, k in enumerate(whole) if p // 3 % 2 == 0]
    for share in shares:  # each rank's batches of 3 hold one person
        assert all(len({data.shards.identities[k] for k in share[j : j + 3]}) == 1 for j in (0, 3))
    sampler = EpochSampler(data, True, 2, 1, 2, group=3)
    sampler.start = 5
    assert len(sampler) == 24 - 5 and [i for e, i in sampler] == shares[1][5:]
    with pytest.raises(ValueError, match="group=0"):
        EpochSampler(data, True, group=0)
