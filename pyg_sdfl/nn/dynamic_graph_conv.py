"""The SDFL dynamic graph convolution (paper Eq. 4), as a PyG ``MessagePassing`` layer."""
from __future__ import annotations

from typing import Optional, Tuple, Union

import torch
from torch import Tensor
from torch.nn import Parameter
from torch_geometric.nn import MessagePassing
from torch_geometric.nn.dense.linear import Linear
from torch_geometric.nn.inits import zeros
from torch_geometric.utils import softmax

__all__ = ["DynamicGraphConv", "edge_softmax", "SOFTMAX_OVER"]

SOFTMAX_OVER = ("target", "source")


def edge_softmax(edge_logits: Tensor, edge_index: Tensor, num_nodes: int, softmax_over: str = "target") -> Tensor:
    r"""Normalise per-edge logits into attention weights :math:`\alpha`, shape ``(E,)``.

    ``softmax_over="target"`` (default, the paper): for every target node :math:`i`,
    :math:`\alpha_{ij} = \exp(a_{ij}) / \sum_{l \in \mathcal{N}(i) \cup \{i\}} \exp(a_{il})` over its
    incoming edges, self-loop included, so :math:`\sum_j \alpha_{ij} = 1`.

    ``softmax_over="source"`` (the authors' released code, which transposes the softmaxed
    matrix): for every source node :math:`j`, the weights of its *outgoing* edges sum to one,
    :math:`\sum_i \alpha_{ij} = 1`.
    """
    if softmax_over not in SOFTMAX_OVER:
        raise ValueError(f"softmax_over must be one of {SOFTMAX_OVER}; got {softmax_over!r}")
    group = edge_index[1] if softmax_over == "target" else edge_index[0]
    return softmax(edge_logits, group, num_nodes=num_nodes)


class DynamicGraphConv(MessagePassing):
    r"""Graph convolution with per-face dynamic edge weights (SDFL, paper Eq. 4).

    .. math::
        \mathbf{h}_i' = \alpha_{ii}\,\mathbf{W}_{\mathrm{self}}\mathbf{h}_i
        + \sum_{j \in \mathcal{N}(i),\, j \neq i} \alpha_{ij}\,\mathbf{W}_{\mathrm{nb}}\mathbf{h}_j
        + \mathbf{b},
        \qquad
        \alpha_{ij} = \frac{\exp(a_{ij})}{\sum_{l \in \mathcal{N}(i) \cup \{i\}} \exp(a_{il})}

    where :math:`a_{ij}` is the logit of edge :math:`j \to i` (one per edge of the batched
    graph, so every face has its own weights) and the softmax runs over each target node's
    incoming edges, its self-loop included (:func:`torch_geometric.utils.softmax`). Self-loops
    (``source == target``) use :math:`\mathbf{W}_{\mathrm{self}}`, every other edge
    :math:`\mathbf{W}_{\mathrm{nb}}`, as in the authors' code. With all logits equal this is
    the paper's static "binary adjacency" layer (uniform :math:`1/(k+1)` weights).

    ``softmax_over="source"`` reproduces the authors' released code instead, which normalises
    over each node's *outgoing* edges (the transposed softmax); it is off by default.

    The attention weights reach :meth:`message` as ``alpha``, so PyG's
    :class:`~torch_geometric.explain.algorithm.AttentionExplainer` can read them.

    Args:
        in_channels: size of each input node feature.
        out_channels: size of each output node feature.
        bias: learn the additive bias :math:`\mathbf{b}`.
        softmax_over: ``"target"`` (paper, default) or ``"source"`` (authors' code).
        **kwargs: passed to :class:`~torch_geometric.nn.conv.MessagePassing` (``aggr`` is fixed to ``"add"``).

    Shapes:
        - **input:** node features ``(|V|, F_in)``, edge_index ``(2, |E|)`` and either edge_logits
          ``(|E|,)`` (the layer normalises them with :func:`edge_softmax`) or, keyword-only, a
          precomputed ``alpha`` ``(|E|,)`` used as is (a stack of layers sharing one face's attention
          computes it once, see :class:`~pyg_sdfl.nn.graph_stack.GraphStack`)
        - **output:** node features ``(|V|, F_out)``; with ``return_attention_weights=True`` also
          ``(edge_index, alpha)`` with ``alpha`` of shape ``(|E|,)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        bias: bool = True,
        softmax_over: str = "target",
        **kwargs,
    ) -> None:
        kwargs.setdefault("aggr", "add")
        if kwargs["aggr"] != "add":
            raise ValueError("DynamicGraphConv sums alpha-weighted messages; aggr must be 'add'")
        super().__init__(**kwargs)
        if softmax_over not in SOFTMAX_OVER:
            raise ValueError(f"softmax_over must be one of {SOFTMAX_OVER}; got {softmax_over!r}")
        if int(in_channels) < 1 or int(out_channels) < 1:
            raise ValueError(f"channels must be positive; got in={in_channels}, out={out_channels}")
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.softmax_over = softmax_over
        self.lin_self = Linear(self.in_channels, self.out_channels, bias=False, weight_initializer="glorot")
        self.lin_nb = Linear(self.in_channels, self.out_channels, bias=False, weight_initializer="glorot")
        if bias:
            self.bias = Parameter(torch.empty(self.out_channels))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        self.lin_self.reset_parameters()
        self.lin_nb.reset_parameters()
        zeros(self.bias)

    def forward(
        self,
        x: Tensor,
        edge_index: Tensor,
        edge_logits: Optional[Tensor] = None,
        return_attention_weights: bool = False,
        *,
        alpha: Optional[Tensor] = None,
    ) -> Union[Tensor, Tuple[Tensor, Tuple[Tensor, Tensor]]]:
        """Apply the layer to ``edge_logits`` (normalised here) or to a precomputed ``alpha``.

        Exactly one of the two is given; see the class docstring for shapes.
        """
        name = self.__class__.__name__
        if x.dim() != 2 or x.shape[1] != self.in_channels:
            raise ValueError(f"{name}: x must be (num_nodes, {self.in_channels}); got {tuple(x.shape)}")
        if edge_index.dim() != 2 or edge_index.shape[0] != 2:
            raise ValueError(f"{name}: edge_index must be (2, E); got {tuple(edge_index.shape)}")
        if (edge_logits is None) == (alpha is None):
            raise ValueError(
                f"{name}: pass exactly one of edge_logits (E,) (normalised by this layer) or alpha=(E,) "
                "(already normalised, e.g. edge_softmax(edge_logits, edge_index, num_nodes))"
            )
        given, what = (edge_logits, "edge_logits") if alpha is None else (alpha, "alpha")
        if given.dim() != 1 or given.shape[0] != edge_index.shape[1]:
            raise ValueError(
                f"{name}: {what} must be (E,) = ({edge_index.shape[1]},) to match edge_index; got {tuple(given.shape)}"
            )
        num_nodes = x.shape[0]
        if alpha is None:
            alpha = edge_softmax(edge_logits, edge_index, num_nodes, self.softmax_over)
        # One bipartite propagation from the 2|V| transformed copies [W_self h ; W_nb h] to the |V|
        # targets: a self-loop reads row j of W_self h, any other edge row |V| + j of W_nb h. Each
        # edge still carries exactly one message (so explainers' edge masks stay per edge).
        src, dst = edge_index[0], edge_index[1]
        src_copy = torch.where(src == dst, src, src + num_nodes)
        x_both = torch.cat([self.lin_self(x), self.lin_nb(x)], dim=0)
        out = self.propagate(
            torch.stack([src_copy, dst]), x=(x_both, None), alpha=alpha, size=(2 * num_nodes, num_nodes)
        )
        if self.bias is not None:
            out = out + self.bias
        if return_attention_weights:
            return out, (edge_index, alpha)
        return out

    def message(self, x_j: Tensor, alpha: Tensor) -> Tensor:
        return alpha.unsqueeze(-1) * x_j

    def __repr__(self) -> str:
        extra = "" if self.softmax_over == "target" else ", softmax_over='source'"
        return f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}{extra})"
