"""Errors of the engine builder and runtime, all `FastdavsError`s: commands print them as one
line, and every message names the file or option at fault and what to do."""

from fastdavs.errors import FastdavsError


class EngineError(FastdavsError):
    """An engine cannot be built or loaded (bad directory, damaged or edited file, bad input)."""


class BackendUnavailable(EngineError):
    """The backend an engine needs is not installed here (TensorRT, a CUDA GPU, ONNX Runtime)."""


class ParityError(EngineError):
    """A built engine's frames differ from eager PyTorch's beyond the precision's tolerance."""
