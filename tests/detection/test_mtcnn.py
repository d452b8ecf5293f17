"""The MTCNN detector: its box arithmetic by hand, its weights, and real 300-W faces.

The arithmetic tests always run; the ones needing the networks skip with a reason naming the
[mtcnn] extra when facenet-pytorch (the source of the weight files) is absent. facenet-pytorch is
never imported (its import pulls torchvision's compiled ops): it is found with find_spec.
"""
from __future__ import annotations

import importlib.util
import json

import cv2
import numpy as np
import pytest
import torch

from pyg_sdfl.detection import Detector, check_detections
from pyg_sdfl.detection.mtcnn import (
    MTCNN_EXTRA_HINT,
    MTCNNDetector,
    ONet,
    PNet,
    RNet,
    crop_patches,
    load_mtcnn_nets,
    mtcnn_weights_dir,
    nms,
    pyramid_scales,
    regress_boxes,
    square_boxes,
)
from pyg_sdfl.geometry import box_iou, landmark_box, match_detection

#: keypoint tolerance, as a fraction of the inter-ocular distance (between the two eye centres)
KEYPOINT_TOLERANCE = 0.25


# ----------------------------------------------------------------------------- NMS by hand
# A (0,0,10,10) area 100; B (0,0,10,8) area 80 inside A: IoU 80/100 = 0.8, min-overlap 80/80 = 1;
# C (5,0,15,10): IoU with A 50/150 = 1/3, min-overlap 50/100 = 0.5; D (2,2,4,4) area 4 inside A and
# B: IoU 0.04 and 0.05, min-overlap 1, disjoint from C; E far away.
BOXES = np.array([[0, 0, 10, 10], [0, 0, 10, 8], [5, 0, 15, 10], [2, 2, 4, 4], [40, 40, 50, 50]], float)
SCORES = np.array([0.9, 0.8, 0.7, 0.95, 0.1])


def test_nms_union_by_hand():
    # visit D (kept), A (kept; suppresses B at IoU 0.8), C (IoU 1/3 with A: kept), E (kept)
    keep = nms(BOXES, SCORES, 0.5)
    assert keep.dtype == np.int64 and keep.tolist() == [3, 0, 2, 4]
    # at 0.3 C's IoU 1/3 with A suppresses it too
    assert nms(BOXES, SCORES, 0.3).tolist() == [3, 0, 4]


def test_nms_min_by_hand():
    # D comes first and lies inside A and B (min-overlap 1): both go; C and E stay
    assert nms(BOXES, SCORES, 0.5, mode="min").tolist() == [3, 2, 4]
    # without D: A suppresses B (1.0 > 0.5) but not C (exactly 0.5 is kept: "> threshold" drops)
    assert nms(BOXES[[0, 1, 2, 4]], SCORES[[0, 1, 2, 4]], 0.5, mode="min").tolist() == [0, 2, 3]
    assert nms(BOXES[[0, 1, 2, 4]], SCORES[[0, 1, 2, 4]], 0.49, mode="min").tolist() == [0, 3]


def test_nms_edge_cases():
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5).tolist() == []
    assert nms([[0, 0, 1, 1], [0, 0, 1, 1]], [0.5, 0.5], 0.5).tolist() == [0]  # ties: the first one
    assert nms([[0, 0, 0, 0], [0, 0, 0, 0]], [0.2, 0.9], 0.5).tolist() == [1, 0]  # zero areas overlap 0
    with pytest.raises(ValueError, match="mode"):
        nms(BOXES, SCORES, 0.5, mode="max")
    with pytest.raises(ValueError, match="scores"):
        nms(BOXES, SCORES[:3], 0.5)
    with pytest.raises(ValueError, match="iou_threshold"):
        nms(BOXES, SCORES, 1.5)


# ----------------------------------------------------------------------------- pyramid, regression
def test_pyramid_scales_by_hand():
    # 12 / 20 = 0.6; min side 100: 60, 30, 15 px hold a 12-px cell, 7.5 does not
    assert pyramid_scales(100, 200, min_face_size=20, scale_factor=0.5) == pytest.approx([0.6, 0.3, 0.15])
    # the defaults on 50 x 50: 30, 21.27, 15.08 px, then 10.69 < 12 stops
    assert pyramid_scales(50, 50) == pytest.approx([0.6, 0.6 * 0.709, 0.6 * 0.709 ** 2])
    assert pyramid_scales(20, 30) == pytest.approx([0.6])  # exactly one cell: 20 * 0.6 = 12
    assert pyramid_scales(19, 30) == []  # smaller than the smallest face
    # min_face_size 12 starts at the image itself: 100, 50, 25, 12.5 px, then 6.25 stops
    assert pyramid_scales(100, 100, min_face_size=12, scale_factor=0.5) == pytest.approx([1.0, 0.5, 0.25, 0.125])
    with pytest.raises(ValueError, match="scale_factor"):
        pyramid_scales(100, 100, scale_factor=1.0)


def test_regress_boxes_by_hand():
    box = [[10, 20, 30, 60]]  # w 20, h 40
    out = regress_boxes(box, [[0.1, -0.25, 0.5, 0.0]])
    np.testing.assert_allclose(out, [[12, 10, 40, 60]])  # 10 + 2, 20 - 10, 30 + 10, 60 + 0
    assert out.dtype == np.float64
    with pytest.raises(ValueError, match="offsets"):
        regress_boxes(box, np.zeros((2, 4)))


def test_square_boxes_by_hand():
    out = square_boxes([[10, 20, 30, 60], [0, 0, 8, 2]])
    # centre (20, 40), side 40; centre (4, 1), side 8
    np.testing.assert_allclose(out, [[0, 20, 40, 60], [0, -3, 8, 5]])
    np.testing.assert_allclose(square_boxes(out), out)  # squares stay


def test_crop_patches_snaps_and_zero_pads():
    image = (np.arange(4 * 4 * 3).reshape(4, 4, 3) + 1).astype(np.uint8)
    # (-1.4, -1.6, 1.4, 1.6): edges snap to -1.5 and 1.5, so columns and rows -1..1 (one outside)
    patches, crop_boxes = crop_patches(image, np.array([[-1.4, -1.6, 1.4, 1.6], [0.6, 0.5, 2.4, 2.5]]), 3)
    np.testing.assert_allclose(crop_boxes, [[-1.5, -1.5, 1.5, 1.5], [0.5, 0.5, 2.5, 2.5]])
    expected = np.zeros((3, 3, 3), np.uint8)
    expected[1:, 1:] = image[:2, :2]
    np.testing.assert_array_equal(patches[0], expected)
    assert patches.shape == (2, 3, 3, 3)  # the 2 x 2 second box, resized (INTER_AREA) to 3 x 3
    np.testing.assert_array_equal(patches[1], cv2.resize(image[1:3, 1:3], (3, 3), interpolation=cv2.INTER_AREA))


# ----------------------------------------------------------------------------- the weights
def test_missing_package_error_names_the_extra(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "facenet_pytorch" else real(name, *args))
    with pytest.raises(ImportError, match=r'pip install "\.\[mtcnn\]"'):
        mtcnn_weights_dir()
    with pytest.raises(ImportError, match=r"\.\[mtcnn\]"):
        MTCNNDetector()
    assert "facenet-pytorch==2.5.3" in MTCNN_EXTRA_HINT


@pytest.fixture(scope="module")
def weights():
    if importlib.util.find_spec("facenet_pytorch") is None:
        pytest.skip(f"facenet-pytorch is not installed (optional extra: {MTCNN_EXTRA_HINT})")
    return mtcnn_weights_dir()


SHAPES = {
    "pnet": {"conv1.weight": (10, 3, 3, 3), "conv2.weight": (16, 10, 3, 3), "conv3.weight": (32, 16, 3, 3),
             "conv4_1.weight": (2, 32, 1, 1), "conv4_2.weight": (4, 32, 1, 1), "prelu3.weight": (32,)},
    "rnet": {"conv1.weight": (28, 3, 3, 3), "conv2.weight": (48, 28, 3, 3), "conv3.weight": (64, 48, 2, 2),
             "dense4.weight": (128, 576), "prelu4.weight": (128,), "dense5_1.weight": (2, 128),
             "dense5_2.weight": (4, 128)},
    "onet": {"conv1.weight": (32, 3, 3, 3), "conv2.weight": (64, 32, 3, 3), "conv3.weight": (64, 64, 3, 3),
             "conv4.weight": (128, 64, 2, 2), "dense5.weight": (256, 1152), "prelu5.weight": (256,),
             "dense6_1.weight": (2, 256), "dense6_2.weight": (4, 256), "dense6_3.weight": (10, 256)},
}


def test_weights_load_strictly(weights):
    pnet, rnet, onet = load_mtcnn_nets()
    for name, net in (("pnet", pnet), ("rnet", rnet), ("onet", onet)):
        state = torch.load(weights / f"{name}.pt", map_location="cpu", weights_only=True)
        assert state.keys() == net.state_dict().keys()
        for key, shape in SHAPES[name].items():
            assert tuple(net.state_dict()[key].shape) == shape, (name, key)
            torch.testing.assert_close(net.state_dict()[key], state[key])
        assert not net.training
    with pytest.raises(RuntimeError):  # strict loading: another net's file does not fit
        RNet().load_state_dict(torch.load(weights / "onet.pt", weights_only=True), strict=True)
    with torch.no_grad():
        prob, reg = pnet(torch.zeros(1, 3, 14, 12))  # windows at rows 0 and 2 of a 14-row image
        assert prob.shape == (1, 2, 1) and reg.shape == (1, 4, 2, 1)
        prob, reg = rnet(torch.zeros(3, 3, 24, 24))
        assert prob.shape == (3,) and reg.shape == (3, 4) and ((prob >= 0) & (prob <= 1)).all()
        prob, reg, points = onet(torch.zeros(3, 3, 48, 48))
        assert prob.shape == (3,) and reg.shape == (3, 4) and points.shape == (3, 10)
    assert isinstance(PNet(), torch.nn.Module) and isinstance(ONet(), torch.nn.Module)


# ----------------------------------------------------------------------------- the detector
@pytest.fixture(scope="module")
def mtcnn(weights) -> MTCNNDetector:
    return MTCNNDetector()


@pytest.fixture(scope="module")
def lfpw20(lfpw_test):
    return lfpw_test[:20]


def _reference_keypoints(landmarks: np.ndarray) -> np.ndarray:
    """The 5 MTCNN points from 300-W's 68: eye centres (36-41, 42-47), nose tip 30, mouth corners 48, 54."""
    L = np.asarray(landmarks, dtype=np.float64)
    return np.stack([L[36:42].mean(0), L[42:48].mean(0), L[30], L[48], L[54]])


def test_detector_finds_real_faces_and_their_keypoints(mtcnn, lfpw20):
    found, errors = 0, []
    for sample in lfpw20:
        image = sample.load_image()
        detections = check_detections(mtcnn(image), image.shape)
        for d in detections:
            assert d.keypoints.shape == (5, 2) and d.keypoints.dtype == np.float64
            assert 0.7 <= d.score <= 1.0  # O-Net's probability, above its threshold
        j = match_detection(landmark_box(sample.landmarks), [d.box for d in detections])
        if j is None:
            continue
        found += 1
        ref = _reference_keypoints(sample.landmarks)
        iod = np.linalg.norm(ref[1] - ref[0])
        errors.append(np.linalg.norm(detections[j].keypoints - ref, axis=1) / iod)
    assert found >= 19, f"found the annotated face in only {found} of {len(lfpw20)} images"
    errors = np.array(errors)
    # measured on these 20: every face found, mean error 0.05-0.08 IOD per point, 19 of 20 faces
    # with all 5 points within 0.25 IOD (one at 0.44); on all 224 LFPW test faces 222 of 224
    within = (errors.max(axis=1) < KEYPOINT_TOLERANCE).sum()
    assert within >= 18, f"only {within} of {found} faces have all 5 keypoints within {KEYPOINT_TOLERANCE} IOD"
    assert (errors.mean(axis=0) < 0.12).all(), errors.mean(axis=0)
    # the order: the image-left eye first, then the image-right one; mouth corners likewise
    assert np.median(errors[:, [0, 1, 3, 4]]) < 0.1


def test_detector_on_gray_and_large_images(mtcnn, lfpw20):
    image = lfpw20[1].load_image()
    colour = mtcnn(image)
    assert colour
    gray = mtcnn(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY))
    assert gray and box_iou(gray[0].box, colour[0].box)[0, 0] > 0.8
    factor = 3000 / image.shape[1]
    big = cv2.resize(image, None, fx=factor, fy=factor, interpolation=cv2.INTER_LINEAR)
    large = check_detections(mtcnn(big), big.shape)  # detected on a <= 1024 px copy
    assert large
    best = large[int(np.argmax(box_iou(np.stack([d.box for d in large]), (colour[0].box + 0.5) * factor - 0.5)[:, 0]))]
    side = colour[0].box[2] - colour[0].box[0]
    np.testing.assert_allclose((best.box + 0.5) / factor - 0.5, colour[0].box, atol=0.1 * side)
    np.testing.assert_allclose((best.keypoints + 0.5) / factor - 0.5, colour[0].keypoints, atol=0.05 * side)


def test_detector_on_blank_and_bad_input(mtcnn):
    assert isinstance(mtcnn, Detector) and MTCNNDetector.name == "mtcnn"
    assert mtcnn(np.full((300, 400, 3), 127, np.uint8)) == []
    assert mtcnn(np.zeros((8, 8, 3), np.uint8)) == []  # smaller than one P-Net window
    with pytest.raises(ValueError, match="uint8"):
        mtcnn(np.zeros((30, 30, 3), np.float32))
    with pytest.raises(ValueError, match="uint8"):
        mtcnn(np.zeros((30, 30, 4), np.uint8))


@pytest.mark.parametrize("kwargs, message", [
    ({"min_face_size": 8}, "min_face_size"),
    ({"min_face_size": "big"}, "min_face_size"),
    ({"thresholds": (0.6, 0.7)}, "thresholds"),
    ({"thresholds": (0.6, 0.7, 1.0)}, "thresholds"),
    ({"nms_thresholds": (0.0, 0.7, 0.7)}, "nms_thresholds"),
    ({"scale_factor": 1.0}, "scale_factor"),
    ({"max_side": 16}, "max_side"),
    ({"device": "no-such-device"}, "device"),
])
def test_bad_settings_raise(kwargs, message):  # checked before the weights are read
    with pytest.raises(ValueError, match=message):
        MTCNNDetector(**kwargs)


def test_params_round_trip(weights):
    detector = MTCNNDetector(min_face_size=40, thresholds=(0.5, 0.6, 0.8), nms_thresholds=(0.6, 0.7, 0.6),
                             scale_factor=0.6, max_side=800)
    params = json.loads(json.dumps(detector.params))
    assert params == detector.params
    again = MTCNNDetector.from_params(params)
    assert again.params == detector.params
    assert "min_face_size=40.0" in repr(again) and "thresholds=[0.5, 0.6, 0.8]" in repr(again)
