"""DavsConfig: presets, derived values, JSON round trip, validation messages, the generator
choice and the mouth editor's edit box."""

import argparse
import dataclasses
import json

import pytest

from fastdavs.cli import add_config_args, config_from_args
from fastdavs.config import PRESETS, ConfigError, DavsConfig, LossWeights, OptimConfig


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_round_trips_through_json(name, tmp_path):
    cfg = DavsConfig.from_preset(name)
    assert cfg.preset == name
    again = DavsConfig.from_json(cfg.to_json())
    assert again == cfg
    path = tmp_path / "config.json"
    path.write_text(cfg.to_json())
    assert DavsConfig.load(path) == cfg
    # Tuples come back as tuples, nested sections as dataclasses.
    assert isinstance(again.mouth_box, tuple)
    assert dataclasses.is_dataclass(again.loss)


def test_paper_preset_matches_the_original():
    cfg = DavsConfig.from_preset("paper")
    assert (cfg.image_size, cfg.pid_dim, cfg.word_dim, cfg.num_words) == (256, 256, 256, 500)
    assert cfg.mouth_box_px == (170, 234, 64, 192)  # rows 170:234, cols 64:192 of 256
    assert cfg.seq_dim == 3072
    assert cfg.ch(160) == 160
    assert (cfg.loss.pid_uniform, cfg.loss.modality_flip, cfg.loss.reconstruction) == (1e6, 5, 4)
    assert (cfg.optim.lr, cfg.optim.beta1, cfg.optim.beta2) == (2e-4, 0.9, 0.999)


def test_width_scaling_rounds_to_multiples_of_four():
    cfg = DavsConfig.from_preset("paper", width=0.25)
    assert [cfg.ch(c) for c in (32, 64, 96, 160, 320, 3)] == [8, 16, 24, 40, 80, 4]


def test_mouth_box_scales_with_image_size():
    assert DavsConfig.from_preset("small").mouth_box_px == (42, 58, 16, 48)  # 64 px


def test_overrides_are_validated():
    cfg = DavsConfig.from_preset("tiny", word_head="tcn", seq_len=7)
    assert (cfg.word_head, cfg.seq_len) == ("tcn", 7)
    with pytest.raises(ConfigError, match="word_head='lstm'"):
        DavsConfig.from_preset("tiny", word_head="lstm")


@pytest.mark.parametrize(
    "change, message",
    [
        ({"image_size": 100}, "image_size=100: must be a power of two"),
        ({"image_size": 16}, "image_size=16"),
        ({"width": 0}, "width=0"),
        ({"num_words": 1}, "at least 2 classes"),
        ({"hourglass_depth": 5}, "hourglass_depth=5: must be 1..4"),
        ({"mfcc_steps": 25}, "20x12"),
        ({"gan_frames": 0}, "gan_frames=0"),
        ({"audio_warp": 0.6}, r"audio_warp=0.6: must be in \[0, 0.5\]"),
        ({"mouth_box": (0.8, 0.2, 0.1, 0.9)}, "mouth_box"),
        ({"optim": OptimConfig(identity_group=17)}, "identity_group=17: must be 1..batch_size"),
        ({"loss": LossWeights(identity_scatter=1.0)}, "set optim.identity_group to 2 or more"),
        ({"loss": LossWeights(view_consistency=1.0)}, "set audio_warp and/or audio_jitter"),
    ],
)
def test_invalid_values_name_the_field(change, message):
    with pytest.raises(ConfigError, match=message):
        DavsConfig.from_preset("small", **change)


def test_invalid_nested_values_name_the_field():
    data = DavsConfig.from_preset("tiny").to_dict()
    data["loss"]["pid_uniform"] = -1
    with pytest.raises(ConfigError, match=r"loss\.pid_uniform=-1"):
        DavsConfig.from_dict(data)
    data = DavsConfig.from_preset("tiny").to_dict()
    data["optim"]["batch_size"] = 0
    with pytest.raises(ConfigError, match=r"optim\.batch_size=0"):
        DavsConfig.from_dict(data)
    data = DavsConfig.from_preset("tiny").to_dict()
    data["optim"]["lr_decay"] = "cosine"
    with pytest.raises(ConfigError, match=r"optim\.lr_decay='cosine': choose one of constant"):
        DavsConfig.from_dict(data)


def test_a_config_written_before_lr_decay_reads_as_constant():
    """config.json of runs made before the field existed: the original constant lr."""
    data = DavsConfig.from_preset("small").to_dict()
    del data["optim"]["lr_decay"]
    optim = DavsConfig.from_dict(data).optim
    assert optim.lr_decay == "constant" and optim.lr_scale("gen", 5, 10) == 1.0
    linear = dataclasses.replace(optim, lr_decay="linear")
    assert linear.lr_scale("gen", 5, 10) == 0.5 and linear.lr_scale("wid", 5, 10) == 1.0


def test_json_errors_are_clear(tmp_path):
    data = DavsConfig.from_preset("tiny").to_dict()
    data["loss"]["gain"] = 1.0
    with pytest.raises(ConfigError, match=r"unknown config field\(s\) loss\.gain"):
        DavsConfig.from_dict(data)
    data = DavsConfig.from_preset("tiny").to_dict()
    data["image_size"] = "32"
    with pytest.raises(ConfigError, match="image_size: expected an integer"):
        DavsConfig.from_dict(data)
    data["image_size"] = True
    with pytest.raises(ConfigError, match="image_size: expected an integer"):
        DavsConfig.from_dict(data)
    bad = tmp_path / "config.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match=f"{bad}: not valid JSON"):
        DavsConfig.load(bad)
    bad.write_text(json.dumps([1, 2]))
    with pytest.raises(ConfigError, match="expected a JSON object"):
        DavsConfig.load(bad)
    with pytest.raises(ConfigError, match="cannot read config"):
        DavsConfig.load(tmp_path / "missing.json")


def test_unknown_preset():
    with pytest.raises(
        ConfigError, match="unknown preset 'huge': choose one of paper, small, tiny"
    ):
        DavsConfig.from_preset("huge")


# ---- generator choice and the mouth editor's edit box ------------------------------------------
def test_generator_defaults_keep_old_configs_on_the_original_decoder(tmp_path):
    assert DavsConfig.from_preset("paper").generator == "davs"
    assert DavsConfig.from_preset("paper").schedule.render_steps == 0  # the original's schedule
    for name in ("small", "tiny"):
        cfg = DavsConfig.from_preset(name)
        assert cfg.generator == "mouth_editor" and cfg.schedule.render_steps > 0
    # A config.json written before these fields existed means the original decoder, no render.
    data = DavsConfig.from_preset("small").to_dict()
    for key in ("generator", "edit_box", "edit_feather"):
        del data[key]
    del data["schedule"]["render_steps"]
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    old = DavsConfig.load(path)
    assert old.generator == "davs" and old.schedule.render_steps == 0
    assert old.edit_box == DavsConfig().edit_box


@pytest.mark.parametrize("image_size", [32, 64, 128, 256, 512, 1024])
def test_edit_box_pixels_halve_twice_and_contain_the_mouth(image_size):
    cfg = DavsConfig.from_preset(
        "paper", image_size=image_size, hourglass_depth=1, generator="mouth_editor"
    )
    top, bottom, left, right = cfg.edit_box_px
    assert all(edge % 4 == 0 for edge in cfg.edit_box_px)
    assert 0 <= top < bottom <= image_size and 0 <= left < right <= image_size
    # Rounded outwards: the pixel box holds the fractional one.
    s = image_size
    assert top <= cfg.edit_box[0] * s and bottom >= cfg.edit_box[1] * s
    assert left <= cfg.edit_box[2] * s and right >= cfg.edit_box[3] * s
    m_top, m_bottom, m_left, m_right = cfg.mouth_box_px
    f = cfg.edit_feather_px
    assert m_top - top >= f and m_left - left >= f and right - m_right >= f
    assert bottom == s  # the chin side runs to the frame's edge: no ramp there


def test_edit_box_pixels_at_the_presets():
    assert DavsConfig.from_preset("small").edit_box_px == (32, 64, 8, 56)
    assert DavsConfig.from_preset("small").edit_feather_px == 4
    assert DavsConfig.from_preset("tiny").edit_box_px == (16, 32, 4, 28)
    # Rounding outwards to multiples of 4: 0.3 * 64 = 19.2 -> 16, 0.9 * 64 = 57.6 -> 60.
    cfg = DavsConfig.from_preset("small", edit_box=(0.3, 0.95, 0.11, 0.9))
    assert cfg.edit_box_px == (16, 64, 4, 60)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"generator": "unet"}, "generator='unet': choose one of davs, mouth_editor"),
        ({"edit_box": (0.9, 0.5, 0.1, 0.9)}, r"edit_box=\(0.9, 0.5, 0.1, 0.9\): \(top, bottom"),
        ({"edit_feather": 0.0}, "edit_feather=0.0: must be in"),
        # The mouth box (rows 42:58, cols 16:48 at 64 px) sticks out of this one ...
        ({"edit_box": (0.7, 1.0, 0.125, 0.875)}, r"edit_box=.*must contain mouth_box"),
        # ... or holds it with 2 px above it (rows from 40), not the 4 px of the blend ramp.
        ({"edit_box": (0.625, 1.0, 0.125, 0.875)}, r"edit_box=.*\(4 px\) to spare"),
        ({"edit_feather": 0.25}, r"with at least edit_feather \(16 px\)"),
    ],
)
def test_invalid_editor_values_name_the_field(change, message):
    with pytest.raises(ConfigError, match=message):
        DavsConfig.from_preset("small", **change)


def test_edit_box_is_only_checked_against_the_mouth_for_the_editor():
    cfg = DavsConfig.from_preset("paper", edit_box=(0.8, 1.0, 0.4, 0.6))  # davs: unused
    assert cfg.generator == "davs"
    with pytest.raises(ConfigError, match="must contain mouth_box"):
        DavsConfig.from_preset("paper", edit_box=(0.8, 1.0, 0.4, 0.6), generator="mouth_editor")


def test_generator_fields_have_command_line_flags():
    parser = argparse.ArgumentParser()
    add_config_args(parser)
    args = parser.parse_args([
        "--preset", "small", "--generator", "davs", "--edit-box", "0.5", "1", "0.1", "0.9",
        "--edit-feather", "0.05", "--schedule-render-steps", "7",
    ])  # fmt: skip
    cfg = config_from_args(args)
    assert (cfg.generator, cfg.edit_box, cfg.edit_feather) == ("davs", (0.5, 1.0, 0.1, 0.9), 0.05)
    assert cfg.schedule.render_steps == 7 and cfg.schedule.gen_steps == 350  # the preset's
    args = parser.parse_args(["--preset", "small", "--generator", "gan"])
    with pytest.raises(ConfigError, match="generator='gan'"):
        config_from_args(args)
