"""The package's pixel and box convention, and every computation on boxes, squares and crops.

Coordinates
    Image coordinates are 0-based pixel *centres*: the pixel in row ``r``, column ``c`` has its
    centre at ``(x, y) = (c, r)`` and covers ``[c - 0.5, c + 0.5) x [r - 0.5, r + 0.5)``. So a point
    ``p`` lies in pixel ``floor(p + 0.5)`` (:func:`pixel_index`), per axis.

Boxes
    A box is four floats ``x0, y0, x1, y1`` in those coordinates (continuous: its area is
    ``(x1 - x0) (y1 - y0)``), stored as ``(4,)`` or ``(M, 4)`` float64 arrays (:func:`check_boxes`).
    A box covering pixel columns ``i..j`` runs from ``i - 0.5`` to ``j + 0.5``; OpenCV's rectangle
    ``(x, y, w, h)`` is thus ``(x - 0.5, y - 0.5, x + w - 0.5, y + h - 0.5)``.

Landmark box, landmark square, crop square
    The **landmark box** of a face is the tight box of its landmark points, ``min`` to ``max`` per
    axis (not grown by half a pixel) (:func:`landmark_box`). Its **landmark square** ``(cx, cy,
    side)`` is the box's centre and its longer side (:func:`landmark_square`, :func:`box_square`).
    The **crop square** is the landmark square with its side multiplied by ``crop_scale`` (1.2 in
    the paper's protocol) (:func:`crop_square`): the square every training, evaluation and
    inference crop is cut from.

Crop matrix
    A crop square ``(c, side)`` becomes an ``S x S`` crop through one ``(2, 3)`` affine matrix from
    image pixel centres to crop pixel centres (:func:`crop_matrix`); the square's edges
    ``c +- side / 2`` land on the crop's outer pixel edges ``-0.5`` and ``S - 0.5``. Augmentation
    (rotation, zoom, shift, mirror) is folded into the same matrix:

        k = scale * S / side
        R = [[cos a, sin a], [-sin a, cos a]]          (a > 0 turns the face counter-clockwise on screen)
        F = diag(-1, 1) if flip else I                 (mirror about the output's vertical centre line)
        p' = F k R (p - c) + (S - 1) / 2 + shift

    Image -> crop is :func:`apply_affine` with that matrix; crop -> image is
    :func:`crop_to_image` (batched) or :func:`apply_affine` with :func:`invert_affine`.

Pixel boxes and points in boxes
    The pixels of a box are those containing a point of it: columns ``floor(x0 + 0.5) ..
    floor(x1 + 0.5)``, rows likewise, clipped to the image, returned as a **pixel box**
    ``(c0, r0, c1, r1)`` of integers with exclusive ends (:func:`box_pixels`). A point is inside a
    pixel box when its pixel is: ``c0 <= floor(x + 0.5) < c1`` and ``r0 <= floor(y + 0.5) < r1``
    (:func:`points_in_pixel_box`); so every landmark of a face lies in the pixels of its landmark
    box. Half pixels go up: ``x = 2.5`` is in column 3.

Matching detections to a face
    :func:`match_detection`: a detection belongs to an annotated face when its centre lies in the
    face box (edges included) and its IoU with the face box is at least ``min_iou``; among those,
    the highest IoU wins (the first on ties).

Oriented squares (in-plane rotation)
    A face turned in the image plane by ``roll`` degrees (the angle of the line from the image-left
    to the image-right outer eye corner, :func:`line_angle`, ``atan2(dy, dx)`` with ``y`` down: a
    positive roll turns the face clockwise on screen) has an **oriented landmark square**
    ``(cx, cy, side)`` at that angle (:func:`oriented_landmark_square`): rotate the points by
    ``-roll`` (:func:`rotate_points`), take their landmark square there, and turn its centre back.
    ``roll = 0`` is the landmark square. ``crop_matrix(c, crop_scale * side, S, rotation_deg=roll)``
    crops it upright.

Nothing here imports another module of the package.
"""
from __future__ import annotations

import math
from typing import Any, Optional, Sequence, Tuple

import numpy as np

__all__ = [
    "check_boxes",
    "landmark_box",
    "box_square",
    "landmark_square",
    "crop_square",
    "square_to_box",
    "box_iou",
    "match_detection",
    "crop_matrix",
    "check_affine",
    "apply_affine",
    "invert_affine",
    "crop_to_image",
    "pixel_index",
    "box_pixels",
    "points_in_pixel_box",
    "line_angle",
    "rotate_points",
    "oriented_landmark_square",
    "fit_similarity",
    "oriented_square_corners",
]

Square = Tuple[float, float, float]
PixelBox = Tuple[int, int, int, int]


# ----------------------------------------------------------------------------- boxes
def check_boxes(boxes: Any, where: str = "boxes", allow_empty: bool = False) -> np.ndarray:
    """Validate boxes: ``(M, 4)`` float64 ``x0, y0, x1, y1`` (one ``(4,)`` box becomes ``(1, 4)``).

    They must be finite, with ``x1 > x0`` and ``y1 > y0`` (``x1 >= x0``, ``y1 >= y0`` with
    ``allow_empty``); ``ValueError`` starting with ``where`` otherwise.
    """
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"{where}: boxes must have shape (M, 4) as x0, y0, x1, y1, got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{where}: boxes contain NaN or infinite values")
    if allow_empty:
        bad = np.flatnonzero((arr[:, 2] < arr[:, 0]) | (arr[:, 3] < arr[:, 1]))
        rule = "x1 < x0 or y1 < y0"
    else:
        bad = np.flatnonzero((arr[:, 2] <= arr[:, 0]) | (arr[:, 3] <= arr[:, 1]))
        rule = "x1 <= x0 or y1 <= y0"
    if bad.size:
        raise ValueError(f"{where}: box {arr[bad[0]].tolist()} has {rule} (expected x0, y0, x1, y1)")
    return arr


def landmark_box(landmarks: Any) -> np.ndarray:
    """Tight box of landmark points: ``(N, 2)`` -> ``(4,)``, ``(B, N, 2)`` -> ``(B, 4)``, float64.

    ``x0, y0 = min over points``, ``x1, y1 = max over points``. ``ValueError`` for another shape,
    no points, or non-finite coordinates.
    """
    pts = np.asarray(landmarks, dtype=np.float64)
    if pts.ndim not in (2, 3) or pts.shape[-1] != 2 or pts.shape[-2] == 0:
        raise ValueError(f"landmarks must have shape (N, 2) or (B, N, 2) with N > 0, got {pts.shape}")
    if not np.isfinite(pts).all():
        raise ValueError("landmarks contain NaN or infinite coordinates")
    return np.concatenate([pts.min(axis=-2), pts.max(axis=-2)], axis=-1)


def box_square(boxes: Any) -> np.ndarray:
    """Boxes ``(M, 4)`` -> squares ``(M, 3)``: ``cx = (x0 + x1) / 2``, ``cy = (y0 + y1) / 2``,
    ``side = max(x1 - x0, y1 - y0)`` (the landmark square of a landmark box). Empty boxes are
    allowed (side 0 only when both sides are 0)."""
    b = check_boxes(boxes, "box_square", allow_empty=True)
    return np.stack([(b[:, 0] + b[:, 2]) / 2.0, (b[:, 1] + b[:, 3]) / 2.0,
                     np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])], axis=1)


def landmark_square(landmarks: Any) -> Square:
    """``(cx, cy, side)`` of one face's landmarks ``(N, 2)``: the centre of the landmark box and its
    longer side, as Python floats. ``ValueError`` when all points coincide (side 0)."""
    pts = np.asarray(landmarks, dtype=np.float64)
    if pts.ndim != 2:
        raise ValueError(f"landmarks must have shape (N, 2) with N > 0, got {pts.shape}")
    cx, cy, side = box_square(landmark_box(pts))[0]
    if side <= 0:
        raise ValueError("landmarks are all at one point: the crop box has zero size")
    return float(cx), float(cy), float(side)


def crop_square(landmarks: Any, crop_scale: float = 1.2) -> Square:
    """The crop square ``(cx, cy, crop_scale * side)`` of one face's landmarks ``(N, 2)``, where
    ``(cx, cy, side)`` is its :func:`landmark_square` (the paper's protocol: ``crop_scale = 1.2``)."""
    try:
        scale = float(crop_scale)
    except (TypeError, ValueError):
        raise ValueError(f"crop scale must be a positive number, got {crop_scale!r}") from None
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"crop scale must be a positive number, got {crop_scale!r}")
    cx, cy, side = landmark_square(landmarks)
    return cx, cy, float(scale * side)


def square_to_box(squares: Any) -> np.ndarray:
    """Squares ``(..., 3)`` as ``cx, cy, side`` -> boxes ``(..., 4)``: ``c -+ side / 2``."""
    sq = np.asarray(squares, dtype=np.float64)
    if sq.ndim == 0 or sq.shape[-1] != 3:
        raise ValueError(f"squares must have shape (..., 3) as cx, cy, side, got {sq.shape}")
    half = sq[..., 2:] / 2.0
    return np.concatenate([sq[..., :2] - half, sq[..., :2] + half], axis=-1)


def box_iou(a: Any, b: Any) -> np.ndarray:
    """Intersection over union ``(M, K)`` of boxes ``a (M, 4)`` and ``b (K, 4)``.

    Continuous areas: ``inter = prod(clip(min(a1, b1) - max(a0, b0), 0))``, ``IoU = inter / (area_a +
    area_b - inter)``. Empty boxes are allowed; a pair whose union is 0 gets 0.
    """
    a = check_boxes(a, "box_iou a", allow_empty=True)
    b = check_boxes(b, "box_iou b", allow_empty=True)
    lo = np.maximum(a[:, None, :2], b[None, :, :2])
    hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(hi - lo, 0, None).prod(axis=-1)
    area_a = (a[:, 2:] - a[:, :2]).prod(axis=-1)
    area_b = (b[:, 2:] - b[:, :2]).prod(axis=-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def match_detection(face_box: Any, detection_boxes: Any, min_iou: float = 0.0) -> Optional[int]:
    """Index of the detection that belongs to the annotated face, or ``None``.

    Args:
        face_box: ``(4,)`` the face's box (its landmark box).
        detection_boxes: ``(K, 4)`` (or a sequence of ``(4,)``) detector boxes, ``K = 0`` allowed.
        min_iou: the smallest IoU with ``face_box`` that counts.

    The rule: candidates are the detections whose centre ``((x0 + x1) / 2, (y0 + y1) / 2)`` lies in
    ``face_box`` (edges included) and whose IoU with it is ``>= min_iou``; the candidate with the
    highest IoU wins (the first one on ties: detectors list the most confident first).
    """
    face = check_boxes(face_box, "face box")
    if face.shape[0] != 1:
        raise ValueError(f"face box: expected one box, got {face.shape[0]}")
    boxes = np.asarray(detection_boxes, dtype=np.float64).reshape(-1, 4)
    if boxes.shape[0] == 0:
        return None
    iou = box_iou(boxes, face)[:, 0]
    fb = face[0]
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2.0
    inside = ((centres[:, 0] >= fb[0]) & (centres[:, 0] <= fb[2]) & (centres[:, 1] >= fb[1])
              & (centres[:, 1] <= fb[3]))
    ok = inside & (iou >= min_iou)
    if not ok.any():
        return None
    return int(np.argmax(np.where(ok, iou, -1.0)))


# ----------------------------------------------------------------------------- crops
def check_affine(M: Any) -> np.ndarray:
    """A ``(2, 3)`` finite float64 affine matrix; ``ValueError`` otherwise."""
    M = np.asarray(M, dtype=np.float64)
    if M.shape != (2, 3):
        raise ValueError(f"affine matrix must have shape (2, 3), got {M.shape}")
    if not np.isfinite(M).all():
        raise ValueError("affine matrix has non-finite entries")
    return M


def crop_matrix(
    center: Sequence[float],
    side: float,
    out_size: int,
    rotation_deg: float = 0.0,
    scale: float = 1.0,
    shift: Sequence[float] = (0.0, 0.0),
    flip: bool = False,
) -> np.ndarray:
    """The ``(2, 3)`` float64 matrix mapping image pixel centres to crop pixel centres.

    The square of side ``side`` centred on ``center`` fills the ``out_size x out_size`` crop
    (see the module docstring for the formula). The augmentation arguments default to none:
    ``rotation_deg`` turns the face, ``scale > 1`` zooms in (the face grows), ``shift`` is in output
    pixels, ``flip`` mirrors the output horizontally (landmark indices must then be permuted:
    :func:`pyg_sdfl.data.transforms.warp_sample` does it).
    """
    if not (side > 0 and math.isfinite(side)):
        raise ValueError(f"crop side must be positive and finite, got {side!r}")
    if int(out_size) != out_size or out_size <= 0:
        raise ValueError(f"out_size must be a positive integer, got {out_size!r}")
    if not (scale > 0 and math.isfinite(scale)):
        raise ValueError(f"scale must be positive and finite, got {scale!r}")
    c = np.asarray(center, dtype=np.float64).reshape(-1)
    t = np.asarray(shift, dtype=np.float64).reshape(-1)
    if c.shape != (2,) or t.shape != (2,) or not (np.isfinite(c).all() and np.isfinite(t).all()):
        raise ValueError(f"center and shift must be 2 finite numbers, got {center!r} and {shift!r}")
    a = math.radians(rotation_deg)
    k = scale * out_size / side
    A = k * np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])
    if flip:
        A[0] = -A[0]
    offset = (out_size - 1) / 2.0 + t - A @ c
    return np.concatenate([A, offset[:, None]], axis=1)


def apply_affine(points: Any, M: Any) -> np.ndarray:
    """``p' = M[:, :2] p + M[:, 2]`` for points ``(..., 2)`` and one matrix ``(2, 3)``; returns the
    same shape (float64). With a :func:`crop_matrix`: image -> crop coordinates."""
    M = check_affine(M)
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim == 0 or pts.shape[-1] != 2:
        raise ValueError(f"points must have shape (..., 2), got {pts.shape}")
    return pts @ M[:, :2].T + M[:, 2]


def invert_affine(M: Any) -> np.ndarray:
    """The inverse ``(2, 3)`` map of ``M``: ``[A^-1, -A^-1 t]`` (crop -> image for a crop matrix)."""
    M = check_affine(M)
    A = M[:, :2]
    if abs(np.linalg.det(A)) < 1e-12:
        raise ValueError("affine matrix is singular")
    A_inv = np.linalg.inv(A)
    return np.concatenate([A_inv, (-A_inv @ M[:, 2])[:, None]], axis=1)


def crop_to_image(points: np.ndarray, matrices: np.ndarray) -> np.ndarray:
    """Map crop-pixel points ``(B, N, 2)`` back to the image with the inverse of each
    image -> crop affine ``(B, 2, 3)``: ``p = A^-1 (q - t)``; returns ``(B, N, 2)``."""
    linear = matrices[:, :, :2]
    shift = matrices[:, :, 2]
    inverse = np.linalg.inv(linear)
    return np.einsum("bij,bnj->bni", inverse, points - shift[:, None, :])


# ----------------------------------------------------------------------------- pixels
def pixel_index(points: Any) -> np.ndarray:
    """The pixel each point lies in: ``floor(p + 0.5)`` per coordinate, int64, same shape as
    ``points`` (``(..., 2)`` gives ``column, row``)."""
    return np.floor(np.asarray(points, dtype=np.float64) + 0.5).astype(np.int64)


def _check_size(size: int) -> int:
    if isinstance(size, bool) or int(size) != size or size <= 0:
        raise ValueError(f"image size must be a positive integer, got {size!r}")
    return int(size)


def box_pixels(box: Sequence[float], size: int) -> PixelBox:
    """The pixels of ``box = (x0, y0, x1, y1)`` in a ``size x size`` image as a pixel box
    ``(c0, r0, c1, r1)``, exclusive ends: ``c0 = floor(x0 + 0.5)``, ``c1 = floor(x1 + 0.5) + 1``
    (likewise rows), clipped to the image. A box with ``x1 <= x0`` or ``y1 <= y0``, non-finite
    corners, or no pixel inside the image raises ``ValueError``."""
    size = _check_size(size)
    try:
        x0, y0, x1, y1 = (float(v) for v in box)
    except (TypeError, ValueError):
        raise ValueError(f"box must be 4 numbers (x0, y0, x1, y1), got {box!r}") from None
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        raise ValueError(f"box has non-finite corners: {box!r}")
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"degenerate face box {box!r}: need x1 > x0 and y1 > y0")
    c0, r0 = max(0, math.floor(x0 + 0.5)), max(0, math.floor(y0 + 0.5))
    c1, r1 = min(size, math.floor(x1 + 0.5) + 1), min(size, math.floor(y1 + 0.5) + 1)
    if c1 <= c0 or r1 <= r0:
        raise ValueError(f"face box {box!r} has no pixel inside the {size}x{size} image")
    return c0, r0, c1, r1


def points_in_pixel_box(points: Any, pixel_box: Sequence[int]) -> np.ndarray:
    """``(N,)`` bool: point ``(N, 2)`` whose pixel (:func:`pixel_index`) lies in the pixel box
    ``(c0, r0, c1, r1)`` (integers, exclusive ends): ``c0 <= floor(x + 0.5) < c1`` and
    ``r0 <= floor(y + 0.5) < r1``."""
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"points must have shape (N, 2), got {pts.shape}")
    if not np.isfinite(pts).all():
        raise ValueError("points contain NaN or infinite coordinates")
    c0, r0, c1, r1 = (int(v) for v in pixel_box)
    col, row = pixel_index(pts).T
    return (col >= c0) & (col < c1) & (row >= r0) & (row < r1)


# ----------------------------------------------------------------------------- rotation
def line_angle(start: Any, end: Any) -> np.ndarray:
    """Angle in degrees of the line ``start -> end`` (points ``(..., 2)``): ``atan2(dy, dx)``, image
    axes (``y`` down, so a positive angle is clockwise on screen); shape ``(...)``."""
    a = np.asarray(start, dtype=np.float64)
    b = np.asarray(end, dtype=np.float64)
    d = b - a
    return np.degrees(np.arctan2(d[..., 1], d[..., 0]))


def rotate_points(points: Any, angle_deg: Any) -> np.ndarray:
    """Turn points ``(..., N, 2)`` about the origin by ``angle_deg`` (scalar or ``(...)``, image axes):
    ``p' = R p`` with ``R = [[cos a, -sin a], [sin a, cos a]]`` (the direction ``(1, 0)`` goes to the
    direction of :func:`line_angle` ``a``)."""
    pts = np.asarray(points, dtype=np.float64)
    a = np.radians(np.asarray(angle_deg, dtype=np.float64))
    a = a.reshape(a.shape + (1,) * max(0, pts.ndim - 1 - a.ndim))  # one angle per point set
    c, s = np.cos(a), np.sin(a)
    x, y = pts[..., 0], pts[..., 1]
    return np.stack([c * x - s * y, s * x + c * y], axis=-1)


def oriented_landmark_square(landmarks: Any, angle_deg: Any = 0.0) -> np.ndarray:
    """Landmark squares of faces ``(N, 2)`` or ``(B, N, 2)`` in frames turned by ``angle_deg``
    (scalar or ``(B,)``): ``(3,)`` or ``(B, 3)`` as ``cx, cy, side``.

    ``u = R(-a) p``; the tight box of ``u`` gives the centre ``c_u`` and the longer side; the
    centre returned is ``R(a) c_u``. With ``angle_deg = 0`` this is :func:`landmark_square`.
    """
    pts = np.asarray(landmarks, dtype=np.float64)
    single = pts.ndim == 2
    pts = pts[None] if single else pts
    angle = np.broadcast_to(np.asarray(angle_deg, dtype=np.float64), pts.shape[:1])
    box = landmark_box(rotate_points(pts, -angle))
    centre_u = (box[:, :2] + box[:, 2:]) / 2.0
    side = np.maximum(box[:, 2] - box[:, 0], box[:, 3] - box[:, 1])
    centre = rotate_points(centre_u[:, None, :], angle)[:, 0]
    out = np.concatenate([centre, side[:, None]], axis=1)
    return out[0] if single else out


def oriented_square_corners(squares: Any, angle_deg: Any) -> np.ndarray:
    """Corners ``(M, 4, 2)`` of squares ``(M, 3)`` (``cx, cy, side``) turned by ``angle_deg``
    (``(M,)`` or scalar), in the order top-left, top-right, bottom-right, bottom-left of the
    upright face."""
    sq = np.asarray(squares, dtype=np.float64).reshape(-1, 3)
    h = sq[:, 2:3, None] / 2.0
    unit = np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])[None]
    angle = np.broadcast_to(np.asarray(angle_deg, dtype=np.float64), sq.shape[:1])
    return rotate_points(unit * h, angle) + sq[:, None, :2]


def fit_similarity(src: Any, dst: Any) -> Tuple[float, float, np.ndarray]:
    """Least-squares similarity ``dst ~ s R(a) src + t`` of point sets ``(K, 2)``, ``K >= 2``
    (Umeyama 1991, without reflection): returns ``(s, a in degrees, t (2,))``.

    With centred points ``x = src - mean``, ``y = dst - mean``: ``a = atan2(sum(x ^ y), sum(x . y))``
    (``^`` the 2-D cross product), ``s = sqrt(sum(x . y)^2 + sum(x ^ y)^2) / sum(|x|^2)``,
    ``t = mean(dst) - s R(a) mean(src)``.
    """
    p = np.asarray(src, dtype=np.float64)
    q = np.asarray(dst, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 2 or p.shape != q.shape or p.shape[0] < 2:
        raise ValueError(f"fit_similarity needs two (K, 2) point sets with K >= 2, got {p.shape} and {q.shape}")
    if not (np.isfinite(p).all() and np.isfinite(q).all()):
        raise ValueError("fit_similarity: points contain NaN or infinite values")
    mp, mq = p.mean(axis=0), q.mean(axis=0)
    x, y = p - mp, q - mq
    norm = float((x ** 2).sum())
    if norm <= 0:
        raise ValueError("fit_similarity: the source points all coincide")
    dot = float((x * y).sum())
    cross = float((x[:, 0] * y[:, 1] - x[:, 1] * y[:, 0]).sum())
    angle = math.degrees(math.atan2(cross, dot))
    scale = math.hypot(dot, cross) / norm
    t = mq - scale * rotate_points(mp, angle)
    return scale, angle, t
