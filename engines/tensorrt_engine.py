"""The TensorRT backend (NVIDIA GPUs): ONNX graph -> serialized plan, and plan -> runnable session.

Written against the API that TensorRT 10 and 11 share:
- strongly typed networks: every tensor's type comes from the ONNX graph (fp16 and int8
  QDQ graphs are exported as such, see `export`); TensorRT 11 removed BuilderFlag.FP16/BF16/INT8
  and always builds strongly typed (its STRONGLY_TYPED flag is kept and ignored, so it is passed
  where it exists);
- OnnxParser, with every parser error reported (node, operator, description);
- one optimization profile over the batch axis (min/opt/max), a workspace limit, and a timing
  cache read before the build and written after it;
- `Runtime.deserialize_cuda_engine`, then `set_input_shape` / `set_tensor_address` /
  `execute_async_v3` on torch's current CUDA stream, with torch tensors as buffers.

`tensorrt` is imported only here and only when asked for; without it (or without a GPU) the
error says what is missing and how to get it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from fastdavs.engines.errors import BackendUnavailable, EngineError
from fastdavs.io.atomic import replace_with

log = logging.getLogger(__name__)

SUPPORTED_MAJOR = (10, 11)
INSTALL_HINT = (
    "on a Linux machine with an NVIDIA GPU and driver, pip install 'tensorrt>=10,<12' "
    "(or pip install -e '.[gpu]'; the PyPI package downloads NVIDIA's libraries at install "
    "time), or build for CPUs with --backend onnxruntime"
)
TORCH_DTYPES = {
    "FLOAT": torch.float32,
    "HALF": torch.float16,
    "BF16": torch.bfloat16,
    "INT8": torch.int8,
    "UINT8": torch.uint8,
    "INT32": torch.int32,
    "INT64": torch.int64,
    "BOOL": torch.bool,
}


def import_tensorrt():
    """The `tensorrt` module, checked: BackendUnavailable where it is missing or unsupported."""
    try:
        import tensorrt
    except (ImportError, OSError, RuntimeError) as e:  # the package without its libraries
        raise BackendUnavailable(f"TensorRT is not available ({e}); {INSTALL_HINT}") from None
    version = getattr(tensorrt, "__version__", "?")
    try:
        major = int(version.split(".")[0])
    except ValueError:
        major = None
    if major not in SUPPORTED_MAJOR:
        raise BackendUnavailable(
            f"TensorRT {version} is installed; fastdavs builds with TensorRT 10 or 11: "
            "pip install 'tensorrt>=10,<12'"
        )
    return tensorrt


def require_gpu() -> None:
    if not torch.cuda.is_available():
        raise BackendUnavailable(
            "TensorRT engines build and run on a CUDA GPU and torch sees none here "
            "(a CPU-only torch, or no driver); use --backend onnxruntime on this machine"
        )


def profile_shapes(network, batch: tuple[int, int, int]) -> dict[str, tuple[tuple, tuple, tuple]]:
    """input name -> (min, opt, max) shapes for every network input with a dynamic batch axis:
    axis 0 takes `batch`; any other dynamic axis is an export bug."""
    shapes = {}
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        dims = tuple(tensor.shape)
        if -1 in dims[1:]:
            raise EngineError(
                f"input {tensor.name!r} has shape {dims}: only the batch axis may be dynamic"
            )
        if dims and dims[0] == -1:
            shapes[tensor.name] = tuple((b, *dims[1:]) for b in batch)
    return shapes


class TensorRTBuilder:
    """Builds plans from ONNX graphs; one builder and one timing cache for all graphs of an
    engine. `timing_cache` is read if it exists (a previous build's) and `save_timing_cache`
    writes the merged cache."""

    def __init__(self, workspace_bytes: int, timing_cache: Path | None = None):
        self.trt = trt = import_tensorrt()
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.builder = trt.Builder(self.logger)
        self.workspace_bytes = workspace_bytes
        self.cache_bytes = b""
        if timing_cache is not None and timing_cache.is_file():
            self.cache_bytes = timing_cache.read_bytes()
            log.info("read timing cache %s (%d bytes)", timing_cache, len(self.cache_bytes))

    def create_network(self, onnx_path: Path):
        """(network, parser) for an ONNX file; the parser owns the weights, keep it alive until
        the plan is built. EngineError listing every parser error where parsing fails."""
        trt = self.trt
        flags = 0
        strongly_typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
        if strongly_typed is not None:
            flags |= 1 << int(strongly_typed)
        network = self.builder.create_network(flags)
        parser = trt.OnnxParser(network, self.logger)
        if not parser.parse_from_file(str(onnx_path)):
            errors = [_describe(parser.get_error(i)) for i in range(parser.num_errors)]
            for error in errors:
                log.error("%s: %s", onnx_path.name, error)
            raise EngineError(
                f"{onnx_path}: TensorRT's ONNX parser failed with {len(errors)} error(s): "
                + "; ".join(errors or ["no error was reported"])
            )
        return network, parser

    def create_engine(self, network, batch: tuple[int, int, int], name: str) -> bytes:
        """A serialized plan for `network`, its batch axis optimised for batch[1] and valid over
        [batch[0], batch[2]]."""
        trt = self.trt
        config = self.builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, self.workspace_bytes)
        shapes = profile_shapes(network, batch)
        if shapes:
            profile = self.builder.create_optimization_profile()
            for tensor, (lo, opt, hi) in shapes.items():
                profile.set_shape(tensor, lo, opt, hi)
            config.add_optimization_profile(profile)
        cache = config.create_timing_cache(self.cache_bytes)
        if cache is None or not config.set_timing_cache(cache, False):
            log.warning("the timing cache does not fit this TensorRT/GPU; starting a new one")
            cache = config.create_timing_cache(b"")
            config.set_timing_cache(cache, False)
        plan = self.builder.build_serialized_network(network, config)
        if plan is None:
            raise EngineError(
                f"{name}: TensorRT could not build the plan (its log above says why); try a "
                "larger workspace or another precision"
            )
        self.cache_bytes = bytes(config.get_timing_cache().serialize())
        return bytes(plan)

    def save_timing_cache(self, path: Path) -> None:
        replace_with(path, lambda tmp: tmp.write_bytes(self.cache_bytes))


def _describe(error) -> str:
    """One parser error as 'node 12 (Resize "name"): description [code]'."""
    node = error.node()
    name = error.node_name() if hasattr(error, "node_name") else ""
    op = error.node_operator() if hasattr(error, "node_operator") else ""
    where = f"node {node}" + (f" ({op} {name!r})" if op or name else "") if node >= 0 else "graph"
    return f"{where}: {error.desc()} [{error.code()}]"


class TensorRTSession:
    """One plan, ready to run: `run({name: tensor}) -> {name: output}` (CUDA tensors)."""

    def __init__(self, path: Path):
        self.trt = trt = import_tensorrt()
        require_gpu()
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise EngineError(
                f"{path}: TensorRT cannot deserialize this plan (built by another TensorRT "
                "version or for another GPU); rebuild it with fastdavs-build-engine here"
            )
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        is_input = {n: self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self.inputs = [n for n in names if is_input[n]]
        self.outputs = [n for n in names if not is_input[n]]
        self.dtypes = {n: TORCH_DTYPES[self.engine.get_tensor_dtype(n).name] for n in names}
        # name -> shape, None for a dynamic axis
        self.input_shapes = {
            n: tuple(None if d < 0 else d for d in self.engine.get_tensor_shape(n))
            for n in self.inputs
        }

    def run(self, feeds: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        stream = torch.cuda.current_stream()
        keep = []  # inputs stay referenced until the launch is queued
        for name in self.inputs:
            t = feeds[name].to("cuda", self.dtypes[name]).contiguous()
            keep.append(t)
            if not self.context.set_input_shape(name, tuple(t.shape)):
                raise EngineError(f"input {name}: shape {tuple(t.shape)} is outside the profile")
            self.context.set_tensor_address(name, t.data_ptr())
        outputs = {}
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            out = torch.empty(shape, dtype=self.dtypes[name], device="cuda")
            self.context.set_tensor_address(name, out.data_ptr())
            outputs[name] = out
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise EngineError("TensorRT execution failed (its log above says why)")
        return outputs
