"""Tests of fastdavs.data.face, SynthLRW's face renderer: determinism by seed, landmark geometry
against the DAVS 3-point template, landmarks that sit on what was drawn there (pupils, mouth
interior, lips), what each viseme dimension and the blink do to the pixels, what the pose does to
the landmarks, that 40 identities look different, and the bounds of the speech-free head motion
and blinks.
"""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest

from fastdavs.data import face as F

SIZE = 256
REST = (0.0, 0.5, 0.0, 0.0)
OPEN = (1.0, 0.5, 0.0, 0.0)
STILL = (0.0, 0.0, 0.0, 1.0)


@pytest.fixture(scope="module")
def people():
    rng = np.random.default_rng(2024)
    return [F.random_identity(rng) for _ in range(40)]


def at(img: np.ndarray, p) -> np.ndarray:
    return img[int(round(p[1])), int(round(p[0]))].astype(float)


def lit(f: F.FaceIdentity, colour, p) -> np.ndarray:
    """`colour` as the renderer's light map leaves it at pixel p (white-box: the map is private)."""
    light = F._statics(f, SIZE).light
    return np.minimum(np.array(colour, float) * at(light, p) / F.LIGHT_ONE, 255)


def mouth_box(img: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """The pixels within half an inter-ocular distance of the mouth corners' bounding box."""
    pad = (lm[1, 0] - lm[0, 0]) / 2
    (x0, y0), (x1, y1) = lm[3:].min(0) - pad, lm[3:].max(0) + pad
    return img[int(y0) : int(y1) + 1, int(x0) : int(x1) + 1].astype(float)


def count_near(region: np.ndarray, colour: np.ndarray, tol: float) -> int:
    return int((np.abs(region - colour).max(-1) <= tol).sum())


def test_same_seed_gives_same_identity_and_pixels():
    clips = []
    for _ in range(2):
        rng = np.random.default_rng(7)
        f = F.random_identity(rng)
        visemes = rng.uniform(0, 1, (6, 4)).astype(np.float32)
        clips.append((f, *F.render_clip(f, visemes, F.head_motion(rng, 6), F.blinks(rng, 6), 128)))
    (f1, frames1, lm1), (f2, frames2, lm2) = clips
    assert f1 == f2
    np.testing.assert_array_equal(frames1, frames2)
    np.testing.assert_array_equal(lm1, lm2)
    assert F.random_identity(np.random.default_rng(8)) != f1


def test_shapes_dtypes_and_landmarks_inside(people):
    rng = np.random.default_rng(0)
    for f in people:
        motion = F.head_motion(rng, 4)
        motion[0] = (0.03, -0.03, 4.0, 1.03)  # the extreme pose
        frames, lm = F.render_clip(f, rng.uniform(0, 1, (4, 4)), motion, F.blinks(rng, 4), 128)
        assert frames.shape == (4, 128, 128, 3) and frames.dtype == np.uint8
        assert lm.shape == (4, 5, 2) and lm.dtype == np.float32
        assert lm.min() > 0 and lm.max() < 127
    img, lm = F.render_frame(people[0], REST, STILL, 0.0)
    assert img.shape == (SIZE, SIZE, 3) and img.dtype == np.uint8
    assert lm.shape == (5, 2) and lm.dtype == np.float32


def test_landmark_geometry_matches_the_davs_template(people):
    # template (70,112), (110,112), (90,150): the mouth is 38/40 = 0.95 eye distances below
    for f in people:
        for viseme in (REST, OPEN, (1, 1, 1, 1), (0.5, 0, 1, 0)):
            _, lm = F.render_frame(f, viseme, STILL, 0.0)
            iod = lm[1, 0] - lm[0, 0]
            mouth = lm[3:].mean(0)
            assert abs(lm[1, 1] - lm[0, 1]) < 1e-3
            assert 0.2 * SIZE < iod < 0.3 * SIZE
            assert 0.9 <= (mouth[1] - lm[0, 1]) / iod <= 1.1
            assert abs(mouth[0] - lm[:2, 0].mean()) < 1e-3  # mouth under the eyes
            assert lm[0, 1] < lm[2, 1] < mouth[1]  # nose between eyes and mouth


def test_eye_landmarks_are_the_drawn_pupil_centres(people):
    pose = (0.01, -0.02, 3.0, 1.02)
    for f in people:
        img, lm = F.render_frame(f, REST, pose, 0.0)
        pupil_r = 0.42 * 0.46 * F.EYE_HALF_WIDTH * f.eye_size * f.iris_size * SIZE * pose[3]
        for eye in lm[:2]:
            pupil, iris = lit(f, F.PUPIL, eye), lit(f, f.iris, eye)
            np.testing.assert_allclose(at(img, eye), pupil, atol=3)
            # darkness-weighted centroid of the pupil disc and a ring of iris around it
            x0, y0 = eye.round().astype(int) - 6
            ys, xs = np.mgrid[y0 : y0 + 13, x0 : x0 + 13]
            near = np.hypot(xs - eye[0], ys - eye[1]) <= pupil_r + 1.2
            weight = (iris - img[ys, xs]).mean(-1) / (iris - pupil).mean() * near
            weight = np.clip(weight, 0, 1)
            centroid = (weight * xs).sum() / weight.sum(), (weight * ys).sum() / weight.sum()
            # OpenCV's antialiased fill grows a shape by about half a pixel, not quite evenly: a
            # 3 px disc drawn alone on black has its centroid up to 0.3 px off the true centre
            np.testing.assert_allclose(centroid, eye, atol=0.5)


def test_mouth_centre_is_interior_when_open_and_lip_when_closed(people):
    for f in people:
        img, lm = F.render_frame(f, OPEN, STILL, 0.0)
        centre = lm[3:].mean(0)
        np.testing.assert_allclose(at(img, centre), lit(f, F.MOUTH_INSIDE, centre), atol=3)

        img, lm = F.render_frame(f, REST, STILL, 0.0)
        centre = lm[3:].mean(0)
        # on the seam between the upper lip (0.82 lip) and the lower lip (lip)
        lip = lit(f, f.lip, centre)
        pixel = at(img, centre)
        a = np.clip(pixel @ lip / (lip @ lip), 0.82, 1.0)
        np.testing.assert_allclose(pixel, a * lip, atol=4)


def test_jaw_open_shows_more_mouth_interior(people):
    for f in people[:10]:
        counts = []
        for jaw in (0.0, 0.5, 1.0):
            img, lm = F.render_frame(f, (jaw, 0.5, 0.0, 0.0), STILL, 0.0)
            centre = lm[3:].mean(0)
            counts.append(count_near(mouth_box(img, lm), lit(f, F.MOUTH_INSIDE, centre), 6))
        assert counts[0] == 0 < counts[1] < counts[2]
        assert counts[2] > 0.004 * SIZE**2


def test_chin_drops_when_the_jaw_opens(people):
    for f in people[:10]:
        closed, lm = F.render_frame(f, REST, STILL, 0.0)
        opened = F.render_frame(f, OPEN, STILL, 0.0)[0]
        chin = lm[3:, 1].mean() + f.chin_length * SIZE  # rest chin, pixel row
        changed = np.nonzero((closed != opened).any(-1))[0]
        assert changed.max() > chin + 10  # the chin outline moved down by more than 10 pixels


def test_lip_width_spreads_and_rounding_narrows_the_mouth(people):
    for f in people[:10]:
        widths = []
        for viseme in ((0.3, 0.0, 0.0, 0.0), (0.3, 0.5, 0.0, 0.0), (0.3, 1.0, 0.0, 0.0)):
            lm = F.render_frame(f, viseme, STILL, 0.0, 128)[1]
            widths.append(lm[4, 0] - lm[3, 0])
        assert widths[0] < widths[1] < widths[2]
        assert widths[2] / widths[0] > 1.4
        round_lm = F.render_frame(f, (0.3, 0.5, 1.0, 0.0), STILL, 0.0, 128)[1]
        assert round_lm[4, 0] - round_lm[3, 0] < 0.8 * widths[1]


def test_teeth_show_white_inside_the_mouth(people):
    for f in people[:10]:
        counts = []
        for teeth in (0.0, 1.0):
            img, lm = F.render_frame(f, (0.8, 0.5, 0.0, teeth), STILL, 0.0)
            centre = lm[3:].mean(0)
            counts.append(count_near(mouth_box(img, lm), lit(f, F.TEETH, centre), 8))
        assert counts[0] == 0
        assert counts[1] > 0.001 * SIZE**2


def test_blink_hides_the_pupils(people):
    for f in people:
        half = int(F.EYE_HALF_WIDTH * f.eye_size * SIZE)  # eye half-width, pixels
        high = int(0.6 * half)  # above the brows, which may be as dark as a pupil
        dark = []
        for blink in (0.0, 1.0):
            img, lm = F.render_frame(f, REST, STILL, blink)
            n = 0
            for x, y in lm[:2].round().astype(int):
                eye = img[y - high : y + high + 1, x - half : x + half + 1].astype(float)
                n += count_near(eye, lit(f, F.PUPIL, (x, y)), 6)
            dark.append(n)
            if blink == 1.0:
                for eye in lm[:2]:
                    np.testing.assert_allclose(at(img, eye), lit(f, f.skin, eye), atol=3)
        assert dark[0] > 10 and dark[1] == 0


def test_pose_moves_the_landmarks_rigidly(people):
    f = people[3]
    lm0 = F.render_frame(f, OPEN, STILL, 0.0)[1]
    lm = F.render_frame(f, OPEN, (0.025, -0.015, 0.0, 1.0), 0.0)[1]
    np.testing.assert_allclose(lm - lm0, np.tile([0.025 * SIZE, -0.015 * SIZE], (5, 1)), atol=1e-3)
    lm = F.render_frame(f, OPEN, (0.0, 0.0, 0.0, 1.03), 0.0)[1]
    np.testing.assert_allclose(lm[1, 0] - lm[0, 0], 1.03 * (lm0[1, 0] - lm0[0, 0]), rtol=1e-5)
    for roll in (-4.0, 1.5, 4.0):
        img, lm = F.render_frame(f, OPEN, (0.0, 0.0, roll, 1.0), 0.0)
        d = lm[1] - lm[0]
        # positive roll is counter-clockwise on screen: the right eye goes up (smaller y)
        assert math.degrees(math.atan2(-d[1], d[0])) == pytest.approx(roll, abs=0.5)
        for eye in lm[:2]:
            np.testing.assert_allclose(at(img, eye), lit(f, F.PUPIL, eye), atol=3)


def test_identities_look_different(people):
    imgs = np.stack([F.render_frame(f, REST, STILL, 0.0, 128)[0] for f in people]).astype(np.int16)
    for i in range(len(imgs) - 1):
        diff = np.abs(imgs[i + 1 :] - imgs[i]).mean(axis=(1, 2, 3))
        assert diff.min() > 8, (i, diff.argmin() + i + 1, diff.min())
    assert len({f.hair_style for f in people}) == len(F.HAIR_STYLES)
    skin_lightness = [sum(f.skin) / 3 for f in people]
    assert min(skin_lightness) < 110 and max(skin_lightness) > 200
    spacing = [f.eye_spacing for f in people]
    assert min(spacing) < 0.9 and max(spacing) > 1.1


def test_head_motion_is_small_smooth_and_speech_free():
    assert list(inspect.signature(F.head_motion).parameters) == ["rng", "n_frames"]
    rng = np.random.default_rng(1)
    all_motion = np.stack([F.head_motion(rng, 29) for _ in range(300)])
    assert all_motion.shape == (300, 29, 4) and all_motion.dtype == np.float32
    dx, dy, roll, scale = np.moveaxis(all_motion, -1, 0)
    assert np.abs(dx).max() <= 0.03 and np.abs(dy).max() <= 0.03
    assert np.abs(roll).max() <= 4.0 and np.abs(scale - 1).max() <= 0.03 + 1e-6
    assert np.abs(roll).max() > 2.0 and np.abs(dx).max() > 0.015  # there is motion
    # slow: at most 1.2 Hz, so a frame step is at most 2 pi 1.2 / 25 of the bound
    steps = np.abs(np.diff(all_motion, axis=1)).max(axis=(0, 1))
    assert np.all(steps <= 2 * math.pi * 1.2 / 25 * np.array(F.MOTION_BOUNDS) + 1e-6)


def test_blinks_are_short_random_and_speech_free():
    assert list(inspect.signature(F.blinks).parameters) == ["rng", "n_frames"]
    rng = np.random.default_rng(2)
    counts = set()
    for _ in range(300):
        b = F.blinks(rng, 29)
        assert b.shape == (29,) and b.dtype == np.float32
        assert b.min() >= 0 and b.max() <= 1
        closed = np.concatenate([[0], (b > 0).astype(int), [0]])
        starts, ends = np.nonzero(np.diff(closed) == 1)[0], np.nonzero(np.diff(closed) == -1)[0]
        assert all(3 <= e - s <= 5 for s, e in zip(starts, ends, strict=True))
        assert all(b[s:e].max() == 1.0 for s, e in zip(starts, ends, strict=True))
        counts.add(len(starts))
    assert counts == {0, 1, 2}
