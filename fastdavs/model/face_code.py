"""What the generator reads of a face: computed once per face, then read by every frame.

    images [B, 3, S, S] ──IdentityGraph──► the identity tensors [B, ...] (`identity_shapes`)
    identity tensors of one face [1, ...] + wid [N, word_dim] ──decode_frames──► frames [N, 3, S, S]

For the davs decoder the identity tensors are pid [pid_dim] and skip [C2, S/8, S/8] (C2 =
ch(160), the identity encoder's outputs); for the mouth editor image [3, S, S] (the face itself,
which the edit is pasted into) and skip1..skip3 (its encoding of the edit box,
`EditorIdentity`). `IdentityCache` holds them. Eager synthesis (`fastdavs.infer.synthesis`) and
the engines' graphs (`fastdavs.engines.export`) both split the generator here.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from fastdavs.config import DavsConfig
from fastdavs.model.davs import DavsModel
from fastdavs.model.mouth_editor import MouthEditor
from fastdavs.model.mouth_editor import identity_shapes as editor_identity_shapes


def identity_shapes(cfg: DavsConfig) -> dict[str, tuple[int, ...]]:
    """Name -> shape (no batch axis) of one face's identity tensors, in the order the identity
    graph outputs them and the frame graph reads them after `mfcc`."""
    if cfg.generator == "mouth_editor":
        return editor_identity_shapes(cfg)
    s = cfg.image_size
    return {"pid": (cfg.pid_dim,), "skip": (cfg.ch(160), s // 8, s // 8)}


class IdentityGraph(nn.Module):
    """What the generator's `decode` reads of a face (see `identity_shapes`).

    images [B, 3, S, S] in [0, 1] -> (pid [B, pid_dim], skip [B, ch(160), S/8, S/8]) for the
    davs decoder, (image, skip1, skip2, skip3) (`EditorIdentity`) for the mouth editor."""

    def __init__(self, model: DavsModel):
        super().__init__()
        # Only the module whose outputs are kept, so export traces nothing else.
        self.edits = isinstance(model.generator, MouthEditor)
        self.encoder = model.generator if self.edits else model.identity_encoder

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.edits:
            return tuple(self.encoder.encode(images))
        features = self.encoder(images)
        return features.vec, features.net2


def decode_frames(
    generator: nn.Module, identity: Sequence[torch.Tensor], wid: torch.Tensor
) -> torch.Tensor:
    """Frames of one face: its identity tensors (batch 1, as `IdentityGraph` gives them) and
    wid [N, word_dim] -> generator.decode, which broadcasts them over the N rows -> frames
    [N, 3, S, S]."""
    return generator.decode(*identity, wid)


class IdentityCache(tuple):
    """What the frame graph reads of B faces: the identity graph's outputs [B, ...], in its
    order (`identity_shapes`): (pid, skip) for the davs decoder,
    (image, skip1, skip2, skip3) for the mouth editor. `IdentityCache(pid, skip)` builds one."""

    def __new__(cls, *tensors: torch.Tensor) -> IdentityCache:
        return super().__new__(cls, tensors)

    def face(self, i: int) -> IdentityCache:
        """The cache of face i alone (what `frames` takes)."""
        return IdentityCache(*(t[i : i + 1] for t in self))
