"""Engines: ONNX export and ONNX Runtime parity with eager PyTorch (tiny and small presets, both
generators: the davs decoder and the mouth editor), the export-time rewrites one by one, int8
calibration on real shards, OpenVINO parity and reload in every precision this CPU supports
(bf16 skips without native bf16), freed OpenVINO engines leaving the thread a usable signal
stack and a forked loader worker running, `--backend auto`'s choice, the engine directory's
round trip and every refusal (tampered artifact, edited config.json, other checkpoint, missing
backend), the command's errors, the Synthesizer's engine path against its eager one, and the
TensorRT builder's logic against `FakeTensorRT`, a stand-in module (not TensorRT) that records
the calls. Real TensorRT tests are marked `gpu` and skip cleanly without a GPU or without
TensorRT."""

import copy
import ctypes
import gc
import json
import logging
import os
import shutil
import signal
import sys
import types
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from fastdavs.config import DavsConfig
from fastdavs.data.dataset import DavsDataset, make_loader
from fastdavs.data.shards import ShardSet
from fastdavs.engines import (
    BackendUnavailable,
    BuildConfig,
    EngineError,
    IdentityCache,
    ParityError,
    auto,
    build_engine,
    load,
)
from fastdavs.engines import build as cli
from fastdavs.engines import builder as builder_module
from fastdavs.engines.calibration import calibration_feeds, heldout_inputs
from fastdavs.engines.engine_dir import CONFIG, artifact_entry
from fastdavs.engines.export import (
    MFCC_STD,
    FrameGraph,
    export_frames,
    export_identity,
    reference_model,
)
from fastdavs.engines.parity import TOLERANCES
from fastdavs.engines.rewrite import fold_batchnorms, for_export, transposed_as_conv
from fastdavs.engines.tensorrt_engine import (
    TensorRTBuilder,
    import_tensorrt,
    profile_shapes,
    require_gpu,
)
from fastdavs.errors import DataError
from fastdavs.evaluate.metrics import psnr
from fastdavs.infer.synthesis import Synthesizer
from fastdavs.io.checkpoint import save_checkpoint
from fastdavs.model import DavsModel, MouthEditor
from fastdavs.model.face_code import IdentityGraph, identity_shapes

TINY = DavsConfig.from_preset("tiny")  # the mouth editor
BATCH = (1, 4, 8)  # small max batch: calls above it exercise the runtime's chunking
GENERATORS = ["davs", "mouth_editor"]


def _checkpoint(
    root: Path, preset: str = "tiny", seed: int = 1, generator: str | None = None
) -> Path:
    """A checkpoint of a randomly initialised model whose BatchNorm statistics come from a few
    train-mode passes (so activations have realistic scales, not N(0, 1) defaults). A mouth
    editor's zero-initialised output layer is drawn at random, as training leaves it: at 0 the
    frames would be the identity image whatever the graphs computed."""
    torch.manual_seed(seed)
    cfg = DavsConfig.from_preset(preset)
    model = DavsModel(DavsConfig.from_preset(preset, generator=generator or cfg.generator))
    if isinstance(model.generator, MouthEditor):
        torch.nn.init.normal_(model.generator.out.weight, std=0.05)
    s = model.cfg.image_size
    with torch.no_grad():
        for _ in range(2):
            ident = model.encode_identity(torch.rand(4, 3, s, s))
            model.generate(ident, model.encode_audio(MFCC_STD * torch.randn(4, 3, 20, 12)))
    return save_checkpoint(root, "step_000001", model.eval())


def _inputs(precision: str, shards: Path, frames: int, seed: int = 0):
    """A face [1, 3, 32, 32] and mfcc [frames, 20, 12]: random, or for int8 engines (calibrated
    on real data, and held to parity on it) a real clip's that calibration did not read."""
    if precision == "int8":
        return heldout_inputs(shards, TINY.image_size, frames, seed)[:2]
    s = TINY.image_size
    return torch.rand(1, 3, s, s), MFCC_STD * torch.randn(frames, 20, 12)


def _eager(ckpt: Path, images: torch.Tensor, mfcc: torch.Tensor) -> torch.Tensor:
    model = reference_model(ckpt)
    with torch.no_grad():
        return model.generate(model.encode_identity(images), model.encode_audio(mfcc[None]))[0]


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory) -> Path:
    return _checkpoint(tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="module")
def tiny_engine(tiny_ckpt, tmp_path_factory) -> Path:
    return build_engine(
        tiny_ckpt, tmp_path_factory.mktemp("eng") / "tiny", BuildConfig(batch=BATCH)
    )


@pytest.fixture
def engine_copy(tiny_engine, tmp_path) -> Path:
    """A copy of the tiny engine to damage."""
    return Path(shutil.copytree(tiny_engine, tmp_path / "copy"))


@pytest.fixture(scope="module")
def davs_ckpt(tmp_path_factory) -> Path:
    return _checkpoint(tmp_path_factory.mktemp("run"), generator="davs")


@pytest.fixture(params=GENERATORS)
def ckpt_of(request, tiny_ckpt, davs_ckpt) -> Path:
    """The tiny checkpoint of each generator."""
    return {"mouth_editor": tiny_ckpt, "davs": davs_ckpt}[request.param]


# ---- export and ONNX Runtime parity -----------------------------------------------------------
@pytest.mark.parametrize("preset", ["tiny", "small"])
@pytest.mark.parametrize("generator", GENERATORS)
def test_onnxruntime_engine_matches_eager_on_fresh_inputs(preset, generator, tmp_path):
    ckpt = _checkpoint(tmp_path / "run", preset, generator=generator)
    out = build_engine(ckpt, tmp_path / "eng", BuildConfig(batch=BATCH))
    meta = json.loads((out / CONFIG).read_text())
    recorded = meta["parity"]
    assert recorded["max_abs"] < 1e-4 and recorded["psnr_min_db"] >= 80
    assert recorded["identity_max_abs"] < 1e-4
    assert (
        meta["build"]["precision"] == "fp32" and meta["graphs"]["identity"]["precision"] == "fp32"
    )
    cfg = DavsConfig.from_preset(preset, generator=generator)
    shapes = identity_shapes(cfg)
    assert meta["graphs"]["identity"]["outputs"] == {n: ["B", *v] for n, v in shapes.items()}
    assert meta["graphs"]["frames"]["inputs"] == {
        "mfcc": ["N", 20, 12],
        **{n: [1, *v] for n, v in shapes.items()},
    }

    s = cfg.image_size
    images, mfcc = torch.rand(1, 3, s, s), MFCC_STD * torch.randn(11, 20, 12)  # 11 > max batch
    engine = load(out)
    frames = engine.frames(mfcc, engine.identity(images))
    ref = _eager(ckpt, images, mfcc)
    assert frames.shape == (11, 3, s, s) and frames.dtype == torch.float32
    assert ref.std() > 0.01  # the comparison is not between two constants
    assert (ref - ref[:1]).abs().max() > 1e-3  # nor between copies of one frame
    assert (frames - ref).abs().max() < 1e-4
    assert psnr(frames, ref).min() > 80
    if generator == "mouth_editor":  # outside the edit box: the identity image, exactly
        top, bottom, left, right = cfg.edit_box_px
        outside = torch.ones(s, s, dtype=torch.bool)
        outside[top:bottom, left:right] = False
        assert torch.equal(frames[..., outside], images.expand_as(frames)[..., outside])


def test_exported_graphs_have_dynamic_batch_and_opset_17(ckpt_of, tmp_path):
    model = reference_model(ckpt_of)
    ident = onnx.load(export_identity(model, tmp_path / "identity.onnx"))
    frames = onnx.load(export_frames(model, tmp_path / "frames.onnx"))
    onnx.checker.check_model(frames)
    assert {o.version for o in frames.opset_import if o.domain in ("", "ai.onnx")} == {17}

    def dims(tensors, name):
        (t,) = [i for i in tensors if i.name == name]
        return [d.dim_param or d.dim_value for d in t.type.tensor_type.shape.dim]

    assert dims(ident.graph.input, "images") == ["B", 3, 32, 32]
    assert dims(frames.graph.input, "mfcc") == ["N", 20, 12]
    shapes = identity_shapes(model.cfg)
    if model.cfg.generator == "davs":
        assert shapes == {"pid": (TINY.pid_dim,), "skip": (TINY.ch(160), 4, 4)}
    else:  # the image and the editor's encoding of its 16 x 24 edit box at 1, 1/2, 1/4
        assert shapes == {
            "image": (3, 32, 32),
            "skip1": (TINY.ch(64), 16, 24),
            "skip2": (TINY.ch(128), 8, 12),
            "skip3": (TINY.ch(256), 4, 6),
        }
    assert [o.name for o in ident.graph.output] == list(shapes)
    assert [i.name for i in frames.graph.input] == ["mfcc", *shapes]
    for name, shape in shapes.items():
        assert dims(ident.graph.output, name) == ["B", *shape]
        assert dims(frames.graph.input, name) == [1, *shape]


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_reduced_precision_keeps_parity_and_records_it(precision, ckpt_of, shards, tmp_path):
    cfg = BuildConfig(precision=precision, calibration_data=str(shards))
    out = build_engine(ckpt_of, tmp_path / precision, cfg)
    meta = json.loads((out / CONFIG).read_text())
    graph = onnx.load(out / "frames.onnx")
    ops = {n.op_type for n in graph.graph.node}
    if precision == "int8":  # ONNX Runtime fused the QDQ pairs into integer kernels
        assert ops & {"QLinearConv", "ConvInteger", "QuantizeLinear", "DequantizeLinear"}
    assert meta["parity"]["psnr_min_db"] >= TOLERANCES[precision][1]
    assert 0 < meta["parity"]["max_abs"] <= TOLERANCES[precision][0]  # really reduced
    images, mfcc = _inputs(precision, shards, 6)
    assert meta["parity"]["inputs"].startswith("random" if precision == "fp16" else "val clip ")
    engine = load(out)
    frames = engine.frames(mfcc, engine.identity(images))
    assert psnr(frames, _eager(ckpt_of, images, mfcc)).min() >= 35


def test_bf16_is_refused_with_onnx_graphs_with_the_reason(tiny_ckpt, tmp_path):
    with pytest.raises(EngineError, match="opset 22.*--backend openvino"):
        build_engine(tiny_ckpt, tmp_path / "bf16", BuildConfig(precision="bf16"))
    assert not (tmp_path / "bf16").exists()


def test_parity_violation_fails_the_build_and_writes_nothing(ckpt_of, tmp_path, monkeypatch):
    """An exported frame graph that is not the model (generator weights shifted after export
    would be the same): the build must refuse it."""

    def wrong_export(model, path, precision="fp32", opset=17):
        bad = copy.deepcopy(model)
        g = bad.generator
        with torch.no_grad():  # the output layer's bias
            (g.out.bias if isinstance(g, MouthEditor) else g.head[-2].bias).add_(0.05)
        return export_frames(bad, path, precision, opset)

    monkeypatch.setattr(builder_module, "export_frames", wrong_export)
    out = tmp_path / "eng"
    with pytest.raises(ParityError, match=r"differ from eager PyTorch.*max abs error"):
        build_engine(ckpt_of, out, BuildConfig())
    assert not out.exists() and list(tmp_path.iterdir()) == []  # no .DIR.tmp-* left either


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_synthesizer_engine_matches_eager(backend, ckpt_of, tmp_path):
    """`Synthesizer.from_engine` and `.from_checkpoint` on one face and 13 MFCC windows (in
    passes of 5 frames): the same frames, and those of the model's own `generate`."""
    engine = build_engine(ckpt_of, tmp_path / "eng", BuildConfig(backend, batch=BATCH))
    eager = Synthesizer.from_checkpoint(ckpt_of, batch_size=5)
    fast = Synthesizer.from_engine(engine, ckpt_of, batch_size=5, threads=1)
    assert (eager.backend, fast.backend) == ("eager", backend)
    face, mfcc = torch.rand(3, 32, 32), MFCC_STD * torch.randn(13, 20, 12)
    ident = eager.identity(face)
    assert [tuple(t.shape[1:]) for t in ident] == list(identity_shapes(eager.config).values())
    frames = eager.frames(mfcc, ident)
    assert frames.shape == (13, 3, 32, 32) and (frames - frames[:1]).abs().max() > 1e-3
    torch.testing.assert_close(frames, _eager(ckpt_of, face[None], mfcc), rtol=0, atol=1e-5)
    torch.testing.assert_close(fast.frames(mfcc, fast.identity(face)), frames, rtol=0, atol=1e-4)


# ---- export-time rewrites ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "kernel, padding, channels, bias",
    [
        (3, 1, (8, 5), True),
        (3, 1, (5, 3), False),
        (5, 2, (4, 7), True),
        ((3, 5), (1, 2), (6, 6), True),
    ],
)
def test_stride1_conv_transpose_is_a_conv_with_flipped_weights(kernel, padding, channels, bias):
    convt = torch.nn.ConvTranspose2d(*channels, kernel, padding=padding, bias=bias)
    conv = transposed_as_conv(convt)
    assert isinstance(conv, torch.nn.Conv2d)
    x = torch.randn(3, channels[0], 11, 14)  # non-square, odd sizes
    with torch.no_grad():
        ref = convt(x)
        torch.testing.assert_close(conv(x), ref, rtol=0, atol=1e-5)
    assert ref.shape == (3, channels[1], 11, 14) and ref.abs().max() > 0.1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kernel_size": 4},  # the davs stem: 1x1 -> 4x4 would become a 4x4 conv over 7x7
        {"kernel_size": 3, "padding": 1, "stride": 2, "output_padding": 1},
        {"kernel_size": 3, "padding": 1, "groups": 2},
        {"kernel_size": 3, "padding": 1, "dilation": 2},
    ],
)
def test_other_conv_transposes_are_left_alone(kwargs):
    assert transposed_as_conv(torch.nn.ConvTranspose2d(4, 6, **kwargs)) is None


@pytest.mark.parametrize("transposed", [False, True])
def test_batchnorm_folds_into_the_convolution_before_it(transposed):
    conv_type = torch.nn.ConvTranspose2d if transposed else torch.nn.Conv2d
    block = torch.nn.Sequential(conv_type(5, 7, 4, bias=False), torch.nn.BatchNorm2d(7))
    with torch.no_grad():  # statistics and affine parameters far from the defaults
        block[1].running_mean.normal_(0, 2)
        block[1].running_var.uniform_(0.1, 3)
        block[1].weight.normal_(1, 0.5)
        block[1].bias.normal_(0, 1)
    block.eval()
    x = torch.randn(2, 5, 6, 6)
    with torch.no_grad():
        ref = block(x)
        assert fold_batchnorms(block) == 1
        torch.testing.assert_close(block(x), ref, rtol=1e-5, atol=1e-5)
    assert isinstance(block[1], torch.nn.Identity) and block[0].bias is not None


def test_rewritten_graphs_compute_the_same_without_batchnorm(ckpt_of, tmp_path):
    """The whole rewrite on both generators: the same identity tensors and frames as the
    model, and graphs without BatchNormalization and with ConvTranspose only where it is not
    a stride-1 "same" convolution (the davs stem)."""
    model = reference_model(ckpt_of)
    rewritten = for_export(model)
    s = model.cfg.image_size
    images, mfcc = torch.rand(1, 3, s, s), MFCC_STD * torch.randn(6, 20, 12)
    with torch.no_grad():
        ident = IdentityGraph(model)(images)
        for a, b in zip(ident, IdentityGraph(rewritten)(images), strict=True):
            torch.testing.assert_close(b, a, rtol=0, atol=1e-5)
        ref = FrameGraph(model)(mfcc, *ident)
        torch.testing.assert_close(FrameGraph(rewritten)(mfcc, *ident), ref, rtol=0, atol=1e-5)
    assert model.generator is not rewritten.generator  # a copy: the model is left as trained
    ops = {}
    for graph, path in [
        ("identity", export_identity(rewritten, tmp_path / "identity.onnx")),
        ("frames", export_frames(rewritten, tmp_path / "frames.onnx")),
    ]:
        ops[graph] = [n.op_type for n in onnx.load(path).graph.node]
        assert "BatchNormalization" not in ops[graph]
    assert ops["frames"].count("ConvTranspose") == (1 if model.cfg.generator == "davs" else 0)
    plain = [n.op_type for n in onnx.load(export_frames(model, tmp_path / "p.onnx")).graph.node]
    if model.cfg.generator == "davs":  # what the rewrite took out
        assert plain.count("ConvTranspose") == 3 and "BatchNormalization" in plain


# ---- int8 calibration on real data ------------------------------------------------------------
def test_calibration_feeds_are_real_faces_and_their_speech(tiny_ckpt, shards):
    model = reference_model(tiny_ckpt)
    feeds = calibration_feeds(model, shards, frames=24)
    assert len(feeds) == 3  # ceil(24 / 8) clips, 8 windows each
    data = ShardSet(shards, "train")
    names = list(identity_shapes(model.cfg))
    for feed in feeds:
        assert list(feed) == ["mfcc", *names] and feed["mfcc"].shape == (8, 20, 12)
        # the windows are one clip's own, spread over it; the face is that clip's first frame
        (clip,) = [
            i for i in range(len(data))
            if np.array_equal(data.mfcc(i)[[0, 24]].astype(np.float32), feed["mfcc"][[0, -1]])
        ]  # fmt: skip
        c = (data.aligned_size - 32) // 2
        face = torch.from_numpy(data.frames(clip)[0, c : c + 32, c : c + 32].copy())
        face = face.permute(2, 0, 1)[None].float() / 255
        assert np.array_equal(feed["image"], face.numpy())  # the editor's cache is the face
    faces = {feed["image"].tobytes() for feed in feeds}
    assert len(faces) == 3


def test_int8_calibrates_on_the_runs_data_or_refuses(tiny_ckpt, shards, tmp_path):
    run = tiny_ckpt.parent.parent
    with pytest.raises(DataError, match=r"run\.json: missing.*--calibration-data"):
        build_engine(tiny_ckpt, tmp_path / "e", BuildConfig(precision="int8"))
    with pytest.raises(EngineError, match="--calibration-data.*no shard index"):
        build_engine(
            tiny_ckpt, tmp_path / "e", BuildConfig(precision="int8", calibration_data=str(tmp_path))
        )
    assert not (tmp_path / "e").exists()
    (run / "run.json").write_text(json.dumps({"data": str(shards)}))
    try:
        out = build_engine(
            tiny_ckpt, tmp_path / "e", BuildConfig(precision="int8", calibration_frames=16)
        )
    finally:
        (run / "run.json").unlink()
    assert json.loads((out / CONFIG).read_text())["build"]["calibration_data"] == str(
        shards.resolve()
    )


# ---- OpenVINO ---------------------------------------------------------------------------------
def _native_bf16() -> bool:
    from fastdavs.engines.openvino_engine import native_bf16

    return native_bf16()


@pytest.mark.parametrize("precision", ["fp32", "bf16", "int8"])
def test_openvino_engine_matches_eager_and_reloads(precision, ckpt_of, shards, tmp_path):
    if precision == "bf16" and not _native_bf16():
        pytest.skip("no native bf16 on this CPU: OpenVINO bf16 engines are refused here")
    cfg = BuildConfig("openvino", precision, BATCH, calibration_data=str(shards))
    out = build_engine(ckpt_of, tmp_path / "ov", cfg)
    meta = json.loads((out / CONFIG).read_text())
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json", "frames.bin", "frames.xml", "identity.bin", "identity.xml",
    ]  # fmt: skip
    assert meta["artifacts"]["frames"]["weights"]["file"] == "frames.bin"
    assert "openvino" in meta["versions"] and ("nncf" in meta["versions"]) == (precision == "int8")
    assert meta["host"]["cpu"] and meta["build"]["precision"] == precision
    max_abs, min_psnr = TOLERANCES[precision]
    assert meta["parity"]["psnr_min_db"] >= min_psnr and meta["parity"]["max_abs"] <= max_abs
    images, mfcc = _inputs(precision, shards, 11)  # 11 > max batch
    engine = load(out, checkpoint=ckpt_of, threads=1)
    assert (engine.backend, engine.precision) == ("openvino", precision)
    ident = engine.identity(images)
    frames = engine.frames(mfcc, ident)
    ref = _eager(ckpt_of, images, mfcc)
    assert frames.shape == ref.shape and ref.std() > 0.01
    err = (frames - ref).abs().max()
    if precision == "fp32":
        assert err < 1e-4 and psnr(frames, ref).min() > 80
    else:  # really reduced, and within the tolerance
        assert 1e-5 < err <= max_abs and psnr(frames, ref).min() >= min_psnr
    again = load(out, threads=1)  # a fresh compile of the same IR: the same frames
    torch.testing.assert_close(
        again.frames(mfcc, again.identity(images)), frames, rtol=0, atol=1e-6
    )
    if precision == "int8":  # NNCF's FakeQuantize nodes are in the saved IR
        assert b"FakeQuantize" in (out / "frames.xml").read_bytes()


def test_openvino_refusals(tiny_ckpt, tmp_path, monkeypatch):
    with pytest.raises(EngineError, match="fp16 is not offered with OpenVINO"):
        build_engine(tiny_ckpt, tmp_path / "e", BuildConfig("openvino", "fp16"))
    monkeypatch.setenv("FASTDAVS_NATIVE_BF16", "0")  # as on a CPU without native bf16
    with pytest.raises(EngineError, match="bf16: this CPU has no native bf16.*int8 or fp32"):
        build_engine(tiny_ckpt, tmp_path / "e", BuildConfig("openvino", "bf16"))
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(
        BackendUnavailable, match=r"OpenVINO is not installed.*pip install openvino=="
    ):
        build_engine(tiny_ckpt, tmp_path / "e", BuildConfig("openvino"))
    assert not (tmp_path / "e").exists() and list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def openvino_engine(tiny_ckpt, tmp_path_factory) -> Path:
    return build_engine(
        tiny_ckpt, tmp_path_factory.mktemp("ov") / "tiny", BuildConfig("openvino", batch=BATCH)
    )


def test_openvino_engine_with_damaged_weights_or_entry_is_refused(openvino_engine, tmp_path):
    copy_ = Path(shutil.copytree(openvino_engine, tmp_path / "copy"))
    data = bytearray((copy_ / "frames.bin").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy_ / "frames.bin").write_bytes(bytes(data))
    with pytest.raises(EngineError, match=r"frames\.bin: checksum mismatch.*rebuild"):
        load(copy_)
    _edit(copy_, lambda m: m["artifacts"]["identity"].pop("weights"))
    with pytest.raises(EngineError, match=r"no valid artifact entry for identity\.bin"):
        load(copy_)


def test_bf16_openvino_engine_is_refused_on_a_cpu_without_it(ckpt_of, tmp_path, monkeypatch):
    if not _native_bf16():
        pytest.skip("no native bf16 on this CPU: no bf16 engine to load")
    out = build_engine(ckpt_of, tmp_path / "bf16", BuildConfig("openvino", "bf16", BATCH))
    monkeypatch.setenv("FASTDAVS_NATIVE_BF16", "0")
    with pytest.raises(EngineError, match=r"frames\.xml: a bf16 engine.*no native bf16.*rebuild"):
        load(out)


# ---- --backend auto ---------------------------------------------------------------------------
def test_auto_builds_the_candidates_and_keeps_the_fastest(tiny_ckpt, tmp_path, monkeypatch):
    """The choice follows the measurement (faked here, to be deterministic: timing is the
    benchmarks' job); every candidate is recorded, and nothing but OUT is left."""
    speed = {("onnxruntime", "fp32"): 10.0, ("openvino", "fp32"): 30.0, ("openvino", "bf16"): 20.0}
    measured = []

    def fake_fps(engine, batch, budget_s=0):
        measured.append((engine.backend, engine.precision, batch))
        return speed[engine.backend, engine.precision]

    monkeypatch.setattr(auto, "frames_per_second", fake_fps)
    out = build_engine(tiny_ckpt, tmp_path / "e", BuildConfig("auto", "fp32", BATCH))
    meta = json.loads((out / CONFIG).read_text())
    assert (meta["backend"], meta["build"]["precision"]) == ("openvino", "fp32")
    selection = meta["selection"]
    assert selection["chosen"] == "openvino fp32" and selection["batch"] == BATCH[1]
    assert selection["candidates"]["onnxruntime fp32"]["fps"] == 10.0
    assert selection["candidates"]["onnxruntime fp32"]["psnr_min_db"] >= 60
    assert "TensorRT is not available" in selection["candidates"]["tensorrt fp32"]["skipped"]
    assert sorted(measured) == [("onnxruntime", "fp32", 4), ("openvino", "fp32", 4)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e"]
    load(out)  # a complete engine directory
    # int8 without calibration data is left out with the reason, not fatal
    out = build_engine(tiny_ckpt, tmp_path / "e", BuildConfig("openvino", "auto", BATCH))
    candidates = json.loads((out / CONFIG).read_text())["selection"]["candidates"]
    assert "--calibration-data" in candidates["openvino int8"]["skipped"]
    assert "fp16 is not offered" in candidates["openvino fp16"]["skipped"]
    if _native_bf16():
        assert json.loads((out / CONFIG).read_text())["selection"]["chosen"] == "openvino fp32"


def test_frames_per_second_measures_the_engine(openvino_engine):
    fps = auto.frames_per_second(load(openvino_engine, threads=1), 4, budget_s=0.1)
    assert fps > 0


class _Stack(ctypes.Structure):
    """stack_t of sigaltstack(2)."""

    _fields_ = [("sp", ctypes.c_void_p), ("flags", ctypes.c_int), ("size", ctypes.c_size_t)]


def _signal_stack() -> tuple[int, int] | None:
    """(address, size) of this thread's alternate signal stack; None where it has none."""
    stack = _Stack()
    assert ctypes.CDLL(None).sigaltstack(None, ctypes.byref(stack)) == 0
    return None if stack.flags & 2 else (stack.sp, stack.size)  # 2: SS_DISABLE


def _mapped(address: int) -> bool:
    lines = Path("/proc/self/maps").read_text().splitlines()
    ranges = (line.split()[0].split("-") for line in lines)
    return any(int(a, 16) <= address < int(b, 16) for a, b in ranges)


@pytest.mark.skipif(sys.platform != "linux", reason="sigaltstack and /proc/self/maps: Linux")
def test_freed_openvino_engines_leave_a_usable_signal_stack(openvino_engine):
    """OpenVINO's CPU plugin swaps the thread's alternate signal stack for one of its own and
    unmaps it when it goes (`openvino_engine.core`): engines freed in any order must leave the
    thread on a mapped stack, where Python's signal handlers run (a SIGSEGV otherwise)."""
    load(openvino_engine, threads=1)  # the CPU plugin is loaded from here on
    before = _signal_stack()
    first, second = load(openvino_engine, threads=1), load(openvino_engine, threads=1)
    del first, second  # freed in the order they came, as each one's two graphs are
    assert _signal_stack() == before and (before is None or _mapped(before[0]))
    handled = []
    previous = signal.signal(signal.SIGUSR1, lambda *_: handled.append(True))
    try:
        os.kill(os.getpid(), signal.SIGUSR1)
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert handled


class _Collecting(DavsDataset):
    """Each item after a full garbage collection in the loader worker (as any of its
    collections may do, made certain)."""

    def __getitem__(self, key):
        gc.collect()
        return super().__getitem__(key)


def test_loader_workers_outlive_an_engine_left_to_the_collector(openvino_engine, shards):
    """A loader made in a process that ran an OpenVINO engine, now garbage in a reference
    cycle not yet collected, which a forked worker's collection frees. A compiled model that
    took its Core's CPU plugin with it blocked forever there (its executor's threads do not
    exist in the child); with the process's one Core (`openvino_engine.core`) the executor
    stays with the Core and the worker goes on."""
    gc.disable()  # the parent keeps the cycle until the worker starts
    try:
        engine = load(openvino_engine, threads=1)
        engine.frames(torch.randn(4, 20, 12), engine.identity(torch.rand(1, 3, 32, 32)))
        cycle = [engine]
        cycle.append(cycle)
        del engine, cycle
        loader = make_loader(
            _Collecting(ShardSet(shards, "train"), TINY, train=True), 4, False, num_workers=1
        )
        loader.timeout = 60  # a stalled worker fails the test instead of hanging it
        assert [len(b["word"]) for b in loader] == [4, 4, 4]
    finally:
        gc.enable()


# ---- the engine directory ---------------------------------------------------------------------
def test_round_trip_api_and_input_errors(tiny_engine, tiny_ckpt):
    engine = load(tiny_engine, checkpoint=tiny_ckpt.parent.parent)  # a run dir: its latest
    assert engine.backend == "onnxruntime" and engine.config == TINY and engine.max_batch == 8
    faces = torch.rand(2, 3, 32, 32)
    two = engine.identity(faces)
    shapes = identity_shapes(TINY)
    assert [tuple(t.shape) for t in two] == [(2, *shape) for shape in shapes.values()]
    assert torch.equal(two[0], faces)  # the mouth editor's cache holds the face itself
    one = two.face(1)
    assert all(torch.equal(a, b[1:]) for a, b in zip(one, two, strict=True))
    assert engine.frames(torch.zeros(3, 20, 12), one).shape == (3, 3, 32, 32)
    with pytest.raises(EngineError, match=r"one identity per call.*identity\.face\(i\)"):
        engine.frames(torch.zeros(3, 20, 12), two)
    with pytest.raises(EngineError, match="reads image, skip1, skip2, skip3 of a face, got 2"):
        engine.frames(torch.zeros(3, 20, 12), IdentityCache(*one[:2]))
    with pytest.raises(EngineError, match=r"\[B, 3, 32, 32\]"):
        engine.identity(torch.rand(1, 3, 64, 64))
    with pytest.raises(EngineError, match=r"\[N, 20, 12\]"):
        engine.frames(torch.zeros(3, 12, 20), one)


def test_tampered_artifact_is_refused(engine_copy):
    data = bytearray((engine_copy / "frames.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, other content
    (engine_copy / "frames.onnx").write_bytes(bytes(data))
    with pytest.raises(EngineError, match=r"frames\.onnx: checksum mismatch.*rebuild"):
        load(engine_copy)
    (engine_copy / "identity.onnx").write_bytes(b"truncated")
    with pytest.raises(EngineError, match=r"identity\.onnx: truncated \(9 bytes"):
        load(engine_copy)
    (engine_copy / "identity.onnx").unlink()
    with pytest.raises(EngineError, match=r"identity\.onnx: missing"):
        load(engine_copy)


def _edit(engine: Path, edit) -> None:
    meta = json.loads((engine / CONFIG).read_text())
    edit(meta)
    (engine / CONFIG).write_text(json.dumps(meta))


def test_edited_config_is_refused(engine_copy):
    _edit(engine_copy, lambda m: m["model"].update(image_size=64))
    with pytest.raises(EngineError, match="does not match identity.onnx.*edited"):
        load(engine_copy)
    _edit(engine_copy, lambda m: m["model"].update(image_size=32, generator="davs"))
    with pytest.raises(EngineError, match=r"not match frames\.onnx.*\(expected .*'pid': \(1, 32"):
        load(engine_copy)
    _edit(engine_copy, lambda m: m.update(format_version=2))
    with pytest.raises(EngineError, match="format version 2.*upgrade fastdavs"):
        load(engine_copy)
    (engine_copy / CONFIG).write_text("{ not json")
    with pytest.raises(EngineError, match=r"config\.json: not valid JSON"):
        load(engine_copy)
    (engine_copy / CONFIG).unlink()
    with pytest.raises(EngineError, match=r"config\.json: missing.*fastdavs-build-engine"):
        load(engine_copy)


def test_engine_of_another_checkpoint_is_refused(tiny_engine, tmp_path):
    other = _checkpoint(tmp_path / "other", seed=2)
    with pytest.raises(EngineError, match=f"built from another checkpoint.*not {other}"):
        load(tiny_engine, checkpoint=other)


def test_tensorrt_engine_without_tensorrt_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # `import tensorrt` raises ImportError
    out = tmp_path / "trt"
    out.mkdir()
    for name in ("identity.plan", "frames.plan"):
        (out / name).write_bytes(b"plan")
    meta = {
        "format": "fastdavs-engine", "format_version": 1, "backend": "tensorrt",
        "model": TINY.to_dict(), "build": {"precision": "fp16", "batch": [1, 4, 8]},
        "artifacts": {g: artifact_entry(out / f"{g}.plan") for g in ("identity", "frames")},
    }  # fmt: skip
    (out / CONFIG).write_text(json.dumps(meta))
    with pytest.raises(BackendUnavailable, match=r"TensorRT is not available.*pip install"):
        load(out)


def test_rebuild_replaces_an_engine_but_not_other_directories(tiny_ckpt, engine_copy, tmp_path):
    before = json.loads((engine_copy / CONFIG).read_text())["parity"]["seed"]
    build_engine(tiny_ckpt, engine_copy, BuildConfig(batch=BATCH))
    assert json.loads((engine_copy / CONFIG).read_text())["parity"]["seed"] != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy"]  # no .tmp- / .old- left
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep")
    with pytest.raises(EngineError, match="not an engine directory"):
        build_engine(tiny_ckpt, precious, BuildConfig())
    assert (precious / "notes.txt").read_text() == "keep"


# ---- the command ------------------------------------------------------------------------------
def _main(capsys, *args) -> tuple[int, str]:
    code = cli.main([str(a) for a in args])
    return code, capsys.readouterr().err


def test_cli_builds_with_progress(tiny_ckpt, tmp_path, capsys, caplog):
    caplog.set_level(logging.INFO)
    code, err = _main(
        capsys, "--checkpoint", tiny_ckpt, "--batch", "1:2:4", "--out", tmp_path / "e"
    )
    assert code == 0, err
    steps = [r.getMessage()[:5] for r in caplog.records if r.getMessage().startswith("[")]
    assert steps == ["[1/4]", "[2/4]", "[3/4]", "[4/4]"]
    assert any(r.getMessage().startswith("parity: max abs error") for r in caplog.records)
    assert load(tmp_path / "e").max_batch == 4


def test_cli_errors_are_one_line(tiny_ckpt, tmp_path, capsys):
    code, err = _main(capsys, "--checkpoint", tmp_path / "nowhere", "--out", tmp_path / "e")
    assert code == 2 and err.strip().count("\n") == 0
    assert err.startswith("fastdavs-build-engine: error: ") and "nowhere" in err

    code, err = _main(
        capsys, "--checkpoint", tiny_ckpt, "--precision", "bf16", "--out", tmp_path / "e"
    )
    assert code == 2 and "bf16 is not offered" in err

    code, err = _main(
        capsys, "--checkpoint", tiny_ckpt, "--precision", "int8", "--out", tmp_path / "e"
    )
    assert code == 2 and err.strip().count("\n") == 0 and "pass --calibration-data DIR" in err

    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--checkpoint", str(tiny_ckpt), "--batch", "4:2:8", "--out", "x"])
    assert exit_info.value.code == 2 and "need 1 <= MIN <= OPT <= MAX" in capsys.readouterr().err
    assert not (tmp_path / "e").exists()


def test_cli_builds_openvino_int8_on_real_data(tiny_ckpt, shards, tmp_path, capsys):
    out = tmp_path / "e"
    code, err = _main(
        capsys, "--checkpoint", tiny_ckpt, "--backend", "openvino", "--precision", "int8",
        "--calibration-data", shards, "--no-rewrite", "--batch", "1:2:4", "--out", out,
    )  # fmt: skip
    assert code == 0, err
    meta = json.loads((out / CONFIG).read_text())
    assert meta["build"]["rewrite"] is False and meta["parity"]["inputs"].startswith("val clip")
    assert load(out).precision == "int8"


def test_cli_tensorrt_without_tensorrt(tiny_ckpt, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    code, err = _main(
        capsys, "--checkpoint", tiny_ckpt, "--backend", "tensorrt", "--out", tmp_path / "e"
    )
    assert code == 2 and "TensorRT is not available" in err and "--backend onnxruntime" in err
    assert not (tmp_path / "e").exists()


# ---- the TensorRT builder, against a stand-in -------------------------------------------------
class FakeTensorRT(types.ModuleType):
    """A stand-in for the `tensorrt` module, NOT TensorRT: it implements only the calls that
    fastdavs' builder makes, records them, reads network inputs from the real ONNX file, and
    returns placeholder plans. Knobs: `parser_errors`, `fail_build`, `cache_fits`."""

    def __init__(self, version: str = "10.13.0", strongly_typed: bool = True):
        super().__init__("tensorrt")
        self.__version__ = version
        self.calls: list[tuple] = []
        self.parser_errors: list[dict] = []
        self.fail_build = False
        self.cache_fits = True
        fake = self

        class Logger:
            WARNING = "WARNING"

            def __init__(self, severity):
                self.severity = severity

        class Flags:
            pass

        if strongly_typed:
            Flags.STRONGLY_TYPED = 0  # the bit index, as TensorRT's enum
        self.Logger, self.NetworkDefinitionCreationFlag = Logger, Flags
        self.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")

        class Network:
            def __init__(self, flags):
                self.flags = flags
                self.inputs = []

            @property
            def num_inputs(self):
                return len(self.inputs)

            def get_input(self, i):
                return self.inputs[i]

        class ParserError:
            def __init__(self, e):
                self.e = e

            def node(self):
                return self.e["node"]

            def node_name(self):
                return self.e["name"]

            def node_operator(self):
                return self.e["op"]

            def desc(self):
                return self.e["desc"]

            def code(self):
                return "UNSUPPORTED_NODE"

        class OnnxParser:
            def __init__(self, network, logger):
                self.network = network

            def parse_from_file(self, path):
                fake.calls.append(("parse_from_file", path))
                for t in onnx.load(path).graph.input:
                    dims = tuple(d.dim_value or -1 for d in t.type.tensor_type.shape.dim)
                    self.network.inputs.append(types.SimpleNamespace(name=t.name, shape=dims))
                return not fake.parser_errors

            @property
            def num_errors(self):
                return len(fake.parser_errors)

            def get_error(self, i):
                return ParserError(fake.parser_errors[i])

        class Cache:
            def __init__(self, data):
                self.data = data

            def serialize(self):
                return self.data + b"|timed"

        class Config:
            def __init__(self):
                self.profiles, self.cache = [], None

            def set_memory_pool_limit(self, pool, size):
                fake.calls.append(("set_memory_pool_limit", pool, size))

            def add_optimization_profile(self, profile):
                self.profiles.append(profile)

            def create_timing_cache(self, data):
                fake.calls.append(("create_timing_cache", bytes(data)))
                return Cache(bytes(data))

            def set_timing_cache(self, cache, ignore_mismatch):
                fits = fake.cache_fits or cache.data == b""
                if fits:
                    self.cache = cache
                return fits

            def get_timing_cache(self):
                return self.cache

        class Profile:
            def __init__(self):
                self.shapes = {}

            def set_shape(self, name, lo, opt, hi):
                self.shapes[name] = (lo, opt, hi)

        class Builder:
            def __init__(self, logger):
                pass

            def create_network(self, flags):
                fake.calls.append(("create_network", flags))
                return Network(flags)

            def create_builder_config(self):
                return Config()

            def create_optimization_profile(self):
                return Profile()

            def build_serialized_network(self, network, config):
                fake.calls.append(("build", [p.shapes for p in config.profiles]))
                return None if fake.fail_build else b"PLAN"

        self.Builder, self.OnnxParser = Builder, OnnxParser


@pytest.fixture
def graphs(tiny_ckpt, tmp_path) -> dict[str, Path]:
    model = reference_model(tiny_ckpt)
    return {
        "identity": export_identity(model, tmp_path / "identity.onnx"),
        "frames": export_frames(model, tmp_path / "frames.onnx"),
    }


def _fake(monkeypatch, **kwargs) -> FakeTensorRT:
    fake = FakeTensorRT(**kwargs)
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    return fake


def test_tensorrt_profiles_cover_the_batch_axes_only(ckpt_of, tmp_path, monkeypatch):
    """Both generators' graphs: the frame graph's identity inputs (pid, skip; image,
    skip1..3) are static, one face broadcast in the graph; only mfcc and images get a profile,
    and every graph output is named as the engine runtime reads it."""
    _fake(monkeypatch)
    model = reference_model(ckpt_of)
    builder = TensorRTBuilder(workspace_bytes=1 << 20)
    network, _parser = builder.create_network(export_frames(model, tmp_path / "frames.onnx"))
    names = [network.get_input(i).name for i in range(network.num_inputs)]
    assert names == ["mfcc", *identity_shapes(model.cfg)]
    assert profile_shapes(network, (1, 25, 50)) == {
        "mfcc": ((1, 20, 12), (25, 20, 12), (50, 20, 12))
    }
    network, _parser = builder.create_network(export_identity(model, tmp_path / "id.onnx"))
    assert profile_shapes(network, (1, 1, 8)) == {
        "images": ((1, 3, 32, 32), (1, 3, 32, 32), (8, 3, 32, 32))
    }


def test_tensorrt_builder_profiles_workspace_and_strong_typing(graphs, monkeypatch):
    fake = _fake(monkeypatch)
    builder = TensorRTBuilder(workspace_bytes=256 << 20)
    network, _parser = builder.create_network(graphs["frames"])
    assert ("create_network", 1 << 0) in fake.calls  # STRONGLY_TYPED
    assert profile_shapes(network, (1, 25, 50)) == {  # the identity inputs are static
        "mfcc": ((1, 20, 12), (25, 20, 12), (50, 20, 12))
    }
    assert builder.create_engine(network, (1, 25, 50), "frames") == b"PLAN"
    assert ("set_memory_pool_limit", "WORKSPACE", 256 << 20) in fake.calls
    assert fake.calls[-1] == ("build", [{"mfcc": ((1, 20, 12), (25, 20, 12), (50, 20, 12))}])
    network, _parser = builder.create_network(graphs["identity"])
    builder.create_engine(network, (1, 1, 8), "identity")
    assert fake.calls[-1] == (
        "build",
        [{"images": ((1, 3, 32, 32), (1, 3, 32, 32), (8, 3, 32, 32))}],
    )


def test_tensorrt_11_without_the_flag_builds_strongly_typed_anyway(graphs, monkeypatch):
    fake = _fake(monkeypatch, version="11.0.0", strongly_typed=False)
    TensorRTBuilder(workspace_bytes=1 << 20).create_network(graphs["frames"])
    assert ("create_network", 0) in fake.calls


def test_tensorrt_timing_cache_is_read_and_persisted(graphs, tmp_path, monkeypatch):
    fake = _fake(monkeypatch)
    cache_file = tmp_path / "timing.cache"
    cache_file.write_bytes(b"previous")
    builder = TensorRTBuilder(workspace_bytes=1 << 20, timing_cache=cache_file)
    for graph in ("identity", "frames"):
        network, _parser = builder.create_network(graphs[graph])
        builder.create_engine(network, (1, 2, 4), graph)
    caches = [c[1] for c in fake.calls if c[0] == "create_timing_cache"]
    assert caches == [b"previous", b"previous|timed"]  # the second build starts from the first
    builder.save_timing_cache(cache_file)
    assert cache_file.read_bytes() == b"previous|timed|timed"

    fake.cache_fits = False  # a cache from another TensorRT or GPU: start afresh, not fail
    builder = TensorRTBuilder(workspace_bytes=1 << 20, timing_cache=cache_file)
    network, _parser = builder.create_network(graphs["frames"])
    builder.create_engine(network, (1, 2, 4), "frames")
    assert builder.cache_bytes == b"|timed"


def test_tensorrt_parser_errors_are_all_reported(graphs, monkeypatch):
    fake = _fake(monkeypatch)
    fake.parser_errors = [
        {"node": 3, "name": "/generator/Resize", "op": "Resize", "desc": "bad mode"},
        {"node": 7, "name": "/head/ConvTranspose", "op": "ConvTranspose", "desc": "no tactic"},
    ]
    builder = TensorRTBuilder(workspace_bytes=1 << 20)
    with pytest.raises(EngineError, match="2 error") as e:
        builder.create_network(graphs["frames"])
    for text in ("node 3 (Resize '/generator/Resize'): bad mode", "node 7", "no tactic"):
        assert text in str(e.value)


def test_tensorrt_failed_build_is_an_error(graphs, monkeypatch):
    fake = _fake(monkeypatch)
    fake.fail_build = True
    builder = TensorRTBuilder(workspace_bytes=1 << 20)
    network, _parser = builder.create_network(graphs["frames"])
    with pytest.raises(EngineError, match="could not build the plan"):
        builder.create_engine(network, (1, 2, 4), "frames")


def test_tensorrt_lazy_import_messages(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(BackendUnavailable, match=r"pip install 'tensorrt>=10,<12'"):
        import_tensorrt()
    _fake(monkeypatch, version="8.6.1")
    with pytest.raises(BackendUnavailable, match="TensorRT 8.6.1 is installed.*10 or 11"):
        import_tensorrt()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(BackendUnavailable, match="CUDA GPU.*--backend onnxruntime"):
        require_gpu()


# ---- real TensorRT ----------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_tensorrt_engine_matches_eager(precision, ckpt_of, tmp_path):
    pytest.importorskip("tensorrt")
    out = build_engine(ckpt_of, tmp_path / "trt", BuildConfig("tensorrt", precision, BATCH))
    assert (out / "timing.cache").stat().st_size > 0
    images, mfcc = torch.rand(1, 3, 32, 32), MFCC_STD * torch.randn(11, 20, 12)
    engine = load(out)
    frames = engine.frames(mfcc, engine.identity(images)).cpu()
    max_abs, min_psnr = TOLERANCES[precision]
    ref = _eager(ckpt_of, images, mfcc)
    assert (frames - ref).abs().max() <= max_abs and psnr(frames, ref).min() >= min_psnr
