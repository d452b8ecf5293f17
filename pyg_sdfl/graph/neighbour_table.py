"""A fixed landmark graph as padded neighbour tables: gathers instead of scatters.

Every face has the same graph, so each node's incoming edges (and, for the source-normalised
variant, its outgoing edges) can be listed once, in a table of ``D`` columns padded to the
largest degree. A message-passing layer then becomes a gather over the table and a sum over its
columns: no scatter, a fixed shape, and an ONNX graph of Gather/MatMul/Softmax only.

For ``edge_index (2, E)`` (row 0 source ``j``, row 1 target ``i``) over ``N`` nodes:

* ``in_edges (N, D_in)``: the ids of the edges entering node ``i``, in ``edge_index`` order,
  padded with ``E`` (an extra, always-masked slot); ``in_mask (N, D_in)`` marks real entries.
* ``in_sources (N, D_in)``: their source nodes ``j`` (0 where padded); ``in_is_self`` whether ``j == i``.
* ``out_edges (N, D_out)``, ``out_mask``: the same for the edges leaving each node.
* ``in_position (E,)`` and ``out_position (E,)``: where edge ``e`` sits in the flattened
  ``in_edges`` / ``out_edges`` table, so that a quantity computed per table entry can be read back
  in edge order with one gather.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["NeighbourTable"]


def _grouped(edge_ids_by_group: list, num_edges: int) -> tuple:
    width = max((len(g) for g in edge_ids_by_group), default=0)
    width = max(width, 1)
    table = torch.full((len(edge_ids_by_group), width), num_edges, dtype=torch.long)
    for row, ids in enumerate(edge_ids_by_group):
        if ids:
            table[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    return table, table < num_edges


def _positions(table: Tensor, num_edges: int) -> Tensor:
    """``(E,)``: the flat index of each edge id in ``table`` (every edge appears exactly once)."""
    flat = table.reshape(-1)
    real = flat < num_edges
    position = torch.empty(num_edges, dtype=torch.long)
    position[flat[real]] = torch.nonzero(real).squeeze(1)
    return position


@dataclass(frozen=True)
class NeighbourTable:
    """Padded in- and out-edge tables of one graph (see the module docstring for each field)."""

    num_nodes: int
    num_edges: int
    in_edges: Tensor
    in_mask: Tensor
    in_sources: Tensor
    in_is_self: Tensor
    in_position: Tensor
    out_edges: Tensor
    out_mask: Tensor
    out_position: Tensor

    @classmethod
    def from_edge_index(cls, edge_index: Tensor, num_nodes: int) -> "NeighbourTable":
        """Build the tables of ``edge_index (2, E)`` over ``num_nodes`` nodes (CPU, int64)."""
        ei = torch.as_tensor(edge_index)
        if ei.dim() != 2 or ei.shape[0] != 2:
            raise ValueError(f"edge_index must be (2, E); got {tuple(ei.shape)}")
        if ei.dtype.is_floating_point or ei.dtype == torch.bool:
            raise ValueError(f"edge_index must hold integer node ids; got {ei.dtype}")
        n, ei = int(num_nodes), ei.long().cpu()
        if ei.numel() and (int(ei.min()) < 0 or int(ei.max()) >= n):
            bad = int(ei.min()) if int(ei.min()) < 0 else int(ei.max())
            raise ValueError(f"edge_index refers to node {bad} but node ids run from 0 to num_nodes - 1 = {n - 1}")
        src, dst = ei[0].tolist(), ei[1].tolist()
        e = len(src)
        incoming = [[] for _ in range(n)]
        outgoing = [[] for _ in range(n)]
        for k, (j, i) in enumerate(zip(src, dst)):
            incoming[i].append(k)
            outgoing[j].append(k)
        in_edges, in_mask = _grouped(incoming, e)
        out_edges, out_mask = _grouped(outgoing, e)
        src_padded = torch.cat([ei[0], torch.zeros(1, dtype=torch.long)])
        in_sources = src_padded[in_edges]
        in_is_self = in_mask & (in_sources == torch.arange(n).unsqueeze(1))
        return cls(n, e, in_edges, in_mask, in_sources, in_is_self, _positions(in_edges, e),
                   out_edges, out_mask, _positions(out_edges, e))

    @property
    def in_degree(self) -> int:
        """``D_in``, the table's width (the largest in-degree)."""
        return int(self.in_edges.shape[1])

    def to(self, device: torch.device | str) -> "NeighbourTable":
        """The same tables on ``device``."""
        moved = {k: (v.to(device) if isinstance(v, Tensor) else v) for k, v in self.__dict__.items()}
        return NeighbourTable(**moved)
