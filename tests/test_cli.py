"""The pyg-sdfl command line: graph mining, the train alias, evaluation, and clear errors on bad data."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pyg_sdfl.graph import LandmarkGraph

CLI = [sys.executable, "-m", "pyg_sdfl.cli"]


def _run(args, cwd, timeout=600):
    return subprocess.run(CLI + list(args), capture_output=True, text=True, timeout=timeout, cwd=cwd)


def test_graph_on_real_300w(w300_root, tmp_path):
    out = _run(["graph", "--dataset", "300w", "--root", str(w300_root), "--k", "3", "--out", str(tmp_path / "g.pt")], tmp_path)
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["num_nodes"] == 68 and info["num_edges"] == 68 * 4
    graph = LandmarkGraph.load(tmp_path / "g.pt")
    assert graph.edge_index.shape == (2, 272)
    # the outer eye corner's neighbours stay in its eye or brow
    assert set(graph.neighbours(36)) <= set(range(17, 22)) | set(range(36, 42))
    assert (tmp_path / "g.png").stat().st_size > 10_000


def test_graph_on_synthetic_faces_needs_no_files(tmp_path):
    out = _run(["graph", "--dataset", "synthetic", "--k", "2", "--mode", "joint", "--out", str(tmp_path / "s.pt")], tmp_path)
    assert out.returncode == 0, out.stderr
    assert LandmarkGraph.load(tmp_path / "s.pt").k == 2


def test_graph_bad_k_is_a_clear_error(tmp_path):
    out = _run(["graph", "--dataset", "synthetic", "--k", "68"], tmp_path)
    assert out.returncode == 2
    assert "error" in out.stderr and "k" in out.stderr


def test_evaluate_missing_checkpoint(tmp_path):
    out = _run(["evaluate", "--checkpoint", str(tmp_path / "nope.ckpt"), "--dataset", "synthetic"], tmp_path)
    assert out.returncode == 2
    assert "checkpoint not found" in out.stderr


def test_train_alias_runs_the_hydra_entry_point(tmp_path):
    out = _run(["train", "dataset.image_size=64", "dataset.train.num_faces=64", "dataset.test.num_faces=8",
                "dataset.val_fraction=0.25", "train.batch_size=16", "train.num_workers=0", "train.epochs=1",
                "train.max_steps_per_epoch=1", "evaluate.grid_faces=0", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads((tmp_path / "run" / "results.json").read_text())["metrics"]["test"]["all"]["count"] == 8


def test_evaluate_with_and_without_flip_test(tmp_path):
    """`evaluate --flip-test` scores the mirrored-average predictions and says so in its JSON."""
    out = _run(["train", "dataset.image_size=64", "dataset.train.num_faces=32", "dataset.test.num_faces=8",
                "dataset.val_fraction=0.25", "train.batch_size=16", "train.num_workers=0", "train.epochs=1",
                "train.max_steps_per_epoch=1", "evaluate.grid_faces=0", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    scores = {}
    for flag in ([], ["--flip-test"]):
        out = _run(["evaluate", "--checkpoint", str(tmp_path / "run" / "best.ckpt"), "--dataset", "synthetic",
                    "--device", "cpu"] + flag, tmp_path)
        assert out.returncode == 0, out.stderr[-2000:]
        payload = json.loads(out.stdout)
        assert payload["flip_test"] is bool(flag)
        scores[bool(flag)] = payload["metrics"]["test"]["all"]["nme"]
    assert scores[True] != scores[False]


# ---- evaluate on bad data: one line on stderr, exit 2 ----

def _write_face(folder: Path, name: str, num_points: int = 68) -> None:
    """A 300-W style face: ``name.pts`` (headered, 1-based) next to ``name.png`` (200x200 noise)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)  # every face written is the same face
    points = rng.uniform(60, 140, (num_points, 2))
    body = "\n".join(f"{x:.3f} {y:.3f}" for x, y in points)
    (folder / f"{name}.pts").write_text(f"version: 1\nn_points: {num_points}\n{{\n{body}\n}}\n")
    Image.fromarray(rng.integers(0, 256, (200, 200, 3), dtype=np.uint8)).save(folder / f"{name}.png")


def _evaluate(checkpoint: Path, root: Path, *extra: str):
    return _run(["evaluate", "--checkpoint", str(checkpoint), "--dataset", "300w", "--root", str(root),
                 "--device", "cpu", *extra], root.parent)


def _one_line_error(out) -> str:
    assert out.returncode == 2, out.stderr[-2000:]
    assert "Traceback" not in out.stderr and out.stdout == ""
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("pyg-sdfl evaluate: error: "), out.stderr[-2000:]
    return lines[0]


def test_evaluate_a_67_point_file_names_the_file(tiny_ckpt, tmp_path):
    root = tmp_path / "w300"
    _write_face(root / "test" / "lfpw", "good")
    _write_face(root / "test" / "lfpw", "short", num_points=67)
    line = _one_line_error(_evaluate(tiny_ckpt, root))
    assert line.endswith(f"{root / 'test' / 'lfpw' / 'short.pts'}: expected 68 points, found 67")


@pytest.mark.parametrize("layout, expected", [
    ("empty", "300-W: folder {root}/test not found (expected root/test/<part>/*.pts)"),
    ("missing", "dataset '300w': root folder {root} not found (check dataset.root / --root)"),
])
def test_evaluate_an_empty_or_missing_root_names_it(tiny_ckpt, tmp_path, layout, expected):
    root = tmp_path / "w300"
    if layout == "empty":
        root.mkdir()
    assert _one_line_error(_evaluate(tiny_ckpt, root)).endswith(expected.format(root=root))


def test_evaluate_the_test_split_needs_no_training_folder(tiny_ckpt, tmp_path):
    root = tmp_path / "w300"
    for name in ("a", "b"):
        _write_face(root / "test" / "helen", name)
    out = _evaluate(tiny_ckpt, root, "--split", "test")
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout)["metrics"]["test"]["all"]["count"] == 2
    # val is carved from train: asking for it says which folder is missing
    assert _one_line_error(_evaluate(tiny_ckpt, root, "--split", "val")).endswith(
        f"300-W: folder {root}/train not found (expected root/train/<part>/*.pts)")


def test_evaluate_an_unknown_split_is_a_usage_error(tiny_ckpt, tmp_path):
    out = _evaluate(tiny_ckpt, tmp_path / "w300", "--split", "bogus")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "argument --split: invalid choice: 'bogus' (choose from 'train', 'val', 'test')" in out.stderr


def test_evaluate_scores_training_faces_on_evaluation_crops(tiny_ckpt, tmp_path):
    """Ten copies of one face in train/, one in test/: on plain crops every copy scores exactly as the
    test face does; augmented (rotated, flipped, occluded) crops would not."""
    root = tmp_path / "w300"
    for i in range(10):
        _write_face(root / "train" / "lfpw", f"face_{i}")
    _write_face(root / "test" / "lfpw", "face")
    out = _evaluate(tiny_ckpt, root, "--split", "train", "test")
    assert out.returncode == 0, out.stderr[-2000:]
    metrics = json.loads(out.stdout)["metrics"]
    assert metrics["train"]["all"]["count"] == 9  # 10 less the validation face (val_fraction 0.1)
    assert metrics["train"]["all"]["nme"] == pytest.approx(metrics["test"]["all"]["nme"], rel=1e-6)
