"""The run directory's pictures: the sample grid and the sample mp4 show identity | real |
audio-driven | video-driven | shuffled audio, in that order, under a labelled header."""

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from fastdavs.config import DavsConfig
from fastdavs.data.dataset import DavsDataset
from fastdavs.data.shards import ShardSet
from fastdavs.data.video_io import read_clip
from fastdavs.evaluate.run import shuffled_partners
from fastdavs.model import DavsModel
from fastdavs.train.runlog import COLUMNS, GAP, GRID_FRAMES, sample_grid, sample_video

CFG = DavsConfig.from_preset("tiny", num_words=3, num_identities=4, seq_len=12)
S = CFG.image_size  # 32: grid tiles are scaled by 2 to 64 px, video panels by 8 to 256 px


def marked_model() -> tuple[DavsModel, list[torch.Tensor]]:
    """A model whose generated frames say what drove them: the audio of clip b in the k-th
    call of encode_audio gives grey (b + 1) / 10 + 0.4 k, any video 0.9. Also returns the list
    of MFCC windows each encode_audio call received."""
    model = DavsModel(CFG)
    calls = []

    def encode_audio(mfcc: torch.Tensor) -> torch.Tensor:
        wid = torch.zeros(*mfcc.shape[:2], CFG.word_dim)
        wid[..., 0] = (torch.arange(len(mfcc))[:, None] + 1) / 10 + 0.4 * len(calls)
        calls.append(mfcc.clone())
        return wid

    model.encode_audio = encode_audio
    model.encode_video = lambda frames: torch.full((*frames.shape[:2], CFG.word_dim), 0.9)
    model.generate = lambda ident, wid: wid[..., :1, None, None].expand(*wid.shape[:2], 3, S, S)
    return model, calls


@pytest.fixture(scope="module")
def items(shards):
    ds = DavsDataset(ShardSet(shards, "val"), CFG, train=False)
    return default_collate([ds[i] for i in range(4)])


def test_grid_columns_in_order_under_a_header(items, tmp_path):
    model, _ = marked_model()
    model.train()
    path = sample_grid(model, items, tmp_path / "grid.png")
    assert model.training  # its mode is restored
    grid = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB).astype(int)
    tile = 2 * S
    n = GRID_FRAMES
    assert grid.shape[1] == tile * (1 + 4 * n) + 4 * GAP
    header = grid.shape[0] - 4 * tile
    assert 10 <= header <= 30
    starts = np.cumsum([0] + [tile + GAP] + [n * tile + GAP] * 3)  # left edge of each group
    widths = [tile] + [n * tile] * 4
    for x, w in zip(starts, widths, strict=True):
        label = grid[:header, x : x + w]
        assert label.min() < 100 and (label == 255).mean() > 0.6  # dark text on white
        assert (grid[:, x + w : x + w + GAP] == 255).all() or x + w == grid.shape[1]

    def group(row: int, k: int) -> np.ndarray:
        y = header + row * tile
        return grid[y : y + tile, starts[k] : starts[k] + widths[k]]

    picks = np.linspace(0, CFG.seq_len - 1, n).round().astype(int)
    partners = shuffled_partners(items["word"].numpy())
    for b in range(4):
        ident = items["identity"][b].permute(1, 2, 0).mul(255).round().numpy()
        np.testing.assert_array_equal(group(b, 0)[::2, ::2], ident)
        real = items["frames"][b, picks].permute(2, 0, 3, 1).reshape(S, n * S, 3)
        np.testing.assert_array_equal(group(b, 1)[::2, ::2], real.mul(255).round().numpy())
        assert (group(b, 2) == round(255 * (b + 1) / 10)).all()  # its own audio
        assert (group(b, 3) == round(255 * 0.9)).all()  # its video
        assert (group(b, 4) == round(255 * (partners[b] + 1) / 10)).all()  # another's audio
        assert items["word"][partners[b]] != items["word"][b]


def test_video_panels_header_and_sound(shards, tmp_path):
    val = ShardSet(shards, "val")
    model, calls = marked_model()
    path = sample_video(model, val, 1, tmp_path / "clip.mp4")
    clip = read_clip(path)
    scale = 256 // S
    width = scale * S
    assert clip.frames.shape[0] == 25 and clip.frames.shape[2] == len(COLUMNS) * width
    header = clip.frames.shape[1] - width
    assert 10 <= header <= 30 and header % 2 == 0
    assert len(clip.audio) == 25 * 16000 // 25  # the clip's sound over the 25 frames
    frame = clip.frames[12].astype(int)
    for k in range(len(COLUMNS)):
        label = frame[:header, k * width : (k + 1) * width]
        assert label.min() < 100 and (label > 230).mean() > 0.6
    body = frame[header + 8 : -8]  # away from the header edge (H.264 blurs across it)

    def panel(k: int) -> np.ndarray:
        return body[:, k * width + 8 : (k + 1) * width - 8]

    # Audio-driven: this clip's audio (1st call); shuffled: another word's audio (2nd call).
    assert abs(panel(2).mean() - 255 * 0.1) < 3 and abs(panel(3).mean() - 255 * 0.9) < 3
    assert abs(panel(4).mean() - 255 * 0.5) < 3
    partner = shuffled_partners(val.words)[1]
    assert val.words[partner] != val.words[1]
    np.testing.assert_array_equal(calls[0][0].numpy(), val.mfcc(1).astype(np.float32))
    np.testing.assert_array_equal(calls[1][0].numpy(), val.mfcc(partner).astype(np.float32))
    real = val.frames(1)[12]  # [A, A, 3], centre-cropped in the panel
    assert abs(panel(1).mean() - real.mean()) < 10 and panel(0).std() > 10
