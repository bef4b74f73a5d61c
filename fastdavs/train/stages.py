"""The losses of the DAVS training stages, composed from the model and `fastdavs.model.losses`.

    pid     identity pretraining:  CE(IdentityClassifier(E_p(frame)), person)
    wid     shared word space:     CE_a + CE_v (shared classifier) + contrastive + modality flip
                                   (+ identity scatter and the person probe, when weighted);
                                   D side: the modality discriminator
    render  the generator:         reconstruction (half the clips audio-, half video-driven) +
                                   smoothness + audio word CE; the audio encoder trains with
                                   it, the other encoders and the word classifier are frozen
                                   (not in the original; 0 steps in `paper`)
    gen     joint generation:      everything of spec/davs.md §2.8 (G) and its D side

`pid` and `render` have no D side: one loss (`ONE_SIDED`), one optimiser step. `wid` and `gen`
are one `forward` (the shared activations) then a discriminator-side loss on detached
activations and a generator-side loss; the trainer steps D first, then G, as the original
`optimize_parameters`. A batch is what `fastdavs.data.dataset.DavsDataset` yields (collated):
identity [B,3,S,S], frames [B,L,3,S,S], mfcc [B,L,20,12], gen_start [B], adv_frames [B,P,3,S,S],
word [B], identity_label [B] (-1 where unknown). Every loss function returns (loss, parts), where
parts maps a loss name to its unweighted value (detached), for logging. Every term, and so the
total, is float32 (at least) under autocast too (`fastdavs.model.losses`: 16-bit terms would
overflow once weighted and scaled).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from fastdavs.data.dataset import take_run
from fastdavs.model import DavsModel, EncodedIdentity
from fastdavs.model.losses import (
    contrastive_loss,
    cross_entropy,
    gan_loss,
    identity_scatter_loss,
    modality_discriminator_loss,
    modality_flip_loss,
    reconstruction_loss,
    smoothness_loss,
    uniform_softmax_loss,
    view_consistency_loss,
)

STAGES = ("pid", "wid", "render", "gen")
SOFT_LABELS = 0.1  # discriminator targets: real 1 - U(0, 0.1), fake U(0, 0.1)

Parts = dict[str, torch.Tensor]


def _sum(weighted: list[tuple[float, str, torch.Tensor]]) -> tuple[torch.Tensor, Parts]:
    """sum of weight * value, skipping zero weights; parts keep the unweighted values."""
    total = sum(w * v for w, _, v in weighted if w)
    return total, {name: v.detach() for _, name, v in weighted}


def _person_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy averaged over the items whose identity is known (label >= 0); 0 if none is.
    Masked rather than indexed, so that no count is read back to the host.

    Args:
        logits: [N, K] identity classifier logits.
        labels: [N] identity labels, -1 where unknown.
    """
    known = labels >= 0  # [N]
    per_item = cross_entropy(logits, labels.clamp(min=0), reduction="none")  # [N]
    return (per_item * known).sum() / known.sum().clamp(min=1)


# ---- pid ---------------------------------------------------------------------------------------
def pid_loss(model: DavsModel, batch: dict) -> tuple[torch.Tensor, Parts]:
    """Identity classification of the identity frame and the adversary frames of each clip."""
    frames = torch.cat((batch["identity"][:, None], batch["adv_frames"]), 1)  # [B, 1+P, 3, S, S]
    labels = batch["identity_label"][:, None].expand(frames.shape[:2]).flatten()
    logits = model.identity_classifier(model.identity_encoder(frames.flatten(0, 1)).vec)
    ce = _person_ce(logits, labels)
    return ce, {"pid_ce": ce.detach()}


# ---- render ------------------------------------------------------------------------------------
@contextlib.contextmanager
def frozen(*modules: nn.Module) -> Iterator[None]:
    """Run `modules` as fixed functions: eval mode (BatchNorm reads its running statistics and
    leaves them alone) and no parameter gradients, so autograd records nothing of them.
    Their modes and requires_grad flags are restored afterwards."""
    saved = [(m, m.training, [p.requires_grad for p in m.parameters()]) for m in modules]
    for m in modules:
        m.eval().requires_grad_(False)
    try:
        yield
    finally:
        for m, training, flags in saved:
            m.train(training)
            for p, flag in zip(m.parameters(), flags, strict=True):
                p.requires_grad_(flag)


def render_loss(model: DavsModel, batch: dict) -> tuple[torch.Tensor, Parts]:
    """The generator on the word space the wid stage learnt, with the audio encoder adapting
    to it. The first half of the batch (rounded up) is driven by its audio, the rest by its
    video, over the same run of G frames as `gen`, so that the generator learns both drives at
    the cost of one. Scored by the reconstruction loss (full frame + mouth box) of each half,
    the smoothness loss of the audio-driven half and the audio word cross-entropy through the
    word classifier. The identity and video encoders and the word classifier are frozen
    (`frozen`): the audio encoder may move only within what the classifier still reads as the
    right word, so its features keep their words while learning what the generator needs of
    them (the mouth). A step costs the frozen encoders' forward passes (the video encoder's
    over half the clips' G frames), the audio encoder over every window and the generator's
    forward and backward over B x G frames."""
    cfg, w = model.cfg, model.cfg.loss
    g, start = cfg.gan_frames, batch["gen_start"]
    real = take_run(batch["frames"], start, g)  # [B, G, 3, S, S]
    half = (real.shape[0] + 1) // 2  # audio-driven clips; the rest are video-driven
    wid_a = model.encode_audio(batch["mfcc"])  # [B, L, D]
    with frozen(model.identity_encoder, model.video_encoder, model.word_classifier):
        ce = cross_entropy(model.word_classifier(wid_a), batch["word"])
        wid_v = model.encode_video(real[half:])  # [B - half, G, D]
        ident = model.encode_identity(batch["identity"])  # the generator's own half trains
    wid = torch.cat((take_run(wid_a, start, g)[:half], wid_v))  # [B, G, D]
    fake = model.generate(ident, wid)  # [B, G, 3, S, S]
    box = cfg.mouth_box_px
    rec = (box, w.reconstruction, w.reconstruction_mouth)
    terms = [
        (1.0, "rec_audio", reconstruction_loss(fake[:half], real[:half], *rec)),
        (w.smoothness, "smoothness", smoothness_loss(fake[:half], batch["identity"][:half], box)),
        (w.word_ce, "ce_audio", ce),
    ]
    if half < real.shape[0]:  # a batch of one clip has no video-driven half
        terms.append((1.0, "rec_video", reconstruction_loss(fake[half:], real[half:], *rec)))
    return _sum(terms)


ONE_SIDED = {"pid": pid_loss, "render": render_loss}  # stages without a discriminator side


# ---- wid and gen: shared forward ---------------------------------------------------------------
class Forward(NamedTuple):
    wid_v: torch.Tensor  # [B, L, D] video word-ID features
    wid_a: torch.Tensor  # [B, L, D] audio word-ID features
    ident: EncodedIdentity | None  # of the identity frame (gen only)
    net1: torch.Tensor | None  # [B, P, C1, h, w] identity features of the adversary frames
    fake_a: torch.Tensor | None  # [B, G, 3, S, S] audio-driven generation of the gan run
    fake_v: torch.Tensor | None  # [B, G, 3, S, S] video-driven
    real: torch.Tensor | None  # [B, G, 3, S, S] the real frames of the run
    mfcc_run: torch.Tensor | None  # [B, G, 20, 12]
    wid_a_view: torch.Tensor | None  # [B, L, D] audio word-ID under another voice change


def forward(model: DavsModel, batch: dict, stage: str) -> Forward:
    """The activations both sides of a `wid` or `gen` step need."""
    wid_v = model.encode_video(batch["frames"])  # [B, L, D]
    wid_a = model.encode_audio(batch["mfcc"])
    # A second draw of the training-time voice changes (audio_warp, audio_jitter).
    view = model.encode_audio(batch["mfcc"]) if model.cfg.loss.view_consistency else None
    if stage == "wid":
        return Forward(wid_v, wid_a, None, None, None, None, None, None, view)
    cfg = model.cfg
    g, start = cfg.gan_frames, batch["gen_start"]
    ident = model.encode_identity(batch["identity"])
    b, p = batch["adv_frames"].shape[:2]
    net1 = model.identity_encoder.net1(batch["adv_frames"].flatten(0, 1))  # [B*P, C1, h, w]
    net1 = net1.view(b, p, *net1.shape[1:])  # [B, P, C1, h, w]
    fake_a = model.generate(ident, take_run(wid_a, start, g))  # [B, G, 3, S, S]
    fake_v = model.generate(ident, take_run(wid_v, start, g))
    real = take_run(batch["frames"], start, g)
    mfcc_run = take_run(batch["mfcc"], start, g)
    return Forward(wid_v, wid_a, ident, net1, fake_a, fake_v, real, mfcc_run, view)


def discriminator_loss(model: DavsModel, fwd: Forward, batch: dict) -> tuple[torch.Tensor, Parts]:
    """The D side: modality discriminator (wid, gen); both adversaries' classifier steps and the
    sequence discriminator with its sync head (gen). Inputs are detached from the encoders."""
    w = model.cfg.loss
    d = model.modality_discriminator
    wid_a, wid_v = fwd.wid_a.detach(), fwd.wid_v.detach()
    terms = [(1.0, "modality_d", modality_discriminator_loss(d(wid_a), d(wid_v)))]
    if fwd.fake_a is None:
        return _sum(terms)
    persons = batch["identity_label"][:, None].expand(wid_v.shape[:2]).flatten()
    wid_logits = model.wid_person_adversary(torch.cat((wid_a, wid_v)).flatten(0, 1))
    word_logits = model.pid_word_adversary(fwd.net1.detach())
    terms += [
        (w.adversary_ce, "pid_adv_ce", cross_entropy(word_logits, batch["word"])),
        (w.adversary_ce, "wid_adv_ce", _person_ce(wid_logits, persons.repeat(2))),
    ]
    seq_d = model.sequence_discriminator
    real_patch, real_sync = seq_d(fwd.real, fwd.mfcc_run)
    fake = torch.cat((fwd.fake_a, fwd.fake_v)).detach()  # [2B, G, 3, S, S]
    fake_patch, fake_sync = seq_d(fake, fwd.mfcc_run.repeat(2, 1, 1, 1))
    for name, on_real, on_fake in (
        ("d_patch", real_patch, fake_patch),
        ("d_sync", real_sync, fake_sync),
    ):
        value = 0.5 * (gan_loss(on_real, True, SOFT_LABELS) + gan_loss(on_fake, False, SOFT_LABELS))
        terms.append((1.0, name, value))
    return _sum(terms)


def generator_loss(
    model: DavsModel, fwd: Forward, batch: dict, stage: str
) -> tuple[torch.Tensor, Parts]:
    """The G side of `wid` or `gen` (spec/davs.md §2.8 for gen)."""
    cfg, w = model.cfg, model.cfg.loss
    word = batch["word"]
    d = model.modality_discriminator
    # Generation training detaches the video side of the contrastive loss (only audio is pulled
    # toward video); the wid stage trains both.
    video = fwd.wid_v.detach() if stage == "gen" else fwd.wid_v
    margin, kb = w.contrastive_margin, model.kernel_backend
    terms = [
        (w.word_ce, "ce_audio", cross_entropy(model.word_classifier(fwd.wid_a), word)),
        (w.word_ce, "ce_video", cross_entropy(model.word_classifier(fwd.wid_v), word)),
        (w.contrastive, "contrastive", contrastive_loss(fwd.wid_a, video, margin, backend=kb)),
        (w.modality_flip, "modality_flip", modality_flip_loss(d(fwd.wid_a), d(fwd.wid_v))),
    ]
    if w.identity_scatter:  # identity in the clip-mean word-ID, what fastdavs-eval's probes read
        persons, k = batch["identity_label"], cfg.num_identities
        for name, wid in (("scatter_audio", fwd.wid_a), ("scatter_video", fwd.wid_v)):
            terms.append((w.identity_scatter, name, identity_scatter_loss(wid.mean(1), persons, k)))
    if w.probe_uniform:  # the closed-form person probe, then this batch joins its bank
        probe, persons = model.person_probe, batch["identity_label"]
        means = (fwd.wid_a.mean(1), fwd.wid_v.mean(1))  # [B, D] each
        for m, (name, x) in enumerate(zip(("audio", "video"), means, strict=True)):
            loss, accuracy = probe.score(x, persons, m)
            terms.append((w.probe_uniform, f"probe_{name}", loss))
            terms.append((0.0, f"probe_{name}_acc", accuracy))
        probe.push(*means, persons)
    if w.view_consistency:  # the same words whoever says them
        consistency = view_consistency_loss(fwd.wid_a, fwd.wid_a_view)
        terms.append((w.view_consistency, "view_consistency", consistency))
    if w.viseme and stage == "wid":  # the mouth's ground truth from each frame's word-ID
        truth = batch["visemes"]  # [B, L, 4]
        for name, wid in (("viseme_audio", fwd.wid_a), ("viseme_video", fwd.wid_v)):
            guess = model.viseme_head(wid).float()  # [B, L, 4]
            terms.append((w.viseme, name, F.mse_loss(guess, truth)))
    if stage == "wid":
        return _sum(terms)
    box = cfg.mouth_box_px
    patch, sync = model.sequence_discriminator(
        torch.cat((fwd.fake_a, fwd.fake_v)), fwd.mfcc_run.repeat(2, 1, 1, 1)
    )
    wid = torch.cat((fwd.wid_a, fwd.wid_v)).flatten(0, 1)  # [2*B*L, D]
    rec = (box, w.reconstruction, w.reconstruction_mouth)
    terms += [
        (1.0, "rec_audio", reconstruction_loss(fwd.fake_a, fwd.real, *rec)),
        (1.0, "rec_video", reconstruction_loss(fwd.fake_v, fwd.real, *rec)),
        (w.smoothness, "smoothness", smoothness_loss(fwd.fake_a, batch["identity"], box)),
        (w.gan, "gan", gan_loss(patch, True)),
        (w.gan_sync, "gan_sync", gan_loss(sync, True)),
        (w.pid_uniform, "pid_uniform", uniform_softmax_loss(model.pid_word_adversary(fwd.net1))),
        (w.wid_uniform, "wid_uniform", uniform_softmax_loss(model.wid_person_adversary(wid))),
    ]
    return _sum(terms)
