"""The Haar face detector (OpenCV) and the detector-box -> landmark-square mapping."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from pyg_sdfl.detection import (
    BoxMapping,
    Detection,
    HaarFaceDetector,
    box_iou,
    collect_box_pairs,
    default_box_mapping_path,
    fit_box_mapping,
    landmark_square,
    mapping_errors,
    match_detection,
)



@pytest.fixture(scope="module")
def detector() -> HaarFaceDetector:
    return HaarFaceDetector()


@pytest.fixture(scope="module")
def lfpw_test(w300_root):
    from pyg_sdfl.data import read_300w

    return read_300w(w300_root, folders=["test/lfpw"])


# ------------------------------------------------------------------------------ detector
def test_detector_finds_the_annotated_faces(detector, lfpw_test):
    matched = 0
    for sample in lfpw_test[:6]:
        detections = detector(sample.load_image())
        pts = sample.landmarks
        lbox = np.concatenate([pts.min(axis=0), pts.max(axis=0)])
        matched += match_detection(detections, lbox) is not None
        assert all(d.box.shape == (4,) and np.isfinite(d.score) for d in detections)
        assert [d.score for d in detections] == sorted((d.score for d in detections), reverse=True)
    assert matched >= 4


def test_detector_on_a_large_image_scales_boxes_back(detector, lfpw_test):
    image = lfpw_test[1].load_image()
    small = detector(image)
    assert small, "no face detected on the original image"
    factor = 3000 / image.shape[1]
    big = cv2.resize(image, None, fx=factor, fy=factor, interpolation=cv2.INTER_LINEAR)
    large = detector(big)  # detected on a <= 1024 px copy
    assert large
    best = large[int(np.argmax(box_iou(np.stack([d.box for d in large]), (small[0].box + 0.5) * factor - 0.5)[:, 0]))]
    side_small = small[0].box[2] - small[0].box[0]
    np.testing.assert_allclose((best.box + 0.5) / factor - 0.5, small[0].box, atol=0.1 * side_small)


def test_detector_on_blank_and_bad_input(detector):
    assert detector(np.full((300, 400, 3), 127, np.uint8)) == []
    with pytest.raises(ValueError, match="uint8"):
        detector(np.zeros((30, 30, 3), np.float32))
    with pytest.raises(ValueError, match="scale_factor"):
        HaarFaceDetector(scale_factor=1.0)


# ------------------------------------------------------------------------------ mapping
def test_match_detection_hand_example():
    landmark_box = np.array([100.0, 100.0, 200.0, 220.0])
    dets = [Detection(np.array([0.0, 0.0, 90.0, 90.0]), 5.0),        # centre outside
            Detection(np.array([110.0, 90.0, 190.0, 170.0]), 1.0),   # inside, IoU 0.37
            Detection(np.array([140.0, 140.0, 160.0, 160.0]), 9.0)]  # inside, IoU 0.03
    assert match_detection(dets, landmark_box) == 1
    assert match_detection(dets[:1], landmark_box) is None
    assert match_detection([], landmark_box) is None


def test_mapping_formula_by_hand():
    m = BoxMapping(a_x=0.5, a_y=0.6, s=1.2)
    sq = m.squares(np.array([[10.0, 20.0, 110.0, 120.0]]))
    np.testing.assert_allclose(sq, [[60.0, 80.0, 120.0]])
    assert landmark_square(np.array([[0.0, 0.0], [10.0, 4.0]])) == (5.0, 2.0, 10.0)
    with pytest.raises(ValueError, match="positive"):
        BoxMapping(0.5, 0.5, 0.0)
    with pytest.raises(ValueError, match="x1 <= x0"):
        m.squares(np.array([[10.0, 20.0, 5.0, 120.0]]))


def test_fit_recovers_known_parameters_despite_outliers():
    rng = np.random.default_rng(0)
    m = 300
    side = rng.uniform(40, 400, m)
    x0, y0 = rng.uniform(0, 1000, m), rng.uniform(0, 1000, m)
    boxes = np.stack([x0, y0, x0 + side, y0 + side], axis=1)
    truth = BoxMapping(a_x=0.49, a_y=0.62, s=1.31)
    squares = truth.squares(boxes)
    squares += rng.normal(0, 0.02, (m, 3)) * side[:, None]  # 2% of the box side
    squares[:10, :2] += side[:10, None] * 3.0               # ten wrong matches
    fitted = fit_box_mapping(boxes, squares, trim=4.0)
    assert (fitted.a_x, fitted.a_y, fitted.s) == pytest.approx((0.49, 0.62, 1.31), abs=0.01)
    assert fitted.info["faces_trimmed"] >= 10 and fitted.info["faces_used"] >= m - 20
    untrimmed = fit_box_mapping(boxes, squares, trim=None)
    assert abs(untrimmed.a_x - 0.49) > 0.05  # the outliers do pull a plain mean
    with pytest.raises(ValueError, match="at least 3"):
        fit_box_mapping(boxes[:2], squares[:2])


def test_mapping_json_round_trip(tmp_path):
    m = BoxMapping(0.5, 0.6, 1.3, detector={"min_size": 30}, info={"faces_used": 7})
    back = BoxMapping.load(m.save(tmp_path / "m.json"))
    assert back == m
    (tmp_path / "bad.json").write_text(json.dumps({"a_x": 1.0}))
    with pytest.raises(ValueError, match="missing"):
        BoxMapping.load(tmp_path / "bad.json")


@pytest.mark.skipif(not default_box_mapping_path().is_file(), reason="pyg_sdfl/weights/haar_box_mapping.json is absent")
def test_shipped_mapping_brings_detections_to_the_landmark_square(detector, lfpw_test):
    """Held-out 300-W test faces (LFPW part): the mapped Haar box against the true landmark
    square. Every 5th face (45) keeps the test quick; the numbers on all 224 are in the JSON.
    The centre error is mostly horizontal (head yaw moves the jaw line, which the landmark box
    follows and the detector box does not), so medians of small subsets vary by a few percent."""
    mapping = BoxMapping.load(default_box_mapping_path())
    assert mapping.info["faces_used"] >= 500
    subset = lfpw_test[::5]
    boxes, squares, missed = collect_box_pairs(subset, HaarFaceDetector.from_params(mapping.detector))
    assert len(boxes) >= 0.8 * len(subset), f"only {len(boxes)} of {len(subset)} faces detected"
    errors = mapping_errors(mapping, boxes, squares)
    assert np.median(errors["centre"]) < 0.10
    assert abs(np.median(errors["side_ratio"]) - 1.0) < 0.15
    # the raw detector box is clearly worse as a landmark square: the mapping does real work
    raw = BoxMapping(0.5, 0.5, 1.0)
    raw_errors = mapping_errors(raw, boxes, squares)
    assert np.median(raw_errors["centre"]) + abs(np.median(raw_errors["side_ratio"]) - 1) > \
        np.median(errors["centre"]) + abs(np.median(errors["side_ratio"]) - 1)


def test_cli_fit_box_mapping_on_a_few_faces(w300_root, tmp_path):
    from pyg_sdfl.cli import main

    out = tmp_path / "mapping.json"
    assert main(["fit-box-mapping", "--root", str(w300_root), "--limit", "12", "--no-test", "--out", str(out)]) == 0
    fitted = BoxMapping.load(out)
    assert fitted.info["faces_total"] == 12 and fitted.info["faces_used"] >= 6
    assert 0.3 < fitted.a_x < 0.7 and 0.8 < fitted.s < 2.0
