"""Small classifier heads that train the encoders adversarially, plus the pid pretraining head.

- `ModalityDiscriminator` (spec/davs.md §1.5, §2.3): is a word-ID vector from audio or video?
- `PidWordAdversary` = C_p^w (§1.6, §2.4): reads the word from pid features; the pid encoder is
  trained to make its softmax uniform.
- `WidPersonAdversary` = C_w^p: reads the identity from word-ID vectors; the symmetric term the
  paper describes and the released code lacks (§2.4); the word-ID encoders are trained to make its
  softmax uniform.
- `IdentityClassifier` (§1.1): identity classification that pretrains the identity encoder.

All return logits (no sigmoid or softmax): losses use BCE-with-logits or cross-entropy, and the
uniform-target losses apply the softmax themselves.
"""

from __future__ import annotations

import torch
from torch import nn

from fastdavs.config import DavsConfig


def _near_zero_(layer: nn.Linear) -> nn.Linear:
    """The original's init of an adversary's output layer: weights N(0, 1e-4), bias 0.

    Its softmax starts almost uniform, so the 1e6-weighted uniform-target loss starts near 0.
    """
    nn.init.normal_(layer.weight, 0.0, 1e-4)
    nn.init.zeros_(layer.bias)
    return layer


class ModalityDiscriminator(nn.Sequential):
    """Per frame: word-ID vectors [..., word_dim] -> audio-vs-video logits [...].

    E.g. [N, word_dim] -> [N] or [B, T, word_dim] -> [B, T]. Logit > 0 means "audio" in the
    original's labelling (§2.3).
    """

    def __init__(self, cfg: DavsConfig):
        super().__init__(
            nn.Linear(cfg.word_dim, cfg.word_dim),
            nn.ReLU(inplace=True),
            nn.Linear(cfg.word_dim, 1),
        )

    def forward(self, wid: torch.Tensor) -> torch.Tensor:  # [..., word_dim] -> [...]
        return super().forward(wid).squeeze(-1)


class PidWordAdversary(nn.Module):
    """C_p^w: identity-encoder net1 of adv_frames consecutive frames -> word logits.

    Input [B, adv_frames, ch(64), H/4, W/4]. Each frame: conv 3x3 s2 to one channel at H/8, ReLU,
    flatten, Linear -> ch(128). The frames' features are concatenated, then Dropout 0.5 and
    Linear -> num_words. Output [B, num_words].
    """

    def __init__(self, cfg: DavsConfig):
        super().__init__()
        self.frames = cfg.adv_frames
        self.conv = nn.Conv2d(cfg.ch(64), 1, 3, stride=2, padding=1)
        nn.init.normal_(self.conv.weight, 0.0, 0.02)  # the original's weights_init
        nn.init.zeros_(self.conv.bias)
        self.fc = nn.Linear((cfg.image_size // 8) ** 2, cfg.ch(128))
        self.dropout = nn.Dropout(0.5)
        self.out = _near_zero_(nn.Linear(cfg.adv_frames * cfg.ch(128), cfg.num_words))

    def forward(self, net1: torch.Tensor) -> torch.Tensor:
        B, A, C, h, w = net1.shape
        if self.frames != A:
            raise ValueError(
                f"PidWordAdversary reads adv_frames = {self.frames} frames per clip, got {A}"
            )
        x = torch.relu(self.conv(net1.reshape(B * A, C, h, w)))  # [B*A, 1, h/2, w/2]
        x = self.fc(x.flatten(1))  # [B*A, (h/2)(w/2)] -> [B*A, ch(128)]
        x = x.view(B, -1)  # [B, A * ch(128)], frame-major concatenation
        return self.out(self.dropout(x))  # [B, num_words]


class WidPersonAdversary(nn.Sequential):
    """C_w^p, per frame: word-ID vectors [..., word_dim] -> identity logits [..., num_identities].

    Linear, ReLU, Dropout 0.5, Linear. Not in the released code; the output layer's init mirrors
    C_p^w's because the same 1e6-weighted uniform-target loss reads it.
    """

    def __init__(self, cfg: DavsConfig):
        super().__init__(
            nn.Linear(cfg.word_dim, cfg.word_dim),
            nn.ReLU(inplace=True),
            nn.Dropout(0.5),
            _near_zero_(nn.Linear(cfg.word_dim, cfg.num_identities)),
        )


class IdentityClassifier(nn.Sequential):
    """pid vectors [N, pid_dim] -> identity logits [N, num_identities] (original `Face_ID_fc`)."""

    def __init__(self, cfg: DavsConfig):
        super().__init__(nn.Dropout(0.5), nn.Linear(cfg.pid_dim, cfg.num_identities))
