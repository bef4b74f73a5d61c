"""The machine description (`fastdavs.machine`) and the native-bf16 switch behind `--amp` on CPU.

`FASTDAVS_NATIVE_BF16=1` / `=0` forces `cpu_has_native_bf16()`, so the suite runs either branch on
any CPU: `FASTDAVS_NATIVE_BF16=1 make test`, `FASTDAVS_NATIVE_BF16=0 make test` (README).
"""

import os
from pathlib import Path

import pytest
import torch

from fastdavs.config import DavsConfig
from fastdavs.data.dataset import example_batch
from fastdavs.errors import FastdavsError
from fastdavs.machine import (
    FORCE_BF16_ENV,
    ISA_FLAGS,
    cpu_has_native_bf16,
    machine_info,
    machine_summary,
)
from fastdavs.model import DavsModel
from fastdavs.train.step import TrainStep

BF16_EPS = 2.0**-8  # bfloat16's relative spacing (8 significand bits)


def test_the_environment_forces_the_native_bf16_answer(monkeypatch):
    monkeypatch.setenv(FORCE_BF16_ENV, "1")
    assert cpu_has_native_bf16() is True
    monkeypatch.setenv(FORCE_BF16_ENV, "0")
    assert cpu_has_native_bf16() is False
    assert machine_info()["native_bf16_forced"] == "0"
    assert f"forced by {FORCE_BF16_ENV}" in machine_summary()
    monkeypatch.setenv(FORCE_BF16_ENV, "yes")
    with pytest.raises(FastdavsError, match=f"{FORCE_BF16_ENV}='yes': set it to 1"):
        cpu_has_native_bf16()
    monkeypatch.delenv(FORCE_BF16_ENV)
    detected = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert cpu_has_native_bf16() == bool(torch.backends.mkldnn.is_available() and detected)


def test_machine_info_names_the_cpu_and_what_changes_our_paths(monkeypatch):
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    info = machine_info()
    assert info["cpu"] and info["cores"] == os.cpu_count()
    assert set(info["isa"]) == set(ISA_FLAGS) and all(
        isinstance(v, bool) for v in info["isa"].values()
    )
    assert info["onednn_max_cpu_isa"] == "AVX2"
    assert info["versions"]["torch"] == torch.__version__
    assert info["versions"]["onednn"].count(".") == 2  # e.g. "3.12.0"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():  # Linux: the flags are read from it
        flags = cpuinfo.read_text()
        assert info["isa"]["avx2"] == (" avx2" in flags)
        assert info["isa"]["avx512_bf16"] == (" avx512_bf16" in flags)
    assert info["cpu"] in machine_summary(info) and "oneDNN ISA <= AVX2" in machine_summary(info)


@pytest.mark.parametrize("native", [True, False], ids=["native-bf16", "no-native-bf16"])
def test_amp_step_follows_the_cpu_kind(monkeypatch, native):
    """`--amp` on CPU: bf16 autocast where bf16 is native, float32 elsewhere; either way one `wid`
    step from identical weights gives the fp32 step's losses, exactly without bf16 and within
    bf16 rounding with it. The bound: each loss is a float32 reduction of bf16 activations whose
    relative error grows by about one bf16 rounding (2^-8) per layer in the chain; the word-ID path
    has about 16 (encoder, head, classifier), and 16 * 2^-8 = 1/16 relative."""
    monkeypatch.setenv(FORCE_BF16_ENV, "1" if native else "0")
    torch.manual_seed(0)
    cfg = DavsConfig.from_preset("tiny")
    batch = example_batch(cfg, 4)
    losses = {}
    for amp in (False, True):
        torch.manual_seed(0)
        model = DavsModel(cfg).set_kernel_backend("ref")
        step = TrainStep(model, cfg, torch.device("cpu"), amp=amp)
        assert step.autocast_dtype() == (torch.bfloat16 if amp and native else torch.float32)
        step.make_optimizers("wid")
        torch.manual_seed(1)
        losses[amp] = {k: v.item() for k, v in step("wid", batch).items()}
    assert losses[True].keys() == losses[False].keys()
    for key, value in losses[False].items():
        if native:
            assert losses[True][key] == pytest.approx(value, rel=16 * BF16_EPS, abs=1e-3), key
        else:
            assert losses[True][key] == value, key
