"""The pyg-sdfl command line: graph mining, the train alias, and clear errors."""
from __future__ import annotations

import json
import subprocess
import sys

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
