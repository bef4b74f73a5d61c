"""The one configuration of fastdavs: architecture, loss weights and optimiser settings.

`DavsConfig` flows CLI -> model -> checkpoint -> engine `config.json`. It is built from a named
preset (`paper`, `small`, `tiny`), can be overridden field by field, and round-trips through JSON.
`validate()` raises `ConfigError` with a message naming the field and what to do.

Dimension letters used across the project: B batch, T frames, C channels, H/W height/width,
F MFCC steps, K MFCC coefficients, D feature size.
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path

from fastdavs.errors import FastdavsError

WORD_HEADS = ("concat", "tcn")
VIDEO_REGIONS = ("face", "mouth")
GENERATORS = ("davs", "mouth_editor")
LR_DECAYS = ("constant", "linear")
BOX_METAVAR = ("TOP", "BOTTOM", "LEFT", "RIGHT")  # the command-line form of a box field


class ConfigError(FastdavsError, ValueError):
    """A configuration value is invalid; the message names the field and the fix."""


@dataclass
class LossWeights:
    """Weights of the DAVS losses (spec/davs.md §2; defaults are the original `Options.py`)."""

    reconstruction: float = 4.0  # lambda_A: L1 over the whole frame (0-255 scale)
    reconstruction_mouth: float = 8.0  # lambda_B: L1 inside the mouth box
    smoothness: float = 5.0  # temporal smoothness outside the mouth box
    gan: float = 1.0  # sequence GAN, patch head
    gan_sync: float = 1.0  # sequence GAN, audio-sync head
    contrastive: float = 1.0
    contrastive_margin: float = 1.0
    word_ce: float = 1.0  # shared word classifier, per modality
    modality_flip: float = 5.0  # encoders fooling the modality discriminator
    pid_uniform: float = 1e6  # pid -> word adversary, uniform-softmax target
    wid_uniform: float = 1e6  # wid -> person adversary, uniform-softmax target
    adversary_ce: float = 1.0  # classifier step of both adversaries
    # Not in the original: the wid -> person objective with a classifier refitted in closed form
    # at every step (`fastdavs.model.adversaries.PersonProbe`): KL(uniform || its softmax),
    # audio + video, in wid and gen. It reads a clip's person through the person's other clips
    # in the batch and in its bank of DavsConfig.probe_bank recent clips, so it wants batches
    # with several clips per person (`OptimConfig.identity_group`).
    probe_uniform: float = 0.0
    # Not in the original: the share of a batch's word-ID scatter that lies between identities
    # (`fastdavs.model.losses.identity_scatter_loss`, audio + video, in wid and gen). It needs
    # batches with several clips per identity (`OptimConfig.identity_group`).
    identity_scatter: float = 0.0
    # Not in the original: each clip's audio is encoded twice, under two independent draws of
    # the voice changes DavsConfig.audio_warp and audio_jitter, and the word-ID features of the
    # two views are pulled together (`fastdavs.model.losses.view_consistency_loss`, in wid and
    # gen): what a change of speaker moves, the word-ID must not carry. No labels needed.
    view_consistency: float = 0.0
    # Not in the original: mean squared error of the mouth's ground truth of every frame
    # (SynthLRW's visemes: jaw opening, lip width, rounding, teeth) read from its word-ID by a
    # linear head (`DavsModel.viseme_head`, built only when this is > 0), audio + video, in wid.
    # Geometry the word space must carry, from data that records it; 0 on other data.
    viseme: float = 0.0


@dataclass
class OptimConfig:
    """Adam settings shared by the generator-side and discriminator-side optimisers."""

    lr: float = 2e-4
    # lr of the disentangling adversaries' classifiers (C_p^w, C_w^p) = lr * adversary_lr_scale,
    # for adversaries that learn too slowly to track the encoders (see the small preset).
    adversary_lr_scale: float = 1.0
    beta1: float = 0.9
    beta2: float = 0.999
    batch_size: int = 16  # clips per step
    # Clips of one identity that follow each other in the training order (1: a plain shuffle),
    # so a batch holds batch_size / identity_group identities; `loss.identity_scatter` needs > 1.
    identity_group: int = 1
    # "constant" (the original) or "linear": the lr of the last stage, `gen`, falls linearly
    # from its full value at the first step to 0 after the last (`lr_scale`). The earlier
    # stages keep theirs: `gen` goes on training what they train, at the full lr.
    lr_decay: str = "constant"

    def lr_scale(self, stage: str, step: int, total: int) -> float:
        """Factor on the lr of `stage`'s step `step` (0-based) of `total` scheduled steps."""
        return 1.0 - step / total if self.lr_decay == "linear" and stage == "gen" else 1.0


@dataclass
class ScheduleConfig:
    """How long each training stage runs and how often the trainer logs, samples and saves."""

    pid_steps: int = 20000  # identity pretraining
    wid_steps: int = 20000  # shared word space
    render_steps: int = 0  # the generator alone on frozen word-ID (not in the original)
    gen_steps: int = 100000  # joint generation
    log_every: int = 10  # a metrics.jsonl record (loss means over these steps) every N steps
    sample_every: int = 1000  # sample grid (PNG) and sample mp4 during `render` and `gen`
    checkpoint_every: int = 500
    max_bad_steps: int = 20  # consecutive non-finite steps before the run stops
    seed: int = 0


@dataclass
class DavsConfig:
    """Architecture of the whole DAVS system plus its loss and optimiser settings.

    Channel widths are those of the original code scaled by `width` (see `ch`); spatial sizes
    follow from `image_size` (the original is 256).
    """

    preset: str = "paper"
    image_size: int = 256  # square RGB face crops in [0, 1]
    width: float = 1.0  # channel multiplier on the original widths
    pid_dim: int = 256  # person-ID vector
    word_dim: int = 256  # per-frame word-ID vector
    num_words: int = 500  # LRW vocabulary
    num_identities: int = 40145  # identity classes for pid pretraining / wid->person adversary
    num_landmarks: int = 68  # channels of the video encoder's heatmap layer
    hourglass_depth: int = 4
    mfcc_steps: int = 20  # F: MFCC frames per video-frame window (0.2 s)
    mfcc_coeffs: int = 12  # K: c1..c12
    seq_len: int = 12  # frames per word-ID sequence (stride 2 over the clip)
    word_head: str = "concat"  # "concat" (original MLP over concatenated frames) | "tcn"
    adv_frames: int = 20  # consecutive frames read by the pid->word adversary
    gan_frames: int = 6  # frames stacked by the sequence discriminator
    # Clips of earlier steps the closed-form person probe (loss.probe_uniform) is fitted on,
    # beside the batch: a few steps' worth, as word-ID features drift fast while training.
    probe_bank: int = 64
    mouth_box: tuple[float, float, float, float] = field(
        default=(170 / 256, 234 / 256, 64 / 256, 192 / 256), metadata={"metavar": BOX_METAVAR}
    )
    # "davs": the original decoder, which redraws the whole face from a 1x1 code and one H/8
    # skip. "mouth_editor": a small U-Net that edits the lower face of the identity frame
    # (fastdavs/model/mouth_editor.py). The default is the original, so that a config.json
    # written before this field existed keeps meaning it; the CPU presets choose the editor.
    generator: str = "davs"
    # The mouth editor's edit box, (top, bottom, left, right) fractions like `mouth_box`: the
    # lower face below the nose with jaw, chin and cheeks (the mouth box plus 1/8 of the frame
    # at the sides and 0.16 above; it reaches the bottom edge, where the chin drops when the
    # mouth opens). Edges round outwards to multiples of 4 pixels (`edit_box_px`).
    edit_box: tuple[float, float, float, float] = field(
        default=(0.5, 1.0, 0.125, 0.875), metadata={"metavar": BOX_METAVAR}
    )
    # Width of the editor's blend ramp, as a fraction of image_size: the edit fades from full
    # strength to 0 over this band along the box's sides that lie inside the frame.
    edit_feather: float = 1 / 16
    # What the video word encoder sees: "face", the whole aligned face (the original, every
    # preset), or "mouth", the mouth box only (`mouth_box_px`; every other pixel mid-grey, so
    # the network and its input size are unchanged). README "What the video word encoder sees"
    # has what each gave.
    video_region: str = "face"
    # Training only, not in the original: each clip's frames reach the video word encoder with
    # random per-channel gain exp(U(-j, j)) and offset U(-j/4, j/4) (one draw per clip, clamped
    # to [0, 1]), so that colour (skin, lips, light), which tells people apart and not words,
    # stops being a cue. 0 turns it off; the generator's targets are never jittered.
    video_jitter: float = 0.0
    # Training only, not in the original: each clip's MFCC windows reach the audio word encoder
    # with one random offset per coefficient, N(0, j^2) (`fastdavs.model.davs.cepstral_jitter`):
    # a static change of the voice's spectral envelope (tilt, colouring), which tells speakers
    # apart and not words. SynthLRW's speakers' mean coefficients differ by a standard deviation
    # of 0.3-1.3 between people (c1..c12). 0 turns it off.
    audio_jitter: float = 0.0
    # Training only, not in the original: vocal-tract length perturbation in the cepstral
    # domain (`fastdavs.model.davs.formant_warp`): each clip's MFCC windows as if said with
    # formants scaled by exp(U(-w, w)), one factor per clip. A speaker's vocal-tract length tells
    # people apart and not words; SynthLRW's speakers' formant scales span 0.85-1.2 (0.35 in ln).
    # 0 turns it off.
    audio_warp: float = 0.0
    loss: LossWeights = field(default_factory=LossWeights)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)

    # ---- derived values -------------------------------------------------------------------
    def ch(self, channels: int) -> int:
        """Original channel count scaled by `width`, rounded to a multiple of 4 (at least 4)."""
        return max(4, int(round(channels * self.width / 4)) * 4)

    @property
    def mouth_box_px(self) -> tuple[int, int, int, int]:
        """(top, bottom, left, right) of the mouth box in pixels of an `image_size` frame."""
        s = self.image_size
        top, bottom, left, right = self.mouth_box
        return round(top * s), round(bottom * s), round(left * s), round(right * s)

    @property
    def edit_box_px(self) -> tuple[int, int, int, int]:
        """(top, bottom, left, right) of the edit box in pixels, each edge moved outwards to a
        multiple of 4 (image_size is one), so the crop halves twice without remainder."""
        s = self.image_size
        top, bottom, left, right = self.edit_box
        return (
            math.floor(top * s / 4) * 4,
            math.ceil(bottom * s / 4) * 4,
            math.floor(left * s / 4) * 4,
            math.ceil(right * s / 4) * 4,
        )

    @property
    def edit_feather_px(self) -> int:
        """Width of the editor's blend ramp in pixels (at least 1)."""
        return max(1, round(self.edit_feather * self.image_size))

    @property
    def seq_dim(self) -> int:
        """Size of a word-ID sequence embedding (the contrastive space): seq_len * word_dim."""
        return self.seq_len * self.word_dim

    # ---- validation -----------------------------------------------------------------------
    def validate(self) -> DavsConfig:
        """Check every field; return self so calls chain. Raises ConfigError."""
        s = self.image_size
        if s < 32 or s > 1024 or s & (s - 1):
            raise ConfigError(
                f"image_size={s}: must be a power of two between 32 and 1024 (the paper uses 256)"
            )
        if not (0 < self.width <= 4):
            raise ConfigError(f"width={self.width}: must be in (0, 4] (1.0 is the paper's widths)")
        for name in ("pid_dim", "word_dim", "num_words", "num_identities", "num_landmarks"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)}: must be a positive integer")
        for name in ("num_words", "num_identities"):
            if getattr(self, name) < 2:
                raise ConfigError(
                    f"{name}={getattr(self, name)}: a classifier needs at least 2 classes"
                )
        max_depth = int(math.log2(s // 4))
        if not (1 <= self.hourglass_depth <= max_depth):
            raise ConfigError(
                f"hourglass_depth={self.hourglass_depth}: must be 1..{max_depth} for "
                f"image_size={s} (the hourglass runs at image_size/4 and halves once per level)"
            )
        if (self.mfcc_steps, self.mfcc_coeffs) != (20, 12):
            raise ConfigError(
                f"mfcc window {self.mfcc_steps}x{self.mfcc_coeffs}: the DAVS MFCC contract is "
                "20x12; the audio encoders' strides are built for it"
            )
        if self.video_region not in VIDEO_REGIONS:
            raise ConfigError(
                f"video_region={self.video_region!r}: choose one of {', '.join(VIDEO_REGIONS)}"
            )
        if self.word_head not in WORD_HEADS:
            raise ConfigError(
                f"word_head={self.word_head!r}: choose one of {', '.join(WORD_HEADS)}"
            )
        for name in ("seq_len", "adv_frames", "gan_frames"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)}: must be at least 1 frame")
        if self.probe_bank < 2:
            raise ConfigError(
                f"probe_bank={self.probe_bank}: the person probe needs at least 2 clips "
                "(64 is the default)"
            )
        top, bottom, left, right = self.mouth_box
        if not (0 <= top < bottom <= 1 and 0 <= left < right <= 1):
            raise ConfigError(
                f"mouth_box={self.mouth_box}: (top, bottom, left, right) fractions with "
                "0 <= top < bottom <= 1 and 0 <= left < right <= 1"
            )
        t, b, le, r = self.mouth_box_px
        if b <= t or r <= le:
            raise ConfigError(f"mouth_box covers no pixel at image_size={s}; enlarge it")
        if not (0 <= self.audio_jitter <= 10):
            raise ConfigError(f"audio_jitter={self.audio_jitter}: must be in [0, 10] (0 is off)")
        if not (0 <= self.audio_warp <= 0.5):
            raise ConfigError(f"audio_warp={self.audio_warp}: must be in [0, 0.5] (0 is off)")
        if not (0 <= self.video_jitter <= 1):
            raise ConfigError(f"video_jitter={self.video_jitter}: must be in [0, 1] (0 is off)")
        self._validate_editor()
        for f in dataclasses.fields(self.loss):
            value = getattr(self.loss, f.name)
            if not math.isfinite(value) or value < 0:
                raise ConfigError(f"loss.{f.name}={value}: must be a finite number >= 0")
        o = self.optim
        if not (o.lr > 0 and o.adversary_lr_scale > 0 and 0 <= o.beta1 < 1 and 0 <= o.beta2 < 1):
            raise ConfigError(f"optim={o}: need lr > 0, adversary_lr_scale > 0 and betas in [0, 1)")
        if o.batch_size < 1:
            raise ConfigError(f"optim.batch_size={o.batch_size}: must be at least 1")
        if not 1 <= o.identity_group <= o.batch_size:
            raise ConfigError(
                f"optim.identity_group={o.identity_group}: must be 1..batch_size ({o.batch_size})"
            )
        if self.loss.identity_scatter > 0 and o.identity_group < 2:
            raise ConfigError(
                f"loss.identity_scatter={self.loss.identity_scatter} needs batches with several "
                "clips per identity: set optim.identity_group to 2 or more"
            )
        if self.loss.view_consistency > 0 and not (self.audio_warp or self.audio_jitter):
            raise ConfigError(
                f"loss.view_consistency={self.loss.view_consistency} compares two random voice "
                "changes of each clip: set audio_warp and/or audio_jitter above 0"
            )
        if o.lr_decay not in LR_DECAYS:
            raise ConfigError(
                f"optim.lr_decay={o.lr_decay!r}: choose one of {', '.join(LR_DECAYS)}"
            )
        for f in dataclasses.fields(self.schedule):
            value = getattr(self.schedule, f.name)
            low = 0 if f.name.endswith("_steps") or f.name == "seed" else 1
            if value < low:
                raise ConfigError(f"schedule.{f.name}={value}: must be at least {low}")
        return self

    def _validate_editor(self) -> None:
        if self.generator not in GENERATORS:
            raise ConfigError(
                f"generator={self.generator!r}: choose one of {', '.join(GENERATORS)}"
            )
        top, bottom, left, right = self.edit_box
        if not (0 <= top < bottom <= 1 and 0 <= left < right <= 1):
            raise ConfigError(
                f"edit_box={self.edit_box}: (top, bottom, left, right) fractions with "
                "0 <= top < bottom <= 1 and 0 <= left < right <= 1"
            )
        if not (0 < self.edit_feather <= 0.25):
            raise ConfigError(
                f"edit_feather={self.edit_feather}: must be in (0, 0.25] (a fraction of "
                "image_size; 1/16 is the default)"
            )
        if self.generator != "mouth_editor":
            return
        # The mouth box must lie where the edit has full strength: inside the edit box and at
        # least the blend ramp away from every side of it that is inside the frame.
        s, f = self.image_size, self.edit_feather_px
        edit, mouth = self.edit_box_px, self.mouth_box_px
        margins = (mouth[0] - edit[0], edit[1] - mouth[1], mouth[2] - edit[2], edit[3] - mouth[3])
        on_frame_edge = (edit[0] == 0, edit[1] == s, edit[2] == 0, edit[3] == s)
        if any(m < (0 if edge else f) for m, edge in zip(margins, on_frame_edge, strict=True)):
            raise ConfigError(
                f"edit_box={self.edit_box} (pixels {edit} at image_size={s}) must contain "
                f"mouth_box (pixels {mouth}) with at least edit_feather ({f} px) to spare on "
                "each side inside the frame, so that the blend ramp does not reach the mouth; "
                "enlarge edit_box or lower edit_feather"
            )

    # ---- presets and serialisation ---------------------------------------------------------
    @classmethod
    def from_preset(cls, name: str, **overrides) -> DavsConfig:
        """A named preset with optional field overrides, validated."""
        if name not in PRESETS:
            raise ConfigError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}")
        return dataclasses.replace(PRESETS[name](), **overrides).validate()

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> DavsConfig:
        """Inverse of `to_dict`; unknown keys and wrong types raise ConfigError."""
        # Checkpoints and engines written before the kernel backend became a run option (set on
        # the built model: `DavsModel.set_kernel_backend`) saved it with the architecture; it
        # says nothing about the weights, so it is dropped.
        data = {k: v for k, v in data.items() if k != "kernel_backend"}
        return _build(cls, data, "").validate()

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str, source: str = "config") -> DavsConfig:
        """Inverse of `to_json`; `source` names the origin in error messages."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{source}: not valid JSON ({e})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a JSON object, got {type(data).__name__}")
        try:
            return cls.from_dict(data)
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None

    @classmethod
    def load(cls, path: str | Path) -> DavsConfig:
        """Read a config JSON file (e.g. a checkpoint's or engine's `config.json`)."""
        try:
            text = Path(path).read_text()
        except OSError as e:
            raise ConfigError(f"{path}: cannot read config ({e.strerror})") from None
        return cls.from_json(text, source=str(path))


def _build(cls, data: dict, prefix: str):
    """Construct dataclass `cls` from a dict, checking names and types field by field."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown config field(s) {', '.join(prefix + k for k in unknown)}")
    kwargs = {}
    for key, value in data.items():
        hint = hints[key]
        where = prefix + key
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: expected an object, got {value!r}")
            kwargs[key] = _build(hint, value, where + ".")
        elif hint is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{where}: expected a number, got {value!r}")
            kwargs[key] = float(value)
        elif hint is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{where}: expected an integer, got {value!r}")
            kwargs[key] = value
        elif hint is str:
            if not isinstance(value, str):
                raise ConfigError(f"{where}: expected a string, got {value!r}")
            kwargs[key] = value
        else:  # tuple of floats (mouth_box)
            if not isinstance(value, (list, tuple)) or len(value) != 4:
                raise ConfigError(f"{where}: expected 4 numbers, got {value!r}")
            kwargs[key] = tuple(float(v) for v in value)
    return cls(**kwargs)


def _paper() -> DavsConfig:
    return DavsConfig()


def _small() -> DavsConfig:
    # 64 px and a quarter of the widths: trains on 2 CPU cores in minutes.
    return DavsConfig(
        preset="small",
        image_size=64,
        width=0.25,
        pid_dim=128,
        word_dim=128,
        num_words=500,
        num_identities=1000,
        hourglass_depth=3,
        # The original decoder learnt no more than an average face in this budget (held-out
        # PSNR 17.6 dB, under the 27 dB of copying the identity frame); an editor of the lower
        # face, trained alone on frozen word-ID for ~1,500 steps, reached 27.4 dB.
        generator="mouth_editor",
        # A short CPU schedule: `python -m fastdavs.train --amp` (data and evaluation included)
        # within the budget of 30 minutes on 2 AVX2 cores in float32 (about 28 there, from the
        # step times below) and in about 6 minutes on 2 Zen 5 cores with native bf16. To learn
        # that fast, lr is 5x the original's and the modality flip weight 1 instead of 5. Measured
        # over the first 60 steps of `wid`: audio word CE 3.05 at lr 1e-3 with flip 5, 0.72 with
        # flip 1, 3.3 at lr 2e-4; `gen` reconstruction after 40 steps 155 at lr 1e-3 against 215 at
        # 2e-4 (davs decoder). The uniform-softmax adversaries weigh 1e4, not 1e6: at 1e6 the gen
        # stage wiped out the video word space (held-out video word accuracy 3.1%, retrieval R@1 0%)
        # without lowering the identity probe; at 1e4, 71.6% and 37% (full default runs with the
        # davs decoder).
        # The viseme readout (SynthLRW's mouth of every frame from its word-ID, in wid) at 30:
        # held-out words audio / video 90.0 / 81.8% against 88.7 / 73.1% without it, retrieval
        # R@1 0.58 / 0.72 against 0.56 / 0.65, audio-driven mouth PSNR 29.16 against 28.69 dB
        # (full default runs; at 10: 87.8 / 77.1%, at 100: 89.1 / 79.6%; also in gen at 30:
        # 89.8 / 82.2%, no gain). Data without visemes turns it off (`fit_to_data`).
        loss=LossWeights(modality_flip=1.0, pid_uniform=1e4, wid_uniform=1e4, viseme=30.0),
        # The adversaries' classifiers stay at that lr: at 10x (with the wid->person adversary's
        # input standardised) its cross-entropy still read chance all through gen, and the
        # held-out video word accuracy fell from 72% to 40% (a full default run).
        # The gen lr falls linearly to 0: from the same render checkpoint, 450 gen steps gave
        # held-out audio-driven mouth PSNR 28.09 dB against 27.76 at a constant lr, audio /
        # video word accuracy 87.6 / 76.9% against 82.7 / 72.7%, lip reading of generated video
        # 0.70 against 0.51. Decaying the earlier stages too (their modules go on training in
        # gen at the full lr) did worse in a full run: mouth 27.20 dB, video words 69.1%.
        # Batch 8, not 16: on 2 AMD EPYC Zen 3 cores (AVX2, float32) a step costs 0.73 / 0.75 /
        # 0.53 / 1.6 s (pid / wid / render / gen) at batch 8 against 1.11 / 1.36 / 1.25 / 2.9 s
        # at 16: batch 16 took 47 minutes there. The price, in default runs: held-out video
        # word accuracy 71-73% against 82% at batch 16 (76.9% with batch 16 in wid alone, which
        # the budget cannot hold beside the render steps below).
        optim=OptimConfig(lr=1e-3, lr_decay="linear", batch_size=8),
        schedule=ScheduleConfig(
            pid_steps=100,
            # The word space is unfinished, not overfitted (on the training people the viseme
            # default read 90.5 / 81.8% words against 89.1 / 79.8% held out), so 150 render
            # steps went to it: over five full default runs (seeds 0-3 on one thread, seed 0 on
            # two), 450 wid + 1,050 render gave held-out words 90.6 / 82.1% on average against
            # 89.5 / 80.2% at 300 + 1,200 (video up in four of the five pairs, by 1.2-4.4
            # points), audio-driven mouth PSNR 0.18 dB lower, for about 50 s more on AVX2
            # (150 x 0.75 - 150 x 0.41 s). 250 instead of 350 gen steps lost video words (78.9%
            # with 600 wid): gen trains them too. docs/disentangling.md has the runs.
            wid_steps=450,
            # A render step (half audio-, half video-driven, audio encoder training) costs a
            # quarter of a gen step on AVX2: 0.41 against 1.6 s at batch 8 (the EPYC's 0.53 s
            # of the render step that trained the generator alone, times 0.78, the ratio of the
            # two measured in float32 with ONEDNN_MAX_CPU_ISA=AVX2), so the mouth is bought
            # there: in default runs (batch 8), 600 render + 450 gen reached held-out
            # audio-driven mouth PSNR 27.74 dB (copy 24.61), lip reading of generated video
            # 0.80x the real video's, words 89.3 / 71.3%; 1,200 + 350 reached 28.69 dB (+4.08),
            # 0.89x, words 88.7 / 73.1%, at about the same cost on AVX2.
            render_steps=1050,
            gen_steps=350,
            sample_every=150,
            checkpoint_every=50,
        ),
    )


def _tiny() -> DavsConfig:
    # For tests: a forward + backward step of every module well under a second.
    return DavsConfig(
        preset="tiny",
        image_size=32,
        width=0.125,
        pid_dim=32,
        word_dim=32,
        num_words=10,
        num_identities=8,
        num_landmarks=8,
        hourglass_depth=2,
        seq_len=4,
        adv_frames=4,
        gan_frames=2,
        generator="mouth_editor",
        optim=OptimConfig(batch_size=2),
        schedule=ScheduleConfig(
            pid_steps=4,
            wid_steps=4,
            render_steps=4,
            gen_steps=4,
            log_every=1,
            sample_every=2,
            checkpoint_every=2,
            max_bad_steps=3,
        ),
    )


PRESETS = {"paper": _paper, "small": _small, "tiny": _tiny}
