"""Tests of fastdavs.data.face_detect on real photos from installed packages: scikit-image's
astronaut (a 512 px studio portrait in front of a textured background, on which a Haar search
once picked the background) and matplotlib's Grace Hopper; a cat and a cup for "no face". Real
video is not shipped by any package we install, so the tracking test moves a camera over the
real portraits (pan, zoom, roll), which gives the true eye positions of every frame.

Eye labels are the pupils read off a 4x zoom of each photo by hand; the tolerance is 10% of the
inter-ocular distance (IOD), about 4 px on the astronaut, a quarter of an eye's width.
"""

import importlib.util
from pathlib import Path

import cv2
import numpy as np
import pytest

from fastdavs.data import face_detect as fd
from fastdavs.errors import DataError
from fastdavs.infer.face_input import Compositor, load_face

SKIMAGE_DATA = Path(next(iter(importlib.util.find_spec("skimage").submodule_search_locations)))
SKIMAGE_DATA /= "data"
MPL_DATA = importlib.util.find_spec("matplotlib").submodule_search_locations[0]
HOPPER_PATH = Path(MPL_DATA) / "mpl-data" / "sample_data" / "grace_hopper.jpg"
ASTRONAUT_PATH = SKIMAGE_DATA / "astronaut.png"
ASTRONAUT_EYES = np.array([[203.0, 101.0], [246.0, 104.0]])  # pupils, 512 x 512
HOPPER_EYES = np.array([[221.0, 190.0], [305.0, 186.0]])  # pupils, 512 x 600


def read(path: Path) -> np.ndarray:
    assert path.is_file(), f"{path}: test photo missing (make setup installs the dev extras)"
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def iod(eyes: np.ndarray) -> float:
    return float(np.linalg.norm(eyes[1] - eyes[0]))


def affine(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ m[:, :2].T + m[:, 2]


@pytest.mark.parametrize(
    "path,eyes", [(ASTRONAUT_PATH, ASTRONAUT_EYES), (HOPPER_PATH, HOPPER_EYES)]
)
def test_real_portraits_eyes_mouth_and_box(path, eyes):
    faces = fd.find_faces(read(path))
    assert len(faces) >= 1
    face = fd.best_face(faces)
    assert face is faces[0] and face.frontal and face.score > 0.5
    points = face.points
    assert np.abs(points[:2] - eyes).max() < 0.1 * iod(eyes)
    # The mouth centre lies below the eye midpoint, about one IOD down (the DAVS template: 0.95).
    drop = points[2] - points[:2].mean(0)
    assert abs(drop[0]) < 0.15 * iod(eyes) and 0.75 < drop[1] / iod(eyes) < 1.3
    # The box holds every landmark of the inner face (brows, eyes, nose, mouth: points 17-67);
    # grown by a quarter it holds all 68 (the jaw line and chin run below HOG's box).
    x, y, w, h = face.box
    lm = face.landmarks
    inner = lm[17:]
    assert ((inner >= (x, y)) & (inner <= (x + w, y + h))).all()
    assert ((lm >= (x - w / 4, y - h / 4)) & (lm <= (x + 1.25 * w, y + 1.25 * h))).all()


def test_alignment_points_are_eye_means_and_mouth_corner_midpoint():
    rng = np.random.default_rng(0)
    lm = rng.uniform(0, 100, (2, 68, 2))
    points = fd.alignment_points(lm)
    assert points.shape == (2, 3, 2)
    np.testing.assert_allclose(points[:, 0], lm[:, 36:42].mean(1))
    np.testing.assert_allclose(points[:, 1], lm[:, 42:48].mean(1))
    np.testing.assert_allclose(points[:, 2], (lm[:, 48] + lm[:, 54]) / 2)


def two_faces() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The astronaut at full size beside a larger Grace Hopper turned 30 degrees (the detector
    is less sure of a turned face). Returns the picture and each face's true eyes in it."""
    canvas = np.full((700, 1000, 3), 120, np.uint8)
    canvas[100:612, :512] = read(ASTRONAUT_PATH)
    m = cv2.getRotationMatrix2D((263.0, 250.0), 30, 1.3)
    m[:, 2] += (760 - 263, 330 - 250)
    hopper = cv2.warpAffine(read(HOPPER_PATH), m, (1000, 700), borderValue=(120, 120, 120))
    canvas[:, 530:] = hopper[:, 530:]
    return canvas, ASTRONAUT_EYES + (0, 100), affine(m, HOPPER_EYES)


def test_the_most_confident_frontal_face_wins_not_the_largest():
    picture, astronaut_eyes, hopper_eyes = two_faces()
    faces = fd.find_faces(picture)
    assert len(faces) == 2
    best = fd.best_face(faces)
    other = next(f for f in faces if f is not best)
    assert other.box[2] > 2 * best.box[2] and other.score < best.score  # larger, less sure
    assert np.abs(best.points[:2] - astronaut_eyes).max() < 0.1 * iod(astronaut_eyes)
    assert np.abs(other.points[:2] - hopper_eyes).max() < 0.15 * iod(hopper_eyes)


def test_a_box_chooses_the_face(tmp_path):
    picture, astronaut_eyes, hopper_eyes = two_faces()
    cx, cy = hopper_eyes.mean(0)
    box = (cx - 150, cy - 120, 300, 300)
    face = fd.face_in_box(picture, box)
    assert np.isfinite(face.score)  # the detector's face inside the box, not the box itself
    assert np.abs(face.points[:2] - hopper_eyes).max() < 0.15 * iod(hopper_eyes)
    # Through load_face (--box), on a file.
    path = tmp_path / "two.png"
    cv2.imwrite(str(path), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
    loaded = load_face(path, box=box, image_size=64)
    np.testing.assert_allclose(loaded.points, face.points)
    default = load_face(path, image_size=64)
    assert np.abs(default.points[:2] - astronaut_eyes).max() < 0.1 * iod(astronaut_eyes)
    # A box with no face the detector sees: the landmarks are fitted to the box itself.
    empty = fd.face_in_box(picture, (600, 600, 90, 90))
    assert np.isnan(empty.score) and ((empty.landmarks > 550) & (empty.landmarks < 700)).all()


@pytest.mark.parametrize("name", ["chelsea.png", "coffee.png"])
def test_no_face_in_pictures_without_one(name):
    assert fd.find_faces(read(SKIMAGE_DATA / name)) == []
    assert fd.best_face([]) is None


def moving_camera(image: np.ndarray, eyes: np.ndarray, n: int, size=(176, 144)):
    """A QCIF video of a still portrait filmed by a moving camera: pan, zoom 0.45-0.65x, roll
    +-6 degrees. Returns frames [n, H, W, 3] and the true eyes [n, 2, 2]."""
    frames, truth = [], []
    centre = eyes.mean(0) + (0, 25)
    for t in range(n):
        a = 2 * np.pi * t / n
        c = centre + (20 * np.sin(a), 15 * np.cos(a))
        m = cv2.getRotationMatrix2D(tuple(c), 6 * np.sin(2 * a), 0.55 + 0.1 * np.sin(a))
        m[:, 2] += np.array(size) / 2 - c
        frames.append(cv2.warpAffine(image, m, size, flags=cv2.INTER_AREA))
        truth.append(affine(m, eyes))
    return np.stack(frames), np.stack(truth)


def test_track_follows_a_moving_real_face(monkeypatch):
    frames, truth = moving_camera(read(ASTRONAUT_PATH), ASTRONAUT_EYES, 30)
    frames[12:14] = 127  # the face leaves the picture for two frames
    searches = []
    search = fd._search

    def spy(frame, region=None, face_width=None):
        searches.append(region is None)
        return search(frame, region, face_width)

    monkeypatch.setattr(fd, "_search", spy)
    track = fd.track_faces(iter(frames))  # a generator, as a decoder gives
    want = np.ones(30, bool)
    want[12:14] = False
    np.testing.assert_array_equal(track.found, want)
    assert track.report() == "face found in 28 of 30 frames"
    assert np.isnan(track.points[~want]).all()
    err = np.linalg.norm(track.points[want, :2] - truth[want], axis=-1).max(-1)
    assert (err < 0.1 * np.linalg.norm(truth[want, 1] - truth[want, 0], axis=-1)).all()
    # The whole frame is searched on frame 0 and where the face is gone (near, then whole),
    # every other frame only near the last face: 1 + 2 whole-frame searches.
    assert sum(searches) == 3, searches


def test_paste_back_lands_on_the_person_and_leaves_the_rest(tmp_path):
    face = load_face(ASTRONAUT_PATH, image_size=64)
    assert np.abs(face.points[:2] - ASTRONAUT_EYES).max() < 0.1 * iod(ASTRONAUT_EYES)
    x, y, w, h = fd.best_face(fd.find_faces(face.source)).box
    for edit in (False, True):
        paste = Compositor(face, edit=edit)
        crop = face.crop.copy()
        crop[24:60, 12:52] = 255 - crop[24:60, 12:52]  # the whole lower face, inverted
        out = paste(crop)
        changed = np.abs(out.astype(int) - face.source).max(-1) > 0  # [H, W]
        ys, xs = np.nonzero(changed)
        assert changed.sum() > 0.1 * w * h  # a real part of the face changed ...
        # ... all of it on the person's face (HOG's box grown by 40%), none on the background
        assert xs.min() > x - 0.4 * w and xs.max() < x + 1.4 * w
        assert ys.min() > y - 0.4 * h and ys.max() < y + 1.4 * h
        assert abs(xs.mean() - (x + w / 2)) < 0.2 * w


def test_missing_landmark_model_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataError, match=r"face landmark model is not installed.*make setup"):
        fd.models_dir()


def test_prepare_real_video_reports_face_share_and_skips_clips_without_enough(tmp_path, capsys):
    """An LRW-layout tree of real-face clips (no landmark sidecars, so the face is tracked):
    one with the face in every frame, one where it is gone for 8 of 29 frames (72%, under the
    default 80%): the second is skipped and listed, the report gives the kept clip's share."""
    from fastdavs.data.prepare import main as prepare_main
    from fastdavs.data.video_io import write_mp4

    frames, _ = moving_camera(read(ASTRONAUT_PATH), ASTRONAUT_EYES, 29)
    audio = np.random.default_rng(1).uniform(-0.3, 0.3, 29 * 640).astype(np.float32)
    split = tmp_path / "lrw" / "HELLO" / "train"
    split.mkdir(parents=True)
    write_mp4(split / "HELLO_00001.mp4", frames, audio)
    gone = frames.copy()
    gone[10:18] = 127
    write_mp4(split / "HELLO_00002.mp4", gone, audio)
    out = tmp_path / "shards"
    rc = prepare_main([str(tmp_path / "lrw"), str(out), "--preset", "tiny", "--workers", "1"])
    lines = capsys.readouterr().out.splitlines()
    assert rc == 0
    assert lines[:2] == [
        "train: 1 clips in 1 shards",
        "faces: found in every frame of 1 of 1 clips; share of frames with a face: mean 100.0%, "
        "lowest 100.0%",
    ]
    assert lines[2:4] == [
        "skipped 1 clips:",
        f"  HELLO/train/HELLO_00002.mp4: {split / 'HELLO_00002.mp4'}: face found in 21 of 29 "
        "frames (72%), under the 80% a clip needs (--min-face-share)",
    ]
    # A lower threshold keeps it, with its share on record.
    rc = prepare_main([str(tmp_path / "lrw"), str(tmp_path / "all"), "--preset", "tiny",
                       "--workers", "1", "--min-face-share", "0.7"])  # fmt: skip
    assert rc == 0 and "lowest 72.4%" in capsys.readouterr().out
