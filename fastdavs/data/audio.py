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

import torch

from fastdavs.errors import FastdavsError
from fastdavs.kernels.mfcc import DTYPES as FUSED_DTYPES
from fastdavs.kernels.mfcc import (
    HOP,
    N_COEFFS,
    N_MELS,
    SAMPLE_RATE,
    WIN,
    dct_matrix,
    hz_to_mel,
    mel_edges,
    mel_to_hz,
    mfcc_backend,
    mfcc_ref,
    sine_lifter,
    waveform_problem,
)
from fastdavs.kernels.mfcc import mfcc as fused_mfcc

# The recipe's constants are defined beside its kernel; the front end's users read them here.
__all__ = [
    "FIRST_FRAME",
    "FPS",
    "HOP",
    "LEAD_SAMPLES",
    "N_COEFFS",
    "SAMPLES_PER_FRAME",
    "SAMPLE_RATE",
    "STEPS_PER_FRAME",
    "WIN",
    "WINDOW_STEPS",
    "AudioError",
    "audio_to_windows",
    "check_waveform",
    "formant_warp_matrices",
    "mfcc",
    "mfcc_windows",
]

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


def check_waveform(
    audio: torch.Tensor, dtypes: tuple[torch.dtype, ...] = (torch.float32, torch.float64)
) -> None:
    """Raise `AudioError` unless `audio` is a `(S,)` or `(B, S)` waveform of `dtypes`, S >= 400."""
    problem = waveform_problem(audio, dtypes)
    if problem:
        raise AudioError(problem)


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
        backend (str, optional): ``"ref"`` runs the reference, `fastdavs.kernels.mfcc.mfcc_ref`
            (the recipe of the module docstring); ``"triton"`` the fused kernel
            `fastdavs.kernels.mfcc.mfcc` (forward only; float32, float16 or bfloat16);
            ``"auto"`` picks the kernel for CUDA input of those dtypes when no gradient is
            needed, the reference otherwise (always on CPU). (Default: ``"auto"``)
        gain (float or None, optional): multiply every row by this instead of its int16 gain,
            for audio whose peak is not known up front (`fastdavs.stream` fixes it before the
            clip has ended). c1..c12 do not depend on the gain (it adds the same constant to
            every log energy of a frame, which DCT rows 1.. cancel; a power of two such as
            32768 or 1 also scales the FFT exactly), except in frames whose filter-bank energy
            is below ``LOG_FLOOR`` under one gain and not the other: near digital silence.
            The fused kernel does not take it: ``"auto"`` then runs the reference and
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
    if gain is not None or mfcc_backend(audio, backend) == "ref":
        check_waveform(audio)
        return mfcc_ref(audio, gain)
    check_waveform(audio, FUSED_DTYPES)
    return fused_mfcc(audio, backend="triton")


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


def formant_warp_matrices(scales: torch.Tensor) -> torch.Tensor:
    """Cepstral matrices that move a voice's formants by the factors `scales`.

    Vocal-tract length perturbation (Jaitly & Hinton 2013) done on the recipe's c1..c12 instead
    of the waveform: a speaker whose vocal tract is shorter by a factor s has the spectrum
    X'(f) = X(f / s). The recipe's 13 log filter-bank energies E are the inverse lifted DCT of
    c1..c12 up to a constant (c0, the frame's level, is dropped and stays unknown), so

        c' = M c,   M = diag(lifter) D W(s) D^T diag(1 / lifter)

    with D the orthonormal DCT rows 1..12 and W(s) the linear interpolation that gives filter m
    the energy found at its centre frequency divided by s (clamped to the first and last filters).
    A constant log energy stays constant under W, so the unknown c0 does not leak into c1..c12.
    Scale 1 gives the identity. Against SynthLRW's synthesizer (`tests/test_audio_warp.py`), the
    warped MFCCs of one voice are nearer those of the same take said with formants scaled by s
    than the unwarped ones are.

    Args:
        scales (Tensor): formant factors, shape `(B,)`, positive (1.1: formants 10% higher).
    Returns:
        Tensor: float64 `(B, K=12, K)`, on `scales`' device; apply to windows `[..., K]` of
        clip b as ``windows @ M[b].T``.
    """
    if scales.dim() != 1 or not bool((scales > 0).all()):
        raise ValueError(f"scales must be a 1-D tensor of positive factors, got {scales}")
    device = scales.device
    edges = mel_edges(device=device)  # [M + 2] mel; filter m peaks at edge m + 1
    step = (edges[-1] - edges[0]) / (N_MELS + 1)
    source = hz_to_mel(mel_to_hz(edges[1:-1]) / scales.double()[:, None])  # [B, M] mel
    pos = ((source - edges[0]) / step - 1).clamp(0, N_MELS - 1)  # fractional filter index
    lower = pos.floor().clamp(max=N_MELS - 2)
    frac = pos - lower
    w = torch.zeros(len(scales), N_MELS, N_MELS, dtype=torch.float64, device=device)
    w.scatter_add_(2, lower.long()[..., None], (1 - frac)[..., None])
    w.scatter_add_(2, lower.long()[..., None] + 1, frac[..., None])  # [B, M, M]
    d = dct_matrix(dtype=torch.float64, device=device)[1:]  # [K, M]
    lifter = sine_lifter(dtype=torch.float64, device=device)[1:]  # [K]
    return (lifter[:, None] * d) @ w @ (d.T / lifter)  # [B, K, K]
