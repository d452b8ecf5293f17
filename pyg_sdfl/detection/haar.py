"""OpenCV's Haar cascade face detector (Viola-Jones), the default detector of the Landmarker.

Its boxes are not landmark boxes: :class:`pyg_sdfl.detection.mapping.BoxMapping` maps them to
the landmark square the model was trained on.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Mapping

import cv2
import numpy as np

from pyg_sdfl.detection.base import Detection, check_image, reduced_copy

__all__ = ["HAAR_CASCADE", "HaarFaceDetector"]

HAAR_CASCADE = "haarcascade_frontalface_default.xml"


def _cascade_path(name: str) -> Path:
    """A cascade file from OpenCV's own ``cv2.data`` folder (shipped with opencv-python)."""
    folder = getattr(getattr(cv2, "data", None), "haarcascades", None)
    if folder and (Path(folder) / name).is_file():
        return Path(folder) / name
    raise FileNotFoundError(
        f"Haar cascade {name!r} not found in OpenCV's cv2.data folder ({folder!r}); "
        "install the pinned opencv-python-headless (4.12), which ships it"
    )


class HaarFaceDetector:
    """The classic frontal-face Haar cascade (Viola-Jones, ``haarcascade_frontalface_default.xml``
    from ``cv2.data``), run by OpenCV's ``CascadeClassifier.detectMultiScale3``. (OpenCV 5 ships
    neither the classifier nor the file, which is why the project pins opencv-python-headless 4.12.)

    The gray image is histogram-equalised first. Large images are detected on a copy whose
    longer side is at most ``max_side`` pixels (area interpolation) and the boxes are scaled
    back, so a 24-megapixel photo costs about as much as a 1-megapixel one. ``min_size`` is in
    pixels of that (possibly reduced) copy.

    The score is the cascade's last-stage sum, the best within the detection's cluster (OpenCV's
    ``levelWeights`` with ``outputRejectLevels=True``): larger for more face-like windows, not a
    probability, comparable between detections of this detector only.
    """

    name = "haar"

    def __init__(
        self,
        scale_factor: float = 1.1,
        min_neighbors: int = 5,
        min_size: int = 30,
        max_side: int = 1024,
        cascade: str = HAAR_CASCADE,
    ) -> None:
        if not scale_factor > 1:
            raise ValueError(f"scale_factor must be > 1, got {scale_factor!r}")
        if int(min_neighbors) < 0 or int(min_size) < 1 or int(max_side) < 32:
            raise ValueError(
                f"need min_neighbors >= 0, min_size >= 1 and max_side >= 32; got {min_neighbors}, {min_size}, {max_side}"
            )
        self._cascade = cv2.CascadeClassifier(str(_cascade_path(cascade)))
        if self._cascade.empty():
            raise RuntimeError(f"OpenCV could not load the Haar cascade {cascade!r}")
        self.scale_factor = float(scale_factor)
        self.min_neighbors = int(min_neighbors)
        self.min_size = int(min_size)
        self.max_side = int(max_side)
        self.cascade = cascade

    @property
    def params(self) -> Dict[str, Any]:
        """The constructor's settings (JSON-serialisable), as stored next to a fitted :class:`BoxMapping`
        (without ``"name"``: a record without one is a Haar detector's, :func:`detector_from_record`)."""
        return {"cascade": self.cascade, "scale_factor": self.scale_factor, "min_neighbors": self.min_neighbors,
                "min_size": self.min_size, "max_side": self.max_side}

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> "HaarFaceDetector":
        """The detector of :attr:`params` (keys it does not know are ignored)."""
        return cls(**{k: params[k] for k in ("scale_factor", "min_neighbors", "min_size", "max_side", "cascade") if k in params})

    def __call__(self, image: np.ndarray) -> List[Detection]:
        """Faces in ``image`` (``(H, W, 3)`` uint8 RGB or ``(H, W)`` gray), most confident first."""
        image = check_image(image)
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
        gray, sx, sy = reduced_copy(gray, self.max_side)
        gray = cv2.equalizeHist(gray)
        rects, _, weights = self._cascade.detectMultiScale3(
            gray, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
            minSize=(self.min_size, self.min_size), outputRejectLevels=True)
        out = []
        for (x, y, bw, bh), score in zip(np.asarray(rects).reshape(-1, 4), np.asarray(weights).reshape(-1)):
            # OpenCV's rectangle edges are at integer coordinates of the pixel-edge frame;
            # scale them back, then shift by half a pixel into the pixel-centre frame.
            box = np.array([x * sx, y * sy, (x + bw) * sx, (y + bh) * sy], dtype=np.float64) - 0.5
            out.append(Detection(box=box, score=float(score)))
        out.sort(key=lambda d: -d.score)
        return out

    def __repr__(self) -> str:
        return f"HaarFaceDetector({', '.join(f'{k}={v!r}' for k, v in self.params.items())})"
