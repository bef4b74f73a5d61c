"""Data pipeline throughput: SynthLRW generation, fastdavs-prepare and the training loader,
against what the training step consumes.

    python bench/data.py [--preset small] [--clips 192] [--src LRW_TREE] [--out bench/results]

Without --src a SynthLRW set of about --clips clips is written to a temporary directory first
(its generation speed is reported too). The step figure is a proxy until the training loop
lands: forward + backward of the identity, video and audio encoders and the generator on one
batch (the bulk of a generator step's arithmetic), in samples/s. The loader keeps up when its
samples/s is well above the step's. Everything runs in this one process, one after the other.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from common import git

from fastdavs.config import DavsConfig
from fastdavs.data.dataset import DavsDataset, default_num_workers, make_loader
from fastdavs.data.prepare import prepare
from fastdavs.data.shards import ShardSet
from fastdavs.data.synth import SynthConfig, generate
from fastdavs.machine import machine_info, machine_summary
from fastdavs.model import DavsModel


def _timed(fn):
    t = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - t


def loader_rate(ds: DavsDataset, batch: int, workers: int, batches: int) -> float:
    """Samples/s over `batches` batches after one warm-up batch (worker start-up excluded)."""
    loader = make_loader(ds, batch, shuffle=True, num_workers=workers, drop_last=True)
    it = iter(loader)
    next(it)
    t, n = time.perf_counter(), 0
    for _ in range(batches):
        try:
            n += len(next(it)["word"])
        except StopIteration:
            ds.set_epoch(ds.epoch + 1)
            it = iter(loader)
    return n / (time.perf_counter() - t)


def step_rate(cfg: DavsConfig, sample: dict, repeats: int) -> float:
    """Samples/s of forward + backward through the encoders and the generator (see docstring)."""
    model = DavsModel(cfg).train()

    def step():
        ident = model.encode_identity(sample["identity"])
        wid = model.encode_audio(sample["mfcc"]) + model.encode_video(sample["frames"])
        fake = model.generate(ident, wid)
        adv = model.encode_identity(sample["adv_frames"].flatten(0, 1)).vec
        (fake - sample["frames"]).abs().mean().add(adv.mean()).backward()

    step()  # warm-up
    times = [_timed(step)[1] for _ in range(repeats)]
    return len(sample["word"]) / sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--preset", default="small")
    parser.add_argument("--clips", type=int, default=192, help="SynthLRW clips when no --src")
    parser.add_argument("--src", help="an LRW-layout tree to prepare instead")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--out", default="bench/results")
    args = parser.parse_args()
    cfg = DavsConfig.from_preset(args.preset)
    workers = os.cpu_count() or 1
    results: dict = {
        "machine": machine_info(),
        "preset": cfg.preset,
        "git": git("rev-parse", "--short", "HEAD"),
    }
    print(f"machine: {machine_summary(results['machine'])}")
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(args.src) if args.src else Path(tmp) / "synthlrw"
        if not args.src:
            # 4 identities x words x 3 takes; the last 2 identities are val/test.
            words = max(2, args.clips // 12)
            synth = SynthConfig(identities=4, held_out=2, words=words, takes=3, size=128)
            _, secs = _timed(lambda: generate(synth, src, workers))
            n = 4 * words * 3
            results["synth_clips_per_s"] = n / secs
            print(f"SynthLRW (128 px):  {n} clips in {secs:.1f} s = {n / secs:.1f} clips/s")
        index, secs = _timed(lambda: prepare(src, Path(tmp) / "shards", cfg.image_size, workers))
        n = sum(e["clips"] for e in index.splits.values()) + len(index.skipped)
        results["prepare_clips_per_s"] = n / secs
        print(f"prepare ({workers} processes): {n} clips in {secs:.1f} s = {n / secs:.1f} clips/s")

        ds = DavsDataset(ShardSet(Path(tmp) / "shards", "train"), cfg, train=True)
        for w in sorted({0, default_num_workers()}):
            rate = loader_rate(ds, args.batch_size, w, args.batches)
            results[f"loader_samples_per_s_workers{w}"] = rate
            print(f"loader (batch {args.batch_size}, {w} workers): {rate:.0f} samples/s")
        sample = next(iter(make_loader(ds, args.batch_size, shuffle=False, num_workers=0)))
        step = step_rate(cfg, sample, repeats=3)
        results["step_proxy_samples_per_s"] = step
        print(f"step proxy (fwd+bwd, encoders + generator): {step:.2f} samples/s")
        loader_best = max(v for k, v in results.items() if k.startswith("loader_"))
        results["loader_over_step"] = loader_best / step
        print(f"loader / step: {loader_best / step:.0f}x (above 1: the loader is not the limit)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "data.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out / 'data.json'}")


if __name__ == "__main__":
    sys.exit(main())
