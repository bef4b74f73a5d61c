"""Identity labels for corpora without them: `fastdavs-prepare --identities CSV` labels each
clip with its person, bad CSVs are one-line errors naming the file (and line), a rerun with
other labels is refused, and training on data without labels turns off what needs them (so does
data without the mouth's ground truth, for the viseme readout)."""

import csv
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from fastdavs.config import DavsConfig
from fastdavs.data.prepare import main as prepare_main
from fastdavs.data.synth import SynthConfig, generate
from fastdavs.errors import OptionError
from fastdavs.train.cli import fit_to_data
from fastdavs.train.cli import main as train_main


@pytest.fixture(scope="module")
def lrw(tmp_path_factory) -> Path:
    """A SynthLRW tree of 6 clips: 2 words x 1 take x 3 identities (one per split)."""
    root = tmp_path_factory.mktemp("lrw") / "lrw"
    generate(SynthConfig(identities=3, held_out=2, words=2, takes=1, seed=5, size=64), root, 1)
    return root


def _clips(src: Path) -> list[str]:
    return sorted(str(p.relative_to(src)) for p in src.rglob("*.mp4"))


def _write_csv(path: Path, rows: list[list[str]], header=("clip", "person")) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        if header:
            writer.writerow(header)
        writer.writerows(rows)
    return path


def _prepare(capsys, src: Path, out: Path, *extra: str) -> tuple[int, str, str]:
    rc = prepare_main([str(src), str(out), "--preset", "tiny", "--workers", "1", *extra])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def _labels(out: Path) -> dict[str, int]:
    """clip id -> identity label, read back from every shard."""
    found = {}
    for meta_path in sorted(out.glob("*/shard_*/meta.json")):
        ids = json.loads(meta_path.read_text())["clip_ids"]
        labels = np.load(meta_path.parent / "identity.npy")
        found.update(zip(ids, labels.tolist(), strict=True))
    return found


def test_csv_labels_every_clip_it_names_and_overrides_the_sidecars(lrw, tmp_path, capsys):
    src = Path(shutil.copytree(lrw, tmp_path / "lrw"))
    first = src / _clips(src)[0]  # renamed to a stem no other clip has, to be named by it
    unique = first.with_name(f"{first.stem.split('_')[0]}_09999.mp4")
    for suffix in (".mp4", ".json", ".txt"):
        if first.with_suffix(suffix).exists():
            first.with_suffix(suffix).rename(unique.with_suffix(suffix))
    clips = _clips(src)
    # Persons by the sidecar identity, named so that their sorted order is the reverse of it;
    # the last clip is left out (unknown, -1). Clips are named by path, one by its stem.
    sidecar = {c: json.loads((src / c).with_suffix(".json").read_text())["identity"] for c in clips}
    person = {c: "zyx"[sidecar[c]] for c in clips}
    rows = [[c, person[c]] for c in clips[:-1]]
    renamed = str(unique.relative_to(src))
    rows[clips.index(renamed)][0] = unique.stem
    table = _write_csv(tmp_path / "people.csv", rows)
    out = tmp_path / "shards"
    rc, stdout, err = _prepare(capsys, src, out, "--identities", str(table))
    assert rc == 0, err
    names = sorted(set(person[c] for c in clips[:-1]))
    assert f"identities: {len(names)} persons from {table}; 1 clips are not in it" in stdout
    index = json.loads((out / "index.json").read_text())
    assert index["identities"] == names
    expected = {c: names.index(person[c]) for c in clips[:-1]} | {clips[-1]: -1}
    assert _labels(out) == expected
    # The sidecars' own labels differ: the CSV's were used.
    assert any(expected[c] != sidecar[c] for c in clips[:-1])
    # A rerun with the same CSV is a no-op; with another one it is refused, shards untouched.
    assert _prepare(capsys, src, out, "--identities", str(table))[0] == 0
    other = _write_csv(tmp_path / "other.csv", [[c, "same"] for c in clips])
    rc, _, err = _prepare(capsys, src, out, "--identities", str(other))
    assert rc == 2
    assert "its shards were labelled from" in err and "prepare into a new OUT" in err
    assert _labels(out) == expected
    rc, _, err = _prepare(capsys, src, out)  # and without one (the sidecars' labels)
    assert rc == 2 and "prepare into a new OUT" in err


@pytest.mark.parametrize(
    ("rows", "header", "message"),
    [
        ([], ("clip", "person"), "lists no clip"),
        ([["a.mp4", "x"]], ("file", "who"), "starts with the header row 'clip,person'"),
        ([["{clip}", "x"], ["{clip}"]], ("clip", "person"), ":3: expected 'clip,person'"),
        ([["{clip}", "x"], ["{clip}", "y"]], ("clip", "person"), ":3: clip"),
        ([["NOPE/train/NOPE_00001.mp4", "x"]], ("clip", "person"), "names none of the clips"),
        ([["{stem}", "x"]], ("clip", "person"), "is the stem of"),
    ],
    ids=["empty", "no-header", "short-row", "two-persons", "no-match", "ambiguous-stem"],
)
def test_bad_identity_csv_is_one_line_naming_the_file(lrw, tmp_path, capsys, rows, header, message):
    clip = _clips(lrw)[0]
    stems = [Path(c).stem for c in _clips(lrw)]
    stem = next(s for s in stems if stems.count(s) > 1)  # SynthLRW reuses stems across splits
    rows = [[c.format(clip=clip, stem=stem) for c in row] for row in rows]
    table = _write_csv(tmp_path / "bad.csv", rows, header)
    out = tmp_path / "shards"
    rc, _, err = _prepare(capsys, lrw, out, "--identities", str(table))
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and str(table) in lines[0] and message in lines[0], err
    assert not out.exists()  # nothing written
    rc, _, err = _prepare(capsys, lrw, out, "--identities", str(tmp_path / "missing.csv"))
    assert rc == 2 and "cannot read the identity CSV" in err


@pytest.fixture
def unlabelled(shards, tmp_path) -> Path:
    """The tiny shards as real LRW prepares them: no identity labels."""
    data = Path(shutil.copytree(shards, tmp_path / "unlabelled"))
    index = json.loads((data / "index.json").read_text())
    index["identities"] = []
    (data / "index.json").write_text(json.dumps(index))
    for path in data.glob("*/shard_*/identity.npy"):
        np.save(path, np.full_like(np.load(path), -1))
    return data


def test_training_without_identity_labels_says_what_is_off(unlabelled, shards, caplog):
    cfg = DavsConfig.from_preset("small")
    with caplog.at_level(logging.WARNING):
        fitted = fit_to_data(cfg, unlabelled)
    assert "has no identity labels" in caplog.text and "--identities CSV" in caplog.text
    assert fitted.schedule.pid_steps == 0
    assert fitted.loss.wid_uniform == 0 and fitted.loss.identity_scatter == 0
    assert fitted.optim.identity_group == 1
    assert fitted.schedule.gen_steps == cfg.schedule.gen_steps  # the rest as configured
    assert fitted.loss.pid_uniform == cfg.loss.pid_uniform  # pid -> word needs no identities
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        labelled = fit_to_data(cfg, shards)
    assert "identity labels" not in caplog.text
    assert labelled.schedule.pid_steps == cfg.schedule.pid_steps
    with pytest.raises(OptionError, match="--stage pid: .* has no identity labels"):
        fit_to_data(cfg, unlabelled, ("pid",))


def test_train_command_on_unlabelled_data_skips_pid(unlabelled, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["--preset", "tiny", "--data", str(unlabelled), "--out", str(run), "--workers", "0"]
    assert train_main([*args, "--stage", "pid"]) == 2
    assert "--stage pid" in capsys.readouterr().err
    assert train_main([*args, "--steps", "1", "--no-eval"]) == 0
    lines = (run / "metrics.jsonl").read_text().splitlines()
    stages = [json.loads(line)["stage"] for line in lines]
    assert "pid" not in stages and {"wid", "render", "gen"} <= set(stages)


def test_training_on_data_without_visemes_turns_the_readout_off(shards, tmp_path, caplog):
    """Real LRW has no visemes: --loss-viseme is then weighed 0, with a warning naming the data."""
    data = Path(shutil.copytree(shards, tmp_path / "lrw_like"))
    for meta_path in data.glob("*/shard_*/meta.json"):
        meta = json.loads(meta_path.read_text())
        del meta["arrays"]["viseme"]
        meta_path.write_text(json.dumps(meta))
        (meta_path.parent / "viseme.npy").unlink()
    cfg = DavsConfig.from_preset("tiny")
    cfg.loss.viseme = 10.0
    with caplog.at_level(logging.WARNING):
        fitted = fit_to_data(cfg, data)
    assert "holds no visemes" in caplog.text and str(data) in caplog.text
    assert fitted.loss.viseme == 0 and fitted.loss.word_ce == cfg.loss.word_ce
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert fit_to_data(cfg, shards).loss.viseme == 10.0
    assert "visemes" not in caplog.text
