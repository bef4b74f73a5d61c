"""One full training step on a GPU: eager float32 against bf16, fp16 with a gradient scaler and
the fused path, samples/s each, in one process.

    python bench/gpu_train_step.py [--preset paper] [--stage gen] [--steps 10]
        [--device cuda] [--out bench/results]

A step is what `fastdavs.train.loop` runs per batch (`fastdavs.train.step.TrainStep`: forward, the
D side's backward and Adam step, the G side's), on `fastdavs.data.dataset.example_batch` at the
preset's batch size. Arms, each from the same seed-0 weights on the same batch:

    fp32    eager float32, kernel_backend "ref" (PyTorch's own ops; cuDNN's default TF32
            convolutions, float32 matmuls)
    bf16    bfloat16 autocast, kernel_backend "ref"
    fp16    float16 autocast with `torch.amp.GradScaler`, kernel_backend "ref"
    fused   what `python -m fastdavs.train --amp` runs on CUDA: float16 autocast and scaler,
            kernel_backend "auto" (the Triton temporal convolutions and contrastive loss),
            channels-last model and inputs

Each arm takes warm-up steps until one is applied (float16's gradient scaler skips the steps
whose gradients overflow while it lowers its scale from 2^16), then `--steps` timed ones; a step
is timed from its start to the device being idle again (`torch.cuda.synchronize`). Reported:
median [p20, p80] ms, samples/s (batch over the median), timed steps skipped as not finite, the
speed-up over fp32, peak GPU memory, and the largest relative difference of a loss part (of at
least 1e-6) from fp32's at the initial weights (every loss of the stage computed once without
a gradient, seeded alike: numerics only). An arm that fails (out of memory, a non-finite step,
a kernel error) is recorded with its error and the others go on. `--device cpu` runs the same
arms on the CPU (tests use it on the tiny preset; CPU figures are not GPU figures). Writes
gpu_train_step.json to --out.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from common import git, median_p20_p80
from train_step import config, loss_gap

from fastdavs.data.dataset import example_batch
from fastdavs.io.atomic import write_json
from fastdavs.machine import machine_info, machine_summary
from fastdavs.model import DavsModel
from fastdavs.train import stages
from fastdavs.train.stages import STAGES
from fastdavs.train.step import TrainStep

# arm -> (kernel_backend, autocast dtype or None for float32, channels-last)
WARMUP_MAX = 20  # warm-up steps an arm may take to apply one
GAP_FLOOR = 1e-6  # loss parts smaller than this in fp32 (the ~1e-10 uniform-softmax terms at
# initialisation) are rounding noise in 16 bits, left out of the loss gap

ARMS = {
    "fp32": ("ref", None, False),
    "bf16": ("ref", torch.bfloat16, False),
    "fp16": ("ref", torch.float16, False),
    "fused": ("auto", torch.float16, True),
}


def _to(batch: dict, device: torch.device, channels_last: bool) -> dict:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return {
        k: v.to(device).contiguous(memory_format=fmt) if v.dim() == 4 else v.to(device)
        for k, v in batch.items()
    }


def initial_parts(model: DavsModel, batch: dict, stage: str, step: TrainStep) -> dict[str, float]:
    """Every loss part of `stage` at the arm's initial weights, under its autocast, seeded alike
    in every arm (no gradient, no update): what the arms' numerics alone change."""
    torch.manual_seed(1)
    with torch.no_grad(), step.autocast():
        if stage in stages.ONE_SIDED:
            _, parts = stages.ONE_SIDED[stage](model, batch)
        else:
            fwd = stages.forward(model, batch, stage)
            parts = stages.discriminator_loss(model, fwd, batch)[1]
            parts |= stages.generator_loss(model, fwd, batch, stage)[1]
    return {k: float(v) for k, v in parts.items()}


def run_arm(arm: str, preset: str, stage: str, n_steps: int, device: torch.device) -> dict:
    """One arm: warm-up steps until one is applied, then `n_steps` timed ones (those the
    non-finite guard skips counted). Raises RuntimeError if no warm-up step is applied."""
    backend, dtype, channels_last = ARMS[arm]
    cfg = config(preset, None)
    torch.manual_seed(0)
    model = DavsModel(cfg).set_kernel_backend(backend).train().to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    batch = _to(example_batch(cfg, cfg.optim.batch_size), device, channels_last)
    step = TrainStep(model, cfg, device, amp=dtype is not None, amp_dtype=dtype)
    step.make_optimizers(stage)
    first = initial_parts(model, batch, stage, step)
    cuda = device.type == "cuda"

    def timed_step() -> tuple[float, dict | None]:
        if cuda:
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        parts = step(stage, batch)
        if cuda:
            torch.cuda.synchronize(device)
        return time.perf_counter() - t, parts

    # Warm up until a step is applied: float16's scaler starts at 2^16 and halves its scale at
    # each step whose gradients overflow, which it skips (as in training).
    for _ in range(WARMUP_MAX):
        _, parts = timed_step()
        if parts is not None:
            break
    else:
        raise RuntimeError(f"no finite step in {WARMUP_MAX} warm-up steps")
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    times, skipped = [], 0
    for _ in range(n_steps):
        seconds, parts = timed_step()
        times.append(seconds)
        skipped += parts is None
    med, p20, p80 = median_p20_p80(times)
    return {
        "arm": arm,
        "status": "ok",
        "ms": med * 1e3,
        "p20_ms": p20 * 1e3,
        "p80_ms": p80 * 1e3,
        "samples_per_s": cfg.optim.batch_size / med,
        "skipped": skipped,
        "peak_mem_gib": torch.cuda.max_memory_allocated(device) / 2**30 if cuda else None,
        "losses": first,
    }


def compare(preset: str, stage: str, n_steps: int, device: torch.device) -> list[dict]:
    """Every arm in turn; an arm's failure becomes its row (status "failed: ...")."""
    rows = []
    for arm in ARMS:
        try:
            row = run_arm(arm, preset, stage, n_steps, device)
        except (RuntimeError, torch.OutOfMemoryError) as e:  # OOM, kernel or finite errors
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            row = {"arm": arm, "status": f"failed: {type(e).__name__}: {first}"}
        if device.type == "cuda":
            torch.cuda.empty_cache()
        rows.append(row)
        print(f"  {arm}: {row['status']}", flush=True)
    base = next((r for r in rows if r["arm"] == "fp32" and r["status"] == "ok"), None)
    for r in rows:
        if r["status"] != "ok" or base is None:
            continue
        r["speedup"] = r["samples_per_s"] / base["samples_per_s"]
        gap = loss_gap(base["losses"], r["losses"], GAP_FLOOR)
        r["loss_gap_initial"], r["loss_gap_initial_part"] = gap[1], gap[0]
    for r in rows:
        r.pop("losses", None)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="paper", choices=("paper", "small", "tiny"))
    parser.add_argument("--stage", default="gen", choices=STAGES)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per arm")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", default="bench/results")
    args = parser.parse_args()
    if args.steps < 2:
        parser.error("--steps must be at least 2")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"{Path(__file__).name}: no CUDA GPU here; --device cpu runs the arms on the CPU")
        return 2
    machine = machine_info()
    env = {"git": git("rev-parse", "--short", "HEAD")}
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(
        f"{args.preset} {args.stage} step on {where}; git {env['git']}\n"
        f"machine: {machine_summary(machine)}",
        flush=True,
    )
    rows = compare(args.preset, args.stage, args.steps, device)
    batch = config(args.preset, None).optim.batch_size
    head = f"{'arm':6s} {'ms [p20, p80]':>22s} {'samples/s':>10s} {'vs fp32':>8s} {'peak GiB':>9s}"
    print(f"\nbatch {batch}\n{head}\n{'-' * len(head)}")
    for r in rows:
        if r["status"] != "ok":
            print(f"{r['arm']:6s} {r['status']}")
            continue
        ms = f"{r['ms']:.1f} [{r['p20_ms']:.1f}, {r['p80_ms']:.1f}]"
        speed = f"{r['speedup']:.2f}x" if "speedup" in r else "-"
        mem = f"{r['peak_mem_gib']:.2f}" if r["peak_mem_gib"] is not None else "-"
        print(f"{r['arm']:6s} {ms:>22s} {r['samples_per_s']:10.1f} {speed:>8s} {mem:>9s}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {
        "machine": machine,
        "device": where,
        "env": env,
        "preset": args.preset,
        "stage": args.stage,
        "batch": batch,
        "steps": args.steps,
        "rows": rows,
    }
    write_json(out / "gpu_train_step.json", result)
    print(f"wrote {out / 'gpu_train_step.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
