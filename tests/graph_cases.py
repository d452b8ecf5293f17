"""Graphs and heads the graph and layer tests share (imported by tests; not a test module)."""
from __future__ import annotations

import torch

from pyg_sdfl.graph import dense_graph, random_graph
from pyg_sdfl.nn import SDFLHead


def irregular_graph(n: int, seed: int, p: float = 0.35, self_loops: bool = True) -> torch.Tensor:
    """``(2, E)`` random edges (probability ``p`` each), plus self-loops unless ``self_loops=False``:
    in- and out-degrees differ from node to node (without self-loops some nodes may have none)."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(n, n, generator=g) < p
    if self_loops:
        mask |= torch.eye(n, dtype=torch.bool)
    dst, src = mask.nonzero(as_tuple=True)
    return torch.stack([src, dst])


GRAPHS = {
    "mined_like_k3": lambda: (random_graph(12, 3, seed=0).edge_index, 12),
    "dense": lambda: (dense_graph(7).edge_index, 7),
    "irregular": lambda: (irregular_graph(9, seed=1), 9),
    "sparse_no_self_some": lambda: (irregular_graph(8, seed=4, p=0.2, self_loops=False), 8),
}


def sdfl_head_with_statistics(graph: str, over: str = "target", dynamic: bool = True, seed: int = 0) -> SDFLHead:
    """A small :class:`SDFLHead` on ``GRAPHS[graph]`` (features ``(B, 16, 3, 3)``, hidden 8, 2 blocks)
    whose BatchNorm layers have random running statistics and affine weights, so that eval mode and
    BatchNorm folding are exercised, and whose output layer is not near zero."""
    torch.manual_seed(seed)
    edge_index, n = GRAPHS[graph]()
    head = SDFLHead(16, (3, 3), n, edge_index, dynamic=dynamic, softmax_over=over, hidden=8, num_blocks=2,
                    map_hidden=12, nodes_per_point=2)
    with torch.no_grad():  # non-trivial BN statistics and an output layer that is not near zero
        for m in head.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)
                m.weight.normal_()
                m.bias.normal_()
        head.output_conv.lin_self.weight.normal_()
        head.output_conv.lin_nb.weight.normal_()
    return head
