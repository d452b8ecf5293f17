r"""The SDFL graph stack without scatter: a gather over the fixed graph's neighbour table.

The reference computation is PyG's: :class:`~pyg_sdfl.nn.dynamic_graph_conv.DynamicGraphConv`
propagates one message per edge of the batched graph and sums them with a scatter, and
:func:`~pyg_sdfl.nn.dynamic_graph_conv.edge_softmax` normalises the logits with a grouped
(scatter) softmax. Every face has the same graph, so the same numbers come from fixed-shape
tensor operations on a :class:`~pyg_sdfl.graph.neighbour_table.NeighbourTable`, with the same
modules and weights:

* attention: logits ``(B, E)`` -> gathered into the table of each node's incoming edges
  ``(B, N, D)`` (or of its outgoing edges, for ``softmax_over="source"``) -> softmax over the
  table's columns, padding masked -> ``alpha (B, N, D)`` over the incoming edges;
* one layer (paper Eq. 4): ``Y = X [W_self ; W_nb]^T`` ``(B, N, 2, O)``, viewed as ``(B, 2N, O)``
  (row ``2j`` is ``W_self h_j``, row ``2j+1`` is ``W_nb h_j``); a gather of the rows named by the
  table ``(B, N, D, O)``; ``h_i' = sum_d alpha_{i,d} Y_{row(i,d)} + b`` as one batched product.

No scatter, no per-face index arithmetic: an ONNX export of this path has only MatMul, Gather,
Softmax and elementwise nodes. It runs in training mode too (BatchNorm sees the same ``(B*N, F)``
batch as in the PyG path), but the PyG path stays the reference that training and research use;
``tests/nn/test_fused_graph_stack.py`` checks the two agree.
"""
from __future__ import annotations

from typing import Iterable, List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from pyg_sdfl.graph.neighbour_table import NeighbourTable
from pyg_sdfl.nn.dynamic_graph_conv import SOFTMAX_OVER, DynamicGraphConv
from pyg_sdfl.nn.graph_stack import GraphConvBNReLU, ResidualGraphBlock

__all__ = ["table_attention", "table_alpha_to_edges", "gathered_rows", "fused_dynamic_conv", "run_fused_graph_stack"]

_MASKED = -1e30  # a finite "minus infinity": an all-padding row gives finite (unused) values, never NaN


def _gather_edges(values: Tensor, table: Tensor, fill: float) -> Tensor:
    """``values (B, E)`` -> ``(B, *table.shape)`` with ``fill`` where the table holds the padding id ``E``."""
    padded = torch.cat([values, values.new_full((values.shape[0], 1), fill)], dim=1)
    return padded[:, table.reshape(-1)].view(values.shape[0], *table.shape)


def table_attention(logits: Tensor, table: NeighbourTable, softmax_over: str = "target") -> Tensor:
    r"""Edge logits ``(B, E)`` -> attention over each node's incoming edges ``(B, N, D_in)`` (fp32).

    ``"target"``: :math:`\alpha_{i,d} = \mathrm{softmax}_d(a_{i,d})` over the real entries of row
    ``i`` of ``table.in_edges`` (the :func:`~pyg_sdfl.nn.dynamic_graph_conv.edge_softmax` of the
    PyG path); ``"source"``: the softmax runs over each node's outgoing edges, and its values are
    then read back into the incoming table. Padded entries are 0.
    """
    if softmax_over not in SOFTMAX_OVER:
        raise ValueError(f"softmax_over must be one of {SOFTMAX_OVER}; got {softmax_over!r}")
    if logits.dim() != 2 or logits.shape[1] != table.num_edges:
        raise ValueError(f"logits must be (B, {table.num_edges}); got {tuple(logits.shape)}")
    logits = logits.float()
    if softmax_over == "target":
        grouped, mask = _gather_edges(logits, table.in_edges, _MASKED), table.in_mask
        return torch.softmax(grouped, dim=-1) * mask
    grouped = _gather_edges(logits, table.out_edges, _MASKED)
    per_edge = torch.softmax(grouped, dim=-1).reshape(logits.shape[0], -1)[:, table.out_position]
    return _gather_edges(per_edge, table.in_edges, 0.0)


def table_alpha_to_edges(alpha: Tensor, table: NeighbourTable) -> Tensor:
    """Attention in the incoming table ``(B, N, D_in)`` -> edge order ``(B, E)`` (as the PyG path records it)."""
    return alpha.reshape(alpha.shape[0], -1)[:, table.in_position]


def gathered_rows(table: NeighbourTable) -> Tensor:
    """``(N * D_in,)``: for each incoming-table entry, the row of ``Y (B, 2N, O)`` it reads:
    ``2 j`` for a self-loop (``W_self h_j``), ``2 j + 1`` for any other edge (``W_nb h_j``)."""
    return (2 * table.in_sources + (~table.in_is_self).long()).reshape(-1)


def fused_dynamic_conv(conv: DynamicGraphConv, x: Tensor, rows: Tensor, alpha: Tensor) -> Tensor:
    r"""One :class:`DynamicGraphConv` on the table: ``x (B, N, F)`` -> ``(B, N, O)``.

    :math:`h_i' = \sum_d \alpha_{i,d}\, Y_{\mathrm{row}(i,d)} + b` with ``Y = x [W_self; W_nb]^T``
    viewed as ``(B, 2N, O)``, ``rows`` from :func:`gathered_rows` and ``alpha (B, N, D)``.
    """
    b, n, _ = x.shape
    o = conv.out_channels
    weight = torch.cat([conv.lin_self.weight, conv.lin_nb.weight], dim=0)  # (2O, F)
    y = F.linear(x, weight).view(b, 2 * n, o)
    gathered = y.index_select(1, rows).view(b, n, -1, o)  # (B, N, D, O)
    out = torch.matmul(alpha.unsqueeze(2).to(gathered.dtype), gathered).squeeze(2)
    return out if conv.bias is None else out + conv.bias


def _conv_bn_relu(block: GraphConvBNReLU, x: Tensor, rows: Tensor, alpha: Tensor) -> Tensor:
    h = fused_dynamic_conv(block.conv, x, rows, alpha)
    b, n, f = h.shape
    return block.act(block.norm(h.reshape(b * n, f))).view(b, n, f)


def run_fused_graph_stack(
    input_block: GraphConvBNReLU,
    blocks: Iterable[ResidualGraphBlock],
    output_conv: DynamicGraphConv,
    x: Tensor,
    rows: Tensor,
    alpha: Tensor,
    hidden: Optional[List[Tensor]] = None,
) -> Tensor:
    """:func:`~pyg_sdfl.nn.graph_stack.run_graph_stack` on the table: nodes ``x (B, N, I)`` ->
    ``(B, N, 2)``, every layer a :class:`DynamicGraphConv` sharing ``alpha (B, N, D)``.
    If ``hidden`` is a list, the ``(B, N, F)`` features after the input block and after each
    residual block are appended to it."""
    blocks = list(blocks)
    layers = [input_block.conv, output_conv] + [c for blk in blocks for c in (blk.block1.conv, blk.block2.conv)]
    if not all(isinstance(m, DynamicGraphConv) for m in layers):
        raise TypeError("the fused graph stack runs DynamicGraphConv layers only")
    h = _conv_bn_relu(input_block, x, rows, alpha)
    if hidden is not None:
        hidden.append(h)
    for block in blocks:
        h = h + _conv_bn_relu(block.block2, _conv_bn_relu(block.block1, h, rows, alpha), rows, alpha)
        if hidden is not None:
            hidden.append(h)
    return fused_dynamic_conv(output_conv, h, rows, alpha)
