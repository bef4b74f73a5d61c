"""fastdavs.kernels.temporal_conv: the Triton kernels against the PyTorch reference, output and
every gradient (dx, dw, db, dresidual), over named shape cases, dtypes and activations;
NaN-poisoned outputs with guard bands; BatchNorm folding; dispatch and errors; and the model's
temporal stacks with the kernel backend "triton" against "ref".

Without a GPU the kernels run under TRITON_INTERPRET=1 (set by conftest.py), on CPU tensors.
"""

import dataclasses
import math
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from fastdavs.config import ConfigError, DavsConfig
from fastdavs.kernels import dispatch, fold_batchnorm, temporal_conv, temporal_conv_ref
from fastdavs.kernels.temporal_conv import INTERPRET, conv_dx, conv_forward, out_len
from fastdavs.model import DavsModel, layers
from fastdavs.model.audio_encoder import AudioWordEncoder
from fastdavs.model.word_classifier import WordClassifier

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
pytestmark = pytest.mark.skipif(
    DEVICE == "cpu" and not INTERPRET,
    reason="needs a CUDA GPU or TRITON_INTERPRET=1 before fastdavs.kernels is imported",
)
# Max abs error allowed per unit of the reference's magnitude (max |ref|, at least 1): fp32 is
# compared with a float64 reference; 16-bit with a float64 reference on the same rounded inputs,
# so the budget is about two roundings of the output dtype (bf16 stores truncate: one more ulp).
TOL = {torch.float32: 2e-6, torch.float16: 2e-3, torch.bfloat16: 2e-2}


@dataclasses.dataclass(frozen=True)
class Case:
    B: int
    C_in: int
    C_out: int
    T: int
    K: int
    stride: int = 1
    padding: int = 0
    dilation: int = 1
    groups: int = 1
    activation: str | None = None
    bias: bool = True
    residual: bool = False

    @property
    def T_out(self) -> int:
        return out_len(self.T, self.K, self.stride, self.padding, self.dilation)


CASES = {
    # audio branch B, first conv: 12 MFCC coefficients as channels over 20 steps
    "mfcc_branch": Case(3, 12, 16, 20, 3, bias=False),
    # odd channels, B=1, T longer than one row tile (64) and not a multiple of it
    "odd_ragged_relu": Case(1, 3, 5, 67, 5, padding=2, activation="relu", residual=True),
    "stride2_leaky": Case(2, 7, 7, 13, 3, stride=2, padding=1, activation="leaky_relu"),
    # the tcn head's second conv; C_out 33 spans two column tiles
    "dilation2_tcn": Case(2, 32, 33, 5, 3, padding=2, dilation=2, activation="relu"),
    "k1_pointwise": Case(2, 5, 3, 9, 1, bias=False, activation="leaky_relu", residual=True),
    "groups3": Case(2, 6, 9, 11, 3, padding=1, groups=3, activation="relu", residual=True),
    # reduction C_in_g * K = 60 > one 32-column tile, stride 3 with dilation, two groups
    "wide_strided_groups": Case(2, 40, 70, 37, 3, stride=3, padding=1, dilation=2, groups=2),
    # 150 rows: three row tiles forward, several row splits in the dw reduction
    "many_rows": Case(5, 4, 6, 30, 3, padding=1, activation="leaky_relu", residual=True),
}


@pytest.fixture(autouse=True)
def _no_tf32():
    # F.conv1d and the kernels follow this flag on a GPU; the fp32 tolerances assume IEEE fp32.
    old = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32 = old


def _inputs(c: Case, dtype: torch.dtype):
    """x, weight, bias, residual (None where absent), leaves on DEVICE in `dtype`."""

    def leaf(*shape, scale=1.0):
        return (torch.randn(*shape) * scale).to(DEVICE, dtype).requires_grad_()

    x = leaf(c.B, c.C_in, c.T)
    w = leaf(c.C_out, c.C_in // c.groups, c.K, scale=1 / math.sqrt(c.C_in // c.groups * c.K))
    b = leaf(c.C_out) if c.bias else None
    r = leaf(c.B, c.C_out, c.T_out) if c.residual else None
    return x, w, b, r


def _conv_kwargs(c: Case) -> dict:
    return dict(
        stride=c.stride,
        padding=c.padding,
        dilation=c.dilation,
        groups=c.groups,
        activation=c.activation,
        negative_slope=0.1,
    )


def _assert_close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, what: str):
    assert actual.dtype == dtype, f"{what}: dtype {actual.dtype}, expected {dtype}"
    assert torch.isfinite(actual).all(), f"{what} has non-finite values"
    scale = max(1.0, expected.abs().max().item())
    err = (actual.double() - expected.double()).abs().max().item()
    assert err <= TOL[dtype] * scale, f"{what}: max error {err:.3g} (scale {scale:.3g})"


def _check_against_reference(c: Case, dtype: torch.dtype) -> None:
    x, w, b, r = _inputs(c, dtype)
    leaves = [t for t in (x, w, b, r) if t is not None]
    y = temporal_conv(x, w, b, residual=r, backend="triton", **_conv_kwargs(c))
    dy = torch.randn_like(y)
    grads = torch.autograd.grad(y, leaves, dy)

    ref_leaves = [t.detach().double().requires_grad_() for t in leaves]
    rx, rw, *rest = ref_leaves
    rb = rest.pop(0) if b is not None else None
    rr = rest.pop(0) if r is not None else None
    y_ref = temporal_conv_ref(rx, rw, rb, residual=rr, **_conv_kwargs(c))
    ref_grads = torch.autograd.grad(y_ref, ref_leaves, dy.double())

    assert y.shape == (c.B, c.C_out, c.T_out)
    _assert_close(y, y_ref, dtype, "y")
    names = ["dx", "dw", "db", "dresidual"]
    names = [n for n, t in zip(names, (x, w, b, r), strict=True) if t is not None]
    for name, g, g_ref in zip(names, grads, ref_grads, strict=True):
        _assert_close(g, g_ref, dtype, name)


@pytest.mark.parametrize("name", list(CASES))
def test_fp32_output_and_every_gradient_match_reference(name):
    _check_against_reference(CASES[name], torch.float32)


@pytest.mark.parametrize("activation", [None, "relu", "leaky_relu"])
@pytest.mark.parametrize("residual", [False, True], ids=["plain", "residual"])
def test_each_activation_with_and_without_residual(activation, residual):
    c = Case(2, 5, 7, 17, 3, padding=1, activation=activation, residual=residual)
    _check_against_reference(c, torch.float32)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("name", ["odd_ragged_relu", "stride2_leaky", "dilation2_tcn", "groups3"])
def test_half_precision_matches_reference(name, dtype):
    _check_against_reference(CASES[name], dtype)


def test_weight_gradient_is_deterministic():
    c = CASES["many_rows"]
    x, w, b, r = _inputs(c, torch.float32)
    y = temporal_conv(x, w, b, residual=r, backend="triton", **_conv_kwargs(c))
    dy = torch.randn_like(y)
    first = torch.autograd.grad(y, [w, b], dy, retain_graph=True)
    second = torch.autograd.grad(y, [w, b], dy)
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))


def test_non_contiguous_inputs_and_gradient():
    # The model feeds transposed views ([N, F, K] -> [N, K, F]); `mean` over time backpropagates
    # an expanded (stride-0) gradient.
    c = Case(3, 12, 8, 20, 3, padding=1, activation="relu")
    x = torch.randn(c.B, c.T, c.C_in, device=DEVICE).transpose(1, 2).requires_grad_()
    w = torch.randn(c.C_out, c.C_in, c.K, device=DEVICE).requires_grad_()
    y = temporal_conv(x, w, padding=1, activation="relu", backend="triton")
    grads = torch.autograd.grad(y.mean(2).sum(), [x, w])
    y_ref = temporal_conv_ref(x, w, padding=1, activation="relu")
    ref_grads = torch.autograd.grad(y_ref.mean(2).sum(), [x, w])
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    for g, g_ref in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, g_ref, rtol=1e-5, atol=1e-5)


# ---- NaN-poisoned outputs: the masks write exactly the output and nothing around it ----------
G = 3  # guard band on every side


def _poisoned(shape, dtype):
    """A NaN buffer with a guard band of G around a [*shape] window; returns (buffer, window)."""
    B, C, T = shape
    buf = torch.full((B + 2 * G, C + 2 * G, T + 2 * G), float("nan"), device=DEVICE, dtype=dtype)
    return buf, buf[G:-G, G:-G, G:-G]


def _assert_guard_untouched(buf: torch.Tensor) -> None:
    inner = torch.zeros_like(buf, dtype=torch.bool)
    inner[G:-G, G:-G, G:-G] = True
    assert buf[~inner].isnan().all(), "a kernel wrote outside its output"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("name", ["odd_ragged_relu", "wide_strided_groups", "many_rows"])
def test_nan_poisoned_outputs_keep_guard_bands(name, dtype):
    c = CASES[name]
    x, w, b, r = (None if t is None else t.detach() for t in _inputs(c, dtype))
    conv = (c.stride, c.padding, c.dilation, c.groups, c.activation, 0.1)

    buf, window = _poisoned((c.B, c.C_out, c.T_out), dtype)
    y, signs = conv_forward(x, w, b, r, *conv, save_signs=True, out=window)
    assert y.data_ptr() == window.data_ptr()
    xd = x.double().requires_grad_()
    bd, rd = (None if t is None else t.double() for t in (b, r))
    y_ref = temporal_conv_ref(xd, w.double(), bd, residual=rd, **_conv_kwargs(c))
    _assert_close(window, y_ref, dtype, "y")
    _assert_guard_untouched(buf)

    dy = torch.randn(c.B, c.C_out, c.T_out, device=DEVICE, dtype=dtype)
    buf, window = _poisoned((c.B, c.C_in, c.T), dtype)
    conv_dx(dy, signs, w, c.T, *conv, out=window)
    (dx_ref,) = torch.autograd.grad(y_ref, xd, dy.double())
    _assert_close(window, dx_ref, dtype, "dx")
    _assert_guard_untouched(buf)


def test_launcher_rejects_a_wrong_out():
    c = CASES["k1_pointwise"]
    x, w, _, _ = (None if t is None else t.detach() for t in _inputs(c, torch.float32))
    out = torch.empty(c.B, c.C_out, c.T_out + 1, device=DEVICE)
    with pytest.raises(ValueError, match=r"out: expected \(2, 3, 9\)"):
        conv_forward(x, w, None, None, 1, 0, 1, 1, None, 0.2, save_signs=False, out=out)


# ---- GPU compilation, without a GPU ----------------------------------------------------------
# The interpreter accepts what the GPU compiler may reject (tl.dot tile minimums, constexpr
# branches, dtypes). triton.compile builds sm_90 code without a device, so each kernel is compiled
# here with its first GPU tile, in a process without TRITON_INTERPRET; the dtypes rotate over the
# kernels to keep this to three compilations.
COMPILE_SCRIPT = """
import importlib, sys
import triton, triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
tc = importlib.import_module("fastdavs.kernels.temporal_conv")
m, n, k, warps, stages = tc._GPU_TILES[0]
bn, br, bm, dw_warps, dw_stages = tc._DW_TILE
conv = dict(K=3, STRIDE=2, PAD=1, DIL=2, ACT=2)
cases = [  # kernel, dtype, pointer arguments, constexprs, warps, stages
    (tc._conv_fwd_kernel.fn, "fp16", dict(pos_ptr="*i8"),
     dict(HAS_BIAS=True, HAS_RES=True, SAVE_POS=True, BLOCK_M=m, BLOCK_N=n, BLOCK_R=k),
     warps, stages),
    (tc._conv_dx_kernel.fn, "bf16", dict(pos_ptr="*i8"), dict(BLOCK_M=m, BLOCK_N=n, BLOCK_Q=k),
     warps, stages),
    (tc._conv_dw_kernel, "fp32", dict(pos_ptr="*i8", dw_ptr="*fp32", db_ptr="*fp32"),
     dict(HAS_DB=True, BLOCK_N=bn, BLOCK_R=br, BLOCK_M=bm), dw_warps, dw_stages),
]
for fn, dtype, ptrs, consts, warps, stages in cases:
    consts = dict(conv, **consts, PRECISION="tf32" if dtype == "fp32" else "ieee",
                  DOT_DTYPE={"fp32": tl.float32, "fp16": tl.float16, "bf16": tl.bfloat16}[dtype])
    sig = {a: "constexpr" if a in consts else ptrs.get(a, f"*{dtype}") if a.endswith("_ptr")
           else "fp32" if a == "SLOPE" else "i32" for a in fn.arg_names}
    src = ASTSource(fn, sig, {(fn.arg_names.index(c),): v for c, v in consts.items()})
    kernel = triton.compile(src, target=GPUTarget("cuda", 90, 32),
                            options=dict(num_warps=warps, num_stages=stages))
    assert "mma" in kernel.asm["ptx"], fn.__name__  # the dots run on tensor cores
    print(fn.__name__, dtype, "ok")
"""


def test_kernels_compile_for_sm90_without_a_gpu(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path)
    run = subprocess.run(
        [sys.executable, "-c", COMPILE_SCRIPT], env=env, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count(" ok") == 3


# ---- reference, BatchNorm folding ------------------------------------------------------------
def test_reference_gradcheck_float64():
    x = torch.randn(2, 4, 9, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, 2, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(6, dtype=torch.float64, requires_grad=True)
    r = torch.randn(2, 6, 5, dtype=torch.float64, requires_grad=True)  # T_out = 5

    def f(x, w, b, r):
        return temporal_conv_ref(
            x, w, b, stride=2, padding=2, dilation=2, groups=2, activation="leaky_relu",
            residual=r,
        )  # fmt: skip

    assert torch.autograd.gradcheck(f, (x, w, b, r))


@pytest.mark.parametrize("conv_bias", [False, True], ids=["no_bias", "bias"])
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "plain"])
def test_fold_batchnorm_equals_conv_then_eval_bn(conv_bias, affine):
    conv = nn.Conv1d(5, 7, 3, padding=1, bias=conv_bias)
    bn = nn.BatchNorm1d(7, affine=affine, eps=1e-3)
    with torch.no_grad():
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.2, 3.0)
        if affine:
            bn.weight.normal_()
            bn.bias.normal_()
    bn.eval()
    x = torch.randn(3, 5, 11)
    weight, bias = fold_batchnorm(conv.weight, conv.bias, bn)
    expected = bn(conv(x))
    assert expected.abs().max() > 1
    torch.testing.assert_close(temporal_conv_ref(x, weight, bias, padding=1), expected)
    # the fold stays differentiable in the conv and BatchNorm parameters
    temporal_conv_ref(x, weight, bias, padding=1).sum().backward()
    assert conv.weight.grad.abs().max() > 0


def test_fold_batchnorm_refuses_training_mode():
    with pytest.raises(ValueError, match=r"bn.eval\(\)"):
        fold_batchnorm(torch.randn(4, 2, 3), None, nn.BatchNorm1d(4))


# ---- dispatch and argument checks ------------------------------------------------------------
def test_dispatch():
    x, w = torch.randn(2, 3, 8, dtype=torch.float64), torch.randn(4, 3, 3, dtype=torch.float64)
    # "auto" on CPU is the reference: float64 works there and is refused by the kernels
    if DEVICE == "cpu":
        torch.testing.assert_close(temporal_conv(x, w), temporal_conv_ref(x, w), rtol=0, atol=0)
    with pytest.raises(ValueError, match="takes float32, float16, bfloat16, got torch.float64"):
        temporal_conv(x.to(DEVICE), w.to(DEVICE), backend="triton")
    with pytest.raises(ValueError, match="backend must be one of.*got 'cudnn'"):
        temporal_conv(x, w, backend="cudnn")


def test_triton_on_cpu_without_interpreter_says_how(monkeypatch):
    monkeypatch.setattr(dispatch, "interpreted", lambda kernel: False)
    with pytest.raises(ValueError, match="CUDA tensors, or CPU tensors with TRITON_INTERPRET=1"):
        temporal_conv(torch.randn(1, 2, 5), torch.randn(2, 2, 3), backend="triton")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(weight=torch.randn(4, 2, 3)), r"expected \[C_out, 3, K\]"),
        (dict(groups=2), r"groups=2: must divide C_in=3"),
        (dict(bias=torch.randn(5)), r"bias \(5,\): expected \(4,\)"),
        (dict(residual=torch.randn(2, 4, 7)), r"residual \(2, 4, 7\): expected \(2, 4, 6\)"),
        (dict(weight=torch.randn(4, 3, 9)), "T=8 steps are too few"),
        (dict(stride=0), "stride=0: must be an integer >= 1"),
        (dict(activation="gelu"), "activation='gelu'"),
        (dict(weight=torch.randn(4, 3, 3).half()), "weight is torch.float16"),
    ],
)
def test_argument_errors(kwargs, message):
    args = dict(x=torch.randn(2, 3, 8), weight=torch.randn(4, 3, 3)) | kwargs
    x, weight = args.pop("x").to(DEVICE), args.pop("weight").to(DEVICE)
    args = {k: v.to(DEVICE) if isinstance(v, torch.Tensor) else v for k, v in args.items()}
    with pytest.raises(ValueError, match=message):
        temporal_conv(x, weight, backend="triton", **args)


def test_autocast_runs_in_the_autocast_dtype():
    x, w = torch.randn(2, 3, 8, device=DEVICE), torch.randn(4, 3, 3, device=DEVICE)
    dtype = torch.float16 if DEVICE == "cuda" else torch.bfloat16
    with torch.autocast(DEVICE, dtype=dtype):
        y = temporal_conv(x, w, activation="relu", backend="triton")
    assert y.dtype == dtype
    _assert_close(y, temporal_conv_ref(x.double(), w.double(), activation="relu"), dtype, "y")


def test_kernel_backend_is_a_validated_run_option_and_a_cli_flag():
    from fastdavs.train.cli import build_parser

    model = DavsModel(DavsConfig.from_preset("tiny", word_head="tcn"))
    convs = [m for m in model.modules() if isinstance(m, layers.TemporalConv1d)]
    assert model.kernel_backend == "auto" and {c.backend for c in convs} == {"auto"}
    with pytest.raises(ConfigError, match="kernel_backend='cuda': choose one of auto, triton, ref"):
        model.set_kernel_backend("cuda")
    assert model.set_kernel_backend("ref") is model
    assert model.kernel_backend == "ref" and {c.backend for c in convs} == {"ref"}
    assert not hasattr(DavsConfig(), "kernel_backend")  # not architecture: never saved
    assert "--kernel-backend" in build_parser()._option_string_actions


# ---- the model's temporal stacks: "triton" against "ref" -------------------------------------
TINY_TCN = DavsConfig.from_preset("tiny", word_head="tcn")


def _randomize_norms(module: nn.Module) -> None:
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.running_mean.normal_(0, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.normal_(1, 0.3)
                m.bias.normal_(0, 0.3)


@pytest.mark.parametrize(
    ("build", "make_input", "fused"),
    [
        # [N, F, K] MFCC windows; eval: conv+BN+LeakyReLU with the pools' strides 3 and 2, conv
        (
            AudioWordEncoder,
            lambda cfg: torch.randn(6, 20, 12) * 3,
            [("leaky_relu", 3), ("leaky_relu", 2), (None, 1)],
        ),
        # [B, T, word_dim]; eval: conv+BN+ReLU twice
        (WordClassifier, lambda cfg: torch.randn(3, 7, cfg.word_dim), [("relu", 1)] * 2),
    ],
    ids=["audio_encoder", "tcn_head"],
)
def test_model_triton_backend_matches_ref(build, make_input, fused, monkeypatch):
    launches = []

    def spy(*args, **kwargs):
        launches.append((kwargs.get("activation"), kwargs["stride"], kwargs["backend"]))
        return temporal_conv(*args, **kwargs)

    monkeypatch.setattr(layers, "temporal_conv", spy)
    ref = layers.use_kernel_backend(build(TINY_TCN), "ref").to(DEVICE)
    _randomize_norms(ref)
    fast = layers.use_kernel_backend(build(TINY_TCN), "triton").to(DEVICE)
    fast.load_state_dict(ref.state_dict())  # same keys: checkpoints load either way
    x = make_input(TINY_TCN).to(DEVICE)

    # train mode: convs through the kernel, BatchNorm and activations as modules
    y_fast, y_ref = fast.train()(x), ref.train()(x)
    dy = torch.randn_like(y_ref)
    grads_fast = torch.autograd.grad(y_fast, list(fast.parameters()), dy)
    grads_ref = torch.autograd.grad(y_ref, list(ref.parameters()), dy)
    torch.testing.assert_close(y_fast, y_ref, rtol=1e-4, atol=1e-5)
    names = [name for name, _ in ref.named_parameters()]
    for name, g_fast, g_ref in zip(names, grads_fast, grads_ref, strict=True):
        torch.testing.assert_close(g_fast, g_ref, rtol=1e-4, atol=1e-5, msg=name)
    for buf_fast, buf_ref in zip(fast.buffers(), ref.buffers(), strict=True):
        torch.testing.assert_close(buf_fast, buf_ref)  # same BatchNorm statistics
    assert [a for a, _, backend in launches if backend == "triton"] == [None] * len(fused)

    # eval mode: BatchNorm folded, conv + BN + activation (+ subsampling) in one launch each
    launches.clear()
    with torch.no_grad():
        y_fast, y_ref = fast.eval()(x), ref.eval()(x)
    assert [(a, s) for a, s, backend in launches if backend == "triton"] == fused
    assert y_ref.abs().max() > 0.1
    torch.testing.assert_close(y_fast, y_ref, rtol=1e-4, atol=1e-5)
