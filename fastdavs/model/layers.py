"""Building blocks shared by more than one DAVS module.

`MfccConvBranch` is the 2-D convolution stack over one 20x12 MFCC window: branch A of the audio
word encoder (spec/davs.md §1.3) and the MFCC side of the discriminator's audio-sync head (§1.8).
`TemporalConv1d` is the conv1d of the temporal stacks (audio branch B, the `tcn` word head),
computed by the fused `fastdavs.kernels.temporal_conv`; `conv_bn_act` fuses a whole
conv -> BatchNorm -> activation group into one kernel launch in eval mode. Which implementation
runs them is chosen at run time, not saved with the architecture: `use_kernel_backend`.
"""

from __future__ import annotations

import torch
from torch import nn

from fastdavs.config import ConfigError
from fastdavs.kernels import BACKENDS, fold_batchnorm, temporal_conv, temporal_conv_backend


class TemporalConv1d(nn.Conv1d):
    """nn.Conv1d (same parameters and state_dict keys, zero padding) run by `temporal_conv`.

    `backend`: "auto" (Triton on CUDA, the PyTorch reference elsewhere), "triton" or "ref".
    """

    def __init__(self, *args, backend: str = "auto", **kwargs):
        super().__init__(*args, **kwargs)
        if self.padding_mode != "zeros" or isinstance(self.padding, str):
            raise ValueError("TemporalConv1d supports integer zero padding only")
        self.backend = backend

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C_in, T] -> [B, C_out, T_out]
        return temporal_conv(
            x, self.weight, self.bias, stride=self.stride[0], padding=self.padding[0],
            dilation=self.dilation[0], groups=self.groups, backend=self.backend,
        )  # fmt: skip

    def fuses(self, x: torch.Tensor, bn: nn.BatchNorm1d) -> bool:
        """Whether `conv_bn_act` fuses this conv with `bn` for input `x`: BatchNorm in eval mode
        (folded into the weights) and the Triton path (the reference keeps the modules apart)."""
        return not bn.training and temporal_conv_backend(self.backend, x) == "triton"


def use_kernel_backend(module: nn.Module, backend: str) -> nn.Module:
    """Run every `TemporalConv1d` inside `module` with `backend`: "auto" (the fused Triton
    kernel on CUDA, the PyTorch reference elsewhere), "triton" or "ref". Returns `module`.

    Raises:
        ConfigError: an unknown backend."""
    if backend not in BACKENDS:
        raise ConfigError(f"kernel_backend={backend!r}: choose one of {', '.join(BACKENDS)}")
    for m in module.modules():
        if isinstance(m, TemporalConv1d):
            m.backend = backend
    return module


def conv_bn_act(
    x: torch.Tensor,  # [B, C_in, T]
    conv: TemporalConv1d,
    bn: nn.BatchNorm1d,
    act: nn.ReLU | nn.LeakyReLU,
    subsample: int = 1,
) -> torch.Tensor:  # [B, C_out, T_out // subsample (rounded up)]
    """act(bn(conv(x)))[..., ::subsample] in one launch, for an eval-mode `bn` (`conv.fuses`).

    BatchNorm folds into the weights; the activation is pointwise, so keeping every `subsample`-th
    step (a MaxPool1d with kernel 1) is the same as multiplying the conv's stride by it.
    """
    weight, bias = fold_batchnorm(conv.weight, conv.bias, bn)
    leaky = isinstance(act, nn.LeakyReLU)
    return temporal_conv(
        x, weight, bias, stride=conv.stride[0] * subsample, padding=conv.padding[0],
        dilation=conv.dilation[0], groups=conv.groups,
        activation="leaky_relu" if leaky else "relu",
        negative_slope=act.negative_slope if leaky else 0.0, backend=conv.backend,
    )  # fmt: skip


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
