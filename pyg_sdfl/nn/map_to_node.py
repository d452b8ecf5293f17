"""Map-to-node: turn a backbone feature map into one feature vector per landmark (paper Sec. III-A)."""
from __future__ import annotations

from typing import Tuple

from torch import Tensor, nn

__all__ = ["MapToNode", "ConvBNReLU"]


class ConvBNReLU(nn.Sequential):
    """``Conv2d (no bias, 'same' padding) -> BatchNorm2d -> ReLU``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3) -> None:
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd to keep the map size; got {kernel_size}")
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class MapToNode(nn.Module):
    r"""Two conv-BN-ReLU blocks to ``N * n`` channels, reshaped to ``N`` nodes of ``n * H * W`` features.

    .. math::
        \mathbf{H} = \phi(\mathbf{F}) \in \mathbb{R}^{Nn \times H \times W}
        \;\longrightarrow\;
        \mathbf{H}^0 \in \mathbb{R}^{N \times nHW}

    Node ``i`` owns the ``n`` consecutive channels ``i*n, ..., i*n + n - 1`` of :math:`\mathbf{H}`.

    Args:
        in_channels: ``C`` of the backbone map.
        num_points: ``N`` landmarks.
        nodes_per_point: ``n`` maps per landmark (paper: 4).
        hidden_channels: channels of the first block (default 256, as in the authors' code).
        kernel_size: of both convolutions (default 3).

    Shapes:
        - **input:** ``(B, C, H, W)``
        - **output:** ``(nodes (B, N, n*H*W), maps (B, N*n, H, W))``
    """

    def __init__(
        self,
        in_channels: int,
        num_points: int,
        nodes_per_point: int = 4,
        hidden_channels: int = 256,
        kernel_size: int = 3,
    ) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("num_points", num_points),
                            ("nodes_per_point", nodes_per_point), ("hidden_channels", hidden_channels)):
            if int(value) < 1:
                raise ValueError(f"MapToNode: {name} must be positive; got {value}")
        self.in_channels = int(in_channels)
        self.num_points = int(num_points)
        self.nodes_per_point = int(nodes_per_point)
        self.out_channels = self.num_points * self.nodes_per_point
        self.blocks = nn.Sequential(
            ConvBNReLU(self.in_channels, int(hidden_channels), kernel_size),
            ConvBNReLU(int(hidden_channels), self.out_channels, kernel_size),
        )

    def node_features(self, feature_size: Tuple[int, int]) -> int:
        """``I = n * H * W``, the node feature size for a ``(H, W)`` backbone map."""
        h, w = feature_size
        return self.nodes_per_point * int(h) * int(w)

    def forward(self, features: Tensor) -> Tuple[Tensor, Tensor]:
        if features.dim() != 4 or features.shape[1] != self.in_channels:
            raise ValueError(
                f"MapToNode expects features (B, {self.in_channels}, H, W); got {tuple(features.shape)}"
            )
        maps = self.blocks(features)
        b = maps.shape[0]
        nodes = maps.reshape(b, self.num_points, -1)
        return nodes, maps

    def extra_repr(self) -> str:
        return f"num_points={self.num_points}, nodes_per_point={self.nodes_per_point}"
