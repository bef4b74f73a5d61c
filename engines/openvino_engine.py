"""The OpenVINO backend (CPUs): build = read the exported ONNX graph into OpenVINO, quantize it to
int8 with NNCF where asked, and save it as OpenVINO IR (graph `.xml` + weights `.bin`, weights
kept in float32); run = compile the IR for this CPU when the engine is loaded (a fraction of a
second) and run it with the engine's inference precision.

Precisions (`inference_precision`, OpenVINO's INFERENCE_PRECISION_HINT):
- fp32: every op in float32. Asked for explicitly: on a CPU with native bf16, OpenVINO's default
  is bf16.
- bf16: OpenVINO runs convolutions, matmuls and most other ops in bfloat16 (accumulating in
  float32). Offered only where the CPU computes bf16 natively (AVX512_BF16 or AMX, as
  `fastdavs.machine.cpu_has_native_bf16` says and OpenVINO confirms): elsewhere OpenVINO would
  silently run fp32 (AVX2) or emulate bf16 (AVX-512 without BF16), so the build is refused, and
  so is loading a bf16 engine on such a CPU.
- int8: NNCF post-training quantization of the float32 graph: FakeQuantize on the inputs and
  weights of every convolution and matmul (weights per channel, activations per tensor, ranges
  from real faces and speech: `calibration.py`), which OpenVINO runs with int8 kernels (VNNI
  where the CPU has it); what stays in floating point runs in bf16 where the CPU has it natively
  and in fp32 elsewhere. The compiled model's precision is read back from OpenVINO, not assumed.

fp16 is not offered: OpenVINO's CPU plugin computes fp16 only with AVX512_FP16 or AMX_FP16, and
where it has them bf16 is there too.
`openvino` and `nncf` are imported only here and only when asked for.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import numpy as np
import onnx
import torch

from fastdavs.engines.errors import BackendUnavailable, EngineError
from fastdavs.machine import cpu_has_native_bf16

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install openvino==2026.4.1 nncf==3.4.0"
PRECISIONS = ("fp32", "bf16", "int8")
DEVICE = "CPU"


def import_openvino():
    try:
        import openvino
    except ImportError as e:
        raise BackendUnavailable(f"OpenVINO is not installed ({e}); {INSTALL_HINT}") from None
    return openvino


@functools.cache
def core():
    """The process's one `ov.Core`: every engine is read and compiled with it, and it is kept
    for the life of the process.

    One Core loads one instance of the CPU plugin. Each instance mmaps an alternate signal stack
    and installs it with sigaltstack() on the thread that loads it, saving the stack installed
    before; when the instance goes, it unmaps its stack and puts the saved one back only if its
    own is still installed. That is right only when instances go in the reverse order they
    came. An engine of two graphs with a Core each, freed in the order they were compiled, left
    the thread on the first one's unmapped stack. CPython's signal handlers run on the alternate
    stack (SA_ONSTACK), so the next signal handled in Python (the SIGCHLD handler of a
    multi-worker DataLoader, when a worker or any child process exits) could not be delivered,
    and the kernel killed the process with SIGSEGV. With one Core, kept, its stack stays
    installed and mapped; the Cores NNCF opens while quantizing come and go inside its lifetime.
    The kept Core also keeps the CPU streams executors: a forked child (a DataLoader worker)
    whose garbage collection frees a compiled model it inherited no longer waits forever for
    executor threads that only the parent has.
    """
    return import_openvino().Core()


def native_bf16() -> bool:
    """Whether OpenVINO computes bf16 natively on this CPU (see the module docstring)."""
    if not cpu_has_native_bf16():
        return False
    capabilities = core().get_property(DEVICE, "OPTIMIZATION_CAPABILITIES")
    return "BF16" in capabilities


def check_precision(precision: str) -> None:
    """EngineError where OpenVINO cannot build `precision` for this CPU, saying what to use."""
    if precision == "fp16":
        raise EngineError(
            "--precision fp16 is not offered with OpenVINO: its CPU plugin computes fp16 only "
            "with AVX512_FP16 or AMX_FP16; use bf16 (where the CPU has it), int8 or fp32"
        )
    if precision == "bf16" and not native_bf16():
        raise EngineError(
            "--precision bf16: this CPU has no native bf16 (no AVX512_BF16 or AMX), so OpenVINO "
            "would run it as fp32 or emulate it slowly; use --precision int8 or fp32"
        )


def inference_precision(precision: str) -> str:
    """OpenVINO's INFERENCE_PRECISION_HINT for an engine graph of `precision` on this CPU."""
    if precision == "bf16" or (precision == "int8" and native_bf16()):
        return "bf16"
    return "f32"


def convert(
    src: Path, dst: Path, precision: str, feeds: list[dict[str, np.ndarray]] | None = None
) -> Path:
    """Write the OpenVINO IR of ONNX graph `src` to `dst` (.xml, with its .bin beside it);
    int8 quantizes it with NNCF on `feeds` (`calibration.calibration_feeds`)."""
    ov = import_openvino()
    try:
        model = core().read_model(str(src))
    except RuntimeError as e:
        raise EngineError(f"{src}: OpenVINO cannot read the exported graph: {e}") from None
    # Inputs and outputs are named after the graph's: a Parameter's friendly name is its ONNX
    # input's, and each Result's is set to its ONNX output's (tensor names are no use: OpenVINO
    # merges those of tensors it removes, and an output that is an input shares its name).
    outputs = [o.name for o in onnx.load(str(src), load_external_data=False).graph.output]
    for result, name in zip(model.get_results(), outputs, strict=True):
        result.set_friendly_name(name)
    if precision == "int8":
        model = quantize_int8(model, feeds or [])
    # compress_to_fp16=False: save_model would otherwise round every weight to float16.
    ov.save_model(model, str(dst), compress_to_fp16=False)
    log.info("converted %s -> %s (%s)", src.name, dst.name, precision)
    return dst


def quantize_int8(model, feeds: list[dict[str, np.ndarray]]):
    """NNCF post-training quantization of an OpenVINO model, calibrated on `feeds`."""
    try:
        import nncf
    except ImportError as e:
        raise BackendUnavailable(f"int8 with OpenVINO needs NNCF ({e}); {INSTALL_HINT}") from None
    if not feeds:
        raise EngineError("int8: no calibration data (see --calibration-data)")
    # Elementwise Adds stay in float: NNCF would quantize both inputs of the mouth editor's
    # skip additions (a face's skip + the upsampled features), and the tiny editor's int8
    # parity then falls under 35 dB (tests/test_engines.py, test_openvino_engine_matches_eager).
    keep_float = nncf.IgnoredScope(types=["Add"], validate=False)
    quantized = nncf.quantize(
        model, nncf.Dataset(feeds), subset_size=len(feeds), target_device=nncf.TargetDevice.CPU,
        ignored_scope=keep_float,
    )  # fmt: skip
    log.info("quantized to int8 with NNCF (%d calibration batches)", len(feeds))
    return quantized


class OpenVinoSession:
    """One IR graph compiled for this CPU: `run({name: tensor}) -> {name: output}` (float32)."""

    def __init__(self, path: Path, precision: str = "fp32", threads: int = 0, profile=False):
        import_openvino()  # BackendUnavailable first where OpenVINO is missing
        if precision == "bf16" and not native_bf16():
            raise EngineError(
                f"{path}: a bf16 engine, and this CPU has no native bf16 (OpenVINO would run it "
                "as fp32 or emulate it); rebuild it here with --precision int8 or fp32"
            )
        hint = inference_precision(precision)
        config = {
            "INFERENCE_PRECISION_HINT": hint,
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_NUM_THREADS": threads,
            "PERF_COUNT": profile,  # per-node times in request.profiling_info (bench profiling)
        }
        try:
            model = core().read_model(str(path))
            self.compiled = core().compile_model(model, DEVICE, config)
        except RuntimeError as e:
            raise EngineError(
                f"{path}: OpenVINO cannot compile it ({e}); rebuild the engine with "
                "fastdavs-build-engine on this machine"
            ) from None
        effective = self.compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
        if effective != hint:
            raise EngineError(
                f"{path}: OpenVINO compiled this {precision} engine in {effective}, not {hint}, "
                "on this CPU; rebuild it here with --precision fp32"
            )
        self.request = self.compiled.create_infer_request()
        self.inputs = [p.get_friendly_name() for p in model.get_parameters()]
        self.outputs = [r.get_friendly_name() for r in model.get_results()]
        # name -> shape, None for a dynamic axis
        self.input_shapes = {
            name: tuple(None if d.is_dynamic else d.get_length() for d in i.get_partial_shape())
            for name, i in zip(self.inputs, self.compiled.inputs, strict=True)
        }

    def run(self, feeds: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        arrays = {
            k: np.ascontiguousarray(feeds[name].detach().cpu().float().numpy())
            for k, name in enumerate(self.inputs)
        }
        results = self.request.infer(arrays)  # copies of the outputs (share_outputs=False)
        return {name: torch.from_numpy(results[k]) for k, name in enumerate(self.outputs)}
