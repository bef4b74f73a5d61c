"""fastdavs: a fast re-implementation of DAVS talking-face generation (AAAI 2019).

Where things live, lowest layer first (a module imports only its own layer or those below;
tests/test_layering.py holds the list):

    kernels/    (fastdavs.kernels) fused Triton kernels beside their plain-PyTorch references
                (the MFCC recipe, the contrastive loss, temporal convolutions); imports no
                other fastdavs module
    errors, config, machine, cli   error types, the model's configuration, this machine's
                facts, flags and the commands' error handling; io/atomic (files and directories
                written whole or not at all)
    data/       SynthLRW, LRW reading, face detection and alignment, the MFCC front end
                (`audio`), shards, the Dataset, `fastdavs-prepare`
    model/      the DAVS networks, their losses, the per-face tensors the generator reads
    io/         checkpoints and run directories, manifests
    evaluate/   metrics, the jaw probe, the evaluation, `fastdavs-eval`
    train/      the losses of each stage, one step, the loop, `fastdavs-train`
    engines/    (fastdavs.engines) ONNX Runtime, OpenVINO and TensorRT engines,
                `fastdavs-build-engine`
    infer/      `Synthesizer`, driving inputs, the face to animate, `fastdavs-generate`
    stream      real-time synthesis from audio chunks as they arrive (`fastdavs.stream`)

Importing `fastdavs` imports nothing else; `fastdavs.Synthesizer` loads `fastdavs.infer` on use.
"""

__version__ = "0.1.0"
__all__ = ["Synthesizer", "__version__"]


def __getattr__(name: str):
    if name == "Synthesizer":
        from fastdavs.infer.synthesis import Synthesizer

        return Synthesizer
    raise AttributeError(f"module 'fastdavs' has no attribute {name!r}")
