"""Frame synthesis latency: eager fp32 (the reference) against every fast path, in one run.

    python bench/latency.py [--preset small|paper|tiny] [--generator davs|mouth_editor]
        [--checkpoint CKPT] [--calibration-data SHARDS] [--out bench/results]
        [--skip compile,bf16,norewrite] [--no-profile]

What is timed is the per-frame work of talking-face synthesis, the engines' frame graph
(`fastdavs.engines.export.FrameGraph`): MFCC windows [N, 20, 12] + the cached identity tensors
of one face -> frames [N, 3, S, S]. The identity tensors are whatever the generator reads of a
face (`fastdavs.model.face_code.identity_shapes`: pid and skip for the davs decoder, the image
and three skips for the mouth editor); they are computed once per face and not timed.
--generator benchmarks either generator at any preset (default: the preset's; a checkpoint
brings its own).
The inputs are real: a SynthLRW face and its clip's 25 MFCC windows, from a held-out split of
the int8 engines' calibration data (--calibration-data; default: the checkpoint's training data,
or without --checkpoint a small SynthLRW set made for the run at the preset's size).
Paths, all in this process on the same inputs:

    eager fp32        the reference: plain PyTorch, kernel_backend "ref", inference mode
    eager bf16        the same under CPU bf16 autocast (slow where oneDNN lacks native bf16)
    torch.compile     inductor, fullgraph, static shapes (one compile per batch size)
    onnxruntime P     `fastdavs-build-engine --backend onnxruntime --precision P` engines, run
                      through `fastdavs.engines.load(DIR).frames` (P = fp32, int8; fp16 where
                      ONNX Runtime has CUDA: on a CPU it computes fp16 graphs in fp32)
    openvino P        the same with OpenVINO (P = fp32, bf16 where the CPU has it natively, int8)
    ... (no rewrite)  fp32 engines built with --no-rewrite: what the export-time rewrites buy
    tensorrt P        the same with TensorRT, where TensorRT and a GPU are present

For each: per-frame latency at batch 1 (p50, p90, p99 over calls), frames/s at batch 25 (25 /
median call time, [p20, p80]), parity with the reference output at batch 25 (PSNR, max abs
error), achieved GFLOP/s (FLOPs counted by torch.utils.flop_counter on the reference) as a share
of the machine's peak measured at the start and end of the run (`measure_peaks`), in fp32 and in
the path's own arithmetic (bf16 where the CPU has it natively, int8), and the physical limit
that peak sets: peak / GFLOP per frame, frames/s. Engine build and compile times are reported
apart. Without --checkpoint the model is randomly initialised (BatchNorm statistics from a few
train-mode passes, `common.random_model`); the output says so. Writes
latency-<preset>-<generator>.{json,csv,png}.
CPU times are `time.perf_counter` after warm-up; CUDA paths synchronise before reading it.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch
from common import conv_peak_gflops, csv_text, git, matmul_peak_gflops, random_model
from torch.utils.flop_counter import FlopCounterMode

from fastdavs.config import GENERATORS
from fastdavs.engines import BuildConfig, EngineError, build_engine, load
from fastdavs.engines.calibration import heldout_inputs
from fastdavs.engines.export import FrameGraph, checkpoint_dir, reference_model
from fastdavs.engines.tensorrt_engine import import_tensorrt, require_gpu
from fastdavs.errors import FastdavsError
from fastdavs.evaluate.metrics import psnr
from fastdavs.io.atomic import replace_with, write_json, write_text
from fastdavs.io.checkpoint import run_data, save_checkpoint
from fastdavs.machine import cpu_has_native_bf16, machine_info, machine_summary
from fastdavs.model import DavsModel
from fastdavs.model.face_code import IdentityCache, IdentityGraph

BATCH = 25  # one second of video
# The latency targets, reported against, never adjusted. The paper preset's speed-up over eager
# fp32 on the same machine: 5x where the CPU has native bf16 or VNNI, 3x on AVX2 alone.
TARGET_PAPER_FPS, TARGET_PSNR_DB, TARGET_SMALL_MS = 25.0, 35.0, 10.0
TARGET_SPEEDUP = {"bf16/VNNI": 5.0, "AVX2": 3.0}
# The SynthLRW set a run without --checkpoint makes for calibration and inputs (a few seconds).
BENCH_DATA = {"identities": 6, "held_out": 2, "words": 4, "takes": 1, "seed": 7}
# Timing budget per (path, batch): stop after `reps` calls or `budget` seconds (at least 3).
REPS = {1: 100, BATCH: 12}
BUDGET_S = {"small": 8.0, "paper": 40.0}
CSV_FIELDS = [
    "path", "generator", "p50_ms", "p90_ms", "p99_ms", "fps", "fps_p20", "fps_p80", "speedup",
    "psnr_db", "psnr_min_db", "max_abs", "gflops", "arithmetic", "peak_share", "fp32_peak_share",
    "compile_s_b1", f"compile_s_b{BATCH}", "reps_b1", "reps_b25", "note", "error",
]  # fmt: skip


def quantiles(xs: list[float], qs=(0.2, 0.5, 0.8, 0.9, 0.99)) -> dict[float, float]:
    xs = sorted(xs)
    return {q: xs[min(len(xs) - 1, round(q * (len(xs) - 1)))] for q in qs}


def time_calls(fn, reps: int, budget_s: float, sync=lambda: None, min_reps=3) -> list[float]:
    """Seconds per call of `fn()` after one warm-up call (two where the first one is cheap):
    `reps` calls, or fewer (at least `min_reps`) where they would take over `budget_s`."""
    t = time.perf_counter()
    fn()
    sync()
    if time.perf_counter() - t < 1.0:
        fn()
        sync()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < reps and (len(times) < min_reps or time.perf_counter() - start < budget_s):
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return times


def flops_per_frame(graph: FrameGraph, mfcc, ident: tuple[torch.Tensor, ...]) -> float:
    """FLOPs of the frame graph per frame: mfcc [N, 20, 12], ident the identity tensors."""
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        graph(mfcc, *ident)
    return counter.get_total_flops() / len(mfcc)


def eager_paths(model: DavsModel, skip_paths: set[str]) -> dict:
    """name -> (fn_for_batch(b) -> callable(mfcc, *identity tensors), note)."""
    graph = FrameGraph(model).eval()
    paths = {}

    def eager(b):
        return graph

    paths["eager fp32"] = (eager, None)
    if "bf16" not in skip_paths:

        def bf16(b):
            def run(mfcc, *ident):
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    return graph(mfcc, *ident)

            return run

        native = cpu_has_native_bf16()
        paths["eager bf16 autocast"] = (bf16, None if native else "no native bf16 on this CPU")
    if "compile" not in skip_paths:
        compiled = {}

        def compile_for(b):
            if b not in compiled:
                compiled[b] = torch.compile(graph, fullgraph=True, dynamic=False)
            return compiled[b]

        paths["torch.compile"] = (compile_for, "inductor, static shapes")
    return paths


def run_path(name, fn_for_batch, inputs, budget_s, cuda=False) -> dict:
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    row: dict = {"path": name}
    slow = "bf16" in name and not cpu_has_native_bf16()  # emulated bf16: cap its reps
    budget, min_reps = (budget_s / 4, 1) if slow else (budget_s, 3)
    for b, (mfcc, ident) in inputs.items():
        fn = fn_for_batch(b)
        if name == "torch.compile":
            t = time.perf_counter()
            with torch.inference_mode():
                fn(mfcc, *ident)
            row[f"compile_s_b{b}"] = time.perf_counter() - t
        with torch.inference_mode():
            times = time_calls(
                lambda fn=fn, m=mfcc, i=ident: fn(m, *i), REPS[b], budget, sync, min_reps
            )
            out = fn(mfcc, *ident)
        q = quantiles(times)
        if b == 1:
            row.update(
                p50_ms=q[0.5] * 1e3, p90_ms=q[0.9] * 1e3, p99_ms=q[0.99] * 1e3, reps_b1=len(times)
            )
        else:
            row.update(fps=b / q[0.5], fps_p20=b / q[0.8], fps_p80=b / q[0.2], reps_b25=len(times))
            row["out"] = out.float().cpu()
    return row


def engine_fn(engine):
    def for_batch(b):
        def run(mfcc, *ident):
            return engine.frames(mfcc, IdentityCache(*ident))

        return run

    return for_batch


def engine_targets() -> tuple[list[tuple[str, str, bool]], list[dict]]:
    """(backend, precision, rewrite) of every engine to build here; and records of the ones
    left out with the reason."""
    from fastdavs.engines.onnxruntime_engine import providers

    targets = [("onnxruntime", p, True) for p in ("fp32", "int8")]
    skipped = []
    if "CUDAExecutionProvider" in providers():
        targets.append(("onnxruntime", "fp16", True))
    else:
        skipped.append({"engine": "onnxruntime fp16", "status": "left out: no CUDA provider "
                        "(ONNX Runtime computes fp16 graphs in fp32 on a CPU)"})  # fmt: skip
    targets += [("openvino", p, True) for p in ("fp32", "bf16", "int8")]
    targets += [("onnxruntime", "fp32", False), ("openvino", "fp32", False)]
    try:
        import_tensorrt()
        require_gpu()
        targets += [("tensorrt", p, True) for p in ("fp32", "fp16", "int8")]
    except EngineError as e:
        skipped.append({"engine": "tensorrt", "status": f"unavailable: {e}"})
    return targets, skipped


def engine_name(backend: str, precision: str, rewrite: bool) -> str:
    return f"{backend} {precision}" + ("" if rewrite else " (no rewrite)")


def build_engines(
    ckpt: Path, root: Path, data: Path, calibration_frames: int, skip_paths: set[str]
) -> tuple[dict, list[dict]]:
    """name -> loaded engine; and one record per attempted build (time, parity or refusal)."""
    engines = {}
    targets, builds = engine_targets()
    for backend, precision, rewrite in targets:
        name = engine_name(backend, precision, rewrite)
        if not rewrite and "norewrite" in skip_paths:
            continue
        print(f"building {name} ...", flush=True)
        cfg = BuildConfig(
            backend, precision, (1, BATCH, 2 * BATCH), calibration_data=str(data),
            calibration_frames=calibration_frames, rewrite=rewrite,
        )  # fmt: skip
        t = time.perf_counter()
        try:
            out = build_engine(ckpt, root / name.replace(" ", "-").strip("()"), cfg)
        except FastdavsError as e:
            builds.append({"engine": name, "status": f"refused: {e}"})
            continue
        meta = json.loads((out / "config.json").read_text())
        builds.append(
            {
                "engine": name,
                "status": "built",
                "build_s": time.perf_counter() - t,
                "times": meta["times"],
                "parity": meta["parity"],
                "compute": meta["graphs"]["frames"]["compute_dtype"],
                "frames_bytes": meta["artifacts"]["frames"]["size"],
            }
        )
        engines[name] = load(out)
    return engines, builds


def arithmetic(name: str) -> str:
    """The arithmetic a path's convolutions run in, which names the peak it is held to."""
    if "int8" in name:
        return "int8"
    if "bf16" in name and cpu_has_native_bf16():
        return "bf16"
    return "fp32"


def measure_peaks() -> dict[str, float]:
    """GFLOP/s (GOP/s for int8) in each arithmetic this CPU runs natively: the faster of a
    matmul and a 3x3 convolution (`common.conv_peak_gflops`) for fp32 and bf16, torch._int_mm
    for int8."""
    peaks = {"fp32": max(matmul_peak_gflops(), conv_peak_gflops(torch.float32))}
    peaks["int8"] = matmul_peak_gflops(dtype=torch.int8)
    if cpu_has_native_bf16():
        bf16 = (matmul_peak_gflops(dtype=torch.bfloat16), conv_peak_gflops(torch.bfloat16))
        peaks["bf16"] = max(bf16)
    return peaks


def bench_data(root: Path, image_size: int) -> Path:
    """A small SynthLRW set prepared at `image_size` (val and test hold one identity each)."""
    from fastdavs.data.prepare import prepare
    from fastdavs.data.synth import SynthConfig, generate

    synth = SynthConfig(size=256 if image_size > 128 else 128, **BENCH_DATA)
    threads = torch.get_num_threads()  # prepare's in-process worker sets one thread
    generate(synth, root / "lrw", 1)
    prepare(root / "lrw", root / "shards", image_size=image_size, workers=1)
    torch.set_num_threads(threads)
    return root / "shards"


def ort_profile(engine, inputs) -> list[tuple[str, float]]:
    """Share of ONNX Runtime's node time per op type, fp32 frame graph at batch 25."""
    from fastdavs.engines.onnxruntime_engine import OnnxRuntimeSession

    with tempfile.TemporaryDirectory() as tmp:
        session = OnnxRuntimeSession(engine.path / "frames.onnx", profile=f"{tmp}/ort")
        mfcc, ident = inputs
        feeds = {"mfcc": mfcc, **dict(zip(engine.identity_names, ident, strict=True))}
        for _ in range(3):
            session.run(feeds)
        trace = json.loads(Path(session.session.end_profiling()).read_text())
    per_op: dict[str, float] = defaultdict(float)
    for event in trace:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            per_op[event["args"].get("op_name", "?")] += event["dur"]
    total = sum(per_op.values()) or 1.0
    return sorted(((op, us / total) for op, us in per_op.items()), key=lambda x: -x[1])[:8]


def openvino_profile(engine, inputs) -> list[tuple[str, float]]:
    """Share of OpenVINO's node time per (node type, kernel), frame graph at batch 25."""
    from fastdavs.engines.openvino_engine import OpenVinoSession

    session = OpenVinoSession(engine.path / "frames.xml", engine.precision, profile=True)
    mfcc, ident = inputs
    feeds = {"mfcc": mfcc, **dict(zip(engine.identity_names, ident, strict=True))}
    for _ in range(2):
        session.run(feeds)
    per_op: dict[str, float] = defaultdict(float)
    for node in session.request.profiling_info:
        per_op[f"{node.node_type} ({node.exec_type})"] += node.real_time.total_seconds()
    total = sum(per_op.values()) or 1.0
    return sorted(((op, t / total) for op, t in per_op.items()), key=lambda x: -x[1])[:8]


def torch_profile(graph: FrameGraph, inputs) -> list[tuple[str, float]]:
    """Share of eager self CPU time per aten op, batch 25."""
    from torch.profiler import ProfilerActivity, profile

    mfcc, ident = inputs
    with torch.inference_mode():
        graph(mfcc, *ident)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            graph(mfcc, *ident)
    events = [(e.key, e.self_cpu_time_total) for e in prof.key_averages()]
    total = sum(t for _, t in events) or 1.0
    return sorted(((k, t / total) for k, t in events), key=lambda x: -x[1])[:8]


def plot(rows: list[dict], title: str, preset: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if "fps" in r]
    names = [r["path"] for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 0.5 * len(rows) + 2.5))
    ax1.barh(names, [r["fps"] for r in rows], color="tab:blue")
    ax1.set_xlabel(f"frames/s at batch {BATCH} (higher is better)")
    ax2.barh(names, [r["p50_ms"] for r in rows], color="tab:orange")
    ax2.set_xlabel("batch-1 latency p50, ms per frame (lower is better)")
    if preset == "paper":
        ax1.axvline(TARGET_PAPER_FPS, color="k", ls="--", label="target 25 frames/s")
        ax1.legend()
    if preset == "small":
        ax2.axvline(TARGET_SMALL_MS, color="k", ls="--", label="target 10 ms")
        ax2.legend()
    for ax in (ax1, ax2):
        ax.invert_yaxis()
    ax2.set_yticklabels([])
    fig.suptitle(f"fastdavs frame synthesis, {title}", fontsize=10)
    fig.tight_layout()
    replace_with(path, lambda tmp: fig.savefig(tmp, dpi=110))
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", choices=("small", "paper", "tiny"), default="small")
    model_source = parser.add_mutually_exclusive_group()
    model_source.add_argument(
        "--generator", choices=GENERATORS, help="default: the preset's (random initialisation)"
    )
    model_source.add_argument("--checkpoint", metavar="CKPT", help="default: random initialisation")
    parser.add_argument(
        "--calibration-data", metavar="SHARDS",
        help="prepared shards for int8 calibration and the timed face and speech (default: the "
        "checkpoint's training data; without --checkpoint, a small SynthLRW set made here)",
    )  # fmt: skip
    parser.add_argument("--out", default="bench/results", metavar="DIR")
    parser.add_argument(
        "--skip", default="", help="comma-separated paths to leave out: compile, bf16, norewrite"
    )
    parser.add_argument("--no-profile", action="store_true")
    args = parser.parse_args()
    skip_paths = {s for s in args.skip.split(",") if s}
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    machine = machine_info()
    print(f"machine: {machine_summary(machine)}", flush=True)

    with tempfile.TemporaryDirectory(prefix="fastdavs-latency-") as tmp:
        tmp = Path(tmp)
        if args.checkpoint:
            ckpt = checkpoint_dir(args.checkpoint)
            model = reference_model(ckpt)
            note = f"checkpoint {ckpt}"
        else:
            model = random_model(args.preset, args.generator)
            ckpt = save_checkpoint(tmp / "run", "random_init", model)
            note = f"randomly initialised {args.preset} model (no --checkpoint)"
        cfg = model.cfg
        preset, generator = cfg.preset, cfg.generator
        budget = BUDGET_S.get(preset, 8.0)
        print(
            f"model: {note}; {preset} preset, {generator} generator, {cfg.image_size} px",
            flush=True,
        )
        print(f"threads: torch {torch.get_num_threads()}", flush=True)

        s = cfg.image_size
        if args.calibration_data:
            data = Path(args.calibration_data)
        elif args.checkpoint:
            data = run_data(ckpt, "--calibration-data")
        else:
            data = bench_data(tmp / "data", s)
        face, mfcc, clip = heldout_inputs(data, s, BATCH, seed=0)
        print(f"inputs: the face and 25 MFCC windows of {clip} of {data}", flush=True)

        peaks_start = measure_peaks()
        print(f"measured peaks: {_peaks(peaks_start)}", flush=True)

        with torch.inference_mode():
            ident = IdentityGraph(model)(face)  # the identity tensors, batch 1
        inputs = {1: (mfcc[:1], ident), BATCH: (mfcc, ident)}
        flops = flops_per_frame(FrameGraph(model), mfcc, ident)
        print(f"frame graph: {flops / 1e9:.3f} GFLOP per frame", flush=True)

        t = time.perf_counter()
        calibration_frames = 64 if s <= 128 else 16
        engines, builds = build_engines(ckpt, tmp / "engines", data, calibration_frames, skip_paths)
        print(f"engines built in {time.perf_counter() - t:.1f} s", flush=True)

        rows = []
        paths = eager_paths(model, skip_paths)
        todo = [(n, fn, False) for n, (fn, _) in paths.items()]
        todo += [(n, engine_fn(e), e.backend == "tensorrt") for n, e in engines.items()]
        for name, fn, cuda in todo:
            print(f"timing {name} ...", flush=True)
            try:
                row = run_path(name, fn, inputs, budget, cuda)
            except Exception as e:  # a path that cannot run here is a result, not a crash
                rows.append({"path": name, "error": f"{type(e).__name__}: {e}"[:300]})
                print(f"  {name} failed: {rows[-1]['error']}", flush=True)
                continue
            if name in paths and paths[name][1]:
                row["note"] = paths[name][1]
            rows.append(row)

        # Measured again at the end: the higher of the two is the machine's (a busy machine
        # lowers one of them, and a share of peak above 100% would mean the peak was low).
        peaks_end = measure_peaks()
        peaks = {k: max(peaks_start[k], peaks_end[k]) for k in peaks_start}
        print(f"peaks at the end: {_peaks(peaks_end)}", flush=True)
        ref = next(r for r in rows if r["path"] == "eager fp32")["out"]
        for row in rows:
            if "out" not in row:
                continue
            out = row.pop("out")
            per_frame = psnr(out, ref)
            row["psnr_db"] = per_frame.mean().item()
            row["psnr_min_db"] = per_frame.min().item()
            row["max_abs"] = (out - ref).abs().max().item()
            row["gflops"] = flops * row["fps"] / 1e9
            row["arithmetic"] = arithmetic(row["path"])
            row["peak_share"] = row["gflops"] / peaks[row["arithmetic"]]
            row["fp32_peak_share"] = row["gflops"] / peaks["fp32"]
            row["speedup"] = row["fps"] / rows[0]["fps"]

        profile = {}
        if not args.no_profile and "onnxruntime fp32" in engines:
            profile["onnxruntime fp32, op type share of node time"] = ort_profile(
                engines["onnxruntime fp32"], inputs[BATCH]
            )
        if not args.no_profile:
            for name in ("openvino fp32", "openvino bf16", "openvino int8"):
                if name in engines:
                    profile[f"{name}, node type (kernel) share of node time"] = openvino_profile(
                        engines[name], inputs[BATCH]
                    )
            profile["eager fp32, aten op share of self CPU time"] = torch_profile(
                FrameGraph(model), inputs[BATCH]
            )

    # ---- report ---------------------------------------------------------------------------
    ok = [r for r in rows if "fps" in r]
    cpu_ok = [r for r in ok if not r["path"].startswith("tensorrt") and r["psnr_min_db"] >= 35]
    targets = {}
    if preset == "paper":
        best = max(cpu_ok, key=lambda r: r["fps"], default=None)
        targets["paper: best CPU path >= 25 frames/s at batch 25 with PSNR >= 35 dB"] = (
            None
            if best is None
            else {"path": best["path"], "fps": best["fps"], "met": best["fps"] >= TARGET_PAPER_FPS}
        )
        isa = machine["isa"]
        kind = "bf16/VNNI" if machine["native_bf16"] or isa.get("avx512_vnni") else "AVX2"
        goal = TARGET_SPEEDUP[kind]
        targets[f"paper: best CPU path >= {goal:g}x eager fp32 ({kind} CPU), PSNR >= 35 dB"] = (
            None
            if best is None
            else {"path": best["path"], "speedup": best["speedup"], "met": best["speedup"] >= goal}
        )
    if preset == "small":
        best = min(cpu_ok, key=lambda r: r["p50_ms"], default=None)
        targets["small: batch-1 latency <= 10 ms per frame (p50)"] = (
            None
            if best is None
            else {
                "path": best["path"],
                "p50_ms": best["p50_ms"],
                "met": best["p50_ms"] <= TARGET_SMALL_MS,
            }
        )

    import onnxruntime
    import openvino

    env = {
        "threads": torch.get_num_threads(),
        "git": git("rev-parse", "--short", "HEAD"),
        "onnxruntime": onnxruntime.__version__,
        "openvino": openvino.__version__,
    }
    result = {
        "machine": machine,
        "preset": preset,
        "generator": generator,
        "image_size": s,
        "model": note,
        "random_init": not args.checkpoint,
        "inputs": f"{clip} of {data}",
        "env": env,
        "peaks": peaks,
        "peaks_start_end": [peaks_start, peaks_end],
        "gflop_per_frame": flops / 1e9,
        # frames/s the physical limit allows: the measured peak spent on the frame graph alone
        "limit_fps": {k: v / (flops / 1e9) for k, v in peaks.items()},
        "batch": BATCH,
        "rows": rows,
        "builds": builds,
        "targets": targets,
        "profile": profile,
    }
    table = format_table(result)
    print(table)
    stem = out_dir / f"latency-{preset}-{generator}"
    write_json(stem.with_suffix(".json"), _finite(result))
    csv_rows = [{**row, "generator": generator} for row in rows]
    write_text(stem.with_suffix(".csv"), csv_text(csv_rows, CSV_FIELDS, machine_summary(machine)))
    plot(rows, _title(result), preset, stem.with_suffix(".png"))
    print(f"wrote {stem}.json, .csv, .png")
    return 0


def _peaks(peaks: dict[str, float]) -> str:
    units = {"int8": "GOP/s"}
    return ", ".join(f"{k} {v:.1f} {units.get(k, 'GFLOP/s')}" for k, v in peaks.items())


def format_table(r: dict) -> str:
    limits = ", ".join(f"{k} {v:.1f}" for k, v in r["limit_fps"].items())
    lines = [
        f"fastdavs frame synthesis — {_title(r)}",
        f"{machine_summary(r['machine'])}, {r['env']['threads']} threads",
        f"inputs: {r['inputs']}",
        f"peaks {_peaks(r['peaks'])}; frame graph {r['gflop_per_frame']:.3f} GFLOP/frame, "
        f"so at most {limits} frames/s (peak / GFLOP per frame)",
        "",
        f"{'path':<30} {'b1 p50':>8} {'p90':>8} {'p99':>8} {'b25 frames/s [p20, p80]':>26} "
        f"{'x ref':>6} {'PSNR dB':>8} {'min':>7} {'max abs':>9} {'GFLOP/s':>8} "
        f"{'% peak':>12} {'% fp32':>7}",
    ]
    for row in r["rows"]:
        if "error" in row:
            lines.append(f"{row['path']:<30} failed: {row['error']}")
            continue
        fps = f"{row['fps']:.1f} [{row['fps_p20']:.1f}, {row['fps_p80']:.1f}]"
        own = f"{100 * row['peak_share']:.1f}% {row['arithmetic']}"
        lines.append(
            f"{row['path']:<30} {row['p50_ms']:>6.2f}ms {row['p90_ms']:>6.2f}ms "
            f"{row['p99_ms']:>6.2f}ms {fps:>26} {row['speedup']:>5.2f}x "
            f"{_db(row['psnr_db']):>8} {_db(row['psnr_min_db']):>7} {row['max_abs']:>9.2e} "
            f"{row['gflops']:>8.1f} {own:>12} {100 * row['fp32_peak_share']:>6.1f}%"
            + (f"  ({row['note']})" if row.get("note") else "")
        )
    compile_rows = [row for row in r["rows"] if "compile_s_b1" in row]
    for row in compile_rows:
        lines.append(
            f"torch.compile time: {row['compile_s_b1']:.1f} s (batch 1), "
            f"{row[f'compile_s_b{BATCH}']:.1f} s (batch {BATCH})"
        )
    lines.append("")
    lines.append("engine builds (separate from the timings above):")
    for b in r["builds"]:
        if b["status"] == "built":
            p = b["parity"]
            lines.append(
                f"  {b['engine']:<28} {b['build_s']:6.1f} s (export {b['times']['export_s']:.1f}, "
                f"build {b['times']['build_s']:.1f}, parity {b['times']['parity_s']:.1f}); "
                f"build parity {_db(p['psnr_min_db'])} dB min, max abs {p['max_abs']:.2e}; "
                f"{b['compute']}; frame graph {b['frames_bytes'] / 1e6:.1f} MB"
            )
        else:
            lines.append(f"  {b['engine']:<28} {b['status']}")
    lines.append("targets:")
    for name, t in r["targets"].items():
        if t is None:
            lines.append(f"  {name}: no path qualifies")
            continue
        if "fps" in t:
            figure = f"{t['fps']:.1f} frames/s"
        elif "speedup" in t:
            figure = f"{t['speedup']:.2f}x"
        else:
            figure = f"{t['p50_ms']:.2f} ms"
        lines.append(f"  {name}: {'MET' if t['met'] else 'NOT MET'} ({t['path']}: {figure})")
    for name, shares in r["profile"].items():
        lines.append(f"profile, {name}:")
        lines.append("  " + ", ".join(f"{op} {100 * share:.0f}%" for op, share in shares))
    return "\n".join(lines)


def _title(r: dict) -> str:
    return f"{r['preset']} preset ({r['image_size']} px), {r['generator']} generator, {r['model']}"


def _finite(obj):
    """A JSON-safe copy: infinite floats (an exact match's PSNR) become the string "inf"."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return "inf" if obj == float("inf") else obj


def _db(x: float) -> str:
    return "inf" if x == float("inf") else f"{x:.1f}"


if __name__ == "__main__":
    sys.exit(main())
