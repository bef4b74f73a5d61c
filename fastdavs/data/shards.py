"""Packed training shards: aligned uint8 frames and float16 MFCC windows, memory-mapped.

Data flow: `fastdavs-prepare` decodes, aligns and computes MFCC windows per clip, appends them
with `ShardWriter`, and records the whole set in `index.json` with `write_index`. Training opens
a split with `ShardSet` (read-only memory maps; nothing is copied into RAM until a sample is
sliced) and `fastdavs.data.dataset.DavsDataset` cuts training items from it.

On disk (T = 25 stored frames, A = aligned size = round(image_size * 260 / 256))::

    OUT/index.json                      format_version, image_size, aligned_size, frames_per_clip,
                                        vocabulary (index = word label), identities (index =
                                        identity label), splits {name: {shards, clips}}, skipped
    OUT/<split>/shard_00000/
        frames.npy    uint8   [N, T, A, A, 3]  video frames 2..26 (FIRST_FRAME..), aligned, RGB
        mfcc.npy      float16 [N, T, 20, 12]   window t belongs to stored frame t
        word.npy      int64   [N]              index into the vocabulary
        identity.npy  int64   [N]              index into identities, -1 where unknown (real LRW)
        viseme.npy    float32 [N, T, 4]        optional: the ground-truth mouth of each stored frame
                                               (jaw_open, lip_width, lip_round, teeth; SynthLRW's
                                               sidecars), present only when every clip has it
        meta.json     count, shapes, dtypes ("arrays": every .npy file of the shard), clip_ids
                      (source paths), face_share (share of each clip's frames with a face found),
                      skipped clips, and "complete": true, written last
    OUT/<split>/shard_00001/ ...

The arrays are standard `.npy` files, so dtype and shape live in each file and
`np.load(path, mmap_mode="r")` maps them. Only the 25 frames that have an MFCC window are
stored (the original loads frames 2..26 with `2.bin`..`26.bin`, spec/davs.md §3.1).

Format versions: 2 added the optional `viseme.npy`; shards and indexes of version 1 (never
holding it) are still read, and `ShardSet.visemes` is None for them.

Atomicity and resuming: a shard is written into `shard_XXXXX.tmp/` and published to
`shard_XXXXX/` only when complete (`fastdavs.io.atomic.publish_dir`: every file fsynced, the
rename, the split directory fsynced), so a killed prepare never leaves a half shard that looks
finished. A rerun removes stale `.tmp` directories (`remove_stale_tmp`) and skips shards that
`is_complete` reports done; resuming is by shard.

Float16 MFCC: c1..c12 of the recipe are bounded by construction. The log filter-bank energies
lie between ln(LOG_FLOOR) = -23 and ln(5e8) = 20 (400 int16 samples through an unnormalised
filter), each DCT row has |weights| <= sqrt(2/13) and the sine lifter is at most 12, so
|c| <= 12 * 13 * 0.39 * 43 < 2700, far below float16's 65504. Measured on white noise, a full-scale
square wave, clicks and formant-filtered harmonic (vowel-like) signals, max |c| is 4 to 17.
Rounding to float16 has a relative error of at most 2^-11 = 4.9e-4 (absolute at most 0.0078 for
|c| < 32, below 3e-8 near zero); measured: max relative 4.8e-4, max absolute 6.4e-3 at |c| = 17.
That is far below the variation between neighbouring MFCC steps; the audio encoder sees it as
noise of about 0.05 %.
"""

from __future__ import annotations

import bisect
import json
import logging
import re
import shutil
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fastdavs.data.audio import FIRST_FRAME, N_COEFFS, WINDOW_STEPS
from fastdavs.data.phonemes import VISEME_DIMS
from fastdavs.errors import DataError
from fastdavs.io.atomic import CommitOnExit, publish_dir, write_json

log = logging.getLogger(__name__)

FORMAT_VERSION = 2  # written; 2 added the optional viseme.npy
READABLE_VERSIONS = (1, 2)
FRAMES_PER_CLIP = 25  # T: video frames 2..26 of a 29-frame LRW clip, the ones with an MFCC window
INDEX_FILE = "index.json"
META_FILE = "meta.json"
VISEME_FILE = "viseme.npy"
SHARD_PATTERN = re.compile(r"shard_(\d{5})")
_HEADER_BYTES = 128  # fixed .npy header size, so the final row count can be written in place


def shard_name(k: int) -> str:
    """Directory name of shard `k` of a split: ``shard_00000``, ``shard_00001``, ..."""
    return f"shard_{k:05d}"


# ---- .npy files written as a stream -------------------------------------------------------------
def _npy_header(shape: tuple[int, ...], dtype: np.dtype) -> bytes:
    """A version-1.0 .npy header padded to exactly `_HEADER_BYTES` (the format allows any padding
    that keeps the data 64-byte aligned; a fixed size lets the row count be rewritten at close)."""
    d = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False}
    text = repr({**d, "shape": tuple(shape)})
    prefix = np.lib.format.MAGIC_PREFIX + bytes([1, 0])
    room = _HEADER_BYTES - len(prefix) - 2  # 2 bytes hold the header length
    if len(text) + 1 > room:
        raise ValueError(f"npy header for shape {shape} does not fit in {_HEADER_BYTES} bytes")
    return prefix + struct.pack("<H", room) + (text.ljust(room - 1) + "\n").encode("latin1")


class _NpyStream:
    """Append rows to a .npy file without holding them in memory; `close` writes the row count."""

    def __init__(self, path: Path, row_shape: tuple[int, ...], dtype: np.dtype):
        self.path, self.row_shape, self.dtype = path, tuple(row_shape), np.dtype(dtype)
        self.rows = 0
        self._f = open(path, "wb")  # noqa: SIM115 -- closed by close()
        self._f.write(_npy_header((0, *self.row_shape), self.dtype))

    def append(self, row: np.ndarray) -> None:
        self._f.write(np.ascontiguousarray(row, dtype=self.dtype).data)
        self.rows += 1

    def close(self) -> None:
        self._f.seek(0)
        self._f.write(_npy_header((self.rows, *self.row_shape), self.dtype))
        self._f.close()

    def discard(self) -> None:
        self._f.close()
        self.path.unlink(missing_ok=True)


def _read_json(path: Path, what: str) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: missing {what}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: unreadable {what} ({e}); rerun fastdavs-prepare") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: {what} is not a JSON object; rerun fastdavs-prepare")
    return data


# ---- writing ------------------------------------------------------------------------------------
@dataclass
class _OpenShard:
    tmp: Path
    final: Path
    frames: _NpyStream
    mfcc: _NpyStream
    words: list[int]
    identities: list[int]
    clip_ids: list[str]
    skipped: list[dict]
    visemes: list[np.ndarray | None]
    face_shares: list[float]


class ShardWriter(CommitOnExit):
    """Append clips to the shards of one split, `capacity` clips per shard, each written atomically.

    Args:
        split_dir (str or Path): ``OUT/<split>``; created if missing.
        aligned_size (int): A, the side of the stored (aligned, uncropped) frames.
        capacity (int): clips per shard; a new shard starts when one is full.
        first_shard (int, optional): number of the first shard written. A parallel prepare gives
            each worker its own chunk of sources and shard number (chunk length <= capacity), so
            every shard maps to a fixed chunk and a rerun can skip complete ones. (Default: 0)

    Use as a context manager or call `close`; on an exception inside ``with`` the open shard is
    discarded (its ``.tmp`` directory removed), never committed.
    """

    def __init__(
        self, split_dir: str | Path, aligned_size: int, capacity: int, first_shard: int = 0
    ):
        if capacity < 1 or aligned_size < 1 or first_shard < 0:
            raise ValueError(
                f"ShardWriter: capacity={capacity}, aligned_size={aligned_size} must be >= 1 and "
                f"first_shard={first_shard} >= 0"
            )
        self.split_dir = Path(split_dir)
        self.aligned_size = aligned_size
        self.capacity = capacity
        self.next_shard = first_shard
        self.written: list[Path] = []  # committed shard directories, in order
        self._open: _OpenShard | None = None

    def add(
        self,
        frames: np.ndarray,
        mfcc: np.ndarray,
        word: int,
        identity: int,
        clip_id: str,
        visemes: np.ndarray | None = None,
        face_share: float = 1.0,
    ) -> None:
        """Append one clip.

        Args:
            frames: uint8 [T=25, A, A, 3], the aligned frames 2..26 (RGB).
            mfcc: float [T=25, 20, 12], window t of stored frame t; stored as float16.
            word: index into the vocabulary; identity: index into identities or -1 if unknown.
            clip_id: the source path relative to the LRW root, for reports.
            visemes: optional float [T=25, 4], the ground-truth mouth of each stored frame
                (`phonemes.VISEME_DIMS`); the shard stores them only if every clip has them.
            face_share: the share of the clip's frames where a face was found (the others were
                aligned by interpolation), kept in meta.json for the prepare report.
        """
        a = self.aligned_size
        frames = np.asarray(frames)
        if frames.dtype != np.uint8 or frames.shape != (FRAMES_PER_CLIP, a, a, 3):
            raise DataError(
                f"{clip_id}: frames are {frames.dtype} {list(frames.shape)}, expected uint8 "
                f"[{FRAMES_PER_CLIP}, {a}, {a}, 3] (aligned frames {FIRST_FRAME}.."
                f"{FIRST_FRAME + FRAMES_PER_CLIP - 1})"
            )
        mfcc = np.asarray(mfcc)
        if mfcc.shape != (FRAMES_PER_CLIP, WINDOW_STEPS, N_COEFFS):
            raise DataError(
                f"{clip_id}: MFCC windows are {list(mfcc.shape)}, expected "
                f"[{FRAMES_PER_CLIP}, {WINDOW_STEPS}, {N_COEFFS}]"
            )
        peak = float(np.abs(mfcc).max())
        if not peak <= float(np.finfo(np.float16).max):  # also catches NaN
            raise DataError(f"{clip_id}: MFCC max |value| {peak} does not fit float16")
        if word < 0 or identity < -1:
            raise DataError(f"{clip_id}: word={word} must be >= 0 and identity={identity} >= -1")
        if visemes is not None:
            visemes = np.asarray(visemes, dtype=np.float32)
            if visemes.shape != (FRAMES_PER_CLIP, len(VISEME_DIMS)):
                raise DataError(
                    f"{clip_id}: visemes are {list(visemes.shape)}, expected "
                    f"[{FRAMES_PER_CLIP}, {len(VISEME_DIMS)}] (one per stored frame)"
                )
            if not np.isfinite(visemes).all():
                raise DataError(f"{clip_id}: visemes hold NaN or infinity")
        shard = self._open or self._start()
        shard.frames.append(frames)
        shard.mfcc.append(mfcc)
        shard.words.append(int(word))
        shard.identities.append(int(identity))
        shard.clip_ids.append(str(clip_id))
        shard.visemes.append(visemes)
        shard.face_shares.append(round(float(face_share), 4))
        if len(shard.clip_ids) == self.capacity:
            self._commit()

    def skip(self, clip_id: str, reason: str) -> None:
        """Record a clip that could not be prepared; the reason goes to the shard and the index."""
        log.info("skipping %s: %s", clip_id, reason)
        (self._open or self._start()).skipped.append({"clip": str(clip_id), "reason": reason})

    def close(self) -> list[Path]:
        """Commit the open shard (also one holding only skipped clips); return all written."""
        if self._open is not None:
            self._commit()
        return self.written

    def abort(self) -> None:
        """Discard the open shard; committed shards stay."""
        if self._open is not None:
            self._open.frames.discard()
            self._open.mfcc.discard()
            shutil.rmtree(self._open.tmp, ignore_errors=True)
            self._open = None

    def _start(self) -> _OpenShard:
        final = self.split_dir / shard_name(self.next_shard)
        self.next_shard += 1
        if final.exists():
            if is_complete(final):
                raise DataError(
                    f"{final}: shard already complete; skip it when resuming, or delete the "
                    "output directory to rebuild"
                )
            log.warning("%s: removing an incomplete shard", final)
            shutil.rmtree(final)
        tmp = final.with_name(final.name + ".tmp")
        if tmp.exists():
            shutil.rmtree(tmp)  # left by a killed run
        tmp.mkdir(parents=True)
        a = self.aligned_size
        self._open = _OpenShard(
            tmp=tmp,
            final=final,
            frames=_NpyStream(tmp / "frames.npy", (FRAMES_PER_CLIP, a, a, 3), np.uint8),
            mfcc=_NpyStream(
                tmp / "mfcc.npy", (FRAMES_PER_CLIP, WINDOW_STEPS, N_COEFFS), np.float16
            ),
            words=[],
            identities=[],
            clip_ids=[],
            skipped=[],
            visemes=[],
            face_shares=[],
        )
        return self._open

    def _commit(self) -> None:
        s, self._open = self._open, None
        try:
            s.frames.close()
            s.mfcc.close()
            np.save(s.tmp / "word.npy", np.asarray(s.words, dtype=np.int64))
            np.save(s.tmp / "identity.npy", np.asarray(s.identities, dtype=np.int64))
            n = len(s.clip_ids)
            arrays = {
                "frames": {"shape": [n, *s.frames.row_shape], "dtype": "uint8"},
                "mfcc": {"shape": [n, *s.mfcc.row_shape], "dtype": "float16"},
                "word": {"shape": [n], "dtype": "int64"},
                "identity": {"shape": [n], "dtype": "int64"},
            }
            have = sum(v is not None for v in s.visemes)
            if n and have == n:
                np.save(s.tmp / VISEME_FILE, np.stack(s.visemes))  # float32 [N, T, 4]
                arrays["viseme"] = {
                    "shape": [n, FRAMES_PER_CLIP, len(VISEME_DIMS)],
                    "dtype": "float32",
                }
            elif have:
                log.warning(
                    "%s: %d of %d clips have visemes; the shard stores none", s.final, have, n
                )
            meta = {
                "format_version": FORMAT_VERSION,
                "count": n,
                "aligned_size": self.aligned_size,
                "frames_per_clip": FRAMES_PER_CLIP,
                "arrays": arrays,
                "clip_ids": s.clip_ids,
                "face_share": s.face_shares,
                "skipped": s.skipped,
                "complete": True,  # last: a meta.json without it is from an interrupted writer
            }
            write_json(s.tmp / META_FILE, meta, indent=1)
        except BaseException:  # a full disk, say: leave no half-written shard behind
            shutil.rmtree(s.tmp, ignore_errors=True)
            raise
        publish_dir(s.tmp, s.final)
        log.debug("wrote %s (%d clips, %d skipped)", s.final, n, len(s.skipped))
        self.written.append(s.final)


# ---- shard state --------------------------------------------------------------------------------
def read_meta(shard_dir: str | Path) -> dict:
    """The `meta.json` of a complete shard; DataError naming the file if missing or corrupt."""
    path = Path(shard_dir) / META_FILE
    meta = _read_json(path, "shard metadata")
    if meta.get("complete") is not True:
        raise DataError(f"{path}: shard is incomplete; rerun fastdavs-prepare to finish it")
    if meta.get("format_version") not in READABLE_VERSIONS:
        raise DataError(
            f"{path}: shard format version {meta.get('format_version')}, this fastdavs reads "
            f"{_readable()}; rerun fastdavs-prepare into a new directory"
        )
    try:
        count = meta["count"]
        clip_ids = meta["clip_ids"]
        skipped = meta["skipped"]
        aligned = meta["aligned_size"]
    except KeyError as e:
        raise DataError(f"{path}: shard metadata lacks {e}; rerun fastdavs-prepare") from None
    if not (isinstance(count, int) and isinstance(aligned, int) and len(clip_ids) == count):
        raise DataError(f"{path}: inconsistent shard metadata; rerun fastdavs-prepare")
    if not isinstance(skipped, list):
        raise DataError(f"{path}: 'skipped' is not a list; rerun fastdavs-prepare")
    return meta


def _readable() -> str:
    return " or ".join(map(str, READABLE_VERSIONS))


def is_complete(shard_dir: str | Path) -> bool:
    """True if `shard_dir` is a finished shard (resume skips it)."""
    try:
        read_meta(shard_dir)
    except DataError:
        return False
    return True


def complete_shards(split_dir: str | Path) -> list[Path]:
    """The finished shard directories of a split, in shard order (``.tmp`` ones are ignored)."""
    split_dir = Path(split_dir)
    if not split_dir.is_dir():
        return []
    dirs = [p for p in split_dir.iterdir() if SHARD_PATTERN.fullmatch(p.name) and p.is_dir()]
    return [p for p in sorted(dirs) if is_complete(p)]


def remove_stale_tmp(split_dir: str | Path) -> list[Path]:
    """Delete ``shard_XXXXX.tmp`` directories left by a killed run; return them.

    Call once before starting writers: a writer that is running owns its ``.tmp`` directory.
    """
    split_dir = Path(split_dir)
    if not split_dir.is_dir():
        return []
    stale = sorted(
        p for p in split_dir.iterdir() if p.suffix == ".tmp" and SHARD_PATTERN.fullmatch(p.stem)
    )
    for p in stale:
        log.info("removing unfinished shard %s", p)
        shutil.rmtree(p)
    return stale


# ---- the index ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ShardIndex:
    """Contents of ``OUT/index.json``. Shard paths are relative to OUT."""

    root: Path
    image_size: int
    aligned_size: int
    frames_per_clip: int
    vocabulary: list[str]
    identities: list[str]
    splits: dict[str, dict]  # name -> {"shards": [relative dirs], "clips": int}
    skipped: list[dict]  # {"split", "clip", "reason"}
    source: str  # the LRW-layout root the clips were prepared from (clip ids are relative to it)


def write_index(
    out: str | Path,
    *,
    image_size: int,
    aligned_size: int,
    vocabulary: Sequence[str],
    identities: Sequence[str],
    source: str | Path = "",
    splits: Iterable[str] = ("train", "val", "test"),
) -> ShardIndex:
    """Scan the complete shards of each split under `out` and write ``index.json`` atomically.

    Skipped clips are gathered from the shards' metadata, so a resumed prepare still reports the
    clips skipped by earlier runs. Splits with no shard directory are left out.
    """
    out = Path(out)
    entries: dict[str, dict] = {}
    skipped: list[dict] = []
    for split in splits:
        shards = complete_shards(out / split)
        if not shards:
            continue
        clips = 0
        for d in shards:
            meta = read_meta(d)
            if meta["aligned_size"] != aligned_size:
                raise DataError(
                    f"{d}: aligned size {meta['aligned_size']}, expected {aligned_size}; the "
                    "directory mixes presets: use a fresh output directory"
                )
            clips += meta["count"]
            skipped += [{"split": split, **s} for s in meta["skipped"]]
        entries[split] = {"shards": [f"{split}/{d.name}" for d in shards], "clips": clips}
    data = {
        "format_version": FORMAT_VERSION,
        "image_size": image_size,
        "aligned_size": aligned_size,
        "frames_per_clip": FRAMES_PER_CLIP,
        "first_frame": FIRST_FRAME,
        "mfcc_window": [WINDOW_STEPS, N_COEFFS],
        "vocabulary": list(vocabulary),
        "identities": list(identities),
        "splits": entries,
        "skipped": skipped,
        "source": str(source),
    }
    write_json(out / INDEX_FILE, data, indent=1, fsync=True)
    return _index_from(out, data)


def load_index(out: str | Path) -> ShardIndex:
    """Read ``OUT/index.json`` and check that every shard it lists exists and is complete."""
    out = Path(out)
    path = out / INDEX_FILE
    if not path.exists():
        raise DataError(f"{path}: no shard index; run fastdavs-prepare first")
    data = _read_json(path, "shard index")
    if data.get("format_version") not in READABLE_VERSIONS:
        raise DataError(
            f"{path}: format version {data.get('format_version')}, this fastdavs reads "
            f"{_readable()}; rerun fastdavs-prepare into a new directory"
        )
    index = _index_from(out, data)
    for split, entry in index.splits.items():
        for rel in entry["shards"]:
            d = out / rel
            if not d.is_dir():
                raise DataError(f"{d}: shard of split {split!r} is missing; rerun fastdavs-prepare")
            read_meta(d)
    return index


def _index_from(out: Path, data: dict) -> ShardIndex:
    try:
        return ShardIndex(
            root=out,
            image_size=int(data["image_size"]),
            aligned_size=int(data["aligned_size"]),
            frames_per_clip=int(data["frames_per_clip"]),
            vocabulary=list(data["vocabulary"]),
            identities=list(data["identities"]),
            splits=dict(data["splits"]),
            skipped=list(data["skipped"]),
            source=str(data.get("source", "")),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(
            f"{out / INDEX_FILE}: malformed index ({e!r}); rerun fastdavs-prepare"
        ) from None


# ---- reading ------------------------------------------------------------------------------------
class ShardSet:
    """All shards of one split as one read-only, memory-mapped collection of N clips.

    `frames(i)` and `mfcc(i)` return views into the memory maps (no copy); labels are small and
    held in RAM. Pickling (DataLoader workers under spawn/forkserver) sends paths only; each
    process maps the files again on first access.

    Args:
        out (str or Path): the prepare output directory (holding ``index.json``).
        split (str): e.g. ``"train"``.
        index (ShardIndex, optional): an already loaded index. (Default: read it)

    Attributes:
        words, identities: int64 [N] labels (identity -1 where unknown); clip_ids: list of N str.
        visemes: float32 [N, T=25, 4] ground-truth mouth of every stored frame (jaw_open,
            lip_width, lip_round, teeth), held in RAM; None unless every shard of the split has
            them (real LRW has none).
        image_size, aligned_size: S and A of the prepared set.
    """

    def __init__(self, out: str | Path, split: str, index: ShardIndex | None = None):
        self.index = index or load_index(out)
        if split not in self.index.splits:
            have = ", ".join(self.index.splits) or "none"
            raise DataError(
                f"{self.index.root / INDEX_FILE}: no split {split!r} (have: {have}); "
                "prepare it with fastdavs-prepare"
            )
        self.split = split
        self.image_size = self.index.image_size
        self.aligned_size = self.index.aligned_size
        self._dirs: list[Path] = []
        counts, words, identities, visemes, self.clip_ids = [], [], [], [], []
        for rel in self.index.splits[split]["shards"]:
            d = self.index.root / rel
            meta = read_meta(d)
            n = meta["count"]
            if n == 0:
                continue
            w, ident = _load_npy(d / "word.npy"), _load_npy(d / "identity.npy")
            if w.shape != (n,) or ident.shape != (n,):
                raise DataError(f"{d}: label arrays do not match meta.json; rerun prepare")
            self._dirs.append(d)
            counts.append(n)
            words.append(w)
            identities.append(ident)
            visemes.append(_load_visemes(d, meta))
            self.clip_ids += meta["clip_ids"]
        self._starts = np.cumsum([0, *counts]).tolist()  # first global row of each shard
        self.words = np.concatenate(words) if words else np.zeros(0, np.int64)
        self.identities = np.concatenate(identities) if identities else np.zeros(0, np.int64)
        self.visemes = (
            np.concatenate(visemes) if visemes and all(v is not None for v in visemes) else None
        )
        self._maps: list[tuple[np.memmap, np.memmap]] | None = None

    def __len__(self) -> int:
        return self._starts[-1]

    def locate(self, i: int) -> tuple[int, int]:
        """(shard number within this set, row within that shard) of clip `i`."""
        if not 0 <= i < len(self):
            raise IndexError(f"clip {i} out of range for {len(self)} clips")
        s = bisect.bisect_right(self._starts, i) - 1
        return s, i - self._starts[s]

    def frames(self, i: int) -> np.memmap:
        """uint8 [T=25, A, A, 3] aligned frames of clip `i` (a read-only view)."""
        s, r = self.locate(i)
        return self._arrays()[s][0][r]

    def mfcc(self, i: int) -> np.memmap:
        """float16 [T=25, 20, 12] MFCC windows of clip `i` (a read-only view)."""
        s, r = self.locate(i)
        return self._arrays()[s][1][r]

    def check(self) -> ShardSet:
        """Map every shard's arrays now, so that a truncated or mismatched file is a DataError
        before any work starts rather than in the first batch."""
        self._arrays()
        return self

    def _arrays(self) -> list[tuple[np.memmap, np.memmap]]:
        if self._maps is None:
            a = self.aligned_size
            maps = []
            for d, n in zip(self._dirs, np.diff(self._starts), strict=True):
                fr = _load_npy(d / "frames.npy", mmap=True)
                mf = _load_npy(d / "mfcc.npy", mmap=True)
                if fr.shape != (n, FRAMES_PER_CLIP, a, a, 3) or fr.dtype != np.uint8:
                    raise DataError(f"{d}/frames.npy: {fr.dtype} {fr.shape} does not match meta")
                if mf.shape != (n, FRAMES_PER_CLIP, WINDOW_STEPS, N_COEFFS) or (
                    mf.dtype != np.float16
                ):
                    raise DataError(f"{d}/mfcc.npy: {mf.dtype} {mf.shape} does not match meta")
                maps.append((fr, mf))
            self._maps = maps
        return self._maps

    def __getstate__(self) -> dict:
        # A pickled np.memmap carries its whole contents; send the paths and map again instead.
        return {**self.__dict__, "_maps": None}


def _load_visemes(shard_dir: Path, meta: dict) -> np.ndarray | None:
    """float32 [N, T, 4] of a shard whose meta.json lists "viseme"; None if it lists none."""
    if "viseme" not in meta.get("arrays", {}):
        return None
    v = _load_npy(shard_dir / VISEME_FILE)
    if v.shape != (meta["count"], FRAMES_PER_CLIP, len(VISEME_DIMS)) or v.dtype != np.float32:
        raise DataError(
            f"{shard_dir / VISEME_FILE}: {v.dtype} {v.shape} does not match meta.json; "
            "rerun fastdavs-prepare"
        )
    return v


def _load_npy(path: Path, mmap: bool = False) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise DataError(f"{path}: unreadable shard array ({e}); rerun fastdavs-prepare") from None
