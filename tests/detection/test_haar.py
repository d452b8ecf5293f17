"""The Haar face detector (OpenCV) on real 300-W faces."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from pyg_sdfl.detection import HaarFaceDetector
from pyg_sdfl.geometry import box_iou, landmark_box, match_detection


def test_detector_finds_the_annotated_faces(detector, lfpw_test):
    matched = 0
    for sample in lfpw_test[:6]:
        detections = detector(sample.load_image())
        matched += match_detection(landmark_box(sample.landmarks), [d.box for d in detections]) is not None
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


def test_params_round_trip():
    detector = HaarFaceDetector(scale_factor=1.2, min_neighbors=3, min_size=40, max_side=800)
    again = HaarFaceDetector.from_params(detector.params)
    assert again.params == detector.params
    assert "scale_factor=1.2" in repr(again)
