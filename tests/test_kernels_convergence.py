"""Training with the Triton kernels follows training with the references, on any CPU.

The kernels (temporal convolutions of the audio encoder's branch B and the `tcn` word head, the
contrastive loss) reorder fp32 sums: implicit-GEMM tiles, split dw reductions, the Gram form of
the contrastive distance. How much that changes a result depends on the machine as much as on
the kernels: oneDNN and the matmul kernels of another CPU sum in another order too, and some
parts of the model amplify any rounding (a BatchNorm over a near-constant channel, a gradient
that is a small difference of large terms). A tolerance measured on one CPU does not hold on
another.

So each fused path is judged by its error against the truth, computed in float64 with the
reference backend, next to the fp32 reference's own error against the same truth:

    |fused - truth| <= SLACK * |ref32 - truth| + FLOOR * |truth of the layer|   (L2 norms)

per tensor; "the layer" is every gradient of the module that owns the tensor (a convolution's
or a BatchNorm's weight and bias together), and for a loss value the value itself.

- `|ref32 - truth|` is this machine's fp32 rounding, amplified by the model exactly as the fused
  path's is: the two paths run the same ops but for the kernels, in the same precision.
- SLACK = 4: the fused path adds one more reordering of the sums it replaces, of the same order
  as those of the reference (both are fp32 sums of the same terms); independent rounding errors
  add in quadrature, so its error is about sqrt(2) x the reference's, and 4 leaves room for the
  spread of a few random roundings.
- FLOOR = 2**-14 (about 6e-5, 1024 units of fp32 rounding): where the reference happens to be
  almost exact, a fused sum of K terms may still be off by its own rounding, sqrt(K) u for K up
  to a few thousand (the dw reductions over B*T), about 2**-18; the floor is 16x that.
- The floor is relative to the layer, not the tensor alone, because a gradient can be zero by
  the model's structure while its rounding is not. A BatchNorm followed (through a ReLU and a
  convolution) by another BatchNorm gives the same output when its weight and bias are scaled
  together, so weight . dL/dweight + bias . dL/dbias = 0: with the bias still near 0 the weight's
  gradient is near 0 too (1e-6 to 1e-4 for the video encoder's first BatchNorm, against 0.1 for
  its bias), yet both are sums of the same terms (dL/dbias = sum dy, dL/dweight = sum dy * x_hat)
  with the same absolute rounding, about 3e-7. That weight gradient is rounding noise in fp32,
  up to 2% of itself in the reference too, and the ratio of two such noises over its 8 elements
  is heavy-tailed (it reached 4.6 with ONEDNN_MAX_CPU_ISA=AVX2); scaled by the layer's gradient,
  the floor is the size of the rounding that the terms allow.
A wrong kernel (a missed tile, a wrong index, a gradient off by a few percent) breaks this by
orders of magnitude, whatever the CPU: scaling any one launcher's output by 1.001 fails the
one-step test by 15x to 30x. Measured on an AMD Zen 4 (AVX-512) with oneDNN's default kernels
and with ONEDNN_MAX_CPU_ISA=AVX2, AVX and SSE41: the fused error is at most 1.65x the
reference's wherever that exceeds 1e-6 of the layer's gradient, and no check uses more than
0.25 of its bound (that is where the fused and reference results are equal).

What is compared is stable by construction: every comparison starts from identical weights, so
the differences are one step's rounding. Training itself is not compared step after step:
Adam's sign-like first updates, the GAN losses and the kinks of ReLU-family activations turn
any rounding difference into trajectories that part by far more than rounding, on any CPU (and
the fp32 reference parts from float64 just as fast). For both word heads (`concat` exercises
branch B and the contrastive loss, `tcn` adds the head's temporal convolutions):
- one step from the initial weights: the generator-side losses of the `wid` and `gen` stages
  and every gradient;
- along a training trajectory: the float64 reference trains `STEPS` Adam steps of each stage,
  and at every step the fused and fp32 reference models start from its weights; losses and
  gradients are checked there, so the kernels are right on trained weights, not only at init.
A third test runs the real `Trainer` with the run option `kernel_backend="triton"` and checks
that the kernels are what it runs. The Triton host launchers are spied on in all three, so a
fused run cannot pass by silently taking the reference path.

Randomness is made identical across the three models: dropout masks are drawn in float32 for
every dtype (the float64 model would otherwise draw other masks) and `nn.Dropout` is off.
"""

import importlib
import json

import pytest
import torch
from torch import nn

from fastdavs.config import DavsConfig
from fastdavs.data.dataset import example_batch
from fastdavs.model import DavsModel
from fastdavs.train import stages
from fastdavs.train.loop import RunOptions, Trainer

# The modules, not the same-named functions that fastdavs.kernels re-exports.
conv_kernels = importlib.import_module("fastdavs.kernels.temporal_conv")
contrastive_kernels = importlib.import_module("fastdavs.kernels.contrastive")
video_encoder = importlib.import_module("fastdavs.model.video_encoder")

SLACK = 4.0
FLOOR = 2.0**-14
STAGES = ("wid", "gen")
STEPS = 3  # Adam steps per stage along the trajectory
BATCH = 4

# Host launchers of the Triton kernels: every Triton-path call goes through one of them.
LAUNCHERS = (
    (conv_kernels, "conv_forward"),
    (conv_kernels, "conv_dx"),
    (conv_kernels, "conv_dweight"),
    (contrastive_kernels, "contrastive_forward"),
    (contrastive_kernels, "contrastive_backward"),
)


def _spy(monkeypatch) -> dict[str, int]:
    calls = dict.fromkeys((name for _, name in LAUNCHERS), 0)
    for module, name in LAUNCHERS:
        real = getattr(module, name)

        def counted(*args, _real=real, _name=name, **kwargs):
            calls[_name] += 1
            return _real(*args, **kwargs)

        monkeypatch.setattr(module, name, counted)
    return calls


def _float32_masks(x: torch.Tensor, training: bool) -> torch.Tensor:
    """The video encoder's Dropout(0.5) with its uniforms drawn in float32 whatever x's dtype,
    so that the float64 model drops the same units as the float32 ones from the same seed."""
    if not training:
        return x
    u = torch.rand(x.shape, dtype=torch.float32, device=x.device).to(x.dtype)
    return x * (u >= 0.5) * 2.0


def _models(word_head: str) -> dict[str, DavsModel]:
    """The tiny preset with identical weights: "fused" (Triton kernels, fp32), "ref" (PyTorch
    references, fp32) and "truth" (PyTorch references, float64)."""
    cfg = DavsConfig.from_preset("tiny", word_head=word_head)
    fused = DavsModel(cfg).set_kernel_backend("triton")
    ref = DavsModel(cfg).set_kernel_backend("ref")
    ref.load_state_dict(fused.state_dict())
    truth = DavsModel(cfg).set_kernel_backend("ref")
    truth.load_state_dict(fused.state_dict())
    models = {"fused": fused, "ref": ref, "truth": truth.double()}
    for model in models.values():
        for module in model.modules():
            if isinstance(module, nn.Dropout):
                module.p = 0.0
    return models


def _batch(cfg: DavsConfig, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    batch = example_batch(cfg, BATCH, seed=1)
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in batch.items()}


def _generator_step(model: DavsModel, batch: dict, stage: str) -> tuple[dict, dict]:
    """The generator-side loss parts of one `stage` step and every parameter's gradient."""
    torch.manual_seed(7)  # the same dropout masks in every model
    model.zero_grad(set_to_none=True)
    loss, parts = stages.generator_loss(model, stages.forward(model, batch, stage), batch, stage)
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    return {k: v.double() for k, v in parts.items()}, grads


def _check(
    what: str,
    fused: torch.Tensor,
    ref: torch.Tensor,
    truth: torch.Tensor,
    layer: float | None = None,
) -> None:
    """The bound of the module docstring for one tensor or loss value; `layer` is the norm of
    the owning layer's float64 gradient (`_layer_norms`), None for a loss value."""
    truth = truth.double()
    err_fused = (fused.double() - truth).norm().item()
    err_ref = (ref.double() - truth).norm().item()
    scale = truth.norm().item() if layer is None else layer
    bound = SLACK * err_ref + FLOOR * scale
    assert err_fused <= bound, (
        f"{what}: fused error {err_fused:.3g} against float64, above {bound:.3g} "
        f"(fp32 reference error {err_ref:.3g}, |truth| {truth.norm().item():.3g}, "
        f"|layer| {scale:.3g})"
    )


def _check_step(what: str, fused: tuple, ref: tuple, truth: tuple) -> None:
    """`_check` every loss part and every gradient of one `_generator_step` per model."""
    (parts_f, grads_f), (parts_r, grads_r), (parts_t, grads_t) = fused, ref, truth
    assert parts_f.keys() == parts_t.keys() and grads_f.keys() == grads_t.keys()
    for key in parts_t:
        _check(f"{what} loss {key}", parts_f[key], parts_r[key], parts_t[key])
    layer = _layer_norms(grads_t)
    for name in grads_t:
        _check(f"{what} grad {name}", grads_f[name], grads_r[name], grads_t[name], layer[name])


def _layer_norms(grads: dict[str, torch.Tensor]) -> dict[str, float]:
    """For each parameter name, the L2 norm of all gradients of the module that owns it."""
    layers: dict[str, float] = {}
    for name, g in grads.items():
        layer = name.rpartition(".")[0]
        layers[layer] = layers.get(layer, 0.0) + g.double().square().sum().item()
    return {name: layers[name.rpartition(".")[0]] ** 0.5 for name in grads}


@pytest.fixture
def same_masks(monkeypatch):
    monkeypatch.setattr(video_encoder, "_dropout_half", _float32_masks)


@pytest.mark.parametrize("word_head", ["concat", "tcn"])
def test_one_step_losses_and_gradients_match_the_reference(monkeypatch, same_masks, word_head):
    calls = _spy(monkeypatch)
    models = _models(word_head)
    for stage in STAGES:
        out = {
            name: _generator_step(
                model, _batch(model.cfg, torch.float64 if name == "truth" else torch.float32), stage
            )
            for name, model in models.items()
        }
        _check_step(stage, out["fused"], out["ref"], out["truth"])
    assert all(n > 0 for n in calls.values()), f"a Triton launcher never ran: {calls}"


@pytest.mark.parametrize("word_head", ["concat", "tcn"])
def test_gradients_match_along_a_training_trajectory(monkeypatch, same_masks, word_head):
    calls = _spy(monkeypatch)
    models = _models(word_head)
    truth = models["truth"]
    cfg = truth.cfg
    adam = torch.optim.Adam(truth.parameters(), lr=cfg.optim.lr, betas=(0.9, 0.999))
    start = {n: p.detach().clone() for n, p in truth.named_parameters()}
    batches = {dtype: _batch(cfg, dtype) for dtype in (torch.float32, torch.float64)}
    for stage in STAGES:
        for step in range(1, STEPS + 1):
            out = {}
            for name, model in models.items():
                if name != "truth":  # this step starts from the trajectory's weights
                    model.load_state_dict(truth.state_dict())
                dtype = torch.float64 if name == "truth" else torch.float32
                out[name] = _generator_step(model, batches[dtype], stage)
            _check_step(f"{stage} step {step}", out["fused"], out["ref"], out["truth"])
            adam.step()  # the gradients of the float64 model's last backward
    moved = max((p.detach() - start[n]).abs().max().item() for n, p in truth.named_parameters())
    assert moved > cfg.optim.lr, "training did not move the weights: later steps would repeat"
    assert all(n > 0 for n in calls.values()), f"a Triton launcher never ran: {calls}"


def test_trainer_runs_the_kernels(shards, tmp_path, monkeypatch):
    """The run option `kernel_backend="triton"` reaches every launcher through the training loop
    (one `wid` and one `gen` step), and the run's losses are finite."""
    monkeypatch.setattr(Trainer, "_write_samples", lambda self, *args: None)
    calls = _spy(monkeypatch)
    cfg = DavsConfig.from_preset("tiny", num_words=3, num_identities=4)
    out = tmp_path / "run"
    opts = RunOptions(
        data=shards, out=out, stages=STAGES, max_steps=1, workers=0, evaluate=False,
        kernel_backend="triton",
    )  # fmt: skip
    Trainer(cfg, opts).run()
    assert all(n > 0 for n in calls.values()), f"a Triton launcher never ran: {calls}"
    log = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [(r["stage"], r["bad_steps"]) for r in log] == [("wid", 0), ("gen", 0)]
