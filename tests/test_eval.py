"""fastdavs-eval on the tiny preset: every metric present, in range and deterministic; oracle
models that make the scores exact (perfect and blank generators, one-hot word classifiers,
identity-revealing features, a generator that draws the true frames of whichever clip drives
it); the copy baseline by hand; the shuffled drives; the jaw probe on enough identities to
generalise; the command end to end and its one-line errors."""

import dataclasses
import json
import math
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fastdavs.config import DavsConfig
from fastdavs.data.dataset import DavsDataset
from fastdavs.data.prepare import prepare
from fastdavs.data.shards import INDEX_FILE, ShardSet, load_index
from fastdavs.data.synth import SynthConfig, generate
from fastdavs.errors import DataError
from fastdavs.evaluate.cli import main as eval_main
from fastdavs.evaluate.run import DRIVES, evaluate, format_table, shuffled_partners, write_results
from fastdavs.io.checkpoint import save_checkpoint
from fastdavs.model import DavsModel

# The classifier sizes the trainer derives from the `shards` fixture: 3 words, 4 identities.
CFG = DavsConfig.from_preset("tiny", num_words=3, num_identities=4)
FACES_CFG = DavsConfig.from_preset("tiny", num_words=4, num_identities=10)  # the `faces` fixture
RESULT_KEYS = {
    "split", "clips", "identities", "words", "data", "checkpoint", "trained_to", "device",
    "seconds", "notes", "lip_reading", "retrieval", "probes", "generation", "sync",
}  # fmt: skip
PROBES = ("identity_from_audio_wid", "identity_from_video_wid", "word_from_pid")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return DavsModel(CFG).eval()


class Fixed(nn.Module):
    """A stand-in module that answers every call with the same tensor."""

    def __init__(self, out: torch.Tensor):
        super().__init__()
        self.out = out

    def forward(self, *args) -> torch.Tensor:
        return self.out


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    """Prepared shards at 32 px with enough training identities for the jaw probe to read
    faces it never saw: 10 identities (8 train, 1 val, 1 test), 4 words, 1 take. (Seed 2 gives
    4 words of unlike mouth tracks; SynthLRW vocabularies are rich in minimal pairs, whose
    tracks are nearly one another's and would make a weak shuffled control.)"""
    root = tmp_path_factory.mktemp("faces")
    cfg = SynthConfig(identities=10, held_out=2, words=4, takes=1, seed=2, size=64)
    generate(cfg, root / "lrw", 1)
    prepare(root / "lrw", root / "shards", image_size=32, workers=1)
    return root / "shards"


def _split(shards, split: str, cfg: DavsConfig = CFG) -> dict[str, torch.Tensor]:
    """Real frames [N, L, 3, S, S], MFCC windows [N, L, 20, 12], identity frames [N, 3, S, S],
    words [N] and identities [N] of a split, in clip order."""
    ds = DavsDataset(ShardSet(shards, split), cfg, train=False)
    items = [ds[i] for i in range(len(ds))]
    keys = ("frames", "mfcc", "identity", "word", "identity_label")
    return {k: torch.stack([it[k] for it in items]) for k in keys}


def _truth_model(shards, split: str, cfg: DavsConfig) -> tuple[DavsModel, list[torch.Tensor]]:
    """A model whose encoders recognise which clip of the split their input is (its MFCC or its
    frames, exactly) and write that clip's index into the word-ID features, and whose generator
    draws the true frames of the clip whose word-ID drives it. Returns the model and the list
    of clip indices each generate call drew."""
    model = DavsModel(cfg)  # the identity encoder and word classifier stay
    truth = _split(shards, split, cfg)

    def recognise(x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        same = (x.flatten(1)[:, None] == table.flatten(1)[None]).all(-1)  # [B, N]
        assert (same.sum(1) == 1).all(), "not a clip of the split"
        wid = torch.zeros(len(x), cfg.seq_len, cfg.word_dim)
        wid[..., 0] = same.float().argmax(1)[:, None]
        return wid

    drawn = []

    def generate(identity, wid: torch.Tensor) -> torch.Tensor:
        drawn.append(wid[:, 0, 0].long())
        return truth["frames"][drawn[-1]].clone()

    model.encode_audio = lambda mfcc: recognise(mfcc, truth["mfcc"])
    model.encode_video = lambda frames: recognise(frames, truth["frames"])
    model.generate = generate
    return model, drawn


def _numbers(tree) -> list:
    if isinstance(tree, dict):
        return [x for v in tree.values() for x in _numbers(v)]
    if isinstance(tree, list):
        return [x for v in tree for x in _numbers(v)]
    return [tree] if isinstance(tree, int | float) and not isinstance(tree, bool) else []


def test_every_metric_is_present_in_range_and_deterministic(shards, model):
    # Batches of 5 over the 12 train clips (2 identities): 5 + 5 + 2, so results are gathered
    # across uneven batches; train is the split with 2 identities for the identity probes.
    results = evaluate(model, shards, split="train", batch_size=5, progress=False)
    assert set(results) == RESULT_KEYS
    assert (results["split"], results["clips"], results["identities"], results["words"]) == (
        "train",
        12,
        2,
        3,
    )
    # Evaluated on train, the split the jaw probe is fitted on: the results say so.
    assert results["notes"] == [
        "the jaw probe was fitted on the evaluated train split (seen identities)"
    ]
    assert results["checkpoint"] is None
    assert all(math.isfinite(x) for x in _numbers(results))

    lr = results["lip_reading"]
    assert set(lr) == {"audio", "video", "fused", "generated", "chance", "confusions"}
    lr = {k: v for k, v in lr.items() if k != "confusions"}
    confused = results["lip_reading"]["confusions"]
    assert all(0 <= v <= 1 for v in lr.values()) and lr["chance"] == pytest.approx(1 / 3)
    vocabulary = load_index(shards).vocabulary
    for name in ("audio", "video"):  # the most frequent errors, by word name
        rows = confused[name]
        assert all(t in vocabulary and g in vocabulary and t != g and n >= 1 for t, g, n in rows)
        assert [n for *_, n in rows] == sorted((n for *_, n in rows), reverse=True)
        errors, listed = round((1 - lr[name]) * 12), sum(n for *_, n in rows)
        assert listed == errors or (len(rows) == 5 and listed < errors)  # top 5 of <= 6 kinds
    for direction in ("audio_to_video", "video_to_audio"):
        ret = results["retrieval"][direction]
        assert set(ret) == {"r1", "r5", "r10", "median_rank", "mean_rank"}
        assert 0 <= ret["r1"] <= ret["r5"] <= ret["r10"] <= 1
        assert 1 <= ret["median_rank"] <= 12 and 1 <= ret["mean_rank"] <= 12
    for name in PROBES:
        p = results["probes"][name]
        assert set(p) == {"accuracy", "chance", "classes", "train", "test", "reason"}
        assert p["reason"] is None and 0 <= p["accuracy"] <= 1
        assert (p["train"], p["test"]) == (6, 6)  # stratified halves: every class split evenly
    assert results["probes"]["identity_from_audio_wid"]["chance"] == 0.5
    assert results["probes"]["word_from_pid"]["classes"] == 3

    g = results["generation"]
    assert g["mouth_box_px"] == list(CFG.mouth_box_px)
    assert "smaller than the 11x11 SSIM window" in g["ssim_mouth_reason"]  # 8 x 16 px at 32 px
    assert set(g) == {
        *DRIVES, "real", "jaw_probe", "shuffled_same_word", "mouth_box_px", "ssim_mouth_reason"
    }  # fmt: skip
    for drive in DRIVES:
        assert 0 < g[drive]["psnr"]["mouth"] < 60 and 0 < g[drive]["psnr"]["full"] < 60
        assert isinstance(g[drive]["jaw_r2"], float) and g[drive]["jaw_r2"] <= 1
    for drive in ("audio", "video", "copy"):
        assert -1 <= g[drive]["ssim"]["full"] <= 1 and g[drive]["ssim"]["mouth"] is None
    assert "ssim" not in g["audio_shuffled"] and "ssim" not in g["video_shuffled"]
    assert g["shuffled_same_word"] == 0  # 3 words: every shuffled drive says another word
    probe = g["jaw_probe"]
    assert probe["reason"] is None and probe["fit_split"] == "train"
    assert (probe["clips"], probe["frames"], probe["features"]) == (12, 300, 8 * 16)
    sync = results["sync"]
    assert sync["max_offset"] == CFG.seq_len // 2
    for name in ("generated", "real"):
        assert 0 <= sync[name]["distance"] <= 2 and sync[name]["confidence"] >= 0
        assert 0 <= sync[name]["in_sync"] <= 1

    again = evaluate(model, shards, split="train", batch_size=5, progress=False)
    assert {**again, "seconds": 0} == {**results, "seconds": 0}

    table = format_table(results)
    assert "split train: 12 clips, 2 identities" in table
    assert "probe identity <- audio word-ID" in table and "(chance 0.500)" in table
    assert "mouth: the 8x16 px mouth box is smaller" in table
    assert "| copy " in table and "| shuffled audio " in table
    assert "jaw opening R^2 (pixel probe)" in table and "| real " in table


def test_generator_oracles_bound_the_image_scores(shards):
    model = DavsModel(CFG)  # oracles replace its parts
    real = _split(shards, "test")["frames"]  # one batch holds the whole split
    model.generate = lambda identity, wid: real.clone()
    perfect = evaluate(model, shards, batch_size=64, progress=False)
    model.generate = lambda identity, wid: torch.zeros_like(real)
    blank = evaluate(model, shards, batch_size=64, progress=False)
    for driver in ("audio", "video"):
        assert perfect["generation"][driver]["psnr"] == {"full": math.inf, "mouth": math.inf}
        assert perfect["generation"][driver]["ssim"]["full"] == pytest.approx(1, abs=1e-9)
        assert blank["generation"][driver]["psnr"]["full"] < 12
        assert blank["generation"][driver]["psnr"]["mouth"] < 12
        assert blank["generation"][driver]["ssim"]["full"] < 0.05
    # Generated video equal to the real one reads and syncs exactly as the real one does.
    assert perfect["lip_reading"]["generated"] == perfect["lip_reading"]["video"]
    assert perfect["sync"]["generated"] == perfect["sync"]["real"]
    assert blank["sync"]["generated"] != blank["sync"]["real"]


def test_copy_baseline_is_the_identity_frame_scored_by_hand(shards):
    cfg = dataclasses.replace(CFG, seq_len=12)  # 12 of the 25 stored frames are scored
    results = evaluate(DavsModel(cfg), shards, batch_size=4, progress=False)  # 6 clips: 4 + 2
    truth = _split(shards, "test", cfg)
    frames = truth["frames"].double().numpy()  # [N, L, 3, S, S]
    ident = truth["identity"].double().numpy()[:, None]  # [N, 1, 3, S, S]
    # The stored frame each item's identity frame is, and its sequence frames (stride 2): the
    # identity frame itself is not scored where it is one of them.
    ds = DavsDataset(ShardSet(shards, "test"), cfg, train=False)
    plans = [ds.plan(i, 0) for i in range(len(ds))]
    scored = [[p.seq_start + 2 * k != p.identity for k in range(cfg.seq_len)] for p in plans]
    assert not all(map(all, scored))  # the fixture has such a clip: the rule is exercised
    top, bottom, left, right = CFG.mouth_box_px
    for part, (rows, cols) in {
        "full": (slice(None), slice(None)),
        "mouth": (slice(top, bottom), slice(left, right)),
    }.items():
        err = (frames - ident)[..., rows, cols] ** 2
        mse = err.mean(axis=(2, 3, 4))  # [N, L] per frame
        per_clip = [(-10 * np.log10(m[s])).mean() for m, s in zip(mse, scored, strict=True)]
        expected = np.mean(per_clip)  # frames of a clip, then clips
        assert results["generation"]["copy"]["psnr"][part] == pytest.approx(expected, rel=1e-9)
    assert 0 < results["generation"]["copy"]["ssim"]["full"] < 1


def test_shuffled_partners_say_another_word():
    rng = np.random.default_rng(0)
    for n, k in ((2, 2), (7, 2), (12, 3), (50, 5), (90, 30)):
        for words in (rng.integers(0, k, n), np.sort(rng.integers(0, k, n))):
            if len(np.unique(words)) < 2:
                continue
            partners = shuffled_partners(words)
            assert (words[partners] != words).all()
            assert np.array_equal(partners, shuffled_partners(words))  # deterministic
    # In word-major order the partners spread over the split instead of piling on one clip.
    words = np.repeat(np.arange(3), 6)
    assert len(np.unique(shuffled_partners(words))) == 18
    # A single word: half the split further on; one clip: itself.
    assert shuffled_partners(np.zeros(4, int)).tolist() == [2, 3, 0, 1]
    assert shuffled_partners(np.zeros(1, int)).tolist() == [0]


def test_true_frames_read_like_real_ones_and_beat_the_shuffled_speech(faces):
    model, drawn = _truth_model(faces, "test", FACES_CFG)
    results = evaluate(model, faces, batch_size=64, progress=False)  # one batch: 4 clips
    g = results["generation"]
    # Generate calls in order: audio, video, shuffled audio, shuffled video drives.
    words = _split(faces, "test", FACES_CFG)["word"]
    assert torch.equal(drawn[0], torch.arange(4)) and torch.equal(drawn[1], torch.arange(4))
    assert (words[drawn[2]] != words).all() and (words[drawn[3]] != words).all()
    assert g["shuffled_same_word"] == 0
    # The probe reads held-out faces well (the ceiling), the copy not at all (the floor).
    real = g["real"]["jaw_r2"]
    assert real > 0.7 and g["copy"]["jaw_r2"] < 0.1
    assert g["jaw_probe"]["held_out_r2"] > 0.7 and g["jaw_probe"]["clips"] == 32
    # True frames read exactly like the real ones; another word's mouth reads far worse.
    assert g["audio"]["jaw_r2"] == g["video"]["jaw_r2"] == real
    assert g["audio_shuffled"]["jaw_r2"] < real - 0.5 and g["video_shuffled"]["jaw_r2"] < 0.5
    assert g["audio"]["psnr"]["mouth"] == math.inf
    assert g["audio_shuffled"]["psnr"]["mouth"] < g["copy"]["psnr"]["mouth"] + 10


def test_jaw_is_null_with_a_reason_without_visemes(shards, model, tmp_path):
    """Real LRW (or shards prepared before visemes were stored) has none: no R^2, a reason."""
    data = shutil.copytree(shards, tmp_path / "shards")
    for meta_path in (data / "test").glob("shard_*/meta.json"):
        meta = json.loads(meta_path.read_text())
        del meta["arrays"]["viseme"]
        meta_path.write_text(json.dumps(meta))
        (meta_path.parent / "viseme.npy").unlink()
    results = evaluate(model, data, progress=False)
    g = results["generation"]
    assert all(g[drive]["jaw_r2"] is None for drive in (*DRIVES, "real"))
    assert "test split has no ground-truth visemes" in g["jaw_probe"]["reason"]
    assert g["copy"]["psnr"]["full"] > 0  # everything else is still measured
    assert "jaw opening R^2 (pixel probe)    n/a   (the test split has no" in format_table(results)


def test_feature_oracles_make_accuracies_exact(shards):
    model = DavsModel(CFG)  # oracles replace its parts
    truth = _split(shards, "train")
    k, d = CFG.num_words, CFG.word_dim
    for shift, expected in ((0, 1.0), (1, 0.0)):  # the true word, then always a wrong one
        logits = F.one_hot((truth["word"] + shift) % k, k).float()  # [N, K]
        model.word_classifier = Fixed(logits)
        lr = evaluate(model, shards, split="train", batch_size=64, progress=False)["lip_reading"]
        assert [lr[m] for m in ("audio", "video", "fused", "generated")] == [expected] * 4
    # Word-ID features that spell out the identity (+1 or -1 in every dimension, so the probe's
    # per-dimension standardisation does not blow up pure-noise dimensions): the probe must read
    # it perfectly, and audio equal to video must retrieve its own clip first.
    sign = torch.where(truth["identity_label"] == truth["identity_label"][0], 1.0, -1.0)  # [N]
    wid = sign[:, None, None] + 0.1 * torch.randn(12, CFG.seq_len, d)  # [N, L, D]
    model.encode_audio = model.encode_video = lambda x: wid
    results = evaluate(model, shards, split="train", batch_size=64, progress=False)
    assert results["probes"]["identity_from_audio_wid"]["accuracy"] == 1.0
    assert results["retrieval"]["audio_to_video"]["r1"] == 1.0
    assert results["sync"]["real"]["distance"] == 0 and results["sync"]["real"]["in_sync"] == 1


def test_missing_test_split_falls_back_to_val_and_says_so(shards, model, tmp_path):
    data = shutil.copytree(shards, tmp_path / "shards")
    index = json.loads((data / INDEX_FILE).read_text())
    del index["splits"]["test"]
    (data / INDEX_FILE).write_text(json.dumps(index))
    results = evaluate(model, data, progress=False)
    assert results["split"] == "val" and results["notes"] == [
        "the data has no test split: evaluated on val"
    ]
    # One identity in val: no identity probe, and the table says why instead of a number.
    assert results["probes"]["identity_from_video_wid"]["accuracy"] is None
    assert "need 2 classes" in results["probes"]["identity_from_video_wid"]["reason"]
    assert "note: the data has no test split" in format_table(results)
    del index["splits"]["val"]
    (data / INDEX_FILE).write_text(json.dumps(index))
    with pytest.raises(DataError, match="no 'test' split \\(have: train\\)"):
        evaluate(model, data, progress=False)


def _run_dir(tmp_path, model, shards=None):
    run = tmp_path / "run"
    save_checkpoint(run, "gen_000004", model, trainer_state={"stage": "gen", "step": 4})
    if shards is not None:
        (run / "run.json").write_text(json.dumps({"data": str(shards)}))
    return run


def test_command_on_a_run_directory(shards, model, tmp_path, capsys):
    run = _run_dir(tmp_path, model, shards)
    assert eval_main([str(run), "--batch-size", "4"]) == 0
    out = capsys.readouterr().out
    results = json.loads((run / "eval.json").read_text())
    assert results == {**results, "split": "test", "clips": 6, "identities": 1}
    assert results["checkpoint"] == str(run / "checkpoints" / "gen_000004")
    assert results["trained_to"] == {"stage": "gen", "step": 4}
    assert out.startswith(f"fastdavs-eval  {run / 'checkpoints' / 'gen_000004'} (gen step 4)")
    assert "lip reading (word accuracy)" in out and f"written: {run / 'eval.json'}" in out
    # A checkpoint directory finds its run's data; --out and --split are honoured.
    out_file = tmp_path / "elsewhere" / "val.json"
    ckpt = run / "checkpoints" / "gen_000004"
    assert eval_main([str(ckpt), "--split", "val", "--out", str(out_file)]) == 0
    assert json.loads(out_file.read_text())["split"] == "val"


def test_ablation_probes_are_shown_beside_the_runs(shards, model, tmp_path, capsys):
    """RUN/no-disentangle/eval.json is found and its probes and word accuracies printed beside
    the run's (and kept in the results); --ablation names another; a wrong one is one line."""
    run = _run_dir(tmp_path, model, shards)
    ablation = run / "no-disentangle" / "eval.json"
    ablation.parent.mkdir()
    fake = {"split": "test", "lip_reading": {"audio": 0.871, "video": 0.652}}
    fake["probes"] = {
        "identity_from_audio_wid": {"accuracy": 0.912},
        "identity_from_video_wid": {"accuracy": 0.998},
        "word_from_pid": {"accuracy": 0.047},
    }
    ablation.write_text(json.dumps(fake))
    assert eval_main([str(run), "--batch-size", "4"]) == 0
    out = capsys.readouterr().out
    results = json.loads((run / "eval.json").read_text())
    assert results["ablation"] == {"eval": str(ablation), **fake}
    lines = {line[:33].strip(): line[33:] for line in out.splitlines()}
    assert "| ablation audio 0.871  video 0.652" in lines["lip reading (word accuracy)"]
    assert "| ablation 0.912" in lines["probe identity <- audio word-ID"]
    assert "| ablation 0.998" in lines["probe identity <- video word-ID"]
    assert "| ablation 0.047" in lines["probe word <- person-ID"]
    # Without one, nothing is shown; --ablation takes a run directory or the file.
    ablation.rename(tmp_path / "other.json")
    assert eval_main([str(run), "--batch-size", "4"]) == 0
    assert "| ablation" not in capsys.readouterr().out
    assert json.loads((run / "eval.json").read_text())["ablation"] is None
    assert (
        eval_main([str(run), "--batch-size", "4", "--ablation", str(tmp_path / "other.json")]) == 0
    )
    assert "| ablation 0.912" in capsys.readouterr().out
    # Another split, or no eval.json, is refused before the evaluation, in one line.
    fake["split"] = "val"
    (tmp_path / "other.json").write_text(json.dumps(fake))
    assert eval_main([str(run), "--ablation", str(tmp_path / "other.json")]) == 2
    assert "evaluated on split 'val', this run on 'test'" in _one_line_error(capsys)
    assert eval_main([str(run), "--ablation", str(tmp_path)]) == 2
    assert "evaluate the --no-disentangle run first" in _one_line_error(capsys)


def test_write_results_is_atomic_json(tmp_path):
    path = write_results({"psnr": math.inf, "x": [1, None]}, tmp_path / "a" / "eval.json")
    assert json.loads(path.read_text()) == {"psnr": math.inf, "x": [1, None]}
    assert sorted(p.name for p in path.parent.iterdir()) == ["eval.json"]
    (tmp_path / "file").touch()
    with pytest.raises(DataError, match="cannot write the results"):
        write_results({}, tmp_path / "file" / "eval.json")


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith("fastdavs-eval: error: ")
    return err


def test_command_errors_are_one_line(shards, model, tmp_path, capsys):
    assert eval_main([str(tmp_path / "nowhere")]) == 2
    assert str(tmp_path / "nowhere") in _one_line_error(capsys)
    run = _run_dir(tmp_path, model)  # no run.json
    assert eval_main([str(run)]) == 2
    assert "run.json: missing" in (err := _one_line_error(capsys)) and "pass --data DIR" in err
    ckpt = shutil.copytree(run / "checkpoints" / "gen_000004", tmp_path / "loose")
    assert eval_main([str(ckpt)]) == 2
    assert "not inside a run directory; pass --data DIR" in _one_line_error(capsys)
    assert eval_main([str(run), "--data", str(tmp_path / "nodata")]) == 2
    assert "no shard index" in _one_line_error(capsys)
