"""The mouth editor (fastdavs/model/mouth_editor.py) on the tiny preset: an exact copy of the
identity frame at initialisation; after training, changes inside the edit box only, blended in
with the feather ramp (no seam); gradients reaching the word-ID; the per-face half computed
once and reused for every frame."""

import pytest
import torch

from fastdavs.config import DavsConfig
from fastdavs.model import DavsModel, MouthEditor
from fastdavs.model.face_code import decode_frames
from fastdavs.model.mouth_editor import feather_mask, identity_shapes

CFG = DavsConfig.from_preset("tiny")  # 32 px, edit box rows 16:32, cols 4:28, 2 px ramp
B, T = 3, 4


def _inputs(seed: int, low: float = 0.0, high: float = 1.0):
    g = torch.Generator().manual_seed(seed)
    s = CFG.image_size
    images = low + (high - low) * torch.rand(B, 3, s, s, generator=g)
    wid = torch.randn(B, T, CFG.word_dim, generator=g)
    return images, wid


def _trained(steps: int = 8, lr: float = 1e-2, seed: int = 0) -> DavsModel:
    """The tiny model after a few Adam steps of the editor on random target frames."""
    torch.manual_seed(seed)
    model = DavsModel(CFG)
    opt = torch.optim.Adam(model.generator.parameters(), lr=lr)
    images, wid = _inputs(seed)
    target = torch.rand(B, T, 3, CFG.image_size, CFG.image_size)
    for _ in range(steps):
        loss = (model.generate(model.encode_identity(images), wid) - target).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def _outside(box, s: int) -> torch.Tensor:
    """[S, S] bool, True outside the box."""
    top, bottom, left, right = box
    mask = torch.ones(s, s, dtype=torch.bool)
    mask[top:bottom, left:right] = False
    return mask


def test_the_tiny_and_small_presets_use_the_editor():
    assert isinstance(DavsModel(CFG).generator, MouthEditor)
    assert not isinstance(DavsModel(DavsConfig.from_preset("tiny", generator="davs")).generator,
                          MouthEditor)  # fmt: skip


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_initial_output_is_the_identity_frame_bit_for_bit(mode):
    """The residual's last convolution starts at 0: frame = identity + 0, exactly (no rounding:
    x + 0.0 == x in float32), in both modes and for any speech."""
    model = DavsModel(CFG).train(mode == "train")
    images, wid = _inputs(1)
    frames = model.generate(model.encode_identity(images), wid)  # [B, T, 3, S, S]
    assert frames.shape == (B, T, 3, CFG.image_size, CFG.image_size)
    assert torch.equal(frames, images[:, None].expand_as(frames))


def test_training_changes_only_the_edit_box():
    model = _trained()
    images, wid = _inputs(2)
    with torch.no_grad():
        frames = model.generate(model.encode_identity(images), wid)
    change = (frames - images[:, None]).abs()  # [B, T, 3, S, S]
    outside = _outside(CFG.edit_box_px, CFG.image_size)
    assert torch.equal(change[..., outside], torch.zeros_like(change[..., outside]))  # exactly
    top, bottom, left, right = CFG.edit_box_px
    assert change[..., top:bottom, left:right].mean() > 1e-3  # it did learn an edit
    # and the edit depends on the speech
    with torch.no_grad():
        other = model.generate(model.encode_identity(images), torch.randn_like(wid))
    assert (other - frames).abs().max() > 1e-3


def test_feather_mask_ramps_to_zero_at_the_sides_inside_the_frame():
    top, bottom, left, right = CFG.edit_box_px
    f = CFG.edit_feather_px
    mask = feather_mask(CFG)  # [h, w]
    assert mask.shape == (bottom - top, right - left)
    interior = mask[f:, f:-f]  # the bottom side is the frame's edge: no ramp there
    assert torch.equal(interior, torch.ones_like(interior))
    col = mask[-1]  # a row along the bottom: ramps at the left and right sides only
    ramp = (torch.arange(f) + 0.5) / f  # pixel centres (d + 0.5) / width
    torch.testing.assert_close(col[:f], ramp, rtol=0, atol=1e-7)
    torch.testing.assert_close(col[-f:], ramp.flip(0), rtol=0, atol=1e-7)
    torch.testing.assert_close(mask[:f, -1 - f], ramp, rtol=0, atol=1e-7)  # top side
    assert mask[-1, f] == 1  # bottom row, inside: full strength up to the frame's edge
    assert mask.min() == 0.5 / f * 0.5 / f  # a top corner: both ramps
    # At the small preset's 64 px the ramp is 4 px wide.
    small, ramp = feather_mask(DavsConfig.from_preset("small")), [0.125, 0.375, 0.625, 0.875]
    torch.testing.assert_close(small[-1, :4], torch.tensor(ramp))  # left side
    torch.testing.assert_close(small[:4, 20], torch.tensor(ramp))  # top side


def test_the_edit_is_blended_in_without_a_seam():
    """frame - identity = feather mask x the raw residual, exactly where nothing is clamped
    (identity frames in [0.3, 0.7], small edits): the raw residual is what the same editor
    pastes with its mask set to 1. At the box's sides inside the frame the change is at most
    0.5 / feather of the raw residual, so the step to the untouched pixels outside is small."""
    model = _trained(lr=2e-3)
    images, wid = _inputs(3, 0.3, 0.7)
    with torch.no_grad():
        ident = model.encode_identity(images)
        frames = model.generate(ident, wid)
        mask = model.generator.feather.clone()
        model.generator.feather.fill_(1)
        raw = model.generate(ident, wid)
        model.generator.feather.copy_(mask)
    top, bottom, left, right = CFG.edit_box_px
    change = (frames - images[:, None])[..., top:bottom, left:right]
    raw_change = (raw - images[:, None])[..., top:bottom, left:right]
    assert raw_change.abs().max() < 0.3  # nothing clamped
    torch.testing.assert_close(change, raw_change * mask[0, 0], rtol=0, atol=1e-6)
    f = CFG.edit_feather_px
    for side in (change[..., 0, :], change[..., :, 0], change[..., :, -1]):  # top, left, right
        assert side.abs().max() <= 0.5 / f * raw_change.abs().max() + 1e-6
    assert raw_change[..., 0, :].abs().max() > 1e-3  # without the ramp there would be a seam


def test_gradients_reach_the_word_id_once_the_residual_is_nonzero():
    images, wid = _inputs(4)
    model = DavsModel(CFG)
    wid.requires_grad_(True)
    model.generate(model.encode_identity(images), wid).sum().backward()
    assert not wid.grad.any()  # the zero-initialised last layer blocks it at step 0
    model = _trained(steps=2)
    wid.grad = None
    model.generate(model.encode_identity(images), wid).square().sum().backward()
    assert torch.isfinite(wid.grad).all() and wid.grad.abs().min() > 0  # every wid entry


def test_per_face_half_is_computed_once_and_reused_for_every_frame():
    model = _trained()
    images, wid = _inputs(5)
    calls = []
    hook = model.generator.enc1.register_forward_hook(lambda *a: calls.append(1))
    with torch.no_grad():
        ident = model.encode_identity(images)
        assert len(calls) == 1
        frames = model.generate(ident, wid)  # [B, T, ...] from B cached encodings
        assert len(calls) == 1
        for b in range(B):  # one face at a time, as the engines and the Synthesizer decode
            one = [t[b : b + 1] for t in ident.edit]
            torch.testing.assert_close(decode_frames(model.generator, one, wid[b]), frames[b])
    hook.remove()
    shapes = identity_shapes(CFG)
    assert list(shapes) == list(ident.edit._fields)
    for name, t in zip(ident.edit._fields, ident.edit, strict=True):
        assert tuple(t.shape[1:]) == shapes[name], name
