"""What a run directory shows a person: the loss curves and sample grids, kept current.

    RUN/metrics.jsonl ──plot_losses──► RUN/losses.png
    model + held-out batch ──sample_grid──► RUN/samples/gen_000500.png
    model + held-out clip ──sample_video──► RUN/samples/gen_000500.mp4 (with the clip's sound)

The samples set each generation beside what judges it: identity frame | real | audio-driven |
video-driven | shuffled audio (another clip's speech), under a labelled header. A generator
that ignores the speech draws the same mouth in the last three groups, and the identity frame
in all of them. Both write to a temporary name and rename, so a viewer never sees half a file.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from fastdavs.data.shards import ShardSet
from fastdavs.io.atomic import replace_with
from fastdavs.model import DavsModel
from fastdavs.train import stages

SKIP_KEYS = {"stage", "step", "samples_per_s", "bad_steps"}


def plot_losses(metrics: Path, out: Path) -> Path | None:
    """One panel per stage, one line per loss part (symmetric-log scale where no value is
    negative: losses span several decades and the adversaries' uniform losses reach 0)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    present = [s for s in stages.STAGES if any(r["stage"] == s for r in records)]
    if not present:
        return None
    fig, axes = plt.subplots(1, len(present), figsize=(5 * len(present), 3.6), squeeze=False)
    for ax, stage in zip(axes[0], present, strict=True):
        rows = [r for r in records if r["stage"] == stage]
        # Every part any record has: a record whose steps were all skipped has none.
        keys = list(dict.fromkeys(k for r in rows for k in r if k not in SKIP_KEYS))
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


# The columns of the sample pictures, left to right.
COLUMNS = ("identity", "real", "audio-driven", "video-driven", "shuffled audio")
GRID_FRAMES = 6  # frames per column group of the grid, evenly spaced over the sequence
MIN_TILE = 64  # grid tiles are scaled up to at least this many pixels, so the labels fit
GAP = 4  # white pixels between the column groups


@torch.no_grad()
def sample_grid(model: DavsModel, batch: dict, out: Path, clips: int = 4) -> Path:
    """A PNG with a labelled header row and one row per clip: identity frame | real |
    audio-driven | video-driven | shuffled audio (the identity frame driven by another clip's
    audio, `evaluate.shuffled_partners` within these clips: another word where they have two).
    Each group shows GRID_FRAMES frames evenly spaced over the item's L sequence frames; all
    L are generated from the item's identity frame, MFCC windows and real frames.

    Args:
        model: run in eval mode (its mode is restored after), on its own device.
        batch: evaluation items of `DavsDataset` ("identity", "frames", "mfcc", "word"), on the
            model's device; the first `clips` are drawn.
    """
    import cv2

    from fastdavs.evaluate.run import shuffled_partners

    small = {k: batch[k][:clips] for k in ("identity", "frames", "mfcc", "word")}
    partners = torch.from_numpy(shuffled_partners(small["word"].cpu().numpy()))
    runs = _drive(model, small["identity"], small["frames"], small["mfcc"], partners)
    length = small["frames"].shape[1]
    picks = np.unique(np.linspace(0, length - 1, min(length, GRID_FRAMES)).round().astype(int))
    s = small["frames"].shape[-1]
    scale = max(1, -(-MIN_TILE // s))
    rows = []
    for b in range(len(partners)):
        groups = [small["identity"][b][None]] + [run[b, picks] for run in runs]  # [n, 3, S, S]
        rows.append([_tiles(g, scale) for g in groups])
    widths = [g.shape[1] for g in rows[0]]
    body = np.concatenate([_join(row, GAP) for row in rows], axis=0)
    grid = np.concatenate([_header(widths, GAP, COLUMNS), body], axis=0)
    bgr = cv2.cvtColor(grid, cv2.COLOR_RGB2BGR)
    out.parent.mkdir(parents=True, exist_ok=True)
    return replace_with(out, lambda p: cv2.imwrite(str(p), bgr))


@torch.no_grad()
def sample_video(model: DavsModel, shards: ShardSet, index: int, out: Path) -> Path:
    """An mp4 of clip `index` of `shards`, with a labelled header: identity frame | real |
    audio-driven | video-driven | shuffled audio, all 25 stored frames (video frames
    FIRST_FRAME.. of the source clip), generated from the clip's first stored frame. The
    shuffled panel is driven by the audio of clip `evaluate.shuffled_partners(shards.words)
    [index]` (another word); the sound is the clip's own, over the same span. Frames are
    scaled up to at least 256 px high, for viewing."""
    import cv2

    from fastdavs.data.audio import FIRST_FRAME, SAMPLE_RATE
    from fastdavs.data.video_io import read_clip, write_mp4
    from fastdavs.evaluate.run import shuffled_partners

    s = model.cfg.image_size
    device = next(model.parameters()).device
    partner = int(shuffled_partners(shards.words)[index])
    real = _centre(shards.frames(index), s)  # [T, 3, S, S]
    mfcc = torch.from_numpy(np.stack([shards.mfcc(i) for i in (index, partner)]).astype(np.float32))
    runs = _drive(
        model,
        real[:1].to(device),
        real[None].to(device),
        mfcc[:1].to(device),
        torch.tensor([0]),
        shuffled_mfcc=mfcc[1:].to(device),
    )
    t = len(real)
    panels = [real[:1].expand(t, -1, -1, -1)] + [run[0].cpu() for run in runs]  # [T, 3, S, S]
    video = torch.cat([p.float().clamp(0, 1) for p in panels], dim=3)  # [T, 3, S, 5S]
    video = video.permute(0, 2, 3, 1).mul(255).round().byte().numpy()  # [T, S, 5S, 3]
    scale = max(1, -(-256 // s))
    video = np.stack(
        [cv2.resize(f, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST) for f in video]
    )
    header = _header([s * scale] * len(COLUMNS), 0, COLUMNS)
    video = np.concatenate([np.broadcast_to(header, (t, *header.shape)), video], axis=1)
    audio = None
    if shards.index.source:
        source = Path(shards.index.source) / shards.clip_ids[index]
        start = FIRST_FRAME * SAMPLE_RATE // 25
        audio = read_clip(source).audio[start : start + t * SAMPLE_RATE // 25]
    out.parent.mkdir(parents=True, exist_ok=True)
    return write_mp4(out, video, audio)


def _drive(
    model: DavsModel,
    identity: torch.Tensor,
    frames: torch.Tensor,
    mfcc: torch.Tensor,
    partners: torch.Tensor,
    shuffled_mfcc: torch.Tensor | None = None,
) -> tuple[torch.Tensor, ...]:
    """(real, audio-driven, video-driven, shuffled-audio) runs [B, T, 3, S, S] of B clips:
    identity frames [B, 3, S, S], frames [B, T, 3, S, S], MFCC [B, T, 20, 12]; the shuffled run
    takes the audio of clip partners[b] of the batch, or `shuffled_mfcc` [B, T, 20, 12]."""
    was_training = model.training
    model.eval()
    try:
        ident = model.encode_identity(identity)
        wid_a = model.encode_audio(mfcc)  # [B, T, D]
        wid_s = wid_a[partners] if shuffled_mfcc is None else model.encode_audio(shuffled_mfcc)
        fakes = [model.generate(ident, w) for w in (wid_a, model.encode_video(frames), wid_s)]
    finally:
        model.train(was_training)
    return (frames, *fakes)


def _centre(frames: np.ndarray, size: int) -> torch.Tensor:
    """Stored uint8 frames [T, A, A, 3] -> the centre crop as evaluation items take it,
    float [T, 3, S, S] in [0, 1]."""
    c = (frames.shape[1] - size) // 2
    crop = torch.from_numpy(np.array(frames[:, c : c + size, c : c + size]))
    return crop.permute(0, 3, 1, 2).float().div(255)


def _tiles(images: torch.Tensor, scale: int) -> np.ndarray:
    """[n, 3, S, S] images in [0, 1] -> uint8 [S * scale, n * S * scale, 3], side by side."""
    row = torch.cat(list(images.float().clamp(0, 1).cpu()), dim=2)  # [3, S, n S]
    row = row.permute(1, 2, 0).mul(255).round().byte().numpy()
    return np.ascontiguousarray(row.repeat(scale, axis=0).repeat(scale, axis=1))


def _join(parts: list[np.ndarray], gap: int) -> np.ndarray:
    """uint8 [H, W_i, 3] parts side by side with `gap` white columns between them."""
    h = parts[0].shape[0]
    spaced = [parts[0]]
    for p in parts[1:]:
        spaced += [np.full((h, gap, 3), 255, np.uint8), p]
    return np.concatenate(spaced, axis=1)


def _header(widths: list[int], gap: int, labels: tuple[str, ...]) -> np.ndarray:
    """A white uint8 [H, W, 3] strip (H even) with each label centred over its column width."""
    import cv2

    font, size, thick = cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1
    h = 2 * ((cv2.getTextSize("Ag", font, size, thick)[0][1] + 12) // 2)
    strip = _join([np.full((h, w, 3), 255, np.uint8) for w in widths], gap)
    x = 0
    for w, label in zip(widths, labels, strict=True):
        (tw, th), _ = cv2.getTextSize(label, font, size, thick)
        org = (x + max(0, (w - tw) // 2), (h + th) // 2)
        cv2.putText(strip, label, org, font, size, (0, 0, 0), thick, cv2.LINE_AA)
        x += w + gap
    return strip
