"""`DavsModel`: every DAVS module in one container, plus the glue of the data flow.

    identity image ──IdentityEncoder──► pid vector + skip features ─┐
    video frames ──VideoWordEncoder──┐                              ├─Generator──► frames
    MFCC windows ──AudioWordEncoder──┴─► per-frame word-ID (wid) ───┘
    wid sequences ──WordClassifier──► word logits (lip reading, shared by both modalities)

The generator is the one `cfg.generator` names: "davs", the original decoder (generator.py,
reads the pid vector and the skip), or "mouth_editor" (mouth_editor.py, reads the identity
image itself and edits its lower face; the pid vector is then not used for generation).
`encode_identity` computes what either needs once per face (`EncodedIdentity`), `generate`
decodes any number of frames from it.

The adversaries and discriminators sit beside: ModalityDiscriminator (audio vs video wid),
PidWordAdversary (words from pid features), WidPersonAdversary (identity from wid features),
PersonProbe (identity from clip-mean wid, refitted in closed form every step; no parameters),
IdentityClassifier (pid pretraining) and SequenceDiscriminator (frame stacks + audio sync).
Which implementation runs the fused ops (temporal convolutions, contrastive loss) is a run-time
choice, not part of the architecture: `set_kernel_backend`, "auto" until a caller sets it.
Parameters split into the generator side (one Adam) and the discriminator side (another),
as in the original `optimizer_G` / `optimizer_D`, with the wid->person adversary added to D.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import torch
from torch import nn

from fastdavs.config import DavsConfig
from fastdavs.data.audio import formant_warp_matrices
from fastdavs.data.phonemes import VISEME_DIMS
from fastdavs.model.adversaries import (
    IdentityClassifier,
    ModalityDiscriminator,
    PersonProbe,
    PidWordAdversary,
    WidPersonAdversary,
)
from fastdavs.model.audio_encoder import AudioWordEncoder
from fastdavs.model.discriminator import SequenceDiscriminator
from fastdavs.model.generator import Generator
from fastdavs.model.identity_encoder import IdentityEncoder
from fastdavs.model.layers import use_kernel_backend
from fastdavs.model.mouth_editor import EditorIdentity, MouthEditor
from fastdavs.model.video_encoder import VideoWordEncoder
from fastdavs.model.word_classifier import WordClassifier

GENERATOR_SIDE = (
    "identity_encoder",
    "identity_classifier",
    "video_encoder",
    "audio_encoder",
    "word_classifier",
    "generator",
    "viseme_head",
)
DISCRIMINATOR_SIDE = (
    "modality_discriminator",
    "pid_word_adversary",
    "wid_person_adversary",
    "sequence_discriminator",
)


class EncodedIdentity(NamedTuple):
    """What `DavsModel.encode_identity` keeps of B identity images: computed once per face and
    read by `generate` for every frame. S = image_size."""

    vec: torch.Tensor  # [B, pid_dim] the pid vector (the davs decoder's code; evaluation probes it)
    net2: torch.Tensor  # [B, ch(160), S/8, S/8] the davs decoder's skip
    edit: EditorIdentity | None  # the mouth editor's per-face half; None with the davs decoder


def colour_jitter(frames: torch.Tensor, strength: float) -> torch.Tensor:
    """frames [B, T, 3, H, W] in [0, 1] -> the same with one random colour change per clip:
    per-channel gain exp(U(-s, s)) and offset U(-s/4, s/4), clamped to [0, 1]
    (`DavsConfig.video_jitter`). Draws from the global RNG."""
    shape = (frames.shape[0], 1, frames.shape[2], 1, 1)  # [B, 1, 3, 1, 1]
    u = torch.rand((2, *shape), device=frames.device) * 2 - 1  # U(-1, 1)
    gain, offset = (u[0] * strength).exp(), u[1] * (strength / 4)
    return (frames * gain.to(frames.dtype) + offset.to(frames.dtype)).clamp(0, 1)


def cepstral_jitter(mfcc: torch.Tensor, strength: float) -> torch.Tensor:
    """mfcc [B, T, F, K] -> the same with one random offset per clip and coefficient, drawn
    from N(0, strength^2) and shared by every window and step of the clip
    (`DavsConfig.audio_jitter`). Draws from the global RNG."""
    offset = torch.randn((mfcc.shape[0], 1, 1, mfcc.shape[-1]), device=mfcc.device)  # [B,1,1,K]
    return mfcc + (offset * strength).to(mfcc.dtype)


def formant_warp(mfcc: torch.Tensor, strength: float) -> torch.Tensor:
    """mfcc [B, T, F, K] -> the same clips as if said with formants scaled by one random factor
    exp(U(-strength, strength)) per clip (`DavsConfig.audio_warp`,
    `fastdavs.data.audio.formant_warp_matrices`). Draws from the global RNG."""
    log_scale = (torch.rand(mfcc.shape[0]) * 2 - 1) * strength  # [B]
    warp = formant_warp_matrices(log_scale.exp()).to(mfcc.device, torch.float32)  # [B, K, K]
    out = torch.einsum("btfk,bjk->btfj", mfcc.float(), warp)
    return out.to(mfcc.dtype)


class DavsModel(nn.Module):
    """All DAVS modules for one `DavsConfig`; the config is kept on `self.cfg`."""

    def __init__(self, cfg: DavsConfig):
        super().__init__()
        self.cfg = cfg.validate()
        self.identity_encoder = IdentityEncoder(cfg)
        self.identity_classifier = IdentityClassifier(cfg)
        self.video_encoder = VideoWordEncoder(cfg)
        self.audio_encoder = AudioWordEncoder(cfg)
        self.word_classifier = WordClassifier(cfg)
        self.generator = MouthEditor(cfg) if cfg.generator == "mouth_editor" else Generator(cfg)
        self.modality_discriminator = ModalityDiscriminator(cfg)
        self.pid_word_adversary = PidWordAdversary(cfg)
        self.wid_person_adversary = WidPersonAdversary(cfg)
        self.person_probe = PersonProbe(cfg)  # no parameters: a bank of recent clips
        self.sequence_discriminator = SequenceDiscriminator(cfg)
        # Per-frame word-ID [..., D] -> the mouth's visemes [..., 4] (`LossWeights.viseme`).
        self.viseme_head = nn.Linear(cfg.word_dim, len(VISEME_DIMS)) if cfg.loss.viseme else None
        self.kernel_backend = "auto"  # of the fused ops; `set_kernel_backend`

    def set_kernel_backend(self, backend: str) -> DavsModel:
        """Run the fused ops with `backend`: "auto" (Triton kernels on CUDA, the PyTorch
        references elsewhere), "triton" or "ref" (the definition of correct; what export
        traces). Returns self. Raises ConfigError for another name."""
        use_kernel_backend(self, backend)
        self.kernel_backend = backend
        return self

    def generator_parameters(self) -> Iterator[nn.Parameter]:
        for name in GENERATOR_SIDE:
            module = getattr(self, name)
            if module is not None:  # viseme_head exists only with loss.viseme > 0
                yield from module.parameters()

    def discriminator_parameters(self) -> Iterator[nn.Parameter]:
        for name in DISCRIMINATOR_SIDE:
            yield from getattr(self, name).parameters()

    # ---- data flow -------------------------------------------------------------------------
    def encode_identity(self, images: torch.Tensor) -> EncodedIdentity:
        """images [B, 3, H, W] in [0, 1] -> EncodedIdentity (pid vector, skip, and with the
        mouth editor its encoding of the images' edit boxes)."""
        features = self.identity_encoder(images)
        edit = self.generator.encode(images) if isinstance(self.generator, MouthEditor) else None
        return EncodedIdentity(features.vec, features.net2, edit)

    def encode_video(self, frames: torch.Tensor) -> torch.Tensor:
        """frames [B, T, 3, H, W] -> wid [B, T, word_dim], one batched pass over B*T frames."""
        b, t = frames.shape[:2]
        if self.video_encoder.training and self.cfg.video_jitter:
            frames = colour_jitter(frames, self.cfg.video_jitter)
        wid = self.video_encoder(frames.flatten(0, 1))  # [B*T, D]
        return wid.view(b, t, -1)

    def encode_audio(self, mfcc: torch.Tensor) -> torch.Tensor:
        """mfcc [B, T, 20, 12] windows -> wid [B, T, word_dim]."""
        b, t = mfcc.shape[:2]
        if self.audio_encoder.training and self.cfg.audio_warp:
            mfcc = formant_warp(mfcc, self.cfg.audio_warp)
        if self.audio_encoder.training and self.cfg.audio_jitter:
            mfcc = cepstral_jitter(mfcc, self.cfg.audio_jitter)
        wid = self.audio_encoder(mfcc.flatten(0, 1))  # [B*T, D]
        return wid.view(b, t, -1)

    def generate(self, identity: EncodedIdentity, wid: torch.Tensor) -> torch.Tensor:
        """`encode_identity` of B faces, wid [B, T, word_dim] -> frames [B, T, 3, H, W]."""
        if isinstance(self.generator, MouthEditor):
            return self.generator(identity.edit, wid)
        return self.generator(identity.vec, identity.net2, wid)
