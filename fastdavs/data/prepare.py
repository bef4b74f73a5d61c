"""`fastdavs-prepare SRC OUT`: an LRW-layout tree of mp4 clips -> packed training shards.

    SRC/WORD/{train,val,test}/WORD_00001.mp4 ──read_clip──► frames + 16 kHz audio
        ──align_clip (sidecar landmarks, or the face tracked)──► aligned frames 2..26
        ──mfcc + mfcc_windows──► the 25 matching 20x12 windows ──ShardWriter──► OUT/<split>/shard_*

Clips are cut into chunks of `CLIP_CAPACITY`; chunk k of a split always becomes shard k, so the
work spreads over processes and a rerun skips every shard that is already complete. A clip that
cannot be used (unreadable, no audio, too short, no face) is recorded with the reason and
skipped; the run reports them at the end and keeps them in `OUT/index.json`. A tree where no
clip can be used, and an OUT that cannot be written, are errors (one line, exit status 2) that
leave no index and no shard holding only skips.

SynthLRW clips carry a `.json` sidecar with landmarks, the identity and (format 2 on) the
per-frame visemes, which become each shard's optional `viseme.npy` (the ground truth of the
mouth); other trees (real LRW) are aligned on the face tracked by dlib's detector and 68-point
landmarks (`fastdavs.data.face_detect`) and have no visemes, and no identity labels (-1) unless
`--identities CSV` names the person of each clip (`read_identity_csv`): real LRW has none, and
without them `fastdavs-train` turns off identity pretraining and the word-ID -> person adversary.
A CSV's labels override a sidecar's. OUT records where its labels came from
(`identity_source.json`, written before the first shard), so a rerun with other labels is refused
instead of mixing two labellings.

Frames where no face is found are aligned by interpolating the track of their neighbours. A clip
with a face in fewer than `--min-face-share` of its frames (default 0.8: at most 5 of LRW's 29
frames, 0.2 s, interpolated) is skipped and listed: past that, a gap spans enough head motion
that the interpolated crops drift off the mouth, or the clip is not of one talking face at all.
The run ends with the share of frames with a face over the clips it kept.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import NamedTuple

import numpy as np
from tqdm import tqdm

from fastdavs.cli import Parser, add_config_args, config_from_args, run
from fastdavs.errors import DataError, OptionError

PROG = "fastdavs-prepare"
SPLITS = ("train", "val", "test")
CLIP_CAPACITY = 64  # clips per shard (about 20 MB at 64 px, 320 MB at 256 px)
MIN_FACE_SHARE = 0.8  # a clip with a face in fewer of its frames is skipped (module doc)


IDENTITY_SOURCE = "identity_source.json"  # in OUT: where the shards' identity labels came from


@dataclass(frozen=True)
class Source:
    path: Path  # the mp4
    clip_id: str  # path relative to SRC, for reports
    word: int  # index into the vocabulary
    identity: int | None = None  # index into the identities from --identities; None: sidecar's


def discover(src: Path) -> tuple[list[str], dict[str, list[Source]]]:
    """The vocabulary (sorted word folders: label = position) and the clips of each split."""
    if not src.is_dir():
        raise DataError(f"{src}: not a directory; give the root of an LRW-layout tree")
    words = sorted(
        d.name for d in src.iterdir() if d.is_dir() and any((d / s).is_dir() for s in SPLITS)
    )
    if not words:
        raise DataError(
            f"{src}: no LRW layout found (expected {src}/WORD/{{train,val,test}}/WORD_00001.mp4)"
        )
    splits: dict[str, list[Source]] = {s: [] for s in SPLITS}
    for label, word in enumerate(words):
        for split in SPLITS:
            for mp4 in sorted((src / word / split).glob("*.mp4")):
                splits[split].append(Source(mp4, str(mp4.relative_to(src)), label))
    if not any(splits.values()):
        raise DataError(f"{src}: the word folders hold no .mp4 clips")
    return words, splits


def identities_of(src: Path) -> list[str]:
    """Identity names for SynthLRW (from its manifest); real LRW has none."""
    from fastdavs.data.synth import MANIFEST, load_manifest

    if not (src / MANIFEST).exists():
        return []
    return [f"synthlrw-{i['id']:03d}" for i in load_manifest(src)["identities"]]


class IdentityLabels(NamedTuple):
    names: list[str]  # the persons, sorted (label = position)
    of_clip: dict[str, int]  # clip key (path relative to SRC, or file stem) -> label


def read_identity_csv(path: Path) -> IdentityLabels:
    """The person of each clip from a CSV with a header row `clip,person`: `clip` is the mp4's
    path relative to SRC (`ABOUT/train/ABOUT_00001.mp4`) or its file stem (`ABOUT_00001`),
    `person` any name (the same name is the same identity). Raises DataError naming the file
    and line of anything else."""
    import csv

    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read the identity CSV ({e})") from None
    if not rows or [c.strip().lower() for c in rows[0]] != ["clip", "person"]:
        raise DataError(
            f"{path}: an identity CSV starts with the header row 'clip,person' (one row per "
            "clip: its path relative to SRC or its file stem, and the person's name)"
        )
    persons: dict[str, str] = {}
    for line, row in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in row):
            continue
        if len(row) != 2 or not row[0].strip() or not row[1].strip():
            raise DataError(f"{path}:{line}: expected 'clip,person', got {','.join(row)!r}")
        clip, person = row[0].strip(), row[1].strip()
        if persons.setdefault(clip, person) != person:
            raise DataError(
                f"{path}:{line}: clip {clip!r} is given two persons, "
                f"{persons[clip]!r} and {person!r}"
            )
    if not persons:
        raise DataError(f"{path}: the identity CSV lists no clip")
    names = sorted(set(persons.values()))
    label = {name: i for i, name in enumerate(names)}
    return IdentityLabels(names, {clip: label[p] for clip, p in persons.items()})


def label_sources(
    splits: dict[str, list[Source]], labels: IdentityLabels, csv_path: Path
) -> tuple[dict[str, list[Source]], int]:
    """The sources with their CSV identity (by relative path, else by file stem; -1 where the
    CSV does not name the clip), and how many clips it does not name. Raises DataError if the
    CSV names none of them, or names a stem that two clips share."""
    stems: dict[str, list[str]] = {}
    for sources in splits.values():
        for src in sources:
            stems.setdefault(src.path.stem, []).append(src.clip_id)
    for key in labels.of_clip:
        if len(stems.get(key, [])) > 1:
            raise DataError(
                f"{csv_path}: {key!r} is the stem of {len(stems[key])} clips "
                f"({', '.join(stems[key][:2])}...); name them by their path relative to SRC"
            )
    out: dict[str, list[Source]] = {}
    unnamed = 0
    for split, sources in splits.items():
        out[split] = []
        for src in sources:
            label = labels.of_clip.get(src.clip_id, labels.of_clip.get(src.path.stem, -1))
            unnamed += label < 0
            out[split].append(dataclasses.replace(src, identity=label))
    if unnamed == sum(len(s) for s in splits.values()):
        raise DataError(
            f"{csv_path}: names none of the clips under SRC (first CSV entry: "
            f"{next(iter(labels.of_clip))!r}; expected e.g. {next(iter(stems))!r} or its path "
            "relative to SRC)"
        )
    return out, unnamed


def _claim_identity_source(out: Path, source: dict) -> None:
    """Record in OUT where its identity labels come from, or refuse an OUT whose shards were
    labelled from another source (a rerun keeps complete shards as they are)."""
    from fastdavs.io.atomic import write_json

    path = out / IDENTITY_SOURCE
    if path.exists():
        try:
            earlier = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise DataError(f"{path}: unreadable ({e}); prepare into a new OUT") from None
        if earlier != source:
            raise DataError(
                f"{out}: its shards were labelled from {earlier}, this run from {source}; "
                "prepare into a new OUT (complete shards are kept as they are on a rerun)"
            )
        return
    write_json(path, source)


class PreparedClip(NamedTuple):
    frames: np.ndarray  # uint8 [25, A, A, 3] aligned frames 2..26
    mfcc: np.ndarray  # float32 [25, 20, 12] the window of each stored frame
    identity: int  # identity label, -1 where unknown
    visemes: np.ndarray | None  # float32 [25, 4] of the stored frames, None where unknown
    face_share: float  # share of the clip's frames with a face found


def prepare_clip(
    path: Path, image_size: int, min_face_share: float = MIN_FACE_SHARE, device: str = "cpu"
) -> PreparedClip:
    """One clip -> its aligned frames, MFCC windows, identity label and (SynthLRW sidecars of
    format 2 on) visemes. Raises DataError for a clip that cannot be used (among them, one with
    a face in fewer than `min_face_share` of its frames). `device`: where the MFCC is computed
    (on CUDA by the fused Triton kernel, `fastdavs.kernels.mfcc`)."""
    import torch

    from fastdavs.data.align import align_clip
    from fastdavs.data.audio import FIRST_FRAME, HOP, STEPS_PER_FRAME, WIN, mfcc, mfcc_windows
    from fastdavs.data.shards import FRAMES_PER_CLIP
    from fastdavs.data.video_io import read_clip

    last = FIRST_FRAME + FRAMES_PER_CLIP  # one past the last stored frame (27)
    clip = read_clip(path, min_frames=last)
    landmarks, identity, visemes = None, -1, None
    sidecar = path.with_suffix(".json")
    if sidecar.exists():
        try:
            meta = json.loads(sidecar.read_text())
            landmarks = np.asarray(meta["landmarks"], dtype=np.float32)  # [T, 5, 2]
            identity = int(meta.get("identity", -1))
            if "visemes" in meta:
                visemes = np.asarray(meta["visemes"], dtype=np.float32)  # [T, 4]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise DataError(f"{sidecar}: unreadable landmark sidecar ({e})") from None
        if landmarks.shape != (len(clip.frames), 5, 2):
            raise DataError(
                f"{sidecar}: landmarks of shape {landmarks.shape}, expected "
                f"({len(clip.frames)}, 5, 2) for {len(clip.frames)} frames"
            )
        if visemes is not None:
            if visemes.shape != (len(clip.frames), 4) or not np.isfinite(visemes).all():
                raise DataError(
                    f"{sidecar}: visemes of shape {visemes.shape} (or not finite), expected "
                    f"finite ({len(clip.frames)}, 4) for {len(clip.frames)} frames"
                )
            visemes = visemes[FIRST_FRAME:last]
    aligned, found = align_clip(clip.frames, image_size, landmarks, path)
    share = float(found.mean())
    if share < min_face_share:
        raise DataError(
            f"{path}: face found in {int(found.sum())} of {len(found)} frames ({share:.0%}), "
            f"under the {min_face_share:.0%} a clip needs (--min-face-share)"
        )
    aligned = aligned[FIRST_FRAME:last]
    # The window of the last stored frame reaches 15 ms past a 29-frame clip's audio (LRW's
    # tracks run longer; `read_clip` stops at the last frame): pad that tail with zeros.
    steps = STEPS_PER_FRAME * (last - 1) + 12  # the window of frame l ends at MFCC step 4l + 12
    need = WIN + HOP * (steps - 1)
    audio = np.pad(clip.audio, (0, max(0, need - len(clip.audio))))
    coeffs = mfcc(torch.from_numpy(audio).to(device))  # [12, F]
    windows, first = mfcc_windows(coeffs)  # [W, 20, 12], frames 2..
    assert first == FIRST_FRAME
    windows = windows[:FRAMES_PER_CLIP].cpu().numpy()
    return PreparedClip(aligned, windows, identity, visemes, share)


@dataclass(frozen=True)
class _Chunk:
    split: str
    shard: int
    sources: tuple[Source, ...]


def _prepare_chunk(args: tuple[_Chunk, Path, int, float, str]) -> tuple[int, int]:
    """Write one shard from one chunk of clips; returns (clips added, clips skipped)."""
    from fastdavs.data.align import aligned_size
    from fastdavs.data.shards import ShardWriter

    chunk, out, image_size, min_face_share, device = args
    added = skipped = 0
    writer = ShardWriter(out / chunk.split, aligned_size(image_size), CLIP_CAPACITY, chunk.shard)
    with writer:
        for src in chunk.sources:
            try:
                clip = prepare_clip(src.path, image_size, min_face_share, device)
            except DataError as e:
                writer.skip(src.clip_id, str(e))
                skipped += 1
                continue
            identity = clip.identity if src.identity is None else src.identity
            writer.add(
                clip.frames, clip.mfcc, src.word, identity, src.clip_id, clip.visemes,
                clip.face_share,
            )  # fmt: skip
            added += 1
    return added, skipped


def _init_worker() -> None:
    import cv2
    import torch

    cv2.setNumThreads(1)  # one process per core
    torch.set_num_threads(1)


def prepare(
    src: str | Path,
    out: str | Path,
    image_size: int,
    workers: int | None = None,
    min_face_share: float = MIN_FACE_SHARE,
    identity_csv: str | Path | None = None,
    device: str = "cpu",
):
    """Prepare every split of `src` into `out` (resumable) and return the written ShardIndex.
    `identity_csv`: the person of each clip (`read_identity_csv`); without it, SynthLRW's
    sidecars give them and other trees have none. `device`: where MFCCs are computed (cpu, or
    cuda for the fused Triton kernel; decoding and alignment stay on the CPU processes)."""
    if not 0.0 <= min_face_share <= 1.0:
        raise OptionError(f"--min-face-share {min_face_share}: must be between 0 and 1")
    from fastdavs.machine import parse_device

    device = str(parse_device(device))
    import hashlib

    from fastdavs.data.align import aligned_size
    from fastdavs.data.shards import complete_shards, remove_stale_tmp, shard_name, write_index

    src, out = Path(src), Path(out)
    words, splits = discover(src)
    if identity_csv is None:
        identities = identities_of(src)
        source = {"identities": "synthlrw sidecars" if identities else "none"}
    else:
        csv_path = Path(identity_csv)
        labels = read_identity_csv(csv_path)
        splits, unnamed = label_sources(splits, labels, csv_path)
        identities = labels.names
        digest = hashlib.sha256(csv_path.read_bytes()).hexdigest()
        source = {"identities": f"csv {csv_path.name}", "sha256": digest}
        print(
            f"identities: {len(identities)} persons from {csv_path}"
            + (f"; {unnamed} clips are not in it (identity unknown)" if unnamed else "")
        )
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        _claim_identity_source(out, source)
    except OSError as e:
        raise _unwritable(e, out) from None
    chunks = []
    for split, sources in splits.items():
        remove_stale_tmp(out / split)
        done = {d.name for d in complete_shards(out / split)}
        for k in range(0, len(sources), CLIP_CAPACITY):
            shard = k // CLIP_CAPACITY
            if shard_name(shard) not in done:
                chunks.append(_Chunk(split, shard, tuple(sources[k : k + CLIP_CAPACITY])))
    total = sum(len(c.sources) for c in chunks)
    workers = max(1, min(workers or os.cpu_count() or 1, len(chunks) or 1))
    items = [(c, out, image_size, min_face_share, device) for c in chunks]
    try:
        with tqdm(total=total, desc="prepare", unit="clip", dynamic_ncols=True) as bar:
            if workers == 1:
                _init_worker()
                for item in items:
                    bar.update(sum(_prepare_chunk(item)))
            else:
                with get_context("spawn").Pool(workers, initializer=_init_worker) as pool:
                    for n in pool.imap_unordered(_prepare_chunk, items):
                        bar.update(sum(n))
    except OSError as e:  # unwritable or full: the complete shards stay for a rerun
        _remove_empty_dirs(out, created)
        raise _unwritable(e, out) from None
    _refuse_empty(src, out, created)
    return write_index(
        out,
        image_size=image_size,
        aligned_size=aligned_size(image_size),
        vocabulary=words,
        identities=identities,
        source=src.resolve(),
    )


def _unwritable(e: OSError, out: Path) -> DataError:
    return DataError(
        f"{e.filename or out}: cannot write the shards ({e.strerror or e}); choose a "
        "writable --out with free space, then rerun (complete shards are kept)"
    )


def _refuse_empty(src: Path, out: Path, created: bool) -> None:
    """Raise DataError if no clip at all could be prepared, after removing the shards that
    only record skips (a rerun would otherwise keep them and never retry the clips)."""
    from fastdavs.data.shards import complete_shards, read_meta

    shards = [d for split in SPLITS for d in complete_shards(out / split)]
    metas = [read_meta(d) for d in shards]
    if any(m["count"] for m in metas):
        return
    skipped = [s for m in metas for s in m["skipped"]]
    for d in shards:
        shutil.rmtree(d)
    _remove_empty_dirs(out, created)
    more = f" (and {len(skipped) - 1} more)" if len(skipped) > 1 else ""
    first = f"; first: {skipped[0]['reason']}{more}" if skipped else ""
    raise DataError(f"{src}: none of its {len(skipped)} clips could be prepared{first}")


def _remove_empty_dirs(out: Path, created: bool) -> None:
    """Remove the split folders left empty by a failed run, and OUT too if this run made it
    (with the record of its identity source, all it then holds)."""
    for d in [out / split for split in SPLITS]:
        if d.is_dir() and not any(d.iterdir()):
            d.rmdir()
    if created and out.is_dir() and {p.name for p in out.iterdir()} <= {IDENTITY_SOURCE}:
        (out / IDENTITY_SOURCE).unlink(missing_ok=True)
        out.rmdir()


def face_report(out: Path) -> str:
    """One line on the share of frames with a face over the clips kept in `out`'s shards."""
    from fastdavs.data.shards import complete_shards, read_meta

    shares = np.array(
        [x for split in SPLITS for d in complete_shards(out / split)
         for x in read_meta(d).get("face_share", [])]
    )  # fmt: skip
    if not len(shares):
        return "faces: no clip kept"
    full = int((shares == 1.0).sum())
    return (
        f"faces: found in every frame of {full} of {len(shares)} clips; share of frames with a "
        f"face: mean {shares.mean():.1%}, lowest {shares.min():.1%}"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog=PROG,
        description="Decode, align and pack an LRW-layout tree (ROOT/WORD/{train,val,test}/"
        "WORD_00001.mp4) into memory-mappable shards at the preset's resolution (or "
        "--image-size). A rerun skips the shards that are already complete.",
    )
    parser.add_argument("src", metavar="SRC", help="root of the LRW-layout tree")
    parser.add_argument("out", metavar="OUT", help="output directory for the shards")
    parser.add_argument("--workers", type=int, metavar="N", help="processes (default: all cores)")
    parser.add_argument(
        "--min-face-share",
        type=float,
        default=MIN_FACE_SHARE,
        metavar="F",
        help="skip a clip with a face in fewer than this share of its frames (default: "
        f"{MIN_FACE_SHARE})",
    )
    parser.add_argument(
        "--identities",
        metavar="CSV",
        help="the person of each clip: a CSV with the header 'clip,person' (clip: the mp4's "
        "path relative to SRC, or its file stem); real LRW has no identity labels, and "
        "without them training turns identity pretraining and the word-ID -> person "
        "adversary off",
    )
    parser.add_argument(
        "--device",
        default="cpu",
        help="where MFCCs are computed: cpu (default) or cuda (the fused Triton kernel)",
    )
    add_config_args(
        parser,
        default_preset="small",
        only=("image_size",),
        title="face crop size (the rest of the model is chosen when training)",
    )
    return parser


def _prepare(argv: Sequence[str] | None) -> None:
    args = build_parser().parse_args(argv)
    index = prepare(
        args.src,
        args.out,
        config_from_args(args).image_size,
        args.workers,
        args.min_face_share,
        args.identities,
        args.device,
    )
    for split, entry in index.splits.items():
        print(f"{split}: {entry['clips']} clips in {len(entry['shards'])} shards")
    print(face_report(Path(args.out)))
    if index.skipped:
        print(f"skipped {len(index.skipped)} clips:")
        for s in index.skipped:
            print(f"  {s['clip']}: {s['reason']}")
    print(f"index: {Path(args.out) / 'index.json'}")


def main(argv: Sequence[str] | None = None) -> int:
    return run(PROG, _prepare, argv)


if __name__ == "__main__":
    sys.exit(main())
