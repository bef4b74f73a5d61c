"""The face a talking-face video is made of: one image (or one frame of a video) -> the aligned
crop the identity encoder reads, and the way back into the picture (paste-back).

    face = load_face("me.jpg", image_size=cfg.image_size)   # dlib face + landmarks -> 3 points
    face.crop                      # uint8 [S, S, 3]: the model's input
    paste = Compositor(face)       # generated crops back into face.source, soft-edged
    frame = paste(generated)       # uint8 [S, S, 3] -> uint8 [H', W', 3]

Alignment is the training data's (`fastdavs.data.align`, spec/davs.md §3.2): the 3-point
similarity to the DAVS template, then the centre S x S of the aligned A x A frame, which is what
evaluation crops from the shards ((A - S) // 2, 2 px at 256). `FaceInput.matrix` maps source
pixels straight to crop pixels, so paste-back inverts one affine map.
Dimension letters: S image_size, H/W the source image.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from fastdavs.data.align import align_frames, aligned_size, alignment_matrix
from fastdavs.data.face_detect import best_face, face_in_box, find_faces
from fastdavs.data.video_io import NoVideoStream, iter_video_frames
from fastdavs.errors import DataError, OptionError

log = logging.getLogger(__name__)

# The paste-back mask in crop coordinates (fractions of S): an ellipse over the face from the
# brows to below the chin and cheek to cheek (the template puts the eyes at about (0.36, 0.44)
# and (0.66, 0.44) of the crop and the mouth at (0.51, 0.73)), feathered with a Gaussian so
# the seam does not show; hair and background stay the source's.
MASK_CENTRE = (0.5, 0.6)  # x, y
MASK_AXES = (0.33, 0.37)  # semi-axes x, y
MASK_FEATHER = 0.05  # Gaussian sigma of the edge

# Largest face image decoded: 50 Mpx (an 8K UHD frame is 33). OpenCV decodes to uint8 RGB, 3 bytes
# a pixel, before anything can be said about the face: a 20000 x 20000 PNG of a few kB would take
# 1.2 GB. The size is read from the file's header (Pillow, which matplotlib already requires).
MAX_FACE_PIXELS = 50_000_000


@dataclass
class FaceInput:
    """One face, ready for the identity encoder and for paste-back.

    Attributes:
        crop: uint8 RGB `(S, S, 3)`, the aligned face.
        source: uint8 RGB `(H, W, 3)`, the image (or video frame) it was cut from.
        matrix: float64 `(2, 3)`, source pixels -> crop pixels (`cv2.warpAffine` layout).
        points: float64 `(3, 2)`, left eye, right eye, mouth centre in source pixels.
        path: the file.
        frame_index: the video frame used, None for an image.
    """

    crop: np.ndarray
    source: np.ndarray
    matrix: np.ndarray
    points: np.ndarray
    path: Path
    frame_index: int | None = None


def crop_matrix(points: np.ndarray, image_size: int) -> np.ndarray:
    """Source pixels -> the centre S x S of the aligned frame: `alignment_matrix` moved by the
    centre-crop offset (A - S) // 2. Points `(..., 3, 2)` -> `(..., 2, 3)`."""
    matrix = alignment_matrix(points, image_size)
    matrix[..., 2] -= (aligned_size(image_size) - image_size) // 2
    return matrix


def centre_crop(aligned: np.ndarray, image_size: int) -> np.ndarray:
    """The centre S x S of aligned frames `(..., A, A, 3)` (what evaluation feeds the model)."""
    c = (aligned.shape[-2] - image_size) // 2
    return aligned[..., c : c + image_size, c : c + image_size, :]


def read_image(path: Path) -> np.ndarray | None:
    """An image file as uint8 RGB `(H, W, 3)` (any bit depth, grey or with alpha), or None when
    OpenCV cannot decode it as an image (it may be a video).

    Raises:
        DataError: the header declares more than `MAX_FACE_PIXELS` pixels, or the file is cut
            off or corrupt."""
    path = Path(path)
    _check_image_header(path)
    data = np.fromfile(path, dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    return None if image is None else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _check_image_header(path: Path) -> None:
    """Refuse an image whose header declares more than MAX_FACE_PIXELS, or that is cut off or
    corrupt (PNG: each chunk's CRC; JPEG: a decode at 1/8 scale), before OpenCV decodes it:
    that takes the memory, and prints the codec's complaint to stderr (JPEG: and decodes the
    missing rows as grey)."""
    from PIL import Image, UnidentifiedImageError

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as image:
                width, height = image.size
                if width * height <= MAX_FACE_PIXELS and image.format == "JPEG":
                    # libjpeg reads every scan but decodes at 1/8 scale: a cut-off file raises.
                    image.draft("RGB", (max(1, width // 8), max(1, height // 8)))
                    image.load()
                elif width * height <= MAX_FACE_PIXELS:
                    image.verify()  # PNG: every chunk's CRC; other formats: what Pillow checks
        except Image.DecompressionBombError:  # over twice Pillow's own limit: far over ours
            width = height = 0
        except UnidentifiedImageError:  # not an image Pillow knows: OpenCV decides
            return
        except (OSError, SyntaxError, ValueError) as e:
            raise DataError(
                f"{path}: the image is damaged or truncated ({e}); re-download or re-save it"
            ) from e
    if not width or width * height > MAX_FACE_PIXELS:
        size = f"{width}x{height}" if width else f"over {2 * Image.MAX_IMAGE_PIXELS / 1e6:.0f} Mpx"
        raise DataError(
            f"{path}: the image is too large ({size}; the limit is {MAX_FACE_PIXELS / 1e6:.0f} "
            "Mpx); downscale it first, e.g. ffmpeg -i IN -vf scale=2000:-2 OUT.png"
        )


def _check_box(box, image: np.ndarray, where: str) -> np.ndarray:
    x, y, w, h = (float(v) for v in box)
    height, width = image.shape[:2]
    if w < 8 or h < 8 or x < 0 or y < 0 or x + w > width or y + h > height:
        raise OptionError(
            f"--box {x:g},{y:g},{w:g},{h:g}: must lie inside {where} ({width}x{height}) and be at "
            "least 8 px wide and high"
        )
    return np.array([x, y, w, h])


def load_face(
    path: str | Path,
    *,
    frame_index: int | None = None,
    box=None,
    image_size: int,
) -> FaceInput:
    """Read a face image or video, find the face and align it.

    Args:
        path: an image OpenCV reads (jpg, png, webp, bmp, tiff...) or a video PyAV reads.
        frame_index: for a video, the frame to use (0-based); None takes the first frame with
            a face. An error for an image.
        box: (x, y, w, h) face box in source pixels, to choose the face (the detector's face
            in it, else the landmarks fitted to the box itself; `face_detect.face_in_box`).
            With a video and no `frame_index`, frame 0 is used.
        image_size: the model's S.

    Returns:
        FaceInput.

    Raises:
        DataError: missing or unreadable file, no face found (naming the file and the frames
            searched). OptionError: `frame_index` out of range or given for an image, a bad box.
    """
    path = Path(path)
    if not path.is_file():
        what = "is not a file" if path.exists() else "no such file"
        raise DataError(f"{path}: {what}; --face takes an image (jpg, png...) or a video")
    image = read_image(path)
    if image is not None:
        if frame_index is not None:
            raise OptionError(f"--face-frame {frame_index}: {path} is an image, not a video")
        source, index = image, None
        points = _find(image, box, f"{path}")
        if points is None:
            raise DataError(
                f"{path}: no face found in the image; use a frontal face photo, or give the "
                "face box with --box X,Y,W,H"
            )
    else:
        try:
            source, index, points = _from_video(path, frame_index, box)
        except NoVideoStream:
            raise DataError(
                f"{path}: has no picture (no video stream, and not an image OpenCV reads); "
                "--face takes an image (jpg, png...) or a video"
            ) from None
    source = _even(source)
    aligned = align_frames(source[None], points[None], image_size)[0]  # [A, A, 3]
    crop = np.ascontiguousarray(centre_crop(aligned, image_size))
    log.info(
        "%s: face at eyes %s, mouth %s", path, points[:2].round(1).tolist(), points[2].round(1)
    )
    return FaceInput(crop, source, crop_matrix(points, image_size), points, path, index)


def _find(image: np.ndarray, box, where: str) -> np.ndarray | None:
    """The 3 points of the face in `image` [H, W, 3] (in `box` if given; else the most confident
    frontal face, `face_detect.best_face`), or None."""
    if box is not None:
        return face_in_box(image, _check_box(box, image, where)).points
    faces = find_faces(image)
    if len(faces) > 1:
        log.info("%s: %d faces found; using the most confident frontal one", where, len(faces))
    face = best_face(faces)
    return None if face is None else face.points


def _from_video(path: Path, frame_index: int | None, box) -> tuple[np.ndarray, int, np.ndarray]:
    """(frame, its index, points) from a face video: frame `frame_index`, or the first with a
    face (frame 0 with a box)."""
    if frame_index is not None and frame_index < 0:
        raise OptionError(f"--face-frame {frame_index}: must be 0 or more")
    frames = iter_video_frames(path)
    n, points = -1, None
    try:
        for n, frame in enumerate(frames):  # noqa: B007 (n is the frame used or searched last)
            if frame_index is not None and n < frame_index:
                continue
            points = _find(frame, box, f"frame {n} of {path}")
            if points is not None or frame_index is not None or box is not None:
                break
    finally:
        frames.close()
    if frame_index is not None and n < frame_index:
        raise OptionError(f"--face-frame {frame_index}: {path} has only {n + 1} frames")
    if points is None and frame_index is None:
        raise DataError(
            f"{path}: no face found in any of its {n + 1} frames; use a video with a frontal "
            "face, or give the face box with --box X,Y,W,H (and the frame with --face-frame N)"
        )
    if points is None:
        raise DataError(
            f"{path}: no face found in frame {n}; pick another with --face-frame, or give the "
            "face box with --box X,Y,W,H"
        )
    if frame_index is None and box is None:
        log.info(
            "%s: face found in 1 of %d frames read (frame %d, the first with one)", path, n + 1, n
        )
    return frame, n, points


def _even(image: np.ndarray) -> np.ndarray:
    """Drop a last row / column so both sides are even (H.264 in yuv420p needs it)."""
    h, w = image.shape[:2]
    return np.ascontiguousarray(image[: h - h % 2, : w - w % 2])


class Compositor:
    """Paste generated crops back into the face's source image.

    Only the box of the source that the crop covers is touched. Two ways, by what the generator
    makes:
    - `edit=False` (a generator that redraws the face): each crop `(S, S, 3)` is warped back with
      the inverse of `FaceInput.matrix` (bilinear) and blended over the source with a soft
      elliptical mask.
    - `edit=True` (the mouth editor, whose output is the identity crop plus a change): only the
      change, crop - `FaceInput.crop`, is warped back and added to the source. Wherever the
      generator left the crop as it was, the source keeps its own pixels at its own resolution,
      so a portrait stays as sharp as it was outside the edited lower face.
    Returns a new uint8 RGB frame of the source's size.
    """

    def __init__(self, face: FaceInput, edit: bool = False):
        self.source = face.source
        s = face.crop.shape[0]
        inv = cv2.invertAffineTransform(face.matrix)  # crop -> source
        corners = np.array([[0, 0], [s, 0], [0, s], [s, s]], dtype=np.float64) - 0.5
        src = corners @ inv[:, :2].T + inv[:, 2]  # [4, 2] x, y
        h, w = self.source.shape[:2]
        x0, y0 = np.maximum(np.floor(src.min(0)).astype(int), 0)
        x1, y1 = np.minimum(np.ceil(src.max(0)).astype(int) + 1, (w, h))
        self.box = (slice(y0, y1), slice(x0, x1))
        self.size = (int(x1 - x0), int(y1 - y0))
        self.inv = np.column_stack([inv[:, :2], inv[:, 2] - (x0, y0)])  # crop -> box pixels
        self.background = self.source[self.box].astype(np.float32)
        self.reference = face.crop.astype(np.float32) if edit else None  # [S, S, 3]
        if not edit:
            self.mask = cv2.warpAffine(soft_mask(s), self.inv, self.size, flags=cv2.INTER_LINEAR)
            self.mask = self.mask[..., None]  # [h, w, 1] float32 in [0, 1]; 0 outside the crop

    def __call__(self, crop: np.ndarray) -> np.ndarray:
        """crop uint8 `(S, S, 3)` -> the source with it pasted in, uint8 `(H, W, 3)`."""
        out = self.source.copy()
        if self.reference is not None:
            change = crop.astype(np.float32) - self.reference  # [S, S, 3], 0 where unedited
            # Border 0: no change outside the crop.
            blend = self.background + cv2.warpAffine(
                change, self.inv, self.size, flags=cv2.INTER_LINEAR
            )
        else:
            face = cv2.warpAffine(crop, self.inv, self.size, flags=cv2.INTER_LINEAR)
            blend = self.background + self.mask * (face.astype(np.float32) - self.background)
        out[self.box] = np.clip(blend + 0.5, 0, 255).astype(np.uint8)
        return out


def soft_mask(size: int) -> np.ndarray:
    """float32 `(size, size)` in [0, 1]: 1 inside the face ellipse (``MASK_*``), fading out
    over about 2 sigma across its edge."""
    yy, xx = (np.mgrid[:size, :size] + 0.5) / size
    (cx, cy), (ax, ay) = MASK_CENTRE, MASK_AXES
    r = np.sqrt(((xx - cx) / ax) ** 2 + ((yy - cy) / ay) ** 2)  # 1 on the ellipse
    edge = (r - 1) * min(ax, ay) / MASK_FEATHER  # distance outside the ellipse, in sigmas
    return (0.5 * (1 - np.tanh(edge))).astype(np.float32)
