"""benchmarks/speed.py in small: the staged split computes what the model computes on both graph
paths, and the interleaved matrix gives every row (and a stand-in for dlib) its figures and table
lines. The shipped 300-W model on two synthetic faces, torch rows only (the ONNX export is slow)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def speed():
    from pyg_sdfl.weights import pretrained_path

    if not pretrained_path("300w").is_file():
        pytest.skip("the shipped 300-W weights are absent")
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import speed
    finally:
        sys.path.remove(str(BENCHMARKS))
    return speed


@pytest.fixture(scope="module")
def setup(speed, tmp_path_factory):
    """Two synthetic faces and the torch fp32 rows (fused, PyG) of the shipped model."""
    from pyg_sdfl.geometry import landmark_box
    from pyg_sdfl.nn.heads import use_graph_backend

    samples, _ = speed.benchmark_faces(None, 2, tmp_path_factory.mktemp("faces"))
    landmarks = np.stack([s.landmarks for s in samples])
    faces = speed.Faces([s.load_image() for s in samples], landmarks, landmark_box(landmarks))
    fused = speed.load_landmarker("300w", "torch", "fp32")
    pyg = speed.load_landmarker("300w", "torch", "fp32")
    use_graph_backend(pyg.model, "pyg")
    rows = [speed.Row("300w", "torch", "fused", "fp32", fused), speed.Row("300w", "torch", "pyg", "fp32", pyg)]
    return samples, faces, rows


def test_staged_pipeline_matches_forward_on_both_graph_paths(speed, setup):
    import torch

    samples, faces, rows = setup
    with torch.inference_mode():
        for row in rows:
            pipe = speed.StagedPipeline(row.lm, row.graph)
            assert pipe.graph == row.graph and "graph_layers" in pipe.stages
            pipe.check(samples, faces.boxes)  # raises SystemExit on a mismatch


def test_matrix_rows_ratios_and_tables(speed, setup):
    import torch

    _, faces, rows = setup
    calls = []

    def dlib_stand_in(image, box):
        calls.append(box)
        return np.zeros((68, 2))

    with torch.inference_mode():
        timings = {k: speed.time_matrix(rows, dlib_stand_in, faces, b, 2, repeats=1, warmup=0)
                   for k, b in (("batch_1", 1), ("batch_2", 2))}
        diffs = speed.max_px_diffs(rows, faces, 2)
    assert len(calls) == 4 and rows[0].lm.batch_size == 2
    assert diffs[rows[0].key] == 0.0 and diffs[rows[1].key] < 1e-2  # PyG and fused paths agree
    matrix = speed.matrix_results(rows, timings, diffs, {"300w": 2_000_000_000})
    for entry in matrix.values():
        for k in ("batch_1", "batch_2"):
            b = entry[k]
            assert b["model_ms_per_face"] > 0 and b["pass_ms_per_face"] > 0 and b["achieved_gflops"] > 0
            dlib = timings[k]["dlib"]["ms_per_face"]
            assert b["ratio_to_dlib"] == pytest.approx(b["pass_ms_per_face"] / dlib)
    dlib = {k: timings[k]["dlib"] for k in timings}
    table = speed.matrix_table(matrix, dlib, ["batch_1", "batch_2"])
    assert "| 300w | torch | pyg | fp32 |" in table and "| dlib 68-point shape predictor |" in table
    assert "dlib 68-point" not in speed.matrix_table(matrix, {"skipped": "no dlib"}, ["batch_1", "batch_2"])


def test_onnx_parts_compute_what_the_model_computes(speed):
    """The leading parts that the ONNX head shares time against: the backbone alone, and backbone +
    map-to-node, under ONNX Runtime, equal the torch modules (the fast model: the smaller export)."""
    import torch

    pytest.importorskip("onnxruntime", reason="the [onnx] extra (onnxruntime) is not installed")
    pytest.importorskip("onnxscript", reason="the [onnx] extra (onnxscript) is not installed")
    from pyg_sdfl.engine.checkpoint import load_model

    model = load_model(speed.model_file("300w-fast")).model.eval()
    s = model.image_size
    x = torch.randn(3, 3, s, s)
    with torch.inference_mode():
        expected = {"backbone": model.backbone(x), "backbone+map_to_node": model.head.map_to_node(model.backbone(x))[1]}
    for part, want in expected.items():
        session = speed.onnx_part("300w-fast", s, part)
        got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
        assert got.shape == tuple(want.shape)
        np.testing.assert_allclose(got, want.numpy(), atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="unknown part"):
        speed.onnx_part("300w-fast", s, "head")
    share = {"head_ms_per_face": 1.0, "head_share": 0.1, "graph_part_ms_per_face": 0.25, "graph_part_share": 0.025}
    table = speed.onnx_share_table({"300w-fast": {"batch_1": share, "batch_2": dict(share)}}, ["batch_1", "batch_2"])
    assert "| 300w-fast | 1.000 (10.0%) | 0.250 (2.5%) | 1.000 (10.0%) | 0.250 (2.5%) |" in table
