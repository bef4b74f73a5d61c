"""Streaming demo: a wav file through `fastdavs.stream.FaceStream` in 40 ms chunks, with the
end-to-end latency of every frame.

    python bench/stream.py --checkpoint CKPT | --engine DIR --face FACE [--box X,Y,W,H]
        --audio WAV [--realtime] [--chunk-ms 40] [--threads 1] [--out bench/results]

The audio is decoded to 16 kHz (`read_audio`) and cut into chunks of --chunk-ms. With
--realtime, chunk k is fed when its last sample would have arrived from a live source, at
(k + 1) x chunk after the start by the wall clock; without it, chunks are fed back to back (the
stream's throughput). For every frame it records:

    latency   the time its last needed audio sample arrived (the end of the chunk that holds it:
              its scheduled time with --realtime, when it was fed otherwise) -> the frame ready
    delay     (--realtime) its presentation time in the audio (l / 25 s after the start) ->
              frame ready: the algorithmic look-ahead (135 ms) + waiting for the end of the chunk
              + latency, i.e. how far behind the speech a live picture would run

and prints p50/p90/p99/max of both, the algorithmic look-ahead, frames/s (frames over the time
spent in feed/flush, and over the wall time), and whether it kept up with real time (no chunk
fed more than one chunk late). The last frames of a clip come from `flush` (silence completes
their windows) and are reported apart: their latency counts from the end of the audio. The
generator (either) is the checkpoint's or the engine's; the JSON records which.
Writes stream-<backend>-<model>-t<threads>[-realtime].{json,csv} under --out.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from common import csv_text, git

from fastdavs.data.audio import SAMPLES_PER_FRAME
from fastdavs.data.video_io import read_audio
from fastdavs.infer.face_input import load_face
from fastdavs.infer.generate import parse_box
from fastdavs.infer.synthesis import Synthesizer
from fastdavs.io.atomic import write_json, write_text
from fastdavs.machine import machine_info, machine_summary
from fastdavs.stream import LOOKAHEAD_MS, AudioStream, FaceStream
from fastdavs.stream import samples_needed as needed

SR = 16000


def quantiles(xs: list[float]) -> dict[str, float]:
    if not xs:
        return {}
    xs = sorted(xs)
    at = {q: xs[min(len(xs) - 1, round(q * (len(xs) - 1)))] for q in (0.5, 0.9, 0.99)}
    return {"p50": at[0.5], "p90": at[0.9], "p99": at[0.99], "max": xs[-1]}


def stream_clip(stream, audio: np.ndarray, chunk: int, realtime: bool):
    """Feed `audio` chunk by chunk -> (rows, feed seconds, wall seconds, max lag seconds).

    A row per frame: index, arrival (s since start, the chunk holding its last needed sample),
    ready (s since start), from_flush."""
    n_chunks = -(-len(audio) // chunk)
    arrivals: list[float] = []  # per chunk
    rows, busy, max_lag = [], 0.0, 0.0
    t0 = time.perf_counter()

    def collect(out, from_flush: bool, ready: float) -> None:
        for i in out.indices:
            last = min(needed(i), len(audio)) - 1  # its last sample of the clip
            k = min(last // chunk, n_chunks - 1)
            rows.append((i, arrivals[k], ready, from_flush))

    for k in range(n_chunks):
        due = (k + 1) * chunk / SR
        now = time.perf_counter() - t0
        if realtime:
            if now < due:
                time.sleep(due - now)
            else:
                max_lag = max(max_lag, now - due)
            arrivals.append(due)
        else:
            arrivals.append(now)
        start = time.perf_counter()
        out = stream.feed(audio[k * chunk : (k + 1) * chunk])
        end = time.perf_counter()
        busy += end - start
        collect(out, False, end - t0)
    start = time.perf_counter()
    out = stream.flush()
    end = time.perf_counter()
    busy += end - start
    collect(out, True, end - t0)
    return rows, busy, end - t0, max_lag


def front_end_ms(audio: np.ndarray, chunk: int) -> float:
    """Median ms per chunk of the MFCC front end alone (`AudioStream`), fed back to back."""
    stream, times = AudioStream(), []
    for k in range(0, len(audio), chunk):
        t = time.perf_counter()
        stream.feed(audio[k : k + chunk])
        times.append(time.perf_counter() - t)
    return 1e3 * float(np.median(times))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument("--checkpoint", metavar="CKPT", help="checkpoint or run directory")
    model.add_argument("--engine", metavar="DIR", help="engine from fastdavs-build-engine")
    parser.add_argument("--face", required=True, help="face image or video")
    parser.add_argument("--box", metavar="X,Y,W,H", type=parse_box, help="face box in FACE")
    parser.add_argument("--audio", required=True, help="speech (wav or any PyAV-readable file)")
    parser.add_argument("--realtime", action="store_true", help="pace chunks by the wall clock")
    parser.add_argument("--chunk-ms", type=float, default=40.0)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch and engine (ONNX Runtime, OpenVINO) threads (0: their defaults). One frame "
        "of `small` gains little from more, and a thread team stalls whenever another process "
        "holds a core",
    )
    parser.add_argument("--out", default="bench/results", metavar="DIR")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.engine:
        synth = Synthesizer.from_engine(args.engine, threads=args.threads)
    else:
        synth = Synthesizer.from_checkpoint(args.checkpoint)
    cfg = synth.config
    face = load_face(args.face, box=args.box, image_size=cfg.image_size).crop  # uint8 [S, S, 3]
    identity = synth.identity(face)
    audio = read_audio(args.audio, SR)
    chunk = round(args.chunk_ms * SR / 1000)
    if chunk < 1:
        parser.error(f"--chunk-ms {args.chunk_ms}: less than one sample")

    # Warm-up: first calls allocate and pick kernels; a live source would not wait for them.
    t = time.perf_counter()
    for _ in range(3):
        synth.frames(torch.zeros(1, cfg.mfcc_steps, cfg.mfcc_coeffs), identity)
    warmup_s = time.perf_counter() - t

    stream = FaceStream(synth, identity)
    rows, busy, wall, max_lag = stream_clip(stream, audio, chunk, args.realtime)
    chunk_s = chunk / SR
    live = [r for r in rows if not r[3]]
    latency = [1e3 * (ready - arrival) for _, arrival, ready, _ in live]
    delay = [1e3 * (ready - i * SAMPLES_PER_FRAME / SR) for i, _, ready, _ in live]
    flush_latency = [1e3 * (ready - arrival) for _, arrival, ready, f in rows if f]
    kept_up = args.realtime and max_lag <= chunk_s
    backend = synth.backend
    name = cfg.preset if args.engine is None else f"{cfg.preset}-{synth.engine.precision}"
    machine = machine_info()
    summary = {
        "machine": machine,
        "backend": backend,
        "model": name,
        "generator": cfg.generator,
        "image_size": cfg.image_size,
        "realtime": args.realtime,
        "chunk_ms": 1e3 * chunk_s,
        "audio_s": len(audio) / SR,
        "frames": len(rows),
        "frames_from_flush": len(rows) - len(live),
        "lookahead_ms": LOOKAHEAD_MS,
        "latency_ms": quantiles(latency),
        "delay_ms": quantiles(delay) if args.realtime else None,
        "flush_latency_ms": quantiles(flush_latency),
        "fps_busy": len(rows) / busy,
        "fps_wall": len(rows) / wall,
        "kept_up": kept_up if args.realtime else None,
        "max_lag_ms": 1e3 * max_lag if args.realtime else None,
        "front_end_ms_per_chunk": front_end_ms(audio, chunk),
        "warmup_s": warmup_s,
        "threads": args.threads or "default",
        "torch_threads": torch.get_num_threads(),
        "inputs": {"checkpoint": args.checkpoint, "engine": args.engine, "audio": args.audio},
        "env": {
            "load_avg_1min": os.getloadavg()[0],
            "git": git("rev-parse", "--short", "HEAD"),
        },
    }

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"stream-{backend}-{name}-t{args.threads}"
    stem += "-realtime" if args.realtime else ""
    write_json(out / f"{stem}.json", summary)
    per_frame = [
        {
            "frame": i,
            "time_s": f"{i * SAMPLES_PER_FRAME / SR:.3f}",
            "arrival_s": f"{arrival:.4f}",
            "ready_s": f"{ready:.4f}",
            "latency_ms": f"{1e3 * (ready - arrival):.2f}",
            "from_flush": int(from_flush),
        }
        for i, arrival, ready, from_flush in rows
    ]
    fields = ["frame", "time_s", "arrival_s", "ready_s", "latency_ms", "from_flush"]
    write_text(out / f"{stem}.csv", csv_text(per_frame, fields, machine_summary(machine)))

    def fmt(q: dict) -> str:
        return " ".join(f"{k} {v:.1f}" for k, v in q.items()) + " ms"

    mode = "real time (wall-clock paced)" if args.realtime else "back to back"
    print(f"machine: {machine_summary(machine)}")
    print(f"{backend} {name} ({cfg.image_size} px, {cfg.generator} generator), ", end="")
    print(f"{len(audio) / SR:.1f} s of audio in ", end="")
    print(f"{1e3 * chunk_s:.0f} ms chunks, {mode}")
    print(f"algorithmic look-ahead: {LOOKAHEAD_MS:.0f} ms after a frame's start ", end="")
    print(f"({LOOKAHEAD_MS - 40:.0f} ms after the end of its own 40 ms of audio)")
    print(f"end-to-end latency (last sample in -> frame out), {len(live)} frames: ", end="")
    print(fmt(summary["latency_ms"]))
    if args.realtime:
        print(f"delay behind the speech (frame time -> frame out): {fmt(summary['delay_ms'])}")
    if flush_latency:
        print(f"{len(flush_latency)} frames from flush: {fmt(summary['flush_latency_ms'])}")
    print(f"frames/s: {summary['fps_busy']:.1f} (time in feed/flush), ", end="")
    print(f"{summary['fps_wall']:.1f} (wall); MFCC front end ", end="")
    print(f"{summary['front_end_ms_per_chunk']:.2f} ms per chunk; warm-up {warmup_s:.2f} s")
    if args.realtime:
        verdict = "yes" if kept_up else "NO"
        print(f"kept up with real time: {verdict} (max lag {1e3 * max_lag:.1f} ms)")
    print(f"wrote {out / stem}.json and .csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
