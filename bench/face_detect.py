"""Face detection + alignment on video: dlib tracking (what fastdavs uses) against a Haar path,
in frames/s and in eye error, in one run, one thread each.

    python bench/face_detect.py [--frames 100] [--out bench/results]

The videos are real portraits filmed by a moving camera (scikit-image's astronaut, matplotlib's
Grace Hopper; pan, zoom, roll of +-6 degrees), at QCIF (176 x 144) and LRW's 256 x 256, so every
frame's true eye positions are known (the pupils labelled by hand on the photos).

    dlib   `face_detect.track_faces` (HOG near the last face, whole frame where lost; 68 landmarks)
           + `align.smooth_points` + `align.align_frames`
    haar   OpenCV's frontal-face cascade on every whole frame, the largest box, eyes at the
           box's standard proportions (0.32 / 0.68 of its width, 0.39 of its height), the mouth
           0.95 eye distances below them, + the same smoothing and warps. fastdavs aligned
           with this before (plus eye cascades inside the box, which cost more time); on the
           astronaut photo at full size its largest box is on the background.

Eye error is the larger distance of the two eyes of the smoothed track (what the alignment uses:
frames without a face interpolated) from the true ones, in inter-ocular distances (IOD), median
and max over the frames. Writes face_detect.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from pathlib import Path

import cv2
import numpy as np
from common import git

from fastdavs.data.align import align_frames, smooth_points
from fastdavs.data.face_detect import grey, landmarks_in_box, track_faces
from fastdavs.machine import machine_info, machine_summary

ASTRONAUT_EYES = np.array([[203.0, 101.0], [246.0, 104.0]])  # as tests/test_face_detect.py
HOPPER_EYES = np.array([[221.0, 190.0], [305.0, 186.0]])
HAAR_EYE_X, HAAR_EYE_Y, MOUTH_BELOW_EYES = (0.32, 0.68), 0.39, 0.95


def photos() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    def read(package: str, *parts: str) -> np.ndarray:
        root = Path(next(iter(importlib.util.find_spec(package).submodule_search_locations)))
        return cv2.cvtColor(cv2.imread(str(root.joinpath(*parts))), cv2.COLOR_BGR2RGB)

    return {
        "astronaut": (read("skimage", "data", "astronaut.png"), ASTRONAUT_EYES),
        "hopper": (read("matplotlib", "mpl-data", "sample_data", "grace_hopper.jpg"), HOPPER_EYES),
    }


def moving_camera(image, eyes, n: int, size: tuple[int, int], zoom: float):
    """Frames [n, H, W, 3] of a camera panning over `image`, zooming zoom x (0.85-1.15), rolling
    +-6 degrees; and the true eyes [n, 2, 2]."""
    frames, truth = [], []
    centre = eyes.mean(0) + (0, 0.6 * np.linalg.norm(eyes[1] - eyes[0]))
    for t in range(n):
        a = 2 * np.pi * t / n
        c = centre + 0.1 * size[0] / zoom * np.array([np.sin(a), np.cos(a)])
        m = cv2.getRotationMatrix2D(tuple(c), 6 * np.sin(2 * a), zoom * (1 + 0.15 * np.sin(a)))
        m[:, 2] += np.array(size) / 2 - c
        frames.append(cv2.warpAffine(image, m, size, flags=cv2.INTER_AREA))
        truth.append(eyes @ m[:, :2].T + m[:, 2])
    return np.stack(frames), np.stack(truth)


def haar_points(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(points [T, 3, 2] with NaN where no face, found [T]) from the Haar path."""
    cascade = cv2.CascadeClassifier(
        str(Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml")
    )
    points = np.full((len(frames), 3, 2), np.nan)
    for t, frame in enumerate(frames):
        g = grey(frame)
        faces = cascade.detectMultiScale(
            cv2.equalizeHist(g), 1.1, 5, minSize=(max(24, min(g.shape) // 6),) * 2
        )
        if len(faces):
            x, y, w, _ = faces[np.argmax(faces[:, 2])]
            eyes = np.array([[x + fx * w, y + HAAR_EYE_Y * w] for fx in HAAR_EYE_X])
            dx, dy = eyes[1] - eyes[0]
            mouth = eyes.mean(0) + MOUTH_BELOW_EYES * np.array([-dy, dx])
            points[t] = np.concatenate([eyes, mouth[None]])
    return points, np.isfinite(points).all(axis=(1, 2))


def dlib_points(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    track = track_faces(frames)
    return track.points, track.found


def measure(method, frames: np.ndarray, truth: np.ndarray, image_size: int) -> dict:
    start = time.perf_counter()
    points, found = method(frames)
    if not found.any():
        return {"fps": len(frames) / (time.perf_counter() - start), "found": 0}
    points = smooth_points(points, found, 1.0)
    align_frames(frames, points, image_size)
    seconds = time.perf_counter() - start
    iod = np.linalg.norm(truth[:, 1] - truth[:, 0], axis=-1)  # [T]
    err = np.linalg.norm(points[:, :2] - truth, axis=-1).max(-1) / iod  # [T], smoothed track
    return {
        "fps": len(frames) / seconds,
        "found": int(found.sum()),
        "frames": len(frames),
        "eye_error_iod_median": float(np.median(err)),
        "eye_error_iod_max": float(err.max()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=100, help="frames per video")
    parser.add_argument("--image-size", type=int, default=64, help="aligned crop size (preset)")
    parser.add_argument("--out", default="bench/results")
    args = parser.parse_args()
    cv2.setNumThreads(1)  # as fastdavs-prepare's workers: one process per core
    results = {"git": git("rev-parse", "--short", "HEAD"), "machine": machine_info(), "rows": []}
    print(f"machine: {machine_summary(results['machine'])}")
    methods = {"dlib": dlib_points, "haar": haar_points}
    landmarks_in_box(np.zeros((64, 64), np.uint8), (8, 8, 48, 48))  # load the model (~1.5 s)
    print(f"{'video':<22}{'method':<7}{'frames/s':>9}{'found':>10}{'eye err med/max (IOD)':>24}")
    for name, (image, eyes) in photos().items():
        for size, zoom in (((176, 144), 0.55), ((256, 256), 0.9)):
            frames, truth = moving_camera(image, eyes, args.frames, size, zoom)
            video = f"{name} {size[0]}x{size[1]}"
            for method, fn in methods.items():
                row = measure(fn, frames, truth, args.image_size)
                row = {"video": video, "method": method, **row}
                results["rows"].append(row)
                med, mx = row.get("eye_error_iod_median"), row.get("eye_error_iod_max")
                err = "-" if med is None else f"{med:.3f} / {mx:.3f}"
                found = f"{row['found']}/{row['frames']}"
                print(f"{video:<22}{method:<7}{row['fps']:>9.1f}{found:>10}{err:>24}")
    for method in methods:
        rows = [r for r in results["rows"] if r["method"] == method]
        results[f"{method}_fps_mean"] = float(np.mean([r["fps"] for r in rows]))
    ratio = results["dlib_fps_mean"] / results["haar_fps_mean"]
    results["dlib_over_haar_fps"] = ratio
    print(f"dlib / haar frames/s (mean over the videos): {ratio:.2f}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "face_detect.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out / 'face_detect.json'}")


if __name__ == "__main__":
    main()
