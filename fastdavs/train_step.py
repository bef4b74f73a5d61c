"""One training step as the trainer runs it, and the CPU settings that make it fast.

`TrainStep` owns a stage's Adam optimisers, mixed precision (autocast, and a gradient scaler
with float16: the default on CUDA) and the data-parallel gradient all-reduce; a call runs
`fastdavs.steps` forward, the D side (backward, step) and the G side, skipping a side whose loss
or gradients are not finite, then updates the scaler's scale once. It waits for the device once
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
from torch.nn.utils import get_total_norm

from fastdavs import steps
from fastdavs.config import DavsConfig
from fastdavs.machine import cpu_has_native_bf16
from fastdavs.model import DavsModel

log = logging.getLogger(__name__)

# Modules each stage's optimisers own: (generator side, discriminator side).
STAGE_MODULES = {
    "pid": (("identity_encoder", "identity_classifier"), ()),
    "wid": (("video_encoder", "audio_encoder", "word_classifier"), ("modality_discriminator",)),
    "render": (("generator",), ()),
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


class TrainStep:
    """The optimisers, precision and gradient exchange of one stage's D + G steps.

    Args:
        model: the model (on `device`, already channels-last if wanted).
        cfg: its config (Adam settings).
        device: where the model lives.
        amp: mixed precision: autocast to `amp_dtype`, with a gradient scaler exactly when that
            is float16.
        world: data-parallel processes (gradients are averaged with an all-reduce when > 1).
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
        self.optimizers = {}
        split = o.adversary_lr_scale != 1.0
        for side, names in zip(("g", "d"), STAGE_MODULES[stage], strict=True):
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
        """One D step then one G step (only the G step for `steps.ONE_SIDED` stages).

        Returns the loss parts (detached 0-d tensors on the model's device: reading them is
        the caller's choice, and costs a device sync), or None if a side was skipped. With a
        gradient scaler, its scale is updated once, after both sides.
        """
        parts: dict[str, torch.Tensor] = {}
        if stage in steps.ONE_SIDED:
            with nvtx.annotate("forward", color="green"), self.autocast():
                loss, p = steps.ONE_SIDED[stage](self.model, batch)
            ok = self._apply("g", loss, p, parts)
        else:
            with nvtx.annotate("forward", color="green"), self.autocast():
                fwd = steps.forward(self.model, batch, stage)
                d_loss, p = steps.discriminator_loss(self.model, fwd, batch)
            ok = self._apply("d", d_loss, p, parts)
            with nvtx.annotate("forward", color="green"), self.autocast():
                g_loss, p = steps.generator_loss(self.model, fwd, batch, stage)
            ok = self._apply("g", g_loss, p, parts) and ok
        if self.scaler.is_enabled() and any(
            self.scaler._found_inf_per_device(o) for o in self.optimizers.values()
        ):  # GradScaler.update raises unless an unscale_ recorded an inf check this iteration
            self.scaler.update()
        return parts if ok else None

    def _apply(self, side: str, loss: torch.Tensor, p: dict, parts: dict) -> bool:
        """Backward and optimizer step for one side, unless the loss or a gradient is not finite.

        Backward runs whatever the loss (every rank of a data-parallel run then takes part in
        the gradient all-reduce); the loss and every gradient are then checked together and
        read with one device sync: GradScaler's own inf check where a scaler unscales,
        otherwise the largest |gradient| of all of them.
        """
        opt = self.optimizers[side]
        opt.zero_grad(set_to_none=True)
        parts.update(p)
        with nvtx.annotate("backward", color="red"):
            self.scaler.scale(loss).backward()
        params = [q for g in opt.param_groups for q in g["params"] if q.grad is not None]
        if self.world > 1:  # one all-reduce of every gradient, not one per parameter
            flat = torch.cat([q.grad.reshape(-1) for q in params])
            dist.all_reduce(flat)
            flat.div_(self.world)
            for q, g in zip(params, flat.split([q.numel() for q in params]), strict=True):
                q.grad.copy_(g.view_as(q.grad))
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
