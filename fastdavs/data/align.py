"""DAVS face alignment: 3 points per frame (eye centres, mouth centre) -> aligned face crops.

Data flow: decoded RGB frames [T, H, W, 3] + landmarks (a 5-point sidecar for SynthLRW, dlib's
detector and 68 landmarks for real footage, `face_detect`) -> `smooth_points` (fill frames
without a face, Gaussian in time) -> one similarity per frame -> one `cv2.warpAffine` per
frame -> uint8 crops [T, A, A, 3], A = `aligned_size(image_size)` (260 for 256). The loader
then takes a random `image_size` crop.

The template (spec/davs.md §3.2, the original `preprocess/process256_224.py`): the points go by a
least-squares similarity to (70, 112), (110, 112), (90, 150) x2 on a 356x436 canvas (CelebA
178x218 x2) with grey-127 border, a 268x268 box is cut from the canvas and resized to 260x260.
Here those three steps plus the scale to the preset are one affine matrix (`alignment_matrix`),
so each frame is resampled once. Pixel coordinates are OpenCV's: integers at pixel centres.

The original fits a new transform to raw per-frame landmarks, which makes the face zoom in and out
(spec §3.2, #6); smoothing the points over time before fitting removes most of that jitter.
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
from scipy.ndimage import gaussian_filter1d

from fastdavs.data.face_detect import track_faces
from fastdavs.errors import DataError

log = logging.getLogger(__name__)

CANVAS_W, CANVAS_H = 356, 436  # CelebA 178x218, x2
TEMPLATE = 2.0 * np.array([[70.0, 112.0], [110.0, 112.0], [90.0, 150.0]])  # [3, 2] canvas x, y
# The original fits [left eye, right eye, left eye, right eye, mouth] (process256_224.py): the eyes
# count twice in the least-squares fit.
TEMPLATE_WEIGHTS = np.array([2.0, 2.0, 1.0])
CROP = 268  # 134 x2
# "Crop 268x268 centred with a +20 px vertical offset": the original computes
# l = round(356/2 - 268/2) = 44 and t = round(436/2 - 268/2 + 20) = 104 (canvas pixels, the box is
# rows 104..371 and columns 44..311); the +20 is 10 px at CelebA scale x2, the box moves down.
CROP_X0 = (CANVAS_W - CROP) // 2  # 44
CROP_Y0 = (CANVAS_H - CROP) // 2 + 20  # 104
ALIGNED = 260  # the 268 box is resized to this; training crops 256 of it (offset 0..4)
BASE_SIZE = 256  # image_size the template was made for
BORDER = 127  # grey where the source frame does not reach
ANTIALIAS_SIGMA = 0.3  # output pixels; see align_frames


def aligned_size(image_size: int) -> int:
    """Side A of the aligned frames for a preset: round(image_size * 260 / 256), halves up.

    256 -> 260, 128 -> 130, 64 -> 65, 32 -> 33.
    """
    return (image_size * ALIGNED + BASE_SIZE // 2) // BASE_SIZE


def similarity_transform(
    src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None
) -> np.ndarray:
    """Weighted least-squares similarity (Umeyama 1991) taking `src` onto `dst`, batched.

    Minimises sum_k w_k |s R src_k + t - dst_k|^2 over rotations R (det +1, never a reflection),
    scales s > 0 and translations t. Exact when `dst` is a similarity image of `src`, for any two
    or more distinct points, collinear ones included.

    Args:
        src (ndarray): points, shape `(..., K, 2)`, K >= 2.
        dst (ndarray): points, shape `(..., K, 2)`, broadcastable against `src`.
        weights (ndarray, optional): non-negative, shape `(K,)`. (Default: all ones)

    Returns:
        ndarray: float64 `(..., 2, 3)` matrices [s R | t], the layout `cv2.warpAffine` takes.

    Raises:
        ValueError: bad shapes, or the weighted `src` points of some item all coincide.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.ndim < 2 or src.shape[-1] != 2 or src.shape[-2:] != dst.shape[-2:] or src.shape[-2] < 2:
        raise ValueError(f"need (..., K, 2) point sets with K >= 2, got {src.shape}, {dst.shape}")
    w = np.ones(src.shape[-2]) if weights is None else np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    mu_src, mu_dst = w @ src, w @ dst  # [..., 2] each
    xs, xd = src - mu_src[..., None, :], dst - mu_dst[..., None, :]  # [..., K, 2] each
    var_src = (xs * xs).sum(-1) @ w  # [...]
    if not (var_src > 1e-12 * np.maximum(1.0, np.abs(src).max((-2, -1))) ** 2).all():
        raise ValueError("similarity_transform: the source points coincide")
    cov = np.swapaxes(xd * w[:, None], -1, -2) @ xs  # [..., 2, 2] = sum_k w_k dst_k src_k^T
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones_like(sig)  # [..., 2]: flip the weakest axis where U Vt would reflect
    d[..., 1] = np.where(np.linalg.det(u) * np.linalg.det(vt) < 0, -1.0, 1.0)
    rot = u @ (d[..., :, None] * vt)  # U diag(d) Vt
    scale = (sig * d).sum(-1) / var_src  # [...]
    lin = scale[..., None, None] * rot  # [..., 2, 2]
    t = mu_dst - (lin @ mu_src[..., :, None])[..., 0]  # [..., 2]
    return np.concatenate([lin, t[..., :, None]], axis=-1)


def output_matrix(image_size: int) -> np.ndarray:
    """The affine [2, 3] from template-canvas pixels to aligned-frame pixels for a preset.

    Cut the 268 box at (CROP_X0, CROP_Y0), resize it to 260 and then by image_size / 256, with
    `cv2.resize`'s pixel-centre convention: u = k (x - x0 + 1/2) - 1/2, k = 260/268 * size/256.
    """
    k = ALIGNED / CROP * image_size / BASE_SIZE
    return np.array([[k, 0.0, k * (0.5 - CROP_X0) - 0.5], [0.0, k, k * (0.5 - CROP_Y0) - 0.5]])


def alignment_matrix(points: np.ndarray, image_size: int) -> np.ndarray:
    """One affine [2, 3] from source-frame pixels straight to the aligned frame.

    Composes the template similarity (fitted with ``TEMPLATE_WEIGHTS``), the 268 crop, the resize
    to 260 and the scale to the preset. Maps exact template-shaped `points` onto
    ``output_matrix(image_size) @ [TEMPLATE, 1]``.

    Args:
        points (ndarray): left eye, right eye, mouth centre in source pixels, shape `(..., 3, 2)`.
        image_size (int): the preset's `DavsConfig.image_size`; the output side is
            `aligned_size(image_size)`.

    Returns:
        ndarray: float64, shape `(..., 2, 3)`, for `cv2.warpAffine`.
    """
    out = output_matrix(image_size)
    composed = out[:, :2] @ similarity_transform(points, TEMPLATE, TEMPLATE_WEIGHTS)
    composed[..., 2] += out[:, 2]
    return composed


def _warp(frame: np.ndarray, matrix: np.ndarray, side: int, antialias: bool, dst: np.ndarray):
    """One bilinear warp of `frame` [H, W, C] into `dst` [side, side, C], low-passed first when
    it shrinks (see `align_frames`)."""
    scale = np.sqrt(abs(np.linalg.det(matrix[:, :2])))
    if antialias and scale < 1:
        sigma = ANTIALIAS_SIGMA / scale
        # Blur only the source box the output reads (plus the kernel's reach), not the frame.
        corners = np.array([[0, 0], [side, 0], [0, side], [side, side]], dtype=np.float64)
        inv = cv2.invertAffineTransform(matrix)
        src = corners @ inv[:, :2].T + inv[:, 2]  # [4, 2] source x, y
        pad = int(np.ceil(3 * sigma)) + 2
        h, w = frame.shape[:2]
        x0, y0 = np.maximum(np.floor(src.min(0)).astype(int) - pad, 0)
        x1, y1 = np.minimum(np.ceil(src.max(0)).astype(int) + pad, (w, h))
        if x0 < x1 and y0 < y1:
            frame = cv2.GaussianBlur(frame[y0:y1, x0:x1], (0, 0), sigma)
            matrix = np.column_stack([matrix[:, :2], matrix[:, :2] @ (x0, y0) + matrix[:, 2]])
    cv2.warpAffine(
        np.ascontiguousarray(frame),
        matrix,
        (side, side),
        dst=dst,
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(BORDER,) * 3,
    )


def align_frames(
    frames: np.ndarray, points: np.ndarray, image_size: int, antialias: bool = True
) -> np.ndarray:
    """Warp each frame once with its `alignment_matrix` (bilinear, grey-127 border).

    Bilinear sampling alone aliases when the warp shrinks the face (LRW 256 -> the 65 px of the
    64 preset shrinks by about 0.3-0.45x: moire on textures, flicker as the head moves). With
    `antialias` the source region is first blurred with a Gaussian of sigma = 0.3 / scale source
    pixels, i.e. 0.3 output pixels (about 1/sqrt(12), the standard deviation of a box one output
    pixel wide); the geometry is unchanged and the image is still resampled once. Against the
    original pipeline followed by an area downscale (warp to the canvas, crop, resize to 260,
    INTER_AREA to 65) on a real portrait this lifts PSNR from 30 to 44 dB at 0.45x and from 26
    to 44 dB at 0.22x.

    Args:
        frames (ndarray): uint8, shape `(T, H, W, 3)`.
        points (ndarray): shape `(T, 3, 2)`: left eye, right eye, mouth centre per frame.
        image_size (int): the preset's image size.
        antialias (bool, optional): low-pass before shrinking warps. (Default: True)

    Returns:
        ndarray: uint8, shape `(T, A, A, 3)`, A = `aligned_size(image_size)`.
    """
    side = aligned_size(image_size)
    out = np.empty((len(frames), side, side, frames.shape[-1]), dtype=np.uint8)
    matrices = alignment_matrix(points, image_size)  # [T, 2, 3]
    for t, (frame, matrix) in enumerate(zip(frames, matrices, strict=True)):
        _warp(frame, matrix, side, antialias, out[t])
    return out


def three_points(landmarks5: np.ndarray) -> np.ndarray:
    """5-point landmarks (left eye, right eye, nose, left mouth corner, right mouth corner) ->
    the 3 alignment points (eyes, mouth centre = mean of the corners), `(..., 5, 2) -> (..., 3, 2)`.
    """
    lm = np.asarray(landmarks5, dtype=np.float64)
    return np.stack([lm[..., 0, :], lm[..., 1, :], 0.5 * (lm[..., 3, :] + lm[..., 4, :])], axis=-2)


def smooth_points(
    points: np.ndarray,
    found: np.ndarray,
    sigma_frames: float = 1.0,
    path: str | Path | None = None,
) -> np.ndarray:
    """Fill frames without a face, then smooth the track over time.

    A missing frame takes the linear interpolation between the nearest found frames before and
    after it; missing runs at either end hold the first/last found value. Then each coordinate is
    Gaussian-filtered along T (sigma in frames, edges extended with the end values), which removes
    the per-frame zoom jitter of independent fits.

    Args:
        points (ndarray): shape `(T, 3, 2)`; values of frames with ``found`` False are ignored.
        found (ndarray): bool, shape `(T,)`.
        sigma_frames (float, optional): Gaussian sigma in frames; 0 only fills. (Default: 1.0)
        path (str or Path, optional): the clip, named in the error. (Default: None)

    Returns:
        ndarray: float64, shape `(T, 3, 2)`.

    Raises:
        DataError: no frame has a face.
    """
    points = np.asarray(points, dtype=np.float64)
    found = np.asarray(found, dtype=bool)
    if not found.any():
        where = f" of {path}" if path is not None else ""
        raise DataError(f"no face found in any of the {len(points)} frames{where}")
    t = np.arange(len(points))
    flat = points.reshape(len(points), -1)  # [T, 6]
    filled = np.stack([np.interp(t, t[found], c[found]) for c in flat.T], axis=1)
    if sigma_frames > 0:
        filled = gaussian_filter1d(filled, sigma_frames, axis=0, mode="nearest")
    return filled.reshape(points.shape)


def align_clip(
    frames: np.ndarray,
    image_size: int,
    landmarks5: np.ndarray | None = None,
    path: str | Path | None = None,
    sigma_frames: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Aligned face crops of one clip: landmarks (sidecar, or the face tracked with dlib) ->
    smoothing -> one warp a frame.

    Args:
        frames (ndarray): uint8 RGB, shape `(T, H, W, 3)`.
        image_size (int): the preset's image size.
        landmarks5 (ndarray, optional): sidecar landmarks `(T, 5, 2)` (see `three_points`); a frame
            whose landmarks are not finite or whose eyes coincide counts as "no face". (Default:
            None: track the face, `face_detect.track_faces`)
        path (str or Path, optional): the clip, named in errors. (Default: None)
        sigma_frames (float, optional): temporal smoothing of the points. (Default: 1.0)

    Returns:
        (ndarray, ndarray): uint8 crops `(T, A, A, 3)`, A = `aligned_size(image_size)`, and the
        frames with a face, bool `(T,)` (the others are aligned by interpolation).

    Raises:
        DataError: no frame has a face; callers report the clip and skip it.
    """
    if landmarks5 is None:
        track = track_faces(frames)
        points, found = track.points, track.found
    else:
        points = three_points(landmarks5)
        eye_gap = np.linalg.norm(points[:, 1] - points[:, 0], axis=-1)
        found = np.isfinite(points).all(axis=(1, 2)) & (eye_gap >= 1.0)
    if not found.all():
        log.debug("%s: no face in %d of %d frames", path, (~found).sum(), len(found))
    aligned = align_frames(frames, smooth_points(points, found, sigma_frames, path), image_size)
    return aligned, found
