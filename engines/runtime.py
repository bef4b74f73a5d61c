"""Running an engine directory on its own: `fastdavs.engines.load(DIR)`.

    engine = load("engines/small-ort")
    ident = engine.identity(face)          # face [1, 3, S, S] in [0, 1] -> IdentityCache
    frames = engine.frames(mfcc, ident)    # mfcc [N, 20, 12] -> frames [N, 3, S, S] in [0, 1]

`identity` runs once per face; `frames` decodes any number of frames of one identity, in chunks
of the engine's maximum batch. Inputs are torch tensors or NumPy arrays (float32); outputs are
torch float32 tensors, on the CPU for ONNX Runtime and OpenVINO and on the GPU for TensorRT.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from fastdavs.config import DavsConfig
from fastdavs.engines.engine_dir import CONFIG, GRAPHS, artifact_name, read_config
from fastdavs.engines.errors import EngineError
from fastdavs.engines.export import checkpoint_digest, checkpoint_dir
from fastdavs.model.face_code import IdentityCache, identity_shapes

log = logging.getLogger(__name__)


class Engine:
    """A loaded engine directory. `config` is the model's DavsConfig, `meta` its config.json."""

    def __init__(self, path: Path, meta: dict, sessions: dict):
        self.path = path
        self.meta = meta
        self.config = DavsConfig.from_dict(meta["model"])
        self.backend: str = meta["backend"]
        self.precision: str = meta["build"]["precision"]
        self.max_batch: int = meta["build"]["batch"][2]
        self.sessions = sessions
        self.identity_names = tuple(identity_shapes(self.config))
        self._check_inputs()

    def __repr__(self) -> str:
        cfg = self.config
        return (
            f"Engine({str(self.path)!r}, backend={self.backend}, precision={self.precision}, "
            f"preset={cfg.preset}, image_size={cfg.image_size})"
        )

    def identity(self, images) -> IdentityCache:
        """images [B, 3, S, S] (or one [3, S, S]) in [0, 1] -> IdentityCache with B rows."""
        s = self.config.image_size
        images = _tensor(images, "images")
        if images.dim() == 3:
            images = images[None]
        if images.dim() != 4 or tuple(images.shape[1:]) != (3, s, s):
            raise EngineError(
                f"identity: images must be [B, 3, {s}, {s}] (this engine's image size), got "
                f"{list(images.shape)}"
            )
        parts = [self.sessions["identity"].run({"images": chunk}) for chunk in self._chunks(images)]
        return IdentityCache(*(torch.cat([p[n] for p in parts]) for n in self.identity_names))

    def frames(self, mfcc, identity: IdentityCache) -> torch.Tensor:
        """mfcc [N, 20, 12] windows of one identity's clip -> frames [N, 3, S, S] in [0, 1]."""
        cfg = self.config
        window = (cfg.mfcc_steps, cfg.mfcc_coeffs)
        mfcc = _tensor(mfcc, "mfcc")
        if mfcc.dim() != 3 or tuple(mfcc.shape[1:]) != window or len(mfcc) == 0:
            raise EngineError(
                f"frames: mfcc must be [N, 20, 12] with N >= 1, got {list(mfcc.shape)}"
            )
        if len(identity) != len(self.identity_names):
            raise EngineError(
                f"frames: this engine's frame graph reads {', '.join(self.identity_names)} of "
                f"a face, got {len(identity)} tensors; pass what its identity() returned"
            )
        if len(identity[0]) != 1:
            raise EngineError(
                f"frames: decodes one identity per call, got features of {len(identity[0])}; "
                "pass identity.face(i)"
            )
        feeds = dict(zip(self.identity_names, identity, strict=True))
        session = self.sessions["frames"]
        parts = [session.run({"mfcc": chunk, **feeds})["frames"] for chunk in self._chunks(mfcc)]
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def _check_inputs(self) -> None:
        """The artifacts' input shapes must be those of the model in config.json (an edited
        config.json would otherwise feed the graphs wrong shapes)."""
        cfg = self.config
        s = cfg.image_size
        expected = {
            "identity": {"images": (None, 3, s, s)},
            "frames": {
                "mfcc": (None, cfg.mfcc_steps, cfg.mfcc_coeffs),
                **{name: (1, *shape) for name, shape in identity_shapes(cfg).items()},
            },
        }
        for graph, inputs in expected.items():
            have = self.sessions[graph].input_shapes
            if have != inputs:
                raise EngineError(
                    f"{self.path / CONFIG}: its model config ({cfg.preset}, {s} px) does not "
                    f"match {artifact_name(self.backend, graph)}, whose inputs are {have} "
                    f"(expected {inputs}; None = any batch): config.json was edited or belongs "
                    "to another engine; rebuild the engine with fastdavs-build-engine"
                )

    def _chunks(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return x.split(self.max_batch)


def _tensor(x, name: str) -> torch.Tensor:
    t = torch.as_tensor(x)
    if not t.is_floating_point():
        raise EngineError(f"{name}: expected floating-point values, got {t.dtype}")
    return t.float()


def load(path: str | Path, checkpoint: str | Path | None = None, threads: int = 0) -> Engine:
    """Load an engine directory after checking it (config.json, artifact hashes, backend).

    Args:
        path: the directory `fastdavs-build-engine --out` wrote.
        checkpoint: optional; refuse the engine unless it was built from this checkpoint (or run
            directory's latest checkpoint), compared by the SHA-256 of its weights.
        threads: ONNX Runtime / OpenVINO inference threads (0: their default, one per core).
    Raises:
        EngineError: missing or edited config.json, damaged artifact, other checkpoint;
        BackendUnavailable: the engine's backend cannot run here (TensorRT or a GPU, OpenVINO
            missing); EngineError also for a bf16 OpenVINO engine on a CPU without native bf16.
    """
    path = Path(path)
    meta = read_config(path)
    if checkpoint is not None:
        ckpt = checkpoint_dir(checkpoint)
        want, have = checkpoint_digest(ckpt), meta.get("checkpoint", {}).get("model_sha256")
        if want != have:
            raise EngineError(
                f"{path / CONFIG}: built from another checkpoint (weights sha256 "
                f"{str(have)[:16]}...), not {ckpt} ({want[:16]}...); rebuild the engine from "
                "this checkpoint with fastdavs-build-engine"
            )
    backend = meta["backend"]
    files = {graph: path / artifact_name(backend, graph) for graph in GRAPHS}
    if backend in ("onnxruntime", "openvino"):
        from fastdavs.engines.onnxruntime_engine import host_cpu

        built_on = meta.get("host", {}).get("cpu")
        if built_on and built_on != host_cpu():
            log.warning(
                "%s was built on a %s and this is a %s: if it runs slowly or not at all, "
                "rebuild it here", path, built_on, host_cpu(),
            )  # fmt: skip
    if backend == "onnxruntime":
        from fastdavs.engines.onnxruntime_engine import OnnxRuntimeSession

        sessions = {g: OnnxRuntimeSession(f, threads) for g, f in files.items()}
    elif backend == "openvino":
        from fastdavs.engines.openvino_engine import OpenVinoSession

        precision = {"identity": "fp32", "frames": meta["build"]["precision"]}
        sessions = {g: OpenVinoSession(f, precision[g], threads) for g, f in files.items()}
    else:
        from fastdavs.engines.tensorrt_engine import TensorRTSession

        sessions = {g: TensorRTSession(f) for g, f in files.items()}
    return Engine(path, meta, sessions)
