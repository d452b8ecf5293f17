"""The yuface (libfacedetection / YuNet) detector: its conventions on a stand-in module, then on real
300-W faces ([yuface] extra; those tests skip with a reason naming it when the wheel is absent)."""
from __future__ import annotations

import sys
import types
import warnings

import cv2
import numpy as np
import pytest

from pyg_sdfl.detection import YUFACE_EXTRA_HINT, YuFaceDetector, check_detections, require_yuface
from pyg_sdfl.detection.yuface import signed_int16
from pyg_sdfl.geometry import landmark_box, match_detection

# The 300-W points the five keypoints correspond to: eye centres (means of the six contour points),
# nose tip, outer mouth corners. Each image-left point comes first.
KEYPOINT_REFERENCE = "mean(36..41), mean(42..47), 30, 48, 54"


def reference_keypoints(landmarks: np.ndarray) -> np.ndarray:
    pts = np.asarray(landmarks, dtype=np.float64)
    return np.stack([pts[36:42].mean(0), pts[42:48].mean(0), pts[30], pts[48], pts[54]])


# ----------------------------------------------------------------------------- without the wheel
def test_missing_yuface_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "yuface", None)  # makes `import yuface` raise ImportError
    with pytest.raises(ImportError, match=r"\.\[yuface\]"):
        require_yuface()
    with pytest.raises(ImportError, match=r"\.\[yuface\]"):
        YuFaceDetector()
    assert "yuface==" in YUFACE_EXTRA_HINT


def test_signed_int16_reads_the_wrapped_values_back():
    np.testing.assert_array_equal(signed_int16(np.array([65535, 65526, 5, 32767], np.uint16)), [-1, -10, 5, 32767])
    np.testing.assert_array_equal(signed_int16(np.array([-3, 7], np.int16)), [-3, 7])


@pytest.fixture
def fake_yuface(monkeypatch):
    """A stand-in ``yuface`` module that records what it is given and returns fixed faces, in the
    wheel's layout (a uint16 build: -10 arrives as 65526)."""
    module = types.ModuleType("yuface")
    module.calls = []

    def detect(img, conf=0.5):
        module.calls.append((img.shape, img.dtype, img.flags["C_CONTIGUOUS"], img[0, 0].tolist(), conf))
        confs = np.array([40, 90, 70], np.uint16)
        boxes = np.array([[10, 10, 20, 20], [65526, 5, 50, 60], [30, 20, 2, 2]], np.uint16)
        kps = np.array([[12, 14, 18, 14, 15, 17, 13, 20, 17, 20],
                        [65535, 20, 20, 20, 10, 30, 0, 40, 20, 40],
                        [31, 21, 31, 21, 31, 21, 31, 21, 31, 21]], np.uint16)
        return confs, boxes, kps

    module.detect = detect
    monkeypatch.setitem(sys.modules, "yuface", module)
    return module


def test_conversion_to_the_package_convention_by_hand(fake_yuface):
    """A 200 x 100 RGB image, max_side 100: the wheel sees a 100 x 50 BGR copy (factor 2 back).
    Face 90: x = -10 (cut by the border), y = 5, w = 50, h = 60 of the copy -> edges -20, 10, 80, 130
    of the image -> box (-20.5, 9.5, 79.5, 129.5), clipped to (-0.5, 9.5, 79.5, 99.5)."""
    image = np.zeros((100, 200, 3), np.uint8)
    image[..., 0], image[..., 1], image[..., 2] = 10, 20, 30  # R, G, B
    detector = YuFaceDetector(score_threshold=0.5, max_side=100)
    dets = check_detections(detector(image), image.shape)
    (shape, dtype, contiguous, first_pixel, _), = fake_yuface.calls
    assert shape == (50, 100, 3) and dtype == np.uint8 and contiguous and first_pixel == [30, 20, 10]  # BGR
    assert [d.score for d in dets] == [0.9, 0.7]  # 0.4 < 0.5 is dropped; most confident first
    np.testing.assert_array_equal(dets[0].box, [-0.5, 9.5, 79.5, 99.5])
    assert dets[0].box.dtype == np.float64 and isinstance(dets[0].score, float)
    np.testing.assert_array_equal(dets[0].keypoints, [[-2.5, 39.5], [39.5, 39.5], [19.5, 59.5], [-0.5, 79.5],
                                                      [39.5, 79.5]])
    assert dets[0].keypoints.dtype == np.float64 and dets[0].keypoints.shape == (5, 2)
    np.testing.assert_array_equal(dets[1].box, [59.5, 39.5, 63.5, 43.5])  # (30, 20, 2, 2) * 2 - 0.5


def test_threshold_min_size_and_gray_input(fake_yuface):
    gray = np.zeros((60, 80), np.uint8)
    assert [d.score for d in YuFaceDetector(score_threshold=0.0)(gray)] == [0.9, 0.7, 0.4]
    assert fake_yuface.calls[-1][0] == (60, 80, 3)  # gray is given to the wheel as 3-channel BGR
    assert fake_yuface.calls[-1][4] == 0.0  # the threshold is applied here (score >= threshold)
    assert [d.score for d in YuFaceDetector(score_threshold=0.7)(gray)] == [0.9, 0.7]
    assert [d.score for d in YuFaceDetector(score_threshold=0.0, min_size=3)(gray)] == [0.9, 0.4]  # 2 px face dropped


@pytest.mark.parametrize("kwargs, message", [
    ({"score_threshold": 1.5}, "score_threshold"),
    ({"score_threshold": -0.1}, "score_threshold"),
    ({"score_threshold": float("nan")}, "score_threshold"),
    ({"max_side": 16}, "max_side"),
    ({"max_side": 640.0}, "max_side"),
    ({"max_side": True}, "max_side"),
    ({"min_size": -1}, "min_size"),
])
def test_bad_settings_are_refused(kwargs, message, fake_yuface):
    with pytest.raises(ValueError, match=message):
        YuFaceDetector(**kwargs)


def test_params_round_trip(fake_yuface):
    detector = YuFaceDetector(score_threshold=0.6, max_side=640, min_size=20)
    assert detector.params == {"score_threshold": 0.6, "max_side": 640, "min_size": 20}
    assert YuFaceDetector.from_params({**detector.params, "name": "yuface"}).params == detector.params
    assert YuFaceDetector.name == "yuface" and "max_side=640" in repr(detector)


# ----------------------------------------------------------------------------- the real wheel
@pytest.fixture(scope="module")
def yuface():
    return pytest.importorskip("yuface", reason=f"yuface is not installed (optional extra: {YUFACE_EXTRA_HINT})")


@pytest.fixture(scope="module")
def detector(yuface) -> YuFaceDetector:
    return YuFaceDetector()


@pytest.fixture(scope="module")
def faces(lfpw_test):
    return lfpw_test[::11]  # 21 of the 224 LFPW test faces


def test_finds_the_annotated_faces_with_keypoints_in_order(detector, faces):
    """Every one of the 21 faces is found (all 224 are, at about 13 ms per image on one core), and
    the five keypoints land on the 300-W points (KEYPOINT_REFERENCE) within a quarter of the
    distance between the eye centres on average per face, 0.4 of it for every single point (a
    mirrored order puts the eyes about 1.0 and the mouth corners about 0.7 of it off; measured on
    all 224: median 0.08 / 0.08 / 0.09 / 0.10 / 0.10, largest 0.39)."""
    errors = []
    for face in faces:
        image = face.load_image()
        dets = check_detections(detector(image), image.shape)
        j = match_detection(landmark_box(face.landmarks), [d.box for d in dets])
        assert j is not None, f"{face.name}: the annotated face was not found"
        ref = reference_keypoints(face.landmarks)
        iod = np.linalg.norm(ref[1] - ref[0])
        errors.append(np.linalg.norm(dets[j].keypoints - ref, axis=1) / iod)
        assert all(0.3 <= d.score <= 1.0 for d in dets)
    errors = np.array(errors)
    assert errors.mean(axis=1).max() < 0.25, errors.mean(axis=1).round(3)
    assert errors.max() < 0.4, errors.max(axis=0).round(3)
    assert np.median(errors, axis=0).max() < 0.15


def test_a_large_image_is_detected_on_a_reduced_copy_and_scaled_back(yuface, faces):
    """An image blown up 4x (each pixel a 4 x 4 block) and a detector whose max_side is the
    original's longer side: the reduced copy is the original image again (area interpolation), so
    the detections must be the original's, scaled back exactly. (A copy of the *same* face at
    another scale would not do: YuNet's boxes change with the face's size in pixels, and a face
    spanning most of a 960 px copy gets a tighter box and a lower score.)"""
    image = faces[1].load_image()
    detector = YuFaceDetector(max_side=max(image.shape[:2]))
    small = detector(image)
    assert small
    big = np.repeat(np.repeat(image, 4, axis=0), 4, axis=1)
    assert max(big.shape) > 960
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the wheel warns on images above 960 px: it must not see one
        large = check_detections(detector(big), big.shape)
    assert [d.score for d in large] == [d.score for d in small]
    for a, b in zip(large, small):
        np.testing.assert_allclose((a.box + 0.5) / 4 - 0.5, b.box, atol=1e-9)
        np.testing.assert_allclose((a.keypoints + 0.5) / 4 - 0.5, b.keypoints, atol=1e-9)


def test_a_face_cut_by_the_border_gives_a_clipped_box(detector, faces):
    image = faces[0].load_image()
    x0 = int(landmark_box(faces[0].landmarks)[0] + 40)  # cut through the face
    cut = np.ascontiguousarray(image[:, x0:])
    dets = check_detections(detector(cut), cut.shape)
    assert dets and dets[0].box[0] == -0.5  # the face runs past the left border; the box stops there


def test_blank_gray_and_bad_input(detector, faces):
    assert detector(np.full((240, 320, 3), 127, np.uint8)) == []
    assert detector(np.zeros((5, 7, 3), np.uint8)) == []
    gray = cv2.cvtColor(faces[0].load_image(), cv2.COLOR_RGB2GRAY)
    assert check_detections(detector(gray), gray.shape)
    for bad in (np.zeros((30, 30, 3), np.float32), np.zeros((30, 30, 4), np.uint8), np.zeros(30, np.uint8)):
        with pytest.raises(ValueError, match="uint8"):
            detector(bad)
    assert YuFaceDetector(score_threshold=1.0)(faces[0].load_image()) == []


def test_the_wheels_own_openmp_runtime_is_found_and_set_to_one_thread():
    """yuface bundles a second libgomp next to torch's; single_thread_openmp must find it (the two runtimes'
    spinning threads starve each other on 2 cores: measured in the function's docstring)."""
    yuface = pytest.importorskip("yuface", reason=f"yuface is not installed ({YUFACE_EXTRA_HINT})")
    from pyg_sdfl.detection.yuface import single_thread_openmp

    setter = single_thread_openmp(yuface)
    assert setter is not None and callable(setter)
    assert single_thread_openmp(types.ModuleType("yuface")) is None
