"""int8 frame graphs for ONNX Runtime and TensorRT: static quantization of the float32 frame
graph with ONNX Runtime's quantizer, in QDQ form (QuantizeLinear/DequantizeLinear pairs around
every Conv, ConvTranspose and Gemm), which both ONNX Runtime (fused to integer kernels) and
TensorRT (explicit quantization in a strongly typed network) read.

Activation ranges come from running the float32 graph on real faces and speech
(`calibration.calibration_feeds`); the parity check that follows every build, on other inputs,
decides whether the result is kept. OpenVINO's int8 is NNCF's (`openvino_engine.py`), from the
same calibration feeds.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from fastdavs.engines.errors import BackendUnavailable

log = logging.getLogger(__name__)


def quantize_int8(
    src: Path, dst: Path, feeds: list[dict[str, np.ndarray]], *, symmetric: bool
) -> Path:
    """Write the QDQ int8 version of float32 frame graph `src` to `dst`.

    Weights are per-channel symmetric int8. Activations are int8 with zero point 0 when
    `symmetric` (what TensorRT requires) and uint8 otherwise (ONNX Runtime's fast path on x86).
    `feeds` (`calibration.calibration_feeds`) calibrate the ranges.
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

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter(feeds)

        def get_next(self):
            return next(self.items, None)

    activation = QuantType.QInt8 if symmetric else QuantType.QUInt8
    quantize_static(
        str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
        activation_type=activation, weight_type=QuantType.QInt8,
        extra_options={"ActivationSymmetric": symmetric, "WeightSymmetric": True},
    )  # fmt: skip
    log.info("quantized %s to int8 (%d calibration batches)", dst.name, len(feeds))
    return dst
