"""Building blocks shared by more than one DAVS module.

`MfccConvBranch` is the 2-D convolution stack over one 20x12 MFCC window: branch A of the audio
word encoder (spec/davs.md §1.3) and the MFCC side of the discriminator's audio-sync head (§1.8).
"""

from __future__ import annotations

import torch
from torch import nn


class MfccConvBranch(nn.Sequential):
    """[N, C_in, 20, 12] MFCC windows -> [N, widths[-1]] via 7x7 -> 4x4 -> 2x2 -> 1x1 maps.

    Convolutions are bias-free and followed by BatchNorm + LeakyReLU(0.2), except the last,
    which has BatchNorm only when `final_norm` (the discriminator) and nothing otherwise
    (the audio encoder). The original discriminator's branch has no activations at all, which
    makes its four convolutions one affine map; fastdavs gives both uses the audio encoder's
    LeakyReLUs.
    """

    def __init__(self, in_channels: int, widths: tuple[int, int, int, int], final_norm: bool):
        c1, c2, c3, c4 = widths
        layers: list[nn.Module] = [
            # 20x12 -> 7x7
            nn.Conv2d(in_channels, c1, 3, stride=(3, 2), padding=(1, 2), bias=False),
            nn.BatchNorm2d(c1),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(c1, c2, 3, stride=2, padding=1, bias=False),  # -> 4x4
            nn.BatchNorm2d(c2),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(c2, c3, 3, bias=False),  # -> 2x2
            nn.BatchNorm2d(c3),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(c3, c4, 2, bias=False),  # -> 1x1
        ]
        if final_norm:
            layers.append(nn.BatchNorm2d(c4))
        layers.append(nn.Flatten(1))
        super().__init__(*layers)

    def forward(self, mfcc: torch.Tensor) -> torch.Tensor:  # [N, C_in, 20, 12] -> [N, c4]
        return super().forward(mfcc)
