"""pyg_sdfl.studies.shapes: reference landmark shapes, real or synthetic."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pyg_sdfl.studies import shapes


def _crop_frame(points: np.ndarray, scale: float = 1.2) -> np.ndarray:
    """Independent: centre of the landmark box, divided by scale x its longer side."""
    lo, hi = points.min(0), points.max(0)
    return (points - (lo + hi) / 2) / (scale * (hi - lo).max())


def test_reference_shapes_fall_back_to_synthetic_faces() -> None:
    s = shapes.load_reference_shapes("300w", None, synthetic_faces=30)
    assert not s.real and s.name == "synthetic" and "SYNTHETIC" in s.source
    assert s.shapes.shape == (30, 68, 2) and s.scheme.name == "300w"
    assert np.abs(s.shapes).max() <= 0.5 / 1.2 + 1e-9  # inside the crop, which is 1.2x the landmark box
    np.testing.assert_allclose(s.mean_shape, s.shapes.mean(0))
    assert shapes.load_reference_shapes("wflw", None) is None
    assert shapes.load_reference_shapes("300w", None, fallback=False) is None
    with pytest.raises(ValueError, match="unknown reference dataset"):
        shapes.load_reference_shapes("cofw", None)


def test_reference_shapes_real_300w(w300_root: Path) -> None:
    s = shapes.load_reference_shapes("300w", w300_root.parent)
    train = w300_root / "train"
    assert s.real and s.shapes.shape == (len(list(train.rglob("*.pts"))), 68, 2)
    # faces come part folder by part folder (sorted), files sorted: parse the first one independently
    first_part = sorted(p for p in train.iterdir() if p.is_dir())[0]
    first = sorted(first_part.rglob("*.pts"))[0]
    numbers = first.read_text().split("{")[1].split("}")[0].split()
    raw = np.array(numbers, dtype=float).reshape(68, 2) - 1.0  # 1-based -> 0-based pixel centres
    np.testing.assert_allclose(s.shapes[0], _crop_frame(raw), atol=1e-5)


def test_reference_shapes_real_wflw(wflw_annotations_root: Path) -> None:
    s = shapes.load_reference_shapes("wflw", wflw_annotations_root.parent)
    distinct = set()
    for path in wflw_annotations_root.glob("list_98pt_test_*.txt"):
        for line in path.read_text().splitlines():
            fields = line.split()
            if fields:
                distinct.add((fields[-1], tuple(fields[:196])))
    assert s.real and s.shapes.shape == (len(distinct), 98, 2)
