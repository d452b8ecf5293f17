"""A detector's five keypoints -> the face's oriented landmark square, by a similarity transform.

Detectors that give eye, nose and mouth points (MTCNN, libfacedetection) place the face far
better through them than through their box: a box's relation to the face changes with yaw and
roll, while five points fix position, scale and in-plane angle. :class:`KeypointMapping` holds a
**template**: the mean of the five keypoints in the frame of the face's upright landmark square
(centre at 0, side 1, eye line level). For a detection with keypoints ``k (5, 2)``:

    s, a, t = fit_similarity(template, k)         (k ~ s R(a) template + t, least squares)
    centre  = t + s R(a) c0                       (c0: the square's centre in template units)
    side    = s * side0                           (side0 = 1 unless refitted)
    angle   = a                                   (the face's roll)

Five points say little about where the jaw ends, so the centre can come from the box instead
(``centre_offset`` set): with the box's centre ``b`` and size ``z = sqrt(w h)``,

    centre  = b + z R(a) d                        (d: the mean offset in the upright face's frame)

which keeps the box's better centre (it sees the whole face) and turns it with the keypoints'
roll. :func:`fit_keypoint_mapping` fits both and keeps the centre with the smaller median error
on the fitting faces; both residuals are recorded.

Fitting (:func:`fit_keypoint_mapping`) on training faces paired with their detections: per face,
the roll ``r`` of its outer eye corners (:func:`~pyg_sdfl.geometry.line_angle`), its oriented
landmark square ``(c, side)`` at ``r`` (:func:`~pyg_sdfl.geometry.oriented_landmark_square`), and its
keypoints in that square's frame ``q = R(-r) (k - c) / side``; the template is the mean of ``q``
over the faces kept after a robust trim (faces whose ``q`` lies far from the median: wrong
matches), and ``d`` the mean of ``R(-r) (c - b) / z`` over the same faces. Boxes without keypoints
fall back to the :class:`~pyg_sdfl.detection.mapping.BoxMapping` fitted on the same pairs (``box``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Union

import numpy as np

from pyg_sdfl.detection.base import Detection
from pyg_sdfl.detection.mapping import BoxMapping, summarize_errors
from pyg_sdfl.geometry import fit_similarity, line_angle, oriented_landmark_square, rotate_points

__all__ = ["KeypointMapping", "fit_keypoint_mapping", "keypoint_errors"]


@dataclass(frozen=True)
class KeypointMapping:
    """Five keypoints -> oriented landmark square (module docstring).

    Attributes:
        template: ``(5, 2)`` mean keypoints in upright landmark-square units (centre 0, side 1).
        box: the box fallback (a :class:`~pyg_sdfl.detection.mapping.BoxMapping` as a dict) for
            detections without keypoints, or ``None``.
        centre_offset: ``d (2,)`` when the centre comes from the box (module docstring), else ``None``.
        detector: the detector's record (``{"name", **params}``) the mapping was fitted with.
        info: provenance and fit statistics.
    """

    template: np.ndarray
    box: Optional[Dict[str, Any]] = None
    detector: Dict[str, Any] = field(default_factory=dict)
    info: Dict[str, Any] = field(default_factory=dict)
    centre_offset: Optional[np.ndarray] = None
    kind = "keypoints"

    def __post_init__(self) -> None:
        t = np.asarray(self.template, dtype=np.float64)
        if t.shape != (5, 2) or not np.isfinite(t).all():
            raise ValueError(f"KeypointMapping.template must be a finite (5, 2) array, got {t.shape}")
        if np.ptp(t, axis=0).max() <= 0:
            raise ValueError("KeypointMapping.template points all coincide")
        object.__setattr__(self, "template", t)
        if self.centre_offset is not None:
            d = np.asarray(self.centre_offset, dtype=np.float64).reshape(-1)
            if d.shape != (2,) or not np.isfinite(d).all():
                raise ValueError(f"KeypointMapping.centre_offset must be 2 finite numbers, got {self.centre_offset!r}")
            object.__setattr__(self, "centre_offset", d)

    def oriented_squares(self, keypoints: Any, boxes: Optional[Any] = None) -> np.ndarray:
        """Keypoints ``(M, 5, 2)`` (and, when the centre comes from the box, their detections'
        boxes ``(M, 4)``) -> oriented landmark squares ``(M, 4)`` as ``cx, cy, side, angle``
        (degrees): ``side = s``, ``angle = a`` of the similarity that maps the template onto the
        keypoints, ``centre = t`` (the template's square is centred at 0 with side 1) or
        ``b + z R(a) d`` from the box."""
        kp = np.asarray(keypoints, dtype=np.float64).reshape(-1, 5, 2)
        out = np.zeros((len(kp), 4))
        for i, k in enumerate(kp):
            s, a, t = fit_similarity(self.template, k)
            out[i] = (t[0], t[1], s, a)
        if self.centre_offset is not None:
            if boxes is None:
                raise ValueError("this keypoint mapping takes its centre from the box: pass the detections' boxes")
            b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
            z = np.sqrt((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))
            offset = rotate_points(np.broadcast_to(self.centre_offset, (len(b), 1, 2)), out[:, 3])[:, 0]
            out[:, :2] = (b[:, :2] + b[:, 2:]) / 2.0 + z[:, None] * offset
        return out

    def crop_squares(self, detections: Sequence[Detection]) -> np.ndarray:
        """Detections -> oriented landmark squares ``(M, 4)`` (``cx, cy, side, angle``): from the
        keypoints where a detection has them, else from its box (the box fallback, angle 0)."""
        out = np.zeros((len(detections), 4))
        fallback = None if self.box is None else BoxMapping.from_dict(self.box)
        for i, d in enumerate(detections):
            if d.keypoints is not None:
                out[i] = self.oriented_squares(d.keypoints[None], d.box[None])[0]
            elif fallback is not None:
                out[i, :3] = fallback.squares(d.box[None])[0]
            else:
                raise ValueError("a detection without keypoints, and the keypoint mapping has no box fallback")
        return out

    def to_dict(self) -> Dict[str, Any]:
        return {"kind": self.kind, "template": self.template.round(6).tolist(), "box": self.box,
                "centre_offset": None if self.centre_offset is None else self.centre_offset.round(6).tolist(),
                "detector": dict(self.detector), "info": dict(self.info)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "KeypointMapping":
        if "template" not in d:
            raise ValueError("keypoint mapping is missing 'template'")
        offset = d.get("centre_offset")
        return cls(np.asarray(d["template"], dtype=np.float64), d.get("box"), dict(d.get("detector", {})),
                   dict(d.get("info", {})), None if offset is None else np.asarray(offset, dtype=np.float64))

    def save(self, path: Union[str, Path]) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path


def _upright_keypoints(keypoints: np.ndarray, landmarks: np.ndarray, left: int, right: int) -> np.ndarray:
    """Keypoints ``(M, 5, 2)`` in the frame of their face's upright landmark square (landmarks
    ``(M, N, 2)``, outer eye corners ``left``/``right``): ``q = R(-r) (k - c) / side``."""
    roll = line_angle(landmarks[:, left], landmarks[:, right])
    sq = oriented_landmark_square(landmarks, roll)
    return rotate_points(keypoints - sq[:, None, :2], -roll) / sq[:, 2, None, None]


def keypoint_errors(mapping: KeypointMapping, keypoints: Any, landmarks: Any, left: int, right: int,
                    boxes: Optional[Any] = None) -> Dict[str, np.ndarray]:
    """Per-face errors of the mapped oriented squares against the true ones (at the true roll):
    ``centre`` = centre distance / true side, ``side_ratio`` = mapped / true side, ``angle`` =
    mapped minus true roll in degrees. ``boxes (M, 4)``: the detections' boxes, for a mapping whose
    centre comes from the box."""
    lm = np.asarray(landmarks, dtype=np.float64)
    roll = line_angle(lm[:, left], lm[:, right])
    true = oriented_landmark_square(lm, roll)
    pred = mapping.oriented_squares(keypoints, boxes)
    dangle = (pred[:, 3] - roll + 180.0) % 360.0 - 180.0
    return {"centre": np.linalg.norm(pred[:, :2] - true[:, :2], axis=1) / true[:, 2],
            "side_ratio": pred[:, 2] / true[:, 2], "angle": dangle}


def fit_keypoint_mapping(
    keypoints: Any,
    landmarks: Any,
    left: int,
    right: int,
    trim: Optional[float] = 4.0,
    boxes: Optional[Any] = None,
    box: Optional[Mapping[str, Any]] = None,
    detector: Optional[Mapping[str, Any]] = None,
    info: Optional[Mapping[str, Any]] = None,
) -> KeypointMapping:
    """Fit the template on faces' detected keypoints ``(M, 5, 2)`` and their landmarks ``(M, N, 2)``
    (module docstring); ``left``/``right`` are the scheme's outer eye corners. With ``trim``, faces
    whose upright keypoints lie more than ``trim`` robust standard deviations (1.4826 x MAD) from
    the median in any coordinate are dropped first; the counts and residuals go to ``info``. With
    the detections' ``boxes (M, 4)``, the box-centred variant is fitted too and kept when its
    median centre error is smaller."""
    kp = np.asarray(keypoints, dtype=np.float64).reshape(-1, 5, 2)
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.ndim != 3 or lm.shape[0] != kp.shape[0]:
        raise ValueError(f"landmarks must have shape ({kp.shape[0]}, N, 2), got {lm.shape}")
    if len(kp) < 3:
        raise ValueError(f"need at least 3 faces with keypoints to fit a keypoint mapping, got {len(kp)}")
    q = _upright_keypoints(kp, lm, left, right).reshape(len(kp), 10)
    keep = np.ones(len(q), dtype=bool)
    if trim is not None:
        med = np.median(q, axis=0)
        mad = 1.4826 * np.median(np.abs(q - med), axis=0)
        keep = (np.abs(q - med) <= trim * np.maximum(mad, 1e-12)).all(axis=1)
    template = q[keep].mean(axis=0).reshape(5, 2)
    fit_info = dict(info or {})
    fit_info.update({"faces_paired": int(len(q)), "faces_used": int(keep.sum()), "faces_trimmed": int((~keep).sum()),
                     "trim_robust_sd": trim})
    box_dict = dict(box) if box is not None else None
    mapping = KeypointMapping(template, box_dict, dict(detector or {}), fit_info)
    b = None if boxes is None else np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if b is not None:
        roll = line_angle(lm[:, left], lm[:, right])
        true = oriented_landmark_square(lm, roll)
        z = np.sqrt((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))
        rel = rotate_points(((true[:, :2] - (b[:, :2] + b[:, 2:]) / 2.0) / z[:, None])[:, None], -roll)[:, 0]
        centred = KeypointMapping(template, box_dict, dict(detector or {}), fit_info, rel[keep].mean(axis=0))
        own = np.median(keypoint_errors(mapping, kp[keep], lm[keep], left, right)["centre"])
        from_box = np.median(keypoint_errors(centred, kp[keep], lm[keep], left, right, b[keep])["centre"])
        fit_info["centre_error_median"] = {"keypoints": float(own), "box": float(from_box)}
        fit_info["centre_from"] = "box" if from_box < own else "keypoints"
        if from_box < own:
            mapping = centred
    for name, sel in (("residuals_used", keep), ("residuals_all_paired", np.ones_like(keep))):
        err = keypoint_errors(mapping, kp[sel], lm[sel], left, right, None if b is None else b[sel])
        fit_info[name] = _summary(err)
    return mapping


def _summary(err: Mapping[str, np.ndarray]) -> Dict[str, float]:
    """:func:`~pyg_sdfl.detection.mapping.summarize_errors` plus the median and 90th percentile
    of the absolute angle error."""
    a = np.abs(err["angle"])
    return {**summarize_errors(err), "abs_angle_error_deg_median": float(np.median(a)),
            "abs_angle_error_deg_p90": float(np.percentile(a, 90))}
