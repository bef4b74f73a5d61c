"""Tests of fastdavs.kernels.mfcc: the fused Triton MFCC against the float64 reference
(`fastdavs.data.audio.mfcc`) for ragged lengths and both int16-gain branches, the folded DFT basis,
silence, guard bands around the output, the output layout, and dispatch.

Without a GPU the kernel runs on CPU under the Triton interpreter (tests/conftest.py sets
TRITON_INTERPRET=1 before anything imports it), with small tiles.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_audio import speech_like

from fastdavs.data import audio as A
from fastdavs.kernels.mfcc import (
    KernelError,
    MfccBlocks,
    _fused_matrices,
    mfcc,
    mfcc_ref,
    mfcc_triton,
    recipe_matrices,
)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# 16 steps per program (F = 20 and 98 leave a ragged last block), 401 segment samples in 7
# steps of 64 and the 109 used bins in 2 tiles of 64, both ragged.
SMALL = MfccBlocks(f=16, s=64, bins=64)
# Absolute error bounds on cepstra of magnitude ~10. float32: the recipe's contract. 16-bit:
# the DFT basis is rounded to the dtype (2^-11 / 2^-8 relative), and so is the output.
ATOL = {torch.float32: 1e-4, torch.float16: 2e-2, torch.bfloat16: 0.15}
PEAKS = (0.1, 0.9, 2500.0)  # full-scale floats (gain 32768) and int16 units (gain 1)


@pytest.fixture(scope="module")
def signals() -> dict[int, torch.Tensor]:
    rng = np.random.default_rng(7)
    # 1 s + 77 samples (98 steps); the shortest with one 20-step window; one step.
    lengths = (16077, 3440, 400)
    return {n: torch.from_numpy(np.stack([speech_like(n, p, rng) for p in PEAKS])) for n in lengths}


@pytest.mark.parametrize("dtype", list(ATOL), ids=str)
@pytest.mark.parametrize(
    "n, blocks",
    [
        pytest.param(3440, SMALL, id="S=3440"),
        pytest.param(400, SMALL, id="S=400"),
        pytest.param(16077, MfccBlocks(), id="S=16077-default-tiles"),
    ],
)
def test_matches_float64_reference(signals, n, blocks, dtype):
    x = signals[n].to(dtype)
    want = A.mfcc(x.double(), backend="ref")  # float64, of the rounded input
    got = mfcc(x.to(DEVICE), backend="triton", blocks=blocks)
    assert got.dtype == dtype and got.shape == (3, 12, (n - 400) // 160 + 1)
    assert want.abs().max() > 1
    err = (got.cpu().double() - want).abs().max().item()
    assert err <= ATOL[dtype], f"max abs error {err:.3g} > {ATOL[dtype]:g} ({dtype}, S={n})"


def test_folded_basis_is_preemphasis_window_and_dft():
    """The basis applied to a raw segment x[160 f - 1 .. 160 f + 399] equals rfft of the
    pre-emphasised, windowed, zero-padded frame on the bins the filter bank uses."""
    basis, mel, dct = _fused_matrices(torch.float64, torch.device("cpu"))
    x = torch.randn(1 + 160 + 400, dtype=torch.float64)
    window, fbank_t, _ = recipe_matrices(torch.float64, torch.device("cpu"))
    used = torch.nonzero(fbank_t.ne(0).any(dim=1)).flatten()
    assert basis.shape == (2, 401, len(used)) and mel.shape == (len(used), 16)
    for start in (0, 160):  # frame 0 of a signal (x[-1] = 0) and an interior frame
        seg = x[start : start + 401]
        frame = (seg[1:] - 0.97 * seg[:-1]) * window
        spec = torch.fft.rfft(frame, n=512)[used]
        torch.testing.assert_close(seg @ basis[0], spec.real, rtol=0, atol=1e-10)
        torch.testing.assert_close(seg @ basis[1], -spec.imag, rtol=0, atol=1e-10)
    torch.testing.assert_close(mel[:, :13].double(), fbank_t[used].float().double())
    assert mel[:, 13:].eq(0).all() and dct[13:].eq(0).all() and dct[:, 12:].eq(0).all()


def test_silence_is_exactly_zero():
    x = torch.zeros(2, 3440, device=DEVICE)
    x[1, 1720:] = torch.from_numpy(speech_like(1720, 0.5, np.random.default_rng(1)))
    got = mfcc(x, backend="triton", blocks=SMALL)
    assert torch.isfinite(got).all()
    assert got[0].eq(0).all() and got[1, :, :8].eq(0).all()  # steps 0..7 end before 1720
    want = A.mfcc(x.cpu().double(), backend="ref")
    assert (got.cpu().double() - want).abs().max() <= 1e-4


def test_int16_gain_per_row():
    """The gain (32768 for rows with peak <= 1) matters only where energies near the log floor:
    a quiet full-scale row clears the floor once scaled; made to count as int16 units (one
    sample of 2), the same row sits on the floor (zeros after its first steps)."""
    voice = speech_like(3440, 0.5, np.random.default_rng(3)) * 2e-13
    unscaled = np.concatenate([[2.0], voice[1:]])
    x = torch.from_numpy(np.stack([voice, unscaled]))
    got = mfcc(x.float().to(DEVICE), backend="triton", blocks=SMALL).cpu()
    want = A.mfcc(x.float().double(), backend="ref")
    assert got[0].abs().max() > 1 and got[1, :, 3:].eq(0).all()
    assert (got.double() - want).abs().max() <= 1e-4


def test_output_written_into_views_keeps_guard_bands(signals):
    """`mfcc_triton` writes into a view of a larger NaN buffer, in the step-major layout and in a
    transposed (coefficient-major) one: the view gets the values, everything around stays NaN."""
    x = signals[3440].float().to(DEVICE)  # F = 20
    want = mfcc_triton(x, blocks=SMALL)  # [B, F, K]
    for shape, view in (
        ((5, 23, 16), lambda buf: buf[1:4, 2:22, 3:15]),  # [B, F, K] with padded strides
        ((5, 16, 23), lambda buf: buf[1:4, 3:15, 2:22].transpose(1, 2)),  # K-major
    ):
        buf = torch.full(shape, float("nan"), device=DEVICE)
        out = view(buf)
        assert mfcc_triton(x, out=out, blocks=SMALL) is out
        torch.testing.assert_close(out, want, rtol=0, atol=0)
        assert buf.isnan().sum() == buf.numel() - out.numel()


def test_layout_and_windows(signals):
    """Like the reference: [B, 12, F] as a transposed view of a contiguous [B, F, 12], so every
    20x12 window is one contiguous block; 1-D audio gives [12, F]; strided rows are read."""
    x = signals[3440].float().to(DEVICE)
    got = mfcc(x, backend="triton", blocks=SMALL)
    assert got.transpose(1, 2).is_contiguous()
    windows, _ = A.mfcc_windows(got)
    assert windows.shape == (3, 1, 20, 12) and windows[2, 0].is_contiguous()
    torch.testing.assert_close(mfcc(x[1], backend="triton", blocks=SMALL), got[1])
    padded = torch.zeros(3, 3500, device=DEVICE)
    padded[:, 30:3470] = x
    torch.testing.assert_close(mfcc(padded[:, 30:3470], backend="triton", blocks=SMALL), got)


def test_dispatch(signals):
    x = signals[400].float()
    ref = mfcc_ref(x)
    # audio.mfcc: "auto" keeps CPU input on the reference (also under the interpreter).
    assert torch.equal(A.mfcc(x), ref) and torch.equal(A.mfcc(x, backend="ref"), ref)
    fused = A.mfcc(x.to(DEVICE), backend="triton")
    assert (fused.cpu() - ref).abs().max() <= 1e-4
    # A gradient: "auto" uses the differentiable reference, "triton" refuses.
    xg = x.to(DEVICE).requires_grad_()
    assert A.mfcc(xg).requires_grad
    with pytest.raises(KernelError, match="no backward"):
        A.mfcc(xg, backend="triton")
    with torch.no_grad():
        assert A.mfcc(xg, backend="triton").shape == (3, 12, 1)
    # 16-bit audio reaches the kernel through audio.mfcc (the reference takes 32/64-bit only).
    half = x.detach().to(DEVICE, torch.bfloat16)
    torch.testing.assert_close(A.mfcc(half, backend="triton"), mfcc(half, backend="triton"))
    with pytest.raises(A.AudioError, match="float32 or float64"):
        A.mfcc(x.detach().to(torch.bfloat16), backend="ref")


def test_errors():
    with pytest.raises(KernelError, match="use backend='ref'"):
        mfcc(torch.zeros(2, 400, dtype=torch.float64), backend="triton")
    with pytest.raises(ValueError, match="at least 400 samples"):
        mfcc(torch.zeros(2, 399, device=DEVICE), backend="triton")
    with pytest.raises(ValueError, match=r"\[S\] or \[B, S\]"):
        mfcc(torch.zeros(1, 2, 400, device=DEVICE), backend="triton")
    with pytest.raises(ValueError, match="resample"):
        A.mfcc(torch.zeros(400), sample_rate=8000, backend="triton")
    with pytest.raises(KernelError, match="powers of two >= 16"):
        mfcc(torch.zeros(1, 400, device=DEVICE), backend="triton", blocks=MfccBlocks(s=24))
    with pytest.raises(KernelError, match="out is"):
        mfcc_triton(torch.zeros(1, 400, device=DEVICE), out=torch.empty(1, 12, 1, device=DEVICE))
