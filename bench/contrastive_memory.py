"""Peak memory of the contrastive loss paths at [B, D] = [4096, 3072], for `bench/kernels.py`.

Each measurement runs in a fresh process (`python bench/contrastive_memory.py PATH,B,D,TILE`
prints one JSON line): peak memory growth over the inputs, forward (no_grad) and forward +
backward. On CPU that is the peak RSS, reset through /proc/self/clear_refs after the inputs
exist (Linux); on CUDA torch's allocator peak.
The reference builds [B, B, D] tensors, so it is measured at small B and extrapolated; the
tiled path runs at B = 4096, on CPU under the Triton interpreter (TRITON_INTERPRET=1 is set
for that child only), with tiles of 512 so that the interpreter finishes in about a minute
(its own NumPy temporaries are O(tile^2) and count in its RSS).
"""

from __future__ import annotations

import functools
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from fastdavs.kernels import (
    ContrastiveBlocks,
    contrastive_loss,
    contrastive_loss_ref,
    contrastive_workspace_bytes,
)


def _status_bytes(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{key} not in /proc/self/status")


def _reset_peak() -> int:
    """Current bytes in use; the peak counter starts again from them. CUDA: torch's allocator;
    CPU: RSS (peak reset through /proc/self/clear_refs)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated()
    Path("/proc/self/clear_refs").write_text("5")  # peak RSS := current RSS
    return _status_bytes("VmRSS:")


def _peak() -> int:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated()
    return _status_bytes("VmHWM:")


def probe(spec: str) -> None:
    """Child process: peak memory growth of `path` (ref | compile | tiled) at [b, d], forward
    (no_grad) and forward + backward, printed as JSON; measured from after the inputs exist."""
    path, b, d, tile = spec.split(",")
    b, d, tile = int(b), int(d), int(tile)
    torch.manual_seed(0)
    if path == "tiled":
        blocks = ContrastiveBlocks(m=tile, n=tile, k=tile, d=tile)
        fn = functools.partial(contrastive_loss, backend="triton", blocks=blocks)
    elif path == "compile":
        fn = torch.compile(contrastive_loss_ref, dynamic=False, fullgraph=True)
    else:
        fn = contrastive_loss_ref
    result = {"path": path, "b": b, "d": d}
    device = "cuda" if torch.cuda.is_available() else "cpu"
    for mode in ("fwd", "fwd+bwd"):
        grad = mode == "fwd+bwd"
        # warm-up: imports, interpreter set-up (small batch); compiling needs the real shape
        warm = b if path == "compile" else min(b, 64)
        a, v = (torch.randn(warm, d, device=device, requires_grad=grad) for _ in range(2))
        with torch.set_grad_enabled(grad):
            loss = fn(a, v)
        if grad:
            loss.backward()
        a, v = (torch.randn(b, d, device=device, requires_grad=grad) for _ in range(2))
        del loss
        gc.collect()
        before = _reset_peak()
        start = time.perf_counter()
        with torch.set_grad_enabled(grad):
            loss = fn(a, v)
        if grad:
            loss.backward()
        result[mode] = {
            "extra_bytes": _peak() - before,
            "seconds": time.perf_counter() - start,
        }
        del a, v, loss
        gc.collect()
    print(json.dumps(result))


def measure(quick: bool, timeout_s: float) -> dict:
    """Peak extra memory of the reference (eager at small B, compiled at one B: its [B, B, D]
    terms fit nowhere at B = 4096) and of the tiled path at B = 4096 (under the interpreter
    here), each in a fresh process."""
    d, big = 3072, 256 if quick else 4096
    tile = min(512, big)
    specs = [("ref", b) for b in ((64,) if quick else (64, 128, 256))]
    specs += [] if quick else [("compile", 256)]
    specs += [("tiled", big)]
    results = []
    for path, b in specs:
        # A fixed mmap threshold: glibc's dynamic one would serve a large block freed earlier
        # from the heap again, unseen by the peak RSS; mmapped blocks are touched anew.
        env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072")
        if path == "tiled" and not torch.cuda.is_available():
            env["TRITON_INTERPRET"] = "1"  # read when fastdavs.kernels is imported
        cmd = [sys.executable, __file__, f"{path},{b},{d},{tile}"]
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, env=env, timeout=timeout_s, check=True
            )
            results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        except subprocess.TimeoutExpired:
            results.append({"path": path, "b": b, "d": d, "error": f"over {timeout_s:.0f} s"})
        except subprocess.CalledProcessError as e:
            tail = (e.stderr or "").strip().splitlines()[-1:] or ["?"]
            results.append({"path": path, "b": b, "d": d, "error": tail[0]})
    blocks = ContrastiveBlocks(m=tile, n=tile, k=tile, d=tile)
    return {
        "d": d,
        "tile": tile,
        "interpreted": not torch.cuda.is_available(),
        "probes": results,
        "analytic_workspace_bytes": contrastive_workspace_bytes(big, d, torch.float32, blocks),
        "b_big": big,
    }


if __name__ == "__main__":
    sys.exit(probe(sys.argv[1]))
