"""Person-ID encoder E_p^v (spec/davs.md §1.1): a face image -> pid vector + multi-scale features.

LightCNN-style Max-Feature-Map network. Its pid vector goes to the generator together with a
word-ID vector, `net2` is the generator's skip input, and `net1` feeds the pid -> word adversary.
With the `paper` preset (256 px, width 1.0) the layer list is that of the original
`network/IdentityEncoder.py`; other presets scale the channels with `cfg.ch` and the spatial sizes
with `cfg.image_size`.
"""

from __future__ import annotations

import typing
from itertools import pairwise

import torch
from torch import nn

from fastdavs.config import DavsConfig


class IdentityFeatures(typing.NamedTuple):
    """Outputs of `IdentityEncoder`, in the original's order; S = image_size."""

    vec: torch.Tensor  # [N, pid_dim]            the pid vector
    net4: torch.Tensor  # [N, pid_dim, S/32, S/32]
    net3: torch.Tensor  # [N, ch(320), S/16, S/16]
    net2: torch.Tensor  # [N, ch(160), S/8, S/8]  generator skip
    net1: torch.Tensor  # [N, ch(64), S/4, S/4]   pid -> word adversary input


class MfmBlock(nn.Module):
    """Max-Feature-Map block: max(BN(conv_a(x)), BN(conv_b(x))); the max is the only nonlinearity.

    The convolutions are bias-free: the BatchNorm right after each one subtracts any constant, so a
    bias would be a dead parameter (an original checkpoint's bias folds into `running_mean`).
    Weights are N(0, 1/fan_out) with fan_out = k*k*out_channels; this reproduces the original's
    hand-written per-block stds (0.025 for block 01 ... 0.0186 for blocks 31-34) and keeps them
    right when `width` changes the channel counts. (Blocks 41-42 used the 3x3 value, 0.0208, for
    their 5x5 kernels; 1/80 = 0.0125 is what the rule gives. BatchNorm follows, so the scale only
    matters at the first step.)
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1):
        super().__init__()
        padding = kernel_size // 2
        self.conv_a = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=False)
        self.conv_b = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=False)
        self.bn_a = nn.BatchNorm2d(out_channels)
        self.bn_b = nn.BatchNorm2d(out_channels)
        for conv in (self.conv_a, self.conv_b):
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="linear")

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, C_in, H, W] -> [N, C_out, H/s, W/s]
        return torch.maximum(self.bn_a(self.conv_a(x)), self.bn_b(self.conv_b(x)))


def _stage(widths: list[int], kernel_size: int = 3) -> nn.Sequential:
    """Consecutive MfmBlocks widths[0] -> widths[1] -> ... at one resolution."""
    return nn.Sequential(*(MfmBlock(cin, cout, kernel_size) for cin, cout in pairwise(widths)))


class IdentityEncoder(nn.Module):
    """E_p^v: images [N, 3, S, S] in [0, 1] -> IdentityFeatures (see there for shapes)."""

    def __init__(self, cfg: DavsConfig):
        super().__init__()
        ch = cfg.ch
        self.block01 = MfmBlock(3, ch(32), kernel_size=7, stride=2)
        self.stage1 = _stage([ch(32), ch(32), ch(32), ch(64), ch(64)])  # blocks 11-14
        self.stage2 = _stage([ch(64), ch(96), ch(96), ch(128), ch(128), ch(160), ch(160)])  # 21-26
        self.stage3 = _stage([ch(160), ch(320), ch(320), ch(320), ch(320)])  # blocks 31-34
        # Blocks 41-42 (5x5). The original's last width, 256, is the pid vector's size.
        self.stage4 = _stage([ch(320), ch(256), cfg.pid_dim], kernel_size=5)
        self.pool = nn.MaxPool2d(2)
        # The original's AvgPool2d(8) over an 8x8 map; a global mean works at every image_size.
        self.avgpool = nn.AdaptiveAvgPool2d(1)

    def net1(self, images: torch.Tensor) -> torch.Tensor:
        """Only the first stage: [N, 3, S, S] -> net1 [N, ch(64), S/4, S/4], what the
        pid -> word adversary reads (a sixth of the encoder's FLOPs)."""
        return self.stage1(self.pool(self.block01(images)))

    def forward(self, images: torch.Tensor) -> IdentityFeatures:
        net1 = self.net1(images)  # [N, ch(64), S/4, S/4]
        net2 = self.stage2(self.pool(net1))  # [N, ch(160), S/8, S/8]
        net3 = self.stage3(self.pool(net2))  # [N, ch(320), S/16, S/16]
        net4 = self.stage4(self.pool(net3))  # [N, pid_dim, S/32, S/32]
        vec = self.avgpool(net4).flatten(1)  # [N, pid_dim, 1, 1] -> [N, pid_dim]
        return IdentityFeatures(vec, net4, net3, net2, net1)
