"""COFW ``.mat`` files (29 points with occlusion flags, images embedded).

Layout (``COFW_train_color.mat`` / ``COFW_test_color.mat``):

* ``IsTr`` / ``IsT``: cell array of M images, ``H x W`` gray or ``H x W x 3`` RGB uint8;
* ``phisTr`` / ``phisT``: ``M x 87`` = 29 x, then 29 y, then 29 occlusion flags (1 = occluded);
* ``bboxesTr`` / ``bboxesT``: ``M x 4`` face boxes ``x, y, w, h``.

Coordinates are MATLAB 1-based; samples get 0-based pixel centres (``- 1``) and boxes
``x0, y0, x1, y1`` = ``x - 1, y - 1, x - 1 + w, y - 1 + h``.

Both MATLAB v7.3 files (HDF5, read with h5py) and older v5/v7 files (read with scipy) are
supported. In v7.3 every array is stored transposed (HDF5 is row-major, MATLAB column-major) and
a cell array is a dataset of object references to arrays stored elsewhere in the file.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Union

import numpy as np

from pyg_sdfl.data.sample import FaceSample, ImageLoadError, as_rgb_uint8, check_points

__all__ = ["read_cofw", "COFW_POINTS"]

COFW_POINTS = 29
_KEYS = {"train": ("IsTr", "phisTr", "bboxesTr"), "test": ("IsT", "phisT", "bboxesT")}


def _pick_keys(available, path: Path):
    for keys in _KEYS.values():
        if keys[0] in available and keys[1] in available:
            return keys
    raise ValueError(
        f"{path}: not a COFW file: expected variables IsTr/phisTr[/bboxesTr] or IsT/phisT[/bboxesT], "
        f"found {sorted(k for k in available if not k.startswith('#') and not k.startswith('__'))}"
    )


def _load_v73(path: Path) -> Dict[str, object]:
    import h5py

    with h5py.File(path, "r") as f:
        img_key, phis_key, box_key = _pick_keys(set(f.keys()), path)
        cell = f[img_key]
        if cell.dtype != h5py.ref_dtype:
            raise ValueError(f"{path}: {img_key} should be a cell array (object references), got dtype {cell.dtype}")
        # C-order ravel of the transposed storage == MATLAB's column-major linear order.
        images = [np.asarray(f[ref][()]).T for ref in cell[()].ravel()]
        phis = np.asarray(f[phis_key][()], dtype=np.float64).T
        boxes = np.asarray(f[box_key][()], dtype=np.float64).T if box_key in f else None
    return {"images": images, "phis": phis, "boxes": boxes}


def _load_v5(path: Path) -> Dict[str, object]:
    import scipy.io

    try:
        mat = scipy.io.loadmat(str(path))
    except Exception as exc:  # scipy raises several types for broken files
        raise ValueError(f"{path}: cannot read as a MATLAB file: {exc}") from exc
    img_key, phis_key, box_key = _pick_keys(set(mat.keys()), path)
    cell = mat[img_key]
    if cell.dtype != object:
        raise ValueError(f"{path}: {img_key} should be a cell array, got dtype {cell.dtype}")
    images = [np.asarray(im) for im in cell.ravel(order="F")]
    phis = np.asarray(mat[phis_key], dtype=np.float64)
    boxes = np.asarray(mat[box_key], dtype=np.float64) if box_key in mat else None
    return {"images": images, "phis": phis, "boxes": boxes}


def read_cofw(mat_path: Union[str, Path]) -> List[FaceSample]:
    """Read a COFW ``.mat`` file (v7.3 or older) into samples with in-memory RGB images.

    Each sample: ``image`` ``(H, W, 3)`` uint8 (gray repeated to 3 channels), ``landmarks``
    ``(29, 2)``, ``occluded`` bool ``(29,)``, ``box`` ``x0, y0, x1, y1``, ``name``
    ``"<file stem>#<i>"`` (0-based face index), ``attributes["num_occluded"]``.
    """
    import h5py

    path = Path(mat_path)
    if not path.is_file():
        raise ValueError(f"COFW file not found: {path}")
    data = _load_v73(path) if h5py.is_hdf5(str(path)) else _load_v5(path)
    images, phis, boxes = data["images"], data["phis"], data["boxes"]
    if phis.ndim != 2 or phis.shape[1] != 3 * COFW_POINTS:
        raise ValueError(
            f"{path}: landmark matrix has shape {phis.shape}, expected (M, {3 * COFW_POINTS}) "
            f"= {COFW_POINTS} x, {COFW_POINTS} y, {COFW_POINTS} occlusion flags"
        )
    if len(images) != phis.shape[0]:
        raise ValueError(f"{path}: {len(images)} images but {phis.shape[0]} landmark rows")
    if boxes is not None and boxes.shape != (phis.shape[0], 4):
        raise ValueError(f"{path}: boxes have shape {boxes.shape}, expected ({phis.shape[0]}, 4)")
    if not images:
        raise ValueError(f"{path}: the file holds no faces")
    samples = []
    for i, (image, row) in enumerate(zip(images, phis)):
        where = f"{path}, face {i}"
        try:
            image = as_rgb_uint8(np.ascontiguousarray(image), where)
        except ImageLoadError as exc:
            raise ValueError(str(exc)) from None
        landmarks = check_points(np.stack([row[:COFW_POINTS], row[COFW_POINTS : 2 * COFW_POINTS]], axis=1), where)
        flags = row[2 * COFW_POINTS :]
        if not np.isfinite(flags).all():
            raise ValueError(f"{where}: non-finite occlusion flags")
        box = None
        if boxes is not None:
            x, y, w, h = boxes[i]
            box = np.array([x - 1, y - 1, x - 1 + w, y - 1 + h])
        occluded = flags > 0.5
        samples.append(
            FaceSample(
                image=image,
                landmarks=landmarks - 1.0,
                box=box,
                attributes={"num_occluded": int(occluded.sum())},
                name=f"{path.stem}#{i}",
                occluded=occluded,
            )
        )
    return samples
