"""The complete DAVS system on the tiny preset, through `fastdavs.steps`: each stage's
discriminator side and generator side reach exactly the parameters they own with finite,
non-zero gradients, and a few Adam steps on a fixed batch lower each stage's loss."""

import pytest
import torch

from fastdavs import steps
from fastdavs.config import DavsConfig
from fastdavs.model import DavsModel
from fastdavs.train_step import ADVERSARIES, TrainStep

B = 3


def _batch(cfg: DavsConfig, seed: int = 0) -> dict:
    """steps.example_batch with one unknown identity (label -1) among the B clips."""
    batch = steps.example_batch(cfg, B, seed)
    batch["identity_label"] = torch.tensor([0, -1, cfg.num_identities - 1])
    return batch


def _grads(model: DavsModel, names: set[str]) -> None:
    for name, p in model.named_parameters():
        if name in names:
            assert p.grad is not None, f"{name} got no gradient"
            assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"
            assert p.grad.abs().max() > 0, f"{name} has an all-zero gradient"
        else:
            assert p.grad is None or not p.grad.any(), f"{name} should not be trained here"


def _names(model: DavsModel, modules: tuple[str, ...]) -> set[str]:
    return {n for n, _ in model.named_parameters() if n.split(".")[0] in modules}


def test_gen_stage_reaches_every_parameter():
    cfg = DavsConfig.from_preset("tiny")
    model = DavsModel(cfg).train()
    batch = _batch(cfg)
    fwd = steps.forward(model, batch, "gen")
    d_loss, d_parts = steps.discriminator_loss(model, fwd, batch)
    d_loss.backward()
    _grads(
        model,
        {
            n
            for n, _ in model.named_parameters()
            if n.split(".")[0]
            in (
                "modality_discriminator",
                "pid_word_adversary",
                "wid_person_adversary",
                "sequence_discriminator",
            )
        },
    )
    assert set(d_parts) == {"modality_d", "pid_adv_ce", "wid_adv_ce", "d_patch", "d_sync"}
    model.zero_grad(set_to_none=True)
    g_loss, g_parts = steps.generator_loss(model, fwd, batch, "gen")
    assert torch.isfinite(g_loss) and all(torch.isfinite(v) for v in g_parts.values())
    g_loss.backward()
    # The G step reaches the whole generator side (the identity classifier belongs to pid).
    generator_side = _names(
        model,
        ("identity_encoder", "video_encoder", "audio_encoder", "word_classifier", "generator"),
    )
    for name, p in model.named_parameters():
        if name in generator_side:
            assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.any(), name


def test_wid_and_pid_stages_train_only_their_modules():
    cfg = DavsConfig.from_preset("tiny")
    model = DavsModel(cfg).train()
    batch = _batch(cfg)
    fwd = steps.forward(model, batch, "wid")
    loss, parts = steps.generator_loss(model, fwd, batch, "wid")
    assert set(parts) == {"ce_audio", "ce_video", "contrastive", "modality_flip"}
    loss.backward()
    wid_modules = ("video_encoder", "audio_encoder", "word_classifier", "modality_discriminator")
    _grads(model, _names(model, wid_modules))
    model.zero_grad(set_to_none=True)
    loss, parts = steps.pid_loss(model, batch)
    loss.backward()
    _grads(model, _names(model, ("identity_encoder", "identity_classifier")))
    # The unknown identity (-1) is left out: the loss equals the CE over the known items.
    assert parts["pid_ce"] > 0


@pytest.mark.parametrize("stage", steps.STAGES)
def test_each_stage_lowers_its_loss_on_a_fixed_batch(stage):
    torch.manual_seed(0)
    cfg = DavsConfig.from_preset("tiny")
    model = DavsModel(cfg).train()
    batch = _batch(cfg)
    opt = torch.optim.Adam(model.generator_parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        opt.zero_grad(set_to_none=True)
        if stage == "pid":
            loss, _ = steps.pid_loss(model, batch)
        else:
            loss, _ = steps.generator_loss(model, steps.forward(model, batch, stage), batch, stage)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.85 * losses[0], losses


def test_adversaries_get_their_own_scaled_learning_rate():
    cfg = DavsConfig.from_preset("tiny")
    cfg.optim.adversary_lr_scale = 7.0
    model = DavsModel(cfg)
    step = TrainStep(model, cfg, torch.device("cpu"), amp=False)
    step.make_optimizers("gen")
    adversaries = {id(p) for n in ADVERSARIES for p in getattr(model, n).parameters()}
    for side, opt in step.optimizers.items():
        for group in opt.param_groups:
            ids = {id(p) for p in group["params"]}
            scaled = group["lr"] == pytest.approx(7.0 * cfg.optim.lr)
            assert ids <= adversaries if scaled else not ids & adversaries, side
            if not scaled:
                assert group["lr"] == pytest.approx(cfg.optim.lr)
    d_params = {id(p) for g in step.optimizers["d"].param_groups for p in g["params"]}
    assert adversaries <= d_params
