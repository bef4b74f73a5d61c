"""Tests of the three encoders: identity (E_p^v), video word (E_w^v) and audio word (E_w^a).

Shapes for every preset, parameter counts against formulas written from spec/davs.md §1.1-1.3,
gradients reaching every parameter, eval-mode determinism and batch independence, the init rule,
and the audio branch B against the original's 2-D formulation.
"""

from __future__ import annotations

from itertools import pairwise

import pytest
import torch
from torch import nn

from fastdavs.config import ConfigError, DavsConfig
from fastdavs.model.audio_encoder import AudioWordEncoder, TemporalConvBranch
from fastdavs.model.identity_encoder import IdentityEncoder, IdentityFeatures
from fastdavs.model.video_encoder import VideoWordEncoder

ENCODERS = [IdentityEncoder, VideoWordEncoder, AudioWordEncoder]


def _inputs(encoder: type[nn.Module], cfg: DavsConfig, n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if encoder is AudioWordEncoder:
        return torch.randn(n, cfg.mfcc_steps, cfg.mfcc_coeffs, generator=g) * 5  # MFCC-like scale
    return torch.rand(n, 3, cfg.image_size, cfg.image_size, generator=g)


def _outputs(y) -> list[torch.Tensor]:
    return list(y) if isinstance(y, IdentityFeatures) else [y]


def _randomize_norms(module: nn.Module) -> None:
    """Non-trivial affine parameters and running statistics in every BatchNorm."""
    for bn in module.modules():
        if isinstance(bn, nn.modules.batchnorm._BatchNorm):
            bn.weight.data.uniform_(0.5, 1.5)
            bn.bias.data.normal_()
            bn.running_mean.normal_()
            bn.running_var.uniform_(0.5, 2.0)


def _num_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ---- parameter counts, written out from the layer lists ------------------------------------


def _identity_params(cfg: DavsConfig) -> int:
    ch = cfg.ch
    blocks = [(7, 3, ch(32))]  # (kernel, in, out) of every MFM block, in order
    for widths, k in [
        ([ch(32), ch(32), ch(32), ch(64), ch(64)], 3),
        ([ch(64), ch(96), ch(96), ch(128), ch(128), ch(160), ch(160)], 3),
        ([ch(160), ch(320), ch(320), ch(320), ch(320)], 3),
        ([ch(320), ch(256), cfg.pid_dim], 5),
    ]:
        blocks += [(k, a, b) for a, b in pairwise(widths)]
    # two bias-free convs and two BatchNorms (weight + bias) per block
    return sum(2 * k * k * cin * cout + 2 * 2 * cout for k, cin, cout in blocks)


def _fan_block_params(cin: int, cout: int) -> int:
    n = 2 * cin + 9 * cin * (cout // 2)  # BN, conv3x3 -> C/2
    n += 2 * (cout // 2) + 9 * (cout // 2) * (cout // 4)  # BN, conv3x3 -> C/4
    n += 2 * (cout // 4) + 9 * (cout // 4) ** 2  # BN, conv3x3 -> C/4
    if cin != cout:
        n += 2 * cin + cin * cout  # shortcut BN, conv1x1
    return n


def _video_params(cfg: DavsConfig) -> int:
    ch, lm = cfg.ch, cfg.num_landmarks
    n = 49 * 3 * ch(64) + 2 * ch(64)  # conv7x7, BN
    n += _fan_block_params(ch(64), ch(128)) + _fan_block_params(ch(128), ch(128))
    n += _fan_block_params(ch(128), ch(256))
    n += (3 * cfg.hourglass_depth + 1) * _fan_block_params(ch(256), ch(256))  # hourglass
    n += _fan_block_params(ch(256), ch(256))  # top block
    n += ch(256) ** 2 + 2 * ch(256) + ch(256) * lm  # conv1x1, BN, heatmap conv1x1
    n += 2 * lm + 9 * lm + 1  # head BN, conv3x3 -> 1 (with bias)
    n += (cfg.image_size // 8) ** 2 * cfg.word_dim + cfg.word_dim  # Linear
    return n


def _audio_params(cfg: DavsConfig) -> int:
    c64, c128, c256, c512 = (cfg.ch(c) for c in (64, 128, 256, 512))
    branch_a = 9 * c64 + 2 * c64 + 9 * c64 * c128 + 2 * c128 + 9 * c128 * c256 + 2 * c256
    branch_a += 4 * c256 * c512
    branch_b = 3 * 12 * c64 + 2 * c64 + 3 * c64 * c256 + 2 * c256 + 3 * c256 * c512
    return branch_a + branch_b + 2 * c512 * cfg.word_dim + cfg.word_dim


def test_paper_parameter_counts():
    cfg = DavsConfig.from_preset("paper")
    counts = {
        IdentityEncoder: (_identity_params(cfg), 15_614_016),
        VideoWordEncoder: (_video_params(cfg), 6_512_429),
        AudioWordEncoder: (_audio_params(cfg), 1_602_112),
    }
    for encoder, (formula, expected) in counts.items():
        assert formula == expected, encoder.__name__
        assert _num_params(encoder(cfg)) == formula, encoder.__name__
    # spec/davs.md §1.7 and DESIGN.md: "identity encoder about 15M"
    assert abs(counts[IdentityEncoder][0] - 15.6e6) < 0.05e6


@pytest.mark.parametrize("preset", ["small", "tiny"])
def test_scaled_parameter_counts(preset):
    cfg = DavsConfig.from_preset(preset)
    for encoder, formula in [
        (IdentityEncoder, _identity_params),
        (VideoWordEncoder, _video_params),
        (AudioWordEncoder, _audio_params),
    ]:
        assert _num_params(encoder(cfg)) == formula(cfg), encoder.__name__


# ---- shapes ----------------------------------------------------------------------------------


@torch.no_grad()
def test_paper_shapes():
    cfg = DavsConfig.from_preset("paper")
    torch.manual_seed(0)
    feats = IdentityEncoder(cfg).eval()(_inputs(IdentityEncoder, cfg, 1))
    assert {k: tuple(v.shape) for k, v in feats._asdict().items()} == {
        "vec": (1, 256),
        "net4": (1, 256, 8, 8),
        "net3": (1, 320, 16, 16),
        "net2": (1, 160, 32, 32),
        "net1": (1, 64, 64, 64),
    }
    # the pid vector is the 8x8 average of net4 (the original's AvgPool2d(8))
    torch.testing.assert_close(feats.vec, feats.net4.mean((2, 3)))

    video = VideoWordEncoder(cfg).eval()
    heatmaps = []  # caught on the way through forward: one 256 px pass is slow enough on a CPU
    video.top.register_forward_hook(lambda module, args, out: heatmaps.append(out))
    assert video(_inputs(VideoWordEncoder, cfg, 1)).shape == (1, 256)
    assert heatmaps[0].shape == (1, 68, 64, 64)
    assert video.fc.in_features == 1024  # (256 / 8)^2, as in the original
    assert AudioWordEncoder(cfg).eval()(_inputs(AudioWordEncoder, cfg, 1)).shape == (1, 256)


@torch.no_grad()
def test_small_shapes():
    cfg = DavsConfig.from_preset("small")  # 64 px, width 0.25, pid/word 128, 68 landmarks
    n = 2
    feats = IdentityEncoder(cfg).eval()(_inputs(IdentityEncoder, cfg, n))
    assert [tuple(v.shape) for v in feats] == [
        (n, 128),
        (n, 128, 2, 2),
        (n, 80, 4, 4),
        (n, 40, 8, 8),
        (n, 16, 16, 16),
    ]
    video = VideoWordEncoder(cfg).eval()
    frames = _inputs(VideoWordEncoder, cfg, n)
    assert video.heatmaps(frames).shape == (n, 68, 16, 16)
    assert video(frames).shape == (n, 128)
    assert AudioWordEncoder(cfg).eval()(_inputs(AudioWordEncoder, cfg, n)).shape == (n, 128)


# ---- gradients, determinism, batch independence ---------------------------------------------


@pytest.mark.parametrize("encoder", ENCODERS, ids=lambda e: e.__name__)
def test_tiny_backward_reaches_every_parameter(encoder):
    cfg = DavsConfig.from_preset("tiny")
    torch.manual_seed(0)
    model = encoder(cfg).train()
    # Shifted BatchNorm affines, as after training. At init (bias 0) the video stem's BatchNorm
    # weight gets a ~0 gradient (about 1e-4 of the others'): its ReLU output feeds only
    # train-mode BatchNorms, which cancel a per-channel scale, so only their eps sees the weight.
    _randomize_norms(model)
    # N=4: at 32 px net4 is 1x1, and BatchNorm over 2 values is nearly the constant +-1.
    outputs = _outputs(model(_inputs(encoder, cfg, 4)))
    # Random weights, not a plain sum: a train-mode BatchNorm output sums to zero per channel.
    loss = sum((y * torch.randn_like(y)).sum() for y in outputs)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().max() > 1e-4, name


@pytest.mark.parametrize("encoder", ENCODERS, ids=lambda e: e.__name__)
@torch.no_grad()
def test_eval_deterministic_and_batch_independent(encoder):
    cfg = DavsConfig.from_preset("tiny")
    torch.manual_seed(0)
    model = encoder(cfg)
    model.train()  # a few batches so the running statistics are not the identity
    for seed in range(3):
        model(_inputs(encoder, cfg, 4, seed=10 + seed))
    model.eval()
    x = _inputs(encoder, cfg, 3)
    first, second = _outputs(model(x)), _outputs(model(x))
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)
    for i in range(3):
        for batched, alone in zip(first, _outputs(model(x[i : i + 1])), strict=True):
            torch.testing.assert_close(batched[i : i + 1], alone, rtol=1e-5, atol=1e-5)
    assert first[0].abs().max() > 0


@pytest.mark.parametrize("encoder", [IdentityEncoder, VideoWordEncoder])
def test_train_mode_same_with_channels_last(encoder):
    """A channels-last model (the trainer's CPU fast path) computes what a contiguous one does
    from the same seed, in train mode too: dropout masks do not depend on the memory layout."""
    cfg = DavsConfig.from_preset("tiny")
    torch.manual_seed(0)
    model = encoder(cfg).train()
    x = _inputs(encoder, cfg, 3)
    torch.manual_seed(1)
    plain = _outputs(model(x))
    model = model.to(memory_format=torch.channels_last)
    torch.manual_seed(1)
    cl = _outputs(model(x.contiguous(memory_format=torch.channels_last)))
    for a, b in zip(plain, cl, strict=True):  # train-mode BatchNorm sums in another order
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3)
        assert a.abs().max() > 0


# ---- identity encoder init -------------------------------------------------------------------


def test_identity_init_matches_original_stds():
    # The original's hand-written stds are 1/sqrt(k*k*C_out) (fan_out, gain 1).
    torch.manual_seed(0)
    model = IdentityEncoder(DavsConfig.from_preset("paper"))
    cases = [
        (model.block01.conv_a, 0.025253814),
        (model.stage1[0].conv_b, 0.058925565),
        (model.stage1[2].conv_a, 0.041666668),
        (model.stage2[0].conv_a, 0.034020692),
        (model.stage3[1].conv_b, 0.0186339),
    ]
    for conv, original_std in cases:
        assert conv.weight.std().item() == pytest.approx(original_std, rel=0.05)
    assert model.stage4[1].conv_a.weight.std().item() == pytest.approx(1 / 80, rel=0.05)
    assert model.block01.conv_a.bias is None


# ---- branch B vs the original 2-D formulation -----------------------------------------------


def _original_branch_b(widths: tuple[int, int, int]) -> nn.Sequential:
    """`mfcc_encoder_alter` of the original: [N, 1, 20, 12] -> [N, c3, 1, 1].

    Its first norm is BatchNorm1d on a 4-D tensor; the fix of original issue #59 (squeeze the
    width-1 axis around it) computes exactly BatchNorm2d over the [N, c1, 18, 1] map.
    """
    c1, c2, c3 = widths
    return nn.Sequential(
        nn.Conv2d(1, c1, (3, 12), bias=False),
        nn.BatchNorm2d(c1),
        nn.LeakyReLU(0.2),
        nn.MaxPool2d(1, 3),
        nn.Conv2d(c1, c2, (3, 1), 1, (1, 0), bias=False),
        nn.BatchNorm2d(c2),
        nn.LeakyReLU(0.2),
        nn.MaxPool2d(1, 2),
        nn.Conv2d(c2, c3, (3, 1), bias=False),
    )


def _original_from(ours: TemporalConvBranch) -> nn.Sequential:
    """The original 2-D branch B carrying the weights of `ours`."""
    conv1, bn1, conv2, bn2, conv3 = (m for m in ours if isinstance(m, (nn.Conv1d, nn.BatchNorm1d)))
    original = _original_branch_b((conv1.out_channels, conv2.out_channels, conv3.out_channels))
    with torch.no_grad():
        # conv1d [C, K, 3] (channels = coefficients) <-> conv2d [C, 1, 3, K] over (time, coeff)
        original[0].weight.copy_(conv1.weight.permute(0, 2, 1).unsqueeze(1))
        original[4].weight.copy_(conv2.weight.unsqueeze(-1))  # [C2, C1, 3] -> [C2, C1, 3, 1]
        original[8].weight.copy_(conv3.weight.unsqueeze(-1))
    original[1].load_state_dict(bn1.state_dict())
    original[5].load_state_dict(bn2.state_dict())
    return original


def test_temporal_branch_equals_original_conv2d():
    torch.manual_seed(0)
    ours = TemporalConvBranch(12, (64, 256, 512))
    _randomize_norms(ours)
    original = _original_from(ours)
    mfcc = torch.randn(8, 20, 12) * 5  # [N, F, K]
    for train in (False, True):  # running statistics, then batch statistics
        ours.train(train)
        original.train(train)
        expected = original(mfcc.unsqueeze(1)).flatten(1)  # [N, 512, 1, 1] -> [N, 512]
        actual = ours(mfcc.transpose(1, 2))  # [N, K, F] -> [N, 512]
        assert expected.abs().max() > 1
        torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)
    # same running statistics after the train-mode step
    torch.testing.assert_close(ours[1].running_var, original[1].running_var)


@torch.no_grad()
def test_audio_encoder_equals_original_formulation():
    # mfcc_encoder_two: fc(cat(branch A, branch B)) with both branches reading [N, 1, 20, 12]
    torch.manual_seed(0)
    model = AudioWordEncoder(DavsConfig.from_preset("paper"))
    _randomize_norms(model)
    model.eval()
    original_b = _original_from(model.branch_b).eval()
    mfcc = torch.randn(4, 20, 12) * 5  # [N, F, K]
    window = mfcc.unsqueeze(1)  # [N, 1, F, K]
    expected = model.fc(torch.cat((model.branch_a(window), original_b(window).flatten(1)), 1))
    assert expected.abs().max() > 0.1
    torch.testing.assert_close(model(mfcc), expected, rtol=1e-5, atol=1e-5)


def test_video_head_survives_an_all_negative_map():
    # The original's ReLU before the Linear died in a `small` run (the one-channel map went
    # negative everywhere, so every frame got the same word-ID vector and no gradient).
    torch.manual_seed(0)
    enc = VideoWordEncoder(DavsConfig.from_preset("tiny")).eval()
    with torch.no_grad():
        enc.head_conv.bias.fill_(-100.0)
    frames = torch.rand(4, 3, 32, 32)
    wid = enc(frames)
    assert (wid - wid[:1]).abs().amax() > 1e-3  # still depends on the frame
    wid.square().sum().backward()
    assert enc.head_conv.weight.grad.abs().amax() > 0


@pytest.mark.parametrize("region", ["face", "mouth"])
def test_video_region_decides_which_pixels_count(region):
    """video_region "mouth": the word-ID depends on the mouth box alone (every other pixel may
    change, forward and backward); "face": on the whole frame. The region is no checkpoint
    entry (the config rebuilds it), and the original's keys are unchanged."""
    cfg = DavsConfig.from_preset("tiny", video_region=region)
    torch.manual_seed(1)
    enc = VideoWordEncoder(cfg).eval()
    top, bottom, left, right = cfg.mouth_box_px
    frames = torch.rand(3, 3, 32, 32, requires_grad=True)
    outside = frames.detach().clone()
    outside[..., :top, :] = torch.rand_like(outside[..., :top, :])  # everything above the box
    inside = frames.detach().clone()
    inside[..., top:bottom, left:right] = 1 - inside[..., top:bottom, left:right]
    wid = enc(frames)
    assert (enc(inside) - wid).abs().amax() > 1e-3
    moved = (enc(outside) - wid).abs().amax()
    assert moved == 0 if region == "mouth" else moved > 1e-3
    wid.square().sum().backward()
    mask = torch.zeros(32, 32, dtype=torch.bool)
    mask[top:bottom, left:right] = True
    assert frames.grad[..., mask].abs().amax() > 0
    assert (frames.grad[..., ~mask].abs().amax() == 0) == (region == "mouth")
    assert all("region" not in k for k in enc.state_dict())
    face_keys = VideoWordEncoder(DavsConfig.from_preset("tiny", video_region="face")).state_dict()
    assert enc.state_dict().keys() == face_keys.keys()


def test_video_region_is_validated():
    with pytest.raises(ConfigError, match=r"video_region='lips': choose one of face, mouth"):
        DavsConfig.from_preset("tiny", video_region="lips")
    for preset in ("paper", "small", "tiny"):  # the original everywhere; "mouth" is an option
        assert DavsConfig.from_preset(preset).video_region == "face"
