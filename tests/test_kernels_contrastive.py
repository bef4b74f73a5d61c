"""Tests of fastdavs.kernels.contrastive: the fused Triton loss and both gradients against the
reference (`fastdavs.model.losses.contrastive_loss`) over named shapes and dtypes, guard bands
around the gradients it writes, the absence of any [B, B] buffer, and dispatch.

Without a GPU the kernels run on CPU under the Triton interpreter (tests/conftest.py sets
TRITON_INTERPRET=1 before anything imports them), with small tiles so that a
test launches a few programs.
"""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from fastdavs.kernels.contrastive import (
    ContrastiveBlocks,
    KernelError,
    contrastive_backward,
    contrastive_forward,
    contrastive_loss,
    contrastive_loss_ref,
    contrastive_workspace_bytes,
    sequence_embedding,
)
from fastdavs.model import losses

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
SMALL = ContrastiveBlocks(m=16, n=16, k=16, d=16)
# Relative tolerance per dtype, on the loss and on each gradient's largest entry: float32 differs
# from the reference by summation order only; 16-bit gradients are rounded outputs of float32
# sums, plus one 16-bit rounding of the weights in the accumulated product.
TOL = {torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 2e-2}
MARGIN = 1.5  # > the typical distance of the pairs below, so that many negatives are active

# (B, D) cases: one row (no negatives); non-powers of two and an odd D; row blocks with a
# ragged last one; a [B, T, D] input flattened as the reference does.
SHAPES = {
    "B=1": (1, 37),
    "B=5,D=37": (5, 37),
    "B=37,D=20": (37, 20),
    "B=6,T=3,D=8": (6, 3, 8),
}


def pair(shape, dtype, noise=0.7):
    """Paired audio/video embeddings: video = audio + noise, so distances spread around 1."""
    audio = torch.randn(shape, device=DEVICE)
    video = audio + noise * torch.randn(shape, device=DEVICE)
    scale = torch.rand(shape[0], *[1] * (len(shape) - 1), device=DEVICE) * 3 + 0.5
    return (audio * scale).to(dtype), video.to(dtype)


def loss_and_grads(fn, audio, video, **kw):
    audio = audio.clone().requires_grad_()
    video = video.clone().requires_grad_()
    loss = fn(audio, video, MARGIN, **kw)
    loss.backward()
    return loss, audio.grad, video.grad


def assert_close_rel(got, want, tol, what):
    assert got.dtype == want.dtype and got.shape == want.shape, what
    scale = want.abs().max().clamp_min(1e-30)
    err = (got.double() - want.double()).abs().max() / scale
    assert err <= tol, f"{what}: max error {err:.3g} x max|ref| > {tol:g}"


@pytest.mark.parametrize("dtype", list(TOL), ids=str)
@pytest.mark.parametrize("shape", list(SHAPES.values()), ids=list(SHAPES))
def test_matches_reference(shape, dtype):
    audio, video = pair(shape, dtype)
    want = loss_and_grads(contrastive_loss_ref, audio, video)
    got = loss_and_grads(contrastive_loss, audio, video, backend="triton", blocks=SMALL)
    # The loss is float32 for every input dtype, as the reference's (gradients keep theirs).
    assert got[0].dtype == want[0].dtype == torch.float32
    for name, g, w in zip(("loss", "d audio", "d video"), got, want, strict=True):
        assert_close_rel(g, w, TOL[dtype], f"{name} {dtype}")
    if shape[0] > 1:  # the cases exercise the hinge: some negatives inside the margin
        dist = torch.cdist(sequence_embedding(video), sequence_embedding(audio))
        assert (dist < MARGIN).sum() > shape[0]


def test_default_blocks_and_margins():
    """GPU-sized default tiles (one tile covers the batch) and margins 0 / 1 / 2."""
    audio, video = pair((9, 70), torch.float32)
    for margin in (0.0, 1.0, 2.0):
        a, v = audio.clone().requires_grad_(), video.clone().requires_grad_()
        got = contrastive_loss(a, v, margin, backend="triton")
        got.backward()
        ar, vr = audio.clone().requires_grad_(), video.clone().requires_grad_()
        want = contrastive_loss_ref(ar, vr, margin)
        want.backward()
        assert_close_rel(got, want, 1e-5, f"loss margin {margin}")
        assert_close_rel(a.grad, ar.grad, 1e-5, f"d audio margin {margin}")
        assert_close_rel(v.grad, vr.grad, 1e-5, f"d video margin {margin}")


def test_detached_video_gets_audio_gradient_only():
    """The generation stage passes video.detach(): only d audio is computed, and it is right."""
    audio, video = pair((7, 24), torch.float32)
    a = audio.clone().requires_grad_()
    contrastive_loss(a, video, MARGIN, backend="triton", blocks=SMALL).backward()
    ar = audio.clone().requires_grad_()
    contrastive_loss_ref(ar, video, MARGIN).backward()
    assert_close_rel(a.grad, ar.grad, 1e-5, "d audio")


def test_degenerate_rows_stay_finite():
    """Identical rows (every distance 0) and an all-zero row. The kernel's Gram-form distance
    is sqrt(rounding) ~ 3e-4 where the reference's is exactly 0, so the loss agrees to ~1e-3."""
    same = torch.randn(1, 24, device=DEVICE).expand(5, 24).contiguous()
    zero_row = torch.randn(5, 24, device=DEVICE)
    zero_row[2] = 0
    for audio, video in ((same, same), (zero_row, zero_row.flip(0))):
        got, ga, gv = loss_and_grads(contrastive_loss, audio, video, backend="triton", blocks=SMALL)
        want = contrastive_loss_ref(audio, video, MARGIN)
        assert torch.isfinite(got) and torch.isfinite(ga).all() and torch.isfinite(gv).all()
        torch.testing.assert_close(got, want, rtol=2e-3, atol=0)


def test_gradients_written_into_views_keep_guard_bands():
    """The backward launcher writes into a view of a larger NaN buffer: the view gets exactly
    the autograd gradients, everything around it stays NaN (out-of-bounds stores would show)."""
    b, d = 21, 37
    for dtype in (torch.float32, torch.float16):  # in-place float32 accumulation / workspace
        audio, video = pair((b, d), dtype)
        _, want_a, want_v = loss_and_grads(
            contrastive_loss, audio, video, backend="triton", blocks=SMALL
        )
        bufs = [torch.full((b + 5, d + 9), float("nan"), dtype=dtype, device=DEVICE) for _ in "av"]
        views = [buf[2 : 2 + b, 4 : 4 + d] for buf in bufs]
        _, stats = contrastive_forward(audio, video, MARGIN, SMALL)
        grad = torch.ones((), dtype=dtype, device=DEVICE)
        got_a, got_v = contrastive_backward(
            audio, video, stats, grad, MARGIN, SMALL, d_audio=views[0], d_video=views[1]
        )
        assert got_a is views[0] and got_v is views[1]
        for buf, view, want in zip(bufs, views, (want_a, want_v), strict=True):
            torch.testing.assert_close(view, want, rtol=0, atol=0)
            guard = torch.ones_like(buf, dtype=torch.bool)
            guard[2 : 2 + b, 4 : 4 + d] = False
            assert buf[guard].isnan().all()


class _Allocations(TorchDispatchMode):
    """Records the bytes of every tensor an op creates (not views or in-place results, which
    is how the interpreter shares storages with its host copies)."""

    def __init__(self):
        super().__init__()
        self.nbytes = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if not any(r.alias_info for r in func._schema.returns):
            for t in out if isinstance(out, tuple | list) else (out,):
                if isinstance(t, torch.Tensor):
                    self.nbytes.append(t.nbytes)
        return out


def test_no_quadratic_buffer():
    """B = 64 > D = 8: no tensor made during forward + backward is larger than the float32
    [B, D] accumulator, while a float32 [B, B] would be 8x that; the reference makes a
    [B, B, D] one."""
    b, d = 64, 8
    audio, video = pair((b, d), torch.float16)
    audio.requires_grad_()
    video.requires_grad_()
    with _Allocations() as fused:
        contrastive_loss(audio, video, MARGIN, backend="triton", blocks=SMALL).backward()
    assert max(fused.nbytes) == 4 * b * d
    with _Allocations() as ref:  # the check can fail: it sees the reference's [B, B, D]
        contrastive_loss_ref(audio, video, MARGIN).backward()
    assert max(ref.nbytes) >= 4 * b * b * d


def test_workspace_is_linear_in_batch():
    """At the target size the extra memory is one float32 [B, D] (100 MB) plus O(B) floats;
    a float32 [B, B] alone would be 268 MB."""
    stats = 4 * (6 * 8192 + 8192 // 64)  # row statistics and per-row-block partial sums
    assert contrastive_workspace_bytes(8192, 3072, torch.bfloat16) == stats + 4 * 8192 * 3072
    assert contrastive_workspace_bytes(8192, 3072, torch.float32) == stats  # in-place sums
    assert contrastive_workspace_bytes(16384, 3072, torch.bfloat16) == 2 * (stats + 4 * 8192 * 3072)


def test_reference_gradcheck_float64():
    audio = torch.randn(4, 7, dtype=torch.float64, requires_grad=True)
    video = torch.randn(4, 7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, v: contrastive_loss_ref(a, v, 2.0), (audio, video))


def test_dispatch():
    audio, video = pair((5, 12), torch.float32)
    ref = contrastive_loss_ref(audio, video, MARGIN)
    # losses.contrastive_loss keeps its reference default and forwards other backends here.
    assert torch.equal(losses.contrastive_loss(audio, video, MARGIN), ref)
    fused = losses.contrastive_loss(audio, video, MARGIN, backend="triton")
    torch.testing.assert_close(fused, ref, rtol=1e-5, atol=0)
    if DEVICE == "cpu":  # "auto" keeps CPU tensors on the reference, even under the interpreter
        assert torch.equal(contrastive_loss(audio, video, MARGIN), ref)


def test_errors():
    audio, video = pair((4, 16), torch.float32)
    with pytest.raises(KernelError, match="backend must be one of"):
        contrastive_loss(audio, video, backend="cuda")
    with pytest.raises(KernelError, match="use backend='ref'"):
        contrastive_loss(audio.double(), video.double(), backend="triton")
    with pytest.raises(KernelError, match="same"):
        contrastive_loss(audio, video[:, :8], backend="triton")
    with pytest.raises(KernelError, match="powers of two >= 16"):
        contrastive_loss(audio, video, backend="triton", blocks=ContrastiveBlocks(m=8))
    with pytest.raises(KernelError, match="gradient buffer"):
        _, stats = contrastive_forward(audio, video)
        contrastive_backward(audio, video, stats, torch.ones(()), d_audio=audio.t())
    # float64 under "auto" falls back to the reference instead of failing.
    assert contrastive_loss(audio.double(), video.double()).dtype == torch.float64
