"""Every command runs as a console script and as `python -m`, answers --help, and ends with one
clear line (never a traceback) where the input is wrong."""

import argparse
import dataclasses
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fastdavs.cli import add_config_args, config_from_args, dataclass_from_args
from fastdavs.config import ConfigError
from fastdavs.data import prepare
from fastdavs.engines import build
from fastdavs.engines.builder import BuildConfig
from fastdavs.infer import generate
from fastdavs.train import cli as train_cli
from fastdavs.train.loop import RunOptions

COMMANDS = {
    "fastdavs-train": "fastdavs.train",
    "fastdavs-prepare": "fastdavs.data.prepare",
    "fastdavs-generate": "fastdavs.infer.generate",
    "fastdavs-build-engine": "fastdavs.engines.build",
    "fastdavs-eval": "fastdavs.evaluate",
}


def _script(name: str) -> str:
    path = Path(sys.executable).parent / name
    found = str(path) if path.exists() else shutil.which(name)
    assert found, f"console script {name} is not installed (pip install -e .)"
    return found


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help_exits_zero_both_ways(name):
    for cmd in ([_script(name)], [sys.executable, "-m", COMMANDS[name]]):
        result = _run([*cmd, "--help"])
        assert result.returncode == 0, result.stderr
        assert f"usage: {name}" in result.stdout


def test_generate_without_a_model_is_one_line(tmp_path):
    out = tmp_path / "o.mp4"
    cmd = [_script("fastdavs-generate"), "--face", "f.png", "--audio", "a.wav", "-o", str(out)]
    result = _run(cmd)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "fastdavs-generate: error: give the model: --checkpoint CKPT (eager) or --engine DIR"
    )
    assert not out.exists()


def test_prepare_of_a_missing_tree_is_one_line(tmp_path):
    result = _run([_script("fastdavs-prepare"), str(tmp_path / "nowhere"), str(tmp_path / "out")])
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"fastdavs-prepare: error: {tmp_path / 'nowhere'}: not a directory; "
        "give the root of an LRW-layout tree"
    )


def test_bad_config_flag_is_one_line():
    result = _run([_script("fastdavs-train"), "--preset", "small", "--image-size", "100"])
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "fastdavs-train: error: image_size=100: must be a power of two between 32 and 1024 "
        "(the paper uses 256)"
    )


def test_config_flags_are_derived_from_the_dataclass():
    parser = argparse.ArgumentParser()
    add_config_args(parser, default_preset="small")
    args = parser.parse_args(["--width", "0.5", "--loss-pid-uniform", "10", "--word-head", "tcn"])
    cfg = config_from_args(args)
    assert (cfg.preset, cfg.width, cfg.word_head) == ("small", 0.5, "tcn")
    assert cfg.loss.pid_uniform == 10.0
    assert cfg.image_size == 64  # untouched fields keep the preset's value
    args = parser.parse_args(["--mouth-box", "0.6", "0.9", "0.2", "0.8", "--optim-lr", "1e-3"])
    cfg = config_from_args(args)
    assert cfg.mouth_box == (0.6, 0.9, 0.2, 0.8) and cfg.optim.lr == 1e-3
    with pytest.raises(ConfigError, match="hourglass_depth=9"):
        config_from_args(parser.parse_args(["--hourglass-depth", "9"]))


def _refusal(main, argv: list[str], capsys) -> str:
    """The one stderr line of a command whose parser refuses `argv` (exit status 2)."""
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1, err
    return err.strip()


def test_prepare_takes_only_the_crop_size_of_the_model(capsys, tmp_path):
    err = _refusal(prepare.main, ["src", "out", "--width", "0.5"], capsys)
    assert err == (
        "fastdavs-prepare: error: unrecognized arguments: --width 0.5 (see fastdavs-prepare --help)"
    )
    args = prepare.build_parser().parse_args(["src", "out", "--preset", "tiny"])
    assert config_from_args(args).image_size == 32
    args = prepare.build_parser().parse_args(["src", "out", "--image-size", "128"])
    assert config_from_args(args).image_size == 128 and args.preset == "small"
    model_flags = {a.dest for g in prepare.build_parser()._action_groups for a in g._group_actions}
    assert {"preset", "image_size"} <= model_flags and "width" not in model_flags


@pytest.mark.parametrize("flag", ["--num-words", "--num-identities"])
def test_train_takes_the_classifier_sizes_from_the_data(flag, capsys):
    err = _refusal(train_cli.main, ["--preset", "tiny", flag, "5"], capsys)
    assert err == (
        f"fastdavs-train: error: unrecognized arguments: {flag} 5 (see fastdavs-train --help)"
    )


def _field_flags(parser: argparse.ArgumentParser, cls) -> dict[str, list[str]]:
    """field name -> the option strings of its flag, for every field of `cls`."""
    by_dest = {a.dest: a.option_strings for a in parser._actions}
    return {f.name: by_dest.get(f.name) for f in dataclasses.fields(cls)}


# Every field of each command's dataclass: argv giving it a value other than its default, and
# that value. A new field without a flag (or whose flag does not reach it) fails here.
ROUND_TRIPS = {
    (train_cli.build_parser, RunOptions): {
        "data": (["--data", "d"], Path("d")),
        "out": (["--out", "o"], Path("o")),
        "stages": (["--stage", "wid"], ("wid",)),
        "amp": (["--amp"], True),
        "max_steps": (["--steps", "3"], 3),
        "resume": (["--resume"], True),
        "workers": (["--workers", "0"], 0),
        "device": (["--device", "cuda:1"], "cuda:1"),
        "channels_last": (["--no-channels-last"], False),
        "retain_heap": (["--no-retain-heap"], False),
        "kernel_backend": (["--kernel-backend", "ref"], "ref"),
        "evaluate": (["--no-eval"], False),
    },
    (build.build_parser, BuildConfig): {
        "backend": (["--backend", "openvino"], "openvino"),
        "precision": (["--precision", "int8"], "int8"),
        "batch": (["--batch", "1:2:4"], (1, 2, 4)),
        "opset": (["--opset", "18"], 18),
        "workspace_mb": (["--workspace-mb", "512"], 512),
        "parity_frames": (["--parity-frames", "3"], 3),
        "calibration_data": (["--calibration-data", "shards"], "shards"),
        "calibration_frames": (["--calibration-frames", "16"], 16),
        "rewrite": (["--no-rewrite"], False),
        "threads": (["--threads", "2"], 2),
    },
    (generate.build_parser, generate.GenerateOptions): {
        "face": (["--face", "g.jpg"], "g.jpg"),
        "output": (["--output", "p.mp4"], "p.mp4"),
        "audio": (["--audio", "a.wav"], "a.wav"),
        "driving_video": (["--driving-video", "v.mp4"], "v.mp4"),
        "checkpoint": (["--checkpoint", "c"], "c"),
        "engine": (["--engine", "e"], "e"),
        "face_frame": (["--face-frame", "2"], 2),
        "box": (["--box", "1,2,3,4"], (1.0, 2.0, 3.0, 4.0)),
        "paste_back": (["--paste-back"], True),
        "align_smoothing": (["--align-smoothing", "0"], 0.0),
        "wid_scale": (["--wid-scale", "1.5"], 1.5),
        "finetune_steps": (["--finetune-steps", "5"], 5),
        "batch_size": (["--batch-size", "7"], 7),
        "device": (["--device", "cuda"], "cuda"),
        "amp": (["--amp"], True),
    },
}
# What a command needs besides the field under test.
REQUIRED = {
    BuildConfig: ["--checkpoint", "c", "--out", "o"],
    generate.GenerateOptions: ["--face", "f.png", "-o", "o.mp4"],
}


@pytest.mark.parametrize(
    ("make_parser", "cls"), list(ROUND_TRIPS), ids=lambda x: getattr(x, "__name__", "")
)
def test_every_option_field_has_a_flag_that_round_trips(make_parser, cls):
    parser, cases = make_parser(), ROUND_TRIPS[make_parser, cls]
    flags = _field_flags(parser, cls)
    assert all(flags.values()), {name: f for name, f in flags.items() if not f}
    assert set(cases) == set(flags)
    base = dataclass_from_args(cls, parser.parse_args(REQUIRED.get(cls, [])))
    if cls is generate.GenerateOptions:  # the defaults of the flags are the dataclass's
        assert base == cls(face="f.png", output="o.mp4")
    else:
        assert base == cls()
    for name, (argv, value) in cases.items():
        assert getattr(base, name) != value, name
        got = dataclass_from_args(cls, parser.parse_args([*REQUIRED.get(cls, []), *argv]))
        assert got == dataclasses.replace(base, **{name: value}), name
    if cls is RunOptions:
        all_stages = parser.parse_args(["--stage", "all"])
        assert dataclass_from_args(RunOptions, all_stages).stages == RunOptions().stages
