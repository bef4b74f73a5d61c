"""Generator G (spec/davs.md §1.7): (pid vector, identity skip features, word-ID vector) -> frame.

The last step of the data flow. The identity encoder gives, once per identity, the pid vector and
its `net2` features (the skip); the audio or video encoder gives one word-ID vector per frame.
G decodes every frame on its own, with no recurrence and no previous-frame input, so the frames
of a clip are independent and `forward` decodes all of them in one batched pass (the original
looped over frames). `decode` is the per-frame function that the low-latency engine exports.

With the `paper` preset (256 px, width 1.0) the layer list is the original `Decoder`; other
presets scale the channels with `cfg.ch` and keep the stages of the last resolutions (see
`STAGES`). Output is an RGB image in [0, 1] (tanh, then (x + 1) / 2).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fastdavs.config import DavsConfig

# image_size / input resolution of a stage -> (original output channels, number of convs).
# Paper (256 px): 4 -> 8 -> 16 -> 32 -> 64 -> 128 -> 256. The skip joins the ratio-8 stage,
# whose input is at image_size / 8, the resolution of the identity encoder's net2.
STAGES = {64: (512, 2), 32: (512, 3), 16: (256, 4), 8: (256, 4), 4: (128, 3), 2: (64, 2)}
SKIP_RATIO = 8


class GenConvBlock(nn.Sequential):
    """n x [conv 3x3, BatchNorm, ReLU]: [N, C_in, h, w] -> [N, C_out, h, w].

    Kaiming-normal (fan_out) init as the original `ConvBlock`. The convolutions are bias-free:
    the BatchNorm right after each one subtracts any constant (the original's biases fold into
    `running_mean` when loading its weights), as in the identity encoder.
    """

    def __init__(self, in_channels: int, out_channels: int, n: int):
        layers: list[nn.Module] = []
        for i in range(n):
            cin = in_channels if i == 0 else out_channels
            conv = nn.Conv2d(cin, out_channels, 3, padding=1, bias=False)
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            layers += [conv, nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]
        super().__init__(*layers)


class Generator(nn.Module):
    """G: decodes one face frame per (pid, skip, word-ID) triple. Outputs images in [0, 1]."""

    def __init__(self, cfg: DavsConfig):
        super().__init__()
        ch = cfg.ch
        self.image_size = cfg.image_size
        # 1x1 -> 4x4. Bias-free because BatchNorm follows (see GenConvBlock).
        self.stem = nn.Sequential(
            nn.ConvTranspose2d(cfg.pid_dim + cfg.word_dim, ch(512), 4, bias=False),
            nn.BatchNorm2d(ch(512)),
            nn.ReLU(inplace=True),
        )
        # One stage per input resolution 2^k = 4, 8, ..., image_size / 2. Sizes above 256 px have
        # ratios above 64 and repeat the first stage's (512, n=2) at their extra low resolutions.
        ratios = [cfg.image_size >> k for k in range(2, cfg.image_size.bit_length() - 1)]
        self.stages = nn.ModuleList()
        in_channels = ch(512)
        for ratio in ratios:
            out, n = STAGES[min(ratio, 64)]
            skip = ch(160) if ratio == SKIP_RATIO else 0
            self.stages.append(GenConvBlock(skip + in_channels, ch(out), n))
            in_channels = ch(out)
        self.skip_stage = ratios.index(SKIP_RATIO)
        # The original's head uses ConvTranspose2d 3x3 s1 p1 (a convolution with flipped
        # weights); kept so that its weights load as they are.
        self.head = nn.Sequential(
            nn.ConvTranspose2d(in_channels, ch(32), 3, padding=1, bias=False),
            nn.BatchNorm2d(ch(32)),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(ch(32), 3, 3, padding=1),
            nn.Tanh(),
        )

    def decode(self, pid: torch.Tensor, skip: torch.Tensor, wid: torch.Tensor) -> torch.Tensor:
        """One frame per row: pid [N, pid_dim], skip [N, ch(160), H/8, W/8], wid [N, word_dim]
        -> images [N, 3, H, W] in [0, 1]. pid and skip may have one row instead (one face's,
        expanded to the N frames without a copy)."""
        n = wid.shape[0]  # a traced size in ONNX export (len() would be a constant)
        x = torch.cat((pid.expand(n, -1), wid), 1)[:, :, None, None]  # [N, pid + word, 1, 1]
        x = self.stem(x)  # [N, ch(512), 4, 4]
        for i, stage in enumerate(self.stages):
            if i == self.skip_stage:  # skip first, as the original
                x = torch.cat((skip.expand(n, -1, -1, -1), x), 1)  # [N, ch(160) + C, H/8, W/8]
            # The original's PyTorch 0.2 bilinear Upsample behaved like align_corners=True; that
            # only matters when loading its weights.
            x = F.interpolate(stage(x), scale_factor=2, mode="bilinear", align_corners=False)
        return (self.head(x) + 1) / 2  # [N, 3, H, W]

    def forward(self, pid: torch.Tensor, skip: torch.Tensor, wid: torch.Tensor) -> torch.Tensor:
        """A clip per row: pid [B, pid_dim], skip [B, ch(160), H/8, W/8], wid [B, T, word_dim]
        -> frames [B, T, 3, H, W] in [0, 1].

        All B*T frames go through one `decode`. In eval mode this equals decoding frame by frame;
        in train mode BatchNorm statistics span all B*T frames instead of the original's B per
        frame index.
        """
        B, T, D = wid.shape
        pid = pid[:, None].expand(B, T, pid.shape[1]).reshape(B * T, -1)  # [B*T, pid_dim]
        skip = skip[:, None].expand(B, T, *skip.shape[1:]).flatten(0, 1)  # [B*T, C2, H/8, W/8]
        frames = self.decode(pid, skip, wid.reshape(B * T, D))  # [B*T, 3, H, W]
        return frames.view(B, T, *frames.shape[1:])  # [B, T, 3, H, W]
