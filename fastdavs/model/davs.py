"""`DavsModel`: every DAVS module in one container, plus the glue of the data flow.

    identity image ──IdentityEncoder──► pid vector + skip features ─┐
    video frames ──VideoWordEncoder──┐                              ├─Generator──► frames
    MFCC windows ──AudioWordEncoder──┴─► per-frame word-ID (wid) ───┘
    wid sequences ──WordClassifier──► word logits (lip reading, shared by both modalities)

The adversaries and discriminators sit beside: ModalityDiscriminator (audio vs video wid),
PidWordAdversary (words from pid features), WidPersonAdversary (identity from wid features),
IdentityClassifier (pid pretraining) and SequenceDiscriminator (frame stacks + audio sync).
Parameters split into the generator side (one Adam) and the discriminator side (another),
as in the original `optimizer_G` / `optimizer_D`, with the wid->person adversary added to D.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from fastdavs.config import DavsConfig
from fastdavs.model.adversaries import (
    IdentityClassifier,
    ModalityDiscriminator,
    PidWordAdversary,
    WidPersonAdversary,
)
from fastdavs.model.audio_encoder import AudioWordEncoder
from fastdavs.model.discriminator import SequenceDiscriminator
from fastdavs.model.generator import Generator
from fastdavs.model.identity_encoder import IdentityEncoder, IdentityFeatures
from fastdavs.model.video_encoder import VideoWordEncoder
from fastdavs.model.word_classifier import WordClassifier

GENERATOR_SIDE = (
    "identity_encoder",
    "identity_classifier",
    "video_encoder",
    "audio_encoder",
    "word_classifier",
    "generator",
)
DISCRIMINATOR_SIDE = (
    "modality_discriminator",
    "pid_word_adversary",
    "wid_person_adversary",
    "sequence_discriminator",
)


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
        self.generator = Generator(cfg)
        self.modality_discriminator = ModalityDiscriminator(cfg)
        self.pid_word_adversary = PidWordAdversary(cfg)
        self.wid_person_adversary = WidPersonAdversary(cfg)
        self.sequence_discriminator = SequenceDiscriminator(cfg)

    def generator_parameters(self) -> Iterator[nn.Parameter]:
        for name in GENERATOR_SIDE:
            yield from getattr(self, name).parameters()

    def discriminator_parameters(self) -> Iterator[nn.Parameter]:
        for name in DISCRIMINATOR_SIDE:
            yield from getattr(self, name).parameters()

    # ---- data flow -------------------------------------------------------------------------
    def encode_identity(self, images: torch.Tensor) -> IdentityFeatures:
        """images [B, 3, H, W] in [0, 1] -> IdentityFeatures (vec [B, pid_dim], skips)."""
        return self.identity_encoder(images)

    def encode_video(self, frames: torch.Tensor) -> torch.Tensor:
        """frames [B, T, 3, H, W] -> wid [B, T, word_dim], one batched pass over B*T frames."""
        b, t = frames.shape[:2]
        wid = self.video_encoder(frames.flatten(0, 1))  # [B*T, D]
        return wid.view(b, t, -1)

    def encode_audio(self, mfcc: torch.Tensor) -> torch.Tensor:
        """mfcc [B, T, 20, 12] windows -> wid [B, T, word_dim]."""
        b, t = mfcc.shape[:2]
        wid = self.audio_encoder(mfcc.flatten(0, 1))  # [B*T, D]
        return wid.view(b, t, -1)

    def generate(self, identity: IdentityFeatures, wid: torch.Tensor) -> torch.Tensor:
        """identity features of B faces, wid [B, T, word_dim] -> frames [B, T, 3, H, W]."""
        return self.generator(identity.vec, identity.net2, wid)
