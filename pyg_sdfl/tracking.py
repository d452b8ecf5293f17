"""Landmarks through a video: detect once, then follow each face with crops from its last landmarks.

:class:`FaceTracker` runs the Landmarker's detector (and its re-crop passes) on the first frame,
then, on each next frame, crops every tracked face at the oriented landmark square of its
previous landmarks and predicts once. That is one model pass per face per frame instead of a
detector run plus ``passes`` model passes.

**The loss signal** is the re-crop's disagreement, and it costs nothing: the landmarks predicted
in the crop define the square the *next* crop would take. If the face is where the crop expected
it, that square agrees with the crop's own; if not (the face moved fast, or the crop holds no
face), they disagree. With ``c, side, a`` the crop's square and ``c', side', a'`` the prediction's:

    shift  = |c' - c| / side          scale = |ln(side' / side)|          turn = |a' - a|

A face whose ``shift``, ``scale`` or ``turn`` exceeds its limit gets another pass from the new
square (a re-crop), up to ``max_recrops`` of them; if it still disagrees, the track is lost and the
detector runs on that frame. Two re-crops by default: a fast turn can put the face so far off the
first crop that the first re-crop fixes the centre but still corrects the roll by more than
``max_turn`` (measured: a 300-W test face moving 28% of the crop's side between two frames, the
256 px model's second pass at 2.4% NME but 16.7 degrees from the first pass's roll).
Every ``redetect_every`` frames the detector also runs, so that new faces enter and a track that
drifted onto background ends. When it finds nothing there, a tracked face is kept only if it
passes a stricter check: one more pass from its own prediction must move the landmarks by at most
``max_change`` of the inter-ocular distance (a real face converges to well under 1%; a crop of
background does not converge: measured 10% on a blank wall and 45% on noise with the shipped model).
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, Iterator, List

import numpy as np

from pyg_sdfl.data.sample import as_rgb_uint8
from pyg_sdfl.geometry import landmark_box, square_to_box

__all__ = ["FaceTracker", "square_disagreement"]


def square_disagreement(before: np.ndarray, after: np.ndarray) -> Dict[str, np.ndarray]:
    """How far oriented squares ``after (M, 4)`` are from ``before (M, 4)`` (``cx, cy, side,
    angle``): ``shift = |c' - c| / side``, ``scale = |ln(side' / side)|``, ``turn = |a' - a|`` in
    degrees (wrapped to 0..180); each ``(M,)``."""
    b = np.asarray(before, dtype=np.float64).reshape(-1, 4)
    a = np.asarray(after, dtype=np.float64).reshape(-1, 4)
    turn = np.abs((a[:, 3] - b[:, 3] + 180.0) % 360.0 - 180.0)
    return {"shift": np.linalg.norm(a[:, :2] - b[:, :2], axis=1) / b[:, 2],
            "scale": np.abs(np.log(a[:, 2] / b[:, 2])), "turn": turn}


class FaceTracker:
    """Follow the faces of a frame sequence with a :class:`~pyg_sdfl.inference.Landmarker`.

    Args:
        landmarker: the model, detector and crop settings.
        max_shift: largest ``shift`` (centre move over the square's side) accepted without a re-crop.
        max_scale: largest ``scale`` (``|ln|`` of the side ratio) accepted without a re-crop.
        max_turn: largest ``turn`` in degrees accepted without a re-crop.
        redetect_every: run the detector every this many frames as well (0: only when lost).
        max_change: the stricter check's limit (mean landmark move over the inter-ocular distance).
        max_recrops: re-crops a disagreeing face gets on one frame before its track is lost (>= 1).

    ``stats`` (also :attr:`Landmarker.last_track_stats`) counts ``frames``, ``detector_runs``,
    ``lost`` (tracks given up), ``recrops`` (extra passes) and ``faces`` (face-frames returned).
    """

    def __init__(self, landmarker: Any, max_shift: float = 0.15, max_scale: float = 0.15, max_turn: float = 15.0,
                 redetect_every: int = 10, max_change: float = 0.03, max_recrops: int = 2) -> None:
        for name, value in (("max_shift", max_shift), ("max_scale", max_scale), ("max_turn", max_turn),
                            ("max_change", max_change)):
            if not (isinstance(value, (int, float)) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        for name, value, least in (("redetect_every", redetect_every, 0), ("max_recrops", max_recrops, 1)):
            if isinstance(value, bool) or int(value) != value or value < least:
                raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
        self.landmarker = landmarker
        self.max_shift, self.max_scale, self.max_turn = float(max_shift), float(max_scale), float(max_turn)
        self.redetect_every = int(redetect_every)
        self.max_change = float(max_change)
        self.max_recrops = int(max_recrops)
        self.stats: Dict[str, Any] = {"frames": 0, "detector_runs": 0, "lost": 0, "recrops": 0, "faces": 0}

    def _agrees(self, before: np.ndarray, after: np.ndarray) -> np.ndarray:
        d = square_disagreement(before, after)
        return (d["shift"] <= self.max_shift) & (d["scale"] <= self.max_scale) & (d["turn"] <= self.max_turn)

    def _detect(self, image: np.ndarray) -> List[Any]:
        self.stats["detector_runs"] += 1
        return self.landmarker.predict_batch([image])[0]

    def _follow(self, image: np.ndarray, tracks: List[Any]) -> List[Any]:
        """One pass per tracked face from its previous landmarks; up to ``max_recrops`` more where
        the prediction disagrees with its crop; ``[]`` if any face still disagrees (lost)."""
        from pyg_sdfl.inference import Face

        lm = self.landmarker
        prev = np.stack([f.landmarks for f in tracks])
        squares = lm.squares_from_landmarks(prev)
        owners = np.zeros(len(tracks), dtype=int)
        landmarks = lm.landmarks_in_squares([image], owners, squares)
        after = lm.squares_from_landmarks(landmarks)
        bad = np.flatnonzero(~self._agrees(squares, after))
        for _ in range(self.max_recrops):
            if not len(bad):
                break
            self.stats["recrops"] += int(len(bad))
            again = lm.landmarks_in_squares([image], owners[bad], after[bad])
            landmarks[bad], squares[bad] = again, after[bad]
            after[bad] = lm.squares_from_landmarks(again)
            bad = bad[~self._agrees(squares[bad], after[bad])]
        if len(bad):
            self.stats["lost"] += int(len(bad))
            return []
        crop_boxes = square_to_box(squares[:, :3] * np.array([1.0, 1.0, lm.crop_scale]))
        return [Face(box=landmark_box(landmarks[i]), landmarks=landmarks[i], score=float(f.score),
                     crop_box=crop_boxes[i], crop_angle=float(squares[i, 3]))
                for i, f in enumerate(tracks)]

    def _verify(self, image: np.ndarray, tracks: List[Any]) -> List[Any]:
        """:meth:`_follow`, then the stricter check on each face: faces that fail it end."""
        faces = self._follow(image, tracks)
        if not faces:
            return []
        lm = self.landmarker
        landmarks = np.stack([f.landmarks for f in faces])
        again = lm.landmarks_in_squares([image], np.zeros(len(faces), dtype=int), lm.squares_from_landmarks(landmarks))
        change = lm.recrop_change(landmarks, again)
        kept = [f for f, c in zip(faces, change) if c <= self.max_change]
        self.stats["lost"] += len(faces) - len(kept)
        return kept

    def track(self, frames: Iterable[np.ndarray]) -> Iterator[List[Any]]:
        """One list of :class:`~pyg_sdfl.inference.Face` per frame, in order. On tracked frames a
        face's ``box`` is the landmark box of its prediction and its ``score`` the score of the
        detection that started the track."""
        tracks: List[Any] = []
        for index, frame in enumerate(frames):
            image = as_rgb_uint8(frame, f"frame {index}")
            self.stats["frames"] += 1
            periodic = self.redetect_every and index % self.redetect_every == 0 and index > 0
            if tracks and not periodic:
                faces = self._follow(image, tracks)
                if not faces:  # lost: find the faces again on this frame
                    faces = self._detect(image)
            else:
                faces = self._detect(image)
                if not faces and periodic and tracks:  # the detector misses what the tracker follows
                    faces = self._verify(image, tracks)
            tracks = faces
            self.stats["faces"] += len(faces)
            yield faces
