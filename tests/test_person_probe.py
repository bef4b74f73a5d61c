"""The closed-form person probe (`PersonProbe`) against a float64 reference written from its
definition, with gradients; its bank; and the video encoder's colour jitter."""

import dataclasses

import pytest
import torch

from fastdavs.config import DavsConfig
from fastdavs.model import DavsModel
from fastdavs.model.adversaries import PersonProbe
from fastdavs.model.davs import cepstral_jitter, colour_jitter

K, D = 12, 16
CFG = DavsConfig.from_preset("tiny", num_identities=K, word_dim=D, probe_bank=24)


def reference_logits(bank, bank_labels, x, labels, shrink=PersonProbe.SHRINK):
    """LDA logits from the definition, in float64 with loops: per person the mean of their
    clips in bank + batch without the scored clip; the bank's pooled within-person covariance
    shrunk towards its diagonal. Returns logits [B, K] (nan where the probe cannot name the
    person) with autograd through x."""
    bank, x = bank.double(), x.double()
    groups = [bank[bank_labels == k] for k in range(K)]
    resid = [g - g.mean(0) for g in groups if len(g) >= 2]
    dof = sum(len(r) for r in resid) - len(resid)
    scatter = sum(r.T @ r for r in resid) / dof
    cov = (1 - shrink) * scatter + shrink * torch.diag(scatter.diagonal())
    cov = cov + (1e-6 * scatter.diagonal().mean() + 1e-12) * torch.eye(D, dtype=cov.dtype)
    prec = torch.linalg.inv(cov)
    rows = []
    for i in range(len(x)):
        row = []
        for k in range(K):
            members = [bank[j] for j in range(len(bank)) if bank_labels[j] == k]
            members += [x[j] for j in range(len(x)) if labels[j] == k and j != i]
            if not members:
                row.append(torch.tensor(float("nan"), dtype=torch.float64))
                continue
            mu = torch.stack(members).mean(0)
            row.append(x[i] @ prec @ mu - 0.5 * mu @ prec @ mu)
        rows.append(torch.stack(row))
    return torch.stack(rows)


def filled_probe(seed: int):
    """A probe whose bank holds 24 clips of 6 people (4 each), features with a person offset,
    and a batch of 8: 2 clips each of 2 banked people, 4 of a person the bank lacks."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(K, D, generator=g)
    probe = PersonProbe(CFG)
    bank_labels = torch.arange(6).repeat(4)
    bank = centres[bank_labels] + 0.5 * torch.randn(24, D, generator=g)
    probe.push(bank[:10], torch.zeros(10, D), bank_labels[:10])  # two pushes: the cursor moves
    probe.push(bank[10:], torch.zeros(14, D), bank_labels[10:])
    labels = torch.tensor([1, 1, 4, 4, 9, 9, 9, 9])
    x = centres[labels] + 0.5 * torch.randn(8, D, generator=g)
    return probe, bank, bank_labels, x, labels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_logits_and_gradient_match_the_definition(seed):
    probe, bank, bank_labels, x, labels = filled_probe(seed)
    x_ref = x.double().requires_grad_()
    ref = reference_logits(bank, bank_labels, x_ref, labels)
    x_probe = x.clone().requires_grad_()
    logits, valid = probe.logits(x_probe, labels, 0)
    assert logits.dtype == torch.float32 and logits.shape == (8, K)
    assert torch.equal(valid, ~ref.isnan())  # people 0-5 and the clip's own (9: the other three)
    torch.testing.assert_close(logits[valid].double(), ref[valid], rtol=1e-4, atol=1e-3)
    weights = torch.randn(8, K, generator=torch.Generator().manual_seed(seed + 10)) * valid
    (ref.nan_to_num() * weights.double()).sum().backward()
    (logits * weights).sum().backward()
    torch.testing.assert_close(x_probe.grad.double(), x_ref.grad, rtol=1e-3, atol=1e-3)


def test_reads_a_person_and_not_noise():
    probe, bank, bank_labels, x, labels = filled_probe(3)
    assert probe.score(x, labels, 0)[1].item() == 1.0
    loss = probe.score(x.requires_grad_(), labels, 0)[0]
    loss.backward()
    assert loss.item() > 1.0 and x.grad.abs().sum() > 0
    # Features that carry no person: the same clips with their people's offsets removed.
    plain = PersonProbe(CFG)
    g = torch.Generator().manual_seed(4)
    plain.push(0.5 * torch.randn(24, D, generator=g), torch.zeros(24, D), bank_labels)
    x_plain = 0.5 * torch.randn(8, D, generator=g)
    accuracies = [
        plain.score(x_plain[perm], labels, 0)[1].item()
        for perm in torch.randperm(8, generator=g).repeat(5, 1)
    ]
    assert sum(accuracies) / len(accuracies) < 0.6
    # Video features were never pushed (zeros): no within-person spread, no probe, loss 0.
    assert probe.score(x, labels, 1)[0].item() == 0.0


def test_uniform_loss_is_kl_from_uniform_over_the_nameable_people():
    probe, _, _, x, labels = filled_probe(5)
    logits, valid = probe.logits(x, labels, 0)
    expected = []
    for row, ok in zip(logits, valid, strict=True):
        logp = row[ok].log_softmax(0)
        expected.append(-(logp.mean() + torch.log(torch.tensor(float(ok.sum())))))
    torch.testing.assert_close(probe.score(x, labels, 0)[0], torch.stack(expected).mean())


def test_empty_bank_and_unknown_people_add_nothing():
    probe = PersonProbe(CFG)
    x = torch.randn(8, D, requires_grad=True)
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    loss = probe.score(x, labels, 0)[0]  # no bank yet: no covariance
    loss.backward()
    assert loss.item() == 0.0 and torch.count_nonzero(x.grad) == 0
    filled, *_ = filled_probe(6)
    unknown = torch.full((8,), -1)
    assert filled.score(torch.randn(8, D), unknown, 0)[1].item() == 0.0  # nothing scored
    logits, valid = filled.logits(torch.randn(8, D), unknown, 0)
    assert valid.sum(1).tolist() == [6] * 8  # the banked people only


def test_push_overwrites_the_oldest():
    probe = PersonProbe(dataclasses.replace(CFG, probe_bank=5))
    for step in range(3):
        probe.push(torch.full((3, D), float(step)), torch.zeros(3, D), torch.full((3,), step))
    # 9 clips into 5 slots: clips 5..8 overwrote slots 0..3; slot 4 holds clip 4 (step 1).
    assert probe.labels.tolist() == [1, 2, 2, 2, 1]
    assert probe.features[0, :, 0].tolist() == [1.0, 2.0, 2.0, 2.0, 1.0]
    assert probe.cursor.item() == 4
    assert probe.state_dict() == {}  # training state, not weights


def test_autocast_computes_in_float32():
    probe, _, _, x, labels = filled_probe(7)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = probe.score(x.bfloat16(), labels, 0)[0]
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, probe.score(x.bfloat16().float(), labels, 0)[0])


def test_colour_jitter_is_one_colour_change_per_clip():
    torch.manual_seed(0)
    frames = torch.rand(3, 4, 3, 8, 8) * 0.5 + 0.25  # away from the clamp
    out = colour_jitter(frames, 0.3)
    assert out.shape == frames.shape and out.min() >= 0 and out.max() <= 1
    # Per clip and channel, out = gain * in + offset: fit it on one frame, check every frame.
    for b in range(3):
        for c in range(3):
            a = torch.stack((frames[b, 0, c].flatten(), torch.ones(64)), 1)
            gain, offset = torch.linalg.lstsq(a, out[b, 0, c].flatten()).solution
            assert 0.74 - 1e-4 <= gain <= 1.35 + 1e-4 and abs(offset) <= 0.075 + 1e-4
            torch.testing.assert_close(out[b, :, c], gain * frames[b, :, c] + offset)
    assert not torch.allclose(out[0], out[1] * frames[0] / frames[1])  # clips differ


@pytest.mark.parametrize("modality", ["video", "audio"])
def test_jitter_only_while_its_encoder_trains(modality):
    field = f"{modality}_jitter"
    cfg = dataclasses.replace(DavsConfig.from_preset("tiny"), **{field: 0.5})
    torch.manual_seed(0)
    model = DavsModel(cfg).eval()
    if modality == "video":
        x = torch.rand(2, 3, 3, cfg.image_size, cfg.image_size)  # [B, T, 3, S, S]
    else:
        x = torch.randn(2, 3, cfg.mfcc_steps, cfg.mfcc_coeffs) * 10  # [B, T, F, K]
    plain = DavsModel(dataclasses.replace(cfg, **{field: 0.0})).eval()
    plain.load_state_dict(model.state_dict())

    def encode(m: DavsModel) -> torch.Tensor:
        return getattr(m, f"encode_{modality}")(x)

    torch.testing.assert_close(encode(model), encode(plain))
    getattr(model, f"{modality}_encoder").train()
    getattr(plain, f"{modality}_encoder").train()
    torch.manual_seed(1)
    jittered = encode(model)
    torch.manual_seed(1)
    assert not torch.allclose(jittered, encode(plain))


def test_wid_step_scores_and_then_banks_the_batch():
    """In the `wid` G loss with loss.probe_uniform > 0: both modalities' probe terms are in the
    loss parts, the batch is pushed once a step, the probe's loss reaches the video
    encoder's weights, and with the weight 0 the probe is not consulted."""
    from fastdavs.data.dataset import example_batch
    from fastdavs.train import stages

    cfg = DavsConfig.from_preset("tiny", probe_bank=8)
    cfg.loss.probe_uniform = 1.0
    model = DavsModel(cfg)
    batch = example_batch(cfg, 4)
    batch["identity_label"] = torch.tensor([0, 0, 1, 1])
    probe = model.person_probe
    for step in range(3):
        fwd = stages.forward(model, batch, "wid")
        total, parts = stages.generator_loss(model, fwd, batch, "wid")
        assert {"probe_audio", "probe_video", "probe_audio_acc", "probe_video_acc"} <= set(parts)
        assert torch.isfinite(total)
        assert probe.cursor.item() == (4 * (step + 1)) % 8  # the batch pushed, once a step
    assert probe.labels.tolist() == [0, 0, 1, 1, 0, 0, 1, 1]
    assert parts["probe_video"] > 0  # the bank has spread now: a probe, and a loss
    loss, _ = probe.score(model.encode_video(batch["frames"]).mean(1), batch["identity_label"], 1)
    loss.backward()
    grads = [p.grad for p in model.video_encoder.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
    cfg.loss.probe_uniform = 0.0
    stages.generator_loss(model, stages.forward(model, batch, "wid"), batch, "wid")
    assert probe.cursor.item() == 4  # unchanged


def test_cepstral_jitter_is_one_offset_per_clip_and_coefficient():
    torch.manual_seed(0)
    mfcc = torch.randn(64, 3, 20, 12)
    out = cepstral_jitter(mfcc, 2.0)
    offset = out - mfcc  # [B, T, F, K]
    torch.testing.assert_close(offset, offset[:, :1, :1].expand_as(offset))  # one per clip
    per_clip = offset[:, 0, 0]  # [B, K]
    assert 1.6 < per_clip.std().item() < 2.4  # N(0, 2^2) over 768 draws
    assert not torch.allclose(per_clip[:, 0], per_clip[:, 1])  # coefficients differ
    assert cepstral_jitter(mfcc.bfloat16(), 2.0).dtype == torch.bfloat16
