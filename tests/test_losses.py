"""Tests of fastdavs.model.losses: hand-computed values, brute-force references, gradients,
dtypes."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from fastdavs.config import DavsConfig
from fastdavs.model.losses import (
    contrastive_loss,
    cross_entropy,
    gan_loss,
    identity_scatter_loss,
    modality_discriminator_loss,
    modality_flip_loss,
    mouth_mask,
    reconstruction_loss,
    smoothness_loss,
    uniform_softmax_loss,
    view_consistency_loss,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
BOX = (2, 5, 1, 7)  # on an 8x8 image: 3 rows x 6 columns = 18 of 64 pixels
F64 = torch.float64


def softplus(x: float) -> float:
    """-log(sigmoid(-x)) = BCE of logit x against target 0, in plain floats."""
    return math.log1p(math.exp(x))


# ---- contrastive ------------------------------------------------------------------------------
def contrastive_brute(audio: torch.Tensor, video: torch.Tensor, margin: float) -> float:
    """The loss by a double loop over pairs, in Python floats."""
    b = audio.shape[0]
    rows_a = [[float(x) for x in r] for r in audio.reshape(b, -1).tolist()]
    rows_v = [[float(x) for x in r] for r in video.reshape(b, -1).tolist()]

    def unit(r):
        n = math.sqrt(sum(x * x for x in r))
        return [x / n for x in r]

    rows_a, rows_v = [unit(r) for r in rows_a], [unit(r) for r in rows_v]
    total = 0.0
    for i in range(b):
        for j in range(b):
            d = math.sqrt(sum((x - y) ** 2 for x, y in zip(rows_v[i], rows_a[j], strict=True)))
            total += d * d if i == j else max(0.0, margin - d) ** 2
    return total / (2 * b)


def test_contrastive_hand_values():
    eye = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=F64)
    swapped = eye.flip(0)
    # Matched: d_ii = 0, d_01 = d_10 = sqrt(2) > margin 1 -> every term is 0.
    assert contrastive_loss(eye, eye).item() == 0.0
    # Swapped: d_ii = sqrt(2) (2 positives of d^2 = 2), d_01 = d_10 = 0 (2 negatives of
    # (1 - 0)^2 = 1) -> (2 + 2 + 1 + 1) / (2 * 2) = 1.5.
    assert contrastive_loss(eye, swapped).item() == pytest.approx(1.5, rel=1e-12)
    # Margin 2, matched: 2 negatives of (2 - sqrt(2))^2 -> (2 - sqrt(2))^2 / 2 = 3 - 2 sqrt(2).
    expected = 3 - 2 * math.sqrt(2)
    assert contrastive_loss(eye, eye, margin=2.0).item() == pytest.approx(expected, rel=1e-12)
    # Margin 0 switches negatives off: swapped -> (2 + 2) / 4 = 1.
    assert contrastive_loss(eye, swapped, margin=0.0).item() == pytest.approx(1.0, rel=1e-12)
    # Three identical rows on both sides: d = 0 everywhere -> 6 negatives of 1^2 / (2 * 3) = 1.
    same = torch.ones(3, 4, dtype=F64)
    assert contrastive_loss(same, same).item() == pytest.approx(1.0, rel=1e-12)


def test_contrastive_normalises_rows():
    audio, video = torch.randn(5, 7, dtype=F64), torch.randn(5, 7, dtype=F64)
    scale = torch.rand(5, 1, dtype=F64) * 10 + 0.1
    base = contrastive_loss(audio, video, margin=1.5)
    torch.testing.assert_close(contrastive_loss(audio * scale, video, margin=1.5), base)
    torch.testing.assert_close(contrastive_loss(audio, video / scale, margin=1.5), base)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(1, 5), (3, 5), (7, 5), (4, 3, 4)], ids=str)
@pytest.mark.parametrize("margin", [1.0, 1.5])
def test_contrastive_matches_double_loop(shape, margin, device):
    audio, video = torch.randn(shape, dtype=F64), torch.randn(shape, dtype=F64)
    got = contrastive_loss(audio.to(device), video.to(device), margin=margin)
    assert got.device.type == device
    assert got.item() == pytest.approx(
        contrastive_brute(audio, video, margin), rel=1e-10, abs=1e-12
    )


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize(
    "case", ["B=1", "B=1 identical", "identical pairs", "identical rows"], ids=str
)
def test_contrastive_gradients_finite_at_zero_distance(case, dtype):
    if case == "B=1":
        audio, video = torch.randn(1, 6), torch.randn(1, 6)
    elif case == "B=1 identical":
        audio = video = torch.randn(1, 6)
    elif case == "identical pairs":  # d_ii = 0
        audio = video = torch.randn(4, 6)
    else:  # every row the same: d_ij = 0 for i != j as well
        audio = video = torch.randn(1, 6).expand(4, 6)
    audio = audio.to(dtype).clone().requires_grad_()
    video = video.to(dtype).clone().requires_grad_()
    loss = contrastive_loss(audio, video)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(audio.grad).all() and torch.isfinite(video.grad).all()


@pytest.mark.parametrize("shape", [(4, 6), (3, 2, 3)], ids=str)
def test_contrastive_gradcheck(shape):
    audio = torch.randn(shape, dtype=F64, requires_grad=True)
    video = torch.randn(shape, dtype=F64, requires_grad=True)
    # margin 2 >= every distance of unit vectors, so every negative's hinge is active.
    assert torch.autograd.gradcheck(lambda a, v: contrastive_loss(a, v, margin=2.0), (audio, video))


def test_contrastive_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="same"):
        contrastive_loss(torch.randn(3, 4), torch.randn(3, 5))


# ---- uniform softmax ----------------------------------------------------------------------------
def test_uniform_softmax_hand_values():
    constant_rows = torch.tensor([[3.0, 3.0, 3.0, 3.0], [-1.0, -1.0, -1.0, -1.0]], dtype=F64)
    assert uniform_softmax_loss(constant_rows).item() == 0.0
    assert uniform_softmax_loss(torch.full((2, 500), 0.7, dtype=F64)).item() == pytest.approx(
        0.0, abs=1e-20
    )
    # softmax([0, ln 3]) = [1/4, 3/4]; ((1/4 - 1/2)^2 + (3/4 - 1/2)^2) / 2 = 0.0625.
    logits = torch.tensor([[0.0, math.log(3.0)]] * 3, dtype=F64)
    assert uniform_softmax_loss(logits).item() == pytest.approx(0.0625, rel=1e-12)


# ---- modality adversary -----------------------------------------------------------------------
def test_modality_losses_at_zero_logits():
    zeros = torch.zeros(2, 3, 1, dtype=F64)
    # sigmoid(0) = 1/2, so every BCE is ln 2.
    assert modality_discriminator_loss(zeros, zeros).item() == pytest.approx(math.log(2), rel=1e-12)
    assert modality_flip_loss(zeros, zeros).item() == pytest.approx(2 * math.log(2), rel=1e-12)


def test_modality_losses_large_logits():
    audio = torch.full((2, 3, 1), 20.0, dtype=F64)  # D is sure audio is audio
    video = torch.full((2, 3, 1), -20.0, dtype=F64)  # and video is video
    # disc: 0.5 * (BCE(20, 1) + BCE(-20, 0)) = softplus(-20); flip: 2 * softplus(20).
    disc = modality_discriminator_loss(audio, video).item()
    assert disc == pytest.approx(softplus(-20.0), rel=1e-12)
    flip = modality_flip_loss(audio, video).item()
    assert flip == pytest.approx(2 * softplus(20.0), rel=1e-12)
    # float32 logits of +-50: the logits form gives 2 * 50 exactly, where sigmoid + BCE saturates.
    assert modality_flip_loss(audio.float() * 2.5, video.float() * 2.5).item() == 100.0


def test_modality_losses_match_sigmoid_bce():
    audio, video = torch.randn(4, 5, 1, dtype=F64) * 3, torch.randn(4, 5, 1, dtype=F64) * 3
    pa, pv = audio.sigmoid(), video.sigmoid()
    one, zero = torch.ones_like(pa), torch.zeros_like(pa)
    bce = F.binary_cross_entropy
    disc = 0.5 * (bce(pa, one) + bce(pv, zero))
    flip = bce(pa, zero) + bce(pv, one)
    torch.testing.assert_close(modality_discriminator_loss(audio, video), disc)
    torch.testing.assert_close(modality_flip_loss(audio, video), flip)


# ---- reconstruction -----------------------------------------------------------------------------
def test_mouth_mask():
    mask = mouth_mask(8, 8, BOX, dtype=F64)
    assert mask.shape == (8, 8) and mask.dtype == F64
    assert mask.sum().item() == 18
    assert mask[2:5, 1:7].eq(1).all()
    cfg = DavsConfig.from_preset("paper")
    assert mouth_mask(256, 256, cfg.mouth_box_px).sum().item() == 64 * 128  # rows 170:234, 64:192
    with pytest.raises(ValueError, match="mouth box"):
        mouth_mask(8, 8, (2, 9, 1, 7))


def test_reconstruction_hand_values():
    real = torch.rand(1, 2, 3, 8, 8, dtype=F64) * 0.5  # [B, T, 3, H, W]
    mask = mouth_mask(8, 8, BOX, dtype=F64)
    # +0.1 on the 18 mouth pixels: both L1 means are 0.1 * 255 * 18 / 64 = 7.171875,
    # so 4 * 7.171875 + 8 * 7.171875 = 86.0625.
    fake = real + 0.1 * mask
    assert reconstruction_loss(fake, real, BOX).item() == pytest.approx(86.0625, rel=1e-12)
    one_term = reconstruction_loss(fake, real, BOX, weight=1.0, mouth_weight=0.0)
    assert one_term.item() == pytest.approx(7.171875, rel=1e-12)
    # +0.1 on the 46 other pixels: 4 * 0.1 * 255 * 46 / 64 = 73.3125 and no mouth term.
    fake = real + 0.1 * (1 - mask)
    assert reconstruction_loss(fake, real, BOX).item() == pytest.approx(73.3125, rel=1e-12)
    assert reconstruction_loss(real, real, BOX).item() == 0.0


# ---- smoothness ---------------------------------------------------------------------------------
def test_smoothness_hand_values():
    identity = torch.full((2, 3, 8, 8), 0.5, dtype=F64)
    video = identity[:, None].repeat(1, 4, 1, 1, 1)  # [B, T, 3, H, W]
    mask = mouth_mask(8, 8, BOX, dtype=F64)
    assert smoothness_loss(video, identity, BOX).item() == 0.0
    # The mouth moves every frame: no penalty.
    mouth_moving = video + 0.1 * torch.arange(4, dtype=F64).view(1, 4, 1, 1, 1) * mask
    assert smoothness_loss(mouth_moving, identity, BOX).item() == 0.0
    delta = 1 / 255
    per_change = delta * 46 / 64  # one frame changes by delta on the 46 pixels outside the box
    step = video.clone()
    step[:, 2:] += delta * (1 - mask)  # frame 2 differs from frame 1; frame 3 equals frame 2
    assert smoothness_loss(step, identity, BOX).item() == pytest.approx(per_change, rel=1e-12)
    # The first frame is compared with the identity image.
    shifted = video + delta * (1 - mask)
    assert smoothness_loss(shifted, identity, BOX).item() == pytest.approx(per_change, rel=1e-12)
    # Frames are summed, not averaged: alternating frames change at t = 1, 2, 3.
    flicker = video + delta * (1 - mask) * torch.tensor([0.0, 1, 0, 1], dtype=F64).view(
        1, 4, 1, 1, 1
    )
    assert smoothness_loss(flicker, identity, BOX).item() == pytest.approx(
        3 * per_change, rel=1e-12
    )


def test_smoothness_detaches_previous_frame():
    identity = torch.full((1, 3, 8, 8), 0.5, dtype=F64)
    mask = mouth_mask(8, 8, BOX, dtype=F64)
    on = torch.tensor([0.0, 1, 0, 1], dtype=F64).view(1, 4, 1, 1, 1)
    flicker = (identity[:, None] + 0.1 * (1 - mask) * on).requires_grad_()
    smoothness_loss(flicker, identity, BOX).backward()
    # d/d frame_t comes from its own term only: sign(frame_t - frame_{t-1}) / (B*3*H*W) outside
    # the box; frame 0 equals the identity (|.|' = 0 at 0). Were the previous frame not
    # detached, frames 1 and 2 would get a second, equal contribution from the next term.
    sign = torch.tensor([0.0, 1, -1, 1], dtype=F64).view(1, 4, 1, 1, 1)
    torch.testing.assert_close(
        flicker.grad, sign * (1 - mask) / (3 * 64) * torch.ones_like(flicker)
    )


def test_smoothness_rejects_mismatched_identity():
    with pytest.raises(ValueError, match="identity"):
        smoothness_loss(torch.rand(2, 3, 3, 8, 8), torch.rand(2, 3, 8, 4), BOX)


# ---- GAN ----------------------------------------------------------------------------------------
def test_gan_loss_hard_labels():
    logits = torch.tensor([0.0, 2.0, -1.0], dtype=F64)
    real = (softplus(0.0) + softplus(-2.0) + softplus(1.0)) / 3  # BCE(x, 1) = softplus(-x)
    fake = (softplus(0.0) + softplus(2.0) + softplus(-1.0)) / 3  # BCE(x, 0) = softplus(x)
    assert gan_loss(logits, real=True).item() == pytest.approx(real, rel=1e-12)
    assert gan_loss(logits, real=False).item() == pytest.approx(fake, rel=1e-12)


def soft_targets(real: bool, soft: float, generator: torch.Generator, device="cpu") -> torch.Tensor:
    """The targets `gan_loss` drew, read back from the gradient at logits 0.

    d mean(BCE(x, y)) / dx = (sigmoid(x) - y) / N, so at x = 0: y = 1/2 - N * grad.
    """
    logits = torch.zeros(4, 1, 5, 5, dtype=F64, device=device, requires_grad=True)
    loss = gan_loss(logits, real=real, soft=soft, generator=generator)
    assert loss.item() == pytest.approx(math.log(2), rel=1e-12)  # BCE at x = 0, any target
    loss.backward()
    return 0.5 - logits.numel() * logits.grad


@pytest.mark.parametrize("device", DEVICES)
def test_gan_loss_soft_labels(device):
    gen = torch.Generator().manual_seed(0)
    real = soft_targets(True, 0.1, gen, device)
    fake = soft_targets(False, 0.1, gen, device)
    assert real.device.type == device
    assert ((real > 0.9 - 1e-12) & (real <= 1 + 1e-12)).all()
    assert ((fake >= -1e-12) & (fake < 0.1 + 1e-12)).all()
    assert real.std() > 0.01 and fake.std() > 0.01  # drawn per element, not one scalar
    # Reproducible from the seed; a second call draws new labels (the original froze them).
    again = soft_targets(True, 0.1, torch.Generator().manual_seed(0), device)
    torch.testing.assert_close(again, real)
    assert not torch.allclose(soft_targets(True, 0.1, gen, device), real)


def test_gan_loss_rejects_bad_soft():
    with pytest.raises(ValueError, match="soft"):
        gan_loss(torch.zeros(3), real=True, soft=1.5)


# ---- dtypes and shapes --------------------------------------------------------------------------
def _cases():
    """(name, loss function of float64 inputs, the inputs)."""
    box = BOX
    audio = torch.randn(4, 64)
    near = audio, audio + 0.02 * torch.randn(4, 64)

    def gan(x):
        return gan_loss(x, True, soft=0.1, generator=torch.Generator().manual_seed(1))

    labels = torch.tensor([3, 0, 9, 9])

    def ce(x):
        return cross_entropy(x, labels)

    return [
        ("contrastive", contrastive_loss, (torch.randn(3, 8), torch.randn(3, 8))),
        ("contrastive_btd", contrastive_loss, (torch.randn(3, 2, 4), torch.randn(3, 2, 4))),
        ("uniform", uniform_softmax_loss, (torch.randn(4, 10),)),
        # Near the optimum the loss is tiny and 16-bit intermediates would swamp it.
        ("uniform_near_optimum", uniform_softmax_loss, (torch.randn(4, 500) * 0.01,)),
        ("contrastive_near_optimum", contrastive_loss, (near[0], near[1])),
        (
            "modality_disc",
            modality_discriminator_loss,
            (torch.randn(3, 2, 1), torch.randn(3, 2, 1)),
        ),
        ("modality_flip", modality_flip_loss, (torch.randn(3, 2, 1), torch.randn(3, 2, 1))),
        (
            "reconstruction",
            lambda f, r: reconstruction_loss(f, r, box),
            (torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)),
        ),
        (
            "smoothness",
            lambda f, i: smoothness_loss(f, i, box),
            (torch.rand(2, 3, 3, 8, 8), torch.rand(2, 3, 8, 8)),
        ),
        ("gan_soft", gan, (torch.randn(2, 1, 4, 4),)),
        ("cross_entropy", ce, (torch.randn(4, 10) * 3,)),
    ]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, F64], ids=str)
@pytest.mark.parametrize("name", [c[0] for c in _cases()])
def test_result_is_at_least_float32_and_scalar(name, dtype):
    """16-bit inputs give a float32 loss (a 16-bit one would overflow once the training step
    weights it by 1e6 and a gradient scaler by 65536) computed as float32 inputs would be."""
    fn, inputs = next((f, x) for n, f, x in _cases() if n == name)
    inputs = [x.to(dtype) for x in inputs]
    out = fn(*inputs)
    wide = F64 if dtype == F64 else torch.float32
    assert out.dtype == wide and out.dim() == 0 and torch.isfinite(out)
    # The same (rounded) inputs in float64: only the loss's own float32 (or float64)
    # arithmetic may differ, whatever the input dtype.
    ref = fn(*[x.to(F64) for x in inputs])
    rtol = {torch.float32: 1e-5, F64: 1e-12}[wide]
    torch.testing.assert_close(out.to(F64), ref, rtol=rtol, atol=0.0)


# ---- view consistency -------------------------------------------------------------------------
def test_view_consistency_hand_values():
    # one dimension: views [0, 2] and [1, 2] differ by 1 and 0 (mean square 0.5); the four
    # values 0, 2, 1, 2 have the unbiased variance 2.75 / 3
    a = torch.tensor([[0.0], [2.0]], dtype=F64)
    b = torch.tensor([[1.0], [2.0]], dtype=F64)
    assert math.isclose(view_consistency_loss(a, b).item(), 0.5 / (2.75 / 3), rel_tol=1e-12)
    assert view_consistency_loss(a, a).item() == 0.0


def test_view_consistency_of_unrelated_views_is_about_two_and_scale_free():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 16, 12, 32, generator=g, dtype=F64)  # [B, L, D] each
    out = view_consistency_loss(a, b)
    assert 1.8 < out.item() < 2.2
    torch.testing.assert_close(view_consistency_loss(a * 1e3, b * 1e3), out)
    assert view_consistency_loss(a.bfloat16(), b.bfloat16()).dtype == torch.float32
    x = a.clone().requires_grad_()
    view_consistency_loss(x, b).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().max() > 0
    with pytest.raises(ValueError, match="must match"):
        view_consistency_loss(a, b[:, :3])


# ---- identity scatter -------------------------------------------------------------------------
def test_identity_scatter_hand_values():
    # one dimension, identities {0, 2} and {10, 12}: mean 6, total scatter 36+16+16+36 = 104,
    # identity sums of centred values -10 and +10: between = 100/2 + 100/2 = 100
    x = torch.tensor([[0.0], [2.0], [10.0], [12.0]], dtype=F64)
    out = identity_scatter_loss(x, torch.tensor([0, 0, 1, 1]), 2)
    assert math.isclose(out.item(), 100 / 104, rel_tol=1e-12)
    # a second dimension whose identity means agree halves the mean over dimensions
    x2 = torch.cat((x, torch.tensor([[0.0], [4.0], [1.0], [3.0]], dtype=F64)), 1)
    out2 = identity_scatter_loss(x2, torch.tensor([0, 0, 1, 1]), 2)
    assert math.isclose(out2.item(), (100 / 104 + 0.0) / 2, rel_tol=1e-12)


def test_identity_scatter_ignores_unknown_and_single_clips_and_scale():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(8, 5, generator=g, dtype=F64)
    labels = torch.tensor([0, 0, 1, 1, 1, 2, -1, -1])  # identity 2 once, two unknown clips
    keep = slice(0, 5)
    ref = identity_scatter_loss(x[keep], labels[keep], 3)
    torch.testing.assert_close(identity_scatter_loss(x, labels, 3), ref)
    scale = torch.tensor([1e-3, 1.0, 7.0, 1e3, 2.0], dtype=F64)  # per-dimension units
    torch.testing.assert_close(identity_scatter_loss(x * scale + 4, labels, 3), ref)
    for few in (torch.arange(8), torch.full((8,), -1), torch.tensor([0, 0, 1, 2, 3, 4, 5, 6])):
        out = identity_scatter_loss(x.requires_grad_(), few, 8)  # fewer than 2 repeated identities
        assert out.item() == 0.0
        out.backward()
        assert torch.equal(x.grad, torch.zeros_like(x))
        x.grad = None


def test_identity_scatter_chance_level_and_dtype():
    # features that carry no identity: mean (P - 1) / (N - 1) over draws (4 identities x 4 clips)
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(4).repeat_interleave(4)
    draws = [identity_scatter_loss(torch.randn(16, 6, generator=g), labels, 4) for _ in range(500)]
    assert abs(torch.stack(draws).mean().item() - 3 / 15) < 0.01
    out = identity_scatter_loss(torch.randn(16, 6, generator=g).bfloat16(), labels, 4)
    assert out.dtype == torch.float32 and out.dim() == 0


def test_identity_scatter_gradcheck_and_descent():
    g = torch.Generator().manual_seed(1)
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2])
    x = torch.randn(8, 3, generator=g, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: identity_scatter_loss(t, labels, 3), (x,))
    # features made of identity offsets + noise: gradient steps take the identity out
    offsets = torch.randn(3, 3, generator=g, dtype=F64)[labels] * 3
    y = (offsets + 0.3 * torch.randn(8, 3, generator=g, dtype=F64)).requires_grad_()
    start = identity_scatter_loss(y, labels, 3).item()
    for _ in range(50):
        loss = identity_scatter_loss(y, labels, 3)
        (grad,) = torch.autograd.grad(loss, y)
        y = (y - 2.0 * grad).detach().requires_grad_()
    assert start > 0.8 and identity_scatter_loss(y, labels, 3).item() < 0.3


def test_identity_scatter_rejects_bad_shapes():
    with pytest.raises(ValueError, match="must be"):
        identity_scatter_loss(torch.zeros(4, 2, 3), torch.zeros(4, dtype=torch.long), 2)
    with pytest.raises(ValueError, match="must be"):
        identity_scatter_loss(torch.zeros(4, 2), torch.zeros(3, dtype=torch.long), 2)
