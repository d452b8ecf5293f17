"""pyg_sdfl.peers: box geometry and the box-style fit (always), dlib's predictor (``[peers]`` extra only).

The dlib tests skip with a reason when dlib (``pip install ".[peers]"``) is absent; the ones on
real faces also need ../shared/data (``w300_root`` fixture).
"""
from __future__ import annotations

import sys

import numpy as np
import pytest

from pyg_sdfl.metrics import nme
from pyg_sdfl.peers import (
    PEERS_EXTRA_HINT,
    BoxStyle,
    box_iou,
    dlib_model_path,
    fit_box_style,
    landmark_boxes,
    match_detection,
    require_dlib,
)


# ----------------------------------------------------------------------------- geometry
def test_landmark_boxes_hand_values():
    pts = np.array([[[3.0, 4.0], [10.0, 1.0], [5.0, 9.0]], [[0.0, 0.0], [2.0, 2.0], [1.0, 5.0]]])
    np.testing.assert_array_equal(landmark_boxes(pts), [[3, 1, 10, 9], [0, 0, 2, 5]])
    np.testing.assert_array_equal(landmark_boxes(pts[0]), [[3, 1, 10, 9]])
    with pytest.raises(ValueError, match="NaN"):
        landmark_boxes(np.array([[0.0, np.nan], [1.0, 1.0]]))
    with pytest.raises(ValueError, match="shape"):
        landmark_boxes(np.zeros((2, 3, 3)))


def test_box_iou_hand_values():
    a = np.array([[0.0, 0.0, 2.0, 2.0]])
    b = np.array([[1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 2.0, 2.0], [5.0, 5.0, 6.0, 6.0], [0.0, 0.0, 1.0, 2.0]])
    np.testing.assert_allclose(box_iou(a, b), [[1 / 7, 1.0, 0.0, 0.5]])
    assert box_iou(b, a).shape == (4, 1)
    with pytest.raises(ValueError, match="x1 < x0"):
        box_iou([[2.0, 0.0, 1.0, 1.0]], a)


def test_box_style_apply_hand_value_and_identity():
    box = np.array([[0.0, 0.0, 10.0, 20.0]])
    # centre (5, 10) + (0.1 * 10, -0.2 * 20) = (6, 6); size (15, 10)
    np.testing.assert_allclose(BoxStyle(0.1, -0.2, 1.5, 0.5).apply(box), [[-1.5, 1.0, 13.5, 11.0]])
    np.testing.assert_allclose(BoxStyle().apply(box), box)
    with pytest.raises(ValueError, match="positive"):
        BoxStyle(sx=0.0)
    with pytest.raises(ValueError, match="finite"):
        BoxStyle(dx=float("nan"))


def _random_boxes(rng: np.random.Generator, m: int) -> np.ndarray:
    corner = rng.uniform(0, 300, size=(m, 2))
    size = rng.uniform(40, 200, size=(m, 2))
    return np.concatenate([corner, corner + size], axis=1)


def test_fit_box_style_recovers_known_parameters_exactly():
    rng = np.random.default_rng(0)
    truth = BoxStyle(dx=0.03, dy=-0.11, sx=1.07, sy=0.93)
    src = _random_boxes(rng, 50)
    fitted = fit_box_style(src, truth.apply(src))
    for name in ("dx", "dy", "sx", "sy"):
        assert getattr(fitted, name) == pytest.approx(getattr(truth, name), abs=1e-12)
    mean_fit = fit_box_style(src, truth.apply(src), robust=False)
    assert mean_fit.sx == pytest.approx(truth.sx, abs=1e-12)


def test_fit_box_style_is_robust_to_noise_and_mismatched_pairs():
    rng = np.random.default_rng(1)
    truth = BoxStyle(dx=-0.05, dy=0.12, sx=1.2, sy=1.1)
    src = _random_boxes(rng, 400)
    dst = truth.apply(src)
    size = (src[:, 2:] - src[:, :2]).repeat(2, axis=0).reshape(-1, 4)
    dst = dst + rng.normal(0, 0.01, size=dst.shape) * size  # 1% jitter of the box size
    bad = rng.choice(400, size=40, replace=False)  # 10% wrong detections: other boxes entirely
    dst[bad] = _random_boxes(rng, 40) * 3.0
    robust = fit_box_style(src, dst)
    for name, tol in (("dx", 0.01), ("dy", 0.01), ("sx", 0.02), ("sy", 0.02)):
        assert getattr(robust, name) == pytest.approx(getattr(truth, name), abs=tol)
    # the plain mean is dragged off by the mismatched pairs: the median is what makes it work
    naive = fit_box_style(src, dst, robust=False)
    assert abs(naive.sx - truth.sx) > 5 * abs(robust.sx - truth.sx)


def test_fit_box_style_rejects_bad_input():
    with pytest.raises(ValueError, match="pair up"):
        fit_box_style(np.zeros((3, 4)) + [0, 0, 1, 1], np.zeros((2, 4)) + [0, 0, 1, 1])
    with pytest.raises(ValueError, match="zero width"):
        fit_box_style([[0.0, 0.0, 0.0, 5.0]], [[0.0, 0.0, 1.0, 1.0]])


def test_match_detection_picks_the_best_overlap_above_the_threshold():
    face = np.array([10.0, 10.0, 110.0, 110.0])
    dets = np.array([[300.0, 300.0, 400.0, 400.0], [20.0, 5.0, 120.0, 105.0], [0.0, 0.0, 60.0, 60.0]])
    assert match_detection(face, dets) == 1
    assert match_detection(face, dets[[0]]) is None
    assert match_detection(face, np.zeros((0, 4))) is None
    assert match_detection(face, dets[[2]], min_iou=0.1) == 0  # IoU 0.25
    assert match_detection(face, dets[[2]], min_iou=0.3) is None


def test_missing_extra_errors_name_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "dlib", None)  # makes `import dlib` raise ImportError
    with pytest.raises(ImportError, match=r"\.\[peers\]"):
        require_dlib()
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(FileNotFoundError, match=r"\.\[peers\]"):
        dlib_model_path()
    assert "dlib-bin" in PEERS_EXTRA_HINT


# ----------------------------------------------------------------------------- dlib ([peers] extra)
@pytest.fixture(scope="module")
def dlib():
    return pytest.importorskip("dlib", reason=f"dlib is not installed (optional extra: {PEERS_EXTRA_HINT})")


@pytest.fixture(scope="module")
def predictor(dlib):
    from pyg_sdfl.peers import DlibShapePredictor

    try:
        path = dlib_model_path()
    except FileNotFoundError as err:
        pytest.skip(f"dlib's 68-point model is not installed: {err}")
    return DlibShapePredictor(path)


def test_dlib_model_file_loads_with_68_points(predictor):
    assert predictor.model_path.name == "shape_predictor_68_face_landmarks.dat"
    assert predictor.num_points == 68


def test_dlib_rectangle_conversion_round_trips(dlib):
    from pyg_sdfl.peers import _from_rectangle, _rectangle

    rect = dlib.rectangle(12, 30, 111, 140)
    box = _from_rectangle(rect)
    assert box == (11.5, 29.5, 111.5, 140.5)  # pixel edges around columns 12..111, rows 30..140
    back = _rectangle(dlib, box)
    assert (back.left(), back.top(), back.right(), back.bottom()) == (12, 30, 111, 140)


def test_dlib_predicts_68_points_on_real_300w_faces(predictor, w300_root):
    from pyg_sdfl.data import load_dataset

    faces = load_dataset("300w", w300_root, "test")[:5]
    preds, targets = [], []
    for face in faces:
        image = face.load_image()
        pred = predictor(image, landmark_boxes(face.landmarks)[0])
        assert pred.shape == (68, 2) and np.isfinite(pred).all()
        assert (pred >= -1).all() and (pred[:, 0] <= image.shape[1]).all() and (pred[:, 1] <= image.shape[0]).all()
        preds.append(pred)
        targets.append(face.landmarks)
    errors = nme(np.stack(preds), np.stack(targets), "300w")
    assert errors.mean() < 0.12  # a loose sanity bound: a broken box or point order gives > 30%


def test_dlib_detector_finds_real_300w_faces(dlib, w300_root):
    from pyg_sdfl.data import load_dataset
    from pyg_sdfl.peers import DlibFaceDetector

    detector = DlibFaceDetector(upsample=0)
    faces = load_dataset("300w", w300_root, "test")[:5]
    found = sum(match_detection(landmark_boxes(f.landmarks)[0], detector(f.load_image())) is not None for f in faces)
    assert found >= 3


def test_peers_benchmark_script_end_to_end(predictor, w300_root, tmp_path):
    """benchmarks/peers.py on a handful of faces: every row, the Haar path and the JSON it writes."""
    import json
    import subprocess
    from pathlib import Path

    from pyg_sdfl.weights import pretrained_path

    if not pretrained_path("300w").is_file():
        pytest.skip("the shipped 300-W weights are absent")
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "peers.py"
    out = tmp_path / "peers.json"
    run = subprocess.run([sys.executable, str(script), "--root", str(w300_root), "--max-faces", "3", "--fit-faces", "40",
                          "--repeats", "1", "--timing-faces", "1", "--flip-test", "--out", str(out)],
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    payload = json.loads(out.read_text())
    rows = {r["key"]: r for r in payload["rows"]}
    assert {"ours", "ours_flip", "dlib_gt", "dlib_style"} <= set(rows)
    assert all(rows[k]["summary"]["count"] == 3 for k in ("ours", "ours_flip", "dlib_gt", "dlib_style"))
    assert rows["ours"]["summary"]["nme"] != rows["ours_flip"]["summary"]["nme"]
    found = payload["haar_on_eval"]["found"]
    assert found + len(payload["haar_on_eval"]["missed"]) == 3
    if found:
        assert rows["ours_haar"]["summary"]["count"] == found and rows["ours_haar"]["ms_per_face"] is None
    assert payload["timing"]["haar_detector_only"]["median_ms"] > 0
