"""fastdavs-eval on the tiny preset: every metric present, in range and deterministic; oracle
models that make the scores exact (perfect and blank generators, one-hot word classifiers,
identity-revealing features); the command end to end and its one-line errors."""

import json
import math
import shutil

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fastdavs.checkpoint import save_checkpoint
from fastdavs.config import DavsConfig
from fastdavs.data.dataset import DavsDataset
from fastdavs.data.shards import INDEX_FILE, ShardSet
from fastdavs.errors import DataError
from fastdavs.eval import main as eval_main
from fastdavs.evaluate import evaluate, format_table, write_results
from fastdavs.model import DavsModel

# The classifier sizes the trainer derives from the `shards` fixture: 3 words, 4 identities.
CFG = DavsConfig.from_preset("tiny", num_words=3, num_identities=4)
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


def _split(shards, split: str) -> dict[str, torch.Tensor]:
    """Real frames [N, L, 3, S, S], words [N] and identities [N] of a split, in clip order."""
    ds = DavsDataset(ShardSet(shards, split), CFG, train=False)
    items = [ds[i] for i in range(len(ds))]
    return {k: torch.stack([it[k] for it in items]) for k in ("frames", "word", "identity_label")}


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
    assert results["notes"] == [] and results["checkpoint"] is None
    assert all(math.isfinite(x) for x in _numbers(results))

    lr = results["lip_reading"]
    assert set(lr) == {"audio", "video", "fused", "generated", "chance"}
    assert all(0 <= v <= 1 for v in lr.values()) and lr["chance"] == pytest.approx(1 / 3)
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
    for driver in ("audio", "video"):
        assert 0 < g[driver]["psnr"]["mouth"] < 60 and 0 < g[driver]["psnr"]["full"] < 60
        assert -1 <= g[driver]["ssim"]["full"] <= 1 and g[driver]["ssim"]["mouth"] is None
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
