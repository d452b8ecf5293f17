"""300-W style folders: ``<stem>.pts`` next to ``<stem>.<jpg|png|...>``.

A ``.pts`` file is either headered (the 300-W/iBUG release)::

    version: 1
    n_points:  68
    {
    94.167660 108.807529
    ...
    }

or header-less, one ``x y`` pair per line. Both store 1-based pixel coordinates (MATLAB
convention); :func:`read_pts` returns 0-based pixel centres (``x - 1, y - 1``).
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence, Union

import numpy as np

from pyg_sdfl.data.sample import FaceSample, check_points
from pyg_sdfl.schemes import LandmarkScheme, get_scheme

__all__ = ["read_pts", "read_300w", "IMAGE_EXTENSIONS"]

IMAGE_EXTENSIONS = (".jpg", ".png", ".jpeg", ".bmp", ".JPG", ".PNG", ".JPEG", ".BMP")


def _parse_pairs(lines: Sequence[str], first_line_no: int, path: Path) -> np.ndarray:
    values = []
    for k, line in enumerate(lines):
        text = line.strip()
        if not text:
            continue
        parts = text.split()
        if len(parts) != 2:
            raise ValueError(f"{path}, line {first_line_no + k}: expected 'x y', got {text!r}")
        try:
            values.append((float(parts[0]), float(parts[1])))
        except ValueError:
            raise ValueError(f"{path}, line {first_line_no + k}: not numbers: {text!r}") from None
    return np.asarray(values, dtype=np.float64).reshape(-1, 2)


def read_pts(path: Union[str, Path], num_points: Optional[int] = None, one_based: bool = True) -> np.ndarray:
    """Read a ``.pts`` file (headered or not) into float32 ``(N, 2)`` 0-based pixel centres.

    Args:
        path: the file.
        num_points: if given, the file must hold exactly this many points.
        one_based: the file stores 1-based coordinates (300-W); subtract 1.

    Raises:
        ValueError naming the file: malformed lines, a header ``n_points`` that disagrees with
        the body, the wrong number of points (expected and found), NaN or infinite values.
    """
    path = Path(path)
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    open_idx = next((i for i, l in enumerate(lines) if l.strip() == "{"), None)
    if open_idx is None:
        if any(l.strip() == "}" for l in lines):
            raise ValueError(f"{path}: found '}}' without an opening '{{'")
        points = _parse_pairs(lines, 1, path)
    else:
        header = {}
        for line in lines[:open_idx]:
            if ":" in line:
                key, value = line.split(":", 1)
                header[key.strip().lower()] = value.strip()
            elif line.strip():
                raise ValueError(f"{path}: unexpected header line {line.strip()!r}")
        close_idx = next((i for i in range(open_idx + 1, len(lines)) if lines[i].strip() == "}"), None)
        if close_idx is None:
            raise ValueError(f"{path}: no closing '}}' after the points")
        points = _parse_pairs(lines[open_idx + 1 : close_idx], open_idx + 2, path)
        if "n_points" in header:
            try:
                declared = int(header["n_points"])
            except ValueError:
                raise ValueError(f"{path}: bad header n_points: {header['n_points']!r}") from None
            if declared != len(points):
                raise ValueError(f"{path}: header says n_points: {declared} but the file lists {len(points)} points")
    if len(points) == 0:
        raise ValueError(f"{path}: no points found")
    if num_points is not None and len(points) != num_points:
        raise ValueError(f"{path}: expected {num_points} points, found {len(points)}")
    points = check_points(points, str(path))
    return points - 1.0 if one_based else points


def _find_image(pts_path: Path) -> Path:
    for ext in IMAGE_EXTENSIONS:
        candidate = pts_path.with_suffix(ext)
        if candidate.is_file():
            return candidate
    # Not found now: keep the conventional name so the failure is reported when (if) it is loaded.
    return pts_path.with_suffix(".jpg")


def read_300w(
    root: Union[str, Path],
    folders: Optional[Sequence[str]] = None,
    scheme: Union[str, LandmarkScheme] = "300w",
) -> List[FaceSample]:
    """Read every ``.pts`` face below ``root`` (or below each of ``folders``, relative to root).

    Files are visited recursively, in sorted order. Each sample gets:
    ``name`` = the ``.pts`` path relative to ``root`` without suffix (e.g. ``"train/lfpw/image_0001"``),
    ``subsets`` = ``(leaf folder name,)`` (e.g. ``("lfpw",)``), ``image`` = the image next to it
    (any of :data:`IMAGE_EXTENSIONS`; the image need not exist until it is loaded).

    Raises ``ValueError`` if a folder is missing, no ``.pts`` is found, or a file does not have
    ``scheme.num_points`` finite points.
    """
    root = Path(root)
    scheme = get_scheme(scheme)
    if not root.is_dir():
        raise ValueError(f"300-W root folder not found: {root}")
    if folders is None:
        pts_files = sorted(root.rglob("*.pts"))
    else:
        if isinstance(folders, str):
            folders = [folders]
        pts_files = []
        for folder in folders:
            directory = root / folder
            if not directory.is_dir():
                raise ValueError(f"300-W folder not found: {directory}")
            pts_files.extend(sorted(directory.rglob("*.pts")))
    if not pts_files:
        where = root if folders is None else [str(root / f) for f in folders]
        raise ValueError(f"no .pts files found under {where}")
    samples = []
    for pts in pts_files:
        landmarks = read_pts(pts, num_points=scheme.num_points)
        samples.append(
            FaceSample(
                image=_find_image(pts),
                landmarks=landmarks,
                subsets=(pts.parent.name,),
                name=pts.relative_to(root).with_suffix("").as_posix(),
            )
        )
    return samples
