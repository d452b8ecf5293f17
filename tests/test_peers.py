"""pyg_sdfl.peers: dlib's 68-point shape predictor (``[peers]`` extra only) and where its model file is.

The dlib tests skip with a reason when dlib (``pip install ".[peers]"``) is absent; the ones on
real faces also need ../shared/data (``w300_root`` fixture).
"""
from __future__ import annotations

import sys

import numpy as np
import pytest

from pyg_sdfl.detection import PEERS_EXTRA_HINT
from pyg_sdfl.geometry import landmark_box
from pyg_sdfl.metrics import nme
from pyg_sdfl.peers import dlib_model_path


def test_missing_extra_errors_name_the_extra(monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(FileNotFoundError, match=r"\.\[peers\]"):
        dlib_model_path()


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


def test_dlib_predicts_68_points_on_real_300w_faces(predictor, w300_root):
    from pyg_sdfl.data import load_dataset

    faces = load_dataset("300w", w300_root, "test")[:5]
    preds, targets = [], []
    for face in faces:
        image = face.load_image()
        pred = predictor(image, landmark_box(face.landmarks))
        assert pred.shape == (68, 2) and np.isfinite(pred).all()
        assert (pred >= -1).all() and (pred[:, 0] <= image.shape[1]).all() and (pred[:, 1] <= image.shape[0]).all()
        preds.append(pred)
        targets.append(face.landmarks)
    errors = nme(np.stack(preds), np.stack(targets), "300w")
    assert errors.mean() < 0.12  # a loose sanity bound: a broken box or point order gives > 30%


def test_peers_benchmark_script_end_to_end(predictor, w300_root, tmp_path):
    """benchmarks/peers.py on a handful of faces: every row, the end-to-end detector x passes rows (Haar, which
    is always installed) and the JSON it writes."""
    import json
    import subprocess
    from pathlib import Path

    from pyg_sdfl.weights import pretrained_path

    if not pretrained_path("300w").is_file():
        pytest.skip("the shipped 300-W weights are absent")
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "peers.py"
    out = tmp_path / "peers.json"
    run = subprocess.run([sys.executable, str(script), "--root", str(w300_root), "--max-faces", "3", "--fit-faces", "40",
                          "--repeats", "1", "--timing-faces", "1", "--flip-test", "--detectors", "haar", "--passes", "1", "2",
                          "--out", str(out)],
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    payload = json.loads(out.read_text())
    rows = {r["key"]: r for r in payload["rows"]}
    assert {"ours", "ours_flip", "dlib_gt", "dlib_style"} <= set(rows)
    assert all(rows[k]["summary"]["count"] == 3 for k in ("ours", "ours_flip", "dlib_gt", "dlib_style"))
    assert rows["ours"]["summary"]["nme"] != rows["ours_flip"]["summary"]["nme"]
    found = payload["detectors_on_eval"]["haar"]["found"]
    assert found + len(payload["detectors_on_eval"]["haar"]["missed"]) == 3
    if found:
        for k in (1, 2):
            row = rows[f"ours_haar_p{k}"]
            assert row["summary"]["count"] == found and row["passes"] == k and row["ms_per_face"] > 0
        assert rows["ours_haar_p1"]["summary"]["nme"] != rows["ours_haar_p2"]["summary"]["nme"]
    assert payload["timing"]["haar_detector_only"]["median_ms"] > 0
    assert rows["dlib_detector"]["ms_per_face"] > 0  # dlib end to end, timed in the same run
