"""`fastdavs-generate`: a talking-face mp4 from one face image or video and driving speech
(audio, or a video of someone speaking).

    fastdavs-generate --checkpoint CKPT --face FACE (--audio AUDIO | --driving-video VIDEO)
                      -o OUT.mp4 [--paste-back] [--engine DIR] [--batch-size N] ...

Data flow (DESIGN.md): FACE ──load_face (dlib face + landmarks, 3-point alignment)──► aligned
crop ──identity──► the generator's cached per-face features; AUDIO ──16 kHz, MFCC──► one window
per 25 fps frame (AudioDriver), or VIDEO ──face tracked, smoothed alignment──► one aligned face
per frame (VideoDriver);
then, a batch at a time, word encoder + generator (`Synthesizer`, eager or engine) ──► frames,
pasted back into the face's picture with `--paste-back` ──► H.264 mp4 with the speech muxed in
(`Mp4Writer`, written to a temporary name and renamed at the end: nothing is left at OUT on
failure).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from fastdavs.cli import Parser, add_dataclass_args, dataclass_from_args, option, run
from fastdavs.data.audio import FPS
from fastdavs.data.video_io import Mp4Writer
from fastdavs.errors import OptionError
from fastdavs.infer.driving import AudioDriver, VideoDriver, output_frames
from fastdavs.infer.face_input import Compositor, load_face
from fastdavs.infer.synthesis import DEFAULT_BATCH, FINETUNE_WINDOWS, Synthesizer
from fastdavs.machine import parse_device

log = logging.getLogger(__name__)

PROG = "fastdavs-generate"


def parse_box(text: str) -> tuple[float, float, float, float]:
    """--box: 'X,Y,W,H' in pixels -> (x, y, w, h)."""
    try:
        x, y, w, h = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected X,Y,W,H in pixels") from None
    return x, y, w, h


@dataclass
class GenerateOptions:
    """Everything `fastdavs-generate` takes; the command's flags and defaults come from here."""

    face: str = option(
        metavar="FACE",
        help="face image (jpg, png, webp...) or video (its first frame with a face, or "
        "--face-frame N)",
    )
    output: str = option(
        short="-o",
        metavar="OUT.mp4",
        help="the mp4 to write (H.264, 25 fps, the speech muxed in)",
    )
    audio: str | None = option(
        None,
        metavar="AUDIO",
        help="speech to say: any file PyAV decodes (wav, mp3, m4a, flac, ogg...), any rate",
    )
    driving_video: str | None = option(
        None,
        metavar="VIDEO",
        help="video of someone speaking: its mouth motion (video word encoder, eager only) and "
        "its sound drive the output (give it or --audio)",
    )
    checkpoint: str | None = option(
        None,
        metavar="CKPT",
        help="checkpoint directory, or a run directory (its latest checkpoint)",
    )
    engine: str | None = option(
        None,
        metavar="DIR",
        help="engine directory from fastdavs-build-engine (audio only; with --checkpoint, it "
        "must have been built from that checkpoint)",
    )
    face_frame: int | None = option(
        None, metavar="N", help="frame of a face video to use (0-based)"
    )
    box: tuple[float, float, float, float] | None = option(
        None,
        parse=parse_box,
        metavar="X,Y,W,H",
        help="face box X,Y,W,H in pixels of FACE, when the detector misses the face or picks "
        "another (default: the most confident frontal face)",
    )
    paste_back: bool = option(
        False,
        help="composite the generated face into FACE's picture instead of writing the aligned "
        "S x S crop (the mouth editor's change alone is added, so the rest of the picture keeps "
        "its resolution; the davs decoder's face is blended in with a soft mask)",
    )
    align_smoothing: float = option(
        1.0,
        metavar="SIGMA",
        help="Gaussian sigma in frames of the driving video's face track (0: none); per-frame "
        "alignment alone makes the face zoom in and out",
    )
    wid_scale: float = option(
        1.0,
        metavar="X",
        help="multiply the word-ID features by this before the generator: above 1 exaggerates "
        "the mouth motion, below 1 damps it (the original used 1.5 for audio and 0.8 for "
        "video); eager only",
    )
    finetune_steps: int = option(
        0,
        metavar="N",
        help="before generating, fine-tune the identity encoder and generator (the mouth "
        "editor alone, with that generator) for this many Adam steps (lr 2e-4) to redraw FACE "
        "from its first 5 speech features: a sharper likeness at the cost of a few training "
        "steps (the original did 5); eager only",
    )
    batch_size: int = option(
        DEFAULT_BATCH, metavar="N", help="frames per model pass (memory grows with it)"
    )
    device: str = option("cpu", help="cpu, cuda or cuda:N (eager only)")
    amp: bool = option(
        False,
        help="reduced-precision autocast: fp16 on CUDA, bf16 on CPUs that run it natively "
        "(elsewhere it warns and stays fp32)",
    )


@dataclass
class GenerateResult:
    """What `generate` wrote and how fast."""

    path: Path
    frames: int
    size: tuple[int, int]  # H, W
    seconds: float  # wall time, start to finish (loading included)
    synthesis_seconds: float  # in the model only (word encoder + generator)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds

    @property
    def synthesis_fps(self) -> float:
        return self.frames / max(self.synthesis_seconds, 1e-9)


def check_options(o: GenerateOptions) -> None:
    """Raise OptionError for options that cannot work together, before any work is done."""
    if (o.audio is None) == (o.driving_video is None):
        raise OptionError("give exactly one of --audio AUDIO and --driving-video VIDEO")
    if o.checkpoint is None and o.engine is None:
        raise OptionError("give the model: --checkpoint CKPT (eager) or --engine DIR")
    if o.batch_size < 1:
        raise OptionError(f"--batch-size {o.batch_size}: must be at least 1")
    if o.finetune_steps < 0:
        raise OptionError(f"--finetune-steps {o.finetune_steps}: must be 0 or more")
    if o.wid_scale <= 0:
        raise OptionError(f"--wid-scale {o.wid_scale}: must be positive (1 = as trained)")
    if o.align_smoothing < 0:
        raise OptionError(f"--align-smoothing {o.align_smoothing}: must be 0 or more")
    if o.engine is not None:
        unsupported = [
            (o.driving_video is not None, "--driving-video (the engine is audio-driven only)"),
            (o.wid_scale != 1.0, "--wid-scale other than 1"),
            (o.finetune_steps > 0, "--finetune-steps (an engine's weights are fixed)"),
            (o.amp, "--amp (an engine's precision is chosen when it is built)"),
            (o.device != "cpu", "--device (the engine's backend decides)"),
        ]
        bad = [name for flag, name in unsupported if flag]
        if bad:
            raise OptionError(f"--engine does not support {', '.join(bad)}; use --checkpoint")
    out = Path(o.output)
    if out.is_dir():
        raise OptionError(f"-o {out}: is a directory; name the mp4 file to write")
    if not out.parent.is_dir():
        raise OptionError(f"-o {out}: the directory {out.parent} does not exist; create it first")
    if not os.access(out.parent, os.W_OK | os.X_OK):
        raise OptionError(f"-o {out}: the directory {out.parent} is not writable; choose another")


def generate(o: GenerateOptions) -> GenerateResult:
    """Write the talking-face mp4 `o.output`; see the module docstring for the steps.

    Raises:
        FastdavsError (DataError, OptionError, CheckpointError, EngineError): a bad file, no
        face, speech too short, options that do not go together. OUT is then left as it was.
    """
    check_options(o)
    t0 = time.perf_counter()
    # The cheap checks of the user's files first, then the model.
    # MFCC where the model runs (the Triton kernel on CUDA); engines take CPU inputs.
    mfcc_device = parse_device(o.device) if o.engine is None else "cpu"
    audio = AudioDriver.from_file(o.audio, mfcc_device) if o.audio is not None else None
    if o.engine is not None:
        synth = Synthesizer.from_engine(o.engine, o.checkpoint, batch_size=o.batch_size)
    else:
        synth = Synthesizer.from_checkpoint(o.checkpoint, o.device, o.amp, o.batch_size)
    s = synth.config.image_size
    face = load_face(o.face, frame_index=o.face_frame, box=o.box, image_size=s)
    driver = audio if audio is not None else VideoDriver(o.driving_video, s, o.align_smoothing)
    if o.finetune_steps and audio is not None:
        synth.finetune(face.crop, mfcc=audio.windows(0, FINETUNE_WINDOWS), steps=o.finetune_steps)
    elif o.finetune_steps:
        synth.finetune(face.crop, video=driver.first(FINETUNE_WINDOWS), steps=o.finetune_steps)
    identity = synth.identity(face.crop)
    edits = synth.config.generator == "mouth_editor"
    paste = Compositor(face, edit=edits) if o.paste_back else None
    size = face.source.shape[:2] if paste else (s, s)
    log.info(
        "%s: %d frames (%.2f s) of %dx%d at %d fps, %s model (%s, %d px)",
        o.output, driver.n_frames, driver.n_frames / FPS, size[1], size[0], FPS,
        synth.backend, synth.config.preset, s,
    )  # fmt: skip
    synth_s = 0.0
    with (
        Mp4Writer(o.output, size, driver.audio, fps=FPS) as writer,
        tqdm(total=driver.n_frames, unit="frame", desc="generate", disable=None) as bar,
    ):
        for chunk in driver.chunks(o.batch_size):
            t = time.perf_counter()
            if audio is not None:
                frames = synth.frames(chunk, identity, o.wid_scale)
            else:
                frames = synth.frames_from_video(chunk, identity, o.wid_scale)
            synth_s += time.perf_counter() - t
            rgb = output_frames(frames)  # [n, S, S, 3]
            if paste is not None:
                rgb = np.stack([paste(f) for f in rgb])  # [n, H, W, 3]
            writer.write(rgb)
            bar.update(len(rgb))
            bar.set_postfix(fps=f"{bar.n / (time.perf_counter() - t0):.1f}")
    return GenerateResult(
        Path(o.output), writer.frames_written, size, time.perf_counter() - t0, synth_s
    )


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog=PROG,
        description="Synthesize a talking face saying the given speech.",
        epilog="example: fastdavs-generate --checkpoint runs/final --face me.jpg "
        "--audio hello.wav --paste-back -o hello.mp4",
    )
    add_dataclass_args(parser, GenerateOptions)
    return parser


def _generate(argv: Sequence[str] | None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    options = dataclass_from_args(GenerateOptions, args)
    result = generate(options)
    h, w = result.size
    print(
        f"wrote {result.path}: {result.frames} frames ({result.frames / FPS:.2f} s), {w}x{h}; "
        f"{result.fps:.1f} frames/s end to end in {result.seconds:.1f} s, "
        f"{result.synthesis_fps:.1f} frames/s in the model"
    )


def main(argv: Sequence[str] | None = None) -> int:
    return run(PROG, _generate, argv)


if __name__ == "__main__":
    sys.exit(main())
