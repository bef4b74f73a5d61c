"""Mouth editor (`generator="mouth_editor"`): edits the lower face of the identity frame so that
it says one word-ID vector per frame, in place of the DAVS decoder (generator.py).

The last step of the data flow, split like the engines split it:

    identity image [B, 3, S, S] ─crop edit box─► [B, 3, h, w] ─encode─► EditorIdentity
                                                  (once per face: the image and three skips)
    EditorIdentity + wid [B, T, word_dim] ─U-Net decoder─► residual [B*T, 3, h, w]
        ─× feather mask, pad to S x S─► + identity image ─► frames [B, T, 3, S, S] in [0, 1]

Why: the DAVS decoder redraws the whole face from a 1x1 code and one H/8 skip, which takes the
paper's GPU budget; in a CPU budget it draws an average face and ignores the speech (held-out
PSNR 17.6 dB, under the ~27 dB of copying the identity frame). Speech moves the mouth, jaw and
chin only, so the editor keeps every other pixel of the identity frame and learns a residual
over the edit box (`DavsConfig.edit_box_px`, lower face incl. jaw and chin; h and w are
multiples of 4). A small U-Net with skips at 1, 1/2 and 1/4 of the crop's resolution, the
word-ID projected (Linear) and added at 1/4 and 1/2. Its last convolution starts at zero, so
at initialisation the output is the identity frame exactly and training starts from the copy.

Where a U-Net concatenates a skip with the upsampled features and convolves both, this one
adds two convolutions, one of each (the same function: a convolution of a concatenation is the
sum of convolutions of its parts). The skip's share (`lateral1`, `lateral2`) depends on the
face alone, so it is computed once per face in `encode` and broadcast over the frames: per
frame there is no concatenation and no copy of the skips.

The residual fades out over `edit_feather_px` pixels towards the box's sides inside the frame
(a side on the frame's edge needs no ramp), so the edit has no seam. Everything outside the
box is the identity frame bit for bit.

No normalisation layers: per-sample statistics are not needed in a net this shallow, and
BatchNorm's train/eval mismatch with small batches hurt the decoder before. C1, C2, C3 are
cfg.ch(64), ch(128), ch(256) (16, 32, 64 at the small preset).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from fastdavs.config import DavsConfig

SLOPE = 0.2  # LeakyReLU


class EditorIdentity(NamedTuple):
    """The editor's per-face half: what the decoder reads for every frame of that face.
    (h, w) is the edit box's size in pixels; the skips are pre-activation sums."""

    image: torch.Tensor  # [B, 3, S, S] the identity frame, which the edit is pasted into
    skip1: torch.Tensor  # [B, C1, h, w]     the skip's share of the decoder's conv at 1
    skip2: torch.Tensor  # [B, C2, h/2, w/2] ... and at 1/2
    skip3: torch.Tensor  # [B, C3, h/4, w/4] the bottleneck; the word-ID is added to it


def identity_shapes(cfg: DavsConfig) -> dict[str, tuple[int, ...]]:
    """Shape of one face's EditorIdentity tensors, by field name (no batch axis)."""
    s = cfg.image_size
    top, bottom, left, right = cfg.edit_box_px
    h, w = bottom - top, right - left
    c1, c2, c3 = _widths(cfg)
    return {
        "image": (3, s, s),
        "skip1": (c1, h, w),
        "skip2": (c2, h // 2, w // 2),
        "skip3": (c3, h // 4, w // 4),
    }


def feather_mask(cfg: DavsConfig) -> torch.Tensor:
    """[h, w] blend weights of the edit box: 1 inside, falling linearly to 0 at each side of
    the box that lies inside the frame, over edit_feather_px pixels (pixel centres at
    (d + 0.5) / width for the d-th pixel from that side); 1 up to a side on the frame's edge."""
    s, width = cfg.image_size, cfg.edit_feather_px
    top, bottom, left, right = cfg.edit_box_px

    def ramp(n: int, fade_start: bool, fade_end: bool) -> torch.Tensor:  # [n]
        d = torch.arange(n, dtype=torch.float32) + 0.5
        r = torch.ones(n)
        if fade_start:
            r = torch.minimum(r, d / width)
        if fade_end:
            r = torch.minimum(r, d.flip(0) / width)
        return r

    rows = ramp(bottom - top, top > 0, bottom < s)
    cols = ramp(right - left, left > 0, right < s)
    return rows[:, None] * cols[None, :]


def _widths(cfg: DavsConfig) -> tuple[int, int, int]:
    return cfg.ch(64), cfg.ch(128), cfg.ch(256)


def _conv(in_channels: int, out_channels: int, stride: int = 1, half: bool = False) -> nn.Conv2d:
    """3x3 convolution, Kaiming-normal (fan_in) for the LeakyReLU that follows, zero bias.
    `half`: one of two convolutions whose outputs are summed (a skip's and the upsampled
    features'), each scaled by 1/sqrt(2) so that the sum starts at a single one's scale."""
    conv = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1)
    nn.init.kaiming_normal_(conv.weight, a=SLOPE, nonlinearity="leaky_relu")
    if half:
        conv.weight.data.mul_(0.5**0.5)
    nn.init.zeros_(conv.bias)
    return conv


def _act() -> nn.LeakyReLU:
    return nn.LeakyReLU(SLOPE)


def _lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, SLOPE)


def _up(x: torch.Tensor) -> torch.Tensor:  # [N, C, h, w] -> [N, C, 2h, 2w]
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


def _clamp01(x: torch.Tensor) -> torch.Tensor:
    """x clamped to [0, 1]; under autograd the gradient passes as if unclamped (straight
    through), so a pixel that one step pushed past the range is pulled back by the next instead
    of being stuck where the clamp's gradient is 0. The value is the clamp's exactly."""
    y = x.clamp(0, 1)
    return y + (x - x.detach()) if x.requires_grad else y


class MouthEditor(nn.Module):
    """Identity frame + word-ID -> frame with the lower face edited. Outputs images in [0, 1]."""

    def __init__(self, cfg: DavsConfig):
        super().__init__()
        c1, c2, c3 = _widths(cfg)
        self.image_size = cfg.image_size
        self.box = cfg.edit_box_px
        # per-face half: features at 1, 1/2 and 1/4 of the crop's resolution
        self.enc1 = nn.Sequential(_conv(3, c1), _act(), _conv(c1, c1), _act())
        self.enc2 = nn.Sequential(_conv(c1, c2, 2), _act(), _conv(c2, c2), _act())
        self.enc3 = nn.Sequential(_conv(c2, c3, 2), _act(), _conv(c3, c3))
        self.lateral2 = _conv(c2, c2, half=True)
        self.lateral1 = _conv(c1, c1, half=True)
        # per-frame half
        self.word3 = nn.Linear(cfg.word_dim, c3)
        self.word2 = nn.Linear(cfg.word_dim, c2)
        self.dec3 = nn.Sequential(_conv(c3, c3), _act(), _conv(c3, c3), _act())
        self.up2 = _conv(c3, c2, half=True)
        self.dec2 = nn.Sequential(_conv(c2, c2), _act())
        self.up1 = _conv(c2, c1, half=True)
        self.out = nn.Conv2d(c1, 3, 3, padding=1)
        nn.init.zeros_(self.out.weight)  # the residual starts at 0: an exact copy
        nn.init.zeros_(self.out.bias)
        # Derived from the config, so not saved with the weights.
        self.register_buffer("feather", feather_mask(cfg)[None, None], persistent=False)

    def encode(self, images: torch.Tensor) -> EditorIdentity:
        """images [B, 3, S, S] in [0, 1] -> EditorIdentity of those B faces."""
        top, bottom, left, right = self.box
        crop = images[:, :, top:bottom, left:right]  # [B, 3, h, w]
        f1 = self.enc1(crop)  # [B, C1, h, w]
        f2 = self.enc2(f1)  # [B, C2, h/2, w/2]
        skip3 = self.enc3(f2)  # [B, C3, h/4, w/4]
        return EditorIdentity(images, self.lateral1(f1), self.lateral2(f2), skip3)

    def forward(self, identity: EditorIdentity, wid: torch.Tensor) -> torch.Tensor:
        """A clip per row: EditorIdentity of B faces, wid [B, T, word_dim]
        -> frames [B, T, 3, S, S] in [0, 1]. The B*T frames go through the decoder in one
        batch; each face's tensors are broadcast over its T frames, not copied."""
        image, skip1, skip2, skip3 = identity
        B, T, D = wid.shape

        def plus(x: torch.Tensor, per_face: torch.Tensor) -> torch.Tensor:
            """x [B*T, C, ...] + per_face [B, C, ...] broadcast over each face's T frames."""
            return (x.view(B, T, *x.shape[1:]) + per_face[:, None]).flatten(0, 1)

        edit = self._edit(skip1, skip2, skip3, wid.reshape(B * T, D), plus)  # [B*T, 3, S, S]
        s = self.image_size
        return _clamp01(image[:, None] + edit.view(B, T, 3, s, s))  # [B, T, 3, S, S]

    def decode(
        self,
        image: torch.Tensor,
        skip1: torch.Tensor,
        skip2: torch.Tensor,
        skip3: torch.Tensor,
        wid: torch.Tensor,
    ) -> torch.Tensor:
        """One frame per row: the EditorIdentity fields with N rows each, or with one row (one
        face, broadcast over the N frames: no copy, and in an exported graph plain 4-D
        broadcasting adds, which OpenVINO keeps in its blocked layouts where the 5-D views of
        `forward` cost it layout reorders), wid [N, word_dim] -> frames [N, 3, S, S] in [0, 1]."""
        return _clamp01(image + self._edit(skip1, skip2, skip3, wid, torch.add))

    def _edit(
        self, skip1: torch.Tensor, skip2: torch.Tensor, skip3: torch.Tensor, wid: torch.Tensor, plus
    ) -> torch.Tensor:
        """The decoder: wid [M, word_dim] and the skips -> the edit [M, 3, S, S], 0 outside the
        edit box. `plus(x, skip)` adds a face's skip to the per-frame features x [M, ...]."""
        x = _lrelu(plus(self.word3(wid)[:, :, None, None], skip3))  # [M, C3, h/4, w/4]
        x = self.dec3(x)
        x = _lrelu(plus(self.up2(_up(x)) + self.word2(wid)[:, :, None, None], skip2))
        x = self.dec2(x)  # [M, C2, h/2, w/2]
        x = _lrelu(plus(self.up1(_up(x)), skip1))  # [M, C1, h, w]
        residual = self.out(x) * self.feather  # [M, 3, h, w]
        s, (top, bottom, left, right) = self.image_size, self.box
        return F.pad(residual, (left, s - right, top, s - bottom))  # [M, 3, S, S]
