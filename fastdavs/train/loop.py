"""The training loop: stages pid -> wid -> render -> gen over prepared shards, with checkpoints,
resume, a non-finite guard, mixed precision, NVTX ranges and multi-process data parallelism.

    shards ──DavsDataset/make_loader──► batch ──stages.forward──► D step ──► G step ──► log
                                                                   └── every N: checkpoint

One step (optimisers, precision, data parallelism) is `fastdavs.train.step.TrainStep`.
Each stage has its own Adam optimisers (lr and betas from `cfg.optim`; with `lr_decay`, the `gen`
lr falls over its scheduled steps, whatever `--steps` bounds the run to): `pid` trains the
identity encoder and its classifier; `wid` the audio and video encoders and the shared word
classifier (G) against the modality discriminator (D); `render` the generator alone on the
frozen encoders (G only); `gen` the whole generator side (G) against every discriminator and
adversary (D). A stage scheduled for 0 steps is passed over (`render` in the paper preset).
A step with a non-finite loss or gradient is skipped and counted; `schedule.max_bad_steps` in
a row stop the run with a message naming the step and the loss, leaving the last good
checkpoint as it was.

Logging reads the device only every `schedule.log_every` steps: the loss parts of each good
step are summed on the device (`LossWindow`), and a record of RUN/metrics.jsonl holds their
means over the good steps since the previous record (no loss parts at all where every step
since then was skipped), with samples/s since the stage began and the skipped steps so far.
A stage's last step always closes a record, so a window never spans two stages.

Resuming restores model, optimisers, RNG states and the data position (epoch and items
consumed), and items are a pure function of (seed, epoch, index), so on CPU a resumed run's
losses equal an uninterrupted run's. Distributed runs (torchrun) wrap each stage's trained
modules in DistributedDataParallel (`TrainStep`); rank 0 alone logs and saves.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import nvtx
import torch
import torch.distributed as dist
from torch.utils.data import default_collate
from tqdm import tqdm

import fastdavs
from fastdavs.cli import option
from fastdavs.config import DavsConfig
from fastdavs.data.dataset import DavsDataset, make_loader
from fastdavs.data.shards import ShardSet
from fastdavs.errors import FastdavsError
from fastdavs.io.atomic import write_json, write_text
from fastdavs.io.checkpoint import RUN_FILE, latest_checkpoint, load_checkpoint, save_checkpoint
from fastdavs.kernels import BACKENDS
from fastdavs.machine import machine_info
from fastdavs.model import DavsModel
from fastdavs.train import stages
from fastdavs.train.runlog import plot_losses, sample_grid, sample_video
from fastdavs.train.step import TrainStep, retain_heap

log = logging.getLogger(__name__)


class TrainingError(FastdavsError):
    """Training cannot go on (too many non-finite steps, nothing to train on...)."""


def _stages(text: str) -> tuple[str, ...]:
    """--stage: "all" or one stage name -> the stages to run, in order."""
    if text == "all":
        return stages.STAGES
    if text not in stages.STAGES:
        raise argparse.ArgumentTypeError(f"{text!r}: choose one of all, {', '.join(stages.STAGES)}")
    return (text,)


@dataclass
class RunOptions:
    """How to run, beside what to train (`DavsConfig`): nothing here is saved with the model.
    `fastdavs-train` derives its flags from these fields (`fastdavs.cli.add_dataclass_args`)."""

    data: Path | None = option(
        None,
        metavar="DIR",
        help="shards from fastdavs-prepare (default: the embedded SynthLRW set, "
        "generated once into $FASTDAVS_CACHE)",
    )
    out: Path | None = option(None, metavar="DIR", help="run directory (default: runs/<timestamp>)")
    stages: tuple[str, ...] = option(
        stages.STAGES,
        flag="--stage",
        parse=_stages,
        metavar="{all," + ",".join(stages.STAGES) + "}",
        help="the stages to run: all (default) or one of them",
    )
    amp: bool = option(False, help="bfloat16 autocast (CPU) / fp16 (CUDA)")
    max_steps: int | None = option(
        None, flag="--steps", metavar="N", help="bound each stage to N steps"
    )
    resume: bool = option(False, help="continue from the last checkpoint")
    workers: int | None = option(
        None, metavar="N", help="data loader processes (default: dataset.default_num_workers)"
    )
    device: str | None = option(
        None,
        help="cpu, cuda or cuda:N (default: cuda:LOCAL_RANK where CUDA is available, else cpu)",
    )
    channels_last: bool = option(
        True, help="NHWC convolutions (1.1-1.3x faster steps on CPU; default: on)"
    )
    retain_heap: bool = option(
        True,
        help="on CPU, keep freed memory in the process instead of returning it to the "
        "system (step.retain_heap; default: on)",
    )
    kernel_backend: str = option(
        "auto",
        choices=BACKENDS,
        help="fused ops (temporal convolutions, contrastive loss): auto runs the Triton "
        "kernels on CUDA and the PyTorch references elsewhere; triton or ref force one",
    )
    evaluate: bool = option(
        True,
        flag="--eval",
        help="fastdavs-eval on held-out identities at the end (RUN/eval.json; default: on)",
    )

    @property
    def torch_device(self) -> torch.device:
        """`device`, or this process's default: cuda:LOCAL_RANK where CUDA is available."""
        if self.device is not None:
            return torch.device(self.device)
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device("cpu")


class LossWindow:
    """Sums of the loss parts of the good steps since the last record, kept on the device:
    `add` queues one addition per part and never waits for the device; `take` reads every
    mean with one transfer and starts a new window."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}  # name -> 0-d sum on the device
        self.steps = 0

    def add(self, parts: dict[str, torch.Tensor]) -> None:
        for name, value in parts.items():
            self.sums[name] = self.sums[name] + value if name in self.sums else value
        self.steps += 1

    def take(self) -> dict[str, float]:
        """{name: mean over the window's steps} ({} for an empty window), then empty it."""
        means = {}
        if self.steps:
            values = torch.stack(list(self.sums.values())) / self.steps  # [parts]
            means = dict(zip(self.sums, values.tolist(), strict=True))
        self.sums, self.steps = {}, 0
        return means


@dataclass
class _Position:
    """Where training is: what a checkpoint's trainer state holds."""

    stage: str = "pid"
    step: int = 0  # steps done in `stage`
    epoch: int = 0
    consumed: int = 0  # items of `epoch` this rank has used
    bad_steps: int = 0  # skipped non-finite steps in total
    done: list[str] = field(default_factory=list)  # finished stages


class Trainer:
    def __init__(self, cfg: DavsConfig, opts: RunOptions):
        self.cfg, self.opts = cfg, opts
        self.rank = dist.get_rank() if dist.is_initialized() else 0
        self.world = dist.get_world_size() if dist.is_initialized() else 1
        if opts.data is None or opts.out is None:
            raise TypeError("RunOptions.data and .out must be set before training")
        self.device = opts.torch_device
        self.heap_retained = opts.retain_heap and self.device.type == "cpu" and retain_heap()
        torch.manual_seed(cfg.schedule.seed)
        self.model = DavsModel(cfg).set_kernel_backend(opts.kernel_backend).to(self.device)
        if opts.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        if self.world > 1:
            for tensor in self.model.state_dict().values():
                dist.broadcast(tensor, 0)
        shards = ShardSet(opts.data, "train").check()
        if len(shards) < cfg.optim.batch_size * self.world:
            raise TrainingError(
                f"{opts.data}: {len(shards)} training clips, fewer than one batch of "
                f"{cfg.optim.batch_size} per process; prepare more data or lower the batch size"
            )
        self.dataset = DavsDataset(shards, cfg, train=True, seed=cfg.schedule.seed)
        self.loader = make_loader(
            self.dataset,
            cfg.optim.batch_size,
            shuffle=True,
            num_workers=opts.workers,
            seed=cfg.schedule.seed,
            drop_last=True,
            rank=self.rank,
            world=self.world,
            identity_group=cfg.optim.identity_group,
        )
        self.pos = _Position()
        self.step = TrainStep(self.model, cfg, self.device, opts.amp, self.world)
        self.metrics_path = opts.out / "metrics.jsonl"
        self._window = LossWindow()  # the loss parts since the last record (rank 0)
        self._samples: tuple[ShardSet, dict] | None = None

    # ---- setup -----------------------------------------------------------------------------
    def _resume(self, ckpt: Path) -> None:
        _, state = load_checkpoint(ckpt, expect_config=self.cfg, restore_rng=False)
        self.pos = _Position(**state)
        self._truncate_metrics()
        self.step.make_optimizers(self.pos.stage)
        load_checkpoint(ckpt, self.model, self.step.optimizers, scaler=self.step.scaler)
        log.info("resumed from %s (stage %s, step %d)", ckpt, self.pos.stage, self.pos.step)

    def _save(self) -> None:
        if self.rank == 0:
            plot_losses(self.metrics_path, self.opts.out / "losses.png")
            name = f"{self.pos.stage}_{self.pos.step:06d}"
            save_checkpoint(
                self.opts.out,
                name,
                self.model,
                self.step.optimizers,
                scaler=self.step.scaler,
                trainer_state=self.pos.__dict__.copy(),
            )

    # ---- the loop --------------------------------------------------------------------------
    def run(self) -> None:
        resume_from = latest_checkpoint(self.opts.out) if self.opts.resume else None
        if self.opts.resume and resume_from is None:  # refused before anything is written there
            raise TrainingError(f"{self.opts.out}: no checkpoint to resume from; drop --resume")
        try:
            self.opts.out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise TrainingError(
                f"{self.opts.out}: cannot create the run directory ({e.strerror}); choose a "
                "writable --out"
            ) from None
        if self.rank == 0:
            write_text(self.opts.out / "config.json", self.cfg.to_json() + "\n")
            write_json(self.opts.out / RUN_FILE, self._run_info())
        if resume_from is not None:
            self._resume(resume_from)
        for stage in self.opts.stages:
            if stage in self.pos.done:
                continue
            if getattr(self.cfg.schedule, f"{stage}_steps") == 0:
                # Not scheduled; passed over without touching the position, so a run resumed
                # in a later stage stays where it was.
                log.info("stage %s: 0 steps scheduled, skipped", stage)
                continue
            if stage != self.pos.stage:
                self.pos = _Position(stage=stage, bad_steps=self.pos.bad_steps, done=self.pos.done)
                self.step.make_optimizers(stage)
            elif not self.step.optimizers:
                self.step.make_optimizers(stage)
            self._run_stage(stage)
            if self.pos.step >= getattr(self.cfg.schedule, f"{stage}_steps"):
                self.pos.done.append(stage)  # a run bounded by --steps can resume the stage
            self._save()
        if self.rank == 0 and self.opts.evaluate and "gen" in self.pos.done:
            self._evaluate()

    def _run_info(self) -> dict:
        """RUN/run.json: how this run was made (the data it read, for fastdavs-eval)."""
        o = self.opts
        return {
            "data": str(Path(o.data).resolve()),
            "stages": list(o.stages),
            "amp": o.amp,
            "autocast": str(self.step.autocast_dtype()).removeprefix("torch.") if o.amp else None,
            "channels_last": o.channels_last,
            "retain_heap": self.heap_retained,
            "kernel_backend": o.kernel_backend,
            "device": str(self.device),
            "world_size": self.world,
            "max_steps": o.max_steps,
            "versions": {"torch": torch.__version__, "fastdavs": fastdavs.__version__},
            "machine": machine_info(),
        }

    def _evaluate(self) -> None:
        """fastdavs-eval on the held-out identities, written to RUN/eval.json and printed."""
        from fastdavs.evaluate.run import evaluate, format_table, write_results

        results = evaluate(self.model, self.opts.data, device=str(self.device))
        results["checkpoint"] = str(latest_checkpoint(self.opts.out))
        results["trained_to"] = {"stage": self.pos.stage, "step": self.pos.step}
        path = write_results(results, self.opts.out / "eval.json")
        tqdm.write(format_table(results) + f"\nwritten: {path}")

    def _total_steps(self, stage: str) -> int:
        total = getattr(self.cfg.schedule, f"{stage}_steps")
        return min(total, self.opts.max_steps) if self.opts.max_steps is not None else total

    def _batches(self):
        """Batches forever, epoch after epoch, starting at the saved data position."""
        while True:
            self.dataset.set_epoch(self.pos.epoch)
            self.loader.sampler.start = self.pos.consumed
            for batch in self.loader:
                yield {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
            self.pos.epoch += 1
            self.pos.consumed = 0

    def _run_stage(self, stage: str) -> None:
        sched = self.cfg.schedule
        total = self._total_steps(stage)
        scheduled = getattr(sched, f"{stage}_steps")  # the lr schedule ignores --steps
        if self.pos.step >= total:
            return
        self.model.train()
        bar = tqdm(
            total=total,
            initial=self.pos.step,
            desc=stage,
            unit="step",
            dynamic_ncols=True,
            disable=self.rank != 0,
        )
        with bar:  # closed on any error too, so a message starts on a line of its own
            batches = self._batches()
            in_a_row, t0, seen = 0, time.perf_counter(), 0
            while self.pos.step < total:
                with nvtx.annotate("data", color="blue"):
                    batch = next(batches)
                self.step.set_lr_scale(self.cfg.optim.lr_scale(stage, self.pos.step, scheduled))
                parts = self.step(stage, batch)
                self.pos.consumed += self.cfg.optim.batch_size
                self.pos.step += 1
                seen += self.cfg.optim.batch_size * self.world
                if parts is None:
                    in_a_row += 1
                    self.pos.bad_steps += 1
                    if in_a_row >= sched.max_bad_steps:
                        raise TrainingError(self._bad_message(stage, in_a_row))
                else:
                    in_a_row = 0
                    if self.rank == 0:
                        self._window.add(parts)
                if self.pos.step % sched.log_every == 0 or self.pos.step == total:
                    rate = seen / (time.perf_counter() - t0)
                    self._log(stage, rate, bar)
                bar.update()
                sample_now = self.pos.step % sched.sample_every == 0 or self.pos.step == total
                if stage in ("render", "gen") and sample_now and self.rank == 0:
                    self._write_samples(stage)
                periodic = self.pos.step % sched.checkpoint_every == 0 and self.pos.step < total
                if periodic and in_a_row == 0:  # never replace a good checkpoint mid-streak
                    self._save()

    def _write_samples(self, stage: str) -> None:
        """RUN/samples/STAGE_STEP.{png,mp4}: a grid of 4 held-out clips (val split when
        prepared, else train) and an mp4 of the first one driven by its audio, with its sound."""
        if self._samples is None:
            split = "val" if "val" in self.dataset.shards.index.splits else "train"
            shards = ShardSet(self.opts.data, split)
            ds = DavsDataset(shards, self.cfg, train=False)
            n = min(4, len(ds))
            items = [ds[i * len(ds) // n] for i in range(n)]
            batch = {k: v.to(self.device) for k, v in default_collate(items).items()}
            self._samples = (shards, batch)
        shards, batch = self._samples
        name = self.opts.out / f"samples/{stage}_{self.pos.step:06d}"
        sample_grid(self.model, batch, name.with_suffix(".png"))
        sample_video(self.model, shards, 0, name.with_suffix(".mp4"))

    def _bad_message(self, stage: str, n: int) -> str:
        where = f"stage {stage} step {self.pos.step}"
        bad = {k: v for k, v in self.step.bad_parts.items() if not math.isfinite(v)}
        what = ", ".join(f"{k}={v}" for k, v in bad.items()) or "a non-finite gradient"
        last = latest_checkpoint(self.opts.out)
        return (
            f"{n} non-finite steps in a row at {where} ({what}); stopped. The last good "
            f"checkpoint is {last or 'none yet'}; resume with --resume after lowering "
            "--optim-lr or the loss weights"
        )

    def _truncate_metrics(self) -> None:
        """Drop the records a killed run logged after the checkpoint it resumes from."""
        if self.rank != 0 or not self.metrics_path.exists():
            return
        order = {s: i for i, s in enumerate(stages.STAGES)}
        here = (order[self.pos.stage], self.pos.step)
        kept = [
            line
            for line in self.metrics_path.read_text().splitlines()
            if line.strip() and (order[(r := json.loads(line))["stage"]], r["step"]) <= here
        ]
        write_text(self.metrics_path, "".join(line + "\n" for line in kept))

    # ---- logging -----------------------------------------------------------------------------
    def _log(self, stage: str, rate: float, bar: tqdm) -> None:
        if self.rank != 0:
            return
        parts = self._window.take()
        record = {
            "stage": stage,
            "step": self.pos.step,
            "samples_per_s": round(rate, 3),
            "bad_steps": self.pos.bad_steps,
            **{k: round(v, 6) for k, v in parts.items()},
        }
        with self.metrics_path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        shown = {k: f"{v:.3g}" for k, v in list(parts.items())[:4]}
        bar.set_postfix(shown | {"samples/s": f"{rate:.1f}"}, refresh=False)
