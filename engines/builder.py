"""checkpoint -> engine directory: export, backend build, parity check, config.json, publish.

    checkpoint ─reference_model─► eager float32 model (kernel_backend "ref", eval)
        ─rewrite─► a copy with BatchNorm folded and stride-1 ConvTranspose2d as Conv2d
        ─export─► identity.onnx (fp32) + frames.onnx (fp32 | fp16; int8 = fp32 + QDQ quantization
                  for ONNX Runtime and TensorRT)
        ─backend─► ONNX Runtime optimised graphs | OpenVINO IR (int8: NNCF) | TensorRT plans
        ─parity─► engine loaded back from disk vs the eager model as trained, on fresh random
                  inputs (int8: a real face and its speech that calibration did not read)
        ─publish─► DIR (renamed from DIR.tmp-XXXXXXXX only if parity holds)

int8 calibrates on real faces and speech (`calibration.py`): `calibration_data`, or the shards
the checkpoint's run was trained on. `--backend auto` / `--precision auto` build every candidate
and keep the fastest that holds parity (`auto.py`).
`BuildConfig` holds every build setting; `fastdavs-build-engine` derives its defaults from it.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import importlib
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
from fastdavs.cli import option
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
    reference_model,
)
from fastdavs.engines.parity import measure
from fastdavs.engines.rewrite import for_export
from fastdavs.io.atomic import atomic_dir, write_json
from fastdavs.io.checkpoint import run_data
from fastdavs.machine import machine_info
from fastdavs.model.face_code import identity_shapes

log = logging.getLogger(__name__)

BACKENDS = ("onnxruntime", "openvino", "tensorrt")
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
AUTO = "auto"  # as --backend or --precision: measure the candidates and keep the fastest


def parse_batch_profile(text: str) -> tuple[int, int, int]:
    """'MIN:OPT:MAX' -> (min, opt, max) with 1 <= min <= opt <= max (`--batch`)."""
    try:
        lo, opt, hi = (int(v) for v in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected MIN:OPT:MAX, e.g. 1:25:50") from None
    if not 1 <= lo <= opt <= hi:
        raise argparse.ArgumentTypeError(f"{text!r}: need 1 <= MIN <= OPT <= MAX")
    return lo, opt, hi


@dataclass
class BuildConfig:
    """How to build an engine; `fastdavs-build-engine` derives one flag from each field.
    `batch` is the frame graph's (min, opt, max) batch: TensorRT's optimization profile; ONNX
    Runtime and OpenVINO take any batch. All split larger calls into chunks of max;
    `--backend auto` times candidates at opt. The identity graph's profile is (1, 1, max)."""

    backend: str = option(
        "onnxruntime",
        choices=(*BACKENDS, AUTO),
        help="auto: build every engine this machine can, keep the fastest that holds parity",
    )
    precision: str = option(
        "fp32",
        choices=(*PRECISIONS, AUTO),
        help="of the frame graph (the identity graph is always fp32); kept only where "
        "parity with eager fp32 holds; bf16 with openvino on CPUs with native bf16; auto: "
        "the fastest",
    )
    batch: tuple[int, int, int] = option(
        (1, 25, 50),
        parse=parse_batch_profile,
        metavar="MIN:OPT:MAX",
        help="frames per call: TensorRT's optimization profile",
    )
    opset: int = option(OPSET, metavar="N", help="ONNX opset of the exported graphs")
    workspace_mb: int = option(4096, metavar="MB", help="TensorRT builder workspace limit")
    parity_frames: int = option(
        8, metavar="N", help="frames compared with eager PyTorch after the build"
    )
    calibration_data: str | None = option(
        None,
        metavar="SHARDS",
        help="int8: prepared shards (fastdavs-prepare output at the model's image size) "
        "whose faces and speech calibrate it (default: the data the checkpoint's run was "
        "trained on)",
    )
    calibration_frames: int = option(64, metavar="N", help="int8: frames that calibrate it")
    rewrite: bool = option(
        True,
        help="export-time graph rewrites (rewrite.py): fold BatchNorm and turn stride-1 "
        "ConvTranspose2d into Conv2d (default: on)",
    )
    threads: int = option(
        0, metavar="N", help="ONNX Runtime / OpenVINO inference threads (0: one per core)"
    )

    def validate(self) -> BuildConfig:
        if self.backend not in (*BACKENDS, AUTO):
            raise EngineError(
                f"backend {self.backend!r}: choose one of {', '.join(BACKENDS)} or {AUTO}"
            )
        if self.precision not in (*PRECISIONS, AUTO):
            raise EngineError(
                f"precision {self.precision!r}: choose one of {', '.join(PRECISIONS)} or {AUTO}"
            )
        if self.precision == "bf16" and self.backend not in ("openvino", AUTO):
            raise EngineError(
                f"--precision bf16 is not offered with {self.backend}: ONNX's Conv takes "
                "bfloat16 only from opset 22 and the TorchScript exporter writes at most opset "
                f"20 (this build: {self.opset}); use --backend openvino (bf16 on CPUs that have "
                "it natively), fp16 (TensorRT) or fp32 / int8"
            )
        if self.precision == "fp16" and self.backend == "openvino":
            from fastdavs.engines.openvino_engine import check_precision

            check_precision(self.precision)
        lo, opt, hi = self.batch
        if not 1 <= lo <= opt <= hi:
            raise EngineError(f"batch {self.batch}: need 1 <= min <= opt <= max")
        for name in ("workspace_mb", "parity_frames", "calibration_frames"):
            if getattr(self, name) < 1:
                raise EngineError(f"{name}={getattr(self, name)}: must be at least 1")
        return self


def build_engine(checkpoint: str | Path, out: str | Path, cfg: BuildConfig) -> Path:
    """Build an engine directory at `out` from a checkpoint (or a run directory's latest).

    Raises EngineError (and its ParityError, BackendUnavailable), CheckpointError or DataError
    (int8 calibration data) with a message naming the file or option; `out` is then untouched.
    """
    cfg.validate()
    if AUTO in (cfg.backend, cfg.precision):
        from fastdavs.engines.auto import build_fastest

        return build_fastest(checkpoint, out, cfg)
    out = Path(out)
    engine_dir.check_out_dir(out)
    check_backend(cfg.backend, cfg.precision)  # fail before the export where it cannot run
    ckpt = checkpoint_dir(checkpoint)
    data = calibration_data(ckpt, cfg) if cfg.precision == "int8" else None
    start = time.perf_counter()
    log.info("[1/4] loading %s", ckpt)
    model = reference_model(ckpt)
    # Rebuilding replaces the engine at `out` (check_out_dir refused anything else).
    with atomic_dir(out, replace=True) as tmp:
        work = tmp / ".work"
        work.mkdir()
        times = {}
        t = time.perf_counter()
        log.info("[2/4] exporting to ONNX (opset %d, frame graph in %s)", cfg.opset, cfg.precision)
        feeds = None
        if data is not None:
            from fastdavs.engines.calibration import calibration_feeds

            feeds = calibration_feeds(model, data, cfg.calibration_frames)
        sources = _export(model, work, cfg, feeds)
        times["export_s"] = time.perf_counter() - t
        t = time.perf_counter()
        log.info("[3/4] building the %s engine", cfg.backend)
        extra = _build_backend(sources, tmp, out, cfg, feeds)
        times["build_s"] = time.perf_counter() - t
        shutil.rmtree(work)
        meta = _metadata(model, ckpt, cfg, tmp, extra, data)
        write_json(tmp / CONFIG, meta)
        t = time.perf_counter()
        what = "random frames" if data is None else "frames of a held-out clip"
        log.info("[4/4] parity with eager PyTorch on %d %s", cfg.parity_frames, what)
        from fastdavs.engines.runtime import load

        parity = measure(load(tmp, threads=cfg.threads), model, cfg.parity_frames, data=data)
        log.info(
            "parity: max abs error %.3g, PSNR min %.1f dB, mean %.1f dB",
            parity.max_abs, parity.psnr_min_db, parity.psnr_mean_db,
        )  # fmt: skip
        parity.check(cfg.precision, str(out))
        times["parity_s"] = time.perf_counter() - t
        times["total_s"] = time.perf_counter() - start
        meta.update(parity=parity.to_dict(), times={k: round(v, 3) for k, v in times.items()})
        write_json(tmp / CONFIG, meta)
    log.info("wrote %s in %.1f s", out, times["total_s"])
    return out


def check_backend(backend: str, precision: str) -> None:
    """BackendUnavailable / EngineError where `backend` cannot build `precision` here."""
    if backend == "tensorrt":
        from fastdavs.engines.tensorrt_engine import import_tensorrt, require_gpu

        import_tensorrt()
        require_gpu()
    elif backend == "openvino":
        from fastdavs.engines.openvino_engine import check_precision, import_openvino

        import_openvino()
        check_precision(precision)
    else:
        from fastdavs.engines.onnxruntime_engine import import_onnxruntime

        import_onnxruntime()


def calibration_data(ckpt: Path, cfg: BuildConfig) -> Path:
    """The shards int8 calibrates on: `cfg.calibration_data`, else the run's training data."""
    if cfg.calibration_data:
        return Path(cfg.calibration_data)
    return run_data(ckpt, "--calibration-data")


def _export(model, work: Path, cfg: BuildConfig, feeds) -> dict[str, Path]:
    """The ONNX graphs the backend builds from: identity.onnx (fp32) and frames.onnx (fp32 or
    fp16; int8 for ONNX Runtime and TensorRT: quantized here; OpenVINO quantizes the fp32 graph
    itself, and takes bf16 from its inference precision)."""
    graphs = for_export(model) if cfg.rewrite else model
    sources = {"identity": export_identity(graphs, work / "identity.onnx", cfg.opset)}
    if cfg.precision == "int8" and cfg.backend != "openvino":
        from fastdavs.engines.quantize import quantize_int8

        fp32 = export_frames(graphs, work / "frames.fp32.onnx", "fp32", cfg.opset)
        symmetric = cfg.backend == "tensorrt"
        sources["frames"] = quantize_int8(fp32, work / "frames.onnx", feeds, symmetric=symmetric)
    else:
        precision = cfg.precision if cfg.precision in DTYPES else "fp32"
        sources["frames"] = export_frames(graphs, work / "frames.onnx", precision, cfg.opset)
    return sources


def _build_backend(sources: dict[str, Path], tmp: Path, out: Path, cfg: BuildConfig, feeds) -> dict:
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
    if cfg.backend == "openvino":
        from fastdavs.engines.openvino_engine import convert, inference_precision

        for graph in GRAPHS:
            precision = cfg.precision if graph == "frames" else "fp32"
            dst = tmp / artifact_name(cfg.backend, graph)
            convert(sources[graph], dst, precision, feeds if graph == "frames" else None)
        return {"openvino_inference_precision": inference_precision(cfg.precision)}
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


def _compute_dtype(cfg: BuildConfig, extra: dict) -> str:
    """What the frame graph computes in, as config.json records it."""
    if cfg.precision == "int8":
        if cfg.backend == "openvino":
            rest = "bfloat16" if extra["openvino_inference_precision"] == "bf16" else "float32"
            return f"int8 (NNCF), other ops {rest}"
        return "int8 QDQ"
    return {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}[cfg.precision]


def _metadata(
    model, ckpt: Path, cfg: BuildConfig, tmp: Path, extra: dict, data: Path | None
) -> dict:
    from fastdavs.engines.onnxruntime_engine import host_cpu

    versions = {
        "fastdavs": __version__,
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "python": platform.python_version(),
    }
    packages = ["onnxruntime"]  # the exporter's check and ONNX Runtime's quantizer
    if cfg.backend == "openvino":
        packages += ["openvino", "nncf"] if cfg.precision == "int8" else ["openvino"]
    for package in packages:
        with contextlib.suppress(ImportError):
            versions[package] = importlib.import_module(package).__version__
    if "tensorrt" in extra:
        versions["tensorrt"] = extra.pop("tensorrt")
    build = dataclasses.asdict(cfg)
    build["batch"] = list(cfg.batch)
    if data is not None:
        build["calibration_data"] = str(data.resolve())
    s = model.cfg.image_size
    identity = identity_shapes(model.cfg)
    isa = [flag for flag, present in machine_info()["isa"].items() if present]
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
                "compute_dtype": _compute_dtype(cfg, extra),
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
        "host": {"machine": platform.machine(), "cpu": host_cpu(), "isa": isa, **extra},
    }
