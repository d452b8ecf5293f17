"""pyg_sdfl.studies.explainers: the graph layers as a PyG model, GNNExplainer, edge ablation."""
from __future__ import annotations

import pytest
import torch
from torch_geometric.utils import k_hop_subgraph

from pyg_sdfl.graph import random_graph
from pyg_sdfl.nn.heads import PyGLayerHead
from pyg_sdfl.nn.backbones import create_backbone
from pyg_sdfl.nn.model import LandmarkModel
from pyg_sdfl.studies import explainers


def test_graph_relational_part_reproduces_the_model(small_model) -> None:
    model, graph = small_model
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        coords, extras = model(images, return_intermediates=True)
        part = explainers.GraphRelationalPart(model.head, 64).eval()
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
        out = explainers.GraphRelationalPart(model.head, 64)(extras["nodes_map_to_node"][0], graph.edge_index)
    torch.testing.assert_close(out, coords[0], rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="not a graph head"):
        explainers.GraphRelationalPart(torch.nn.Linear(2, 2), 64)


def test_explain_landmark_masks_only_reachable_edges(small_model) -> None:
    model, graph = small_model
    image = torch.randn(3, 64, 64)
    mask = explainers.explain_landmark(model, image, landmark=5, epochs=15)
    assert mask.shape == (graph.num_edges,) and float(mask.min()) >= 0 and float(mask.max()) <= 1
    # 1 input layer + 2 blocks x 2 + 1 output layer = 6 message-passing layers
    _, _, _, reach = k_hop_subgraph(5, 6, graph.edge_index, num_nodes=68)
    assert (mask[~reach] == 0).all() and (mask[reach] > 0).any()
    again = explainers.explain_landmark(model, image, landmark=5, epochs=15)
    torch.testing.assert_close(mask, again)  # seeded
    with pytest.raises(ValueError, match="out of range"):
        explainers.explain_landmark(model, image, landmark=68)


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
    shifts = explainers.edge_ablation(model, image)
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
