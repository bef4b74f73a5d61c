"""Evaluation of a trained DAVS model on held-out clips (spec/davs.md §5): the library behind
`fastdavs-eval`, also called by the trainer at the end of a run.

    shards ──DavsDataset(train=False)──► batch ──encoders──► wid_a, wid_v, pid ──► accumulators
                                                 └─generate(pid, wid_a | wid_v)──► per-clip PSNR,
                                                   SSIM, lip reading and sync of the fake video
    accumulators ──fastdavs.evaluate.metrics──► results dict ──format_table / write_results

Every clip of the split is one item: its L = seq_len frames at stride 2 (centred), their MFCC
windows and a fixed identity frame of the same clip, exactly as the validation batches of
training. What is measured:

- lip reading: word accuracy from audio, from video, and fused (the sum of the two logits),
  and the five most frequent errors of audio and of video (true word, guess, count);
- retrieval: audio <-> video R@1/5/10 and ranks on `sequence_embedding` (the space the
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
  reason, where the box is smaller than the 11 x 11 SSIM window (the tiny preset). Beside them,
  the references a generator has to beat, scored the same way against the same frames:
  "copy", the identity frame itself as every frame (the do-nothing baseline: a generator that
  ignores the speech scores about this); "audio_shuffled" / "video_shuffled", the identity
  frame driven by another clip's word-ID sequence (`shuffled_partners`: another word), PSNR
  only: a generator that uses the speech scores worse on the mouth with the wrong speech.
  The identity frame is one of the clip's stored frames and may be one of the L scored ones:
  that frame is left out of every image score and of the jaw R^2 (a copy would score it
  perfectly, +inf dB), so each clip averages L or L - 1 frames;
- jaw opening R^2 (`fastdavs.evaluate.jaw_probe`, SynthLRW only): a ridge regression on mouth
pixels,
  fitted on real frames of the train split against the ground-truth jaw viseme, reads the jaw
  of every evaluated frame; R^2 against the truth for each generation above, for the real
  frames (the probe's ceiling) and for the copy (the floor: a constant per clip, about 0 or
  below). Nothing of the evaluated model enters it, so a generator cannot learn to please it.
  Null, with the reason, where the data has no visemes (real LRW) or no train split;
- lip reading of the audio-driven generated video (encode_video + word classifier); the real
  video's accuracy above is its reference;
- sync (`metrics.sync_scores`, offsets up to seq_len // 2 sequence steps, so every offset
  compares at least half the clip): audio wid against the generated video's wid, and against
  the real video's wid as the reference.

Memory is bounded by the batch: the clips are read twice, once for the word-ID sequences of all
clips (a shuffled drive needs another clip's), then for the generation, where each generated
batch is scored and dropped; what is kept per clip is its wid sequences, pid vector, logits,
scalar scores and jaw readings.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from fastdavs.config import DavsConfig
from fastdavs.data.dataset import DavsDataset, make_loader
from fastdavs.data.shards import INDEX_FILE, ShardIndex, ShardSet, load_index
from fastdavs.errors import DataError
from fastdavs.evaluate.jaw_probe import JAW, JawProbe, fit_jaw_probe
from fastdavs.evaluate.metrics import (
    confusions,
    linear_probe,
    psnr,
    r2_score,
    retrieval,
    ssim,
    sync_scores,
    word_accuracy,
)
from fastdavs.io.atomic import write_json
from fastdavs.kernels.contrastive import sequence_embedding
from fastdavs.model import DavsModel
from fastdavs.model.losses import mouth_mask

log = logging.getLogger(__name__)

SSIM_WINDOW = 11  # the standard window of `metrics.ssim`
# What each generation entry scores: generated (or copied) frames against the real ones.
DRIVES = ("audio", "video", "copy", "audio_shuffled", "video_shuffled")
SSIM_DRIVES = ("audio", "video", "copy")  # the shuffled controls are judged by PSNR and jaw


def shuffled_partners(words: np.ndarray) -> np.ndarray:
    """For each clip, the clip whose speech drives its shuffled control: from half the split
    further on (cyclically, in split order), the first clip with another word.

    Deterministic, and spread over the split (a split in word-major order, as prepared, does
    not send every clip of a word to the same partner). Where the split has a single word,
    the partner is the clip half the split further on (same word); a one-clip split drives
    the clip with itself.

    Args:
        words: int [N] word labels in split order.
    Returns:
        int64 [N] partner indices.
    """
    words = np.asarray(words)
    n = len(words)
    start = (np.arange(n) + n // 2) % n
    if len(np.unique(words)) < 2:
        return start.astype(np.int64)
    partners = np.empty(n, np.int64)
    for i, j in enumerate(start.tolist()):
        while words[j] == words[i]:
            j = (j + 1) % n
        partners[i] = j
    return partners


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
    probe, probe_info = _jaw_probe(data, index, shards, cfg)
    if probe is not None and split == "train":
        notes.append("the jaw probe was fitted on the evaluated train split (seen identities)")
    partners = shuffled_partners(shards.words)
    sequence, ident_frames = _stored_frames(dataset)
    scored = torch.from_numpy(sequence != ident_frames[:, None])  # [N, L] not the identity frame
    was_training = model.training
    model.to(device).eval()
    try:
        r = _collect(
            model,
            dataset,
            batch_size,
            device,
            mouth_ssim,
            max_offset,
            progress,
            partners,
            scored,
            probe,
        )
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
        "confusions": {
            name: confusions(r[f"logits_{name}"], words, index.vocabulary)
            for name in ("audio", "video")
        },
    }
    mouth_reason = (
        None
        if mouth_ssim
        else f"the {bottom - top}x{right - left} px mouth box is smaller than the "
        f"{SSIM_WINDOW}x{SSIM_WINDOW} SSIM window"
    )
    jaw = None  # [N, L] ground-truth jaw opening of every scored frame
    if probe is not None:
        jaw = torch.from_numpy(shards.visemes[np.arange(len(shards))[:, None], sequence, JAW])
    generation = {}
    for drive in DRIVES:
        metrics = ("psnr", "ssim") if drive in SSIM_DRIVES else ("psnr",)
        generation[drive] = {
            metric: {
                part: r[key].mean().item() if (key := f"{drive}_{metric}_{part}") in r else None
                for part in ("full", "mouth")
            }
            for metric in metrics
        }
    for drive in (*DRIVES, "real"):
        r2 = None if jaw is None else r2_score(r[f"{drive}_jaw"][scored], jaw[scored])
        generation.setdefault(drive, {})["jaw_r2"] = r2
    generation.update(
        jaw_probe=probe_info,
        shuffled_same_word=int((shards.words[partners] == shards.words).sum()),
        mouth_box_px=list(box),
        ssim_mouth_reason=mouth_reason,
    )
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
            "identity_from_audio_wid": half_split_probe(r["wid_a"].mean(1), persons),
            "identity_from_video_wid": half_split_probe(r["wid_v"].mean(1), persons),
            "word_from_pid": half_split_probe(r["pid"], words),
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
    partners: np.ndarray,
    scored: torch.Tensor,
    probe: JawProbe | None,
) -> dict[str, torch.Tensor]:
    """Run the model over every clip; return name -> per-clip values [N, ...] on the CPU: word-ID
    sequences, pid vectors, word logits, sync scores, image scores of every drive in DRIVES
    (over the `scored` frames, bool [N, L]) and, with a probe, jaw readings [N, L] of each drive
    and of the real frames (generated frames are scored per batch and dropped)."""
    box = model.cfg.mouth_box_px
    size = model.cfg.image_size
    mask = mouth_mask(size, size, box, device=device)  # [S, S]
    scored = scored.to(device)
    keep: dict[str, list[torch.Tensor]] = {}

    def add(name: str, value: torch.Tensor) -> None:
        keep.setdefault(name, []).append(value.cpu())

    def score(drive: str, fake: torch.Tensor, real: torch.Tensor, frames: torch.Tensor) -> None:
        add(f"{drive}_psnr_full", psnr(fake, real, frames=frames))  # [B]
        add(f"{drive}_psnr_mouth", psnr(fake, real, mask, frames=frames))
        if drive in SSIM_DRIVES:
            add(f"{drive}_ssim_full", ssim(fake, real, frames=frames))
            if mouth_ssim:
                add(f"{drive}_ssim_mouth", ssim(fake, real, box, frames=frames))
        if probe is not None:
            add(f"{drive}_jaw", probe.predict(fake))  # [B, L]

    loader = make_loader(dataset, batch_size, shuffle=False, num_workers=0)
    n = len(dataset)
    bar = tqdm(total=2 * n, unit="clip", desc=f"eval {dataset.shards.split}", disable=not progress)
    with torch.inference_mode(), bar:
        wid_a, wid_v = [], []  # pass 1: every clip's word-ID sequences [B, L, D]
        for batch in loader:
            wid_a.append(model.encode_audio(batch["mfcc"].to(device)).float())
            wid_v.append(model.encode_video(batch["frames"].to(device)).float())
            bar.update(len(batch["word"]))
        wid_a, wid_v = torch.cat(wid_a), torch.cat(wid_v)  # [N, L, D] on the device
        first = 0
        for batch in loader:  # pass 2: generation, scored per batch
            rows = torch.arange(first, first + len(batch["word"]), device=wid_a.device)
            first += len(rows)
            other = torch.from_numpy(partners).to(wid_a.device)[rows]
            frames = batch["frames"].to(device)  # [B, L, 3, S, S]
            ident_frame = batch["identity"].to(device)  # [B, 3, S, S]
            ident = model.encode_identity(ident_frame)  # vec [B, pid_dim]
            wa, wv = wid_a[rows], wid_v[rows]
            add("wid_a", wa)
            add("wid_v", wv)
            add("pid", ident.vec.float())
            fake_a = model.generate(ident, wa)  # [B, L, 3, S, S]
            wid_g = model.encode_video(fake_a)  # [B, L, D] of the generated video
            for name, wid in (("audio", wa), ("video", wv), ("generated", wid_g)):
                add(f"logits_{name}", model.word_classifier(wid).float())  # [B, K]
            for name, video in (("generated", wid_g), ("real", wv)):
                for key, value in sync_scores(video, wa, max_offset).items():
                    add(f"sync_{name}_{key}", value)  # [B]
            keep_frames = scored[rows]  # [B, L]
            score("audio", fake_a, frames, keep_frames)
            del fake_a
            for drive, wid in (
                ("video", wv),
                ("audio_shuffled", wid_a[other]),
                ("video_shuffled", wid_v[other]),
            ):
                score(drive, model.generate(ident, wid), frames, keep_frames)
            score("copy", ident_frame[:, None].expand_as(frames), frames, keep_frames)
            if probe is not None:
                add("real_jaw", probe.predict(frames))
            bar.update(len(rows))
    return {name: torch.cat(values) for name, values in keep.items()}


def _jaw_probe(
    data: Path, index: ShardIndex, shards: ShardSet, cfg: DavsConfig
) -> tuple[JawProbe | None, dict]:
    """The jaw probe fitted on the train split, and its JSON description: {"reason": None,
    "fit_split": "train", ...`JawProbe.info`}, or (None, {"reason": why there is none})."""
    if shards.visemes is None:
        reason = (
            f"the {shards.split} split has no ground-truth visemes (real LRW, or shards "
            "prepared before fastdavs stored them: prepare SynthLRW again)"
        )
        return None, {"reason": reason}
    if "train" not in index.splits:
        return None, {"reason": "the data has no train split to fit the probe on"}
    train = shards if shards.split == "train" else ShardSet(data, "train", index)
    if train.visemes is None or len(train) < 2:
        return None, {"reason": "the train split has no ground-truth visemes (or < 2 clips)"}
    probe = fit_jaw_probe(train, cfg.image_size, cfg.mouth_box_px)
    return probe, {"reason": None, "fit_split": "train", **probe.info}


def _stored_frames(dataset: DavsDataset) -> tuple[np.ndarray, np.ndarray]:
    """The stored-frame numbers of each evaluation item: its sequence, int [N, L] (seq_start +
    2 k, k < L), and its identity frame, int [N]."""
    plans = [dataset.plan(i, 0) for i in range(len(dataset))]
    steps = 2 * np.arange(dataset.seq_len)
    sequence = np.stack([p.seq_start + steps for p in plans]).reshape(-1, dataset.seq_len)
    return sequence, np.array([p.identity for p in plans])


def _majority(labels: torch.Tensor) -> float:
    """Accuracy of always answering the most common label."""
    return torch.bincount(labels).max().item() / labels.numel()


def half_split_probe(features: torch.Tensor, labels: torch.Tensor) -> dict:
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
    ablation = r.get(
        "ablation"
    )  # the --no-disentangle run's results (fastdavs.evaluate.cli), or None
    text = f"audio {num(lr['audio'])}  video {num(lr['video'])}  fused {num(lr['fused'])}"
    if ablation is not None:
        a = ablation["lip_reading"]
        text += f"  | ablation audio {num(a['audio'])}  video {num(a['video'])}"
    lines.append(row("lip reading (word accuracy)", text + f"   (chance {num(lr['chance'])})"))
    for name, pairs in lr["confusions"].items():
        text = ", ".join(f"{true} -> {guess} {n}" for true, guess, n in pairs) or "none"
        lines.append(row(f"  most frequent errors, {name}", text))
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
        beside = ""
        if ablation is not None:
            beside = f"  | ablation {num(ablation['probes'][key]['accuracy'])}"
        lines.append(row(label, f"{num(p['accuracy'])}{beside}   {tail}"))
    g = r["generation"]

    def pair(drive: str, metric: str, digits: int) -> str:
        return f"{num(g[drive][metric]['full'], digits)}/{num(g[drive][metric]['mouth'], digits)}"

    for metric, label, digits in (
        ("psnr", "generation PSNR dB (full/mouth)", 2),
        ("ssim", "generation SSIM    (full/mouth)", 3),
    ):
        text = f"audio {pair('audio', metric, digits)}  video {pair('video', metric, digits)}"
        text += f"  | copy {pair('copy', metric, digits)}"
        if metric == "psnr":
            text += (
                f"  | shuffled audio {pair('audio_shuffled', metric, digits)}"
                f"  video {pair('video_shuffled', metric, digits)}"
            )
        elif g["ssim_mouth_reason"]:
            text += f"   (mouth: {g['ssim_mouth_reason']})"
        lines.append(row(label, text))
    if g["jaw_probe"]["reason"] is None:
        text = (
            f"audio {num(g['audio']['jaw_r2'])}  video {num(g['video']['jaw_r2'])}"
            f"  | shuffled audio {num(g['audio_shuffled']['jaw_r2'])}"
            f"  video {num(g['video_shuffled']['jaw_r2'])}"
            f"  | real {num(g['real']['jaw_r2'])}  copy {num(g['copy']['jaw_r2'])}"
        )
    else:
        text = f"n/a   ({g['jaw_probe']['reason']})"
    lines.append(row("jaw opening R^2 (pixel probe)", text))
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
    """Write `results` as indented JSON to `path` atomically (`fastdavs.io.atomic`: a reader never
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
