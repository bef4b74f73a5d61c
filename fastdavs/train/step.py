"""One training step as the trainer runs it, and the CPU settings that make it fast.

`TrainStep` owns a stage's Adam optimisers, mixed precision (autocast, and a gradient scaler
with float16: the default on CUDA) and data parallelism (`DistributedDataParallel`, one wrapper
per optimiser side); a call runs `fastdavs.train.stages` forward, the D side (backward, step) and
the G side, skipping a side whose loss or gradients are not finite, then updates the scaler's scale
once. It waits for the device once
per side (that finite check) and hands the loss parts back as device tensors, so that the
trainer reads them only when it logs. The trainer adds data, logging and checkpoints around
it; `bench/train_step.py` times it bare.

The CPU fast path (what `fastdavs.train` uses on CPU; measured by `bench/train_step.py`):
channels-last convolutions (the trainer converts the model) and `retain_heap`. bf16 autocast
only where oneDNN runs bf16 natively, and `torch.compile` not at all: on the 2-core AVX2
development machine the compiled `gen` step of the small preset took 409 s to compile and then
ran 1.7x slower than eager (2.44 s against 1.44 s per step).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import math

import nvtx
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.nn.utils import get_total_norm

from fastdavs.config import DavsConfig
from fastdavs.machine import cpu_has_native_bf16
from fastdavs.model import DavsModel
from fastdavs.train import stages

log = logging.getLogger(__name__)

# Modules each stage's optimisers own: (generator side, discriminator side).
STAGE_MODULES = {
    "pid": (("identity_encoder", "identity_classifier"), ()),
    "wid": (
        ("video_encoder", "audio_encoder", "word_classifier", "viseme_head"),
        ("modality_discriminator",),
    ),
    "render": (("generator", "audio_encoder"), ()),
    "gen": (
        ("identity_encoder", "video_encoder", "audio_encoder", "word_classifier", "generator"),
        (
            "modality_discriminator",
            "pid_word_adversary",
            "wid_person_adversary",
            "sequence_discriminator",
        ),
    ),
}
ADVERSARIES = ("pid_word_adversary", "wid_person_adversary")  # lr scaled by adversary_lr_scale


def retain_heap() -> bool:
    """Tell glibc malloc to keep freed memory in the process: no mmap for large blocks, no trim.

    A training step frees and reallocates the same large activations every time; by default glibc
    returns them to the OS and the next step page-faults them in again (26 million minor faults in
    a 25-minute small-preset run). Keeping them costs no more than the peak heap, which the process
    reaches anyway. Process-wide and irreversible; returns False where malloc is not glibc's.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_max = -1, -4
    return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 2**31 - 1))


class _Side(nn.Module):
    """The modules one optimiser side of a stage trains, as one module for
    `DistributedDataParallel`. The step's code calls the model's own methods (`encode_video`,
    `generate`, ...), so the forward is a closure: running it through the wrapper is what arms
    the wrapper's gradient hooks for the backward that follows. The modules are the model's
    own (shared, not copied)."""

    def __init__(self, model: DavsModel, names: tuple[str, ...]):
        super().__init__()
        self.trained = nn.ModuleDict({name: getattr(model, name) for name in names})

    def forward(self, fn, *args):
        return fn(*args)


class TrainStep:
    """The optimisers, precision and gradient exchange of one stage's D + G steps.

    Args:
        model: the model (on `device`, already channels-last if wanted).
        cfg: its config (Adam settings).
        device: where the model lives.
        amp: mixed precision: autocast to `amp_dtype`, with a gradient scaler exactly when that
            is float16.
        world: data-parallel processes. With more than one (`torch.distributed` initialised:
            gloo on CPU, nccl on CUDA), each side's modules are wrapped in
            `DistributedDataParallel`, which averages their gradients in buckets, overlapped
            with the backward. Each wrapper's forward returns its side's loss, so that the
            wrapper finds, from the loss, the parameters that get no gradient in a stage (with
            the mouth editor, `gen` reads only the identity encoder's first stage): the G
            side's forward runs the shared forward, the whole D step, then the G loss through
            the updated discriminators. (A forward returning the shared activations, with the
            G loss composed outside it, needs `static_graph`, whose first iteration counts
            parameters reached only by activations the loss leaves unused, such as the pid
            vector, as used: no later G gradient is then ever averaged.)
            BatchNorm statistics are each process's own batch (no SyncBatchNorm, as the
            original's DataParallel); buffers follow rank 0 at every forward.
        amp_dtype: what `amp` computes in; None picks by device: float16 on CUDA, bfloat16 on a
            CPU with native bf16, float32 (no autocast) otherwise. Tests pass float16 to run
            the CUDA recipe (float16 autocast and `torch.amp.GradScaler`) on a CPU.
    """

    def __init__(
        self,
        model: DavsModel,
        cfg: DavsConfig,
        device: torch.device,
        amp: bool,
        world: int = 1,
        amp_dtype: torch.dtype | None = None,
    ):
        if amp_dtype is not None and not amp:
            raise ValueError(f"TrainStep: amp_dtype={amp_dtype} needs amp=True")
        self.model, self.cfg, self.device, self.world = model, cfg, device, world
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.wrappers: dict[str, DistributedDataParallel] = {}  # per side, when world > 1
        self.base_lrs: dict[str, list[float]] = {}  # each side's group lrs before `set_lr_scale`
        self.dtype = (amp_dtype or self._default_amp_dtype()) if amp else torch.float32
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.dtype == torch.float16)
        self.bad_parts: dict[str, float] = {}  # loss parts of the last skipped side

    def _default_amp_dtype(self) -> torch.dtype:
        if self.device.type == "cuda":
            return torch.float16
        if self.device.type == "cpu" and cpu_has_native_bf16():
            return torch.bfloat16
        if self.device.type == "cpu":
            log.warning(
                "--amp: this CPU has no native bfloat16 (oneDNN reports none); bf16 autocast "
                "would run the convolutions about 10x slower, so training stays in float32"
            )
        return torch.float32

    def make_optimizers(self, stage: str) -> None:
        """Fresh Adam optimisers for `stage`'s generator ("g") and discriminator ("d") sides.
        With adversary_lr_scale != 1 the disentangling adversaries form a parameter group of
        their own at the scaled lr (otherwise one group, as checkpoints of earlier runs hold)."""
        o = self.cfg.optim
        self.optimizers, self.wrappers = {}, {}
        split = o.adversary_lr_scale != 1.0
        for side, names in zip(("g", "d"), STAGE_MODULES[stage], strict=True):
            names = tuple(n for n in names if getattr(self.model, n) is not None)  # optional heads
            groups = []
            for scale, members in (
                (1.0, [n for n in names if not (split and n in ADVERSARIES)]),
                (o.adversary_lr_scale, [n for n in names if split and n in ADVERSARIES]),
            ):
                params = [p for n in members for p in getattr(self.model, n).parameters()]
                if params:
                    groups.append({"params": params, "lr": o.lr * scale})
            if groups:
                self.optimizers[side] = torch.optim.Adam(groups, betas=(o.beta1, o.beta2))
                self.base_lrs[side] = [g["lr"] for g in groups]
                if self.world > 1:
                    self.wrappers[side] = DistributedDataParallel(
                        _Side(self.model, names),
                        device_ids=[self.device.index] if self.device.type == "cuda" else None,
                        find_unused_parameters=True,
                    )

    def set_lr_scale(self, scale: float) -> None:
        """Set every group's lr to `scale` times the one `make_optimizers` gave it (a resumed
        optimiser's saved lr is overwritten, so the schedule depends on the step alone)."""
        for side, opt in self.optimizers.items():
            for group, base in zip(opt.param_groups, self.base_lrs[side], strict=True):
                group["lr"] = base * scale

    def autocast_dtype(self) -> torch.dtype:
        """What the forward computes in (see `amp_dtype`; float32 without `amp`)."""
        return self.dtype

    def autocast(self):
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def __call__(self, stage: str, batch: dict) -> dict[str, torch.Tensor] | None:
        """One D step then one G step (only the G step for `stages.ONE_SIDED` stages).

        Returns the loss parts (detached 0-d tensors on the model's device: reading them is
        the caller's choice, and costs a device sync), or None if a side was skipped. With a
        gradient scaler, its scale is updated once, after both sides.
        """
        parts: dict[str, torch.Tensor] = {}
        d_ok = True

        def g_side(model: DavsModel, batch: dict) -> tuple[torch.Tensor, dict]:
            """The G loss, after the D step for two-sided stages (its backward and optimizer
            step included: the G loss is read through the updated discriminators)."""
            nonlocal d_ok
            if stage in stages.ONE_SIDED:
                with nvtx.annotate("forward", color="green"), self.autocast():
                    return stages.ONE_SIDED[stage](model, batch)
            with nvtx.annotate("forward", color="green"), self.autocast():
                fwd = stages.forward(model, batch, stage)
                d_loss, p = self._run("d", stages.discriminator_loss, model, fwd, batch)
            d_ok = self._apply("d", d_loss, p, parts)
            with nvtx.annotate("forward", color="green"), self.autocast():
                return stages.generator_loss(model, fwd, batch, stage)

        g_loss, p = self._run("g", g_side, self.model, batch)
        ok = self._apply("g", g_loss, p, parts) and d_ok
        if self.scaler.is_enabled() and any(
            self.scaler._found_inf_per_device(o) for o in self.optimizers.values()
        ):  # GradScaler.update raises unless an unscale_ recorded an inf check this iteration
            self.scaler.update()
        return parts if ok else None

    def _run(self, side: str, fn, *args):
        """fn(*args), through `side`'s DistributedDataParallel wrapper when there is one (its
        gradients are then averaged over the processes in the backward that follows)."""
        wrapper = self.wrappers.get(side)
        return wrapper(fn, *args) if wrapper is not None else fn(*args)

    def _apply(self, side: str, loss: torch.Tensor, p: dict, parts: dict) -> bool:
        """Backward and optimizer step for one side, unless the loss or a gradient is not finite.

        Backward runs whatever the loss, so every process of a data-parallel run takes part in
        the same gradient all-reduces; the loss and every gradient are then checked together
        and read with one device sync: GradScaler's own inf check where a scaler unscales,
        otherwise the largest |gradient| of all of them. With several processes the verdict is
        all-reduced first (a minimum), so that all skip or all step even where a loss that is not
        finite on one process alone leaves no trace in the averaged gradients.
        """
        opt = self.optimizers[side]
        opt.zero_grad(set_to_none=True)
        parts.update(p)
        with nvtx.annotate("backward", color="red"):
            self.scaler.scale(loss).backward()
        params = [q for g in opt.param_groups for q in g["params"] if q.grad is not None]
        finite = torch.isfinite(loss.detach())  # [] bool
        if self.scaler.is_enabled():
            self.scaler.unscale_(opt)
            for found_inf in self.scaler._found_inf_per_device(opt).values():
                finite = finite & (found_inf == 0)
        else:
            grads = [q.grad for q in params]
            finite = finite & torch.isfinite(get_total_norm(grads, norm_type=math.inf))
        if self.world > 1:  # every rank skips or steps together
            flag = finite.float()
            dist.all_reduce(flag, op=dist.ReduceOp.MIN)
            finite = flag > 0
        if not finite.item():
            self.bad_parts = {k: float(v) for k, v in p.items()}
            opt.zero_grad(set_to_none=True)
            return False
        with nvtx.annotate("optimizer", color="yellow"):
            self.scaler.step(opt)
        return True
