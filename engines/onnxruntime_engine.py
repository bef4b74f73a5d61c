"""The ONNX Runtime backend (CPU, and CUDA where onnxruntime-gpu is installed): build = let ONNX
Runtime apply every graph optimisation it has (ORT_ENABLE_ALL: constant folding, Conv+BN and
Conv+activation fusion, NCHWc blocked layouts) and save the optimised graph; run = load that
graph with optimisation off, so what runs is exactly what was built and checked.

The saved graph is specific to the CPU family it was optimised on (the NCHWc block size follows
its vector width): config.json records the host, and loading elsewhere logs a warning.
"""

from __future__ import annotations

import logging
import platform
from pathlib import Path

import numpy as np
import torch

from fastdavs.engines.errors import BackendUnavailable, EngineError

log = logging.getLogger(__name__)


def import_onnxruntime():
    try:
        import onnxruntime
    except ImportError as e:
        raise BackendUnavailable(
            f"ONNX Runtime is not installed ({e}); pip install onnxruntime==1.32.0"
        ) from None
    return onnxruntime


def providers() -> list[str]:
    """CUDA first where this onnxruntime has it, then the CPU."""
    available = import_onnxruntime().get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


def optimize(src: Path, dst: Path, threads: int = 0) -> Path:
    """Write ONNX Runtime's fully optimised version of graph `src` to `dst`."""
    ort = import_onnxruntime()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(dst)
    options.intra_op_num_threads = threads
    options.log_severity_level = 3  # the "hardware specific optimizations" notice is known
    try:
        ort.InferenceSession(str(src), options, providers=providers())
    except Exception as e:  # onnxruntime raises its own exception classes, not exported
        raise EngineError(f"{src}: ONNX Runtime cannot load the exported graph: {e}") from None
    log.info("optimised %s -> %s", src.name, dst.name)
    return dst


class OnnxRuntimeSession:
    """One saved graph, ready to run: `run({name: tensor}) -> {name: output}` (CPU, float32)."""

    def __init__(self, path: Path, threads: int = 0, profile: str | None = None):
        ort = import_onnxruntime()
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        options.intra_op_num_threads = threads
        if profile:  # onnxruntime writes a chrome-trace JSON with this prefix (bench profiling)
            options.enable_profiling = True
            options.profile_file_prefix = profile
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers())
        except Exception as e:
            raise EngineError(
                f"{path}: ONNX Runtime cannot load it ({e}); rebuild the engine with "
                "fastdavs-build-engine on this machine"
            ) from None
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]
        # name -> shape, None for a dynamic axis
        self.input_shapes = {
            i.name: tuple(d if isinstance(d, int) else None for d in i.shape)
            for i in self.session.get_inputs()
        }

    def run(self, feeds: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        arrays = {
            name: np.ascontiguousarray(t.detach().cpu().float().numpy())
            for name, t in feeds.items()
        }
        results = self.session.run(self.outputs, arrays)
        return {name: torch.from_numpy(a) for name, a in zip(self.outputs, results, strict=True)}


def host_cpu() -> str:
    """The CPU model name (what the optimised graph's layouts were chosen for)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
