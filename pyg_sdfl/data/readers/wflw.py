"""WFLW annotation lists (98 points).

Two line formats, detected from the number of fields per line:

* ``list_98pt_rect_attr_{train,test}.txt``: 207 fields =
  196 coordinates ``x0 y0 ... x97 y97`` + face box ``x_min y_min x_max y_max`` +
  6 binary attributes (pose, expression, illumination, make-up, occlusion, blur) + image name.
* ``list_98pt_test*.txt``: 197 fields = 196 coordinates + image name. The attribute lists
  (``list_98pt_test_largepose.txt`` ...) carry their attribute in the file name.

WFLW coordinates are used as they are (0-based pixel positions, as all public WFLW code does).
Attributes become subset tags: ``pose``, ``expression``, ``illumination``, ``makeup``,
``occlusion``, ``blur``. Images are only referenced (``image_root / name``), never opened here.
"""
from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from pyg_sdfl.data.sample import FaceSample, check_points

__all__ = ["WFLW_ATTRIBUTES", "read_wflw", "read_wflw_attribute_lists"]

WFLW_POINTS = 98
WFLW_ATTRIBUTES = ("pose", "expression", "illumination", "makeup", "occlusion", "blur")
_FIELDS_RECT_ATTR = 2 * WFLW_POINTS + 4 + len(WFLW_ATTRIBUTES) + 1  # 207
_FIELDS_POINTS_ONLY = 2 * WFLW_POINTS + 1  # 197
# attribute named in an attribute list's file name -> subset tag
_FILE_ATTRIBUTE = {"largepose": "pose", "pose": "pose", "expression": "expression",
                   "illumination": "illumination", "makeup": "makeup", "occlusion": "occlusion", "blur": "blur"}


def _attribute_from_filename(path: Path) -> Optional[str]:
    match = re.fullmatch(r"list_98pt_test_([a-z]+)", path.stem)
    return _FILE_ATTRIBUTE.get(match.group(1)) if match else None


def _parse_file(path: Path) -> List[Tuple[str, np.ndarray, Optional[np.ndarray], Optional[Dict[str, int]]]]:
    """``(image_name, landmarks, box, attributes)`` per face line, format auto-detected."""
    if not path.is_file():
        raise ValueError(f"WFLW annotation file not found: {path}")
    rows = []
    expected_fields = None
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if expected_fields is None:
            if len(fields) not in (_FIELDS_RECT_ATTR, _FIELDS_POINTS_ONLY):
                raise ValueError(
                    f"{path}, line {line_no}: {len(fields)} fields is neither the rect_attr format "
                    f"({_FIELDS_RECT_ATTR}: 196 coordinates + 4 box + 6 attributes + name) nor the "
                    f"points-only format ({_FIELDS_POINTS_ONLY}: 196 coordinates + name)"
                )
            expected_fields = len(fields)
        elif len(fields) != expected_fields:
            raise ValueError(f"{path}, line {line_no}: {len(fields)} fields, but earlier lines have {expected_fields}")
        where = f"{path}, line {line_no}"
        try:
            numbers = np.asarray([float(v) for v in fields[:-1]], dtype=np.float64)
        except ValueError:
            raise ValueError(f"{where}: non-numeric coordinate/box/attribute field") from None
        landmarks = check_points(numbers[: 2 * WFLW_POINTS].reshape(WFLW_POINTS, 2), where, WFLW_POINTS)
        box = attributes = None
        if expected_fields == _FIELDS_RECT_ATTR:
            box = numbers[2 * WFLW_POINTS : 2 * WFLW_POINTS + 4]
            flags = numbers[2 * WFLW_POINTS + 4 :]
            if not np.isin(flags, (0.0, 1.0)).all():
                raise ValueError(f"{where}: attributes must be 0 or 1, got {flags.tolist()}")
            attributes = {name: int(v) for name, v in zip(WFLW_ATTRIBUTES, flags)}
        rows.append((fields[-1], landmarks, box, attributes))
    if not rows:
        raise ValueError(f"WFLW annotation file has no faces: {path}")
    return rows


def _unique_names(images: Sequence[str]) -> List[str]:
    """The image name, with ``#k`` (k-th face in file order) where an image holds several faces."""
    totals = Counter(images)
    seen: Counter = Counter()
    names = []
    for image in images:
        names.append(f"{image}#{seen[image]}" if totals[image] > 1 else image)
        seen[image] += 1
    return names


def read_wflw(annotation_file: Union[str, Path], image_root: Union[str, Path]) -> List[FaceSample]:
    """Read one WFLW list (either format) into samples; images are ``image_root / name``.

    rect_attr lines give ``box`` (x_min, y_min, x_max, y_max), ``attributes`` (name -> 0/1) and
    ``subsets`` = the attributes set to 1. Points-only lines give ``subsets`` = the attribute in
    the file name (``list_98pt_test_blur.txt`` -> ``("blur",)``), or none.
    """
    path = Path(annotation_file)
    image_root = Path(image_root)
    rows = _parse_file(path)
    file_tag = _attribute_from_filename(path)
    samples = []
    for (image, landmarks, box, attributes), name in zip(rows, _unique_names([r[0] for r in rows])):
        if attributes is not None:
            subsets = tuple(a for a in WFLW_ATTRIBUTES if attributes[a])
        else:
            subsets = (file_tag,) if file_tag else ()
        samples.append(
            FaceSample(
                image=image_root / image,
                landmarks=landmarks,
                box=box,
                attributes=dict(attributes or {}),
                subsets=subsets,
                name=name,
            )
        )
    return samples


def read_wflw_attribute_lists(
    files: Union[str, Path, Sequence[Union[str, Path]]], image_root: Union[str, Path]
) -> List[FaceSample]:
    """Merge several points-only lists (e.g. the six ``list_98pt_test_<attr>.txt``) into distinct faces.

    ``files`` is a folder (every ``list_98pt_test_*.txt`` in it) or a list of files. A face listed
    in several files (same image name and identical coordinates) becomes one sample whose subsets
    are the union of the files' attributes, in :data:`WFLW_ATTRIBUTES` order. Faces are ordered
    by first appearance, files taken in sorted order.
    """
    if isinstance(files, (str, Path)) and Path(files).is_dir():
        paths = sorted(Path(files).glob("list_98pt_test_*.txt"))
        if not paths:
            raise ValueError(f"no list_98pt_test_*.txt files in {files}")
    else:
        paths = sorted(Path(f) for f in ([files] if isinstance(files, (str, Path)) else files))
    faces: Dict[Tuple[str, bytes], Tuple[np.ndarray, set]] = {}
    for path in paths:
        tag = _attribute_from_filename(path)
        for image, landmarks, _box, attributes in _parse_file(path):
            if attributes is not None:
                raise ValueError(f"{path} is a rect_attr list: read it with read_wflw, not read_wflw_attribute_lists")
            key = (image, landmarks.tobytes())
            entry = faces.setdefault(key, (landmarks, set()))
            if tag:
                entry[1].add(tag)
    keys = list(faces)
    names = _unique_names([image for image, _ in keys])
    image_root = Path(image_root)
    return [
        FaceSample(
            image=image_root / image,
            landmarks=faces[(image, blob)][0],
            subsets=tuple(a for a in WFLW_ATTRIBUTES if a in faces[(image, blob)][1]),
            name=name,
        )
        for (image, blob), name in zip(keys, names)
    ]
