"""The complete DAVS system on the tiny preset, through `fastdavs.train.stages`: each stage's
discriminator side and generator side reach exactly the parameters they own with finite,
non-zero gradients, and a few Adam steps on a fixed batch lower each stage's loss; the
`render` stage trains the generator alone and leaves the frozen encoders as they were. Both
generators (the davs decoder and the mouth editor) go through the stages that use them."""

import pytest
import torch

from fastdavs.config import DavsConfig
from fastdavs.data.dataset import example_batch
from fastdavs.model import DavsModel, MouthEditor
from fastdavs.train import stages
from fastdavs.train.step import ADVERSARIES, STAGE_MODULES, TrainStep

B = 3


def _batch(cfg: DavsConfig, seed: int = 0) -> dict:
    """example_batch with one unknown identity (label -1) among the B clips."""
    batch = example_batch(cfg, B, seed)
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


def _model(cfg: DavsConfig) -> DavsModel:
    """DavsModel(cfg) in train mode; a mouth editor's zero-initialised output layer is drawn
    at random, or no gradient would reach the layers before it (as at a real run's step 0)."""
    model = DavsModel(cfg).train()
    if isinstance(model.generator, MouthEditor):
        torch.nn.init.normal_(model.generator.out.weight, std=0.01)
    return model


@pytest.mark.parametrize("generator", ["davs", "mouth_editor"])
def test_gen_stage_reaches_every_parameter(generator):
    cfg = DavsConfig.from_preset("tiny", generator=generator)
    model = _model(cfg)
    batch = _batch(cfg)
    fwd = stages.forward(model, batch, "gen")
    d_loss, d_parts = stages.discriminator_loss(model, fwd, batch)
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
    g_loss, g_parts = stages.generator_loss(model, fwd, batch, "gen")
    assert torch.isfinite(g_loss) and all(torch.isfinite(v) for v in g_parts.values())
    g_loss.backward()
    # The G step reaches the whole generator side (the identity classifier belongs to pid).
    # The mouth editor reads the identity image, not the pid features: the identity encoder
    # is then trained through net1 only (the pid -> word adversary's input).
    generator_side = _names(
        model,
        ("identity_encoder", "video_encoder", "audio_encoder", "word_classifier", "generator"),
    )
    if generator == "mouth_editor":
        unused = ("identity_encoder.stage2", "identity_encoder.stage3", "identity_encoder.stage4")
        generator_side = {n for n in generator_side if not n.startswith(unused)}
    for name, p in model.named_parameters():
        if name in generator_side:
            assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.any(), name


def test_wid_and_pid_stages_train_only_their_modules():
    cfg = DavsConfig.from_preset("tiny")
    model = DavsModel(cfg).train()
    batch = _batch(cfg)
    fwd = stages.forward(model, batch, "wid")
    loss, parts = stages.generator_loss(model, fwd, batch, "wid")
    assert set(parts) == {"ce_audio", "ce_video", "contrastive", "modality_flip"}
    loss.backward()
    wid_modules = ("video_encoder", "audio_encoder", "word_classifier", "modality_discriminator")
    _grads(model, _names(model, wid_modules))
    model.zero_grad(set_to_none=True)
    loss, parts = stages.pid_loss(model, batch)
    loss.backward()
    _grads(model, _names(model, ("identity_encoder", "identity_classifier")))
    # The unknown identity (-1) is left out: the loss equals the CE over the known items.
    assert parts["pid_ce"] > 0


def test_person_ce_averages_over_known_identities_only():
    """The masked form equals the cross-entropy of the known items alone, in float32 from
    float16 logits; with no identity known it is 0 and still differentiable."""
    logits = torch.randn(5, 4, dtype=torch.float16)
    labels = torch.tensor([2, -1, 0, -1, 3])
    known = labels >= 0
    got = stages._person_ce(logits, labels)
    want = torch.nn.functional.cross_entropy(logits[known].float(), labels[known])
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want)
    none = logits.float().requires_grad_()
    zero = stages._person_ce(none, torch.full((5,), -1))
    zero.backward()
    assert zero.item() == 0 and torch.equal(none.grad, torch.zeros_like(none))


def _outside_edit_box_as_identity(cfg: DavsConfig, batch: dict) -> None:
    """Frames (and adversary frames) of each clip equal to its identity frame outside the edit
    box: the mouth editor keeps those pixels, so a loss there could not go down."""
    top, bottom, left, right = cfg.edit_box_px
    outside = torch.ones(cfg.image_size, cfg.image_size, dtype=torch.bool)
    outside[top:bottom, left:right] = False
    for key in ("frames", "adv_frames"):
        x = batch[key]  # [B, n, 3, S, S]
        batch[key] = torch.where(outside, batch["identity"][:, None], x)


@pytest.mark.parametrize(
    "stage, generator",
    [(s, "davs") for s in stages.STAGES] + [("render", "mouth_editor"), ("gen", "mouth_editor")],
)
def test_each_stage_lowers_its_loss_on_a_fixed_batch(stage, generator):
    torch.manual_seed(0)
    cfg = DavsConfig.from_preset("tiny", generator=generator)
    model = DavsModel(cfg).train()
    batch = _batch(cfg)
    lr = 3e-3
    if generator == "mouth_editor":  # what it cannot change, the frames have as the identity's
        _outside_edit_box_as_identity(cfg, batch)
        lr = 1e-3  # the small preset's: with no normalisation layers, 3e-3 is noisy here
    opt = torch.optim.Adam(model.generator_parameters(), lr=lr)
    losses = []
    for _ in range(15):
        opt.zero_grad(set_to_none=True)
        if stage in stages.ONE_SIDED:
            loss, _ = stages.ONE_SIDED[stage](model, batch)
        else:
            loss, _ = stages.generator_loss(
                model, stages.forward(model, batch, stage), batch, stage
            )
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


@pytest.mark.parametrize("generator", ["mouth_editor", "davs"])
def test_render_stage_trains_the_generator_and_audio_encoder_on_frozen_others(generator):
    """One step of `render` through TrainStep (what the trainer runs) lowers its loss on a
    fixed batch; only the generator and the audio encoder change: the other encoders' and the
    word classifier's weights and BatchNorm statistics stay as they were, and their modes and
    requires_grad flags come back as they were."""
    torch.manual_seed(0)
    cfg = DavsConfig.from_preset("tiny", generator=generator)
    model = DavsModel(cfg).train()
    batch = example_batch(cfg, B)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    step = TrainStep(model, cfg, torch.device("cpu"), amp=False)
    step.make_optimizers("render")
    assert set(step.optimizers) == {"g"}
    assert STAGE_MODULES["render"] == (("generator", "audio_encoder"), ())
    parts = step("render", batch)
    assert set(parts) == {"rec_audio", "rec_video", "smoothness", "ce_audio"}
    assert all(torch.isfinite(v) for v in parts.values())
    changed = {
        k.split(".")[0] for k, v in model.state_dict().items() if not torch.equal(v, before[k])
    }
    assert changed == {"generator", "audio_encoder"}
    assert all(m.training for m in model.modules())
    assert all(p.requires_grad for p in model.parameters())
    with torch.no_grad():
        again, _ = stages.render_loss(model, batch)
    w = cfg.loss
    loss = parts["rec_audio"] + parts["rec_video"] + w.smoothness * parts["smoothness"]
    loss = loss + w.word_ce * parts["ce_audio"]
    assert again.item() < loss.item(), (again.item(), loss.item())


def test_gen_step_with_the_mouth_editor_is_finite():
    torch.manual_seed(0)
    cfg = DavsConfig.from_preset("tiny")
    assert cfg.generator == "mouth_editor"
    model = DavsModel(cfg).train()
    step = TrainStep(model, cfg, torch.device("cpu"), amp=False)
    step.make_optimizers("gen")
    before = model.generator.out.weight.clone()
    parts = step("gen", example_batch(cfg, B))
    assert parts is not None and all(torch.isfinite(v) for v in parts.values())
    assert {"rec_audio", "gan", "d_patch", "pid_uniform"} <= set(parts)
    assert not torch.equal(model.generator.out.weight, before)


def test_view_consistency_compares_two_voice_changes_in_wid_and_gen():
    torch.manual_seed(0)
    cfg = DavsConfig.from_preset("tiny", audio_warp=0.2)
    cfg.loss.view_consistency = 1.0
    model = _model(cfg)
    batch = example_batch(cfg, 4)
    for stage in ("wid", "gen"):
        fwd = stages.forward(model, batch, stage)
        assert fwd.wid_a_view.shape == fwd.wid_a.shape
        assert not torch.allclose(fwd.wid_a_view, fwd.wid_a)  # another warp of each clip
        _, parts = stages.generator_loss(model, fwd, batch, stage)
        assert 0 < parts["view_consistency"] < 2
    model.zero_grad(set_to_none=True)
    fwd = stages.forward(model, batch, "wid")
    stages.view_consistency_loss(fwd.wid_a, fwd.wid_a_view).backward()
    grads = [p.grad for p in model.audio_encoder.parameters() if p.grad is not None]
    assert grads and any(g.abs().max() > 0 for g in grads)
    assert all(p.grad is None for p in model.video_encoder.parameters())
    cfg.loss.view_consistency = 0.0
    assert stages.forward(model, batch, "wid").wid_a_view is None


def test_identity_scatter_trains_the_word_encoders_in_wid_and_gen():
    torch.manual_seed(0)
    cfg = DavsConfig.from_preset("tiny")
    cfg.loss.identity_scatter, cfg.optim.identity_group = 1.0, 2
    model = _model(cfg)
    batch = example_batch(cfg, 4)
    batch["identity_label"] = torch.tensor([3, 3, 5, 5])  # two people, two clips each
    for stage in ("wid", "gen"):
        fwd = stages.forward(model, batch, stage)
        _, parts = stages.generator_loss(model, fwd, batch, stage)
        assert 0 < parts["scatter_audio"] <= 1 and 0 < parts["scatter_video"] <= 1
    model.zero_grad(set_to_none=True)
    fwd = stages.forward(model, batch, "wid")
    a = stages.identity_scatter_loss(fwd.wid_a.mean(1), batch["identity_label"], 8)
    v = stages.identity_scatter_loss(fwd.wid_v.mean(1), batch["identity_label"], 8)
    (a + v).backward()
    for name in ("audio_encoder", "video_encoder"):
        grads = [p.grad for p in getattr(model, name).parameters() if p.grad is not None]
        assert grads and any(g.abs().max() > 0 for g in grads), name
    assert all(p.grad is None for p in model.generator.parameters())


def test_viseme_head_exists_only_when_weighted_and_trains_with_the_word_space():
    """loss.viseme > 0 adds a linear head word-ID -> the 4 visemes of every frame, trained in
    `wid` with the encoders; its loss is the MSE of both modalities' readouts against the
    batch's ground truth. At 0 (the paper's setup) the model has no such head at all."""
    plain = DavsModel(DavsConfig.from_preset("tiny"))
    assert plain.viseme_head is None
    assert not any(k.startswith("viseme_head") for k in plain.state_dict())
    torch.manual_seed(0)
    cfg = DavsConfig.from_preset("tiny")
    cfg.loss.viseme = 10.0
    model = _model(cfg)
    batch = _batch(cfg)
    fwd = stages.forward(model, batch, "wid")
    loss, parts = stages.generator_loss(model, fwd, batch, "wid")
    truth = batch["visemes"]
    for name, wid in (("viseme_audio", fwd.wid_a), ("viseme_video", fwd.wid_v)):
        want = ((wid @ model.viseme_head.weight.T + model.viseme_head.bias) - truth).pow(2).mean()
        assert parts[name].item() == pytest.approx(want.item(), rel=1e-5)
    loss.backward()
    # (the modality flip reaches the discriminator too; its own step ignores those gradients)
    reached = ("video_encoder", "audio_encoder", "word_classifier", "viseme_head")
    _grads(model, _names(model, (*reached, "modality_discriminator")))
    step = TrainStep(model, cfg, torch.device("cpu"), amp=False)
    step.make_optimizers("wid")
    g_params = {id(p) for g in step.optimizers["g"].param_groups for p in g["params"]}
    assert {id(p) for p in model.viseme_head.parameters()} <= g_params
    names = ("viseme_audio", "viseme_video")
    first = {k: v.item() for k, v in step("wid", batch).items() if k in names}
    for _ in range(14):  # the same batch: both readouts fit it (video through dropout, slower)
        parts = step("wid", batch)
    last = {k: parts[k].item() for k in names}
    assert last["viseme_audio"] < 0.6 * first["viseme_audio"], (first, last)
    assert last["viseme_video"] < 0.95 * first["viseme_video"], (first, last)
