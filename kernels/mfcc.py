"""Fused MFCC front end of the DAVS recipe (spec/davs.md §3.3, DESIGN.md "MFCC recipe").

Where it sits: 16 kHz waveforms -> 12 cepstra at 100 steps/s, the input of the audio word
encoder (`fastdavs.data.audio.mfcc` checks the input and calls `mfcc` here, then
`mfcc_windows` cuts the windows). The recipe's constants and matrices and `mfcc_ref`, the
definition and reference (rfft and float64 products), live here beside the kernel.

One program computes BLOCK_F consecutive MFCC steps of one waveform, start to end on chip:
    seg_f[m]  = x[160 f - 1 + m],  m = 0 .. 400            (x[-1] = 0: y[0] = x[0])
    X_f[k]    = |seg_f @ (C + i S)[:, k]|                   DFT as two matrix products
    E_f       = g * (X_f @ M)                               g = 32768 or 1 per row (int16 gain)
    l_f       = log(max(E_f, 1e-10)),  c_f = (l_f - l_f[0]) @ L    L: lifted DCT-II rows 1..12
where C and S fold the pre-emphasis (y[n] = x[n] - 0.97 x[n-1]), the symmetric Hamming window
and the zero padding to 512 into one [401, bins] basis:
    C[m, k] = w[m-1] cos(2 pi k (m-1) / 512) - 0.97 w[m] cos(2 pi k m / 512)   (w = 0 outside
0..399), likewise S with sin. Only the bins where the 13 HTK filters (300-3700 Hz) are non-zero
are computed (10..118, 109 of 257): the others are multiplied by zero in the reference. The
matrices come from `recipe_matrices` (float64), cut and cast here once per
dtype and device. Subtracting l_f[0] changes nothing mathematically (DCT rows 1.. sum to
zero) and gives digital silence exact zeros, as the reference does.

Tiles: the DFT reduces the 401 segment samples in BLOCK_S steps (tl.dot K-tile; >= 16) over
BLOCK_BIN bins; the filter bank is a [BLOCK_F, BLOCK_BIN] @ [BLOCK_BIN, 16] dot per bin tile,
and the DCT one [BLOCK_F, 16] @ [16, 16] dot, all accumulated in float32. float32 audio uses
IEEE float32 dots (TF32's 10-bit mantissa would not hold the recipe's 1e-4); float16/bfloat16
audio uses a basis of the same dtype and 16-bit tensor-core dots (much less accurate: see the
tests' tolerances), the filter bank, log and DCT staying float32. Under the Triton
interpreter bfloat16 tiles are widened to float32 (its bfloat16 dot is wrong). Forward only:
the reference differentiates, and ``backend="auto"`` uses it whenever a gradient is needed.

The per-row gain needs the row's peak before any step can use it, so the launcher computes it
with one torch reduction over the waveform (`int16_gain`); everything after
reads the waveform once per step tile (each sample is in 2.5 overlapping frames; the overlap is
served from cache) and writes only the 12 cepstra. Work per MFCC step: 2 x 2 x 416 x 128
FLOPs for the DFT at the default tiles (the 401 x 109 basis padded to whole tiles), ~213 kFLOP.

Not measured here (no GPU on the development machine): speed against the rfft reference and
the tile defaults (`MfccBlocks`), which are conventional sizes, not tuned. Correctness is tested
on CPU with TRITON_INTERPRET=1.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from fastdavs.kernels.dispatch import KernelError, interpreted, resolve_backend

# ---- the recipe (spec/davs.md §3.3) ---------------------------------------------------------
SAMPLE_RATE = 16000  # Hz; the recipe is defined only at this rate
WIN = 400  # samples per analysis frame (25 ms)
HOP = 160  # samples between frames (10 ms -> 100 MFCC steps/s)
NFFT = 512  # each 400-sample frame is zero-padded at the end to this length
N_MELS = 13  # triangular filters, and cepstra before c0 is dropped
FMIN = 300.0  # Hz, lower edge of the first filter
FMAX = 3700.0  # Hz, upper edge of the last filter
LIFTER = 22  # sine lifter parameter L
PREEMPH = 0.97
N_COEFFS = 12  # K: c1..c12
# The original takes the log with no floor, so digital silence gives -inf. Filter-bank energies
# are clamped here first; the value is far below any real signal's energy (they are magnitudes of
# int16-range samples), so it only changes frames that are (nearly) digitally silent.
LOG_FLOOR = 1e-10


def hamming_symmetric(
    n: int = WIN, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
) -> torch.Tensor:
    """MATLAB's `hamming(n)`: 0.54 - 0.46 cos(2 pi k / (n - 1)), k = 0 .. n-1.

    This is the symmetric window; `torch.hamming_window(n)` defaults to the periodic one, which
    divides by n instead of n - 1.

    Args:
        n (int, optional): window length. (Default: ``WIN`` = 400)
        dtype (torch.dtype, optional): (Default: ``torch.float32``)
        device (torch.device, str or None, optional): (Default: CPU)

    Returns:
        Tensor: shape `(n,)`.
    """
    k = torch.arange(n, dtype=torch.float64, device=device)
    return (0.54 - 0.46 * torch.cos(2 * math.pi * k / (n - 1))).to(dtype)


def hz_to_mel(hz: torch.Tensor) -> torch.Tensor:
    """HTK mel scale: 1127 ln(1 + f / 700), elementwise."""
    return 1127 * torch.log1p(hz / 700)


def mel_to_hz(mel: torch.Tensor) -> torch.Tensor:
    """The inverse of `hz_to_mel`: 700 (exp(mel / 1127) - 1), elementwise."""
    return 700 * torch.expm1(mel / 1127)


def mel_edges(
    n_mels: int = N_MELS,
    fmin: float = FMIN,
    fmax: float = FMAX,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """The filter bank's `n_mels + 2` edges, equally spaced in mel between `fmin` and `fmax`:
    float64 mel, filter m rising from edge m, peaking at edge m + 1, falling to edge m + 2."""
    mel_lo, mel_hi = hz_to_mel(torch.tensor([fmin, fmax], dtype=torch.float64)).tolist()
    return torch.linspace(mel_lo, mel_hi, n_mels + 2, dtype=torch.float64, device=device)


def mel_filterbank(
    n_mels: int = N_MELS,
    n_fft: int = NFFT,
    sample_rate: int = SAMPLE_RATE,
    fmin: float = FMIN,
    fmax: float = FMAX,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Triangular HTK-mel filters on the rfft grid, unnormalised (Wojcicki's `trifbank`).

    Filter edges are `n_mels + 2` points equally spaced in mel = 1127 ln(1 + f / 700) between
    `fmin` and `fmax`; filter m rises linearly in Hz from edge m to 1 at edge m+1 and falls to 0
    at edge m+2. The bins are `linspace(0, sample_rate / 2, n_fft // 2 + 1)`. Equals
    `librosa.filters.mel(sr=16000, n_fft=512, n_mels=13, fmin=300, fmax=3700, htk=True, norm=None)`.

    Args:
        n_mels (int, optional): number of filters. (Default: ``N_MELS`` = 13)
        n_fft (int, optional): FFT size. (Default: ``NFFT`` = 512)
        sample_rate (int, optional): Hz. (Default: ``SAMPLE_RATE`` = 16000)
        fmin (float, optional): lower edge in Hz. (Default: ``FMIN`` = 300)
        fmax (float, optional): upper edge in Hz. (Default: ``FMAX`` = 3700)
        dtype (torch.dtype, optional): (Default: ``torch.float32``; built in float64)
        device (torch.device, str or None, optional): (Default: CPU)

    Returns:
        Tensor: shape `(n_mels, n_fft // 2 + 1)`.
    """
    freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64, device=device)
    edges = mel_to_hz(mel_edges(n_mels, fmin, fmax, device))  # [n_mels + 2] Hz
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]  # [n_mels, 1] each
    up = (freqs - lo) / (mid - lo)
    down = (hi - freqs) / (hi - mid)
    return torch.minimum(up, down).clamp_min(0).to(dtype)


def dct_matrix(
    n: int = N_MELS, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
) -> torch.Tensor:
    """Orthonormal DCT-II: D[k, m] = s_k cos(pi k (m + 1/2) / n), s_0 = sqrt(1/n), s_k = sqrt(2/n).

    Wojcicki's `dctm` uses sqrt(2/n) for row 0 too; c0 is dropped by the recipe, so only rows
    1 .. n-1 matter and they equal `scipy.fft.dct(x, type=2, norm="ortho")`.

    Args:
        n (int, optional): size. (Default: ``N_MELS`` = 13)
        dtype (torch.dtype, optional): (Default: ``torch.float32``; built in float64)
        device (torch.device, str or None, optional): (Default: CPU)

    Returns:
        Tensor: shape `(n, n)`, applied as ``D @ x`` to a length-n column.
    """
    k = torch.arange(n, dtype=torch.float64, device=device)[:, None]
    m = torch.arange(n, dtype=torch.float64, device=device)
    d = torch.cos(math.pi * k * (m + 0.5) / n) * math.sqrt(2 / n)
    d[0] /= math.sqrt(2)
    return d.to(dtype)


def sine_lifter(
    n: int = N_MELS,
    lifter: int = LIFTER,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """HTK sine lifter 1 + (L / 2) sin(pi k / L), k = 0 .. n-1 (Wojcicki's `ceplifter`).

    Args:
        n (int, optional): number of cepstra. (Default: ``N_MELS`` = 13)
        lifter (int, optional): L. (Default: ``LIFTER`` = 22)
        dtype (torch.dtype, optional): (Default: ``torch.float32``; built in float64)
        device (torch.device, str or None, optional): (Default: CPU)

    Returns:
        Tensor: shape `(n,)`.
    """
    k = torch.arange(n, dtype=torch.float64, device=device)
    return (1 + lifter / 2 * torch.sin(math.pi * k / lifter)).to(dtype)


@functools.cache
def recipe_matrices(
    dtype: torch.dtype, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Window [WIN] in `dtype`; float64 filter bank transposed [NFFT//2+1, N_MELS] and lifted DCT
    rows 1.. transposed [N_MELS, K].

    Cached per (dtype, device) so a call on CUDA does not rebuild or re-upload them.
    """
    window = hamming_symmetric(WIN, dtype, device)
    fbank_t = mel_filterbank(dtype=torch.float64, device=device).T.contiguous()
    lifter = sine_lifter(dtype=torch.float64, device=device)
    lifted = lifter[:, None] * dct_matrix(dtype=torch.float64, device=device)
    return window, fbank_t, lifted[1:].T.contiguous()


def waveform_problem(
    audio: torch.Tensor, dtypes: tuple[torch.dtype, ...] = (torch.float32, torch.float64)
) -> str | None:
    """Why `audio` is not a `(S,)` or `(B, S)` waveform of `dtypes` with S >= 400, or None."""
    if audio.dtype not in dtypes:
        names = " or ".join(str(d).removeprefix("torch.") for d in dtypes)
        return f"MFCC needs a {names} waveform, got {audio.dtype}"
    if audio.dim() not in (1, 2):
        return f"MFCC needs audio of shape [S] or [B, S], got {list(audio.shape)}"
    if audio.shape[-1] < WIN:
        return (
            f"MFCC needs at least {WIN} samples ({1000 * WIN // SAMPLE_RATE} ms at "
            f"{SAMPLE_RATE} Hz), got {audio.shape[-1]}"
        )
    return None


def _check_waveform(audio: torch.Tensor, dtypes: tuple[torch.dtype, ...]) -> None:
    problem = waveform_problem(audio, dtypes)
    if problem:
        raise KernelError(problem)


def int16_gain(x: torch.Tensor) -> torch.Tensor:
    """Per-row gain to the int16 range: 32768 where a row's peak |x| is at most 1, else 1.

    Args:
        x (Tensor): waveform, shape `(B, S)`.

    Returns:
        Tensor: shape `(B, 1)`, dtype of `x`, no gradient.
    """
    peak = x.detach().abs().amax(dim=1, keepdim=True)  # [B, 1]
    return torch.where(peak <= 1, 32768.0, 1.0).to(x.dtype)


def mfcc_ref(audio: torch.Tensor, gain: float | None = None) -> torch.Tensor:
    """The definition and reference (rfft, float64 products): waveform `(B, S)` or `(S,)` ->
    c1..c12 as `(B, 12, F)` (or `(12, F)`), a transposed view of a contiguous `(B, F, 12)`
    buffer, differentiable. `gain` replaces the per-row int16 gain (`int16_gain`) when given.
    The steps are those listed in `fastdavs.data.audio`'s docstring, whose `mfcc` checks the
    input and documents the arguments."""
    _check_waveform(audio, (torch.float32, torch.float64))
    x = audio if audio.dim() == 2 else audio[None]  # [B, S]
    window, fbank_t, lifted_dct_t = recipe_matrices(x.dtype, x.device)

    x = x * (int16_gain(x) if gain is None else gain)
    y = torch.cat([x[:, :1], x[:, 1:] - PREEMPH * x[:, :-1]], dim=1)  # [B, S]
    frames = y.unfold(1, WIN, HOP) * window  # [B, F, WIN]
    spec = torch.fft.rfft(frames, n=NFFT).abs()  # [B, F, NFFT // 2 + 1]
    # The two products run in float64: float64 is exempt from autocast (bf16 matmuls here give
    # errors of ~1 in the cepstra) and from TF32, and costs little after the FFT.
    log_e = torch.log((spec.double() @ fbank_t).clamp_min(LOG_FLOOR))  # [B, F, N_MELS]
    # Rows 1.. of the DCT sum to zero, so removing each step's first log energy leaves c1..c12
    # unchanged mathematically; it makes a flat spectrum (digital silence) give exact zeros
    # instead of rounding noise.
    log_e = log_e - log_e[..., :1]
    coeffs = (log_e @ lifted_dct_t).to(audio.dtype).transpose(1, 2)  # [B, K, F]
    return coeffs if audio.dim() == 2 else coeffs[0]


# ---- the fused kernel -----------------------------------------------------------------------
DTYPES = (torch.float32, torch.float16, torch.bfloat16)
SEG = WIN + 1  # samples feeding one step: the frame and the one before it (pre-emphasis)
MEL_PAD = 16  # 13 filters padded to a tl.dot size
K_PAD = 16  # 12 cepstra padded likewise


@dataclass(frozen=True)
class MfccBlocks:
    """Tile sizes (powers of two, each >= 16 for tl.dot).

    f: MFCC steps per program; s: segment samples per DFT dot step; bins: DFT bins per tile.
    """

    f: int = 64
    s: int = 32
    bins: int = 64
    num_warps: int = 4
    num_stages: int = 3

    def check(self) -> None:
        for name in ("f", "s", "bins"):
            size = getattr(self, name)
            if size < 16 or size & (size - 1):
                raise KernelError(f"MfccBlocks.{name}={size}: tiles must be powers of two >= 16")


@functools.cache
def _fused_matrices(
    dtype: torch.dtype, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The kernel's constants, built in float64 from `recipe_matrices`.

    Returns:
        basis: [2, SEG, NB] in `dtype` (cos, sin), window and pre-emphasis folded in, over the
            NB bins where the filter bank is non-zero;
        mel: [NB, MEL_PAD] float32 filter bank on those bins, zero columns past 13;
        dct: [MEL_PAD, K_PAD] float32 lifted DCT rows 1..12, transposed, zero-padded.
    """
    window, fbank_t, lifted_dct_t = recipe_matrices(torch.float64, device)
    used = fbank_t.ne(0).any(dim=1).nonzero().flatten()  # bins with a non-zero weight
    first, last = int(used[0]), int(used[-1])
    k = torch.arange(first, last + 1, dtype=torch.float64, device=device)
    n = torch.arange(WIN, dtype=torch.float64, device=device)
    angle = 2 * math.pi * n[:, None] * k[None, :] / NFFT  # [WIN, NB]
    framed = torch.stack([angle.cos(), angle.sin()]) * window[:, None]  # [2, WIN, NB]
    basis = torch.zeros(2, SEG, len(k), dtype=torch.float64, device=device)
    basis[:, 1:] += framed  # segment sample m is frame sample m - 1 ...
    basis[:, :-1] -= PREEMPH * framed  # ... and the previous sample of frame sample m
    mel = torch.zeros(len(k), MEL_PAD, dtype=torch.float64, device=device)
    mel[:, :N_MELS] = fbank_t[first : last + 1]
    dct = torch.zeros(MEL_PAD, K_PAD, dtype=torch.float64, device=device)
    dct[:N_MELS, :N_COEFFS] = lifted_dct_t
    return basis.to(dtype), mel.float(), dct.float()


@triton.jit
def _mfcc_kernel(
    x_ptr,  # [B, S] waveform, unit sample stride
    gain_ptr,  # [B] float32 int16 gain (32768 or 1)
    basis_ptr,  # [2, SEG, NB] DFT basis (cos, sin) in the dot dtype
    mel_ptr,  # [NB, MEL_PAD] float32 filter bank
    dct_ptr,  # [MEL_PAD, K_PAD] float32 lifted DCT
    out_ptr,  # [B, F, K] out, any strides
    F,
    stride_x,
    stride_ob,
    stride_of,
    stride_ok,
    log_floor,
    SEG: tl.constexpr,
    NB: tl.constexpr,
    HOP: tl.constexpr,
    K: tl.constexpr,
    MEL_PAD: tl.constexpr,
    K_PAD: tl.constexpr,
    BLOCK_F: tl.constexpr,
    BLOCK_S: tl.constexpr,
    BLOCK_BIN: tl.constexpr,
    UPCAST: tl.constexpr,  # widen tiles to float32 before the DFT dots
):
    b = tl.program_id(1)
    steps = tl.program_id(0) * BLOCK_F + tl.arange(0, BLOCK_F)
    fmask = steps < F
    x_row = x_ptr + b.to(tl.int64) * stride_x
    mels = tl.arange(0, MEL_PAD)
    energy = tl.zeros((BLOCK_F, MEL_PAD), dtype=tl.float32)
    for k0 in range(0, NB, BLOCK_BIN):
        bins = k0 + tl.arange(0, BLOCK_BIN)
        bmask = bins < NB
        re = tl.zeros((BLOCK_F, BLOCK_BIN), dtype=tl.float32)
        im = tl.zeros((BLOCK_F, BLOCK_BIN), dtype=tl.float32)
        for s0 in range(0, SEG, BLOCK_S):
            m = s0 + tl.arange(0, BLOCK_S)
            smask = m < SEG
            t = steps[:, None] * HOP - 1 + m[None, :]  # sample index, [BLOCK_F, BLOCK_S]
            seg = tl.load(x_row + t, mask=fmask[:, None] & smask[None, :] & (t >= 0), other=0.0)
            bptrs = basis_ptr + m[:, None] * NB + bins[None, :]  # [BLOCK_S, BLOCK_BIN]
            bm = smask[:, None] & bmask[None, :]
            cos_b = tl.load(bptrs, mask=bm, other=0.0)
            sin_b = tl.load(bptrs + SEG * NB, mask=bm, other=0.0)
            if UPCAST:
                seg = seg.to(tl.float32)
                cos_b = cos_b.to(tl.float32)
                sin_b = sin_b.to(tl.float32)
            re = tl.dot(seg, cos_b, re, input_precision="ieee")
            im = tl.dot(seg, sin_b, im, input_precision="ieee")
        mag = tl.sqrt(re * re + im * im)  # [BLOCK_F, BLOCK_BIN]
        fbank = tl.load(
            mel_ptr + bins[:, None] * MEL_PAD + mels[None, :], mask=bmask[:, None], other=0.0
        )
        energy = tl.dot(mag, fbank, energy, input_precision="ieee")  # [BLOCK_F, MEL_PAD]

    energy = energy * tl.load(gain_ptr + b)
    log_e = tl.log(tl.maximum(energy, log_floor))
    log_e -= tl.sum(tl.where(mels[None, :] == 0, log_e, 0.0), axis=1)[:, None]
    ks = tl.arange(0, K_PAD)
    dct = tl.load(dct_ptr + mels[:, None] * K_PAD + ks[None, :])
    coeffs = tl.dot(log_e, dct, input_precision="ieee")  # [BLOCK_F, K_PAD]
    tl.store(
        out_ptr + b.to(tl.int64) * stride_ob + steps[:, None] * stride_of + ks[None, :] * stride_ok,
        coeffs.to(out_ptr.dtype.element_ty),
        mask=fmask[:, None] & (ks[None, :] < K),
    )


def mfcc_triton(
    audio: torch.Tensor, out: torch.Tensor | None = None, blocks: MfccBlocks | None = None
) -> torch.Tensor:
    """Launch the fused kernel: waveform [B, S] -> c1..c12 as [B, F, K] (step-major).

    Args:
        audio: [B, S] float32/float16/bfloat16, S >= 400, any row stride.
        out: optional [B, F, 12] output of `audio`'s dtype and device, any strides.
        blocks: tile sizes (default `MfccBlocks()`).

    Returns: `out` (allocated contiguous when None). No gradient.
    """
    _check_waveform(audio, DTYPES)
    if audio.dim() != 2:
        raise KernelError(f"mfcc_triton takes [B, S] audio, got {list(audio.shape)}")
    blocks = blocks or MfccBlocks()
    blocks.check()
    x = audio if audio.stride(1) == 1 else audio.contiguous()
    b, s = x.shape
    steps = (s - WIN) // HOP + 1
    if out is None:
        out = torch.empty(b, steps, N_COEFFS, dtype=x.dtype, device=x.device)
    elif out.shape != (b, steps, N_COEFFS) or out.dtype != x.dtype or out.device != x.device:
        raise KernelError(
            f"mfcc_triton: out is {tuple(out.shape)} {out.dtype} on {out.device}, needs "
            f"{(b, steps, N_COEFFS)} {x.dtype} on {x.device}"
        )
    basis, mel, dct = _fused_matrices(x.dtype, x.device)
    gain = int16_gain(x).float()  # [B, 1]
    upcast = x.dtype == torch.float32 or (x.dtype == torch.bfloat16 and interpreted(_mfcc_kernel))
    _mfcc_kernel[(triton.cdiv(steps, blocks.f), b)](
        x, gain, basis, mel, dct, out, steps,
        x.stride(0), out.stride(0), out.stride(1), out.stride(2), LOG_FLOOR,
        SEG=SEG, NB=basis.shape[2], HOP=HOP, K=N_COEFFS, MEL_PAD=MEL_PAD, K_PAD=K_PAD,
        BLOCK_F=blocks.f, BLOCK_S=blocks.s, BLOCK_BIN=blocks.bins, UPCAST=upcast,
        num_warps=blocks.num_warps, num_stages=blocks.num_stages,
    )  # fmt: skip
    return out


def mfcc_backend(audio: torch.Tensor, backend: str = "auto") -> str:
    """``"triton"`` or ``"ref"``: what `mfcc` runs for `audio` asked for `backend` (the kernel
    takes float32/float16/bfloat16 CUDA input and computes no gradient).

    Raises:
        KernelError: unknown backend, or ``"triton"`` forced where it cannot run.
    """
    needs_grad = torch.is_grad_enabled() and audio.requires_grad
    return resolve_backend("mfcc", backend, audio, _mfcc_kernel, DTYPES, needs_grad)


def mfcc(
    audio: torch.Tensor, *, backend: str = "auto", blocks: MfccBlocks | None = None
) -> torch.Tensor:
    """MFCCs of the DAVS recipe, fused on the GPU.

    Args:
        audio (Tensor): 16 kHz waveform, shape `(B, S)` or `(S,)`, S >= 400; float32/float16/
            bfloat16 for the kernel (the reference also takes float64).
        backend (str, optional): ``"auto"`` (the kernel for CUDA input when no gradient is
            needed, else the reference), ``"triton"`` or ``"ref"``. (Default: ``"auto"``)
        blocks (MfccBlocks, optional): tile sizes of the kernel.

    Returns:
        Tensor: `(B, 12, F)` (or `(12, F)`), F = (S - 400) // 160 + 1, in `audio`'s dtype: like
        the reference, a transposed view of a contiguous `(B, F, 12)` buffer. The kernel's
        output has no gradient.

    Raises:
        KernelError (a ValueError): ``"triton"`` unavailable, asked for a gradient, or audio the
            recipe cannot take.
    """
    if mfcc_backend(audio, backend) == "ref":
        return mfcc_ref(audio)
    _check_waveform(audio, DTYPES)
    x = audio if audio.dim() == 2 else audio[None]  # [B, S]
    coeffs = mfcc_triton(x, blocks=blocks).transpose(1, 2)  # [B, K, F]
    return coeffs if audio.dim() == 2 else coeffs[0]
