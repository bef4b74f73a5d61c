"""DavsModel as a whole: the per-module summary (parameters, GFLOP per frame) and its CLI."""

import json
import subprocess
import sys

import pytest
import torch
from torch import nn

from fastdavs.config import DavsConfig
from fastdavs.model import DavsModel
from fastdavs.model.summary import summarize


def _hooked_flops(module: nn.Module, call) -> float:
    """2 * multiply-accumulates of every conv / linear layer, counted from output shapes."""
    total = 0

    def hook(layer, _inputs, output):
        nonlocal total
        w = layer.weight
        if isinstance(layer, nn.Linear):
            total += 2 * w.numel() * output[..., 0].numel()
        elif isinstance(layer, nn.ConvTranspose2d):
            # every input pixel scatters C_in/groups x C_out x k x k products
            x = _inputs[0]
            total += 2 * w.numel() * x.shape[0] * x[0, 0].numel()
        else:  # Conv1d / Conv2d: each output element takes C_in/groups x k... products
            total += 2 * w[0].numel() * output.numel()

    kinds = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.ConvTranspose2d)
    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, kinds)]
    with torch.no_grad():
        call()
    for h in handles:
        h.remove()
    return total / 1e9


@pytest.mark.parametrize("generator", ["davs", "mouth_editor"])
def test_summary_matches_hand_counted_flops_and_params(generator):
    cfg = DavsConfig.from_preset("tiny", generator=generator)
    rows = {r.name: r for r in summarize(cfg)}
    model = DavsModel(cfg).eval()
    for name, row in rows.items():
        assert row.params == sum(p.numel() for p in getattr(model, name).parameters())
    s, d = cfg.image_size, cfg.word_dim
    image = torch.rand(1, 3, s, s)
    ident = model.encode_identity(image)
    wid = torch.randn(1, d)
    if generator == "davs":
        decode_args = (ident.vec, ident.net2, wid)
    else:  # per frame: the decoding half; the per-face half is given in the role
        decode_args = (*ident.edit, wid)
        per_face = _hooked_flops(model.generator, lambda: model.generator.encode(image))
        assert f"+{per_face:.4f} GFLOP per face" in rows["generator"].role
    hand = {
        "identity_encoder": _hooked_flops(
            model.identity_encoder, lambda: model.identity_encoder(image)
        ),
        "video_encoder": _hooked_flops(model.video_encoder, lambda: model.video_encoder(image)),
        "audio_encoder": _hooked_flops(
            model.audio_encoder, lambda: model.audio_encoder(torch.randn(1, 20, 12))
        ),
        "generator": _hooked_flops(model.generator, lambda: model.generator.decode(*decode_args)),
        "sequence_discriminator": _hooked_flops(
            model.sequence_discriminator,
            lambda: model.sequence_discriminator(
                torch.rand(1, cfg.gan_frames, 3, s, s), torch.randn(1, cfg.gan_frames, 20, 12)
            ),
        )
        / cfg.gan_frames,
    }
    for name, gflop in hand.items():
        assert rows[name].gflop_per_frame == pytest.approx(gflop, rel=1e-6), name


def test_paper_sizes_are_near_the_original():
    rows = {r.name: r for r in summarize(DavsConfig.from_preset("paper"))}
    # Original: decoder ~22.4M, identity encoder ~15.6M (spec/davs.md §1.7); fastdavs drops the
    # conv biases that BatchNorm cancels, a few thousand parameters.
    assert 22.35e6 < rows["generator"].params < 22.45e6
    assert 15.55e6 < rows["identity_encoder"].params < 15.65e6
    # One 256x256 frame through the decoder: about 19 GFLOP.
    assert 18.5 < rows["generator"].gflop_per_frame < 19.5


def test_small_preset_lists_the_mouth_editor():
    """The CPU preset's generator edits the lower face: about 0.2M parameters and 0.065 GFLOP
    per 64 px frame (the DAVS decoder it replaces: 0.073), plus 0.03 GFLOP once per face."""
    result = subprocess.run(
        [sys.executable, "-m", "fastdavs.model", "--preset", "small"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    (line,) = [row for row in result.stdout.splitlines() if row.startswith("generator ")]
    _, params, gflop, role = line.split(maxsplit=3)
    assert role.startswith("mouth editor") and "GFLOP per face" in role
    assert 0.15e6 < int(params.replace(",", "")) < 0.25e6
    assert 0.04 < float(gflop) < 0.08
    davs = {r.name: r for r in summarize(DavsConfig.from_preset("small", generator="davs"))}
    assert davs["generator"].role.startswith("G: pid + skip")


def test_json_cli_exits_zero():
    result = subprocess.run(
        [sys.executable, "-m", "fastdavs.model", "--preset", "paper", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["preset"] == "paper" and data["image_size"] == 256
    names = [m["name"] for m in data["modules"]]
    assert names[0] == "identity_encoder" and "sequence_discriminator" in names
    assert data["total_params"] == sum(m["params"] for m in data["modules"])
