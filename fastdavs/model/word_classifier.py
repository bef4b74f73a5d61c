"""Shared word classifier C_w (spec/davs.md §1.4): per-frame word-ID vectors -> word logits.

One classifier reads the word-ID sequences of both the audio and the video encoder; training it
on both with one cross-entropy each pulls the two modalities into one word-ID space. It outputs
logits (losses use cross-entropy on logits; lip-reading fusion sums audio and video logits).

Two heads, chosen by `cfg.word_head`:
- `concat`, the original `ModelFusion`: the seq_len frames are concatenated and go through an MLP.
  There is no temporal modelling across frames besides the concatenation, and T must be seq_len.
- `tcn`: `TemporalConvStack` over the frames, a mean over time, then a linear layer. It takes any
  T >= 1.
"""

from __future__ import annotations

import torch
from torch import nn

from fastdavs.config import DavsConfig
from fastdavs.model.layers import TemporalConv1d, conv_bn_act


class TemporalConvStack(nn.Sequential):
    """[B, C_in, T] -> [B, C, T]: two 3-tap convolutions over frames, dilation 1 then 2, each with
    BatchNorm and ReLU; receptive field 7 frames, zero padding keeps T.

    Convolutions are bias-free because BatchNorm follows. The convolutions run through
    `temporal_conv`; in training BatchNorm needs the batch statistics of the whole conv output, so
    only the conv is a kernel. In eval mode on the Triton path each conv -> BN -> ReLU is one
    launch (BN folded into the weights, bias and ReLU in the kernel's epilogue).
    """

    def __init__(self, in_channels: int, channels: int):
        super().__init__(
            TemporalConv1d(in_channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm1d(channels),
            nn.ReLU(inplace=True),
            TemporalConv1d(channels, channels, 3, padding=2, dilation=2, bias=False),
            nn.BatchNorm1d(channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C_in, T] -> [B, C, T]
        conv1, bn1, act1, conv2, bn2, act2 = self
        if not (conv1.fuses(x, bn1) and conv2.fuses(x, bn2)):
            return super().forward(x)
        return conv_bn_act(conv_bn_act(x, conv1, bn1, act1), conv2, bn2, act2)


class WordClassifier(nn.Module):
    """C_w: word-ID sequences [B, T, word_dim] -> word logits [B, num_words]."""

    def __init__(self, cfg: DavsConfig):
        super().__init__()
        self.head = cfg.word_head
        self.seq_len = cfg.seq_len
        hidden = cfg.ch(512)
        if self.head == "concat":
            self.fc1 = nn.Linear(cfg.seq_len * cfg.word_dim, hidden)
            # As the original (unless resumed): a near-zero first layer, so training starts from
            # logits equal to the output bias.
            nn.init.normal_(self.fc1.weight, 0.0, 1e-4)
            nn.init.zeros_(self.fc1.bias)
        else:
            self.tcn = TemporalConvStack(cfg.word_dim, hidden)
        self.fc2 = nn.Linear(hidden, cfg.num_words)

    def forward(self, wid: torch.Tensor) -> torch.Tensor:  # [B, T, word_dim] -> [B, num_words]
        B, T, D = wid.shape
        if self.head == "concat":
            if self.seq_len != T:
                raise ValueError(
                    f"the concat word head needs T = seq_len = {self.seq_len} frames, got T = {T}; "
                    "pass that many frames or use word_head='tcn', which takes any T"
                )
            x = torch.relu(self.fc1(wid.reshape(B, T * D)))  # frame-major [B, T*D] -> [B, hidden]
        else:
            x = self.tcn(wid.transpose(1, 2)).mean(2)  # [B, D, T] -> [B, hidden, T] -> [B, hidden]
        return self.fc2(x)  # [B, num_words]
