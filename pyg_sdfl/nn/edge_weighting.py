"""Dynamic edge weighting: one logit per edge per face from the map-to-node maps (paper Sec. III-B)."""
from __future__ import annotations

from typing import Optional

from torch import Tensor, nn

__all__ = ["EdgeWeighting"]


class EdgeWeighting(nn.Module):
    r"""Per-face edge logits :math:`\mathbf{a}` (the paper's vector ``a``).

    .. math::
        \mathbf{a} = \mathbf{W}_2\,\mathrm{ReLU}(\mathbf{W}_1\,\mathrm{GAP}(\mathbf{H}) + \mathbf{b}_1) + \mathbf{b}_2
        \in \mathbb{R}^{E}

    where :math:`\mathbf{H}` are the ``N*n`` map-to-node hidden maps and ``E`` the number of edges
    of one face graph (self-loops included), in the graph's ``edge_index`` order. The logits
    are normalised later by the graph layer's softmax.

    With ``dynamic=False`` the module has no parameters and returns all-ones logits: the
    paper's "binary adjacency" ablation (uniform weights after the softmax).

    The second layer starts at zero, so a fresh dynamic model begins exactly at the binary
    adjacency and learns to deviate from it.

    Args:
        in_channels: channels of the pooled maps (``N * n``).
        num_edges: ``E``.
        hidden_channels: width of the first FC layer (default ``in_channels // 2``, >= 16).
        dynamic: ``False`` for the binary-adjacency ablation.

    Shapes:
        - **input:** maps ``(B, N*n, H, W)``
        - **output:** logits ``(B, E)``
    """

    def __init__(
        self, in_channels: int, num_edges: int, hidden_channels: Optional[int] = None, dynamic: bool = True
    ) -> None:
        super().__init__()
        if int(in_channels) < 1 or int(num_edges) < 1:
            raise ValueError(f"EdgeWeighting: in_channels and num_edges must be positive; got {in_channels}, {num_edges}")
        self.in_channels = int(in_channels)
        self.num_edges = int(num_edges)
        self.dynamic = bool(dynamic)
        if hidden_channels is None:
            hidden_channels = max(16, self.in_channels // 2)
        self.hidden_channels = int(hidden_channels)
        if self.dynamic:
            self.fc = nn.Sequential(
                nn.Linear(self.in_channels, self.hidden_channels),
                nn.ReLU(inplace=True),
                nn.Linear(self.hidden_channels, self.num_edges),
            )
        else:
            self.fc = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.fc is None:
            return
        self.fc[0].reset_parameters()
        nn.init.zeros_(self.fc[2].weight)
        nn.init.zeros_(self.fc[2].bias)

    def forward(self, maps: Tensor) -> Tensor:
        if maps.dim() != 4 or maps.shape[1] != self.in_channels:
            raise ValueError(f"EdgeWeighting expects maps (B, {self.in_channels}, H, W); got {tuple(maps.shape)}")
        if self.fc is None:
            return maps.new_ones(maps.shape[0], self.num_edges)
        pooled = maps.mean(dim=(2, 3))  # global average pooling, (B, N*n)
        return self.fc(pooled)

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, num_edges={self.num_edges}, dynamic={self.dynamic}"
