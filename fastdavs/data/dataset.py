"""Training items cut from packed shards: what the three DAVS stages read (spec/davs.md §3.4).

Data flow: `ShardSet` (memory-mapped uint8 frames and float16 MFCC windows of 25 stored frames
per clip) -> `DavsDataset` (one item per clip: crop, flip and frame choices, float conversion)
-> `make_loader` (batches, worker processes) -> the training step.

One item holds, with S = cfg.image_size, L = cfg.seq_len, P = cfg.adv_frames, G = cfg.gan_frames:

    identity        float32 [3, S, S]     a random frame of the same clip, from its 25 stored frames
                                          (the original drew 0..28 of 25 loaded frames: fixed)
    frames          float32 [L, 3, S, S]  L frames at stride 2 (the word-ID sequence)
    mfcc            float32 [L, 20, 12]   the MFCC window of each of those frames
    gen_start       int64 []              start of the run of G consecutive sequence entries used
                                          for generation and the sequence GAN; 0 <= gen_start <= L-G
    adv_frames      float32 [P, 3, S, S]  P consecutive frames for the pid -> word adversary
    word            int64 []              word label
    identity_label  int64 []              identity label, -1 where unknown (real LRW)
    visemes         float32 [L, 4]        the ground-truth mouth of each of `frames` (jaw opening,
                                          lip width, rounding, teeth), only from shards that
                                          hold it (SynthLRW); a flip does not change it

The generation run is returned as a start index, not as frames: the run is a slice of `frames`
and `mfcc`, so `take_run` cuts it from the batch on the training device instead of sending the
same pixels through the loader, shared memory, pinning and the host-to-device copy twice.

Sequence placement: the L frames span 2L - 1 stored frames. Their start is drawn from two
neighbours {c, c + 1}, c = max(0, (25 - (2L - 1) - 1) // 2): for L = 12 that is {0, 1}, as in the
original; shorter sequences stay centred on the clip, where LRW puts the word. Evaluation uses c.

Augmentation (training only): one random S x S crop of the A x A aligned frames (offsets
0..A-S in each axis) and one random horizontal flip per item, shared by every frame of the item
(identity, sequence and adversary frames alike). Evaluation crops the centre, (A-S)//2 (2 for
260 -> 256), without a flip, and uses fixed starts (sequence c, generation run 0, adversary
frames centred); its identity frame is still drawn, but from (seed, 0, index), so it is fixed.

Randomness: each item draws from its own generator, seeded from (seed, epoch, index), so a
resumed run reproduces the same items, worker processes need no shared RNG, and the results do
not depend on the number of workers.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler

from fastdavs.config import ConfigError, DavsConfig
from fastdavs.data.phonemes import VISEME_DIMS
from fastdavs.data.shards import FRAMES_PER_CLIP, ShardSet
from fastdavs.errors import DataError

_U8_MAX = np.float32(255)


def _item_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator of one item. Philox is counter-based: the key (seed) and the high counter
    words (index, epoch) select an independent stream without hashing a seed per item."""
    return np.random.Generator(np.random.Philox(key=[seed, 0], counter=[0, 0, index, epoch]))


class ItemPlan(NamedTuple):
    """The random choices of one item; frame numbers index the 25 stored frames of the clip."""

    identity: int  # identity frame
    seq_start: int  # first sequence frame; the sequence is seq_start + 2 k, k < L
    gen_start: int  # first entry of the generation run within the sequence
    adv_start: int  # first adversary frame
    crop_y: int
    crop_x: int
    flip: bool


class DavsDataset(Dataset):
    """Training or evaluation items over a `ShardSet` (see the module docstring for the fields).

    Args:
        shards (ShardSet): the split to read; prepared at ``cfg.image_size``.
        cfg (DavsConfig): image_size, seq_len, adv_frames and gan_frames are used.
        train (bool): random crop, flip and starts if True; centred and fixed if False.
        seed (int, optional): base of every item's random choices, in [0, 2**64). (Default: 0)

    Items are addressed by clip index (using the epoch of `set_epoch`) or by an
    ``(epoch, index)`` pair, which is what `make_loader`'s sampler sends, so persistent worker
    processes see the epoch without sharing state.

    Raises:
        ConfigError: the lengths do not fit the 25 stored frames.
        DataError: the shards were prepared for another image size.
    """

    def __init__(self, shards: ShardSet, cfg: DavsConfig, train: bool, seed: int = 0):
        t = FRAMES_PER_CLIP
        if 2 * cfg.seq_len - 1 > t:
            raise ConfigError(
                f"seq_len={cfg.seq_len}: frames at stride 2 span {2 * cfg.seq_len - 1} "
                f"frames, but a clip stores {t}; use seq_len <= {(t + 1) // 2}"
            )
        if cfg.adv_frames > t:
            raise ConfigError(f"adv_frames={cfg.adv_frames}: a clip stores only {t} frames")
        if cfg.gan_frames > cfg.seq_len:
            raise ConfigError(
                f"gan_frames={cfg.gan_frames}: the generation run is cut from the "
                f"seq_len={cfg.seq_len} sequence; use gan_frames <= seq_len"
            )
        if shards.image_size != cfg.image_size or shards.aligned_size < cfg.image_size:
            raise DataError(
                f"{shards.index.root}: shards were prepared for image_size {shards.image_size} "
                f"(aligned {shards.aligned_size}), the config has {cfg.image_size}; prepare "
                "again with this preset, or train with the preset they were prepared for"
            )
        if not isinstance(seed, int) or not 0 <= seed < 2**64:
            raise ValueError(f"seed={seed!r}: must be an integer in [0, 2**64)")
        self.shards, self.train, self.seed = shards, train, seed
        self.size = cfg.image_size
        self.seq_len, self.adv_len, self.gan_len = cfg.seq_len, cfg.adv_frames, cfg.gan_frames
        slack = t - (2 * cfg.seq_len - 1)
        c = max(0, (slack - 1) // 2)
        self._seq_starts = (c, min(c + 1, slack))
        crops = shards.aligned_size - cfg.image_size + 1
        # Number of options of each choice, in ItemPlan order.
        self._choices = np.array(
            [t, 2, cfg.seq_len - cfg.gan_frames + 1, t - cfg.adv_frames + 1, crops, crops, 2.0]
        )
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose random choices items get (call before iterating a loader)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.shards)

    def plan(self, index: int, epoch: int) -> ItemPlan:
        """The choices for clip `index` in `epoch`; a pure function of (seed, epoch, index)."""
        t, s, a = FRAMES_PER_CLIP, self.size, self.shards.aligned_size
        if not self.train:
            centre = (a - s) // 2
            return ItemPlan(
                identity=int(_item_rng(self.seed, 0, index).random() * t),
                seq_start=self._seq_starts[0],
                gen_start=0,
                adv_start=(t - self.adv_len) // 2,
                crop_y=centre,
                crop_x=centre,
                flip=False,
            )
        # floor(u * n) for u uniform in [0, 1) is uniform on 0..n-1 (bias ~n 2^-53), and one
        # vector draw is cheaper than seven bounded-integer draws.
        draws = _item_rng(self.seed, epoch, index).random(len(self._choices)) * self._choices
        i, seq, gen, adv, y, x, flip = draws.astype(np.int64).tolist()
        return ItemPlan(i, self._seq_starts[seq], gen, adv, y, x, bool(flip))

    def sequence_frames(self, start: int) -> slice:
        """The stored frames of the word-ID sequence that starts at `start`: L at stride 2."""
        return slice(start, start + 2 * self.seq_len - 1, 2)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        epoch, index = key if isinstance(key, tuple) else (self.epoch, key)
        p = self.plan(index, epoch)
        s, n_seq, n_adv = self.size, self.seq_len, self.adv_len
        clip = self.shards.frames(index)  # [T, A, A, 3] uint8, memory-mapped
        rows = slice(p.crop_y, p.crop_y + s)
        if p.flip:
            cols = slice(p.crop_x + s - 1, p.crop_x - 1 if p.crop_x else None, -1)
        else:
            cols = slice(p.crop_x, p.crop_x + s)
        seq = self.sequence_frames(p.seq_start)
        # Each group of frames goes from the mapped file straight into the float32 [T, 3, S, S]
        # output in one pass (crop, flip, HWC -> CHW, / 255). NumPy rather than torch: one
        # thread, no intermediate copy, and no OpenMP threads competing with a training step.
        x = np.empty((1 + n_seq + n_adv, 3, s, s), np.float32)  # [1 + L + P, 3, S, S]
        groups = (
            (clip[p.identity : p.identity + 1, rows, cols], x[:1]),
            (clip[seq, rows, cols], x[1 : 1 + n_seq]),
            (clip[p.adv_start : p.adv_start + n_adv, rows, cols], x[1 + n_seq :]),
        )
        for src, dst in groups:  # src [n, S, S, 3] uint8 view, dst [n, 3, S, S]
            np.divide(src.transpose(0, 3, 1, 2), _U8_MAX, out=dst, dtype=np.float32)
        x = torch.from_numpy(x)
        mfcc = self.shards.mfcc(index)[seq].astype(np.float32)  # [L, 20, 12]
        item = {
            "identity": x[0],
            "frames": x[1 : 1 + n_seq],
            "mfcc": torch.from_numpy(mfcc),
            "gen_start": torch.tensor(p.gen_start),
            "adv_frames": x[1 + n_seq :],
            "word": torch.tensor(int(self.shards.words[index])),
            "identity_label": torch.tensor(int(self.shards.identities[index])),
        }
        if self.shards.visemes is not None:
            item["visemes"] = torch.from_numpy(self.shards.visemes[index][seq].copy())  # [L, 4]
        return item


def example_batch(cfg: DavsConfig, batch_size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random batch of the Dataset's shapes, for tests and benchmarks: the keys, shapes and
    dtypes of `batch_size` collated `DavsDataset` items (module docstring), with smooth frames a
    generator can fit (bilinear upsampling of 4x4 noise) and MFCC-scaled windows. CPU tensors,
    drawn from their own generator seeded with `seed`."""
    g = torch.Generator().manual_seed(seed)
    b, s, L, P = batch_size, cfg.image_size, cfg.seq_len, cfg.adv_frames

    def frames(n: int) -> torch.Tensor:  # [B, n, 3, S, S]
        coarse = torch.rand(b * n, 3, 4, 4, generator=g)
        return F.interpolate(coarse, size=(s, s), mode="bilinear").view(b, n, 3, s, s)

    return {
        "identity": frames(1)[:, 0],
        "frames": frames(L),
        "mfcc": torch.randn(b, L, cfg.mfcc_steps, cfg.mfcc_coeffs, generator=g) * 10,
        "gen_start": torch.randint(L - cfg.gan_frames + 1, (b,), generator=g),
        "adv_frames": frames(P),
        "word": torch.randint(cfg.num_words, (b,), generator=g),
        "identity_label": torch.randint(cfg.num_identities, (b,), generator=g),
        "visemes": torch.rand(b, L, len(VISEME_DIMS), generator=g),
    }


def take_run(x: torch.Tensor, start: torch.Tensor, length: int) -> torch.Tensor:
    """Per-item runs of a batch: ``out[b] = x[b, start[b] : start[b] + length]``.

    Args:
        x (Tensor): [B, L, ...], e.g. a batch's `frames` or `mfcc`.
        start (Tensor): int64 [B], e.g. the batch's `gen_start`; on any device (moved to x's).
        length (int): run length, e.g. cfg.gan_frames.

    Returns:
        Tensor: [B, length, ...], a new tensor on x's device; autograd flows to `x`.
    """
    b = torch.arange(x.shape[0], device=x.device)[:, None]  # [B, 1]
    t = start.to(x.device)[:, None] + torch.arange(length, device=x.device)  # [B, length]
    return x[b, t]


class EpochSampler(Sampler):
    """Yields ``(epoch, index)`` keys for all items, shuffled from (seed, epoch) if asked.

    The epoch is read from the dataset when iteration starts, in the main process, so
    `DavsDataset.set_epoch` reaches persistent workers through the keys; the order of an epoch
    is reproducible on its own, which a resumed run needs. With `group` > 1 (shuffled orders
    only) the shuffled items are gathered into runs of up to `group` clips of one identity
    (clips of unknown identity stay single) and the runs are shuffled: a batch then holds
    several clips of each of fewer people, which `losses.identity_scatter_loss` needs. With
    `world` > 1 each rank takes every `world`-th run of `group` keys of the same order (each
    process of a distributed run sees its own share), and `start` skips the first keys of this
    rank's share: a resumed run sets it to the number of items it had consumed in the epoch, so
    no item is loaded only to be thrown away.
    """

    def __init__(
        self,
        dataset: DavsDataset,
        shuffle: bool,
        seed: int = 0,
        rank: int = 0,
        world: int = 1,
        group: int = 1,
    ):
        if not 0 <= rank < world:
            raise ValueError(f"rank={rank} must be in [0, world={world})")
        if group < 1:
            raise ValueError(f"group={group} must be at least 1")
        self.dataset, self.shuffle, self.seed = dataset, shuffle, seed
        self.rank, self.world, self.group = rank, world, group
        self.start = 0

    def _mine(self, n: int) -> np.ndarray:
        """[n] bool: the positions of an epoch's order that belong to this rank."""
        return np.arange(n) // self.group % self.world == self.rank

    def __len__(self) -> int:
        return max(0, int(self._mine(len(self.dataset)).sum()) - self.start)

    def __iter__(self):
        epoch, n = self.dataset.epoch, len(self.dataset)
        if not self.shuffle:
            order = np.arange(n)
        else:
            rng = np.random.default_rng([self.seed, epoch])
            order = rng.permutation(n)
            if self.group > 1:
                order = _identity_runs(order, self.dataset.shards.identities, self.group, rng)
        for i in order[self._mine(n)][self.start :].tolist():
            yield epoch, i


def _identity_runs(
    order: np.ndarray, identities: np.ndarray, group: int, rng: np.random.Generator
) -> np.ndarray:
    """`order` rearranged into shuffled runs of up to `group` items of one identity.

    Args:
        order: [N] item indices (already shuffled); identities: [num items] labels, -1 unknown.
    Returns: [N] the same indices, each identity's items in their `order` order, cut into runs.
    """
    runs: dict[int, list[int]] = {}
    for i in order.tolist():
        runs.setdefault(int(identities[i]), []).append(i)
    chunks = []
    for person, items in runs.items():
        size = group if person >= 0 else 1  # clips of unknown identity stay single
        chunks += [items[k : k + size] for k in range(0, len(items), size)]
    return np.array([i for c in rng.permutation(len(chunks)) for i in chunks[c]], dtype=np.int64)


def default_num_workers() -> int:
    """Loader processes by default: half the cores, 1 to 4 (1 on a 2-core machine).

    On 2 cores the training step keeps both cores busy and takes seconds per batch of 16 at the
    `small` preset; one worker prepares the next batches beside it (about 40 ms of CPU per
    64 px batch, most of it moving 26 MB of float32 through shared memory), and more workers
    would only compete with the step for the cores.
    """
    return max(1, min(4, (os.cpu_count() or 2) // 2))


def make_loader(
    dataset: DavsDataset,
    batch_size: int,
    shuffle: bool,
    num_workers: int | None = None,
    seed: int = 0,
    drop_last: bool = False,
    rank: int = 0,
    world: int = 1,
    identity_group: int = 1,
) -> DataLoader:
    """A DataLoader over `dataset` whose batches depend only on (seed, dataset seed, epoch).

    Call ``dataset.set_epoch(e)`` before iterating epoch e (and set ``loader.sampler.start`` to
    skip items already consumed). Workers are persistent when `num_workers` > 0 (default
    `default_num_workers`); memory is pinned only if CUDA is available. Batches are identical for
    every `num_workers`. `rank`/`world` shard each epoch across the processes of a distributed run;
    `identity_group` > 1 puts that many clips of one identity in a row (`EpochSampler`).
    """
    if num_workers is None:
        num_workers = default_num_workers()
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=EpochSampler(dataset, shuffle, seed, rank, world, identity_group),
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(seed),  # seeds any torch RNG in the workers
        persistent_workers=num_workers > 0,
        pin_memory=torch.cuda.is_available(),
        drop_last=drop_last,
    )
