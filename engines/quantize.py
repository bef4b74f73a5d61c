"""int8 frame graphs: static quantization of the float32 frame graph with ONNX Runtime's
quantizer, in QDQ form (QuantizeLinear/DequantizeLinear pairs around every Conv, ConvTranspose and
Gemm), which both ONNX Runtime (fused to integer kernels) and TensorRT (explicit quantization in a
strongly typed network) read.

Calibration runs the float32 graph on random inputs (`parity.random_inputs`) through the eager
identity encoder: activation ranges from noise faces, not real ones, so the parity check that
follows every build, on other random inputs, decides whether the result is kept.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from fastdavs.engines.errors import BackendUnavailable
from fastdavs.engines.export import IdentityGraph, identity_shapes
from fastdavs.engines.parity import random_inputs
from fastdavs.model import DavsModel

log = logging.getLogger(__name__)

CALIBRATION_IDENTITIES = 4
CALIBRATION_BATCH = 16


def quantize_int8(
    src: Path, dst: Path, model: DavsModel, *, symmetric: bool, frames: int = 64, seed: int = 0
) -> Path:
    """Write the QDQ int8 version of float32 frame graph `src` to `dst`.

    Weights are per-channel symmetric int8. Activations are int8 with zero point 0 when
    `symmetric` (what TensorRT requires) and uint8 otherwise (ONNX Runtime's fast path on x86).
    `frames` MFCC windows over CALIBRATION_IDENTITIES random faces calibrate the ranges.
    """
    try:
        from onnxruntime.quantization import (
            CalibrationDataReader,
            QuantFormat,
            QuantType,
            quantize_static,
        )
    except ImportError as e:
        raise BackendUnavailable(
            f"int8 needs onnxruntime's quantizer ({e}); pip install onnxruntime==1.32.0"
        ) from None

    generator = torch.Generator().manual_seed(seed)
    batches = []
    per_identity = max(1, frames // CALIBRATION_IDENTITIES)
    for _ in range(CALIBRATION_IDENTITIES):
        images, mfcc = random_inputs(model.cfg, per_identity, generator)
        with torch.no_grad():
            identity = IdentityGraph(model)(images)
        feeds = {n: t.numpy() for n, t in zip(identity_shapes(model.cfg), identity, strict=True)}
        for chunk in mfcc.split(CALIBRATION_BATCH):
            batches.append({"mfcc": chunk.numpy(), **feeds})

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter(batches)

        def get_next(self):
            return next(self.items, None)

    activation = QuantType.QInt8 if symmetric else QuantType.QUInt8
    quantize_static(
        str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
        activation_type=activation, weight_type=QuantType.QInt8,
        extra_options={"ActivationSymmetric": symmetric, "WeightSymmetric": True},
    )  # fmt: skip
    log.info("quantized %s to int8 (%d calibration frames)", dst.name, frames)
    return dst
