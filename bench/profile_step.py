"""Cost of the DAVS training step on CPU: forward + backward of every module, per variant.

    python bench/profile_step.py [--preset small] [--generator davs|mouth_editor]
        [--batch-size 16] [--reps 3] [--cases ...]
        [--variants fp32,channels_last,bf16,bf16_cl,threads1,no_mkldnn,width0.5_cl,compile]
        [--compile-cases id_adv_net1,gen_gan] [--force-bf16] [--no-full-step]
        [--no-heap-phase] [--out bench/results]

About 4-5 minutes on 2 idle cores by default (a cold torch.compile cache adds about a minute).
Each case is one module's forward + backward on what one training step of B clips needs
(spec/davs.md §3.4; N = images, windows or sequences through the module):

    id_pretrain   identity encoder + classifier on 4B single frames
    id_identity   `encode_identity` of the B identity frames: pid vector + net2 skip, and with
                  the mouth editor its encoding of the edit box
    id_adv_full   identity encoder on B x adv_frames frames, loss on net1 (as fastdavs.train.stages)
    id_adv_net1   the same frames through block01 + stage1 only: net1 is all the adversary reads
    video         video word encoder on B x seq_len frames
    audio         audio word encoder on B x seq_len MFCC windows
    word_cls      shared word classifier on 2B sequences (audio + video)
    heads         modality D and wid->person adversary on 2B x seq_len vectors, pid->word
                  adversary on the B x adv_frames net1 maps
    gen_seq       generator on B x 2 seq_len frames (audio- and video-driven, every frame)
    gen_gan       generator on B x 2 gan_frames frames (the sequence-GAN run only)
                  (both through `generate`, so either generator; its per-face input is
                  `encode_identity` of B faces, detached)
    dseq          sequence discriminator on 2B frame stacks (the G step's fakes)

and step_pid / step_wid / step_render / step_gen are whole steps of the trainer
(`fastdavs.train.stages`
forward, D side backward + Adam, G side backward + Adam) on a batch shaped like DavsDataset's.

Variants: fp32 (contiguous, all threads, oneDNN on: the reference), channels_last, bf16
(`torch.autocast("cpu", bfloat16)`, what `--amp` does on CPU), bf16_cl, threads1, no_mkldnn
(`torch.backends.mkldnn` off), width0.5_cl (and width0.5: the preset at width 0.5; does
GFLOP/s rise with the channel count?), compile (`torch.compile` of the case's forward, with its
compile time). After them, in a second phase, retain_heap: glibc told never to mmap or trim
(`mallopt`), so that freed activations stay in the process instead of going back to the OS and
being page-faulted in again on every step (`fastdavs.train.step.retain_heap`, which the trainer
uses); it cannot be switched off again, so it runs last. `bench/train_step.py` is the short
answer (reference vs the trainer's fast path); this script is the breakdown behind it.

Repetitions are interleaved (round r of every variant, then round r + 1), so that load from other
processes hits all variants alike. `cpu%` is the process's CPU time over wall time x torch threads,
a rough flag of contention (well under 100 for a multi-threaded variant: the process was
descheduled; threads1 shows about 50 plus spin-waiting). `!` marks a row whose share is under 80 %.
`faults` is the median number of minor page faults per step: memory the allocator had to get
from the OS again (independent of load, unlike the times).
Without native bf16 (`fastdavs.machine.cpu_has_native_bf16`) bf16 runs only on the cases under
1 GFLOP; --force-bf16 runs it everywhere. FLOPs come from
`torch.utils.flop_counter.FlopCounterMode` (forward + backward); %peak is against the fp32 matmul
peak of DESIGN.md (155 GFLOP/s); the matmul peaks measured in this run are printed too. Times are
medians [p20, p80] after one warm-up round (`time.perf_counter`). The generator is the preset's
unless --generator names the other. Writes profile_step.json and profile_step.csv to --out.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import os
import resource
import statistics
import sys
import time
import typing
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from common import csv_text, git, median_p20_p80
from torch.utils.flop_counter import FlopCounterMode

from fastdavs.config import GENERATORS, DavsConfig
from fastdavs.data.dataset import example_batch
from fastdavs.io.atomic import write_json, write_text
from fastdavs.machine import machine_info, machine_summary
from fastdavs.model import DavsModel, EncodedIdentity
from fastdavs.train import stages
from fastdavs.train.step import TrainStep, retain_heap

NOMINAL_PEAK = 155.0  # GFLOP/s, fp32 matmul on the 2-core development machine (DESIGN.md)
SMALL_CASE_GFLOP = 1.0  # below this a case is cheap enough to run in emulated bf16
REFERENCE_ONLY = ("id_adv_full", "gen_seq")  # heavy baselines: fp32 / channels_last only
THREADS = torch.get_num_threads()

Step = Callable[[], torch.Tensor]  # one forward, returning the scalar to backpropagate


class Sample(typing.NamedTuple):
    wall: float  # seconds
    cpu: float  # process CPU seconds, all threads
    faults: int  # minor page faults


def timed_step(step: Callable[[], None]) -> Sample:
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    c, t = time.process_time(), time.perf_counter()
    step()
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    return Sample(wall, cpu, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)


# ---- cases ----------------------------------------------------------------------------------
def _cl(x: torch.Tensor, cl: bool) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if cl else x


def _images(n: int, s: int, cl: bool) -> torch.Tensor:
    return _cl(torch.rand(n, 3, s, s), cl)


def case_id_pretrain(m: DavsModel, b: int, cl: bool) -> Step:
    x = _images(4 * b, m.cfg.image_size, cl)
    labels = torch.randint(m.cfg.num_identities, (4 * b,))

    def step():
        return F.cross_entropy(m.identity_classifier(m.identity_encoder(x).vec).float(), labels)

    return step


def _tensors(ident: EncodedIdentity) -> tuple[torch.Tensor, ...]:
    """Every tensor of an EncodedIdentity (the editor's, where there is one, flattened in)."""
    return (ident.vec, ident.net2, *(ident.edit or ()))


def case_id_identity(m: DavsModel, b: int, cl: bool) -> Step:
    x = _images(b, m.cfg.image_size, cl)

    def step():
        # The editor's EditorIdentity holds the input image itself, which takes no gradient.
        return sum(t.float().mean() for t in _tensors(m.encode_identity(x)) if t.requires_grad)

    return step


def case_id_adv_full(m: DavsModel, b: int, cl: bool) -> Step:
    x = _images(b * m.cfg.adv_frames, m.cfg.image_size, cl)
    return lambda: m.identity_encoder(x).net1.float().mean()


def case_id_adv_net1(m: DavsModel, b: int, cl: bool) -> Step:
    x = _images(b * m.cfg.adv_frames, m.cfg.image_size, cl)
    return lambda: m.identity_encoder.net1(x).float().mean()


def case_video(m: DavsModel, b: int, cl: bool) -> Step:
    x = _images(b * m.cfg.seq_len, m.cfg.image_size, cl)
    return lambda: m.video_encoder(x).float().mean()


def case_audio(m: DavsModel, b: int, cl: bool) -> Step:
    x = torch.randn(b * m.cfg.seq_len, m.cfg.mfcc_steps, m.cfg.mfcc_coeffs) * 10
    return lambda: m.audio_encoder(x).float().mean()


def case_word_cls(m: DavsModel, b: int, cl: bool) -> Step:
    wid = torch.randn(2 * b, m.cfg.seq_len, m.cfg.word_dim, requires_grad=True)
    return lambda: m.word_classifier(wid).float().mean()


def case_heads(m: DavsModel, b: int, cl: bool) -> Step:
    c = m.cfg
    wid = torch.randn(2 * b * c.seq_len, c.word_dim, requires_grad=True)
    s = c.image_size // 4
    net1 = _cl(torch.randn(b * c.adv_frames, c.ch(64), s, s), cl)
    net1 = net1.view(b, c.adv_frames, *net1.shape[1:]).requires_grad_()

    def step():
        out = m.modality_discriminator(wid).float().mean()
        out = out + m.wid_person_adversary(wid).float().mean()
        return out + m.pid_word_adversary(net1).float().mean()

    return step


def _identity_leaves(m: DavsModel, b: int, cl: bool) -> EncodedIdentity:
    """`encode_identity` of b random faces as leaf tensors that take gradients, as the encoders'
    outputs do in a training step, so that a generator case times the generator alone. The
    editor's copy of the input image stays without gradient, as in training."""
    with torch.no_grad():
        ident = m.encode_identity(_images(b, m.cfg.image_size, cl))

    def leaf(t: torch.Tensor) -> torch.Tensor:
        return t.detach().requires_grad_()

    edit = ident.edit
    if edit is not None:
        edit = edit._replace(**{k: leaf(v) for k, v in edit._asdict().items() if k != "image"})
    return EncodedIdentity(leaf(ident.vec), leaf(ident.net2), edit)


def _generator_case(m: DavsModel, b: int, cl: bool, frames: int) -> Step:
    ident = _identity_leaves(m, b, cl)
    wid = torch.randn(b, frames, m.cfg.word_dim, requires_grad=True)
    return lambda: m.generate(ident, wid).float().mean()


def case_gen_seq(m: DavsModel, b: int, cl: bool) -> Step:
    return _generator_case(m, b, cl, 2 * m.cfg.seq_len)


def case_gen_gan(m: DavsModel, b: int, cl: bool) -> Step:
    return _generator_case(m, b, cl, 2 * m.cfg.gan_frames)


def case_dseq(m: DavsModel, b: int, cl: bool) -> Step:
    c = m.cfg
    g, s = c.gan_frames, c.image_size
    frames = torch.rand(2 * b, g, 3, s, s, requires_grad=True)
    mfcc = torch.randn(2 * b, g, c.mfcc_steps, c.mfcc_coeffs) * 10

    def step():
        patch, sync = m.sequence_discriminator(frames, mfcc)
        return patch.float().mean() + sync.float().mean()

    return step


CASES: dict[str, Callable[[DavsModel, int, bool], Step]] = {
    "id_pretrain": case_id_pretrain,
    "id_identity": case_id_identity,
    "id_adv_full": case_id_adv_full,
    "id_adv_net1": case_id_adv_net1,
    "video": case_video,
    "audio": case_audio,
    "word_cls": case_word_cls,
    "heads": case_heads,
    "gen_seq": case_gen_seq,
    "gen_gan": case_gen_gan,
    "dseq": case_dseq,
}


def case_items(cfg: DavsConfig, b: int) -> dict[str, int]:
    """N, the images / windows / sequences through each case's module."""
    t, a, g = cfg.seq_len, cfg.adv_frames, cfg.gan_frames
    return {
        "id_pretrain": 4 * b,
        "id_identity": b,
        "id_adv_full": a * b,
        "id_adv_net1": a * b,
        "video": t * b,
        "audio": t * b,
        "word_cls": 2 * b,
        "heads": 2 * t * b,
        "gen_seq": 2 * t * b,
        "gen_gan": 2 * g * b,
        "dseq": 2 * b,
    }


# ---- variants -------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Variant:
    channels_last: bool = False
    bf16: bool = False
    threads: int | None = None  # None: torch's default
    mkldnn: bool = True
    width: float | None = None  # None: the preset's
    compile: bool = False
    retain_heap: bool = False  # second phase only


VARIANTS = {
    "fp32": Variant(),
    "channels_last": Variant(channels_last=True),
    "bf16": Variant(bf16=True),
    "bf16_cl": Variant(bf16=True, channels_last=True),
    "threads1": Variant(threads=1),
    "no_mkldnn": Variant(mkldnn=False),
    "width0.5": Variant(width=0.5),
    "width0.5_cl": Variant(width=0.5, channels_last=True),
    "compile": Variant(compile=True),
}
DEFAULT_VARIANTS = ",".join(v for v in VARIANTS if v != "width0.5")
HEAP_VARIANTS = {
    "fp32+retain_heap": Variant(retain_heap=True),
    "channels_last+retain_heap": Variant(channels_last=True, retain_heap=True),
}


class Runner:
    """One (case, variant): its model, inputs and step, timed by `run`."""

    def __init__(self, case: str, variant: Variant, model: DavsModel, batch: int):
        self.variant = variant
        self.model = model
        self.forward = CASES[case](model, batch, variant.channels_last)
        self.compile_s: float | None = None

    @contextlib.contextmanager
    def _threads_and_mkldnn(self):
        v = self.variant
        if v.threads:
            torch.set_num_threads(v.threads)
        try:
            with torch.backends.mkldnn.flags(enabled=v.mkldnn):
                yield
        finally:
            torch.set_num_threads(THREADS)

    def step(self) -> None:
        self.model.zero_grad(set_to_none=True)
        with self._threads_and_mkldnn():
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.variant.bf16):
                loss = self.forward()
            loss.backward()

    def compile(self) -> None:
        """Compile the forward (AOTAutograd compiles the backward with it) on the first step."""
        self.forward = torch.compile(self.forward)
        t = time.perf_counter()
        self.step()
        self.compile_s = time.perf_counter() - t

    def run(self) -> Sample:
        return timed_step(self.step)


def count_flops(runner: Runner | StageStep) -> int:
    with FlopCounterMode(display=False) as counter:
        runner.step()
    return counter.get_total_flops()


# ---- whole stage steps ----------------------------------------------------------------------
class StageStep:
    """One training step of a stage as `fastdavs.train.loop` runs it
    (`fastdavs.train.step.TrainStep`,
    fp32) on `example_batch`; data loading, logging and checkpoints are left out."""

    def __init__(self, stage: str, variant: Variant, cfg: DavsConfig, b: int):
        torch.manual_seed(0)
        self.stage, self.variant = stage, variant
        model = DavsModel(cfg).train()
        if variant.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.batch = example_batch(cfg, b)
        self.train_step = TrainStep(model, cfg, torch.device("cpu"), amp=False)
        self.train_step.make_optimizers(stage)

    def step(self) -> None:
        amp = torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.variant.bf16)
        with amp:
            self.train_step(self.stage, self.batch)

    def run(self) -> Sample:
        return timed_step(self.step)


# ---- calibration ----------------------------------------------------------------------------
def matmul_gflops(dtype: torch.dtype, n: int, reps: int = 3) -> float:
    """Best of `reps` n x n matmuls, GFLOP/s."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(reps))
    return 2 * n**3 / best / 1e9


def _timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _contended(samples: list[Sample], threads: int) -> bool:
    """True when the median CPU share says the process did not get its `threads` cores."""
    share = statistics.median(s.cpu / (s.wall * threads) for s in samples)
    return threads > 1 and share < 0.8


# ---- main -----------------------------------------------------------------------------------
def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="small")
    parser.add_argument("--generator", choices=GENERATORS, help="default: the preset's")
    parser.add_argument("--batch-size", type=int, default=16, help="clips per step (B)")
    parser.add_argument("--reps", type=int, default=3, help="timed rounds after 1 warm-up")
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--variants", default=DEFAULT_VARIANTS)
    parser.add_argument(
        "--compile-cases",
        default="id_adv_net1,gen_gan",
        help="cases for the compile variant ('all' for every case; a cold compile of one "
        "module takes about 0.5-1.5 min on 2 cores, a warm-cache one about 5 s)",
    )
    parser.add_argument("--no-full-step", action="store_true", help="skip the whole-step timing")
    parser.add_argument("--no-heap-phase", action="store_true", help="skip retain_heap")
    parser.add_argument("--force-bf16", action="store_true", help="bf16 on every case")
    parser.add_argument("--out", default="bench/results")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message=".*TF32 acceleration on top of oneDNN.*")

    start = time.perf_counter()
    overrides = {"generator": args.generator} if args.generator else {}
    cfg = DavsConfig.from_preset(args.preset, **overrides)
    b = args.batch_size
    cases = [c for c in args.cases.split(",") if c]
    variants = [v for v in args.variants.split(",") if v]
    for name in cases:
        if name not in CASES:
            parser.error(f"unknown case {name!r}: choose from {', '.join(CASES)}")
    for name in variants:
        if name not in VARIANTS:
            parser.error(f"unknown variant {name!r}: choose from {', '.join(VARIANTS)}")
    compile_cases = cases if args.compile_cases == "all" else args.compile_cases.split(",")

    peak32 = matmul_gflops(torch.float32, 2048)
    peak16 = matmul_gflops(torch.bfloat16, 512, reps=2)
    machine = machine_info()
    env = {
        "preset": cfg.preset,
        "generator": cfg.generator,
        "batch_size": b,
        "image_size": cfg.image_size,
        "width": cfg.width,
        "threads": THREADS,
        "git": git("rev-parse", "--short", "HEAD"),
        "matmul_fp32_gflops": peak32,
        "matmul_bf16_gflops": peak16,
        "nominal_peak_gflops": NOMINAL_PEAK,
        "loadavg_start": os.getloadavg(),
    }
    print(
        f"{cfg.preset} preset, {cfg.generator} generator, batch {b}, {THREADS} threads, "
        f"git {env['git']}\n"
        f"machine: {machine_summary(machine)}\n"
        f"matmul peak this run: fp32 {peak32:.0f} GFLOP/s, bf16 {peak16:.1f} GFLOP/s; "
        f"load {os.getloadavg()[0]:.2f}",
        flush=True,
    )

    models: dict[tuple[float, bool], DavsModel] = {}

    def model_for(v: Variant) -> DavsModel:
        key = (v.width or cfg.width, v.channels_last)
        if key not in models:
            torch.manual_seed(0)
            m = DavsModel(dataclasses.replace(cfg, width=key[0])).train()
            models[key] = m.to(memory_format=torch.channels_last) if v.channels_last else m
        return models[key]

    # Everything timed is keyed (case, variant); phase 2 runs after retain_heap().
    runners: dict[tuple[str, str], Runner | StageStep] = {}
    phase2: dict[tuple[str, str], Callable[[], Runner | StageStep]] = {}
    flops: dict[tuple[str, str], int] = {}
    skipped: dict[tuple[str, str], str] = {}
    module_flops: dict[tuple[str, float], int] = {}
    for case in cases:
        for vname in variants:
            v = VARIANTS[vname]
            if case in REFERENCE_ONLY and vname not in ("fp32", "channels_last"):
                continue
            if v.compile and case not in compile_cases:
                continue
            r = Runner(case, v, model_for(v), b)
            width = v.width or cfg.width
            if (case, width) not in module_flops:
                module_flops[case, width] = count_flops(r)
            flops[case, vname] = module_flops[case, width]
            emulated_bf16 = v.bf16 and not (machine["native_bf16"] or args.force_bf16)
            if emulated_bf16 and flops[case, vname] / 1e9 > SMALL_CASE_GFLOP:
                skipped[case, vname] = (
                    f"no native bf16 (bf16 matmul {peak16:.1f} vs fp32 {peak32:.0f} "
                    "GFLOP/s): emulated bf16 would take minutes; --force-bf16 runs it"
                )
                continue
            if v.compile:
                try:
                    r.compile()
                except Exception as e:  # noqa: BLE001 - report any compiler failure and go on
                    skipped[case, vname] = f"torch.compile failed: {type(e).__name__}: {e}"[:300]
                    continue
                print(f"compiled {case}: {r.compile_s:.1f} s (first step included)", flush=True)
            runners[case, vname] = r
        if (case, cfg.width) not in module_flops:
            module_flops[case, cfg.width] = count_flops(
                Runner(case, Variant(), model_for(Variant()), b)
            )
        for vname, v in HEAP_VARIANTS.items():
            phase2[case, vname] = functools.partial(Runner, case, v, model_for(v), b)
            flops[case, vname] = module_flops[case, cfg.width]
    if not args.no_full_step:
        for stage in stages.STAGES:
            for vname in ("fp32", "channels_last"):
                key = (f"step_{stage}", vname)
                runners[key] = StageStep(stage, VARIANTS[vname], cfg, b)
                flops[key] = count_flops(runners[key])
            for vname, v in HEAP_VARIANTS.items():
                phase2[f"step_{stage}", vname] = functools.partial(StageStep, stage, v, cfg, b)
                flops[f"step_{stage}", vname] = flops[f"step_{stage}", "fp32"]

    def measure(keys: list[tuple[str, str]]) -> dict[tuple[str, str], list[Sample]]:
        out: dict[tuple[str, str], list[Sample]] = {k: [] for k in keys}
        for rnd in range(args.reps + 1):
            for key in keys:
                sample = runners[key].run()
                if rnd:  # round 0 is the warm-up
                    out[key].append(sample)
            print(f"round {rnd + 1}/{args.reps + 1} done ({time.perf_counter() - start:.0f} s)")
        return out

    samples = measure(list(runners))
    env["loadavg_phase1_end"] = os.getloadavg()
    if phase2 and not args.no_heap_phase:
        if retain_heap():
            env["matmul_fp32_gflops_phase2"] = matmul_gflops(torch.float32, 2048)
            for key, make in phase2.items():
                runners[key] = make()
            samples.update(measure(list(phase2)))
        else:
            print("retain_heap: not glibc, phase 2 skipped")
    env["loadavg_end"] = os.getloadavg()

    # ---- report -----------------------------------------------------------------------------
    items = case_items(cfg, b)
    rows = []
    for key in list(flops):
        case, vname = key
        v = VARIANTS.get(vname) or HEAP_VARIANTS.get(vname) or Variant()
        row = {"case": case, "variant": vname, "n": items.get(case, b)}
        row["width"] = v.width or cfg.width
        if key in skipped:
            rows.append(row | {"skipped": skipped[key]})
            continue
        if key not in samples:
            continue
        ref = samples.get((case, "fp32"))
        ref_ms = statistics.median(s.wall for s in ref) * 1e3 if ref else None
        med, p20, p80 = median_p20_p80([s.wall for s in samples[key]])
        gflop = flops[key] / 1e9
        row.update(
            gflop=gflop,
            ms=med * 1e3,
            p20_ms=p20 * 1e3,
            p80_ms=p80 * 1e3,
            gflops=gflop / med,
            peak_share=gflop / med / NOMINAL_PEAK,
            vs_fp32=ref_ms / (med * 1e3) if ref_ms else None,
            cpu_share=statistics.median(s.cpu / (s.wall * THREADS) for s in samples[key]),
            faults=statistics.median(s.faults for s in samples[key]),
            contended=_contended(samples[key], v.threads or THREADS),
            compile_s=getattr(runners[key], "compile_s", None),
        )
        rows.append(row)
    order = {c: i for i, c in enumerate([*cases, *(f"step_{s}" for s in stages.STAGES)])}
    rows.sort(key=lambda r: order[r["case"]])  # stable: variants stay in run order

    head = (
        f"{'case':12s} {'variant':26s} {'N':>4s} {'GFLOP':>7s} {'ms':>8s} {'[p20':>8s} "
        f"{'p80]':>8s} {'GFLOP/s':>7s} {'%peak':>6s} {'x fp32':>6s} {'cpu%':>5s} {'faults':>7s}"
    )
    print("\n" + head + "\n" + "-" * len(head))
    for r in rows:
        if "skipped" in r:
            print(f"{r['case']:12s} {r['variant']:26s} skipped: {r['skipped']}")
            continue
        ratio = f"{r['vs_fp32']:6.2f}" if r["vs_fp32"] else f"{'':6s}"
        extra = f"  compile {r['compile_s']:.0f} s" if r["compile_s"] else ""
        print(
            f"{r['case']:12s} {r['variant']:26s} {r['n']:4d} {r['gflop']:7.2f} {r['ms']:8.1f} "
            f"{r['p20_ms']:8.1f} {r['p80_ms']:8.1f} {r['gflops']:7.1f} "
            f"{100 * r['peak_share']:5.1f}% {ratio} {100 * r['cpu_share']:4.0f}%"
            f"{'!' if r['contended'] else ' '}{r['faults']:7.0f}{extra}"
        )
    print("x fp32: the fp32 row's median over this row's; above 1 is faster")
    contended = [f"{r['case']}/{r['variant']}" for r in rows if r.get("contended")]
    if contended:
        print(
            f"! {len(contended)} rows ran with the process descheduled (other load on the "
            "machine): their times and ratios are not trustworthy; rerun on an idle machine"
        )

    stage_report = stage_estimates(rows, b)
    for line in stage_report["lines"]:
        print(line)
    print(
        f"\nload average: start {env['loadavg_start'][0]:.2f}, end {env['loadavg_end'][0]:.2f}; "
        f"total {time.perf_counter() - start:.0f} s"
    )

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {"machine": machine, "env": env, "rows": rows, "stages": stage_report["stages"]}
    write_json(out / "profile_step.json", result)
    fields = ["case", "variant", "n", "width", "gflop", "ms", "p20_ms", "p80_ms", "gflops"]
    fields += ["peak_share", "vs_fp32", "cpu_share", "contended", "faults", "compile_s"]
    fields += ["skipped"]
    write_text(out / "profile_step.csv", csv_text(rows, fields, machine_summary(machine)))
    print(f"wrote {out / 'profile_step.json'} and {out / 'profile_step.csv'}")
    return 0


# Stage steps as sums of cases (ms per step of B clips), to set beside the measured step_* rows
# and to price changes. The gen D step is taken as 1.5 dseq (real B + fake 2B stacks) plus the
# heads, on the G step's detached activations, as fastdavs.train.stages does.
_GEN_COMMON = ("id_identity", "video", "audio", "word_cls", "heads", "heads", "dseq", "dseq")
STAGE_SUMS = {
    "wid": ("video", "audio", "word_cls", "heads"),
    "gen as fastdavs.train.stages (gan run only, full adversary pass)": (
        *_GEN_COMMON,
        "dseq/2",
        "id_adv_full",
        "gen_gan",
    ),
    "gen, adversary frames to net1 only": (*_GEN_COMMON, "dseq/2", "id_adv_net1", "gen_gan"),
    "gen, every sequence frame generated": (*_GEN_COMMON, "dseq/2", "id_adv_full", "gen_seq"),
}


def stage_estimates(rows: list[dict], b: int) -> dict:
    ms = {(r["case"], r["variant"]): r["ms"] for r in rows if "ms" in r}
    stages: dict[str, dict[str, float]] = {}
    lines = [f"\nstage step estimates (sum of case medians, batch {b}):"]
    for variant in ("fp32", "channels_last", "fp32+retain_heap", "channels_last+retain_heap"):
        for stage, parts in STAGE_SUMS.items():
            total = 0.0
            for p in parts:
                name, scale = (p[:-2], 0.5) if p.endswith("/2") else (p, 1.0)
                if (name, variant) not in ms:
                    break
                total += scale * ms[name, variant]
            else:
                stages.setdefault(variant, {})[stage] = total
                lines.append(f"  {variant:26s} {stage:56s} {total:6.0f} ms/step")
    return {"stages": stages, "lines": lines}


if __name__ == "__main__":
    sys.exit(main())
