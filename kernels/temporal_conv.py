"""Fused temporal convolution y = act(conv1d(x, w) + bias) + residual, forward and backward.

The temporal convolutions of DAVS (the audio encoder's branch B over the 20 MFCC steps, the `tcn`
word head over frames) go through `temporal_conv`. Each pass is an implicit GEMM: no im2col buffer
is materialised, the kernels gather the shifted input columns tile by tile.

    forward  z[b, o, t]  = bias[o] + sum_{i, k} w[o, i, k] x[b, i, t S - P + k D]
             y[b, o, t]  = act(z[b, o, t]) + res[b, o, t]
    dx       dx[b, i, s] = sum_{o, k} w[o, i, k] dz[b, o, (s + P - k D) / S]  (exact divisions)
    dw       dw[o, i, k] = sum_{b, t} dz[b, o, t] x[b, i, t S - P + k D]
    db       db[o]       = sum_{b, t} dz[b, o, t]
    dres     = dy;  dz = dy * act'(z)

(S stride, P zero padding, D dilation, i and o channel indices within one group.)

Conventions, chosen once:
- The residual is added *after* the activation ("x + f(x)"), so it is never clamped and its
  gradient is dy itself (returned as is, no kernel).
- act'(z) comes from the sign of z, which the forward kernel saves as one int8 per output element
  (only when a gradient will be needed): nothing is recomputed, and the pre-activation itself is not
  stored. relu' = [z > 0], leaky_relu' = 1 or `negative_slope`, as PyTorch's own backward.
- Rows of every tile are flattened (batch, time) positions, so short sequences (the 20 MFCC steps,
  12 frames) still fill the M dimension of `tl.dot`; loads along time are contiguous when the
  tensor's time axis is (any strides are accepted and handled).
- Accumulation is fp32. On a GPU the `tl.dot` operands stay in the input dtype (tensor cores;
  fp32 follows `torch.backends.cudnn.allow_tf32` like F.conv1d); under the Triton interpreter bf16
  operands are upcast first, because its bf16 arithmetic is wrong.
- dw and db are reduced over (batch, time) in fp32 partials, one slice per split of the rows, summed
  on the host: deterministic, no atomics.

Dispatch (`backend`, `fastdavs.kernels.dispatch`): "auto" runs Triton on CUDA tensors of a
supported dtype and the reference on everything else; "triton" forces the kernels (CPU tensors
only under TRITON_INTERPRET=1, set before this module is imported); "ref" forces
`temporal_conv_ref`.

Not measured here (no GPU on the development machine): speed, achieved FLOP/s, the autotuned
tile choice, and results on hardware. The interpreter proves the arithmetic (tests), and
`triton.compile` for sm_90 without a device proves that the kernels build, with tensor-core MMA
(every GPU tile in fp16, the first tile in fp32 and bf16, checked once; one per kernel in tests).
Known costs: a stride-S backward masks (S-1)/S of the dx work (no phase split; the model trains
only stride-1 convolutions), and the int8 sign buffer costs one byte per output element.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from torch import nn
from torch.autograd.function import once_differentiable

from fastdavs.kernels.dispatch import interpreted, resolve_backend

ACTIVATIONS = {None: 0, "relu": 1, "leaky_relu": 2}
_DTYPES = {torch.float32: tl.float32, torch.float16: tl.float16, torch.bfloat16: tl.bfloat16}
DTYPES = tuple(_DTYPES)


@triton.jit
def _gather_x(
    x_ptr,
    b,  # [BLOCK_M] int64 batch index of each row
    t0,  # [BLOCK_M] first input step of each row's window: t * STRIDE - PAD
    row_ok,  # [BLOCK_M]
    cols,  # [BLOCK_R] reduction columns r = i * K + k
    c0,  # first input channel of the group
    T,
    R,  # C_in_g * K
    sxb,
    sxc,
    sxt,
    K: tl.constexpr,
    DIL: tl.constexpr,
):
    """Implicit im2col tile: x[b, c0 + r // K, t0 + (r % K) * DIL] -> [BLOCK_M, BLOCK_R], zero
    outside the sequence (padding) and outside the matrix."""
    i = cols // K
    k = cols % K
    pos = t0[:, None] + (k * DIL)[None, :]
    ok = row_ok[:, None] & (cols < R)[None, :] & (pos >= 0) & (pos < T)
    ptrs = x_ptr + b[:, None] * sxb + (c0 + i)[None, :] * sxc + pos * sxt
    return tl.load(ptrs, mask=ok, other=0.0)


# @triton.jit read TRITON_INTERPRET when it decorated the helper above, as it will the kernels.
INTERPRET = interpreted(_gather_x)

# (BLOCK_M rows, BLOCK_N output columns, BLOCK_K reduction, num_warps, num_stages). Every tile
# dimension is >= 16, the GPU minimum of tl.dot for 16-bit operands (and above fp32's 8).
_GPU_TILES = [(64, 64, 32, 4, 3), (128, 64, 32, 4, 3), (64, 128, 32, 4, 3), (32, 32, 32, 2, 3)]
# The interpreter cannot benchmark configs: one fixed tile, wide so that few programs run.
_INTERPRET_TILE = (64, 32, 32, 1, 1)
# dw tile (output channels, reduction columns, rows per step): fixed, the row splits are chosen
# on the host because they size the partial buffer.
_DW_TILE = (64, 64, 32, 4, 3)


def _configs(k_name: str) -> list[triton.Config]:
    tiles = [_INTERPRET_TILE] if INTERPRET else _GPU_TILES
    return [
        triton.Config({"BLOCK_M": m, "BLOCK_N": n, k_name: k}, num_warps=w, num_stages=s)
        for m, n, k, w, s in tiles
    ]


@triton.jit
def _load_dz(
    g_ptr,
    pos_ptr,
    b,  # int64 batch index, broadcastable with c and t
    c,  # output channel
    t,  # output step
    ok,
    C_out,
    T_out,
    sgb,
    sgc,
    sgt,
    SLOPE,
    ACT: tl.constexpr,
):
    """dz = dy * act'(z) at [b, c, t] in fp32, act' from the saved int8 signs of z."""
    dz = tl.load(g_ptr + b * sgb + c * sgc + t * sgt, mask=ok, other=0.0).to(tl.float32)
    if ACT != 0:
        positive = tl.load(pos_ptr + (b * C_out + c) * T_out + t, mask=ok, other=0) != 0
        dz = tl.where(positive, dz, 0.0) if ACT == 1 else tl.where(positive, dz, dz * SLOPE)
    return dz


@triton.autotune(configs=_configs("BLOCK_R"), key=["C_in_g", "C_out_g", "K", "STRIDE", "DIL"])
@triton.jit
def _conv_fwd_kernel(
    x_ptr,  # [B, C_in, T], any strides
    w_ptr,  # [C_out, C_in_g, K] contiguous: row o is the reduction vector r = i * K + k
    bias_ptr,  # [C_out] (read only when HAS_BIAS)
    res_ptr,  # [B, C_out, T_out], any strides (read only when HAS_RES)
    y_ptr,  # [B, C_out, T_out], any strides: the output
    pos_ptr,  # [B, C_out, T_out] int8 contiguous: z > 0 (written only when SAVE_POS)
    M,  # B * T_out rows
    T,
    T_out,
    C_in_g,  # input channels per group
    C_out_g,  # output channels per group
    C_out,
    sxb,
    sxc,
    sxt,
    srb,
    src,
    srt,
    syb,
    syc,
    syt,
    SLOPE,  # leaky_relu negative slope
    K: tl.constexpr,  # taps
    STRIDE: tl.constexpr,
    PAD: tl.constexpr,
    DIL: tl.constexpr,
    ACT: tl.constexpr,  # 0 none, 1 relu, 2 leaky_relu
    HAS_BIAS: tl.constexpr,
    HAS_RES: tl.constexpr,
    SAVE_POS: tl.constexpr,
    DOT_DTYPE: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_R: tl.constexpr,
):
    # Program (pid_m, pid_n, g): rows [pid_m BLOCK_M, +BLOCK_M) of (b, t) x output channels
    # [pid_n BLOCK_N, +BLOCK_N) of group g; reduction over the group's C_in_g * K columns.
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    g = tl.program_id(2)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < M
    b = (rows // T_out).to(tl.int64)
    t = rows % T_out
    o = g * C_out_g + pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    o_ok = pid_n * BLOCK_N + tl.arange(0, BLOCK_N) < C_out_g
    R = C_in_g * K

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for r0 in range(0, R, BLOCK_R):
        cols = r0 + tl.arange(0, BLOCK_R)
        xt = _gather_x(
            x_ptr, b, t * STRIDE - PAD, row_ok, cols, g * C_in_g, T, R, sxb, sxc, sxt, K, DIL
        )
        w_ok = (cols < R)[:, None] & o_ok[None, :]
        # w[o, r] read as its transpose [BLOCK_R, BLOCK_N]
        wt = tl.load(w_ptr + o[None, :] * R + cols[:, None], mask=w_ok, other=0.0)
        acc = tl.dot(xt.to(DOT_DTYPE), wt.to(DOT_DTYPE), acc, input_precision=PRECISION)

    # Epilogue in fp32, one rounding at the store: + bias, signs, activation, + residual.
    if HAS_BIAS:
        acc += tl.load(bias_ptr + o, mask=o_ok, other=0.0).to(tl.float32)[None, :]
    ok = row_ok[:, None] & o_ok[None, :]
    if SAVE_POS:
        pos_ptrs = pos_ptr + (b[:, None] * C_out + o[None, :]) * T_out + t[:, None]
        tl.store(pos_ptrs, (acc > 0).to(tl.int8), mask=ok)
    if ACT == 1:
        acc = tl.maximum(acc, 0.0)
    elif ACT == 2:
        acc = tl.where(acc > 0, acc, acc * SLOPE)
    if HAS_RES:
        res_ptrs = res_ptr + b[:, None] * srb + o[None, :] * src + t[:, None] * srt
        acc += tl.load(res_ptrs, mask=ok, other=0.0).to(tl.float32)
    y_ptrs = y_ptr + b[:, None] * syb + o[None, :] * syc + t[:, None] * syt
    tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=ok)


@triton.autotune(configs=_configs("BLOCK_Q"), key=["C_in_g", "C_out_g", "K", "STRIDE", "DIL"])
@triton.jit
def _conv_dx_kernel(
    g_ptr,  # [B, C_out, T_out] dy, any strides
    pos_ptr,  # [B, C_out, T_out] int8 contiguous: z > 0 (read only when ACT != 0)
    w_ptr,  # [C_out, C_in_g, K] contiguous
    dx_ptr,  # [B, C_in, T], any strides: the output
    M,  # B * T rows
    T,
    T_out,
    C_in_g,
    C_out_g,
    C_out,
    sgb,
    sgc,
    sgt,
    sdb,
    sdc,
    sdt,
    SLOPE,
    K: tl.constexpr,
    STRIDE: tl.constexpr,
    PAD: tl.constexpr,
    DIL: tl.constexpr,
    ACT: tl.constexpr,
    DOT_DTYPE: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_Q: tl.constexpr,
):
    # The transposed convolution: rows (b, s) of dx x input channels of group g; reduction over
    # the group's C_out_g * K columns q = o * K + k, each reading dz at (s + PAD - k DIL) / STRIDE.
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    g = tl.program_id(2)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < M
    b = (rows // T).to(tl.int64)
    s = rows % T
    i = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # input channel within the group
    i_ok = i < C_in_g
    Q = C_out_g * K
    R = C_in_g * K

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for q0 in range(0, Q, BLOCK_Q):
        q = q0 + tl.arange(0, BLOCK_Q)
        q_ok = q < Q
        o = g * C_out_g + q // K
        k = q % K
        num = s[:, None] + PAD - (k * DIL)[None, :]  # [BLOCK_M, BLOCK_Q]
        t = num // STRIDE
        hit = row_ok[:, None] & q_ok[None, :] & (num >= 0) & (num % STRIDE == 0) & (t < T_out)
        dz = _load_dz(
            g_ptr, pos_ptr, b[:, None], o[None, :], t, hit, C_out, T_out, sgb, sgc, sgt, SLOPE, ACT
        )
        w_ptrs = w_ptr + (o * R + k)[:, None] + (i * K)[None, :]  # w[o, i, k]: [BLOCK_Q, BLOCK_N]
        wt = tl.load(w_ptrs, mask=q_ok[:, None] & i_ok[None, :], other=0.0)
        acc = tl.dot(dz.to(DOT_DTYPE), wt.to(DOT_DTYPE), acc, input_precision=PRECISION)

    dx_ptrs = dx_ptr + b[:, None] * sdb + (g * C_in_g + i)[None, :] * sdc + s[:, None] * sdt
    tl.store(dx_ptrs, acc.to(dx_ptr.dtype.element_ty), mask=row_ok[:, None] & i_ok[None, :])


@triton.jit
def _conv_dw_kernel(
    x_ptr,  # [B, C_in, T], any strides
    g_ptr,  # [B, C_out, T_out] dy, any strides
    pos_ptr,  # [B, C_out, T_out] int8 contiguous (read only when ACT != 0)
    dw_ptr,  # [SPLITS, C_out, C_in_g * K] fp32 partials, contiguous
    db_ptr,  # [SPLITS, C_out] fp32 partials (written only when HAS_DB)
    M,  # B * T_out rows, the reduction
    ROWS_PER_SPLIT,  # a multiple of BLOCK_M
    SPLITS,
    T,
    T_out,
    C_in_g,
    C_out_g,
    C_out,
    sxb,
    sxc,
    sxt,
    sgb,
    sgc,
    sgt,
    SLOPE,
    K: tl.constexpr,
    STRIDE: tl.constexpr,
    PAD: tl.constexpr,
    DIL: tl.constexpr,
    ACT: tl.constexpr,
    HAS_DB: tl.constexpr,
    DOT_DTYPE: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_M: tl.constexpr,
):
    # Program (pid_n, pid_r, g * SPLITS + split): a [BLOCK_N, BLOCK_R] tile of dw[o, r] of group g,
    # summed over the rows of one split; every program stores its tile (zeros for empty rows).
    pid_n = tl.program_id(0)
    pid_r = tl.program_id(1)
    g = tl.program_id(2) // SPLITS
    split = tl.program_id(2) % SPLITS
    o = g * C_out_g + pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    o_ok = pid_n * BLOCK_N + tl.arange(0, BLOCK_N) < C_out_g
    R = C_in_g * K
    cols = pid_r * BLOCK_R + tl.arange(0, BLOCK_R)

    acc = tl.zeros((BLOCK_N, BLOCK_R), dtype=tl.float32)
    db = tl.zeros((BLOCK_N,), dtype=tl.float32)
    for m0 in range(0, ROWS_PER_SPLIT, BLOCK_M):
        rows = split * ROWS_PER_SPLIT + m0 + tl.arange(0, BLOCK_M)
        row_ok = rows < M
        b = (rows // T_out).to(tl.int64)
        t = rows % T_out
        dz_ok = o_ok[:, None] & row_ok[None, :]
        # dz^T tile [BLOCK_N, BLOCK_M]
        dz = _load_dz(
            g_ptr, pos_ptr, b[None, :], o[:, None], t[None, :], dz_ok,
            C_out, T_out, sgb, sgc, sgt, SLOPE, ACT,
        )  # fmt: skip
        xt = _gather_x(
            x_ptr, b, t * STRIDE - PAD, row_ok, cols, g * C_in_g, T, R, sxb, sxc, sxt, K, DIL
        )
        acc = tl.dot(dz.to(DOT_DTYPE), xt.to(DOT_DTYPE), acc, input_precision=PRECISION)
        if HAS_DB:
            db += tl.sum(dz, axis=1)

    dw_ptrs = dw_ptr + (split * C_out + o)[:, None] * R + cols[None, :]
    tl.store(dw_ptrs, acc, mask=o_ok[:, None] & (cols < R)[None, :])
    # Nested, not `and`: HAS_DB is resolved at compile time, pid_r at run time.
    if HAS_DB:  # noqa: SIM102
        if pid_r == 0:  # one column of programs writes db
            tl.store(db_ptr + split * C_out + o, db, mask=o_ok)


# ---- host launchers: check, allocate, launch --------------------------------------------------
def out_len(T: int, K: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> int:
    """Output steps of a conv1d over T steps (PyTorch's formula)."""
    return (T + 2 * padding - dilation * (K - 1) - 1) // stride + 1


def _dot_dtype(dtype: torch.dtype):
    return tl.float32 if INTERPRET and dtype == torch.bfloat16 else _DTYPES[dtype]


def _precision(dtype: torch.dtype) -> str:
    return (
        "tf32"
        if dtype == torch.float32 and torch.backends.cudnn.allow_tf32 and not INTERPRET
        else "ieee"
    )


def _check_out(out: torch.Tensor, shape: tuple[int, ...], like: torch.Tensor, name: str) -> None:
    if out.shape != shape or out.dtype != like.dtype or out.device != like.device:
        raise ValueError(
            f"{name}: expected {tuple(shape)} {like.dtype} on {like.device}, "
            f"got {tuple(out.shape)} {out.dtype} on {out.device}"
        )


def conv_forward(
    x: torch.Tensor,  # [B, C_in, T]
    weight: torch.Tensor,  # [C_out, C_in / groups, K]
    bias: torch.Tensor | None,  # [C_out]
    residual: torch.Tensor | None,  # [B, C_out, T_out]
    stride: int,
    padding: int,
    dilation: int,
    groups: int,
    activation: str | None,
    negative_slope: float,
    save_signs: bool,
    out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Launch the forward kernel on checked arguments (see `temporal_conv`); write into `out`
    ([B, C_out, T_out], any strides) when given. Returns (y, signs of z as int8 or None)."""
    B, C_in, T = x.shape
    C_out, C_in_g, K = weight.shape
    T_out = out_len(T, K, stride, padding, dilation)
    if out is None:
        out = x.new_empty(B, C_out, T_out)
    _check_out(out, (B, C_out, T_out), x, "out")
    signs = x.new_empty(B, C_out, T_out, dtype=torch.int8) if save_signs and activation else None
    M = B * T_out
    weight = weight.contiguous()

    def grid(meta):
        return (
            triton.cdiv(M, meta["BLOCK_M"]),
            triton.cdiv(C_out // groups, meta["BLOCK_N"]),
            groups,
        )

    _conv_fwd_kernel[grid](
        x, weight, x if bias is None else bias, x if residual is None else residual, out,
        x if signs is None else signs,
        M, T, T_out, C_in_g, C_out // groups, C_out,
        *x.stride(), *(residual.stride() if residual is not None else (0, 0, 0)), *out.stride(),
        negative_slope,
        K=K, STRIDE=stride, PAD=padding, DIL=dilation, ACT=ACTIVATIONS[activation],
        HAS_BIAS=bias is not None, HAS_RES=residual is not None, SAVE_POS=signs is not None,
        DOT_DTYPE=_dot_dtype(x.dtype), PRECISION=_precision(x.dtype),
    )  # fmt: skip
    return out, signs


def conv_dx(
    grad: torch.Tensor,  # [B, C_out, T_out] dy
    signs: torch.Tensor | None,  # [B, C_out, T_out] int8, z > 0 (with an activation)
    weight: torch.Tensor,  # [C_out, C_in / groups, K]
    T: int,
    stride: int,
    padding: int,
    dilation: int,
    groups: int,
    activation: str | None,
    negative_slope: float,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """dL/dx [B, C_in, T] in the dtype of `grad` (into `out` when given, any strides)."""
    B, C_out, T_out = grad.shape
    _, C_in_g, K = weight.shape
    C_in = C_in_g * groups
    if out is None:
        out = grad.new_empty(B, C_in, T)
    _check_out(out, (B, C_in, T), grad, "out")
    M = B * T
    weight = weight.contiguous()

    def grid(meta):
        return triton.cdiv(M, meta["BLOCK_M"]), triton.cdiv(C_in_g, meta["BLOCK_N"]), groups

    _conv_dx_kernel[grid](
        grad, grad if signs is None else signs, weight, out,
        M, T, T_out, C_in_g, C_out // groups, C_out,
        *grad.stride(), *out.stride(), negative_slope,
        K=K, STRIDE=stride, PAD=padding, DIL=dilation, ACT=ACTIVATIONS[activation],
        DOT_DTYPE=_dot_dtype(grad.dtype), PRECISION=_precision(grad.dtype),
    )  # fmt: skip
    return out


def _row_splits(M: int, tiles: int, device: torch.device) -> int:
    """How many row splits the dw reduction gets: enough programs to fill the GPU (a few per
    SM), never more splits than row tiles; under the interpreter (serial) a handful."""
    programs = 4 * (
        torch.cuda.get_device_properties(device).multi_processor_count
        if device.type == "cuda"
        else 1
    )
    return max(1, min(triton.cdiv(M, _DW_TILE[2]), triton.cdiv(programs, tiles)))


def conv_dweight(
    x: torch.Tensor,  # [B, C_in, T]
    grad: torch.Tensor,  # [B, C_out, T_out] dy
    signs: torch.Tensor | None,  # [B, C_out, T_out] int8, z > 0 (with an activation)
    weight_shape: tuple[int, int, int],  # (C_out, C_in / groups, K)
    stride: int,
    padding: int,
    dilation: int,
    groups: int,
    activation: str | None,
    negative_slope: float,
    with_bias: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(dL/dw [C_out, C_in / groups, K], dL/db [C_out] or None), both float32: per-split fp32
    partials from the kernel, summed here in a fixed order."""
    B, C_in, T = x.shape
    _, C_out, T_out = grad.shape
    _, C_in_g, K = weight_shape
    R = C_in_g * K
    M = B * T_out
    block_n, block_r, block_m, warps, stages = _DW_TILE
    tiles = triton.cdiv(C_out // groups, block_n) * triton.cdiv(R, block_r) * groups
    splits = _row_splits(M, tiles, x.device)
    rows_per_split = triton.cdiv(triton.cdiv(M, splits), block_m) * block_m
    dw = x.new_empty(splits, C_out, R, dtype=torch.float32)
    db = x.new_empty(splits, C_out, dtype=torch.float32) if with_bias else None
    grid = (triton.cdiv(C_out // groups, block_n), triton.cdiv(R, block_r), groups * splits)
    _conv_dw_kernel[grid](
        x, grad, grad if signs is None else signs, dw, dw if db is None else db,
        M, rows_per_split, splits, T, T_out, C_in_g, C_out // groups, C_out,
        *x.stride(), *grad.stride(), negative_slope,
        K=K, STRIDE=stride, PAD=padding, DIL=dilation, ACT=ACTIVATIONS[activation],
        HAS_DB=with_bias, DOT_DTYPE=_dot_dtype(x.dtype), PRECISION=_precision(x.dtype),
        BLOCK_N=block_n, BLOCK_R=block_r, BLOCK_M=block_m, num_warps=warps, num_stages=stages,
    )  # fmt: skip
    return dw.sum(0).view(weight_shape), None if db is None else db.sum(0)


class _TemporalConvFn(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx, x, weight, bias, residual, stride, padding, dilation, groups, activation, slope
    ):
        # dz (and so the signs of z) is needed for every gradient but the residual's.
        y, signs = conv_forward(
            x, weight, bias, residual, stride, padding, dilation, groups, activation, slope,
            save_signs=any(ctx.needs_input_grad[:3]),
        )  # fmt: skip
        ctx.save_for_backward(x, weight, signs)
        ctx.conv = (stride, padding, dilation, groups, activation, slope)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):  # grad: [B, C_out, T_out]
        x, weight, signs = ctx.saved_tensors
        need_x, need_w, need_b, need_res = ctx.needs_input_grad[:4]
        dx = dw = db = None
        if need_x:
            dx = conv_dx(grad, signs, weight, x.shape[2], *ctx.conv)
        if need_w or need_b:
            dw, db = conv_dweight(x, grad, signs, weight.shape, *ctx.conv, with_bias=need_b)
            dw = dw.to(weight.dtype) if need_w else None
            db = db.to(weight.dtype) if need_b else None
        return dx, dw, db, grad if need_res else None, None, None, None, None, None, None


# ---- reference, checks and the public function -------------------------------------------------
def temporal_conv_ref(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    stride: int = 1,
    padding: int = 0,
    dilation: int = 1,
    groups: int = 1,
    activation: str | None = None,
    negative_slope: float = 0.2,
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    """The definition of `temporal_conv` in plain PyTorch (any dtype and device, autograd)."""
    y = F.conv1d(x, weight, bias, stride, padding, dilation, groups)
    if activation == "relu":
        y = F.relu(y)
    elif activation == "leaky_relu":
        y = F.leaky_relu(y, negative_slope)
    return y if residual is None else y + residual


def temporal_conv_backend(backend: str, x: torch.Tensor) -> str:
    """What `backend` means for input `x`: "triton" or "ref" (KernelError, a ValueError, where
    "triton" is forced and cannot run)."""
    return resolve_backend("temporal_conv", backend, x, _conv_dw_kernel, DTYPES)


def _check(x, weight, bias, residual, stride, padding, dilation, groups, activation) -> None:
    """ValueError for anything F.conv1d or the kernels would reject, named in user terms."""
    if x.dim() != 3 or weight.dim() != 3:
        raise ValueError(
            f"expected x [B, C_in, T] and weight [C_out, C_in/groups, K], got x {tuple(x.shape)} "
            f"and weight {tuple(weight.shape)}"
        )
    for name, value, low in (
        ("stride", stride, 1),
        ("padding", padding, 0),
        ("dilation", dilation, 1),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"{name}={value!r}: must be an integer >= {low}")
    B, C_in, T = x.shape
    C_out, C_in_g, K = weight.shape
    if not isinstance(groups, int) or groups < 1 or C_in % groups or C_out % groups:
        raise ValueError(f"groups={groups!r}: must divide C_in={C_in} and C_out={C_out}")
    if C_in_g != C_in // groups or K < 1 or C_out < 1:
        raise ValueError(
            f"weight {tuple(weight.shape)}: expected [C_out, {C_in // groups}, K] for C_in={C_in}, "
            f"groups={groups}"
        )
    T_out = out_len(T, K, stride, padding, dilation)
    if T_out < 1:
        raise ValueError(
            f"T={T} steps are too few for K={K}, dilation={dilation}, padding={padding}: "
            "the output would be empty"
        )
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation={activation!r}: choose None, 'relu' or 'leaky_relu'")
    if bias is not None and bias.shape != (C_out,):
        raise ValueError(f"bias {tuple(bias.shape)}: expected ({C_out},)")
    if residual is not None and residual.shape != (B, C_out, T_out):
        raise ValueError(f"residual {tuple(residual.shape)}: expected {(B, C_out, T_out)}")
    for name, t in (("weight", weight), ("bias", bias), ("residual", residual)):
        if t is not None and (t.dtype != x.dtype or t.device != x.device):
            raise ValueError(
                f"{name} is {t.dtype} on {t.device}, x is {x.dtype} on {x.device}: "
                "all tensors must share one dtype and device"
            )


def temporal_conv(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    stride: int = 1,
    padding: int = 0,
    dilation: int = 1,
    groups: int = 1,
    activation: str | None = None,
    negative_slope: float = 0.2,
    residual: torch.Tensor | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """act(conv1d(x, weight) + bias) + residual, differentiable in x, weight, bias and residual.

    Args:
        x: [B, C_in, T] float32, float16 or bfloat16 (any dtype with backend "ref").
        weight: [C_out, C_in / groups, K]; bias: [C_out] or None.
        stride, padding (zeros, both ends), dilation, groups: as `torch.nn.functional.conv1d`.
        activation: None, "relu" or "leaky_relu" (with `negative_slope`).
        residual: [B, C_out, T_out] or None, added after the activation.
        backend: "auto" | "triton" | "ref" (module docstring).
    Returns:
        [B, C_out, T_out] in the input dtype, with
        T_out = (T + 2 padding - dilation (K - 1) - 1) // stride + 1.
    Under autocast the tensors are first cast to the autocast dtype, as F.conv1d would be.
    """
    device = x.device.type
    if torch.amp.is_autocast_available(device) and torch.is_autocast_enabled(device):
        dtype = torch.get_autocast_dtype(device)
        x, weight, bias, residual = (
            t.to(dtype) if t is not None and t.dtype in DTYPES else t
            for t in (x, weight, bias, residual)
        )
    path = temporal_conv_backend(backend, x)
    _check(x, weight, bias, residual, stride, padding, dilation, groups, activation)
    conv = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    if path == "ref":
        return temporal_conv_ref(
            x, weight, bias, **conv, activation=activation, negative_slope=negative_slope,
            residual=residual,
        )  # fmt: skip
    return _TemporalConvFn.apply(
        x, weight, bias, residual, stride, padding, dilation, groups, activation, negative_slope
    )


def fold_batchnorm(
    weight: torch.Tensor, bias: torch.Tensor | None, bn: nn.BatchNorm1d
) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight, bias) of one convolution equal to conv -> `bn` in eval mode.

    weight: [C_out, ...] (any conv), bias: [C_out] or None. With s = gamma / sqrt(var + eps):
    w' = w s, b' = (b - mean) s + beta. Computed in float32, returned in weight's dtype; the result
    stays differentiable in weight, bias, gamma and beta. `bn` must be in eval mode: training-mode
    BatchNorm normalises with the batch's statistics, which no fixed weight can reproduce.
    """
    if bn.training or bn.running_mean is None:
        raise ValueError(
            "fold_batchnorm needs an eval-mode BatchNorm with running statistics: call bn.eval() "
            "first (training-mode BatchNorm uses batch statistics, which cannot be folded)"
        )
    C_out = weight.shape[0]
    if bn.num_features != C_out:
        raise ValueError(f"BatchNorm has {bn.num_features} features, the weight {C_out} outputs")
    scale = torch.rsqrt(bn.running_var.float() + bn.eps)  # [C_out]
    shift = -bn.running_mean.float()
    if bias is not None:
        shift = shift + bias.float()
    if bn.affine:
        scale = scale * bn.weight.float()
    folded_bias = shift * scale + (bn.bias.float() if bn.affine else 0.0)
    folded_weight = weight.float() * scale.view(C_out, *([1] * (weight.dim() - 1)))
    return folded_weight.to(weight.dtype), folded_bias.to(weight.dtype)
