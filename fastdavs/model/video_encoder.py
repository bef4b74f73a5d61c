"""Video word-ID encoder E_w^v (spec/davs.md §1.2): one face frame -> one word-ID vector.

A Face Alignment Network (FAN, Bulat & Tzimiropoulos 2017) truncated to one hourglass, whose
landmark-heatmap layer feeds a small head: BN, ReLU, a stride-2 conv to one channel, flatten,
LeakyReLU (0.2; the original's ReLU can die there, see `forward`), Linear. The audio word
encoder maps MFCC windows into the same word-ID space. With the `paper` preset (256 px, width
1.0) the layer list is that of the original `network/FAN_feature_extractor.py` (`FanFusion`);
other presets scale the channels with `cfg.ch` and the spatial sizes with `cfg.image_size`.
Weights use PyTorch's default init, as the original.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fastdavs.config import DavsConfig

HEAD_SLOPE = 0.2  # negative slope of the head's activation before the Linear
GREY = 0.5  # what the encoder sees outside the mouth box with video_region "mouth"


def _conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)


class FanConvBlock(nn.Module):
    """FAN's pre-activation residual block: [N, C_in, H, W] -> [N, C_out, H, W].

    Three chained BN-ReLU-conv3x3 steps with C_out/2, C_out/4 and C_out/4 outputs, concatenated,
    plus the input (through BN-ReLU-conv1x1 when the channel count changes).
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        half, quarter = out_channels // 2, out_channels // 4
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = _conv3x3(in_channels, half)
        self.bn2 = nn.BatchNorm2d(half)
        self.conv2 = _conv3x3(half, quarter)
        self.bn3 = nn.BatchNorm2d(quarter)
        self.conv3 = _conv3x3(quarter, quarter)
        if in_channels == out_channels:
            self.shortcut = nn.Identity()
        else:
            self.shortcut = nn.Sequential(
                nn.BatchNorm2d(in_channels),
                nn.ReLU(),
                nn.Conv2d(in_channels, out_channels, 1, bias=False),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out1 = self.conv1(F.relu(self.bn1(x)))  # [N, C_out/2, H, W]
        out2 = self.conv2(F.relu(self.bn2(out1)))  # [N, C_out/4, H, W]
        out3 = self.conv3(F.relu(self.bn3(out2)))  # [N, C_out/4, H, W]
        return torch.cat((out1, out2, out3), 1) + self.shortcut(x)  # [N, C_out, H, W]


def _dropout_half(x: torch.Tensor, training: bool) -> torch.Tensor:
    """Dropout(0.5) as `x * (u >= 0.5) * 2`: the same distribution as `F.dropout`, whose
    Bernoulli mask costs more on CPU (about 70 ms of a 2.4 s `small` gen step). The uniforms are
    drawn in logical (NCHW) order whatever x's memory layout, so a channels-last model drops the
    same units as a contiguous one from the same seed."""
    if not training:
        return x
    u = torch.rand(x.shape, dtype=x.dtype, device=x.device)  # [N, C, H, W], contiguous
    if x.is_contiguous(memory_format=torch.channels_last):
        u = u.contiguous(memory_format=torch.channels_last)
    return x * (u >= 0.5) * 2.0


class Hourglass(nn.Module):
    """FAN hourglass of `depth` levels at a fixed width: [N, C, H, W] -> [N, C, H, W].

    Each level adds an upper branch (a block at full resolution) to a lower branch (max-pool,
    block, the next level or a block at the bottom, block, upsample x2). As in the DAVS code
    (not the FAN paper), the upper branch goes through Dropout(0.5) and the upsampling is
    bilinear with align_corners=True (PyTorch 0.2's `F.upsample` behaviour).
    """

    def __init__(self, depth: int, channels: int):
        super().__init__()
        self.upper = FanConvBlock(channels, channels)
        self.down = FanConvBlock(channels, channels)
        self.inner = (
            Hourglass(depth - 1, channels) if depth > 1 else FanConvBlock(channels, channels)
        )
        self.up = FanConvBlock(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        upper = _dropout_half(self.upper(x), self.training)  # [N, C, H, W]
        lower = self.up(self.inner(self.down(F.max_pool2d(x, 2))))  # [N, C, H/2, W/2]
        lower = F.interpolate(lower, size=x.shape[-2:], mode="bilinear", align_corners=True)
        return upper + lower


class VideoWordEncoder(nn.Module):
    """E_w^v: frames [N, 3, S, S] in [0, 1] -> word-ID vectors [N, word_dim]."""

    def __init__(self, cfg: DavsConfig):
        super().__init__()
        ch = cfg.ch
        # Trunk up to the heatmaps. Convs directly followed by BatchNorm (the heatmap layer's is
        # the head's) are bias-free: the BN cancels a bias, and an original checkpoint's bias
        # folds into `running_mean`.
        self.stem = nn.Sequential(
            nn.Conv2d(3, ch(64), 7, stride=2, padding=3, bias=False),  # -> S/2
            nn.BatchNorm2d(ch(64)),
            nn.ReLU(),
            FanConvBlock(ch(64), ch(128)),
            nn.MaxPool2d(2),  # -> S/4
            FanConvBlock(ch(128), ch(128)),
            FanConvBlock(ch(128), ch(256)),
        )
        self.hourglass = Hourglass(cfg.hourglass_depth, ch(256))
        self.top = nn.Sequential(
            FanConvBlock(ch(256), ch(256)),
            nn.Conv2d(ch(256), ch(256), 1, bias=False),
            nn.BatchNorm2d(ch(256)),
            nn.ReLU(),
            nn.Conv2d(ch(256), cfg.num_landmarks, 1, bias=False),  # the heatmap layer
        )
        # Head: heatmaps -> one S/8 x S/8 map -> word-ID vector.
        self.head_norm = nn.BatchNorm2d(cfg.num_landmarks)
        self.head_conv = nn.Conv2d(cfg.num_landmarks, 1, 3, stride=2, padding=1)
        self.fc = nn.Linear((cfg.image_size // 8) ** 2, cfg.word_dim)
        # video_region "mouth": 1 in the mouth box, 0 elsewhere ([1, 1, S, S]; not saved, the
        # config rebuilds it). None: the whole face.
        region = None
        if cfg.video_region == "mouth":
            top, bottom, left, right = cfg.mouth_box_px
            region = torch.zeros(1, 1, cfg.image_size, cfg.image_size)
            region[..., top:bottom, left:right] = 1.0
        self.register_buffer("region", region, persistent=False)

    def heatmaps(self, frames: torch.Tensor) -> torch.Tensor:
        """Landmark-heatmap layer: [N, 3, S, S] -> [N, num_landmarks, S/4, S/4]."""
        if self.region is not None:  # the mouth box only, mid-grey around it
            frames = GREY + self.region.to(frames.dtype) * (frames - GREY)
        return self.top(self.hourglass(self.stem(frames)))

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.head_norm(self.heatmaps(frames)))  # [N, L, S/4, S/4]
        x = self.head_conv(x).flatten(1)  # [N, 1, S/8, S/8] -> [N, (S/8)^2]
        # The original has a ReLU here. On a single-channel map it can die for good: in a
        # `small` run at lr 1e-3 every value of this map was negative for every frame, so the
        # word-ID vector was the same constant for every input. A leaky ReLU keeps a gradient.
        return self.fc(F.leaky_relu(x, HEAD_SLOPE))  # [N, word_dim]
