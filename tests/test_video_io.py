"""Tests of fastdavs.data.video_io: mp4 round trips (frames, stream layout, the audio/video sync
contract to 2 ms), audio of any rate, layout and bit depth, the DataError messages, and the
atomic write.
"""

from __future__ import annotations

import av
import cv2
import numpy as np
import pytest
import soundfile as sf

from fastdavs.data import video_io as vio
from fastdavs.errors import DataError

SR = 16000
FPS = 25
T = 29
S = round(T / FPS * SR)  # 18560 samples for 29 frames
TOL = round(0.002 * SR)  # 2 ms in samples


def smooth_frames(t: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    """[t, h, w, 3] uint8: a random low-frequency field that slides 3 px per frame, so every
    frame differs from its neighbours by far more than H.264 at crf 18 changes it."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(20, 235, (h // 8 + 2, (w + 3 * t) // 8 + 2, 3)).astype(np.float32)
    big = cv2.resize(coarse, (8 * coarse.shape[1], 8 * coarse.shape[0]), cv2.INTER_CUBIC)
    frames = np.stack([big[:h, 3 * k : 3 * k + w] for k in range(t)])
    return np.clip(frames, 0, 255).astype(np.uint8)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255**2 / mse)


def tone(n: int, sr: int, freq: float = 440.0, amp: float = 0.3) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq * np.arange(n) / sr)).astype(np.float32)


def add_burst(x: np.ndarray, sr: int, at: float, seed: int = 1) -> np.ndarray:
    """A 5 ms full-band noise burst starting at `at` seconds, on top of `x` (a copy)."""
    x = x.copy()
    n0, n = round(at * sr), round(0.005 * sr)
    x[n0 : n0 + n] += np.random.default_rng(seed).uniform(-0.6, 0.6, n).astype(np.float32)
    return x


def onset(x: np.ndarray, sr: int) -> int:
    """Index (at 16 kHz) where the high-passed envelope first reaches half its peak: the burst's
    start, independent of the tone (440 Hz is removed by the first difference, mostly)."""
    d = np.abs(np.diff(x.astype(np.float64), n=2))
    env = np.convolve(d, np.ones(16) / 16, mode="same")
    return round(int(np.argmax(env >= env.max() / 2)) * SR / sr)


def peak_freq(x: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x)), n=16 * len(x)))
    return float(np.argmax(spec) * sr / (16 * len(x)))


def top_level_atoms(path) -> list[str]:
    data, atoms, i = path.read_bytes(), [], 0
    while i + 8 <= len(data):
        size = int.from_bytes(data[i : i + 4], "big")
        atoms.append(data[i + 4 : i + 8].decode("latin-1"))
        if size < 8:
            break
        i += size
    return atoms


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """One clip written with write_mp4: (path, frames, audio, burst time)."""
    frames = smooth_frames(T, 96, 128)  # H != W catches a swapped axis
    audio = add_burst(tone(S, SR), SR, at=0.5123)
    path = tmp_path_factory.mktemp("mp4") / "WORD_00001.mp4"
    assert vio.write_mp4(path, frames, audio) == path
    return path, frames, audio, 0.5123


def test_round_trip_frames(written):
    path, frames, _, _ = written
    clip = vio.read_clip(path)
    assert clip.path == path and clip.fps == FPS and clip.sample_rate == SR
    assert clip.frames.dtype == np.uint8 and clip.frames.shape == (T, 96, 128, 3)
    per_frame = [psnr(clip.frames[k], frames[k]) for k in range(T)]
    assert min(per_frame) > 30, per_frame
    # Frame k is frame k, not a neighbour: the neighbour is much further away.
    assert max(psnr(clip.frames[k], frames[k + 1]) for k in range(T - 1)) < min(per_frame) - 8
    np.testing.assert_array_equal(vio.read_video_frames(path), clip.frames)


def test_round_trip_audio(written):
    path, _, audio, at = written
    clip = vio.read_clip(path)
    assert clip.audio.dtype == np.float32 and clip.audio.shape == (18560,)
    assert np.abs(clip.audio).max() <= 1
    assert abs(onset(audio, SR) - round(at * SR)) <= 2  # the detector itself is exact
    assert abs(onset(clip.audio, SR) - round(at * SR)) <= TOL
    before = slice(1000, round(at * SR) - 500)  # tone only
    assert abs(peak_freq(clip.audio[before], SR) - 440) < 2
    # AAC is lossy: the waveform correlates, the level is kept.
    assert np.corrcoef(clip.audio[before], audio[before])[0, 1] > 0.99
    rms = np.sqrt(np.mean(clip.audio[before] ** 2))
    assert rms == pytest.approx(0.3 / np.sqrt(2), rel=0.03)


def test_stream_layout_and_frame_times(written):
    path = written[0]
    with av.open(str(path)) as c:
        assert len(c.streams) == 2
        (v,), (a,) = c.streams.video, c.streams.audio
        assert v.codec_context.name == "h264" and v.codec_context.format.name == "yuv420p"
        assert (v.width, v.height, v.average_rate) == (128, 96, FPS)
        assert a.codec_context.name == "aac" and a.rate == SR and a.layout.nb_channels == 1
        times = [f.time for f in c.decode(video=0)]
    np.testing.assert_allclose(times, np.arange(T) / FPS, atol=1e-6)
    atoms = top_level_atoms(path)  # +faststart: the index comes before the media data
    assert atoms.index("moov") < atoms.index("mdat")


@pytest.mark.parametrize("at", [0.043, 0.3, 1.1])
def test_burst_time_survives_round_trip(tmp_path, at):
    path = tmp_path / "c.mp4"
    vio.write_mp4(path, smooth_frames(T, 32, 32), add_burst(tone(S, SR, 200.0), SR, at))
    assert abs(onset(vio.read_clip(path).audio, SR) - round(at * SR)) <= TOL


def write_with_offset(path, frames, audio, sr, channels, v_delay, a_delay):
    """An mp4 with `channels`-channel AAC at `sr` whose video starts `v_delay` frames and whose
    audio starts `a_delay` samples after time 0 (what write_mp4 never produces)."""
    with av.open(str(path), "w", format="mp4") as c:
        v = c.add_stream("libx264", rate=FPS)
        v.height, v.width = frames.shape[1:3]
        v.pix_fmt = "yuv420p"
        a = c.add_stream("aac", rate=sr)
        a.layout = "stereo" if channels == 2 else "mono"
        for k, rgb in enumerate(frames):
            f = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            f.pts = v_delay + k
            c.mux(v.encode(f))
        c.mux(v.encode(None))
        f = av.AudioFrame.from_ndarray(
            np.repeat(audio[None], channels, 0), format="fltp", layout=a.layout.name
        )
        f.sample_rate, f.pts = sr, a_delay
        c.mux(a.encode(f))
        c.mux(a.encode(None))


@pytest.mark.parametrize(
    "sr, channels, v_delay, a_delay_s",
    [(44100, 2, 0, 0.0), (48000, 1, 0, 0.2), (22050, 2, 5, 0.0), (44100, 2, 5, 0.08)],
)
def test_av_offset_and_resampling_are_aligned(tmp_path, sr, channels, v_delay, a_delay_s):
    """Audio that starts after (before) the first frame is shifted right (left), at any rate."""
    path = tmp_path / "offset.mp4"
    at = 0.6  # burst time in the audio's own timeline
    audio = add_burst(tone(round(1.0 * sr), sr), sr, at)
    write_with_offset(path, smooth_frames(T, 32, 32), audio, sr, channels, v_delay, a_delay_s * sr)
    clip = vio.read_clip(path)
    assert clip.audio.shape == (S,)
    expected = round((at + a_delay_s - v_delay / FPS) * SR)
    assert abs(onset(clip.audio, SR) - expected) <= TOL
    # Zeros before the audio starts (a stream that starts late keeps its 1024 priming samples,
    # decoded just before its start); after its end (1.0 s later), near-silence up to 1.16 s, or
    # sound to the last sample where it ends later and is trimmed.
    start = round((a_delay_s - v_delay / FPS) * SR)
    if start > 0:
        priming = int(np.ceil(1024 * SR / sr)) + TOL  # + the resampling filter's reach
        assert np.abs(clip.audio[: start - priming]).max() == 0
        assert np.abs(clip.audio[start + 50 : start + 500]).max() > 0.25
    end = start + SR
    if end + 100 < S:
        assert np.abs(clip.audio[end + 100 :]).max() < 1e-3
    else:
        assert np.abs(clip.audio[-200:]).max() > 0.25


def test_full_scale_audio_stays_in_range(tmp_path):
    """A full-scale square wave makes AAC overshoot; the reader clips to [-1, 1], or mfcc would
    take the clip for int16-range audio."""
    square = np.sign(tone(S, SR, 300.0)).astype(np.float32)
    vio.write_mp4(tmp_path / "sq.mp4", smooth_frames(T, 32, 32), square)
    audio = vio.read_clip(tmp_path / "sq.mp4").audio
    assert np.abs(audio).max() <= 1.0 and np.abs(audio).max() > 0.95


@pytest.mark.parametrize(
    "sr, channels, fmt, subtype",
    [
        (44100, 2, "WAV", "PCM_16"),
        (48000, 6, "WAV", "PCM_16"),
        (8000, 1, "WAV", "PCM_U8"),
        (22050, 1, "WAV", "PCM_24"),
        (32000, 1, "WAV", "PCM_32"),
        (24000, 2, "WAV", "FLOAT"),
        (16000, 1, "WAV", "DOUBLE"),
        (44100, 2, "FLAC", "PCM_16"),
        (48000, 2, "OGG", "VORBIS"),
        (44100, 1, "MP3", "MPEG_LAYER_III"),
    ],
)
def test_read_audio_any_format(tmp_path, sr, channels, fmt, subtype):
    at = 0.45
    x = add_burst(tone(round(0.7 * sr), sr, 1000.0, amp=0.3), sr, at)
    path = tmp_path / f"a.{fmt.lower()}"
    sf.write(path, np.repeat(x[:, None], channels, 1), sr, format=fmt, subtype=subtype)
    y = vio.read_audio(path)
    assert y.dtype == np.float32 and y.ndim == 1
    lossy = fmt in ("OGG", "MP3")
    assert abs(len(y) - round(0.7 * SR)) <= (round(0.005 * SR) if lossy else 0)
    assert abs(peak_freq(y[800:6400], SR) - 1000) < 3
    # All channels equal: the unit-gain downmix keeps the level (6 channels: LFE is not mixed).
    rms = np.sqrt(np.mean(y[800:6400] ** 2))
    assert rms == pytest.approx(0.3 / np.sqrt(2), rel=0.05 if lossy else 0.01)
    assert abs(onset(y, SR) - round(at * SR)) <= TOL


def test_read_audio_m4a_and_stereo_mix(tmp_path):
    """AAC in m4a via PyAV; a tone on the left channel only comes out at half level."""
    sr, n = 44100, 44100
    path = tmp_path / "a.m4a"
    with av.open(str(path), "w", format="mp4") as c:
        a = c.add_stream("aac", rate=sr)
        a.layout = "stereo"
        left = tone(n, sr, 1000.0, amp=0.6)
        f = av.AudioFrame.from_ndarray(np.stack([left, 0 * left]), format="fltp", layout="stereo")
        f.sample_rate, f.pts = sr, 0
        c.mux(a.encode(f))
        c.mux(a.encode(None))
    y = vio.read_audio(path)
    # AAC's end padding (up to 1023 samples at 44.1 kHz) is not trimmed; see read_audio.
    assert SR <= len(y) <= SR + np.ceil(1024 * SR / sr)
    assert abs(peak_freq(y, SR) - 1000) < 3
    assert np.sqrt(np.mean(y[1600:-1600] ** 2)) == pytest.approx(0.3 / np.sqrt(2), rel=0.03)


@pytest.fixture
def silent_mp4(tmp_path):
    path = tmp_path / "silent.mp4"
    vio.write_mp4(path, smooth_frames(T, 32, 32), None)
    return path


def test_video_without_audio(silent_mp4):
    with pytest.raises(DataError, match="has no audio track") as e:
        vio.read_clip(silent_mp4)
    assert str(silent_mp4) in str(e.value)
    clip = vio.read_clip(silent_mp4, require_audio=False)
    assert clip.audio is None and clip.frames.shape == (T, 32, 32, 3)
    with pytest.raises(DataError, match="has no audio track"):
        vio.read_audio(silent_mp4)


def make_bad(tmp_path, kind: str):
    path = tmp_path / "WORD_00001.mp4"
    if kind == "empty":
        path.touch()
    elif kind == "text":
        path.write_text("not a video\n")
    elif kind == "truncated":  # cut inside a packet: the decoder fails
        vio.write_mp4(path, smooth_frames(T, 64, 64), tone(S, SR))
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "cut_at_packet":  # the demuxer ends cleanly; the index says what is missing
        vio.write_mp4(path, smooth_frames(T, 64, 64), tone(S, SR))
        with av.open(str(path)) as c:
            ends = [p.pos + p.size for p in c.demux(video=0) if p.size]
        path.write_bytes(path.read_bytes()[: ends[14]])
    elif kind == "directory":
        path.mkdir()
    elif kind == "wav":
        path = tmp_path / "a.wav"
        sf.write(path, tone(S, SR), SR)
    return path


@pytest.mark.parametrize(
    "kind, message",
    [
        ("missing", "no such file"),
        ("empty", "is empty"),
        ("text", "not a readable media file"),
        ("truncated", "damaged or truncated"),
        ("cut_at_packet", r"is truncated \(15 of 29 video frames"),
        ("directory", "is not a file"),
        ("wav", "has no video stream"),
    ],
)
def test_read_errors(tmp_path, kind, message):
    path = make_bad(tmp_path, kind)
    with pytest.raises(DataError, match=message) as e:
        vio.read_clip(path)
    assert str(path) in str(e.value)


def test_too_few_frames(written):
    path = written[0]
    with pytest.raises(DataError, match="has 29 video frames, at least 30") as e:
        vio.read_clip(path, min_frames=30)
    assert str(path) in str(e.value)
    assert len(vio.read_clip(path, min_frames=29).frames) == 29


@pytest.mark.parametrize(
    "frames, audio, message",
    [
        (np.zeros((3, 33, 32, 3), np.uint8), None, "even height and width"),
        (np.zeros((3, 32, 32, 3), np.float32), None, "uint8 RGB"),
        (np.zeros((3, 32, 32), np.uint8), None, "uint8 RGB"),
        (np.zeros((0, 32, 32, 3), np.uint8), None, "uint8 RGB"),
        (np.zeros((3, 32, 32, 3), np.uint8), np.zeros((2, 100), np.float32), "float mono"),
        (np.zeros((3, 32, 32, 3), np.uint8), np.zeros(100, np.int16), "float mono"),
    ],
)
def test_write_rejects_bad_input(tmp_path, frames, audio, message):
    path = tmp_path / "out.mp4"
    with pytest.raises(DataError, match=message) as e:
        vio.write_mp4(path, frames, audio)
    assert str(path) in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_write_needs_the_directory(tmp_path):
    path = tmp_path / "no" / "such" / "dir" / "out.mp4"
    with pytest.raises(DataError, match="does not exist; create it first") as e:
        vio.write_mp4(path, smooth_frames(T, 32, 32))
    assert str(path) in str(e.value)


class FailingReformatter:
    """Stands in for VideoReformatter; fails on the 6th frame, mid-encode."""

    def __init__(self):
        self.inner, self.calls = av.video.reformatter.VideoReformatter(), 0

    def reformat(self, frame, **kwargs):
        self.calls += 1
        if self.calls == 6:
            raise RuntimeError("encoder failed")
        return self.inner.reformat(frame, **kwargs)


@pytest.mark.parametrize("existing", [False, True])
def test_atomic_write(tmp_path, monkeypatch, existing):
    path = tmp_path / "out.mp4"
    if existing:
        path.write_bytes(b"previous contents")
    monkeypatch.setattr(vio, "VideoReformatter", FailingReformatter)
    with pytest.raises(RuntimeError, match="encoder failed"):
        vio.write_mp4(path, smooth_frames(T, 32, 32), tone(S, SR))
    assert [p.name for p in tmp_path.iterdir()] == (["out.mp4"] if existing else [])
    if existing:
        assert path.read_bytes() == b"previous contents"
    monkeypatch.undo()
    vio.write_mp4(path, smooth_frames(T, 32, 32), tone(S, SR))  # and then it succeeds
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]
    assert vio.read_clip(path).frames.shape == (T, 32, 32, 3)


def test_streaming_writer_equals_write_mp4(tmp_path, written):
    """Mp4Writer fed in uneven chunks writes the file write_mp4 writes (same decoded frames
    and sound); a chunk of another size, or an error, leaves no file."""
    _, frames, audio, _ = written
    path = tmp_path / "chunks.mp4"
    with vio.Mp4Writer(path, (96, 128), audio) as writer:
        for lo, hi in [(0, 1), (1, 8), (8, 20), (20, T)]:
            writer.write(frames[lo:hi])
    assert writer.frames_written == T
    whole, chunked = vio.read_clip(written[0]), vio.read_clip(path)
    np.testing.assert_array_equal(chunked.frames, whole.frames)
    np.testing.assert_array_equal(chunked.audio, whole.audio)
    bad = tmp_path / "bad.mp4"
    match = "frames of 32x32 after frames of 96x128"
    with pytest.raises(DataError, match=match), vio.Mp4Writer(bad, (96, 128)) as writer:
        writer.write(frames[:3])
        writer.write(smooth_frames(2, 32, 32))
    with pytest.raises(DataError, match="no frames were written"):
        vio.Mp4Writer(bad, (96, 128)).close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chunks.mp4"]


def test_iter_video_frames_and_soundtrack(written):
    """Streaming reads give what read_clip gives, and stop early without decoding the rest."""
    path, _, _, _ = written
    clip = vio.read_clip(path)
    np.testing.assert_array_equal(np.stack(list(vio.iter_video_frames(path))), clip.frames)
    frames = vio.iter_video_frames(path)
    np.testing.assert_array_equal(next(frames), clip.frames[0])
    frames.close()
    np.testing.assert_array_equal(vio.read_soundtrack(path), clip.audio)
    assert vio.video_frame_rate(path) == FPS


def test_soundtrack_of_a_silent_video_and_stream_errors(tmp_path, silent_mp4):
    assert vio.read_soundtrack(silent_mp4) is None
    with pytest.raises(DataError, match="no such file"):
        next(vio.iter_video_frames(tmp_path / "missing.mp4"))
    wav = tmp_path / "tone.wav"
    sf.write(wav, tone(SR, SR), SR)
    with pytest.raises(DataError, match="has no video stream"):
        vio.video_frame_rate(wav)
