"""`fastdavs.train.step.TrainStep` on the tiny preset: the CUDA mixed-precision recipe (float16
autocast with a gradient scaler) run on CPU, one scale update per iteration, one device read
per side, and skipped sides that name their non-finite loss parts."""

import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from fastdavs.config import DavsConfig
from fastdavs.data.dataset import example_batch
from fastdavs.model import DavsModel
from fastdavs.train import stages
from fastdavs.train.step import TrainStep

CPU = torch.device("cpu")
B = 2


def _setup(stage: str = "gen", amp_dtype: torch.dtype | None = torch.float16):
    torch.manual_seed(0)
    cfg = DavsConfig.from_preset("tiny")
    model = DavsModel(cfg).train()
    step = TrainStep(model, cfg, CPU, amp=amp_dtype is not None, amp_dtype=amp_dtype)
    step.make_optimizers(stage)
    return cfg, model, step, example_batch(cfg, B)


def _spy_optimizer_steps(step: TrainStep, monkeypatch) -> list[tuple[str, list, bool]]:
    """Record, for every optimiser step taken, (side, its parameters with a non-zero gradient,
    whether all its gradients were finite) at the moment it stepped."""
    taken = []
    for side, opt in step.optimizers.items():
        params = [q for g in opt.param_groups for q in g["params"]]

        def spied(*args, _real=opt.step, _side=side, _params=params, **kwargs):
            grads = [q.grad for q in _params if q.grad is not None]
            moving = [q for q in _params if q.grad is not None and q.grad.any()]
            taken.append((_side, moving, all(torch.isfinite(g).all() for g in grads)))
            return _real(*args, **kwargs)

        monkeypatch.setattr(opt, "step", spied)
    return taken


def test_float16_autocast_and_grad_scaler_train_the_gen_step(monkeypatch):
    """What `--amp` runs on CUDA: float16 autocast and `GradScaler` from its default scale,
    here on CPU. That scale overflows some float16 gradients of any stage (the output layers'
    biases get |grad| in the hundreds, x 65536 > 65504), so the scaler backs off, as it is
    made to, and settles; from there the gen step trains: no skip, finite gradients at every
    optimiser step, every parameter with a gradient moves, the scale holds. The uniform-softmax
    terms weigh 1e6: were they float16, the gradient reaching them (1e6 x scale) would overflow
    at any scale above 65504 / 1e6, and no scale the test accepts would work."""
    cfg, model, step, batch = _setup()
    assert cfg.loss.pid_uniform == cfg.loss.wid_uniform == 1e6
    assert step.scaler.is_enabled() and step.scaler.get_scale() == 65536.0
    with step.autocast():
        loss, _ = stages.generator_loss(model, stages.forward(model, batch, "gen"), batch, "gen")
    assert loss.dtype == torch.float32
    for skipped in range(13):
        if step("gen", batch) is not None:
            break
        assert step.scaler.get_scale() == 65536.0 / 2 ** (skipped + 1)
    else:
        pytest.fail(f"every step skipped down to scale {step.scaler.get_scale()}")
    settled = step.scaler.get_scale()
    assert settled >= 16, settled
    taken = _spy_optimizer_steps(step, monkeypatch)
    for _ in range(3):
        before = [q.detach().clone() for q in model.parameters()]
        taken.clear()
        parts = step("gen", batch)
        assert parts is not None and all(torch.isfinite(v) for v in parts.values())
        assert step.scaler.get_scale() == settled
        assert [(side, finite) for side, _, finite in taken] == [("d", True), ("g", True)]
        moved = {id(q) for q, b in zip(model.parameters(), before, strict=True) if q.ne(b).any()}
        assert all(id(q) in moved for _, moving, _ in taken for q in moving)


def test_grad_scaler_updates_once_per_iteration(monkeypatch):
    """After both sides, as GradScaler is documented: in iterations that overflow (the default
    scale's first ones), the scale halves once per iteration, not once per side."""
    _, _, step, batch = _setup()
    updates = []
    real = step.scaler.update
    monkeypatch.setattr(step.scaler, "update", lambda *a, **kw: updates.append(real(*a, **kw)))
    for i in range(1, 4):
        assert step("gen", batch) is None  # 65536, 32768, 16384 overflow (see the test above)
        assert len(updates) == i
        assert step.scaler.get_scale() == 65536.0 / 2**i
    _, _, pid_step, pid_batch = _setup("pid")
    real_pid = pid_step.scaler.update
    monkeypatch.setattr(
        pid_step.scaler, "update", lambda *a, **kw: updates.append(real_pid(*a, **kw))
    )
    pid_step("pid", pid_batch)
    assert len(updates) == 4


class _HostReads(TorchDispatchMode):
    """Counts the reads of a tensor value by the host (`.item()`, `float()`, `bool()`: each a
    device sync on CUDA), except inside an optimiser's step, whose step counters live on the
    CPU whatever the device (Adam without `capturable`)."""

    def __init__(self):
        super().__init__()
        self.count, self.paused = 0, False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default and not self.paused:
            self.count += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("stage, sides", [("gen", 2), ("pid", 1)])
def test_one_host_read_per_side(stage, sides, monkeypatch):
    """The finite check of a side (its loss and every gradient together) is its only read of a
    device value; the loss parts come back as device tensors."""
    _, _, step, batch = _setup(stage, amp_dtype=None)
    reads = _HostReads()
    for opt in step.optimizers.values():

        def paused(*args, _real=opt.step, **kwargs):
            reads.paused = True
            try:
                return _real(*args, **kwargs)
            finally:
                reads.paused = False

        monkeypatch.setattr(opt, "step", paused)
    with reads:
        parts = step(stage, batch)
    assert parts is not None and all(isinstance(v, torch.Tensor) for v in parts.values())
    assert reads.count == sides


def _poison(monkeypatch, model: DavsModel, where: str) -> None:
    """Make the G side of `wid` non-finite: its contrastive term (loss and part) or only the
    gradient reaching the word classifier (loss and parts finite)."""
    if where == "loss":
        real = stages.contrastive_loss
        monkeypatch.setattr(stages, "contrastive_loss", lambda *a, **kw: real(*a, **kw) * math.nan)
    else:
        model.word_classifier.fc2.weight.register_hook(lambda g: g * math.inf)


@pytest.mark.parametrize("amp_dtype", [None, torch.float16], ids=["fp32", "fp16+scaler"])
@pytest.mark.parametrize("where", ["loss", "gradient"])
def test_a_non_finite_side_is_skipped_and_names_its_parts(monkeypatch, where, amp_dtype):
    """The side is skipped (no optimiser step, gradients dropped), the other side steps, and
    `bad_parts` holds the side's parts as floats: the non-finite one named where the loss is
    the cause, all finite where only a gradient is (the trainer then says "a non-finite
    gradient"). With the scaler, its own inf check decides (no second check)."""
    _, model, step, batch = _setup("wid", amp_dtype=amp_dtype)
    if amp_dtype is not None:  # a scale at which the wid step goes through when nothing is bad
        step.scaler = torch.amp.GradScaler("cpu", init_scale=64.0)
    _poison(monkeypatch, model, where)
    taken = _spy_optimizer_steps(step, monkeypatch)
    g_params = [q for g in step.optimizers["g"].param_groups for q in g["params"]]
    before = [q.detach().clone() for q in g_params]
    assert step("wid", batch) is None
    assert [side for side, _, _ in taken] == ["d"]
    assert all(torch.equal(q, b) for q, b in zip(g_params, before, strict=True))
    assert all(q.grad is None for q in g_params)
    assert set(step.bad_parts) == {"ce_audio", "ce_video", "contrastive", "modality_flip"}
    assert all(isinstance(v, float) for v in step.bad_parts.values())
    bad = {k for k, v in step.bad_parts.items() if not math.isfinite(v)}
    assert bad == ({"contrastive"} if where == "loss" else set())
