"""Frame synthesis behind one interface, eager PyTorch or a built engine: the model end of
`fastdavs-generate` and of the streaming API.

    synth = Synthesizer.from_checkpoint(CKPT)      # or Synthesizer.from_engine(DIR)
    ident = synth.identity(face)                    # face [3, S, S] in [0, 1], once per face
    frames = synth.frames(mfcc, ident)              # mfcc [N, 20, 12] -> frames [N, 3, S, S]
    frames = synth.frames_from_video(faces, ident)  # aligned faces [N, 3, S, S] (eager only)

The split is the engines' (DESIGN.md, Engines): what the generator reads of a face (the
identity encoder's pid vector and skip for the davs decoder, the identity image and the mouth
editor's encoding of its edit box for the editor: `IdentityCache`) is computed once per face
and reused for every frame; each frame then costs one word encoder pass and one generator pass.
Frames are decoded `batch_size` at a time, so any number of frames runs in bounded memory;
outputs are float32 on the CPU, clamped to [0, 1].

The original's two test-time hacks (spec/davs.md §4) are options here, off by default:
- `wid_scale`: the word-ID vectors are multiplied by it before the generator. The original used
  1.5 for audio and 0.8 for video, which exaggerates (or damps) the mouth motion the generator
  draws at the price of leaving the feature distribution it was trained on.
- `finetune`: a few Adam steps on the identity encoder and the generator so that the generator
  redraws this one face from its own speech features (one-shot adaptation; the original's 5
  steps at lr 2e-4 with a fresh optimiser every step). It sharpens the identity at the cost of
  a few forward+backward passes before generation. With the mouth editor only the editor is
  tuned (it does not read the identity encoder), towards this face's jaw, chin and cheeks: the
  rest of the frame is the face's own pixels already. Eager only.

Both change what the engines' frame graph computes, so an engine refuses them (`OptionError`).
Dimension letters: N frames, S = image_size, D word_dim.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import numpy as np
import torch

from fastdavs.config import DavsConfig
from fastdavs.errors import OptionError
from fastdavs.io.checkpoint import load_model
from fastdavs.machine import cpu_has_native_bf16, parse_device
from fastdavs.model import DavsModel, MouthEditor
from fastdavs.model.face_code import IdentityCache, IdentityGraph, decode_frames
from fastdavs.model.losses import mouth_mask

log = logging.getLogger(__name__)

DEFAULT_BATCH = 25  # one second of video per pass
FINETUNE_LR = 2e-4  # the original's one-shot adaptation
FINETUNE_WEIGHT = 4.0  # its L1 weight (0-255 scale) ...
FINETUNE_MOUTH_WEIGHT = 1e-3  # ... and the relative weight of the mouth box: the identity
# image's mouth is not the one the speech asks for, so it is almost left out
FINETUNE_WINDOWS = 5  # speech features the original fine-tunes on (its first 5 windows)

__all__ = ["IdentityCache", "Synthesizer"]


class Synthesizer:
    """Frames of one face from MFCC windows (or aligned video frames), eager or engine.

    Build it with `from_checkpoint` or `from_engine`. `config` is the model's DavsConfig;
    `batch_size` frames go through the model per pass.
    """

    def __init__(
        self,
        config: DavsConfig,
        *,
        model: DavsModel | None = None,
        engine=None,
        device: torch.device | str = "cpu",
        amp_dtype: torch.dtype | None = None,
        batch_size: int = DEFAULT_BATCH,
    ):
        if batch_size < 1:
            raise OptionError(f"--batch-size {batch_size}: must be at least 1")
        self.config = config
        self.model, self.engine = model, engine
        self.device = torch.device(device)
        self.amp_dtype, self.batch_size = amp_dtype, batch_size

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        device: str | torch.device = "cpu",
        amp: bool = False,
        batch_size: int = DEFAULT_BATCH,
    ) -> Synthesizer:
        """The eager model of a checkpoint (or a run directory's latest one).

        Args:
            path: checkpoint or run directory.
            device: where the model runs ("cpu", "cuda", "cuda:1").
            amp: reduced-precision autocast: float16 on CUDA, bfloat16 on a CPU that runs it
                natively; elsewhere a warning and float32 (bf16 is ~10x slower there).
            batch_size: frames per pass.

        Raises:
            CheckpointError: missing or damaged checkpoint; OptionError: bad device.
        """
        dev = parse_device(device)
        model = load_model(path).to(dev).eval().requires_grad_(False)
        amp_dtype = None
        if amp and dev.type == "cuda":
            amp_dtype = torch.float16
        elif amp and cpu_has_native_bf16():
            amp_dtype = torch.bfloat16
        elif amp:
            log.warning(
                "--amp: this CPU has no native bfloat16 (oneDNN reports none); bf16 autocast "
                "would run about 10x slower, so generation stays in float32"
            )
        return cls(model.cfg, model=model, device=dev, amp_dtype=amp_dtype, batch_size=batch_size)

    @classmethod
    def from_engine(
        cls,
        path: str | Path,
        checkpoint: str | Path | None = None,
        batch_size: int = DEFAULT_BATCH,
        threads: int = 0,
    ) -> Synthesizer:
        """An engine directory from `fastdavs-build-engine` (audio-driven only).

        Args:
            path: the engine directory.
            checkpoint: optional; refuse the engine unless it was built from this checkpoint.
            batch_size: frames per call (the engine splits further at its own maximum batch).
            threads: ONNX Runtime / OpenVINO inference threads (0: one per core).

        Raises:
            EngineError: bad or mismatched engine; BackendUnavailable: its backend is missing.
        """
        from fastdavs.engines import load

        engine = load(path, checkpoint=checkpoint, threads=threads)
        return cls(engine.config, engine=engine, batch_size=batch_size)

    @property
    def backend(self) -> str:
        """ "eager" or the engine's backend ("onnxruntime", "openvino", "tensorrt")."""
        return "eager" if self.engine is None else self.engine.backend

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _faces(self, images, what: str) -> torch.Tensor:
        """[N, 3, S, S] float in [0, 1] or [N, S, S, 3] uint8 (one face may drop the N) ->
        float32 [N, 3, S, S] on the CPU."""
        s = self.config.image_size
        x = (
            torch.from_numpy(np.ascontiguousarray(images))
            if isinstance(images, np.ndarray)
            else images
        )
        if x.dtype == torch.uint8:
            x = x.movedim(-1, -3).float() / 255  # [..., S, S, 3] -> [..., 3, S, S]
        x = x.float()
        if x.dim() == 3:
            x = x[None]
        if x.dim() != 4 or tuple(x.shape[1:]) != (3, s, s):
            raise OptionError(
                f"{what}: expected [N, 3, {s}, {s}] floats in [0, 1] or [N, {s}, {s}, 3] uint8 "
                f"(this model's image size), got {list(images.shape)}"
            )
        return x.cpu()

    @torch.inference_mode()
    def identity(self, face) -> IdentityCache:
        """face [3, S, S] float in [0, 1] (or [S, S, 3] uint8) -> IdentityCache of one face
        (its tensors have batch 1; `fastdavs.model.face_code.identity_shapes` names them)."""
        x = self._faces(face, "identity")[:1]
        if self.engine is not None:
            return self.engine.identity(x)
        with self._autocast():
            identity = IdentityGraph(self.model)(x.to(self.device))
        return IdentityCache(*(t.float() for t in identity))

    def _check_scale(self, wid_scale: float) -> None:
        if self.engine is not None and wid_scale != 1.0:
            raise OptionError(
                f"--wid-scale {wid_scale}: an engine's frame graph has no word-feature scaling; "
                "use --checkpoint (eager) for it, or leave it at 1"
            )

    @torch.inference_mode()
    def frames(self, mfcc, identity: IdentityCache, wid_scale: float = 1.0) -> torch.Tensor:
        """MFCC windows [N, 20, 12] -> frames [N, 3, S, S] float32 in [0, 1] on the CPU.

        `wid_scale` multiplies the word-ID vectors (eager only; 1 leaves them as trained).
        """
        self._check_scale(wid_scale)
        cfg = self.config
        mfcc = torch.as_tensor(mfcc, dtype=torch.float32)
        if mfcc.dim() != 3 or tuple(mfcc.shape[1:]) != (cfg.mfcc_steps, cfg.mfcc_coeffs):
            raise OptionError(f"frames: mfcc must be [N, 20, 12], got {list(mfcc.shape)}")
        if self.engine is not None:
            parts = [self.engine.frames(c, identity) for c in mfcc.split(self.batch_size)]
        else:
            encode = self.model.audio_encoder
            parts = [
                self._decode(encode, c, identity, wid_scale) for c in mfcc.split(self.batch_size)
            ]
        return torch.cat(parts).float().clamp_(0, 1).cpu()

    @torch.inference_mode()
    def frames_from_video(
        self, mouth_frames, identity: IdentityCache, wid_scale: float = 1.0
    ) -> torch.Tensor:
        """Aligned face frames of the driving video [N, 3, S, S] float in [0, 1] (or
        [N, S, S, 3] uint8; the whole aligned face, which is what the video encoder reads)
        -> frames [N, 3, S, S] float32 in [0, 1] on the CPU. Eager only."""
        if self.engine is not None:
            raise OptionError(
                "--driving-video: an engine's frame graph is audio-driven only (MFCC in); "
                "use --checkpoint for video-driven generation"
            )
        x = self._faces(mouth_frames, "frames_from_video")
        encode = self.model.video_encoder
        parts = [self._decode(encode, c, identity, wid_scale) for c in x.split(self.batch_size)]
        return torch.cat(parts).float().clamp_(0, 1).cpu()

    def _decode(self, encoder, x: torch.Tensor, identity: IdentityCache, wid_scale: float):
        """One batch through a word encoder and the generator: x [n, ...] -> [n, 3, S, S]."""
        identity = [t.to(self.device) for t in identity]
        with self._autocast():
            wid = encoder(x.to(self.device)) * wid_scale  # [n, D]
            return decode_frames(self.model.generator, identity, wid).cpu()

    def finetune(self, face, *, mfcc=None, video=None, steps: int = 5, lr: float = FINETUNE_LR):
        """One-shot adaptation to `face` before generating (the original's test-time fine-tune).

        `steps` Adam steps, each with a fresh optimiser (as the original), update the identity
        encoder and the generator (the mouth editor alone, where it is the generator: it does
        not read the identity encoder) so that the generator redraws `face` from speech features:
        the first 5 MFCC windows of the driving audio (`mfcc` [N, 20, 12]) or the first 5
        aligned frames of the driving video (`video` [N, 3, S, S]). The loss is the original's,
        4 x L1 on the 0-255 scale with the mouth box weighted 0.001 (the face's own mouth is not
        the one the speech asks for). BatchNorm layers stay in eval mode, so their statistics do
        not drift to this one face (the original let them adapt for its first identity only, by
        accident). Changes this Synthesizer's model in place; compute `identity` afterwards.

        Raises:
            OptionError: an engine (its graphs are fixed), or steps < 0.
        """
        if steps < 0:
            raise OptionError(f"--finetune-steps {steps}: must be 0 or more")
        if self.engine is not None and steps:
            raise OptionError(
                f"--finetune-steps {steps}: an engine's graphs are fixed when it is built; use "
                "--checkpoint (eager) to fine-tune"
            )
        if not steps:
            return
        model, dev, cfg = self.model, self.device, self.config
        real = self._faces(face, "finetune")[:1].to(dev)  # [1, 3, S, S]
        with torch.inference_mode():
            if video is not None:
                driver = self._faces(video, "finetune")[:FINETUNE_WINDOWS].to(dev)
                wid = model.video_encoder(driver)
            else:
                driver = torch.as_tensor(mfcc, dtype=torch.float32)[:FINETUNE_WINDOWS].to(dev)
                wid = model.audio_encoder(driver)
        wid = wid.clone()  # [n, D], an ordinary tensor autograd may read
        s = cfg.image_size
        weight = 1 - (1 - FINETUNE_MOUTH_WEIGHT) * mouth_mask(s, s, cfg.mouth_box_px, device=dev)
        editor = isinstance(model.generator, MouthEditor)  # it does not read the identity encoder
        modules = [model.generator] if editor else [model.identity_encoder, model.generator]
        params = [p for m in modules for p in m.parameters()]
        for p in params:
            p.requires_grad_(True)
        try:
            for step in range(steps):
                opt = torch.optim.Adam(params, lr=lr)  # fresh each step, as the original
                identity = IdentityGraph(model)(real)
                fake = decode_frames(model.generator, identity, wid)  # [n, 3, S, S]
                loss = FINETUNE_WEIGHT * ((fake - real) * 255 * weight).abs().mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                log.info("fine-tune step %d/%d: L1 loss %.3f", step + 1, steps, loss.item())
        finally:
            for p in params:
                p.requires_grad_(False)
