"""DynamicGraphConv against an independent dense computation, isolation, equivariance, explainability."""
from __future__ import annotations

import pytest
import torch
from torch_geometric.explain import AttentionExplainer, Explainer

from pyg_sdfl.graph import GraphBatcher, dense_graph, random_graph
from pyg_sdfl.nn import DynamicGraphConv
from graph_cases import irregular_graph

TOL = dict(atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------- reference
def dense_reference(conv: DynamicGraphConv, x: torch.Tensor, edge_index: torch.Tensor, logits: torch.Tensor,
                    batch_size: int, num_nodes: int, over: str) -> torch.Tensor:
    """Masked dense softmax + matmul per face, written without PyG.

    x: (B*N, F_in); edge_index: the batched (face-major) edges; logits: (B*E,).
    """
    b, n = batch_size, num_nodes
    face = edge_index[1] // n
    dst, src = edge_index[1] % n, edge_index[0] % n
    scores = torch.full((b, n, n), float("-inf"), dtype=x.dtype)
    scores = scores.index_put((face, dst, src), logits)  # scores[b, i, j] = logit of edge j -> i
    alpha = torch.softmax(scores, dim=2 if over == "target" else 1)  # over j (incoming) or over i (outgoing)
    alpha = torch.nan_to_num(alpha, nan=0.0)  # nodes with no edge in the normalised direction
    eye = torch.eye(n, dtype=torch.bool)
    xs = x.view(b, n, -1) @ conv.lin_self.weight.t()
    xn = x.view(b, n, -1) @ conv.lin_nb.weight.t()
    self_w = (alpha * eye).sum(dim=2, keepdim=True)  # alpha_ii
    out = self_w * xs + alpha.masked_fill(eye, 0.0) @ xn + conv.bias
    return out.reshape(b * n, -1)


GRAPHS = {
    "mined_like_k3": lambda: (random_graph(10, 3, seed=0).edge_index, 10),
    "dense": lambda: (dense_graph(6).edge_index, 6),
    "irregular": lambda: (irregular_graph(9, seed=1), 9),
}


def _setup(graph: str, batch_size: int, over: str, seed: int = 0):
    torch.manual_seed(seed)
    edge_index, n = GRAPHS[graph]()
    batched = GraphBatcher(edge_index, n).batched_edge_index(batch_size)
    conv = DynamicGraphConv(5, 4, softmax_over=over)
    with torch.no_grad():
        conv.bias.normal_()  # a non-zero bias so the test sees it
    x = torch.randn(batch_size * n, 5)
    logits = torch.randn(batched.shape[1]) * 2
    return conv, x, batched, logits, n


# ----------------------------------------------------------------------------- tests
@pytest.mark.parametrize("over", ["target", "source"])
@pytest.mark.parametrize("graph", sorted(GRAPHS))
@pytest.mark.parametrize("batch_size", [1, 3, 8])
def test_matches_dense_reference_with_gradients(graph: str, batch_size: int, over: str) -> None:
    conv, x, edge_index, logits, n = _setup(graph, batch_size, over)
    weights = torch.randn(batch_size * n, 4)

    def run(fn):
        conv.zero_grad()
        xx = x.clone().requires_grad_(True)
        ll = logits.clone().requires_grad_(True)
        out = fn(xx, ll)
        (out * weights).sum().backward()
        grads = [xx.grad, ll.grad, conv.lin_self.weight.grad, conv.lin_nb.weight.grad, conv.bias.grad]
        return out.detach(), [g.clone() for g in grads]

    out, grads = run(lambda xx, ll: conv(xx, edge_index, ll))
    ref, ref_grads = run(lambda xx, ll: dense_reference(conv, xx, edge_index, ll, batch_size, n, over))
    torch.testing.assert_close(out, ref, **TOL)
    for name, g, r in zip(["x", "logits", "W_self", "W_nb", "bias"], grads, ref_grads):
        torch.testing.assert_close(g, r, **TOL, msg=lambda m: f"gradient of {name}: {m}")


@pytest.mark.parametrize("over", ["target", "source"])
def test_attention_weights_are_normalised(over: str) -> None:
    conv, x, edge_index, logits, n = _setup("irregular", 3, over)
    _, (ei, alpha) = conv(x, edge_index, logits, return_attention_weights=True)
    group = ei[1] if over == "target" else ei[0]
    sums = torch.zeros(3 * n).index_add_(0, group, alpha)
    torch.testing.assert_close(sums, torch.ones(3 * n))


def test_equal_logits_give_uniform_weights() -> None:
    g = random_graph(8, 3, seed=2)
    conv = DynamicGraphConv(3, 2)
    x = torch.randn(8, 3)
    _, (_, alpha) = conv(x, g.edge_index, torch.ones(g.num_edges), return_attention_weights=True)
    torch.testing.assert_close(alpha, torch.full_like(alpha, 0.25))
    # binary adjacency = mean of W_self h_i and the neighbours' W_nb h_j
    out = conv(x, g.edge_index, torch.ones(g.num_edges))
    expected = torch.stack([
        (conv.lin_self(x[i]) + sum(conv.lin_nb(x[j]) for j in g.neighbours(i))) / 4 + conv.bias for i in range(8)
    ])
    torch.testing.assert_close(out, expected, **TOL)


@pytest.mark.parametrize("over", ["target", "source"])
def test_each_face_in_a_batch_equals_the_face_alone(over: str) -> None:
    edge_index, n = GRAPHS["mined_like_k3"]()
    e = edge_index.shape[1]
    b = 5
    batcher = GraphBatcher(edge_index, n)
    torch.manual_seed(3)
    conv = DynamicGraphConv(6, 3, softmax_over=over)
    x = torch.randn(b, n, 6)
    logits = torch.randn(b, e)
    out = conv(batcher.flatten(x), batcher.batched_edge_index(b), logits.reshape(-1)).view(b, n, 3)
    for face in range(b):
        alone = conv(x[face], edge_index, logits[face])
        torch.testing.assert_close(out[face], alone, atol=1e-6, rtol=1e-6)
    # changing one face leaves the others untouched
    x2 = x.clone()
    x2[2] += 10.0
    out2 = conv(batcher.flatten(x2), batcher.batched_edge_index(b), logits.reshape(-1)).view(b, n, 3)
    keep = [0, 1, 3, 4]
    assert torch.equal(out2[keep], out[keep])
    assert not torch.allclose(out2[2], out[2])


@pytest.mark.parametrize("over", ["target", "source"])
def test_node_permutation_equivariance(over: str) -> None:
    conv, x, edge_index, logits, n = _setup("irregular", 2, over, seed=4)
    out = conv(x, edge_index, logits)
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(5))
    new_id = torch.empty_like(perm)
    new_id[perm] = torch.arange(perm.numel())  # old node u sits at position new_id[u]
    out_p = conv(x[perm], new_id[edge_index], logits)
    torch.testing.assert_close(out_p, out[perm], **TOL)
    # the order of the edges does not matter either
    eperm = torch.randperm(edge_index.shape[1], generator=torch.Generator().manual_seed(6))
    torch.testing.assert_close(conv(x, edge_index[:, eperm], logits[eperm]), out, **TOL)


def test_attention_explainer_reads_alpha() -> None:
    class Wrapper(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = DynamicGraphConv(4, 3)

        def forward(self, x, edge_index, edge_logits):
            return self.conv(x, edge_index, edge_logits)

    torch.manual_seed(7)
    model = Wrapper()
    g = random_graph(6, 2, seed=0)
    x, logits = torch.randn(6, 4), torch.randn(g.num_edges)
    explainer = Explainer(
        model=model, algorithm=AttentionExplainer(), explanation_type="model", edge_mask_type="object",
        model_config=dict(mode="regression", task_level="node", return_type="raw"),
    )
    explanation = explainer(x, g.edge_index, edge_logits=logits)
    _, (_, alpha) = model.conv(x, g.edge_index, logits, return_attention_weights=True)
    torch.testing.assert_close(explanation.edge_mask, alpha)


def test_reset_parameters_and_repr() -> None:
    conv = DynamicGraphConv(8, 4)
    assert repr(conv) == "DynamicGraphConv(8, 4)"
    assert repr(DynamicGraphConv(8, 4, softmax_over="source")) == "DynamicGraphConv(8, 4, softmax_over='source')"
    before = conv.lin_self.weight.clone()
    with torch.no_grad():
        conv.bias.fill_(3.0)
    conv.reset_parameters()
    assert not torch.equal(before, conv.lin_self.weight)
    assert torch.equal(conv.bias, torch.zeros(4))
    assert not torch.equal(conv.lin_self.weight, conv.lin_nb.weight)  # two separate matrices


def test_bad_inputs_raise() -> None:
    g = random_graph(5, 2, seed=0)
    conv = DynamicGraphConv(3, 2)
    x = torch.randn(5, 3)
    with pytest.raises(ValueError, match=r"x must be \(num_nodes, 3\)"):
        conv(torch.randn(5, 4), g.edge_index, torch.zeros(g.num_edges))
    with pytest.raises(ValueError, match=r"edge_logits must be \(E,\) = \(15,\)"):
        conv(x, g.edge_index, torch.zeros(14))
    with pytest.raises(ValueError, match=r"edge_logits must be"):
        conv(x, g.edge_index, torch.zeros(1, g.num_edges))
    with pytest.raises(ValueError, match=r"edge_index must be \(2, E\)"):
        conv(x, g.edge_index.t(), torch.zeros(g.num_edges))
    with pytest.raises(ValueError, match="softmax_over"):
        DynamicGraphConv(3, 2, softmax_over="rows")
