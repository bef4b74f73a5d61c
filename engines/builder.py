"""checkpoint -> engine directory: export, backend build, parity check, config.json, publish.

    checkpoint ─reference_model─► eager float32 model (kernel_backend "ref", eval)
        ─export─► identity.onnx (fp32) + frames.onnx (precision; int8 = fp32 + QDQ quantization)
        ─backend─► ONNX Runtime optimised graphs | TensorRT plans (+ timing cache)
        ─parity─► engine loaded back from disk vs eager, on fresh random inputs
        ─publish─► DIR (renamed from DIR.tmp-XXXXXXXX only if parity holds)

`BuildConfig` holds every build setting; `fastdavs-build-engine` derives its defaults from it.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import platform
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import onnx
import torch

from fastdavs import __version__
from fastdavs.atomic import write_json
from fastdavs.engines import engine_dir
from fastdavs.engines.engine_dir import (
    CONFIG,
    GRAPHS,
    TIMING_CACHE,
    artifact_entry,
    artifact_name,
)
from fastdavs.engines.errors import EngineError
from fastdavs.engines.export import (
    DTYPES,
    OPSET,
    checkpoint_digest,
    checkpoint_dir,
    export_frames,
    export_identity,
    identity_shapes,
    reference_model,
)
from fastdavs.engines.parity import measure

log = logging.getLogger(__name__)

BACKENDS = ("onnxruntime", "tensorrt")
PRECISIONS = ("fp32", "fp16", "bf16", "int8")


@dataclass
class BuildConfig:
    """How to build an engine. `batch` is the frame graph's (min, opt, max) batch: TensorRT's
    optimization profile; ONNX Runtime takes any batch. Both split larger calls into chunks of
    max. The identity graph's profile is (1, 1, max)."""

    backend: str = "onnxruntime"
    precision: str = "fp32"  # of the frame graph; the identity graph is always fp32
    batch: tuple[int, int, int] = (1, 25, 50)
    opset: int = OPSET
    workspace_mb: int = 4096  # TensorRT builder workspace limit
    parity_frames: int = 8  # random frames compared with eager PyTorch after the build
    calibration_frames: int = 64  # int8 only
    threads: int = 0  # ONNX Runtime intra-op threads (0: one per core)

    def validate(self) -> BuildConfig:
        if self.backend not in BACKENDS:
            raise EngineError(f"backend {self.backend!r}: choose one of {', '.join(BACKENDS)}")
        if self.precision not in PRECISIONS:
            raise EngineError(
                f"precision {self.precision!r}: choose one of {', '.join(PRECISIONS)}"
            )
        if self.precision == "bf16":
            raise EngineError(
                "--precision bf16 is not offered: ONNX's Conv takes bfloat16 only from opset "
                f"22 and the TorchScript exporter writes at most opset 20 (this build: {self.opset}"
                "); use fp16 (TensorRT) or fp32 / int8"
            )
        lo, opt, hi = self.batch
        if not 1 <= lo <= opt <= hi:
            raise EngineError(f"batch {self.batch}: need 1 <= min <= opt <= max")
        for name in ("workspace_mb", "parity_frames", "calibration_frames"):
            if getattr(self, name) < 1:
                raise EngineError(f"{name}={getattr(self, name)}: must be at least 1")
        return self


def build_engine(checkpoint: str | Path, out: str | Path, cfg: BuildConfig) -> Path:
    """Build an engine directory at `out` from a checkpoint (or a run directory's latest).

    Raises EngineError (and its ParityError, BackendUnavailable) or CheckpointError with a
    message naming the file or option; `out` is then untouched.
    """
    cfg.validate()
    out = Path(out)
    engine_dir.check_out_dir(out)
    if cfg.backend == "tensorrt":  # fail before the export where TensorRT cannot run
        from fastdavs.engines.tensorrt_engine import import_tensorrt, require_gpu

        import_tensorrt()
        require_gpu()
    ckpt = checkpoint_dir(checkpoint)
    start = time.perf_counter()
    log.info("[1/4] loading %s", ckpt)
    model = reference_model(ckpt)
    tmp = engine_dir.staging_dir(out)
    try:
        work = tmp / ".work"
        work.mkdir()
        times = {}
        t = time.perf_counter()
        log.info("[2/4] exporting to ONNX (opset %d, frame graph in %s)", cfg.opset, cfg.precision)
        sources = _export(model, work, cfg)
        times["export_s"] = time.perf_counter() - t
        t = time.perf_counter()
        log.info("[3/4] building the %s engine", cfg.backend)
        extra = _build_backend(sources, tmp, out, cfg)
        times["build_s"] = time.perf_counter() - t
        shutil.rmtree(work)
        meta = _metadata(model, ckpt, cfg, tmp, extra)
        write_json(tmp / CONFIG, meta)
        t = time.perf_counter()
        log.info("[4/4] parity with eager PyTorch on %d random frames", cfg.parity_frames)
        from fastdavs.engines.runtime import load

        parity = measure(load(tmp, threads=cfg.threads), model, cfg.parity_frames)
        log.info(
            "parity: max abs error %.3g, PSNR min %.1f dB, mean %.1f dB",
            parity.max_abs, parity.psnr_min_db, parity.psnr_mean_db,
        )  # fmt: skip
        parity.check(cfg.precision, str(out))
        times["parity_s"] = time.perf_counter() - t
        times["total_s"] = time.perf_counter() - start
        meta.update(parity=parity.to_dict(), times={k: round(v, 3) for k, v in times.items()})
        write_json(tmp / CONFIG, meta, fsync=True)
        engine_dir.publish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("wrote %s in %.1f s", out, times["total_s"])
    return out


def _export(model, work: Path, cfg: BuildConfig) -> dict[str, Path]:
    sources = {"identity": export_identity(model, work / "identity.onnx", cfg.opset)}
    if cfg.precision == "int8":
        from fastdavs.engines.quantize import quantize_int8

        fp32 = export_frames(model, work / "frames.fp32.onnx", "fp32", cfg.opset)
        sources["frames"] = quantize_int8(
            fp32, work / "frames.onnx", model, symmetric=cfg.backend == "tensorrt",
            frames=cfg.calibration_frames,
        )  # fmt: skip
    else:
        sources["frames"] = export_frames(model, work / "frames.onnx", cfg.precision, cfg.opset)
    return sources


def _build_backend(sources: dict[str, Path], tmp: Path, out: Path, cfg: BuildConfig) -> dict:
    """Write the backend's artifacts into `tmp`; return what config.json records of the build."""
    if cfg.backend == "onnxruntime":
        from fastdavs.engines.onnxruntime_engine import optimize, providers

        for graph in GRAPHS:
            try:
                optimize(sources[graph], tmp / artifact_name(cfg.backend, graph), cfg.threads)
            except EngineError as e:
                if graph == "frames" and cfg.precision != "fp32":
                    raise EngineError(
                        f"--precision {cfg.precision} is not available with ONNX Runtime on "
                        f"{', '.join(providers())} ({e}); use fp32 or int8, or --backend tensorrt"
                    ) from None
                raise
        return {"providers": providers()}
    from fastdavs.engines.tensorrt_engine import TensorRTBuilder

    # The previous engine's cache, if --out is one: its tactic timings are reused.
    builder = TensorRTBuilder(cfg.workspace_mb << 20, out / TIMING_CACHE)
    hi = cfg.batch[2]
    for graph, batch in (("identity", (1, 1, hi)), ("frames", cfg.batch)):
        t = time.perf_counter()
        network, parser = builder.create_network(sources[graph])
        plan = builder.create_engine(network, batch, graph)
        del parser
        (tmp / artifact_name(cfg.backend, graph)).write_bytes(plan)
        seconds = time.perf_counter() - t
        log.info("built %s plan (%.1f MB) in %.1f s", graph, len(plan) / 1e6, seconds)
    builder.save_timing_cache(tmp / TIMING_CACHE)
    return {"gpu": torch.cuda.get_device_name(), "tensorrt": builder.trt.__version__}


def _metadata(model, ckpt: Path, cfg: BuildConfig, tmp: Path, extra: dict) -> dict:
    from fastdavs.engines.onnxruntime_engine import host_cpu

    versions = {
        "fastdavs": __version__,
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "python": platform.python_version(),
    }
    try:
        import onnxruntime

        versions["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    if "tensorrt" in extra:
        versions["tensorrt"] = extra.pop("tensorrt")
    build = dataclasses.asdict(cfg)
    build["batch"] = list(cfg.batch)
    s = model.cfg.image_size
    identity = identity_shapes(model.cfg)
    return {
        "format": engine_dir.FORMAT,
        "format_version": engine_dir.FORMAT_VERSION,
        "backend": cfg.backend,
        "built_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        "model": model.cfg.to_dict(),
        "build": build,
        "checkpoint": {"path": str(ckpt.resolve()), "model_sha256": checkpoint_digest(ckpt)},
        "graphs": {
            "identity": {
                "precision": "fp32",
                "inputs": {"images": ["B", 3, s, s]},
                "outputs": {name: ["B", *shape] for name, shape in identity.items()},
            },
            "frames": {
                "precision": cfg.precision,
                "compute_dtype": str(DTYPES.get(cfg.precision, "int8 QDQ")).removeprefix("torch."),
                "inputs": {
                    "mfcc": ["N", model.cfg.mfcc_steps, model.cfg.mfcc_coeffs],
                    **{name: [1, *shape] for name, shape in identity.items()},
                },
                "outputs": {"frames": ["N", 3, s, s]},
            },
        },
        "artifacts": {
            graph: artifact_entry(tmp / artifact_name(cfg.backend, graph)) for graph in GRAPHS
        },
        "versions": versions,
        "host": {"machine": platform.machine(), "cpu": host_cpu(), **extra},
    }
