"""pyg_sdfl.analysis (the notebooks' computations) and the analysis figures of pyg_sdfl.plotting."""
from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from torch_geometric.utils import k_hop_subgraph  # noqa: E402

from pyg_sdfl import analysis, plotting  # noqa: E402
from pyg_sdfl.data.transforms import denormalise_image, normalise_image  # noqa: E402
from pyg_sdfl.graph import graph_from_neighbours, mine_graph, random_graph  # noqa: E402
from pyg_sdfl.nn.heads import PyGLayerHead, SDFLHead  # noqa: E402
from pyg_sdfl.nn.backbones import create_backbone  # noqa: E402
from pyg_sdfl.nn.model import LandmarkModel  # noqa: E402
from pyg_sdfl.schemes import LandmarkScheme, get_scheme  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TOY = LandmarkScheme(name="toy", num_points=4, flip_permutation=(0, 1, 2, 3), inter_ocular=(0, 1),
                     left_pupil=(0,), right_pupil=(1,), parts={"a": (0, 1), "b": (2, 3)})


# ============================================================================ locations
def test_repo_root_from_the_notebooks_folder_and_elsewhere(tmp_path: Path) -> None:
    assert analysis.repo_root(REPO / "notebooks") == REPO
    assert analysis.repo_root(REPO) == REPO
    # outside any checkout it falls back to the folder above the (editable) package
    assert analysis.repo_root(tmp_path) == Path(analysis.__file__).resolve().parents[1]


def test_shared_data_dir_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYG_SDFL_DATA", str(tmp_path))
    assert analysis.shared_data_dir() == tmp_path.resolve()
    monkeypatch.setenv("PYG_SDFL_DATA", str(tmp_path / "absent"))
    assert analysis.shared_data_dir() is None


def test_find_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYG_SDFL_CHECKPOINT", raising=False)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        analysis.find_checkpoint(tmp_path / "nope.ckpt")
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"x")
    assert analysis.find_checkpoint(ckpt) == ckpt.resolve()
    monkeypatch.setenv("PYG_SDFL_CHECKPOINT", str(ckpt))
    assert analysis.find_checkpoint() == ckpt.resolve()
    monkeypatch.setenv("PYG_SDFL_CHECKPOINT", str(tmp_path / "typo.ckpt"))
    with pytest.raises(FileNotFoundError, match="PYG_SDFL_CHECKPOINT"):
        analysis.find_checkpoint()
    monkeypatch.setenv("PYG_SDFL_CHECKPOINT", "none")  # force the demo model
    assert analysis.find_checkpoint() is None
    assert analysis.find_checkpoint(ckpt) == ckpt.resolve()


def test_find_checkpoint_without_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYG_SDFL_CHECKPOINT", raising=False)
    found = analysis.find_checkpoint()
    assert found is None or (found.is_file() and found.parent.name == "weights")


def test_find_results_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYG_SDFL_RESULTS", raising=False)
    assert analysis.find_results_dir(REPO / "notebooks") == REPO / "results"
    monkeypatch.setenv("PYG_SDFL_RESULTS", str(tmp_path))
    assert analysis.find_results_dir() == tmp_path.resolve()


# ============================================================================ reference shapes
def _crop_frame(points: np.ndarray, scale: float = 1.2) -> np.ndarray:
    """Independent: centre of the landmark box, divided by scale x its longer side."""
    lo, hi = points.min(0), points.max(0)
    return (points - (lo + hi) / 2) / (scale * (hi - lo).max())


def test_reference_shapes_fall_back_to_synthetic_faces() -> None:
    s = analysis.load_reference_shapes("300w", None, synthetic_faces=30)
    assert not s.real and s.name == "synthetic" and "SYNTHETIC" in s.source
    assert s.shapes.shape == (30, 68, 2) and s.scheme.name == "300w"
    assert np.abs(s.shapes).max() <= 0.5 / 1.2 + 1e-9  # inside the crop, which is 1.2x the landmark box
    np.testing.assert_allclose(s.mean_shape, s.shapes.mean(0))
    assert analysis.load_reference_shapes("wflw", None) is None
    assert analysis.load_reference_shapes("300w", None, fallback=False) is None
    with pytest.raises(ValueError, match="unknown reference dataset"):
        analysis.load_reference_shapes("cofw", None)


def test_reference_shapes_real_300w(w300_root: Path) -> None:
    s = analysis.load_reference_shapes("300w", w300_root.parent)
    train = w300_root / "train"
    assert s.real and s.shapes.shape == (len(list(train.rglob("*.pts"))), 68, 2)
    # faces come part folder by part folder (sorted), files sorted: parse the first one independently
    first_part = sorted(p for p in train.iterdir() if p.is_dir())[0]
    first = sorted(first_part.rglob("*.pts"))[0]
    numbers = first.read_text().split("{")[1].split("}")[0].split()
    raw = np.array(numbers, dtype=float).reshape(68, 2) - 1.0  # 1-based -> 0-based pixel centres
    np.testing.assert_allclose(s.shapes[0], _crop_frame(raw), atol=1e-5)


def test_reference_shapes_real_wflw(wflw_annotations_root: Path) -> None:
    s = analysis.load_reference_shapes("wflw", wflw_annotations_root.parent)
    distinct = set()
    for path in wflw_annotations_root.glob("list_98pt_test_*.txt"):
        for line in path.read_text().splitlines():
            fields = line.split()
            if fields:
                distinct.add((fields[-1], tuple(fields[:196])))
    assert s.real and s.shapes.shape == (len(distinct), 98, 2)


# ============================================================================ graph statistics
def _graph(neighbours) -> object:
    return graph_from_neighbours(np.asarray(neighbours))


def test_statistics_of_two_mutual_pairs() -> None:
    g = _graph([[1], [0], [3], [2]])
    st = analysis.graph_statistics(g, TOY)
    assert st["directed_edges"] == 4 and st["undirected_edges"] == 2
    assert st["reciprocity"] == 1.0
    assert st["weak_components"] == 2 and st["strong_components"] == 2 and st["largest_component"] == 2
    assert st["out_degree_min"] == st["out_degree_max"] == 1 and st["unused_nodes"] == 0
    assert st["diameter"] == 1 and st["mean_hops"] == 1.0
    assert st["cross_part_fraction"] == 0.0


def test_statistics_of_a_directed_cycle() -> None:
    g = _graph([[3], [0], [1], [2]])  # 3 -> 0 -> 1 -> 2 -> 3
    st = analysis.graph_statistics(g, TOY)
    assert st["reciprocity"] == 0.0
    assert st["weak_components"] == 1 and st["strong_components"] == 1
    assert st["undirected_edges"] == 4 and st["diameter"] == 2
    assert st["mean_hops"] == pytest.approx((4 * 1 + 2 * 2) / 6)
    assert st["cross_part_fraction"] == pytest.approx(2 / 4)  # 1 -> 2 and 3 -> 0 cross parts a|b


def test_statistics_count_unused_nodes_and_out_degrees() -> None:
    g = _graph([[1, 2], [0, 2], [0, 1], [0, 1]])  # nobody listens to 3
    st = analysis.graph_statistics(g)
    assert st["unused_nodes"] == 1 and st["out_degree_min"] == 0 and st["out_degree_max"] == 3
    assert st["out_degree_mean"] == 2.0 and st["in_degree"] == 2.0
    assert "cross_part_fraction" not in st
    # 0, 1, 2 listen to each other (6 mutual edges); 3 listens to 0 and 1, who do not listen back
    assert st["reciprocity"] == pytest.approx(6 / 8)


def test_networkx_graph_matches_edge_index() -> None:
    g = random_graph(12, 3, seed=1)
    nxg = analysis.graph_to_networkx(g)
    src, dst = g.edge_index.numpy()
    expected = {(int(j), int(i)) for j, i in zip(src, dst) if i != j}
    assert set(nxg.edges()) == expected and nxg.number_of_nodes() == 12
    assert nxg.is_directed()
    with_loops = analysis.graph_to_networkx(g, self_loops=True)
    assert with_loops.number_of_edges() == g.num_edges


def test_components_with_parts() -> None:
    g = _graph([[1], [0], [3], [2]])
    comps = analysis.connected_components(g, TOY)
    assert [c["nodes"] for c in comps] == [[0, 1], [2, 3]]
    assert comps[0]["parts"] == {"a": 2} and comps[1]["parts"] == {"b": 2}
    chain = _graph([[1], [2], [1], [2]])  # 1 -> 0, 2 -> 1, 1 -> 2, 2 -> 3
    strong = analysis.connected_components(chain, strong=True)
    assert strong[0]["nodes"] == [1, 2] and sorted(c["size"] for c in strong) == [1, 1, 2]
    assert len(analysis.connected_components(chain)) == 1


def test_part_connectivity_counts_by_hand() -> None:
    g = _graph([[1, 2], [0, 3], [3, 0], [2, 1]])
    names, counts = analysis.part_connectivity(g, TOY)
    assert names == ["a", "b"]
    # rows: part of the landmark i; columns: part of the neighbour j
    # i=0 (a): 1 (a), 2 (b); i=1 (a): 0 (a), 3 (b); i=2 (b): 3 (b), 0 (a); i=3 (b): 2 (b), 1 (a)
    np.testing.assert_array_equal(counts, [[2, 2], [2, 2]])
    g2 = _graph([[1], [0], [0], [2]])
    np.testing.assert_array_equal(analysis.part_connectivity(g2, TOY)[1], [[2, 0], [1, 1]])
    with pytest.raises(ValueError, match="has 4 points"):
        analysis.part_connectivity(random_graph(5, 1), TOY)


def test_compare_graphs() -> None:
    a, b = _graph([[1], [0], [3], [2]]), _graph([[1], [2], [3], [2]])
    diff = analysis.compare_graphs(a, b)
    assert diff["common"] == [(1, 0), (2, 3), (3, 2)]
    assert diff["only_a"] == [(0, 1)] and diff["only_b"] == [(2, 1)]
    assert diff["jaccard"] == pytest.approx(3 / 5)
    assert analysis.compare_graphs(a, a)["jaccard"] == 1.0
    with pytest.raises(ValueError, match="cannot compare"):
        analysis.compare_graphs(a, random_graph(5, 1))


def test_hop_distances() -> None:
    cycle = _graph([[3], [0], [1], [2]])
    expected = np.array([[0, 1, 2, 1], [1, 0, 1, 2], [2, 1, 0, 1], [1, 2, 1, 0]], dtype=float)
    np.testing.assert_array_equal(analysis.hop_distances(cycle), expected)
    pairs = analysis.hop_distances(_graph([[1], [0], [3], [2]]))
    assert pairs[0, 1] == 1 and np.isinf(pairs[0, 2]) and np.isinf(pairs[3, 1])


def test_mined_300w_like_graph_statistics_are_consistent() -> None:
    shapes = analysis.load_reference_shapes("300w", None, synthetic_faces=60).shapes
    scheme = get_scheme("300w")
    g = mine_graph(shapes, k=3)
    st = analysis.graph_statistics(g, scheme)
    names, counts = analysis.part_connectivity(g, scheme)
    assert counts.sum() == st["directed_edges"] == 68 * 3
    np.testing.assert_array_equal(counts.sum(1), [3 * len(scheme.parts[n]) for n in names])
    assert st["cross_part_fraction"] == pytest.approx(1 - np.trace(counts) / counts.sum())
    assert sum(c["size"] for c in analysis.connected_components(g, scheme)) == 68


# ============================================================================ node features
def test_cosine_similarity_against_numpy() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 5, 7))
    x[1, 2] = 0.0  # a dead node in face 1
    expected = np.zeros((5, 5))
    for face in x:
        norms = np.linalg.norm(face, axis=1)
        safe = np.where(norms > 0, norms, 1.0)
        expected += (face @ face.T) / np.outer(safe, safe)
    expected /= 3
    sim = analysis.cosine_similarity_matrix(torch.tensor(x, dtype=torch.float32))
    np.testing.assert_allclose(sim, expected, atol=1e-6)
    norms = np.linalg.norm(x[0], axis=1)
    np.testing.assert_allclose(analysis.cosine_similarity_matrix(x[0]), (x[0] @ x[0].T) / np.outer(norms, norms),
                               atol=1e-12)
    with pytest.raises(ValueError, match=r"\(B, N, F\)"):
        analysis.cosine_similarity_matrix(np.zeros(4))
    with pytest.raises(ValueError, match="NaN"):
        analysis.cosine_similarity_matrix(np.full((2, 3), np.nan))


def test_similarity_by_hop() -> None:
    sim = np.array([[1, 0.9, 0.5, 0.1], [0.9, 1, 0.7, 0.3], [0.5, 0.7, 1, 0.2], [0.1, 0.3, 0.2, 1]])
    hops = np.array([[0, 1, 2, np.inf], [1, 0, 1, np.inf], [2, 1, 0, np.inf], [np.inf] * 3 + [0]])
    out = analysis.similarity_by_hop(sim, hops)
    assert out == pytest.approx({1: (0.9 + 0.7) / 2, 2: 0.5})
    assert analysis.similarity_by_hop(sim, hops, max_hop=1) == pytest.approx({1: 0.8})
    with pytest.raises(ValueError, match="same"):
        analysis.similarity_by_hop(sim, hops[:3, :3])


# ============================================================================ occlusion
def test_boxes_and_points_in_box() -> None:
    pts = np.array([[10.0, 20.0], [30.0, 24.0], [50.0, 60.0]])
    # side 20 (x from 10 to 30), margin 0.1 -> 2 px on each side
    assert analysis.part_box(pts, [0, 1], 64, margin=0.1) == (8, 18, 33, 27)
    assert analysis.part_box(pts, [0, 1, 2], 48, margin=0.5) == (0, 0, 48, 48)  # clipped to the image
    assert analysis.side_box(pts, 64, "left", centre=[0, 1]) == (0, 0, 21, 64)
    assert analysis.side_box(pts, 64, "right") == (31, 0, 64, 64)
    np.testing.assert_array_equal(analysis.points_in_box(pts, (0, 0, 21, 64)), [True, False, False])
    np.testing.assert_array_equal(analysis.points_in_box(pts, (10, 20, 11, 21)), [True, False, False])
    with pytest.raises(ValueError, match="'left' or 'right'"):
        analysis.side_box(pts, 64, "top")
    with pytest.raises(ValueError, match="at least one index"):
        analysis.part_box(pts, [], 64)


def test_occlude_images_paints_only_the_box() -> None:
    rng = np.random.default_rng(3)
    crops = [rng.integers(0, 256, (16, 16, 3), dtype=np.uint8) for _ in range(2)]
    images = torch.stack([torch.from_numpy(normalise_image(c)) for c in crops])
    boxes = [(2, 3, 6, 9), (0, 0, 16, 4)]
    out = analysis.occlude_images(images, boxes, colour=(10, 20, 30))
    assert out.shape == images.shape and not torch.equal(out, images)
    for crop, box, painted in zip(crops, boxes, out):
        got = denormalise_image(painted)
        x0, y0, x1, y1 = box
        inside = np.zeros((16, 16), dtype=bool)
        inside[y0:y1, x0:x1] = True
        assert (got[inside] == [10, 20, 30]).all()
        np.testing.assert_array_equal(got[~inside], crop[~inside])
    with pytest.raises(ValueError, match="one box per image"):
        analysis.occlude_images(images, boxes[:1])


def test_alpha_shift_summary_by_hand() -> None:
    # 3 nodes; edges (j -> i): 0->0, 1->0, 1->1, 2->1, 2->2, 0->2
    edge_index = torch.tensor([[0, 1, 1, 2, 2, 0], [0, 0, 1, 1, 2, 2]])
    clean = torch.tensor([[0.5, 0.5, 0.6, 0.4, 0.7, 0.3]])
    occl = torch.tensor([[0.8, 0.2, 0.5, 0.5, 0.7, 0.3]])
    hidden = np.array([[False, True, False]])  # node 1 hidden
    out = analysis.alpha_shift_summary(clean, occl, edge_index, hidden)
    assert out["self (occluded i)"] == pytest.approx({"delta": -0.1, "clean": 0.6, "relative": -0.1 / 0.6, "edges": 1})
    assert out["self (visible i)"]["delta"] == pytest.approx((0.3 + 0.0) / 2)
    assert out["occluded j -> visible i"] == pytest.approx({"delta": -0.3, "clean": 0.5, "relative": -0.6, "edges": 1})
    assert out["visible j -> occluded i"]["delta"] == pytest.approx(0.1)
    assert out["visible j -> visible i"]["edges"] == 1  # 0 -> 2
    assert "occluded j -> occluded i" not in out
    # 1-D inputs are one face
    assert analysis.alpha_shift_summary(clean[0], occl[0], edge_index, hidden[0]) == out
    with pytest.raises(ValueError, match=r"\(B, E=6\)"):
        analysis.alpha_shift_summary(clean[:, :5], occl[:, :5], edge_index, hidden)


def test_self_loop_values() -> None:
    edge_index = torch.tensor([[1, 0, 2, 1], [0, 0, 1, 1]])
    out = analysis.self_loop_values(torch.tensor([0.1, 0.2, 0.3, 0.4]), edge_index, num_nodes=3)
    np.testing.assert_allclose(out[:2], [0.2, 0.4])
    assert np.isnan(out[2])


# ============================================================================ a small model
@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(0)
    graph = random_graph(68, 3, seed=0)
    backbone = create_backbone("resnet18")
    model = LandmarkModel(backbone, SDFLHead(backbone.out_channels, (2, 2), 68, graph.edge_index, hidden=16,
                                             num_blocks=2, map_hidden=32), image_size=64)
    with torch.no_grad():  # non-uniform edge weights (the last edge layer starts at zero)
        model.head.edge_weighting.fc[-1].weight.normal_(0, 0.5)
    return model.eval(), graph


def test_graph_relational_part_reproduces_the_model(small_model) -> None:
    model, graph = small_model
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        coords, extras = model(images, return_intermediates=True)
        part = analysis.GraphRelationalPart(model.head, 64).eval()
        for b in range(2):
            out = part(extras["nodes_map_to_node"][b], graph.edge_index, extras["edge_logits"][b])
            torch.testing.assert_close(out, coords[b], rtol=1e-5, atol=1e-4)
    assert not torch.allclose(extras["alpha"][0], extras["alpha"][1])
    with pytest.raises(ValueError, match="edge_logits"):
        part(extras["nodes_map_to_node"][0], graph.edge_index)


def test_graph_relational_part_for_a_pyg_layer_head() -> None:
    torch.manual_seed(1)
    graph = random_graph(68, 2, seed=1)
    backbone = create_backbone("resnet18")
    model = LandmarkModel(backbone, PyGLayerHead(backbone.out_channels, (2, 2), 68, graph.edge_index, layer="gcn",
                                                 hidden=8, num_blocks=1, map_hidden=16), image_size=64).eval()
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        coords, extras = model(images, return_intermediates=True)
        out = analysis.GraphRelationalPart(model.head, 64)(extras["nodes_map_to_node"][0], graph.edge_index)
    torch.testing.assert_close(out, coords[0], rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="not a graph head"):
        analysis.GraphRelationalPart(torch.nn.Linear(2, 2), 64)


def test_node_similarities_stages(small_model) -> None:
    model, _ = small_model
    images = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        _, extras = model(images, return_intermediates=True)
    stages = {"map-to-node": "nodes_map_to_node", "after block 2": "nodes_block_1"}
    sims = analysis.node_similarities(model, images, stages)
    np.testing.assert_allclose(sims["after block 2"], analysis.cosine_similarity_matrix(extras["nodes_block_1"]))
    assert sims["map-to-node"].shape == (68, 68)
    with pytest.raises(ValueError, match="nodes_block_3"):
        analysis.node_similarities(model, images)  # the default asks for block 4; this head has 2


def test_explain_landmark_masks_only_reachable_edges(small_model) -> None:
    model, graph = small_model
    image = torch.randn(3, 64, 64)
    mask = analysis.explain_landmark(model, image, landmark=5, epochs=15)
    assert mask.shape == (graph.num_edges,) and float(mask.min()) >= 0 and float(mask.max()) <= 1
    # 1 input layer + 2 blocks x 2 + 1 output layer = 6 message-passing layers
    _, _, _, reach = k_hop_subgraph(5, 6, graph.edge_index, num_nodes=68)
    assert (mask[~reach] == 0).all() and (mask[reach] > 0).any()
    again = analysis.explain_landmark(model, image, landmark=5, epochs=15)
    torch.testing.assert_close(mask, again)  # seeded
    with pytest.raises(ValueError, match="out of range"):
        analysis.explain_landmark(model, image, landmark=68)


def _dense_head(head, x, edge_index, logits, mask):
    """Independent dense forward of an SDFLHead's graph layers with per-edge message multipliers."""
    n = x.shape[0]
    src, dst = edge_index
    alpha = torch.zeros(n, n)
    weights = torch.exp(logits - logits.max())
    denom = torch.zeros(n).index_add_(0, dst, weights)
    alpha[dst, src] = weights / denom[dst] * mask  # alpha[i, j] for the edge j -> i
    a_self, a_nb = torch.diag(torch.diagonal(alpha)), alpha - torch.diag(torch.diagonal(alpha))

    def conv(c, h):
        return a_self @ c.lin_self(h) + a_nb @ c.lin_nb(h) + c.bias

    def block(b, h):
        return torch.relu(b.norm(conv(b.conv, h)))

    h = block(head.input_block, x)
    for res in head.blocks:
        h = h + block(res.block2, block(res.block1, h))
    return (conv(head.output_conv, h) + 1) * 64 / 2 - 0.5


def test_edge_ablation_against_a_dense_forward(small_model) -> None:
    model, graph = small_model
    image = torch.randn(3, 64, 64)
    shifts = analysis.edge_ablation(model, image)
    assert shifts.shape == (graph.num_edges, 68) and (shifts >= 0).all()
    with torch.no_grad():
        _, extras = model(image.unsqueeze(0), return_intermediates=True)
        x, logits = extras["nodes_map_to_node"][0], extras["edge_logits"][0]
        base = _dense_head(model.head, x, graph.edge_index, logits, torch.ones(graph.num_edges))
        for e in (0, 7, 100):
            mask = torch.ones(graph.num_edges)
            mask[e] = 0
            expected = (_dense_head(model.head, x, graph.edge_index, logits, mask) - base).norm(dim=-1)
            torch.testing.assert_close(shifts[e], expected, rtol=1e-3, atol=1e-3)
    # an edge whose message cannot reach landmark 5 within the 6 layers does not move it
    _, _, _, reach = k_hop_subgraph(5, 6, graph.edge_index, num_nodes=68)
    assert (shifts[~reach, 5] == 0).all()


def _save_small_checkpoint(path: Path, *overrides: str) -> Path:
    from omegaconf import OmegaConf

    from pyg_sdfl.config import compose
    from pyg_sdfl.engine.builders import build_model as build_from_config
    from pyg_sdfl.engine.checkpoint import save_checkpoint

    cfg = compose([*overrides, "dataset.image_size=64", "head.hidden=16", "head.num_blocks=4", "++head.map_hidden=32"])
    graph = random_graph(68, 3, seed=2)
    torch.manual_seed(3)
    model = build_from_config(cfg, graph, 68)
    save_checkpoint({"model": model.state_dict(), "graph": graph.to_dict(), "scheme": "300w",
                     "config": OmegaConf.to_container(cfg, resolve=True), "epoch": 1}, path)
    return path


def test_load_model_and_analysis_faces(tmp_path: Path) -> None:
    loaded = analysis.load_model(_save_small_checkpoint(tmp_path / "m.ckpt"))
    assert loaded.image_size == 64 and loaded.scheme.name == "300w" and not loaded.model.training
    assert torch.equal(loaded.edge_index, loaded.model.head.edge_index)
    faces, description = analysis.analysis_faces(loaded, num_faces=3)
    assert len(faces) == 3 and "synthetic test faces" in description
    item = faces[0]
    assert item["image"].shape == (3, 64, 64) and item["landmarks"].shape == (68, 2)
    sims = analysis.node_similarities(loaded.model, torch.stack([faces[i]["image"] for i in range(3)]))
    assert list(sims) == list(analysis.STAGES)
    with pytest.raises(ValueError, match="num_faces"):
        analysis.analysis_faces(loaded, num_faces=0)


def test_analysis_faces_of_a_real_dataset_model(tmp_path: Path, w300_root: Path) -> None:
    loaded = analysis.load_model(_save_small_checkpoint(tmp_path / "a.ckpt", "dataset=300w", f"dataset.root={w300_root}"))
    faces, description = analysis.analysis_faces(loaded, num_faces=2)
    assert len(faces) == 2 and description == "the first 2 300w test faces"
    assert faces.samples[0].name.startswith("test/")
    # trained elsewhere: the configured root is gone, the shared data folder is used instead
    moved = analysis.load_model(_save_small_checkpoint(tmp_path / "b.ckpt", "dataset=300w", "dataset.root=/nowhere"))
    assert analysis.analysis_faces(moved, 2, data_dir=w300_root.parent)[1] == "the first 2 300w test faces"
    faces, description = analysis.analysis_faces(moved, 2, data_dir=tmp_path)
    assert "synthetic" in description and "not found" in description and len(faces) == 2


def test_load_model_reads_shipped_fp16_weights(tmp_path: Path) -> None:
    """The shipped-weights layout: fp16 tensors, a config reduced to what rebuilds the model."""
    from pyg_sdfl.engine.checkpoint import load_checkpoint, save_checkpoint

    full = load_checkpoint(_save_small_checkpoint(tmp_path / "full.ckpt", "dataset=300w", "dataset.root=/nowhere"))
    config = {"dataset": {k: full["config"]["dataset"][k] for k in ("name", "scheme", "image_size", "crop_scale")},
              "backbone": full["config"]["backbone"], "head": full["config"]["head"], "graph": full["config"]["graph"]}
    state = {k: v.half() if v.is_floating_point() else v for k, v in full["model"].items()}
    save_checkpoint({"kind": "pyg_sdfl.pretrained", "model": state, "graph": full["graph"], "scheme": "300w",
                     "config": config}, tmp_path / "shipped.pt")
    loaded = analysis.load_model(tmp_path / "shipped.pt")
    weight = next(loaded.model.parameters())
    assert weight.dtype == torch.float32
    faces, description = analysis.analysis_faces(loaded, 2, data_dir=tmp_path)  # no test images here
    assert "synthetic" in description and faces[0]["image"].shape == (3, 64, 64)


@pytest.mark.slow
def test_train_demo_checkpoint_runs(tmp_path: Path) -> None:
    result = analysis.train_demo_checkpoint(tmp_path, ["train.epochs=1", "train.max_steps_per_epoch=1",
                                                       "dataset.train.num_faces=40", "dataset.val_fraction=0.2",
                                                       "train.num_workers=0"])
    assert (tmp_path / "best.ckpt").is_file() and result.epochs_run == 1
    loaded = analysis.load_model(tmp_path / "best.ckpt")
    assert loaded.config.dataset.train.image_size == 128  # the demo renders its faces at 128 px
    assert loaded.image_size == 64


# ============================================================================ results
def _payload(head: dict, k: int, seed: int, nme: float, count: int = 10, occ: float | None = None) -> dict:
    test = {"all": {"nme": nme, "fr": 0.1, "auc": 0.5 + seed, "count": count}}
    if occ is not None:
        test["occluded"] = {"nme": occ, "fr": 0.2, "auc": 0.4, "count": 4}
    return {"metrics": {"test": test}, "normalisation": "inter_ocular", "crop": "1.2x landmark box, 64px",
            "config": {"seed": seed, "graph": {"k": k, "mode": "separate", "path": None}, "head": head,
                       "backbone": {"name": "resnet18"}, "train": {"milestones": [5]}}}


SDFL = {"_target_": "pyg_sdfl.nn.heads.SDFLHead", "hidden": 128}
GCN = {"_target_": "pyg_sdfl.nn.heads.PyGLayerHead", "layer": "gcn"}
FC = {"_target_": "pyg_sdfl.nn.heads.FCHead"}


def _write(root: Path, name: str, payload) -> None:
    (root / name).mkdir(parents=True)
    (root / name / "results.json").write_text(json.dumps(payload) if not isinstance(payload, str) else payload)


def test_head_label_and_flatten_config() -> None:
    assert analysis.head_label(SDFL) == "sdfl" and analysis.head_label(GCN) == "gcn" and analysis.head_label(FC) == "fc"
    flat = analysis.flatten_config(_payload(SDFL, 3, 0, 0.1)["config"])
    assert flat["graph.k"] == 3 and flat["head"] == "sdfl" and flat["backbone"] == "resnet18"
    assert flat["head.hidden"] == 128 and flat["train.milestones"] == (5,)
    with pytest.raises(ValueError, match="mapping"):
        analysis.head_label("sdfl")


def test_load_results_and_varying_keys(tmp_path: Path) -> None:
    assert analysis.load_results(tmp_path / "missing") == []
    _write(tmp_path, "a", _payload(SDFL, 3, 0, 0.05))
    _write(tmp_path, "b", _payload(GCN, 3, 0, 0.06))
    _write(tmp_path, "c", _payload(SDFL, 5, 1, 0.07))
    (tmp_path / "other.json").write_text(json.dumps({"metrics": [1, 2]}))  # not a run result: ignored
    records = analysis.load_results(tmp_path)
    assert [r.path.parent.name for r in records] == ["a", "b", "c"]
    assert records[0].protocol == "NME / inter_ocular, crop 1.2x landmark box, 64px"
    assert analysis.varying_keys(records) == ["graph.k", "head"]  # seed ignored, head.* summarised by head
    _write(tmp_path, "d", "{not json")
    with pytest.raises(ValueError, match="cannot read results file .*d"):
        analysis.load_results(tmp_path)


def test_aggregate_results_mean_and_std_over_seeds(tmp_path: Path) -> None:
    _write(tmp_path, "s0", _payload(SDFL, 3, 0, 0.05, occ=0.08))
    _write(tmp_path, "s1", _payload(SDFL, 3, 1, 0.07, occ=0.10))
    _write(tmp_path, "g0", _payload(GCN, 3, 0, 0.09, occ=0.12))
    _write(tmp_path, "k5", _payload(SDFL, 5, 0, 0.06))
    _write(tmp_path, "k10", _payload(SDFL, 10, 0, 0.08))
    records = analysis.load_results(tmp_path)
    rows = analysis.aggregate_results(records, by=["head", "graph.k"])
    assert [(r["head"], r["graph.k"]) for r in rows] == [("gcn", 3), ("sdfl", 3), ("sdfl", 5), ("sdfl", 10)]
    sdfl = rows[1]
    assert sdfl["runs"] == 2 and sdfl["seeds"] == [0, 1] and sdfl["faces"] == 10
    assert sdfl["nme"] == pytest.approx(0.06) and sdfl["nme_std"] == pytest.approx(math.sqrt(2) * 0.01)
    assert sdfl["nme_values"] == pytest.approx([0.05, 0.07])
    assert sdfl["auc"] == pytest.approx(1.0) and sdfl["auc_std"] == pytest.approx(math.sqrt(0.5))
    assert math.isnan(rows[0]["nme_std"]) and rows[0]["runs"] == 1
    # the occluded subset exists in three runs only
    occ = analysis.aggregate_results(records, by=["head"], subset="occluded", metrics=("nme",))
    assert [(r["head"], r["runs"]) for r in occ] == [("gcn", 1), ("sdfl", 2)]
    assert occ[1]["nme"] == pytest.approx(0.09) and occ[1]["faces"] == 4
    # complement: faces without the tag, (0.05*10 - 0.08*4)/6 and (0.07*10 - 0.10*4)/6
    rest = analysis.aggregate_results(records, by=["head"], subset="occluded", metrics=("nme",), complement=True)
    assert rest[1]["nme_values"] == pytest.approx([0.18 / 6, 0.3 / 6]) and rest[1]["faces"] == 6
    with pytest.raises(ValueError, match="at least one key"):
        analysis.aggregate_results(records, by=[])
    with pytest.raises(ValueError, match="complement"):
        analysis.aggregate_results(records, by=["head"], complement=True)


def test_complement_metric() -> None:
    split = {"all": {"nme": 0.05, "count": 10}, "occluded": {"nme": 0.08, "count": 4}}
    assert analysis.complement_metric(split, "occluded") == pytest.approx(0.03)
    with pytest.raises(ValueError, match="only the mean NME"):
        analysis.complement_metric(split, "occluded", "fr")
    with pytest.raises(ValueError, match="no complement"):
        analysis.complement_metric({"all": {"nme": 1, "count": 4}, "x": {"nme": 1, "count": 4}}, "x")
    with pytest.raises(ValueError, match="need the 'all'"):
        analysis.complement_metric(split, "blur")


def test_format_table() -> None:
    rows = [{"head": "sdfl", "nme": 0.06, "nme_std": 0.0141421, "fr": 0.1, "fr_std": float("nan"),
             "runs": 2, "faces": 10}]
    text = analysis.format_table(rows, ["head"], metrics=("nme", "fr"))
    assert "| head | NME (%) | FR (%) | runs | faces |" in text
    assert "| sdfl | 6.00 ± 1.41 | 10.00 | 2 | 10 |" in text


# ============================================================================ figures
@pytest.fixture
def ax():
    fig, axis = plt.subplots()
    yield axis
    plt.close(fig)


def test_plot_landmark_matrix(ax) -> None:
    scheme = get_scheme("300w")
    cbar = plotting.plot_landmark_matrix(np.eye(68), ax, scheme, title="t", cbar_label="C")
    assert cbar.ax.get_ylabel() == "C" and ax.get_xlabel() and ax.get_ylabel()
    assert list(ax.get_xticks()) == list(range(0, 68, 5))
    assert len(ax.lines) == 2 * (len(scheme.parts) - 1)  # part separators
    with pytest.raises(ValueError, match="square"):
        plotting.plot_landmark_matrix(np.zeros((3, 4)), ax)


def test_plot_edge_values_on_shape(ax) -> None:
    g = random_graph(6, 2, seed=0)
    shape = np.random.default_rng(0).uniform(0, 30, (6, 2))
    values = np.linspace(-1, 1, g.num_edges)
    cbar = plotting.plot_edge_values_on_shape(shape, g.edge_index, values, ax, cmap="RdBu_r", cbar_label="d",
                                              image=np.zeros((32, 32, 3), np.uint8), boxes=[(0, 0, 5, 5)],
                                              node_values=np.zeros(6), highlight=[1])
    assert cbar.ax.get_ylabel() == "d"
    arrows = [c for c in ax.get_children() if type(c).__name__ == "Annotation"]
    assert len(arrows) == 6 * 2  # self-loops are not drawn
    assert len([t for t in ax.texts if t.get_text()]) == 6 and len(ax.patches) == 1  # arrows are empty texts
    with pytest.raises(ValueError, match="entries for"):
        plotting.plot_edge_values_on_shape(shape, g.edge_index, values[:3], ax)


def test_plot_graph_difference_and_part_connectivity(ax) -> None:
    shape = np.random.default_rng(1).uniform(size=(4, 2))
    plotting.plot_graph_difference(shape, [(0, 1)], [(2, 1)], [(1, 0), (3, 2)], ax, labels=("s", "j"))
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["both (2)", "only s (1)", "only j (1)"]
    fig, ax2 = plt.subplots()
    cbar = plotting.plot_part_connectivity(["a", "b"], np.array([[2, 2], [0, 4]]), ax2)
    assert "share" in cbar.ax.get_ylabel() and [t.get_text() for t in ax2.texts] == ["2", "2", "4"]
    plt.close(fig)


def test_result_plots(ax) -> None:
    rows = [{"head": h, "graph.k": k, "nme": 0.05 + 0.01 * i, "nme_std": 0.001, "nme_values": [0.05, 0.06]}
            for i, (h, k) in enumerate([("sdfl", 1), ("sdfl", 3), ("gcn", 1), ("gcn", 3)])]
    plotting.plot_condition_bars(rows, "head", "nme", ax)
    assert ax.get_ylabel() == "NME (%)" and len(ax.patches) == 4
    fig, ax2 = plt.subplots()
    plotting.plot_condition_lines(rows, "graph.k", "nme", ax2, group="head")
    assert len(ax2.lines) == 2 and list(ax2.get_xticks()) == [1.0, 3.0]
    ax2.clear()
    cats = [dict(r, kind="x" if r["graph.k"] == 1 else "y") for r in rows]
    plotting.plot_condition_lines(cats, "kind", "nme", ax2, group="head")
    assert [t.get_text() for t in ax2.get_xticklabels()] == ["x", "y"]
    plt.close(fig)


def test_similarity_alpha_and_image_plots(ax) -> None:
    plotting.plot_similarity_by_hop({"a": {1: 0.9, 2: 0.8}, "b": {1: 0.5}}, ax)
    assert len(ax.lines) == 2 and "hops" in ax.get_xlabel()
    fig, ax2 = plt.subplots()
    summaries = {"mouth": {"self (visible i)": {"relative": 0.1, "delta": 0.01}},
                 "side": {"self (visible i)": {"relative": -0.1, "delta": -0.01},
                          "occluded j -> visible i": {"relative": -0.2, "delta": -0.02}}}
    plotting.plot_alpha_shift(summaries, ax2)
    assert len(ax2.patches) == 4 and "%" in ax2.get_ylabel()
    ax2.clear()
    plotting.plot_landmarks_on_image(np.zeros((8, 8, 3), np.uint8), ax2, np.ones((3, 2)), np.zeros((3, 2)),
                                     boxes=[(0, 0, 2, 2)])
    assert ax2.get_xlabel() == "x (pixels)" and len(ax2.collections) == 2
    plotting.set_text_size(ax2, 11)
    plt.close(fig)
