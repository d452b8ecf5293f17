r"""The graph relational stack of the graph heads (paper Fig. 5, after map-to-node).

On node features ``x (|V|, I)`` of a batch of face graphs (the disjoint union, ``edge_index (2, |E|)``):

.. math::
    \mathbf{h}^{(0)} = \mathrm{ReLU}(\mathrm{BN}(\mathrm{conv}_{\mathrm{in}}(\mathbf{x}))), \qquad
    \mathbf{h}^{(b+1)} = \mathbf{h}^{(b)} + \mathrm{ReLU}(\mathrm{BN}(\mathrm{conv}_{b,2}(
        \mathrm{ReLU}(\mathrm{BN}(\mathrm{conv}_{b,1}(\mathbf{h}^{(b)})))))), \qquad
    \mathbf{y} = \mathrm{conv}_{\mathrm{out}}(\mathbf{h}^{(B)}) \in \mathbb{R}^{|V| \times 2}

for ``b = 0 .. B-1`` residual blocks. With :class:`~pyg_sdfl.nn.dynamic_graph_conv.DynamicGraphConv`
layers every conv uses the same per-edge attention :math:`\alpha` (one face's edge weights do not
change from layer to layer), so it is computed once, outside the stack, and passed to each layer:
``alpha = edge_softmax(edge_logits, edge_index, |V|)``. Stock PyG layers take no ``alpha``.
"""
from __future__ import annotations

from typing import Callable, Iterable, List, Optional, Tuple, Union

from torch import Tensor, nn

from pyg_sdfl.nn.dynamic_graph_conv import DynamicGraphConv

__all__ = ["GraphConvBNReLU", "ResidualGraphBlock", "GraphStack", "run_graph_stack"]


class GraphConvBNReLU(nn.Module):
    """``conv(x, *graph_args, **graph_kwargs) -> BatchNorm1d -> ReLU`` on node features ``(|V|, F)``."""

    def __init__(self, conv: nn.Module, channels: int) -> None:
        super().__init__()
        self.conv = conv
        self.norm = nn.BatchNorm1d(channels)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor, *graph_args: Tensor, **graph_kwargs: Tensor) -> Tensor:
        return self.act(self.norm(self.conv(x, *graph_args, **graph_kwargs)))


class ResidualGraphBlock(nn.Module):
    """Two ``GraphConv-BN-ReLU`` plus the identity: ``x + f2(f1(x))``."""

    def __init__(self, conv1: nn.Module, conv2: nn.Module, channels: int) -> None:
        super().__init__()
        self.block1 = GraphConvBNReLU(conv1, channels)
        self.block2 = GraphConvBNReLU(conv2, channels)

    def forward(self, x: Tensor, *graph_args: Tensor, **graph_kwargs: Tensor) -> Tensor:
        return x + self.block2(self.block1(x, *graph_args, **graph_kwargs), *graph_args, **graph_kwargs)


def run_graph_stack(
    input_block: nn.Module,
    blocks: Iterable[nn.Module],
    output_conv: nn.Module,
    x: Tensor,
    edge_index: Tensor,
    alpha: Optional[Tensor] = None,
    hidden: Optional[List[Tensor]] = None,
) -> Tensor:
    """The stack's computation (module docstring) on these layers: ``x (|V|, I)`` -> ``(|V|, 2)``.

    ``alpha (|E|,)`` reaches every conv as the keyword ``alpha`` (leave it ``None`` for layers
    that take none). If ``hidden`` is a list, the node features after the input block and after
    each residual block, ``(|V|, F)`` each, are appended to it.
    """
    graph_kwargs = {} if alpha is None else {"alpha": alpha}
    h = input_block(x, edge_index, **graph_kwargs)
    if hidden is not None:
        hidden.append(h)
    for block in blocks:
        h = block(h, edge_index, **graph_kwargs)
        if hidden is not None:
            hidden.append(h)
    return output_conv(h, edge_index, **graph_kwargs)


class GraphStack(nn.Module):
    r"""Input ``GraphConv-BN-ReLU``, residual graph blocks, final graph conv (module docstring).

    A standalone module (e.g. for :mod:`torch_geometric.explain` or a benchmark). The graph heads
    hold the same three parts as their own children (``input_block``, ``blocks``, ``output_conv``);
    ``head.graph_stack`` is a :class:`GraphStack` over them, sharing the head's trained weights.

    Args:
        input_block: ``GraphConvBNReLU(conv(I, F), F)``.
        blocks: :class:`ResidualGraphBlock` ``(F -> F)`` modules, applied in order.
        output_conv: ``conv(F, 2)`` (no BN/ReLU).

    Shapes:
        - **input:** ``x (|V|, I)``, ``edge_index (2, |E|)``; for :class:`DynamicGraphConv`
          layers also ``alpha (|E|,)``, already normalised (used as is by every layer)
        - **output:** ``(|V|, 2)``; with ``return_hidden=True`` also the list of the ``1 + B``
          hidden node features ``(|V|, F)`` (after the input block, after each residual block)
    """

    def __init__(
        self, input_block: nn.Module, blocks: Iterable[nn.Module], output_conv: nn.Module
    ) -> None:
        super().__init__()
        self.input_block = input_block
        self.blocks = blocks if isinstance(blocks, nn.ModuleList) else nn.ModuleList(blocks)
        self.output_conv = output_conv
        #: whether the layers are :class:`DynamicGraphConv` (they need ``alpha``)
        self.uses_alpha = any(isinstance(m, DynamicGraphConv) for m in self.modules())

    @classmethod
    def build(
        cls,
        make_conv: Callable[[int, int], nn.Module],
        in_channels: int,
        hidden: int,
        num_blocks: int,
        out_channels: int = 2,
    ) -> "GraphStack":
        """Build the layers with ``make_conv(in, out)``: ``I -> F``, ``2 * num_blocks`` times ``F -> F``,
        then ``F -> out_channels`` (in this order, so a seeded build is reproducible)."""
        f = int(hidden)
        input_block = GraphConvBNReLU(make_conv(int(in_channels), f), f)
        blocks = nn.ModuleList(ResidualGraphBlock(make_conv(f, f), make_conv(f, f), f) for _ in range(int(num_blocks)))
        return cls(input_block, blocks, make_conv(f, int(out_channels)))

    def forward(
        self, x: Tensor, edge_index: Tensor, alpha: Optional[Tensor] = None, return_hidden: bool = False
    ) -> Union[Tensor, Tuple[Tensor, List[Tensor]]]:
        if self.uses_alpha and alpha is None:
            raise ValueError(
                "GraphStack: its DynamicGraphConv layers need alpha (|E|,), e.g. "
                "edge_softmax(edge_logits, edge_index, num_nodes)"
            )
        if not self.uses_alpha and alpha is not None:
            raise ValueError("GraphStack: its layers weight edges themselves; alpha must be None")
        hidden: Optional[List[Tensor]] = [] if return_hidden else None
        out = run_graph_stack(self.input_block, self.blocks, self.output_conv, x, edge_index, alpha, hidden)
        return (out, hidden) if hidden is not None else out
