"""The folded graph stack (BatchNorm in the layers, one dense attention matrix) equals the layers it folds.

References: a dense per-face computation of one layer followed by BatchNorm, and the unfolded paths
(PyG's message passing, the fused gather) of the same head."""
from __future__ import annotations

import pytest
import torch

from pyg_sdfl.nn import DynamicGraphConv
from pyg_sdfl.nn.folded_graph_stack import FoldedGraphStack, attention_matrix, fold_layer
from pyg_sdfl.nn.fused_graph_stack import gathered_rows, table_attention
from graph_cases import GRAPHS, sdfl_head_with_statistics

TOL = dict(atol=1e-5, rtol=1e-5)


def _inference(head, features):
    with torch.no_grad():
        return head(features)


# ----------------------------------------------------------------------------- one layer, densely
def test_fold_layer_equals_the_layer_then_batch_norm_on_a_dense_reference():
    torch.manual_seed(0)
    n, f, o, b = 6, 5, 4, 3
    conv = DynamicGraphConv(f, o)
    norm = torch.nn.BatchNorm1d(o).eval()
    with torch.no_grad():
        conv.bias.normal_()
        norm.running_mean.normal_(), norm.running_var.uniform_(0.3, 3.0), norm.weight.normal_(), norm.bias.normal_()
    x = torch.randn(b, n, f)
    # dense attention: every node attends to itself and to two others, rows summing to 1
    alpha_self = torch.rand(b, n)
    neighbours = torch.zeros(b, n, n)
    for i in range(n):
        neighbours[:, i, (i + 1) % n] = torch.rand(b)
        neighbours[:, i, (i + 3) % n] = torch.rand(b)
    total = alpha_self + neighbours.sum(-1)
    alpha_self, neighbours = alpha_self / total, neighbours / total[..., None]
    # h_i' = alpha_ii W_self x_i + sum_j alpha_ij W_nb x_j + b, then BatchNorm on its running statistics
    with torch.no_grad():
        ref = alpha_self[..., None] * conv.lin_self(x) + neighbours @ conv.lin_nb(x) + conv.bias
        ref = norm(ref.reshape(-1, o)).view(b, n, o)
    weight, bias = fold_layer(conv, norm)
    y = (x @ weight.T).view(b, n, 2, o)
    out = alpha_self[..., None] * y[:, :, 0] + neighbours @ y[:, :, 1] + bias
    torch.testing.assert_close(out, ref, **TOL)


def test_fold_layer_refuses_what_it_cannot_fold():
    with pytest.raises(TypeError, match="DynamicGraphConv"):
        fold_layer(torch.nn.Linear(3, 3))
    with pytest.raises(ValueError, match="running statistics"):
        fold_layer(DynamicGraphConv(3, 4), torch.nn.BatchNorm1d(4, track_running_stats=False))


@pytest.mark.parametrize("graph", sorted(GRAPHS))
@pytest.mark.parametrize("over", ["target", "source"])
def test_attention_matrix_places_each_table_entry_on_its_row(graph, over):
    head = sdfl_head_with_statistics(graph, over)
    table = head.neighbour_table
    logits = torch.randn(3, head.num_edges)
    alpha = table_attention(logits, table, over)
    rows = gathered_rows(table)
    one_hot = torch.nn.functional.one_hot(rows.view(head.num_points, -1), 2 * head.num_points).float()
    a = attention_matrix(alpha, one_hot)
    ref = torch.zeros(3, head.num_points, 2 * head.num_points)
    for i in range(head.num_points):
        for d in range(alpha.shape[-1]):
            ref[:, i, rows[i * alpha.shape[-1] + d]] += alpha[:, i, d]
    torch.testing.assert_close(a, ref, **TOL)


# ----------------------------------------------------------------------------- whole heads
@pytest.mark.parametrize("graph", sorted(GRAPHS))
@pytest.mark.parametrize("over,dynamic", [("target", True), ("source", True), ("target", False)])
def test_inference_on_the_fused_path_folds_and_equals_pyg(graph, over, dynamic):
    head = sdfl_head_with_statistics(graph, over, dynamic).eval()
    features = torch.randn(5, 16, 3, 3)
    ref = _inference(head, features)
    head.set_graph_backend("fused")
    out = _inference(head, features)
    assert "stack" in head._fold_cache  # the folded path ran
    torch.testing.assert_close(out, ref, **TOL)
    # and the unfolded fused path (autograd on) gives the same
    torch.testing.assert_close(head(features).detach(), ref, **TOL)


def test_folded_stack_is_used_only_without_autograd_and_in_eval_mode():
    head = sdfl_head_with_statistics("irregular").eval().set_graph_backend("fused")
    features = torch.randn(4, 16, 3, 3)
    head(features).sum().backward()  # eval with autograd: the layers' own weights get gradients
    assert head._fold_cache == {}
    assert head.input_block.norm.weight.grad is not None and head.input_block.conv.lin_nb.weight.grad is not None
    head.train()
    with torch.no_grad():
        head(features)  # training mode: batch statistics, nothing folded
    assert head._fold_cache == {}


def test_snapshot_follows_every_change_of_the_weights():
    head = sdfl_head_with_statistics("mined_like_k3").eval().set_graph_backend("fused")
    other = sdfl_head_with_statistics("mined_like_k3", seed=5).eval()
    features = torch.randn(3, 16, 3, 3)
    first = _inference(head, features)
    stack = head.folded_stack()
    assert head.folded_stack() is stack  # nothing changed: the snapshot is reused
    with torch.no_grad():  # an in-place step, as an optimiser makes
        head.blocks[0].block1.conv.lin_self.weight.add_(0.5)
        head.blocks[1].block2.norm.running_var.mul_(3.0)
    stepped = _inference(head, features)
    assert not torch.allclose(stepped, first)
    torch.testing.assert_close(stepped, _inference(head.set_graph_backend("pyg"), features), **TOL)
    head.set_graph_backend("fused").load_state_dict(other.state_dict())  # copied in place
    torch.testing.assert_close(_inference(head, features), _inference(other, features), **TOL)
    head.double()  # new storage
    torch.testing.assert_close(_inference(head, features.double()), _inference(other, features).double(),
                               atol=1e-5, rtol=1e-5)
    head.float()
    head.output_conv.lin_nb.weight = torch.nn.Parameter(2 * head.output_conv.lin_nb.weight.detach())  # replaced
    replaced = _inference(head.set_graph_backend("fused"), features)
    torch.testing.assert_close(replaced, _inference(head.set_graph_backend("pyg"), features), **TOL)


def test_snapshot_is_neither_a_child_module_nor_saved():
    head = sdfl_head_with_statistics("dense").eval().set_graph_backend("fused")
    keys = set(head.state_dict())
    _inference(head, torch.randn(2, 16, 3, 3))
    assert set(head.state_dict()) == keys
    assert not any(isinstance(m, FoldedGraphStack) for m in head.modules())


def test_a_snapshot_made_in_inference_mode_serves_autograd_later():
    head = sdfl_head_with_statistics("irregular").eval().set_graph_backend("fused")
    features = torch.randn(2, 16, 3, 3)
    with torch.inference_mode():
        ref = head(features)
    stack = head.folded_stack()
    x = torch.randn(2, head.num_points, head.node_features, requires_grad=True)
    alpha = torch.softmax(torch.randn(2, head.num_points, head.neighbour_table.in_edges.shape[1]), -1)
    stack(x, alpha).sum().backward()  # no "inference tensors cannot be saved for backward"
    assert x.grad is not None
    with torch.no_grad():
        torch.testing.assert_close(head(features), ref, **TOL)


def test_snapshot_follows_functional_call_and_data_writes_after_eval():
    head = sdfl_head_with_statistics("irregular").eval().set_graph_backend("fused")
    other = sdfl_head_with_statistics("irregular", seed=3).eval()
    features = torch.randn(3, 16, 3, 3)
    own, others = _inference(head, features), _inference(other, features)
    with torch.no_grad():
        borrowed = torch.func.functional_call(head, {**dict(other.named_parameters()), **dict(other.named_buffers())},
                                              (features,))
    torch.testing.assert_close(borrowed, others, **TOL)
    torch.testing.assert_close(_inference(head, features), own, **TOL)  # its own weights again
    # .data writes bump no version (as EMA code does them); eval() drops the snapshot
    for p, q in zip(head.parameters(), other.parameters()):
        p.data.copy_(q.data)
    for p, q in zip(head.buffers(), other.buffers()):
        p.data.copy_(q.data)
    torch.testing.assert_close(_inference(head.eval(), features), others, **TOL)


def test_a_model_made_in_inference_mode_folds_at_every_call():
    with torch.inference_mode():
        head = sdfl_head_with_statistics("mined_like_k3").eval().set_graph_backend("fused")
        features = torch.randn(2, 16, 3, 3)
        out = head(features)  # inference tensors have no version counter: no snapshot, no error
        ref = head.set_graph_backend("pyg")(features)
    torch.testing.assert_close(out, ref, **TOL)
    assert "stack" not in head._fold_cache


def test_a_batch_norm_in_training_mode_inside_an_eval_head_is_not_folded():
    head = sdfl_head_with_statistics("dense").eval().set_graph_backend("fused")
    head.blocks[0].block1.norm.train()  # e.g. test-time adaptation of one layer
    assert head.folded_stack() is None
    features = torch.randn(6, 16, 3, 3)
    out = _inference(head, features)  # batch statistics in that layer
    torch.testing.assert_close(out, _inference(head.set_graph_backend("pyg"), features), **TOL)


def test_under_bf16_autocast_the_coordinates_keep_fp32_resolution():
    head = sdfl_head_with_statistics("mined_like_k3").eval().set_graph_backend("fused")
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = head(torch.randn(8, 16, 3, 3))
    assert out.dtype == torch.float32
    # the output layer sums in fp32: most coordinates are not on bf16's grid
    assert (out != out.bfloat16().float()).float().mean() > 0.5
