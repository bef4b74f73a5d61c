"""The DAVS MFCC front end: 16 kHz waveform -> 12 cepstra at 100 steps/s -> 20x12 windows per frame.

Data flow: decoded 16 kHz mono audio goes through `mfcc` (the recipe of spec/davs.md §3.3, i.e.
Wojcicki's `mfcc.m` as called by the original `savemfcc.m`) and `mfcc_windows` cuts one 20x12
window per 25 fps video frame; the windows are what the audio word encoder reads and what the
shards store. `audio_to_windows` does both.

Everything is batched PyTorch: any device, float32 or float64 (the output follows the input),
and differentiable with respect to the waveform. Dimension letters: B batch, T video frames,
F MFCC steps, K coefficients, S samples.

The recipe, step by step (`mfcc`):
    x <- 32768 x            if max|x| <= 1 (per row: the original scales to the int16 range)
    y[0] = x[0], y[n] = x[n] - 0.97 x[n-1]
    frame f = y[160 f : 160 f + 400], f = 0 .. (S - 400) // 160       (no centre padding)
    X_f = |rfft(hamming_sym(400) * frame f, n=512)|                  (magnitude, end zero-padded)
    E_f = log(max(M X_f, LOG_FLOOR))       M: 13 HTK-mel triangles over 300-3700 Hz
    c_f = (lifter * (DCT E_f))[1:]          DCT-II, sine lifter L=22, c0 dropped -> K = 12
"""

from __future__ import annotations

import functools
import math

import torch

from fastdavs.errors import FastdavsError

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
WINDOW_STEPS = 20  # MFCC steps per video-frame window (0.2 s)
FPS = 25  # the model's (LRW's) video frame rate
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS  # 640 samples of audio per video frame
STEPS_PER_FRAME = SAMPLE_RATE // HOP // FPS  # 4 MFCC steps per video frame
FIRST_FRAME = 2  # video frame l takes columns [4l - 8, 4l + 12): the first that fits is l = 2
# Generation and streaming read a clip as if preceded by this much digital silence, so that
# frame 0 (the clip's first 40 ms) has a window: frames 0 and 1 start 80 and 40 ms before it.
LEAD_SAMPLES = FIRST_FRAME * SAMPLES_PER_FRAME  # 1280


class AudioError(FastdavsError, ValueError):
    """The audio cannot go through the MFCC recipe (wrong rate, too short, wrong shape)."""


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
    mel_lo, mel_hi = (1127 * math.log1p(f / 700) for f in (fmin, fmax))
    mels = torch.linspace(mel_lo, mel_hi, n_mels + 2, dtype=torch.float64, device=device)
    edges = 700 * torch.expm1(mels / 1127)  # [n_mels + 2] Hz
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
def _recipe_matrices(
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


def check_waveform(
    audio: torch.Tensor, dtypes: tuple[torch.dtype, ...] = (torch.float32, torch.float64)
) -> None:
    """Raise `AudioError` unless `audio` is a `(S,)` or `(B, S)` waveform of `dtypes`, S >= 400."""
    if audio.dtype not in dtypes:
        names = " or ".join(str(d).removeprefix("torch.") for d in dtypes)
        raise AudioError(f"MFCC needs a {names} waveform, got {audio.dtype}")
    if audio.dim() not in (1, 2):
        raise AudioError(f"MFCC needs audio of shape [S] or [B, S], got {list(audio.shape)}")
    if audio.shape[-1] < WIN:
        raise AudioError(
            f"MFCC needs at least {WIN} samples ({1000 * WIN // SAMPLE_RATE} ms at "
            f"{SAMPLE_RATE} Hz), got {audio.shape[-1]}"
        )


def int16_gain(x: torch.Tensor) -> torch.Tensor:
    """Per-row gain to the int16 range: 32768 where a row's peak |x| is at most 1, else 1.

    Args:
        x (Tensor): waveform, shape `(B, S)`.

    Returns:
        Tensor: shape `(B, 1)`, dtype of `x`, no gradient.
    """
    peak = x.detach().abs().amax(dim=1, keepdim=True)  # [B, 1]
    return torch.where(peak <= 1, 32768.0, 1.0).to(x.dtype)


def mfcc(
    audio: torch.Tensor,
    sample_rate: int = SAMPLE_RATE,
    *,
    backend: str = "auto",
    gain: float | None = None,
) -> torch.Tensor:
    """MFCCs of the DAVS recipe (spec/davs.md §3.3; see this module's docstring for the steps).

    Rows whose peak |x| is at most 1 are taken as full-scale floats and scaled by 32768 to the
    int16 range, as the original does; other rows are taken as already in int16 units. The
    decision is per row and carries no gradient (the scale factor is piecewise constant).

    Args:
        audio (Tensor): float waveform at 16 kHz, shape `(B, S)` or `(S,)`, with S >= 400.
        sample_rate (int, optional): rate of `audio` in Hz; must be 16000. (Default: 16000)
        backend (str, optional): ``"ref"`` runs the code below; ``"triton"`` the fused kernel
            `fastdavs.kernels.mfcc.mfcc` (forward only; float32, float16 or bfloat16);
            ``"auto"`` picks the kernel for CUDA input of those dtypes when no gradient is
            needed, the code below otherwise (always on CPU). (Default: ``"auto"``)
        gain (float or None, optional): multiply every row by this instead of its int16 gain,
            for audio whose peak is not known up front (`fastdavs.stream` fixes it before the
            clip has ended). c1..c12 do not depend on the gain (it adds the same constant to
            every log energy of a frame, which DCT rows 1.. cancel; a power of two such as
            32768 or 1 also scales the FFT exactly), except in frames whose filter-bank energy
            is below ``LOG_FLOOR`` under one gain and not the other: near digital silence.
            The fused kernel does not take it: ``"auto"`` then runs the code below and
            ``"triton"`` refuses. (Default: None, the per-row int16 gain)

    Returns:
        Tensor: c1..c12, shape `(B, K=12, F)` (or `(K, F)` for 1-D input), F = (S - 400) // 160 + 1
        (98 for one second), same dtype and device as `audio`, also under autocast and TF32 (the
        framing and FFT run in the input dtype, the filter bank, log and DCT in float64). It is a
        transposed view of a contiguous `(B, F, K)` buffer, which makes every window of
        `mfcc_windows` one contiguous 20x12 block. Differentiable with respect to `audio`;
        energies below ``LOG_FLOOR`` get no gradient.

    Raises:
        AudioError (a ValueError): wrong sample rate, non-float dtype, wrong rank, or S < 400.
    """
    if sample_rate != SAMPLE_RATE:
        raise AudioError(
            f"MFCC needs {SAMPLE_RATE} Hz audio, got {sample_rate} Hz: resample to "
            f"{SAMPLE_RATE} Hz first (e.g. decode with ffmpeg -ar 16000 -ac 1)"
        )
    if gain is not None and backend == "triton":
        raise AudioError('mfcc: a fixed gain= runs on backend "ref" (or "auto"), not "triton"')
    if backend != "ref" and gain is None:
        # Imported here: the kernel module imports this one (its reference and matrices).
        from fastdavs.kernels.mfcc import mfcc as fused

        return fused(audio, backend=backend)
    check_waveform(audio)
    x = audio if audio.dim() == 2 else audio[None]  # [B, S]
    window, fbank_t, lifted_dct_t = _recipe_matrices(x.dtype, x.device)

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


def mfcc_windows(coeffs: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Cut one 20-step window per 25 fps video frame: frame l takes columns [4l - 8, 4l + 12).

    Windows exist for l = 2 .. (F - 12) // 4, so T = (F - 16) // 4 (20 for one second of audio,
    F = 98). The original `savemfcc.m` stops at l = floor(25 S / 16000) - 4, which is sometimes one
    frame earlier although the next window fits. The result is a view of `coeffs` (no copy); each
    window is row-major time x coeff, like the original's `l.bin` files (`reshape(20, 12)`).

    Args:
        coeffs (Tensor): MFCCs from `mfcc`, shape `(B, K, F)` or `(K, F)`, with F >= 20.

    Returns:
        (Tensor, int): windows of shape `(B, T, 20, K)` (or `(T, 20, K)`), and the video frame
        of the first window, ``FIRST_FRAME`` = 2. Autograd flows through the view.

    Raises:
        AudioError (a ValueError): F < 20 (less than 0.2 s + 0.015 s of audio) or wrong rank.
    """
    if coeffs.dim() not in (2, 3):
        raise AudioError(
            f"MFCC windows need coeffs of shape [K, F] or [B, K, F], got {list(coeffs.shape)}"
        )
    steps = coeffs.shape[-1]
    if steps < WINDOW_STEPS:
        raise AudioError(
            f"MFCC windows need at least {WINDOW_STEPS} MFCC steps "
            f"({WIN + (WINDOW_STEPS - 1) * HOP} samples), got {steps}"
        )
    # Frame 2's window starts at column 0 and each next frame moves 4 columns.
    windows = coeffs.unfold(-1, WINDOW_STEPS, STEPS_PER_FRAME)  # [(B,) K, T, 20]
    return windows.movedim(-3, -1), FIRST_FRAME  # [(B,) T, 20, K]


def audio_to_windows(audio: torch.Tensor, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """`mfcc` then `mfcc_windows`: waveform `(B, S)` -> `(B, T, 20, 12)`, `(S,)` -> `(T, 20, 12)`.

    Window t belongs to video frame ``FIRST_FRAME + t``. Needs S >= 3440 samples (F >= 20);
    same dtype, device and autograd behaviour as `mfcc`.
    """
    return mfcc_windows(mfcc(audio, sample_rate))[0]
