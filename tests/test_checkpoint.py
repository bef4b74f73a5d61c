"""Checkpoints: bit-exact resume (weights, BatchNorm statistics, Adam, schedulers, RNG), atomic
saves under injected faults and real kill -9, pruning, and a clear refusal of every damaged or
mismatched checkpoint, all without unpickling."""

import errno
import json
import os
import pickle
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from fastdavs.config import DavsConfig
from fastdavs.errors import CheckpointError
from fastdavs.io import checkpoint as ckpt
from fastdavs.io.checkpoint import (
    CONFIG,
    MODEL,
    RNG_JSON,
    latest_checkpoint,
    load_checkpoint,
    load_model,
    save_checkpoint,
)
from fastdavs.model import DavsModel

TINY = DavsConfig.from_preset("tiny")
REPO = Path(__file__).resolve().parents[1]


def _train_step(model: DavsModel, opt_g, opt_d) -> None:
    """One step whose result depends on every global RNG: torch (inputs, Dropout in the
    adversary), numpy and Python (loss scales), and on BatchNorm's running statistics."""
    s = model.cfg.image_size
    identity = torch.rand(2, 3, s, s)
    mfcc = torch.randn(2, 2, 20, 12)
    ident = model.encode_identity(identity)
    wid = model.encode_audio(mfcc)  # [B, T, D]
    frames = model.generate(ident, wid)  # [B, T, 3, H, W]
    person = model.wid_person_adversary(wid.flatten(0, 1))  # Dropout inside
    scale = 1 + float(np.random.rand()) + random.random()
    loss = scale * frames.mean() + person.square().mean()
    opt_g.zero_grad()
    opt_d.zero_grad()
    loss.backward()
    opt_g.step()
    opt_d.step()


def _trainable(cfg: DavsConfig = TINY):
    model = DavsModel(cfg)
    opt_g = torch.optim.Adam(model.generator_parameters(), lr=1e-2, betas=(0.5, 0.99))
    opt_d = torch.optim.Adam(model.discriminator_parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt_g, step_size=1, gamma=0.5)
    return model, {"g": opt_g, "d": opt_d}, {"g": sched}


def _scramble_rngs() -> None:
    torch.manual_seed(1234)
    np.random.seed(1234)
    random.seed(1234)


def _differs(a: dict, b: dict) -> list[str]:
    return [k for k in a if not torch.equal(a[k], b[k])]


@pytest.mark.parametrize("restore_rng", [True, False])
def test_resume_continues_bit_identically(tmp_path, restore_rng):
    model, opts, scheds = _trainable()
    for _ in range(2):
        _train_step(model, opts["g"], opts["d"])
        scheds["g"].step()
    save_checkpoint(tmp_path, "step_000002", model, opts, scheds, trainer_state={"step": 2})
    _train_step(model, opts["g"], opts["d"])  # the uninterrupted run's third step
    scheds["g"].step()

    _scramble_rngs()
    fresh, fresh_opts, fresh_scheds = _trainable()
    assert _differs(model.state_dict(), fresh.state_dict())
    cfg, state = load_checkpoint(
        tmp_path, fresh, fresh_opts, fresh_scheds, expect_config=TINY, restore_rng=restore_rng
    )
    assert (cfg, state) == (TINY, {"step": 2})
    assert fresh_opts["g"].state_dict()["param_groups"][0]["betas"] == (0.5, 0.99)
    _train_step(fresh, fresh_opts["g"], fresh_opts["d"])
    fresh_scheds["g"].step()

    differing = _differs(model.state_dict(), fresh.state_dict())
    if restore_rng:
        assert differing == []
        for name in opts:
            a, b = opts[name].state_dict()["state"], fresh_opts[name].state_dict()["state"]
            assert a.keys() == b.keys()
            for i in a:
                assert a[i].keys() == b[i].keys()
                assert all(torch.equal(a[i][k], b[i][k]) for k in a[i])
        assert fresh_scheds["g"].state_dict() == scheds["g"].state_dict()
        assert fresh_opts["g"].param_groups[0]["lr"] == opts["g"].param_groups[0]["lr"] == 1e-2 / 8
    else:
        # The control: without the RNG states the third step draws other inputs and masks.
        assert differing


def test_rng_states_come_back(tmp_path):
    model = DavsModel(TINY)
    torch.manual_seed(7)
    np.random.seed(8)
    random.seed(9)
    random.gauss(0, 1)  # leaves a cached second normal in Python's state
    np.random.standard_normal()  # and in numpy's
    save_checkpoint(tmp_path, "step_000001", model)

    def draw():
        return (
            torch.rand(4),
            torch.randn(3),
            np.random.rand(4),
            np.random.standard_normal(),
            [random.random() for _ in range(3)],
            random.gauss(0, 1),
        )

    expected = draw()
    _scramble_rngs()
    scrambled_next = torch.rand(4)
    _scramble_rngs()
    load_checkpoint(tmp_path, restore_rng=False)
    assert torch.equal(torch.rand(4), scrambled_next)  # restore_rng=False leaves them alone
    load_checkpoint(tmp_path)
    got = draw()
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
    np.testing.assert_array_equal(got[2], expected[2])
    assert got[3:] == expected[3:]


def test_scheduler_and_scaler_states_round_trip_exactly(tmp_path):
    model, opts, _ = _trainable()
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opts["d"], patience=0)
    plateau.step(3.0)
    plateau.step(4.0)  # no improvement: lr reduced, best stays 3.0, counters move
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=3)
    scaler.scale(torch.ones(()))  # materialise the scale
    scaler.update(new_scale=256.0)
    save_checkpoint(tmp_path, "s1", model, opts, {"plateau": plateau}, scaler)

    _, fresh_opts, _ = _trainable()
    fresh_plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(fresh_opts["d"])
    fresh_scaler = torch.amp.GradScaler("cpu")
    load_checkpoint(tmp_path, None, fresh_opts, {"plateau": fresh_plateau}, fresh_scaler)
    assert fresh_plateau.state_dict() == plateau.state_dict()
    assert fresh_scaler.state_dict() == scaler.state_dict()
    assert fresh_scaler.get_scale() == 256.0
    assert fresh_opts["d"].state_dict()["param_groups"] == opts["d"].state_dict()["param_groups"]


def test_checkpoint_holds_no_pickle_and_loads_without_it(tmp_path, monkeypatch):
    model, opts, scheds = _trainable()
    _train_step(model, opts["g"], opts["d"])
    path = save_checkpoint(tmp_path, "step_000001", model, opts, scheds)
    assert sorted(p.name for p in path.iterdir()) == sorted([*ckpt.PAYLOAD, CONFIG])
    assert {p.suffix for p in path.iterdir()} == {".safetensors", ".json"}

    def refuse(*args, **kwargs):
        raise AssertionError("a checkpoint load must not unpickle")

    for module, name in [(torch, "load"), (pickle, "load"), (pickle, "loads")]:
        monkeypatch.setattr(module, name, refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    fresh, fresh_opts, fresh_scheds = _trainable()
    load_checkpoint(path, fresh, fresh_opts, fresh_scheds)
    assert _differs(model.state_dict(), fresh.state_dict()) == []
    loaded = load_model(tmp_path)
    assert not loaded.training
    assert _differs(model.state_dict(), loaded.state_dict()) == []


def test_failed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    model = DavsModel(TINY)
    first = save_checkpoint(tmp_path, "step_000001", model, trainer_state={"step": 1})
    real_entry = ckpt.file_entry

    def disk_full_after_model(path, **kwargs):
        if path.name != MODEL:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_entry(path, **kwargs)

    monkeypatch.setattr(ckpt, "file_entry", disk_full_after_model)
    with pytest.raises(CheckpointError) as e:
        save_checkpoint(tmp_path, "step_000002", model, trainer_state={"step": 2})
    ckpt_dir = tmp_path / "checkpoints"
    assert str(e.value) == (
        f"{ckpt_dir / 'step_000002'}: cannot save the checkpoint (No space left on device); "
        f"{first} is still the latest one"
    )
    assert sorted(os.listdir(ckpt_dir)) == ["latest", "step_000001"]  # nothing partial left
    assert latest_checkpoint(tmp_path) == first
    assert load_checkpoint(tmp_path)[1] == {"step": 1}


def test_leftovers_of_a_killed_save_are_ignored_then_removed(tmp_path):
    model = DavsModel(TINY)
    first = save_checkpoint(tmp_path, "step_000001", model, trainer_state={"step": 1})
    ckpt_dir = tmp_path / "checkpoints"
    # What kill -9 can leave: a half-written directory (even one holding a config.json) and a
    # half-written `latest` replacement.
    stale = ckpt_dir / ".tmp-step_000002-0badc0de"
    stale.mkdir()
    (stale / MODEL).write_bytes((first / MODEL).read_bytes()[:100])
    (stale / CONFIG).write_bytes((first / CONFIG).read_bytes())
    (ckpt_dir / ".tmp-latest-0badc0de").write_text("step_0")
    (ckpt_dir / ".latest.tmp-0badc0de").write_text("step_0")  # replace_with's temporary
    assert latest_checkpoint(tmp_path) == first
    second = save_checkpoint(tmp_path, "step_000002", model, trainer_state={"step": 2})
    assert sorted(os.listdir(ckpt_dir)) == ["latest", "step_000001", "step_000002"]
    assert latest_checkpoint(tmp_path) == second


def test_keep_prunes_the_oldest_and_resaving_a_name_replaces_it(tmp_path):
    model = DavsModel(TINY)
    ckpt_dir = tmp_path / "checkpoints"
    for i in range(1, 5):
        save_checkpoint(tmp_path, f"step_{i:06d}", model, trainer_state={"i": i}, keep=2)
    assert sorted(os.listdir(ckpt_dir)) == ["latest", "step_000003", "step_000004"]
    # A run resumed from step 3 reaches step 4 again: the new one replaces the old.
    save_checkpoint(tmp_path, "step_000004", model, trainer_state={"i": 44}, keep=2)
    assert sorted(os.listdir(ckpt_dir)) == ["latest", "step_000003", "step_000004"]
    assert load_checkpoint(tmp_path)[1] == {"i": 44}
    save_checkpoint(tmp_path, "step_000005", model, keep=1)
    assert sorted(os.listdir(ckpt_dir)) == ["latest", "step_000005"]


@pytest.mark.skipif(sys.platform != "linux", reason="the one-step swap is renameat2's")
def test_resaving_a_name_never_leaves_it_missing(tmp_path, monkeypatch):
    model = DavsModel(TINY)
    final = save_checkpoint(tmp_path, "step_000001", model, trainer_state={"i": 1})
    real = os.rename

    def rename(src, dst):  # moving the old checkpoint aside or away would open a window
        assert final.is_dir(), f"{final} missing when renaming {src} to {dst}"
        real(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    save_checkpoint(tmp_path, "step_000001", model, trainer_state={"i": 2})
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["latest", "step_000001"]
    assert load_checkpoint(final)[1] == {"i": 2}


def test_latest_survives_a_missing_or_damaged_latest_file(tmp_path, caplog):
    model = DavsModel(TINY)
    ckpt_dir = tmp_path / "checkpoints"
    # Saved in this order: the newest is found by save order, not by name.
    older = save_checkpoint(tmp_path, "pid_000100", model, keep=3)
    newer = save_checkpoint(tmp_path, "gen_000001", model, keep=3)
    (ckpt_dir / "latest").unlink()
    assert latest_checkpoint(tmp_path) == newer
    (ckpt_dir / "latest").write_bytes(b"\xff../../etc")
    assert latest_checkpoint(tmp_path) == newer
    (ckpt_dir / "latest").write_text("gen_000001\n")
    data = bytearray((newer / MODEL).read_bytes())
    data[-1] ^= 0xFF
    (newer / MODEL).write_bytes(bytes(data))
    assert latest_checkpoint(tmp_path) == older
    assert "checksum mismatch" in caplog.text
    assert latest_checkpoint(tmp_path / "nowhere") is None


# ---- refusals -----------------------------------------------------------------------------
def _edit_config(path: Path, edit) -> None:
    meta = json.loads((path / CONFIG).read_text())
    edit(meta)
    (path / CONFIG).write_text(json.dumps(meta))


def _truncate(path: Path) -> str:
    size = (path / MODEL).stat().st_size
    with open(path / MODEL, "r+b") as f:
        f.truncate(size // 2)
    return f"{path / MODEL}: truncated ({size // 2} bytes, {path / CONFIG} says {size})"


def _flip_byte(path: Path) -> str:
    data = bytearray((path / MODEL).read_bytes())
    data[len(data) // 2] ^= 0x01
    (path / MODEL).write_bytes(bytes(data))
    return f"{path / MODEL}: checksum mismatch (sha256 "


def _grow(path: Path) -> str:
    size = (path / MODEL).stat().st_size
    with open(path / MODEL, "ab") as f:
        f.write(b"\0")
    return f"{path / MODEL}: size mismatch ({size + 1} bytes, {path / CONFIG} says {size})"


def _remove_rng_json(path: Path) -> str:
    (path / RNG_JSON).unlink()
    return f"{path / RNG_JSON}: missing (listed in {path / CONFIG})"


def _future_version(path: Path) -> str:
    _edit_config(path, lambda m: m.update(format_version=2))
    return (
        f"{path / CONFIG}: unknown checkpoint format version 2; fastdavs 0.1.0 reads version 1; "
        "upgrade fastdavs to load it"
    )


def _no_format(path: Path) -> str:
    (path / CONFIG).write_text(TINY.to_json())  # a run's config.json, not a checkpoint's
    return f'{path / CONFIG}: not a fastdavs checkpoint (no "format": "fastdavs-checkpoint")'


def _damaged_config(path: Path) -> str:
    (path / CONFIG).write_text('{"format": ')
    return f"{path / CONFIG}: not valid JSON ("


def _no_config(path: Path) -> str:
    (path / CONFIG).unlink()
    return f"{path}: not a checkpoint directory (no config.json); pass a checkpoint such as "


@pytest.mark.parametrize(
    "damage",
    [
        _truncate,
        _flip_byte,
        _grow,
        _remove_rng_json,
        _future_version,
        _no_format,
        _damaged_config,
        _no_config,
    ],
)
def test_damaged_checkpoint_is_refused_by_name(tmp_path, damage):
    model = DavsModel(TINY)
    path = save_checkpoint(tmp_path, "step_000001", model)
    message = damage(path)
    fresh = DavsModel(TINY)
    before = fresh.state_dict()
    for load in (lambda: load_checkpoint(path, fresh), lambda: load_model(path)):
        with pytest.raises(CheckpointError) as e:
            load()
        assert str(e.value).startswith(message), str(e.value)
    assert _differs(before, fresh.state_dict()) == []
    assert latest_checkpoint(tmp_path) is None
    with pytest.raises(CheckpointError, match="no complete, intact checkpoint"):
        load_checkpoint(tmp_path)


def test_edited_preset_is_refused_with_the_differing_fields(tmp_path):
    path = save_checkpoint(tmp_path, "step_000001", DavsModel(TINY))
    _edit_config(path, lambda m: m["config"].update(preset="small", image_size=64))
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path, expect_config=TINY)
    assert str(e.value) == (
        f"{path / CONFIG}: the checkpoint's config differs from the expected one "
        "(checkpoint != expected): preset: small != tiny; image_size: 64 != 32"
    )
    assert load_checkpoint(path, restore_rng=False)[0].preset == "small"  # no expectation given


def test_other_architecture_is_refused_with_the_shapes(tmp_path):
    model = DavsModel(TINY)
    path = save_checkpoint(tmp_path, "step_000001", model)
    wide_cfg = DavsConfig.from_preset("tiny", width=0.25)
    wide = DavsModel(wide_cfg)
    saved, here = model.state_dict(), wide.state_dict()
    first = next(k for k in saved if saved[k].shape != here[k].shape)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path, wide)
    message = str(e.value)
    assert message.startswith(
        f"{path / MODEL}: {first} has shape {list(saved[first].shape)} but the model expects "
        f"{list(here[first].shape)}, "
    )
    assert message.endswith("more) (model config != checkpoint config: width: 0.25 != 0.125)")
    # Keys: a model with an extra buffer, and one without a saved one.
    extra = DavsModel(TINY)
    extra.register_buffer("ballast", torch.zeros(3))
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path, extra)
    assert str(e.value) == f"{path / MODEL}: the model's ballast not in the checkpoint"


def test_optimizer_mismatches_are_refused_before_anything_changes(tmp_path):
    # The davs decoder: one step gives parameter 0 (the identity encoder's first) Adam state.
    # The mouth editor reads no pid features and, at step 0, passes no gradient beyond its
    # zero-initialised output layer.
    cfg = DavsConfig.from_preset("tiny", generator="davs")
    model, opts, _ = _trainable(cfg)
    _train_step(model, opts["g"], opts["d"])
    path = save_checkpoint(tmp_path, "step_000001", model, {"g": opts["g"]})
    where = path / "optim.json"
    fresh = DavsModel(cfg)
    before = fresh.state_dict()
    n = len(opts["g"].param_groups[0]["params"])
    cases = [
        (
            {"d": torch.optim.Adam(fresh.discriminator_parameters())},
            f"{where}: no optimizer 'd' (the checkpoint has: 'g')",
        ),
        (
            {"g": torch.optim.SGD(fresh.generator_parameters(), lr=0.1)},
            f"{where}: optimizer 'g' is Adam in the checkpoint, SGD here",
        ),
        (
            {"g": torch.optim.Adam(list(fresh.generator_parameters())[1:])},
            f"{where}: optimizer 'g' has parameter groups of [{n}] parameters in the checkpoint, "
            f"[{n - 1}] here",
        ),
        (
            {"g": torch.optim.Adam(list(fresh.generator_parameters())[::-1])},
            f"{where}: optimizer 'g': exp_avg of parameter 0 has shape",
        ),
    ]
    for optimizers, message in cases:
        with pytest.raises(CheckpointError) as e:
            load_checkpoint(path, fresh, optimizers)
        assert str(e.value).startswith(message), str(e.value)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path, fresh, scaler=torch.amp.GradScaler("cpu"))
    assert str(e.value) == f"{where}: the checkpoint was saved without a GradScaler"
    assert _differs(before, fresh.state_dict()) == []


def test_paths_that_are_not_checkpoints(tmp_path):
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(tmp_path / "missing")
    assert str(e.value) == f"{tmp_path / 'missing'}: no such checkpoint or run directory"
    with pytest.raises(CheckpointError) as e:
        load_model(tmp_path)
    assert str(e.value).startswith(f"{tmp_path}: not a checkpoint directory (no config.json)")
    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(tmp_path)
    assert str(e.value) == f"{tmp_path / 'checkpoints'}: no complete, intact checkpoint"


@pytest.mark.gpu
def test_cuda_model_and_rng_round_trip(tmp_path):
    model = DavsModel(TINY).cuda()
    torch.cuda.manual_seed_all(3)
    torch.rand(1, device="cuda")
    save_checkpoint(tmp_path, "step_000001", model)
    expected = torch.rand(8, device="cuda")
    torch.cuda.manual_seed_all(99)
    fresh = DavsModel(TINY).cuda()
    load_checkpoint(tmp_path, fresh)
    assert torch.equal(torch.rand(8, device="cuda"), expected)
    assert all(v.is_cuda for v in fresh.state_dict().values())
    assert _differs(model.state_dict(), fresh.state_dict()) == []


# ---- kill -9 --------------------------------------------------------------------------------
_SAVER = """
import sys, torch
from fastdavs.io.checkpoint import save_checkpoint
from fastdavs.config import DavsConfig
from fastdavs.model import DavsModel
model = DavsModel(DavsConfig.from_preset("tiny"))
model.register_buffer("ballast", torch.zeros(2_000_000))  # 8 MB: a save takes a while
i = int(sys.stdin.readline())  # started ahead, it waits here for the step to go on from
while True:
    model.ballast.fill_(i)
    save_checkpoint(sys.argv[1], f"step_{i:06d}", model, trainer_state={"i": i}, keep=2)
    i += 1
"""


def _ballasted() -> DavsModel:
    model = DavsModel(TINY)
    model.register_buffer("ballast", torch.zeros(2_000_000))
    return model


def _latest_index(ckpt_dir: Path) -> int:
    """The step number in `latest` (replaced atomically, so never half-written), or -1."""
    try:
        return int((ckpt_dir / "latest").read_text()[len("step_") :])
    except (FileNotFoundError, ValueError):
        return -1


def test_kill_9_at_random_moments_leaves_a_loadable_latest(tmp_path):
    ckpt_dir = tmp_path / "checkpoints"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}

    def spawn():
        args = [sys.executable, "-c", _SAVER, str(tmp_path)]
        return subprocess.Popen(args, stdin=subprocess.PIPE, text=True, env=env)

    start, kills, mid_save = 0, 0, 0
    proc = spawn()
    try:
        # Kill until at least two kills have hit a save in progress (a `.tmp-*` left behind).
        while kills < 4 or (mid_save < 2 and kills < 12):
            following = spawn()  # imports torch while `proc` works
            proc.stdin.write(f"{start}\n")
            proc.stdin.flush()
            deadline = time.monotonic() + 60
            while _latest_index(ckpt_dir) < start:
                assert proc.poll() is None, f"the saver exited with status {proc.returncode}"
                assert time.monotonic() < deadline, "the saver saved nothing"
                time.sleep(0.01)
            time.sleep(random.uniform(0, 0.3))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
            mid_save += any(ckpt_dir.glob(".tmp-*"))

            path = latest_checkpoint(tmp_path)
            model = _ballasted()
            _, state = load_checkpoint(path, model, restore_rng=False)
            assert path.name == f"step_{state['i']:06d}"
            assert torch.all(model.ballast == state["i"])  # its files all come from one save
            assert state["i"] >= start
            assert len([p for p in ckpt_dir.iterdir() if not p.name.startswith(".")]) <= 4
            start, proc = state["i"] + 1, following
    finally:
        proc.kill()
        proc.wait()
    assert mid_save >= 2
    save_checkpoint(tmp_path, f"step_{start:06d}", _ballasted(), keep=2)
    assert not list(ckpt_dir.glob(".tmp-*"))


def test_saved_config_has_no_kernel_backend_and_loads(tmp_path):
    """Which kernels run is chosen at run time (`DavsModel.set_kernel_backend`): a checkpoint
    saved from a model running the reference path holds only the architecture, and loads into
    a model on the default backend."""
    path = save_checkpoint(tmp_path, "step_000001", DavsModel(TINY).set_kernel_backend("ref"))
    meta = json.loads((path / CONFIG).read_text())
    assert "kernel_backend" not in meta["config"]
    model = load_model(path)
    assert model.cfg == TINY and model.kernel_backend == "auto"


def test_config_written_with_a_kernel_backend_still_loads(tmp_path):
    """A config.json written when the kernel backend was a config field still loads: the key is
    dropped, whatever it said."""
    path = save_checkpoint(tmp_path, "step_000001", DavsModel(TINY))
    _edit_config(path, lambda m: m["config"].update(kernel_backend="ref"))
    cfg, _ = load_checkpoint(path, expect_config=TINY, restore_rng=False)
    assert cfg == TINY
    assert load_model(path).kernel_backend == "auto"
    (tmp_path / "old.json").write_text(json.dumps({**TINY.to_dict(), "kernel_backend": "triton"}))
    assert DavsConfig.load(tmp_path / "old.json") == TINY
