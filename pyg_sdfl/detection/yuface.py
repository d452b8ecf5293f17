"""libfacedetection's CNN face detector (YuNet, Shiqi Yu et al.), through the ``yuface`` wheel.

``yuface`` (BSD-3) has the network's weights compiled into its shared library: nothing is read or
downloaded at run time. It is the Landmarker's default detector and a dependency of the package
where its only wheel exists (CPython 3.11, x86-64 Linux); elsewhere ``pip install ".[yuface]"``
(:data:`YUFACE_EXTRA_HINT`) fails loudly. It is imported only when a detector is built (:func:`require_yuface`, an ``ImportError`` naming the
extra when it is absent).

What the wheel returns, per face (``yuface.detect(bgr, conf)``; checked on version 2023.5.1):

* a confidence, an integer percentage: ``(short)(score * 100)``, truncated. The library itself
  drops faces below 30 (its fixed threshold of 0.3) and keeps at most 256 after an NMS at IoU 0.5.
* a box ``x, y, w, h`` and five points ``x1, y1, ..., x5, y5``, all ``(short)`` casts (truncated
  towards zero) of the network's float outputs. The wheel's docstring says ``uint16``; the arrays
  are in fact ``int16`` and go negative for a face cut by the image border (a ``uint16`` array
  from another build is read back as ``int16`` here, :func:`signed_int16`).

The network's coordinates are those of OpenCV's ``Rect`` (the training labels' frame): pixel
column ``i`` spans ``i .. i + 1`` and the box's edges ``x`` and ``x + w`` are pixel edges. In the
package's pixel-centre convention (:mod:`pyg_sdfl.geometry`) the box is therefore

    box = (x - 0.5, y - 0.5, x + w - 0.5, y + h - 0.5)

exactly as for OpenCV's rectangles (:mod:`pyg_sdfl.detection.haar`), and a point ``(u, v)`` of the
same frame is ``(u - 0.5, v - 0.5)``. (The truncation makes every value up to one pixel of the
detection copy too small, half a pixel on average; this is well below the network's own error on
the five points, a few pixels on 300-W faces, and a box mapping fitted on this detector absorbs it.)
"""
from __future__ import annotations

import importlib
import math
from typing import Any, Dict, List, Mapping, Optional

import cv2
import numpy as np

from pyg_sdfl.detection.base import Detection, check_image, reduced_copy

__all__ = ["YUFACE_EXTRA_HINT", "YUFACE_MAX_SIDE", "require_yuface", "signed_int16", "YuFaceDetector"]

YUFACE_EXTRA_HINT = 'pip install ".[yuface]"  (yuface==2023.5.1: libfacedetection/YuNet, BSD-3, weights compiled in)'
YUFACE_MAX_SIDE = 960  #: the wheel warns ("may cause detection performance degradation") above this side


def require_yuface() -> Any:
    """Import and return ``yuface``; ``ImportError`` naming the ``[yuface]`` extra when absent."""
    try:
        return importlib.import_module("yuface")
    except ImportError as err:
        raise ImportError(f"yuface is not installed; install the yuface extra: {YUFACE_EXTRA_HINT}") from err


def single_thread_openmp(module: Any) -> Optional[Any]:
    """Make the wheel's own OpenMP runtime (``yuface.libs/libgomp-*.so``, loaded beside torch's)
    run one thread for calls from this thread; returns its ``omp_set_num_threads`` (or ``None``
    when the wheel bundles no such library).

    Two OpenMP runtimes in one process each keep their worker threads spinning after a parallel
    region; on 2 cores they starve each other. Measured on the 2-core Xeon VM (shipped model,
    20 test/lfpw faces): a model pass took 36 ms on its own and 800 ms right after a yuface call
    with both runtimes at 2 threads; with yuface on one thread, 15 ms per yuface call and no
    slow-down of the model (yuface on 2 threads alone: 11 ms).
    """
    import ctypes
    from pathlib import Path

    where = getattr(module, "__file__", None)
    if not where:  # not the wheel (a stand-in module in the tests)
        return None
    folder = Path(where).resolve().parent.parent / "yuface.libs"
    libs = sorted(folder.glob("libgomp*.so*")) if folder.is_dir() else []
    if not libs:
        return None
    setter = ctypes.CDLL(str(libs[0])).omp_set_num_threads
    setter.argtypes = [ctypes.c_int]
    setter(1)
    return setter


def signed_int16(values: Any) -> np.ndarray:
    """The wheel's integer outputs as int64, a ``uint16`` array read as the ``int16`` it was
    written as (65535 -> -1): the C library stores ``short`` values, negative at the image border."""
    arr = np.asarray(values)
    if arr.dtype == np.uint16:
        arr = arr.view(np.int16)
    return arr.astype(np.int64)


class YuFaceDetector:
    """libfacedetection's YuNet (``yuface`` wheel): ``image -> list of Detection`` with 5 keypoints.

    Args:
        score_threshold: keep faces whose score (see below) is at least this, in ``[0, 1]``; the
            library never returns a face below 0.3, so lower values act as 0.3. 0.5 is the wheel's
            default.
        max_side: images whose longer side exceeds this are detected on a copy of that size (area
            interpolation) and the boxes and points scaled back. The wheel warns above
            :data:`YUFACE_MAX_SIDE` (960), the default. YuNet finds faces down to about 10 pixels
            of that copy; its boxes are best for faces up to a few hundred pixels of it (on 300-W
            faces blown up to span about 600 px of the copy, the box comes out tighter and the
            score drops from 0.95 to 0.76).
        min_size: drop faces whose box is narrower or lower than this, in pixels of the original
            image (0 keeps every face).

    Each :class:`Detection` has:

    * ``box``: float64 ``(x - 0.5, y - 0.5, x + w - 0.5, y + h - 0.5)`` scaled back to the image
      (module docstring), clipped to the image (``-0.5 .. W - 0.5``, ``-0.5 .. H - 0.5``);
    * ``score``: the library's confidence divided by 100, so in ``[0.3, 1]`` in steps of 0.01
      (the network's face confidence; comparable between YuNet's detections only);
    * ``keypoints``: float64 ``(5, 2)`` in image pixels (pixel-centre convention, not clipped: a
      point of a face cut by the border may lie outside the image), in the order image-left eye
      centre, image-right eye centre, nose tip, image-left mouth corner, image-right mouth corner
      (for a frontal face the subject's right eye comes first).

    Detections are sorted by score, highest first (ties keep the library's order).
    """

    name = "yuface"

    def __init__(self, score_threshold: float = 0.5, max_side: int = YUFACE_MAX_SIDE, min_size: int = 0) -> None:
        if isinstance(score_threshold, bool) or not isinstance(score_threshold, (int, float)) \
                or not math.isfinite(score_threshold) or not 0.0 <= score_threshold <= 1.0:
            raise ValueError(f"score_threshold must be a number in [0, 1], got {score_threshold!r}")
        for key, value, lo, hi in (("max_side", max_side, 32, 8192), ("min_size", min_size, 0, None)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo \
                    or (hi is not None and value > hi):
                bounds = f"in [{lo}, {hi}]" if hi is not None else f">= {lo}"
                raise ValueError(f"{key} must be an integer {bounds}, got {value!r}")
        self._yuface = require_yuface()
        self._set_threads = single_thread_openmp(self._yuface)
        self.score_threshold = float(score_threshold)
        self.max_side = int(max_side)
        self.min_size = int(min_size)

    @property
    def params(self) -> Dict[str, Any]:
        """The constructor's settings (JSON-serialisable): ``YuFaceDetector(**params)`` rebuilds it."""
        return {"score_threshold": self.score_threshold, "max_side": self.max_side, "min_size": self.min_size}

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> "YuFaceDetector":
        """The detector of :attr:`params` (keys it does not know are ignored)."""
        return cls(**{k: params[k] for k in ("score_threshold", "max_side", "min_size") if k in params})

    def __call__(self, image: np.ndarray) -> List[Detection]:
        """Faces in ``image`` (``(H, W, 3)`` uint8 RGB or ``(H, W)`` gray), most confident first."""
        image = check_image(image)
        bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR if image.ndim == 3 else cv2.COLOR_GRAY2BGR)
        h, w = bgr.shape[:2]
        bgr, sx, sy = reduced_copy(bgr, self.max_side)
        if self._set_threads is not None:  # per calling thread: OpenMP's thread count is a per-thread setting
            self._set_threads(1)
        confs, rects, points = self._yuface.detect(np.ascontiguousarray(bgr), conf=0.0)
        confs = signed_int16(confs).reshape(-1)
        rects = signed_int16(rects).reshape(-1, 4).astype(np.float64)
        points = signed_int16(points).reshape(-1, 5, 2).astype(np.float64)
        scale = np.array([sx, sy])
        out = []
        for conf, (x, y, bw, bh), pts in zip(confs, rects, points):
            score = float(conf) / 100.0
            if score < self.score_threshold or min(bw * sx, bh * sy) < self.min_size:
                continue
            # pixel edges of the detection copy -> edges of the image -> pixel-centre frame
            box = np.array([x * sx, y * sy, (x + bw) * sx, (y + bh) * sy], dtype=np.float64) - 0.5
            box[[0, 2]] = np.clip(box[[0, 2]], -0.5, w - 0.5)
            box[[1, 3]] = np.clip(box[[1, 3]], -0.5, h - 0.5)
            if box[2] <= box[0] or box[3] <= box[1]:
                continue
            out.append(Detection(box=box, score=score, keypoints=pts * scale - 0.5))
        out.sort(key=lambda d: -d.score)  # stable: ties keep the library's order
        return out

    def __repr__(self) -> str:
        return f"YuFaceDetector({', '.join(f'{k}={v!r}' for k, v in self.params.items())})"
