"""The training loop on the tiny preset: the command end to end, resume equivalence and the
non-finite guard (data parallelism: tests/test_data_parallel.py)."""

import dataclasses
import json

import cv2
import pytest
import torch

from fastdavs.config import DavsConfig
from fastdavs.data.video_io import read_clip
from fastdavs.io.checkpoint import latest_checkpoint, load_checkpoint
from fastdavs.train import stages
from fastdavs.train.cli import main as train_main
from fastdavs.train.loop import RunOptions, Trainer, TrainingError
from fastdavs.train.runlog import GAP
from fastdavs.train.step import TrainStep

HEADER = 20  # pixels of the sample pictures' label row


def _records(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _train(*args: str) -> int:
    return train_main(["--preset", "tiny", "--workers", "0", *args])


def test_train_command_runs_every_stage(shards, tmp_path):
    run = tmp_path / "run"
    assert _train("--data", str(shards), "--out", str(run)) == 0
    # Classifier sizes come from the data: 3 words, 4 identities.
    expected = DavsConfig.from_preset("tiny", num_words=3, num_identities=4)
    assert DavsConfig.load(run / "config.json") == expected
    records = _records(run)
    assert [(r["stage"], r["step"]) for r in records] == [
        (s, i) for s in stages.STAGES for i in range(1, 5)
    ]
    gen = [r for r in records if r["stage"] == "gen"]
    assert {"rec_audio", "gan", "pid_uniform", "wid_uniform", "d_patch"} <= set(gen[0])
    render = [r for r in records if r["stage"] == "render"]
    # The generator and the audio encoder alone: no adversary, no discriminator.
    assert {"rec_audio", "rec_video", "smoothness", "ce_audio"} <= set(render[0])
    assert not {"gan", "d_patch", "pid_uniform", "modality_d"} & set(render[0])
    assert all(r["bad_steps"] == 0 for r in records)
    samples = ("samples/render_000004.png", "samples/gen_000002.png", "samples/gen_000004.png")
    for png in ("losses.png", *samples):
        image = cv2.imread(str(run / png))
        assert image is not None and image.std() > 5, png
    # tiny: a header, then 4 held-out clips, each identity | real | audio-driven | video-driven
    # | shuffled audio, the 4 runs of seq_len=4 frames; 32 px tiles scaled to 64, 4 px gaps.
    grid = cv2.imread(str(run / "samples/gen_000004.png"))
    assert grid.shape == (HEADER + 4 * 64, 64 * (1 + 4 * 4) + 4 * GAP, 3)
    _, state = load_checkpoint(latest_checkpoint(run), restore_rng=False)
    assert state["done"] == list(stages.STAGES) and state["stage"] == "gen"
    # The sample mp4: the same five panels of the 25 stored frames, at 256 px, with the sound.
    clip = read_clip(run / "samples/gen_000004.mp4")
    assert clip.frames.shape == (25, HEADER + 256, 5 * 256, 3) and clip.fps == 25
    assert len(clip.audio) == pytest.approx(16000, abs=640) and clip.audio.std() > 0.01
    info = json.loads((run / "run.json").read_text())
    assert info["data"] == str(shards.resolve()) and info["channels_last"]
    assert info["retain_heap"]  # glibc: the CPU fast path keeps freed memory
    assert info["autocast"] is None  # no --amp
    # fastdavs-eval ran on the held-out identities at the end.
    results = json.loads((run / "eval.json").read_text())
    assert results["split"] == "test" and results["trained_to"] == {"stage": "gen", "step": 4}
    assert 0 <= results["lip_reading"]["audio"] <= 1


def test_a_stage_of_zero_steps_is_passed_over(shards, tmp_path):
    """`render` at 0 steps (the paper preset's schedule, and what a config.json written before
    the stage existed reads as): no records, no checkpoint, and a run resumed in `gen` stays
    where it was instead of starting over after an empty `render`."""
    run = tmp_path / "run"
    args = ("--data", str(shards), "--out", str(run), "--no-eval", "--schedule-render-steps", "0",
            "--schedule-pid-steps", "2", "--schedule-wid-steps", "2")  # fmt: skip
    assert _train(*args, "--steps", "2") == 0  # pid and wid done, gen at step 2 of 4
    records = _records(run)
    assert [(r["stage"], r["step"]) for r in records] == [
        (s, i) for s in ("pid", "wid", "gen") for i in (1, 2)
    ]
    assert not list((run / "checkpoints").glob("render_*"))
    _, state = load_checkpoint(latest_checkpoint(run), restore_rng=False)
    assert (state["stage"], state["step"], state["done"]) == ("gen", 2, ["pid", "wid"])
    assert _train(*args, "--resume") == 0
    assert [(r["stage"], r["step"]) for r in _records(run)[6:]] == [("gen", 3), ("gen", 4)]


def test_no_disentangle_turns_the_adversaries_off(shards, tmp_path):
    run = tmp_path / "run"
    args = ("--data", str(shards), "--out", str(run), "--stage", "gen", "--steps", "1")
    voices = ("--audio-warp", "0.2", "--loss-view-consistency", "1")
    assert _train(*args, *voices, "--no-disentangle", "--no-eval") == 0
    loss = DavsConfig.load(run / "config.json").loss
    assert (loss.pid_uniform, loss.wid_uniform, loss.adversary_ce) == (0, 0, 0)
    assert loss.view_consistency == 0
    assert loss.reconstruction == DavsConfig.from_preset("tiny").loss.reconstruction
    assert not (run / "eval.json").exists()


def test_resume_matches_an_uninterrupted_run(shards, tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert _train("--data", str(shards), "--out", str(straight), "--stage", "gen") == 0
    assert (
        _train("--data", str(shards), "--out", str(resumed), "--stage", "gen", "--steps", "2") == 0
    )
    with (resumed / "metrics.jsonl").open("a") as f:  # a killed run logged past its checkpoint
        f.write(json.dumps({"stage": "gen", "step": 3, "rec_audio": -1.0}) + "\n")
    assert _train("--data", str(shards), "--out", str(resumed), "--stage", "gen", "--resume") == 0
    a, b = _records(straight), _records(resumed)
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    for ra, rb in zip(a, b, strict=True):
        for key, value in ra.items():
            if isinstance(value, str):
                assert rb[key] == value
            elif key != "samples_per_s":
                assert rb[key] == pytest.approx(value, rel=1e-5, abs=1e-6), (ra["step"], key)


def test_linear_lr_decay_follows_the_step_across_a_resume(shards, tmp_path, monkeypatch):
    """`optim.lr_decay="linear"`: step i of `gen` scheduled for N steps runs at lr * (1 - i/N)
    in every group of both sides, whatever --steps bounds the run to, while `wid` keeps its lr;
    a resumed run picks the schedule up from its step (the optimiser state it loads carries
    the last step's lr, which must not leak into the next)."""
    seen: list[tuple[str, list[float]]] = []  # (stage, every group's lr) per step, in order
    real = TrainStep.__call__

    def spying(self, stage, batch):
        seen.append((stage, [g["lr"] for o in self.optimizers.values() for g in o.param_groups]))
        return real(self, stage, batch)

    monkeypatch.setattr(TrainStep, "__call__", spying)
    optim = dataclasses.replace(DavsConfig.from_preset("tiny").optim, lr=1e-3, lr_decay="linear")
    schedule = dataclasses.replace(DavsConfig.from_preset("tiny").schedule, wid_steps=2)
    cfg = DavsConfig.from_preset("tiny", optim=optim, schedule=schedule)
    run = tmp_path / "run"
    opts = RunOptions(
        device="cpu", data=shards, out=run, stages=("wid", "gen"), workers=0, evaluate=False
    )
    Trainer(cfg, dataclasses.replace(opts, max_steps=2)).run()  # wid done, gen steps 0, 1 of 4
    Trainer(cfg, dataclasses.replace(opts, resume=True)).run()  # gen steps 2, 3
    expected = [("wid", 1e-3), ("wid", 1e-3)] + [("gen", 1e-3 * (1 - i / 4)) for i in range(4)]
    assert [stage for stage, _ in seen] == [stage for stage, _ in expected]
    for (_, lrs), (_, lr) in zip(seen, expected, strict=True):
        assert len(lrs) == 2 and lrs == pytest.approx([lr, lr])  # a G and a D side, one group each


def test_non_finite_steps_are_skipped_then_stop_the_run(shards, tmp_path, monkeypatch):
    schedule = dataclasses.replace(DavsConfig.from_preset("tiny").schedule, wid_steps=10)
    cfg = DavsConfig.from_preset("tiny", schedule=schedule)
    run = tmp_path / "run"
    Trainer(
        cfg, RunOptions(device="cpu", data=shards, out=run, stages=("wid",), max_steps=2, workers=0)
    ).run()
    good = latest_checkpoint(run)
    real = stages.generator_loss

    def poisoned(model, fwd, batch, stage):
        loss, parts = real(model, fwd, batch, stage)
        parts["contrastive"] = torch.tensor(float("nan"))
        return loss * float("nan"), parts

    monkeypatch.setattr(stages, "generator_loss", poisoned)
    trainer = Trainer(
        cfg, RunOptions(device="cpu", data=shards, out=run, stages=("wid",), resume=True, workers=0)
    )
    with pytest.raises(TrainingError) as err:
        trainer.run()
    message = str(err.value)
    assert "3 non-finite steps in a row at stage wid step 5" in message
    assert "contrastive=nan" in message and str(good) in message
    assert latest_checkpoint(run) == good  # the last good checkpoint survives
    assert trainer.pos.bad_steps == 3


def test_metrics_records_are_means_over_the_logged_window(shards, tmp_path, monkeypatch):
    """With log_every 2 a record holds each loss part's mean over the good steps since the
    previous record: skipped steps are left out of it, and a window of skipped steps alone has
    no loss parts. Steps 3 and 5 are reported skipped here."""
    returned: list[dict[str, float] | None] = []
    real = TrainStep.__call__

    def skipping(self, stage, batch):
        parts = real(self, stage, batch)
        if len(returned) + 1 in (3, 5):
            parts = None
        returned.append(None if parts is None else {k: v.item() for k, v in parts.items()})
        return parts

    monkeypatch.setattr(TrainStep, "__call__", skipping)
    schedule = dataclasses.replace(
        DavsConfig.from_preset("tiny").schedule, wid_steps=5, log_every=2
    )
    cfg = DavsConfig.from_preset("tiny", schedule=schedule)
    run = tmp_path / "run"
    Trainer(cfg, RunOptions(device="cpu", data=shards, out=run, stages=("wid",), workers=0)).run()
    records = _records(run)
    assert [(r["step"], r["bad_steps"]) for r in records] == [(2, 0), (4, 1), (5, 2)]
    names = {"ce_audio", "ce_video", "contrastive", "modality_d", "modality_flip"}
    assert set(returned[0]) == names
    for record, window in zip(records, ([0, 1], [3], []), strict=True):
        assert set(record) & names == (names if window else set())
        for name in names & set(record):
            mean = sum(returned[i][name] for i in window) / len(window)
            assert record[name] == pytest.approx(mean, rel=1e-5, abs=1e-6), (record, name)
    assert returned[0]["ce_audio"] != returned[1]["ce_audio"]  # a mean, not one of the two


def test_amp_without_native_bf16_stays_float32(shards, tmp_path, monkeypatch, caplog):
    import fastdavs.train.step as train_step_module

    monkeypatch.setattr(train_step_module, "cpu_has_native_bf16", lambda: False)
    cfg = DavsConfig.from_preset("tiny")
    opts = RunOptions(
        device="cpu", data=shards, out=tmp_path / "run", stages=("pid",), amp=True, workers=0
    )
    with caplog.at_level("WARNING"):
        trainer = Trainer(cfg, opts)
    assert "no native bfloat16" in caplog.text
    with trainer.step.autocast():
        assert not torch.is_autocast_enabled("cpu")
    assert trainer._run_info()["autocast"] == "float32"
    monkeypatch.setattr(train_step_module, "cpu_has_native_bf16", lambda: True)
    with Trainer(cfg, opts).step.autocast():
        assert torch.is_autocast_enabled("cpu")
