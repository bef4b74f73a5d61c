"""Evaluation of a trained DAVS model on held-out clips (spec/davs.md §5): the library behind
`fastdavs-eval`, also called by the trainer at the end of a run.

    shards ──DavsDataset(train=False)──► batch ──encoders──► wid_a, wid_v, pid ──► accumulators
                                                 └─generate(pid, wid_a | wid_v)──► per-clip PSNR,
                                                   SSIM, lip reading and sync of the fake video
    accumulators ──fastdavs.metrics──► results dict ──format_table / write_results

Every clip of the split is one item: its L = seq_len frames at stride 2 (centred), their MFCC
windows and a fixed identity frame of the same clip, exactly as the validation batches of
training. What is measured:

- lip reading: word accuracy from audio, from video, and fused (the sum of the two logits);
- retrieval: audio <-> video R@1/5/10 and ranks on `losses.sequence_embedding` (the space the
  contrastive loss trains), over all clips of the split at once;
- disentanglement probes (`metrics.linear_probe`): identity from the clip-mean word-ID vector
  (audio and video separately: the two encoders can leak different cues, voice and face), and
  word from the person-ID vector of the identity frame. Each probe splits the clips into halves
  stratified by its target class: within each class, in split order, the 1st, 3rd, 5th... clip
  trains the probe and the 2nd, 4th... tests it, so every tested class was seen in training;
  clips of unknown identity (label -1, real LRW) are left out of the identity probes;
- generation: audio-driven generate(pid, wid_a) and video-driven generate(pid, wid_v) of all L
  frames against the real frames (the exact ground truth on SynthLRW): PSNR and SSIM of the full
  frame and of the mouth box (`DavsConfig.mouth_box_px`); the mouth SSIM is null, with a
  reason, where the box is smaller than the 11 x 11 SSIM window (the tiny preset);
- lip reading of the audio-driven generated video (encode_video + word classifier); the real
  video's accuracy above is its reference;
- sync (`metrics.sync_scores`, offsets up to seq_len // 2 sequence steps, so every offset
  compares at least half the clip): audio wid against the generated video's wid, and against
  the real video's wid as the reference.

Memory is bounded by the batch: generated frames are scored per batch and dropped; what is kept
per clip is its wid sequences, pid vector, logits and scalar scores.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import torch
from tqdm import tqdm

from fastdavs.atomic import write_json
from fastdavs.data.dataset import DavsDataset, make_loader
from fastdavs.data.shards import INDEX_FILE, ShardSet, load_index
from fastdavs.errors import DataError
from fastdavs.losses import mouth_mask, sequence_embedding
from fastdavs.metrics import linear_probe, psnr, retrieval, ssim, sync_scores, word_accuracy
from fastdavs.model import DavsModel

log = logging.getLogger(__name__)

SSIM_WINDOW = 11  # the standard window of `metrics.ssim`


def evaluate(
    model: DavsModel,
    data: str | Path,
    *,
    split: str = "test",
    batch_size: int = 16,
    device: str = "cpu",
    progress: bool = True,
) -> dict:
    """Every metric of the module docstring over all clips of one split of prepared shards.

    Args:
        model (DavsModel): moved to `device` and run in eval mode (its mode is restored after).
        data (str or Path): a `fastdavs-prepare` output directory, prepared at the model's
            image size with a vocabulary the model's word classifier covers.
        split (str): "test" (held-out identities; falls back to "val", with a note, when the
            data has no test split), "val" or "train". (Default: "test")
        batch_size (int): clips per forward pass; only memory and speed depend on it.
        device (str): where the model runs, e.g. "cuda". (Default: "cpu")
        progress (bool): show a tqdm bar over clips. (Default: True)

    Returns:
        dict of JSON-ready values (see `format_table`); "checkpoint" and "trained_to" are None,
        for the caller who knows them to fill in. The result depends only on the weights and the
        data: items are fixed, nothing is sampled, and the probes are deterministic.

    Raises:
        DataError: no such data or split, an empty split, or data the model does not fit.
    """
    start = time.perf_counter()
    data = Path(data)
    index = load_index(data)
    notes = []
    if split == "test" and "test" not in index.splits and "val" in index.splits:
        notes.append("the data has no test split: evaluated on val")
        log.warning("%s: %s", data, notes[-1])
        split = "val"
    if split not in index.splits:
        have = ", ".join(index.splits) or "none"
        raise DataError(
            f"{data / INDEX_FILE}: no {split!r} split (have: {have}); evaluate on a split the "
            "data has, or prepare held-out clips with fastdavs-prepare"
        )
    cfg = model.cfg
    shards = ShardSet(data, split, index).check()  # a damaged shard fails before the work
    if len(shards) == 0:
        raise DataError(f"{data / INDEX_FILE}: split {split!r} holds no clip")
    if shards.words.max() >= cfg.num_words:
        raise DataError(
            f"{data / INDEX_FILE}: word labels up to {shards.words.max()}, but the model "
            f"classifies {cfg.num_words} words; evaluate on the data the model was trained on"
        )
    dataset = DavsDataset(shards, cfg, train=False)
    box = cfg.mouth_box_px
    top, bottom, left, right = box
    mouth_ssim = min(bottom - top, right - left) >= SSIM_WINDOW
    max_offset = cfg.seq_len // 2
    was_training = model.training
    model.to(device).eval()
    try:
        r = _collect(model, dataset, batch_size, device, mouth_ssim, max_offset, progress)
    finally:
        model.train(was_training)
    words = torch.from_numpy(shards.words)  # [N]
    persons = torch.from_numpy(shards.identities)  # [N], -1 where unknown

    lip_reading = {
        "audio": word_accuracy(r["logits_audio"], words),
        "video": word_accuracy(r["logits_video"], words),
        "fused": word_accuracy(r["logits_audio"] + r["logits_video"], words),
        "generated": word_accuracy(r["logits_generated"], words),
        "chance": _majority(words),
    }
    mouth_reason = (
        None
        if mouth_ssim
        else f"the {bottom - top}x{right - left} px mouth box is smaller than the "
        f"{SSIM_WINDOW}x{SSIM_WINDOW} SSIM window"
    )
    generation = {
        driver: {
            metric: {
                part: r[key].mean().item() if (key := f"{driver}_{metric}_{part}") in r else None
                for part in ("full", "mouth")
            }
            for metric in ("psnr", "ssim")
        }
        for driver in ("audio", "video")
    }
    generation.update(mouth_box_px=list(box), ssim_mouth_reason=mouth_reason)
    sync = {"max_offset": max_offset}
    for name in ("generated", "real"):
        sync[name] = {
            "distance": r[f"sync_{name}_distance"].mean().item(),
            "confidence": r[f"sync_{name}_confidence"].mean().item(),
            "in_sync": (r[f"sync_{name}_offset"] == 0).double().mean().item(),
        }
    results = {
        "split": split,
        "clips": len(dataset),
        "identities": int(persons[persons >= 0].unique().numel()),
        "words": int(words.unique().numel()),
        "data": str(data),
        "checkpoint": None,
        "trained_to": None,
        "device": str(device),
        "seconds": None,  # set last, so that it counts the probes too
        "notes": notes,
        "lip_reading": lip_reading,
        "retrieval": retrieval(sequence_embedding(r["wid_a"]), sequence_embedding(r["wid_v"])),
        "probes": {
            "identity_from_audio_wid": _probe(r["wid_a"].mean(1), persons),
            "identity_from_video_wid": _probe(r["wid_v"].mean(1), persons),
            "word_from_pid": _probe(r["pid"], words),
        },
        "generation": generation,
        "sync": sync,
    }
    results["seconds"] = time.perf_counter() - start
    return results


def _collect(
    model: DavsModel,
    dataset: DavsDataset,
    batch_size: int,
    device: str,
    mouth_ssim: bool,
    max_offset: int,
    progress: bool,
) -> dict[str, torch.Tensor]:
    """Run the model over every clip; return name -> per-clip values [N, ...] on the CPU: word-ID
    sequences, pid vectors, word logits, sync scores and image scores (generated frames are
    scored per batch and dropped)."""
    box = model.cfg.mouth_box_px
    size = model.cfg.image_size
    mask = mouth_mask(size, size, box, device=device)  # [S, S]
    keep: dict[str, list[torch.Tensor]] = {}  # name -> per-batch [B, ...] values on the CPU

    def add(name: str, value: torch.Tensor) -> None:
        keep.setdefault(name, []).append(value.cpu())

    loader = make_loader(dataset, batch_size, shuffle=False, num_workers=0)
    bar = tqdm(
        total=len(dataset), unit="clip", desc=f"eval {dataset.shards.split}", disable=not progress
    )
    with torch.inference_mode(), bar:
        for batch in loader:
            frames = batch["frames"].to(device)  # [B, L, 3, S, S]
            wid_a = model.encode_audio(batch["mfcc"].to(device))  # [B, L, D]
            wid_v = model.encode_video(frames)  # [B, L, D]
            ident = model.encode_identity(batch["identity"].to(device))  # vec [B, pid_dim]
            fake_a = model.generate(ident, wid_a)  # [B, L, 3, S, S]
            wid_g = model.encode_video(fake_a)  # [B, L, D] of the generated video
            for name, x in (("wid_a", wid_a), ("wid_v", wid_v), ("pid", ident.vec)):
                add(name, x.float())
            for name, wid in (("audio", wid_a), ("video", wid_v), ("generated", wid_g)):
                add(f"logits_{name}", model.word_classifier(wid).float())  # [B, K]
            for name, video in (("generated", wid_g), ("real", wid_v)):
                for key, value in sync_scores(video, wid_a, max_offset).items():
                    add(f"sync_{name}_{key}", value)  # [B]
            for driver, fake in (("audio", fake_a), ("video", model.generate(ident, wid_v))):
                add(f"{driver}_psnr_full", psnr(fake, frames))  # [B]
                add(f"{driver}_psnr_mouth", psnr(fake, frames, mask))
                add(f"{driver}_ssim_full", ssim(fake, frames))
                if mouth_ssim:
                    add(f"{driver}_ssim_mouth", ssim(fake, frames, box))
            bar.update(len(frames))
    return {name: torch.cat(values) for name, values in keep.items()}


def _majority(labels: torch.Tensor) -> float:
    """Accuracy of always answering the most common label."""
    return torch.bincount(labels).max().item() / labels.numel()


def _probe(features: torch.Tensor, labels: torch.Tensor) -> dict:
    """`linear_probe` on the halves described in the module docstring.

    Args:
        features: [N, D]; labels: [N] integers, -1 for unknown (those clips are left out).
    Returns:
        {"accuracy", "chance", "classes", "train", "test", "reason"}: accuracy and chance are
        None, with the reason, where the clips cannot give two classes and two halves.
    """
    known = labels >= 0
    features, labels = features[known], labels[known]
    classes, y = labels.unique(return_inverse=True)  # y: [n] in [0, classes)
    order = torch.sort(y, stable=True).indices  # clips grouped by class, in split order
    first = torch.searchsorted(y[order], y[order])  # [n] where each clip's class group starts
    rank = torch.empty_like(y)
    rank[order] = torch.arange(len(y)) - first  # [n] position of a clip within its class
    train = rank % 2 == 0
    result = {"classes": len(classes), "train": int(train.sum()), "test": int((~train).sum())}
    if len(classes) < 2 or result["test"] == 0:
        reason = (
            f"{len(y)} labelled clips in {len(classes)} classes: need 2 classes, one with 2 clips"
        )
        return {"accuracy": None, "chance": None, **result, "reason": reason}
    scores = linear_probe(features[train], y[train], features[~train], y[~train], len(classes))
    return {**scores, **result, "reason": None}


def format_table(results: dict) -> str:
    """The results of `evaluate` as an aligned, human-readable table (one metric per line)."""
    r = results

    def num(x: float | None, digits: int = 3) -> str:
        return "n/a" if x is None else f"{x:.{digits}f}"

    def row(label: str, text: str) -> str:
        return f"{label:<33}{text}"

    where = r["checkpoint"] or "(model in memory)"
    if r["trained_to"]:
        where += f" ({r['trained_to']['stage']} step {r['trained_to']['step']})"
    lines = [
        f"fastdavs-eval  {where}  split {r['split']}: {r['clips']} clips, "
        f"{r['identities']} identities, {r['words']} words  ({r['seconds']:.1f} s)"
    ]
    lr = r["lip_reading"]
    lines.append(
        row(
            "lip reading (word accuracy)",
            f"audio {num(lr['audio'])}  video {num(lr['video'])}  fused {num(lr['fused'])}"
            f"   (chance {num(lr['chance'])})",
        )
    )
    for key, label in (("audio_to_video", "a->v"), ("video_to_audio", "v->a")):
        ret = r["retrieval"][key]
        lines.append(
            row(
                f"retrieval {label}",
                f"R@1 {num(ret['r1'], 2)}  R@5 {num(ret['r5'], 2)}  R@10 {num(ret['r10'], 2)}  "
                f"median rank {ret['median_rank']}  mean rank {num(ret['mean_rank'], 1)}",
            )
        )
    for key, label in (
        ("identity_from_audio_wid", "probe identity <- audio word-ID"),
        ("identity_from_video_wid", "probe identity <- video word-ID"),
        ("word_from_pid", "probe word <- person-ID"),
    ):
        p = r["probes"][key]
        tail = f"(chance {num(p['chance'])})" if p["reason"] is None else f"({p['reason']})"
        lines.append(row(label, f"{num(p['accuracy'])}   {tail}"))
    g = r["generation"]
    for metric, label, digits in (
        ("psnr", "generation PSNR dB (full/mouth)", 2),
        ("ssim", "generation SSIM    (full/mouth)", 3),
    ):
        text = "  ".join(
            f"{driver} {num(g[driver][metric]['full'], digits)}/"
            f"{num(g[driver][metric]['mouth'], digits)}"
            for driver in ("audio", "video")
        )
        if metric == "ssim" and g["ssim_mouth_reason"]:
            text += f"   (mouth: {g['ssim_mouth_reason']})"
        lines.append(row(label, text))
    lines.append(
        row(
            "lip reading of generated video",
            f"{num(lr['generated'])}   (real video {num(lr['video'])})",
        )
    )
    s = r["sync"]
    lines.append(
        row(
            "sync LSE-D / LSE-C (in sync)",
            "   ".join(
                f"{name} {num(s[name]['distance'])}/{num(s[name]['confidence'])} "
                f"({num(s[name]['in_sync'], 2)})"
                for name in ("generated", "real")
            ),
        )
    )
    lines += [f"note: {note}" for note in r["notes"]]
    return "\n".join(lines)


def check_writable(path: str | Path) -> None:
    """Refuse, before any work, a results path that `write_results` could not write: a
    directory, or one below a regular file or in a directory this user cannot write.

    Raises:
        DataError: naming `path` and the reason.
    """
    path = Path(path)
    reason = None
    if path.is_dir():
        reason = "it is a directory"
    else:
        parent = path.parent
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if not parent.is_dir():
            reason = f"{parent} is not a directory"
        elif not os.access(parent, os.W_OK | os.X_OK):
            reason = f"{parent} is not writable"
    if reason:
        raise DataError(f"{path}: cannot write the results ({reason}); choose another --out")


def write_results(results: dict, path: str | Path) -> Path:
    """Write `results` as indented JSON to `path` atomically (`fastdavs.atomic`: a reader never
    sees half a file), creating its directory; return the path. A perfect reconstruction's PSNR
    is infinite and written as `Infinity`, which Python's `json` reads back.

    Raises:
        DataError: the file cannot be written.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return write_json(path, results)
    except OSError as e:
        raise DataError(f"{path}: cannot write the results ({e.strerror or e})") from None
