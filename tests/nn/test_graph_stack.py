"""GraphStack against an independent dense computation; softmax once = softmax in every layer;
DynamicGraphConv with alpha = with logits; errors; the heads' stack as a standalone module."""
from __future__ import annotations

import pytest
import torch
from torch_geometric.explain import AttentionExplainer, Explainer
from torch_geometric.nn import GCNConv

from pyg_sdfl.graph import GraphBatcher, random_graph
from pyg_sdfl.nn import DynamicGraphConv, GraphStack, PyGLayerHead, SDFLHead, edge_softmax

TOL = dict(atol=1e-5, rtol=1e-5)
N, E_K, I, F = 9, 3, 6, 5  # nodes per face, neighbours, input and hidden widths


# ----------------------------------------------------------------------------- reference
def dense_reference(stack: GraphStack, x: torch.Tensor, edge_index: torch.Tensor, logits: torch.Tensor,
                    batch_size: int, over: str) -> torch.Tensor:
    """The stack written with a dense, masked softmax per face and matmuls, without PyG.

    x: (B*N, I); edge_index: batched (face-major) edges; logits: (B*E,). BatchNorm in eval mode.
    """
    b, n = batch_size, N
    face = edge_index[1] // n
    dst, src = edge_index[1] % n, edge_index[0] % n
    scores = torch.full((b, n, n), float("-inf"), dtype=x.dtype).index_put((face, dst, src), logits)
    alpha = torch.nan_to_num(torch.softmax(scores, dim=2 if over == "target" else 1), nan=0.0)
    eye = torch.eye(n, dtype=torch.bool)
    a_self, a_nb = (alpha * eye).sum(dim=2, keepdim=True), alpha.masked_fill(eye, 0.0)

    def conv(c: DynamicGraphConv, h: torch.Tensor) -> torch.Tensor:  # h: (B, N, F_in)
        return a_self * (h @ c.lin_self.weight.t()) + a_nb @ (h @ c.lin_nb.weight.t()) + c.bias

    def bn_relu(block, h: torch.Tensor) -> torch.Tensor:
        bn = block.norm
        z = (conv(block.conv, h) - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
        return torch.relu(z)

    h = bn_relu(stack.input_block, x.view(b, n, -1))
    for res in stack.blocks:
        h = h + bn_relu(res.block2, bn_relu(res.block1, h))
    return conv(stack.output_conv, h).reshape(b * n, -1)


def _stack(over: str = "target", num_blocks: int = 2, seed: int = 0) -> GraphStack:
    torch.manual_seed(seed)
    stack = GraphStack.build(lambda i, o: DynamicGraphConv(i, o, softmax_over=over), I, F, num_blocks)
    with torch.no_grad():  # non-trivial biases and BatchNorm statistics, so the reference sees them
        for m in stack.modules():
            if isinstance(m, DynamicGraphConv):
                m.bias.normal_()
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)
                m.weight.normal_()
                m.bias.normal_()
    return stack


def _inputs(batch_size: int, seed: int = 1):
    g = random_graph(N, E_K, seed=seed)
    edge_index = GraphBatcher(g.edge_index, N).batched_edge_index(batch_size)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch_size * N, I, generator=gen)
    logits = 2 * torch.randn(edge_index.shape[1], generator=gen)
    return x, edge_index, logits


def _per_layer_softmax(stack: GraphStack, x, edge_index, logits):
    """The stack as before: every DynamicGraphConv normalises the logits itself."""
    h = stack.input_block(x, edge_index, logits)
    for block in stack.blocks:
        h = block(h, edge_index, logits)
    return stack.output_conv(h, edge_index, logits)


# ----------------------------------------------------------------------------- tests
@pytest.mark.parametrize("over", ["target", "source"])
@pytest.mark.parametrize("batch_size", [1, 4])
def test_matches_dense_reference_with_gradients(batch_size: int, over: str) -> None:
    stack = _stack(over).eval()
    x, edge_index, logits = _inputs(batch_size)
    weights = torch.randn(batch_size * N, 2)

    def run(fn):
        stack.zero_grad()
        xx, ll = x.clone().requires_grad_(True), logits.clone().requires_grad_(True)
        out = fn(xx, ll)
        (out * weights).sum().backward()
        return out.detach(), [xx.grad.clone(), ll.grad.clone(), stack.output_conv.lin_nb.weight.grad.clone()]

    out, grads = run(lambda xx, ll: stack(xx, edge_index, edge_softmax(ll, edge_index, batch_size * N, over)))
    ref, ref_grads = run(lambda xx, ll: dense_reference(stack, xx, edge_index, ll, batch_size, over))
    assert out.shape == (batch_size * N, 2)
    torch.testing.assert_close(out, ref, **TOL)
    for name, g, r in zip(["x", "logits", "W_nb of the output conv"], grads, ref_grads):
        torch.testing.assert_close(g, r, **TOL, msg=lambda m: f"gradient of {name}: {m}")


@pytest.mark.parametrize("over", ["target", "source"])
@pytest.mark.parametrize("train", [True, False])
def test_softmax_once_equals_softmax_in_every_layer(over: str, train: bool) -> None:
    stack = _stack(over, num_blocks=3).train(train)
    x, edge_index, logits = _inputs(3)
    alpha = edge_softmax(logits, edge_index, 3 * N, over)
    with torch.no_grad():
        once = stack(x, edge_index, alpha)
        per_layer = _per_layer_softmax(stack, x, edge_index, logits)
    assert torch.equal(once, per_layer)


@pytest.mark.parametrize("over", ["target", "source"])
def test_dynamic_graph_conv_alpha_equals_logits(over: str) -> None:
    torch.manual_seed(2)
    conv = DynamicGraphConv(I, 4, softmax_over=over)
    x, edge_index, logits = _inputs(2)
    alpha = edge_softmax(logits, edge_index, x.shape[0], over)
    from_logits, (_, seen) = conv(x, edge_index, logits, return_attention_weights=True)
    from_alpha, (_, passed) = conv(x, edge_index, return_attention_weights=True, alpha=alpha)
    assert torch.equal(from_logits, from_alpha)
    assert torch.equal(seen, alpha) and passed is alpha  # alpha is used as given, not normalised again
    doubled = conv(x, edge_index, alpha=2 * alpha)  # messages are linear in alpha
    torch.testing.assert_close(doubled - conv.bias, 2 * (from_alpha - conv.bias), **TOL)


def test_dynamic_graph_conv_wants_exactly_one_of_logits_and_alpha() -> None:
    conv = DynamicGraphConv(I, 4)
    x, edge_index, logits = _inputs(1)
    alpha = edge_softmax(logits, edge_index, N)
    with pytest.raises(ValueError, match="exactly one of edge_logits"):
        conv(x, edge_index)
    with pytest.raises(ValueError, match="exactly one of edge_logits"):
        conv(x, edge_index, logits, alpha=alpha)
    with pytest.raises(ValueError, match=r"alpha must be \(E,\) = \(36,\)"):
        conv(x, edge_index, alpha=alpha[:-1])
    with pytest.raises(ValueError, match=r"alpha must be \(E,\)"):
        conv(x, edge_index, alpha=alpha.view(1, -1))


def test_stack_errors_name_the_missing_or_unwanted_alpha() -> None:
    x, edge_index, logits = _inputs(1)
    with pytest.raises(ValueError, match="need alpha"):
        _stack()(x, edge_index)
    pyg = GraphStack.build(lambda i, o: GCNConv(i, o), I, F, 1)
    with pytest.raises(ValueError, match="alpha must be None"):
        pyg(x, edge_index, edge_softmax(logits, edge_index, N))


def test_build_order_widths_and_hidden_features() -> None:
    stack = _stack(num_blocks=2)
    convs = [m for m in stack.modules() if isinstance(m, DynamicGraphConv)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(I, F), (F, F), (F, F), (F, F), (F, F), (F, 2)]
    assert stack.uses_alpha and len(stack.blocks) == 2
    x, edge_index, logits = _inputs(2)
    out, hidden = stack(x, edge_index, edge_softmax(logits, edge_index, 2 * N), return_hidden=True)
    assert out.shape == (2 * N, 2) and [tuple(h.shape) for h in hidden] == [(2 * N, F)] * 3
    bare = GraphStack.build(lambda i, o: DynamicGraphConv(i, o), I, F, 0)  # no residual block
    assert bare(x, edge_index, torch.ones(edge_index.shape[1])).shape == (2 * N, 2)


def test_stack_of_pyg_layers_equals_its_layers_in_turn() -> None:
    torch.manual_seed(3)
    stack = GraphStack.build(lambda i, o: GCNConv(i, o), I, F, 1).eval()
    assert not stack.uses_alpha
    x, edge_index, _ = _inputs(2)
    res = stack.blocks[0]
    h = torch.relu(stack.input_block.norm(stack.input_block.conv(x, edge_index)))
    h = h + torch.relu(res.block2.norm(res.block2.conv(torch.relu(res.block1.norm(res.block1.conv(h, edge_index))),
                                                       edge_index)))
    torch.testing.assert_close(stack(x, edge_index), stack.output_conv(h, edge_index), **TOL)


@pytest.mark.parametrize("make", [
    lambda g: SDFLHead(8, (2, 2), N, g.edge_index, nodes_per_point=2, hidden=F, num_blocks=2, map_hidden=8),
    lambda g: PyGLayerHead(8, (2, 2), N, g.edge_index, layer="sage", nodes_per_point=2, hidden=F, num_blocks=1),
], ids=["sdfl", "sage"])
def test_a_heads_graph_stack_shares_its_layers(make) -> None:
    torch.manual_seed(4)
    g = random_graph(N, E_K, seed=0)
    head = make(g).eval()
    for p in head.parameters():
        p.data.normal_(0, 0.3)
    features = torch.randn(3, 8, 2, 2)
    with torch.no_grad():
        coords, inter = head(features, return_intermediates=True)
        stack = head.graph_stack
        args = (inter["nodes_map_to_node"].reshape(3 * N, -1), head.batcher.batched_edge_index(3))
        alpha = inter["alpha"].reshape(-1) if "alpha" in inter else None
        assert torch.equal(stack(*args, alpha).view(3, N, 2), coords)
        bias = head.output_conv.bias if isinstance(head, SDFLHead) else head.output_conv.lin_l.bias
        bias.add_(1.0)
        torch.testing.assert_close(stack(*args, alpha).view(3, N, 2), coords + 1.0)  # same parameters
    assert {id(p) for p in stack.parameters()} <= {id(p) for p in head.parameters()}
    assert not stack.training
    assert not any(name.startswith("graph_stack") for name in head.state_dict())


def test_attention_explainer_on_the_stack_reads_the_shared_alpha() -> None:
    stack = _stack().eval()
    x, edge_index, logits = _inputs(1)
    alpha = edge_softmax(logits, edge_index, N)
    explainer = Explainer(
        model=stack, algorithm=AttentionExplainer(), explanation_type="model", edge_mask_type="object",
        model_config=dict(mode="regression", task_level="node", return_type="raw"),
    )
    explanation = explainer(x, edge_index, alpha=alpha)
    torch.testing.assert_close(explanation.edge_mask, alpha)  # every layer saw the same alpha
