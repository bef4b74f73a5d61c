"""Tests of `fastdavs-generate` (fastdavs.infer.generate, .driving, .face_input, .synthesis): real
mp4s written from a real photo (matplotlib's bundled Grace Hopper portrait) and from a SynthLRW
clip, driven by audio (48 kHz stereo FLAC, or a clip's own AAC) and by a driving video; the
stream layout, frame count, duration and fps of what comes out; that the mouth moves with the
speech and stays still in silence; the MFCC windows against the training data's; the engine
path against eager; and every user error as one line, exit status 2 and nothing at OUT.

The model is the tiny preset with random weights, made more sensitive to its word-ID input
(`sensitive_model`): a random generator draws nearly the same frame whatever the speech (frame
differences of ~0.1/255, below H.264's noise; the mouth editor draws exactly the identity
frame), which would let a static video pass. Every test that runs the model runs it with both
generators, the davs decoder and the mouth editor.
"""

import math

import av
import cv2
import numpy as np
import pytest
import soundfile as sf
import torch
from scipy.signal import resample_poly

from fastdavs.config import DavsConfig
from fastdavs.data.align import align_frames, three_points
from fastdavs.data.audio import mfcc, mfcc_windows
from fastdavs.data.synth import SynthConfig, render_example
from fastdavs.data.video_io import read_audio, read_clip, write_mp4
from fastdavs.errors import DataError
from fastdavs.infer import generate as gen
from fastdavs.infer.driving import AudioDriver
from fastdavs.infer.face_input import Compositor, centre_crop, load_face
from fastdavs.infer.synthesis import Synthesizer
from fastdavs.io.checkpoint import save_checkpoint
from fastdavs.model import DavsModel

SR = 16000
SILENCE = SR  # 1 s of digital silence on each side of the word


def sensitive_model(faces: torch.Tensor, generator: str) -> DavsModel:
    """Tiny random model whose frames depend strongly on the word-ID features: the wid rows of
    the davs generator's first layer and its output layer scaled up, or the mouth editor's
    word-ID projections scaled up and its zero-initialised output layer drawn at random (frame
    differences of a few /255 between speech frames, exactly 0 between silent ones). A random
    FAN's word-ID output hardly varies (std 4e-5 over a clip, against 0.1 for the audio
    encoder's): its last layer is scaled to the audio's and centred on `faces` [N, 3, S, S],
    aligned frames of a clip."""
    torch.manual_seed(0)
    model = DavsModel(DavsConfig.from_preset("tiny", generator=generator)).eval()
    g = model.generator
    with torch.no_grad():
        if generator == "davs":
            g.stem[0].weight[model.cfg.pid_dim :].mul_(10)
            g.head[-2].weight.mul_(10)
        else:
            g.word3.weight.mul_(10)
            g.word2.weight.mul_(10)
            g.out.weight.normal_(0, 0.02)
        fc = model.video_encoder.fc
        seen = []
        hook = fc.register_forward_hook(lambda module, args, out: seen.append(args[0]))
        model.video_encoder(faces)
        hook.remove()
        fc.weight.mul_(3000)
        fc.bias.copy_(-fc.weight @ seen[0].mean(0))
    return model


@pytest.fixture(scope="module", params=["davs", "mouth_editor"])
def ckpt(request, tmp_path_factory, media):
    faces = torch.from_numpy(media["aligned"]).permute(0, 3, 1, 2).float() / 255
    model = sensitive_model(faces, request.param)
    return save_checkpoint(tmp_path_factory.mktemp("run"), "step_1", model)


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """A SynthLRW clip (identity 0 saying word 0: 29 frames, 128 px, AAC), the speech padded
    with 1 s of silence on both sides as 48 kHz stereo FLAC, and the real photo."""
    root = tmp_path_factory.mktemp("media")
    ex = render_example(SynthConfig(size=128), 0, 0, 0)
    clip = write_mp4(root / "clip.mp4", ex.frames, ex.audio)
    speech = np.concatenate([np.zeros(SILENCE), ex.audio, np.zeros(SILENCE)]).astype(np.float32)
    stereo = resample_poly(speech, 3, 1)[:, None] * [1.0, 0.8]  # [S*3, 2] at 48 kHz
    sf.write(root / "speech.flac", stereo, 3 * SR, subtype="PCM_24")
    mpl = pytest.importorskip("matplotlib.cbook")
    photo = mpl.get_sample_data("grace_hopper.jpg", asfileobj=False)
    aligned = centre_crop(align_frames(ex.frames, three_points(ex.landmarks), 32), 32)
    return {
        "clip": clip,
        "flac": root / "speech.flac",
        "speech": speech,
        "photo": photo,
        "aligned": np.ascontiguousarray(aligned),  # [29, 32, 32, 3] at the tiny preset's size
    }


def run(capsys, *args) -> tuple[int, str, str]:
    """`fastdavs-generate ARGS` in this process: (exit status, stderr, stdout). Strings that
    start with "-" are split at spaces ("--batch-size 16 -o"); other arguments are one each."""
    argv = [t for a in args for t in (a.split() if str(a).startswith("-") else [str(a)])]
    rc = gen.main(argv)
    captured = capsys.readouterr()
    return rc, captured.err, captured.out


def probe(path):
    """(video codec, fps, frames, audio codec or None, container duration in s)."""
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        a = c.streams.audio[0].codec_context.name if c.streams.audio else None
        n = sum(1 for _ in c.decode(video=0))
        return v.codec_context.name, float(v.average_rate), n, a, c.duration / 1e6


def mouth_motion(frames: np.ndarray, face, cfg: DavsConfig) -> np.ndarray:
    """Mean |difference| of consecutive frames in the mouth box of the aligned crop: output
    frames [T, H, W, 3] are warped into crop space with the face's alignment first."""
    s = cfg.image_size
    crops = np.stack([cv2.warpAffine(f, face.matrix, (s, s)) for f in frames]).astype(float)
    t, b, le, r = cfg.mouth_box_px
    mouth = crops[:, t:b, le:r]
    return np.abs(np.diff(mouth, axis=0)).mean(axis=(1, 2, 3))  # [T - 1]


def silent_frames(n_frames: int, speech: np.ndarray, margin: int = 640) -> np.ndarray:
    """bool [n]: output frame k's MFCC window (samples [640k - 1280, 640k + 2160)) lies in the
    leading or trailing silence, `margin` samples away from the word (resampling rings)."""
    k = np.arange(n_frames)
    lo, hi = 640 * k - 1280, 640 * k + 2160
    word_lo, word_hi = SILENCE - margin, len(speech) - SILENCE + margin
    return (hi <= word_lo) | (lo >= word_hi)


def test_audio_windows_are_the_training_windows(media):
    """Output frame k gets the window the training data gives video frame k (columns
    [4k - 8, 4k + 12) of the speech's MFCC; the first two are read from the lead-in silence),
    whatever the chunking, and the frame count covers the speech."""
    speech = media["speech"]
    driver = AudioDriver(speech)
    assert driver.n_frames == math.ceil(len(speech) / 640)
    whole = driver.windows(0, driver.n_frames)
    assert whole.shape == (driver.n_frames, 20, 12)
    trained, first = mfcc_windows(mfcc(torch.from_numpy(speech)))  # frames 2 .. of the speech
    assert first == 2
    np.testing.assert_allclose(whole[2 : 2 + len(trained)], trained, atol=1e-3)
    assert len(trained) < driver.n_frames - 2  # the padded tail gives the last frames theirs
    chunked = torch.cat(list(driver.chunks(7)))
    np.testing.assert_allclose(chunked, whole, atol=1e-3)
    # Padding moves frames 0-1 onto silence and keeps every later window on the same samples:
    x = np.random.default_rng(0).standard_normal(5000).astype(np.float32) * 0.1
    d = AudioDriver(x)
    head = mfcc_windows(mfcc(torch.from_numpy(np.pad(x, (1280, 0)))))[0][0]
    np.testing.assert_allclose(d.windows(0, 1)[0], head, atol=1e-4)


def test_generate_from_photo_with_audio(media, ckpt, tmp_path, capsys):
    """A real photo + 48 kHz stereo FLAC, pasted back: H.264 + AAC at 25 fps, one frame per
    40 ms of speech, the photo's size; outside the face the photo is untouched; the mouth
    moves during the word and is still in the silences around it."""
    out = tmp_path / "photo.mp4"
    photo, flac = media["photo"], media["flac"]
    rc, err, out_text = run(capsys, "--checkpoint", ckpt, "--face", photo, "--audio", flac,
                            "--paste-back --batch-size 16 -o", out)  # fmt: skip
    assert rc == 0, err
    assert f"wrote {out}" in out_text and "frames/s" in out_text
    speech_s = len(media["speech"]) / SR
    n = math.ceil(len(media["speech"]) / 640)
    vcodec, fps, frames, acodec, duration = probe(out)
    assert (vcodec, fps, frames, acodec) == ("h264", 25.0, n, "aac")
    assert abs(duration - speech_s) <= 1 / 25
    clip = read_clip(out)
    assert clip.frames.shape == (n, 600, 512, 3)
    # The sound is the speech, from frame 0 on (sync): its energy envelope lines up.
    onset = [np.argmax(np.abs(x) > 0.05) / SR for x in (clip.audio, media["speech"])]
    assert abs(onset[0] - onset[1]) < 0.005, onset
    face = load_face(media["photo"], image_size=32)
    photo = face.source.astype(float)
    far = np.ones(photo.shape[:2], bool)
    far[Compositor(face).box] = False
    assert np.abs(clip.frames[:, far].astype(float) - photo[far]).mean() < 3.0
    cfg = DavsConfig.from_preset("tiny")
    motion = mouth_motion(clip.frames, face, cfg)  # [n - 1]
    silent = silent_frames(n, media["speech"])
    still = silent[:-1] & silent[1:]
    moving = ~silent[:-1] & ~silent[1:]
    assert still.sum() > 30 and moving.sum() > 20
    assert motion[still].max() < 0.75, motion[still]  # H.264 noise: up to ~0.5 here
    assert np.median(motion[moving]) > 2.0, motion[moving]


def test_generate_from_synthlrw_clip(media, ckpt, tmp_path, capsys):
    """A SynthLRW clip as FACE (its first frame with a face) and its own sound as AUDIO: the
    aligned crop at the model's size, one frame per 40 ms of the decoded speech."""
    out = tmp_path / "clip.mp4"
    rc, err, out_text = run(
        capsys, "--checkpoint", ckpt, "--face", media["clip"], "--audio", media["clip"], "-o", out
    )
    assert rc == 0, err
    speech = read_audio(media["clip"])
    n = math.ceil(len(speech) / 640)
    vcodec, fps, frames, acodec, duration = probe(out)
    assert (vcodec, fps, frames, acodec) == ("h264", 25.0, n, "aac")
    assert abs(duration - len(speech) / SR) <= 1 / 25
    clip = read_clip(out)
    assert clip.frames.shape[1:] == (32, 32, 3)
    assert np.abs(np.diff(clip.frames.astype(float), axis=0)).mean(axis=(1, 2, 3)).max() > 2


def test_generate_with_driving_video(media, ckpt, tmp_path, capsys):
    """Video-driven: the clip's frames drive the mouth and its sound is carried over; a 30 fps
    video without sound gives 25 fps frames over the same time and no audio stream."""
    out, out30 = tmp_path / "driven.mp4", tmp_path / "d30.mp4"
    photo, clip = media["photo"], media["clip"]
    rc, err, out_text = run(capsys, "--checkpoint", ckpt, "--face", photo, "--driving-video", clip,
                            "--finetune-steps 1 --wid-scale 0.8 -o", out)  # fmt: skip
    assert rc == 0, err
    vcodec, fps, frames, acodec, duration = probe(out)
    assert (vcodec, fps, frames, acodec) == ("h264", 25.0, 29, "aac")
    assert abs(duration - 29 / 25) <= 1 / 25
    video = read_clip(out).frames.astype(float)
    motion = np.abs(np.diff(video, axis=0)).mean(axis=(1, 2, 3))
    assert np.median(motion) > 0.5 and motion.max() > 1.5, motion  # not a still
    silent30 = tmp_path / "silent30.mp4"
    write_mp4(silent30, read_clip(media["clip"]).frames, fps=30)
    rc, err, out_text = run(
        capsys, "--checkpoint", ckpt, "--face", photo, "--driving-video", silent30, "-o", out30
    )
    assert rc == 0, err
    _, fps, frames, acodec, duration = probe(out30)
    assert (fps, acodec) == (25.0, None)
    assert abs(frames / 25 - 29 / 30) <= 1 / 25


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_engine_matches_eager_and_refuses_what_it_cannot_do(backend, media, ckpt, tmp_path, capsys):
    from fastdavs.engines import BuildConfig, build_engine

    engine = build_engine(ckpt, tmp_path / "engine", BuildConfig(backend, batch=(1, 8, 16)))
    eager, fast = Synthesizer.from_checkpoint(ckpt), Synthesizer.from_engine(engine, ckpt)
    face = load_face(media["clip"], image_size=32).crop
    windows = AudioDriver(media["speech"]).windows(20, 60)
    a = eager.frames(windows, eager.identity(face))
    b = fast.frames(windows, fast.identity(face))
    assert a.shape == b.shape == (40, 3, 32, 32)
    assert (a - b).abs().max() < 1e-3
    out = tmp_path / "engine.mp4"
    rc, err, out_text = run(
        capsys, "--engine", engine, "--face", media["clip"], "--audio", media["flac"], "-o", out
    )
    assert rc == 0, err
    assert probe(out)[2] == math.ceil(len(media["speech"]) / 640)
    for extra, what in [
        (["--driving-video", media["clip"]], "--driving-video"),
        (["--audio", media["flac"], "--wid-scale", "1.5"], "--wid-scale"),
        (["--audio", media["flac"], "--finetune-steps", "5"], "--finetune-steps"),
    ]:
        rc, err, out_text = run(
            capsys, "--engine", engine, "--face", media["clip"], *extra, "-o", tmp_path / "no.mp4"
        )
        assert rc == 2 and what in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "no.mp4").exists()


def test_finetune_and_wid_scale_change_the_frames(media, ckpt):
    synth = Synthesizer.from_checkpoint(ckpt, batch_size=8)
    face = load_face(media["clip"], image_size=32).crop
    windows = AudioDriver(media["speech"]).windows(20, 40)
    ident = synth.identity(face)
    base = synth.frames(windows, ident)
    scaled = synth.frames(windows, ident, wid_scale=1.5)
    assert (scaled - base).abs().mean() > 1e-3
    # Scaling the word features scales the speech-driven change between frames.
    assert (scaled[1:] - scaled[:-1]).abs().mean() > (base[1:] - base[:-1]).abs().mean()
    real = torch.from_numpy(face).permute(2, 0, 1).float() / 255

    def error():  # L1 of the identity redrawn from its first 5 windows, outside the mouth
        redrawn = synth.frames(windows[:5], synth.identity(face))
        return (redrawn - real).abs().mean().item()

    before = error()
    synth.finetune(face, mfcc=windows, steps=3)
    assert error() < before


def test_user_errors_are_one_line_and_leave_nothing(media, ckpt, tmp_path, capsys):
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((120, 160, 3), 90, np.uint8))
    short = tmp_path / "short.wav"
    sf.write(short, np.zeros(1600, np.float32), SR)
    notes = tmp_path / "notes.txt"
    notes.write_text("not media")
    out = tmp_path / "out.mp4"
    out.write_bytes(b"earlier result")
    base = ["--checkpoint", ckpt, "-o", out]
    photo, flac = media["photo"], media["flac"]
    cases = [
        (["--face", tmp_path / "none.jpg", "--audio", flac], "none.jpg: no such file"),
        (["--face", notes, "--audio", flac], "notes.txt: is not a readable media file"),
        (["--face", blank, "--audio", flac], "blank.png: no face found in the image"),
        (["--face", photo, "--audio", short], "short.wav: the speech is 100 ms long"),
        (["--face", photo, "--audio", tmp_path / "x.wav"], "x.wav: no such file"),
        (["--face", photo, "--audio", flac, "--face-frame", "3"], "is an image, not a video"),
        (["--face", photo, "--audio", flac, "--box", "500,10,80,80"], "--box 500,10,80,80"),
        (["--face", photo, "--audio", flac, "--batch-size", "0"], "--batch-size 0"),
        (["--face", photo, "--audio", flac, "--device", "cuda:7"], "--device cuda:7"),
        (["--face", media["clip"], "--face-frame", "40", "--audio", flac], "has only 29 frames"),
    ]
    if torch.cuda.is_available():
        cases.pop(-2)
    for args, message in cases:
        rc, err, out_text = run(capsys, *base, *args)
        assert rc == 2, (args, err)
        assert err.startswith("fastdavs-generate: error: ") and message in err, (message, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
        assert out.read_bytes() == b"earlier result"  # untouched, and no temporary file left
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    rc, err, out_text = run(capsys, "--face", photo, "--audio", flac, "-o", out)
    assert rc == 2 and "--checkpoint CKPT" in err
    rc, err, out_text = run(
        capsys, "--checkpoint", tmp_path / "norun", "--face", photo, "--audio", flac, "-o", out
    )
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "norun" in err, err


def test_silent_audio_warns(ckpt, media, tmp_path, capsys, caplog):
    silence = tmp_path / "silence.wav"
    sf.write(silence, np.zeros(SR, np.float32), SR)
    out = tmp_path / "s.mp4"
    rc, err, out_text = run(
        capsys, "--checkpoint", ckpt, "--face", media["clip"], "--audio", silence, "-o", out
    )
    assert rc == 0, err
    assert "the audio is silent" in caplog.text
    assert probe(out)[2] == 25


def test_compositor_puts_the_crop_back_where_it_came_from(media):
    face = load_face(media["photo"], image_size=256)
    paste = Compositor(face)
    same = paste(face.crop).astype(float)
    photo = face.source.astype(float)
    inner = paste.mask[..., 0] > 0.99
    region = (same[paste.box] - photo[paste.box])[inner]
    assert np.abs(region).mean() < 5  # resampled twice: shrunk x0.89 (antialiased), then back
    outside = np.ones(photo.shape[:2], bool)
    outside[paste.box] = False
    np.testing.assert_array_equal(same[outside], photo[outside])
    white = paste(np.full_like(face.crop, 255))
    cy, cx = face.points[:, 1].mean(), face.points[:, 0].mean()
    assert (white[int(cy), int(cx)] == 255).all()  # the face centre is the crop's


def test_compositor_adds_only_the_edit_to_the_picture(media):
    """edit=True (the mouth editor): an unchanged crop gives the photo back bit for bit, at its
    own resolution; a change inside the crop's lower half moves only the pixels it maps to."""
    face = load_face(media["photo"], image_size=64)
    paste = Compositor(face, edit=True)
    photo = face.source
    np.testing.assert_array_equal(paste(face.crop), photo)
    edited = face.crop.copy()
    edited[40:56, 16:48] = 255 - edited[40:56, 16:48]  # a block of the lower face, inverted
    out = paste(edited).astype(int)
    changed = np.abs(out - photo.astype(int)).max(-1) > 0  # [H, W]
    # Where the block lands in the photo, through the same inverse warp (one crop pixel each
    # side for the bilinear footprint).
    inv = cv2.invertAffineTransform(face.matrix)
    corners = np.array([[15, 39], [49, 39], [15, 57], [49, 57]], dtype=np.float64) - 0.5
    xy = corners @ inv[:, :2].T + inv[:, 2]
    (x0, y0), (x1, y1) = np.floor(xy.min(0)).astype(int), np.ceil(xy.max(0)).astype(int)
    inside = np.zeros_like(changed)
    inside[y0 : y1 + 1, x0 : x1 + 1] = True
    assert changed.any() and not (changed & ~inside).any()
    assert (changed[inside].mean()) > 0.5  # the block's pixels moved


def test_face_from_a_video_and_from_a_box(media, tmp_path):
    """FACE as a video: the first frame with a face or the one asked for; --box around it
    finds the same face; a video without a face names its frames."""
    clip = media["clip"]
    first = load_face(clip, image_size=32)
    assert first.frame_index == 0 and first.crop.shape == (32, 32, 3)
    fifth = load_face(clip, frame_index=5, image_size=32)
    assert fifth.frame_index == 5 and fifth.source.shape == (128, 128, 3)
    # The crop is aligned: the detected points land near the renderer's landmarks.
    ex = render_example(SynthConfig(size=128), 0, 0, 0)
    eye_gap = np.linalg.norm(ex.landmarks[5, 1] - ex.landmarks[5, 0])
    assert np.abs(fifth.points - three_points(ex.landmarks[5])).max() < 0.2 * eye_gap
    # A box about the face (eyes at 0.32 / 0.68 of its width, 0.39 of its height).
    w = eye_gap / 0.36
    (lx, ly), _ = fifth.points[:2]
    boxed = load_face(clip, frame_index=5, box=(lx - 0.32 * w, ly - 0.39 * w, w, w), image_size=32)
    assert np.abs(boxed.points - fifth.points).max() < 0.25 * eye_gap
    blank = write_mp4(tmp_path / "blank.mp4", np.full((4, 64, 64, 3), 90, np.uint8))
    with pytest.raises(DataError, match=r"blank\.mp4: no face found in any of its 4 frames"):
        load_face(blank, image_size=32)
    with pytest.raises(DataError, match=r"no face found in frame 2"):
        load_face(blank, frame_index=2, image_size=32)
