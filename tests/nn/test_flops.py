"""Parameter/FLOP counts of the heads and the paper's 29.95 MFLOPs L-GRN figure."""
from __future__ import annotations

import itertools

import pytest
import torch

from pyg_sdfl.graph import random_graph
from pyg_sdfl.nn import FCHead, PyGLayerHead, SDFLHead, count_parameters, head_flops, paper_lgrn_flops
from pyg_sdfl.nn.flops import PAPER_LGRN_MFLOPS, fc_head_flops, lgrn_flops

N98, I, F, K = 98, 256, 128, 3


@pytest.fixture(scope="module")
def paper_sized_head() -> SDFLHead:
    # 98 points, n=4 maps of 8x8 -> I = 256 node features, F = 128; a thin backbone map keeps it cheap
    g = random_graph(N98, K, seed=0)
    return SDFLHead(4, (8, 8), N98, g.edge_index, nodes_per_point=4, hidden=128, num_blocks=4, map_hidden=8)


def test_count_parameters() -> None:
    lin = torch.nn.Linear(5, 3)
    assert count_parameters(lin) == 5 * 3 + 3
    lin.bias.requires_grad_(False)
    assert count_parameters(lin, trainable_only=True) == 15
    assert count_parameters(lin) == 18


def test_measured_graph_layers_match_the_closed_form(paper_sized_head: SDFLHead) -> None:
    r = head_flops(paper_sized_head, (4, 8, 8))
    e = N98 * (K + 1)
    # hand count: two weight matrices on every node, 2 FLOPs per MAC, widths 256->128, 8x 128->128, 128->2
    weights = 2 * 2 * N98 * (I * F + 8 * F * F + F * 2)
    aggregation = 2 * e * (9 * F + 2)
    assert weights == 64_325_632 and aggregation == 904_736
    assert r["graph_layers"] == weights + aggregation
    assert lgrn_flops(aggregation=True) == weights + aggregation
    # map-to-node: two 3x3 convs on 8x8 (4 -> 8 -> 392 channels)
    assert r["by_module"]["map_to_node"] == 2 * 64 * 9 * (4 * 8 + 8 * 392)
    # edge weighting: GAP then 392 -> 196 -> 392
    assert r["by_module"]["edge_weighting"] == 2 * (392 * 196 + 196 * 392)
    assert r["total"] == sum(r["by_module"].values()) == r["matmul"] + r["aggregation"]
    assert r["params"] == count_parameters(paper_sized_head) == sum(r["params_by_module"].values())
    # graph-layer parameters: 2 matrices + bias per conv, BN (2F) after the 9 hidden convs
    graph_params = 2 * (I * F + 8 * F * F + F * 2) + 9 * F + 2 + 9 * 2 * F
    assert sum(r["params_by_module"][k] for k in ("input_block", "blocks", "output_conv")) == graph_params


def test_head_flops_leaves_the_head_as_it_was(paper_sized_head: SDFLHead) -> None:
    paper_sized_head.train()
    head_flops(paper_sized_head, (1, 4, 8, 8))
    assert paper_sized_head.training
    with pytest.raises(ValueError, match="feature_shape"):
        head_flops(paper_sized_head, (2, 4, 8, 8))


def test_fc_and_pyg_heads() -> None:
    fc = FCHead(512, (8, 8), N98)
    r = head_flops(fc, (512, 8, 8))
    assert r["total"] == fc_head_flops(512, (8, 8), N98) == 2 * (512 * 64 * 256 + 256 * 196)
    # params: fc1 weight + bias, BatchNorm scale + shift, fc2 weight + bias
    assert r["graph_layers"] == 0 and r["params"] == 512 * 64 * 256 + 256 + 2 * 256 + 256 * 196 + 196
    g = random_graph(10, 3, seed=0)
    gcn = PyGLayerHead(4, (4, 4), 10, g.edge_index, layer="gcn", hidden=16, num_blocks=1, map_hidden=8)
    rg = head_flops(gcn, (4, 4, 4))
    # GCNConv has one weight matrix: 10 nodes x (64*16 + 2*16*16 + 16*2), 2 FLOPs per MAC
    assert rg["matmul"] - rg["by_module"]["map_to_node"] == 2 * 10 * (64 * 16 + 2 * 16 * 16 + 16 * 2)


def test_paper_figure_versus_standard_conventions() -> None:
    t = paper_lgrn_flops()
    assert t["paper"] == pytest.approx(29.95e6)
    assert t["macs_one_weight"] == N98 * (I * F + 8 * F * F + 2 * F) == 16_081_408
    assert t["flops_one_weight"] == t["macs_two_weights"] == 32_162_816
    assert t["flops_two_weights"] == 64_325_632
    # the paper's figure lies strictly between the one-weight MAC and FLOP counts ...
    assert t["macs_one_weight"] < t["paper"] < t["flops_one_weight"]
    # ... and matches no whole number of F x F layers
    assert t["m_hidden_layers_for_paper"] == pytest.approx(7.311, abs=1e-3)


def test_no_common_convention_rounds_to_29_95() -> None:
    """The grid of conventions the flops module docstring claims to have searched."""
    hits = []
    for unit, weights, degree, agg_unit, bn, relu, first, last, bias, residual in itertools.product(
        (1, 2), (1, 2), (0, K, K + 1), (1, 2), (0, 1, 2, 4), (0, 1), ("IF", "FF", None), (True, False), (0, 1), (0, 1)
    ):
        layers = [(I, F)] if first == "IF" else [(F, F)] if first == "FF" else []
        layers += [(F, F)] * 8
        hidden_layers = len(layers)
        if last:
            layers.append((F, 2))
        total = sum(unit * weights * N98 * a * b + agg_unit * N98 * degree * b + bias * N98 * b for a, b in layers)
        total += (bn + relu) * N98 * F * hidden_layers + residual * 4 * N98 * F
        if round(total / 1e6, 2) == PAPER_LGRN_MFLOPS:
            hits.append((unit, weights, degree, agg_unit, bn, relu, first, last, bias, residual))
    assert hits == []
