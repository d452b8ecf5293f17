"""The fused (gather) graph stack equals the PyG (scatter) reference: layers, attention, heads, the shipped model."""
from __future__ import annotations

import pytest
import torch

from pyg_sdfl.graph import GraphBatcher
from pyg_sdfl.graph.neighbour_table import NeighbourTable
from pyg_sdfl.nn import DynamicGraphConv, SDFLHead, edge_softmax
from pyg_sdfl.nn.fused_graph_stack import (
    fused_dynamic_conv,
    gathered_rows,
    table_alpha_to_edges,
    table_attention,
)
from graph_cases import GRAPHS, sdfl_head_with_statistics as _head

TOL = dict(atol=1e-5, rtol=1e-5)
# bf16 autocast: both paths round their matrix products to bf16 (8 bits of mantissa), in a different
# order; on normalised coordinates in [-1, 1] the two stay within this bound (measured max 2e-3)
BF16_ATOL = 2e-2


# ----------------------------------------------------------------------------- attention and one layer
@pytest.mark.parametrize("graph", sorted(GRAPHS))
@pytest.mark.parametrize("over", ["target", "source"])
def test_table_attention_equals_edge_softmax(graph, over):
    torch.manual_seed(0)
    edge_index, n = GRAPHS[graph]()
    b = 3
    batched = GraphBatcher(edge_index, n).batched_edge_index(b)
    logits = torch.randn(b, edge_index.shape[1]) * 3
    reference = edge_softmax(logits.reshape(-1), batched, b * n, over).view(b, -1)
    table = NeighbourTable.from_edge_index(edge_index, n)
    alpha = table_attention(logits, table, over)
    assert alpha.shape == (b, n, table.in_degree)
    assert torch.isfinite(alpha).all()
    assert (alpha[:, ~table.in_mask] == 0).all()
    torch.testing.assert_close(table_alpha_to_edges(alpha, table), reference, **TOL)


@pytest.mark.parametrize("graph", sorted(GRAPHS))
@pytest.mark.parametrize("over", ["target", "source"])
def test_fused_layer_equals_message_passing(graph, over):
    torch.manual_seed(1)
    edge_index, n = GRAPHS[graph]()
    b = 4
    batched = GraphBatcher(edge_index, n).batched_edge_index(b)
    conv = DynamicGraphConv(6, 5, softmax_over=over)
    with torch.no_grad():
        conv.bias.normal_()
    x = torch.randn(b, n, 6)
    logits = torch.randn(b, edge_index.shape[1]) * 2
    reference = conv(x.reshape(b * n, 6), batched, logits.reshape(-1)).view(b, n, 5)
    table = NeighbourTable.from_edge_index(edge_index, n)
    fused = fused_dynamic_conv(conv, x, gathered_rows(table), table_attention(logits, table, over))
    torch.testing.assert_close(fused, reference, **TOL)


def test_fused_layer_gradients_equal_message_passing():
    torch.manual_seed(2)
    edge_index, n = GRAPHS["irregular"]()
    b = 2
    batched = GraphBatcher(edge_index, n).batched_edge_index(b)
    conv = DynamicGraphConv(4, 3)
    x = torch.randn(b, n, 4, requires_grad=True)
    logits = torch.randn(b, edge_index.shape[1], requires_grad=True)
    table = NeighbourTable.from_edge_index(edge_index, n)
    conv(x.reshape(b * n, 4), batched, logits.reshape(-1)).pow(2).sum().backward()
    ref = (x.grad.clone(), logits.grad.clone(), conv.lin_nb.weight.grad.clone())
    x.grad = logits.grad = None
    conv.zero_grad()
    fused_dynamic_conv(conv, x, gathered_rows(table), table_attention(logits, table)).pow(2).sum().backward()
    for got, want in zip((x.grad, logits.grad, conv.lin_nb.weight.grad), ref):
        torch.testing.assert_close(got, want, **TOL)


# ----------------------------------------------------------------------------- whole heads
@pytest.mark.parametrize("graph", sorted(GRAPHS))
@pytest.mark.parametrize("over,dynamic", [("target", True), ("source", True), ("target", False)])
def test_fused_head_equals_pyg_head_with_intermediates(graph, over, dynamic):
    head = _head(graph, over, dynamic).eval()
    features = torch.randn(5, 16, 3, 3)
    with torch.no_grad():
        ref, ref_inter = head(features, return_intermediates=True)
        head.set_graph_backend("fused")
        out, inter = head(features, return_intermediates=True)
    torch.testing.assert_close(out, ref, **TOL)
    assert set(inter) == set(ref_inter)
    for key in ref_inter:
        torch.testing.assert_close(inter[key], ref_inter[key], **TOL, msg=key)


def test_fused_head_in_training_mode_matches_batch_statistics_and_gradients():
    head = _head("mined_like_k3").train()
    features = torch.randn(6, 16, 3, 3)
    ref = head(features)
    ref.pow(2).sum().backward()
    ref_grads = [p.grad.clone() for p in head.parameters()]
    head.zero_grad()
    head.set_graph_backend("fused")
    out = head(features)
    out.pow(2).sum().backward()
    torch.testing.assert_close(out, ref, **TOL)
    # training-mode BatchNorm on 6 faces amplifies fp32 rounding in the backward pass, so the
    # gradients are compared as whole tensors: relative error of the norm, plus a floor at 1e-5 of
    # the largest gradient for the conv biases that feed a BatchNorm (their exact gradient is 0:
    # both paths give rounding noise there)
    floor = 1e-5 * max(float(g.norm()) for g in ref_grads)
    for (name, p), g in zip(head.named_parameters(), ref_grads):
        assert (p.grad - g).norm() <= 1e-4 * g.norm() + floor, name


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fused_head_under_bf16_autocast_stays_within_the_stated_bound(seed):
    # in eval mode without autograd the fused path folds BatchNorm into the layers
    # (pyg_sdfl.nn.folded_graph_stack), so under bf16 it rounds at other places than the PyG path:
    # both are held to the same bound against fp32, which scales with the outputs (this random
    # head's reach is +-7 to +-15, where bf16's own resolution is 0.03-0.06): a relative bound
    head = _head("mined_like_k3", seed=seed).eval()
    features = torch.randn(8, 16, 3, 3)
    with torch.no_grad():
        fp32 = head(features)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            ref = head(features).float()
            head.set_graph_backend("fused")
            out = head(features).float()
    bound = BF16_ATOL * fp32.abs().max()
    assert (ref - fp32).abs().max() <= bound
    assert (out - fp32).abs().max() <= bound


def test_unknown_backend_is_an_error_naming_the_choices():
    head = _head("dense")
    with pytest.raises(ValueError, match="pyg.*fused"):
        head.set_graph_backend("scatter")


def test_table_follows_the_module_to_another_dtype_and_state():
    head = _head("irregular").eval()
    table = head.neighbour_table
    head.to(torch.float64)  # _apply drops the cached table
    assert head.neighbour_table is not table
    assert head.neighbour_table.in_edges.device == head.edge_index.device


# ----------------------------------------------------------------------------- the shipped model
def test_shipped_model_fused_equals_pyg():
    from pyg_sdfl.engine.checkpoint import load_model
    from pyg_sdfl.weights import available_pretrained, pretrained_path

    if "300w" not in available_pretrained():
        pytest.skip("the shipped 300-W weights are not in this installation")
    model = load_model(pretrained_path("300w")).model
    s = model.image_size
    torch.manual_seed(0)
    images = torch.randn(3, 3, s, s)
    with torch.no_grad():
        ref, ref_inter = model(images, return_intermediates=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            ref_bf16 = model(images).float()
        model.head.set_graph_backend("fused")
        out, inter = model(images, return_intermediates=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out_bf16 = model(images).float()
    torch.testing.assert_close(inter["normalised"], ref_inter["normalised"], **TOL)
    # pixels = (normalised + 1) * S / 2 - 0.5: the same bound scaled by S / 2
    torch.testing.assert_close(out, ref, atol=1e-5 * s / 2, rtol=1e-5)
    assert (out_bf16 - ref_bf16).abs().max() <= BF16_ATOL * s / 2
