"""The embedded default dataset: procedurally generated cartoon faces with exact 68-point landmarks.

Every face starts from a parametric 3D mean face in the iBUG 68-point scheme (:func:`mean_template`):
a jaw contour, brows, nose ridge and base, eye contours and outer/inner lip contours, each point
with a depth value. A face is then

1. deformed by *identity* parameters (face width, jaw squareness, chin length, eye/brow/nose/mouth
   placement and size, plus small per-point noise) and *expression* parameters (mouth opening,
   smile, brow raise, per-eye openness), all in template units (face half-width ~ 1);
2. rotated in 3D (``R = R_z(roll) R_x(pitch) R_y(yaw)``) and projected orthographically
   (weak perspective), then scaled and translated into the image:
   ``u = s * (R X)_{xy} + t`` in normalised image units (``u`` in [0, 1] spans the image, edge to
   edge) and ``p = u * S - 0.5`` in 0-based pixel-centre coordinates for an ``S x S`` image;
3. rendered with OpenCV from those *same* projected points: random background and clutter, neck
   and clothes, a skin-coloured head bounded by the jaw and a forehead arc, hair, brows, eyes
   (sclera, iris clipped to the eye contour, lids), nose (ridge, tip, nostrils), lips (the inner
   mouth dark when open, with teeth), random occluders, an illumination gradient, blur and noise.

Landmarks are therefore exact by construction. Per-landmark ``occluded`` flags mark points inside
an occluder polygon (the polygons stored in :class:`FaceParams` are exactly the ones drawn).

Determinism: sample ``i`` of ``SyntheticFaces(n, seed)`` draws its geometry from
``np.random.default_rng([seed, i])`` and its appearance from ``np.random.default_rng([seed, i, 1])``;
images are rendered lazily by ``FaceSample.image`` (a zero-argument callable), so a dataset of any
length costs no memory.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Sequence as _SequenceABC
import dataclasses
from dataclasses import dataclass, field, fields
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from pyg_sdfl.data.sample import FaceSample

__all__ = [
    "NUM_POINTS",
    "IDENTITY_PARAMETERS",
    "build_shape",
    "VariationRanges",
    "Occluder",
    "FaceParams",
    "mean_template",
    "rotation_matrix",
    "sample_params",
    "project_points",
    "landmarks_of",
    "occlusion_flags",
    "render_face",
    "SyntheticFaces",
]

NUM_POINTS = 68
_SHIFT = 4  # OpenCV sub-pixel bits: coordinates are drawn at 1/16 pixel precision
_ONE = 1 << _SHIFT

FloatRange = Tuple[float, float]


# --------------------------------------------------------------------------------------------
# Variation ranges
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VariationRanges:
    """How much the synthetic faces vary. Angles in degrees; ``(low, high)`` pairs are drawn uniformly.

    Attributes:
        yaw, pitch, roll: maximum absolute head rotation; each is drawn uniformly in ``[-r, r]``.
        face_size: range of the face width (jaw point 0 to 16, before rotation) as a fraction of
            the image side. With the defaults the landmark box side is 40-68% of the image (5th-95th
            percentile; 35-79% extremes), so the 1.2x landmark-box crop mostly fits inside. The size
            shrinks when the rotated landmark box would not fit within a 4% margin.
        mouth_open: 0 closed .. 1 wide open (inner-lip gap of 0.22 template units).
        closed_mouth_prob: probability that the mouth is shut (``mouth_open`` at its low end);
            otherwise ``mouth_open`` is uniform in its range.
        smile: -0.3 (corners down) .. 1 (broad smile).
        brow_raise: -0.5 (frown) .. 1 (raised).
        eye_open: 0 (closed) .. 1 (open) .. 1.2 (wide); each eye adds its own N(0, 0.05) jitter.
        identity: multiplier on the spread of the identity (face shape) parameters; 0 gives the
            mean identity.
        shape_noise: standard deviation of i.i.d. per-point noise, in template units (face
            half-width ~ 1).
    """

    yaw: float = 35.0
    pitch: float = 20.0
    roll: float = 25.0
    face_size: FloatRange = (0.40, 0.70)
    mouth_open: FloatRange = (0.0, 1.0)
    closed_mouth_prob: float = 0.3
    smile: FloatRange = (-0.3, 1.0)
    brow_raise: FloatRange = (-0.5, 1.0)
    eye_open: FloatRange = (0.3, 1.2)
    identity: float = 1.0
    shape_noise: float = 0.008

    def __post_init__(self) -> None:
        for name in ("yaw", "pitch", "roll", "identity", "shape_noise", "closed_mouth_prob"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0:
                raise ValueError(f"variation {name!r} must be a finite number >= 0, got {value!r}")
            object.__setattr__(self, name, float(value))
        for name, limit in (("yaw", 80.0), ("pitch", 60.0), ("roll", 180.0), ("closed_mouth_prob", 1.0)):
            if getattr(self, name) > limit:
                raise ValueError(f"variation {name!r} must be <= {limit}, got {getattr(self, name)}")
        bounds = {
            "face_size": (0.05, 0.95),
            "mouth_open": (0.0, 1.5),
            "smile": (-1.0, 1.5),
            "brow_raise": (-1.0, 1.5),
            "eye_open": (0.0, 1.5),
        }
        for name, (lo_ok, hi_ok) in bounds.items():
            value = getattr(self, name)
            try:
                lo, hi = (float(v) for v in value)
            except (TypeError, ValueError):
                raise ValueError(f"variation {name!r} must be a (low, high) pair, got {value!r}") from None
            if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
                raise ValueError(f"variation {name!r} must satisfy low <= high, got {value!r}")
            if lo < lo_ok or hi > hi_ok:
                raise ValueError(f"variation {name!r} must lie within [{lo_ok}, {hi_ok}], got {value!r}")
            object.__setattr__(self, name, (lo, hi))

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> "VariationRanges":
        """Build from keyword arguments, rejecting unknown names with a ``ValueError``."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise ValueError(f"unknown variation range(s) {unknown}; known: {sorted(known)}")
        return cls(**kwargs)


# --------------------------------------------------------------------------------------------
# Geometry: template, identity, expression, projection
# --------------------------------------------------------------------------------------------
# Identity parameters: name -> (mean, half-range); drawn as mean + identity * U(-1, 1) * half-range.
IDENTITY_PARAMETERS = {
    "face_width": (1.0, 0.11),  # x scale of the head outline
    "jaw_power": (0.85, 0.15),  # < 1: squarer jaw
    "chin_length": (1.04, 0.08),  # vertical half-axis of the jaw
    "eye_x": (0.44, 0.04),  # eye centre |x|
    "eye_y": (-0.34, 0.04),
    "eye_width": (0.36, 0.04),  # corner to corner
    "eye_height": (0.13, 0.025),  # full opening, upper + lower lid
    "eye_tilt": (0.0, 0.10),  # radians, outer corner up when > 0
    "brow_gap": (0.23, 0.05),  # brow centre above the eye centre
    "brow_arch": (0.08, 0.04),
    "brow_length": (0.56, 0.06),
    "brow_inner_x": (0.17, 0.04),
    "nose_tip_y": (0.13, 0.06),
    "nose_width": (0.2, 0.035),
    "nose_depth": (0.42, 0.07),
    "mouth_y": (0.53, 0.05),
    "mouth_half_width": (0.36, 0.05),
    "upper_lip": (0.08, 0.025),
    "lower_lip": (0.1, 0.03),
    "head_height": (1.25, 0.08),  # forehead top above the jaw-ellipse centre
}

_JAW_CENTER_Y = -0.1
_JAW_DELTA = 0.16  # radians above horizontal where the jaw contour starts (points 0 and 16)
_FOREHEAD_POINTS = 15


def _base_depth(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Depth of the face surface at template ``(x, y)``: an elliptic cylinder, receding at the top."""
    return -0.55 * x**2 - 0.3 * np.minimum(0.0, y + 0.55) ** 2


def build_shape(ident: Dict[str, float], expr: Dict[str, float]) -> Tuple[np.ndarray, np.ndarray]:
    """3D landmarks ``(68, 3)`` and the forehead arc ``(K, 3)`` for identity + expression parameters.

    Template frame: x to the image right, y down, z towards the viewer; face half-width ~ 1.
    """
    pts = np.zeros((NUM_POINTS, 3))
    fw = ident["face_width"]
    a = 0.95 * fw
    b = ident["chin_length"]
    p = ident["jaw_power"]
    mouth_open = expr["mouth_open"]

    # Jaw 0..16: a super-ellipse arc from the image-left temple, around the chin, to the right.
    s = -_JAW_DELTA + np.arange(17) * (math.pi + 2 * _JAW_DELTA) / 16
    c, sn = -np.cos(s), np.sin(s)
    jx = a * np.sign(c) * np.abs(c) ** p
    jy = _JAW_CENTER_Y + b * sn
    # An open mouth drops the lower jaw: most at the chin, none at the temples.
    drop = 0.55 * 0.22 * mouth_open * np.clip(sn, 0.0, 1.0) ** 1.5
    jy = jy + drop
    pts[0:17, 0] = jx
    pts[0:17, 1] = jy
    pts[0:17, 2] = _base_depth(jx, jy) + 0.04 * np.clip(sn, 0, 1)  # chin slightly forward

    # Eyes 36..41 (image-left) and 42..47 (image-right).
    ex, ey, ew, eh = ident["eye_x"], ident["eye_y"], ident["eye_width"], ident["eye_height"]
    tilt = ident["eye_tilt"]
    for side, start, openness in ((-1, 36, expr["eye_open_left"]), (1, 42, expr["eye_open_right"])):
        up = 0.55 * eh * openness
        lo = 0.45 * eh * (0.35 + 0.65 * openness)
        # Local (u along the eye from the inner to the outer corner, v down) for the iBUG order.
        if side < 0:  # 36 outer, 37 38 upper (outer -> inner), 39 inner, 40 41 lower (inner -> outer)
            local = [(1.0, 0.0), (0.38, -up), (-0.32, -up), (-1.0, 0.0), (-0.32, lo), (0.38, lo)]
        else:  # 42 inner, 43 44 upper (inner -> outer), 45 outer, 46 47 lower (outer -> inner)
            local = [(-1.0, 0.0), (-0.32, -up), (0.38, -up), (1.0, 0.0), (0.38, lo), (-0.32, lo)]
        # u > 0 is the outer side (image-left for the left eye); rotating the offsets by
        # -side * tilt lifts both outer corners for tilt > 0 and keeps the pair mirror-symmetric.
        ang = -tilt * side
        ca, sa = math.cos(ang), math.sin(ang)
        for k, (u, v) in enumerate(local):
            dx, dy = side * u * ew / 2, v
            pts[start + k, :2] = side * ex + ca * dx - sa * dy, ey + sa * dx + ca * dy
        pts[start : start + 6, 2] = _base_depth(pts[start : start + 6, 0], pts[start : start + 6, 1]) - 0.04

    # Brows 17..21 (outer -> inner, image-left) and 22..26 (inner -> outer, image-right).
    brow_y = ey - ident["brow_gap"] - 0.08 * expr["brow_raise"]
    frown = 0.04 * min(expr["brow_raise"], 0.0)  # negative raise pulls the inner ends down
    t = np.linspace(0.0, 1.0, 5)  # 0 outer .. 1 inner
    inner_x = ident["brow_inner_x"]
    # the outer brow end stays inside the head outline (which is ~0.95 a wide at brow height)
    outer_x = min(inner_x + ident["brow_length"], 0.8 * a)
    bx = outer_x + (inner_x - outer_x) * t
    by = brow_y + 0.5 * ident["brow_arch"] - ident["brow_arch"] * np.sin(np.pi * (0.15 + 0.75 * t))
    by = by - frown * t  # frown < 0 -> inner ends lower (y larger)
    by = by + 0.03 * (1 - t)  # outer ends a little lower
    pts[17:22, 0], pts[17:22, 1] = -bx, by
    pts[22:27, 0], pts[22:27, 1] = bx[::-1], by[::-1]
    pts[17:27, 2] = _base_depth(pts[17:27, 0], pts[17:27, 1])

    # Nose: ridge 27..30 from between the eyes to the tip, base 31..35 from image-left to right.
    tip_y = ident["nose_tip_y"]
    depth = ident["nose_depth"]
    ridge_top = ey - 0.01
    r = np.linspace(0.0, 1.0, 4)
    pts[27:31, 0] = 0.0
    pts[27:31, 1] = ridge_top + (tip_y - ridge_top) * r
    pts[27:31, 2] = 0.06 + (depth - 0.06) * r**1.3
    nw = ident["nose_width"]
    base_y = tip_y + 0.09
    pts[31:36, 0] = nw * np.array([-1.0, -0.5, 0.0, 0.5, 1.0])
    pts[31:36, 1] = base_y + np.array([-0.03, 0.0, 0.02, 0.0, -0.03])
    pts[31:36, 2] = np.array([0.12, 0.2, 0.26, 0.2, 0.12]) * depth / 0.42

    # Lips. Outer 48..59: 48 left corner, 49-53 upper, 54 right corner, 55-59 lower (right -> left).
    my = ident["mouth_y"]
    hw = ident["mouth_half_width"] * (1 + 0.12 * expr["smile"]) * (1 - 0.08 * mouth_open)
    corner_y = my - 0.06 * expr["smile"]
    gap = 0.22 * mouth_open
    ul, ll = ident["upper_lip"], ident["lower_lip"]
    mid = my - gap * 0.15  # the upper lip lifts a little when the mouth opens
    lift = 0.04 * expr["smile"]  # a smile lifts the corners; their neighbours follow partially
    outer = np.zeros((12, 2))
    # Upper outer lip 48..54 with a Cupid's bow (heights above the mouth line, in lip thicknesses).
    outer[0:7, 0] = np.array([-1.0, -0.62, -0.22, 0.0, 0.22, 0.62, 1.0]) * hw
    outer[0:7, 1] = mid - ul * np.array([0.0, 0.75, 1.0, 0.8, 1.0, 0.75, 0.0])
    outer[0, 1] = outer[6, 1] = corner_y
    # Lower outer lip 55..59, right to left.
    outer[7:12, 0] = np.array([0.62, 0.22, 0.0, -0.22, -0.62]) * hw
    outer[7:12, 1] = mid + gap + ll * np.array([0.7, 0.97, 1.0, 0.97, 0.7])
    outer[[1, 5, 7, 11], 1] -= lift * 0.5
    pts[48:60, :2] = outer
    # Inner 60..67: 60 left corner, 61-63 upper (left -> right), 64 right corner, 65-67 lower
    # (right -> left). With the mouth closed the upper and lower inner lips coincide (iBUG).
    ihw = hw * 0.8
    ix = np.array([-0.5, 0.0, 0.5]) * ihw
    upper_inner_y = mid - lift * 0.4 * np.array([1.0, 0.0, 1.0])
    inner = np.zeros((8, 2))
    inner[0] = (-ihw, corner_y - lift * 0.3)
    inner[4] = (ihw, corner_y - lift * 0.3)
    inner[1:4, 0], inner[1:4, 1] = ix, upper_inner_y
    inner[5:8, 0] = ix[::-1]
    inner[5:8, 1] = (upper_inner_y + gap * np.array([0.85, 1.0, 0.85]))[::-1]
    pts[60:68, :2] = inner
    lip_x = pts[48:68, 0]
    pts[48:68, 2] = _base_depth(lip_x, pts[48:68, 1]) + 0.1 * np.clip(1 - (lip_x / 0.5) ** 2, 0, 1)

    # Forehead arc from (just after) jaw point 16 over the top of the head to (just before) jaw
    # point 0: angles from -delta (right temple) through -pi/2 (top) to -(pi - delta) (left temple).
    k = np.arange(1, _FOREHEAD_POINTS + 1) / (_FOREHEAD_POINTS + 1)
    s_top = -_JAW_DELTA - k * (math.pi - 2 * _JAW_DELTA)
    cx = np.cos(s_top)
    fx = a * 1.02 * np.sign(cx) * np.abs(cx) ** 0.8
    fy = _JAW_CENTER_Y + ident["head_height"] * np.sin(s_top)
    forehead = np.stack([fx, fy, _base_depth(fx, fy)], axis=1)
    return pts, forehead


def mean_template() -> np.ndarray:
    """The mean 3D face ``(68, 3)``: x right, y down, z towards the viewer; half-width ~ 1.

    Neutral expression (mouth closed, no smile, brows neutral, eyes open) and mean identity.
    """
    ident = {k: v[0] for k, v in IDENTITY_PARAMETERS.items()}
    expr = {"mouth_open": 0.0, "smile": 0.0, "brow_raise": 0.0, "eye_open_left": 1.0, "eye_open_right": 1.0}
    return build_shape(ident, expr)[0].astype(np.float64)


def rotation_matrix(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """``R = R_z(roll) @ R_x(pitch) @ R_y(yaw)`` for angles in degrees; shape ``(3, 3)``.

    In the template frame (x right, y down, z towards the viewer) a positive yaw turns the face
    towards the image right (the nose tip moves to +x), a positive pitch raises the face (the
    nose tip moves to -y, i.e. looking up), and a positive roll rotates it clockwise on screen.
    """
    y, p, r = (math.radians(v) for v in (yaw, pitch, roll))
    ry = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    rx = np.array([[1, 0, 0], [0, math.cos(p), -math.sin(p)], [0, math.sin(p), math.cos(p)]])
    rz = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    return rz @ rx @ ry


# --------------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Occluder:
    """An occluding object: one or more polygons in normalised image coordinates ``(M, 2)``.

    A landmark is occluded when it lies inside (or on the boundary of) any of the polygons.
    """

    kind: str
    polygons: Tuple[np.ndarray, ...]


@dataclass(frozen=True, eq=False)
class FaceParams:
    """Everything geometric about one synthetic face (appearance is drawn at render time).

    Attributes:
        shape3d: ``(68, 3)`` landmarks in the template frame after identity and expression.
        forehead3d: ``(K, 3)`` forehead arc joining jaw point 16 back to jaw point 0.
        yaw, pitch, roll: degrees (see :func:`rotation_matrix`).
        scale: normalised image units per template unit.
        offset: ``(2,)`` translation in normalised image units.
        gaze: ``(2,)`` iris offset in [-1, 1] of its travel within the eye.
        occluders: occluding objects (normalised polygons).
        attributes: the sampled scalars (pose, expression, face size) for analysis.
    """

    shape3d: np.ndarray
    forehead3d: np.ndarray
    yaw: float
    pitch: float
    roll: float
    scale: float
    offset: np.ndarray
    gaze: np.ndarray
    occluders: Tuple[Occluder, ...] = ()
    attributes: Dict[str, float] = field(default_factory=dict)


def project_points(points3d: np.ndarray, params: FaceParams, image_size: Optional[int] = None) -> np.ndarray:
    """Project template-frame points ``(K, 3)`` to ``(K, 2)``.

    ``u = scale * (R X)_{xy} + offset`` (normalised units). With ``image_size = S`` the result is in
    0-based pixel-centre coordinates ``p = u * S - 0.5``; otherwise normalised units are returned.
    """
    pts = np.asarray(points3d, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise ValueError(f"points3d must have shape (K, 3), got {pts.shape}")
    rot = rotation_matrix(params.yaw, params.pitch, params.roll)
    uv = (pts @ rot.T)[:, :2] * params.scale + params.offset
    if image_size is None:
        return uv
    return uv * float(image_size) - 0.5


def landmarks_of(params: FaceParams, image_size: int) -> np.ndarray:
    """The 68 landmarks of ``params`` in pixel-centre coordinates of an ``S x S`` image, float32 ``(68, 2)``."""
    return project_points(params.shape3d, params, image_size).astype(np.float32)


def _inside_polygon(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    contour = np.asarray(polygon, dtype=np.float32).reshape(-1, 1, 2)
    return np.array(
        [cv2.pointPolygonTest(contour, (float(x), float(y)), False) >= 0 for x, y in points], dtype=bool
    )


def occlusion_flags(params: FaceParams) -> np.ndarray:
    """``(68,)`` bool: landmark inside (or on the boundary of) any occluder polygon."""
    uv = project_points(params.shape3d, params)
    flags = np.zeros(NUM_POINTS, dtype=bool)
    for occ in params.occluders:
        for poly in occ.polygons:
            flags |= _inside_polygon(uv, poly)
    return flags


def _uniform(rng: np.random.Generator, bounds: FloatRange) -> float:
    lo, hi = bounds
    return float(lo + (hi - lo) * rng.random())


def _ellipse_polygon(center: np.ndarray, axes: Tuple[float, float], angle: float, n: int = 36) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    ca, sa = math.cos(angle), math.sin(angle)
    x, y = axes[0] * np.cos(t), axes[1] * np.sin(t)
    return np.stack([center[0] + ca * x - sa * y, center[1] + sa * x + ca * y], axis=1)


def _rect_polygon(center: np.ndarray, half: Tuple[float, float], angle: float) -> np.ndarray:
    ca, sa = math.cos(angle), math.sin(angle)
    corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=np.float64) * np.asarray(half)
    return center + corners @ np.array([[ca, sa], [-sa, ca]])


_OCCLUDER_KINDS = ("rectangle", "ellipse", "bar", "sunglasses", "mask")
_OCCLUDER_P = (0.25, 0.25, 0.2, 0.15, 0.15)


def _sample_occluders(rng: np.random.Generator, uv: np.ndarray, occlusion_prob: float) -> Tuple[Occluder, ...]:
    """Occluders placed over the face given normalised landmarks ``uv (68, 2)``."""
    if rng.random() >= occlusion_prob:
        return ()
    face_w = float(np.linalg.norm(uv[16] - uv[0]))
    face_w = max(face_w, float(np.ptp(uv[:, 1])) * 0.8)
    count = 1 + int(rng.random() < 0.2)
    out = []
    for _ in range(count):
        kind = _OCCLUDER_KINDS[int(rng.choice(len(_OCCLUDER_KINDS), p=_OCCLUDER_P))]
        if kind == "rectangle":
            center = uv[rng.integers(17, NUM_POINTS)] + rng.normal(0, 0.1 * face_w, 2)
            half = (face_w * _uniform(rng, (0.12, 0.35)), face_w * _uniform(rng, (0.1, 0.3)))
            polys = (_rect_polygon(center, half, math.radians(_uniform(rng, (-30, 30)))),)
        elif kind == "ellipse":
            center = uv[rng.integers(17, NUM_POINTS)] + rng.normal(0, 0.1 * face_w, 2)
            axes = (face_w * _uniform(rng, (0.12, 0.32)), face_w * _uniform(rng, (0.1, 0.28)))
            polys = (_ellipse_polygon(center, axes, rng.uniform(0, np.pi)),)
        elif kind == "bar":
            center = uv[rng.integers(0, NUM_POINTS)]
            half = (face_w * _uniform(rng, (0.4, 0.9)), face_w * _uniform(rng, (0.03, 0.08)))
            polys = (_rect_polygon(center, half, rng.uniform(0, np.pi)),)
        elif kind == "sunglasses":
            left, right = uv[36:42].mean(0), uv[42:48].mean(0)
            d = right - left
            angle = math.atan2(d[1], d[0])
            eye_w = 0.5 * (np.linalg.norm(uv[39] - uv[36]) + np.linalg.norm(uv[45] - uv[42]))
            axes = (eye_w * _uniform(rng, (0.75, 0.95)), eye_w * _uniform(rng, (0.5, 0.75)))
            lens_l = _ellipse_polygon(left, axes, angle)
            lens_r = _ellipse_polygon(right, axes, angle)
            mid = 0.5 * (left + right)
            bridge = _rect_polygon(mid, (0.5 * np.linalg.norm(d), 0.08 * eye_w), angle)
            polys = (lens_l, lens_r, bridge)
        else:  # mask: covers the lower face up to the middle of the nose, over the jaw line
            contour = np.concatenate([uv[1:16], uv[29:30]], axis=0)
            centre = contour.mean(0)
            polys = (centre + (contour - centre) * 1.06,)
        out.append(Occluder(kind, tuple(np.asarray(p, dtype=np.float64) for p in polys)))
    return tuple(out)


def sample_params(
    rng: np.random.Generator,
    ranges: Optional[VariationRanges] = None,
    occlusion_prob: float = 0.3,
) -> FaceParams:
    """Draw the geometry of one face: identity, expression, pose, placement and occluders.

    The landmark box (with a 4% margin of the image) always fits inside the image: the face size
    shrinks if needed, and the translation is uniform over the positions that fit.
    """
    ranges = ranges or VariationRanges()
    if not 0.0 <= occlusion_prob <= 1.0:
        raise ValueError(f"occlusion_prob must lie in [0, 1], got {occlusion_prob}")
    ident = {
        name: mean + ranges.identity * half * (2 * rng.random() - 1) for name, (mean, half) in IDENTITY_PARAMETERS.items()
    }
    eye_open = _uniform(rng, ranges.eye_open)
    closed = rng.random() < ranges.closed_mouth_prob
    expr = {
        "mouth_open": ranges.mouth_open[0] if closed else _uniform(rng, ranges.mouth_open),
        "smile": _uniform(rng, ranges.smile),
        "brow_raise": _uniform(rng, ranges.brow_raise),
        "eye_open_left": float(np.clip(eye_open + rng.normal(0, 0.05), 0.0, 1.5)),
        "eye_open_right": float(np.clip(eye_open + rng.normal(0, 0.05), 0.0, 1.5)),
    }
    shape3d, forehead3d = build_shape(ident, expr)
    noise = rng.normal(0.0, ranges.shape_noise, (NUM_POINTS, 2))
    # keep the closed-mouth coincidence of the inner lips exact
    noise[65:68] = np.where(expr["mouth_open"] < 1e-6, noise[[63, 62, 61]], noise[65:68])
    shape3d[:, :2] += noise

    yaw = ranges.yaw * (2 * rng.random() - 1)
    pitch = ranges.pitch * (2 * rng.random() - 1)
    roll = ranges.roll * (2 * rng.random() - 1)
    face_size = _uniform(rng, ranges.face_size)
    gaze = rng.uniform(-1, 1, 2) * np.array([1.0, 0.6])

    rot = rotation_matrix(yaw, pitch, roll)
    xy = (shape3d @ rot.T)[:, :2]
    jaw_width = float(shape3d[16, 0] - shape3d[0, 0])
    scale = face_size / jaw_width
    lo, hi = xy.min(0), xy.max(0)
    margin = 0.04
    extent = float((hi - lo).max()) * scale
    if extent > 1 - 2 * margin:
        scale *= (1 - 2 * margin) / extent
    span = (hi - lo) * scale
    # offset such that lo*scale + offset >= margin and hi*scale + offset <= 1 - margin
    min_off = margin - lo * scale
    max_off = 1 - margin - span - lo * scale
    offset = min_off + rng.random(2) * (max_off - min_off)

    attributes = {
        "yaw": float(yaw),
        "pitch": float(pitch),
        "roll": float(roll),
        "face_size": float(scale * jaw_width),
        **{k: float(v) for k, v in expr.items()},
    }
    params = FaceParams(
        shape3d=shape3d,
        forehead3d=forehead3d,
        yaw=float(yaw),
        pitch=float(pitch),
        roll=float(roll),
        scale=float(scale),
        offset=offset,
        gaze=gaze,
        attributes=attributes,
    )
    occluders = _sample_occluders(rng, project_points(shape3d, params), occlusion_prob)
    return dataclasses.replace(params, occluders=occluders)


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------
def _spline(points: np.ndarray, closed: bool, per_segment: int = 8) -> np.ndarray:
    """Uniform Catmull-Rom curve through ``points (K, 2)``; passes exactly through every point."""
    pts = np.asarray(points, dtype=np.float64)
    if len(pts) < 2:
        return pts
    if closed:
        ext = np.concatenate([pts[-1:], pts, pts[:2]])
        nseg = len(pts)
    else:
        ext = np.concatenate([2 * pts[:1] - pts[1:2], pts, 2 * pts[-1:] - pts[-2:-1]])
        nseg = len(pts) - 1
    idx = np.arange(nseg)[:, None] + np.arange(4)[None, :]
    p0, p1, p2, p3 = (ext[idx[:, k]][:, None, :] for k in range(4))
    t = np.linspace(0.0, 1.0, per_segment, endpoint=False)[None, :, None]
    curve = 0.5 * (
        2 * p1 + (p2 - p0) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2 + (3 * p1 - p0 - 3 * p2 + p3) * t**3
    )
    curve = curve.reshape(-1, 2)
    if not closed:
        curve = np.concatenate([curve, pts[-1:]])
    return curve


def _fx(points: np.ndarray) -> np.ndarray:
    """Pixel-centre float coordinates -> OpenCV fixed-point int32 ``(M, 1, 2)`` for ``shift=_SHIFT``."""
    return np.round(np.asarray(points, dtype=np.float64) * _ONE).astype(np.int32).reshape(-1, 1, 2)


def _color(c: np.ndarray) -> Tuple[int, int, int]:
    c = np.clip(np.asarray(c, dtype=np.float64), 0, 255)
    return (int(c[0]), int(c[1]), int(c[2]))


def _fill(img: np.ndarray, polys: Sequence[np.ndarray], color: np.ndarray) -> None:
    cv2.fillPoly(img, [_fx(p) for p in polys], _color(color), cv2.LINE_AA, _SHIFT)


def _stroke(img: np.ndarray, curve: np.ndarray, color: np.ndarray, thickness: int, closed: bool = False) -> None:
    cv2.polylines(img, [_fx(curve)], closed, _color(color), max(1, int(thickness)), cv2.LINE_AA, _SHIFT)


def _disc(img: np.ndarray, center: np.ndarray, radius: float, color: np.ndarray) -> None:
    if radius <= 0.3:
        return
    c = tuple(int(v) for v in np.round(np.asarray(center) * _ONE))
    cv2.circle(img, c, int(round(radius * _ONE)), _color(color), -1, cv2.LINE_AA, _SHIFT)


def _padded_window(polys: Sequence[np.ndarray], pad: int, shape: Tuple[int, int]) -> Optional[Tuple[int, int, int, int]]:
    """Pixel window ``(x0, y0, x1, y1)`` (exclusive ends) around the polygons, grown by ``pad`` and
    clipped to an image of ``shape = (H, W)``; ``None`` when nothing of it is inside the image."""
    allp = np.concatenate([np.asarray(p) for p in polys])
    h, w = shape
    x0 = int(max(0, math.floor(allp[:, 0].min()) - pad))
    y0 = int(max(0, math.floor(allp[:, 1].min()) - pad))
    x1 = int(min(w, math.ceil(allp[:, 0].max()) + pad + 1))
    y1 = int(min(h, math.ceil(allp[:, 1].max()) + pad + 1))
    return None if x1 <= x0 or y1 <= y0 else (x0, y0, x1, y1)


def _blend_polygon(img: np.ndarray, polys: Sequence[np.ndarray], layer: np.ndarray, pad: int = 2) -> None:
    """Paste ``layer`` (same size as ``img``) into ``img`` inside the (anti-aliased) polygons."""
    window = _padded_window(polys, pad, img.shape[:2])
    if window is None:
        return
    x0, y0, x1, y1 = window
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.fillPoly(mask, [_fx(np.asarray(p) - (x0, y0)) for p in polys], 255, cv2.LINE_AA, _SHIFT)
    alpha = mask.astype(np.float32)[..., None] / 255.0
    roi = img[y0:y1, x0:x1].astype(np.float32)
    img[y0:y1, x0:x1] = (roi + alpha * (layer[y0:y1, x0:x1].astype(np.float32) - roi)).astype(np.uint8)


def _soft_fill(img: np.ndarray, polys: Sequence[np.ndarray], color: np.ndarray, sigma: float,
               clip: Optional[Sequence[np.ndarray]] = None) -> None:
    """Blend ``color`` into ``img`` through the polygons' mask blurred by ~``sigma`` px, within ``clip``."""
    sigma = max(float(sigma), 0.5)
    pad = int(math.ceil(3 * sigma)) + 2
    window = _padded_window(polys, pad, img.shape[:2])
    if window is None:
        return
    x0, y0, x1, y1 = window
    off = np.array([x0, y0], dtype=np.float64)
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.fillPoly(mask, [_fx(np.asarray(p) - off) for p in polys], 255, cv2.LINE_AA, _SHIFT)
    # stack blur (O(1) per pixel) with an odd kernel of width k has a standard deviation ~ k / 4.8
    k = 2 * int(round(2.4 * sigma)) + 1
    alpha = cv2.stackBlur(mask, (k, k)).astype(np.float32) / 255.0
    if clip is not None:
        cmask = np.zeros_like(mask)
        cv2.fillPoly(cmask, [_fx(np.asarray(p) - off) for p in clip], 255, cv2.LINE_AA, _SHIFT)
        alpha *= cmask.astype(np.float32) / 255.0
    roi = img[y0:y1, x0:x1].astype(np.float32)
    roi += alpha[..., None] * (np.asarray(color, np.float32)[None, None, :] - roi)
    img[y0:y1, x0:x1] = np.clip(roi, 0, 255).astype(np.uint8)


_SKIN_TONES = np.array(
    [[255, 224, 196], [241, 194, 150], [224, 172, 125], [198, 140, 96], [160, 105, 70], [110, 72, 48]], np.float64
)
_HAIR = np.array([[20, 16, 14], [60, 40, 28], [100, 70, 40], [150, 110, 60], [190, 160, 110], [120, 50, 25]], np.float64)


def _random_color(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0, 255, 3)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    # A smooth random colour field: bicubic upsampling of a (k, k) grid of random colours;
    # k = 2 gives a plain two-dimensional gradient.
    cells = 2 if rng.random() < 0.4 else int(rng.integers(3, 7))
    small = rng.uniform(0, 255, (cells, cells, 3)).astype(np.float32)
    img = cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)
    img = np.clip(img, 0, 255).astype(np.uint8)
    # clutter: random shapes
    for _ in range(int(rng.integers(2, 12))):
        c = _random_color(rng)
        shape = rng.random()
        x, y = rng.uniform(-0.1, 1.1, 2) * size
        r = rng.uniform(0.03, 0.25) * size
        if shape < 0.35:
            _disc(img, np.array([x, y]), r, c)
        elif shape < 0.7:
            _fill(img, [_rect_polygon(np.array([x, y]), (r, r * rng.uniform(0.2, 1.0)), rng.uniform(0, np.pi))], c)
        else:
            pts = np.array([x, y]) + rng.normal(0, r, (int(rng.integers(2, 5)), 2))
            _stroke(img, pts, c, int(rng.integers(1, max(2, size // 40))))
    return img


def _texture_layer(rng: np.random.Generator, size: int) -> np.ndarray:
    c0 = _random_color(rng)
    kind = rng.random()
    if kind < 0.45:
        return np.broadcast_to(c0.astype(np.uint8), (size, size, 3)).copy()
    c1 = _random_color(rng)
    if kind < 0.75:  # stripes
        period = rng.uniform(0.02, 0.08) * size
        ang = rng.uniform(0, np.pi)
        g = np.arange(size, dtype=np.float32)
        phase = (math.cos(ang) * g[None, :] + math.sin(ang) * g[:, None]) / period
        m = (np.floor(phase) % 2)[..., None]
    else:  # blotchy noise
        cells = int(rng.integers(4, 16))
        m = cv2.resize(rng.random((cells, cells)).astype(np.float32), (size, size), interpolation=cv2.INTER_LINEAR)
        m = m[..., None]
    return np.clip(c0 + m * (c1 - c0), 0, 255).astype(np.uint8)


def render_face(
    params: FaceParams, rng: np.random.Generator, image_size: int = 256, degrade: bool = True
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render one face.

    Args:
        params: geometry from :func:`sample_params`.
        rng: source of the appearance (colours, background, clutter, textures, lighting, noise).
        image_size: side ``S`` of the square image.
        degrade: apply the illumination gradient, blur and sensor noise (off for exact tests).

    Returns:
        ``image`` uint8 ``(S, S, 3)`` RGB, ``landmarks`` float32 ``(68, 2)`` 0-based pixel-centre
        coordinates (exactly the points the features were drawn from), ``occluded`` bool ``(68,)``.
    """
    if not isinstance(image_size, (int, np.integer)) or image_size < 16:
        raise ValueError(f"image_size must be an int >= 16, got {image_size!r}")
    S = int(image_size)
    lm = project_points(params.shape3d, params, S)
    forehead = project_points(params.forehead3d, params, S)
    rot = rotation_matrix(params.yaw, params.pitch, params.roll)
    px_per_unit = params.scale * S

    def proj(p3: np.ndarray) -> np.ndarray:
        return project_points(np.atleast_2d(p3), params, S)

    img = _background(rng, S)

    # Colours.
    t = rng.uniform(0, len(_SKIN_TONES) - 1)
    i = int(t)
    skin = _SKIN_TONES[i] + (t - i) * (_SKIN_TONES[min(i + 1, len(_SKIN_TONES) - 1)] - _SKIN_TONES[i])
    skin = np.clip(skin * rng.uniform(0.9, 1.08) + rng.normal(0, 6, 3), 0, 255)
    hair = np.clip(_HAIR[rng.integers(len(_HAIR))] * rng.uniform(0.8, 1.2) + rng.normal(0, 8, 3), 0, 255)
    brow = np.minimum(hair, skin * 0.45)
    lip = np.clip(skin * np.array([0.82, 0.5, 0.52]) + np.array([25, 0, 5]) + rng.normal(0, 8, 3), 0, 255)
    iris = np.clip(np.array([[70, 45, 25], [40, 90, 140], [70, 110, 60], [30, 20, 15]])[rng.integers(4)]
                   + rng.normal(0, 10, 3), 0, 255)
    outline_col = skin * rng.uniform(0.35, 0.75)

    # Clothes and neck: hang below the chin along the face's "down" direction.
    down = (rot @ np.array([0.0, 1.0, 0.0]))[:2]
    down = down / (np.linalg.norm(down) + 1e-9)
    right = np.array([-down[1], down[0]])
    chin = lm[8]
    neck_w = 0.5 * np.linalg.norm(lm[12] - lm[4])
    body_top = chin + down * 0.75 * px_per_unit
    body = [
        body_top - right * neck_w * 0.8,
        body_top - right * 2.6 * px_per_unit + down * 0.5 * px_per_unit,
        body_top - right * 2.8 * px_per_unit + down * 4 * px_per_unit,
        body_top + right * 2.8 * px_per_unit + down * 4 * px_per_unit,
        body_top + right * 2.6 * px_per_unit + down * 0.5 * px_per_unit,
        body_top + right * neck_w * 0.8,
    ]
    fw = float(params.shape3d[16, 0] - params.shape3d[0, 0]) / 2
    neck3 = np.array([[-0.55 * fw, 0.45, -0.35], [0.55 * fw, 0.45, -0.35], [0.58 * fw, 2.4, -0.35], [-0.58 * fw, 2.4, -0.35]])
    _fill(img, [proj(neck3)], skin * 0.72)
    _fill(img, [np.array(body)], _random_color(rng))

    # Hair: long hair behind the head sometimes, a cap over the forehead usually.
    has_hair = rng.random() < 0.75
    center3 = np.array([0.0, -0.2, -0.4])
    if has_hair and rng.random() < 0.4:
        length = rng.uniform(0.3, 1.1)
        top = center3 + (params.forehead3d - center3) * np.array([1.15, 1.1, 1.0])
        sides = np.array([[1.12 * fw, 0.0, -0.5], [1.1 * fw, length, -0.5], [0.0, length + 0.1, -0.6],
                          [-1.1 * fw, length, -0.5], [-1.12 * fw, 0.0, -0.5]])
        back = np.concatenate([top, sides[::-1]])
        _fill(img, [_spline(proj(back), closed=True, per_segment=4)], hair * 0.85)

    # Head: jaw contour + forehead arc.
    head = np.concatenate([lm[0:17], forehead])
    head_curve = _spline(head, closed=True, per_segment=6)
    _fill(img, [head_curve], skin)

    # Soft shading on the cheek turned away from the viewer.
    if abs(params.yaw) > 3:
        far = [0, 1, 2, 3, 4, 5, 6] if params.yaw > 0 else [16, 15, 14, 13, 12, 11, 10]
        rim = params.shape3d[far]
        inner_rim = rim * np.array([0.55, 1.0, 1.0])
        cheek = np.concatenate([rim, inner_rim[::-1]])
        _soft_fill(img, [proj(cheek)], skin * (1 - 0.3 * abs(params.yaw) / 45.0),
                   sigma=0.12 * px_per_unit, clip=[head_curve])

    # Hair on the forehead.
    if has_hair:
        hair_top = center3 + (params.forehead3d - center3) * 1.06
        line_y = rng.uniform(-1.05, -0.85)
        hx = np.linspace(1.0, -1.0, 9) * params.forehead3d[:, 0].max() * 1.02
        hy = line_y + 0.25 * (np.abs(hx) / np.abs(hx).max()) ** 2 + rng.normal(0, 0.02, len(hx))
        hairline = np.stack([hx, hy, _base_depth(hx, hy) + 0.02], axis=1)
        keep = hair_top[:, 1] < hy.max()
        poly = np.concatenate([proj(hairline[::-1]), proj(hair_top[keep])])
        _fill(img, [poly], hair)

    # Jaw outline.
    _stroke(img, _spline(lm[0:17], closed=False, per_segment=6), outline_col,
            max(1, int(round(S / 256 * rng.uniform(0.6, 2.2)))))

    line_w = max(1, int(round(S / 200)))

    # Brows: a band around the brow curve, thicker at the inner end.
    for sl in (slice(17, 22), slice(22, 27)):
        c = _spline(lm[sl], closed=False, per_segment=5)
        d = np.gradient(c, axis=0)
        n = np.stack([-d[:, 1], d[:, 0]], axis=1)
        n /= np.linalg.norm(n, axis=1, keepdims=True) + 1e-9
        if np.dot(n.mean(0), down) < 0:
            n = -n
        tmax = rng.uniform(0.035, 0.06) * px_per_unit
        inner_first = sl.start == 22
        taper = np.linspace(1.0, 0.45, len(c)) if inner_first else np.linspace(0.45, 1.0, len(c))
        half = (tmax * taper)[:, None]
        band = np.concatenate([c - n * half, (c + n * half)[::-1]])
        _fill(img, [band], brow)

    # Eyes: sclera + iris clipped to the contour, then lids.
    eye_w_px = 0.5 * (np.linalg.norm(lm[39] - lm[36]) + np.linalg.norm(lm[45] - lm[42]))
    for start in (36, 42):
        contour = _spline(lm[start : start + 6], closed=True, per_segment=6)
        eye_layer = img.copy()
        _fill(eye_layer, [contour], np.array([235, 232, 225]) * rng.uniform(0.85, 1.0))
        centre = lm[start : start + 6].mean(0)
        axis = lm[start + 3] - lm[start]  # image-left corner -> image-right corner for both eyes
        axis_u = axis / (np.linalg.norm(axis) + 1e-9)
        perp = np.array([-axis_u[1], axis_u[0]])
        ic = centre + axis_u * params.gaze[0] * 0.18 * eye_w_px + perp * params.gaze[1] * 0.05 * eye_w_px
        r_iris = 0.2 * eye_w_px
        _disc(eye_layer, ic, r_iris, iris)
        _disc(eye_layer, ic, r_iris * 0.45, np.array([10, 8, 8]))
        _disc(eye_layer, ic - r_iris * 0.3, r_iris * 0.18, np.array([250, 250, 250]))
        _blend_polygon(img, [contour], eye_layer)
        upper = _spline(lm[[start, start + 1, start + 2, start + 3]], closed=False, per_segment=6)
        lower = _spline(lm[[start + 3, start + 4, start + 5, start]], closed=False, per_segment=6)
        _stroke(img, upper, brow * 0.6, line_w + 1)
        _stroke(img, lower, skin * 0.55, line_w)

    # Nose: ridge shading, tip highlight, base curve and nostrils.
    side = 1.0 if params.yaw <= 0 else -1.0
    ridge = _spline(lm[27:31], closed=False, per_segment=6)
    _stroke(img, ridge + right * side * 0.035 * px_per_unit, skin * 0.82, line_w)
    _stroke(img, ridge, skin * 0.78, line_w)
    _soft_fill(img, [_ellipse_polygon(lm[30], (0.04 * px_per_unit, 0.03 * px_per_unit), 0.0, 12)],
               np.minimum(skin * 1.12 + 12, 255), sigma=0.015 * px_per_unit)
    base = _spline(lm[31:36], closed=False, per_segment=6)
    _stroke(img, base, skin * 0.5, line_w)
    for a, b in ((31, 33), (33, 35)):
        q = lm[a] + 0.55 * (lm[b] - lm[a]) if a == 31 else lm[a] + 0.45 * (lm[b] - lm[a])
        axes = (max(1.0, 0.25 * np.linalg.norm(lm[b] - lm[a])), max(0.7, 0.012 * px_per_unit))
        _fill(img, [_ellipse_polygon(q - down * 0.012 * px_per_unit, axes, math.atan2(right[1], right[0]), 12)],
              skin * 0.35)
    # alar wings
    for k, sgn in ((31, -1.0), (35, 1.0)):
        wing = np.array([lm[k] - down * 0.1 * px_per_unit + right * sgn * 0.01 * px_per_unit,
                         lm[k] + right * sgn * 0.03 * px_per_unit - down * 0.03 * px_per_unit, lm[k]])
        _stroke(img, _spline(wing, closed=False, per_segment=4), skin * 0.65, line_w)

    # Lips.
    outer = _spline(lm[48:60], closed=True, per_segment=6)
    _fill(img, [outer], lip)
    inner = _spline(lm[60:68], closed=True, per_segment=6)
    gap = float(np.linalg.norm(lm[62] - lm[66]))
    if gap > 1.0:
        mouth_layer = img.copy()
        _fill(mouth_layer, [inner], np.array([60, 20, 25]) * rng.uniform(0.5, 1.0))
        teeth = _spline(lm[60:65], closed=False, per_segment=6) + down * 0.02 * px_per_unit
        _stroke(mouth_layer, teeth, np.array([240, 238, 225]), max(1, int(0.06 * px_per_unit)))
        _blend_polygon(img, [inner], mouth_layer)
    upper_inner = _spline(lm[60:65], closed=False, per_segment=6)
    lower_inner = _spline(lm[[64, 65, 66, 67, 60]], closed=False, per_segment=6)
    _stroke(img, upper_inner, lip * 0.45, line_w)
    if gap > 1.0:
        _stroke(img, lower_inner, lip * 0.6, line_w)
    _stroke(img, outer, lip * 0.8, 1, closed=True)

    # Occluders.
    occluded = np.zeros(NUM_POINTS, dtype=bool)
    for occ in params.occluders:
        polys = [p * S - 0.5 for p in occ.polygons]
        _blend_polygon(img, polys, _texture_layer(rng, S))
    if params.occluders:
        occluded = occlusion_flags(params)

    if degrade:
        img = _degrade(img, rng)
    return img, lm.astype(np.float32), occluded


def _degrade(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Blur, then ``out = (img - 128) * contrast + 128 + brightness`` times a linear illumination
    ramp ``1 + strength * <direction, xy>`` (xy in [-1, 1]^2), plus zero-mean uniform sensor noise."""
    S = img.shape[0]
    if rng.random() < 0.6:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.3, 1.3) * S / 256)
    strength = rng.uniform(0.0, 0.45)
    ang = rng.uniform(0, 2 * np.pi)
    contrast = rng.uniform(0.75, 1.15)
    brightness = rng.uniform(-25, 25)
    g = np.linspace(-1, 1, S, dtype=np.float32) * (strength / math.sqrt(2))
    # ramp as an (S, 3S) map so that every operation below is on contiguous same-shape arrays
    ramp = (1 + math.sin(ang) * g)[:, None] + np.repeat(math.cos(ang) * g, 3)[None, :]
    out = img.reshape(S, -1).astype(np.float32)
    out *= ramp * contrast
    out += ramp * (128 * (1 - contrast) + brightness)
    noise_sigma = rng.uniform(0, 8)
    if noise_sigma > 0.5:  # uniform noise with standard deviation noise_sigma
        out += (rng.random(out.shape, dtype=np.float32) - 0.5) * (noise_sigma * math.sqrt(12))
    return np.clip(out, 0, 255).astype(np.uint8).reshape(img.shape)


# --------------------------------------------------------------------------------------------
# Dataset
# --------------------------------------------------------------------------------------------
def _pose_tags(yaw: float, pitch: float) -> Tuple[str, ...]:
    if abs(yaw) >= 25.0:
        return ("profile",)
    if abs(yaw) < 12.0 and abs(pitch) < 12.0:
        return ("frontal",)
    return ()


class _RenderedImage:
    """The zero-argument image callable of a synthetic sample (a class, so samples pickle)."""

    def __init__(self, params: FaceParams, seed: int, index: int, image_size: int) -> None:
        self.params, self.seed, self.index, self.image_size = params, seed, index, image_size

    def __call__(self) -> np.ndarray:
        rng = np.random.default_rng([self.seed, self.index, 1])
        return render_face(self.params, rng, self.image_size)[0]


class SyntheticFaces(_SequenceABC):
    """A deterministic, lazily rendered sequence of synthetic :class:`FaceSample` s (300-W 68 points).

    Sample ``i`` draws its geometry from ``default_rng([seed, i])`` and renders with
    ``default_rng([seed, i, 1])``; ``sample.image`` is a zero-argument callable returning the
    ``(S, S, 3)`` uint8 RGB image, so nothing is held in memory.

    Subset tags: ``"synthetic"`` always; ``"occluded"`` when any landmark is occluded;
    ``"frontal"`` for ``|yaw| < 12`` and ``|pitch| < 12`` degrees; ``"profile"`` for ``|yaw| >= 25``.

    Args:
        num_faces: number of samples.
        seed: dataset seed (different seeds give disjoint-looking datasets).
        image_size: side ``S`` of the rendered square images.
        occlusion_prob: probability that a face gets one or more occluders.
        **variation: any field of :class:`VariationRanges` (e.g. ``yaw=20.0``, ``face_size=(0.5, 0.6)``).
    """

    scheme = "300w"

    def __init__(
        self, num_faces: int, seed: int = 0, image_size: int = 256, occlusion_prob: float = 0.3, **variation: Any
    ) -> None:
        if isinstance(num_faces, bool) or not isinstance(num_faces, (int, np.integer)) or num_faces < 0:
            raise ValueError(f"num_faces must be a non-negative int, got {num_faces!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size < 16:
            raise ValueError(f"image_size must be an int >= 16, got {image_size!r}")
        if not 0.0 <= float(occlusion_prob) <= 1.0:
            raise ValueError(f"occlusion_prob must lie in [0, 1], got {occlusion_prob!r}")
        self.num_faces = int(num_faces)
        self.seed = int(seed)
        self.image_size = int(image_size)
        self.occlusion_prob = float(occlusion_prob)
        self.ranges = VariationRanges.from_kwargs(**variation)

    def __len__(self) -> int:
        return self.num_faces

    def _index(self, index: int) -> int:
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"SyntheticFaces indices must be integers or slices, not {type(index).__name__}")
        i = int(index)
        if i < 0:
            i += self.num_faces
        if not 0 <= i < self.num_faces:
            raise IndexError(f"index {index} out of range for SyntheticFaces of length {self.num_faces}")
        return i

    def params(self, index: int) -> FaceParams:
        """The geometry of sample ``index``."""
        i = self._index(index)
        return sample_params(np.random.default_rng([self.seed, i]), self.ranges, self.occlusion_prob)

    def render(self, index: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(image, landmarks, occluded)`` of sample ``index`` (see :func:`render_face`)."""
        i = self._index(index)
        return render_face(self.params(i), np.random.default_rng([self.seed, i, 1]), self.image_size)

    def __getitem__(self, index: Union[int, slice]) -> Union[FaceSample, List[FaceSample]]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self.num_faces))]
        i = self._index(index)
        params = self.params(i)
        S = self.image_size
        seed = self.seed
        occluded = occlusion_flags(params)
        subsets = ("synthetic",) + (("occluded",) if occluded.any() else ()) + _pose_tags(params.yaw, params.pitch)

        return FaceSample(
            image=_RenderedImage(params, seed, i, S),
            landmarks=landmarks_of(params, S),
            attributes=dict(params.attributes),
            subsets=subsets,
            name=f"synthetic_s{seed}_{i:06d}",
            occluded=occluded,
        )

    def __iter__(self) -> Iterator[FaceSample]:
        for i in range(self.num_faces):
            yield self[i]

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(num_faces={self.num_faces}, seed={self.seed}, image_size={self.image_size}, "
            f"occlusion_prob={self.occlusion_prob})"
        )
