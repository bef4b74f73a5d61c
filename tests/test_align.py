"""Tests of fastdavs.data.align: the similarity fit against an independent linear least-squares
solve, the one-matrix alignment against the template written out by hand and against the
original's three-step pipeline, warping (dot centroids, border, anti-aliasing), temporal
and temporal smoothing; detection and landmarks are tests/test_face_detect.py's.
"""

import cv2
import numpy as np
import pytest

from fastdavs.data import align
from fastdavs.data.face_detect import best_face, find_faces
from fastdavs.errors import DataError

# The template as spec/davs.md §3.2 states it: CelebA points x2, 268 box at (44, 104) on the
# 356x436 canvas, resized to 260 and then by image_size / 256.
CANVAS_POINTS = 2 * np.array([[70.0, 112.0], [110.0, 112.0], [90.0, 150.0]])
X0, Y0 = (356 - 268) / 2, (436 - 268) / 2 + 20

# Pupils of Grace Hopper in matplotlib's sample_data/grace_hopper.jpg (512x600), read off a 4x zoom.
HOPPER_EYES = np.array([[221.0, 190.0], [305.0, 186.0]])


def expected_output_points(image_size):
    """Template points in aligned-frame pixels: cv2.resize's pixel-centre rule u = k(x+1/2)-1/2."""
    k = 260 / 268 * image_size / 256
    return k * (CANVAS_POINTS - (X0, Y0) + 0.5) - 0.5


def random_similarity(rng):
    angle = rng.uniform(-np.pi, np.pi)
    s = rng.uniform(0.3, 3.0)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return np.concatenate([s * rot, rng.uniform(-100, 100, (2, 1))], axis=1)


def apply(m, pts):
    return pts @ m[:, :2].T + m[:, 2]


def lstsq_similarity(src, dst, w):
    """Reference: [[a, -b, tx], [b, a, ty]] is linear in (a, b, tx, ty); weighted lstsq."""
    rows = []
    for (x, y), (u, v), wk in zip(src, dst, w, strict=True):
        r = np.sqrt(wk)
        rows.append((r * np.array([x, -y, 1, 0]), r * u))
        rows.append((r * np.array([y, x, 0, 1]), r * v))
    a_mat, rhs = np.array([r[0] for r in rows]), np.array([r[1] for r in rows])
    a, b, tx, ty = np.linalg.lstsq(a_mat, rhs, rcond=None)[0]
    return np.array([[a, -b, tx], [b, a, ty]])


def source_points(rng, scale=0.75, centre=(128.0, 128.0)):
    """Template-shaped points in a 256x256 frame: the crop centre lands on `centre`."""
    angle = rng.uniform(-0.3, 0.3)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    crop_centre = np.array([X0 + 134, Y0 + 134])
    return (CANVAS_POINTS - crop_centre) @ (scale * rot).T + centre


def gaussian_dots(points, shape=(256, 256), sigma=3.0):
    """R, G, B blobs at the left eye, right eye and mouth (one channel each) on black."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    frame = np.zeros((*shape, 3))
    for c, (px, py) in enumerate(points):
        frame[..., c] = 255 * np.exp(-((xx - px) ** 2 + (yy - py) ** 2) / (2 * sigma**2))
    return np.round(frame).astype(np.uint8)


def centroids(image, near, radius):
    """Intensity centroid of channel c within `radius` px of near[c] (the dots sit on black)."""
    yy, xx = np.mgrid[: image.shape[0], : image.shape[1]]
    got = []
    for c, (px, py) in enumerate(near):
        w = image[..., c] * (((xx - px) ** 2 + (yy - py) ** 2) <= radius**2)
        got.append([(xx * w).sum() / w.sum(), (yy * w).sum() / w.sum()])
    return np.array(got)


def hopper():
    cbook = pytest.importorskip("matplotlib.cbook")
    path = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


@pytest.mark.parametrize("size, side", [(256, 260), (128, 130), (64, 65), (32, 33)])
def test_aligned_size(size, side):
    assert align.aligned_size(size) == side


@pytest.mark.parametrize("k", [2, 3, 5])
def test_similarity_recovers_known_transform(k):
    rng = np.random.default_rng(k)
    for _ in range(20):
        m = random_similarity(rng)
        src = rng.uniform(-200, 200, (k, 2))
        np.testing.assert_allclose(align.similarity_transform(src, apply(m, src)), m, atol=1e-9)
        w = rng.uniform(0.5, 2.0, k)
        np.testing.assert_allclose(align.similarity_transform(src, apply(m, src), w), m, atol=1e-9)


def test_similarity_is_weighted_least_squares_without_reflection():
    rng = np.random.default_rng(1)
    for k in (3, 5, 8):
        src = rng.uniform(-50, 50, (k, 2))
        dst = apply(random_similarity(rng), src) + rng.normal(0, 5, (k, 2))
        w = rng.uniform(0.2, 3.0, k)
        fit = align.similarity_transform(src, dst, w)
        np.testing.assert_allclose(fit, lstsq_similarity(src, dst, w), atol=1e-9)
        # A mirrored target: the best proper similarity, never a reflection.
        mirrored = dst * (-1, 1)
        fit = align.similarity_transform(src, mirrored)
        assert np.linalg.det(fit[:, :2]) > 0
        np.testing.assert_allclose(fit, lstsq_similarity(src, mirrored, np.ones(k)), atol=1e-9)


def test_similarity_and_alignment_are_batched():
    rng = np.random.default_rng(13)
    pts = rng.uniform(0, 256, (4, 5, 3, 2))
    fits = align.similarity_transform(pts, align.TEMPLATE, align.TEMPLATE_WEIGHTS)
    mats = align.alignment_matrix(pts, 64)
    assert fits.shape == mats.shape == (4, 5, 2, 3)
    for i, j in np.ndindex(4, 5):
        one = align.similarity_transform(pts[i, j], align.TEMPLATE, align.TEMPLATE_WEIGHTS)
        np.testing.assert_allclose(fits[i, j], one, atol=1e-12)
        np.testing.assert_allclose(mats[i, j], align.alignment_matrix(pts[i, j], 64), atol=1e-12)
    pts[2, 3] = 7.0
    with pytest.raises(ValueError, match="coincide"):
        align.alignment_matrix(pts, 64)


def test_alignment_counts_eyes_twice():
    """The original fits [eye L, eye R, eye L, eye R, mouth] (process256_224.py)."""
    rng = np.random.default_rng(2)
    dup = np.array([0, 1, 0, 1, 2])
    for _ in range(5):
        pts = apply(random_similarity(rng), CANVAS_POINTS) + rng.normal(0, 8, (3, 2))
        canvas = apply(align.similarity_transform(pts[dup], CANVAS_POINTS[dup]), pts)
        k = 260 / 268
        want = k * (canvas - (X0, Y0) + 0.5) - 0.5
        np.testing.assert_allclose(apply(align.alignment_matrix(pts, 256), pts), want, atol=1e-9)


def test_similarity_collinear_is_exact_and_coincident_raises():
    rng = np.random.default_rng(3)
    m = random_similarity(rng)
    line = np.array([[0.0, 0.0], [1.0, 2.0], [2.5, 5.0], [-3.0, -6.0]]) * 10 + (5, 7)
    np.testing.assert_allclose(align.similarity_transform(line, apply(m, line)), m, atol=1e-9)
    np.testing.assert_allclose(
        align.similarity_transform(line[:2], apply(m, line[:2])), m, atol=1e-9
    )
    with pytest.raises(ValueError, match="coincide"):
        align.similarity_transform(np.full((3, 2), 4.0), rng.uniform(0, 1, (3, 2)))


@pytest.mark.parametrize("size", [256, 64])
def test_alignment_matrix_maps_points_to_template(size):
    rng = np.random.default_rng(size)
    want = expected_output_points(size)
    if size == 64:  # the 64 preset is the 256 one scaled by 65/260, about the pixel corner
        np.testing.assert_allclose(want + 0.5, (expected_output_points(256) + 0.5) * 65 / 260)
    for _ in range(10):
        src = apply(random_similarity(rng), CANVAS_POINTS)
        np.testing.assert_allclose(apply(align.alignment_matrix(src, size), src), want, atol=1e-9)


def test_one_warp_matches_original_three_step_pipeline():
    """warp to the 356x436 canvas, cut [104:372, 44:312], cv2.resize to 260 == one warp."""
    rng = np.random.default_rng(4)
    pts = source_points(rng)
    smooth = cv2.GaussianBlur(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8), (0, 0), 4)
    smooth = cv2.normalize(smooth, None, 0, 255, cv2.NORM_MINMAX)
    sim = align.similarity_transform(pts, align.TEMPLATE, align.TEMPLATE_WEIGHTS)
    canvas = cv2.warpAffine(smooth, sim, (356, 436), borderValue=(127, 127, 127))
    original = cv2.resize(canvas[104:372, 44:312], (260, 260)).astype(np.float64)
    ours = align.align_frames(smooth[None], pts[None], 256)[0].astype(np.float64)
    assert np.abs(ours - original)[8:-8, 8:-8].mean() < 0.5


@pytest.mark.parametrize("antialias", [True, False])
@pytest.mark.parametrize("size", [256, 64])
def test_align_frames_dots_land_on_template(size, antialias):
    rng = np.random.default_rng(5)
    pts = np.stack([source_points(rng, scale=0.9, centre=(100.0, 90.0)) for _ in range(3)])
    frames = np.stack([gaussian_dots(p) for p in pts])
    out = align.align_frames(frames, pts, size, antialias=antialias)
    side = align.aligned_size(size)
    assert out.shape == (3, side, side, 3) and out.dtype == np.uint8
    for t in range(3):
        want = expected_output_points(size)
        got = centroids(out[t], want, radius=side / 16)
        np.testing.assert_allclose(got, want, atol=0.15)
        m = align.alignment_matrix(pts[t], size)
        # Output pixels that read more than 2 px outside the 256x256 frame are the grey border.
        inv = cv2.invertAffineTransform(m)
        yy, xx = np.mgrid[:side, :side]
        sx, sy = (
            inv[0, 0] * xx + inv[0, 1] * yy + inv[0, 2],
            inv[1, 0] * xx + inv[1, 1] * yy + inv[1, 2],
        )
        outside = (sx < -2) | (sy < -2) | (sx > 257) | (sy > 257)
        assert outside.sum() > 0.05 * side**2
        assert (out[t][outside] == 127).all()


def test_antialias_blurs_only_what_the_output_reads():
    """Fast path (blur the source box the output reads) == blur the whole frame, then warp."""
    rng = np.random.default_rng(6)
    frame = rng.integers(0, 256, (200, 300, 3), dtype=np.uint8)
    for centre in [(150.0, 100.0), (20.0, 15.0), (290.0, 190.0)]:
        pts = source_points(rng, scale=1.2, centre=centre)
        m = align.alignment_matrix(pts, 64)
        sigma = align.ANTIALIAS_SIGMA / np.sqrt(np.linalg.det(m[:, :2]))
        blurred = cv2.GaussianBlur(frame, (0, 0), sigma)
        want = cv2.warpAffine(blurred, m, (65, 65), borderValue=(127, 127, 127))
        np.testing.assert_array_equal(align.align_frames(frame[None], pts[None], 64)[0], want)


def test_antialias_removes_moire():
    """1-px stripes shrunk 3x: bilinear alone aliases them into bands; the low-pass averages."""
    frame = np.zeros((256, 256, 3), np.uint8)
    frame[:, ::2] = 255
    pts = source_points(np.random.default_rng(7), scale=1.0)[None]
    sharp = align.align_frames(frame[None], pts, 64, antialias=False)[0][16:48, 16:48]
    soft = align.align_frames(frame[None], pts, 64)[0][16:48, 16:48]
    assert sharp.std() > 40
    assert soft.std() < 5 and abs(soft.mean() - 127.5) < 3


def test_three_points():
    lm = np.array([[[30.0, 40], [70, 42], [50, 60], [36, 80], [66, 84]]])
    np.testing.assert_allclose(align.three_points(lm), [[[30, 40], [70, 42], [51, 82]]])


def test_smooth_points_fills_gaps_and_holds_ends():
    values = np.arange(10, dtype=np.float64) * 2.0  # a linear track, one value per frame
    points = np.broadcast_to(values[:, None, None], (10, 3, 2)).copy()
    found = np.ones(10, dtype=bool)
    found[[0, 1, 4, 5, 6, 9]] = False
    points[~found] = np.nan
    filled = align.smooth_points(points, found, sigma_frames=0)
    np.testing.assert_allclose(filled[:, 0, 0], [4, 4, 4, 6, 8, 10, 12, 14, 16, 16])
    # Gaussian smoothing leaves a linear track alone beyond its 4-sigma reach of the ends: no lag.
    track = np.broadcast_to(values[:, None, None], (10, 3, 2))
    smoothed = align.smooth_points(track, np.ones(10, dtype=bool), sigma_frames=1.0)
    np.testing.assert_allclose(smoothed[4:6, 1, 1], values[4:6], atol=1e-9)


def test_smooth_points_reduces_jitter():
    rng = np.random.default_rng(9)
    track = np.array([[100.0, 120], [140, 120], [120, 158]]) + rng.normal(0, 2.0, (200, 3, 2))
    smoothed = align.smooth_points(track, np.ones(200, dtype=bool), sigma_frames=1.0)
    ratio = smoothed.std(axis=0) / track.std(axis=0)
    assert (ratio < 0.65).all()  # white noise through a sigma-1 Gaussian: std x 0.53
    np.testing.assert_allclose(smoothed.mean(0), track.mean(0), atol=0.2)


def test_smooth_points_without_any_face_raises():
    with pytest.raises(DataError, match=r"no face found in any of the 29 frames of clips/A_1\.mp4"):
        align.smooth_points(np.zeros((29, 3, 2)), np.zeros(29, bool), path="clips/A_1.mp4")


def test_align_clip_sidecar_fills_missing_frames():
    rng = np.random.default_rng(10)
    pts = source_points(rng, scale=0.9, centre=(120.0, 110.0))
    frames = np.repeat(gaussian_dots(pts)[None], 5, axis=0)
    mouth = pts[2]
    lm = np.array(
        [pts[0], pts[1], (pts[0] + pts[1]) / 2 + (0, 15), mouth - (12, 1), mouth + (12, 1)]
    )
    lm5 = np.repeat(lm[None], 5, axis=0)
    lm5[1] = np.nan  # a frame the sidecar has no face for
    lm5[3] = 0.0  # and one it filled with zeros
    out, found = align.align_clip(frames, 256, landmarks5=lm5, path="x.mp4")
    np.testing.assert_array_equal(found, [True, False, True, False, True])
    for t in range(5):
        want = expected_output_points(256)
        np.testing.assert_allclose(centroids(out[t], want, radius=16), want, atol=0.15)


def test_faceless_clip_raises():
    clip = np.full((4, 64, 64, 3), 200, np.uint8)
    with pytest.raises(DataError, match=r"no face found in any of the 4 frames of WORD_00001\.mp4"):
        align.align_clip(clip, 64, path="WORD_00001.mp4")


def test_align_clip_tracks_a_real_portrait():
    """Without a sidecar the face is tracked (face_detect): the labelled pupils of a real
    portrait land on the template's eye row of the aligned crop (+-8% of the side)."""
    image = hopper()
    aligned, found = align.align_clip(np.stack([image, image[:, ::-1]]), 64)
    assert aligned.shape == (2, 65, 65, 3) and found.all()
    points = best_face(find_faces(image)).points
    for size in (256, 64):
        side = align.aligned_size(size)
        eyes = apply(align.alignment_matrix(points, size), HOPPER_EYES)
        np.testing.assert_allclose(eyes, expected_output_points(size)[:2], atol=0.08 * side)
