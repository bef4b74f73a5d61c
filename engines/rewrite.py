"""Export-time graph rewrites: the model as the engines' graphs should see it, computing the same
function with fewer and cheaper ops. `for_export` returns a rewritten copy of the float32 eval
model; `fastdavs-build-engine` exports that copy, and its parity check compares the engine with
the model as trained, so every rewrite is proven on every build (and in tests/test_engines.py,
one by one).

- BatchNorm folded: each eval-mode BatchNorm that follows a convolution (Conv1d, Conv2d,
  ConvTranspose2d; in an nn.Sequential, or an identity encoder block's conv_a/bn_a and
  conv_b/bn_b pairs) becomes a per-channel scale of its weights and a bias
  (`fastdavs.kernels.fold_batchnorm`), and the BatchNorm an nn.Identity. The exported graphs have
  no BatchNormalization node, whatever fusions a backend would or would not have found.
- Stride-1 "same" ConvTranspose2d as Conv2d: with stride 1, groups 1, no dilation or output
  padding, a transposed convolution is the convolution with its weight's in/out axes swapped and
  its kernel flipped, padding k - 1 - p. The generator's head uses two (3x3, padding 1: the
  original's layers, kept so that its weights load as they are), at full resolution; ONNX
  Runtime's ConvTranspose kernels are slower than its Conv kernels, and int8 quantisers handle
  Conv better. Only kernels with padding (k - 1) / 2 are rewritten (output size = input size):
  the davs decoder's stem (4x4 on a 1x1 input, padding 0) would become a 4x4 convolution over a
  7x7 map of mostly padding, 16x the work.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from fastdavs.kernels import fold_batchnorm
from fastdavs.model.identity_encoder import MfmBlock

CONVS = (nn.Conv1d, nn.Conv2d, nn.ConvTranspose2d)
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


def for_export(model: nn.Module) -> nn.Module:
    """A rewritten copy of an eval-mode model (the argument is left as it is)."""
    if model.training:
        raise ValueError("for_export: call model.eval() first (BatchNorm folds in eval mode only)")
    model = copy.deepcopy(model)
    with torch.no_grad():
        convert_transposed_convs(model)
        fold_batchnorms(model)
    return model


def conv_bn_pairs(model: nn.Module) -> list[tuple[nn.Module, str, nn.Module, str]]:
    """(parent of the conv, its name, parent of the BatchNorm, its name) for every BatchNorm
    that directly follows a convolution of matching width."""
    pairs = []
    for parent in model.modules():
        if isinstance(parent, nn.Sequential):
            names = list(parent._modules)
            for a, b in zip(names, names[1:], strict=False):
                pairs.append((parent, a, parent, b))
        elif isinstance(parent, MfmBlock):
            pairs += [(parent, "conv_a", parent, "bn_a"), (parent, "conv_b", parent, "bn_b")]
    return [
        p
        for p in pairs
        if isinstance(getattr(p[0], p[1]), CONVS)
        and isinstance(getattr(p[2], p[3]), NORMS)
        and getattr(p[2], p[3]).track_running_stats
    ]


def fold_batchnorms(model: nn.Module) -> int:
    """Fold every BatchNorm of `conv_bn_pairs` into its convolution, in place; returns how many."""
    pairs = conv_bn_pairs(model)
    for conv_parent, conv_name, bn_parent, bn_name in pairs:
        conv, bn = getattr(conv_parent, conv_name), getattr(bn_parent, bn_name)
        transposed = isinstance(conv, nn.ConvTranspose2d)
        if transposed and conv.groups != 1:
            continue  # its weight's axis 1 is C_out / groups: not one scale per output channel
        weight = conv.weight.transpose(0, 1) if transposed else conv.weight  # [C_out, C_in, ...]
        weight, bias = fold_batchnorm(weight, conv.bias, bn)
        conv.weight = nn.Parameter(weight.transpose(0, 1) if transposed else weight)
        conv.bias = nn.Parameter(bias)
        setattr(bn_parent, bn_name, nn.Identity())
    return len(pairs)


def transposed_as_conv(convt: nn.ConvTranspose2d) -> nn.Conv2d | None:
    """The Conv2d that computes `convt` where it is a stride-1 "same" transposed convolution
    (see the module docstring), else None."""
    k = convt.kernel_size
    if not (
        convt.stride == (1, 1)
        and convt.groups == 1
        and convt.dilation == (1, 1)
        and convt.output_padding == (0, 0)
        and convt.padding_mode == "zeros"
        and all(2 * p == kk - 1 for p, kk in zip(convt.padding, k, strict=True))
    ):
        return None
    conv = nn.Conv2d(
        convt.in_channels, convt.out_channels, k, padding=convt.padding,
        bias=convt.bias is not None,
    )  # fmt: skip
    # ConvTranspose2d weight [C_in, C_out, kh, kw] -> Conv2d weight [C_out, C_in, kh, kw], flipped
    conv.weight = nn.Parameter(convt.weight.transpose(0, 1).flip(2, 3).contiguous())
    if convt.bias is not None:
        conv.bias = nn.Parameter(convt.bias.detach().clone())
    return conv.to(convt.weight.device, convt.weight.dtype)


def convert_transposed_convs(model: nn.Module) -> int:
    """Replace, in place, every ConvTranspose2d that `transposed_as_conv` converts; returns how
    many."""
    done = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.ConvTranspose2d) and (conv := transposed_as_conv(child)):
                setattr(parent, name, conv)
                done += 1
    return done
