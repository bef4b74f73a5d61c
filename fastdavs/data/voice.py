"""SynthLRW's speaker: a `Voice` (one per identity) and a source-filter synthesizer that says a
phoneme timeline as 16 kHz audio.

Data flow: synth.py draws a Voice per identity and a Take per clip, builds the clip's timeline
(`phonemes.timeline`), and muxes `synthesize(...)` with the frames face.py renders from
`phonemes.viseme_track` of the same timeline. The voice is the audio's identity cue: pitch,
vocal-tract length (formant scale), breathiness, jitter/shimmer and spectral tilt.

Signal model (S samples, float64 inside, float32 out):
    f0[n]    = voice.f0 * take.pitch(position in word) * (1 + jitter * slow noise)
    source   = d/dn Rosenberg glottal flow at phase cumsum(f0) / sr, through a one-pole low-pass
               (tilt), times (1 + shimmer * slow noise), plus aspiration noise on the open phase
    vowels, nasals, approximants: source through 2-pole resonators at F1-F3 x formant_scale
               (nasals add a zero at their antiformant)
    fricatives: noise through a 4th-order band-pass (+ a voice bar when voiced)
    stops:   closure (silent, or a voice bar when voiced), a decaying burst, aspiration if unvoiced
Every segment is scaled to its phoneme's level (`Phoneme.amp`, /a/ = 1) and cross-faded with its
neighbours by complementary raised-cosine ramps (XFADE), so there are no clicks. The word is then
scaled to peak PEAK * 10^(gain_db / 20), and a noise floor FLOOR_DB below that peak is added so
that silence is never digital zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.signal import lfilter, sosfilt

from fastdavs.data.phonemes import CLIP_SECONDS, PHONEMES, Phoneme, Segment, Take

SAMPLE_RATE = 16000
PEAK = 0.9  # peak of a word at 0 dB gain
FLOOR_DB = -70.0  # noise floor relative to the word's peak
XFADE = 0.01  # s, cross-fade between neighbouring segments
OPEN_RISE, OPEN_FALL = 0.4, 0.16  # Rosenberg pulse: opening and closing share of a period
WOBBLE_RATE = 100.0  # Hz, control rate of the jitter and shimmer noise
BURST = 0.012  # s, stop release burst
ASPIRATION = 0.03  # s, noise after the burst of an unvoiced stop
ASPIRATION_BAND = (1500.0, 2000.0)  # Hz, centre and width
ASPIRATION_LEVEL = 0.3  # relative to the burst's initial level
VOICE_BAR = (250.0, 100.0)  # Hz: voicing heard through a closed or narrow vocal tract
VOICE_BAR_LEVEL = 0.1  # RMS of the voicing in voiced stops and fricatives (-20 dB re /a/)


@dataclass(frozen=True)
class Voice:
    """A speaker: `f0` mean pitch (Hz), `formant_scale` (shorter vocal tract > 1), `breathiness`
    (aspiration noise relative to the voiced source), `jitter`/`shimmer` (relative sd of pitch and
    amplitude), `tilt` (one-pole low-pass coefficient on the source: 0 bright .. 0.7 soft)."""

    f0: float = 120.0
    formant_scale: float = 1.0
    breathiness: float = 0.05
    jitter: float = 0.01
    shimmer: float = 0.04
    tilt: float = 0.3


def random_voice(rng: np.random.Generator) -> Voice:
    """A low (85-155 Hz) or high (160-255 Hz) register voice, formant scale leaning the same way."""
    if rng.random() < 0.5:
        f0, formant_scale = rng.uniform(85.0, 155.0), rng.uniform(0.85, 1.05)
    else:
        f0, formant_scale = rng.uniform(160.0, 255.0), rng.uniform(0.98, 1.2)
    return Voice(
        f0=f0,
        formant_scale=formant_scale,
        breathiness=rng.uniform(0.0, 0.3),
        jitter=rng.uniform(0.003, 0.015),
        shimmer=rng.uniform(0.02, 0.08),
        tilt=rng.uniform(0.0, 0.7),
    )


def _resonator(freq: float, bandwidth: float, sample_rate: int) -> np.ndarray:
    """Klatt's 2-pole resonator as one SOS row [b0, b1, b2, 1, a1, a2], unity gain at DC."""
    r = math.exp(-math.pi * bandwidth / sample_rate)
    a1, a2 = -2 * r * math.cos(2 * math.pi * freq / sample_rate), r * r
    return np.array([1 + a1 + a2, 0.0, 0.0, 1.0, a1, a2])


def _antiresonator(freq: float, bandwidth: float, sample_rate: int) -> np.ndarray:
    """The zero pair matching `_resonator` (a nasal antiformant), unity gain at DC."""
    b = _resonator(freq, bandwidth, sample_rate)[3:]
    return np.concatenate([b / b.sum(), [1.0, 0.0, 0.0]])


def _bandpass(band: tuple[float, float], scale: float, sample_rate: int) -> np.ndarray:
    """Two RBJ constant-peak band-pass sections at band centre x scale (kept below Nyquist)."""
    centre = min(band[0] * scale, 0.45 * sample_rate)
    w0 = 2 * math.pi * centre / sample_rate
    alpha = math.sin(w0) * band[1] / (2 * centre)  # sin(w0) / (2 Q), Q = centre / width
    row = np.array([alpha, 0.0, -alpha, 1 + alpha, -2 * math.cos(w0), 1 - alpha]) / (1 + alpha)
    return np.stack([row, row])


def _formant_filter(phoneme: Phoneme, scale: float, sample_rate: int) -> np.ndarray:
    """SOS [3 or 4, 6]: the phoneme's formants x scale in cascade, and its antiformant if any."""
    rows = [
        _resonator(f * scale, b, sample_rate)
        for f, b in zip(phoneme.formants, phoneme.bandwidths, strict=True)
    ]
    if phoneme.antiformant:
        rows.append(_antiresonator(phoneme.antiformant * scale, 100.0, sample_rate))
    return np.stack(rows)


def _unit(x: np.ndarray, core: slice) -> np.ndarray:
    """x scaled to unit RMS over `core` (the segment proper, without its cross-fade margins)."""
    return x / (np.sqrt(np.mean(x[core] ** 2)) + 1e-12)


def _wobble(rng: np.random.Generator, n: int, sample_rate: int) -> np.ndarray:
    """Unit-sd noise varying at WOBBLE_RATE (linear between control points), [n]."""
    step = sample_rate / WOBBLE_RATE
    points = rng.standard_normal(math.ceil(n / step) + 1)
    return np.interp(np.arange(n) / step, np.arange(len(points)), points)


def _rosenberg(theta: np.ndarray) -> np.ndarray:
    """Glottal flow over one period, theta in [0, 1): cosine opening, quarter-cosine closing."""
    rise = 0.5 * (1 - np.cos(np.pi * theta / OPEN_RISE))
    fall = np.cos(0.5 * np.pi * (theta - OPEN_RISE) / OPEN_FALL)
    return np.where(theta < OPEN_RISE, rise, np.where(theta < OPEN_RISE + OPEN_FALL, fall, 0.0))


def _segment(
    phoneme: Phoneme,
    voice: Voice,
    voiced: np.ndarray,
    noise: np.ndarray,
    core: slice,
    sample_rate: int,
) -> np.ndarray:
    """One phoneme over its span plus cross-fade margins, levels relative to /a/ at RMS 1.

    Sonorants and frication have RMS `phoneme.amp` over `core`; a stop's burst starts at
    envelope `phoneme.amp` and decays within BURST.
    """
    scale = voice.formant_scale
    if phoneme.kind in ("vowel", "nasal", "approximant"):
        tract = _formant_filter(phoneme, scale, sample_rate)
        return phoneme.amp * _unit(sosfilt(tract, voiced), core)
    voice_bar = np.zeros_like(voiced)
    if phoneme.voiced:
        bar = _resonator(*VOICE_BAR, sample_rate)[None]
        voice_bar = VOICE_BAR_LEVEL * _unit(sosfilt(bar, voiced), core)
    band = _unit(sosfilt(_bandpass(phoneme.noise_band, scale, sample_rate), noise), core)
    if phoneme.kind == "fricative":
        return phoneme.amp * band + voice_bar
    # Stop: closure, the release burst, then aspiration if unvoiced, ending with the segment.
    burst = round(BURST * sample_rate)
    tail = burst + (0 if phoneme.voiced else round(ASPIRATION * sample_rate))
    k = np.arange(len(voiced)) - max(core.stop - tail, core.start)  # samples since the release
    decay = np.exp(-np.maximum(k, 0) / (burst / 3))
    y = np.where(k >= 0, phoneme.amp * decay * band, voice_bar)
    if not phoneme.voiced:
        breath = _unit(sosfilt(_bandpass(ASPIRATION_BAND, scale, sample_rate), noise), core)
        fade = np.clip((tail - k) / (tail - burst), 0.0, 1.0) * (k >= burst)
        y += ASPIRATION_LEVEL * phoneme.amp * fade * breath
    return y


def _excitation(
    voice: Voice, take: Take, u: np.ndarray, sample_rate: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """The voiced source (with aspiration) and white noise at word positions `u`, [N] each."""
    n = len(u)
    f0 = voice.f0 * take.pitch(u) * (1 + voice.jitter * _wobble(rng, n, sample_rate))
    theta = np.cumsum(f0 / sample_rate) % 1.0
    flow = _rosenberg(theta)
    source = lfilter([1 - voice.tilt], [1, -voice.tilt], np.diff(flow, prepend=0.0))
    source *= (1 + voice.shimmer * _wobble(rng, n, sample_rate)) / np.std(source)
    # Aspiration rides on the open phase of each period, as turbulence at the open glottis does.
    open_phase = theta < OPEN_RISE + OPEN_FALL
    voiced = source + voice.breathiness * rng.standard_normal(n) * open_phase
    return voiced, rng.standard_normal(n)


def synthesize(
    segments: list[Segment],
    voice: Voice,
    take: Take,
    duration: float = CLIP_SECONDS,
    sample_rate: int = SAMPLE_RATE,
    seed: int = 0,
) -> np.ndarray:
    """The timeline said by `voice` with `take`'s pitch contour and gain: float32 [S] in [-1, 1],
    S = round(duration * sample_rate). Deterministic in (segments, voice, take, seed).

    `segments` (non-empty, contiguous, as from `phonemes.timeline`) must leave XFADE / 2 of room
    at both ends of the clip; everything outside them is the noise floor.
    """
    rng = np.random.default_rng(seed)
    half = round(XFADE / 2 * sample_rate)
    first = round(segments[0].start * sample_rate) - half  # the word, with its fade-in and out
    last = round(segments[-1].end * sample_rate) + half
    t = np.arange(first, last) / sample_rate
    u = (t - segments[0].start) / (segments[-1].end - segments[0].start)
    voiced, noise = _excitation(voice, take, u, sample_rate, rng)

    ramp = np.sin(0.5 * np.pi * (np.arange(2 * half) + 0.5) / (2 * half)) ** 2  # rises 0 -> 1
    word = np.zeros(last - first)
    for seg in segments:
        a, b = round(seg.start * sample_rate) - first, round(seg.end * sample_rate) - first
        lo, hi = a - half, b + half
        core = slice(half, b - lo)
        y = _segment(PHONEMES[seg.phoneme], voice, voiced[lo:hi], noise[lo:hi], core, sample_rate)
        y[: 2 * half] *= ramp
        y[-2 * half :] *= ramp[::-1]
        word[lo:hi] += y
    level = PEAK * 10 ** (take.gain_db / 20)
    out = level * 10 ** (FLOOR_DB / 20) * rng.standard_normal(round(duration * sample_rate))
    out[first:last] += word * (level / np.max(np.abs(word)))
    return np.clip(out, -1.0, 1.0).astype(np.float32)
