"""End-to-end `fastdavs-generate` speed: eager PyTorch (the reference) against an ONNX Runtime
engine, for each preset, in one run.

    python bench/generate.py [--presets small,paper] [--seconds 20,8] [--reps 5,2]
        [--batch-size 25] [--generator davs|mouth_editor | --checkpoint CKPT]
        [--out bench/results]

What is timed is `fastdavs.infer.generate.generate`, the command's whole body, for one face photo
(matplotlib's Grace Hopper portrait, the aligned crop written out) and speech of the given
length (SynthLRW words back to back): checkpoint or engine loading, face detection and
alignment, decoding the audio, MFCC, the identity encoder, word encoder + generator in batches,
H.264 + AAC encoding. Reported per path: end-to-end frames/s (frames / wall time, median over
reps [p20, p80]), frames/s in the model alone (word encoder + generator, what the engine
replaces), the ratio to eager, and parity: PSNR of the engine's decoded video against eager's.
Without --checkpoint each preset's model is randomly initialised (BatchNorm statistics from a
few train-mode passes, as bench/latency.py) with the preset's generator, or the one --generator
names; speed does not depend on the weights. Rows record the generator.
Writes generate.json and generate.csv to --out.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import csv_text, git, median_p20_p80, random_model

from fastdavs.config import GENERATORS
from fastdavs.data.synth import SynthConfig, render_example
from fastdavs.data.video_io import read_clip
from fastdavs.engines import BuildConfig, build_engine
from fastdavs.infer.generate import GenerateOptions, generate
from fastdavs.io.atomic import write_json, write_text
from fastdavs.io.checkpoint import load_model, save_checkpoint
from fastdavs.machine import machine_info, machine_summary


def speech(seconds: float, path: Path) -> Path:
    """SynthLRW words of one voice back to back, `seconds` long, as a 16 kHz wav."""
    import soundfile as sf

    cfg = SynthConfig(size=64)
    parts, n, word = [], 0, 0
    while n < seconds * 16000:
        parts.append(render_example(cfg, 0, word % cfg.words, 0).audio)
        n += len(parts[-1])
        word += 1
    sf.write(path, np.concatenate(parts)[: int(seconds * 16000)], 16000)
    return path


def run_path(options: GenerateOptions, reps: int) -> dict:
    walls, model_s, frames = [], [], 0
    for _ in range(reps):
        result = generate(options)
        walls.append(result.seconds)
        model_s.append(result.synthesis_seconds)
        frames = result.frames
    wall, w20, w80 = median_p20_p80(walls)
    synth, _, _ = median_p20_p80(model_s)
    return {
        "frames": frames,
        "fps": frames / wall,
        "fps_p20": frames / w80,
        "fps_p80": frames / w20,
        "model_fps": frames / synth,
        "wall_s": wall,
        "reps": reps,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--presets", default="small,paper")
    parser.add_argument("--seconds", default="20,8", help="speech length per preset, s")
    parser.add_argument("--reps", default="5,2", help="timed runs per path, per preset")
    parser.add_argument("--batch-size", type=int, default=25)
    model_source = parser.add_mutually_exclusive_group()
    model_source.add_argument(
        "--generator", choices=GENERATORS, help="default: each preset's (random weights)"
    )
    model_source.add_argument(
        "--checkpoint", metavar="CKPT", help="one preset only; default: random"
    )
    parser.add_argument("--out", default="bench/results", metavar="DIR")
    args = parser.parse_args()
    presets = args.presets.split(",")
    seconds = [float(x) for x in args.seconds.split(",")]
    reps = [int(x) for x in args.reps.split(",")]
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    import matplotlib.cbook

    photo = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    machine = machine_info()
    print(f"torch threads {torch.get_num_threads()}, {machine_summary(machine)}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="fastdavs-bench-generate-") as tmp:
        tmp = Path(tmp)
        for i, preset in enumerate(presets):
            secs, n_reps = seconds[min(i, len(seconds) - 1)], reps[min(i, len(reps) - 1)]
            if args.checkpoint:
                ckpt, note = Path(args.checkpoint), f"checkpoint {args.checkpoint}"
                generator = load_model(ckpt).cfg.generator
            else:
                model = random_model(preset, args.generator)
                ckpt = save_checkpoint(tmp / preset, "random_init", model)
                note, generator = "random weights", model.cfg.generator
            t = time.perf_counter()
            engine = build_engine(ckpt, tmp / f"{preset}-ort", BuildConfig(batch=(1, 25, 50)))
            build_s = time.perf_counter() - t
            audio = speech(secs, tmp / f"speech-{preset}.wav")
            base = dict(face=str(photo), audio=str(audio), batch_size=args.batch_size)
            paths = {
                "eager fp32": GenerateOptions(
                    output=str(tmp / "eager.mp4"), checkpoint=str(ckpt), **base
                ),
                "onnxruntime fp32": GenerateOptions(
                    output=str(tmp / "ort.mp4"), engine=str(engine), **base
                ),
            }
            generate(paths["eager fp32"])  # warm-up: imports, allocator, caches
            results = {}
            for name, options in paths.items():
                results[name] = run_path(options, n_reps)
            ref = read_clip(tmp / "eager.mp4").frames
            got = read_clip(tmp / "ort.mp4").frames
            for name, r in results.items():
                r.update(preset=preset, generator=generator, path=name, speech_s=secs, note=note)
                r["x_eager"] = r["fps"] / results["eager fp32"]["fps"]
                r["model_x_eager"] = r["model_fps"] / results["eager fp32"]["model_fps"]
                if name != "eager fp32":
                    mse = np.mean((got.astype(np.float64) - ref) ** 2) / 255**2
                    r["psnr_db_vs_eager"] = float(10 * np.log10(1 / max(mse, 1e-20)))
                    r["engine_build_s"] = build_s
                rows.append(r)
            print(
                f"\n{preset}, {generator} generator ({note}), {secs:g} s of speech, "
                f"batch {args.batch_size}"
            )
            print(f"{'path':18} {'frames/s [p20, p80]':>26} {'x eager':>8} {'model fps':>10} "
                  f"{'x eager':>8}")  # fmt: skip
            for name, r in results.items():
                spread = f"{r['fps']:.1f} [{r['fps_p20']:.1f}, {r['fps_p80']:.1f}]"
                print(f"{name:18} {spread:>26} {r['x_eager']:>8.2f} {r['model_fps']:>10.1f} "
                      f"{r['model_x_eager']:>8.2f}")  # fmt: skip
            print(f"engine build {build_s:.1f} s; engine video vs eager video "
                  f"PSNR {rows[-1]['psnr_db_vs_eager']:.1f} dB")  # fmt: skip
    meta = {
        "git": git("rev-parse", "--short", "HEAD"),
        "dirty": bool(git("status", "--porcelain")),
        "threads": torch.get_num_threads(),
        "command": " ".join(sys.argv),
    }
    write_json(out_dir / "generate.json", {"machine": machine, "meta": meta, "rows": rows})
    fields = sorted({k for r in rows for k in r})
    write_text(out_dir / "generate.csv", csv_text(rows, fields, machine_summary(machine)))
    print(f"\nwrote {out_dir / 'generate.json'} and generate.csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
