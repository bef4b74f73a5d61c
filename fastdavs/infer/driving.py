"""What drives the mouth in `fastdavs-generate`: speech audio (-> one MFCC window per output
frame) or a video of someone speaking (-> one aligned face per output frame), both at 25 fps
and both read a chunk at a time, so minutes of speech run in bounded memory.

Audio: any file PyAV decodes, resampled to 16 kHz mono (`read_audio`). The output has
N = ceil(S / 640) frames for S samples (its duration is the speech's, rounded up to a frame).
The MFCC window of a video frame l covers MFCC steps [4l - 8, 4l + 12) (spec/davs.md §3.3), so
frame 0 and 1 have no window in the raw audio (the original starts its output at frame 2 and
leaves the user to trim 80 ms of sound). Here the speech is padded with 2 frames (1280 samples)
of silence in front, and enough at the end, so that output frame k gets exactly the window the
model was trained to draw frame k from (centred 27.5 ms after the frame starts): the sound can
be muxed untouched, starting with frame 0, and lips and sound stay in sync.

Video: the frames nearest in time to each 25 fps output frame are picked, the face tracked
with dlib's detector and landmarks in one pass (`face_detect.track_faces`; points only are
kept), the track gap-filled and smoothed over time
(`smooth_points`: the per-frame fits of the original make the face zoom in and out), and the
frames aligned in a second pass, a chunk at a time. Its sound, if any, goes to the output.
Dimension letters: N output frames, S samples, F MFCC steps, K coefficients.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from fastdavs.data.align import align_frames, smooth_points
from fastdavs.data.audio import (
    FPS,
    HOP,
    LEAD_SAMPLES,
    SAMPLE_RATE,
    SAMPLES_PER_FRAME,
    WIN,
    WINDOW_STEPS,
    mfcc,
    mfcc_windows,
)
from fastdavs.data.face_detect import track_faces
from fastdavs.data.video_io import (
    iter_video_frames,
    read_audio,
    read_soundtrack,
    video_frame_rate,
)
from fastdavs.errors import DataError
from fastdavs.infer.face_input import centre_crop

log = logging.getLogger(__name__)

WINDOW_SAMPLES = WIN + (WINDOW_STEPS - 1) * HOP  # 3440: the audio one 20x12 window reads
SILENT_PEAK = 1e-3  # below this peak |x| (-60 dBFS) speech is taken as silent


class AudioDriver:
    """Speech audio -> MFCC windows for output frames 0 .. N-1.

    Attributes:
        audio: float32 `(S,)` 16 kHz mono in [-1, 1], to mux with the video.
        n_frames: N = ceil(S / 640).
        path: the file.
        device: where the MFCC windows are computed and returned: on CUDA by the fused Triton
            kernel (`fastdavs.kernels.mfcc`), next to the model that reads them.
    """

    def __init__(
        self, audio: np.ndarray, path: str | Path = "audio", device: torch.device | str = "cpu"
    ):
        self.path, self.device = Path(path), torch.device(device)
        if len(audio) < WINDOW_SAMPLES:
            raise DataError(
                f"{self.path}: the speech is {1000 * len(audio) / SAMPLE_RATE:.0f} ms long; the "
                f"model needs at least {1000 * WINDOW_SAMPLES / SAMPLE_RATE:.0f} ms (one 20x12 "
                "MFCC window)"
            )
        peak = float(np.abs(audio).max())
        if peak > 1:
            raise ValueError(f"AudioDriver: audio must be float in [-1, 1], its peak is {peak}")
        if peak < SILENT_PEAK:
            log.warning(
                "%s: the audio is silent (peak %.1f dBFS): the mouth will barely move",
                self.path, 20 * math.log10(max(peak, 1e-10)),
            )  # fmt: skip
        self.n_frames = math.ceil(len(audio) / SAMPLES_PER_FRAME)
        # Window k reads padded samples [640 k, 640 k + 3440): pad so the last one fits.
        tail = SAMPLES_PER_FRAME * (self.n_frames - 1) + WINDOW_SAMPLES - LEAD_SAMPLES - len(audio)
        self._padded = np.pad(audio, (LEAD_SAMPLES, max(0, tail)))
        self.audio = self._padded[LEAD_SAMPLES : LEAD_SAMPLES + len(audio)]  # a view: one copy

    @classmethod
    def from_file(cls, path: str | Path, device: torch.device | str = "cpu") -> AudioDriver:
        """Any audio (or video) file PyAV decodes, any rate, mono or stereo.

        Raises:
            DataError: missing, unreadable, no audio track, or shorter than one window."""
        return cls(read_audio(path, SAMPLE_RATE), path, device)

    def windows(self, start: int, stop: int) -> torch.Tensor:
        """MFCC windows of output frames start .. stop-1: float32 `(stop - start, 20, 12)` on
        `device`.

        Computed from the audio those frames read only, so chunks cost the same wherever they
        are, and equal to the windows of the whole padded speech: `mfcc` starts its
        pre-emphasis afresh at a chunk's first sample, so a chunk after the first starts one
        hop early and its first MFCC step is dropped. (A float waveform is scaled to the int16
        range by `mfcc` in every chunk alike.)
        """
        stop = min(stop, self.n_frames)
        lo, hi = start * SAMPLES_PER_FRAME, (stop - 1) * SAMPLES_PER_FRAME + WINDOW_SAMPLES
        early = HOP if lo >= HOP else 0
        x = torch.from_numpy(self._padded[lo - early : hi].astype(np.float32))  # [S']
        x = x.to(self.device, non_blocking=True)
        coeffs = mfcc(x)[:, early // HOP :]  # [K, F]
        windows, _ = mfcc_windows(coeffs)  # [stop - start, 20, 12]
        assert len(windows) == stop - start, (len(windows), start, stop)
        return windows.contiguous()

    def chunks(self, size: int) -> Iterator[torch.Tensor]:
        """Windows of all N frames, `size` frames at a time."""
        for start in range(0, self.n_frames, size):
            yield self.windows(start, start + size)


class VideoDriver:
    """A video of someone speaking -> aligned faces `(n, S, S, 3)` uint8 for output frames
    0 .. N-1 at 25 fps, plus its sound.

    Attributes:
        audio: float32 `(S,)` 16 kHz mono aligned to the first frame, or None (no track).
        n_frames: N.
        points: float64 `(N, 3, 2)`: smoothed alignment points per output frame.
        path: the file.
    """

    def __init__(self, path: str | Path, image_size: int, smoothing: float = 1.0):
        self.path = Path(path)
        self.image_size = image_size
        self.fps = video_frame_rate(self.path)
        track = track_faces(self._frames())
        self.n_frames = len(track.found)
        if not track.found.any():
            raise DataError(
                f"{self.path}: no face found in any of its {self.n_frames} frames (at 25 fps); "
                "the driving video needs a frontal face"
            )
        log.info("%s: %s (at 25 fps)", self.path, track.report())
        if not track.found.all():
            log.warning("%s: the alignment of the frames without a face is interpolated", self.path)
        self.points = smooth_points(track.points, track.found, smoothing, self.path)
        self.audio = read_soundtrack(self.path, SAMPLE_RATE)
        if self.audio is None:
            log.warning("%s: has no audio track; the output will be silent", self.path)

    def _frames(self) -> Iterator[np.ndarray]:
        """The source frames nearest to the output frames' centres, (k + 1/2) / 25 s."""
        k = 0
        for index, frame in enumerate(iter_video_frames(self.path)):
            while math.floor((k + 0.5) * self.fps / FPS) == index:
                yield frame
                k += 1

    def chunks(self, size: int) -> Iterator[np.ndarray]:
        """Aligned faces of all N frames, uint8 `(n, S, S, 3)`, `size` frames at a time."""
        batch: list[np.ndarray] = []
        start = 0
        for frame in self._frames():
            batch.append(frame)
            if len(batch) == size:
                yield self._align(np.stack(batch), start)
                start, batch = start + size, []
        if batch:
            yield self._align(np.stack(batch), start)

    def first(self, n: int) -> np.ndarray:
        """Aligned faces of the first `n` output frames, `(n', S, S, 3)`, n' = min(n, N)."""
        chunks = self.chunks(n)
        try:
            return next(chunks)
        finally:
            chunks.close()  # closes the decoder now, not when collected

    def _align(self, frames: np.ndarray, start: int) -> np.ndarray:
        points = self.points[start : start + len(frames)]
        aligned = align_frames(frames, points, self.image_size)  # [n, A, A, 3]
        return np.ascontiguousarray(centre_crop(aligned, self.image_size))


def output_frames(frames: torch.Tensor) -> np.ndarray:
    """Model output [n, 3, S, S] float in [0, 1] -> uint8 RGB [n, S, S, 3] for the video."""
    return frames.clamp(0, 1).mul(255).round().byte().permute(0, 2, 3, 1).contiguous().numpy()
