"""pyg_sdfl.studies.graph_stats: statistics of a mined landmark graph."""
from __future__ import annotations


import numpy as np
import pytest

from pyg_sdfl.graph import graph_from_neighbours, mine_graph, random_graph
from pyg_sdfl.schemes import LandmarkScheme, get_scheme
from pyg_sdfl.studies import graph_stats
from pyg_sdfl.studies.shapes import load_reference_shapes

TOY = LandmarkScheme(name="toy", num_points=4, flip_permutation=(0, 1, 2, 3), inter_ocular=(0, 1),
                     left_pupil=(0,), right_pupil=(1,), parts={"a": (0, 1), "b": (2, 3)})


def _graph(neighbours) -> object:
    return graph_from_neighbours(np.asarray(neighbours))


def test_statistics_of_two_mutual_pairs() -> None:
    g = _graph([[1], [0], [3], [2]])
    st = graph_stats.graph_statistics(g, TOY)
    assert st["directed_edges"] == 4 and st["undirected_edges"] == 2
    assert st["reciprocity"] == 1.0
    assert st["weak_components"] == 2 and st["strong_components"] == 2 and st["largest_component"] == 2
    assert st["out_degree_min"] == st["out_degree_max"] == 1 and st["unused_nodes"] == 0
    assert st["diameter"] == 1 and st["mean_hops"] == 1.0
    assert st["cross_part_fraction"] == 0.0


def test_statistics_of_a_directed_cycle() -> None:
    g = _graph([[3], [0], [1], [2]])  # 3 -> 0 -> 1 -> 2 -> 3
    st = graph_stats.graph_statistics(g, TOY)
    assert st["reciprocity"] == 0.0
    assert st["weak_components"] == 1 and st["strong_components"] == 1
    assert st["undirected_edges"] == 4 and st["diameter"] == 2
    assert st["mean_hops"] == pytest.approx((4 * 1 + 2 * 2) / 6)
    assert st["cross_part_fraction"] == pytest.approx(2 / 4)  # 1 -> 2 and 3 -> 0 cross parts a|b


def test_statistics_count_unused_nodes_and_out_degrees() -> None:
    g = _graph([[1, 2], [0, 2], [0, 1], [0, 1]])  # nobody listens to 3
    st = graph_stats.graph_statistics(g)
    assert st["unused_nodes"] == 1 and st["out_degree_min"] == 0 and st["out_degree_max"] == 3
    assert st["out_degree_mean"] == 2.0 and st["in_degree"] == 2.0
    assert "cross_part_fraction" not in st
    # 0, 1, 2 listen to each other (6 mutual edges); 3 listens to 0 and 1, who do not listen back
    assert st["reciprocity"] == pytest.approx(6 / 8)


def test_networkx_graph_matches_edge_index() -> None:
    g = random_graph(12, 3, seed=1)
    nxg = graph_stats.graph_to_networkx(g)
    src, dst = g.edge_index.numpy()
    expected = {(int(j), int(i)) for j, i in zip(src, dst) if i != j}
    assert set(nxg.edges()) == expected and nxg.number_of_nodes() == 12
    assert nxg.is_directed()
    with_loops = graph_stats.graph_to_networkx(g, self_loops=True)
    assert with_loops.number_of_edges() == g.num_edges


def test_components_with_parts() -> None:
    g = _graph([[1], [0], [3], [2]])
    comps = graph_stats.connected_components(g, TOY)
    assert [c["nodes"] for c in comps] == [[0, 1], [2, 3]]
    assert comps[0]["parts"] == {"a": 2} and comps[1]["parts"] == {"b": 2}
    chain = _graph([[1], [2], [1], [2]])  # 1 -> 0, 2 -> 1, 1 -> 2, 2 -> 3
    strong = graph_stats.connected_components(chain, strong=True)
    assert strong[0]["nodes"] == [1, 2] and sorted(c["size"] for c in strong) == [1, 1, 2]
    assert len(graph_stats.connected_components(chain)) == 1


def test_part_connectivity_counts_by_hand() -> None:
    g = _graph([[1, 2], [0, 3], [3, 0], [2, 1]])
    names, counts = graph_stats.part_connectivity(g, TOY)
    assert names == ["a", "b"]
    # rows: part of the landmark i; columns: part of the neighbour j
    # i=0 (a): 1 (a), 2 (b); i=1 (a): 0 (a), 3 (b); i=2 (b): 3 (b), 0 (a); i=3 (b): 2 (b), 1 (a)
    np.testing.assert_array_equal(counts, [[2, 2], [2, 2]])
    g2 = _graph([[1], [0], [0], [2]])
    np.testing.assert_array_equal(graph_stats.part_connectivity(g2, TOY)[1], [[2, 0], [1, 1]])
    with pytest.raises(ValueError, match="has 4 points"):
        graph_stats.part_connectivity(random_graph(5, 1), TOY)


def test_compare_graphs() -> None:
    a, b = _graph([[1], [0], [3], [2]]), _graph([[1], [2], [3], [2]])
    diff = graph_stats.compare_graphs(a, b)
    assert diff["common"] == [(1, 0), (2, 3), (3, 2)]
    assert diff["only_a"] == [(0, 1)] and diff["only_b"] == [(2, 1)]
    assert diff["jaccard"] == pytest.approx(3 / 5)
    assert graph_stats.compare_graphs(a, a)["jaccard"] == 1.0
    with pytest.raises(ValueError, match="cannot compare"):
        graph_stats.compare_graphs(a, random_graph(5, 1))


def test_hop_distances() -> None:
    cycle = _graph([[3], [0], [1], [2]])
    expected = np.array([[0, 1, 2, 1], [1, 0, 1, 2], [2, 1, 0, 1], [1, 2, 1, 0]], dtype=float)
    np.testing.assert_array_equal(graph_stats.hop_distances(cycle), expected)
    pairs = graph_stats.hop_distances(_graph([[1], [0], [3], [2]]))
    assert pairs[0, 1] == 1 and np.isinf(pairs[0, 2]) and np.isinf(pairs[3, 1])


def test_mined_300w_like_graph_statistics_are_consistent() -> None:
    shapes = load_reference_shapes("300w", None, synthetic_faces=60).shapes
    scheme = get_scheme("300w")
    g = mine_graph(shapes, k=3)
    st = graph_stats.graph_statistics(g, scheme)
    names, counts = graph_stats.part_connectivity(g, scheme)
    assert counts.sum() == st["directed_edges"] == 68 * 3
    np.testing.assert_array_equal(counts.sum(1), [3 * len(scheme.parts[n]) for n in names])
    assert st["cross_part_fraction"] == pytest.approx(1 - np.trace(counts) / counts.sum())
    assert sum(c["size"] for c in graph_stats.connected_components(g, scheme)) == 68
