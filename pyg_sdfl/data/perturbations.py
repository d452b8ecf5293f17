"""Harder versions of annotated faces with known landmarks: in-plane rotation, occlusion, motion.

Used by the detector benchmark (faces rotated to +-60 degrees and 0-40% occluded) and the video
benchmark (a face moved, turned and scaled along a known path). Each function returns the new
image and the landmarks carried through the same map, so the ground truth stays exact.

The affine maps follow :mod:`pyg_sdfl.geometry` (pixel centres): a point ``p`` goes to ``A p + t``
and ``cv2.warpAffine`` with that ``(2, 3)`` matrix samples the image the same way.
"""
from __future__ import annotations

import math
from typing import Iterator, Tuple

import cv2
import numpy as np

from pyg_sdfl.geometry import apply_affine, landmark_box

__all__ = ["similarity_matrix", "warp_face", "rotate_face", "occlude_face", "moving_face_frames"]


def similarity_matrix(centre: Tuple[float, float], angle_deg: float, scale: float,
                      target: Tuple[float, float]) -> np.ndarray:
    """``(2, 3)`` map turning the image by ``angle_deg`` (positive: counter-clockwise on screen)
    and scaling by ``scale`` about ``centre``, which lands on ``target``:
    ``p' = scale R(-angle) (p - centre) + target`` (image axes, ``y`` down)."""
    a = math.radians(angle_deg)
    A = scale * np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])
    t = np.asarray(target, dtype=np.float64) - A @ np.asarray(centre, dtype=np.float64)
    return np.concatenate([A, t[:, None]], axis=1)


def warp_face(image: np.ndarray, landmarks: np.ndarray, matrix: np.ndarray, size: Tuple[int, int],
              border: int = cv2.BORDER_REPLICATE) -> Tuple[np.ndarray, np.ndarray]:
    """Warp ``image`` (``(H, W, 3)`` uint8) by ``matrix`` into a ``size = (width, height)`` canvas
    (bilinear; outside the source the edge pixels are repeated: no black wedge outlines the source,
    and no mirrored copy of the face appears, as a reflected border would make) and carry
    ``landmarks (N, 2)`` through the same map."""
    out = cv2.warpAffine(image, matrix, (int(size[0]), int(size[1])), flags=cv2.INTER_LINEAR, borderMode=border)
    return out, apply_affine(landmarks, matrix)


def rotate_face(image: np.ndarray, landmarks: np.ndarray, angle_deg: float) -> Tuple[np.ndarray, np.ndarray]:
    """The image turned by ``angle_deg`` about the face's landmark-box centre, on a canvas grown
    so that none of the original is cut (corners filled by :func:`warp_face`); returns
    ``(image, landmarks)``."""
    H, W = image.shape[:2]
    box = landmark_box(landmarks)
    centre = ((box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0)
    a = math.radians(angle_deg)
    c, s = abs(math.cos(a)), abs(math.sin(a))
    new_w, new_h = int(math.ceil(W * c + H * s)), int(math.ceil(W * s + H * c))
    M0 = similarity_matrix(centre, angle_deg, 1.0, (0.0, 0.0))
    corners = apply_affine(np.array([[-0.5, -0.5], [W - 0.5, -0.5], [W - 0.5, H - 0.5], [-0.5, H - 0.5]]), M0)
    shift = -corners.min(axis=0) - 0.5
    M = M0.copy()
    M[:, 2] += shift
    return warp_face(image, landmarks, M, (new_w, new_h))


def occlude_face(image: np.ndarray, landmarks: np.ndarray, fraction: float,
                 rng: np.random.Generator) -> np.ndarray:
    """A copy of ``image`` with a random rectangle covering ``fraction`` (0..1) of the face's
    landmark-box area, of aspect ratio 0.5..2, placed at random inside the box, filled with
    uniform noise (no flat colour a detector could learn to skip). ``fraction = 0``: a copy."""
    out = image.copy()
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must lie in [0, 1], got {fraction}")
    if fraction == 0:
        return out
    x0, y0, x1, y1 = landmark_box(landmarks)
    bw, bh = x1 - x0, y1 - y0
    area = fraction * bw * bh
    aspect = math.exp(rng.uniform(math.log(0.5), math.log(2.0)))
    w = min(bw, math.sqrt(area * aspect))
    h = min(bh, area / w)
    left = x0 + rng.uniform(0, max(0.0, bw - w))
    top = y0 + rng.uniform(0, max(0.0, bh - h))
    c0, r0 = max(0, int(round(left))), max(0, int(round(top)))
    c1, r1 = min(out.shape[1], int(round(left + w))), min(out.shape[0], int(round(top + h)))
    if c1 > c0 and r1 > r0:
        out[r0:r1, c0:c1] = rng.integers(0, 256, size=(r1 - r0, c1 - c0, 3), dtype=np.uint8)
    return out


def moving_face_frames(image: np.ndarray, landmarks: np.ndarray, frames: int = 90,
                       size: Tuple[int, int] = (640, 480), max_angle: float = 25.0,
                       scale_range: Tuple[float, float] = (0.7, 1.2), radius: float = 0.25,
                       face_fraction: float = 0.35) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
    """A video of one face along a known smooth path: frame ``i`` (phase ``u = 2 pi i / frames``)
    places the landmark-box centre at ``(W/2 + radius W (cos u - 1/2), H/2 + radius H sin(2u) / 2)``, turns
    the face by ``max_angle sin u`` degrees and scales it between ``scale_range`` (times the
    scale at which the landmark box spans ``face_fraction`` of the frame height). Yields
    ``(frame (H, W, 3) uint8, landmarks (N, 2))``."""
    W, H = int(size[0]), int(size[1])
    box = landmark_box(landmarks)
    centre = ((box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0)
    base = face_fraction * H / max(box[2] - box[0], box[3] - box[1])
    lo, hi = scale_range
    for i in range(int(frames)):
        u = 2.0 * math.pi * i / frames
        target = (W / 2.0 + radius * W * math.cos(u) - 0.5 * radius * W, H / 2.0 + 0.5 * radius * H * math.sin(2 * u))
        scale = base * (lo + (hi - lo) * 0.5 * (1.0 - math.cos(u)))
        M = similarity_matrix(centre, max_angle * math.sin(u), scale, target)
        yield warp_face(image, landmarks, M, (W, H))
