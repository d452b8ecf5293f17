"""Every detector honours the Detector protocol: check_detections passes on real faces and on a blank
image. Haar always runs; dlib skips with a reason when the [peers] extra is absent."""
from __future__ import annotations

import numpy as np
import pytest

from pyg_sdfl.detection import (
    PEERS_EXTRA_HINT,
    Detection,
    Detector,
    DlibFaceDetector,
    HaarFaceDetector,
    check_detections,
    check_image,
)


def _haar() -> Detector:
    return HaarFaceDetector()


def _dlib() -> Detector:
    pytest.importorskip("dlib", reason=f"dlib is not installed (optional extra: {PEERS_EXTRA_HINT})")
    return DlibFaceDetector()


DETECTORS = {"haar": _haar, "dlib": _dlib}


@pytest.fixture(scope="module", params=sorted(DETECTORS))
def detector(request) -> Detector:
    return DETECTORS[request.param]()


@pytest.fixture(scope="module")
def faces(w300_root):
    from pyg_sdfl.data import read_300w

    return read_300w(w300_root, folders=["test/lfpw"])[:3]


def test_detector_output_passes_the_protocol_check(detector, faces):
    assert isinstance(detector, Detector)
    found = 0
    for face in faces:
        image = face.load_image()
        detections = check_detections(detector(image), image.shape)
        found += len(detections) > 0
    assert found >= 2, f"{detector!r} found faces in only {found} of {len(faces)} images"


def test_detector_on_a_blank_image_and_bad_input(detector):
    blank = np.full((240, 320, 3), 127, np.uint8)
    assert check_detections(detector(blank), blank.shape) == []
    with pytest.raises(ValueError, match="uint8"):
        detector(np.zeros((30, 30, 3), np.float32))


# ----------------------------------------------------------------------------- the check itself
def _det(box, score=1.0, keypoints=None) -> Detection:
    return Detection(np.asarray(box, dtype=np.float64), score, keypoints)


def test_check_detections_accepts_good_output():
    dets = [_det([0, 0, 10, 10], 2.0, np.zeros((5, 2))), _det([5, 5, 20, 20], 1.0)]
    assert check_detections(dets, (50, 60, 3)) is dets
    assert check_detections([], (50, 60)) == []


@pytest.mark.parametrize("bad, message", [
    ((_det([0, 0, 10, 10]),), "list"),
    ([np.zeros(4)], "not a Detection"),
    ([Detection(np.zeros(4, np.float32), 1.0)], "float64"),
    ([_det([10, 0, 5, 10])], "x1 <= x0"),
    ([_det([100, 0, 110, 10])], "outside"),
    ([_det([0, 0, 10, 10], float("nan"))], "finite float"),
    ([_det([0, 0, 10, 10], 1)], "finite float"),
    ([_det([0, 0, 10, 10], 1.0, np.zeros((68, 2)))], "keypoints"),
    ([_det([0, 0, 10, 10], 1.0), _det([0, 0, 10, 10], 2.0)], "sorted"),
])
def test_check_detections_names_the_problem(bad, message):
    with pytest.raises(ValueError, match=message):
        check_detections(bad, (50, 60, 3))


def test_check_image():
    gray = np.zeros((4, 5), np.uint8)
    assert check_image(gray).shape == (4, 5)
    assert check_image(np.zeros((6, 4, 3), np.uint8)[::2]).flags["C_CONTIGUOUS"]
    for bad in (np.zeros((4, 5, 4), np.uint8), np.zeros((4, 5), np.float64), np.zeros(3, np.uint8)):
        with pytest.raises(ValueError, match="uint8"):
            check_image(bad)
