"""The machine a run or a measurement happens on: what changes fastdavs's code paths and figures.

Our CPUs are not all alike: some are AVX2-only (bf16 is emulated there, about 10x slower than
fp32), some have AVX-512 with native bf16 and VNNI (there `--amp` really trains in bf16). Every
`run.json`, engine `config.json` and benchmark result records `machine_info()`, so a figure always
names the CPU it came from.

`cpu_has_native_bf16()` is the one switch between those paths. `FASTDAVS_NATIVE_BF16=1` or `=0`
forces its answer, so that either branch can be tested on any machine (bf16 still computes
correctly without native support, only slowly): `FASTDAVS_NATIVE_BF16=1 make test` and
`FASTDAVS_NATIVE_BF16=0 make test` run the suite as on the other kind of CPU. oneDNN's own kernels
can be narrowed with `ONEDNN_MAX_CPU_ISA` (e.g. `AVX2`), which `machine_info` records too.
"""

from __future__ import annotations

import os
import platform
from functools import cache
from pathlib import Path

import torch

from fastdavs.errors import FastdavsError, OptionError

FORCE_BF16_ENV = "FASTDAVS_NATIVE_BF16"
# CPU flags (as /proc/cpuinfo names them) that change which kernels run: oneDNN's and torch's
# vectorised paths (avx2, avx512f), native bf16 (avx512_bf16, amx_bf16), int8 dot products
# (avx512_vnni, amx_int8).
ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16", "amx_int8")


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN runs bfloat16 natively here (AVX-512 BF16 / AMX); without it, bf16
    convolutions fall back to a slow reference path (measured 10-13x slower steps on AVX2).
    `FASTDAVS_NATIVE_BF16=1` / `=0` forces the answer (see the module docstring).

    Raises:
        FastdavsError: FASTDAVS_NATIVE_BF16 is set to something other than 0 or 1.
    """
    forced = os.environ.get(FORCE_BF16_ENV)
    if forced is not None and forced != "":
        if forced not in ("0", "1"):
            raise FastdavsError(
                f"{FORCE_BF16_ENV}={forced!r}: set it to 1 (treat this CPU as having native "
                "bf16) or 0 (as not having it), or unset it to detect"
            )
        return forced == "1"
    return bool(
        torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    )


@cache
def _cpuinfo() -> tuple[str, frozenset[str]]:
    """(CPU model name, flags) of the first CPU in /proc/cpuinfo; the platform's name and no
    flags where there is no such file."""
    fields: dict[str, str] = {}
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    name = fields.get("model name") or platform.processor() or platform.machine()
    # Virtual machines often name only "AMD EPYC"; family and model tell the generation (AMD
    # family 25 is Zen 3 up to model 15 and Zen 4 from model 16 on).
    if "cpu family" in fields:
        name += f" (family {fields['cpu family']} model {fields.get('model', '?')})"
    return name, frozenset(fields.get("flags", "").split())


def onednn_version() -> str | None:
    """oneDNN's version as torch was built with it (e.g. "3.12.0"), None without oneDNN."""
    for line in torch.__config__.show().splitlines():
        if "MKL-DNN v" in line or "oneDNN v" in line:
            return line.split(" v", 1)[1].split()[0]
    return None


def machine_info() -> dict:
    """JSON-ready description of this machine: CPU model and cores, the ISA flags that change
    our code paths, whether bf16 is native (and whether that answer was forced), oneDNN's ISA
    limit if one is set, torch's CPU kernels, and the torch / oneDNN / Python versions."""
    name, flags = _cpuinfo()
    forced = os.environ.get(FORCE_BF16_ENV) or None
    return {
        "cpu": name,
        "arch": platform.machine(),
        "cores": os.cpu_count(),
        "isa": {flag: flag in flags for flag in ISA_FLAGS},
        "native_bf16": cpu_has_native_bf16(),
        "native_bf16_forced": forced,
        "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA") or None,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "versions": {
            "torch": torch.__version__,
            "onednn": onednn_version(),
            "python": platform.python_version(),
        },
    }


def machine_summary(info: dict | None = None) -> str:
    """One line naming the machine, for benchmark printouts and CSV columns, e.g.
    "AMD EPYC, 2 cores, avx2 avx512f avx512_bf16 avx512_vnni, bf16 native, torch 2.13.0"."""
    info = info or machine_info()
    isa = " ".join(flag for flag, present in info["isa"].items() if present) or "no AVX2"
    bf16 = "bf16 native" if info["native_bf16"] else "bf16 emulated"
    if info["native_bf16_forced"]:
        bf16 += f" (forced by {FORCE_BF16_ENV})"
    limit = f", oneDNN ISA <= {info['onednn_max_cpu_isa']}" if info["onednn_max_cpu_isa"] else ""
    gpu = f", {info['cuda']}" if info["cuda"] else ""
    return (
        f"{info['cpu']}, {info['cores']} cores, {isa}, {bf16}{limit}{gpu}, "
        f"torch {info['versions']['torch']}"
    )


def parse_device(device: str | torch.device) -> torch.device:
    """`--device` as a torch.device, refusing one this machine does not have (OptionError)."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise OptionError(f"--device {device}: not a device name ({e}); use cpu or cuda") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise OptionError(f"--device {device}: no CUDA GPU is available here; use --device cpu")
    if dev.type not in ("cpu", "cuda"):
        raise OptionError(f"--device {device}: only cpu and cuda are supported")
    return dev
