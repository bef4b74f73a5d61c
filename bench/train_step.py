"""One full training step, reference eager fp32 against the CPU fast path the trainer uses.

    python bench/train_step.py [--presets tiny,small] [--generator davs|mouth_editor]
        [--stage gen] [--steps 6] [--rounds 2] [--out bench/results]

About 3 minutes on 2 idle cores with the defaults. A step is what `fastdavs.train.loop` runs per
batch (`fastdavs.train.step.TrainStep`): `fastdavs.train.stages` forward, the D side (backward,
Adam), the G side (backward, Adam), every loss of the stage, on
`fastdavs.data.dataset.example_batch` at the preset's batch size, with the preset's generator
unless --generator names the other. Two arms:

    reference  eager float32, contiguous (NCHW) tensors, kernel_backend "ref", glibc malloc
               defaults
    fast       what `python -m fastdavs.train --amp` does here: channels-last model and inputs,
               `retain_heap`, `--amp` (bf16 autocast only where oneDNN has native bf16; this
               script prints which), kernel_backend "auto"

Each arm runs in its own fresh process (the heap setting is process-wide and cannot be undone),
starting from the same seed-0 weights and seeing the same batch on every step, so their losses
differ only by numerics: step 1 compares the same weights; later steps add the drift of the
updates. Arms alternate for `--rounds` rounds so that background load hits both alike; each
process does one warm-up step, then `--steps` timed steps. Times are medians [p20, p80] over the
timed steps of all rounds (`time.perf_counter`); samples/s is batch size over the median.
`torch.compile` is not an arm: see `fastdavs.train.step` for why (measured slower, 409 s compile).
Writes train_step.json and train_step.csv to --out.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
from common import csv_text, git, median_p20_p80

from fastdavs.config import GENERATORS, DavsConfig
from fastdavs.data.dataset import example_batch
from fastdavs.io.atomic import write_json, write_text
from fastdavs.machine import machine_info, machine_summary
from fastdavs.model import DavsModel
from fastdavs.train.stages import STAGES
from fastdavs.train.step import TrainStep, retain_heap

ARMS = ("reference", "fast")
TARGET = 3.0  # target: small preset, fast path >= 3x the reference samples/s


def _channels_last(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """4-D image tensors to channels-last (what the trainer's model then keeps)."""
    return {
        k: v.contiguous(memory_format=torch.channels_last) if v.dim() == 4 else v
        for k, v in batch.items()
    }


def config(preset: str, generator: str | None) -> DavsConfig:
    """The preset's config, with `generator` in place of its own unless None."""
    return DavsConfig.from_preset(preset, **({"generator": generator} if generator else {}))


def worker(arm: str, preset: str, generator: str | None, stage: str, steps: int) -> dict:
    """Run one arm in this process: one warm-up step, then `steps` timed ones."""
    fast = arm == "fast"
    cfg = config(preset, generator)
    heap = retain_heap() if fast else False
    torch.manual_seed(0)
    model = DavsModel(cfg).set_kernel_backend("auto" if fast else "ref").train()
    batch = example_batch(cfg, cfg.optim.batch_size)
    if fast:
        model = model.to(memory_format=torch.channels_last)
        batch = _channels_last(batch)
    step = TrainStep(model, cfg, torch.device("cpu"), amp=fast)
    step.make_optimizers(stage)
    times, losses = [], []
    for i in range(steps + 1):
        t = time.perf_counter()
        parts = step(stage, batch)
        if i:
            times.append(time.perf_counter() - t)
        if parts is None:
            raise SystemExit(f"{arm}/{preset}: step {i} was not finite")
        losses.append({k: float(v) for k, v in parts.items()})  # device tensors: read here
    return {
        "times": times,
        "losses": losses,
        "retain_heap": heap,
        "autocast": str(step.autocast_dtype()).removeprefix("torch.") if fast else None,
        "threads": torch.get_num_threads(),
    }


def _spawn(arm: str, preset: str, generator: str | None, stage: str, steps: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", arm, "--presets", preset, "--stage", stage]
    cmd += ["--steps", str(steps)] + (["--generator", generator] if generator else [])
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{arm} worker for {preset} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def loss_gap(a: dict[str, float], b: dict[str, float], floor: float = 0.0) -> tuple[str, float]:
    """The loss part with the largest relative difference between two steps' parts, over the
    parts with |a| >= floor."""
    gaps = {k: abs(a[k] - b[k]) / max(abs(a[k]), 1e-12) for k in a if abs(a[k]) >= floor}
    name = max(gaps, key=gaps.get)
    return name, gaps[name]


def compare(preset: str, generator: str | None, stage: str, steps: int, rounds: int) -> dict:
    runs: dict[str, list[dict]] = {arm: [] for arm in ARMS}
    for r in range(rounds):
        for arm in ARMS:
            runs[arm].append(_spawn(arm, preset, generator, stage, steps))
            print(f"  {preset} round {r + 1}/{rounds}: {arm} done", flush=True)
    cfg = config(preset, generator)
    batch = cfg.optim.batch_size
    row: dict = {"preset": preset, "generator": cfg.generator, "stage": stage, "batch": batch}
    for arm in ARMS:
        med, p20, p80 = median_p20_p80([t for run in runs[arm] for t in run["times"]])
        row |= {f"{arm}_ms": med * 1e3, f"{arm}_p20_ms": p20 * 1e3, f"{arm}_p80_ms": p80 * 1e3}
        row[f"{arm}_samples_per_s"] = batch / med
    row["speedup"] = row["fast_samples_per_s"] / row["reference_samples_per_s"]
    ref, fast = runs["reference"][0]["losses"], runs["fast"][0]["losses"]
    row["loss_gap_step1"], row["loss_gap_step1_part"] = loss_gap(ref[0], fast[0])[::-1]
    row["loss_gap_last"], row["loss_gap_last_part"] = loss_gap(ref[-1], fast[-1])[::-1]
    row["fast_autocast"] = runs["fast"][0]["autocast"]
    row["fast_retain_heap"] = runs["fast"][0]["retain_heap"]
    row["threads"] = runs["fast"][0]["threads"]
    return row


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--presets", default="tiny,small")
    parser.add_argument("--generator", choices=GENERATORS, help="default: each preset's")
    parser.add_argument("--stage", default="gen", choices=STAGES)
    parser.add_argument("--steps", type=int, default=6, help="timed steps per process")
    parser.add_argument("--rounds", type=int, default=2, help="processes per arm, alternating")
    parser.add_argument("--out", default="bench/results")
    parser.add_argument("--worker", choices=ARMS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        result = worker(args.worker, args.presets, args.generator, args.stage, args.steps)
        print(json.dumps(result))
        return 0
    if args.steps < 2 or args.rounds < 1:
        parser.error("--steps must be at least 2 and --rounds at least 1")

    machine = machine_info()
    env = {"git": git("rev-parse", "--short", "HEAD")}
    print(
        f"{args.stage} step, reference eager fp32 vs fast path; git {env['git']}\n"
        f"machine: {machine_summary(machine)}",
        flush=True,
    )
    rows = [
        compare(p, args.generator, args.stage, args.steps, args.rounds)
        for p in args.presets.split(",")
    ]

    head = (
        f"{'preset':7s} {'generator':12s} {'batch':>5s} {'reference ms [p20, p80]':>26s} "
        f"{'fast ms [p20, p80]':>26s}"
        f" {'ref/s':>7s} {'fast/s':>7s} {'speedup':>7s}  loss gap step 1 / last"
    )
    print("\n" + head + "\n" + "-" * len(head))
    for r in rows:
        ref = f"{r['reference_ms']:.0f} [{r['reference_p20_ms']:.0f}, {r['reference_p80_ms']:.0f}]"
        fast = f"{r['fast_ms']:.0f} [{r['fast_p20_ms']:.0f}, {r['fast_p80_ms']:.0f}]"
        print(
            f"{r['preset']:7s} {r['generator']:12s} {r['batch']:5d} {ref:>26s} {fast:>26s} "
            f"{r['reference_samples_per_s']:7.1f} {r['fast_samples_per_s']:7.1f} "
            f"{r['speedup']:6.2f}x  {r['loss_gap_step1']:.1e} ({r['loss_gap_step1_part']}) / "
            f"{r['loss_gap_last']:.1e} ({r['loss_gap_last_part']})"
        )
    print(
        "speedup: fast samples/s over reference samples/s. loss gap: largest relative difference "
        "of a loss part between the arms (same weights and batch at step 1)."
    )
    for r in rows:
        if r["preset"] == "small":
            verdict = "met" if r["speedup"] >= TARGET else "NOT met"
            print(f"target: small fast path >= {TARGET:.0f}x: {verdict} ({r['speedup']:.2f}x)")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {"machine": machine, "env": env, "steps": args.steps, "rows": rows}
    write_json(out / "train_step.json", result)
    write_text(out / "train_step.csv", csv_text(rows, list(rows[0]), machine_summary(machine)))
    print(f"wrote {out / 'train_step.json'} and {out / 'train_step.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
