"""Every registered detector (one YAML in pyg_sdfl/configs/detector each) honours the Detector protocol:
check_detections passes on real faces and on a blank image, and it has a name and params that rebuild
it. A detector is skipped only when its optional package is missing, with the reason naming the extra
(``pip install ".[peers]"``); any other failure to build it fails the test."""
from __future__ import annotations

import json

import numpy as np
import pytest

from pyg_sdfl.detection import (
    Detection,
    Detector,
    available_detectors,
    check_detections,
    check_image,
    create_detector,
    detector_from_record,
)

EXTRA_MARK = 'pip install ".['  # how every optional detector's ImportError names its extra


def build_or_skip(name: str) -> Detector:
    """``create_detector(name)``; a skip (reason: the error, naming the extra) when its package is missing."""
    try:
        return create_detector(name)
    except ImportError as err:
        if EXTRA_MARK not in str(err):
            raise  # a registered detector whose module is missing, or an error that names no extra
        pytest.skip(f"detector {name!r} is not installed: {err}")


@pytest.fixture(scope="module", params=available_detectors())
def detector(request) -> Detector:
    return build_or_skip(request.param)


def test_every_detector_is_registered_under_its_name(detector, request):
    name = request.node.callspec.params["detector"]
    assert type(detector).name == detector.name == name


def test_params_are_json_and_rebuild_an_equal_detector(detector):
    params = detector.params
    assert json.loads(json.dumps(params)) == params
    again = detector_from_record({"name": detector.name, **params})
    assert type(again) is type(detector) and again.params == params
    assert type(detector).from_params(params).params == params


@pytest.fixture(scope="module")
def faces(w300_root):
    from pyg_sdfl.data import read_300w

    return read_300w(w300_root, folders=["test/lfpw"])[:3]


def test_detector_output_passes_the_protocol_check(detector, faces):
    assert isinstance(detector, Detector)  # __call__, name, params and from_params
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
