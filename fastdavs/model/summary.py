"""Per-module parameter counts and forward GFLOP per video frame, for any preset.

Modules are built on the meta device, so even `paper` is summarised in well under a second:
no weights are allocated and no arithmetic is done; FLOPs come from torch's FlopCounterMode
(2 FLOPs per multiply-accumulate of convolutions and matrix products). The generator's figure
is its per-frame `decode`; the mouth editor's per-face half (`encode`, run once per identity)
is given in its role.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from fastdavs.config import DavsConfig
from fastdavs.model.davs import DavsModel
from fastdavs.model.mouth_editor import MouthEditor


@dataclass
class ModuleCost:
    name: str
    role: str
    params: int
    gflop_per_frame: float
    frames: int  # frames one forward call covers (the count is divided by it)


def summarize(cfg: DavsConfig) -> list[ModuleCost]:
    """One row per DAVS module, in data-flow order."""
    with torch.device("meta"):
        model = DavsModel(cfg).eval()
        n, s, d = 1, cfg.image_size, cfg.word_dim
        image = torch.empty(n, 3, s, s)
        ident = model.identity_encoder(image)
        wid = torch.empty(n, d)
        if isinstance(model.generator, MouthEditor):
            counter = FlopCounterMode(display=False)
            with counter:
                edit = model.generator.encode(image)
            per_face = counter.get_total_flops() / 1e9
            generator = (
                f"mouth editor: edit box + wid -> frame (+{per_face:.4f} GFLOP per face)",
                lambda m: m.decode(*edit, wid),
            )
        else:
            generator = (
                "G: pid + skip + wid -> frame",
                lambda m: m.decode(ident.vec, ident.net2, wid),
            )
        calls = [
            ("identity_encoder", "E_p^v: face -> pid + skips", 1, lambda m: m(image)),
            ("identity_classifier", "pid pretraining head", 1, lambda m: m(ident.vec)),
            ("video_encoder", "E_w^v: frame -> wid", 1, lambda m: m(image)),
            ("audio_encoder", "E_w^a: MFCC window -> wid", 1, lambda m: m(torch.empty(n, 20, 12))),
            (
                "word_classifier",
                f"C_w ({cfg.word_head}) over {cfg.seq_len} frames",
                cfg.seq_len,
                lambda m: m(torch.empty(n, cfg.seq_len, d)),
            ),
            ("generator", generator[0], 1, generator[1]),
            (
                "modality_discriminator",
                "audio vs video wid",
                1,
                lambda m: m(torch.empty(n, d)),
            ),
            (
                "pid_word_adversary",
                f"C_p^w over {cfg.adv_frames} frames",
                cfg.adv_frames,
                lambda m: m(ident.net1.unsqueeze(1).expand(-1, cfg.adv_frames, -1, -1, -1)),
            ),
            ("wid_person_adversary", "C_w^p: wid -> identity", 1, lambda m: m(torch.empty(n, d))),
            (
                "sequence_discriminator",
                f"D_seq + sync over {cfg.gan_frames} frames",
                cfg.gan_frames,
                lambda m: m(
                    torch.empty(n, cfg.gan_frames, 3, s, s),
                    torch.empty(n, cfg.gan_frames, 20, 12),
                ),
            ),
        ]
        rows = []
        for name, role, frames, call in calls:
            module = getattr(model, name)
            counter = FlopCounterMode(display=False)
            with counter:
                call(module)
            rows.append(
                ModuleCost(
                    name=name,
                    role=role,
                    params=sum(p.numel() for p in module.parameters()),
                    gflop_per_frame=counter.get_total_flops() / frames / 1e9,
                    frames=frames,
                )
            )
    return rows


def as_json(cfg: DavsConfig, rows: list[ModuleCost]) -> dict:
    return {
        "preset": cfg.preset,
        "image_size": cfg.image_size,
        "modules": [asdict(r) for r in rows],
        "total_params": sum(r.params for r in rows),
    }


def as_table(cfg: DavsConfig, rows: list[ModuleCost]) -> str:
    lines = [
        f"DAVS modules, preset {cfg.preset!r} ({cfg.image_size}x{cfg.image_size}, "
        f"width {cfg.width:g})",
        f"{'module':<24}{'params':>13}{'GFLOP/frame':>13}  role",
    ]
    for r in rows:
        lines.append(f"{r.name:<24}{r.params:>13,}{r.gflop_per_frame:>13.4f}  {r.role}")
    lines.append(f"{'total':<24}{sum(r.params for r in rows):>13,}")
    return "\n".join(lines)
