"""Tests of fastdavs.evaluate.metrics: hand-computed values, brute-force / scipy references,
conventions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from fastdavs.evaluate.metrics import (
    confusions,
    linear_probe,
    psnr,
    r2_score,
    retrieval,
    ridge_regression,
    ssim,
    sync_scores,
    word_accuracy,
)
from fastdavs.model.losses import mouth_mask

F64 = torch.float64
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def unit(degrees: float) -> list[float]:
    r = math.radians(degrees)
    return [math.cos(r), math.sin(r)]


def brute_ranks(query: torch.Tensor, cand: torch.Tensor) -> list[int]:
    """1 + number of other candidates at distance <= the true one, by explicit loops."""
    q = query / query.norm(dim=1, keepdim=True)
    c = cand / cand.norm(dim=1, keepdim=True)
    ranks = []
    for i in range(len(q)):
        d = (q[i] - c).norm(dim=1)
        ranks.append(1 + sum(int(d[j] <= d[i] + 1e-12) for j in range(len(c)) if j != i))
    return ranks


# ---- word accuracy --------------------------------------------------------------------------
def test_confusions_count_the_wrong_guesses_by_name():
    names = ["A", "B", "C", "D"]
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 3])
    guess = torch.tensor([1, 1, 0, 0, 1, 1, 3, 3])  # A->B twice, B->A, C->B, C->D
    logits = torch.nn.functional.one_hot(guess, 4).float() + torch.rand(8, 4) * 0.1
    got = confusions(logits, labels, names)
    assert got == [["A", "B", 2], ["B", "A", 1], ["C", "B", 1], ["C", "D", 1]]
    assert confusions(logits, labels, names, top=2) == got[:2]
    assert confusions(torch.nn.functional.one_hot(labels, 4).float(), labels, names) == []
    with pytest.raises(ValueError, match="names"):
        confusions(logits, labels, names[:3])


def test_word_accuracy_hand_value():
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 1.0, 3.0], [0.0, 5.0, 1.0], [1.0, 0.0, 0.0]])
    labels = torch.tensor([0, 2, 0, 1])
    assert word_accuracy(logits, labels) == 0.5
    with pytest.raises(ValueError):
        word_accuracy(logits, labels[:3])


# ---- retrieval ------------------------------------------------------------------------------
def test_retrieval_identical_embeddings_are_perfect():
    emb = torch.randn(50, 16)
    out = retrieval(emb, emb * 3.0)  # scale does not matter: normalised inside
    for direction in ("audio_to_video", "video_to_audio"):
        assert out[direction] == {
            "r1": 1.0,
            "r5": 1.0,
            "r10": 1.0,
            "median_rank": 1,
            "mean_rank": 1.0,
        }


@pytest.mark.parametrize("device", DEVICES)
def test_retrieval_hand_built_case_with_a_tie(device):
    # Videos at 0, 90, 180, 270 degrees. Audio 2 (225 deg) is exactly as far from video 3 as
    # from its own video 2: the tie counts against it (rank 2).
    video = torch.tensor([unit(0), unit(90), unit(180), unit(270)], dtype=F64)
    audio = torch.tensor([unit(0), unit(10), unit(225), unit(90)], dtype=F64)
    audio = audio * torch.tensor([[1.0], [2.0], [0.5], [7.0]], dtype=F64)
    # a2v ranks [1, 2, 2, 4]; v2a ranks [1, 2, 1, 4] (worked out by hand from the angles)
    assert brute_ranks(audio, video) == [1, 2, 2, 4]
    assert brute_ranks(video, audio) == [1, 2, 1, 4]
    out = retrieval(audio.to(device), video.to(device), chunk_size=3)
    assert out["audio_to_video"] == {
        "r1": 0.25,
        "r5": 1.0,
        "r10": 1.0,
        "median_rank": 2,
        "mean_rank": 2.25,
    }
    # sorted ranks 1, 1, 2, 4: median 1.5 is floored to 1
    assert out["video_to_audio"] == {
        "r1": 0.5,
        "r5": 1.0,
        "r10": 1.0,
        "median_rank": 1,
        "mean_rank": 2.0,
    }


def test_retrieval_collapsed_embeddings_rank_last():
    n = 12
    out = retrieval(torch.ones(n, 4), torch.ones(n, 4))
    assert out["audio_to_video"]["mean_rank"] == n
    assert out["audio_to_video"]["r10"] == 0.0


def test_retrieval_matches_brute_force_ranks():
    audio, video = torch.randn(37, 5, dtype=F64), torch.randn(37, 5, dtype=F64)
    video[:10] = audio[:10] + 0.3 * video[:10]  # some easy items, so ranks spread
    a2v, v2a = brute_ranks(audio, video), brute_ranks(video, audio)
    out = retrieval(audio, video, chunk_size=8)
    for ranks, key in ((a2v, "audio_to_video"), (v2a, "video_to_audio")):
        r = np.array(ranks)
        assert out[key]["mean_rank"] == pytest.approx(r.mean(), abs=1e-12)
        assert out[key]["median_rank"] == math.floor(np.median(r))
        for k in (1, 5, 10):
            assert out[key][f"r{k}"] == pytest.approx((r <= k).mean(), abs=1e-12)


def test_retrieval_random_is_near_chance():
    n = 500
    out = retrieval(torch.randn(n, 64), torch.randn(n, 64))
    for direction in out.values():
        assert direction["r1"] <= 0.05
        assert direction["r10"] <= 0.1
        assert 150 <= direction["median_rank"] <= 350


@pytest.mark.parametrize("chunk_size", [1, 7, 64, 1000])
def test_retrieval_chunked_equals_unchunked(chunk_size):
    audio = torch.randn(64, 8)
    video = audio + 0.8 * torch.randn(64, 8)
    assert retrieval(audio, video, chunk_size=chunk_size) == retrieval(audio, video, chunk_size=64)


def test_retrieval_directions_swap():
    audio = torch.randn(40, 8)
    video = audio + torch.randn(40, 8)
    forward, backward = retrieval(audio, video), retrieval(video, audio)
    assert forward["audio_to_video"] == backward["video_to_audio"]
    assert forward["video_to_audio"] == backward["audio_to_video"]
    assert forward["audio_to_video"] != forward["video_to_audio"]  # the test can fail


# ---- linear probe ---------------------------------------------------------------------------
def blobs(n: int, k: int, d: int, spread: float) -> tuple[torch.Tensor, torch.Tensor]:
    centres = torch.randn(k, d) * 5
    labels = torch.randint(0, k, (n,))
    return centres[labels] + spread * torch.randn(n, d) + 100.0, labels  # offset: standardised


@pytest.mark.parametrize("device", DEVICES)
def test_linear_probe_separable_blobs(device):
    x, y = blobs(1200, 4, 8, spread=1.0)
    x, y = x.to(device), y.to(device)
    out = linear_probe(x[:600], y[:600], x[600:], y[600:], num_classes=4)
    assert out["accuracy"] > 0.95


def test_linear_probe_independent_labels_near_chance():
    x = torch.randn(4000, 16)
    y = torch.randint(0, 4, (4000,))
    out = linear_probe(x[:2000], y[:2000], x[2000:], y[2000:], num_classes=4)
    assert abs(out["accuracy"] - out["chance"]) < 0.05
    assert abs(out["chance"] - 0.25) < 0.03


def test_linear_probe_chance_is_majority_class():
    x = torch.randn(20, 3)
    y_train = torch.arange(20) % 5
    y_test = torch.tensor([0] * 10 + [1] * 6 + [2] * 4)  # 5 classes, 3 present
    out = linear_probe(x, y_train, x, y_test, num_classes=5)
    assert out["chance"] == 0.5


def test_linear_probe_is_deterministic():
    x, y = blobs(400, 3, 6, spread=4.0)  # overlapping blobs: accuracy strictly between 0 and 1
    torch.manual_seed(1)
    first = linear_probe(x[:200], y[:200], x[200:], y[200:], num_classes=3)
    torch.manual_seed(2)
    second = linear_probe(x[:200], y[:200], x[200:], y[200:], num_classes=3)
    assert first == second
    assert 0.4 < first["accuracy"] < 1.0


def test_linear_probe_under_inference_mode():
    with torch.inference_mode():  # features and labels are inference tensors, as in eval
        x, y = blobs(300, 3, 4, spread=1.0)
        out = linear_probe(x[:150], y[:150], x[150:], y[150:], num_classes=3)
    assert out["accuracy"] > 0.9


def test_linear_probe_rejects_bad_labels():
    x = torch.randn(10, 3)
    with pytest.raises(ValueError, match="train labels"):
        linear_probe(x, torch.full((10,), 3), x, torch.zeros(10, dtype=torch.long), num_classes=3)


# ---- psnr -----------------------------------------------------------------------------------
def test_psnr_hand_value():
    real = torch.rand(2, 3, 8, 8) * 0.8
    fake = real + 0.1  # MSE 0.01 -> 10 log10(1 / 0.01) = 20 dB
    assert torch.allclose(psnr(fake, real), torch.full((2,), 20.0, dtype=F64), atol=1e-5)


def test_psnr_clips_average_frames():
    real = torch.zeros(1, 2, 3, 4, 4)
    fake = real.clone()
    fake[:, 0] += 0.1  # frame 0: 20 dB
    fake[:, 1] += 0.01  # frame 1: 40 dB
    assert psnr(fake, real).item() == pytest.approx(30.0, abs=1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_psnr_mask_restricts(device):
    box = (2, 5, 1, 7)
    m = mouth_mask(8, 8, box, device=device)
    real = torch.rand(3, 2, 3, 8, 8, device=device)
    fake = real + 0.1 * (1 - m)  # differs only outside the box
    assert torch.isinf(psnr(fake, real, m)).all()
    fake = fake + 0.01 * m  # inside: MSE 1e-4 -> 40 dB
    out = psnr(fake, real, m.bool())
    assert torch.allclose(out.cpu(), torch.full((3,), 40.0, dtype=F64), atol=1e-4)
    assert (psnr(fake, real) < 25).all()  # the full frame sees the outside error
    with pytest.raises(ValueError, match="no pixel"):
        psnr(fake, real, torch.zeros(8, 8))


# ---- ssim -----------------------------------------------------------------------------------
def ssim_ref(x: np.ndarray, y: np.ndarray) -> float:
    """Wang et al. 2004 on one [C, H, W] float64 image pair, scipy Gaussian filter, valid mean."""
    c1, c2 = 0.01**2, 0.03**2
    values = []
    for a, b in zip(x, y, strict=True):

        def blur(img: np.ndarray) -> np.ndarray:
            # radius int(3.333 * 1.5 + 0.5) = 5: the 11-tap window; keep the valid region only
            return gaussian_filter(img, sigma=1.5, truncate=5 / 1.5)[5:-5, 5:-5]

        mu_a, mu_b = blur(a), blur(b)
        var_a = blur(a * a) - mu_a**2
        var_b = blur(b * b) - mu_b**2
        cov = blur(a * b) - mu_a * mu_b
        s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
            (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
        )
        values.append(s.mean())
    return float(np.mean(values))


def test_ssim_identical_is_one():
    x = torch.rand(2, 3, 3, 16, 16)
    assert torch.allclose(ssim(x, x), torch.ones(2, dtype=F64), atol=1e-12)


@pytest.mark.parametrize("device", DEVICES)
def test_ssim_matches_scipy_reference(device):
    real = torch.rand(3, 3, 24, 19)
    fake = (real + 0.2 * torch.randn(3, 3, 24, 19)).clamp(0, 1)
    out = ssim(fake.to(device), real.to(device)).cpu()
    ref = [
        ssim_ref(f.double().numpy(), r.double().numpy()) for f, r in zip(fake, real, strict=True)
    ]
    assert torch.allclose(out, torch.tensor(ref, dtype=F64), atol=1e-5, rtol=0)
    assert (out < 0.9).all()  # noise lowered it, so the comparison is not trivially 1 = 1


def test_ssim_constant_offset_reduces_it():
    real = torch.rand(2, 3, 16, 16) * 0.5
    fake = real + 0.3
    out = ssim(fake, real)
    assert (out < 0.95).all()
    assert torch.allclose(ssim(real + 0.1, real), ssim(real + 0.1, real))
    assert (ssim(real + 0.1, real) > out).all()  # a smaller offset costs less


def test_ssim_box_is_the_crop():
    real = torch.rand(2, 4, 3, 32, 32)
    fake = (real + 0.2 * torch.randn_like(real)).clamp(0, 1)
    box = (10, 26, 4, 30)
    crop = (..., slice(10, 26), slice(4, 30))
    assert torch.equal(ssim(fake, real, box), ssim(fake[crop], real[crop]))
    fake_outside = real.clone()
    fake_outside[..., :5, :] = 0  # damage only above the box
    assert torch.allclose(ssim(fake_outside, real, box), torch.ones(2, dtype=F64))
    assert (ssim(fake_outside, real) < 1).all()
    with pytest.raises(ValueError, match="window"):
        ssim(fake, real, (0, 8, 0, 16))  # an 8-row crop is smaller than the 11x11 window


def test_image_metrics_chunk_long_clips(monkeypatch):
    import fastdavs.evaluate.metrics as metrics

    real = torch.rand(2, 5, 3, 16, 16)
    fake = (real + 0.1 * torch.randn_like(real)).clamp(0, 1)
    whole_s, whole_p = ssim(fake, real), psnr(fake, real)
    monkeypatch.setattr(metrics, "_CHUNK_ELEMENTS", 2 * 3 * 16 * 16)  # 2 frames per chunk
    assert torch.allclose(ssim(fake, real), whole_s, atol=1e-12)
    assert torch.allclose(psnr(fake, real), whole_p, atol=1e-12)


# ---- sync -----------------------------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("k", [3, -2, 0])
def test_sync_shifted_audio(k, device):
    t, d, pad = 29, 32, 5
    base = torch.randn(t + 2 * pad, d)
    video = base[pad : pad + t]
    audio = base[pad - k : pad - k + t]  # audio[t + k] == video[t]: the audio lags by k
    out = sync_scores(video.to(device), audio.to(device))
    assert out["offset"] == k
    assert out["distance"] == pytest.approx(0.0, abs=1e-12)
    assert out["confidence"] > 1.0  # unrelated unit vectors in 32-d are ~sqrt(2) apart


def test_sync_identical_and_batched():
    video = torch.randn(4, 20, 16)
    out = sync_scores(video[0], video[0] * 2.0, max_offset=5)
    assert out["offset"] == 0 and out["distance"] == 0.0 and out["confidence"] > 0
    audio = video.clone()
    audio[1] = torch.roll(video[1], 2, dims=0)  # audio lags by 2 (wrapped frames add noise)
    batched = sync_scores(video, audio, max_offset=5)
    assert batched["offset"].tolist() == [0, 2, 0, 0]
    for i in range(4):
        single = sync_scores(video[i], audio[i], max_offset=5)
        assert single["distance"] == pytest.approx(batched["distance"][i].item(), abs=1e-12)
        assert single["confidence"] == pytest.approx(batched["confidence"][i].item(), abs=1e-12)


def test_sync_hand_value():
    # T = 3, D = 2, max_offset 1. v = (e0, e1, e0), a = (e1, e0, e1): at o = 0 every pair
    # differs (sqrt 2 each); at o = +1 and o = -1 both overlapping pairs match (0 each).
    e0, e1 = [1.0, 0.0], [0.0, 1.0]
    video = torch.tensor([e0, e1, e0])
    audio = torch.tensor([e1, e0, e1])
    out = sync_scores(video, audio, max_offset=1)
    assert out["distance"] == 0.0
    assert out["offset"] == -1  # equal minima at -1 and +1: the smaller |o|, then the lower o
    assert out["confidence"] == 0.0  # means (0, sqrt 2, 0): median 0
    with pytest.raises(ValueError, match="max_offset"):
        sync_scores(video, audio, max_offset=3)


def test_sync_collapsed_embeddings():
    out = sync_scores(torch.ones(10, 4), torch.ones(10, 4), max_offset=4)
    assert out == {"offset": 0, "distance": 0.0, "confidence": 0.0}


# ---- regression probe -----------------------------------------------------------------------
def test_r2_hand_values():
    y = torch.tensor([1.0, 2.0, 3.0, 6.0])  # mean 3, sum of squares about it 14
    assert r2_score(y, y) == 1.0
    assert r2_score(torch.full((4,), 3.0), y) == 0.0  # the mean: 0
    p = torch.tensor([1.0, 3.0, 3.0, 4.0])  # residuals 0, -1, 0, 2: 5
    assert r2_score(p, y) == pytest.approx(1 - 5 / 14, abs=1e-15)
    assert r2_score(-y, y) < 0  # worse than the mean
    assert r2_score(p.view(2, 2), y.view(2, 2)) == r2_score(p, y)  # over all elements
    assert r2_score(p, torch.ones(4)) is None  # constant targets: undefined
    with pytest.raises(ValueError):
        r2_score(p, y[:3])


def test_ridge_matches_the_normal_equations_and_shrinks_to_the_mean():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 6, generator=g, dtype=F64) * torch.arange(1.0, 7.0, dtype=F64) + 5
    w_true = torch.tensor([0.5, -1.0, 0.0, 2.0, 0.3, 0.0], dtype=F64)
    y = x @ w_true + 0.7 + 0.01 * torch.randn(200, generator=g, dtype=F64)
    fits = ridge_regression(x.float(), y, [1e-3, 1e6])
    # The reference: standardise, centre y, solve (Z^T Z + alpha N I) w = Z^T (y - mean) in NumPy.
    alpha, n = 1e-3, 200
    xn = x.float().double().numpy()  # the features the fit saw
    z = (xn - xn.mean(0)) / xn.std(0)
    w = np.linalg.solve(z.T @ z + alpha * n * np.eye(6), z.T @ (y.numpy() - y.numpy().mean()))
    np.testing.assert_allclose(fits[0].weight.numpy(), w, rtol=1e-9, atol=1e-12)
    assert fits[0].bias == pytest.approx(y.mean().item(), abs=1e-12)
    assert r2_score(fits[0].predict(x.float()), y) > 0.9999  # the truth is linear
    assert fits[1].alpha == 1e6 and fits[1].weight.abs().max() < 1e-4  # all but the mean
    assert r2_score(fits[1].predict(x), y) == pytest.approx(0, abs=1e-3)
    # alpha is per sample: the same data twice gives the same fit.
    (twice,) = ridge_regression(torch.cat([x, x]).float(), torch.cat([y, y]), [1e-3])
    torch.testing.assert_close(twice.weight, fits[0].weight, rtol=1e-9, atol=1e-12)


def test_ridge_leaves_constant_features_unscaled_and_checks_inputs():
    x = torch.stack([torch.arange(10.0), torch.full((10,), 3.0)], 1)  # one constant column
    (fit,) = ridge_regression(x, 2 * torch.arange(10.0), [1e-6])
    assert fit.scale[1] == 1 and fit.weight[1] == 0
    assert r2_score(fit.predict(x), 2 * torch.arange(10.0)) > 0.9999
    with pytest.raises(ValueError):
        ridge_regression(x, torch.zeros(9), [1.0])
    with pytest.raises(ValueError):
        ridge_regression(x, torch.zeros(10), [0.0])


def test_image_metrics_average_the_selected_frames():
    real = torch.rand(2, 4, 3, 16, 16)
    fake = (real + 0.1 * torch.randn_like(real)).clamp(0, 1)
    fake[0, 2] = real[0, 2]  # a perfect frame: +inf PSNR, 1 SSIM
    frames = torch.tensor([[True, True, False, True], [False, True, True, False]])
    for metric in (psnr, ssim):
        per_frame = torch.stack([metric(fake[:, t], real[:, t]) for t in range(4)], 1)  # [B, T]
        expected = torch.stack([per_frame[b][frames[b]].mean() for b in range(2)])
        torch.testing.assert_close(metric(fake, real, frames=frames), expected)
    assert psnr(fake, real)[0] == math.inf  # all frames: the perfect one makes it infinite
    assert math.isfinite(psnr(fake, real, frames=frames)[0])  # left out, it does not
    with pytest.raises(ValueError, match="selecting >= 1 frame"):
        psnr(fake, real, frames=torch.zeros(2, 4, dtype=torch.bool))
