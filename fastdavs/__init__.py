"""fastdavs: a fast re-implementation of DAVS talking-face generation (AAAI 2019).

Where things live, in data-flow order (each layer imports only the ones above it):

    config, errors, machine, cli   the run's configuration, error type, machine facts, flag parsing
    kernels/    (fastdavs.kernels) fused Triton kernels with their eager references; imports no
                other fastdavs module
    data/       SynthLRW, LRW reading, face alignment, the MFCC front end, shards, the Dataset,
                `fastdavs-prepare`
    model/      the DAVS networks and their losses
    io/         atomic files and directories, checkpoints, manifests
    train/      the training stages, one step, the loop, `fastdavs-train`
    evaluate/   metrics, the jaw probe, `fastdavs-eval`
    infer/      `Synthesizer`, driving inputs, face input, `fastdavs-generate`
    engines/    (fastdavs.engines) ONNX Runtime, OpenVINO and TensorRT engines,
                `fastdavs-build-engine`
    stream      real-time synthesis from a live audio stream (`fastdavs.stream`)

Importing `fastdavs` imports nothing else; `fastdavs.Synthesizer` loads `fastdavs.infer` on use.
"""

__version__ = "0.1.0"
__all__ = ["Synthesizer", "__version__"]


def __getattr__(name: str):
    if name == "Synthesizer":
        from fastdavs.infer.synthesis import Synthesizer

        return Synthesizer
    raise AttributeError(f"module 'fastdavs' has no attribute {name!r}")
