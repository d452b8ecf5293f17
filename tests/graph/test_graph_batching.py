"""GraphBatcher: vectorised (B, N, C) <-> PyG Batch conversion."""
from __future__ import annotations

import pytest
import torch
from torch_geometric.data import Batch, Data

from pyg_sdfl.graph import GraphBatcher, random_graph


@pytest.fixture
def graph():
    return random_graph(7, 2, seed=3)


def test_batched_edge_index_is_the_disjoint_union(graph) -> None:
    batcher = GraphBatcher(graph.edge_index, graph.num_nodes)
    ei = batcher.batched_edge_index(4)
    expected = torch.cat([graph.edge_index + b * graph.num_nodes for b in range(4)], dim=1)
    assert torch.equal(ei, expected)


def test_batched_edge_index_is_cached_per_batch_size(graph) -> None:
    batcher = GraphBatcher(graph.edge_index, graph.num_nodes)
    assert batcher.batched_edge_index(3) is batcher.batched_edge_index(3, "cpu")
    assert batcher.batched_edge_index(3) is not batcher.batched_edge_index(5)
    assert batcher.batched_edge_index(5).shape == (2, 5 * graph.num_edges)


@pytest.mark.parametrize("batch_size", [1, 3])
def test_to_batch_equals_from_data_list(graph, batch_size: int) -> None:
    batcher = GraphBatcher(graph.edge_index, graph.num_nodes)
    x = torch.randn(batch_size, graph.num_nodes, 5)
    ours = batcher.to_batch(x)
    ref = Batch.from_data_list([Data(x=x[b], edge_index=graph.edge_index) for b in range(batch_size)])
    for key in ("x", "edge_index", "batch", "ptr"):
        assert torch.equal(ours[key], ref[key]), key
    assert ours.num_graphs == ref.num_graphs == batch_size
    for a, b in zip(ours.to_data_list(), ref.to_data_list()):
        assert torch.equal(a.x, b.x) and torch.equal(a.edge_index, b.edge_index)


def test_to_dense_inverts_flatten(graph) -> None:
    batcher = GraphBatcher(graph.edge_index, graph.num_nodes)
    x = torch.randn(4, graph.num_nodes, 3)
    flat = batcher.to_batch(x).x
    assert torch.equal(flat[2 * graph.num_nodes + 1], x[2, 1])  # node 1 of face 2
    assert torch.equal(batcher.to_dense(flat, 4), x)
    logits = torch.randn(4 * graph.num_edges)
    assert torch.equal(batcher.edges_to_dense(logits, 4)[1], logits[graph.num_edges : 2 * graph.num_edges])


def test_bad_shapes_raise(graph) -> None:
    batcher = GraphBatcher(graph.edge_index, graph.num_nodes)
    with pytest.raises(ValueError, match="N=6 nodes per face but the graph has 7"):
        batcher.to_batch(torch.randn(2, 6, 3))
    with pytest.raises(ValueError, match=r"\(B, N, C\)"):
        batcher.to_batch(torch.randn(14, 3))
    with pytest.raises(ValueError, match="expected B\\*N"):
        batcher.to_dense(torch.randn(13, 3), 2)
    with pytest.raises(ValueError, match="batch_size"):
        batcher.batched_edge_index(0)
    with pytest.raises(ValueError, match="num_nodes=5"):
        GraphBatcher(graph.edge_index, 5)
    with pytest.raises(ValueError, match=r"\(2, E\)"):
        GraphBatcher(graph.edge_index.t(), 7)
