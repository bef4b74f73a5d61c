"""Checkpoint and engine directories edited by hand: weights of another shape
with the manifest made consistent again (so only the shape check can catch it), config.json
swapped for another preset's, a truncated file, a changed byte. `load_model` /
`fastdavs.engines.load` raise one error naming the file and what does not match, and
`fastdavs-eval` / `fastdavs-generate` print exactly that as one line, exit 2, and write nothing.
Engines load without unpickling.

A preset *name* edited alone is not refused: the fields, not the name, define the architecture
(a run may override a preset's fields), and the weights are checked against those fields.

Covered elsewhere, not repeated here: every damage of a checkpoint file through
`load_checkpoint`/`load_model` and a checkpoint loading without pickle
(tests/test_checkpoint.py::test_damaged_checkpoint_is_refused_by_name,
::test_checkpoint_holds_no_pickle_and_loads_without_it); an engine's changed byte, missing
artifact, edited format version, damaged or missing config.json
(tests/test_engines.py::test_tampered_artifact_is_refused, ::test_edited_config_is_refused).
"""

import json
import pickle
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file, save_file

from fastdavs.config import DavsConfig
from fastdavs.engines import BuildConfig, EngineError, build_engine, load
from fastdavs.errors import CheckpointError
from fastdavs.evaluate.cli import main as eval_main
from fastdavs.infer.generate import main as generate_main
from fastdavs.io.checkpoint import CONFIG, DAMAGED, MODEL, load_model, save_checkpoint
from fastdavs.io.manifest import file_entry
from fastdavs.model import DavsModel

SMALL = DavsConfig.from_preset("small")
REBUILD = "rebuild it with fastdavs-build-engine"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    model = DavsModel(DavsConfig.from_preset("tiny"))
    return save_checkpoint(tmp_path_factory.mktemp("run"), "step_000001", model)


@pytest.fixture(scope="module")
def engine(ckpt, tmp_path_factory) -> Path:
    return build_engine(ckpt, tmp_path_factory.mktemp("eng") / "tiny", BuildConfig(batch=(1, 2, 4)))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    """A face png and 1 s of 16 kHz noise: valid files, so the model is what gets refused."""
    root = tmp_path_factory.mktemp("inputs")
    cv2.imwrite(str(root / "face.png"), np.full((64, 64, 3), 128, np.uint8))
    noise = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
    sf.write(root / "speech.wav", noise, 16000)
    return {"face": root / "face.png", "audio": root / "speech.wav"}


def _edit_json(path: Path, edit) -> None:
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta))


def _truncate(file: Path) -> str:
    size = file.stat().st_size
    file.write_bytes(file.read_bytes()[: size // 2])
    return f"{file}: truncated ({size // 2} bytes, {file.parent / CONFIG} says {size}); "


def _flip_byte(file: Path) -> str:
    data = bytearray(file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    file.write_bytes(bytes(data))
    return f"{file}: checksum mismatch (sha256 "


# ---- checkpoints ------------------------------------------------------------------------------
def _other_shape(path: Path) -> str:
    """One conv weight one larger in every dimension; the manifest's size and hash updated."""
    weights = load_file(path / MODEL)
    key = next(k for k, v in weights.items() if v.ndim == 4)
    old = list(weights[key].shape)
    weights[key] = torch.zeros([n + 1 for n in old])
    save_file(weights, path / MODEL, metadata={"format": "pt"})
    _edit_json(path / CONFIG, lambda m: m["manifest"].update({MODEL: file_entry(path / MODEL)}))
    return (
        f"{path / MODEL}: {key} has shape {[n + 1 for n in old]} but the model expects {old} "
        f"(the weights do not fit the 'tiny' config in {path / CONFIG}: one of the two was "
        f"edited or replaced; {DAMAGED})"
    )


def _other_preset(path: Path) -> str:
    """config.json's model config replaced by the small preset's (the manifest still holds)."""
    _edit_json(path / CONFIG, lambda m: m.update(config=SMALL.to_dict()))
    return f"{path / MODEL}: identity_encoder."  # then every key and shape that differs


CHECKPOINT_CASES = {
    "weights of another shape": _other_shape,
    "config.json of another preset": _other_preset,
    "truncated model.safetensors": lambda path: _truncate(path / MODEL) + DAMAGED,
    "changed byte in model.safetensors": lambda path: _flip_byte(path / MODEL),
}


@pytest.mark.parametrize("case", CHECKPOINT_CASES)
def test_edited_checkpoint_is_refused(case, ckpt, inputs, tmp_path, capsys, robustness):
    path = Path(shutil.copytree(ckpt, tmp_path / "ckpt"))
    expected = CHECKPOINT_CASES[case](path)
    with pytest.raises(CheckpointError) as e:
        load_model(path)
    message = str(e.value)
    assert message.startswith(expected), message
    if case == "config.json of another preset":
        assert message.endswith(
            f"(the weights do not fit the 'small' config in {path / CONFIG}: one of the two was "
            f"edited or replaced; {DAMAGED})"
        ), message
    out = tmp_path / "out"
    commands = {
        "fastdavs-eval": lambda: eval_main([str(path), "--out", str(out / "eval.json")]),
        "fastdavs-generate": lambda: generate_main(
            [
                "--checkpoint",
                str(path),
                "--face",
                str(inputs["face"]),
                "--audio",
                str(inputs["audio"]),
                "-o",
                str(out / "talk.mp4"),
            ]  # fmt: skip
        ),
    }
    out.mkdir()
    for prog, command in commands.items():
        assert command() == 2, prog
        err = capsys.readouterr().err
        assert err == f"{prog}: error: {message}\n", err
        assert list(out.iterdir()) == []
    robustness.record(
        f"fastdavs-eval CKPT; fastdavs-generate --checkpoint CKPT ... ({case})",
        "exit 2, one line: " + message.replace(str(path), "CKPT")[:90] + "...",
    )


# ---- engines ----------------------------------------------------------------------------------
def _engine_other_preset(path: Path) -> str:
    _edit_json(path / "config.json", lambda m: m.update(model=SMALL.to_dict()))
    return (
        f"{path / 'config.json'}: its model config (small, 64 px) does not match identity.onnx, "
        "whose inputs are {'images': (None, 3, 32, 32)} (expected {'images': (None, 3, 64, 64)}; "
        "None = any batch): config.json was edited or belongs to another engine; rebuild the "
        "engine with fastdavs-build-engine"
    )


ENGINE_CASES = {
    "config.json of another preset": _engine_other_preset,
    "truncated frames.onnx": lambda path: _truncate(path / "frames.onnx") + REBUILD,
}


@pytest.mark.parametrize("case", ENGINE_CASES)
def test_edited_engine_is_refused(case, engine, inputs, tmp_path, capsys, robustness):
    path = Path(shutil.copytree(engine, tmp_path / "engine"))
    expected = ENGINE_CASES[case](path)
    with pytest.raises(EngineError) as e:
        load(path)
    assert str(e.value) == expected
    out = tmp_path / "talk.mp4"
    argv = ["--engine", str(path), "--face", str(inputs["face"]), "--audio", str(inputs["audio"])]
    assert generate_main([*argv, "-o", str(out)]) == 2
    assert capsys.readouterr().err == f"fastdavs-generate: error: {expected}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["engine"]  # no mp4, no temporary
    robustness.record(
        f"fastdavs-generate --engine DIR ... ({case})",
        "exit 2, one line: " + expected.replace(str(path), "DIR")[:90] + "...",
    )


def test_engine_loads_without_unpickling(engine, monkeypatch, robustness):
    assert {p.suffix for p in engine.iterdir()} == {".json", ".onnx"}

    def refuse(*args, **kwargs):
        raise AssertionError("an engine load must not unpickle")

    for module, name in [(torch, "load"), (pickle, "load"), (pickle, "loads")]:
        monkeypatch.setattr(module, name, refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    identity = load(engine).identity(torch.rand(1, 3, 32, 32))
    assert all(torch.isfinite(t).all() for t in identity)
    robustness.record(
        "fastdavs.engines.load(DIR) with pickle and torch.load disabled",
        "loads and runs; the directory holds only .json and .onnx",
    )
