"""What a run directory shows a person: the loss curves and sample grids, kept current.

    RUN/metrics.jsonl ──plot_losses──► RUN/losses.png
    model + held-out batch ──sample_grid──► RUN/samples/gen_000500.png
    model + held-out clip ──sample_video──► RUN/samples/gen_000500.mp4 (with the clip's sound)

Both write to a temporary name and rename, so a viewer never sees half a file.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from fastdavs import steps
from fastdavs.atomic import replace_with
from fastdavs.data.shards import ShardSet
from fastdavs.model import DavsModel

SKIP_KEYS = {"stage", "step", "samples_per_s", "bad_steps"}


def plot_losses(metrics: Path, out: Path) -> Path | None:
    """One panel per stage, one line per loss part (symmetric-log scale where no value is
    negative: losses span several decades and the adversaries' uniform losses reach 0)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    stages = [s for s in steps.STAGES if any(r["stage"] == s for r in records)]
    if not stages:
        return None
    fig, axes = plt.subplots(1, len(stages), figsize=(5 * len(stages), 3.6), squeeze=False)
    for ax, stage in zip(axes[0], stages, strict=True):
        rows = [r for r in records if r["stage"] == stage]
        keys = [k for k in rows[-1] if k not in SKIP_KEYS]
        for key in keys:
            pts = [(r["step"], r[key]) for r in rows if key in r]
            ax.plot(*zip(*pts, strict=True), label=key, linewidth=1)
        if all(r[k] >= 0 for r in rows for k in keys if k in r):
            ax.set_yscale("symlog", linthresh=1e-4)
        ax.set_title(f"stage {stage}")
        ax.set_xlabel("step")
        ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    path = replace_with(out, lambda p: fig.savefig(p, dpi=100))
    plt.close(fig)
    return path


@torch.no_grad()
def sample_grid(model: DavsModel, batch: dict, out: Path, clips: int = 4) -> Path:
    """Rows of clips: identity frame | real run | audio-driven | video-driven generation."""
    import cv2

    was_training = model.training
    model.eval()
    small = {k: v[:clips] for k, v in batch.items()}
    fwd = steps.forward(model, small, "gen")
    model.train(was_training)
    rows = []
    for b in range(len(small["word"])):
        tiles = [small["identity"][b]]
        for run in (fwd.real, fwd.fake_a, fwd.fake_v):
            tiles += list(run[b])
        row = torch.cat([t.float().clamp(0, 1) for t in tiles], dim=2)  # [3, S, (1+3G) S]
        rows.append(row)
    grid = torch.cat(rows, dim=1).permute(1, 2, 0).mul(255).round().byte().cpu().numpy()
    bgr = cv2.cvtColor(np.ascontiguousarray(grid), cv2.COLOR_RGB2BGR)
    out.parent.mkdir(parents=True, exist_ok=True)
    return replace_with(out, lambda p: cv2.imwrite(str(p), bgr))


@torch.no_grad()
def sample_video(model: DavsModel, shards: ShardSet, index: int, out: Path) -> Path:
    """An mp4 of audio-driven generation for clip `index` of `shards`, side by side with the
    real frames: the clip's identity frame and its MFCC windows drive all 25 stored frames
    (video frames FIRST_FRAME.. of the source clip), and the source clip's sound over the same
    span plays with them. Frames are scaled up to at least 256 px high, for viewing."""
    import cv2

    from fastdavs.audio import FIRST_FRAME, SAMPLE_RATE
    from fastdavs.data.video_io import read_clip, write_mp4

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    real = torch.from_numpy(np.array(shards.frames(index)))  # [T, A, A, 3] uint8
    s, a = model.cfg.image_size, real.shape[1]
    c = (a - s) // 2
    real = real[:, c : c + s, c : c + s].permute(0, 3, 1, 2).float().div(255)  # [T, 3, S, S]
    mfcc = torch.from_numpy(shards.mfcc(index).astype(np.float32))  # [T, 20, 12]
    ident = model.encode_identity(real[:1].to(device))
    fake = model.generate(ident, model.encode_audio(mfcc[None].to(device)))[0].cpu()
    model.train(was_training)
    pair = torch.cat((real, fake.float().clamp(0, 1)), dim=3)  # [T, 3, S, 2S]
    video = pair.permute(0, 2, 3, 1).mul(255).round().byte().numpy()  # [T, S, 2S, 3]
    scale = max(1, -(-256 // s))
    video = np.stack(
        [cv2.resize(f, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST) for f in video]
    )
    audio = None
    if shards.index.source:
        source = Path(shards.index.source) / shards.clip_ids[index]
        start = FIRST_FRAME * SAMPLE_RATE // 25
        audio = read_clip(source).audio[start : start + len(video) * SAMPLE_RATE // 25]
    out.parent.mkdir(parents=True, exist_ok=True)
    return write_mp4(out, video, audio)
