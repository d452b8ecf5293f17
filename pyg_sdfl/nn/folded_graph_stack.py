r"""The SDFL graph stack for inference: BatchNorm folded into the layers, one attention matrix per face.

:mod:`pyg_sdfl.nn.fused_graph_stack` runs the stack with the modules as they train: per layer a
weight concatenation, a linear map, a gather, a batched product with ``alpha``, a bias, BatchNorm
and ReLU -- about ten small operations, whose per-call overhead, not their FLOPs, sets the graph
layers' time at batch 1. At inference (no autograd, BatchNorm on its running statistics) the
same function needs three per layer:

* **BatchNorm folds into the layer.** BatchNorm is then the fixed per-channel affine map
  :math:`y \mapsto s \odot (y - \mu) + \beta`, :math:`s = \gamma / \sqrt{\sigma^2 + \epsilon}`,
  and a :class:`~pyg_sdfl.nn.dynamic_graph_conv.DynamicGraphConv` is linear in its weights, so

  .. math::
      \mathrm{BN}\Big(\sum_d \alpha_{i,d}\, Y_{\mathrm{row}(i,d)} + b\Big)
      = \sum_d \alpha_{i,d}\, (s \odot Y_{\mathrm{row}(i,d)}) + s \odot (b - \mu) + \beta,

  i.e. :math:`W' = \mathrm{diag}(s)\,[W_{self}; W_{nb}]` (both halves scaled) and
  :math:`b' = s \odot (b - \mu) + \beta`, exactly, whatever ``alpha`` is.
* **The attention becomes one dense matrix per face,** built once and shared by every layer:
  ``A (B, N, 2N)`` with ``A[b, i, row(i, d)] = alpha[b, i, d]`` (``row`` from
  :func:`~pyg_sdfl.nn.fused_graph_stack.gathered_rows`: ``2j`` for the self-loop, ``2j+1`` for a
  neighbour ``j``; padded table entries carry ``alpha = 0``), as ``alpha (B, N, 1, D) @ P (N, D, 2N)``
  with the constant one-hot ``P``.

One layer is then ``Y = X W'^T`` ``(B, N, 2O)``, viewed as ``(B, 2N, O)``, and
``X' = relu(A Y + b')`` (``torch.baddbmm``); the output layer has no BatchNorm and no ReLU.
The dense product costs ``2N`` multiply-adds per output where the gather costs ``D``, but it is one
call, and at 68 landmarks it is smaller than the layer's own linear map. Measured on the shipped
model on a 2-core AMD EPYC VM (the stack alone, eager torch, fp32): 0.66 ms at batch 1 and 16.1 ms
per batch of 32 against 1.14 and 23.8 ms for the unfolded gather path (docs/results.md, Speed).
In an ONNX export each layer runs as MatMul, Reshape, MatMul, Add and Relu once ONNX Runtime has
folded the weight products, which the export leaves as operations on constants.

:class:`~pyg_sdfl.nn.heads.SDFLHead` uses this module on its ``"fused"`` path whenever it runs in
eval mode without autograd (``torch.no_grad`` / ``torch.inference_mode``), keeping a snapshot of the
folded weights that it rebuilds when any weight or statistic changes. In training mode, or when
gradients are recorded, the unfolded fused path runs. ``tests/nn/test_folded_graph_stack.py``
checks the two agree.
"""
from __future__ import annotations

from typing import Iterable, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pyg_sdfl.nn.dynamic_graph_conv import DynamicGraphConv
from pyg_sdfl.nn.graph_stack import GraphConvBNReLU, ResidualGraphBlock

__all__ = ["fold_layer", "attention_matrix", "FoldedGraphStack"]


def fold_layer(conv: DynamicGraphConv, norm: Optional[nn.Module] = None) -> Tuple[Tensor, Tensor]:
    r"""One layer's folded weights: ``(W' (2O, F), b' (O,))`` (see the module docstring).

    ``W' = diag(s) [W_self; W_nb]`` and ``b' = s (b - mu) + beta`` with ``s = gamma / sqrt(var + eps)``
    from ``norm``'s running statistics (a ``BatchNorm1d``, or any batch norm with ``running_mean``,
    ``running_var``, ``eps`` and optional affine ``weight``/``bias``); without ``norm``, ``W' = [W_self; W_nb]`` and ``b' = b``.
    """
    if not isinstance(conv, DynamicGraphConv):
        raise TypeError(f"fold_layer folds DynamicGraphConv layers only; got {type(conv).__name__}")
    weight = torch.cat([conv.lin_self.weight, conv.lin_nb.weight], dim=0)
    bias = conv.bias if conv.bias is not None else weight.new_zeros(conv.out_channels)
    if norm is None:
        return weight, bias
    if getattr(norm, "running_mean", None) is None or getattr(norm, "running_var", None) is None:
        raise ValueError(f"fold_layer needs a batch norm with running statistics after the layer; got {norm!r}")
    scale = torch.rsqrt(norm.running_var + norm.eps)
    if norm.weight is not None:
        scale = scale * norm.weight
    shift = norm.bias if norm.bias is not None else torch.zeros_like(scale)
    return weight * torch.cat([scale, scale])[:, None], (bias - norm.running_mean) * scale + shift


def _one_hot_rows(rows: Tensor, num_points: int) -> Tensor:
    """``P (N, D, 2N)``: ``P[i, d, rows[i * D + d]] = 1``."""
    per_node = rows.view(num_points, -1)
    return F.one_hot(per_node, 2 * num_points).float()


def attention_matrix(alpha: Tensor, one_hot_rows: Tensor) -> Tensor:
    """``alpha (B, N, D)`` over the table's entries -> ``A (B, N, 2N)``, ``A[b, i, row(i, d)] = alpha[b, i, d]``
    (``one_hot_rows`` ``(N, D, 2N)`` from the table's rows)."""
    return torch.matmul(alpha.unsqueeze(2), one_hot_rows.to(alpha.dtype)).squeeze(2)


class FoldedGraphStack(nn.Module):
    r"""The graph stack with BatchNorm folded in: nodes ``(B, N, I)`` and ``alpha (B, N, D)`` -> ``(B, N, 2)``.

    ``relu(L_0 x)``, then per residual block ``h + relu(L_2 relu(L_1 h))``, then ``L_out h``, with
    :math:`L(h) = A\,(h W'^T) + b'` (module docstring). A snapshot: its weights are buffers copied
    from the layers when it is built (:meth:`from_layers`), not tied to them.
    """

    def __init__(self, layers: Sequence[Tuple[Tensor, Tensor]], num_blocks: int, rows: Tensor, num_points: int) -> None:
        super().__init__()
        if len(layers) != 2 * int(num_blocks) + 2:
            raise ValueError(f"FoldedGraphStack: {num_blocks} blocks need {2 * num_blocks + 2} layers; got {len(layers)}")
        self.num_blocks = int(num_blocks)
        self.num_points = int(num_points)
        for i, (weight, bias) in enumerate(layers):
            self.register_buffer(f"weight_{i}", weight.detach().clone(), persistent=False)
            self.register_buffer(f"bias_{i}", bias.detach().clone(), persistent=False)
        self.register_buffer("one_hot_rows", _one_hot_rows(rows, self.num_points), persistent=False)

    @classmethod
    def from_layers(
        cls,
        input_block: GraphConvBNReLU,
        blocks: Iterable[ResidualGraphBlock],
        output_conv: DynamicGraphConv,
        rows: Tensor,
        num_points: int,
    ) -> "FoldedGraphStack":
        """Fold a stack's layers (their current weights and BatchNorm running statistics)."""
        blocks = list(blocks)
        pairs: List[Tuple[DynamicGraphConv, Optional[nn.Module]]] = [(input_block.conv, input_block.norm)]
        for block in blocks:
            pairs += [(block.block1.conv, block.block1.norm), (block.block2.conv, block.block2.norm)]
        pairs.append((output_conv, None))
        with torch.no_grad():
            layers = [fold_layer(conv, norm) for conv, norm in pairs]
        return cls(layers, len(blocks), rows, num_points)

    def _layer(self, i: int, h: Tensor, attention: Tensor, fp32_sum: bool = False) -> Tensor:
        """``A (h W'^T) + b'``. Under bf16 autocast the products run in bf16 and ``b'`` is added in
        fp32 (as the unfolded path adds its bias); with ``fp32_sum`` the attention sum runs in fp32 or wider
        (the output layer: coordinates keep fp32 resolution, not bf16's 2^-9 of the crop's half side)."""
        weight, bias = getattr(self, f"weight_{i}"), getattr(self, f"bias_{i}")
        y = F.linear(h, weight).view(h.shape[0], 2 * self.num_points, -1)  # (B, 2N, O)
        if y.dtype == bias.dtype == attention.dtype:
            return torch.baddbmm(bias, attention, y)
        if fp32_sum:
            dtype = torch.promote_types(y.dtype, torch.float32)
            with torch.autocast(device_type=y.device.type, enabled=False):
                return torch.baddbmm(bias.to(dtype), attention.to(dtype), y.to(dtype))
        return torch.bmm(attention.to(y.dtype), y) + bias

    def forward(self, x: Tensor, alpha: Tensor) -> Tensor:
        """``x (B, N, I)``, ``alpha (B, N, D)`` -> ``(B, N, 2)``."""
        with torch.autocast(device_type=alpha.device.type, enabled=False):  # alpha keeps its fp32 values
            attention = attention_matrix(alpha.float() if alpha.dtype in (torch.bfloat16, torch.float16) else alpha,
                                         self.one_hot_rows)
        h = torch.relu(self._layer(0, x, attention))
        for b in range(self.num_blocks):
            inner = torch.relu(self._layer(1 + 2 * b, h, attention))
            h = h + torch.relu(self._layer(2 + 2 * b, inner, attention))
        return self._layer(2 * self.num_blocks + 1, h, attention, fp32_sum=True)

    def extra_repr(self) -> str:
        return f"num_points={self.num_points}, num_blocks={self.num_blocks}"
