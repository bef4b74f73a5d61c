"""Audio word-ID encoder E_w^a (spec/davs.md §1.3): one 20x12 MFCC window -> one word-ID vector.

Each video frame has a window of F=20 MFCC steps (0.2 s) x K=12 coefficients. Two branches read
it: branch A, a 2-D conv stack (`MfccConvBranch`), and branch B, `TemporalConvBranch`, 1-D
convolutions along the 20 steps (the only temporal convolution in DAVS). Their outputs are
concatenated and projected into the word-ID space shared with the video encoder. With the `paper`
preset (width 1.0) this is the original `mfcc_encoder_two`; other presets scale the channels with
`cfg.ch`. Weights use PyTorch's default init, as the original.
"""

from __future__ import annotations

import torch
from torch import nn

from fastdavs.config import DavsConfig
from fastdavs.model.layers import MfccConvBranch, TemporalConv1d, conv_bn_act


class TemporalConvBranch(nn.Sequential):
    """Branch B: [N, K, F] = [N, 12, 20] (coefficients as channels) -> [N, widths[-1]].

    The original convolves a [N, 1, 20, 12] window with a (3 x 12) kernel, then (3 x 1) kernels:
    with the 12 coefficients as input channels those are exactly conv1d layers over the 20 steps.
    Its first BatchNorm, a BatchNorm1d applied to a 4-D tensor, fails on PyTorch >= 0.4 (original
    issues #21, #59); here every tensor is 3-D, so BatchNorm1d is right by construction.
    The original's "MaxPool2d(1, 3)" and "MaxPool2d(1, 2)" have kernel 1: they keep every 3rd and
    every 2nd step. They come after BatchNorm, whose training statistics span all steps, so the
    stride cannot move into the preceding conv in training. In eval mode on the Triton path it
    does: BatchNorm folds into the conv, and each conv -> BN -> LeakyReLU -> subsample group runs
    as one strided `temporal_conv` launch (a third of the first conv's work).
    """

    def __init__(self, in_channels: int, widths: tuple[int, int, int]):
        c1, c2, c3 = widths
        super().__init__(
            TemporalConv1d(in_channels, c1, 3, bias=False),  # F: 20 -> 18
            nn.BatchNorm1d(c1),
            nn.LeakyReLU(0.2),
            nn.MaxPool1d(1, stride=3),  # -> 6
            TemporalConv1d(c1, c2, 3, padding=1, bias=False),  # -> 6
            nn.BatchNorm1d(c2),
            nn.LeakyReLU(0.2),
            nn.MaxPool1d(1, stride=2),  # -> 3
            TemporalConv1d(c2, c3, 3, bias=False),  # -> 1
            nn.Flatten(1),  # [N, c3, 1] -> [N, c3]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, K, F] -> [N, c3]
        conv1, bn1, act1, pool1, conv2, bn2, act2, pool2, conv3, flatten = self
        if not (conv1.fuses(x, bn1) and conv2.fuses(x, bn2)):
            return super().forward(x)
        x = conv_bn_act(x, conv1, bn1, act1, subsample=pool1.stride)  # [N, c1, 6]
        x = conv_bn_act(x, conv2, bn2, act2, subsample=pool2.stride)  # [N, c2, 3]
        return flatten(conv3(x))


class AudioWordEncoder(nn.Module):
    """E_w^a: MFCC windows [N, F, K] = [N, 20, 12] -> word-ID vectors [N, word_dim]."""

    def __init__(self, cfg: DavsConfig):
        super().__init__()
        ch = cfg.ch
        self.branch_a = MfccConvBranch(1, (ch(64), ch(128), ch(256), ch(512)), final_norm=False)
        self.branch_b = TemporalConvBranch(cfg.mfcc_coeffs, (ch(64), ch(256), ch(512)))
        self.fc = nn.Linear(2 * ch(512), cfg.word_dim)

    def forward(self, mfcc: torch.Tensor) -> torch.Tensor:
        a = self.branch_a(mfcc.unsqueeze(1))  # [N, 1, F, K] -> [N, ch(512)]
        b = self.branch_b(mfcc.transpose(1, 2))  # [N, K, F] -> [N, ch(512)]
        return self.fc(torch.cat((a, b), 1))  # [N, 2 ch(512)] -> [N, word_dim]
