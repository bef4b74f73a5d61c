"""fastdavs.io.atomic: a file appears whole or not at all."""

import json

import pytest

from fastdavs.io.atomic import replace_with, write_json, write_text


def test_write_text_and_json_replace_the_target(tmp_path):
    path = tmp_path / "a.json"
    write_text(path, "old")
    assert write_json(path, {"x": [1, 2]}, fsync=True) == path
    assert json.loads(path.read_text()) == {"x": [1, 2]}
    assert path.read_text().endswith("}\n")
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_a_failing_writer_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "grid.png"
    path.write_bytes(b"previous")

    def half_then_crash(tmp):
        assert tmp.suffix == ".png" and tmp.parent == tmp_path and tmp.name.startswith(".")
        tmp.write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        replace_with(path, half_then_crash)
    assert path.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["grid.png"]
