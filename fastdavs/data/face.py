"""SynthLRW's faces: a procedural talking-face renderer (identity + viseme + head pose -> frame).

Data flow: synth.py draws a `FaceIdentity` per person (`random_identity`), a viseme track per clip
(`phonemes.viseme_track`), and head motion and blinks per clip (`head_motion`, `blinks`, which see
only the rng, never the speech), then `render_clip` gives the frames for the mp4 and the five
landmarks per frame for the sidecar that align.py reads.

Geometry. Every shape is a polygon in *canonical* coordinates: fractions of the frame size at the
rest pose, x right, y down. The eyes sit on y = EYE_Y, centred on x = 0.5, `eye_spacing * BASE_IOD`
apart; the mouth corners are `mouth_drop` (0.92-1.02, plus up to 0.07 when the jaw opens)
inter-ocular distances below the eyes, as in the DAVS template (38 px below eyes 40 px apart).
With the defaults the eyes are on y = 0.40 size and 0.21-0.29 size apart, the mouth centre is near
y = 0.65 size and the chin near 0.78 size: an LRW-like, roughly frontal face crop. A pose
(dx, dy, roll, scale) is one affine map to pixels,

    p = size * (scale * R(roll) (q - PIVOT) + PIVOT + (dx, dy)),

applied to every polygon point before drawing, so the landmarks are exactly the transformed
points where the pupils, nose tip and lip corners were drawn (OpenCV convention: integer
coordinates are pixel centres). Positive roll turns the head counter-clockwise on screen. The
background and the shoulders do not move with the head; the neck joins them.

Speed. Per identity, `_layout` turns all shapes but the mouth into coefficient arrays (they are
linear in the chin drop and quadratic in the blink) and `_statics` caches the background and a
light map at each size. A frame is then a copy of the background, one expression and one
`cv2.transform` for all points, about 20 antialiased `cv2.fillPoly` calls with 1/16-pixel
coordinates, and one multiply by the light map, which gives the soft shading; no image warps.
"""

from __future__ import annotations

import colorsys
import functools
import math
from dataclasses import dataclass

import cv2
import numpy as np

from fastdavs.data.phonemes import FPS

EYE_Y = 0.40  # canonical y of the eye line
BASE_IOD = 0.25  # inter-ocular distance at eye_spacing 1, fraction of the frame
PIVOT = (0.5, 0.55)  # canonical centre of head roll and scale
HAIR_STYLES = ("bald", "buzz", "short", "fringe", "long", "bob", "afro", "bun")
BACKGROUNDS = ("flat", "vertical", "diagonal", "stripes", "blocks", "spot")
MOTION_BOUNDS = (0.03, 0.03, 4.0, 0.03)  # max |dx|, |dy| (frame), |roll| (deg), |scale - 1|
BLINK_PROFILES = {3: (0.6, 1.0, 0.5), 4: (0.5, 1.0, 0.8, 0.3), 5: (0.4, 0.9, 1.0, 0.6, 0.25)}

PUPIL = (14, 10, 10)
MOUTH_INSIDE = (48, 12, 18)
TONGUE = (105, 43, 50)
TEETH = (238, 234, 224)
SCLERA = (236, 232, 226)
GLINT = (250, 250, 250)
EYE_HALF_WIDTH = 0.056  # at eye_size 1
CHIN_FOLLOW = 0.75  # chin travel per unit of mouth opening
LIGHT_ONE = 200  # value of the light map that leaves a pixel unchanged (allows brightening)
SHIFT = 4  # fixed-point bits of drawing coordinates
_ONE = 1 << SHIFT

Colour = tuple[int, int, int]


@dataclass(frozen=True)
class FaceIdentity:
    """Everything that makes one SynthLRW person look like themselves (colours are RGB 0-255;
    lengths are canonical, i.e. fractions of the frame)."""

    skin: Colour
    lip: Colour
    hair: Colour
    brow: Colour
    iris: Colour
    clothes: Colour
    background: tuple[Colour, Colour]
    background_kind: str  # one of BACKGROUNDS
    background_seed: int  # places the stripes and blocks
    light: float  # -1..1, light from the left (-) or right (+)
    hair_style: str  # one of HAIR_STYLES
    hair_volume: float  # how far hair stands off the skull
    hairline: float  # height of the hairline above the eye line
    hair_part: float  # -1..1, slant of the hairline
    hair_length: float  # canonical y where long hair ends
    beard: bool
    face_width: float  # half-width at the cheekbones
    face_top: float  # top of the skull above the eye line
    jaw_square: float  # superellipse exponent of the jaw, 1.6 (tapered) .. 3.5 (square)
    chin_width: float  # flat part of the chin, fraction of face_width
    chin_length: float  # chin below the mouth corners
    eye_spacing: float  # inter-ocular distance / BASE_IOD
    eye_size: float
    eye_open: float  # eye height / half-width
    eye_tilt: float  # degrees, outer corners up
    iris_size: float
    brow_height: float
    brow_thickness: float
    brow_arch: float
    brow_slant: float  # outer end up (+) or down (-)
    nose_width: float
    nose_position: float  # nose tip between eye line (0) and mouth (1)
    mouth_width: float  # half-width of the relaxed mouth
    mouth_drop: float  # mouth corners below the eye line, in inter-ocular distances
    lip_upper: float
    lip_lower: float
    ear_size: float
    neck_width: float
    shoulder_width: float


def _hsv(h: float, s: float, v: float) -> Colour:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, s, v)
    return (round(r * 255), round(g * 255), round(b * 255))


def _mix(a: Colour, b: Colour, t: float) -> Colour:
    return tuple(round(x + (y - x) * t) for x, y in zip(a, b, strict=True))


def _shade(c: Colour, f: float) -> Colour:
    return tuple(min(255, round(x * f)) for x in c)


SKIN_TONES = ((252, 226, 206), (236, 190, 160), (198, 140, 100), (140, 92, 62), (88, 56, 40))
HAIR_COLOURS = (  # with relative frequency
    ((22, 18, 16), 4), ((58, 38, 24), 3), ((105, 70, 42), 2), ((140, 62, 30), 1),
    ((196, 104, 52), 1), ((214, 186, 122), 2), ((150, 146, 140), 1), ((226, 222, 214), 1),
)  # fmt: skip
IRIS_COLOURS = ((92, 58, 30), (52, 34, 20), (128, 102, 50), (84, 124, 76), (78, 124, 186),
                (118, 130, 142))  # fmt: skip


def random_identity(rng: np.random.Generator) -> FaceIdentity:
    """Draw one person; every field comes from `rng`, so identities are reproducible by seed."""
    u = rng.uniform
    tone = u(0, len(SKIN_TONES) - 1)
    i = min(int(tone), len(SKIN_TONES) - 2)
    skin = _mix(SKIN_TONES[i], SKIN_TONES[i + 1], tone - i)
    skin = tuple(int(np.clip(c + rng.integers(-10, 11), 0, 255)) for c in skin)
    lip = _shade(_mix(skin, (196, 72, 84), u(0.3, 0.5)), u(0.82, 0.98))
    colours, weights = zip(*HAIR_COLOURS, strict=True)
    p = np.array(weights, float) / sum(weights)
    hair = colours[rng.choice(len(colours), p=p)]
    hair = tuple(int(np.clip(c * u(0.85, 1.15), 0, 255)) for c in hair)
    style = HAIR_STYLES[rng.integers(len(HAIR_STYLES))]
    brow = _shade(hair, 0.75) if style != "bald" or rng.random() < 0.5 else (60, 44, 34)
    iod = BASE_IOD * u(0.85, 1.15)
    eye_size = u(0.8, 1.2)
    bg_kind = BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
    bg_hue = u(0, 1)
    background = (
        _hsv(bg_hue, u(0.05, 0.6), u(0.25, 0.95)),
        _hsv(bg_hue + u(-0.25, 0.25), u(0.05, 0.6), u(0.15, 0.95)),
    )
    return FaceIdentity(
        skin=skin,
        lip=lip,
        hair=hair,
        brow=brow,
        iris=IRIS_COLOURS[rng.integers(len(IRIS_COLOURS))],
        clothes=_hsv(u(0, 1), u(0.0, 0.8), u(0.15, 0.9)),
        background=background,
        background_kind=bg_kind,
        background_seed=int(rng.integers(2**31)),
        light=u(-1, 1),
        hair_style=style,
        hair_volume=u(0.012, 0.04),
        hairline=u(0.12, 0.2),
        hair_part=u(-1, 1),
        hair_length=u(0.85, 1.05),
        beard=bool(rng.random() < 0.2),
        # wide enough to hold the eyes however far apart and large they are
        face_width=max(u(0.25, 0.32), iod / 2 + EYE_HALF_WIDTH * eye_size + 0.04),
        face_top=u(0.24, 0.3),
        jaw_square=u(1.6, 3.5),
        chin_width=u(0.15, 0.45),
        chin_length=u(0.1, 0.14),
        eye_spacing=iod / BASE_IOD,
        eye_size=eye_size,
        eye_open=u(0.75, 1.05),
        eye_tilt=u(-6, 6),
        iris_size=u(0.9, 1.1),
        brow_height=u(0.05, 0.075),
        brow_thickness=u(0.01, 0.022),
        brow_arch=u(0.0, 0.02),
        brow_slant=u(-0.012, 0.012),
        nose_width=u(0.034, 0.05),
        nose_position=u(0.58, 0.68),
        mouth_width=u(0.085, 0.11),
        mouth_drop=u(0.92, 1.02),
        lip_upper=u(0.009, 0.018),
        lip_lower=u(0.012, 0.024),
        ear_size=u(0.85, 1.15),
        neck_width=u(0.085, 0.12),
        shoulder_width=u(0.4, 0.55),
    )


def head_motion(rng: np.random.Generator, n_frames: int) -> np.ndarray:
    """Small smooth head motion, independent of speech: float32 [T, 4] = (dx, dy, roll, scale).

    Each of dx, dy (fractions of the frame), roll (degrees) and scale - 1 is a sum of three slow
    sinusoids (0.15-1.2 Hz) whose amplitudes add up to at most MOTION_BOUNDS.
    """
    t = np.arange(n_frames) / FPS
    out = np.empty((n_frames, 4), np.float64)
    for j, bound in enumerate(MOTION_BOUNDS):
        amp = rng.uniform(0.25, 1.0) * bound * rng.dirichlet(np.ones(3))
        freq = rng.uniform(0.15, 1.2, 3)
        phase = rng.uniform(0, 2 * math.pi, 3)
        out[:, j] = amp @ np.sin(2 * math.pi * freq[:, None] * t + phase[:, None])
    out[:, 3] += 1.0
    return out.astype(np.float32)


def blinks(rng: np.random.Generator, n_frames: int) -> np.ndarray:
    """Eyelid closure per frame, float32 [T] in [0, 1]: 0-2 blinks of 3-5 frames, independent of
    speech."""
    out = np.zeros(n_frames, np.float32)
    count = int(rng.choice(3, p=(0.4, 0.4, 0.2)))
    for k in range(count):  # blink k lies inside the k-th part of the clip: blinks never touch
        profile = BLINK_PROFILES[int(rng.integers(3, 6))]
        lo, hi = k * n_frames // count, (k + 1) * n_frames // count - len(profile) - 1
        start = int(rng.integers(lo, max(lo, hi) + 1))
        seg = out[start : start + len(profile)]
        seg[:] = profile[: len(seg)]
    return out


def _ellipse(cx: float, cy: float, a: float, b: float, n: int = 20, rot: float = 0.0) -> np.ndarray:
    """[n, 2] points of an ellipse with half-axes a, b turned by `rot` degrees (clockwise on
    screen)."""
    t = np.linspace(0, 2 * math.pi, n, endpoint=False)
    return _rotate(np.stack([a * np.cos(t), b * np.sin(t)], 1), rot) + (cx, cy)


def _rotate(p: np.ndarray, deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return p @ np.array([[c, s], [-s, c]])


def _band(x: np.ndarray, top: np.ndarray, bottom: np.ndarray) -> np.ndarray:
    """Polygon between two curves sampled at the same x: along `top`, back along `bottom`."""
    return np.vstack([np.stack([x, top], 1), np.stack([x, bottom], 1)[::-1]])


def _mouth_y(f: FaceIdentity) -> float:
    return EYE_Y + f.mouth_drop * f.eye_spacing * BASE_IOD


def _eye_centres(f: FaceIdentity) -> np.ndarray:
    iod = f.eye_spacing * BASE_IOD
    return np.array([(0.5 - iod / 2, EYE_Y), (0.5 + iod / 2, EYE_Y)])


def _nose_tip(f: FaceIdentity) -> tuple[float, float]:
    return 0.5, EYE_Y + f.nose_position * (_mouth_y(f) - EYE_Y)


def _face_outline(f: FaceIdentity, drop: float) -> tuple[np.ndarray, np.ndarray]:
    """(outline [N, 2], how much each point follows the jaw [N]) with the chin lowered by `drop`:
    an ellipse over the skull, a superellipse jaw down to a flat chin."""
    cy, top, fw = EYE_Y + 0.04, EYE_Y - f.face_top, f.face_width  # cy: widest line
    mouth_y = _mouth_y(f)
    chin = mouth_y + f.chin_length
    t = np.linspace(0, -math.pi, 17)
    skull = np.stack([0.5 + fw * np.cos(t), cy + (cy - top) * np.sin(t)], 1)
    s = np.linspace(0, 1, 12)[1:]
    half = fw * (f.chin_width + (1 - f.chin_width) * (1 - s**f.jaw_square) ** (1 / f.jaw_square))
    ys = cy + s * (chin - cy)
    face = np.vstack([skull, np.stack([0.5 - half, ys], 1), np.stack([0.5 + half, ys], 1)[::-1]])
    follow = np.clip((face[:, 1] - mouth_y + 0.02) / (chin - mouth_y + 0.02), 0, 1)
    return face + drop * follow[:, None] * (0, 1), follow


def _hair(f: FaceIdentity) -> tuple[list, list]:
    """(back, cap) polygons of the hair: back is drawn behind the head, the cap over the face."""
    cy, top, fw = EYE_Y + 0.04, EYE_Y - f.face_top, f.face_width
    ht, vol, style = cy - top, f.hair_volume, f.hair_style
    if style == "bald":
        return [], []
    vol = {"buzz": 0.004, "afro": 0.05}.get(style, vol)
    back = []
    if style in ("long", "bob"):
        end = f.hair_length if style == "long" else _mouth_y(f) + 0.04
        t = np.linspace(math.pi, 2 * math.pi, 13)
        arc = np.stack([0.5 + (fw + vol + 0.02) * np.cos(t), cy + (ht + vol) * np.sin(t)], 1)
        w_end = fw + vol + (0.05 if style == "long" else 0.035)
        back.append(np.vstack([[(0.5 - w_end, end)], arc, [(0.5 + w_end, end)]]))
    elif style == "afro":
        back.append(_ellipse(0.5, cy - 0.02, fw * 1.42, ht * 1.28, 28))
    elif style == "bun":
        back.append(_ellipse(0.5, top - 0.035, 0.065, 0.055, 16))
    # cap: the skull grown by vol from one side over the top to the other, closed by the hairline
    side = {"long": 0.2, "bob": 0.2, "afro": 0.12}.get(style, 0.03)
    a = math.asin(side / (ht + vol))
    t = np.linspace(a, -math.pi - a, 21)
    outer = np.stack([0.5 + (fw + vol) * np.cos(t), cy + (ht + vol) * np.sin(t)], 1)
    hl = EYE_Y - (0.1 if style == "fringe" else f.hairline)
    temple = EYE_Y - 0.055
    u = np.linspace(-1, 1, 17)
    y = hl + (temple - hl) * np.abs(u) ** 2.5 + 0.025 * f.hair_part * u
    if style == "fringe":
        y = y + 0.008 * (np.arange(17) % 2)
    hairline = np.stack([0.5 + 0.93 * fw * u, y], 1)
    cap = np.vstack(
        [outer, [(0.5 - 0.97 * fw, cy + side)], hairline, [(0.5 + 0.97 * fw, cy + side)]]
    )
    return back, [cap]


def _beard(f: FaceIdentity, face: np.ndarray, follow: np.ndarray) -> np.ndarray:
    """Beard and moustache: the jaw part of the face outline closed by a line over the lip."""
    jaw = face[17:]  # left cheek -> chin -> right cheek
    jaw = jaw[(jaw[:, 1] > EYE_Y + 0.09) | (follow[17:] > 0)]
    mw, mouth_y = f.mouth_width, _mouth_y(f)
    u = np.linspace(0.7, -0.7, 9)
    over_lip = mouth_y - f.lip_upper - 0.012 - 0.012 * np.cos(math.pi * u / 1.4)
    moustache = np.stack([0.5 + 2 * mw * u, over_lip], 1)
    ends = [(0.5 + 1.6 * mw, mouth_y + 0.01)], [(0.5 - 1.6 * mw, mouth_y + 0.01)]
    return np.vstack([jaw, ends[0], moustache, ends[1]])


def _nose(f: FaceIdentity) -> list:
    skin, nw = f.skin, f.nose_width
    _, tip_y = _nose_tip(f)
    shadow_side = -1.0 if f.light > 0 else 1.0
    t = np.linspace(0, 1, 7)
    bridge_x = 0.5 + shadow_side * nw * (0.3 + 0.45 * t)
    bridge_y = EYE_Y + 0.02 + t * (tip_y - EYE_Y - 0.035)
    bridge_w = 0.004 + 0.005 * t
    bridge = np.vstack([np.stack([bridge_x - bridge_w, bridge_y], 1),
                        np.stack([bridge_x + bridge_w, bridge_y], 1)[::-1]])  # fmt: skip
    nostrils = [_ellipse(0.5 + sg * 0.48 * nw, tip_y + 0.017, 0.26 * nw, 0.008, 10, -sg * 15)
                for sg in (-1, 1)]  # fmt: skip
    return [
        (_shade(skin, 0.86), [bridge, _ellipse(0.5, tip_y + 0.006, nw, 0.026, 18)]),
        (_shade(skin, 1.05), [_ellipse(0.5, tip_y, 0.45 * nw, 0.019, 14)]),
        (_shade(skin, 0.42), nostrils),
    ]


def _eyes(f: FaceIdentity, blink: float) -> list:
    """[(colour, polygons)] of both eyes in paint order; `blink` lowers the upper lid onto the
    (slightly rising) lower one, and the lid covers are skin over the iris outside the opening."""
    ew = EYE_HALF_WIDTH * f.eye_size
    hu, hl = 0.58 * f.eye_open * ew, 0.42 * f.eye_open * ew
    x = np.linspace(-1, 1, 11) * ew
    prof = 1 - (x / ew) ** 2
    upper = -hu * prof
    lower = hl * prof * (1 - 0.3 * blink)
    lid = upper + (lower - upper) * blink
    cover_up = np.vstack([np.stack([x, lid], 1), [(1.1 * ew, -0.9 * ew), (-1.1 * ew, -0.9 * ew)]])
    cover_lo = np.vstack([np.stack([x, lower], 1), [(1.1 * ew, 0.8 * ew), (-1.1 * ew, 0.8 * ew)]])
    ri = 0.46 * ew * f.iris_size
    shapes = [
        (SCLERA, _band(x, upper, hl * prof)),
        (f.iris, _ellipse(0, 0, ri, ri, 16)),
        (PUPIL, _ellipse(0, 0, 0.42 * ri, 0.42 * ri, 12)),
        (GLINT, _ellipse(-0.42 * ri, -0.42 * ri, 0.1 * ri, 0.1 * ri, 8)),  # off the pupil
        (f.skin, cover_lo),
        # drawn under the upper cover, so only a lash line along the lid edge shows
        (_mix(f.skin, (24, 16, 14), 0.7), cover_up + (0.0, 0.006)),
        (f.skin, cover_up),
    ]
    centres = _eye_centres(f)
    return [
        (
            colour,
            [_rotate(shape, -sg * f.eye_tilt) + c for sg, c in zip((-1, 1), centres, strict=True)],
        )
        for colour, shape in shapes
    ]


def _brows(f: FaceIdentity) -> list:
    brows = []
    b = np.linspace(0, 1, 9)  # inner end -> outer end
    y = EYE_Y - f.brow_height - f.brow_arch * np.sin(math.pi * b**0.8) - f.brow_slant * b
    th = f.brow_thickness * (1 - 0.5 * b) / 2
    for sg, (ex, _) in zip((-1, 1), _eye_centres(f), strict=True):
        x = ex + sg * (-0.95 + 2.2 * b) * EYE_HALF_WIDTH * f.eye_size
        brows.append(_band(x, y - th, y + th))
    return [(f.brow, brows)]


def _head(f: FaceIdentity, drop: float, blink: float) -> list:
    """Everything but the mouth, [(colour, [polygon [n, 2]])] in paint order, with the chin lowered
    by `drop` and the eyelids at `blink`. The first polygon is the neck, whose last two points
    (its foot) are replaced by fixed frame positions when drawing."""
    skin = f.skin
    mouth_y = _mouth_y(f)
    neck = np.array([(0.5 - f.neck_width, mouth_y), (0.5 + f.neck_width, mouth_y), (0, 0), (0, 0)])
    face, follow = _face_outline(f, drop)
    back, cap = _hair(f)
    hair = _mix(f.hair, skin, 0.45) if f.hair_style == "buzz" else f.hair
    out = [(_shade(skin, 0.8), [neck])] + ([(hair, back)] if back else [])
    if f.hair_style not in ("long", "bob", "afro"):
        fw, es = f.face_width, f.ear_size
        ears = [
            _ellipse(0.5 + sg * (fw - 0.006), EYE_Y + 0.045, 0.028 * es, 0.062 * es, 16, sg * 12)
            for sg in (-1, 1)
        ]
        holes = [
            _ellipse(0.5 + sg * (fw + 0.004), EYE_Y + 0.05, 0.013 * es, 0.038 * es, 12, sg * 12)
            for sg in (-1, 1)
        ]
        out += [(_shade(skin, 0.9), ears), (_shade(skin, 0.72), holes)]
    out.append((skin, [face]))
    if f.beard:
        out.append((_mix(f.hair, skin, 0.25), [_beard(f, face, follow)]))
    if cap:
        out.append((hair, cap))
    return out + _nose(f) + _eyes(f, blink) + _brows(f)


@dataclass(frozen=True)
class _Layout:
    """An identity's head as coefficient arrays over all its polygon points [N, 2] in canonical
    coordinates, so that a frame needs one expression instead of rebuilding the shapes:
    points = base + drop * jaw + blink * (blink1 + blink * blink2), exact because the shapes are
    linear in the chin drop and quadratic in the blink. The last three points are landmarks."""

    base: np.ndarray
    jaw: np.ndarray
    blink1: np.ndarray
    blink2: np.ndarray
    groups: list  # [(colour, [(start, end)])] row ranges of base, in paint order
    mouth_colours: tuple  # lips, upper lip, inside, tongue, teeth


@functools.lru_cache(maxsize=256)
def _layout(f: FaceIdentity) -> _Layout:
    def points(drop: float, blink: float) -> np.ndarray:
        polys = [p for _, ps in _head(f, drop, blink) for p in ps]
        return np.vstack(polys + [_eye_centres(f), [_nose_tip(f)]])

    p0, p_half, p1 = points(0, 0), points(0, 0.5), points(0, 1)
    groups, start = [], 0
    for colour, ps in _head(f, 0, 0):
        spans = []
        for p in ps:
            spans.append((start, start + len(p)))
            start += len(p)
        groups.append((colour, spans))
    return _Layout(
        base=p0,
        jaw=points(1, 0) - p0,
        blink1=4 * p_half - 3 * p0 - p1,
        blink2=2 * p1 - 4 * p_half + 2 * p0,
        groups=groups,
        mouth_colours=(f.lip, _shade(f.lip, 0.82), MOUTH_INSIDE, TONGUE, TEETH),
    )


# The mouth is rebuilt every frame from eight 13-point curves, XY = coefficients @ basis, where
# the basis rows (1, u, the opening's profile at the outer and inner x, its square and 0.3 power
# roots, and the lip bulges) depend only on lip_round: they are tabulated at MOUTH_LEVELS values.
MOUTH_LEVELS = 64
_U = np.linspace(-1, 1, 13)


def _mouth_basis(rnd: float) -> np.ndarray:
    power = 0.85 - 0.4 * rnd  # rounded lips make a rounder opening...
    inner = 1 / (0.88 - 0.28 * rnd)  # ...that is narrower than the lips (outer / inner width)
    prof_i = (1 - _U**2) ** power
    prof_o = np.maximum(1 - (_U * inner) ** 2, 0) ** power  # the opening seen at the outer x
    bulge = np.sqrt(1 - _U**2)
    bow = 1 - 0.3 * np.exp(-((_U / 0.18) ** 2))  # Cupid's bow
    return np.stack(
        [np.ones(13), _U, prof_o, prof_i, np.sqrt(prof_i), prof_i**0.3, bulge * bow, bulge]
    )


_MOUTH_BASIS = np.stack([_mouth_basis(r) for r in np.linspace(0, 1, MOUTH_LEVELS + 1)])
# Each polygon runs forward along one curve and back along another; rows of XY: x outer, x inner,
# y outer top, y outer bottom, y inner top, y inner bottom, y tongue top, y teeth bottom.
_MOUTH_POLYS = (  # (x row, forward y row, back y row): lips, upper lip, inside, tongue, teeth
    (0, 2, 3), (0, 2, 4), (1, 4, 5), (1, 6, 5), (1, 4, 7),
)  # fmt: skip
_COLS = np.concatenate([np.arange(13), np.arange(13)[::-1]])
_MOUTH_GATHER = np.concatenate([
    np.stack([13 * xr + _COLS, 13 * np.repeat([y1, y2], 13) + _COLS], 1)
    for xr, y1, y2 in _MOUTH_POLYS
])  # fmt: skip


def _mouth(f: FaceIdentity, viseme) -> tuple[np.ndarray, float, float]:
    """Mouth polygons [5 * 26, 2] (lips, upper lip, inside, tongue, teeth), then the two corners,
    in canonical coordinates; also the opening height and the teeth amount."""
    jaw, width, rnd, teeth = np.clip(viseme, 0.0, 1.0).tolist()
    mw = f.mouth_width
    w = mw * (0.78 + 0.44 * width) * (1 - 0.32 * rnd)
    wi = w * (0.88 - 0.28 * rnd)
    h = jaw * 1.25 * mw * (1 + 0.2 * rnd)
    y0 = _mouth_y(f) + 0.08 * h  # the corners slide down a little as the jaw drops
    tu, tl = f.lip_upper * (1 + 0.5 * rnd), f.lip_lower * (1 + 0.4 * rnd)  # protruded lips
    tb = teeth * min(0.55 * h, 0.3 * mw)
    up, down = -0.35 * h, 0.65 * h  # the opening's top and bottom around the corners' line
    coef = np.array([
        # 1, u, prof_o, prof_i, sqrt(prof_i), prof_i^0.3, bulge*bow, bulge
        (0.5, w, 0, 0, 0, 0, 0, 0),
        (0.5, wi, 0, 0, 0, 0, 0, 0),
        (y0, 0, up, 0, 0, 0, -tu, 0),
        (y0, 0, down, 0, 0, 0, 0, tl),
        (y0, 0, 0, up, 0, 0, 0, 0),
        (y0, 0, 0, down, 0, 0, 0, 0),
        (y0, 0, 0, down, -0.25 * h, 0, 0, 0),
        (y0, 0, 0, up, 0, tb, 0, 0),
    ])  # fmt: skip
    xy = coef @ _MOUTH_BASIS[round(rnd * MOUTH_LEVELS)]
    np.minimum(xy[7], xy[5], out=xy[7])  # teeth end at the lower lip
    pts = np.empty((5 * 26 + 2, 2))
    pts[:-2] = xy.ravel()[_MOUTH_GATHER]
    pts[-2:] = (0.5 - w, y0), (0.5 + w, y0)
    return pts, h, teeth


def _smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - e0) / (e1 - e0), 0, 1)
    return t * t * (3 - 2 * t)


@dataclass(frozen=True)
class _Statics:
    """What does not move, at one size: background with shoulders, light map, the neck's foot."""

    background: np.ndarray  # uint8 [H, W, 3]
    light: np.ndarray  # uint8 [H, W, 3], LIGHT_ONE = 1
    neck_foot: np.ndarray  # int32 [2, 2] fixed-point pixels


@functools.lru_cache(maxsize=64)
def _statics(f: FaceIdentity, size: int) -> _Statics:
    g = (np.arange(size) + 0.5) / size
    x, y = g[None, :, None], g[:, None, None]
    c1, c2 = (np.array(c, np.float32) for c in f.background)
    rng = np.random.default_rng(f.background_seed)
    kind = f.background_kind
    if kind == "vertical":
        t = y
    elif kind == "diagonal":
        t = np.clip(0.5 + (x - 0.5) * rng.uniform(-1, 1) + (y - 0.5) * rng.uniform(-1, 1), 0, 1)
    elif kind == "stripes":
        angle, period = rng.uniform(-0.5, 0.5), rng.uniform(0.06, 0.2)
        t = 0.5 + 0.5 * np.tanh(4 * np.sin(2 * math.pi * (x + angle * y) / period))
    elif kind == "spot":
        t = np.clip(np.hypot(x - rng.uniform(0.2, 0.8), y - rng.uniform(0.1, 0.5)) * 1.6, 0, 1)
    else:  # flat, and the wall behind the blocks
        t = 0.15 * y
    bg = np.empty((size, size, 3), np.uint8)
    bg[:] = c1 + (c2 - c1) * t
    if kind == "blocks":  # shelves, windows, posters
        for _ in range(int(rng.integers(3, 7))):
            x0, y0 = rng.uniform(-0.1, 0.9, 2)
            x1, y1 = x0 + rng.uniform(0.1, 0.5), y0 + rng.uniform(0.05, 0.4)
            colour = c1 + (c2 - c1) * rng.uniform(0.4, 1.2)
            corners = (int(x0 * size), int(y0 * size)), (int(x1 * size), int(y1 * size))
            cv2.rectangle(bg, *corners, np.clip(colour, 0, 255).tolist(), -1)
    shoulders = _ellipse(0.5, 1.1, f.shoulder_width, 0.23, 40)
    neckline = _ellipse(0.5, 0.875, f.neck_width * 1.3, 0.05, 20)
    for poly, colour in ((shoulders, f.clothes), (neckline, _shade(f.skin, 0.7))):
        cv2.fillPoly(bg, [_fixed(poly * size)], colour, cv2.LINE_AA, SHIFT)

    # light: a soft falloff towards the face's edge, a side light, a vignette
    mouth_y = _mouth_y(f)
    fcy = (EYE_Y - f.face_top + mouth_y + f.chin_length) / 2
    fh = (mouth_y + f.chin_length - EYE_Y + f.face_top) / 2
    d = np.hypot((x - 0.5) / f.face_width, (y - fcy) / fh)
    light = 1.02 - 0.2 * _smoothstep(0.35, 1.05, d) + 0.12 * _smoothstep(1.05, 1.6, d)
    light = light * (1 + 0.1 * f.light * np.clip((x - 0.5) / f.face_width, -1.5, 1.5))
    light = light * (1 - 0.35 * ((x - 0.5) ** 2 + (y - 0.5) ** 2))
    light_map = np.empty((size, size, 3), np.uint8)
    light_map[:] = np.clip(light * LIGHT_ONE, 0, 255)

    nw = f.neck_width * 1.1
    foot = _fixed(np.array([(0.5 + nw, 0.9), (0.5 - nw, 0.9)]) * size)
    return _Statics(bg, light_map, foot)


def _fixed(p: np.ndarray) -> np.ndarray:
    """Pixel coordinates -> int32 fixed point for cv2 drawing with shift=SHIFT."""
    return np.round(p * _ONE).astype(np.int32)


def _pose_matrix(pose, size: int) -> np.ndarray:
    """[2, 3] affine map canonical -> pixels for pose (dx, dy, roll degrees, scale)."""
    dx, dy, roll, scale = (float(v) for v in pose)
    c, s = math.cos(math.radians(roll)) * scale, math.sin(math.radians(roll)) * scale
    px, py = PIVOT
    # [[c, s], [-s, c]] turns counter-clockwise on screen for roll > 0 (y down)
    tx, ty = px + dx - (c * px + s * py), py + dy - (-s * px + c * py)
    return size * np.array([[c, s, tx], [-s, c, ty]])


def _draw(out, f: FaceIdentity, lay: _Layout, st: _Statics, viseme, pose, blink: float):
    """Render one frame into `out` uint8 [H, W, 3]; returns the landmarks float32 [5, 2]."""
    np.copyto(out, st.background)
    mouth, h, teeth = _mouth(f, viseme)
    pts = lay.base + (CHIN_FOLLOW * h) * lay.jaw if h > 0 else lay.base
    if blink > 0:
        pts = pts + blink * (lay.blink1 + blink * lay.blink2)
    m = _pose_matrix(pose, out.shape[0])
    pixels = cv2.transform(np.concatenate([pts, mouth])[None], m)[0]
    fixed = _fixed(pixels)
    fixed[2:4] = st.neck_foot  # the neck joins the shoulders, which do not move
    for colour, spans in lay.groups:
        cv2.fillPoly(out, [fixed[a:b] for a, b in spans], colour, cv2.LINE_AA, SHIFT)
    n = len(pts)
    n_mouth = 5 if teeth > 0 and h > 0 else 4 if h > 0 else 2  # lips; inside, tongue; teeth
    for k, colour in enumerate(lay.mouth_colours[:n_mouth]):
        a = n + 26 * k
        cv2.fillPoly(out, [fixed[a : a + 26]], colour, cv2.LINE_AA, SHIFT)
    cv2.multiply(out, st.light, dst=out, scale=1.0 / LIGHT_ONE)
    return np.vstack([pixels[n - 3 : n], pixels[-2:]]).astype(np.float32)


def render_frame(
    identity: FaceIdentity, viseme, pose, blink: float, size: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """One frame: viseme [4] (jaw_open, lip_width, lip_round, teeth), pose [4] (dx, dy, roll
    degrees, scale), blink in [0, 1] -> (image uint8 [size, size, 3] RGB, landmarks float32 [5, 2]).

    Landmarks are pixel (x, y): left eye centre, right eye centre (left = image left), nose tip,
    left mouth corner, right mouth corner, exactly where they were drawn.
    """
    out = np.empty((size, size, 3), np.uint8)
    lay, st = _layout(identity), _statics(identity, size)
    return out, _draw(out, identity, lay, st, viseme, pose, float(blink))


def render_clip(
    identity: FaceIdentity,
    visemes: np.ndarray,
    motion: np.ndarray,
    blink: np.ndarray,
    size: int = 256,
) -> tuple[np.ndarray, np.ndarray]:
    """A clip: visemes [T, 4], motion [T, 4], blink [T] -> (frames uint8 [T, size, size, 3],
    landmarks float32 [T, 5, 2])."""
    n = len(visemes)
    lay, st = _layout(identity), _statics(identity, size)
    frames = np.empty((n, size, size, 3), np.uint8)
    landmarks = np.empty((n, 5, 2), np.float32)
    for i in range(n):
        landmarks[i] = _draw(frames[i], identity, lay, st, visemes[i], motion[i], float(blink[i]))
    return frames, landmarks
