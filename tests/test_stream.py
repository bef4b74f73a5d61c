"""fastdavs.stream: windows equal the offline front end's for any chunking, frames equal a batch
`Synthesizer.frames` call (with either generator), bounded memory, the int16-gain decision, and
the errors."""

import numpy as np
import pytest
import torch

from fastdavs.config import DavsConfig
from fastdavs.data.audio import FIRST_FRAME, AudioError, audio_to_windows, mfcc
from fastdavs.errors import FastdavsError
from fastdavs.infer.driving import AudioDriver
from fastdavs.infer.synthesis import Synthesizer
from fastdavs.io.checkpoint import save_checkpoint
from fastdavs.model import DavsModel, MouthEditor
from fastdavs.stream import (
    LOOKAHEAD_MS,
    AudioStream,
    FaceStream,
    StreamError,
    clip_windows,
    samples_needed,
)

SR = 16000


def speechlike(seconds: float, seed: int = 0) -> np.ndarray:
    """Amplitude-modulated noise with a stretch of digital silence, float32 in [-1, 1]."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    t = np.arange(n) / SR
    x = rng.standard_normal(n) * 0.2 * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    x[n // 3 : n // 3 + 900] = 0.0
    return x.astype(np.float32)


def chunks(x: np.ndarray, sizes, seed: int = 0):
    rng = np.random.default_rng(seed)
    i = 0
    while i < len(x):
        k = int(rng.integers(1, 2000)) if sizes == "random" else sizes
        yield x[i : i + k]
        i += k


def run_stream(stream, x: np.ndarray, sizes) -> list:
    """Every non-empty output of feeding `x` in `sizes` chunks, then of flush."""
    outs = [stream.feed(c) for c in chunks(x, sizes)]
    outs.append(stream.flush())
    return [o for o in outs if len(o)]


def joined(outs) -> tuple[list[int], list[float], torch.Tensor]:
    return (
        [i for o in outs for i in o.indices],
        [t for o in outs for t in o.times],
        torch.cat([o.mfcc for o in outs]),
    )


@pytest.mark.parametrize("sizes", [1, 160, 640, 1001, "random"])
@pytest.mark.parametrize("edges", ["none", "silence"])
def test_windows_equal_offline_for_any_chunking(edges, sizes):
    # One-sample chunks on a shorter clip keep the test fast; it still crosses 50 columns.
    x = speechlike(0.55 if sizes == 1 else 2.3, seed=len(str(sizes)))
    indices, times, windows = joined(run_stream(AudioStream(edges=edges), x, sizes))
    ref = clip_windows(torch.from_numpy(x), edges=edges)
    assert indices == list(ref.indices) and times == [i / 25 for i in ref.indices]
    torch.testing.assert_close(windows, ref.mfcc, rtol=0, atol=1e-5)
    if edges == "none":  # exactly the offline front end, frames 2 .. (F - 12) // 4
        offline = audio_to_windows(torch.from_numpy(x))
        assert indices[0] == FIRST_FRAME and len(indices) == len(offline)
        torch.testing.assert_close(windows, offline, rtol=0, atol=1e-5)


def test_silence_edges_frame_count_and_shared_frames():
    x = torch.from_numpy(speechlike(1.37))
    offline = audio_to_windows(x)  # frames 2 .. 2 + T - 1
    padded = clip_windows(x, edges="silence")
    assert padded.first == 0 and len(padded) == -(-len(x) // 640)  # one per started 40 ms
    torch.testing.assert_close(padded.mfcc[FIRST_FRAME : FIRST_FRAME + len(offline)], offline)
    # Frame 0 reads 80 ms of silence before the clip: its first 6 steps (400-sample frames
    # every 160 samples) are digital silence, which gives exact zeros; the rest read the clip.
    assert padded.mfcc[0, :6].abs().max() == 0 and padded.mfcc[0, 6:].abs().amax(1).min() > 0
    assert len(clip_windows(x[:0])) == 0 and len(clip_windows(x[:1])) == 1
    assert len(clip_windows(x[:3439], edges="none")) == 0  # shorter than one window


def test_silence_edges_are_those_of_fastdavs_generate():
    x = speechlike(1.23)
    driver = AudioDriver(x)
    ref = driver.windows(0, driver.n_frames)
    _, _, windows = joined(run_stream(AudioStream(), x, "random"))
    torch.testing.assert_close(windows, ref, rtol=0, atol=1e-5)


def test_frames_are_emitted_as_soon_as_their_audio_is_in():
    assert samples_needed(0) == 2160 and LOOKAHEAD_MS == 135.0
    stream = AudioStream()
    x = speechlike(1.0)
    emitted_at = {}
    for n in range(1, len(x) + 1, 80):  # 5 ms steps
        out = stream.feed(x[n - 1 : min(n + 79, len(x))])
        for i in out.indices:
            emitted_at[i] = min(n + 79, len(x))
    for i, at in emitted_at.items():  # at the first 5 ms step that holds its last sample
        assert samples_needed(i) <= at < samples_needed(i) + 80


def test_buffer_stays_bounded_over_a_minute():
    stream = AudioStream()
    rng = np.random.default_rng(1)
    frames = 0
    for _ in range(60 * SR // 1600):
        out = stream.feed((0.1 * rng.standard_normal(1600)).astype(np.float32))
        frames += len(out)
        samples, columns = stream.buffered
        assert samples < 560 and columns < 20
    frames += len(stream.flush())
    assert frames == 60 * 25 and stream.samples_in == 60 * SR


def test_int16_gain_is_fixed_up_front():
    x = torch.from_numpy(speechlike(1.2))
    # The clip in int16 units: offline sees peak > 1 and uses gain 1; a stream left at its
    # default 32768 scales by 32768 again and still gives the same c1..c12.
    x16 = (x * 32768).round()
    offline = audio_to_windows(x16)
    _, _, default = joined(run_stream(AudioStream(edges="none"), x16.numpy(), 640))
    torch.testing.assert_close(default, offline, rtol=0, atol=1e-4)
    _, _, unit = joined(run_stream(AudioStream(edges="none", gain=1), x16.numpy(), 640))
    torch.testing.assert_close(unit, offline, rtol=0, atol=1e-5)
    # Where the gain matters: audio so quiet (1e-13) that its filter-bank energies sit under
    # LOG_FLOOR at gain 1 and above it at 32768. Only windows that read it differ.
    quiet = torch.cat([1e-13 * x[:8000], x[8000:]])
    a = clip_windows(quiet, edges="none", gain=32768.0).mfcc
    b = clip_windows(quiet, edges="none", gain=1.0).mfcc
    differs = (a - b).abs().amax(dim=(1, 2)) > 1e-3
    reads_quiet = torch.arange(len(a)) * 4 * 160 < 8000  # window t starts at sample 640 t
    assert differs.any() and not differs[~reads_quiet].any()


def test_mfcc_fixed_gain():
    x = torch.from_numpy(speechlike(0.5))
    torch.testing.assert_close(mfcc(x, gain=32768.0), mfcc(x), rtol=0, atol=0)
    torch.testing.assert_close(mfcc(x, gain=1.0), mfcc(x), rtol=0, atol=1e-4)
    with pytest.raises(AudioError, match="gain"):
        mfcc(x, gain=1.0, backend="triton")


@pytest.fixture(scope="module", params=["davs", "mouth_editor"])
def synth(request):
    torch.manual_seed(0)
    cfg = DavsConfig.from_preset("tiny", generator=request.param)
    model = DavsModel(cfg).set_kernel_backend("ref")
    if isinstance(model.generator, MouthEditor):  # a zero output layer would copy the face
        torch.nn.init.normal_(model.generator.out.weight, std=0.05)
    s = model.cfg.image_size
    with torch.no_grad():  # BatchNorm statistics away from their N(0, 1) defaults
        ident = model.encode_identity(torch.rand(2, 3, s, s))
        model.generate(ident, model.encode_audio(4 * torch.randn(2, 2, 20, 12)))
    model.eval().requires_grad_(False)
    return Synthesizer(model.cfg, model=model, batch_size=8)


@pytest.mark.parametrize("sizes", [640, "random"])
def test_face_stream_frames_equal_a_batch_call(synth, sizes):
    s = synth.config.image_size
    face = torch.rand(3, s, s)
    ident = synth.identity(face)
    x = speechlike(1.5)
    stream = FaceStream(synth, ident)
    outs = run_stream(stream, x, sizes)
    indices = [i for o in outs for i in o.indices]
    images = torch.cat([o.images for o in outs])
    ref = clip_windows(torch.from_numpy(x))
    assert indices == list(ref.indices) == list(range(-(-len(x) // 640)))
    assert images.shape == (len(indices), 3, s, s)
    torch.testing.assert_close(images, synth.frames(ref.mfcc, ident), rtol=0, atol=1e-5)
    assert (images - images[:1]).abs().max() > 1e-3  # frames that follow the speech
    # wid_scale goes through to the synthesizer
    scaled = run_stream(FaceStream(synth, ident, wid_scale=1.5), x, 640)
    torch.testing.assert_close(
        torch.cat([o.images for o in scaled]), synth.frames(ref.mfcc, ident, wid_scale=1.5)
    )


def test_face_stream_runs_an_openvino_engine_on_one_thread(synth, tmp_path):
    """The stream with an OpenVINO engine (one inference thread, as for real time on a shared
    machine): the engine's own batch frames, and the eager model's to float rounding."""
    from fastdavs.engines import BuildConfig, build_engine

    ckpt = save_checkpoint(tmp_path / "run", "step_000001", synth.model)
    engine = build_engine(ckpt, tmp_path / "ov", BuildConfig("openvino", batch=(1, 8, 16)))
    fast = Synthesizer.from_engine(engine, ckpt, batch_size=8, threads=1)
    compiled = fast.engine.sessions["frames"].compiled
    assert fast.backend == "openvino" and compiled.get_property("INFERENCE_NUM_THREADS") == 1
    s = fast.config.image_size
    ident = fast.identity(torch.rand(3, s, s))
    x = speechlike(1.0)
    outs = run_stream(FaceStream(fast, ident), x, "random")
    images = torch.cat([o.images for o in outs])
    ref = clip_windows(torch.from_numpy(x))
    torch.testing.assert_close(images, fast.frames(ref.mfcc, ident), rtol=0, atol=1e-6)
    torch.testing.assert_close(images, synth.frames(ref.mfcc, ident), rtol=0, atol=1e-4)


def test_errors(synth):
    stream = AudioStream()
    with pytest.raises(AudioError, match="float32 or float64"):
        stream.feed(np.zeros(640, np.int16))
    with pytest.raises(AudioError, match="mono"):
        stream.feed(np.zeros((2, 640), np.float32))
    with pytest.raises(AudioError, match="NumPy arrays or torch tensors"):
        stream.feed([0.0] * 640)
    with pytest.raises(AudioError, match="16000 Hz audio, got 44100 Hz"):
        AudioStream(44100)
    with pytest.raises(AudioError, match="edges"):
        AudioStream(edges="repeat")
    assert len(stream.feed(np.zeros(0, np.float32))) == 0  # empty chunks are fine
    stream.feed(torch.zeros(5000, dtype=torch.float64))  # float64 and torch are fine
    stream.flush()
    with pytest.raises(StreamError, match="flushed"):
        stream.feed(np.zeros(640, np.float32))
    with pytest.raises(StreamError, match="flushed"):
        stream.flush()
    face_stream = FaceStream(synth, synth.identity(torch.rand(3, 32, 32)))
    face_stream.flush()
    with pytest.raises(FastdavsError):
        face_stream.feed(np.zeros(640, np.float32))
