"""The jaw probe: how far open a mouth is, read from pixels by a model that fastdavs never trains.

    train shards (real frames + ground-truth visemes) ──fit_jaw_probe──► JawProbe
    any frames [B, T, 3, S, S] (real, copied, generated) ──JawProbe.predict──► jaw opening [B, T]

`fastdavs-eval` scores generated video by the R^2 of the probe's reading against the jaw
opening SynthLRW drew (`metrics.r2_score`), beside the probe's R^2 on the real test frames (the
ceiling) and on the identity frame copied to every frame (the floor). The probe must not be a
network the evaluated training optimised, or a generator could learn to please it; it is a
ridge regression fitted here, from the data alone:

- features: the mouth box (`DavsConfig.mouth_box_px`) of each frame, as grey levels (BT.601
  luma of RGB in [0, 1]), average-pooled by a whole factor so no side exceeds `MAX_SIDE`
  pixels (16 x 32 at 64 and at 256 px), flattened; the box already holds the lips and the
  opening, and the pooling keeps the fit small at any image size;
- targets: the jaw opening (`phonemes.VISEME_DIMS[0]`, in [0, 1]) of each frame;
- fit data: real frames of the train split, cropped at the centre as evaluation items are; all
  25 stored frames of at most `MAX_CLIPS` clips, evenly spaced in split order (deterministic;
  SynthLRW's order is word-major, so they cover every word and identity). Train identities are
  disjoint from val and test ones, so the probe reads mouths of faces it never saw, as the
  generated test video asks of it;
- ridge strength: the one of `ALPHAS` with the best R^2 on held-out identities (the last
  quarter, at least one, of the fit clips' identities in sorted order; every 4th clip where the
  split has one identity or unknown ones), after fitting the others; then refitted on all the
  fit clips with that strength.

Reading the numbers (the embedded SynthLRW set at the small preset, 64 px, its 450 test
clips; the data and the fit are deterministic, so these hold on any machine): the probe's R^2
is 0.89 on its held-out train identities and 0.84 on the real test frames (0.56 to 0.97 per
identity); the copied identity frame reads -1.04. Two references that need no probe, from the
ground truth itself: the mean jaw track of the split as every clip's answer (what a generator
that learnt only when words happen, not which word, could reach) has R^2 0.21, and another
word's true track (the shuffled control with perfect pixels) -0.65.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from fastdavs.data.shards import FRAMES_PER_CLIP, ShardSet
from fastdavs.evaluate.metrics import Ridge, r2_score, ridge_regression
from fastdavs.model.losses import Box

MAX_CLIPS = 256  # fit clips (25 frames each): ~6,400 frames, under a second on 2 cores
MAX_SIDE = 32  # pixels of the pooled box's longer side, at most
ALPHAS = tuple(10.0**k for k in range(-4, 3))  # ridge strengths per sample, on standardised pixels
JAW = 0  # column of the jaw opening in the visemes
_LUMA = (0.299, 0.587, 0.114)


def mouth_features(frames: torch.Tensor, box: Box) -> torch.Tensor:
    """Grey, pooled pixels of the mouth box.

    Args:
        frames: [..., 3, S, S] RGB in [0, 1] (float), or uint8 in [0, 255]; any device.
        box: (top, bottom, left, right) pixels, e.g. `DavsConfig.mouth_box_px`.
    Returns:
        [..., D] float32 with D = ceil(h / k) * ceil(w / k) for the h x w box, where k is the
        smallest whole factor that brings both sides to MAX_SIDE or fewer.
    """
    top, bottom, left, right = box
    h, w = bottom - top, right - left
    crop = frames[..., top:bottom, left:right]
    lead = crop.shape[:-3]
    x = crop.reshape(-1, 3, h, w).float()
    if frames.dtype == torch.uint8:
        x = x / 255
    luma = torch.tensor(_LUMA, device=x.device).view(1, 3, 1, 1)
    grey = (x.clamp(0, 1) * luma).sum(1, keepdim=True)  # [n, 1, h, w]
    k = math.ceil(max(h, w) / MAX_SIDE)
    if k > 1:
        grey = F.avg_pool2d(grey, k, ceil_mode=True)
    return grey.flatten(1).reshape(*lead, -1)


@dataclass(frozen=True)
class JawProbe:
    """A fitted jaw probe; `info` says what it was fitted on (JSON-ready)."""

    ridge: Ridge
    box: Box
    info: dict

    def predict(self, frames: torch.Tensor) -> torch.Tensor:
        """[..., 3, S, S] frames -> [...] float64 jaw openings (not clipped to [0, 1])."""
        return self.ridge.predict(mouth_features(frames, self.box))


def fit_jaw_probe(shards: ShardSet, image_size: int, box: Box) -> JawProbe:
    """Fit the probe on real frames of `shards` (the train split) as the module docstring says.

    Args:
        shards: a split with ground-truth visemes (`shards.visemes` not None) and >= 2 clips.
        image_size: S, the side of the centre crop evaluation items use.
        box: the mouth box in pixels of that crop.
    Returns:
        JawProbe; its info: {"clips", "frames", "features", "alpha", "held_out_r2",
        "held_out_clips"} (held_out_r2 is None where the held-out jaw openings are constant).
    """
    if shards.visemes is None:
        raise ValueError(f"split {shards.split!r} has no visemes to fit a jaw probe on")
    n = len(shards)
    if n < 2:
        raise ValueError(f"split {shards.split!r}: {n} clip; the jaw probe needs at least 2")
    clips = np.unique(np.linspace(0, n - 1, min(n, MAX_CLIPS)).round().astype(np.int64))
    c = (shards.aligned_size - image_size) // 2  # the evaluation items' centre crop
    top, bottom, left, right = box
    local = (0, bottom - top, 0, right - left)
    feats = []
    for i in clips.tolist():
        mouth = shards.frames(i)[:, c + top : c + bottom, c + left : c + right]  # [T, h, w, 3]
        mouth = torch.from_numpy(np.ascontiguousarray(mouth)).permute(0, 3, 1, 2)
        feats.append(mouth_features(mouth, local))  # [T, D]
    x = torch.stack(feats)  # [n, T, D]
    y = torch.from_numpy(shards.visemes[clips][..., JAW].astype(np.float64))  # [n, T]
    held = _held_out(shards.identities[clips])
    fits = ridge_regression(x[~held].flatten(0, 1), y[~held].flatten(), ALPHAS)
    scores = [r2_score(f.predict(x[held]), y[held]) for f in fits]
    best = max(range(len(fits)), key=lambda k: -math.inf if scores[k] is None else scores[k])
    (ridge,) = ridge_regression(x.flatten(0, 1), y.flatten(), [ALPHAS[best]])
    info = {
        "clips": len(clips),
        "frames": len(clips) * FRAMES_PER_CLIP,
        "features": x.shape[-1],
        "alpha": ALPHAS[best],
        "held_out_r2": scores[best],
        "held_out_clips": int(held.sum()),
    }
    return JawProbe(ridge, box, info)


def _held_out(identities: np.ndarray) -> torch.Tensor:
    """bool [n]: the clips whose identity is among the last quarter (at least one) of the
    distinct known identities; every 4th clip (the last of fewer than 4) where fewer than 2
    identities are known."""
    known = np.unique(identities[identities >= 0])
    if len(known) >= 2:
        held = np.isin(identities, known[len(known) - max(1, len(known) // 4) :])
    else:
        order = np.arange(len(identities))
        held = order % 4 == 3 if len(order) >= 4 else order == len(order) - 1
    return torch.from_numpy(held)
