"""The MFCC baseline of the kernel benchmark: the DAVS recipe written the way a user would with
librosa, NumPy and SciPy, one clip at a time in a Python loop.

Used by `bench/kernels.py` (the MFCC throughput target is >= 10x this) and
`tests/test_bench_kernels.py`. The steps follow DESIGN.md "MFCC recipe"; the framing is done with
`librosa.util.frame` because `librosa.stft` with win_length 400 < n_fft 512 would take 512-sample
frames (shifted by 56 samples, a different count). Every product runs in float64.
"""

from __future__ import annotations

import functools

import librosa
import numpy as np
import scipy.fft

from fastdavs.kernels.mfcc import (
    FMAX,
    FMIN,
    HOP,
    LIFTER,
    LOG_FLOOR,
    N_COEFFS,
    N_MELS,
    NFFT,
    PREEMPH,
    SAMPLE_RATE,
    WIN,
)


@functools.cache
def _constants() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(symmetric Hamming window [400], mel filters [13, 257], sine lifter of c1..c12 [12])."""
    window = librosa.filters.get_window("hamming", WIN, fftbins=False)
    mel = librosa.filters.mel(
        sr=SAMPLE_RATE, n_fft=NFFT, n_mels=N_MELS, fmin=FMIN, fmax=FMAX,
        htk=True, norm=None, dtype=np.float64,
    )  # fmt: skip
    k = np.arange(1, N_COEFFS + 1)
    lifter = 1 + LIFTER / 2 * np.sin(np.pi * k / LIFTER)
    return window, mel, lifter


def mfcc_clip(x: np.ndarray) -> np.ndarray:
    """One clip: waveform [S] (16 kHz, S >= 400) -> c1..c12 as [12, F], float64."""
    window, mel, lifter = _constants()
    x = np.asarray(x, dtype=np.float64)
    if np.abs(x).max() <= 1:  # full-scale floats to the int16 range, as the original
        x = x * 32768
    y = np.concatenate([x[:1], x[1:] - PREEMPH * x[:-1]])
    frames = librosa.util.frame(y, frame_length=WIN, hop_length=HOP, axis=0)  # [F, 400]
    spec = np.abs(np.fft.rfft(frames * window, n=NFFT))  # [F, 257]
    log_e = np.log(np.maximum(spec @ mel.T, LOG_FLOOR))  # [F, 13]
    cepstra = scipy.fft.dct(log_e, type=2, norm="ortho", axis=1)  # [F, 13]
    return (cepstra[:, 1:] * lifter).T  # drop c0 -> [12, F]


def mfcc_librosa(audio: np.ndarray) -> np.ndarray:
    """Clip by clip: waveforms [B, S] -> [B, 12, F] float64 (as `fastdavs.data.audio.mfcc`)."""
    return np.stack([mfcc_clip(clip) for clip in audio])
