"""SynthLRW: the embedded synthetic talking-face data set, written in LRW layout.

    python -m fastdavs.data.synth --out DIR [--identities 120] [--held-out 30] [--words 30]
                                  [--takes 1] [--seed 0] [--size 256] [--workers N]

writes `DIR/WORD/{train,val,test}/WORD_00001.mp4` (29 frames at 25 fps, H.264, 16 kHz AAC in the
same file) with LRW's `.txt` beside each clip, a `.json` sidecar (identity, take, per-frame
5-point landmarks, the phoneme timeline and the per-frame visemes the mouth was drawn from), and
`DIR/synthlrw.json` (the manifest: settings, vocabulary, identities,
splits), written last, so its presence means the set is complete.

One phoneme timeline drives both the voice (`voice.synthesize`) and the mouth
(`phonemes.viseme_track` -> `face.render_clip`), so lips are predictable from the audio; pitch
and formants belong to the identity, so the audio carries identity cues. Val and test hold
identities never seen in training. `render_example` renders any identity saying any word with
any take, which gives exact ground truth for generated frames; the sidecar's visemes (jaw
opening, lip width, rounding, teeth of every frame) are the exact ground truth of each mouth.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from tqdm import tqdm

from fastdavs.cli import run
from fastdavs.data import face, phonemes, voice
from fastdavs.data.video_io import write_mp4
from fastdavs.errors import DataError
from fastdavs.io.atomic import replace_with, write_text

MANIFEST = "synthlrw.json"
SPLITS = ("train", "val", "test")
# 2: sidecars hold "visemes". Sets of format 1 (no visemes) are still read and prepared.
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
VISEME_DECIMALS = 4  # the sidecar's visemes are rounded to 1e-4 (the renderer is not that exact)


@dataclass(frozen=True)
class SynthConfig:
    """What a SynthLRW set contains. The defaults are the embedded training set."""

    identities: int = 120
    held_out: int = 30  # identities reserved for val and test (half each), never in train
    words: int = 30
    takes: int = 1  # takes per (identity, word)
    seed: int = 0
    size: int = 256  # frame size in pixels (LRW is 256)

    def validate(self) -> SynthConfig:
        if self.held_out < 2 or self.identities - self.held_out < 1:
            raise DataError(
                f"identities={self.identities}, held_out={self.held_out}: need at least 2 held-out "
                "identities (val and test) and at least 1 training identity"
            )
        if self.words < 2 or self.takes < 1:
            raise DataError(f"words={self.words}, takes={self.takes}: need >= 2 words, >= 1 take")
        if self.size < 32 or self.size % 2:
            raise DataError(f"size={self.size}: must be an even number of pixels >= 32")
        phonemes.make_vocabulary(self.words, self.seed)  # raises if the inventory is too small
        return self

    def split_of(self, identity: int) -> str:
        """Training identities come first; the last `held_out` are split between val and test."""
        first_held = self.identities - self.held_out
        if identity < first_held:
            return "train"
        return "val" if identity < first_held + self.held_out // 2 else "test"


@dataclass
class Example:
    """One rendered clip: what an mp4 of the set holds, before encoding."""

    frames: np.ndarray  # uint8 [29, size, size, 3] RGB
    audio: np.ndarray  # float32 [18560] at 16 kHz
    landmarks: np.ndarray  # float32 [29, 5, 2] pixel (x, y)
    visemes: np.ndarray  # float [29, 4] (jaw_open, lip_width, lip_round, teeth), as drawn
    identity: int
    word: phonemes.Word
    take: int
    segments: list[phonemes.Segment]


def _rng(cfg: SynthConfig, *key: int) -> np.random.Generator:
    """An independent stream per (purpose, ...) key, so any clip renders alone, identically."""
    return np.random.default_rng(np.random.SeedSequence([cfg.seed, *key]))


def identity_params(cfg: SynthConfig, identity: int) -> tuple[face.FaceIdentity, voice.Voice]:
    rng = _rng(cfg, 1, identity)
    return face.random_identity(rng), voice.random_voice(rng)


def render_example(
    cfg: SynthConfig, identity: int, word: phonemes.Word | int, take: int
) -> Example:
    """Identity `identity` saying `word` (a Word or an index into the vocabulary) in take `take`.

    Deterministic: the same arguments give the same pixels and samples, whether or not the
    combination is part of the written set.
    """
    if isinstance(word, int):
        word = phonemes.make_vocabulary(cfg.words, cfg.seed)[word]
    who, how = identity_params(cfg, identity)
    rng = _rng(cfg, 2, identity, zlib.crc32(word.name.encode()), take)
    take_params = phonemes.random_take(rng)
    segments = phonemes.timeline(word, take_params)
    visemes = phonemes.viseme_track(segments)  # [29, 4]
    motion = face.head_motion(rng, phonemes.N_FRAMES)  # independent of the speech
    blink = face.blinks(rng, phonemes.N_FRAMES)
    frames, landmarks = face.render_clip(who, visemes, motion, blink, size=cfg.size)
    audio = voice.synthesize(segments, how, take_params, seed=int(rng.integers(2**31)))
    return Example(frames, audio, landmarks, visemes, identity, word, take, segments)


@dataclass(frozen=True)
class _Job:
    identity: int
    word: int
    take: int
    path: str  # mp4 path


def plan(cfg: SynthConfig, out: Path) -> list[_Job]:
    """Every clip of the set with its LRW path, numbered per (word, split) as LRW does."""
    vocab = phonemes.make_vocabulary(cfg.words, cfg.seed)
    jobs = []
    for w, word in enumerate(vocab):
        counters = dict.fromkeys(SPLITS, 0)
        for identity in range(cfg.identities):
            split = cfg.split_of(identity)
            for take in range(cfg.takes):
                counters[split] += 1
                name = f"{word.name}_{counters[split]:05d}.mp4"
                jobs.append(_Job(identity, w, take, str(out / word.name / split / name)))
    return jobs


def _write_clip(args: tuple[SynthConfig, _Job]) -> None:
    cfg, job = args
    mp4 = Path(job.path)
    sidecar = mp4.with_suffix(".json")
    if mp4.exists() and sidecar.exists():  # finished by an earlier, interrupted run
        return
    mp4.parent.mkdir(parents=True, exist_ok=True)
    ex = render_example(cfg, job.identity, job.word, job.take)
    write_mp4(mp4, ex.frames, ex.audio, fps=phonemes.FPS, sample_rate=voice.SAMPLE_RATE)
    spoken = ex.segments[-1].end - ex.segments[0].start
    write_text(mp4.with_suffix(".txt"), f"Word: {ex.word.name}\nDuration: {spoken:.2f} seconds\n")
    meta = {
        "word": ex.word.name,
        "identity": ex.identity,
        "take": ex.take,
        "landmark_order": ["left_eye", "right_eye", "nose", "mouth_left", "mouth_right"],
        "landmarks": np.round(ex.landmarks, 3).tolist(),
        "phonemes": [[s.phoneme, round(s.start, 4), round(s.end, 4)] for s in ex.segments],
        "viseme_order": list(phonemes.VISEME_DIMS),
        "visemes": np.round(ex.visemes, VISEME_DECIMALS).tolist(),  # [29][4]
    }
    write_text(sidecar, json.dumps(meta))  # last: its presence marks the clip done


def generate(cfg: SynthConfig, out: str | Path, workers: int | None = None) -> Path:
    """Write the whole set (resumable: finished clips are kept) and return the manifest path."""
    cfg.validate()
    out = Path(out)
    manifest = out / MANIFEST
    if manifest.exists():
        info = load_manifest(out)
        if info["format_version"] != FORMAT_VERSION:
            raise DataError(
                f"{out} holds a SynthLRW set of format {info['format_version']} (its sidecars "
                f"lack what format {FORMAT_VERSION} adds: per-frame visemes); delete it or "
                "choose another --out"
            )
        if info["config"] == dataclasses.asdict(cfg):
            return manifest
        raise DataError(
            f"{out} already holds a SynthLRW set with other settings; choose another --out"
        )
    out.mkdir(parents=True, exist_ok=True)
    jobs = plan(cfg, out)
    workers = workers or os.cpu_count() or 1
    bar = tqdm(total=len(jobs), desc="SynthLRW", unit="clip", dynamic_ncols=True)
    # Identity-major order keeps each worker's face-layout cache warm.
    jobs.sort(key=lambda j: (j.identity, j.word, j.take))
    items = [(cfg, j) for j in jobs]
    if workers == 1:
        for item in items:
            _write_clip(item)
            bar.update()
    else:
        with get_context("spawn").Pool(workers, initializer=_init_worker) as pool:
            for _ in pool.imap_unordered(_write_clip, items, chunksize=8):
                bar.update()
    bar.close()
    vocab = phonemes.make_vocabulary(cfg.words, cfg.seed)
    info = {
        "format_version": FORMAT_VERSION,
        "config": dataclasses.asdict(cfg),
        "vocabulary": [w.name for w in vocab],
        "identities": [{"id": i, "split": cfg.split_of(i)} for i in range(cfg.identities)],
        "clips": len(jobs),
    }
    write_text(manifest, json.dumps(info, indent=1))
    return manifest


def preview(cfg: SynthConfig, path: str | Path, identities: int = 8, frames: int = 7) -> Path:
    """A PNG grid: one row per identity (the first training ones, then held-out ones), each
    saying word 0 (take 0), every fourth frame from frame 2."""
    import cv2

    rows = sorted(
        {
            *range(min(identities // 2, cfg.identities)),
            *range(cfg.identities)[::-1][: identities - identities // 2],
        }
    )
    tiles = []
    for identity in rows:
        ex = render_example(cfg, identity, 0, 0)
        tiles.append(np.concatenate(list(ex.frames[2 : 2 + 4 * frames : 4]), axis=1))
    grid = np.concatenate(tiles, axis=0)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    bgr = cv2.cvtColor(grid, cv2.COLOR_RGB2BGR)
    return replace_with(path, lambda tmp: cv2.imwrite(str(tmp), bgr))


def _init_worker() -> None:
    import cv2

    cv2.setNumThreads(1)  # one process per core; OpenCV's own threads would oversubscribe


def load_manifest(out: str | Path) -> dict:
    path = Path(out) / MANIFEST
    try:
        info = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path} is missing: {out} is not a complete SynthLRW set") from None
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: unreadable SynthLRW manifest ({e})") from None
    if info.get("format_version") not in READABLE_VERSIONS:
        raise DataError(
            f"{path}: SynthLRW format {info.get('format_version')}, this fastdavs reads "
            f"{', '.join(map(str, READABLE_VERSIONS))}"
        )
    return info


def _main(argv: Sequence[str] | None) -> None:
    defaults = SynthConfig()
    parser = argparse.ArgumentParser(
        prog="python -m fastdavs.data.synth", description="Write a SynthLRW data set."
    )
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--out", metavar="DIR", help="write the data set here")
    target.add_argument("--preview", metavar="PNG", help="only write a grid of sample frames")
    for f in dataclasses.fields(SynthConfig):
        parser.add_argument(
            "--" + f.name.replace("_", "-"), type=int, default=getattr(defaults, f.name)
        )
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    args = parser.parse_args(argv)
    cfg = SynthConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(SynthConfig)})
    if args.preview:
        print(f"wrote {preview(cfg.validate(), args.preview)}")
        return
    manifest = generate(cfg, args.out, args.workers)
    print(f"SynthLRW: {load_manifest(args.out)['clips']} clips, manifest {manifest}")


def main(argv: Sequence[str] | None = None) -> int:
    return run("python -m fastdavs.data.synth", _main, argv)


if __name__ == "__main__":
    sys.exit(main())
