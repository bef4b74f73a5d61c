"""`--backend auto` / `--precision auto`: build every engine this machine can build, time each,
and keep the fastest that holds parity.

    candidates   every backend x precision asked for ("auto": all of them), less those that cannot
                 be built here, each with its reason (no TensorRT or GPU, no native bf16, fp16 on
                 a CPU, int8 without calibration data, a precision the backend does not offer)
    each         `build_engine` into STAGING/<backend>-<precision> (STAGING: the hidden sibling
                 of OUT that `fastdavs.io.atomic.atomic_dir` publishes), with its own parity
                 check (a refusal is recorded, not fatal), then frames/s of `Engine.frames` at the
                 batch profile's opt size: the median of calls after a warm-up call, on random
                 inputs, in this process, one candidate after the other
    the fastest  its files move up into STAGING, the others are deleted, and STAGING replaces
                 OUT; its config.json gains "selection": every candidate's frames/s and parity,
                 or why it was left out

Speed depends on the CPU (vector width, native bf16, VNNI), so the choice is this machine's:
the log says which engine won and by how much.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import statistics
import time
from pathlib import Path

import torch

from fastdavs.engines.builder import (
    AUTO,
    BACKENDS,
    PRECISIONS,
    BuildConfig,
    build_engine,
    calibration_data,
    check_backend,
)
from fastdavs.engines.engine_dir import CONFIG, check_out_dir
from fastdavs.engines.errors import EngineError
from fastdavs.engines.export import checkpoint_dir
from fastdavs.engines.parity import random_inputs
from fastdavs.errors import FastdavsError
from fastdavs.io.atomic import atomic_dir, write_json

log = logging.getLogger(__name__)

BUDGET_S = 3.0  # timing per candidate after its warm-up call (at least MIN_CALLS calls)
MIN_CALLS, MAX_CALLS = 3, 10


def candidates(cfg: BuildConfig, ckpt: Path) -> tuple[list[BuildConfig], dict[str, str]]:
    """(the configs to build, {name: why it is left out}) for the backends and precisions that
    `cfg` names or leaves to "auto"."""
    backends = BACKENDS if cfg.backend == AUTO else (cfg.backend,)
    precisions = PRECISIONS if cfg.precision == AUTO else (cfg.precision,)
    todo, skipped = [], {}
    for backend in backends:
        for precision in precisions:
            one = dataclasses.replace(cfg, backend=backend, precision=precision)
            try:
                one.validate()
                check_backend(backend, precision)
                if backend == "onnxruntime" and precision == "fp16" and not _cuda_ort():
                    raise EngineError(
                        "ONNX Runtime has no fp16 kernels on CPUs (it computes the graph in fp32, "
                        "slower than the fp32 engine)"
                    )
                if precision == "int8":
                    calibration_data(ckpt, one)
            except FastdavsError as e:
                skipped[name_of(one)] = str(e)
                continue
            todo.append(one)
    return todo, skipped


def name_of(cfg: BuildConfig) -> str:
    return f"{cfg.backend} {cfg.precision}"


def frames_per_second(engine, batch: int, budget_s: float = BUDGET_S) -> float:
    """Frames/s of `engine.frames` on `batch` random MFCC windows of one random face."""
    images, mfcc = random_inputs(engine.config, batch, torch.Generator().manual_seed(0))
    identity = engine.identity(images)
    engine.frames(mfcc, identity)  # warm-up: first-call allocations and kernel selection
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < MAX_CALLS and (
        len(times) < MIN_CALLS or time.perf_counter() - start < budget_s
    ):
        t = time.perf_counter()
        engine.frames(mfcc, identity)
        times.append(time.perf_counter() - t)
    return batch / statistics.median(times)


def build_fastest(checkpoint: str | Path, out: str | Path, cfg: BuildConfig) -> Path:
    """Build the candidates of `cfg` (see the module docstring) and publish the fastest at
    `out`. EngineError, with every candidate's reason, where none could be built."""
    from fastdavs.engines.runtime import load

    out = Path(out)
    check_out_dir(out)
    ckpt = checkpoint_dir(checkpoint)
    todo, skipped = candidates(cfg, ckpt)
    for name, reason in skipped.items():
        log.info("auto: %s left out: %s", name, reason)
    batch = cfg.batch[1]
    tried: dict[str, dict] = {n: {"skipped": r} for n, r in skipped.items()}
    selection: dict = {"batch": batch, "candidates": tried}
    with atomic_dir(out, replace=True) as root:
        results = {}
        for one in todo:
            name = name_of(one)
            log.info("auto: building %s", name)
            try:
                built = build_engine(ckpt, root / name.replace(" ", "-"), one)
            except EngineError as e:
                tried[name] = {"refused": str(e)}
                log.info("auto: %s refused: %s", name, e)
                continue
            parity = json.loads((built / CONFIG).read_text())["parity"]
            fps = frames_per_second(load(built, threads=cfg.threads), batch)
            tried[name] = {"fps": fps, "psnr_min_db": parity["psnr_min_db"]}
            results[name] = (fps, built)
            log.info("auto: %s %.1f frames/s at batch %d", name, fps, batch)
        if not results:
            reasons = "; ".join(f"{n}: {next(iter(c.values()))}" for n, c in tried.items())
            raise EngineError(f"--backend/--precision auto: no engine could be built ({reasons})")
        best = max(results, key=lambda n: results[n][0])
        fps, built = results[best]
        selection["chosen"] = best
        meta = json.loads((built / CONFIG).read_text())
        meta["selection"] = selection
        write_json(built / CONFIG, meta)
        # The staging directory becomes the chosen engine: its files move up, the others go.
        for other in [d for d in root.iterdir() if d != built]:
            shutil.rmtree(other)
        for file in list(built.iterdir()):
            file.rename(root / file.name)
        built.rmdir()
    ranked = sorted(results, key=lambda n: -results[n][0])
    others = ", ".join(f"{n} {results[n][0]:.1f}" for n in ranked if n != best)
    log.info(
        "auto: chose %s, %.1f frames/s at batch %d on this machine (others: %s); wrote %s",
        best, fps, batch, others or "none", out,
    )  # fmt: skip
    return out


def _cuda_ort() -> bool:
    from fastdavs.engines.onnxruntime_engine import providers

    return "CUDAExecutionProvider" in providers()
