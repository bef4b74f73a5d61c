"""Tests of SynthLRW's speech side: the vocabulary (fastdavs.data.phonemes), timelines and
viseme tracks, and the source-filter voice (fastdavs.data.voice), measured on the signals: pitch
by autocorrelation, silence against vowel level, formant shift, and audio energy against the jaw.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from fastdavs.data import phonemes as P
from fastdavs.data import voice as V

SR = V.SAMPLE_RATE
N_SAMPLES = round(P.CLIP_SECONDS * SR)
HOP = SR // 100  # 10 ms energy frames


def one_syllable_apart(a: P.Word, b: P.Word) -> bool:
    if len(a.syllables) != len(b.syllables):
        return False
    return sum(x != y for x, y in zip(a.syllables, b.syllables, strict=True)) == 1


def rms_10ms(x: np.ndarray) -> np.ndarray:
    n = len(x) // HOP
    return np.sqrt(np.mean(x[: n * HOP].astype(np.float64).reshape(n, HOP) ** 2, axis=1))


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))


def span(x: np.ndarray, start: float, end: float) -> np.ndarray:
    return x[round(start * SR) : round(end * SR)]


def clips(n: int, seed: int):
    """n random (word, take, voice, segments) draws from the default 30-word vocabulary."""
    rng = np.random.default_rng(seed)
    words = P.make_vocabulary(30, seed)
    for _ in range(n):
        word, take, voice = words[rng.integers(len(words))], P.random_take(rng), V.random_voice(rng)
        yield word, take, voice, P.timeline(word, take)


# A word with every vowel, and /m/ between open vowels; spelled like vocabulary words.
ALL_VOWELS = P.Word("BADELIMOSU", (("b", "a"), ("d", "e"), ("l", "i"), ("m", "o"), ("s", "u")))
MAMA = P.Word("BAMA", (("b", "a"), ("m", "a")))


# --- inventory and vocabulary ---------------------------------------------------------------


def test_inventory_visemes_in_range_and_grouped_like_lip_reading():
    for p in P.PHONEMES.values():
        assert p.kind in P.KINDS
        assert all(0.0 <= v <= 1.0 for v in p.viseme), p.name
        assert p.duration > 0 and p.amp > 0 and p.dominance > 0
    groups: dict[tuple, set[str]] = {}
    for p in P.PHONEMES.values():
        groups.setdefault(p.viseme, set()).add(p.name)
    shared = sorted(sorted(g) for g in groups.values() if len(g) > 1)
    assert shared == [["b", "m", "p"], ["d", "n", "s", "t", "z"], ["f", "v"], ["g", "k"]]
    # Distinct classes are visibly distinct: no two closer than 0.15 in viseme space, vowels 0.35.
    visemes = [np.array(v) for v in groups]
    assert min(np.linalg.norm(a - b) for a, b in itertools.combinations(visemes, 2)) > 0.15
    vowels = [np.array(P.PHONEMES[v].viseme) for v in P.VOWELS]
    assert min(np.linalg.norm(a - b) for a, b in itertools.combinations(vowels, 2)) > 0.35
    assert all(P.PHONEMES[v].viseme[0] >= 0.3 for v in P.VOWELS)


def test_vocabulary_is_deterministic_by_seed():
    assert P.make_vocabulary(30, 0) == P.make_vocabulary(30, 0)
    assert P.make_vocabulary(30, 0) != P.make_vocabulary(30, 1)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_vocabulary_words_are_unique_and_well_formed(seed):
    words = P.make_vocabulary(30, seed)
    assert len(words) == 30
    assert len({w.name for w in words}) == 30 and len({w.syllables for w in words}) == 30
    assert [w.name for w in words] == sorted(w.name for w in words)
    for w in words:
        assert 2 <= len(w.syllables) <= 4
        assert w.name == "".join(p.upper() for p in w.phonemes)
        for syllable in w.syllables:
            assert syllable[0] in P.ONSETS and syllable[1] in P.VOWELS
            assert len(syllable) == 2 or (len(syllable) == 3 and syllable[2] in P.CODAS)


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_vocabulary_has_many_minimal_pairs(seed):
    words = P.make_vocabulary(30, seed)
    with_neighbour = [any(one_syllable_apart(w, o) for o in words if o is not w) for w in words]
    assert np.mean(with_neighbour) >= 0.5


@pytest.mark.parametrize("n_words", [0, 10**12])
def test_vocabulary_size_beyond_the_inventory_raises(n_words):
    with pytest.raises(ValueError, match=rf"n_words={n_words}: .* allows 1 to \d+ words"):
        P.make_vocabulary(n_words, 0)


def test_random_take_ranges_and_contours():
    takes = [P.random_take(np.random.default_rng(s)) for s in range(200)]
    assert all(0.8 <= t.rate <= 1.25 and abs(t.onset) <= 0.08 for t in takes)
    assert all(-12.0 <= t.gain_db <= 0.0 for t in takes)
    assert sum(t.f0_end < 0.95 * t.f0_start for t in takes) > 50  # falling
    assert sum(t.f0_end > 1.05 * t.f0_start for t in takes) > 25  # rising
    assert len({t.seed for t in takes}) == 200


# --- timeline -------------------------------------------------------------------------------


def test_timeline_is_contiguous_ordered_and_inside_the_clip():
    rng = np.random.default_rng(0)
    words = P.make_vocabulary(60, 0)
    longest = P.Word("SHOSSHOSSHOSSHOS", (("sh", "o", "s"),) * 4)  # 1.32 s at rate 1: must squeeze
    for word in [*words, longest]:
        for take in [P.random_take(rng) for _ in range(5)] + [P.Take(rate=0.8, onset=0.08)]:
            segs = P.timeline(word, take)
            assert tuple(s.phoneme for s in segs) == word.phonemes
            assert all(s.start < s.end for s in segs)
            assert all(a.end == b.start for a, b in itertools.pairwise(segs))
            assert segs[0].start >= P.MIN_SILENCE - 1e-12
            assert segs[-1].end <= P.CLIP_SECONDS - P.MIN_SILENCE + 1e-12
    squeezed = P.timeline(longest, P.Take(rate=0.8))
    assert squeezed[-1].end - squeezed[0].start == pytest.approx(P.CLIP_SECONDS - 2 * P.MIN_SILENCE)


def test_timeline_rate_scales_length_and_onset_moves_the_centre():
    word = P.make_vocabulary(30, 0)[0]

    def length_and_centre(take):
        segs = P.timeline(word, take)
        return segs[-1].end - segs[0].start, (segs[-1].end + segs[0].start) / 2

    base, centre = length_and_centre(P.Take(rate=1.0, seed=7))
    for rate in (0.8, 1.1, 1.25):
        length, _ = length_and_centre(P.Take(rate=rate, seed=7))
        assert length == pytest.approx(base / rate, rel=1e-9)
    assert centre == pytest.approx(P.CLIP_SECONDS / 2)
    _, moved = length_and_centre(P.Take(onset=-0.07, seed=7))
    assert moved == pytest.approx(P.CLIP_SECONDS / 2 - 0.07)
    # the take's seed changes the per-phoneme durations, not only their sum
    a = [s.end - s.start for s in P.timeline(word, P.Take(seed=1))]
    b = [s.end - s.start for s in P.timeline(word, P.Take(seed=2))]
    assert np.max(np.abs(np.subtract(a, b))) > 0.005


# --- viseme track ---------------------------------------------------------------------------


def frame_of(t: float) -> int:
    return int(t * P.FPS)


def test_viseme_track_range_rest_pose_and_vowel_peaks():
    n_silent = 0
    for _, _, _, segs in clips(40, 0):
        track = P.viseme_track(segs)
        assert track.shape == (P.N_FRAMES, 4) and track.dtype == np.float32
        assert track.min() >= 0.0 and track.max() <= 1.0
        np.testing.assert_allclose(track[[0, -1]], [P.REST, P.REST], atol=0.02)
        # beyond the reach of coarticulation (lead + 3 sigma) the mouth is exactly at rest
        reach = 3 * P.VISEME_SIGMA
        centres = (np.arange(P.N_FRAMES) + 0.5) / P.FPS
        silent = (centres < segs[0].start - P.VISEME_LEAD - reach) | (
            centres > segs[-1].end - P.VISEME_LEAD + reach
        )
        n_silent += silent.sum()
        np.testing.assert_allclose(track[silent], np.tile(P.REST, (silent.sum(), 1)), atol=1e-3)
        peak = int(np.argmax(track[:, 0]))
        vowel_frames = [
            range(frame_of(s.start) - 1, frame_of(s.end) + 2)
            for s in segs
            if P.PHONEMES[s.phoneme].kind == "vowel"
        ]
        assert any(peak in r for r in vowel_frames)
        assert track[peak, 0] > 0.25
    assert n_silent >= 40 * 6  # most clips have a quarter second of silence at each end


@pytest.mark.parametrize("rate", [0.8, 1.0, 1.25])
def test_viseme_track_bilabial_closes_the_lips_between_open_vowels(rate):
    segs = P.timeline(MAMA, P.Take(rate=rate, seed=3))
    track = P.viseme_track(segs)
    m = segs[2]
    assert m.phoneme == "m"
    # the mouth shows the /m/ VISEME_LEAD before it is heard
    closed = frame_of((m.start + m.end) / 2 - P.VISEME_LEAD)
    assert track[closed, 0] < 0.1
    assert track[: closed - 1, 0].max() > 0.6 and track[closed + 2 :, 0].max() > 0.6


@pytest.mark.parametrize(("consonant", "reaches_target"), [("m", True), ("k", False)])
def test_viseme_track_dominance_short_consonant_between_open_vowels(consonant, reaches_target):
    # a 40 ms consonant whose visual centre (0.485 - VISEME_LEAD) is frame 11's centre, 0.46 s
    segs = [
        P.Segment("a", 0.3, 0.465),
        P.Segment(consonant, 0.465, 0.505),
        P.Segment("a", 0.505, 0.65),
    ]
    jaw = P.viseme_track(segs)[11, 0]
    target = P.PHONEMES[consonant].viseme[0]
    if reaches_target:  # lips close even in fast speech
        assert jaw == pytest.approx(target, abs=0.03)
    else:  # the velar gives way to the vowels around it
        assert jaw > target + 0.05


def test_viseme_track_anticipates_the_sound():
    # frame 11 (centre 0.46 s) is 20 ms before /a/ starts, frame 10 is 60 ms before.
    track = P.viseme_track([P.Segment("a", 0.48, 0.6)])
    assert track[10, 0] < 0.05
    assert track[11, 0] > 0.2
    assert track[13, 0] == pytest.approx(P.PHONEMES["a"].viseme[0], abs=0.01)
    assert track[17, 0] < 0.05  # back to rest after the carry-over


# --- synthesis ------------------------------------------------------------------------------


def test_synthesize_shape_range_and_loudness():
    for _, take, voice, segs in clips(8, 1):
        x = V.synthesize(segs, voice, take)
        assert x.shape == (N_SAMPLES,) and x.dtype == np.float32
        assert np.isfinite(x).all() and np.abs(x).max() <= 1.0
        assert np.abs(x).max() == pytest.approx(V.PEAK * 10 ** (take.gain_db / 20), rel=0.01)


def test_silence_is_40db_below_vowels_and_vowels_are_loudest():
    for _, take, voice, segs in clips(12, 2):
        x = V.synthesize(segs, voice, take)
        silence = np.concatenate(
            [span(x, 0.0, segs[0].start - 0.02), span(x, segs[-1].end + 0.02, P.CLIP_SECONDS)]
        )
        vowels = [s for s in segs if P.PHONEMES[s.phoneme].kind == "vowel"]
        vowel = np.concatenate([span(x, s.start + 0.01, s.end - 0.01) for s in vowels])
        assert 20 * np.log10(rms(vowel) / rms(silence)) >= 40
        assert rms(silence) > 0  # a noise floor, not digital zero
        level = {i: rms(span(x, s.start + 0.005, s.end - 0.005)) for i, s in enumerate(segs)}
        loudest = max(level, key=level.get)
        assert P.PHONEMES[segs[loudest].phoneme].kind == "vowel"


def autocorrelation_f0(x: np.ndarray, fmin: float = 60.0, fmax: float = 400.0) -> float:
    x = x.astype(np.float64) - x.mean()
    r = np.correlate(x, x, mode="full")[len(x) - 1 :]  # biased: favours the shortest period
    lo, hi = int(SR / fmax), int(SR / fmin)
    return SR / (lo + int(np.argmax(r[lo:hi])))


@pytest.mark.parametrize("f0", [90.0, 130.0, 190.0, 250.0])
def test_pitch_follows_voice_and_contour(f0):
    voice = V.Voice(f0=f0, jitter=0.015, breathiness=0.3)
    for take in (P.Take(f0_start=1.15, f0_end=0.8), P.Take(f0_start=0.9, f0_end=1.2, seed=4)):
        segs = P.timeline(ALL_VOWELS, take)
        x = V.synthesize(segs, voice, take, seed=5)
        word_start, word_end = segs[0].start, segs[-1].end
        for s in segs:
            if P.PHONEMES[s.phoneme].kind != "vowel":
                continue
            mid = (s.start + s.end) / 2
            expected = f0 * float(take.pitch((mid - word_start) / (word_end - word_start)))
            got = autocorrelation_f0(span(x, mid - 0.03, mid + 0.03))
            assert got == pytest.approx(expected, rel=0.05), s.phoneme


def spectral_centroid(x: np.ndarray) -> float:
    mag = np.abs(np.fft.rfft(x.astype(np.float64) * np.hanning(len(x))))
    freqs = np.fft.rfftfreq(len(x), 1 / SR)
    return float(np.sum(freqs * mag) / np.sum(mag))


def test_formant_scale_raises_the_spectral_centroid_of_every_vowel():
    take = P.Take(seed=2)
    segs = P.timeline(ALL_VOWELS, take)
    long_tract = V.synthesize(segs, V.Voice(formant_scale=0.88), take, seed=1)
    short_tract = V.synthesize(segs, V.Voice(formant_scale=1.15), take, seed=1)
    for s in segs:
        if P.PHONEMES[s.phoneme].kind == "vowel":
            lo, hi = s.start + 0.015, s.end - 0.015
            ratio = spectral_centroid(span(short_tract, lo, hi)) / spectral_centroid(
                span(long_tract, lo, hi)
            )
            assert ratio > 1.1, s.phoneme


def test_voices_differ_and_synthesis_is_deterministic():
    _, take, voice, segs = next(clips(1, 3))
    x = V.synthesize(segs, voice, take, seed=9)
    np.testing.assert_array_equal(x, V.synthesize(segs, voice, take, seed=9))
    other = V.Voice(f0=voice.f0 * 1.3, formant_scale=voice.formant_scale * 1.1)
    y = V.synthesize(segs, other, take, seed=9)
    assert rms(x - y) > 0.5 * rms(x)
    # another seed: other noise and jitter, so another waveform, but the same utterance
    z = V.synthesize(segs, voice, take, seed=10)
    assert rms(x - z) > 0.1 * rms(x)
    assert np.corrcoef(rms_10ms(x), rms_10ms(z))[0, 1] > 0.95


def test_audio_energy_predicts_the_jaw():
    correlations = []
    for _, take, voice, segs in clips(20, 4):
        energy = rms_10ms(V.synthesize(segs, voice, take))  # [116] at 100 Hz
        jaw = P.viseme_track(segs)[:, 0]
        jaw_100hz = np.interp(
            (np.arange(len(energy)) + 0.5) / 100, (np.arange(P.N_FRAMES) + 0.5) / P.FPS, jaw
        )
        correlations.append(np.corrcoef(energy, jaw_100hz)[0, 1])
    assert min(correlations) > 0.3
    assert np.mean(correlations) > 0.6
