"""How fast word-ID features drift while training, as a person probe sees it.

    python bench/probe_drift.py OLD_CHECKPOINT NEW_CHECKPOINT [--data SHARDS] [--clips 1024]

Encodes the same training clips (eval mode, fixed crops) with both checkpoints of one run, fits
the closed-form person probe (`fastdavs.model.adversaries.PersonProbe`, the LDA that
`--loss-probe-uniform` trains against) on half of the clips' features as its bank and reports,
per modality, the share of the other half (scored one clip at a time) whose person it names:
fitted on the new features (what a fresh probe reads) and on the old ones (what a bank of clips
from OLD_CHECKPOINT's step reads in NEW_CHECKPOINT's step), with the features' relative change.
E.g. the `wid` checkpoints 250 and 300 of
`python -m fastdavs.train --amp --schedule-render-steps 0 --schedule-gen-steps 0 --out RUN`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch

from fastdavs.config import DavsConfig
from fastdavs.data.dataset import DavsDataset
from fastdavs.data.shards import ShardSet, load_index
from fastdavs.io.checkpoint import load_model
from fastdavs.model.adversaries import PersonProbe


def clip_features(
    checkpoint: Path, data: Path, clips: int
) -> tuple[dict, torch.Tensor, DavsConfig]:
    """Clip-mean word-ID {"audio", "video"} [N, D] and person labels [N] of `clips` training
    clips drawn with a fixed seed, and the checkpoint's config."""
    model = load_model(checkpoint).eval()
    dataset = DavsDataset(ShardSet(data, "train", load_index(data)), model.cfg, train=False)
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))[:clips]
    audio, video, labels = [], [], []
    with torch.inference_mode():
        for start in range(0, len(order), 32):
            items = [dataset[int(i)] for i in order[start : start + 32]]
            audio.append(model.encode_audio(torch.stack([x["mfcc"] for x in items])).mean(1))
            video.append(model.encode_video(torch.stack([x["frames"] for x in items])).mean(1))
            labels.append(torch.stack([x["identity_label"] for x in items]))
    features = {"audio": torch.cat(audio), "video": torch.cat(video)}
    return features, torch.cat(labels), model.cfg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("old", type=Path, help="the earlier checkpoint directory")
    parser.add_argument("new", type=Path, help="the later checkpoint directory of the same run")
    parser.add_argument("--data", type=Path, help="prepared shards (default: the run's)")
    parser.add_argument("--clips", type=int, default=1024, help="training clips to encode")
    args = parser.parse_args()
    data = args.data or Path(json.loads((args.new.parent.parent / "run.json").read_text())["data"])
    old, labels, _ = clip_features(args.old, data, args.clips)
    new, _, cfg = clip_features(args.new, data, args.clips)
    half = args.clips // 2
    cfg = dataclasses.replace(cfg, probe_bank=half)
    print(f"{args.old} -> {args.new}: {args.clips} training clips, probe fitted on {half}")
    for m, name in enumerate(("audio", "video")):
        change = ((new[name] - old[name]).norm() / old[name].norm()).item()
        scores = {}
        for fitted_on, bank in (("new", new[name]), ("old", old[name])):
            probe = PersonProbe(cfg)
            probe.push(bank[:half], bank[:half], labels[:half])  # both modality slots
            # One clip at a time: a clip's person is then known to the probe only through
            # the bank (a batch of several would lend it the batch's own features).
            named = [
                probe.score(new[name][i : i + 1], labels[i : i + 1], m)[1].item()
                for i in range(half, args.clips)
            ]
            scores[fitted_on] = sum(named) / len(named)
        print(
            f"  {name}: features changed by {change:.1%} of their norm; person named "
            f"{scores['new']:.1%} by a probe fitted on the new features, "
            f"{scores['old']:.1%} by one fitted on the old"
        )


if __name__ == "__main__":
    main()
