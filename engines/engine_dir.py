"""The engine directory: what `fastdavs-build-engine` writes and `fastdavs.engines.load` reads.

    DIR/
        identity.onnx | .plan | .xml    identity graph (ONNX Runtime optimised graph | TensorRT
        frames.onnx   | .plan | .xml    plan | OpenVINO IR) and frame graph (in the build's
                                        precision)
        identity.bin, frames.bin        OpenVINO only: the IR's weights
        timing.cache                    TensorRT only: tactic timings, reused by the next build
        config.json                     written last: format, backend, precision, model config,
                                        build config, versions, host, checkpoint digest, the size
                                        and SHA-256 of every artifact, parity and build times

A build writes into a hidden `.DIR.tmp-XXXXXXXX` beside DIR and publishes it to DIR
(`fastdavs.io.atomic.atomic_dir`: every file fsynced, the rename, the parent fsynced) only once
the engine has passed its parity check, so DIR is always a complete engine or absent. Rebuilding
over an engine directory replaces it in one step (reusing its timing cache), so DIR never goes
missing; any other existing DIR is refused (`check_out_dir`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from fastdavs.config import ConfigError, DavsConfig
from fastdavs.engines.errors import EngineError
from fastdavs.io import manifest
from fastdavs.io.manifest import file_entry

log = logging.getLogger(__name__)

FORMAT = "fastdavs-engine"
FORMAT_VERSION = 1
CONFIG = "config.json"
TIMING_CACHE = "timing.cache"
GRAPHS = ("identity", "frames")
SUFFIX = {"onnxruntime": ".onnx", "tensorrt": ".plan", "openvino": ".xml"}
# Backends whose graph file has a second file beside it: (its key in the artifact entry, suffix).
WEIGHTS = {"openvino": ("weights", ".bin")}


def artifact_name(backend: str, graph: str) -> str:
    """The file a backend loads a graph from."""
    return graph + SUFFIX[backend]


def artifact_entry(path: Path) -> dict:
    """Manifest entry of a written artifact: its name, size and SHA-256, and those of its
    weights file where the backend (by the suffix) has one."""
    entry = {"file": path.name, **file_entry(path)}
    for backend, (key, suffix) in WEIGHTS.items():
        if path.suffix == SUFFIX[backend]:
            weights = path.with_suffix(suffix)
            entry[key] = {"file": weights.name, **file_entry(weights)}
    return entry


def read_config(path: str | Path) -> dict:
    """Check an engine directory (format, version, every artifact's size and SHA-256, the model
    config) and return its config.json. Raises EngineError naming the file and what to do."""
    path = Path(path)
    cfg_file = path / CONFIG
    rebuild = "rebuild it with fastdavs-build-engine"
    if not path.is_dir():
        raise EngineError(f"{path}: no such engine directory; build one with fastdavs-build-engine")
    if not cfg_file.is_file():
        raise EngineError(f"{cfg_file}: missing, so {path} is not a complete engine; {rebuild}")
    meta = manifest.read_config(cfg_file, FORMAT, FORMAT_VERSION, "engine", EngineError, rebuild)
    backend = meta.get("backend")
    if backend not in SUFFIX:
        raise EngineError(f"{cfg_file}: unknown backend {backend!r}; {rebuild}")
    try:
        DavsConfig.from_dict(meta.get("model"))
    except (ConfigError, TypeError, AttributeError) as e:
        raise EngineError(f"{cfg_file}: bad model config ({e}); {rebuild}") from None
    artifacts = meta.get("artifacts")
    entries = {}
    for graph in GRAPHS:
        entry = artifacts.get(graph) if isinstance(artifacts, dict) else None
        name = artifact_name(backend, graph)
        if not (isinstance(entry, dict) and entry.get("file") == name):
            raise EngineError(f"{cfg_file}: no valid artifact entry for {name}; {rebuild}")
        entries[name] = entry
        if backend in WEIGHTS:
            key, suffix = WEIGHTS[backend]
            weights = entry.get(key)
            name = graph + suffix
            if not (isinstance(weights, dict) and weights.get("file") == name):
                raise EngineError(f"{cfg_file}: no valid artifact entry for {name}; {rebuild}")
            entries[name] = weights
    manifest.check_files(path, entries, cfg_file, EngineError, rebuild)
    return meta


def check_out_dir(out: Path) -> None:
    """Refuse an --out that exists and is neither empty nor an engine directory."""
    if not out.exists():
        return
    if not out.is_dir():
        raise EngineError(f"{out}: exists and is not a directory; choose another --out")
    if any(out.iterdir()) and not _is_engine(out):
        raise EngineError(
            f"{out}: exists and is not an engine directory (no {CONFIG} of format {FORMAT}); "
            "choose another --out or remove it"
        )


def _is_engine(path: Path) -> bool:
    try:
        return json.loads((path / CONFIG).read_bytes()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False
