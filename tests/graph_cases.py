"""Graphs the graph and layer tests share (imported by tests; not a test module)."""
from __future__ import annotations

import torch


def irregular_graph(n: int, seed: int, p: float = 0.35, self_loops: bool = True) -> torch.Tensor:
    """``(2, E)`` random edges (probability ``p`` each), plus self-loops unless ``self_loops=False``:
    in- and out-degrees differ from node to node (without self-loops some nodes may have none)."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(n, n, generator=g) < p
    if self_loops:
        mask |= torch.eye(n, dtype=torch.bool)
    dst, src = mask.nonzero(as_tuple=True)
    return torch.stack([src, dst])
