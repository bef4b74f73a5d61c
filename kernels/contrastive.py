"""Fused L2 contrastive loss of the word-ID space (spec/davs.md §2.2), forward and backward.

Where it sits: the wid and gen stages compare paired audio and video sequence embeddings
(12 x 256 = 3072-d) over every in-batch pair (`fastdavs.model.losses.contrastive_loss` calls
`contrastive_loss` here). `contrastive_loss_ref` is the definition and the reference; it builds
a [B, B, D] difference tensor. The kernels here compute
the same loss and both gradients in tiles, so the [B, B] distance matrix never exists: extra
memory is O(B) for the loss and one float32 [B, D] accumulator for a 16-bit gradient
(`contrastive_workspace_bytes`), which lets B reach 8192 at D = 3072.

Maths (video row i, audio column j; r = 1 / max(|x|, 1e-12) as `F.normalize`; eps the float32
machine epsilon; m the margin):
    a_j = r_j A_j,  v_i = r_i V_i,  s_ij = v_i . a_j,  q_ij = |v_i|^2 + |a_j|^2 - 2 s_ij
    d_ij = sqrt(max(q_ij, eps^2)),  h_ij = max(0, m - d_ij)^2
    L = (sum_i |v_i - a_i|^2 + sum_{i != j} h_ij) / (2B)
The positive term is computed from differences (exact near zero); the negatives from the Gram
tile s (a tl.dot over D in K-tiles, float32 accumulation). Backward, with
w_ij = dh_ij / dq_ij = -max(0, m - d_ij) / d_ij  (0 where q_ij < eps^2 or i = j):
    g_i  = dL/dv_i = ((v_i - a_i) + v_i sum_j w_ij - sum_j w_ij a_j) / B
    v_i . g_i      = (v_i . (v_i - a_i) + |v_i|^2 sum_j w_ij - sum_j w_ij s_ij) / B
    dL/dV_i        = r_i (g_i - v_i (v_i . g_i))            (the normalisation's Jacobian)
and the same with audio and video exchanged (q and w are symmetric in the roles), so one
backward kernel runs twice. Each program owns a block of rows, recomputes its Gram tiles
against every column block and accumulates sum_j w_ij a_j into its own rows of a float32
buffer: no atomics, deterministic.

Kernels: `_row_stats_kernel` (norms and positive terms, O(B D)), `_contrastive_fwd_kernel`
(per-row-block sums of h, summed on the host), `_contrastive_bwd_kernel` (one side's gradient;
launched only for inputs that require one). Work: 2 B^2 D FLOPs forward, 4 B^2 D per gradient
(Gram recompute + weighted sum). float32 inputs use IEEE float32 dots (TF32's 10-bit mantissa
would put ~1e-3 relative errors into s); float16/bfloat16 use 16-bit tensor-core dots with
float32 accumulation, the weights w r being rounded to 16 bits for the gradient's product.
Under the Triton interpreter bfloat16 tiles are widened to float32 first (its bfloat16 dot is
wrong). The Gram form loses the distance of near-identical pairs to cancellation: where the
reference has d = 0 the kernel has d ~ sqrt(float32 rounding) ~ 3e-4 (tested: loss within 2e-3,
gradients finite).

Not measured here (no GPU on the development machine): speed, achieved FLOP/s and the tile
defaults (`ContrastiveBlocks`), which are conventional GPU sizes, not tuned. One program per
block of 64 rows gives 128 programs at B = 8192 (about one wave on an H100's 132 SMs); at the
training batch (B = 16) one program runs and the reference is likely as fast. The in-place
float32 accumulation relies on the load and store of one accumulator element being issued by
the same thread (same pointer expression, hence layout), which holds for Triton's blocked
layouts but was not checked on hardware. Correctness is tested on CPU with TRITON_INTERPRET=1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from fastdavs.kernels.dispatch import KernelError, interpreted, resolve_backend

DTYPES = (torch.float32, torch.float16, torch.bfloat16)
NORM_EPS = 1e-12  # F.normalize's floor on the row norm
MARGIN = 1.0  # DAVS's margin (spec/davs.md §2.2; `LossWeights.contrastive_margin`)
EPS_SQ = torch.finfo(torch.float32).eps ** 2  # floor of q before the sqrt, as the reference


@dataclass(frozen=True)
class ContrastiveBlocks:
    """Tile sizes (powers of two; each >= 16, as tl.dot needs for 16-bit operands).

    m: rows of the program's own side; n: rows of the other side per step; k: features per dot
    step of the Gram tile; d: features per chunk of the gradient accumulator.
    """

    m: int = 64
    n: int = 64
    k: int = 64
    d: int = 64
    num_warps: int = 4
    num_stages: int = 3

    def check(self) -> None:
        for name in ("m", "n", "k", "d"):
            size = getattr(self, name)
            if size < 16 or size & (size - 1):
                raise KernelError(
                    f"ContrastiveBlocks.{name}={size}: tiles must be powers of two >= 16"
                )


@triton.jit
def _gram_tile(
    x_ptr,  # [B, D] own side, unit column stride
    y_ptr,  # [B, D] other side
    rows,  # [BLOCK_M] own row indices
    cols,  # [BLOCK_N] other-side row indices
    rmask,  # [BLOCK_M] rows < B
    cmask,  # [BLOCK_N] cols < B
    D,
    stride_x,
    stride_y,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    UPCAST: tl.constexpr,  # widen tiles to float32 before the dot
):
    """Raw X[rows] @ Y[cols]^T, float32 [BLOCK_M, BLOCK_N]; D reduced in BLOCK_K steps."""
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, D, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        kmask = ks[None, :] < D
        x = tl.load(
            x_ptr + rows[:, None] * stride_x + ks[None, :], mask=rmask[:, None] & kmask, other=0.0
        )  # [BLOCK_M, BLOCK_K]
        y = tl.load(
            y_ptr + cols[:, None] * stride_y + ks[None, :], mask=cmask[:, None] & kmask, other=0.0
        )  # [BLOCK_N, BLOCK_K]
        if UPCAST:
            x = x.to(tl.float32)
            y = y.to(tl.float32)
        acc = tl.dot(x, tl.trans(y), acc, input_precision="ieee")
    return acc


@triton.jit
def _row_stats_kernel(
    a_ptr,  # [B, D] audio embeddings, unit column stride
    v_ptr,  # [B, D] video embeddings
    stats_ptr,  # [2, 3, B] float32 out: per side (audio, video) r, |x|^2, x . (x - other)
    B,
    D,
    stride_a,
    stride_v,
    norm_eps,
    BLOCK_R: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """Per row: r = 1 / max(|X|, norm_eps), |x|^2 = |X|^2 r^2 of the normalised row, and the
    positive pair's a . (a - v) and v . (v - a) (their sum is |v - a|^2)."""
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    rmask = rows < B
    sq_a = tl.zeros((BLOCK_R,), dtype=tl.float32)
    sq_v = tl.zeros((BLOCK_R,), dtype=tl.float32)
    for k0 in range(0, D, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        mask = rmask[:, None] & (ks[None, :] < D)
        a = tl.load(a_ptr + rows[:, None] * stride_a + ks[None, :], mask=mask, other=0.0)
        v = tl.load(v_ptr + rows[:, None] * stride_v + ks[None, :], mask=mask, other=0.0)
        a = a.to(tl.float32)
        v = v.to(tl.float32)
        sq_a += tl.sum(a * a, axis=1)
        sq_v += tl.sum(v * v, axis=1)
    r_a = 1.0 / tl.maximum(tl.sqrt(sq_a), norm_eps)
    r_v = 1.0 / tl.maximum(tl.sqrt(sq_v), norm_eps)
    t_a = tl.zeros((BLOCK_R,), dtype=tl.float32)
    t_v = tl.zeros((BLOCK_R,), dtype=tl.float32)
    for k0 in range(0, D, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        mask = rmask[:, None] & (ks[None, :] < D)
        a = tl.load(a_ptr + rows[:, None] * stride_a + ks[None, :], mask=mask, other=0.0)
        v = tl.load(v_ptr + rows[:, None] * stride_v + ks[None, :], mask=mask, other=0.0)
        a = a.to(tl.float32) * r_a[:, None]
        v = v.to(tl.float32) * r_v[:, None]
        diff = v - a  # [BLOCK_R, BLOCK_K]
        t_a -= tl.sum(a * diff, axis=1)
        t_v += tl.sum(v * diff, axis=1)
    tl.store(stats_ptr + rows, r_a, mask=rmask)
    tl.store(stats_ptr + B + rows, sq_a * r_a * r_a, mask=rmask)
    tl.store(stats_ptr + 2 * B + rows, t_a, mask=rmask)
    tl.store(stats_ptr + 3 * B + rows, r_v, mask=rmask)
    tl.store(stats_ptr + 4 * B + rows, sq_v * r_v * r_v, mask=rmask)
    tl.store(stats_ptr + 5 * B + rows, t_v, mask=rmask)


@triton.jit
def _negative_tile(
    x_ptr,
    y_ptr,
    sx_ptr,  # [3, B] float32 stats of the own side
    sy_ptr,  # [3, B] float32 stats of the other side
    rows,
    cols,
    rmask,
    cmask,
    B,
    D,
    stride_x,
    stride_y,
    margin,
    eps_sq,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    UPCAST: tl.constexpr,
):
    """One [BLOCK_M, BLOCK_N] tile of the negatives: (s, d, q, keep), keep = off-diagonal and
    in range."""
    s = _gram_tile(
        x_ptr, y_ptr, rows, cols, rmask, cmask, D, stride_x, stride_y,
        BLOCK_M, BLOCK_N, BLOCK_K, UPCAST,
    )  # fmt: skip
    r_x = tl.load(sx_ptr + rows, mask=rmask, other=0.0)
    n_x = tl.load(sx_ptr + B + rows, mask=rmask, other=0.0)
    r_y = tl.load(sy_ptr + cols, mask=cmask, other=0.0)
    n_y = tl.load(sy_ptr + B + cols, mask=cmask, other=0.0)
    s = s * r_x[:, None] * r_y[None, :]  # cosine of the normalised rows
    q = n_x[:, None] + n_y[None, :] - 2.0 * s  # squared distances
    d = tl.sqrt(tl.maximum(q, eps_sq))
    keep = rmask[:, None] & cmask[None, :] & (rows[:, None] != cols[None, :])
    return s, q, d, keep


@triton.jit
def _contrastive_fwd_kernel(
    x_ptr,  # [B, D] video embeddings (rows i), unit column stride
    y_ptr,  # [B, D] audio embeddings (columns j)
    sx_ptr,  # [3, B] float32 video stats
    sy_ptr,  # [3, B] float32 audio stats
    partial_ptr,  # [cdiv(B, BLOCK_M)] float32 out: sum over the block's rows of sum_{j != i} h_ij
    B,
    D,
    stride_x,
    stride_y,
    margin,
    eps_sq,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    UPCAST: tl.constexpr,
):
    pid = tl.program_id(0)
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    rmask = rows < B
    total = tl.zeros((BLOCK_M,), dtype=tl.float32)
    for n0 in range(0, B, BLOCK_N):
        cols = n0 + tl.arange(0, BLOCK_N)
        cmask = cols < B
        s, q, d, keep = _negative_tile(
            x_ptr, y_ptr, sx_ptr, sy_ptr, rows, cols, rmask, cmask, B, D, stride_x, stride_y,
            margin, eps_sq, BLOCK_M, BLOCK_N, BLOCK_K, UPCAST,
        )  # fmt: skip
        hinge = tl.maximum(margin - d, 0.0)
        total += tl.sum(tl.where(keep, hinge * hinge, 0.0), axis=1)
    tl.store(partial_ptr + pid, tl.sum(total, axis=0))


@triton.jit
def _contrastive_bwd_kernel(
    x_ptr,  # [B, D] own side (the gradient's input), unit column stride
    y_ptr,  # [B, D] other side
    sx_ptr,  # [3, B] float32 own stats
    sy_ptr,  # [3, B] float32 other stats
    acc_ptr,  # [B, D] float32 workspace: sum_j w_ij y_j (may be dx_ptr itself when dX is float32)
    dx_ptr,  # [B, D] out: dL/dX
    grad_ptr,  # [] upstream gradient of the loss
    B,
    D,
    stride_x,
    stride_y,
    stride_acc,
    stride_dx,
    margin,
    eps_sq,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_D: tl.constexpr,
    UPCAST: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    rmask = rows < B
    w_sum = tl.zeros((BLOCK_M,), dtype=tl.float32)  # sum_j w_ij
    ws_sum = tl.zeros((BLOCK_M,), dtype=tl.float32)  # sum_j w_ij s_ij
    for n0 in range(0, B, BLOCK_N):
        cols = n0 + tl.arange(0, BLOCK_N)
        cmask = cols < B
        s, q, d, keep = _negative_tile(
            x_ptr, y_ptr, sx_ptr, sy_ptr, rows, cols, rmask, cmask, B, D, stride_x, stride_y,
            margin, eps_sq, BLOCK_M, BLOCK_N, BLOCK_K, UPCAST,
        )  # fmt: skip
        # clamp's gradient passes where q >= eps^2, as torch.clamp(min=) does.
        w = tl.where(keep & (q >= eps_sq), -tl.maximum(margin - d, 0.0) / d, 0.0)
        w_sum += tl.sum(w, axis=1)
        ws_sum += tl.sum(w * s, axis=1)
        # Fold the other side's normalisation into the weights: sum_j w_ij r_j Y_j.
        wy = w * tl.load(sy_ptr + cols, mask=cmask, other=0.0)[None, :]  # [BLOCK_M, BLOCK_N]
        if not UPCAST:
            wy = wy.to(y_ptr.dtype.element_ty)
        for d0 in range(0, D, BLOCK_D):
            ds = d0 + tl.arange(0, BLOCK_D)
            dmask = ds[None, :] < D
            y = tl.load(
                y_ptr + cols[:, None] * stride_y + ds[None, :],
                mask=cmask[:, None] & dmask,
                other=0.0,
            )  # [BLOCK_N, BLOCK_D]
            if UPCAST:
                y = y.to(tl.float32)
            acc_ptrs = acc_ptr + rows[:, None] * stride_acc + ds[None, :]
            amask = rmask[:, None] & dmask
            # The first column block starts the sum (the buffer may hold anything, NaN included).
            prev = tl.load(acc_ptrs, mask=amask & (n0 > 0), other=0.0)
            tl.store(acc_ptrs, tl.dot(wy, y, prev, input_precision="ieee"), mask=amask)

    g = tl.load(grad_ptr).to(tl.float32) / B
    r_x = tl.load(sx_ptr + rows, mask=rmask, other=0.0)
    n_x = tl.load(sx_ptr + B + rows, mask=rmask, other=0.0)
    t_x = tl.load(sx_ptr + 2 * B + rows, mask=rmask, other=0.0)
    r_y = tl.load(sy_ptr + rows, mask=rmask, other=0.0)
    xg = g * (t_x + n_x * w_sum - ws_sum)  # x_i . g_i
    for d0 in range(0, D, BLOCK_D):
        ds = d0 + tl.arange(0, BLOCK_D)
        mask = rmask[:, None] & (ds[None, :] < D)
        x = tl.load(x_ptr + rows[:, None] * stride_x + ds[None, :], mask=mask, other=0.0)
        y = tl.load(y_ptr + rows[:, None] * stride_y + ds[None, :], mask=mask, other=0.0)
        x = x.to(tl.float32) * r_x[:, None]  # normalised own row
        y = y.to(tl.float32) * r_y[:, None]  # its positive partner
        wy_sum = tl.load(acc_ptr + rows[:, None] * stride_acc + ds[None, :], mask=mask, other=0.0)
        grad = g * ((x - y) + x * w_sum[:, None] - wy_sum)  # dL/dx, [BLOCK_M, BLOCK_D]
        dx = r_x[:, None] * (grad - x * xg[:, None])
        tl.store(
            dx_ptr + rows[:, None] * stride_dx + ds[None, :],
            dx.to(dx_ptr.dtype.element_ty),
            mask=mask,
        )


# ---- host launchers -------------------------------------------------------------------------
def _check_pair(audio: torch.Tensor, video: torch.Tensor) -> None:
    if audio.shape != video.shape or audio.dim() != 2:
        raise KernelError(
            f"contrastive_loss: the Triton kernel takes two [B, D] tensors of one shape, got "
            f"audio {tuple(audio.shape)} and video {tuple(video.shape)}"
        )
    if audio.shape[0] == 0 or audio.shape[1] == 0:
        raise KernelError(f"contrastive_loss: empty embeddings {tuple(audio.shape)}")
    if audio.dtype != video.dtype or audio.device != video.device:
        raise KernelError(
            f"contrastive_loss: audio ({audio.dtype}, {audio.device}) and video "
            f"({video.dtype}, {video.device}) must share dtype and device"
        )
    if audio.dtype not in DTYPES:
        raise KernelError(f"contrastive_loss: the Triton kernel takes {DTYPES}, got {audio.dtype}")


def _rows(x: torch.Tensor) -> torch.Tensor:
    """`x` with a unit column stride (what the kernels index), copied only if needed."""
    return x if x.stride(1) == 1 else x.contiguous()


def _upcast(x: torch.Tensor) -> bool:
    return x.dtype == torch.float32 or (
        x.dtype == torch.bfloat16 and interpreted(_contrastive_fwd_kernel)
    )


def contrastive_workspace_bytes(
    b: int, d: int, dtype: torch.dtype, blocks: ContrastiveBlocks | None = None
) -> int:
    """Bytes the launchers allocate besides the loss and the gradients themselves.

    Forward: 6 float32 statistics per row and one partial sum per row block; backward: one
    float32 [B, D] accumulator when the gradients are 16-bit (float32 gradients accumulate in
    place). O(B * D); no [B, B] buffer.
    """
    blocks = blocks or ContrastiveBlocks()
    stats = 4 * (6 * b + triton.cdiv(b, blocks.m))
    return stats + (0 if dtype == torch.float32 else 4 * b * d)


def contrastive_forward(
    audio: torch.Tensor,
    video: torch.Tensor,
    margin: float = MARGIN,
    blocks: ContrastiveBlocks | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch the forward: (float32 0-d loss, [2, 3, B] float32 row statistics for backward).

    Args:
        audio, video: [B, D] float32/float16/bfloat16 on one device; rows may be strided.
    """
    _check_pair(audio, video)
    blocks = blocks or ContrastiveBlocks()
    blocks.check()
    audio, video = _rows(audio), _rows(video)
    b, d = audio.shape
    stats = torch.empty(2, 3, b, dtype=torch.float32, device=audio.device)
    _row_stats_kernel[(triton.cdiv(b, blocks.m),)](
        audio, video, stats, b, d, audio.stride(0), video.stride(0), NORM_EPS,
        BLOCK_R=blocks.m, BLOCK_K=blocks.k, num_warps=blocks.num_warps,
    )  # fmt: skip
    partial = torch.empty(triton.cdiv(b, blocks.m), dtype=torch.float32, device=audio.device)
    _contrastive_fwd_kernel[(partial.numel(),)](
        video, audio, stats[1], stats[0], partial, b, d, video.stride(0), audio.stride(0),
        float(margin), EPS_SQ,
        BLOCK_M=blocks.m, BLOCK_N=blocks.n, BLOCK_K=blocks.k, UPCAST=_upcast(audio),
        num_warps=blocks.num_warps, num_stages=blocks.num_stages,
    )  # fmt: skip
    positives = stats[0, 2] + stats[1, 2]  # |v_i - a_i|^2, [B]
    return (positives.sum() + partial.sum()) / (2 * b), stats


def contrastive_backward(
    audio: torch.Tensor,
    video: torch.Tensor,
    stats: torch.Tensor,
    grad: torch.Tensor,
    margin: float = MARGIN,
    blocks: ContrastiveBlocks | None = None,
    d_audio: torch.Tensor | None = None,
    d_video: torch.Tensor | None = None,
    need_audio: bool = True,
    need_video: bool = True,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Launch the backward: (dL/daudio, dL/dvideo), each None where not needed.

    Args:
        audio, video, blocks, margin: as given to `contrastive_forward`.
        stats: [2, 3, B] from `contrastive_forward`.
        grad: 0-d upstream gradient of the loss (any float dtype, on the inputs' device).
        d_audio, d_video: optional [B, D] outputs (unit column stride, any row stride) in the
            inputs' dtype; allocated when None.
    """
    _check_pair(audio, video)
    blocks = blocks or ContrastiveBlocks()
    blocks.check()
    audio, video = _rows(audio), _rows(video)
    b, d = audio.shape
    grads = []
    workspace = None
    for own, other, s_own, s_other, out, need in (
        (audio, video, stats[0], stats[1], d_audio, need_audio),
        (video, audio, stats[1], stats[0], d_video, need_video),
    ):
        if not need:
            grads.append(None)
            continue
        if out is None:
            out = torch.empty_like(own)
        elif out.shape != own.shape or out.dtype != own.dtype or out.stride(1) != 1:
            raise KernelError(
                f"contrastive_loss: gradient buffer {tuple(out.shape)} {out.dtype} with strides "
                f"{out.stride()} must be {tuple(own.shape)} {own.dtype} with unit column stride"
            )
        if out.dtype == torch.float32:
            acc = out
        else:
            if workspace is None:
                workspace = torch.empty(b, d, dtype=torch.float32, device=own.device)
            acc = workspace
        _contrastive_bwd_kernel[(triton.cdiv(b, blocks.m),)](
            own, other, s_own, s_other, acc, out, grad, b, d,
            own.stride(0), other.stride(0), acc.stride(0), out.stride(0), float(margin), EPS_SQ,
            BLOCK_M=blocks.m, BLOCK_N=blocks.n, BLOCK_K=blocks.k, BLOCK_D=blocks.d,
            UPCAST=_upcast(own), num_warps=blocks.num_warps, num_stages=blocks.num_stages,
        )  # fmt: skip
        grads.append(out)
    return grads[0], grads[1]


class ContrastiveLossFunction(torch.autograd.Function):
    """Autograd wrapper of the launchers: the loss in float32 (as the reference returns it for
    every input dtype the kernel takes), gradients recomputed tile by tile (no [B, B] state is
    saved)."""

    @staticmethod
    def forward(ctx, audio, video, margin, blocks):
        loss, stats = contrastive_forward(audio, video, margin, blocks)
        ctx.save_for_backward(audio, video, stats)
        ctx.margin, ctx.blocks = margin, blocks
        return loss

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        audio, video, stats = ctx.saved_tensors
        d_audio, d_video = contrastive_backward(
            audio, video, stats, grad, ctx.margin, ctx.blocks,
            need_audio=ctx.needs_input_grad[0], need_video=ctx.needs_input_grad[1],
        )  # fmt: skip
        return d_audio, d_video, None, None


# ---- public ---------------------------------------------------------------------------------
def sequence_embedding(wid: torch.Tensor) -> torch.Tensor:
    """The contrastive space's embedding of word-ID sequences: each row flattened frame-major
    and L2-normalised, in at least float32 (what the loss compares; evaluation retrieves with
    it).

    Args:
        wid: [B, T, D] per-frame word-ID features (or [B, D]).

    Returns: [B, T*D].
    """
    wide = wid.float() if wid.dtype in (torch.float16, torch.bfloat16) else wid
    return F.normalize(wide.flatten(1), dim=1)


def contrastive_loss_ref(
    audio_emb: torch.Tensor,
    video_emb: torch.Tensor,
    margin: float = MARGIN,
) -> torch.Tensor:
    """The definition and reference (plain PyTorch, O(B^2 D) memory): L2 contrastive loss between
    paired audio and video sequence embeddings (the original's `L2ContrastiveLoss`).

    Args:
        audio_emb: [B, D] or [B, T, D] (flattened to [B, T*D], e.g. 12 x 256 = 3072).
        video_emb: same shape as `audio_emb`; row i is paired with audio row i.
        margin: negatives closer than this are pushed apart.

    Rows are L2-normalised, d_ij = ||v_i - a_j|| (video row i, audio column j) and
        loss = (sum_i d_ii^2 + sum_{i != j} max(0, margin - d_ij)^2) / (2B),
    so every in-batch non-matching pair is a negative. The positive term uses the squared
    distance directly, and the negatives take sqrt(max(d^2, eps^2)) with eps the dtype's machine
    epsilon: the gradient of sqrt at 0 would be infinite (NaN after the chain rule), and a floor
    of one ulp of 1.0 leaves the value unchanged at the dtype's precision. Gradients are finite
    for B = 1 and for identical rows.

    Returns: 0-d tensor in at least float32.
    """
    _check_shapes(audio_emb, video_emb)
    a = sequence_embedding(audio_emb)  # [B, D]
    v = sequence_embedding(video_emb)  # [B, D]
    b = a.shape[0]
    sq = (v[:, None, :] - a[None, :, :]).pow(2).sum(-1)  # [B, B] squared distances d_ij^2
    eps = torch.finfo(sq.dtype).eps
    dist = sq.clamp(min=eps * eps).sqrt()  # [B, B]
    eye = torch.eye(b, dtype=torch.bool, device=sq.device)
    negatives = (margin - dist).clamp(min=0).pow(2).masked_fill(eye, 0).sum()
    positives = sq.diagonal().sum()
    return (positives + negatives) / (2 * b)


def _check_shapes(audio_emb: torch.Tensor, video_emb: torch.Tensor) -> None:
    if audio_emb.shape != video_emb.shape or audio_emb.dim() < 2:
        raise KernelError(
            f"contrastive_loss: audio {tuple(audio_emb.shape)} and video "
            f"{tuple(video_emb.shape)} must have the same [B, D] or [B, T, D] shape"
        )


def contrastive_loss(
    audio_emb: torch.Tensor,
    video_emb: torch.Tensor,
    margin: float = MARGIN,
    *,
    backend: str = "auto",
    blocks: ContrastiveBlocks | None = None,
) -> torch.Tensor:
    """L2 contrastive loss of paired audio and video embeddings (spec/davs.md §2.2).

    Args:
        audio_emb: [B, D] (or [B, T, D], flattened to [B, T*D] as the reference does).
        video_emb: same shape; row i is paired with audio row i.
        margin: negatives closer than this are pushed apart. (Default: 1.0)
        backend: ``"auto"`` (Triton for CUDA float32/float16/bfloat16, else the reference),
            ``"triton"`` or ``"ref"``.
        blocks: Triton tile sizes (default `ContrastiveBlocks()`).

    Returns: 0-d tensor in at least float32 (float32 for 16-bit inputs, as the reference), so
    that a weighted and gradient-scaled loss cannot overflow; differentiable with respect to
    both inputs (the Triton path computes a gradient only for inputs that require one; no
    double backward).

    Raises:
        KernelError (a ValueError): ``"triton"`` unavailable, or inputs it cannot take.
    """
    if (
        resolve_backend("contrastive_loss", backend, audio_emb, _contrastive_fwd_kernel, DTYPES)
        == "ref"
    ):
        return contrastive_loss_ref(audio_emb, video_emb, margin)
    _check_shapes(audio_emb, video_emb)
    return ContrastiveLossFunction.apply(
        audio_emb.flatten(1), video_emb.flatten(1), float(margin), blocks
    )
