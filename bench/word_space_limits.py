"""What SynthLRW's inputs allow the word space, measured without any DAVS model.

    python bench/word_space_limits.py [--data SHARDS] [--preset small] [--mouth-steps 3000]
                                      [--seed 0]

Three measurements on the prepared shards (default: the embedded set at the `small` preset's
64 px, generated on first use like `fastdavs-train` does), each beside what a trained run reads
(`fastdavs-eval`):

1. Identity in the audio input: `fastdavs-eval`'s probe (`half_split_probe`, a linear probe on
   half of each person's clips) on the clip-mean MFCC of the test split's word-ID sequences
   (12 windows at stride 2, centred), as stored, after a formant warp (`--audio-warp 0.17`),
   and after the warp and a cepstral offset (`--audio-jitter 1`). How much identity the input's
   static part carries, and how much the training-time voice changes hide in it.
2. Words from the ground-truth mouth: a small MLP reads the word from the 12 sequence frames'
   visemes (jaw opening, lip width, rounding, teeth: what the renderer drew the mouth from),
   trained on the training people and scored on the test split's. Video lip reading cannot
   beat what the mouth it sees determines; this is that ceiling (at the sequence's stride).
3. The mouth from pixels: a small CNN regresses the four visemes of single frames from the
   mouth box (`DavsConfig.mouth_box`, 2 px margin) of the stored frames, `--mouth-steps`
   steps at batch 128; R^2 per viseme on the training people's frames and on the test people's.

Prints a table; CPU, a few minutes on 2 cores (the CNN takes most of it).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fastdavs.config import DavsConfig
from fastdavs.data.dataset import DavsDataset, ItemPlan
from fastdavs.data.phonemes import VISEME_DIMS
from fastdavs.data.shards import ShardSet, load_index
from fastdavs.evaluate.run import half_split_probe
from fastdavs.model.davs import cepstral_jitter, formant_warp


def audio_identity(test: ShardSet, seq: slice, seed: int) -> dict[str, dict]:
    """`half_split_probe` of identity on clip-mean MFCC, as stored and under the voice changes."""
    windows = torch.from_numpy(np.stack([test.mfcc(i)[seq] for i in range(len(test))]))
    windows = windows.float()  # [N, L, 20, 12]
    persons = torch.from_numpy(test.identities)
    torch.manual_seed(seed)
    warped = formant_warp(windows, 0.17)
    views = {
        "as stored": windows,
        "--audio-warp 0.17": warped,
        "--audio-warp 0.17 --audio-jitter 1": cepstral_jitter(warped, 1.0),
    }
    return {k: half_split_probe(v.mean((1, 2)), persons) for k, v in views.items()}


def words_from_visemes(train: ShardSet, test: ShardSet, seq: slice, seed: int) -> float:
    """Held-out word accuracy of an MLP on the sequence frames' ground-truth visemes."""
    torch.manual_seed(seed)
    x_train = torch.from_numpy(train.visemes[:, seq]).flatten(1)  # [N, L * 4]
    x_test = torch.from_numpy(test.visemes[:, seq]).flatten(1)
    mean, std = x_train.mean(0), x_train.std(0)
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    y_train, y_test = torch.from_numpy(train.words), torch.from_numpy(test.words)
    classes = int(max(y_train.max(), y_test.max())) + 1
    mlp = nn.Sequential(
        nn.Linear(x_train.shape[1], 512),
        nn.ReLU(),
        nn.Dropout(0.3),
        nn.Linear(512, classes),
    )
    opt = torch.optim.AdamW(mlp.parameters(), 1e-3, weight_decay=1e-2)
    for _ in range(100):  # epochs
        for batch in torch.randperm(len(x_train)).split(64):
            loss = F.cross_entropy(mlp(x_train[batch]), y_train[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
    mlp.eval()
    with torch.no_grad():
        return (mlp(x_test).argmax(1) == y_test).float().mean().item()


def mouth_reader(
    train: ShardSet, test: ShardSet, cfg: DavsConfig, plan: ItemPlan, steps: int, seed: int
) -> dict[str, list[float]]:
    """Per-viseme R^2 of a small CNN on single frames' mouth boxes, train and test people;
    `plan` is an evaluation item's (its centre crop places the box)."""
    torch.manual_seed(seed)
    top, bottom, left, right = cfg.mouth_box_px
    rows = slice(plan.crop_y + top - 2, plan.crop_y + bottom + 2)
    cols = slice(plan.crop_x + left - 2, plan.crop_x + right + 2)

    def boxes(shards: ShardSet) -> tuple[torch.Tensor, torch.Tensor]:
        pixels = np.stack([shards.frames(i)[:, rows, cols] for i in range(len(shards))])
        # [N * T, h, w, 3] uint8, [N * T, 4]
        return torch.from_numpy(pixels).flatten(0, 1), torch.from_numpy(shards.visemes).flatten(
            0, 1
        )

    (px_train, v_train), (px_test, v_test) = boxes(train), boxes(test)
    mean, std = v_train.mean(0), v_train.std(0)
    cnn = nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 64, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(64, 64, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(64, 128, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d((2, 4)),
        nn.Flatten(),
        nn.Linear(1024, 256),
        nn.ReLU(),
        nn.Linear(256, len(VISEME_DIMS)),
    )

    def predict(pixels: torch.Tensor) -> torch.Tensor:  # [n, h, w, 3] uint8 -> visemes [n, 4]
        return cnn(pixels.permute(0, 3, 1, 2).float() / 255) * std + mean

    opt = torch.optim.AdamW(cnn.parameters(), 1e-3)
    for _ in range(steps):
        batch = torch.randint(len(px_train), (128,))
        loss = F.mse_loss((predict(px_train[batch]) - mean) / std, (v_train[batch] - mean) / std)
        opt.zero_grad()
        loss.backward()
        opt.step()

    def r2(pixels: torch.Tensor, truth: torch.Tensor) -> list[float]:
        pick = torch.randperm(len(pixels), generator=torch.Generator().manual_seed(seed))[:10000]
        with torch.no_grad():
            guess = torch.cat([predict(pixels[i]) for i in pick.split(2000)])
        return (1 - (guess - truth[pick]).pow(2).mean(0) / truth[pick].var(0)).tolist()

    return {"training people": r2(px_train, v_train), "test people": r2(px_test, v_test)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help="prepared shards (default: the embedded set)")
    parser.add_argument("--preset", default="small", help="sizes the shards were prepared for")
    parser.add_argument("--mouth-steps", type=int, default=3000, help="CNN steps (0: skip)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    cfg = DavsConfig.from_preset(args.preset)
    if args.data is None:
        from fastdavs.train.cli import embedded_data

        args.data = embedded_data(cfg.image_size)
    index = load_index(args.data)
    train, test = ShardSet(args.data, "train", index), ShardSet(args.data, "test", index)
    if train.visemes is None or test.visemes is None:
        raise SystemExit(f"{args.data}: no ground-truth visemes (SynthLRW only)")
    evaluation = DavsDataset(test, cfg, train=False)
    plan = evaluation.plan(0, 0)  # the centred sequence and crop every evaluation item uses
    seq = evaluation.sequence_frames(plan.seq_start)
    print(f"{args.data}: {len(train)} training clips, {len(test)} test clips")
    for view, probe in audio_identity(test, seq, args.seed).items():
        accuracy = probe["reason"] or f"{probe['accuracy']:.3f} (chance {probe['chance']:.3f})"
        print(f"identity from clip-mean MFCC, {view:36s} {accuracy}")
    ceiling = words_from_visemes(train, test, seq, args.seed)
    print(f"words from the ground-truth visemes (test people)          {ceiling:.3f}")
    if args.mouth_steps:
        names = " / ".join(VISEME_DIMS)
        for people, r2 in mouth_reader(train, test, cfg, plan, args.mouth_steps, args.seed).items():
            values = " / ".join(f"{x:.2f}" for x in r2)
            print(f"mouth box CNN, R^2 of {names}, {people}: {values}")


if __name__ == "__main__":
    main()
