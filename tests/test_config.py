"""DavsConfig: presets, derived values, JSON round trip, validation messages."""

import dataclasses
import json

import pytest

from fastdavs.config import PRESETS, ConfigError, DavsConfig


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
        ({"mouth_box": (0.8, 0.2, 0.1, 0.9)}, "mouth_box"),
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
