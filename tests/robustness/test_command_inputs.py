"""Hostile inputs to `fastdavs-train`, `fastdavs-eval` and `fastdavs-build-engine`:
missing, corrupt or mismatched data, unwritable or odd output paths,
a --resume with nothing to resume, a damaged checkpoint, bad build options. A failure is exit
status 2 and one stderr line `PROG: error: ...` naming the path and the problem, no traceback,
and nothing partial left (no run files, no checkpoint, no results file, no engine or `.tmp-*`
directory). An option the parser refuses (--batch, --precision) is exit 2 and one line too,
`PROG: error: argument ... (see PROG --help)` (`fastdavs.cli.Parser`).

No case builds an engine: every refusal comes before the export. The tiny preset and the shared
`shards` fixture (tests/conftest.py) keep the one training run that succeeds to about a second.

Covered elsewhere, not repeated here: edited checkpoints through fastdavs-eval
(tests/robustness/test_artifacts.py), a missing tree for fastdavs-prepare (tests/test_cli.py).
"""

import os
import shutil
from pathlib import Path

import pytest

from fastdavs.config import DavsConfig
from fastdavs.data.prepare import prepare
from fastdavs.data.synth import SynthConfig, generate
from fastdavs.engines.build import main as build_main
from fastdavs.evaluate.cli import main as eval_main
from fastdavs.io.checkpoint import CHECKPOINTS, MODEL, load_checkpoint, save_checkpoint
from fastdavs.model import DavsModel
from fastdavs.train.cli import main as train_main

TRAIN = ["--preset", "tiny", "--workers", "0", "--no-eval", "--steps", "1", "--stage", "pid"]


def assert_refused(prog: str, rc: int, err: str, *named: str) -> str:
    """Exit status 2 and one stderr line `PROG: error: ...` containing every string in `named`."""
    assert rc == 2, err
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), err
    for text in named:
        assert text in lines[0], (text, err)
    return lines[0]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    model = DavsModel(DavsConfig.from_preset("tiny"))
    return save_checkpoint(tmp_path_factory.mktemp("run"), "step_000001", model)


def _damaged(shards: Path, dst: Path, split: str = "train") -> Path:
    """A copy of `shards` whose first `split` shard has frames.npy cut to half."""
    data = Path(shutil.copytree(shards, dst))
    frames = data / split / "shard_00000" / "frames.npy"
    frames.write_bytes(frames.read_bytes()[: frames.stat().st_size // 2])
    return data


# ---- fastdavs-train ---------------------------------------------------------------------------
def _train(capfd, data, out) -> tuple[int, str]:
    rc = train_main([*TRAIN, "--data", str(data), "--out", str(out)])
    return rc, capfd.readouterr().err


def test_train_data_missing(shards, tmp_path, capfd, robustness):
    rc, err = _train(capfd, tmp_path / "nope", tmp_path / "run")
    assert_refused("fastdavs-train", rc, err, str(tmp_path / "nope" / "index.json"), "no shard")
    assert os.listdir(tmp_path) == []
    robustness.record("fastdavs-train --data MISSING", "exit 2, one line: no shard index")


def test_train_data_without_index(tmp_path, capfd, robustness):
    (tmp_path / "data").mkdir()
    rc, err = _train(capfd, tmp_path / "data", tmp_path / "run")
    assert_refused("fastdavs-train", rc, err, str(tmp_path / "data" / "index.json"))
    assert os.listdir(tmp_path) == ["data"]
    robustness.record("fastdavs-train --data DIR (no index.json)", "exit 2, one line: no index")


def test_train_corrupt_index(shards, tmp_path, capfd, robustness):
    data = Path(shutil.copytree(shards, tmp_path / "data"))
    (data / "index.json").write_text("{not json")
    rc, err = _train(capfd, data, tmp_path / "run")
    assert_refused("fastdavs-train", rc, err, str(data / "index.json"), "unreadable shard index")
    assert not (tmp_path / "run").exists()
    robustness.record("fastdavs-train --data DIR (corrupt index.json)", "exit 2, one line")


def test_train_truncated_shard(shards, tmp_path, capfd, robustness):
    data = _damaged(shards, tmp_path / "data")
    rc, err = _train(capfd, data, tmp_path / "run")
    frames = data / "train" / "shard_00000" / "frames.npy"
    assert_refused("fastdavs-train", rc, err, str(frames), "unreadable shard array")
    assert not (tmp_path / "run").exists()  # found before the run directory is written
    robustness.record(
        "fastdavs-train --data DIR (frames.npy cut in half)",
        "exit 2, one line naming frames.npy; no run directory",
    )


@pytest.fixture(scope="module")
def shards48(tmp_path_factory) -> Path:
    """A small set prepared at 48 px (the tiny preset trains at 32)."""
    root = tmp_path_factory.mktemp("lrw48")
    generate(
        SynthConfig(identities=3, held_out=2, words=2, takes=1, seed=5, size=64), root / "l", 1
    )
    prepare(root / "l", root / "shards", image_size=48, workers=1)
    return root / "shards"


def test_train_shards_of_another_image_size(shards48, tmp_path, capfd, robustness):
    capfd.readouterr()  # the fixture's progress bars
    rc, err = _train(capfd, shards48, tmp_path / "run")
    assert_refused("fastdavs-train", rc, err, str(shards48), "image_size 48", "has 32")
    assert not (tmp_path / "run").exists()
    robustness.record(
        "fastdavs-train --preset tiny --data DIR (shards prepared at 48 px)",
        "exit 2, one line: prepared for image_size 48, the config has 32",
    )


def test_train_out_under_a_file(shards, tmp_path, capfd, robustness):
    blocker = tmp_path / "file"
    blocker.write_text("a file\n")
    rc, err = _train(capfd, shards, blocker / "run")
    assert_refused("fastdavs-train", rc, err, str(blocker / "run"), "Not a directory")
    assert os.listdir(tmp_path) == ["file"]
    robustness.record("fastdavs-train --out FILE/run", "exit 2, one line: Not a directory")


def test_train_out_with_unicode_and_spaces(shards, tmp_path, capfd, robustness):
    out = tmp_path / "rün dir ü 训练"
    rc, err = _train(capfd, shards, out)
    assert rc == 0 and "Traceback" not in err, err
    _, state = load_checkpoint(out, restore_rng=False)
    assert (state["stage"], state["step"]) == ("pid", 1)
    robustness.record("fastdavs-train --out 'rün dir ü 训练'", "exit 0; a loadable checkpoint")


@pytest.mark.parametrize("kind", ["nonexistent", "empty"])
def test_train_resume_without_a_checkpoint(kind, shards, tmp_path, capfd, robustness):
    out = tmp_path / "run"
    if kind == "empty":
        out.mkdir()
    rc = train_main([*TRAIN, "--data", str(shards), "--out", str(out), "--resume"])
    err = capfd.readouterr().err
    assert_refused("fastdavs-train", rc, err, f"{out}: no checkpoint to resume from; drop --resume")
    assert os.listdir(out) == [] if kind == "empty" else not out.exists()  # nothing written
    robustness.record(
        f"fastdavs-train --resume --out DIR ({kind})", "exit 2, one line; nothing written"
    )


# ---- fastdavs-eval ----------------------------------------------------------------------------
def test_eval_run_without_checkpoints(tmp_path, capfd, robustness):
    run = tmp_path / "run"
    (run / CHECKPOINTS).mkdir(parents=True)
    rc = eval_main([str(run)])
    err = capfd.readouterr().err
    assert_refused(
        "fastdavs-eval", rc, err, str(run / CHECKPOINTS), "no complete, intact checkpoint"
    )
    assert os.listdir(run) == [CHECKPOINTS]
    robustness.record("fastdavs-eval RUN (no checkpoints)", "exit 2, one line; no eval.json")


def test_eval_nonexistent_path(tmp_path, capfd, robustness):
    rc = eval_main([str(tmp_path / "nothere")])
    err = capfd.readouterr().err
    assert_refused("fastdavs-eval", rc, err, str(tmp_path / "nothere"), "no such checkpoint")
    assert os.listdir(tmp_path) == []
    robustness.record("fastdavs-eval MISSING", "exit 2, one line: no such checkpoint or run")


@pytest.mark.parametrize("kind", ["missing", "truncated"])
def test_eval_bad_data(kind, ckpt, shards, tmp_path, capfd, robustness):
    if kind == "missing":
        data, named = tmp_path / "nope", (str(tmp_path / "nope" / "index.json"), "no shard index")
    else:
        data = _damaged(shards, tmp_path / "data", split="test")
        named = (str(data / "test" / "shard_00000" / "frames.npy"), "unreadable shard array")
    out = tmp_path / "eval.json"
    rc = eval_main([str(ckpt), "--data", str(data), "--out", str(out)])
    assert_refused("fastdavs-eval", rc, capfd.readouterr().err, *named)
    assert not out.exists()
    robustness.record(f"fastdavs-eval CKPT --data DIR ({kind})", "exit 2, one line; no results")


def test_eval_out_unwritable(ckpt, shards, tmp_path, capfd, robustness):
    blocker = tmp_path / "file"
    blocker.write_text("a file\n")
    out = blocker / "eval.json"
    rc = eval_main([str(ckpt), "--data", str(shards), "--out", str(out)])
    err = capfd.readouterr().err
    assert_refused(
        "fastdavs-eval", rc, err, f"{out}: cannot write the results ({blocker} is not a directory)"
    )
    assert os.listdir(tmp_path) == ["file"]
    robustness.record(
        "fastdavs-eval CKPT --out FILE/eval.json",
        "exit 2, one line, before evaluating: FILE is not a directory",
    )


def test_eval_out_is_a_directory(ckpt, shards, tmp_path, capfd, robustness):
    out = tmp_path / "results"
    out.mkdir()
    rc = eval_main([str(ckpt), "--data", str(shards), "--out", str(out)])
    err = capfd.readouterr().err
    assert_refused("fastdavs-eval", rc, err, f"{out}: cannot write the results (it is a directory)")
    assert os.listdir(out) == []
    robustness.record(
        "fastdavs-eval CKPT --out DIR", "exit 2, one line, before evaluating: a directory"
    )


# ---- fastdavs-build-engine --------------------------------------------------------------------
def _build(capfd, ckpt, out, *extra: str) -> tuple[int, str]:
    rc = build_main(["--checkpoint", str(ckpt), "--out", str(out), *extra])
    return rc, capfd.readouterr().err


def _no_engine(where: Path, *keep: str) -> None:
    assert sorted(os.listdir(where)) == sorted(keep)  # no engine, no .tmp-* staging directory


def test_build_missing_checkpoint(tmp_path, capfd, robustness):
    rc, err = _build(capfd, tmp_path / "nock", tmp_path / "engine")
    assert_refused("fastdavs-build-engine", rc, err, str(tmp_path / "nock"), "no such checkpoint")
    _no_engine(tmp_path)
    robustness.record("fastdavs-build-engine --checkpoint MISSING", "exit 2, one line; no engine")


def test_build_truncated_checkpoint(ckpt, tmp_path, capfd, robustness):
    bad = Path(shutil.copytree(ckpt, tmp_path / "ckpt"))
    (bad / MODEL).write_bytes((bad / MODEL).read_bytes()[:1000])
    rc, err = _build(capfd, bad, tmp_path / "engine")
    assert_refused("fastdavs-build-engine", rc, err, str(bad / MODEL), "truncated (1000 bytes")
    _no_engine(tmp_path, "ckpt")
    robustness.record(
        "fastdavs-build-engine --checkpoint CKPT (model.safetensors truncated)",
        "exit 2, one line: truncated; no engine",
    )


@pytest.mark.parametrize("kind", ["file", "non-engine directory"])
def test_build_out_taken(kind, ckpt, tmp_path, capfd, robustness):
    out = tmp_path / "out"
    if kind == "file":
        out.write_text("a file\n")
        problem = "exists and is not a directory"
    else:
        out.mkdir()
        (out / "notes.txt").write_text("mine\n")
        problem = "exists and is not an engine directory"
    rc, err = _build(capfd, ckpt, out)
    assert_refused("fastdavs-build-engine", rc, err, str(out), problem)
    _no_engine(tmp_path, "out")
    assert out.is_file() or os.listdir(out) == ["notes.txt"]  # untouched
    robustness.record(f"fastdavs-build-engine --out {kind.upper()}", f"exit 2, one line: {problem}")


BAD_OPTIONS = {
    "--batch 4:2:1": ("argument --batch: '4:2:1': need 1 <= MIN <= OPT <= MAX",),
    "--batch a:b:c": ("argument --batch: 'a:b:c': expected MIN:OPT:MAX, e.g. 1:25:50",),
    "--precision fp8": ("argument --precision: invalid choice: 'fp8'",),
}


@pytest.mark.parametrize("option", BAD_OPTIONS)
def test_build_bad_option(option, ckpt, tmp_path, capfd, robustness):
    with pytest.raises(SystemExit) as e:
        build_main(["--checkpoint", str(ckpt), "--out", str(tmp_path / "engine"), *option.split()])
    err = capfd.readouterr().err
    assert e.value.code == 2 and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("fastdavs-build-engine: error: " + BAD_OPTIONS[option][0]), err
    assert lines[0].endswith("(see fastdavs-build-engine --help)")
    _no_engine(tmp_path)
    robustness.record(f"fastdavs-build-engine {option}", "exit 2, one error line")


def test_build_bf16_is_refused(ckpt, tmp_path, capfd, robustness):
    rc, err = _build(capfd, ckpt, tmp_path / "engine", "--precision", "bf16")
    assert_refused("fastdavs-build-engine", rc, err, "--precision bf16 is not offered")
    _no_engine(tmp_path)
    robustness.record("fastdavs-build-engine --precision bf16", "exit 2, one line: not offered")


def test_build_tensorrt_where_unavailable(ckpt, tmp_path, capfd, robustness):
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("TensorRT is installed here")
    rc, err = _build(capfd, ckpt, tmp_path / "engine", "--backend", "tensorrt")
    assert_refused("fastdavs-build-engine", rc, err, "TensorRT is not available")
    _no_engine(tmp_path)
    robustness.record(
        "fastdavs-build-engine --backend tensorrt (not installed)",
        "exit 2, one line: TensorRT is not available",
    )
