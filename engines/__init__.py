"""fastdavs.engines: low-latency frame synthesis engines (ONNX Runtime and OpenVINO on CPUs,
TensorRT on NVIDIA GPUs) built from one exported ONNX graph. Installed from the top-level
`engines/` folder.

    fastdavs-build-engine --checkpoint CKPT --out DIR     (builder.build_engine)
    engine = fastdavs.engines.load(DIR)                   (runtime.load)
    frames = engine.frames(mfcc, engine.identity(face))

Modules: export (ONNX graphs), rewrite (export-time graph rewrites), calibration (int8 inputs
from real shards), quantize (int8 for ONNX Runtime / TensorRT), onnxruntime_engine,
openvino_engine, tensorrt_engine, parity, engine_dir (the directory and its config.json),
builder, auto (--backend auto), runtime, build (the command).
"""

from fastdavs.engines.builder import BuildConfig, build_engine
from fastdavs.engines.errors import BackendUnavailable, EngineError, ParityError
from fastdavs.engines.runtime import Engine, load
from fastdavs.model.face_code import IdentityCache

__all__ = [
    "BackendUnavailable",
    "BuildConfig",
    "Engine",
    "EngineError",
    "IdentityCache",
    "ParityError",
    "build_engine",
    "load",
]
