"""What SynthLRW says and how the mouth moves: phonemes, words, takes, timelines and viseme tracks.

Data flow: `make_vocabulary` fixes the word list of a data set; per clip, `random_take` draws the
prosody, `timeline` lays the word's phonemes out in the 1.16 s clip, and that one timeline drives
both sides of the clip: `voice.synthesize` turns it into audio and `viseme_track` into the per-frame
mouth parameters that face.py renders. Because both come from the same segments, the lips are
predictable from the audio.

A viseme is `(jaw_open, lip_width, lip_round, teeth)`, each in [0, 1] (`VISEME_DIMS`); `REST` is
the closed, relaxed mouth shown in silence. Visemes are shared the way real lip reading shares
them: /p b m/ look the same, as do /f v/ and /t d n s z/, so a word and its voicing partner
("BATA" / "PADA") can only be told apart by ear.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

CLIP_SECONDS = 1.16  # 29 frames at 25 fps, as in LRW
N_FRAMES = 29
FPS = 25.0
# s of silence kept before and after every word: enough that the first and last video frames
# (centres 20 ms from the ends) are out of the reach of coarticulation and show REST.
MIN_SILENCE = 0.08
VISEME_DIMS = ("jaw_open", "lip_width", "lip_round", "teeth")
REST = (0.0, 0.5, 0.3, 0.0)
REST_DOMINANCE = 2.0
# Coarticulation: targets lead the sound by VISEME_LEAD and are blended by a Gaussian of
# VISEME_SIGMA, so a transition starts about VISEME_LEAD + 2 sigma (~50 ms) before the sound.
VISEME_LEAD = 0.025
VISEME_SIGMA = 0.012
TRACK_DT = 0.001  # s, grid on which the track is built before sampling at frame centres

KINDS = ("vowel", "fricative", "stop", "nasal", "approximant")


@dataclass(frozen=True)
class Phoneme:
    """One phoneme: its acoustics (for voice.py) and its mouth shape (for viseme_track).

    `amp` is the RMS level relative to /a/ before the take's gain (for stops: of the burst onset);
    `dominance` is how strongly its viseme resists its neighbours (Cohen-Massaro): lip closures
    win, velars give way to the vowel around them. `formants`/`bandwidths` (Hz, before the
    voice's formant scale) shape voiced sounds; `antiformant` (Hz, 0 = none) is the nasal zero;
    `noise_band` (centre, width in Hz) is the frication band of fricatives and the burst band of
    stops.
    """

    name: str
    kind: str
    voiced: bool
    duration: float  # s at rate 1
    viseme: tuple[float, float, float, float]
    dominance: float
    amp: float
    formants: tuple[float, float, float] = (0.0, 0.0, 0.0)
    bandwidths: tuple[float, float, float] = (0.0, 0.0, 0.0)
    antiformant: float = 0.0
    noise_band: tuple[float, float] = (0.0, 0.0)


def _vowel(name, duration, viseme, amp, formants):
    bandwidths = (80.0, 100.0, 150.0)
    return Phoneme(name, "vowel", True, duration, viseme, 1.0, amp, formants, bandwidths)


def _fricative(name, voiced, viseme, dominance, amp, band):
    duration = 0.075 if voiced else 0.09
    return Phoneme(name, "fricative", voiced, duration, viseme, dominance, amp, noise_band=band)


def _stop(name, voiced, viseme, dominance, band):
    duration = 0.065 if voiced else 0.08
    return Phoneme(name, "stop", voiced, duration, viseme, dominance, 0.5, noise_band=band)


def _nasal(name, viseme, dominance, formants, antiformant):
    bandwidths = (60.0, 200.0, 200.0)
    return Phoneme(
        name, "nasal", True, 0.075, viseme, dominance, 0.35, formants, bandwidths, antiformant
    )


def _approximant(name, viseme, dominance, formants):
    bandwidths = (80.0, 120.0, 200.0)
    return Phoneme(name, "approximant", True, 0.06, viseme, dominance, 0.55, formants, bandwidths)


BILABIAL = (0.0, 0.5, 0.2, 0.0)
LABIODENTAL = (0.1, 0.5, 0.05, 0.85)
ALVEOLAR = (0.15, 0.6, 0.05, 0.7)
VELAR = (0.35, 0.5, 0.1, 0.25)

# Formants are adult averages (Peterson & Barney, Klatt 1980) for formant_scale 1.
PHONEMES: dict[str, Phoneme] = {
    p.name: p
    for p in (
        _vowel("a", 0.125, (0.9, 0.55, 0.1, 0.3), 1.0, (730.0, 1090.0, 2440.0)),
        _vowel("e", 0.11, (0.55, 0.75, 0.05, 0.55), 0.9, (530.0, 1840.0, 2480.0)),
        _vowel("i", 0.1, (0.3, 0.95, 0.0, 0.75), 0.8, (270.0, 2290.0, 3010.0)),
        _vowel("o", 0.12, (0.6, 0.3, 0.75, 0.1), 0.95, (570.0, 840.0, 2410.0)),
        _vowel("u", 0.11, (0.3, 0.15, 1.0, 0.0), 0.8, (300.0, 870.0, 2240.0)),
        _stop("p", False, BILABIAL, 10.0, (800.0, 1200.0)),
        _stop("b", True, BILABIAL, 10.0, (800.0, 1200.0)),
        _stop("t", False, ALVEOLAR, 2.0, (4000.0, 3000.0)),
        _stop("d", True, ALVEOLAR, 2.0, (4000.0, 3000.0)),
        _stop("k", False, VELAR, 0.6, (1800.0, 1200.0)),
        _stop("g", True, VELAR, 0.6, (1800.0, 1200.0)),
        _fricative("f", False, LABIODENTAL, 6.0, 0.12, (4500.0, 5000.0)),
        _fricative("v", True, LABIODENTAL, 6.0, 0.2, (4500.0, 5000.0)),
        _fricative("s", False, ALVEOLAR, 2.0, 0.35, (6000.0, 2500.0)),
        _fricative("z", True, ALVEOLAR, 2.0, 0.3, (6000.0, 2500.0)),
        _fricative("sh", False, (0.15, 0.3, 0.7, 0.6), 3.0, 0.4, (3000.0, 2000.0)),
        _nasal("m", BILABIAL, 10.0, (250.0, 1100.0, 2200.0), 750.0),
        _nasal("n", ALVEOLAR, 2.0, (250.0, 1600.0, 2600.0), 1450.0),
        _approximant("l", (0.3, 0.55, 0.1, 0.5), 1.0, (360.0, 1300.0, 2700.0)),
        _approximant("r", (0.2, 0.35, 0.5, 0.2), 1.5, (310.0, 1060.0, 1380.0)),
        _approximant("w", (0.1, 0.15, 0.95, 0.0), 4.0, (290.0, 610.0, 2150.0)),
        _approximant("y", (0.2, 0.85, 0.0, 0.5), 1.0, (260.0, 2070.0, 3020.0)),
    )
}

VOWELS = tuple(p.name for p in PHONEMES.values() if p.kind == "vowel")
ONSETS = tuple(p.name for p in PHONEMES.values() if p.kind != "vowel")
CODAS = ("m", "n", "s", "l", "t", "k")
CODA_PROB = 0.2  # share of syllables that are CVC rather than CV
# Every syllable is one onset letter (or "SH"), one vowel letter, maybe a one-letter coda, and no
# onset or coda is a vowel, so a word's spelling parses one way: distinct words, distinct names.
N_SYLLABLES = len(ONSETS) * len(VOWELS) * (1 + len(CODAS))
SYLLABLE_COUNTS = (2, 3, 4)

Syllable = tuple[str, ...]


@dataclass(frozen=True)
class Word:
    """A vocabulary word: `name` is its uppercase spelling (an LRW-style directory name)."""

    name: str
    syllables: tuple[Syllable, ...]

    @property
    def phonemes(self) -> tuple[str, ...]:
        return tuple(p for syllable in self.syllables for p in syllable)


def _spell(syllables: tuple[Syllable, ...]) -> str:
    return "".join(p.upper() for syllable in syllables for p in syllable)


def _random_syllable(rng: np.random.Generator) -> Syllable:
    onset, vowel = ONSETS[rng.integers(len(ONSETS))], VOWELS[rng.integers(len(VOWELS))]
    if rng.random() < CODA_PROB:
        return (onset, vowel, CODAS[rng.integers(len(CODAS))])
    return (onset, vowel)


def _neighbour_syllable(rng: np.random.Generator, syllable: Syllable) -> Syllable:
    """A different syllable, often a near miss: a new onset (BA -> PA: same lips, other voicing)
    or a new vowel, else a fresh syllable."""
    while True:
        mode = rng.integers(3)
        if mode == 0:
            new = (ONSETS[rng.integers(len(ONSETS))], *syllable[1:])
        elif mode == 1:
            new = (syllable[0], VOWELS[rng.integers(len(VOWELS))], *syllable[2:])
        else:
            new = _random_syllable(rng)
        if new != syllable:
            return new


def make_vocabulary(n_words: int, seed: int) -> list[Word]:
    """`n_words` distinct words of 2-4 syllables, sorted by name, deterministic in `seed`.

    Words come in families: a random base word and up to three minimal-pair variants, each the
    base or an earlier variant with one syllable replaced. Family sizes are uniform in 1..4, so
    most words have a neighbour that differs in exactly one syllable, often only in the onset
    (BA/PA: same lips, other voicing) or the vowel: 80% for n_words=30, seed=0 (63-100%, mean 82%
    over seeds 0-99), 88% for 500 words.

    Raises:
        ValueError: `n_words` < 1 or more than the syllable inventory can spell.
    """
    capacity = sum(N_SYLLABLES**k for k in SYLLABLE_COUNTS)
    if not 1 <= n_words <= capacity:
        raise ValueError(
            f"n_words={n_words}: the syllable inventory ({N_SYLLABLES} syllables, words of "
            f"{SYLLABLE_COUNTS[0]}-{SYLLABLE_COUNTS[-1]} syllables) allows 1 to {capacity} words"
        )
    rng = np.random.default_rng(seed)
    words: dict[str, Word] = {}
    while len(words) < n_words:
        n_syllables = SYLLABLE_COUNTS[rng.integers(len(SYLLABLE_COUNTS))]
        family = [tuple(_random_syllable(rng) for _ in range(n_syllables))]
        for _ in range(rng.integers(3)):  # 0..3 variants
            parent = list(family[rng.integers(len(family))])
            j = rng.integers(n_syllables)
            parent[j] = _neighbour_syllable(rng, parent[j])
            family.append(tuple(parent))
        for syllables in family:
            if len(words) < n_words:
                words.setdefault(_spell(syllables), Word(_spell(syllables), syllables))
    return sorted(words.values(), key=lambda w: w.name)


@dataclass(frozen=True)
class Take:
    """The prosody of one utterance of a word.

    `rate` is speaking speed (durations are divided by it); `onset` moves the word centre from the
    clip centre (s); the pitch goes from `f0_start` to `f0_end` times the voice's f0 across the
    word; `gain_db` sets the loudness; `seed` draws the per-phoneme duration jitter.
    """

    rate: float = 1.0
    onset: float = 0.0
    f0_start: float = 1.0
    f0_end: float = 1.0
    gain_db: float = 0.0
    seed: int = 0

    def pitch(self, u: np.ndarray) -> np.ndarray:
        """f0 factor at fraction `u` of the word (clipped to [0, 1]), geometric interpolation."""
        return self.f0_start * np.exp(np.log(self.f0_end / self.f0_start) * np.clip(u, 0.0, 1.0))


# (probability, f0_start range, f0_end range): isolated words mostly fall, as statements do.
CONTOURS = (
    (0.5, (1.0, 1.15), (0.78, 0.92)),  # falling
    (0.25, (0.88, 1.0), (1.08, 1.22)),  # rising
    (0.25, (0.95, 1.05), (0.95, 1.05)),  # flat
)


def random_take(rng: np.random.Generator) -> Take:
    """Rate log-uniform in [0.8, 1.25], onset ±80 ms, a falling/rising/flat contour, -12..0 dB."""
    rate = math.exp(rng.uniform(math.log(0.8), math.log(1.25)))
    onset = rng.uniform(-0.08, 0.08)
    k = rng.choice(len(CONTOURS), p=[c[0] for c in CONTOURS])
    f0_start, f0_end = rng.uniform(*CONTOURS[k][1]), rng.uniform(*CONTOURS[k][2])
    gain_db = rng.uniform(-12.0, 0.0)
    return Take(rate, onset, f0_start, f0_end, gain_db, int(rng.integers(2**31)))


@dataclass(frozen=True)
class Segment:
    """One phoneme's span in the clip, seconds."""

    phoneme: str
    start: float
    end: float


DURATION_JITTER = 0.1  # sd of the log duration factor per phoneme


def timeline(word: Word, take: Take, duration: float = CLIP_SECONDS) -> list[Segment]:
    """The word's phonemes laid out in a clip of `duration` s: contiguous segments, word only.

    Each phoneme lasts nominal duration x jitter(take.seed) / take.rate. A word that would leave
    less than MIN_SILENCE at either end is spoken faster until it fits (the rate is capped); the
    centre sits at duration / 2 + take.onset, shifted if needed to keep MIN_SILENCE at both ends.
    """
    names = word.phonemes
    jitter = np.random.default_rng(take.seed).normal(0.0, DURATION_JITTER, len(names))
    nominal = np.array([PHONEMES[p].duration for p in names])
    lengths = nominal * np.exp(np.clip(jitter, -2 * DURATION_JITTER, 2 * DURATION_JITTER))
    lengths /= take.rate
    room = duration - 2 * MIN_SILENCE
    if lengths.sum() > room:
        lengths *= room / lengths.sum()
    total = lengths.sum()
    start = min(
        max(duration / 2 + take.onset - total / 2, MIN_SILENCE), duration - MIN_SILENCE - total
    )
    edges = start + np.concatenate([[0.0], np.cumsum(lengths)])
    return [
        Segment(p, float(a), float(b)) for p, a, b in zip(names, edges[:-1], edges[1:], strict=True)
    ]


def viseme_track(segments: list[Segment], n_frames: int = N_FRAMES, fps: float = FPS) -> np.ndarray:
    """Mouth parameters per video frame, float32 [T, 4] in [0, 1] (columns: VISEME_DIMS).

    Each phoneme's viseme holds over its segment moved VISEME_LEAD earlier, REST elsewhere; the
    targets are blended by a dominance-weighted Gaussian (sum w g * v / sum w g, sigma
    VISEME_SIGMA) on a 1 ms grid, which is then read at frame centres (t + 0.5) / fps.
    """
    n = math.ceil(n_frames / fps / TRACK_DT)
    t = (np.arange(n) + 0.5) * TRACK_DT
    target = np.tile(np.array(REST), (n, 1))  # [N, 4]
    weight = np.full(n, REST_DOMINANCE)
    for seg in segments:
        phoneme = PHONEMES[seg.phoneme]
        inside = (t >= seg.start - VISEME_LEAD) & (t < seg.end - VISEME_LEAD)
        target[inside] = phoneme.viseme
        weight[inside] = phoneme.dominance
    half = math.ceil(4 * VISEME_SIGMA / TRACK_DT)
    kernel = np.exp(-0.5 * (np.arange(-half, half + 1) * TRACK_DT / VISEME_SIGMA) ** 2)
    weighted = np.concatenate([weight[:, None] * target, weight[:, None]], axis=1)  # [N, 5]
    padded = np.pad(weighted, ((half, half), (0, 0)), mode="edge")
    smooth = np.stack([np.convolve(c, kernel, mode="valid") for c in padded.T], axis=1)
    blended = smooth[:, :4] / smooth[:, 4:]  # [N, 4]
    centres = (np.arange(n_frames) + 0.5) / fps
    track = np.stack([np.interp(centres, t, blended[:, k]) for k in range(4)], axis=1)
    return np.clip(track, 0.0, 1.0).astype(np.float32)
