"""Sequence discriminator D_seq (spec/davs.md §1.8): a stack of frames + their MFCC windows ->
(PatchGAN logits, audio-sync logit).

It judges the generator's output. T frames are stacked on the channel axis (3T channels) and read
by a PatchGAN; its last feature map, cropped to the mouth area, meets an encoding of the T MFCC
windows in the audio-sync head, which asks whether the mouths match the audio. `frames=1` is the
original single-frame `netD`, `frames=gan_frames` (6) the `netD_mul` that training uses.
Both heads output logits (no sigmoid; losses use BCE-with-logits).

With the `paper` preset (256 px) the map before the patch head is S = 31 (S = H/8 - 1) and the
mouth crop is rows 19:28, cols 11:20 (9x9) as in the original; `mouth_crop` scales it to other
sizes.
"""

from __future__ import annotations

import torch
from torch import nn

from fastdavs.config import DavsConfig
from fastdavs.model.layers import MfccConvBranch


def mouth_crop(s: int) -> tuple[int, int, int]:
    """(top, left, size) of the mouth crop in an s x s feature map; (19, 11, 9) at s = 31."""
    size = min(s, max(3, round(9 * s / 31)))
    top = min(round(19 * s / 31), s - size)
    left = min(round(11 * s / 31), s - size)
    return top, left, size


def _init_weights(m: nn.Module) -> None:
    """As the original `weights_init`: convs N(0, 0.02), BatchNorm weights N(1, 0.02), biases 0."""
    if isinstance(m, nn.Conv2d):
        nn.init.normal_(m.weight, 0.0, 0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


class SequenceDiscriminator(nn.Module):
    """D_seq: frames [B, T, 3, H, W] in [0, 1] + their MFCC windows [B, T, F, K] = [B, T, 20, 12]
    -> (patch logits [B, 1, H/8 - 2, W/8 - 2], sync logits [B]), with T = `frames`."""

    def __init__(self, cfg: DavsConfig, frames: int | None = None):
        super().__init__()
        ch = cfg.ch
        self.frames = cfg.gan_frames if frames is None else frames
        if self.frames < 1:
            raise ValueError(f"SequenceDiscriminator: frames={frames} must be at least 1")
        self.image_size = cfg.image_size
        s = cfg.image_size // 8 - 1
        self.crop = mouth_crop(s)
        c = self.crop[2]

        def down(cin: int, cout: int, stride: int) -> list[nn.Module]:  # conv 4x4, BN, LReLU
            conv = nn.Conv2d(cin, cout, 4, stride, padding=1, bias=False)
            return [conv, nn.BatchNorm2d(cout), nn.LeakyReLU(0.2, inplace=True)]

        # PatchGAN, ndf = ch(64), 3 layers: H -> H/2 -> H/4 -> H/8 -> S = H/8 - 1
        self.trunk = nn.Sequential(
            nn.Conv2d(3 * self.frames, ch(64), 4, 2, padding=1),  # no BN on the first layer
            nn.LeakyReLU(0.2, inplace=True),
            *down(ch(64), ch(128), 2),
            *down(ch(128), ch(256), 2),
            *down(ch(256), ch(512), 1),
        )
        self.patch = nn.Conv2d(ch(512), 1, 4, 1, padding=1)  # S -> S - 1
        # Audio-sync head, video side: mouth crop c x c -> (c-2) x (c-2) -> 1 x 1 (9 -> 7 -> 1).
        self.mouth = nn.Sequential(
            nn.Conv2d(ch(512), ch(512), 3, bias=False),
            nn.BatchNorm2d(ch(512)),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ch(512), ch(512), c - 2),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Flatten(1),
        )
        # Audio side. The original's branch has BatchNorm but no activation between its
        # convolutions (an affine map in eval mode); this reuses the audio encoder's branch A
        # with LeakyReLU between the layers and BatchNorm after the last.
        self.mfcc = MfccConvBranch(
            self.frames, (ch(64), ch(128), ch(256), ch(256)), final_norm=True
        )
        # The original has no activation between these two layers, which makes them one affine
        # map; the LeakyReLU gives the hidden layer a purpose.
        self.sync = nn.Sequential(
            nn.Linear(ch(512) + ch(256), ch(512)),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(ch(512), 1),
        )
        self.apply(_init_weights)

    def forward(
        self, frames: torch.Tensor, mfcc: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        B, T, C, H, W = frames.shape
        if (self.frames, self.image_size, self.image_size) != (T, H, W):
            raise ValueError(
                f"SequenceDiscriminator built for [B, {self.frames}, 3, {self.image_size}, "
                f"{self.image_size}] frames, got {list(frames.shape)}"
            )
        x = frames.reshape(B, T * C, H, W)  # frame-major channels [B, 3T, H, W]
        x = self.trunk(x)  # [B, ch(512), S, S]
        patch = self.patch(x)  # [B, 1, S - 1, S - 1]
        top, left, c = self.crop
        mouth = x[:, :, top : top + c, left : left + c]  # [B, ch(512), c, c]
        video = self.mouth(mouth)  # [B, ch(512)]
        audio = self.mfcc(mfcc)  # T windows as channels: [B, T, 20, 12] -> [B, ch(256)]
        sync = self.sync(torch.cat((video, audio), 1)).squeeze(1)  # [B, ch(512) + ch(256)] -> [B]
        return patch, sync
