"""Microbenchmarks (pytest-benchmark) of the CPU reference paths of fastdavs.kernels and of the
librosa MFCC baseline, at small production shapes (the `small` preset, a training batch of 16).

Skipped in the default test run (`--benchmark-skip` in pyproject.toml); run them with
    .venv/bin/pytest tests/test_bench_kernels.py --benchmark-only
Every benchmark also checks what it timed against a float64 reference on fresh random inputs.
`bench/kernels.py` is the full comparison (torch.compile, Triton on a GPU, roofline, memory).
"""

import importlib.util
from pathlib import Path

import numpy as np
import torch

from fastdavs.config import DavsConfig
from fastdavs.kernels import contrastive_loss_ref, mfcc_ref, temporal_conv_ref

SMALL = DavsConfig.from_preset("small")
B = SMALL.optim.batch_size  # 8


def _fwd_bwd(fn, inputs, dy, **kwargs):
    """(output, *gradients of the inputs) for upstream gradient dy."""
    out = fn(*inputs, **kwargs)
    return (out, *torch.autograd.grad(out, inputs, dy))


def _leaves(*shape_list, dtype=torch.float32):
    return [torch.randn(*s, dtype=dtype, requires_grad=True) for s in shape_list]


def _check(results, expected, atol):
    for got, want in zip(results, expected, strict=True):
        assert got.shape == want.shape
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got.detach().double(), want.detach(), rtol=0, atol=atol)


def test_temporal_conv_ref_fwd_bwd(benchmark):
    # The tcn word head's second conv in training (BatchNorm follows, so a bare conv):
    # [B, hidden, seq_len], 3 taps, dilation 2, zero padding 2.
    hid = SMALL.ch(512)
    x, w = _leaves((B, hid, SMALL.seq_len), (hid, hid, 3))
    dy = torch.randn(B, hid, SMALL.seq_len)
    conv = dict(padding=2, dilation=2)
    results = benchmark(_fwd_bwd, temporal_conv_ref, [x, w], dy, **conv)
    x64, w64 = (t.detach().double().requires_grad_() for t in (x, w))
    expected = _fwd_bwd(temporal_conv_ref, [x64, w64], dy.double(), **conv)
    assert results[0].shape == (B, hid, SMALL.seq_len)
    _check(results, expected, atol=1e-4)


def test_contrastive_loss_ref_fwd_bwd(benchmark):
    # The wid stage's loss on a training batch of small-preset sequence embeddings.
    a, v = _leaves((B, SMALL.seq_dim), (B, SMALL.seq_dim))
    dy = torch.tensor(1.0)
    results = benchmark(_fwd_bwd, contrastive_loss_ref, [a, v], dy)
    a64, v64 = (t.detach().double().requires_grad_() for t in (a, v))
    expected = _fwd_bwd(contrastive_loss_ref, [a64, v64], dy.double())
    assert results[0].dim() == 0 and results[0] > 0
    _check(results, expected, atol=1e-6)


def _clips() -> torch.Tensor:
    """16 one-second clips of white noise at 0.1 full scale (float32)."""
    return 0.1 * torch.randn(B, 16000)


def test_mfcc_ref(benchmark):
    audio = _clips()
    coeffs = benchmark(mfcc_ref, audio)
    assert coeffs.shape == (B, 12, 98) and coeffs.dtype == torch.float32
    # the project's MFCC accuracy target: 1e-4 against the float64 reference
    _check([coeffs], [mfcc_ref(audio.double())], atol=1e-4)


def _librosa_baseline():
    """`mfcc_librosa` of bench/mfcc_librosa.py (bench/ holds scripts, not a package; loaded
    here, not at import, so that the skipped default run does not import librosa)."""
    path = Path(__file__).resolve().parents[1] / "bench" / "mfcc_librosa.py"
    spec = importlib.util.spec_from_file_location("mfcc_librosa", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.mfcc_librosa


def test_mfcc_librosa_baseline(benchmark):
    audio = _clips()
    coeffs = benchmark(_librosa_baseline(), audio.numpy())
    assert coeffs.shape == (B, 12, 98) and coeffs.dtype == np.float64
    _check([torch.from_numpy(coeffs)], [mfcc_ref(audio.double())], atol=1e-8)
