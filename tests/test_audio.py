"""Tests of fastdavs.data.audio: the batched MFCC front end against a float64 NumPy reference
written
step by step from the recipe (DESIGN.md "MFCC recipe", spec/davs.md §3.3), its building blocks
against librosa/scipy, the 20x12 window alignment, the error messages and autograd.
"""

from __future__ import annotations

import math

import librosa
import numpy as np
import pytest
import scipy.fft
import scipy.signal
import torch

from fastdavs.data import audio as A
from fastdavs.kernels.mfcc import dct_matrix, hamming_symmetric, mel_filterbank, sine_lifter


def mfcc_reference(x: np.ndarray) -> np.ndarray:
    """One waveform [S] -> [12, F], float64, with loops and textbook formulas (mfcc.m semantics)."""
    x = np.asarray(x, dtype=np.float64)
    if np.max(np.abs(x)) <= 1:
        x = x * 32768.0
    y = np.empty_like(x)
    y[0] = x[0]
    for n in range(1, len(x)):
        y[n] = x[n] - 0.97 * x[n - 1]

    win = np.array([0.54 - 0.46 * math.cos(2 * math.pi * k / 399) for k in range(400)])

    # trifbank: edges equally spaced in HTK mel, triangles linear in Hz on linspace(0, fs/2, 257).
    def hz2mel(f):
        return 1127 * math.log(1 + f / 700)

    def mel2hz(m):
        return 700 * (math.exp(m / 1127) - 1)

    lo_mel, hi_mel = hz2mel(300.0), hz2mel(3700.0)
    c = [mel2hz(lo_mel + i * (hi_mel - lo_mel) / 14) for i in range(15)]
    freqs = [k * 8000 / 256 for k in range(257)]
    fbank = np.zeros((13, 257))
    for m in range(13):
        for k, f in enumerate(freqs):
            if c[m] <= f <= c[m + 1]:
                fbank[m, k] = (f - c[m]) / (c[m + 1] - c[m])
            if c[m + 1] <= f <= c[m + 2]:
                fbank[m, k] = (c[m + 2] - f) / (c[m + 2] - c[m + 1])

    n_frames = (len(y) - 400) // 160 + 1
    out = np.zeros((12, n_frames))
    for t in range(n_frames):
        frame = y[160 * t : 160 * t + 400] * win
        mag = np.abs(np.fft.rfft(frame, n=512))
        log_e = np.log(np.maximum(fbank @ mag, 1e-10))
        for k in range(1, 13):
            dct_k = sum(
                math.sqrt(2 / 13) * math.cos(math.pi * k * (m + 0.5) / 13) * log_e[m]
                for m in range(13)
            )
            out[k - 1, t] = (1 + 11 * math.sin(math.pi * k / 22)) * dct_k
    return out


def speech_like(n: int, peak: float, rng: np.random.Generator) -> np.ndarray:
    """Voiced-speech stand-in: harmonics of a wandering f0 under a syllable envelope, plus noise."""
    t = np.arange(n) / 16000
    f0 = rng.uniform(90, 220) * (1 + 0.1 * np.sin(2 * np.pi * rng.uniform(1, 4) * t))
    phase = 2 * np.pi * np.cumsum(f0) / 16000
    x = sum(rng.uniform(0.2, 1) / h * np.sin(h * phase + rng.uniform(0, 6.3)) for h in range(1, 25))
    x = x * (0.3 + np.abs(np.sin(2 * np.pi * rng.uniform(2, 5) * t)))
    x = x + 0.05 * rng.standard_normal(n)
    return x / np.max(np.abs(x)) * peak


# Peaks 0.1 and 0.9 are full-scale floats (scaled by 32768); 2500 is already in int16 units.
PEAKS = (0.1, 0.9, 2500.0)
# 1 s, 1 s + 77 (not a multiple of the hop), the shortest with one window, one MFCC step.
LENGTHS = (16000, 16077, 3440, 400)


@pytest.fixture(scope="module")
def signals() -> dict[int, np.ndarray]:
    rng = np.random.default_rng(20190127)
    return {n: np.stack([speech_like(n, p, rng) for p in PEAKS]) for n in LENGTHS}


@pytest.fixture(scope="module")
def references(signals) -> dict[tuple[int, torch.dtype], np.ndarray]:
    """Reference of each signal as the torch path sees it in each dtype (the float32 input is
    rounded first, so the comparison measures compute error only)."""
    refs = {}
    for n, x in signals.items():
        for dtype in (torch.float64, torch.float32):
            seen = torch.from_numpy(x).to(dtype).double().numpy()
            refs[n, dtype] = np.stack([mfcc_reference(row) for row in seen])
    return refs


@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("dtype, atol", [(torch.float64, 1e-9), (torch.float32, 1e-4)])
def test_mfcc_matches_reference(signals, references, n, dtype, atol):
    out = A.mfcc(torch.from_numpy(signals[n]).to(dtype))
    ref = references[n, dtype]
    assert out.dtype == dtype
    assert out.shape == (3, 12, (n - 400) // 160 + 1) == ref.shape
    assert np.abs(ref).max() > 1  # the comparison is not between near-zero arrays
    err = np.abs(out.double().numpy() - ref).max()
    assert err <= atol, f"max abs error {err:.3g} > {atol:g} ({dtype}, S={n})"


def test_per_row_scaling():
    """Each row's int16 scaling depends on that row's peak only.

    c1..c12 ignore a gain while all energies clear the log floor, so the rule shows only on a
    quiet row: scaled by 32768 it clears the floor, unscaled it sits on it (all zeros).
    """
    rng = np.random.default_rng(3)
    voice = speech_like(3440, 0.5, rng)
    loud = speech_like(3440, 2500.0, rng)  # int16 units: no scaling for this row
    batch = torch.from_numpy(np.stack([voice * 2e-13, loud]))
    out = A.mfcc(batch)
    assert out[0].abs().max() > 1
    np.testing.assert_allclose(out[0].numpy(), mfcc_reference(voice * 2e-13), atol=1e-9)
    np.testing.assert_allclose(out[0].numpy(), A.mfcc(torch.from_numpy(voice)).numpy(), atol=1e-9)
    np.testing.assert_allclose(out[1].numpy(), mfcc_reference(loud), atol=1e-9)
    # The same quiet row made to count as int16 units (one sample of 2) is all floor.
    unscaled = np.concatenate([[2.0], voice[1:] * 2e-13])
    assert torch.equal(A.mfcc(torch.from_numpy(unscaled))[:, 1:], torch.zeros(12, 19))


def test_batched_equals_per_item(signals):
    x = torch.from_numpy(signals[16077])
    batched = A.mfcc(x)
    for i in range(3):
        torch.testing.assert_close(batched[i], A.mfcc(x[i]), rtol=0, atol=1e-10)
    x32 = x.float()
    batched32 = A.mfcc(x32)
    for i in range(3):
        torch.testing.assert_close(batched32[i], A.mfcc(x32[i]), rtol=0, atol=1e-5)


def test_hamming_is_matlab_symmetric():
    w = hamming_symmetric(400, torch.float64)
    np.testing.assert_allclose(w.numpy(), scipy.signal.windows.hamming(400, sym=True), atol=1e-15)
    assert w[0] == w[-1] and abs(w[0].item() - 0.08) < 1e-15
    # torch's default is the periodic window, which is not the recipe's.
    assert (w - torch.hamming_window(400, dtype=torch.float64)).abs().max() > 1e-4


def test_mel_filterbank_matches_librosa():
    fb = mel_filterbank(dtype=torch.float64)
    ref = librosa.filters.mel(
        sr=16000, n_fft=512, n_mels=13, fmin=300, fmax=3700, htk=True, norm=None, dtype=np.float64
    )
    assert fb.shape == (13, 257)
    np.testing.assert_allclose(fb.numpy(), ref, atol=1e-12)
    # Peaks of 1 near the centres, nothing outside 300-3700 Hz.
    freqs = np.linspace(0, 8000, 257)
    assert fb.numpy()[:, (freqs < 300) | (freqs > 3700)].max() == 0
    assert fb.max(dim=1).values.min() > 0.5


def test_dct_and_lifter():
    d = dct_matrix(dtype=torch.float64).numpy()
    ref = scipy.fft.dct(np.eye(13), type=2, norm="ortho", axis=0)
    np.testing.assert_allclose(d[1:], ref[1:], atol=1e-15)
    np.testing.assert_allclose(d @ d.T, np.eye(13), atol=1e-14)
    lift = sine_lifter(dtype=torch.float64).numpy()
    np.testing.assert_allclose(lift, 1 + 11 * np.sin(np.pi * np.arange(13) / 22), atol=1e-15)
    assert lift[0] == 1 and abs(lift[11] - 12) < 1e-14  # sin(pi/2) at k = L/2


def test_frame_count_and_errors():
    assert A.mfcc(torch.randn(16000) * 0.1).shape == (12, 98)
    assert A.mfcc(torch.randn(2, 400) * 0.1).shape == (2, 12, 1)
    assert A.mfcc(torch.randn(559) * 0.1).shape == (12, 1)
    assert A.mfcc(torch.randn(560) * 0.1).shape == (12, 2)
    with pytest.raises(ValueError, match="at least 400 samples"):
        A.mfcc(torch.zeros(399))
    with pytest.raises(ValueError, match="resample"):
        A.mfcc(torch.zeros(16000), sample_rate=44100)
    with pytest.raises(ValueError, match="float32 or float64"):
        A.mfcc(torch.zeros(16000, dtype=torch.int16))
    with pytest.raises(ValueError, match=r"\[S\] or \[B, S\]"):
        A.mfcc(torch.zeros(1, 1, 16000))


def test_silence_is_finite():
    zeros = A.mfcc(torch.zeros(2, 16000))
    assert torch.equal(zeros, torch.zeros(2, 12, 98))
    rng = np.random.default_rng(1)
    half = np.concatenate([np.zeros(8000), speech_like(8000, 0.5, rng)])
    for dtype in (torch.float64, torch.float32):
        out = A.mfcc(torch.from_numpy(half).to(dtype))
        assert torch.isfinite(out).all()
        assert torch.equal(out[:, :48], torch.zeros(12, 48))  # frames 0..47 end before 8000
        assert out[:, 50:].abs().max() > 1
    np.testing.assert_allclose(
        A.mfcc(torch.from_numpy(half)).numpy(), mfcc_reference(half), rtol=0, atol=1e-9
    )


def test_windows_alignment():
    n_steps, k = 98, 12
    # coeffs[b, k, j] = j + 1000 k + 1e5 b identifies column, coefficient and batch row.
    coeffs = (
        torch.arange(n_steps, dtype=torch.float64)
        + 1000 * torch.arange(k, dtype=torch.float64)[:, None]
        + 1e5 * torch.arange(2, dtype=torch.float64)[:, None, None]
    )
    windows, first = A.mfcc_windows(coeffs)
    assert first == A.FIRST_FRAME == 2
    n_windows = (n_steps - 12) // 4 - 2 + 1  # l = 2 .. (F - 12) // 4
    assert n_windows == 20 and windows.shape == (2, n_windows, 20, k)
    for b in range(2):
        for t in range(n_windows):
            l = first + t
            expect = (
                torch.arange(4 * l - 8, 4 * l + 12, dtype=torch.float64)[:, None]
                + 1000 * torch.arange(k)[None, :]
                + 1e5 * b
            )
            assert torch.equal(windows[b, t], expect)
    # A view, not a copy; unbatched input works the same.
    assert windows.untyped_storage().data_ptr() == coeffs.untyped_storage().data_ptr()
    assert torch.equal(A.mfcc_windows(coeffs[1])[0], windows[1])
    # T for other F: the last window must fit (4l + 12 <= F), the next must not.
    for n in (20, 23, 24, 97, 113, 114):
        t = A.mfcc_windows(torch.zeros(k, n))[0].shape[0]
        last = first + t - 1
        assert 4 * last + 12 <= n < 4 * (last + 1) + 12
    with pytest.raises(ValueError, match="at least 20 MFCC steps"):
        A.mfcc_windows(torch.zeros(1, k, 19))


def test_audio_to_windows(signals):
    x = torch.from_numpy(signals[16000]).float()
    windows = A.audio_to_windows(x)
    assert windows.shape == (3, 20, 20, 12)
    coeffs = A.mfcc(x)
    torch.testing.assert_close(windows[:, 5], coeffs[:, :, 20:40].transpose(1, 2), rtol=0, atol=0)
    # Each window is one contiguous row-major 20x12 block (the layout of the original l.bin).
    assert windows[1, 7].is_contiguous()
    assert A.audio_to_windows(x[0]).shape == (20, 20, 12)
    with pytest.raises(ValueError, match="3440 samples"):
        A.audio_to_windows(x[:, :3439])


def test_gradcheck():
    rng = np.random.default_rng(2)
    # Row 0 is full scale (x32768 branch), row 1 is in int16 units; both far above the floor.
    x = torch.from_numpy(np.stack([speech_like(880, 0.5, rng), speech_like(880, 300.0, rng)]))
    # Whole input, 5 overlapping MFCC steps: random projections of the Jacobian (fast mode).
    assert torch.autograd.gradcheck(
        A.mfcc, (x.clone().requires_grad_(),), eps=1e-6, atol=1e-5, rtol=1e-4, fast_mode=True
    )
    # Every Jacobian entry for 48 samples per row, including sample 0 (y[0] = x[0]) and samples
    # in the overlap of steps 0 and 1.
    for lo in (0, 200):
        seg = x[:, lo : lo + 48].clone().requires_grad_()

        def f(seg, lo=lo):
            return A.mfcc(torch.cat([x[:, :lo], seg, x[:, lo + 48 :]], dim=1))

        assert torch.autograd.gradcheck(f, (seg,), eps=1e-6, atol=1e-5, rtol=1e-4)


def test_gradient_through_windows_float32():
    x = (torch.randn(2, 4000) * 0.3).requires_grad_()
    A.audio_to_windows(x).square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().max() > 0


def test_autocast_does_not_reach_the_products(signals):
    """bf16 autocast would turn the filter-bank and DCT products into bf16 matmuls (errors ~1)."""
    x = torch.from_numpy(signals[3440]).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = A.mfcc(x)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, A.mfcc(x), rtol=0, atol=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_reference(signals, references):
    x = torch.from_numpy(signals[16077])
    for dtype, atol in ((torch.float64, 1e-9), (torch.float32, 1e-4)):
        out = A.mfcc(x.to(dtype).cuda())
        assert out.device.type == "cuda" and out.dtype == dtype
        np.testing.assert_allclose(out.cpu().double().numpy(), references[16077, dtype], atol=atol)
    allow_tf32 = torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = True
        with torch.autocast("cuda", dtype=torch.float16):
            out = A.mfcc(x.float().cuda())
    finally:
        torch.backends.cuda.matmul.allow_tf32 = allow_tf32
    assert out.dtype == torch.float32
    np.testing.assert_allclose(
        out.cpu().double().numpy(), references[16077, torch.float32], atol=1e-4
    )
    xg = x.float().cuda().requires_grad_()
    windows = A.audio_to_windows(xg)
    windows.square().sum().backward()
    assert windows.shape == (3, 20, 20, 12) and torch.isfinite(xg.grad).all()
