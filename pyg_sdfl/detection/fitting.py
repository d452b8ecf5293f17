"""Fit a detector's mapping (detection -> landmark square) on annotated faces.

``pyg-sdfl fit-box-mapping --detector NAME`` calls :func:`fit_detector_mapping`: run the
detector on every training image, pair the detection that matches the annotated face
(:func:`pyg_sdfl.geometry.match_detection`), then fit

- a :class:`~pyg_sdfl.detection.mapping.BoxMapping` on the boxes (every detector; ``kind="box"``,
  the default), or
- with ``kind="keypoints"``, for a detector that gives five keypoints, a
  :class:`~pyg_sdfl.detection.keypoint_mapping.KeypointMapping` (roll and size from them; the centre
  from them or from the box, whichever fits better), with the box mapping inside as its fallback.

Why the box is the default (``benchmarks/first_crop.py``, the 160 px model shipped then, 2-core Xeon VM): on
300-W test/lfpw the keypoint mapping's first crop is a little better (yuface: first-pass NME 3.32%
against 3.34%), and after one re-crop both are at 3.29-3.30%; on turned (<= 60 degrees) and 0-40%
occluded copies of test faces, occluded keypoints give the first crop a wrong roll (yuface: median
error 8.7 degrees, 90th percentile 39) and after two passes the NME is 5.9% (keypoints) against
4.7% (box: an upright first crop, then re-crops that follow the predicted roll); MTCNN alike
(5.0% against 4.3%). docs/predict.md has the table.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence

import numpy as np

from pyg_sdfl.detection.base import Detector
from pyg_sdfl.detection.keypoint_mapping import fit_keypoint_mapping
from pyg_sdfl.detection.mapping import fit_box_mapping, match_annotated_faces
from pyg_sdfl.geometry import landmark_square

__all__ = ["detector_record", "fit_detector_mapping"]


def detector_record(detector: Any) -> Dict[str, Any]:
    """``{"name", **params}`` of a registered detector (what a mapping file stores)."""
    return {"name": str(getattr(detector, "name")), **dict(getattr(detector, "params", {}) or {})}


def fit_detector_mapping(
    samples: Sequence[Any],
    detector: Detector,
    inter_ocular: Sequence[int],
    data: str = "",
    trim: Optional[float] = 4.0,
    progress: bool = True,
    kind: str = "box",
) -> Any:
    """Detect every face of ``samples`` (:class:`~pyg_sdfl.data.sample.FaceSample`, one face per
    image), pair the matching detections and fit the mapping (module docstring).
    ``inter_ocular`` are the scheme's outer eye corners (for the faces' roll). ``kind``: "box" or
    "keypoints" (module docstring). ``info`` records the data, the counts, the detector's ms per
    image and the residuals."""
    if kind not in ("box", "keypoints"):
        raise ValueError(f"kind must be 'box' or 'keypoints', got {kind!r}")
    pairs, missed, seconds = match_annotated_faces(samples, detector, progress=progress)
    boxes = [d.box for d, _ in pairs]
    squares = [landmark_square(pts) for _, pts in pairs]
    with_points = [(d, pts) for d, pts in pairs if d.keypoints is not None]
    keypoints = [d.keypoints for d, _ in with_points]
    landmarks = [pts for _, pts in with_points]
    kp_boxes = [d.box for d, _ in with_points]
    if len(boxes) < 3:
        raise ValueError(f"the detector matched only {len(boxes)} of {len(samples)} faces: too few to fit a mapping")
    record = detector_record(detector)
    info = {"data": data, "faces_total": len(samples), "faces_unmatched": int(missed),
            "detector_ms_per_image": round(1000.0 * seconds / max(1, len(samples)), 2),
            "target": "landmark square: centre of the landmark box and its longer side (pyg_sdfl.geometry.landmark_square)"}
    box = fit_box_mapping(np.asarray(boxes), np.asarray(squares), trim=trim, detector=record, info=dict(info))
    if kind == "box":
        return box
    if len(keypoints) < max(3, len(boxes) // 2):
        raise ValueError(f"the detector gave keypoints on only {len(keypoints)} of {len(boxes)} matched faces: "
                         "fit a box mapping (kind='box')")
    left, right = int(inter_ocular[0]), int(inter_ocular[1])
    info["box_fit"] = {k: box.info[k] for k in ("faces_used", "residuals_used", "residuals_all_paired")}
    return fit_keypoint_mapping(np.asarray(keypoints), np.asarray(landmarks), left, right, trim=trim,
                                boxes=np.asarray(kp_boxes), box=box.to_dict(), detector=record, info=info)
