"""The layers only point down: the kernels are the bottom layer and import no other fastdavs
module, every module imports only its own layer or those below (`LAYERS`), and inference on a
checkpoint does not load the engine exporter (ONNX)."""

import ast
import subprocess
import sys
from pathlib import Path

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


# Every fastdavs module's layer, lowest first: a module may import modules of its own layer or
# below, never above (a layer's commands, e.g. fastdavs-prepare in data, may use fastdavs.cli).
# Keys are the longest matching module prefix.
LAYERS = {
    "fastdavs.kernels": 0,
    "fastdavs": 1,  # the package itself: its version; `fastdavs.Synthesizer` is resolved lazily
    "fastdavs.errors": 1,
    "fastdavs.io.atomic": 1,
    "fastdavs.io.manifest": 1,
    "fastdavs.config": 2,
    "fastdavs.machine": 2,
    "fastdavs.cli": 3,
    "fastdavs.data": 4,
    "fastdavs.model": 5,
    "fastdavs.io": 6,
    "fastdavs.evaluate": 7,
    "fastdavs.train": 8,
    "fastdavs.engines": 8,
    "fastdavs.infer": 9,
    "fastdavs.stream": 9,
}
ROOTS = {"fastdavs": "fastdavs", "kernels": "fastdavs.kernels", "engines": "fastdavs.engines"}


def _layer(module: str) -> int:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in LAYERS:
            return LAYERS[".".join(parts[:n])]
    raise AssertionError(f"{module} has no layer in LAYERS")


def _imports(tree: ast.AST, package: str) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found += [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.ImportFrom):  # relative
            found.append(package)
    return [m for m in found if m.split(".")[0] == "fastdavs"]


def _modules() -> list[tuple[str, ast.AST]]:
    repo = Path(__file__).resolve().parents[1]
    out = []
    for folder, prefix in ROOTS.items():
        for path in sorted((repo / folder).rglob("*.py")):
            rel = path.relative_to(repo / folder).with_suffix("").parts
            if folder == "fastdavs" and rel[0] in ("kernels", "engines"):
                continue  # development symlinks to the top-level folders
            name = ".".join((prefix, *rel)).removesuffix(".__init__")
            out.append((name, ast.parse(path.read_text(), str(path))))
    return out


def test_imports_only_point_down():
    modules = _modules()
    assert len(modules) > 50 and "fastdavs.infer.synthesis" in dict(modules)
    upward = []
    for name, tree in modules:
        if name == "fastdavs":
            continue  # its only import is the lazy `Synthesizer` attribute
        for target in _imports(tree, name):
            if _layer(target) > _layer(name):
                upward.append(f"{name} (layer {_layer(name)}) imports {target}")
    assert upward == [], "\n".join(upward)


def test_the_layer_check_sees_an_upward_import():
    tree = ast.parse("from fastdavs.infer.synthesis import Synthesizer\nimport fastdavs.errors")
    targets = _imports(tree, "fastdavs.data.prepare")
    assert targets == ["fastdavs.infer.synthesis.Synthesizer", "fastdavs.errors"]
    assert _layer(targets[0]) > _layer("fastdavs.data.prepare") >= _layer(targets[1])
