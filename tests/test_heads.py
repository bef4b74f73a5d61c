"""Generator, word classifier, adversaries and sequence discriminator: shapes per preset, values,
gradients, error messages and the paper's layer geometry."""

import dataclasses

import pytest
import torch
from torch import nn

from fastdavs.config import DavsConfig
from fastdavs.model.adversaries import (
    IdentityClassifier,
    ModalityDiscriminator,
    PidWordAdversary,
    WidPersonAdversary,
)
from fastdavs.model.discriminator import SequenceDiscriminator, mouth_crop
from fastdavs.model.generator import Generator
from fastdavs.model.word_classifier import WordClassifier

TINY = DavsConfig.from_preset("tiny")
SMALL = DavsConfig.from_preset("small")
PAPER = DavsConfig.from_preset("paper")


def tcn(cfg: DavsConfig) -> DavsConfig:
    return dataclasses.replace(cfg, word_head="tcn")


def gen_inputs(cfg: DavsConfig, B: int, T: int):
    s = cfg.image_size // 8
    return (
        torch.randn(B, cfg.pid_dim),
        torch.randn(B, cfg.ch(160), s, s).relu(),
        torch.randn(B, T, cfg.word_dim),
    )


def disc_inputs(cfg: DavsConfig, B: int, T: int):
    s = cfg.image_size
    return torch.rand(B, T, 3, s, s), torch.randn(B, T, 20, 12)


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# ---- tiny: forward + backward in train mode -----------------------------------------------------
B, T, S = 3, TINY.seq_len, TINY.image_size
TINY_CASES = {  # name -> (builder from a config, inputs factory)
    "generator": (Generator, lambda: gen_inputs(TINY, B, T)),
    "word_concat": (WordClassifier, lambda: (torch.randn(B, T, TINY.word_dim),)),
    "word_tcn": (lambda _: WordClassifier(tcn(TINY)), lambda: (torch.randn(B, 5, TINY.word_dim),)),
    "modality": (ModalityDiscriminator, lambda: (torch.randn(B, T, TINY.word_dim),)),
    "pid_word": (
        PidWordAdversary,
        lambda: (torch.randn(B, TINY.adv_frames, TINY.ch(64), S // 4, S // 4),),
    ),
    "wid_person": (WidPersonAdversary, lambda: (torch.randn(B, T, TINY.word_dim),)),
    "identity": (IdentityClassifier, lambda: (torch.randn(B, TINY.pid_dim),)),
    "disc_seq": (SequenceDiscriminator, lambda: disc_inputs(TINY, B, TINY.gan_frames)),
    "disc_single": (lambda c: SequenceDiscriminator(c, frames=1), lambda: disc_inputs(TINY, B, 1)),
}


@pytest.mark.parametrize("name", list(TINY_CASES))
def test_tiny_train_step_gives_every_parameter_a_gradient(name):
    build, inputs = TINY_CASES[name]
    module, inputs = build(TINY), inputs()
    module.train()
    out = module(*inputs)
    outs = out if isinstance(out, tuple) else (out,)
    # A random projection, so that no output is summed away (e.g. a BatchNorm output's plain sum).
    loss = sum((o * torch.randn_like(o)).sum() for o in outs)
    loss.backward()
    for pname, p in module.named_parameters():
        assert p.grad is not None, f"{name}.{pname} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name}.{pname} has a non-finite gradient"
        # Every layer is reached: no parameter is dead (convs before BatchNorm are bias-free).
        assert p.grad.abs().max() > 0, f"{name}.{pname} got an all-zero gradient"


# ---- shapes and values per preset -------------------------------------------------------------
@pytest.fixture(scope="module")
def paper_generator():
    torch.manual_seed(0)
    return Generator(PAPER).eval()


@pytest.fixture(scope="module")
def paper_discriminator():
    torch.manual_seed(0)
    return SequenceDiscriminator(PAPER, frames=1).eval()


def test_generator_paper_shapes_and_range(paper_generator):
    pid, skip, wid = gen_inputs(PAPER, 1, 2)
    assert skip.shape == (1, 160, 32, 32)
    with torch.no_grad():
        out = paper_generator(pid, skip, wid)
    assert out.shape == (1, 2, 3, 256, 256)
    assert out.min() >= 0 and out.max() <= 1
    assert (out[:, 0] - out[:, 1]).abs().max() > 1e-3  # the two frames' word-IDs differ


def paper_generator_params() -> int:
    """The original Decoder's layer list (spec/davs.md §1.7), convs before BatchNorm bias-free."""

    def conv(cin, cout, k, bias):
        return cin * cout * k * k + (cout if bias else 0)

    bn = 2  # weight + bias per channel
    total = conv(512, 512, 4, False) + 512 * bn  # ConvTranspose 1x1 -> 4x4
    stages = [(512, 512, 2), (512, 512, 3), (512, 256, 4), (256 + 160, 256, 4), (256, 128, 3)]
    for cin, cout, n in stages + [(128, 64, 2)]:
        total += conv(cin, cout, 3, False) + (n - 1) * conv(cout, cout, 3, False) + n * cout * bn
    total += conv(64, 32, 3, False) + 32 * bn + conv(32, 3, 3, True)  # head
    return total


def test_generator_paper_parameter_count(paper_generator):
    expected = paper_generator_params()
    assert n_params(paper_generator) == expected
    assert 22.3e6 < expected < 22.5e6  # spec: "decoder about 22M"; DESIGN: ≈ 22M


def test_generator_small_shapes():
    g = Generator(SMALL).eval()
    pid, skip, wid = gen_inputs(SMALL, 2, 3)
    assert skip.shape == (2, 40, 8, 8)
    with torch.no_grad():
        out = g(pid, skip, wid)
    assert out.shape == (2, 3, 3, 64, 64)
    assert out.min() >= 0 and out.max() <= 1
    # stages at input resolutions 4, 8, 16, 32 (ratios 16, 8, 4, 2), skip at 8 = 64 / 8
    assert [len(s) // 3 for s in g.stages] == [4, 4, 3, 2]
    assert [s[0].in_channels for s in g.stages] == [128, 64 + 40, 64, 32]
    assert g.skip_stage == 1


@pytest.mark.parametrize("cfg", [TINY, SMALL], ids=["tiny", "small"])
def test_generator_batched_forward_equals_per_frame_decode(cfg):
    g = Generator(cfg)
    for m in g.modules():  # non-trivial running statistics, so eval mode is not an identity
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 2.0)
    g.eval()
    B, T = 2, 5
    pid, skip, wid = gen_inputs(cfg, B, T)
    with torch.no_grad():
        batched = g(pid, skip, wid)
        looped = torch.stack([g.decode(pid, skip, wid[:, t]) for t in range(T)], 1)
        other_skip = g.decode(pid, skip.flip(0), wid[:, 0])
    torch.testing.assert_close(batched, looped, atol=1e-5, rtol=0)
    assert (other_skip - looped[:, 0]).abs().max() > 1e-3  # the skip is used


def test_word_classifier_concat_is_frame_major_mlp():
    c = WordClassifier(SMALL).eval()
    nn.init.normal_(c.fc1.weight, 0, 0.05)
    x = torch.randn(2, SMALL.seq_len, SMALL.word_dim)
    with torch.no_grad():
        out = c(x)
        ref = c.fc2(torch.relu(x.reshape(2, -1) @ c.fc1.weight.T + c.fc1.bias))
        swapped = c(x[:, [1, 0, *range(2, SMALL.seq_len)]])
    assert out.shape == (2, 500)
    torch.testing.assert_close(out, ref)
    assert (swapped - out).abs().max() > 1e-4  # frame order matters


@pytest.mark.parametrize("cfg", [PAPER, SMALL, TINY], ids=["paper", "small", "tiny"])
def test_word_classifier_both_heads_shapes(cfg):
    x = torch.randn(2, cfg.seq_len, cfg.word_dim)
    for head in (WordClassifier(cfg), WordClassifier(tcn(cfg))):
        with torch.no_grad():
            out = head.eval()(x)
        assert out.shape == (2, cfg.num_words) and torch.isfinite(out).all()


def test_word_classifier_concat_rejects_wrong_length():
    with pytest.raises(ValueError, match=r"seq_len = 12.*T = 7"):
        WordClassifier(PAPER)(torch.randn(2, 7, PAPER.word_dim))


@pytest.mark.parametrize("T", [1, 7, SMALL.seq_len])
def test_word_classifier_tcn_any_length(T):
    c = WordClassifier(tcn(SMALL))
    x = torch.randn(3, T, SMALL.word_dim)
    assert c.train()(x).shape == (3, SMALL.num_words)
    with torch.no_grad():
        out = c.eval()(x)
    if T == 1:  # zero padding: only the centre taps of both convolutions see the frame
        conv1, bn1, _, conv2, bn2, _ = c.tcn
        h = torch.relu(bn1((x[:, 0] @ conv1.weight[:, :, 1].T)[:, :, None]))
        h = torch.relu(bn2((h[:, :, 0] @ conv2.weight[:, :, 1].T)[:, :, None]))
        torch.testing.assert_close(out, c.fc2(h[:, :, 0]))
    else:  # taps at distance 1, then 2: frame 0 reaches frames 0..3 and no further
        with torch.no_grad():
            y = c.tcn(x.transpose(1, 2))  # [B, hidden, T]
            x[:, 0] += 1
            changed = (c.tcn(x.transpose(1, 2)) - y).abs().amax((0, 1)) > 1e-6  # [T]
        assert changed.tolist() == [t <= 3 for t in range(T)]


def test_adversaries_shapes_and_values():
    for cfg in (PAPER, SMALL):
        B, T = 2, 3
        wid = torch.randn(B, T, cfg.word_dim)
        d = ModalityDiscriminator(cfg).eval()
        fc1, _, fc2 = d
        with torch.no_grad():
            out = d(wid)
            torch.testing.assert_close(out, fc2(torch.relu(fc1(wid)))[..., 0])
            assert d(wid[:, 0]).shape == (B,)
            assert out.shape == (B, T)

            person = WidPersonAdversary(cfg).eval()(wid.flatten(0, 1))
            assert person.shape == (B * T, cfg.num_identities)
            # near-zero output layer: the softmax starts almost uniform
            probs = person.softmax(1)
            assert (probs - 1 / cfg.num_identities).abs().max() < 1e-2 / cfg.num_identities

            ids = IdentityClassifier(cfg).eval()(torch.randn(B, cfg.pid_dim))
            assert ids.shape == (B, cfg.num_identities)

            s = cfg.image_size // 4
            net1 = torch.randn(B, cfg.adv_frames, cfg.ch(64), s, s)
            adv = PidWordAdversary(cfg).eval()
            words = adv(net1)
            assert words.shape == (B, cfg.num_words)
            nn.init.normal_(adv.out.weight, 0, 0.05)
            words = adv(net1)
            words_other = adv(torch.cat((net1[:, 1:], net1[:, :1]), 1))
            assert (words - words_other).abs().max() > 1e-4  # frames sit in separate slots
            words_b0 = adv(net1[:1])
            torch.testing.assert_close(words[:1], words_b0, atol=1e-5, rtol=1e-5)


def test_pid_word_adversary_rejects_wrong_frame_count():
    s = TINY.image_size // 4
    net1 = torch.randn(2, TINY.adv_frames + 1, TINY.ch(64), s, s)
    with pytest.raises(
        ValueError, match=rf"adv_frames = {TINY.adv_frames}.*got {TINY.adv_frames + 1}"
    ):
        PidWordAdversary(TINY)(net1)


# ---- discriminator ------------------------------------------------------------------------------
def test_mouth_crop_geometry():
    top, left, size = mouth_crop(31)
    assert (top, top + size, left, left + size) == (
        19,
        28,
        11,
        20,
    )  # original rows 19:28, cols 11:20
    assert mouth_crop(7) == (4, 2, 3)  # small: 64 px
    assert mouth_crop(3) == (0, 0, 3)  # tiny: 32 px, clamped to fit
    for s in range(3, 128):
        top, left, size = mouth_crop(s)
        assert size >= 3 and top >= 0 and left >= 0 and max(top, left) + size <= s


def test_discriminator_paper_shapes():
    d = SequenceDiscriminator(PAPER).eval()
    assert d.crop == (19, 11, 9)
    shapes = []
    for layer in (d.mouth[0], d.mouth[3]):
        layer.register_forward_hook(lambda m, i, o: shapes.append((i[0].shape[-1], o.shape[-1])))
    frames, mfcc = disc_inputs(PAPER, 1, 6)
    with torch.no_grad():
        patch, sync = d(frames, mfcc)
    assert patch.shape == (1, 1, 30, 30) and sync.shape == (1,)
    assert shapes == [(9, 7), (7, 1)]  # crop 9x9 -> 7x7 -> 1x1
    assert d.trunk[0].in_channels == 18 and d.mfcc[0].in_channels == 6


def test_discriminator_paper_sync_reads_exactly_the_mouth_crop(paper_discriminator):
    """Each cell j of the 31x31 map sees input pixels 8j-15 .. 8j+30 (three 4x4 s2 p1 convs, one
    4x4 s1 p1), so crop rows 19:28 see rows 137..246 and cols 11:20 see cols 73..182. Changing
    everything outside that box must leave the sync logit alone; changing its border lines must
    not."""
    d = paper_discriminator
    frames, mfcc = disc_inputs(PAPER, 1, 1)
    with torch.no_grad():
        patch, sync = d(frames, mfcc)
        outside = frames.clone()
        outside[..., :137, :] = torch.rand_like(outside[..., :137, :])
        outside[..., 247:, :] = 0
        outside[..., :, :73] = 1
        outside[..., :, 183:] = torch.rand_like(outside[..., :, 183:])
        patch_o, sync_o = d(outside, mfcc)
        torch.testing.assert_close(sync_o, sync, atol=1e-6, rtol=1e-6)
        assert (patch_o - patch).abs().max() > 1e-3
        for row, col in (
            (137, slice(None)),
            (246, slice(None)),
            (slice(None), 73),
            (slice(None), 182),
        ):
            edge = frames.clone()
            edge[..., row, col] = 1 - edge[..., row, col]
            assert (d(edge, mfcc)[1] - sync).abs().max() > 1e-6, (row, col)
        _, sync_a = d(frames, torch.randn_like(mfcc))
        assert (sync_a - sync).abs().max() > 1e-6  # the MFCC branch is read


def test_discriminator_small_and_single_frame():
    for frames_n in (SMALL.gan_frames, 1):
        d = SequenceDiscriminator(SMALL, frames=frames_n).eval()
        with torch.no_grad():
            patch, sync = d(*disc_inputs(SMALL, 2, frames_n))
        assert patch.shape == (2, 1, 6, 6) and sync.shape == (2,)
        assert torch.isfinite(patch).all() and torch.isfinite(sync).all()
    with pytest.raises(ValueError, match=r"\[B, 1, 3, 64, 64\]"):
        d(*disc_inputs(SMALL, 2, 2))


def test_discriminator_init_matches_original_weights_init():
    d = SequenceDiscriminator(SMALL)
    convs = [m for m in d.modules() if isinstance(m, nn.Conv2d)]
    bns = [m for m in d.modules() if isinstance(m, nn.BatchNorm2d)]
    w = torch.cat([m.weight.flatten() for m in convs])
    g = torch.cat([m.weight.flatten() for m in bns])
    assert abs(w.std().item() - 0.02) < 2e-3 and abs(w.mean().item()) < 1e-3
    assert abs(g.mean().item() - 1) < 5e-3 and abs(g.std().item() - 0.02) < 5e-3
    assert all((m.bias == 0).all() for m in convs + bns if m.bias is not None)
