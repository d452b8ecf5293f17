"""dlib's face detector and rectangle convention ([peers] extra; skips with a reason without it)."""
from __future__ import annotations

import sys

import numpy as np
import pytest

from pyg_sdfl.detection import PEERS_EXTRA_HINT, require_dlib
from pyg_sdfl.geometry import landmark_box, match_detection


def test_missing_dlib_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "dlib", None)  # makes `import dlib` raise ImportError
    with pytest.raises(ImportError, match=r"\.\[peers\]"):
        require_dlib()
    assert "dlib-bin" in PEERS_EXTRA_HINT


@pytest.fixture(scope="module")
def dlib():
    return pytest.importorskip("dlib", reason=f"dlib is not installed (optional extra: {PEERS_EXTRA_HINT})")


def test_rectangle_conversion_round_trips(dlib):
    from pyg_sdfl.detection import box_to_rectangle, rectangle_to_box

    rect = dlib.rectangle(12, 30, 111, 140)
    box = rectangle_to_box(rect)
    assert box == (11.5, 29.5, 111.5, 140.5)  # pixel edges around columns 12..111, rows 30..140
    back = box_to_rectangle(dlib, box)
    assert (back.left(), back.top(), back.right(), back.bottom()) == (12, 30, 111, 140)


def test_dlib_detector_finds_real_300w_faces(dlib, w300_root):
    from pyg_sdfl.data import load_dataset
    from pyg_sdfl.detection import DlibFaceDetector

    detector = DlibFaceDetector(upsample=0)
    faces = load_dataset("300w", w300_root, "test")[:5]
    found = 0
    for face in faces:
        detections = detector(face.load_image())
        assert all(d.keypoints is None and d.box.dtype == np.float64 for d in detections)
        found += match_detection(landmark_box(face.landmarks), [d.box for d in detections], min_iou=0.3) is not None
    assert found >= 3
    with pytest.raises(ValueError, match="upsample"):
        DlibFaceDetector(upsample=-1)
