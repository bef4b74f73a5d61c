"""The fused kernels against their references: temporal_conv, mfcc and contrastive_loss.

    python bench/kernels.py [--quick] [--reps 15] [--skip-memory] [--threads N] [--seed S]
        [--out bench/results]

Per op and shape, in one process and one run: `<op>_ref` (eager PyTorch, the definition),
`torch.compile` of it (static shapes, fullgraph; its compile time, the first call's wall time,
is reported apart), the Triton kernel where CUDA exists, and for mfcc the librosa baseline
(`bench/mfcc_librosa.py`, clip by clip). Shapes are the model's: temporal_conv at every conv of the
audio branch B (N = batch x 12 windows; the preset's batch, 8 small and 16 paper) and the tcn word
head (a batch of sequences of 12 frames), presets small and paper, forward in the eval form
(BatchNorm folded: bias, activation, subsampling stride) and forward + backward in the training form
(bare conv); mfcc on 16 and 256 one-second clips; contrastive_loss at (16, small seq_dim), (64,
3072) and (1024, 3072).

Timing: CPU wall time (`time.perf_counter`) after a warm-up call, each sample a loop long
enough to measure, repetitions interleaved across paths (rotating order) so that background
load hits all alike; on CUDA `triton.testing.do_bench` (events). Reported: median [p20, p80],
speed-up over the reference (t_ref / t_path, > 1 is faster), GFLOP/s of the algorithm the
path runs and GB/s of the bytes the fused kernel must move (`bench/kernel_work.py`), each as a
share of the peaks measured at the start of the run (fp32 matmul, large copy), and the parity
error: max |path - float64 reference| over the output and every gradient, on the same fresh
random inputs. A path whose analytic memory need exceeds the budget is skipped with the reason.
Then: the MFCC target (>= 10x the librosa baseline at <= 1e-4 error), the roofline table
(bytes and FLOPs, fused vs unfused, at the paper preset's shapes, on H100 figures), and the
contrastive memory at B = 4096, D = 3072 (subprocesses; the tiled path under the Triton
interpreter, on CPU).

Without a GPU the Triton kernels are NOT timed: they only run under the interpreter
(TRITON_INTERPRET=1), which proves them correct (tests) but measures nothing about speed.

Writes kernels.csv, kernels.json and kernels.png to --out. About 7-8 minutes on the 2-core
development machine (measured with other processes taking half of it; the interpreted memory
probe at B = 4096 is 3-4 minutes of that, torch.compile about one); --quick about 40 s.
--threads 1 gives steadier CPU figures when other processes compete for the cores: a 2-thread
op waits whenever one of its threads is descheduled. The run reports how much CPU other
processes took meanwhile. Compile times include inductor's on-disk cache where earlier runs
filled it (TORCHINDUCTOR_FORCE_DISABLE_CACHES=1 for cold ones).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import contrastive_memory
import torch
import triton
from common import best_seconds, csv_text, git, matmul_peak_gflops, median_p20_p80
from kernel_work import H100_BW, H100_FLOPS, Work, contrastive_work, conv_work, mfcc_work
from mfcc_librosa import mfcc_librosa

from fastdavs.config import DavsConfig
from fastdavs.io.atomic import write_json, write_text
from fastdavs.kernels import (
    contrastive_loss,
    contrastive_loss_ref,
    contrastive_workspace_bytes,
    mfcc,
    mfcc_ref,
    temporal_conv,
    temporal_conv_ref,
)
from fastdavs.kernels.temporal_conv import out_len
from fastdavs.machine import machine_info, machine_summary

ACT_SHORT = {"relu": "relu", "leaky_relu": "lrelu"}
MFCC_TARGET = (10.0, 1e-4)  # speed-up over the librosa baseline, max abs error
NOMINAL = {"matmul_gflops": 155.0, "copy_gbs": 26.0}  # DESIGN.md, the 2-core dev machine
CUDA = torch.cuda.is_available()
NO_GPU = (
    "not timed: no CUDA GPU here. Triton runs on CPU only under the interpreter "
    "(TRITON_INTERPRET=1), which proves correctness, not speed"
)


def quiet_warnings() -> None:
    """Silence what is not news: Dynamo traces through fastdavs.data.audio's cached constant builder
    (fine: they are constants), and inductor's use of a deprecated torch helper."""
    warnings.filterwarnings("ignore", message=".*functools.lru_cache.*")
    warnings.filterwarnings("ignore", category=FutureWarning, module="torch._inductor")


quiet_warnings()


@dataclass
class Case:
    op: str
    name: str  # which layer or batch, and the form
    shape: str
    mode: str  # "fwd" or "fwd+bwd"
    make: Callable[[torch.Generator], list[torch.Tensor]]  # float32 inputs (+ dy in fwd+bwd)
    ref: Callable  # the op's reference on the inputs
    triton: Callable
    work: Work
    n_diff: int = 0  # leading inputs differentiated in fwd+bwd
    extra: dict[str, Callable] = field(default_factory=dict)  # more paths (librosa)
    clips: int = 0  # mfcc: clips per call
    mem: dict[str, float] = field(default_factory=dict)  # analytic peak extra bytes per path


# ---- cases -------------------------------------------------------------------------------------
def _randn(*shape: int) -> Callable[[torch.Generator], torch.Tensor]:
    return lambda g: torch.randn(shape, generator=g)


def conv_cases(presets: list[str], layers: list[str] | None) -> list[Case]:
    """Every temporal conv of the model, in its eval form forward and its training form forward +
    backward: audio branch B on batch x 12 MFCC windows, the tcn head on a batch of sequences of
    12 frames (the preset's batch).

    Eval form: BatchNorm folded into a bias, the activation and the following MaxPool1d(1, s)
    in one launch (`conv_bn_act`: the subsampling becomes the stride, "s3"); audio.conv3 has
    neither, so its eval form is the bare conv. Training form: the bare conv (BatchNorm
    follows, with batch statistics).
    """
    cases = []
    for preset in presets:
        cfg = DavsConfig.from_preset(preset)
        c1, c2, c3, hid = cfg.ch(64), cfg.ch(256), cfg.ch(512), cfg.ch(512)
        n, b, k = cfg.optim.batch_size * cfg.seq_len, cfg.optim.batch_size, cfg.mfcc_coeffs
        # (layer, B, C_in, T, C_out, padding, dilation, eval activation, eval stride)
        convs = [
            ("audio.conv1", n, k, cfg.mfcc_steps, c1, 0, 1, "leaky_relu", 3),
            ("audio.conv2", n, c1, 6, c2, 1, 1, "leaky_relu", 2),
            ("audio.conv3", n, c2, 3, c3, 0, 1, None, 1),
            ("tcn.conv1", b, cfg.word_dim, cfg.seq_len, hid, 1, 1, "relu", 1),
            ("tcn.conv2", b, hid, cfg.seq_len, hid, 2, 2, "relu", 1),
        ]
        for layer, bn, ci, t, co, pad, dil, act, stride in convs:
            if layers and layer not in layers:
                continue
            x, w, bias = _randn(bn, ci, t), _randn(co, ci, 3), _randn(co)
            shape = f"x[{bn},{ci},{t}] w[{co},{ci},3]" + (f" p{pad}" if pad else "")
            shape += f" d{dil}" if dil > 1 else ""
            train = dict(padding=pad, dilation=dil)
            fold = dict(train, stride=stride, activation=act)
            form = "eval" + (f" bias+{ACT_SHORT[act]}" if act else "")
            form += f" s{stride}" if stride > 1 else ""
            cases.append(
                Case(
                    op="temporal_conv",
                    name=f"{preset} {layer} {form}",
                    shape=shape,
                    mode="fwd",
                    make=lambda g, x=x, w=w, bias=bias, act=act: (
                        [x(g), w(g)] + ([bias(g)] if act else [])
                    ),
                    ref=_bind(temporal_conv_ref, fold),
                    triton=_bind(temporal_conv, fold, backend="triton"),
                    work=conv_work(bn, ci, t, co, 3, stride, pad, dil, bool(act), act),
                )
            )
            dy = _randn(bn, co, out_len(t, 3, 1, pad, dil))
            cases.append(
                Case(
                    op="temporal_conv",
                    name=f"{preset} {layer} train",
                    shape=shape,
                    mode="fwd+bwd",
                    make=lambda g, x=x, w=w, dy=dy: [x(g), w(g), dy(g)],
                    ref=_bind(temporal_conv_ref, train),
                    triton=_bind(temporal_conv, train, backend="triton"),
                    work=conv_work(bn, ci, t, co, 3, 1, pad, dil, grad=True),
                    n_diff=2,
                )
            )
    return cases


def _bind(fn: Callable, kwargs: dict, **more) -> Callable:
    def op(*tensors):
        return fn(*tensors, **kwargs, **more)

    return op


def mfcc_cases(batches: list[int]) -> list[Case]:
    """One-second clips (16000 samples at 16 kHz) of white noise at 0.1 full scale."""

    def librosa(audio: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(mfcc_librosa(audio.detach().cpu().numpy()))

    return [
        Case(
            op="mfcc",
            name=f"{b} clips x 1 s",
            shape=f"audio[{b},16000]",
            mode="fwd",
            make=lambda g, b=b: [0.1 * torch.randn(b, 16000, generator=g)],
            ref=mfcc_ref,
            triton=_bind(mfcc, {}, backend="triton"),
            work=mfcc_work(b, 16000),
            extra={"librosa": librosa},
            clips=b,
        )
        for b in batches
    ]


def contrastive_cases(shapes: list[tuple[int, int]]) -> list[Case]:
    cases = []
    for b, d in shapes:
        for mode in ("fwd", "fwd+bwd"):
            grad = mode == "fwd+bwd"
            a, v = _randn(b, d), _randn(b, d)
            dy = [_randn()] if grad else []
            work = contrastive_work(b, d, grad)
            bd, bbd = b * d * 4, b * b * d * 4
            cases.append(
                Case(
                    op="contrastive_loss",
                    name=f"B={b}, D={d}",
                    shape=f"a,v[{b},{d}]",
                    mode=mode,
                    make=lambda g, a=a, v=v, dy=dy: [a(g), v(g), *(f(g) for f in dy)],
                    ref=contrastive_loss_ref,
                    triton=_bind(contrastive_loss, {}, backend="triton"),
                    work=work,
                    n_diff=2 if grad else 0,
                    # torch.compile fuses the forward's [B, B, D] chain into the reduction but
                    # its backward keeps one [B, B, D] tensor (measured in the memory section).
                    mem={
                        "ref": work.ref_peak_bytes,
                        "compile": (bbd if grad else 0) + 4 * bd,
                        "triton": contrastive_workspace_bytes(b, d, torch.float32) + 2 * bd,
                    },
                )  # fmt: skip
            )
    return cases


# ---- measurement -------------------------------------------------------------------------------
def call(case: Case, fn: Callable, inputs: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """One application of `fn` in the case's mode: (output,) or (output, *gradients)."""
    if case.mode == "fwd":
        with torch.no_grad():
            return (fn(*inputs),)
    *args, dy = inputs
    out = fn(*args)
    return (out, *torch.autograd.grad(out, args[: case.n_diff], dy))


def sync() -> None:
    if CUDA:
        torch.cuda.synchronize()


def time_paths(fns: dict[str, Callable], reps: int, min_sample_s: float) -> dict[str, list]:
    """Per path: seconds per call, one sample per repetition. CPU: each sample loops until it
    lasts about `min_sample_s`, paths interleaved in a rotating order. CUDA: do_bench's
    [median, p20, p80] (events, L2 flushed), given as the three samples."""
    if CUDA:
        return {
            name: [ms / 1e3 for ms in triton.testing.do_bench(fn, quantiles=[0.5, 0.2, 0.8])]
            for name, fn in fns.items()
        }
    loops = {}
    for name, fn in fns.items():
        start = time.perf_counter()
        fn()
        loops[name] = max(1, math.ceil(min_sample_s / (time.perf_counter() - start)))
    names = list(fns)
    samples: dict[str, list] = {name: [] for name in names}
    for r in range(reps):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            fn, n = fns[name], loops[name]
            start = time.perf_counter()
            for _ in range(n):
                fn()
            samples[name].append((time.perf_counter() - start) / n)
    return samples


def summary(samples: list[float]) -> tuple[float, float, float]:
    """(median, p20, p80)."""
    if CUDA:
        return samples[0], samples[1], samples[2]
    return median_p20_p80(samples)


def max_error(outs: tuple[torch.Tensor, ...], oracle: tuple[torch.Tensor, ...]) -> float:
    return max(
        (o.detach().double().to(r.device) - r.detach()).abs().max().item()
        for o, r in zip(outs, oracle, strict=True)
    )


def memory_budget() -> float:
    """Bytes a path may need: 40 % of available RAM (CPU), 80 % of free GPU memory."""
    if CUDA:
        return 0.8 * torch.cuda.mem_get_info()[0]
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return 0.4 * int(line.split()[1]) * 1024
    return 4e9


def run_case(case: Case, seed: int, reps: int, min_sample_s: float, max_case_s: float) -> list:
    """Time and check every path of one case; one result row per path."""
    device = "cuda" if CUDA else "cpu"
    torch._dynamo.reset()  # a fresh compile per case (and no recompile limit across cases)
    base = case.make(torch.Generator().manual_seed(seed))

    def inputs(dtype: torch.dtype) -> list[torch.Tensor]:
        return [
            t.to(device, dtype).requires_grad_(case.mode == "fwd+bwd" and i < case.n_diff)
            for i, t in enumerate(base)
        ]

    # the float64 oracle sees exactly the float32 values the paths see
    x32, x64 = inputs(torch.float32), inputs(torch.float64)
    budget = memory_budget()
    rows = {p: _row(case, p) for p in ("ref", "compile", "triton", *case.extra)}
    fns, outs = {}, {}
    paths = {"ref": case.ref, "compile": None, **case.extra, "triton": case.triton}
    for path, fn in paths.items():
        row = rows[path]
        need = case.mem.get(path, case.work.ref_peak_bytes if path != "triton" else 0)
        if path == "triton" and not CUDA:
            row["note"] = NO_GPU
            continue
        if need > budget:
            row["note"] = (
                f"skipped: needs ~{need / 1e9:.1f} GB (analytic), "
                f"memory budget {budget / 1e9:.1f} GB"
            )
            continue
        if path == "compile":
            fn = torch.compile(case.ref, dynamic=False, fullgraph=True)
        start = time.perf_counter()
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", UserWarning)
                quiet_warnings()
                outs[path] = call(case, fn, x32)
                sync()
        except Exception as e:  # a compile failure is a result, not a crash
            if path != "compile":
                raise
            row["note"] = f"compile failed: {type(e).__name__}: {str(e).strip().splitlines()[0]}"
            torch._dynamo.reset()
            continue
        # what the compiler says about this graph (e.g. no code generation for complex ops)
        said = dict.fromkeys(str(w.message).splitlines()[0] for w in caught)
        row["note"] = "; ".join(f"{path}: {m}" for m in said)
        if path == "compile":
            row["compile_s"] = time.perf_counter() - start
        fns[path] = lambda fn=fn: call(case, fn, x32)
    if not fns:
        return list(rows.values())

    # The float64 oracle: the eager reference where its memory fits, else its compiled form
    # (whose forward never materialises the contrastive [B, B, D] tensor).
    oracle, oracle_note = None, ""
    if 2 * case.work.ref_peak_bytes <= budget:
        oracle = call(case, case.ref, x64)
    elif 2 * case.mem.get("compile", math.inf) <= budget:
        oracle = call(case, torch.compile(case.ref, dynamic=False, fullgraph=True), x64)
        oracle_note = "parity vs torch.compile(ref) in float64 (eager float64 does not fit)"
    for path, out in outs.items():
        rows[path]["max_abs_err"] = max_error(out, oracle) if oracle else None
        rows[path]["note"] = "; ".join(n for n in (rows[path]["note"], oracle_note) if n)
    del outs, oracle

    # Fewer repetitions where one call is slow, so every case stays under max_case_s.
    start = time.perf_counter()
    for fn in fns.values():
        fn()
    sync()
    per_round = time.perf_counter() - start
    reps = max(3, min(reps, int(max_case_s / max(per_round, 1e-9))))
    samples = time_paths(fns, reps, min_sample_s)
    ref_median = summary(samples["ref"])[0] if "ref" in samples else None
    for path, s in samples.items():
        median, p20, p80 = summary(s)
        algo = case.work.fused if path == "triton" else case.work.ref
        rows[path].update(
            median_s=median, p20_s=p20, p80_s=p80, reps=len(s) if not CUDA else None,
            speedup=ref_median / median if ref_median else None,
            gflops=algo.flops / median / 1e9, gbs=case.work.fused.bytes / median / 1e9,
            clips_per_s=case.clips / median if case.clips else None,
        )  # fmt: skip
    return list(rows.values())


def _row(case: Case, path: str) -> dict:
    return dict(
        op=case.op, case=case.name, shape=case.shape, mode=case.mode, path=path,
        median_s=None, p20_s=None, p80_s=None, reps=None, speedup=None, compile_s=None,
        gflops=None, pct_peak_flops=None, gbs=None, pct_peak_bw=None, max_abs_err=None,
        clips_per_s=None, note="",
    )  # fmt: skip


def measure_peaks(quick: bool) -> dict:
    """Best-of-5 fp32 matmul GFLOP/s and copy GB/s (read + write) on this device."""
    device = "cuda" if CUDA else "cpu"
    n = 1024 if quick else 2048
    src = torch.randn((16 if quick else 64) * 2**20, device=device)  # 64 or 256 MiB
    dst = torch.empty_like(src)
    return {
        "matmul_gflops": matmul_peak_gflops(n, device),
        "copy_gbs": 2 * src.numel() * 4 / best_seconds(lambda: dst.copy_(src)) / 1e9,
        "matmul_n": n,
        "copy_mib": src.numel() * 4 / 2**20,
    }


# ---- report ------------------------------------------------------------------------------------
def fmt_s(s: float | None) -> str:
    if s is None:
        return "-"
    for unit, scale in (("s", 1), ("ms", 1e-3), ("us", 1e-6)):
        if s >= scale:
            return f"{s / scale:.3g} {unit}"
    return f"{s / 1e-9:.3g} ns"


def fmt_b(n: float) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:.0f} B"


def print_rows(rows: list[dict]) -> None:
    """One line per timed path, grouped by op and case (the case's shape on its second line)."""
    head = (
        f"  {'case':<40} {'mode':<7} {'path':<8} {'median [p20, p80]':<28} {'x ref':>6} "
        f"{'GFLOP/s %pk':>13} {'GB/s %pk':>11} {'max|err|':>8} {'compile':>8}"
    )
    op = case = None
    for r in rows:
        if r["path"] == "triton" and not CUDA:
            continue  # said once, above the table
        if r["op"] != op:
            op = r["op"]
            print(f"{op}\n{head}")
        if (r["case"], r["mode"]) != case:
            case, labels = (r["case"], r["mode"]), [r["case"], r["shape"]]
        label = labels.pop(0) if labels else ""
        if r["median_s"] is None:
            print(f"  {label:<40} {r['mode']:<7} {r['path']:<8} {r['note']}")
            continue
        timing = f"{fmt_s(r['median_s'])} [{fmt_s(r['p20_s'])}, {fmt_s(r['p80_s'])}]"
        err = f"{r['max_abs_err']:.1e}" if r["max_abs_err"] is not None else "-"
        sp = f"{r['speedup']:.2f}" if r["speedup"] else "-"
        print(
            f"  {label:<40} {r['mode']:<7} {r['path']:<8} {timing:<28} {sp:>6} "
            f"{r['gflops']:>7.2f} {r['pct_peak_flops']:>4.0f}% {r['gbs']:>6.2f} "
            f"{r['pct_peak_bw']:>3.0f}% {err:>8} {fmt_s(r['compile_s']):>8}"
        )
        if r["note"]:
            print(f"  {'':<40} {'':<7} {'':<8} ({r['note']})")


def mfcc_summary(rows: list[dict]) -> list[dict]:
    """Clips/s of each MFCC path against the librosa baseline, and the target verdict."""
    lines = []
    target_x, target_err = MFCC_TARGET
    for case in dict.fromkeys(r["case"] for r in rows if r["op"] == "mfcc"):
        by_path = {r["path"]: r for r in rows if r["op"] == "mfcc" and r["case"] == case}
        base = by_path["librosa"]
        print(
            f"  {case}: librosa baseline {base['clips_per_s']:.0f} clips/s "
            f"(vs float64 reference: {base['max_abs_err']:.1e})"
        )
        names = {"ref": "fastdavs.kernels.mfcc auto (= reference on CPU)", "compile": "compiled"}
        names["triton"] = "fastdavs.kernels.mfcc triton"
        for path, label in names.items():
            r = by_path[path]
            if r["clips_per_s"] is None:
                print(f"    {label}: {r['note']}")
                continue
            ratio = r["clips_per_s"] / base["clips_per_s"]
            met = ratio >= target_x and r["max_abs_err"] <= target_err
            verdict = "target MET" if met else "target MISSED"
            print(
                f"    {label}: {r['clips_per_s']:.0f} clips/s = {ratio:.2f}x baseline, "
                f"max abs error {r['max_abs_err']:.1e} -> {verdict} "
                f"(>= {target_x:.0f}x and <= {target_err:.0e})"
            )
            lines.append(
                dict(case=case, path=path, clips_per_s=r["clips_per_s"], x_baseline=ratio,
                     max_abs_err=r["max_abs_err"], target_met=met)
            )  # fmt: skip
    return lines


def analytic_table() -> list[dict]:
    """Fused vs unfused bytes and FLOPs at the paper preset's shapes, H100 roofline times."""
    cases = conv_cases(["paper"], None) + mfcc_cases([16, 256])
    cases += contrastive_cases([(16, 3072), (4096, 3072)])
    table = []
    print(
        f"  {'op / case':<46} {'mode':<7} {'fused B':>8} {'FLOP':>8} {'ref B':>8} {'FLOP':>8} "
        f"{'bytes x':>8} {'t fused':>8} {'t ref':>8} {'roof x':>7} {'fp32: t fused':>13} "
        f"{'roof x':>7}"
    )
    for c in cases:
        f, r = c.work.fused, c.work.ref
        row = dict(
            op=c.op, case=c.name, shape=c.shape, mode=c.mode, fused_bytes=f.bytes,
            fused_flops=f.flops, ref_bytes=r.bytes, ref_flops=r.flops,
            bytes_ratio=r.bytes / f.bytes, roofline_fused_s=f.roofline_s(),
            roofline_ref_s=r.roofline_s(), roofline_speedup=r.roofline_s() / f.roofline_s(),
            fp32_flops_peak=c.work.fp32_peak, roofline_fp32_fused_s=f.roofline_s(c.work.fp32_peak),
            roofline_fp32_speedup=r.roofline_s(c.work.fp32_peak) / f.roofline_s(c.work.fp32_peak),
        )  # fmt: skip
        table.append(row)
        print(
            f"  {c.op + ' ' + c.name:<46.46} {c.mode:<7} {fmt_b(f.bytes):>8} "
            f"{f.flops / 1e9:>7.3g}G {fmt_b(r.bytes):>8} {r.flops / 1e9:>7.3g}G "
            f"{row['bytes_ratio']:>7.2f}x {fmt_s(f.roofline_s()):>8} "
            f"{fmt_s(r.roofline_s()):>8} {row['roofline_speedup']:>6.2f}x "
            f"{fmt_s(row['roofline_fp32_fused_s']):>13} {row['roofline_fp32_speedup']:>6.2f}x"
        )
    return table


def print_memory(mem: dict) -> None:
    d = mem["d"]
    print(
        f"  {'path':<38} {'B':>5} {'fwd extra':>10} {'fwd+bwd':>10} {'B*D*4':>9} {'B*B*4':>9} "
        f"{'B*B*D*4':>9} {'fwd+bwd / B*D*4':>15} {'/ B*B*D*4':>9} {'time':>8}"
    )
    for p in mem["probes"]:
        b = p["b"]
        label = {
            "ref": "reference (eager)",
            "compile": "torch.compile(reference)",
            "tiled": f"tiled Triton, tiles {mem['tile']}"
            + (" (interpreted)" if mem["interpreted"] else ""),
        }[p["path"]]
        sizes = f"{fmt_b(b * d * 4):>9} {fmt_b(b * b * 4):>9} {fmt_b(b * b * d * 4):>9}"
        if "error" in p:
            print(f"  {label:<38} {b:>5} {'not measured: ' + p['error']:<21} {sizes}")
            continue
        fwd, both = p["fwd"]["extra_bytes"], p["fwd+bwd"]["extra_bytes"]
        secs = p["fwd"]["seconds"] + p["fwd+bwd"]["seconds"]
        print(
            f"  {label:<38} {b:>5} {fmt_b(fwd):>10} {fmt_b(both):>10} {sizes} "
            f"{both / (b * d * 4):>15.2f} {both / (b * b * d * 4):>9.4f} {fmt_s(secs):>8}"
        )
    refs = [p for p in mem["probes"] if p["path"] == "ref" and "error" not in p]
    big = mem["b_big"]
    if refs:
        p = refs[-1]
        f_fwd = p["fwd"]["extra_bytes"] / (p["b"] ** 2 * d * 4)
        f_both = p["fwd+bwd"]["extra_bytes"] / (p["b"] ** 2 * d * 4)
        need = {"fwd": f_fwd * big**2 * d * 4, "fwd+bwd": f_both * big**2 * d * 4}
        mem["ref_extrapolated_bytes"] = need
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        fits = "fits" if need["fwd+bwd"] < ram else "does not fit"
        print(
            f"  reference at B={big}, D={d}, extrapolated from B={p['b']} "
            f"({f_fwd:.2f} and {f_both:.2f} x B*B*D*4): {fmt_b(need['fwd'])} forward, "
            f"{fmt_b(need['fwd+bwd'])} with the backward ({fits} in this machine's "
            f"{fmt_b(ram)} of RAM)"
        )
    print(
        f"  tiled path at B={big}: analytic workspace (contrastive_workspace_bytes) "
        f"{fmt_b(mem['analytic_workspace_bytes'])} + gradients 2*B*D*4 = {fmt_b(2 * big * d * 4)}"
        "; B*D*4 = " + fmt_b(big * d * 4) + ", B*B*4 = " + fmt_b(big * big * 4)
    )
    if mem["interpreted"]:
        print(
            "  (the interpreted path's RSS also holds the interpreter's own NumPy tiles and index "
            "arrays, O(tile^2), which a GPU keeps on chip)"
        )


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bars = [r for r in rows if r["path"] != "ref" and r["speedup"]]
    labels = [f"{r['op']} {r['case']} {r['mode']} [{r['path']}]" for r in bars]
    colors = {"compile": "tab:blue", "triton": "tab:green", "librosa": "tab:orange"}
    fig, ax = plt.subplots(figsize=(10, 0.28 * len(bars) + 1.5))
    ax.barh(range(len(bars)), [r["speedup"] for r in bars],
            color=[colors.get(r["path"], "gray") for r in bars])  # fmt: skip
    ax.axvline(1.0, color="black", lw=0.8)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in colors.values()]
    ax.legend(handles, list(colors), loc="lower right", fontsize=8)
    ax.set_title("fastdavs kernels: speed-up over the eager PyTorch reference", fontsize=10)
    ax.set_xscale("log")
    ax.set_yticks(range(len(bars)), labels, fontsize=7)
    ax.invert_yaxis()
    device = torch.cuda.get_device_name() if CUDA else "CPU, Triton not timed (no GPU)"
    ax.set_xlabel(f"speed-up over the eager reference (t_ref / t_path, log scale); {device}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def cpu_seconds() -> tuple[float, float, float]:
    """(busy CPU seconds of the whole machine, of this process and its waited-for children,
    wall seconds): their deltas show how much CPU other processes took during the run."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n")[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    busy = (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
    return busy, sum(os.times()[:4]), time.perf_counter()


def run_meta() -> dict:
    """What this run used beside the machine (`machine_info`): threads, Triton, the commit."""
    return {
        "torch_threads": torch.get_num_threads(),
        "triton": triton.__version__,
        "git": git("rev-parse", "HEAD") + ("-dirty" if git("status", "--porcelain") else ""),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "triton_timed": CUDA,
        "triton_note": "" if CUDA else NO_GPU,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="few reps, small shapes (~40 s)")
    parser.add_argument("--reps", type=int, help="repetitions per path (default 15, quick 3)")
    parser.add_argument("--skip-memory", action="store_true", help="skip the memory probes")
    parser.add_argument("--seed", type=int, help="input seed (default: a fresh one)")
    parser.add_argument(
        "--threads", type=int, help="torch CPU threads (default: torch's, one per core)"
    )
    parser.add_argument("--out", default="bench/results")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    reps = args.reps or (3 if args.quick else 15)
    min_sample_s, max_case_s = (0.005, 5.0) if args.quick else (0.02, 30.0)
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "little")
    machine = machine_info()
    meta = run_meta() | {"quick": args.quick, "reps": reps, "seed": seed, "argv": sys.argv[1:]}
    cpu_start = cpu_seconds()
    print(
        f"{machine_summary(machine)} | {meta['torch_threads']} torch threads | triton "
        f"{meta['triton']} | git {meta['git'][:12]} | seed {seed}"
    )
    if not CUDA:
        print(f"TRITON: {NO_GPU}.")
    peaks = measure_peaks(args.quick)
    print(
        f"measured peaks: fp32 matmul {peaks['matmul_gflops']:.1f} GFLOP/s "
        f"({peaks['matmul_n']}^3), copy {peaks['copy_gbs']:.1f} GB/s read+write "
        f"({peaks['copy_mib']:.0f} MiB)"
        + ("" if CUDA else f"; DESIGN.md's dev machine: {NOMINAL['matmul_gflops']:.0f}, "
           f"{NOMINAL['copy_gbs']:.0f}")
    )  # fmt: skip

    if args.quick:
        cases = conv_cases(["small"], ["audio.conv2", "tcn.conv2"]) + mfcc_cases([16])
        cases += contrastive_cases([(16, 1536)])
    else:
        small_seq = DavsConfig.from_preset("small").seq_dim
        cases = conv_cases(["small", "paper"], None) + mfcc_cases([16, 256])
        cases += contrastive_cases([(16, small_seq), (64, 3072), (1024, 3072)])
    rows = []
    start = time.perf_counter()
    for i, case in enumerate(cases):
        rows += run_case(case, seed + i, reps, min_sample_s, max_case_s)
        print(f"\r  {i + 1}/{len(cases)} cases, {time.perf_counter() - start:.0f} s", end="")
    print()
    for r in rows:
        if r["median_s"] is not None:
            r["pct_peak_flops"] = 100 * r["gflops"] / peaks["matmul_gflops"]
            r["pct_peak_bw"] = 100 * r["gbs"] / peaks["copy_gbs"]
    print(
        "\nTimings (x ref = t_ref / t_path; GFLOP/s of the algorithm the path runs, GB/s of "
        "the bytes the fused kernel moves, % of the measured peaks; max|err| vs float64 "
        "reference over output and gradients)"
    )
    print_rows(rows)

    print("\nMFCC: fastdavs vs the librosa clip-by-clip baseline")
    mfcc_lines = mfcc_summary(rows)

    print(
        "\nAnalytic roofline, paper preset shapes, float32 (bench/kernel_work.py: every op reads"
        " its operands and writes its results once);\n  t = max(bytes / "
        f"{H100_BW / 1e12:.2f} TB/s, FLOPs / {H100_FLOPS / 1e12:.0f} TFLOP/s) on an H100 "
        "(the bf16 dense figure). bytes x = ref / fused bytes, the speed-up bound of a "
        "memory-bound GPU;\n  roof x = t ref / t fused. fp32: the same with the H100's rate at "
        "the kernel's float32 dot precision\n  (temporal_conv TF32 495 TFLOP/s, mfcc and "
        "contrastive IEEE float32 67 TFLOP/s; datasheet, dense)."
    )
    table = analytic_table()
    if not CUDA:
        print("  These are models: the Triton kernels were NOT timed natively (no GPU here).")

    mem = None
    if not args.skip_memory:
        print(
            "\nContrastive loss memory, D = 3072 float32: peak RSS growth over the inputs "
            "(fresh process per path)"
            + ("; the tiled path runs under the Triton interpreter (CPU)" if not CUDA else "")
        )
        mem = contrastive_memory.measure(args.quick, timeout_s=600)
        print_memory(mem)

    all_s, own_s, wall_s = (b - a for a, b in zip(cpu_start, cpu_seconds(), strict=True))
    meta["other_processes_cpu_share"] = (all_s - own_s) / (wall_s * (os.cpu_count() or 1))
    print(
        f"\nrun time {wall_s:.0f} s; other processes used "
        f"{100 * meta['other_processes_cpu_share']:.0f} % of the {os.cpu_count()} CPUs meanwhile"
        + (
            ": they competed with the benchmark, absolute times are inflated (the interleaved "
            "ratios less so)"
            if meta["other_processes_cpu_share"] > 0.1
            else ""
        )
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "kernels.csv", csv_text(rows, list(rows[0]), machine_summary(machine)))
    result = dict(
        machine=machine, meta=meta, peaks=peaks, rows=rows, mfcc=mfcc_lines, analytic=table,
        memory=mem, h100={"bandwidth_Bps": H100_BW, "flops": H100_FLOPS},
    )  # fmt: skip
    write_json(out / "kernels.json", result)
    plot(rows, out / "kernels.png")
    print(f"\nwrote {out / 'kernels.csv'}, {out / 'kernels.json'}, {out / 'kernels.png'}")


if __name__ == "__main__":
    sys.exit(main())
