"""Export of the per-frame generator to ONNX: the first step of `fastdavs-build-engine`.

    checkpoint ──reference_model──► DavsModel (eval, kernel_backend "ref")
        ├─IdentityGraph─► identity.onnx  images [B, 3, S, S] ─► the identity tensors [B, ...]
        └─FrameGraph────► frames.onnx    mfcc [N, 20, 12], the identity tensors [1, ...]
                                          ─► frames [N, 3, S, S]

The identity tensors are what the generator's per-frame `decode` reads of a face
(`identity_shapes`): for the davs decoder pid [pid_dim] and skip [C2, S/8, S/8] (C2 = ch(160),
the identity encoder's outputs); for the mouth editor image [3, S, S] (the face itself, which
the edit is pasted into) and skip1..skip3 (its encoding of the edit box, `EditorIdentity`).
The split follows the generator's data flow: the identity tensors of a face are computed once
and cached; every video frame then costs one pass of the audio encoder and the generator.
The frame graph takes MFCC windows, not word-ID vectors, so an engine goes from audio to frames
with nothing but the MFCC front end in front of it; the audio encoder costs little (0.7% of the
frame graph's FLOPs at the small preset, 0.04% at paper). Video-driven generation (word-ID
vectors from the video encoder) is not exported and stays on the eager path.
It decodes N frames of one identity per call: the identity inputs have batch 1 and are broadcast
inside the graph, so a clip never copies its skip features N times on the host.

Precision comes from the graph itself (what TensorRT's strongly typed networks need): an fp16
graph is exported from a copy of the modules cast to float16, with float32 inputs and outputs
(casts at the graph's edges); int8 is the fp32 graph with QDQ nodes from ONNX Runtime's static
quantization (`quantize.py`). No bf16 graph is exported: ONNX's Conv accepts bfloat16 only from
opset 22, and torch's TorchScript exporter writes at most opset 20; OpenVINO's bf16 and int8
engines start from the fp32 graph (`openvino_engine.py`). The identity graph is always float32:
it runs once per face and its features feed every frame. What is exported is the model after
the export-time rewrites (`rewrite.py`: BatchNorm folded, stride-1 ConvTranspose2d as Conv2d).

Opset 17: every op here (Conv, ConvTranspose, BatchNormalization, Resize, Gemm, LeakyRelu,
per-channel QuantizeLinear) is in it with the types used, TensorRT 10 and 11's ONNX parser and
ONNX Runtime 1.32 support it fully (as do older ones: TensorRT 8.6, ONNX Runtime >= 1.13), and
nothing here needs a newer one. Export uses the TorchScript-based exporter (`dynamo=False`),
which needs no onnxscript.
"""

from __future__ import annotations

import copy
import json
import logging
import warnings
from pathlib import Path

import torch
from torch import nn

from fastdavs.errors import CheckpointError
from fastdavs.io.checkpoint import CHECKPOINTS, CONFIG, MODEL, latest_checkpoint, load_model
from fastdavs.model import DavsModel
from fastdavs.model.face_code import IdentityGraph, decode_frames, identity_shapes

log = logging.getLogger(__name__)

OPSET = 17
MFCC_STD = 4.0  # std of DAVS MFCC windows (measured on SynthLRW shards: 4.0 over all coefficients)
DTYPES = {"fp32": torch.float32, "fp16": torch.float16}


class FrameGraph(nn.Module):
    """Audio encoder + generator for N frames of one identity, computed in `dtype`.

    mfcc [N, 20, 12], the identity tensors [1, ...] (float32) -> frames [N, 3, S, S] float32
    in [0, 1]."""

    def __init__(self, model: DavsModel, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.dtype = dtype
        modules = (model.audio_encoder, model.generator)
        if dtype != torch.float32:  # a cast copy: the caller's model stays float32
            modules = tuple(copy.deepcopy(m).to(dtype) for m in modules)
        self.audio_encoder, self.generator = modules

    def forward(self, mfcc: torch.Tensor, *identity: torch.Tensor) -> torch.Tensor:
        wid = self.audio_encoder(mfcc.to(self.dtype))  # [N, word_dim]
        identity = tuple(t.to(self.dtype) for t in identity)
        return decode_frames(self.generator, identity, wid).float()  # [N, 3, S, S]


def checkpoint_dir(path: str | Path) -> Path:
    """The checkpoint directory `path` names: itself, or a run directory's latest one."""
    path = Path(path)
    if (path / CHECKPOINTS).is_dir():
        found = latest_checkpoint(path)
        if found is None:
            raise CheckpointError(f"{path / CHECKPOINTS}: no complete, intact checkpoint")
        return found
    return path


def checkpoint_digest(ckpt: Path) -> str:
    """SHA-256 of a checkpoint's model.safetensors, as its config.json manifest records it
    (`load_model` checks the file against it)."""
    try:
        meta = json.loads((ckpt / CONFIG).read_bytes())
        return meta["manifest"][MODEL]["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        raise CheckpointError(
            f"{ckpt / CONFIG}: not a fastdavs checkpoint with a manifest entry for {MODEL}; "
            "pass a checkpoint directory such as RUN/checkpoints/step_000100 or a run directory"
        ) from None


def reference_model(checkpoint: str | Path) -> DavsModel:
    """The checkpoint's model in eval mode on the CPU, with the plain-PyTorch kernels (what
    export traces and what parity compares against)."""
    # Triton kernels cannot be exported, and the reference is the definition of correct.
    return load_model(checkpoint).set_kernel_backend("ref")


def export_identity(model: DavsModel, path: Path, opset: int = OPSET) -> Path:
    """identity.onnx with a dynamic batch axis B."""
    s = model.cfg.image_size
    images = torch.rand(1, 3, s, s)
    io = (["images"], list(identity_shapes(model.cfg)))
    _export(IdentityGraph(model), (images,), path, io, {"images": {0: "B"}}, opset)
    return path


def export_frames(model: DavsModel, path: Path, precision: str = "fp32", opset=OPSET) -> Path:
    """frames.onnx in `precision` ("fp32" or "fp16") with a dynamic batch axis N."""
    if precision not in DTYPES:
        raise ValueError(f"export_frames: precision {precision!r} is not one of {list(DTYPES)}")
    cfg = model.cfg
    with torch.no_grad():
        identity = IdentityGraph(model)(torch.rand(1, 3, cfg.image_size, cfg.image_size))
    mfcc = MFCC_STD * torch.randn(2, cfg.mfcc_steps, cfg.mfcc_coeffs)
    graph = FrameGraph(model, DTYPES[precision])
    io = (["mfcc", *identity_shapes(cfg)], ["frames"])
    _export(graph, (mfcc, *identity), path, io, {"mfcc": {0: "N"}}, opset)
    return path


def _export(module: nn.Module, args: tuple, path: Path, io, batch_axes: dict, opset: int) -> None:
    inputs, outputs = io
    axes = dict(batch_axes)
    axes[outputs[0]] = next(iter(batch_axes.values()))
    for name in outputs[1:]:
        axes[name] = axes[outputs[0]]
    module.eval()
    with torch.no_grad(), warnings.catch_warnings():
        # The exporter warns about every Python-level shape check of the kernels' argument
        # validation (constant under tracing); none of them depends on the batch size.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, args, str(path), dynamo=False, opset_version=opset,
            input_names=inputs, output_names=outputs, dynamic_axes=axes,
        )  # fmt: skip
    log.info("exported %s (%.1f MB)", path.name, path.stat().st_size / 1e6)
