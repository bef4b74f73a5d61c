"""MFCC where the work runs: `fastdavs-prepare --device cuda` and generation on CUDA compute the
MFCC windows with the fused Triton kernel (`fastdavs.kernels.mfcc`), equal to the CPU
reference within the kernel's float32 tolerance (1e-4 on the cepstra, tests/
test_kernels_mfcc.py; shards store float16, so 1e-2 there). The GPU tests carry the `gpu`
marker; without a GPU, asking for one is a one-line error."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import fastdavs.kernels.mfcc as fused_mfcc
from fastdavs.data.prepare import main as prepare_main
from fastdavs.data.synth import SynthConfig, generate
from fastdavs.infer.driving import AudioDriver

needs_no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error")


@pytest.fixture(scope="module")
def lrw(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("lrw") / "lrw"
    generate(SynthConfig(identities=3, held_out=2, words=2, takes=1, seed=5, size=64), root, 1)
    return root


def _prepare(src: Path, out: Path, *extra: str) -> int:
    return prepare_main([str(src), str(out), "--preset", "tiny", "--workers", "1", *extra])


@pytest.fixture
def kernel_calls(monkeypatch) -> list[torch.device]:
    """The devices of the waveforms the fused kernel is launched on."""
    calls = []
    launch = fused_mfcc.mfcc_triton

    def spy(audio, *args, **kwargs):
        calls.append(audio.device)
        return launch(audio, *args, **kwargs)

    monkeypatch.setattr(fused_mfcc, "mfcc_triton", spy)
    return calls


@needs_no_gpu
def test_cuda_without_a_gpu_is_one_line(lrw, tmp_path, capsys):
    out = tmp_path / "shards"
    assert _prepare(lrw, out, "--device", "cuda") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--device cuda: no CUDA GPU is available here" in err[0]
    assert not out.exists()


@pytest.mark.gpu
def test_prepare_on_cuda_runs_the_kernel_and_matches_cpu(lrw, tmp_path, kernel_calls):
    assert _prepare(lrw, tmp_path / "cpu") == 0
    assert kernel_calls == []
    assert _prepare(lrw, tmp_path / "cuda", "--device", "cuda") == 0
    assert kernel_calls and all(d.type == "cuda" for d in kernel_calls)
    for meta in sorted((tmp_path / "cpu").glob("*/shard_*/meta.json")):
        other = tmp_path / "cuda" / meta.relative_to(tmp_path / "cpu")
        assert json.loads(meta.read_text())["clip_ids"] == json.loads(other.read_text())["clip_ids"]
        frames = [np.load(d.parent / "frames.npy") for d in (meta, other)]
        assert np.array_equal(*frames)
        cpu, cuda = (np.load(d.parent / "mfcc.npy").astype(np.float32) for d in (meta, other))
        np.testing.assert_allclose(cuda, cpu, rtol=0, atol=1e-2)


@pytest.mark.gpu
def test_audio_driver_on_cuda_runs_the_kernel_and_matches_cpu(kernel_calls):
    speech = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
    cpu = AudioDriver(speech).windows(3, 20)
    assert kernel_calls == []
    on_gpu = AudioDriver(speech, device="cuda").windows(3, 20)
    assert on_gpu.device.type == "cuda" and kernel_calls
    torch.testing.assert_close(on_gpu.cpu(), cpu, rtol=0, atol=1e-4)
