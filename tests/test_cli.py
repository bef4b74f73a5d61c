"""Every command runs as a console script and as `python -m`, answers --help, and ends with one
clear line (never a traceback) where the input is wrong."""

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fastdavs.cli import add_config_args, config_from_args
from fastdavs.config import ConfigError

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
