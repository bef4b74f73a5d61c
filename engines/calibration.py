"""Calibration inputs of int8 engines: real faces and speech from prepared shards, as feeds of
the frame graph. Both int8 paths read them: ONNX Runtime's static quantization (`quantize.py`)
and NNCF's post-training quantization for OpenVINO (`openvino_engine.py`). The same shards give
the int8 parity check its inputs, from clips calibration did not see (`heldout_inputs`).

    feeds = calibration_feeds(model, shards_dir, frames=64)
    # [{"mfcc": [n, 20, 12], <identity tensors>: [1, ...]}, ...], float32 NumPy, one per clip
    images, mfcc, where = heldout_inputs(shards_dir, image_size, frames=8, seed=0)

The data is a `fastdavs-prepare` output at the model's image size: by default the shards the
checkpoint's run was trained on (RUN/run.json, `fastdavs.io.checkpoint.run_data`), else what
`--calibration-data` names. Each clip gives one feed: its first stored frame, centre-cropped to
the model's image size as evaluation crops it, through the eager identity graph, and
`WINDOWS_PER_CLIP` of its own MFCC windows spread over the clip, so faces and speech come in
the pairs the model saw in training. Clips are drawn round-robin over identities (seeded), so
a few clips already cover several faces and voices.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from fastdavs.data.shards import ShardSet
from fastdavs.engines.errors import EngineError
from fastdavs.errors import DataError
from fastdavs.model import DavsModel
from fastdavs.model.face_code import IdentityGraph, identity_shapes

log = logging.getLogger(__name__)

SPLIT = "train"
HELDOUT_SPLITS = ("val", "test")  # parity's clips: people and takes calibration did not see
WINDOWS_PER_CLIP = 8


def open_shards(data: str | Path, image_size: int, split: str = SPLIT) -> ShardSet:
    """One split of prepared shards at `image_size`; EngineError naming the path and what to
    do otherwise."""
    try:
        shards = ShardSet(data, split).check()
    except DataError as e:
        raise EngineError(f"--calibration-data: {e}") from None
    if shards.image_size != image_size or shards.aligned_size < image_size or not len(shards):
        raise EngineError(
            f"--calibration-data {data}: {len(shards)} {split} clips prepared for "
            f"{shards.image_size} px; the model takes {image_size} px: prepare shards at its "
            "size (fastdavs-prepare --preset), e.g. the data it was trained on"
        )
    return shards


def face_of(shards: ShardSet, i: int, image_size: int) -> torch.Tensor:
    """The first stored frame of clip `i`, centre-cropped as evaluation crops it:
    [1, 3, S, S] float32 in [0, 1]."""
    c = (shards.aligned_size - image_size) // 2
    face = shards.frames(i)[0, c : c + image_size, c : c + image_size]  # [S, S, 3] uint8
    return torch.from_numpy(np.ascontiguousarray(face)).permute(2, 0, 1)[None].float() / 255


def heldout_inputs(
    data: str | Path, image_size: int, frames: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(images [1, 3, S, S], mfcc [frames, 20, 12], where they come from): the face of one clip
    of a split calibration does not read (val, else test; train where the data has neither),
    drawn by `seed`, and `frames` windows spread over that clip's speech."""
    index = ShardSet(data, SPLIT).index  # opened (and checked) by calibration already
    split = next((s for s in HELDOUT_SPLITS if s in index.splits), SPLIT)
    shards = open_shards(data, image_size, split)
    i = int(np.random.default_rng(seed).integers(len(shards)))
    windows = shards.mfcc(i)  # [T, 20, 12] float16
    steps = np.linspace(0, len(windows) - 1, frames).round().astype(int)
    mfcc = torch.from_numpy(np.asarray(windows[steps], np.float32))
    return face_of(shards, i, image_size), mfcc, f"{split} clip {shards.clip_ids[i]}"


def calibration_feeds(
    model: DavsModel, data: str | Path, frames: int, seed: int = 0
) -> list[dict[str, np.ndarray]]:
    """About `frames` MFCC windows of real clips with their faces, as frame graph feeds (see
    the module docstring): mfcc [n <= WINDOWS_PER_CLIP, 20, 12] and the identity tensors
    [1, ...] of the clip's face, float32."""
    s = model.cfg.image_size
    shards = open_shards(data, s)
    clips = _round_robin(shards.identities, -(-frames // WINDOWS_PER_CLIP), seed)
    names = list(identity_shapes(model.cfg))
    graph = IdentityGraph(model).eval()
    feeds = []
    for i in clips:
        windows = shards.mfcc(i)  # [T, 20, 12] float16
        steps = np.linspace(0, len(windows) - 1, WINDOWS_PER_CLIP).round().astype(int)
        with torch.no_grad():
            identity = graph(face_of(shards, i, s))
        feeds.append(
            {
                "mfcc": np.asarray(windows[steps], np.float32),
                **{n: t.numpy() for n, t in zip(names, identity, strict=True)},
            }
        )
    log.info(
        "calibration: %d windows of %d clips of %s (%s split)",
        sum(len(f["mfcc"]) for f in feeds), len(feeds), data, SPLIT,
    )  # fmt: skip
    return feeds


def _round_robin(identities: np.ndarray, n: int, seed: int) -> list[int]:
    """`n` clip indices (fewer if there are fewer clips), one of each identity in turn, in a
    seeded random order; clips without identity labels (-1) count as one identity."""
    rng = np.random.default_rng(seed)
    groups = [rng.permutation(np.flatnonzero(identities == p)) for p in np.unique(identities)]
    rng.shuffle(groups)
    picked: list[int] = []
    for k in range(max(len(g) for g in groups)):
        picked += [int(g[k]) for g in groups if k < len(g)]
    return picked[:n]
