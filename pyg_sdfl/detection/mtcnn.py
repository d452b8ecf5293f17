"""MTCNN (Zhang et al. 2016): a three-stage cascade of small CNNs giving face boxes and 5 keypoints.

The networks are written here; their weights are the files ``data/{pnet,rnet,onet}.pt`` shipped in
the ``facenet-pytorch`` wheel (MIT licence, the original Caffe weights converted). The package is
optional: ``pip install ".[mtcnn]"`` (:data:`MTCNN_EXTRA_HINT`). It is never imported (its import
pulls torchvision's compiled ops, which do not load on CPU torch here): its folder is located with
``importlib.util.find_spec`` (:func:`mtcnn_weights_dir`) and only the weight files are read.

The cascade (:class:`MTCNNDetector`), in the package's pixel convention (:mod:`pyg_sdfl.geometry`:
0-based pixel centres, a box covering pixel columns ``i..j`` runs from ``i - 0.5`` to ``j + 0.5``):

1. **P-Net**, fully convolutional, on an image pyramid (:func:`pyramid_scales`; each level resized
   from the image with ``cv2.INTER_AREA``). Output cell ``(r, c)`` of a level of actual per-axis
   scale ``(fx, fy)`` (level size / image size) scores the 12 x 12 window of level pixels
   ``2c .. 2c + 11``, i.e. the image box ``x0 = 2c / fx - 0.5``, ``x1 = (2c + 12) / fx - 0.5``
   (rows likewise). Windows with face probability ``>= thresholds[0]`` are kept, thinned by NMS
   within each level (IoU 0.5, :data:`PNET_LEVEL_NMS`) and across levels (``nms_thresholds[0]``),
   moved by their regression (:func:`regress_boxes`) and squared (:func:`square_boxes`).
2. **R-Net** on 24 x 24 crops of those squares (:func:`crop_patches`: snapped to whole pixels,
   zero-padded outside the image, resized with ``cv2.INTER_AREA``), all candidates in one batch:
   probability ``>= thresholds[1]``, NMS (``nms_thresholds[1]``), regression, squaring.
3. **O-Net** on 48 x 48 crops: probability ``>= thresholds[2]``, 5 keypoints, regression, then NMS
   with the *min* overlap (``nms_thresholds[2]``), as in the original code.

Regression offsets and keypoints are fractions of the crop box they were computed on (the snapped
box, whose edges are whole pixel edges): ``x = x0 + t * (x1 - x0)``, the crop's ``[0, 1]`` extent
mapped onto the box's pixel-edge extent. The original code differs by one pixel here and there
(its 1-based inclusive boxes, ``11 / scale`` wide P-Net windows); this module uses the exact
geometry above.

Conventions of the weights (facenet-pytorch's conversion): input ``(x - 127.5) * 0.0078125`` in
RGB order, ``(N, 3, H, W)`` untransposed; max pooling with ``ceil_mode=True``; before the first
dense layer of R-Net and O-Net the features are flattened in ``(W, H, C)`` order (the Caffe model
was trained on transposed images); softmax channel 1 is the face probability; box offsets are
ordered ``dx0, dy0, dx1, dy1``; O-Net's 10 keypoint outputs are ``x1..x5, y1..y5``.
"""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence, Tuple

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pyg_sdfl.detection.base import Detection, check_image, reduced_copy
from pyg_sdfl.geometry import check_boxes

__all__ = [
    "MTCNN_EXTRA_HINT",
    "CELL_SIZE",
    "PNET_LEVEL_NMS",
    "PNet",
    "RNet",
    "ONet",
    "mtcnn_weights_dir",
    "load_mtcnn_nets",
    "nms",
    "pyramid_scales",
    "regress_boxes",
    "square_boxes",
    "crop_patches",
    "MTCNNDetector",
]

MTCNN_EXTRA_HINT = 'pip install ".[mtcnn]"  (facenet-pytorch==2.5.3, for its MTCNN weight files)'
CELL_SIZE = 12  #: P-Net's window: the smallest face it sees, in pixels of a pyramid level
PNET_STRIDE = 2  #: P-Net's output stride, in pixels of a pyramid level
PNET_LEVEL_NMS = 0.5  #: IoU threshold of the NMS within each pyramid level (the original's)
_BATCH = 256  # R-Net / O-Net candidates per forward pass (bounds memory, not speed)


# ----------------------------------------------------------------------------- networks
def _normalise(x: torch.Tensor) -> torch.Tensor:
    """uint8-range RGB -> the networks' input range: ``(x - 127.5) * 0.0078125`` (about -1..1)."""
    return (x - 127.5) * 0.0078125


class PNet(nn.Module):
    """Proposal net, fully convolutional: ``(N, 3, H, W)`` normalised RGB -> face probability
    ``(N, H', W')`` and box offsets ``(N, 4, H', W')`` with ``H' = ceil((H - 2) / 2) - 4`` (one cell
    per 12 x 12 window at stride 2)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 10, 3)
        self.prelu1 = nn.PReLU(10)
        self.conv2 = nn.Conv2d(10, 16, 3)
        self.prelu2 = nn.PReLU(16)
        self.conv3 = nn.Conv2d(16, 32, 3)
        self.prelu3 = nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, 1)  # face / not-face logits
        self.conv4_2 = nn.Conv2d(32, 4, 1)  # box offsets

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        x = F.max_pool2d(self.prelu1(self.conv1(x)), 2, 2, ceil_mode=True)
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return torch.softmax(self.conv4_1(x), dim=1)[:, 1], self.conv4_2(x)


class RNet(nn.Module):
    """Refinement net: ``(N, 3, 24, 24)`` normalised RGB -> face probability ``(N,)`` and box
    offsets ``(N, 4)``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 28, 3)
        self.prelu1 = nn.PReLU(28)
        self.conv2 = nn.Conv2d(28, 48, 3)
        self.prelu2 = nn.PReLU(48)
        self.conv3 = nn.Conv2d(48, 64, 2)
        self.prelu3 = nn.PReLU(64)
        self.dense4 = nn.Linear(576, 128)
        self.prelu4 = nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        x = F.max_pool2d(self.prelu1(self.conv1(x)), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self.prelu2(self.conv2(x)), 3, 2, ceil_mode=True)
        x = self.prelu3(self.conv3(x))
        x = self.prelu4(self.dense4(x.transpose(1, 3).flatten(1)))  # (N, C, H, W) -> (W, H, C) order
        return torch.softmax(self.dense5_1(x), dim=1)[:, 1], self.dense5_2(x)


class ONet(nn.Module):
    """Output net: ``(N, 3, 48, 48)`` normalised RGB -> face probability ``(N,)``, box offsets
    ``(N, 4)`` and keypoints ``(N, 10)`` as ``x1..x5, y1..y5``, fractions of the crop."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 3)
        self.prelu1 = nn.PReLU(32)
        self.conv2 = nn.Conv2d(32, 64, 3)
        self.prelu2 = nn.PReLU(64)
        self.conv3 = nn.Conv2d(64, 64, 3)
        self.prelu3 = nn.PReLU(64)
        self.conv4 = nn.Conv2d(64, 128, 2)
        self.prelu4 = nn.PReLU(128)
        self.dense5 = nn.Linear(1152, 256)
        self.prelu5 = nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = F.max_pool2d(self.prelu1(self.conv1(x)), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self.prelu2(self.conv2(x)), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self.prelu3(self.conv3(x)), 2, 2, ceil_mode=True)
        x = self.prelu4(self.conv4(x))
        x = self.prelu5(self.dense5(x.transpose(1, 3).flatten(1)))
        return torch.softmax(self.dense6_1(x), dim=1)[:, 1], self.dense6_2(x), self.dense6_3(x)


def mtcnn_weights_dir() -> Path:
    """The ``data`` folder of the installed ``facenet-pytorch`` holding ``pnet.pt``, ``rnet.pt`` and
    ``onet.pt``, found with ``importlib.util.find_spec`` (the package is not imported).
    ``ImportError`` naming the ``[mtcnn]`` extra when the package or its files are absent."""
    try:
        spec = importlib.util.find_spec("facenet_pytorch")
    except (ValueError, ImportError):  # a broken or stubbed entry in sys.modules
        spec = None
    for location in (spec.submodule_search_locations or []) if spec is not None else []:
        folder = Path(location) / "data"
        if all((folder / f"{name}.pt").is_file() for name in ("pnet", "rnet", "onet")):
            return folder
    where = "is not installed" if spec is None else "has no data/{pnet,rnet,onet}.pt"
    raise ImportError(f"the MTCNN weights come from facenet-pytorch, which {where}; "
                      f"install the mtcnn extra: {MTCNN_EXTRA_HINT}")


def load_mtcnn_nets(device: Any = "cpu") -> Tuple[PNet, RNet, ONet]:
    """P-Net, R-Net and O-Net with facenet-pytorch's weights (``torch.load(weights_only=True)``,
    ``load_state_dict(strict=True)``), in eval mode on ``device``."""
    folder = mtcnn_weights_dir()
    nets = []
    for name, cls in (("pnet", PNet), ("rnet", RNet), ("onet", ONet)):
        net = cls()
        path = folder / f"{name}.pt"
        state = torch.load(path, map_location="cpu", weights_only=True)
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as err:
            raise RuntimeError(f"{path} does not match {cls.__name__}: {err}") from err
        nets.append(net.eval().requires_grad_(False).to(device))
    return nets[0], nets[1], nets[2]


# ----------------------------------------------------------------------------- box arithmetic
def nms(boxes: Any, scores: Any, iou_threshold: float, mode: str = "union") -> np.ndarray:
    """Greedy non-maximum suppression: the indices of the boxes kept, highest score first (int64).

    Args:
        boxes: ``(M, 4)`` ``x0, y0, x1, y1`` (``M = 0`` allowed; empty boxes allowed).
        scores: ``(M,)``.
        iou_threshold: a box is dropped when its overlap with an already kept box is ``>`` this.
        mode: ``"union"``: overlap = ``inter / (area_i + area_j - inter)`` (IoU);
            ``"min"``: overlap = ``inter / min(area_i, area_j)`` (drops boxes nested in a kept one).

    Areas are continuous, ``(x1 - x0) (y1 - y0)``; an overlap with a zero denominator is 0. Boxes
    are visited by decreasing score (the first one on ties).
    """
    if mode not in ("union", "min"):
        raise ValueError(f"nms mode must be 'union' or 'min', got {mode!r}")
    if not 0 <= iou_threshold <= 1:
        raise ValueError(f"iou_threshold must be in [0, 1], got {iou_threshold!r}")
    arr = np.asarray(boxes, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if arr.size == 0 and s.size == 0:
        return np.zeros(0, dtype=np.int64)
    arr = check_boxes(arr, "nms", allow_empty=True)
    if s.shape[0] != arr.shape[0]:
        raise ValueError(f"nms: {arr.shape[0]} boxes but {s.shape[0]} scores")
    x0, y0, x1, y1 = arr.T
    area = (x1 - x0) * (y1 - y0)
    order = np.argsort(-s, kind="stable")
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        inter = (np.clip(np.minimum(x1[i], x1[rest]) - np.maximum(x0[i], x0[rest]), 0, None)
                 * np.clip(np.minimum(y1[i], y1[rest]) - np.maximum(y0[i], y0[rest]), 0, None))
        denom = area[i] + area[rest] - inter if mode == "union" else np.minimum(area[i], area[rest])
        overlap = np.divide(inter, denom, out=np.zeros_like(inter), where=denom > 0)
        order = rest[overlap <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def pyramid_scales(height: int, width: int, min_face_size: float = 20, scale_factor: float = 0.709) -> List[float]:
    """The image pyramid of P-Net: ``s_k = (12 / min_face_size) * scale_factor ** k`` for ``k = 0, 1,
    ...`` while ``min(height, width) * s_k >= 12`` (the level still holds one 12-pixel cell).

    A face of ``min_face_size`` pixels fills one cell at the first level; each next level finds
    faces ``1 / scale_factor`` times larger. ``[]`` when the image is smaller than the smallest face.
    """
    if not (min_face_size > 0 and math.isfinite(min_face_size)):
        raise ValueError(f"min_face_size must be positive, got {min_face_size!r}")
    if not 0 < scale_factor < 1:
        raise ValueError(f"scale_factor must be in (0, 1), got {scale_factor!r}")
    first = CELL_SIZE / float(min_face_size)
    side = min(int(height), int(width))
    scales = []
    while side * first * scale_factor ** len(scales) >= CELL_SIZE:
        scales.append(first * scale_factor ** len(scales))
    return scales


def regress_boxes(boxes: Any, offsets: Any) -> np.ndarray:
    """Move boxes ``(M, 4)`` by the networks' offsets ``(M, 4)`` (fractions of the box's size):
    ``x0' = x0 + dx0 * w``, ``y0' = y0 + dy0 * h``, ``x1' = x1 + dx1 * w``, ``y1' = y1 + dy1 * h``
    with ``w = x1 - x0``, ``h = y1 - y0``. Returns ``(M, 4)`` float64 (possibly empty boxes)."""
    b = check_boxes(np.asarray(boxes, dtype=np.float64).reshape(-1, 4), "regress_boxes", allow_empty=True)
    t = np.asarray(offsets, dtype=np.float64).reshape(-1, 4)
    if t.shape != b.shape:
        raise ValueError(f"regress_boxes: {b.shape[0]} boxes but offsets of shape {np.shape(offsets)}")
    size = np.tile(b[:, 2:] - b[:, :2], 2)
    return b + t * size


def square_boxes(boxes: Any) -> np.ndarray:
    """Boxes ``(M, 4)`` -> the squares with the same centres and side ``max(w, h)``, ``(M, 4)``
    float64: ``x0' = cx - side / 2``, ``x1' = cx + side / 2`` (likewise rows)."""
    b = check_boxes(np.asarray(boxes, dtype=np.float64).reshape(-1, 4), "square_boxes", allow_empty=True)
    centre = (b[:, :2] + b[:, 2:]) / 2.0
    half = np.max(b[:, 2:] - b[:, :2], axis=1, keepdims=True) / 2.0
    return np.concatenate([centre - half, centre + half], axis=1)


def crop_patches(image: np.ndarray, boxes: np.ndarray, size: int) -> Tuple[np.ndarray, np.ndarray]:
    """Cut each box out of ``image`` ``(H, W, 3)`` and resize it to ``size x size``.

    Each box is snapped to the nearest pixel edges (halves rounded up): columns ``c0 .. c1 - 1``
    with ``c0 = floor(x0 + 1)``, ``c1 = max(c0 + 1, floor(x1 + 1))`` (rows likewise); pixels
    outside the image are 0 (as in the original code); the resize is ``cv2.INTER_AREA``.

    Returns ``(patches, crop_boxes)``: uint8 ``(M, size, size, 3)`` and float64 ``(M, 4)``, the
    snapped boxes ``(c0 - 0.5, r0 - 0.5, c1 - 0.5, r1 - 0.5)`` the patches show exactly.
    """
    H, W = image.shape[:2]
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    lo = np.floor(b[:, :2] + 1.0).astype(np.int64)
    hi = np.maximum(lo + 1, np.floor(b[:, 2:] + 1.0).astype(np.int64))
    patches = np.zeros((len(b), size, size, 3), dtype=np.uint8)
    for k, ((c0, r0), (c1, r1)) in enumerate(zip(lo, hi)):
        if c0 >= 0 and r0 >= 0 and c1 <= W and r1 <= H:
            region = image[r0:r1, c0:c1]
        else:
            region = np.zeros((r1 - r0, c1 - c0, 3), dtype=np.uint8)
            ic0, ir0, ic1, ir1 = max(c0, 0), max(r0, 0), min(c1, W), min(r1, H)
            if ic1 > ic0 and ir1 > ir0:
                region[ir0 - r0:ir1 - r0, ic0 - c0:ic1 - c0] = image[ir0:ir1, ic0:ic1]
        patches[k] = cv2.resize(region, (size, size), interpolation=cv2.INTER_AREA)
    return patches, np.concatenate([lo, hi], axis=1).astype(np.float64) - 0.5


def _number(value: Any) -> float:
    """``float(value)`` for a real number (not a bool), NaN for anything else."""
    if isinstance(value, bool):
        return float("nan")
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _three(values: Any, name: str, lo: float, hi: float, hi_inclusive: bool) -> List[float]:
    try:
        out = [float(v) for v in values]
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be 3 numbers (P-Net, R-Net, O-Net), got {values!r}") from None
    ok = len(out) == 3 and all(lo < v < hi or (hi_inclusive and v == hi) for v in out)
    if not ok:
        bound = "]" if hi_inclusive else ")"
        raise ValueError(f"{name} must be 3 numbers in ({lo:g}, {hi:g}{bound} (P-Net, R-Net, O-Net), got {values!r}")
    return out


# ----------------------------------------------------------------------------- the detector
class MTCNNDetector:
    """MTCNN face detector (Zhang et al. 2016; the cascade is described in the module docstring):
    ``image -> list of Detection`` with 5 keypoints each, most confident first.

    Args:
        min_face_size: the smallest face searched for, in pixels (of the reduced copy, see
            ``max_side``); at least 12, P-Net's window, so the pyramid never enlarges the image.
        thresholds: face-probability thresholds of P-Net, R-Net and O-Net, each in (0, 1).
        nms_thresholds: overlap thresholds of the NMS after P-Net (across pyramid levels, IoU),
            R-Net (IoU) and O-Net (overlap over the smaller box), each in (0, 1].
        scale_factor: ratio of successive pyramid levels, in (0, 1).
        max_side: images whose longer side exceeds it are detected on a copy of that longer side
            (``cv2.INTER_AREA``) and the boxes and keypoints scaled back (as in the Haar detector).
        device: where the networks run (``"cpu"``, ``"cuda"``, ...).

    Each detection: ``box`` float64 ``(4,)`` (after O-Net's regression; not squared; it may extend
    beyond the image edges for a face cut by them, which keeps the box-to-face relation the same);
    ``score`` = O-Net's face probability (a Python float); ``keypoints`` float64 ``(5, 2)`` in image
    pixel-centre coordinates: the eye on the image's left, the eye on the image's right, the nose
    tip, the left and the right mouth corner (the subject's right eye first, as MTCNN was trained,
    which is the image-left one in an upright unmirrored face).

    The weights are facenet-pytorch's (:func:`load_mtcnn_nets`; ``ImportError`` naming the
    ``[mtcnn]`` extra without it).
    """

    name = "mtcnn"

    def __init__(
        self,
        min_face_size: float = 20,
        thresholds: Sequence[float] = (0.6, 0.7, 0.7),
        nms_thresholds: Sequence[float] = (0.7, 0.7, 0.7),
        scale_factor: float = 0.709,
        max_side: int = 1024,
        device: str = "cpu",
    ) -> None:
        min_face, factor = _number(min_face_size), _number(scale_factor)
        if not (math.isfinite(min_face) and min_face >= CELL_SIZE):
            raise ValueError(f"min_face_size must be a number >= {CELL_SIZE} (P-Net's window), got {min_face_size!r}")
        if not 0 < factor < 1:
            raise ValueError(f"scale_factor must be in (0, 1), got {scale_factor!r}")
        side = _number(max_side)
        if not (side.is_integer() and side >= 32):
            raise ValueError(f"max_side must be an integer >= 32, got {max_side!r}")
        try:
            torch_device = torch.device(device)
        except (RuntimeError, TypeError) as err:
            raise ValueError(f"device must name a torch device, got {device!r}") from err
        self.min_face_size = min_face
        self.thresholds = _three(thresholds, "thresholds", 0.0, 1.0, hi_inclusive=False)
        self.nms_thresholds = _three(nms_thresholds, "nms_thresholds", 0.0, 1.0, hi_inclusive=True)
        self.scale_factor = factor
        self.max_side = int(max_side)
        self.device = str(device)
        self._device = torch_device
        self.pnet, self.rnet, self.onet = load_mtcnn_nets(torch_device)

    @property
    def params(self) -> Dict[str, Any]:
        """The settings (JSON-serialisable), as stored next to a fitted :class:`BoxMapping`."""
        return {"min_face_size": self.min_face_size, "thresholds": list(self.thresholds),
                "nms_thresholds": list(self.nms_thresholds), "scale_factor": self.scale_factor,
                "max_side": self.max_side, "device": self.device}

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> "MTCNNDetector":
        keys = ("min_face_size", "thresholds", "nms_thresholds", "scale_factor", "max_side", "device")
        return cls(**{k: params[k] for k in keys if k in params})

    # -- stages
    def _tensor(self, patches: np.ndarray) -> torch.Tensor:
        """uint8 ``(M, h, w, 3)`` -> normalised float ``(M, 3, h, w)`` on the device."""
        return _normalise(torch.from_numpy(patches).to(self._device).permute(0, 3, 1, 2).float())

    def _proposals(self, image: np.ndarray) -> np.ndarray:
        """P-Net over the pyramid -> regressed, squared candidate boxes ``(K, 4)``."""
        h, w = image.shape[:2]
        boxes, scores, offsets = [], [], []
        for scale in pyramid_scales(h, w, self.min_face_size, self.scale_factor):
            hs, ws = max(CELL_SIZE, round(h * scale)), max(CELL_SIZE, round(w * scale))
            level = cv2.resize(image, (ws, hs), interpolation=cv2.INTER_AREA)
            prob, reg = self.pnet(self._tensor(level[None]))
            rows, cols = torch.nonzero(prob[0] >= self.thresholds[0], as_tuple=True)
            if rows.numel() == 0:
                continue
            score = prob[0, rows, cols].cpu().numpy().astype(np.float64)
            offset = reg[0][:, rows, cols].T.cpu().numpy().astype(np.float64)
            fx, fy = ws / w, hs / h  # the level's exact per-axis scale
            c = cols.cpu().numpy().astype(np.float64) * PNET_STRIDE
            r = rows.cpu().numpy().astype(np.float64) * PNET_STRIDE
            box = np.stack([c / fx, r / fy, (c + CELL_SIZE) / fx, (r + CELL_SIZE) / fy], axis=1) - 0.5
            keep = nms(box, score, PNET_LEVEL_NMS)
            boxes.append(box[keep])
            scores.append(score[keep])
            offsets.append(offset[keep])
        if not boxes:
            return np.zeros((0, 4))
        box, score, offset = np.concatenate(boxes), np.concatenate(scores), np.concatenate(offsets)
        keep = nms(box, score, self.nms_thresholds[0])
        return square_boxes(regress_boxes(box[keep], offset[keep]))

    def _run(self, net: nn.Module, image: np.ndarray, boxes: np.ndarray, size: int) -> Tuple[np.ndarray, List[np.ndarray]]:
        """Crop ``boxes`` at ``size`` and run ``net`` on them in batches -> (crop boxes, outputs as
        float64 NumPy arrays)."""
        patches, crop_boxes = crop_patches(image, boxes, size)
        outs = [net(self._tensor(patches[i:i + _BATCH])) for i in range(0, len(patches), _BATCH)]
        return crop_boxes, [torch.cat(o).cpu().numpy().astype(np.float64) for o in zip(*outs)]

    @torch.no_grad()
    def _detect(self, image: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The cascade on ``image`` ``(H, W, 3)`` -> boxes ``(K, 4)``, scores ``(K,)``, keypoints
        ``(K, 5, 2)``, best first."""
        empty = np.zeros((0, 4)), np.zeros(0), np.zeros((0, 5, 2))
        boxes = self._proposals(image)
        boxes = boxes[_valid(boxes, image.shape)]
        if not len(boxes):
            return empty
        crop, (prob, reg) = self._run(self.rnet, image, boxes, 24)
        ok = prob >= self.thresholds[1]
        crop, prob, reg = crop[ok], prob[ok], reg[ok]
        keep = nms(crop, prob, self.nms_thresholds[1])
        boxes = square_boxes(regress_boxes(crop[keep], reg[keep]))
        boxes = boxes[_valid(boxes, image.shape)]
        if not len(boxes):
            return empty
        crop, (prob, reg, points) = self._run(self.onet, image, boxes, 48)
        ok = prob >= self.thresholds[2]
        crop, prob, reg, points = crop[ok], prob[ok], reg[ok], points[ok]
        size = crop[:, 2:] - crop[:, :2]
        keypoints = crop[:, None, :2] + np.stack([points[:, :5], points[:, 5:]], axis=2) * size[:, None, :]
        boxes = regress_boxes(crop, reg)
        valid = _valid(boxes, image.shape)
        boxes, prob, keypoints = boxes[valid], prob[valid], keypoints[valid]
        keep = nms(boxes, prob, self.nms_thresholds[2], mode="min")
        return boxes[keep], prob[keep], keypoints[keep]

    def __call__(self, image: np.ndarray) -> List[Detection]:
        """Faces in ``image`` (``(H, W, 3)`` uint8 RGB or ``(H, W)`` gray, replicated to 3 channels),
        most confident first; ``[]`` when there is none."""
        image = check_image(image)
        if image.ndim == 2:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
        h, w = image.shape[:2]
        image, sx, sy = reduced_copy(image, self.max_side)
        boxes, scores, keypoints = self._detect(image)
        scale = np.array([sx, sy])
        # pixel-centre coordinates -> pixel-edge frame (+0.5), scale, and back (-0.5)
        boxes = (boxes + 0.5) * np.tile(scale, 2) - 0.5
        keypoints = (keypoints + 0.5) * scale - 0.5
        return [Detection(box=boxes[i].astype(np.float64), score=float(scores[i]),
                          keypoints=keypoints[i].astype(np.float64)) for i in range(len(scores))]

    def __repr__(self) -> str:
        return f"MTCNNDetector({', '.join(f'{k}={v!r}' for k, v in self.params.items())})"


def _valid(boxes: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """``(M,)`` bool: finite boxes of positive size that overlap the image of ``shape``
    (``-0.5 .. W - 0.5`` by ``-0.5 .. H - 0.5``), the ones :func:`check_detections` accepts."""
    H, W = shape[0], shape[1]
    b = boxes
    with np.errstate(invalid="ignore"):
        return (np.isfinite(b).all(axis=1) & (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
                & (b[:, 2] >= -0.5) & (b[:, 3] >= -0.5) & (b[:, 0] <= W - 0.5) & (b[:, 1] <= H - 0.5))
