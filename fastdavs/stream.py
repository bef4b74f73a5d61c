"""Streaming synthesis: feed audio chunks as they arrive, get each video frame as soon as the
audio its MFCC window needs is in.

    synth = Synthesizer.from_checkpoint("runs/default3")   # or Synthesizer.from_engine(DIR)
    stream = FaceStream(synth, synth.identity(face))      # face [3, S, S] in [0, 1]
    for chunk in chunks:                                   # float32 16 kHz mono, any length
        out = stream.feed(chunk)                           # Frames: 0 or more, in order
        show(out.indices, out.times, out.images)           # images [N, 3, S, S] in [0, 1]
    out = stream.flush()                                   # the last frames, end of stream

Data flow: chunk ──AudioStream (bounded sample buffer ─► new MFCC columns ─► 20x12 windows)──►
Synthesizer.frames ──► frames. `AudioStream` alone gives the windows (`Windows`).

Latency. Video frame l (25 fps, shown at l / 25 s) reads MFCC columns [4l - 8, 4l + 12); its
last column ends at sample 160 (4l + 11) + 400 = 640 l + 2160. So a frame can be made 2160
samples (``LOOKAHEAD_MS`` = 135 ms) after its own start, 95 ms after the end of its own 40 ms of
audio: one window of look-ahead, the least the model allows. A frame is emitted by the `feed`
call that brings that sample; nothing waits for more.

Equivalence with the offline path: MFCC column f depends only on samples [160 f - 1, 160 f +
400) (pre-emphasis reads the sample before the frame), so the stream computes each column once,
from a span that starts one column early so that pre-emphasis at the chunk boundary uses the
previous sample, and drops that extra column. The windows equal `clip_windows` of the whole
signal (`fastdavs.data.audio.audio_to_windows` for ``edges="none"``) for any chunking, to float
rounding. Memory between calls: fewer than 560 samples and 20 MFCC columns, however long the
stream (a call holds its chunk on top).

The int16 gain. The offline front end scales a clip by 32768 when its peak |x| is at most 1
(a full-scale float clip), else by 1 (int16 units): a decision over the whole clip, which a
stream cannot make before the clip ends. The stream fixes it up front instead: ``gain=32768``
(default; float audio in [-1, 1], what `fastdavs.data.video_io.read_audio` returns) or
``gain=1`` for int16-unit floats. The choice does not change c1..c12 (a gain adds the same
constant to every log energy of a frame, which DCT rows 1.. cancel) except in frames whose
filter-bank energies fall under ``LOG_FLOOR`` under one gain and not the other, i.e. audio
within ~1e-10 of digital silence; exact digital silence gives zeros under any gain.

Clip edges (``edges``). Offline windows exist from frame ``FIRST_FRAME`` = 2 to (F - 12) // 4.
With ``"silence"`` (default) the stream reads the audio as if preceded and followed by digital
silence: the windows of frames 0 and 1 start 80 and 40 ms before the clip, and `flush` completes
the windows of the last frames with silence, so a clip of S samples gives frames 0 .. N - 1,
N = ceil(S / 640): one per started 40 ms of audio, frame 0 at the clip's first sample. This is
the convention of `fastdavs-generate` (`fastdavs.infer.driving.AudioDriver`), so a stream and the
command make the same frames. With ``"none"`` it emits exactly the offline frames 2 ..
(F - 12) // 4. Frames both give have the same windows. `clip_windows` is the convention applied
to a whole clip in one call.

Audio must be 16 kHz mono float32 or float64 (kept as float32): resampling a stream exactly
needs a filter state carried across chunks, so it is left to the source (decode at 16 kHz, as
`read_audio` does). Dimension letters: N frames, S samples, F MFCC steps, K coefficients.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from fastdavs.data.audio import (
    FIRST_FRAME,
    FPS,
    HOP,
    LEAD_SAMPLES,
    N_COEFFS,
    SAMPLE_RATE,
    SAMPLES_PER_FRAME,
    STEPS_PER_FRAME,
    WIN,
    WINDOW_STEPS,
    AudioError,
    mfcc,
    mfcc_windows,
)
from fastdavs.errors import FastdavsError

# Frame l's window is columns [4 (l - 2), 4 (l - 2) + 20); its last one ends at sample
# 160 (4l + 11) + 400 = 640 l + LOOKAHEAD_SAMPLES.
LOOKAHEAD_SAMPLES = HOP * (WINDOW_STEPS - STEPS_PER_FRAME * FIRST_FRAME - 1) + WIN  # 2160
LOOKAHEAD_MS = 1000 * LOOKAHEAD_SAMPLES / SAMPLE_RATE  # 135 ms after the frame's start
EDGES = ("silence", "none")
INT16_GAIN = 32768.0  # the offline gain of a full-scale float clip


class StreamError(FastdavsError, RuntimeError):
    """The stream was used out of order (fed after `flush`)."""


@dataclass(frozen=True)
class Windows:
    """MFCC windows of consecutive video frames `first`, `first + 1`, ...: mfcc [N, 20, 12]."""

    first: int
    mfcc: torch.Tensor

    def __len__(self) -> int:
        return len(self.mfcc)

    @property
    def indices(self) -> range:
        return range(self.first, self.first + len(self))

    @property
    def times(self) -> list[float]:
        """Presentation time of each frame in seconds (l / 25)."""
        return [i / FPS for i in self.indices]


@dataclass(frozen=True)
class Frames(Windows):
    """`Windows` and the frames made from them: images [N, 3, S, S] float32 in [0, 1]."""

    images: torch.Tensor


def samples_needed(frame: int) -> int:
    """Samples of the clip that frame `frame`'s window reads: 640 l + 2160 (with
    ``edges="silence"`` frames 0 and 1 read silence before sample 0, and need as many)."""
    return SAMPLES_PER_FRAME * frame + LOOKAHEAD_SAMPLES


def _check_edges(edges: str) -> None:
    if edges not in EDGES:
        raise AudioError(f"edges={edges!r}: must be one of {', '.join(EDGES)}")


_EMPTY = torch.zeros(0, WINDOW_STEPS, N_COEFFS)


def _no_windows(first: int) -> Windows:
    return Windows(first, _EMPTY)


def clip_windows(
    audio: torch.Tensor, *, edges: str = "silence", gain: float | None = None
) -> Windows:
    """The windows an `AudioStream` gives for a whole clip, computed in one offline call.

    Args:
        audio (Tensor): 16 kHz mono float waveform, shape `(S,)`.
        edges (str, optional): ``"silence"``: frames 0 .. ceil(S / 640) - 1, digital silence
            before and after the clip; ``"none"``: frames 2 .. (F - 12) // 4, exactly
            `fastdavs.data.audio.audio_to_windows`. (Default: ``"silence"``)
        gain (float or None, optional): see `fastdavs.data.audio.mfcc`. (Default: None, the clip's
            int16 gain, as offline)

    Returns:
        Windows: the first frame index and mfcc `(N, 20, 12)` in `audio`'s dtype (N may be 0).
    """
    _check_edges(edges)
    if audio.dim() != 1:
        raise AudioError(f"clip_windows needs audio of shape [S], got {list(audio.shape)}")
    if edges == "none":
        if len(audio) < samples_needed(FIRST_FRAME):
            return _no_windows(FIRST_FRAME)
        return Windows(FIRST_FRAME, mfcc_windows(mfcc(audio, gain=gain))[0])
    n = -(-len(audio) // SAMPLES_PER_FRAME)  # ceil
    if n == 0:
        return _no_windows(0)
    tail = max(0, samples_needed(n - 1) - len(audio))
    padded = torch.cat([audio.new_zeros(LEAD_SAMPLES), audio, audio.new_zeros(tail)])
    return Windows(0, mfcc_windows(mfcc(padded, gain=gain))[0][:n])


def as_chunk(chunk, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """A chunk of 16 kHz mono float audio (NumPy or torch, `(S,)`) as float32 NumPy; raises
    `AudioError` for anything else."""
    if sample_rate != SAMPLE_RATE:
        raise AudioError(
            f"the stream needs {SAMPLE_RATE} Hz audio, got {sample_rate} Hz: resample at the "
            f"source (fastdavs.data.video_io.read_audio, or ffmpeg -ar {SAMPLE_RATE} -ac 1)"
        )
    if isinstance(chunk, torch.Tensor):
        chunk = chunk.detach().cpu().numpy()
    if not isinstance(chunk, np.ndarray):
        raise AudioError(f"audio chunks are NumPy arrays or torch tensors, got {type(chunk)}")
    if chunk.dtype not in (np.float32, np.float64):
        raise AudioError(
            f"audio chunks must be float32 or float64, got {chunk.dtype}: convert int16 "
            "samples with x.astype(np.float32) / 32768"
        )
    if chunk.ndim != 1:
        raise AudioError(
            f"audio chunks must be mono, shape [S], got {list(chunk.shape)}: mix the channels "
            "down (x.mean(axis=0)) first"
        )
    return chunk.astype(np.float32, copy=False)


class AudioStream:
    """Audio chunks in, the MFCC window of each video frame out as soon as it is complete.

    Args:
        sample_rate (int, optional): rate of the chunks; must be 16000. (Default: 16000)
        gain (float, optional): fixed scale before the MFCC (see the module docstring):
            32768 for float audio in [-1, 1], 1 for int16-unit floats. (Default: 32768)
        edges (str, optional): ``"silence"`` or ``"none"`` (see `clip_windows`).
            (Default: ``"silence"``)
    """

    def __init__(
        self, sample_rate: int = SAMPLE_RATE, *, gain: float = INT16_GAIN, edges: str = "silence"
    ):
        as_chunk(np.zeros(0, np.float32), sample_rate)
        _check_edges(edges)
        if not gain > 0:
            raise AudioError(f"gain={gain}: must be positive (32768 or 1)")
        self.sample_rate, self.gain, self.edges = sample_rate, float(gain), edges
        # Internal sample and column indices count from the start of the leading silence.
        lead = LEAD_SAMPLES if edges == "silence" else 0
        self._lead_cols = lead // HOP
        self._buf = np.zeros(lead, np.float32)  # samples [_buf0, _n)
        self._buf0 = 0
        self._n = lead
        self.samples_in = 0  # samples of the clip fed so far
        self._cols = torch.zeros(0, N_COEFFS)  # [_n_cols - _col0, K], columns [_col0, _n_cols)
        self._col0 = 0
        self._n_cols = 0
        self.next_frame = 0 if edges == "silence" else FIRST_FRAME  # the first not yet emitted
        self.closed = False

    @property
    def buffered(self) -> tuple[int, int]:
        """(samples, MFCC columns) held between calls: at most (559, 19)."""
        return len(self._buf), len(self._cols)

    def feed(self, chunk) -> Windows:
        """Append a chunk `(S,)` (any S, 0 included) -> the windows it completed, in order."""
        if self.closed:
            raise StreamError("the stream was flushed: start a new one for more audio")
        chunk = as_chunk(chunk, self.sample_rate)
        self._buf = np.concatenate([self._buf, chunk])
        self._n += len(chunk)
        self.samples_in += len(chunk)
        return self._emit()

    def flush(self) -> Windows:
        """End of stream -> the windows still missing: with ``edges="silence"`` the last frames
        up to ceil(S / 640) - 1, completed with silence; with ``"none"`` none. Closes the
        stream."""
        if self.closed:
            raise StreamError("the stream was already flushed")
        self.closed = True
        if self.edges == "none":
            return _no_windows(self.next_frame)
        n = -(-self.samples_in // SAMPLES_PER_FRAME)  # ceil
        if n <= self.next_frame:
            return _no_windows(self.next_frame)
        tail = samples_needed(n - 1) - self.samples_in  # > 0: frame n - 1 is not complete
        self._buf = np.concatenate([self._buf, np.zeros(tail, np.float32)])
        self._n += tail
        return self._emit()

    def _frame_col(self, frame: int) -> int:
        """Internal index of frame `frame`'s first column."""
        return STEPS_PER_FRAME * (frame - FIRST_FRAME) + self._lead_cols

    def _emit(self) -> Windows:
        self._compute_columns()
        first = self.next_frame
        # Frame l is complete once its 20 columns are.
        done = (self._n_cols - WINDOW_STEPS - self._frame_col(first)) // STEPS_PER_FRAME + 1
        if done <= 0:
            return _no_windows(first)
        self.next_frame += done
        lo = self._frame_col(first) - self._col0
        hi = self._frame_col(self.next_frame - 1) + WINDOW_STEPS - self._col0
        cols = self._cols[lo:hi]  # [F', K]
        windows = cols.unfold(0, WINDOW_STEPS, STEPS_PER_FRAME).transpose(1, 2)  # [N, 20, K]
        windows = windows.contiguous()
        keep = self._frame_col(self.next_frame) - self._col0  # columns the next frame reads
        self._cols, self._col0 = self._cols[keep:], self._col0 + keep
        return Windows(first, windows)

    def _compute_columns(self) -> None:
        """MFCC of every column complete in the buffer and not yet computed, then drop the
        samples no later column reads."""
        if self._n < WIN:
            return
        end = (self._n - WIN) // HOP + 1  # columns [0, end) are complete
        start = self._n_cols
        if end == start:
            return
        # One column early, so that the first new column's pre-emphasis reads the sample
        # before it; that column is dropped. Column 0 has none: y[0] = x[0], as offline.
        early = 1 if start > 0 else 0
        s0 = HOP * (start - early) - self._buf0
        s1 = HOP * (end - 1) + WIN - self._buf0
        span = torch.from_numpy(self._buf[s0:s1])
        new = mfcc(span, gain=self.gain, backend="ref")[:, early:]  # [K, end - start]
        self._cols = torch.cat([self._cols, new.T])
        self._n_cols = end
        drop = HOP * (end - 1) - self._buf0  # the next call starts at column end - 1
        self._buf, self._buf0 = self._buf[drop:], self._buf0 + drop


class FaceStream:
    """`AudioStream` + a synthesizer: audio chunks in, frames of one face out.

    Args:
        synthesizer: anything with ``frames(mfcc [N, 20, 12], identity, wid_scale=...) ->
            [N, 3, S, S]`` (`fastdavs.infer.synthesis.Synthesizer`, eager or engine).
        identity: ``synthesizer.identity(face)`` of the face to animate.
        wid_scale (float, optional): passed to `frames` (1: as trained). (Default: 1.0)
        sample_rate, gain, edges: as `AudioStream`.
    """

    def __init__(
        self,
        synthesizer,
        identity,
        *,
        wid_scale: float = 1.0,
        sample_rate: int = SAMPLE_RATE,
        gain: float = INT16_GAIN,
        edges: str = "silence",
    ):
        self.synthesizer, self.identity, self.wid_scale = synthesizer, identity, wid_scale
        self.audio = AudioStream(sample_rate, gain=gain, edges=edges)

    def feed(self, chunk) -> Frames:
        """Append a chunk `(S,)` -> the frames it completed (N >= 0), in order."""
        return self._synthesize(self.audio.feed(chunk))

    def flush(self) -> Frames:
        """End of stream -> the last frames (see `AudioStream.flush`)."""
        return self._synthesize(self.audio.flush())

    def _synthesize(self, windows: Windows) -> Frames:
        if len(windows):
            images = self.synthesizer.frames(windows.mfcc, self.identity, wid_scale=self.wid_scale)
        else:
            s = self.synthesizer.config.image_size
            images = torch.zeros(0, 3, s, s)
        return Frames(windows.first, windows.mfcc, images)
