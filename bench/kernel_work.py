"""Analytic bytes and FLOPs of the fused kernels and of the unfused reference chains they
replace, for `bench/kernels.py` (its roofline table and the GB/s and GFLOP/s of its timings).

The model, stated once: every kernel (fused path) or PyTorch op (reference chain) reads each of
its operands once and writes each result once, so every intermediate of a reference chain is
written and re-read; a broadcast operand counts at its stored size; tiles a kernel re-reads are
assumed to hit in cache (L2), except the contrastive backward's float32 accumulator, which the
kernel reads and writes back once per column block (`ContrastiveBlocks.n` rows) by design.
FLOPs count multiply and add separately; the fused MFCC kernel is counted at its padded tile
sizes (what a GPU executes), the reference's real FFT at the usual 2.5 N log2 N.
Element size is 4 bytes (float32, as the benchmark runs). The roofline time of a cost is
max(bytes / bandwidth, FLOPs / peak) with the H100 SXM figures of DESIGN.md (3.35 TB/s and
990 TFLOP/s, the bf16 dense tensor-core rate). float32 runs slower: the conv kernel's float32
dots use TF32 tensor cores (495 TFLOP/s dense), the MFCC and contrastive kernels' use IEEE
float32 (CUDA cores, 67 TFLOP/s; NVIDIA's H100 SXM datasheet), which `Work.fp32_peak` holds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from triton import cdiv

from fastdavs.kernels import ContrastiveBlocks, MfccBlocks
from fastdavs.kernels.mfcc import (
    HOP,
    K_PAD,
    MEL_PAD,
    N_COEFFS,
    N_MELS,
    NFFT,
    SEG,
    WIN,
    _fused_matrices,
)
from fastdavs.kernels.temporal_conv import _DW_TILE, out_len

E = 4  # bytes per float32 element
H100_BW = 3.35e12  # bytes/s (DESIGN.md)
H100_FLOPS = 990e12  # FLOP/s, bf16 dense (DESIGN.md)
H100_TF32 = 495e12  # FLOP/s, TF32 tensor cores, dense (datasheet)
H100_FP32 = 67e12  # FLOP/s, IEEE float32 on CUDA cores (datasheet)
H100_SMS = 132  # multiprocessors of an H100 SXM: sizes the conv dw row splits
BINS = NFFT // 2 + 1  # 257 rfft bins
RFFT_FLOPS = 2.5 * NFFT * math.log2(NFFT)  # one real 512-point FFT


@dataclass(frozen=True)
class Cost:
    bytes: float
    flops: float

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.bytes + other.bytes, self.flops + other.flops)

    def roofline_s(self, flops_peak: float = H100_FLOPS) -> float:
        return max(self.bytes / H100_BW, self.flops / flops_peak)


def _chain(*ops: tuple[float, float, float]) -> Cost:
    """Sum of (bytes read, bytes written, FLOPs) over the ops of a chain."""
    return Cost(sum(r + w for r, w, _ in ops), sum(f for _, _, f in ops))


@dataclass(frozen=True)
class Work:
    """One case: the fused kernel(s), the reference chain, the reference's peak extra memory
    (the memory guard of `bench/kernels.py`) and the H100's FLOP/s at the fused kernel's
    float32 dot precision."""

    fused: Cost
    ref: Cost
    ref_peak_bytes: float
    fp32_peak: float = H100_FP32


def conv_work(
    b: int,
    c_in: int,
    t: int,
    c_out: int,
    k: int,
    stride: int = 1,
    padding: int = 0,
    dilation: int = 1,
    bias: bool = False,
    activation: str | None = None,
    grad: bool = False,
) -> Work:
    """`temporal_conv` (groups 1, no residual: the model's uses) on x [b, c_in, t].

    Forward: the fused epilogue (bias, activation) against conv1d -> activation. Forward +
    backward (grad): the training form, a bare conv (BatchNorm follows it), whose reference is
    conv1d and one convolution_backward; the fused path runs a forward, a dx and a dw kernel,
    and dw goes through float32 per-split partials summed on the host.
    """
    t_out = out_len(t, k, stride, padding, dilation)
    n_x, n_w, n_y = b * c_in * t, c_out * c_in * k, b * c_out * t_out
    conv = 2.0 * n_y * c_in * k
    if not grad:
        epilogue = n_y * (bias + (activation is not None))
        fused = Cost(E * (n_x + n_w + bias * c_out + n_y), conv + epilogue)
        ref = _chain(
            (E * (n_x + n_w + bias * c_out), E * n_y, conv + bias * n_y),
            *([(E * n_y, E * n_y, n_y)] if activation else []),
        )
        return Work(fused, ref, ref.bytes, H100_TF32)
    if bias or activation:
        raise ValueError("the fwd+bwd model is the training form: no bias, no activation")
    # as temporal_conv._row_splits on a GPU with H100_SMS multiprocessors
    block_n, block_r, block_m = _DW_TILE[:3]
    r, m = c_in * k, b * t_out
    tiles = cdiv(c_out, block_n) * cdiv(r, block_r)
    splits = max(1, min(cdiv(m, block_m), cdiv(4 * H100_SMS, tiles)))
    partials = 4 * splits * c_out * r
    fused = _chain(
        (E * (n_x + n_w), E * n_y, conv),  # forward
        (E * (n_y + n_w), E * n_x, conv),  # dx
        (E * (n_x + n_y), partials, conv),  # dw partials
        (partials, E * n_w, splits * n_w),  # host sum of the partials
    )
    ref = _chain(
        (E * (n_x + n_w), E * n_y, conv),
        (E * (n_y + n_x + n_w), E * (n_x + n_w), 2 * conv),
    )
    return Work(fused, ref, ref.bytes, H100_TF32)


def mfcc_work(b: int, samples: int) -> Work:
    """MFCC of b clips of `samples` float32 samples: the fused kernel (with its gain reduction)
    against the steps of `fastdavs.data.audio.mfcc` (float64 after the FFT)."""
    f = (samples - WIN) // HOP + 1
    n = b * f  # frames
    bs = b * samples
    blocks = MfccBlocks()
    nb = _fused_matrices(torch.float32, torch.device("cpu"))[0].shape[2]  # bins computed
    rows = cdiv(f, blocks.f) * blocks.f
    seg, nbp = cdiv(SEG, blocks.s) * blocks.s, cdiv(nb, blocks.bins) * blocks.bins
    per_row = 4 * seg * nbp + 4 * nbp + 2 * nbp * MEL_PAD + 3 * MEL_PAD + 2 * MEL_PAD * K_PAD
    constants = E * (2 * SEG * nb + nb * MEL_PAD + MEL_PAD * K_PAD)
    fused = _chain(
        (E * bs, E * b, 2 * bs),  # int16_gain: |x|, peak
        (E * bs + E * b + constants, E * n * N_COEFFS, b * rows * per_row),
    )
    m = N_MELS
    ref = _chain(
        (E * bs, E * bs, bs),  # int16_gain: abs
        (E * bs, E * b, bs),  # amax
        (E * bs + E * b, E * bs, bs),  # x * gain
        (E * bs, E * bs, bs),  # 0.97 x[n - 1]
        (2 * E * bs, E * bs, bs),  # subtraction
        (E * bs, E * bs, 0),  # cat with x[0]
        (E * n * WIN, E * n * WIN, n * WIN),  # frames * window
        (E * n * WIN, 2 * E * n * BINS, n * RFFT_FLOPS),  # rfft, complex64
        (2 * E * n * BINS, E * n * BINS, 4 * n * BINS),  # abs
        (E * n * BINS, 8 * n * BINS, 0),  # to float64
        (8 * n * BINS + 8 * BINS * m, 8 * n * m, 2 * n * BINS * m),  # filter bank
        (8 * n * m, 8 * n * m, n * m),  # clamp
        (8 * n * m, 8 * n * m, n * m),  # log
        (8 * n * (m + 1), 8 * n * m, n * m),  # minus the first log energy
        (
            8 * n * m + 8 * m * N_COEFFS,
            8 * n * N_COEFFS,
            2 * n * m * N_COEFFS,
        ),  # DCT
        (8 * n * N_COEFFS, E * n * N_COEFFS, 0),  # to float32
    )
    return Work(fused, ref, ref.bytes)


def contrastive_work(b: int, d: int, grad: bool = False) -> Work:
    """Contrastive loss of [b, d] audio and video embeddings: the tiled kernels against
    `fastdavs.model.losses.contrastive_loss`, which builds the [b, b, d] difference tensor.

    The reference's peak extra memory is 2 [b, b, d] tensors forward (the differences and their
    squares) and 4 with the backward (pow's backward temporaries), as measured with torch 2.13
    on CPU (the memory section of `bench/kernels.py` re-measures it).
    """
    blocks = ContrastiveBlocks()
    bd, bb, bbd = b * d, b * b, b * b * d
    fwd_fused = _chain(
        (2 * E * bd, 4 * 6 * b, 6 * bd),  # row statistics
        (2 * E * bd + 4 * 6 * b, 4 * cdiv(b, blocks.m), 2 * bbd + 12 * bb),  # negatives
    )
    normalize = (E * bd, E * b, 2 * bd), (E * (bd + b), E * bd, bd)  # norm, divide
    elementwise = [(E * bb, E * bb, bb)] * 7  # clamp, sqrt, m - d, clamp, pow, mask, sum
    fwd_ref = _chain(
        *normalize,
        *normalize,
        (2 * E * bd, E * bbd, bbd),  # v_i - a_j
        (E * bbd, E * bbd, bbd),  # pow 2
        (E * bbd, E * bb, bbd),  # sum over d
        *elementwise,
    )
    if not grad:
        return Work(fwd_fused, fwd_ref, 2 * E * bbd)
    passes = 2 * cdiv(b, blocks.n) - 1  # accumulator: written by the first column block,
    per_side = _chain(  # then read and written back by each later one
        (2 * E * bd + 4 * 12 * b, 4 * passes * bd, 4 * bbd + 15 * bb),
        (2 * E * bd + 4 * bd, E * bd, 8 * bd),  # epilogue: normalisation's Jacobian
    )
    bwd_ref = _chain(
        *[(2 * E * bb, E * bb, bb)] * 7,  # the [b, b] chain's backward
        (E * (bbd + bb), E * bbd, 2 * bbd),  # pow backward
        (E * bbd, E * bd, bbd),  # sub backward, video: sum over j
        (E * bbd, E * bd, bbd),  # sub backward, audio: -sum over i
        *[(3 * E * bd, E * bd, 5 * bd)] * 2,  # normalize backward
    )
    return Work(fwd_fused + per_side + per_side, fwd_ref + bwd_ref, 4 * E * bbd)
