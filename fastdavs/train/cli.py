"""`python -m fastdavs.train` / `fastdavs-train`: the DAVS training stages (pid, wid, render, gen).

With no --data, the embedded SynthLRW set is generated once into the cache
(`$FASTDAVS_CACHE`, default ~/.cache/fastdavs) and prepared for the preset, then trained on.
Under torchrun each process trains on its share of every batch (gloo on CPU, nccl on CUDA with
one GPU per process, cuda:LOCAL_RANK), through DistributedDataParallel; rank 0 prepares the
data, logs and saves.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from fastdavs.cli import (
    Parser,
    add_config_args,
    add_dataclass_args,
    config_from_args,
    dataclass_from_args,
    option,
    run,
)
from fastdavs.config import DavsConfig
from fastdavs.errors import OptionError
from fastdavs.train.stages import STAGES

PROG = "fastdavs-train"
SYNTH_VERSION = 3  # bump when SynthLRW's content changes, so caches are rebuilt (3: 120 identities)


# DavsConfig fields the data decides (`fit_to_data`): no flag offers them.
DATA_FIELDS = ("num_words", "num_identities")
# The loss weights of disentangling, all 0 in the --no-disentangle ablation.
DISENTANGLING = (
    "pid_uniform",
    "wid_uniform",
    "adversary_ce",
    "identity_scatter",
    "probe_uniform",
    "view_consistency",
)
# The loss weights whose terms read identity labels, all 0 on data without them.
NEEDS_IDENTITIES = ("wid_uniform", "identity_scatter", "probe_uniform")


@dataclass
class Ablation:
    """Switches that change what is trained, applied to the config before it is saved."""

    no_disentangle: bool = option(
        False,
        help="ablation: disentangling off (sets "
        + ", ".join("--loss-" + name.replace("_", "-") for name in DISENTANGLING)
        + " to 0)",
    )


def build_parser() -> argparse.ArgumentParser:
    from fastdavs.train.loop import RunOptions

    parser = Parser(
        prog=PROG,
        description="Train DAVS end to end: identity pretraining (pid), the shared word space "
        "(wid), the generator alone on the frozen word space (render; 0 steps in the paper "
        "preset), then joint generation with adversarial disentangling (gen). With no --data, "
        "the embedded SynthLRW data set is generated once and used.",
    )
    add_dataclass_args(
        parser.add_argument_group("run options (not saved with the model)"), RunOptions
    )
    add_dataclass_args(parser.add_argument_group("ablation"), Ablation)
    add_config_args(parser, default_preset=None, exclude=DATA_FIELDS)
    parser.epilog = (
        "--preset defaults to 'small' without a GPU and 'paper' with one. The vocabulary size "
        "(num_words) and the number of identities (num_identities) come from the data."
    )
    return parser


def default_preset() -> str:
    return "paper" if torch.cuda.is_available() else "small"


def cache_dir() -> Path:
    return Path(os.environ.get("FASTDAVS_CACHE", Path.home() / ".cache" / "fastdavs"))


def embedded_data(image_size: int) -> Path:
    """SynthLRW, generated and prepared for `image_size` once, then reused."""
    from fastdavs.data.prepare import prepare
    from fastdavs.data.shards import INDEX_FILE
    from fastdavs.data.synth import SynthConfig, generate

    synth = SynthConfig(size=256 if image_size > 128 else 128)
    root = cache_dir() / f"synthlrw-v{SYNTH_VERSION}-{synth.size}px-seed{synth.seed}"
    shards = root.with_name(root.name + f"-shards{image_size}")
    if not (shards / INDEX_FILE).exists():
        generate(synth, root)
        prepare(root, shards, image_size)
    return shards


def fit_to_data(cfg: DavsConfig, data: Path, stages: Sequence[str] = STAGES) -> DavsConfig:
    """The config with its classifier sizes set from the prepared data's vocabulary and
    identities (500 words and 40,145 identities are the original's LRW / MS-Celeb sizes).

    Data without identity labels (real LRW prepared without `--identities`) cannot train the
    identity classifier or the word-ID -> person adversary: the config then schedules no `pid`
    steps and weighs the terms that read identities (that adversary's uniform loss, identity
    scatter) 0, and a warning says so; training only `pid` on such data is an OptionError.
    The identity encoder then learns only through generation. Likewise data without the mouth's
    ground truth (anything but SynthLRW) weighs the viseme readout 0, with a warning."""
    from fastdavs.data.shards import ShardSet, load_index

    index = load_index(data)
    cfg = dataclasses.replace(
        cfg, num_words=len(index.vocabulary), num_identities=max(2, len(index.identities))
    )
    if not index.identities:
        if tuple(stages) == ("pid",):
            raise OptionError(
                f"--stage pid: {data} has no identity labels, so identity pretraining has "
                "nothing to learn; prepare the data with `fastdavs-prepare --identities CSV`"
            )
        logging.getLogger(__name__).warning(
            "%s has no identity labels: identity pretraining (pid) and the word-ID -> person "
            "adversary are off, and the identity encoder learns only through generation. "
            "To train them, prepare the data with `fastdavs-prepare --identities CSV` "
            "(the person of each clip).",
            data,
        )
        cfg = dataclasses.replace(
            cfg,
            schedule=dataclasses.replace(cfg.schedule, pid_steps=0),
            loss=dataclasses.replace(cfg.loss, **dict.fromkeys(NEEDS_IDENTITIES, 0.0)),
            optim=dataclasses.replace(cfg.optim, identity_group=1),
        )
    if cfg.loss.viseme and ShardSet(data, "train").visemes is None:
        logging.getLogger(__name__).warning(
            "%s holds no visemes (the mouth's ground truth of each frame, which SynthLRW "
            "records): the viseme readout (--loss-viseme) is off.",
            data,
        )
        cfg = dataclasses.replace(cfg, loss=dataclasses.replace(cfg.loss, viseme=0.0))
    return cfg.validate()


def _distributed() -> bool:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1): nccl with one GPU per
    process (cuda:LOCAL_RANK, made the current device before any CUDA work), gloo on CPU."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group("nccl")
    else:
        dist.init_process_group("gloo")
    return True


def _train(argv: Sequence[str] | None) -> None:
    from fastdavs.train.loop import RunOptions, Trainer

    args = build_parser().parse_args(argv)
    cfg = config_from_args(args, args.preset or default_preset())
    opts = dataclass_from_args(RunOptions, args)
    if dataclass_from_args(Ablation, args).no_disentangle:
        loss = dataclasses.replace(cfg.loss, **dict.fromkeys(DISENTANGLING, 0.0))
        cfg = dataclasses.replace(cfg, loss=loss)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    distributed = _distributed()
    try:
        rank = dist.get_rank() if distributed else 0
        data = opts.data
        if data is None:
            data = embedded_data(cfg.image_size) if rank == 0 else None
            if distributed:
                box = [data]
                dist.broadcast_object_list(box, 0)
                data = box[0]
        cfg = fit_to_data(cfg, data, opts.stages)
        out = opts.out or Path(f"runs/{time.strftime('%Y%m%d-%H%M%S')}")
        Trainer(cfg, dataclasses.replace(opts, data=data, out=out)).run()
        if rank == 0:
            print(f"run directory: {out}")
    finally:
        if distributed:
            dist.destroy_process_group()


def main(argv: Sequence[str] | None = None) -> int:
    return run(PROG, _train, argv)
