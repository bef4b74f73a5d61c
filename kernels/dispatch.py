"""Backend choice shared by the fused ops of fastdavs.kernels (DESIGN.md "Kernels and backends").

Every public op takes ``backend``: ``"auto"`` runs the Triton kernel on CUDA tensors it supports
and the plain-PyTorch reference everywhere else (CPU tensors included, also under the
interpreter); ``"triton"`` and ``"ref"`` force one. A forced ``"triton"`` also runs on CPU
tensors under the Triton interpreter (``TRITON_INTERPRET=1`` set before fastdavs.kernels is
imported), which is how CPU-only machines test the kernels.
"""

from __future__ import annotations

import torch
from triton.runtime.interpreter import InterpretedFunction

BACKENDS = ("auto", "triton", "ref")


class KernelError(ValueError):
    """A fused op cannot run as asked (backend unavailable, unsupported dtype or shape). The
    commands report it as a user error, like `fastdavs.errors.FastdavsError`."""


def interpreted(kernel) -> bool:
    """Whether `kernel` (a ``@triton.jit`` function) was decorated under the Triton interpreter.

    ``@triton.jit`` reads ``TRITON_INTERPRET`` once, at decoration, so the kernel object, not
    today's environment, says where it can run.
    """
    return isinstance(kernel, InterpretedFunction)


def resolve_backend(
    op: str,
    backend: str,
    x: torch.Tensor,
    kernel,
    dtypes: tuple[torch.dtype, ...],
    needs_grad: bool = False,
) -> str:
    """``"triton"`` or ``"ref"`` for running `op` on `x`.

    Args:
        op: the op's name, for messages.
        backend: ``"auto"``, ``"triton"`` or ``"ref"``.
        x: the op's main input (its device and dtype decide ``"auto"``).
        kernel: one of the op's ``@triton.jit`` functions (interpreter or compiled).
        dtypes: the input dtypes the Triton path supports.
        needs_grad: a gradient is required and the Triton path has none (``"auto"`` then
            picks the reference; ``"triton"`` raises).

    Raises:
        KernelError: unknown backend, or ``"triton"`` forced where it cannot run.
    """
    if backend not in BACKENDS:
        raise KernelError(f"{op}: backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "ref":
        return "ref"
    if backend == "auto":
        fits = x.dtype in dtypes and not needs_grad
        return "triton" if x.is_cuda and not interpreted(kernel) and fits else "ref"
    # Compiled kernels take CUDA tensors; interpreted ones take CPU tensors.
    runnable = interpreted(kernel) != x.is_cuda
    if not runnable:
        where = (
            "CPU tensors (the interpreter is on)"
            if interpreted(kernel)
            else "CUDA tensors, or CPU tensors with TRITON_INTERPRET=1 set before "
            "fastdavs.kernels is imported"
        )
        raise KernelError(
            f"{op}: backend='triton' runs on {where}; got a tensor on {x.device}. "
            "Use backend='auto' or 'ref'."
        )
    if x.dtype not in dtypes:
        names = ", ".join(str(d).removeprefix("torch.") for d in dtypes)
        raise KernelError(
            f"{op}: the Triton kernel takes {names}, got {x.dtype}; use backend='ref'."
        )
    if needs_grad:
        raise KernelError(
            f"{op}: the Triton kernel has no backward; use backend='ref' (or 'auto') to "
            "differentiate, or call it under torch.no_grad()."
        )
    return "triton"
