"""Data parallelism of TrainStep (DistributedDataParallel over gloo) with two CPU processes.

Each test spawns two ranks that train the tiny preset on the two halves of the same batches.
Every rank records, for every optimiser step, the parameters just before it and the gradients
it applies; the test recomputes each of those gradients in one process from the same
parameters and compares:
- with BatchNorm reading its running statistics and no dropout (eval mode), a `pid` step of
  the two ranks applies one process's gradient on the concatenated batch: every loss is a
  mean over items, so the average of the halves' gradients is the whole batch's;
- in training mode BatchNorm normalises each rank's half by that half's statistics (no
  SyncBatchNorm), so a `gen` step (both sides, dropout, random soft labels) applies the
  average of the two halves' gradients, each half computed with its rank's random stream;
- a NaN on one rank makes both ranks skip the step, and neither hangs;
- `torchrun -m fastdavs.train` runs the command with two processes end to end.
Gradients, not weights after the steps, are compared: Adam moves a weight whose gradient is
summation noise (a bias before a BatchNorm) by up to lr, so weights would differ where the
exchange is right. Two steps per test, since DistributedDataParallel's first backward (static
graph) is not its later ones. Tolerance: 1e-4 relative plus 1e-5 of the side's largest
|gradient| (the processes sum in different orders).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from fastdavs.config import DavsConfig
from fastdavs.data.dataset import example_batch
from fastdavs.io.checkpoint import latest_checkpoint
from fastdavs.model import DavsModel
from fastdavs.train import stages
from fastdavs.train.step import TrainStep

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="gloo over loopback")

WORLD = 2
PER_RANK = 2  # clips per rank and step
STEPS = 2
TIMEOUT_S = 240  # whole test; a hung collective fails it instead of the suite
CPU = torch.device("cpu")


def _batch(cfg: DavsConfig, step: int, rank: int | None) -> dict[str, torch.Tensor]:
    """Step `step`'s batch of WORLD * PER_RANK clips, or rank `rank`'s half of it."""
    batch = example_batch(cfg, WORLD * PER_RANK, seed=step)
    if rank is None:
        return batch
    return {k: v[rank * PER_RANK : (rank + 1) * PER_RANK] for k, v in batch.items()}


def _seed(step: int, rank: int) -> int:
    return 1000 * step + rank  # the random stream of `rank` at `step`


def _model(cfg: DavsConfig, deterministic: bool) -> DavsModel:
    """The tiny model, the same in every process; `deterministic`: BatchNorm on its running
    statistics and no dropout (eval mode: its gradients still flow)."""
    torch.manual_seed(0)
    return DavsModel(cfg).train(not deterministic)


def _params(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _record_steps(model: nn.Module, step: TrainStep, log: list) -> None:
    """Append (side, parameters before the step, applied gradients by name) to `log` at every
    optimiser step of `step` (parameters this stage leaves without a gradient are absent)."""
    names = {p: n for n, p in model.named_parameters()}
    for side, opt in step.optimizers.items():

        def hook(opt, args, kwargs, side=side):
            params = [p for g in opt.param_groups for p in g["params"] if p.grad is not None]
            grads = {names[p]: p.grad.clone() for p in params}
            log.append((side, _params(model), grads))

        opt.register_step_pre_hook(hook)


def _worker(rank, init, out, stage, n_steps, deterministic, poison):
    """One rank: train `stage` for `n_steps` on its halves; write what every optimiser step
    applied, which steps were applied and the final parameters. `poison`: (rank, step) whose
    frames are made NaN, or None."""
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=init, rank=rank, world_size=WORLD, timeout=timedelta(seconds=60)
    )
    try:
        cfg = DavsConfig.from_preset("tiny")
        model = _model(cfg, deterministic)
        step = TrainStep(model, cfg, CPU, amp=False, world=WORLD)
        step.make_optimizers(stage)
        log, applied = [], []
        _record_steps(model, step, log)
        for i in range(n_steps):
            batch = _batch(cfg, i, rank)
            if poison == (rank, i):
                batch["frames"][0] = float("nan")
                batch["identity"][0] = float("nan")
            torch.manual_seed(_seed(i, rank))
            applied.append(step(stage, batch) is not None)
        result = {"log": log, "applied": torch.tensor(applied), "params": _params(model)}
        torch.save(result, out / f"{rank}.pt")
    finally:
        dist.destroy_process_group()


def _spawn(tmp_path, stage, n_steps, deterministic=False, poison=None) -> list[dict]:
    out = Path(tempfile.mkdtemp(dir=tmp_path))  # a fresh rendezvous file for every group
    args = (f"file://{out / 'rendezvous'}", out, stage, n_steps, deterministic, poison)
    ctx = mp.start_processes(_worker, args=args, nprocs=WORLD, join=False, start_method="spawn")
    deadline = time.monotonic() + TIMEOUT_S
    while not ctx.join(timeout=5):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail(f"the ranks did not finish within {TIMEOUT_S} s: a collective hangs")
    return [torch.load(out / f"{r}.pt", weights_only=True) for r in range(WORLD)]


def _assert_ranks_agree(ranks: list[dict]) -> None:
    """Every rank applied the same gradients and holds the same weights, bit for bit."""
    first = ranks[0]
    for other in ranks[1:]:
        assert all(torch.equal(first["params"][n], other["params"][n]) for n in first["params"])
        for (side, _, grads), (side_o, _, grads_o) in zip(first["log"], other["log"], strict=True):
            assert side == side_o
            assert all(torch.equal(grads[n], grads_o[n]) for n in grads)


def _load(model: nn.Module, params: dict[str, torch.Tensor], names=None) -> None:
    """Copy `params` (those in `names`, default all) into the model."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if names is None or name in names:
                p.copy_(params[name])


def _grads(model: nn.Module, names) -> dict[str, torch.Tensor]:
    found = dict(model.named_parameters())
    return {n: found[n].grad.clone() for n in names}


def _assert_grads_close(applied: dict, reference: dict) -> None:
    assert applied.keys() == reference.keys()
    scale = max(g.abs().max() for g in reference.values())
    assert scale > 0, "the reference gradients are all zero: the check would be empty"
    for name, g in applied.items():
        torch.testing.assert_close(g, reference[name], rtol=1e-4, atol=1e-5 * scale, msg=name)


def test_pid_gradients_are_the_concatenated_batch(tmp_path):
    cfg = DavsConfig.from_preset("tiny")
    ranks = _spawn(tmp_path, "pid", n_steps=STEPS, deterministic=True)
    assert all(r["applied"].all() for r in ranks)
    _assert_ranks_agree(ranks)
    log = ranks[0]["log"]
    assert [side for side, _, _ in log] == ["g"] * STEPS
    torch.set_num_threads(1)  # as the ranks, so that the reference runs the same kernels
    model = _model(cfg, deterministic=True)
    for i, (_, params, applied) in enumerate(log):
        _load(model, params)
        model.zero_grad(set_to_none=True)
        loss, _ = stages.pid_loss(model, _batch(cfg, i, None))
        loss.backward()
        _assert_grads_close(applied, _grads(model, applied))


class _Streams:
    """Each rank's random stream at step `step`, for one process that plays both ranks:
    `on(r, fn, *args)` runs fn(*args) on rank r's stream and keeps where it got to."""

    def __init__(self, step: int):
        self.states = []
        for r in range(WORLD):
            torch.manual_seed(_seed(step, r))
            self.states.append(torch.get_rng_state())

    def __call__(self, rank, fn, *args):
        torch.set_rng_state(self.states[rank])
        out = fn(*args)
        self.states[rank] = torch.get_rng_state()
        return out


def test_gen_gradients_are_the_average_of_the_halves(tmp_path):
    """Both sides of `gen`: the D step from detached activations, then the G step through the
    updated discriminators, as `TrainStep` orders them."""
    cfg = DavsConfig.from_preset("tiny")
    ranks = _spawn(tmp_path, "gen", n_steps=STEPS)
    assert all(r["applied"].all() for r in ranks)
    _assert_ranks_agree(ranks)
    log = ranks[0]["log"]
    assert [side for side, _, _ in log] == ["d", "g"] * STEPS
    torch.set_num_threads(1)
    model = _model(cfg, deterministic=False)
    for i in range(STEPS):
        (_, before_d, applied_d), (_, before_g, applied_g) = log[2 * i : 2 * i + 2]
        halves = [_batch(cfg, i, r) for r in range(WORLD)]
        on = _Streams(i)
        _load(model, before_d)
        model.zero_grad(set_to_none=True)
        fwd = [on(r, stages.forward, model, halves[r], "gen") for r in range(WORLD)]
        for r in range(WORLD):
            d_loss, _ = on(r, stages.discriminator_loss, model, fwd[r], halves[r])
            (d_loss / WORLD).backward()
        _assert_grads_close(applied_d, _grads(model, applied_d))
        _load(model, before_g, applied_d)  # the discriminators after their step
        model.zero_grad(set_to_none=True)
        for r in range(WORLD):
            g_loss, _ = on(r, stages.generator_loss, model, fwd[r], halves[r], "gen")
            (g_loss / WORLD).backward()
        _assert_grads_close(applied_g, _grads(model, applied_g))


def test_nan_on_one_rank_skips_the_step_on_both(tmp_path):
    cfg = DavsConfig.from_preset("tiny")
    ranks = _spawn(tmp_path, "wid", n_steps=1, poison=(1, 0))
    start = _params(_model(cfg, deterministic=False))
    for r in ranks:
        assert r["applied"].tolist() == [False]
        assert r["log"] == []  # no optimiser stepped
        assert all(torch.equal(r["params"][n], start[n]) for n in start)
    # The next step trains again on both (and the ranks still agree).
    ranks = _spawn(tmp_path, "wid", n_steps=2, poison=(1, 0))
    assert [r["applied"].tolist() for r in ranks] == [[False, True]] * WORLD
    _assert_ranks_agree(ranks)
    assert any(not torch.equal(ranks[0]["params"][n], start[n]) for n in start)


def test_torchrun_trains_with_two_processes(shards, tmp_path):
    """The command under torchrun, as a user runs it: 2 steps of `wid`, one record per step."""
    run = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",  # a free port of the OS's choosing: parallel suites do not collide
        "--nproc_per_node",
        "2",
        "-m",
        "fastdavs.train",
        "--preset",
        "tiny",
        "--workers",
        "0",
        "--data",
        str(shards),
        "--out",
        str(run),
        "--stage",
        "wid",
        "--steps",
        "2",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = (run / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["step"] for r in records] == [1, 2]
    # Each step saw one batch per process.
    assert records[-1]["samples_per_s"] > 0
    assert latest_checkpoint(run) is not None
