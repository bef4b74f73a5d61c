"""Reading and writing talking-face media with PyAV: mp4 (H.264 + AAC) and audio-only files.

Data flow: `read_clip` is the first step of the pipeline (DESIGN.md, Data flow): an LRW-layout mp4
becomes RGB frames plus 16 kHz mono float audio aligned to them, which `fastdavs.data.audio` turns
into MFCC windows. `write_mp4` is what SynthLRW writes its clips with; `Mp4Writer` writes the same a
chunk of frames at a time (the last step of generation), and `iter_video_frames` and
`read_soundtrack` read long videos without holding all their frames.

The sync contract, relied on by the MFCC windows (frame l <-> audio around l / fps):
- frame k of a `Clip` is the one displayed at k / fps after the first frame;
- audio sample n of a `Clip` is heard at n / sample_rate after the first frame is displayed: the
  audio is shifted by the difference between the first audio and video timestamps (zeros are
  prepended when the audio starts late, leading samples dropped when it starts early);
- its length is exactly round(T / fps * sample_rate) samples (the duration of the frames), padded
  with zeros or trimmed at the end. The original drops "the last 600 samples" for LRW for the same
  reason (spec/davs.md §3.3); here the video's duration decides.
A damaged or truncated file raises `DataError` rather than giving a shorter clip: a cut-off
download is to be reported and skipped, not trained on as if it were whole.

AAC's encoder priming (1024 samples) needs no handling: the mp4 muxer writes an edit list that
the demuxer turns into skip-samples, so the first decoded audio frame has time 0, and a click
written at time t is decoded at t (to the sample, measured; tests/test_video_io.py allows 2 ms).
The first decoded frame's timestamp is what counts, not `stream.start_time`, which counts the
discarded priming packet: for audio that starts after the video it is 1024 samples (64 ms at
16 kHz) early.

Audio of any rate, layout and sample format goes through one `av.AudioResampler` (libswresample)
to float mono, mixed like `ffmpeg -ar 16000 -ac 1` to the s16 wav that the original reads: the mix
matrix is normalised to unit gain (``rematrix_maxval=1``), so stereo becomes (L + R) / 2. The
result is clipped to [-1, 1]: AAC decoding overshoots full scale slightly, and
`fastdavs.data.audio.mfcc` tells float audio from int16-range audio by its peak, so an overshoot
must not reach it. Dimension letters: T frames, H/W height/width, S samples.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from fastdavs.data.audio import SAMPLE_RATE
from fastdavs.errors import DataError
from fastdavs.io.atomic import CommitOnExit

VIDEO_CODEC = "libx264"  # PyAV's wheels bundle FFmpeg with libx264 (and no libopenh264)
AUDIO_CODEC = "aac"  # FFmpeg's native AAC encoder (no libfdk_aac in the wheels)
# FFmpeg's default "twoloop" coder is 2-3x slower than "fast" and, at 16 kHz mono, no closer to the
# input (measured: SNR and MFCC error of a speech-like signal).
AUDIO_OPTIONS = {"aac_coder": "fast"}
AUDIO_BIT_RATE = 96_000  # bit/s; more changes nothing measurable at 16 kHz mono


@dataclass
class Clip:
    """A decoded talking-face clip.

    Attributes:
        frames: uint8 RGB, shape `(T, H, W, 3)`; frame k is displayed at k / fps.
        audio: float32 mono in [-1, 1], shape `(S,)` with S = round(T / fps * sample_rate),
            sample 0 at the start of frame 0; None when the file has no audio track and it was
            read with ``require_audio=False``.
        fps: frames per second (the stream's average rate; LRW is 25).
        path: the file it was read from.
        sample_rate: rate of `audio` in Hz.
    """

    frames: np.ndarray
    audio: np.ndarray | None
    fps: float
    path: Path
    sample_rate: int = SAMPLE_RATE


def read_clip(
    path: str | os.PathLike,
    *,
    sample_rate: int = SAMPLE_RATE,
    require_audio: bool = True,
    min_frames: int = 1,
) -> Clip:
    """Decode every video frame and the first audio track of a media file (see the sync contract
    in this module's docstring).

    Args:
        path (str or PathLike): an mp4 (or anything FFmpeg reads) with a video stream.
        sample_rate (int, optional): rate to resample the audio to, Hz. (Default: 16000)
        require_audio (bool, optional): raise if the file has no audio track; when False such a
            file gives ``audio=None`` (not silence, which would pass for speech features).
            (Default: True)
        min_frames (int, optional): raise if fewer frames decode. 6 frames at 25 fps are the
            fewest that give one MFCC window (3440 samples). (Default: 1)

    Returns:
        Clip: frames `(T, H, W, 3)` uint8 RGB, audio `(S,)` float32 or None, fps, path.

    Raises:
        DataError: the file is missing, empty, not a media file, damaged or truncated, has no
            video stream, has no audio track (with ``require_audio``), or has < `min_frames`.
    """
    return _read(
        path, sample_rate, decode_audio=True, require_audio=require_audio, min_frames=min_frames
    )


def read_video_frames(path: str | os.PathLike, *, min_frames: int = 1) -> np.ndarray:
    """Every video frame of a file as uint8 RGB `(T, H, W, 3)`; any audio is not decoded.

    Raises:
        DataError: as `read_clip` (a missing audio track is not an error here).
    """
    return _read(
        path, SAMPLE_RATE, decode_audio=False, require_audio=False, min_frames=min_frames
    ).frames


def _read(
    path: str | os.PathLike,
    sample_rate: int,
    *,
    decode_audio: bool,
    require_audio: bool,
    min_frames: int,
    keep_frames: bool = True,
) -> Clip:
    """`read_clip`, or `read_video_frames` when not `decode_audio` (then `audio` is None);
    without `keep_frames` the frames are decoded and counted but not kept (`frames` is None)."""
    path = Path(path)
    with _open(path) as container:
        vstream = _video_stream(path, container)
        astream = container.streams.audio[0] if container.streams.audio else None
        if astream is None and require_audio:
            raise DataError(
                f"{path}: has no audio track; use a clip with its sound (LRW mp4s carry it), "
                "or mux one in: ffmpeg -i VIDEO -i AUDIO -c:v copy -c:a aac OUT.mp4"
            )
        if not decode_audio:
            astream = None
        fps = _frame_rate(path, vstream)
        frames, n_frames, v_start, audio, a_start = _decode(
            path, container, vstream, astream, sample_rate, keep_frames
        )
    if n_frames < min_frames:
        raise DataError(
            f"{path}: has {n_frames} video frames, at least {min_frames} are needed; "
            "skip this clip or use a longer one"
        )
    if audio is not None:
        shift = round((a_start - v_start) * sample_rate)
        audio = _align(audio, shift, n_frames, fps, sample_rate)
    return Clip(frames=frames, audio=audio, fps=fps, path=path, sample_rate=sample_rate)


def read_audio(path: str | os.PathLike, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The first audio track of any file FFmpeg decodes (wav of any bit depth, mp3, m4a, flac,
    ogg, or a video's sound), resampled to float32 mono in [-1, 1].

    Sample 0 is the first decoded sample (no alignment to a video stream; use `read_clip` for
    clips). Encoder delays that the container declares (mp3 LAME headers, AAC edit lists) are
    already removed by the demuxer; a lossy codec's end padding may remain (AAC in m4a: up to
    one 1024-sample frame of near-silence at the end).

    Args:
        path (str or PathLike): the audio (or video) file.
        sample_rate (int, optional): output rate in Hz. (Default: 16000)

    Returns:
        ndarray: float32, shape `(S,)`.

    Raises:
        DataError: the file is missing, empty, not a media file, damaged, has no audio track, is
            a wav shorter than its header says, or has samples that are NaN or infinite (a
            float wav can hold them).
    """
    path = Path(path)
    with _open(path) as container:
        if not container.streams.audio:
            raise DataError(f"{path}: has no audio track; pass an audio file (wav, mp3, m4a...)")
        cut = _wav_shortfall(path)
        if cut is not None:
            raise DataError(
                f"{path}: is truncated ({cut[1]} of the {cut[0]} bytes of audio its header "
                "declares are present); re-download or re-export it"
            )
        astream = container.streams.audio[0]
        audio = _decode(path, container, None, astream, sample_rate, keep_frames=False)[3]
    return audio


def read_soundtrack(path: str | os.PathLike, sample_rate: int = SAMPLE_RATE) -> np.ndarray | None:
    """A video's sound, aligned as `read_clip` aligns it, without keeping the frames (bounded
    memory for long videos; they are still decoded, to count them and to find the first one's
    time).

    Returns:
        ndarray or None: float32 `(S,)`, sample 0 at the start of frame 0, S = round(T / fps *
        sample_rate) for T frames; None when the file has no audio track.

    Raises:
        DataError: as `read_clip` (a missing audio track is not an error here).
    """
    return _read(
        path,
        sample_rate,
        decode_audio=True,
        require_audio=False,
        min_frames=1,
        keep_frames=False,
    ).audio


def iter_video_frames(path: str | os.PathLike) -> Iterator[np.ndarray]:
    """The video frames of a file one at a time, uint8 RGB `(H, W, 3)` in display order, for
    files too long to hold in memory (`read_video_frames` returns them all). Stop early by
    closing the generator (or simply dropping it).

    Raises:
        DataError: as `read_video_frames`, when the bad part is reached.
    """
    path = Path(path)
    with _open(path) as container:
        vstream = _video_stream(path, container)
        for kind, frame, _ in _demux(path, container, vstream, None, SAMPLE_RATE, True):
            if kind == "video":
                yield frame


def video_frame_rate(path: str | os.PathLike) -> float:
    """Frames per second of a file's first video stream (the stream's average rate).

    Raises:
        DataError: missing or unreadable file, no video stream, no frame rate.
    """
    path = Path(path)
    with _open(path) as container:
        return _frame_rate(path, _video_stream(path, container))


def write_mp4(
    path: str | os.PathLike,
    frames: np.ndarray,
    audio: np.ndarray | None = None,
    *,
    fps: float = 25,
    sample_rate: int = SAMPLE_RATE,
    crf: int = 18,
    preset: str = "superfast",
    threads: int = 1,
) -> Path:
    """Write an mp4 that plays anywhere: H.264 (libx264, yuv420p) video, AAC mono audio, moov
    atom first (``movflags=+faststart``).

    The file appears atomically: it is encoded to a hidden temporary name in the same directory
    and renamed over `path` at the end; on any error the temporary file is removed and whatever
    was at `path` before is left untouched. After `read_clip`, frame k is displayed at k / fps
    and audio written at time t is heard at t (the AAC priming is hidden by an edit list).

    Args:
        path (str or PathLike): output file; its directory must exist.
        frames (ndarray): uint8 RGB, shape `(T, H, W, 3)`, H and W even (yuv420p halves chroma).
        audio (ndarray or None, optional): float mono in [-1, 1] (clipped), shape `(S,)`, at
            `sample_rate`; sample 0 plays with frame 0. None writes no audio track.
            (Default: None)
        fps (float, optional): frame rate. (Default: 25)
        sample_rate (int, optional): rate of `audio`, kept in the file. (Default: 16000)
        crf (int, optional): x264 constant rate factor, 0 (lossless) .. 51; 18 is visually
            lossless. (Default: 18)
        preset (str, optional): x264 speed preset; "superfast" encodes 256x256 frames ~2x
            faster than "veryfast" for 1.5-2x the bytes at the same crf. (Default: ``"superfast"``)
        threads (int, optional): x264 threads, 0 for automatic. One thread is the fastest for
            short clips (x264's thread start-up costs more than it saves on 29 small frames);
            write many clips in parallel processes instead. (Default: 1)

    Returns:
        Path: `path`.

    Raises:
        DataError: no such directory, frames or audio of the wrong shape or dtype, or odd H or W.
    """
    path = Path(path)
    _check_frames(path, frames)
    with Mp4Writer(
        path,
        frames.shape[1:3],
        audio,
        fps=fps,
        sample_rate=sample_rate,
        crf=crf,
        preset=preset,
        threads=threads,
    ) as writer:
        writer.write(frames)
    return path


class Mp4Writer(CommitOnExit):
    """`write_mp4` a chunk of frames at a time, for videos too long to hold in memory.

        with Mp4Writer(path, (H, W), audio) as writer:
            for chunk in chunks:        # uint8 RGB [n, H, W, 3]
                writer.write(chunk)

    The file appears at `path` (atomically, as `write_mp4`'s) when the block ends without an
    error; an error, or `abort()`, removes the temporary file and leaves `path` as it was. The
    audio (small next to the frames) is given whole and encoded at the end, after the frames.
    Arguments are `write_mp4`'s, with the frame size `(H, W)` (both even) instead of frames.

    Raises:
        DataError: no such directory, odd H or W, audio of the wrong shape or dtype, a chunk
            that is not uint8 RGB of the declared size, or the file cannot be written (no
            permission, disk full).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        size: tuple[int, int],
        audio: np.ndarray | None = None,
        *,
        fps: float = 25,
        sample_rate: int = SAMPLE_RATE,
        crf: int = 18,
        preset: str = "superfast",
        threads: int = 1,
    ):
        self.path = Path(path)
        self.size = (int(size[0]), int(size[1]))
        _check_target(self.path, self.size, audio)
        self.audio, self.sample_rate = audio, sample_rate
        self.frames_written = 0
        self._tmp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex[:8]}.tmp.mp4")
        try:
            self._container = av.open(
                str(self._tmp), "w", format="mp4", options={"movflags": "+faststart"}
            )
        except (OSError, av.FFmpegError) as e:  # av's PermissionError etc. are OSErrors too
            self._container = None
            raise _write_error(self.path, e) from e
        try:
            rate = Fraction(fps).limit_denominator(1001)
            self._vstream = self._container.add_stream(VIDEO_CODEC, rate=rate)
            self._vstream.height, self._vstream.width = self.size
            self._vstream.pix_fmt = "yuv420p"
            self._vstream.options = {"preset": preset, "crf": str(crf), "threads": str(threads)}
            self._astream = None
            if audio is not None:
                self._astream = self._container.add_stream(AUDIO_CODEC, rate=sample_rate)
                self._astream.layout = "mono"
                self._astream.bit_rate = AUDIO_BIT_RATE
                self._astream.options = AUDIO_OPTIONS
        except BaseException:
            self.abort()
            raise
        self._reformatter = VideoReformatter()  # one libswscale context per clip, as `_demux`

    def write(self, frames: np.ndarray) -> None:
        """Encode frames: uint8 RGB `(n, H, W, 3)` of the declared size."""
        _check_frames(self.path, frames, self.size)
        for rgb in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            frame = self._reformatter.reformat(frame, format="yuv420p", threads=1)
            frame.pts = self.frames_written  # in the stream's time base 1 / fps
            try:
                self._container.mux(self._vstream.encode(frame))
            except OSError as e:  # a full disk; the caller's `with` block removes the file
                raise _write_error(self.path, e) from e
            self.frames_written += 1

    def close(self) -> Path:
        """Flush the video, encode the audio, and move the file to `path`."""
        if self._container is None:
            return self.path
        try:
            if not self.frames_written:
                raise DataError(f"{self.path}: no frames were written; nothing to save")
            self._container.mux(self._vstream.encode(None))
            if self._astream is not None:
                # A second at a time: one frame of minutes of speech would be copied whole
                # several times over (clip, frame, the encoder's FIFO).
                for start in range(0, len(self.audio), self.sample_rate):
                    chunk = self.audio[start : start + self.sample_rate]
                    samples = np.clip(chunk, -1.0, 1.0).astype(np.float32)[None]  # [1, S']
                    frame = av.AudioFrame.from_ndarray(samples, format="flt", layout="mono")
                    frame.sample_rate = self.sample_rate
                    frame.pts = start  # sample 0 plays with video frame 0
                    self._container.mux(self._astream.encode(frame))
                self._container.mux(self._astream.encode(None))
            self._container.close()
            self._container = None
            os.replace(self._tmp, self.path)
        except OSError as e:  # a full disk, or OUT became unwritable
            self.abort()
            raise _write_error(self.path, e) from e
        except BaseException:
            self.abort()
            raise
        return self.path

    def abort(self) -> None:
        """Drop everything written so far; `path` is left as it was."""
        if self._container is not None:
            # Closing a half-written file may fail; it is deleted next anyway.
            with contextlib.suppress(av.FFmpegError):
                self._container.close()
            self._container = None
        self._tmp.unlink(missing_ok=True)


def _wav_shortfall(path: Path) -> tuple[int, int] | None:
    """(declared, present) bytes of a RIFF WAVE file's data chunk when fewer are present than
    its header declares, else None: not a wav, complete, or streamed (the size left open as 0
    or 0xFFFFFFFF). FFmpeg decodes a cut-off wav without a word, as a shorter one."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(12)
        if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        pos = 12
        while True:  # chunks: 4-byte id, 4-byte little-endian length, body padded to even
            f.seek(pos)
            chunk = f.read(8)
            if len(chunk) < 8:
                return None
            length = int.from_bytes(chunk[4:], "little")
            if chunk[:4] == b"data":
                present = size - pos - 8
                return None if length in (0, 0xFFFFFFFF) or present >= length else (length, present)
            pos += 8 + length + (length & 1)


def _write_error(path: Path, e: OSError | av.FFmpegError) -> DataError:
    """The DataError for an mp4 that cannot be written (no permission, disk full...)."""
    reason = getattr(e, "strerror", None) or str(e)
    return DataError(
        f"{path}: cannot be written ({reason}); check that {path.parent} is writable and has "
        "free space"
    )


class NoVideoStream(DataError):
    """The file opens but holds no picture (e.g. a sound file where a video was expected)."""


def _video_stream(path: Path, container: av.container.InputContainer) -> av.VideoStream:
    """The container's first video stream; NoVideoStream if it has none."""
    if not container.streams.video:
        raise NoVideoStream(f"{path}: has no video stream; pass a video file (mp4 with H.264)")
    return container.streams.video[0]


def _open(path: Path) -> av.container.InputContainer:
    """`av.open` with the usual failures turned into DataErrors that say what to do."""
    if not path.exists():
        raise DataError(f"{path}: no such file; check the path")
    if not path.is_file():
        raise DataError(f"{path}: is not a file; pass a media file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: is empty (0 bytes); re-download or re-create it")
    try:
        return av.open(str(path))
    except av.FFmpegError as e:
        raise DataError(
            f"{path}: is not a readable media file ({e.strerror}); re-download or re-encode it, "
            "e.g. ffmpeg -i IN -c:v libx264 -c:a aac OUT.mp4"
        ) from e


def _frame_rate(path: Path, vstream: av.VideoStream) -> float:
    rate = vstream.average_rate or vstream.guessed_rate
    if not rate:
        raise DataError(f"{path}: the video stream has no frame rate; re-encode it with -r 25")
    return float(rate)


def _demux(
    path: Path,
    container: av.container.InputContainer,
    vstream: av.VideoStream | None,
    astream: av.AudioStream | None,
    sample_rate: int,
    rgb: bool,
) -> Iterator[tuple[str, np.ndarray | None, float]]:
    """Demux and decode the given streams in one pass, yielding ("video", frame `(H, W, 3)`
    uint8 RGB, or None without `rgb`, time in s) and ("audio", float32 mono samples `(S,)` at
    `sample_rate`, possibly empty, time of the decoded frame in s), in decoding order. The
    resampler's tail comes last with time NaN. Damage and truncation raise DataError where they
    are found."""
    n_packets = n_frames = 0  # video packets, to detect a file cut at a packet boundary
    # `frame.to_ndarray(format="rgb24")` builds a libswscale context with a thread pool per frame,
    # which costs >10x more than decoding a 128x128 frame; one context per clip, one thread.
    reformatter = VideoReformatter()
    resampler = av.AudioResampler(
        format="flt", layout="mono", rate=sample_rate, options={"rematrix_maxval": "1.0"}
    )
    try:
        for packet in container.demux([s for s in (vstream, astream) if s is not None]):
            if packet.stream is vstream and packet.size:
                n_packets += 1
            for frame in packet.decode():
                if isinstance(frame, av.VideoFrame):
                    n_frames += 1
                    if rgb:
                        image = reformatter.reformat(frame, format="rgb24", threads=1)
                        yield "video", image.to_ndarray(), frame.time
                    else:
                        yield "video", None, frame.time
                else:  # one item per decoded frame, even when the resampler holds it back
                    yield "audio", _samples(resampler.resample(frame)), frame.time
        if astream is not None:
            yield "audio", _samples(resampler.resample(None)), float("nan")
    except av.FFmpegError as e:
        raise DataError(
            f"{path}: is damaged or truncated ({e.strerror}); re-download or re-encode it"
        ) from e
    if vstream is not None and n_packets < vstream.frames:
        raise DataError(
            f"{path}: is truncated ({n_packets} of {vstream.frames} video frames present); "
            "re-download or re-encode it"
        )
    if vstream is not None and not n_frames:
        raise DataError(f"{path}: has a video stream with no frames; skip this clip")


def _samples(frames: list[av.AudioFrame]) -> np.ndarray:
    """The samples of a resampler's output frames as one float32 `(S,)` array."""
    return np.concatenate([f.to_ndarray()[0] for f in frames] or [np.zeros(0, np.float32)])


def _decode(
    path: Path,
    container: av.container.InputContainer,
    vstream: av.VideoStream | None,
    astream: av.AudioStream | None,
    sample_rate: int,
    keep_frames: bool = True,
) -> tuple[np.ndarray | None, int, float, np.ndarray | None, float]:
    """Decode the given streams in one pass (`_demux`).

    Returns:
        frames `(T, H, W, 3)` uint8 (None without a video stream or without `keep_frames`),
        the number of frames T, time of the first frame (s), audio `(S,)` float32 or None, time
        of the first audio sample (s).
    """
    frames: list[np.ndarray] = []
    chunks: list[np.ndarray] = []
    v_start = a_start = None
    n_frames = 0
    for kind, data, time in _demux(path, container, vstream, astream, sample_rate, keep_frames):
        if kind == "video":
            v_start = time if v_start is None else v_start
            n_frames += 1
            if keep_frames:
                frames.append(data)
        else:
            a_start = time if a_start is None else a_start
            chunks.append(data)
    video = np.stack(frames) if frames else None  # [T, H, W, 3]
    audio = None
    if astream is not None:
        audio = np.concatenate(chunks or [np.zeros(0, np.float32)])
        bad = np.flatnonzero(~np.isfinite(audio))
        if bad.size:  # NaN would reach the MFCC and the AAC encoder; inf is no level either
            raise DataError(
                f"{path}: the sound has {bad.size} samples that are not a number (NaN or "
                f"infinite), the first at {bad[0] / sample_rate:.3f} s; the file is damaged: "
                "re-export it"
            )
        np.clip(audio, -1.0, 1.0, out=audio)
    return video, n_frames, v_start or 0.0, audio, a_start or 0.0


def _align(
    audio: np.ndarray, shift: int, n_frames: int, fps: float, sample_rate: int
) -> np.ndarray:
    """Shift `audio` right by `shift` samples (left when negative) so sample 0 is the start of
    frame 0, then pad with zeros or trim to round(n_frames / fps * sample_rate) samples."""
    audio = np.pad(audio, (shift, 0)) if shift > 0 else audio[-shift:]
    n = round(n_frames / fps * sample_rate)
    return np.pad(audio[:n], (0, max(0, n - len(audio))))


def _check_target(path: Path, size: tuple[int, int], audio: np.ndarray | None) -> None:
    if not path.parent.is_dir():
        raise DataError(f"{path}: the directory {path.parent} does not exist; create it first")
    h, w = size
    if h % 2 or w % 2 or h < 2 or w < 2:
        raise DataError(
            f"{path}: H.264 in yuv420p needs an even height and width, got {h}x{w}; "
            "crop or pad the frames by one pixel"
        )
    if audio is not None and (
        not isinstance(audio, np.ndarray) or audio.ndim != 1 or audio.dtype.kind != "f"
    ):
        raise DataError(
            f"{path}: audio must be a float mono waveform of shape [S], got {_desc(audio)}"
        )


def _check_frames(path: Path, frames: np.ndarray, size: tuple[int, int] | None = None) -> None:
    """uint8 RGB [T, H, W, 3] with T >= 1 (and (H, W) == size where given)."""
    ok = isinstance(frames, np.ndarray) and frames.dtype == np.uint8 and frames.ndim == 4
    if not ok or frames.shape[3] != 3 or frames.shape[0] == 0:
        raise DataError(
            f"{path}: frames must be uint8 RGB of shape [T, H, W, 3], got {_desc(frames)}"
        )
    if size is not None and frames.shape[1:3] != size:
        raise DataError(
            f"{path}: frames of {frames.shape[1]}x{frames.shape[2]} after frames of "
            f"{size[0]}x{size[1]}; every frame of a video has the same size"
        )


def _desc(x) -> str:
    return f"{x.dtype} {list(x.shape)}" if isinstance(x, np.ndarray) else type(x).__name__
