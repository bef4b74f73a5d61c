"""Reference implementations of the DAVS training losses (spec/davs.md §2), in plain PyTorch.

Where they sit in the data flow: the training step (stage pid -> wid -> gen) runs the encoders,
the generator and the discriminators, then calls these functions on their outputs and weights
the results with `LossWeights`. Weights belong to the caller, except for `reconstruction_loss`,
whose two terms are weighted inside as in the original. Nothing here sums a total.

- wid space:   `contrastive_loss` (audio <-> video `sequence_embedding`s), `modality_*_loss`
               (audio-vs-video discriminator, GAN-style label flip for the encoders);
- disentangle: `uniform_softmax_loss` (pid -> word and wid -> person adversaries, encoder step),
               `identity_scatter_loss` (identity left in a batch's word-ID features);
- frames:      `reconstruction_loss`, `smoothness_loss`, `gan_loss`;
- classifiers: `cross_entropy` (the word and identity classifiers, the adversaries' classifier
               step).

Conventions. Images are RGB in [0, 1]; the reconstruction loss is computed on the 0-255 scale
(fake*255 vs real*255) as the original does, and the smoothness loss on the [0, 1] scale, as the
original's `G_x_loss` does, so that `LossWeights` (the original `Options.py` values) keep their
meaning. Discriminators and classifiers output logits, so the binary losses use
`binary_cross_entropy_with_logits`, which equals the original sigmoid + BCE but stays exact for
large |logit| (in float32 the sigmoid form saturates near |logit| 17 and PyTorch's BCE clamps
log at -100). Every function returns a 0-d tensor (`cross_entropy` may return one per item) on
the input's device and is differentiable.

Precision. Every loss is computed and returned in at least float32 (float32 for float16/bfloat16
inputs, float64 for float64), whatever autocast produced upstream: the training step weights
these values (the uniform-softmax terms by up to 1e6) and a gradient scaler multiplies the sum
by up to 65536 more, which a 16-bit result could not hold (float16 tops out at 65504), and the
small terms (a uniform-softmax loss near its optimum is ~1e-8) would round to 0 in float16.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fastdavs.config import LossWeights
from fastdavs.kernels.contrastive import contrastive_loss as fused_contrastive_loss

Box = tuple[int, int, int, int]  # (top, bottom, left, right) in pixels, as DavsConfig.mouth_box_px


def _wide(x: torch.Tensor) -> torch.Tensor:
    """`x` in at least float32: the losses accumulate over many elements."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


# ---- word-ID space --------------------------------------------------------------------------
def contrastive_loss(
    audio_emb: torch.Tensor,
    video_emb: torch.Tensor,
    margin: float = LossWeights.contrastive_margin,
    *,
    backend: str = "ref",
) -> torch.Tensor:
    """L2 contrastive loss between paired audio and video sequence embeddings (`L2ContrastiveLoss`):
    `fastdavs.kernels.contrastive.contrastive_loss`, whose reference `contrastive_loss_ref` is the
    definition (every in-batch non-matching pair is a negative; rows L2-normalised by
    `sequence_embedding`).

    Args:
        audio_emb: [B, D] or [B, T, D] (flattened to [B, T*D], e.g. 12 x 256 = 3072).
        video_emb: same shape as `audio_emb`; row i is paired with audio row i.
        margin: negatives closer than this are pushed apart.
        backend: ``"ref"`` (the definition, O(B^2 D) memory; the default), ``"auto"`` or
            ``"triton"`` (the fused kernel on CUDA, O(B D) memory, same value and gradients).

    The original detaches the video side during generation training; that is the caller's
    choice (pass `video_emb.detach()`).

    Returns: 0-d tensor.
    """
    return fused_contrastive_loss(audio_emb, video_emb, margin, backend=backend)


def modality_discriminator_loss(
    d_audio_logits: torch.Tensor, d_video_logits: torch.Tensor
) -> torch.Tensor:
    """Discriminator step of the modality adversary: 0.5 * [BCE(D(f_a), 1) + BCE(D(f_v), 0)].

    Args:
        d_audio_logits: [...] logits of the modality discriminator on audio word-ID features
            (per frame, e.g. [B, T, 1]); audio is the "real" class.
        d_video_logits: [...] logits on video word-ID features; video is the "fake" class.

    Returns: 0-d tensor; each BCE is a mean over its elements.
    """
    return 0.5 * (gan_loss(d_audio_logits, True) + gan_loss(d_video_logits, False))


def modality_flip_loss(d_audio_logits: torch.Tensor, d_video_logits: torch.Tensor) -> torch.Tensor:
    """Encoder step of the modality adversary: BCE(D(f_a), 0) + BCE(D(f_v), 1).

    The labels are flipped GAN-style (not a gradient reversal layer), so both encoders are
    pushed towards features the discriminator assigns to the other modality. Shapes as in
    `modality_discriminator_loss`. Returns: 0-d tensor.
    """
    return gan_loss(d_audio_logits, False) + gan_loss(d_video_logits, True)


# ---- disentanglement adversaries ------------------------------------------------------------
def uniform_softmax_loss(logits: torch.Tensor) -> torch.Tensor:
    """MSE between softmax(logits) and the uniform distribution 1/K (`L2SoftmaxLoss`).

    The encoder step of the pid -> word and wid -> person adversaries: the encoder is trained
    so that the adversary's class posterior is uniform (used with weight 1e6).

    Args:
        logits: [N, K] classifier logits.

    Returns: 0-d tensor, the mean over all N*K elements.
    """
    p = _wide(logits).softmax(dim=1)  # [N, K]
    return F.mse_loss(p, torch.full_like(p, 1.0 / p.shape[1]))


# ---- classifiers ----------------------------------------------------------------------------
def cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean"
) -> torch.Tensor:
    """`F.cross_entropy` of classifier logits, computed in at least float32.

    Args:
        logits: [N, K] classifier logits.
        labels: [N] class indices in [0, K).
        reduction: ``"mean"`` (0-d) or ``"none"`` ([N], one loss per item).
    """
    return F.cross_entropy(_wide(logits), labels, reduction=reduction)


def view_consistency_loss(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """How far two views of the same items lie apart, relative to how far items lie apart.

    first, second: [..., D] features of the same items under two random input changes (not in
    the original; `DavsConfig.audio_warp`, `audio_jitter`). The loss is the mean squared
    difference between the views divided by the variance of the items of both views (per
    dimension, then averaged over dimensions): 0 when the views agree, about 2 when they are
    unrelated, and unchanged when all features are scaled alike, so it cannot be met by
    shrinking them.

    Returns: 0-d tensor in at least float32.
    """
    if first.shape != second.shape or first.dim() < 2:
        raise ValueError(
            f"view_consistency_loss: views of shapes {tuple(first.shape)} and "
            f"{tuple(second.shape)} must match and be [..., D]"
        )
    a, b = _wide(first).flatten(0, -2), _wide(second).flatten(0, -2)  # [N, D] each
    spread = torch.cat((a, b)).var(0).mean()
    return (a - b).pow(2).mean() / spread.clamp(min=1e-12)


def identity_scatter_loss(
    features: torch.Tensor, labels: torch.Tensor, num_classes: int
) -> torch.Tensor:
    """Share of a batch's feature scatter that lies between identities (not in the original).

    For each dimension d, over the items whose identity occurs at least twice in the batch:
        between_d = sum_k n_k (mean_k,d - mean_d)^2,   total_d = sum_i (x_i,d - mean_d)^2,
    and the loss is the mean over d of between_d / total_d, in [0, 1]. It is 0 when every
    identity's features have the same mean (what a linear identity probe then has nothing to
    read: `fastdavs-eval` probes standardised clip means, and the per-dimension ratio does not
    depend on each dimension's scale either); for features that carry no identity, its expected
    value is (P - 1) / (N - 1) with P identities among N items (0.2 for 4 x 4 clips). Unlike an
    adversary's classifier it has no state to fall behind the encoder: it is measured afresh on
    every batch.

    Args:
        features: [N, D] per-clip features (e.g. word-ID features averaged over time).
        labels: [N] identity labels in [0, num_classes), -1 for unknown (left out).
        num_classes: how many identities the labels can name (a fixed size: nothing here
            depends on the values, so nothing waits for the device).

    Returns: 0-d tensor in at least float32; 0 (with a gradient of zeros) when fewer than two
    identities occur twice.
    """
    if features.dim() != 2 or labels.shape != features.shape[:1]:
        raise ValueError(
            f"identity_scatter_loss: features {tuple(features.shape)} must be [N, D] and labels "
            f"{tuple(labels.shape)} the matching [N]"
        )
    x = _wide(features)
    y = labels + 1  # [N] in [0, num_classes]: 0 is "unknown"
    counts = torch.zeros(num_classes + 1, dtype=x.dtype, device=x.device)
    counts.index_add_(0, y, torch.ones_like(y, dtype=x.dtype))  # [K + 1] clips per identity
    repeated = counts >= 2
    repeated[0] = False  # unknown identities never count
    keep = repeated[y].to(x.dtype)[:, None]  # [N, 1]; masks, not indexing: no host sync
    mean = (x * keep).sum(0) / keep.sum().clamp(min=1)  # [D]
    centred = (x - mean) * keep  # [N, D], 0 on the rows left out
    sums = torch.zeros(num_classes + 1, x.shape[1], dtype=x.dtype, device=x.device)
    sums.index_add_(0, y, centred)  # [K + 1, D] per-identity sums of centred features
    between = (sums.pow(2) / counts[:, None].clamp(min=1)).sum(0)  # [D]
    total = centred.pow(2).sum(0)  # [D]
    share = (between / total.clamp(min=torch.finfo(x.dtype).tiny)).mean()
    return share * (repeated.sum() >= 2)  # 0 without two identities to compare


# ---- frames ---------------------------------------------------------------------------------
def mouth_mask(
    height: int,
    width: int,
    box: Box,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """[H, W] mask: 1 inside rows top:bottom and columns left:right of `box`, 0 elsewhere.

    `box` is (top, bottom, left, right) in pixels, e.g. `DavsConfig.mouth_box_px`
    ((170, 234, 64, 192) at 256 px).
    """
    top, bottom, left, right = box
    if not (0 <= top < bottom <= height and 0 <= left < right <= width):
        raise ValueError(
            f"mouth box {box}: need 0 <= top < bottom <= {height} and 0 <= left < right <= {width}"
        )
    mask = torch.zeros(height, width, device=device, dtype=dtype)
    mask[top:bottom, left:right] = 1
    return mask


def reconstruction_loss(
    fake: torch.Tensor,
    real: torch.Tensor,
    mouth_box: Box,
    weight: float = LossWeights.reconstruction,
    mouth_weight: float = LossWeights.reconstruction_mouth,
) -> torch.Tensor:
    """Weighted L1 of generated frames to the real ones, with extra weight on the mouth.

        weight * L1(fake*255, real*255) + mouth_weight * L1(fake*m*255, real*m*255)

    with m the `mouth_mask`. Both L1 terms are means over every element of the image, the mouth
    term included (as the original, which multiplies by the mask rather than cropping), so the
    mouth term is the mouth error scaled by the box's share of the frame.

    Args:
        fake, real: [..., 3, H, W] in [0, 1] (e.g. [B, T, 3, H, W]).
        mouth_box: (top, bottom, left, right) pixels, e.g. `DavsConfig.mouth_box_px`.
        weight, mouth_weight: lambda_A and lambda_B of the original (4 and 8).

    Returns: 0-d tensor (0-255 scale).
    """
    f, r = _wide(fake) * 255, _wide(real) * 255
    m = mouth_mask(f.shape[-2], f.shape[-1], mouth_box, device=f.device, dtype=f.dtype)
    return weight * F.l1_loss(f, r) + mouth_weight * F.l1_loss(f * m, r * m)


def smoothness_loss(fake: torch.Tensor, identity: torch.Tensor, mouth_box: Box) -> torch.Tensor:
    """Temporal smoothness outside the mouth box (the original's `G_x_loss`).

        sum_t mean_{b,c,h,w} |(fake_t - prev_t) * (1 - m)|,  prev_0 = identity, prev_t = fake_{t-1}

    As in the original: the [0, 1] scale (not 0-255), a sum over frames of per-frame means over
    the whole image, and prev (the identity image included) is detached, so each frame is
    pulled towards the one before it and not the other way round. The caller applies the
    weight (5).

    Args:
        fake: [B, T, 3, H, W] generated frames in [0, 1].
        identity: [B, 3, H, W] the identity image the clip is generated from.
        mouth_box: (top, bottom, left, right) pixels, e.g. `DavsConfig.mouth_box_px`.

    Returns: 0-d tensor.
    """
    if fake.dim() != 5 or identity.shape != fake.shape[:1] + fake.shape[2:]:
        raise ValueError(
            f"smoothness_loss: fake {tuple(fake.shape)} must be [B, T, 3, H, W] and identity "
            f"{tuple(identity.shape)} the matching [B, 3, H, W]"
        )
    f = _wide(fake)
    prev = torch.cat([_wide(identity)[:, None], f[:, :-1]], dim=1).detach()  # [B, T, 3, H, W]
    outside = 1 - mouth_mask(f.shape[-2], f.shape[-1], mouth_box, device=f.device, dtype=f.dtype)
    per_frame = ((f - prev) * outside).abs().mean(dim=(0, 2, 3, 4))  # [T]
    return per_frame.sum()


def gan_loss(
    logits: torch.Tensor,
    real: bool,
    soft: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Vanilla GAN loss: mean BCE-with-logits against the target "real" (1) or "fake" (0).

    Args:
        logits: [...] discriminator logits (a patch map, a sync score, ...).
        real: whether the target is the real class.
        soft: with soft > 0 the targets are softened per element: real = 1 - U(0, soft),
            fake = U(0, soft) (the original uses 0.1 for the discriminator step).
        generator: draws the soft labels (on its own device, then moved to `logits`'s);
            None uses the global RNG of `logits`'s device.

    Soft labels are drawn afresh on every call and per element. The original's `GANLoss` draws
    one scalar per label tensor and caches that tensor, so its softening is drawn only once per
    run and then frozen: a bug, not reproduced here.

    Returns: 0-d tensor.
    """
    if not 0.0 <= soft < 1.0:
        raise ValueError(f"gan_loss: soft={soft} must be in [0, 1)")
    x = _wide(logits)
    if soft > 0:
        device = generator.device if generator is not None else x.device
        u = torch.rand(x.shape, generator=generator, device=device).to(x)
        target = 1 - soft * u if real else soft * u
    else:
        target = torch.full_like(x, 1.0 if real else 0.0)
    return F.binary_cross_entropy_with_logits(x, target)
