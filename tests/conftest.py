"""Shared test setup: the Triton interpreter on machines without a GPU, deterministic seeds, a
small thread count, the `gpu` marker, and a tiny prepared SynthLRW set."""

import os

import pytest
import torch

# Without a GPU the Triton kernels run on CPU tensors under the interpreter. @triton.jit reads
# TRITON_INTERPRET when a kernel module is imported (fastdavs.model imports fastdavs.kernels), so
# it is set here, before any fastdavs import: pytest loads this file before every test module.
# An explicit setting in the environment is kept.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from fastdavs.data.prepare import prepare  # noqa: E402
from fastdavs.data.synth import SynthConfig, generate  # noqa: E402

# Test tensors are small: one thread avoids the overhead (and, on a busy machine, the stalls) of
# synchronising two for every tiny op. Benchmarks, not tests, measure threaded speed.
torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def shards(tmp_path_factory):
    """Prepared shards at the tiny preset's 32 px: 4 identities (2 train, 1 val, 1 test), 3
    words, 2 takes, so train has 12 clips and val and test 6 each."""
    root = tmp_path_factory.mktemp("train-data")
    generate(
        SynthConfig(identities=4, held_out=2, words=3, takes=2, seed=5, size=64), root / "lrw", 1
    )
    prepare(root / "lrw", root / "shards", image_size=32, workers=1)
    return root / "shards"
