"""Shared test setup: deterministic seeds, a small thread count, and the `gpu` marker."""

import pytest
import torch

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
