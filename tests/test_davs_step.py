"""The complete DAVS system on the tiny preset: one generator-side step and one
discriminator-side step through every module and every loss, as spec/davs.md §2.8 sums them.
Every parameter must receive a finite, non-zero gradient from the step that owns it."""

import torch
import torch.nn.functional as F

from fastdavs.config import DavsConfig
from fastdavs.losses import (
    contrastive_loss,
    gan_loss,
    modality_discriminator_loss,
    modality_flip_loss,
    reconstruction_loss,
    smoothness_loss,
    uniform_softmax_loss,
)
from fastdavs.model import DavsModel

B = 3


def _batch(cfg: DavsConfig):
    t = max(cfg.seq_len, cfg.adv_frames, cfg.gan_frames)
    s = cfg.image_size
    # Smooth images (upsampled 4x4 noise), the kind of target a generator can actually fit.
    coarse = torch.rand(B * t, 3, 4, 4)
    frames = F.interpolate(coarse, size=(s, s), mode="bilinear", align_corners=False)
    return {
        "frames": frames.view(B, t, 3, s, s),
        "mfcc": torch.randn(B, t, 20, 12) * 10,
        "identity": torch.rand(B, 3, s, s),
        "word": torch.randint(cfg.num_words, (B,)),
        "person": torch.randint(cfg.num_identities, (B,)),
    }


def _generator_loss(model: DavsModel, x: dict) -> torch.Tensor:
    cfg, w = model.cfg, model.cfg.loss
    ident = model.encode_identity(x["identity"])
    wid_v = model.encode_video(x["frames"])  # [B, T, D]
    wid_a = model.encode_audio(x["mfcc"])
    seq_v, seq_a = wid_v[:, : cfg.seq_len], wid_a[:, : cfg.seq_len]
    loss = F.cross_entropy(model.identity_classifier(ident.vec), x["person"])
    loss = loss + w.word_ce * (
        F.cross_entropy(model.word_classifier(seq_a), x["word"])
        + F.cross_entropy(model.word_classifier(seq_v), x["word"])
    )
    loss = loss + w.contrastive * contrastive_loss(seq_a, seq_v, w.contrastive_margin)
    d = model.modality_discriminator
    loss = loss + w.modality_flip * modality_flip_loss(d(wid_a), d(wid_v))
    fake_a = model.generate(ident, wid_a)  # [B, T, 3, H, W]
    fake_v = model.generate(ident, wid_v)
    box = cfg.mouth_box_px
    loss = loss + reconstruction_loss(
        fake_a, x["frames"], box, w.reconstruction, w.reconstruction_mouth
    )
    loss = loss + reconstruction_loss(
        fake_v, x["frames"], box, w.reconstruction, w.reconstruction_mouth
    )
    loss = loss + w.smoothness * smoothness_loss(fake_a, x["identity"], box)
    g = cfg.gan_frames
    patch, sync = model.sequence_discriminator(fake_a[:, :g], x["mfcc"][:, :g])
    loss = loss + w.gan * gan_loss(patch, real=True) + w.gan_sync * gan_loss(sync, real=True)
    # Disentangling: pid features must not predict words, wid features must not predict people.
    a = cfg.adv_frames
    net1 = model.encode_identity(x["frames"][:, :a].flatten(0, 1)).net1
    net1 = net1.view(B, a, *net1.shape[1:])
    loss = loss + w.pid_uniform * uniform_softmax_loss(model.pid_word_adversary(net1))
    person_logits = model.wid_person_adversary(wid_v.flatten(0, 1))
    return loss + w.wid_uniform * uniform_softmax_loss(person_logits)


def _discriminator_loss(model: DavsModel, x: dict) -> torch.Tensor:
    cfg, w = model.cfg, model.cfg.loss
    with torch.no_grad():
        ident = model.encode_identity(x["identity"])
        wid_v = model.encode_video(x["frames"])
        wid_a = model.encode_audio(x["mfcc"])
        fake = model.generate(ident, wid_a)
        a = cfg.adv_frames
        net1 = model.encode_identity(x["frames"][:, :a].flatten(0, 1)).net1
    d = model.modality_discriminator
    loss = modality_discriminator_loss(d(wid_a), d(wid_v))
    net1 = net1.view(B, a, *net1.shape[1:])
    loss = loss + w.adversary_ce * F.cross_entropy(model.pid_word_adversary(net1), x["word"])
    person = x["person"].repeat_interleave(wid_v.shape[1])
    loss = loss + w.adversary_ce * F.cross_entropy(
        model.wid_person_adversary(wid_v.flatten(0, 1)), person
    )
    g = cfg.gan_frames
    real_patch, real_sync = model.sequence_discriminator(x["frames"][:, :g], x["mfcc"][:, :g])
    fake_patch, fake_sync = model.sequence_discriminator(fake[:, :g], x["mfcc"][:, :g])
    gen = torch.Generator().manual_seed(1)
    for real_logits, fake_logits in ((real_patch, fake_patch), (real_sync, fake_sync)):
        loss = loss + 0.5 * (
            gan_loss(real_logits, real=True, soft=0.1, generator=gen)
            + gan_loss(fake_logits, real=False, soft=0.1, generator=gen)
        )
    return loss


def _assert_all_grads(params, side: str) -> None:
    for name, p in params:
        assert p.grad is not None, f"{side}: {name} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{side}: {name} has a non-finite gradient"
        assert p.grad.abs().max() > 0, f"{side}: {name} has an all-zero gradient"


def test_tiny_full_step_reaches_every_parameter():
    cfg = DavsConfig.from_preset("tiny")
    model = DavsModel(cfg).train()
    x = _batch(cfg)
    named = dict(model.named_parameters())
    g_ids = {id(p) for p in model.generator_parameters()}
    d_ids = {id(p) for p in model.discriminator_parameters()}
    assert not g_ids & d_ids and len(g_ids) + len(d_ids) == len(named)

    loss_g = _generator_loss(model, x)
    assert torch.isfinite(loss_g)
    model.zero_grad(set_to_none=True)
    loss_g.backward()
    _assert_all_grads([(n, p) for n, p in named.items() if id(p) in g_ids], "G step")

    model.zero_grad(set_to_none=True)
    loss_d = _discriminator_loss(model, x)
    assert torch.isfinite(loss_d)
    loss_d.backward()
    _assert_all_grads([(n, p) for n, p in named.items() if id(p) in d_ids], "D step")
    # The D step must not touch the generator side.
    assert all(named[n].grad is None for n in named if id(named[n]) in g_ids)


def test_tiny_step_lowers_the_loss():
    """A few Adam steps on one fixed batch reduce the generator-side loss: the graph learns."""
    cfg = DavsConfig.from_preset("tiny")
    model = DavsModel(cfg).train()
    x = _batch(cfg)
    opt = torch.optim.Adam(model.generator_parameters(), lr=3e-3)
    losses = []
    for _ in range(20):
        opt.zero_grad(set_to_none=True)
        loss = _generator_loss(model, x)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.85 * losses[0], losses
