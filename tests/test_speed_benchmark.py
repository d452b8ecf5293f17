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


def test_node_times_are_attributed_by_each_rule(speed):
    """Own name, ``<value>_nchwc`` (a convolution ONNX Runtime moved to NCHWc), a produced value, and
    otherwise the stage of the node before: every microsecond lands in exactly one stage."""
    stage = {"conv_a": "backbone", "conv_b": "map_to_node", "mm": "graph_part"}
    producer = {"relu_a": "conv_a", "feat_b": "conv_b", "out": "mm"}
    events = [{"name": f"{n}_kernel_time", "dur": d} for n, d in
              [("relu_a_nchwc", 10), ("ReorderOutput", 5), ("feat_b", 7), ("mm", 3), ("ReorderOutput", 1)]]
    times, rules = speed.attribute_node_times(events, stage, producer)
    assert times == {"backbone": 15.0, "map_to_node": 7.0, "graph_part": 4.0}
    assert rules == {"name": 1, "nchwc_value": 1, "value": 1, "previous": 2}


def test_onnx_node_profile_splits_the_fast_model(speed):
    """ONNX Runtime's profile of the fast model's export: every stage present, shares of the node time
    summing to one, almost every node found by name or value (not by order), and the node time inside
    the wall time."""
    pytest.importorskip("onnxruntime", reason="the [onnx] extra (onnxruntime) is not installed")
    pytest.importorskip("onnxscript", reason="the [onnx] extra (onnxscript) is not installed")
    from pyg_sdfl.engine.checkpoint import load_model
    from pyg_sdfl.engine.onnx_export import onnx_model_bytes

    loaded = load_model(speed.model_file("300w-fast"))
    s = loaded.image_size
    x = np.random.default_rng(0).standard_normal((2, 3, s, s)).astype(np.float32)
    prof = speed.onnx_node_profile_one(onnx_model_bytes(loaded), x, calls=2, warmup=1)
    shares = [prof[f"{k}_share"] for k in speed.ONNX_STAGES]
    assert all(v > 0 for v in shares) and sum(shares) <= 1.0 + 1e-9
    assert prof["head_share"] == pytest.approx(prof["map_to_node_share"] + prof["graph_part_share"])
    found = prof["found_by"]
    assert found["previous"] <= 0.1 * sum(found.values())
    assert 0 < prof["node_sum_ms_per_face"] <= prof["wall_ms_per_face"]
    assert prof["nodes_per_run"] > 50
    table = speed.onnx_share_table({"300w-fast": {"batch_1": prof, "batch_2": prof}}, ["batch_1", "batch_2"])
    head_ms = prof["map_to_node_ms_per_face"] + prof["graph_part_ms_per_face"]
    cell = f"{head_ms:.3f} ({100 * prof['head_share']:.1f}%) | {prof['graph_part_ms_per_face']:.3f} ({100 * prof['graph_part_share']:.1f}%)"
    assert f"| 300w-fast | {cell} | {cell} |" in table


