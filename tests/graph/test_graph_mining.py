"""Neighbourhood mining (paper Eq. 1-2), the LandmarkGraph container, and real-data sanity checks."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pyg_sdfl.graph import (
    LandmarkGraph,
    dense_graph,
    graph_from_neighbours,
    landmark_correlation,
    mine_graph,
    random_graph,
)
from pyg_sdfl.schemes import get_scheme


# ----------------------------------------------------------------------------- helpers
def _random_faces(m: int = 50, n: int = 7, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(m, n, 2)) * 10 + 100


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def _read_pts(path: Path) -> np.ndarray:
    """Tiny 300-W .pts parser: points between '{' and '}', 1-based -> 0-based."""
    text = path.read_text()
    header, rest = text.split("{", 1)
    assert "version: 1" in header and "n_points:" in header
    n = int(header.split("n_points:")[1].split()[0])
    pts = np.array(rest.split("}", 1)[0].split(), dtype=np.float64).reshape(n, 2)
    return pts - 1.0


@pytest.fixture(scope="module")
def w300_train(w300_root: Path) -> np.ndarray:
    files = sorted((w300_root / "train").glob("*/*.pts"))
    assert len(files) > 1000, f"expected the 300-W training set, found {len(files)} .pts files"
    return np.stack([_read_pts(p) for p in files])


@pytest.fixture(scope="module")
def wflw_test(wflw_annotations_root: Path) -> np.ndarray:
    lines = set()
    for path in sorted(wflw_annotations_root.glob("list_98pt_test_*.txt")):
        lines.update(line.strip() for line in path.read_text().splitlines() if line.strip())
    faces = []
    for line in sorted(lines):
        parts = line.split()
        assert len(parts) == 197, "a WFLW line is 196 numbers then the image name"
        faces.append(np.array(parts[:196], dtype=np.float64).reshape(98, 2))
    return np.stack(faces)


# ----------------------------------------------------------------------------- correlation
def test_separate_correlation_matches_pearson_per_axis() -> None:
    faces = _random_faces()
    c = landmark_correlation(faces, mode="separate", normalize="none")
    n = faces.shape[1]
    for i in range(n):
        for j in range(n):
            expected = 0.5 * (abs(_pearson(faces[:, i, 0], faces[:, j, 0])) + abs(_pearson(faces[:, i, 1], faces[:, j, 1])))
            assert c[i, j] == pytest.approx(expected, abs=1e-12)


def test_joint_correlation_is_cosine_of_centred_points() -> None:
    faces = _random_faces(seed=1)
    c = landmark_correlation(faces, mode="joint", normalize="none")
    d = faces - faces.mean(axis=0)
    for i in range(faces.shape[1]):
        for j in range(faces.shape[1]):
            num = abs(float((d[:, i] * d[:, j]).sum()))
            den = np.sqrt(float((d[:, i] ** 2).sum()) * float((d[:, j] ** 2).sum()))
            assert c[i, j] == pytest.approx(num / den, abs=1e-12)


def test_centroid_normalisation_removes_translation_and_scale() -> None:
    faces = _random_faces(seed=2)
    rng = np.random.default_rng(3)
    moved = faces * rng.uniform(0.5, 3, size=(len(faces), 1, 1)) + rng.normal(size=(len(faces), 1, 2)) * 500
    for mode in ("separate", "joint"):
        np.testing.assert_allclose(landmark_correlation(faces, mode), landmark_correlation(moved, mode), atol=1e-10)
    # Without normalisation, a large common translation makes everything correlate.
    raw = landmark_correlation(moved, normalize="none")
    assert raw[~np.eye(len(raw), dtype=bool)].min() > 0.9


def test_correlated_pairs_become_neighbours() -> None:
    rng = np.random.default_rng(4)
    m = 200
    a, b = rng.normal(size=(m, 2)), rng.normal(size=(m, 2))
    faces = np.stack([a, a + 0.05 * rng.normal(size=(m, 2)), b, b + 0.05 * rng.normal(size=(m, 2))], axis=1)
    g = mine_graph(faces, k=1, normalize="none")
    assert [g.neighbours(i) for i in range(4)] == [[1], [0], [3], [2]]


# ----------------------------------------------------------------------------- the mined graph
@pytest.mark.parametrize("mode", ["separate", "joint"])
def test_mined_graph_layout(mode: str) -> None:
    faces = _random_faces(n=9, seed=5)
    k = 3
    g = mine_graph(faces, k=k, mode=mode)
    n = faces.shape[1]
    assert g.edge_index.dtype == torch.long and g.edge_index.shape == (2, n * (k + 1))
    assert (g.num_nodes, g.k, g.mode) == (n, k, mode)
    # grouped by target, self-loop first, then neighbours by decreasing correlation
    assert torch.equal(g.edge_index[1], torch.arange(n).repeat_interleave(k + 1))
    c = g.correlation
    for i in range(n):
        group = g.edge_index[0, i * (k + 1) : (i + 1) * (k + 1)].tolist()
        assert group[0] == i and group[1:] == g.neighbours(i)
        others = [j for j in range(n) if j != i]
        expected = sorted(others, key=lambda j: (-c[i, j], j))[:k]
        assert g.neighbours(i) == expected


def test_mining_is_deterministic_and_breaks_ties_by_index() -> None:
    rng = np.random.default_rng(6)
    base = rng.normal(size=(30, 2))
    # landmarks 0-3 are identical (all correlations 1: a four-way tie), 4 and 5 are independent
    faces = np.stack([base, base, base, base, rng.normal(size=(30, 2)), rng.normal(size=(30, 2))], axis=1)
    g1 = mine_graph(faces, k=2, normalize="none")
    g2 = mine_graph(faces.copy(), k=2, normalize="none")
    assert torch.equal(g1.edge_index, g2.edge_index)
    assert g1.neighbours(0) == [1, 2]
    assert g1.neighbours(2) == [0, 1]
    assert g1.neighbours(3) == [0, 1]


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda f: np.repeat(f[:1], len(f), axis=0), "constant"),  # every face identical
        (lambda f: np.concatenate([f[:, :3], np.full((len(f), 1, 2), 5.0), f[:, 4:]], axis=1), "landmark 3"),
        (lambda f: np.where(np.arange(f.size).reshape(f.shape) == 17, np.nan, f), "NaN"),
        (lambda f: f[:1], "M=1"),
        (lambda f: f[..., :1], "(M, N, 2)"),
        (lambda f: f[0], "(M, N, 2)"),
    ],
)
def test_degenerate_landmarks_raise_clear_errors(make, message: str) -> None:
    faces = _random_faces()
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        mine_graph(make(faces), k=3)


def test_bad_k_and_mode_raise() -> None:
    faces = _random_faces(n=5)
    with pytest.raises(ValueError, match="k=5"):
        mine_graph(faces, k=5)
    with pytest.raises(ValueError, match="k=0"):
        mine_graph(faces, k=0)
    with pytest.raises(ValueError, match="mode"):
        mine_graph(faces, k=2, mode="diagonal")
    with pytest.raises(ValueError, match="normalize"):
        landmark_correlation(faces, normalize="procrustes")


# ----------------------------------------------------------------------------- graph container
def test_adjacency_and_laplacian_give_relative_locations() -> None:
    g = mine_graph(_random_faces(n=8, seed=7), k=3)
    a = g.adjacency()
    assert a.shape == (8, 8) and np.all(np.diag(a) == 1) and np.all(a.sum(axis=1) == 4)
    assert np.all(np.diag(g.adjacency(self_loops=False)) == 0)
    lap = g.laplacian(dtype=torch.float64)
    assert lap.shape == (8, 8)
    torch.testing.assert_close(lap.sum(dim=1), torch.zeros(8, dtype=torch.float64))
    p = torch.randn(8, 2, dtype=torch.float64)
    expected = torch.stack([p[i] - p[g.neighbours(i)].mean(dim=0) for i in range(8)])
    torch.testing.assert_close(lap @ p, expected)


@pytest.mark.parametrize("suffix", [".pt", ".json"])
def test_save_load_roundtrip(tmp_path: Path, suffix: str) -> None:
    g = mine_graph(_random_faces(n=6, seed=8), k=2, mode="joint")
    path = g.save(tmp_path / f"graph{suffix}")
    back = LandmarkGraph.load(path)
    assert torch.equal(back.edge_index, g.edge_index)
    assert (back.num_nodes, back.k, back.mode) == (g.num_nodes, g.k, g.mode)
    np.testing.assert_allclose(back.correlation, g.correlation)


def test_to_dict_survives_weights_only_checkpoint(tmp_path: Path) -> None:
    g = random_graph(10, 3, seed=1)
    torch.save({"graph": g.to_dict(), "state_dict": {}}, tmp_path / "ckpt.pt")
    ckpt = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    back = LandmarkGraph.from_dict(ckpt["graph"])
    assert torch.equal(back.edge_index, g.edge_index) and back.correlation is None
    with pytest.raises(ValueError, match="missing keys"):
        LandmarkGraph.from_dict({"edge_index": g.edge_index})


def test_invalid_edge_index_is_rejected() -> None:
    good = random_graph(5, 2, seed=0).edge_index
    with pytest.raises(ValueError, match="shape"):
        LandmarkGraph(good[:, :-1], num_nodes=5, k=2, mode="custom")
    bad = good.clone()
    bad[0, 0] = 1  # node 0's first incoming edge is no longer its self-loop
    with pytest.raises(ValueError, match="self-loop"):
        LandmarkGraph(bad, num_nodes=5, k=2, mode="custom")
    with pytest.raises(ValueError, match="duplicate"):
        graph_from_neighbours(np.array([[1, 1], [0, 2], [0, 1], [0, 1], [0, 1]]))
    with pytest.raises(ValueError, match="outside"):
        graph_from_neighbours(np.array([[1, 5], [0, 2], [0, 1], [0, 1], [0, 1]]))


def test_random_and_dense_graphs() -> None:
    g = random_graph(20, 3, seed=11)
    assert g.edge_index.shape == (2, 80) and g.mode == "random"
    assert all(len(set(g.neighbours(i)) | {i}) == 4 for i in range(20))
    assert torch.equal(g.edge_index, random_graph(20, 3, seed=11).edge_index)
    assert not torch.equal(g.edge_index, random_graph(20, 3, seed=12).edge_index)
    d = dense_graph(6)
    assert d.k == 5 and d.edge_index.shape == (2, 36)
    assert np.all(d.adjacency() == 1)
    with pytest.raises(ValueError, match="k=20"):
        random_graph(20, 20, seed=0)


# ----------------------------------------------------------------------------- real annotations
def _eye_corner_check(graph: LandmarkGraph, scheme_name: str, corners: dict) -> None:
    scheme = get_scheme(scheme_name)
    for corner, allowed_parts in corners.items():
        parts = {scheme.part_of(j) for j in graph.neighbours(corner)}
        assert parts <= allowed_parts, f"landmark {corner}: neighbours {graph.neighbours(corner)} lie in {parts}"


@pytest.mark.parametrize("mode", ["separate", "joint"])
def test_300w_training_graph_is_anatomical(w300_train: np.ndarray, mode: str) -> None:
    assert w300_train.shape[1:] == (68, 2)
    g = mine_graph(w300_train, k=3, mode=mode)
    assert g.edge_index.shape == (2, 68 * 4)
    left, right = {"left_eye", "left_brow"}, {"right_eye", "right_brow"}
    _eye_corner_check(g, "300w", {36: left, 39: left, 42: right, 45: right})
    # jaw points draw on the jaw, mouth corners on the lips
    scheme = get_scheme("300w")
    assert {scheme.part_of(j) for j in g.neighbours(8)} == {"jaw"}
    for corner in (48, 54):
        assert sum(scheme.part_of(j) in ("outer_lip", "inner_lip") for j in g.neighbours(corner)) >= 2
    print(f"300-W ({mode}) neighbours:", {i: g.neighbours(i) for i in (36, 39, 42, 45, 30, 48, 54)})


@pytest.mark.parametrize("mode", ["separate", "joint"])
def test_wflw_test_graph_is_anatomical(wflw_test: np.ndarray, mode: str) -> None:
    assert wflw_test.shape[1:] == (98, 2) and len(wflw_test) > 1500
    g = mine_graph(wflw_test, k=3, mode=mode)
    assert g.edge_index.shape == (2, 98 * 4)
    left, right = {"left_eye", "left_brow", "pupils"}, {"right_eye", "right_brow", "pupils"}
    _eye_corner_check(g, "wflw", {60: left, 64: left, 68: right, 72: right})
    scheme = get_scheme("wflw")
    assert {scheme.part_of(j) for j in g.neighbours(16)} == {"jaw"}
    for corner in (76, 82):
        assert sum(scheme.part_of(j) in ("outer_lip", "inner_lip") for j in g.neighbours(corner)) >= 2
    print(f"WFLW ({mode}) neighbours:", {i: g.neighbours(i) for i in (60, 64, 68, 72, 54, 76, 82, 96)})
