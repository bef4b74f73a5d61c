"""Small pieces the benchmark scripts share (imported as `common`: bench/ is the script's path)."""

from __future__ import annotations

import csv
import io
import statistics
import subprocess
import time
from collections.abc import Callable

import torch

from fastdavs.config import DavsConfig
from fastdavs.engines.export import MFCC_STD
from fastdavs.model import DavsModel, MouthEditor


def git(*args: str) -> str:
    """`git ARGS` in the current directory, its stdout stripped ('' outside a checkout)."""
    return subprocess.run(["git", *args], capture_output=True, text=True).stdout.strip()


def csv_text(rows: list[dict], fields: list[str], machine: str) -> str:
    """`rows` as CSV with the columns `fields` (other keys left out, missing ones empty) and a
    last column `machine` holding `machine` (a `fastdavs.machine.machine_summary`) on every row,
    so that the file alone names the machine it was measured on."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, [*fields, "machine"], extrasaction="ignore")
    writer.writeheader()
    writer.writerows({**row, "machine": machine} for row in rows)
    return buf.getvalue()


def median_p20_p80(xs: list[float]) -> tuple[float, float, float]:
    """(median, p20, p80) of timing samples; one sample gives itself three times."""
    if len(xs) == 1:
        return xs[0], xs[0], xs[0]
    q = statistics.quantiles(xs, n=10, method="inclusive")
    return statistics.median(xs), q[1], q[7]


def best_seconds(fn: Callable[[], object], reps: int = 5) -> float:
    """Fastest of `reps` calls of `fn` after one warm-up call; waits for the GPU where there is
    one, so that CUDA work is timed, not just launched."""

    def sync() -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    fn()
    sync()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return min(times)


def matmul_peak_gflops(n: int = 2048, device: str = "cpu", dtype=torch.float32) -> float:
    """This machine's matmul rate in `dtype` (n x n by n x n, best of 5): the peak that
    benchmarks report achieved GFLOP/s against, measured in the same run and with the same
    threads. float32 and bfloat16 go through torch.mm; int8 through torch._int_mm (int8 x int8
    -> int32, oneDNN's VNNI kernels where the CPU has them), counted as 2 ops per
    multiply-add like the others."""
    if dtype == torch.int8:
        a = torch.randint(-128, 128, (n, n), dtype=dtype, device=device)
        b = torch.randint(-128, 128, (n, n), dtype=dtype, device=device)
        return 2 * n**3 / best_seconds(lambda: torch._int_mm(a, b)) / 1e9
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)
    return 2 * n**3 / best_seconds(lambda: torch.mm(a, b, out=out)) / 1e9


def conv_peak_gflops(dtype=torch.float32, channels: int = 256, size: int = 32) -> float:
    """This machine's 3x3 convolution rate in `dtype` (float32 or bfloat16; batch 16,
    `channels` in and out, `size` x `size`, channels-last: oneDNN's direct kernels), best of 5.
    On AMD CPUs torch.mm's float32 BLAS runs AVX2 kernels (measured 179 GFLOP/s on a 2-core
    Zen 5, where this gives 456): a machine's float32 peak is the faster of the two probes."""
    x = torch.randn(16, channels, size, size, dtype=dtype).to(memory_format=torch.channels_last)
    w = torch.randn(channels, channels, 3, 3, dtype=dtype).to(memory_format=torch.channels_last)
    flops = 2 * 9 * channels**2 * size**2 * 16
    with torch.no_grad():
        return flops / best_seconds(lambda: torch.nn.functional.conv2d(x, w, padding=1)) / 1e9


def random_model(preset: str, generator: str | None = None) -> DavsModel:
    """A seeded, randomly initialised model of `preset` in eval mode, its BatchNorm statistics
    taken from two forward passes on realistic inputs (not the N(0, 1) defaults), for
    benchmarks run without a trained checkpoint. `generator` ("davs" or "mouth_editor")
    overrides the preset's.

    The mouth editor's last convolution starts at zero (its output is then the identity frame
    exactly); here it gets PyTorch's default initialisation instead, so that its residual is
    not 0 and a fast path's parity with the reference measures something."""
    torch.manual_seed(0)
    overrides = {"generator": generator} if generator else {}
    model = DavsModel(DavsConfig.from_preset(preset, **overrides)).set_kernel_backend("ref")
    if isinstance(model.generator, MouthEditor):
        model.generator.out.reset_parameters()
    s = model.cfg.image_size
    with torch.no_grad():
        for _ in range(2):
            ident = model.encode_identity(torch.rand(2, 3, s, s))
            model.generate(ident, model.encode_audio(MFCC_STD * torch.randn(2, 2, 20, 12)))
    return model.eval()
