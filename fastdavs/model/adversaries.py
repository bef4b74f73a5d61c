"""Small classifier heads that train the encoders adversarially, plus the pid pretraining head.

- `ModalityDiscriminator` (spec/davs.md §1.5, §2.3): is a word-ID vector from audio or video?
- `PidWordAdversary` = C_p^w (§1.6, §2.4): reads the word from pid features; the pid encoder is
  trained to make its softmax uniform.
- `WidPersonAdversary` = C_w^p: reads the identity from word-ID vectors; the symmetric term the
  paper describes and the released code lacks (§2.4); the word-ID encoders are trained to make its
  softmax uniform.
- `IdentityClassifier` (§1.1): identity classification that pretrains the identity encoder.
- `PersonProbe` (not in the original): C_w^p refitted in closed form at every step, from a bank
  of recent clips, so that it cannot fall behind the encoders it trains.

All return logits (no sigmoid or softmax): losses use BCE-with-logits or cross-entropy, and the
uniform-target losses apply the softmax themselves.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fastdavs.config import DavsConfig


def _near_zero_(layer: nn.Linear) -> nn.Linear:
    """The original's init of an adversary's output layer: weights N(0, 1e-4), bias 0.

    Its softmax starts almost uniform, so the 1e6-weighted uniform-target loss starts near 0.
    """
    nn.init.normal_(layer.weight, 0.0, 1e-4)
    nn.init.zeros_(layer.bias)
    return layer


class ModalityDiscriminator(nn.Sequential):
    """Per frame: word-ID vectors [..., word_dim] -> audio-vs-video logits [...].

    E.g. [N, word_dim] -> [N] or [B, T, word_dim] -> [B, T]. Logit > 0 means "audio" in the
    original's labelling (§2.3).
    """

    def __init__(self, cfg: DavsConfig):
        super().__init__(
            nn.Linear(cfg.word_dim, cfg.word_dim),
            nn.ReLU(inplace=True),
            nn.Linear(cfg.word_dim, 1),
        )

    def forward(self, wid: torch.Tensor) -> torch.Tensor:  # [..., word_dim] -> [...]
        return super().forward(wid).squeeze(-1)


class PidWordAdversary(nn.Module):
    """C_p^w: identity-encoder net1 of adv_frames consecutive frames -> word logits.

    Input [B, adv_frames, ch(64), H/4, W/4]. Each frame: conv 3x3 s2 to one channel at H/8, ReLU,
    flatten, Linear -> ch(128). The frames' features are concatenated, then Dropout 0.5 and
    Linear -> num_words. Output [B, num_words].
    """

    def __init__(self, cfg: DavsConfig):
        super().__init__()
        self.frames = cfg.adv_frames
        self.conv = nn.Conv2d(cfg.ch(64), 1, 3, stride=2, padding=1)
        nn.init.normal_(self.conv.weight, 0.0, 0.02)  # the original's weights_init
        nn.init.zeros_(self.conv.bias)
        self.fc = nn.Linear((cfg.image_size // 8) ** 2, cfg.ch(128))
        self.dropout = nn.Dropout(0.5)
        self.out = _near_zero_(nn.Linear(cfg.adv_frames * cfg.ch(128), cfg.num_words))

    def forward(self, net1: torch.Tensor) -> torch.Tensor:
        B, A, C, h, w = net1.shape
        if self.frames != A:
            raise ValueError(
                f"PidWordAdversary reads adv_frames = {self.frames} frames per clip, got {A}"
            )
        x = torch.relu(self.conv(net1.reshape(B * A, C, h, w)))  # [B*A, 1, h/2, w/2]
        x = self.fc(x.flatten(1))  # [B*A, (h/2)(w/2)] -> [B*A, ch(128)]
        x = x.view(B, -1)  # [B, A * ch(128)], frame-major concatenation
        return self.out(self.dropout(x))  # [B, num_words]


class WidPersonAdversary(nn.Sequential):
    """C_w^p, per frame: word-ID vectors [..., word_dim] -> identity logits [..., num_identities].

    Linear, ReLU, Dropout 0.5, Linear. Not in the released code; the output layer's init mirrors
    C_p^w's because the same 1e6-weighted uniform-target loss reads it.
    """

    def __init__(self, cfg: DavsConfig):
        super().__init__(
            nn.Linear(cfg.word_dim, cfg.word_dim),
            nn.ReLU(inplace=True),
            nn.Dropout(0.5),
            _near_zero_(nn.Linear(cfg.word_dim, cfg.num_identities)),
        )


class IdentityClassifier(nn.Sequential):
    """pid vectors [N, pid_dim] -> identity logits [N, num_identities] (original `Face_ID_fc`)."""

    def __init__(self, cfg: DavsConfig):
        super().__init__(nn.Dropout(0.5), nn.Linear(cfg.pid_dim, cfg.num_identities))


class PersonProbe(nn.Module):
    """Who speaks, read from clip-mean word-ID by linear discriminant analysis refitted at every
    step on the current batch and a short bank of the clips of the last few steps; the encoders
    are trained to make its softmax uniform (`score`): DAVS's wid -> person objective,
    with a classifier that cannot fall behind.

    A learnt adversary (`WidPersonAdversary`) trails the encoders it reads; on the CPU
    schedules its cross-entropy stayed at chance while a probe fitted afresh still read the
    person. Word-ID features also drift too fast for a long bank: 50 `wid` steps moved the
    video features by more than their norm, and this probe fitted on clips 50 steps old named
    2% of people where one fitted on today's features named 77% (`bench/probe_drift.py`). So
    this probe is fitted in closed
    form to what `fastdavs-eval`'s probe reads (a linear classifier of clip-mean word-ID) on the
    batch plus `probe_bank` clips of the last steps: per person, the mean of their clips,
    leaving out the clip being scored (so a clip's own person is known to the probe only
    through their other clips: with `optim.identity_group` >= 2 a batch holds several clips of
    each person); one within-person covariance pooled over the bank, shrunk halfway to its
    diagonal; LDA logits x S^-1 mu_k - mu_k S^-1 mu_k / 2 over the people with at least one
    other clip. The bank holds detached features; the batch's carry gradients, also through
    the means they enter. No parameters; the bank is training state, not saved with the
    weights (after a resume it refills within probe_bank / batch_size steps). Runs in float32
    whatever the autocast, and reads nothing back to the host.
    """

    SHRINK = 0.5  # weight of the diagonal in the shrunk within-person covariance

    def __init__(self, cfg: DavsConfig):
        super().__init__()
        self.num_classes = cfg.num_identities
        n, d = cfg.probe_bank, cfg.word_dim
        # [modality (0 audio, 1 video), N, D] clip-mean word-ID; labels -1 for an empty slot
        self.register_buffer("features", torch.zeros(2, n, d), persistent=False)
        self.register_buffer("labels", torch.full((n,), -1, dtype=torch.long), persistent=False)
        self.register_buffer("cursor", torch.zeros((), dtype=torch.long), persistent=False)

    @torch.no_grad()
    def push(self, audio: torch.Tensor, video: torch.Tensor, labels: torch.Tensor) -> None:
        """Add B clips (clip-mean word-ID audio [B, D], video [B, D], person labels [B], -1
        for unknown) to the bank, overwriting the oldest."""
        n = self.labels.numel()
        slots = (self.cursor + torch.arange(labels.numel(), device=labels.device)) % n  # [B]
        self.features[0, slots] = audio.detach().float()
        self.features[1, slots] = video.detach().float()
        self.labels[slots] = labels
        self.cursor.copy_((self.cursor + labels.numel()) % n)

    def logits(
        self, x: torch.Tensor, labels: torch.Tensor, modality: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Clip-mean word-ID x [B, D] of `modality` (0 audio, 1 video) with person labels [B]
        (-1 unknown) -> (LDA logits [B, K], valid [B, K] bool: the people with at least one
        clip other than the scored one among the bank and the batch; other logits are
        meaningless)."""
        k = self.num_classes
        with torch.autocast(x.device.type, enabled=False):
            x = x.float()
            bank, bank_labels = self.features[modality], self.labels  # [N, D], [N]
            onehot_bank = _onehot(bank_labels, k)  # [N, K], zero rows for unknown
            onehot_x = _onehot(labels, k)  # [B, K]
            counts = onehot_bank.sum(0) + onehot_x.sum(0)  # [K]
            sums = onehot_bank.T @ bank + onehot_x.T @ x  # [K, D]
            # Pooled within-person covariance of the bank (people with >= 2 clips there).
            bank_counts = onehot_bank.sum(0)
            spread = onehot_bank * (bank_counts >= 2)  # [N, K]
            bank_means = spread.T @ bank / bank_counts.clamp(min=1)[:, None]  # [K, D]
            resid = (bank - spread @ bank_means) * spread.sum(1, keepdim=True)  # [N, D]
            dof = spread.sum() - (bank_counts >= 2).sum()
            scatter = resid.T @ resid / dof.clamp(min=1)  # [D, D]
            diag = torch.diag(scatter.diagonal())
            eps = 1e-6 * scatter.diagonal().mean() + 1e-12
            cov = (1 - self.SHRINK) * scatter + self.SHRINK * diag
            cov = cov + eps * torch.eye(cov.shape[0], device=cov.device)
            # Every person's mean, then each clip's own person's mean without the clip.
            means = sums / counts.clamp(min=1)[:, None]  # [K, D]
            own = labels.clamp(min=0)  # [B]
            own_count = counts[own] - 1  # [B] other clips of the clip's person
            loo = (sums[own] - x) / own_count.clamp(min=1)[:, None]  # [B, D]
            # S^-1 mu for every person's mean and every clip's leave-one-out mean, one solve.
            w = torch.linalg.solve(cov, torch.cat((means, loo)).T)  # [D, K + B]
            w, w_loo = w[:, :k], w[:, k:].T  # [D, K], [B, D]
            logits = x @ w - 0.5 * (means * w.T).sum(1)  # [B, K]
            own_logit = (x * w_loo).sum(1) - 0.5 * (loo * w_loo).sum(1)  # [B]
            known = labels >= 0
            logits = torch.where(onehot_x.bool(), own_logit[:, None], logits)
            valid = (counts >= 1)[None, :] & ~onehot_x.bool()  # other people: any clip
            valid = valid | (onehot_x.bool() & (own_count >= 1)[:, None] & known[:, None])
            # No within-person spread in the bank (its first step, or constant features): no
            # covariance, so no probe.
            valid = valid & (dof >= 1) & (scatter.diagonal().sum() > 0)
        return logits, valid

    def score(
        self, x: torch.Tensor, labels: torch.Tensor, modality: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Clip-mean word-ID x [B, D] with person labels [B] -> (loss, accuracy), both 0-d,
        from one fit of the probe (`logits`).

        loss: KL(uniform || softmax) of the probe's logits over the people it can name,
        averaged over the clips: 0 when the probe cannot tell them apart at all; its gradient,
        softmax - 1/K, does not vanish when the probe is sure (unlike `uniform_softmax_loss`).
        A clip whose probe can name fewer than two people adds 0.
        accuracy (detached, for logging): the share of the clips whose own person the probe
        can name and does; chance is about one in the number of people it can name.
        """
        logits, valid = self.logits(x, labels, modality)
        logp = logits.masked_fill(~valid, -1e30).log_softmax(1)  # [B, K]
        n = valid.sum(1)  # [B]
        mean_logp = torch.where(valid, logp, 0.0).sum(1) / n.clamp(min=1)  # [B]
        per_clip = -(mean_logp + n.clamp(min=1).float().log())  # [B]
        usable = n >= 2
        loss = (per_clip * usable).sum() / usable.sum().clamp(min=1)
        pred = logp.detach().argmax(1)  # [B]
        own = labels.clamp(min=0)
        scored = (labels >= 0) & valid.gather(1, own[:, None])[:, 0]
        accuracy = ((pred == labels) & scored).sum().float() / scored.sum().clamp(min=1)
        return loss, accuracy


def _onehot(labels: torch.Tensor, k: int) -> torch.Tensor:
    """labels [N] in [0, k) or -1 -> float one-hot [N, k], all zeros where the label is -1."""
    return F.one_hot(labels.clamp(min=0), k).float() * (labels >= 0)[:, None]
