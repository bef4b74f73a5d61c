"""The cepstral vocal-tract length perturbation (`--audio-warp`): its matrices against SynthLRW's
synthesizer, and the per-clip augmentation built on them."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from fastdavs.config import DavsConfig
from fastdavs.data import phonemes, voice
from fastdavs.data.audio import audio_to_windows, formant_warp_matrices, mfcc
from fastdavs.model.davs import DavsModel, formant_warp


def test_scale_one_is_the_identity_and_shapes():
    m = formant_warp_matrices(torch.tensor([1.0, 1.2, 0.8]))
    assert m.shape == (3, 12, 12) and m.dtype == torch.float64
    torch.testing.assert_close(m[0], torch.eye(12, dtype=torch.float64), atol=1e-12, rtol=0)
    assert not torch.allclose(m[1], m[2])
    for bad in (torch.tensor([1.0, 0.0]), torch.tensor([[1.0]]), torch.tensor([-1.0])):
        with pytest.raises(ValueError, match="positive factors"):
            formant_warp_matrices(bad)


@pytest.mark.parametrize("f0", [130.0, 220.0])
@pytest.mark.parametrize("scale", [0.87, 1.15])
def test_warp_moves_mfcc_towards_the_voice_with_scaled_formants(scale, f0):
    """The same takes said by one voice with formant scale 1 and with `scale`: on the frames
    that hold speech, the warp of the first's MFCCs by `scale` is nearer the second's than the
    first is, and the inverse warp (the wrong direction) is farther. In silence the MFCCs are
    those of the noise floor, which no formant moves."""
    vocab = phonemes.make_vocabulary(30, 0)
    rng = np.random.default_rng(7)
    base = voice.Voice(f0=f0, formant_scale=1.0)
    err_none = err_warp = err_inverse = 0.0
    warp, inverse = formant_warp_matrices(torch.tensor([scale, 1 / scale]))
    for w in range(0, 30, 5):
        take = phonemes.random_take(rng)
        segments = phonemes.timeline(vocab[w], take)
        audio = [
            torch.tensor(voice.synthesize(segments, v, take, seed=1), dtype=torch.float64)
            for v in (base, dataclasses.replace(base, formant_scale=scale))
        ]
        src, tgt = (mfcc(a).T for a in audio)  # [F, 12] each
        rms = audio[0].unfold(0, 400, 160).pow(2).mean(1).sqrt()  # [F], the recipe's frames
        speech = rms > 0.05 * rms.max()
        err_none += (tgt - src)[speech].pow(2).mean().item()
        err_warp += (tgt - src @ warp.T)[speech].pow(2).mean().item()
        err_inverse += (tgt - src @ inverse.T)[speech].pow(2).mean().item()
    assert err_warp < 0.75 * err_none  # single takes: 0.2-0.7 of it at f0 130 Hz, 0.3-1.2 at 220
    assert err_inverse > 1.5 * err_none


def test_formant_warp_is_one_factor_per_clip_within_the_range():
    torch.manual_seed(0)
    windows = torch.randn(6, 3, 20, 12, dtype=torch.float64)
    out = formant_warp(windows, 0.2)
    assert out.shape == windows.shape and out.dtype == windows.dtype
    found = []
    for b in range(len(windows)):
        x, y = windows[b].reshape(-1, 12), out[b].reshape(-1, 12)  # every window and step
        # The clip's map, y = x @ A: one matrix for all its windows (least squares, exact here).
        a = torch.linalg.lstsq(x, y).solution  # [K, K]
        torch.testing.assert_close(x @ a, y, atol=1e-5, rtol=0)
        # ... which is a warp matrix of a factor inside exp(+-0.2): a coarse grid, then a fine one.
        log_scale = torch.linspace(-0.2, 0.2, 401, dtype=torch.float64)
        for _ in range(2):
            err = (formant_warp_matrices(log_scale.exp()).transpose(1, 2) - a).abs().amax((1, 2))
            best = log_scale[err.argmin()].item()
            log_scale = torch.linspace(best - 1e-3, best + 1e-3, 401, dtype=torch.float64)
        assert err.min() < 1e-4  # float32 matrices (a step of 5e-6 in log scale moves 1e-4)
        found.append(best)
    assert max(found) - min(found) > 0.05  # clips get different factors
    torch.testing.assert_close(formant_warp(windows, 0.0), windows, atol=1e-6, rtol=1e-6)
    assert formant_warp(windows.bfloat16(), 0.2).dtype == torch.bfloat16


def test_the_model_warps_only_while_training():
    """The audio word encoder has no other randomness: with the warp off, or in eval mode, the
    RNG's state does not matter; with it on in training, it does."""
    cfg = DavsConfig.from_preset("tiny", audio_warp=0.3)
    model = DavsModel(cfg)
    audio = torch.from_numpy(np.random.default_rng(0).standard_normal(16000) * 0.1).float()
    windows = audio_to_windows(audio)[None, : cfg.seq_len]  # [1, L, 20, 12]

    def twice() -> tuple[torch.Tensor, torch.Tensor]:
        torch.manual_seed(1)
        a = model.encode_audio(windows)
        torch.manual_seed(2)
        return a, model.encode_audio(windows)

    model.eval()
    torch.testing.assert_close(*twice(), atol=0, rtol=0)
    model.audio_encoder.train()
    a, b = twice()
    assert not torch.allclose(a, b)
    model.cfg.audio_warp = 0.0
    torch.testing.assert_close(*twice(), atol=0, rtol=0)
