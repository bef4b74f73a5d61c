"""The layers only point down: the kernels are the bottom layer and import no other fastdavs
module, and inference on a checkpoint does not load the engine exporter (ONNX)."""

import subprocess
import sys

import pytest


def _modules_after(statement: str) -> set[str]:
    """The fastdavs and onnx modules a fresh interpreter has loaded after `statement`."""
    code = (
        f"import sys\n{statement}\n"
        "print('\\n'.join(m for m in sys.modules if m.split('.')[0] in ('fastdavs', 'onnx')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True
    ).stdout
    return set(out.split())


def test_kernels_import_nothing_above_them():
    loaded = _modules_after("import fastdavs.kernels")
    assert "fastdavs.kernels.mfcc" in loaded  # the probe sees what was imported
    above = sorted(m for m in loaded if m != "fastdavs" and not m.startswith("fastdavs.kernels"))
    assert above == [], f"import fastdavs.kernels loaded {above}"


@pytest.mark.parametrize(
    "statement",
    [
        "import fastdavs.infer.synthesis",
        "from fastdavs import Synthesizer",
        "import fastdavs.train.cli",
        "import fastdavs.stream",
    ],
)
def test_eager_paths_do_not_load_the_exporter(statement):
    loaded = _modules_after(statement)
    assert statement.split()[1].split(".")[0] == "fastdavs" and "fastdavs" in loaded
    exporter = sorted(m for m in loaded if m == "onnx" or m.startswith("fastdavs.engines.export"))
    assert exporter == [], f"{statement} loaded {exporter}"
