"""graph.neighbour_table: the padded in/out-edge tables list every edge once, in edge order."""
from __future__ import annotations

import pytest
import torch

from graph_cases import irregular_graph
from pyg_sdfl.graph.neighbour_table import NeighbourTable


def test_table_lists_every_edge_once_by_target_and_by_source():
    edge_index, n = irregular_graph(9, seed=1), 9
    t = NeighbourTable.from_edge_index(edge_index, n)
    e = edge_index.shape[1]
    assert sorted(t.in_edges[t.in_mask].tolist()) == list(range(e))
    assert sorted(t.out_edges[t.out_mask].tolist()) == list(range(e))
    for i in range(n):
        ids = t.in_edges[i][t.in_mask[i]]
        assert (edge_index[1, ids] == i).all() and (t.in_sources[i][t.in_mask[i]] == edge_index[0, ids]).all()
        out = t.out_edges[i][t.out_mask[i]]
        assert (edge_index[0, out] == i).all()
    assert (t.in_edges.reshape(-1)[t.in_position] == torch.arange(e)).all()
    assert (t.out_edges.reshape(-1)[t.out_position] == torch.arange(e)).all()
    assert t.in_is_self.sum() == (edge_index[0] == edge_index[1]).sum()


def test_table_rejects_bad_edge_index():
    with pytest.raises(ValueError, match=r"\(2, E\)"):
        NeighbourTable.from_edge_index(torch.zeros(3, 4, dtype=torch.long), 5)
    with pytest.raises(ValueError, match=r"refers to node 5 but node ids run from 0 to num_nodes - 1 = 2"):
        NeighbourTable.from_edge_index(torch.tensor([[0, 5], [1, 2]]), 3)
    with pytest.raises(ValueError, match=r"refers to node -1 but"):
        NeighbourTable.from_edge_index(torch.tensor([[0, -1], [1, 2]]), 3)
    with pytest.raises(ValueError, match="integer"):
        NeighbourTable.from_edge_index(torch.zeros(2, 4), 5)
