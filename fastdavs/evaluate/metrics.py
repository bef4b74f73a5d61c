"""Evaluation metrics of DAVS (spec/davs.md §5), as pure functions on tensors.

Where they sit in the data flow: `fastdavs-eval` runs the model over held-out data, collects
logits, embeddings and generated frames, and calls these functions; nothing here loads data or
runs a model. The image metrics return per-item values: callers average.

- lip reading:     `word_accuracy` (fusion is the caller's sum of audio and video logits),
                   `confusions` (the most frequent wrong guesses, by word name);
- association:     `retrieval` (audio <-> video R@1/5/10, median and mean rank, both ways);
- disentangling:   `linear_probe` (identity from word-ID features, word from person-ID features);
- generation:      `psnr`, `ssim` (full frame, or the mouth via a mask / box); `ridge_regression`
                   and `r2_score` for regression probes (the jaw probe of
                   `fastdavs.evaluate.jaw_probe`);
- sync:            `sync_scores` (LSE-D / LSE-C in the manner of SyncNet, on the model's own
                   per-frame word-ID embeddings).

Conventions. Images are RGB in [0, 1] (data range 1, not clamped here), either [B, C, H, W] or
clips [B, T, C, H, W]; a clip's value is the mean of its per-frame values. Distances and image
metrics are computed in float64 (image statistics in chunks of frames, retrieval in chunks of
queries), so their cost in memory is bounded whatever B and T are. They are metrics, not
losses: no gradient is promised.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fastdavs.model.losses import Box

F64 = torch.float64
# Elements of one image chunk in float64 (16 MiB): bounds the memory of psnr/ssim on long clips.
_CHUNK_ELEMENTS = 1 << 21
# Retrieval compares cosine similarities; closer than this is a tie. Rounding in float64 is
# ~1e-15, so an exact tie (duplicate embeddings) can never be counted in the query's favour.
_TIE_TOL = 1e-10


# ---- lip reading ----------------------------------------------------------------------------
def word_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of items whose arg-max class is the label.

    Args:
        logits: [N, K] class scores (audio, video, or their sum for the fused lip reading).
        labels: [N] integer labels in [0, K).
    """
    if logits.dim() != 2 or labels.shape != logits.shape[:1] or logits.shape[0] == 0:
        raise ValueError(
            f"need logits [N, K] and labels [N], N > 0; got {logits.shape}, {labels.shape}"
        )
    return (logits.argmax(1) == labels).double().mean().item()


def confusions(
    logits: torch.Tensor, labels: torch.Tensor, names: list[str], top: int = 5
) -> list[list]:
    """The most frequent errors: up to `top` rows [true word, predicted word, count], the most
    frequent first (ties in the order of the true label, then the predicted one).

    Args:
        logits: [N, K] class scores; labels: [N] integer labels in [0, K).
        names: K class names (the vocabulary).
    """
    if logits.dim() != 2 or labels.shape != logits.shape[:1] or len(names) < logits.shape[1]:
        raise ValueError(
            f"need logits [N, K], labels [N] and K names; got {logits.shape}, {labels.shape}, "
            f"{len(names)} names"
        )
    k = logits.shape[1]
    guess = logits.argmax(1)
    wrong = guess != labels
    counts = torch.bincount(labels[wrong] * k + guess[wrong], minlength=k * k)  # [K*K]
    order = torch.sort(counts, descending=True, stable=True).indices[:top].tolist()
    return [[names[i // k], names[i % k], int(counts[i])] for i in order if counts[i] > 0]


# ---- audio <-> video retrieval --------------------------------------------------------------
def retrieval(
    audio_emb: torch.Tensor, video_emb: torch.Tensor, *, chunk_size: int = 1024
) -> dict[str, dict[str, float]]:
    """Cross-modal retrieval by Euclidean distance, like the original `L2retrieval`.

    Item i's audio matches item i's video. Both are L2-normalised here (float64), so the
    distance ranking is the cosine-similarity ranking (d^2 = 2 - 2 cos).
    - "audio_to_video": query audio i, rank the N videos; "video_to_audio": the converse.
    - The rank (1-based) of a query is 1 + the number of *other* candidates at distance <= the
      true match's (cosine within 1e-10 counts as a tie): ties count against the query, so
      collapsed (all equal) embeddings rank N, not 1.
    - Per direction: "r1", "r5", "r10" (fractions of queries with rank <= k), "median_rank"
      (floor of the median, the VSE convention: an even N never gives a half rank) and
      "mean_rank".

    Args:
        audio_emb, video_emb: [N, D] sequence embeddings (any float dtype, any device).
        chunk_size: queries per block; a block holds chunk_size x N float64 similarities.
    """
    if audio_emb.dim() != 2 or audio_emb.shape != video_emb.shape or audio_emb.shape[0] == 0:
        raise ValueError(
            f"need two [N, D] embeddings, N > 0; got {audio_emb.shape}, {video_emb.shape}"
        )
    if chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size}: need >= 1")
    a = F.normalize(audio_emb.to(F64), dim=1)
    v = F.normalize(video_emb.to(F64), dim=1)
    n = a.shape[0]
    true = (a * v).sum(1)  # [N] cos(a_i, v_i), one value used by both directions
    beats_a = torch.zeros(n, dtype=torch.long, device=a.device)  # per audio query
    beats_v = torch.zeros(n, dtype=torch.long, device=a.device)  # per video query
    for start in range(0, n, chunk_size):
        rows = torch.arange(start, min(start + chunk_size, n), device=a.device)
        sim = a[rows] @ v.T  # [n_chunk, N]: cos(a_i, v_j) for audio i in the chunk
        sim[rows - start, rows] = -math.inf  # a query's own match is not a competitor
        beats_a[rows] = (sim >= true[rows, None] - _TIE_TOL).sum(1)  # videos j vs audio i
        beats_v += (sim >= true[None, :] - _TIE_TOL).sum(0)  # audios i in chunk vs video j
    return {
        "audio_to_video": _rank_summary(beats_a + 1),
        "video_to_audio": _rank_summary(beats_v + 1),
    }


def _rank_summary(ranks: torch.Tensor) -> dict[str, float]:
    """R@1/5/10, median and mean of 1-based ranks [N]."""
    r = ranks.sort().values.double()
    n = r.numel()
    summary = {f"r{k}": (r <= k).double().mean().item() for k in (1, 5, 10)}
    summary["median_rank"] = math.floor((r[(n - 1) // 2] + r[n // 2]).item() / 2)
    summary["mean_rank"] = r.mean().item()
    return summary


# ---- disentanglement probe ------------------------------------------------------------------
def linear_probe(
    features_train: torch.Tensor,
    labels_train: torch.Tensor,
    features_test: torch.Tensor,
    labels_test: torch.Tensor,
    num_classes: int,
    *,
    weight_decay: float = 1e-3,
    max_iter: int = 100,
) -> dict[str, float]:
    """Held-out accuracy of a multinomial logistic regression on frozen features.

    Features are standardised with the train set's mean and std (constant dimensions left
    unscaled); the model minimises mean cross-entropy + weight_decay/2 * ||W||^2 (bias free)
    with full-batch L-BFGS (strong Wolfe) from zero weights, in float32 on the features'
    device. The problem is convex and nothing is sampled, so the result is deterministic
    without a seed and independent of the global RNG.

    "chance" is the majority-class accuracy on the test labels (the frequency of the most
    common one), not 1/K: with unbalanced classes 1/K understates what a probe gets for free.

    Args:
        features_train: [N, D]; labels_train: [N] integers in [0, num_classes).
        features_test: [M, D]; labels_test: [M] integers in [0, num_classes).
        weight_decay: L2 strength on the weights. max_iter: L-BFGS iterations.
    Returns:
        {"accuracy": fraction of test items classified right, "chance": majority fraction}.
    """
    d = features_train.shape[-1]
    if features_train.dim() != 2 or features_test.dim() != 2 or features_test.shape[1] != d:
        raise ValueError(
            f"need [N, D] and [M, D]; got {features_train.shape}, {features_test.shape}"
        )
    for name, x, y in (
        ("train", features_train, labels_train),
        ("test", features_test, labels_test),
    ):
        if y.shape != x.shape[:1] or y.numel() == 0:
            raise ValueError(f"{name}: need {x.shape[0]} > 0 labels, got shape {tuple(y.shape)}")
        if y.min() < 0 or y.max() >= num_classes:
            raise ValueError(f"{name} labels must lie in [0, {num_classes})")
    # inference_mode(False): callers usually hold features made under torch.inference_mode.
    with torch.inference_mode(False), torch.enable_grad():
        x_train = features_train.float()
        mean = x_train.mean(0)
        std = x_train.std(0, unbiased=False)
        std = torch.where(std > 0, std, torch.ones_like(std))
        x_train = (x_train - mean) / std
        y_train = labels_train.to(x_train.device, torch.long).clone()  # not an inference tensor
        w = torch.zeros(d, num_classes, device=x_train.device, requires_grad=True)
        b = torch.zeros(num_classes, device=x_train.device, requires_grad=True)
        opt = torch.optim.LBFGS(
            [w, b], lr=1.0, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe"
        )

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = F.cross_entropy(x_train @ w + b, y_train) + 0.5 * weight_decay * w.square().sum()
            loss.backward()
            return loss

        opt.step(closure)
        with torch.no_grad():
            pred = (((features_test.float() - mean) / std) @ w + b).argmax(1)
    accuracy = (pred == labels_test.to(pred.device)).double().mean().item()
    chance = torch.bincount(labels_test.long()).max().item() / labels_test.numel()
    return {"accuracy": accuracy, "chance": chance}


# ---- generation quality ---------------------------------------------------------------------
def psnr(
    fake: torch.Tensor,
    real: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    frames: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-item PSNR in dB, 10 log10(1 / MSE) for images in [0, 1].

    With `mask` (0/1, e.g. `losses.mouth_mask(H, W, box)`), the MSE is over the masked pixels
    only (all channels). A frame with zero error gives +inf, so a clip (mean over its frames)
    with one perfect frame is +inf too; no cap is applied.

    Args:
        fake, real: [B, C, H, W] or [B, T, C, H, W] (clip value = mean of per-frame PSNRs).
        mask: optional, broadcastable to `fake.shape` ([H, W] for one box on every frame).
        frames: optional bool [B, T], the frames each clip's mean takes (see `ssim`).
    Returns:
        [B] float64.
    """
    _check_images(fake, real)
    m = torch.ones((), dtype=fake.dtype, device=fake.device) if mask is None else mask
    m = torch.broadcast_to(m.to(fake.device), fake.shape)

    def frame_psnr(f: torch.Tensor, r: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        w = w.to(F64)
        count = w.sum((1, 2, 3))
        if (count == 0).any():
            raise ValueError("psnr: the mask selects no pixel of some frame")
        mse = ((f.to(F64) - r.to(F64)).square() * w).sum((1, 2, 3)) / count
        return -10 * torch.log10(mse)

    return _clip_mean(_per_frame(frame_psnr, fake, real, m), frames)


def ssim(
    fake: torch.Tensor,
    real: torch.Tensor,
    box: Box | None = None,
    *,
    window: int = 11,
    frames: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-item SSIM (Wang et al. 2004) for images in [0, 1].

    The standard setting: an 11x11 Gaussian window with sigma 1.5 (normalised), K1 = 0.01,
    K2 = 0.03, data range 1, population (window-weighted) variances; each channel of RGB is
    treated as a grey image and the SSIM map is averaged over the 'valid' region (no padding:
    (H - 10) x (W - 10) positions) and over channels. This is Wang's `ssim.m` applied per
    channel, and skimage's `structural_similarity(..., gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, channel_axis=...)` up to its border crop.

    Args:
        fake, real: [B, C, H, W] or [B, T, C, H, W] (clip value = mean of per-frame SSIMs).
        box: optional (top, bottom, left, right) pixels, e.g. `DavsConfig.mouth_box_px`: SSIM
            of that crop only. The image or crop must be at least `window` pixels each way.
        window: side of the Gaussian window (odd); keep 11 for the standard metric.
        frames: optional bool [B, T] for clips: the frames whose values each clip's mean takes
            (all by default; every clip needs at least one). The others are still computed.
    Returns:
        [B] float64.
    """
    _check_images(fake, real)
    if box is not None:
        top, bottom, left, right = box
        h, w = fake.shape[-2:]
        if not (0 <= top < bottom <= h and 0 <= left < right <= w):
            raise ValueError(
                f"box {box}: need 0 <= top < bottom <= {h} and 0 <= left < right <= {w}"
            )
        fake = fake[..., top:bottom, left:right]
        real = real[..., top:bottom, left:right]
    if min(fake.shape[-2:]) < window:
        raise ValueError(
            f"ssim: {tuple(fake.shape[-2:])} pixels is smaller than the {window}x{window} window; "
            "use a larger image or box"
        )
    x = torch.arange(window, dtype=F64, device=fake.device) - (window - 1) / 2
    g = torch.exp(-x.square() / (2 * 1.5**2))
    g = g / g.sum()  # the 2-D window is the outer product g g^T, also normalised
    # 'Valid' filtering along one axis of length n is a product with the banded matrix whose
    # row i holds g at columns i..i+window-1 ([n - window + 1, n]); two matrix products filter
    # both axes. Much faster than a grouped float64 convolution on CPUs (BLAS vs a naive loop).
    rows, cols = (_band(g, n) for n in fake.shape[-2:])  # [H', H], [W', W]
    c1, c2 = 0.01**2, 0.03**2

    def frame_ssim(f: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        n, c = f.shape[:2]
        f, r = f.to(F64), r.to(F64)
        stats = torch.stack([f, r, f * f, r * r, f * r], 1)  # [n, 5, C, H, W]
        stats = rows @ stats @ cols.T  # [n, 5, C, H', W'] local (window-weighted) means
        mu_f, mu_r, e_ff, e_rr, e_fr = stats.unbind(1)
        var_f = e_ff - mu_f.square()
        var_r = e_rr - mu_r.square()
        cov = e_fr - mu_f * mu_r
        num = (2 * mu_f * mu_r + c1) * (2 * cov + c2)
        den = (mu_f.square() + mu_r.square() + c1) * (var_f + var_r + c2)
        return (num / den).mean((1, 2, 3))

    return _clip_mean(_per_frame(frame_ssim, fake, real), frames)


def _clip_mean(values: torch.Tensor, frames: torch.Tensor | None) -> torch.Tensor:
    """[B] means of per-frame values [B, T] over the selected frames (bool [B, T]) or all."""
    if frames is None:
        return values.mean(1)
    frames = frames.to(values.device)
    if frames.shape != values.shape or frames.dtype != torch.bool or not frames.any(1).all():
        raise ValueError(
            f"frames must be bool {tuple(values.shape)} selecting >= 1 frame of every clip; "
            f"got {frames.dtype} {tuple(frames.shape)}"
        )
    total = torch.where(frames, values, values.new_zeros(())).sum(1)
    return total / frames.sum(1)


def _band(g: torch.Tensor, n: int) -> torch.Tensor:
    """[n - len(g) + 1, n] matrix whose row i is `g` placed at columns i .. i + len(g) - 1."""
    m = n - len(g) + 1
    band = torch.zeros(m, n, dtype=g.dtype, device=g.device)
    rows = torch.arange(m, device=g.device)[:, None]
    band[rows, rows + torch.arange(len(g), device=g.device)] = g
    return band


def _check_images(fake: torch.Tensor, real: torch.Tensor) -> None:
    if fake.shape != real.shape or fake.dim() not in (4, 5):
        raise ValueError(
            f"need fake and real of one shape [B, C, H, W] or [B, T, C, H, W]; "
            f"got {tuple(fake.shape)} and {tuple(real.shape)}"
        )


def _per_frame(fn: Callable[..., torch.Tensor], *images: torch.Tensor) -> torch.Tensor:
    """[B, T] values of `fn` ([n, C, H, W] frames -> [n]) over images [B, (T,) C, H, W].

    Frames go through `fn` in chunks of about _CHUNK_ELEMENTS, one item at a time, so a batch
    of long high-resolution clips never exists in float64 at once.
    """
    clips = [x if x.dim() == 5 else x.unsqueeze(1) for x in images]
    b, t = clips[0].shape[:2]
    step = max(1, _CHUNK_ELEMENTS // clips[0][0, 0].numel())
    out = torch.empty(b, t, dtype=F64, device=clips[0].device)
    for i in range(b):
        for s in range(0, t, step):
            out[i, s : s + step] = fn(*(x[i, s : s + step] for x in clips))
    return out


# ---- audio-visual sync ----------------------------------------------------------------------
def sync_scores(
    video_emb: torch.Tensor, audio_emb: torch.Tensor, max_offset: int = 15
) -> dict[str, int | float] | dict[str, torch.Tensor]:
    """Sync distance (LSE-D), confidence (LSE-C) and offset of a clip, in the manner of SyncNet.

    With v_t, a_t the L2-normalised per-frame embeddings, for each offset o in
    [-max_offset, max_offset] the mean distance is m(o) = mean over the frames t where both
    exist of ||v_t - a_{t+o}||. Then, as SyncNet's `calc_pdist` + `evaluate`:
    distance = min_o m(o) (lower is better), confidence = median_o m(o) - min_o m(o) (higher
    is better), offset = argmin_o m(o). Offset o > 0 means video frame t matches audio frame
    t + o, i.e. the audio lags the video by o frames; 0 is in sync; equal minima resolve to
    the smallest |o| (so collapsed embeddings report offset 0 with confidence 0).

    Deviations from SyncNet, so the numbers are not comparable with published LSE-D/LSE-C:
    the features are the model's own word-ID embeddings, one per frame, L2-normalised (so
    distances lie in [0, 2]) instead of SyncNet's 5-frame audio/video windows; m(o) averages
    only the overlapping frames where SyncNet zero-pads the audio and averages all T frames;
    SyncNet's printed offset is -o; and no eps is added inside the norm.

    Args:
        video_emb, audio_emb: [T, D] for one clip, or [B, T, D] for a batch of equal-length
            clips; T > max_offset so that every offset overlaps at least one frame.
    Returns:
        {"offset", "distance", "confidence"}: Python int/floats for [T, D]; [B] tensors
        (long, float64, float64) for [B, T, D].
    """
    if video_emb.shape != audio_emb.shape or video_emb.dim() not in (2, 3):
        raise ValueError(
            f"need video and audio embeddings of one shape [T, D] or [B, T, D]; "
            f"got {tuple(video_emb.shape)} and {tuple(audio_emb.shape)}"
        )
    t = video_emb.shape[-2]
    if not 0 <= max_offset < t:
        raise ValueError(f"max_offset={max_offset}: need 0 <= max_offset < T={t}")
    v = F.normalize(video_emb.to(F64), dim=-1)
    a = F.normalize(audio_emb.to(F64), dim=-1)
    # Direct differences, not the mm expansion, so identical embeddings give exactly 0.
    dist = torch.cdist(v, a, compute_mode="donot_use_mm_for_euclid_dist")  # [(B,) T, T]
    # Offsets ordered 0, -1, 1, -2, 2, ...: argmin returns the first minimum, the smallest |o|.
    offsets = sorted(range(-max_offset, max_offset + 1), key=lambda o: (abs(o), o))
    # diagonal(o) holds (t, t + o): video frame t against audio frame t + o.
    mean = torch.stack([dist.diagonal(o, -2, -1).mean(-1) for o in offsets], -1)  # [(B,) 2M+1]
    best = mean.argmin(-1)
    distance = mean.gather(-1, best.unsqueeze(-1)).squeeze(-1)
    confidence = mean.median(-1).values - distance  # 2M+1 offsets: the median is exact
    offset = torch.tensor(offsets, device=mean.device)[best]
    if video_emb.dim() == 2:
        return {
            "offset": offset.item(),
            "distance": distance.item(),
            "confidence": confidence.item(),
        }
    return {"offset": offset, "distance": distance, "confidence": confidence}


# ---- regression probe -----------------------------------------------------------------------
@dataclass(frozen=True)
class Ridge:
    """A fitted ridge regression on standardised features (see `ridge_regression`)."""

    mean: torch.Tensor  # [D] float64 feature means of the fit
    scale: torch.Tensor  # [D] float64 feature stds of the fit (1 where a feature is constant)
    weight: torch.Tensor  # [D] float64, on the standardised features
    bias: float  # the fit's target mean
    alpha: float  # ridge strength per sample

    def predict(self, features: torch.Tensor) -> torch.Tensor:
        """[..., D] features -> [...] float64 predictions."""
        x = (features.to(F64) - self.mean.to(features.device)) / self.scale.to(features.device)
        return x @ self.weight.to(features.device) + self.bias


def ridge_regression(
    features: torch.Tensor, targets: torch.Tensor, alphas: Sequence[float]
) -> list[Ridge]:
    """Ridge regressions of `targets` on `features`, one per strength in `alphas`.

    Features are standardised with their own mean and std (constant ones left unscaled); each
    fit minimises ||X w + b - y||^2 + alpha N ||w||^2 over the N samples (so alpha means the same
    whatever N is), with b the target mean (the bias is not penalised). One eigendecomposition
    of X^T X in float64 serves every alpha; nothing is sampled, so fits are deterministic.

    Args:
        features: [N, D]; targets: [N]; alphas: strengths > 0.
    Returns:
        one `Ridge` per alpha, in order.
    """
    if features.dim() != 2 or targets.shape != features.shape[:1] or features.shape[0] < 2:
        raise ValueError(
            f"need features [N, D] and targets [N], N >= 2; got {features.shape}, {targets.shape}"
        )
    if not alphas or min(alphas) <= 0:
        raise ValueError(f"alphas={alphas}: need at least one, all > 0")
    x = features.to(F64)
    y = targets.to(F64)
    n = x.shape[0]
    mean = x.mean(0)
    scale = x.std(0, unbiased=False)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    x = (x - mean) / scale
    evals, evecs = torch.linalg.eigh(x.T @ x)  # X^T X = V diag(e) V^T
    proj = evecs.T @ (x.T @ (y - y.mean()))  # V^T X^T (y - mean)
    return [
        Ridge(mean, scale, evecs @ (proj / (evals.clamp_min(0) + a * n)), y.mean().item(), a)
        for a in alphas
    ]


def r2_score(predictions: torch.Tensor, targets: torch.Tensor) -> float | None:
    """Coefficient of determination 1 - sum (y - p)^2 / sum (y - mean y)^2 over all elements
    (float64): 1 is perfect, 0 is as good as always answering the targets' mean, and it is
    negative for anything worse. None where the targets are constant (R^2 is undefined)."""
    if predictions.shape != targets.shape or targets.numel() == 0:
        raise ValueError(
            f"need predictions and targets of one non-empty shape; got "
            f"{tuple(predictions.shape)} and {tuple(targets.shape)}"
        )
    p, y = predictions.to(F64).flatten(), targets.to(F64).flatten()
    total = (y - y.mean()).square().sum()
    if total == 0:
        return None
    return (1 - (y - p).square().sum() / total).item()
