"""MapToNode and EdgeWeighting: shapes, the channel-to-node layout, the binary-adjacency switch."""
from __future__ import annotations

import pytest
import torch

from pyg_sdfl.nn import EdgeWeighting, MapToNode


def test_map_to_node_shapes_and_channel_layout() -> None:
    torch.manual_seed(0)
    m2n = MapToNode(in_channels=6, num_points=5, nodes_per_point=3, hidden_channels=8)
    feats = torch.randn(2, 6, 4, 3)
    nodes, maps = m2n(feats)
    assert maps.shape == (2, 15, 4, 3)
    assert nodes.shape == (2, 5, 3 * 4 * 3) and m2n.node_features((4, 3)) == 36
    # node i holds channels i*n .. i*n + n - 1, each flattened row-major
    assert torch.equal(nodes[1, 2], maps[1, 6:9].reshape(-1))
    # two conv-BN-ReLU blocks: outputs are non-negative
    assert (maps >= 0).all()
    kinds = [type(m).__name__ for m in m2n.modules()]
    assert kinds.count("Conv2d") == 2 and kinds.count("BatchNorm2d") == 2 and kinds.count("ReLU") == 2


def test_map_to_node_rejects_wrong_channels() -> None:
    m2n = MapToNode(in_channels=6, num_points=5)
    with pytest.raises(ValueError, match=r"\(B, 6, H, W\)"):
        m2n(torch.randn(2, 7, 4, 4))
    with pytest.raises(ValueError, match="even|odd"):
        MapToNode(6, 5, kernel_size=2)


def test_edge_weighting_is_gap_then_two_fc() -> None:
    torch.manual_seed(1)
    ew = EdgeWeighting(in_channels=12, num_edges=20, hidden_channels=7)
    maps = torch.randn(3, 12, 4, 4)
    # starts at the binary adjacency: all logits 0
    assert torch.equal(ew(maps), torch.zeros(3, 20))
    with torch.no_grad():
        for p in ew.parameters():
            p.normal_()
    pooled = maps.mean(dim=(2, 3))
    w1, b1, w2, b2 = ew.fc[0].weight, ew.fc[0].bias, ew.fc[2].weight, ew.fc[2].bias
    expected = torch.relu(pooled @ w1.t() + b1) @ w2.t() + b2
    torch.testing.assert_close(ew(maps), expected)


def test_binary_adjacency_switch() -> None:
    ew = EdgeWeighting(in_channels=12, num_edges=20, dynamic=False)
    assert sum(p.numel() for p in ew.parameters()) == 0
    assert torch.equal(ew(torch.randn(2, 12, 3, 3)), torch.ones(2, 20))
    with pytest.raises(ValueError, match=r"\(B, 12, H, W\)"):
        ew(torch.randn(2, 11, 3, 3))
