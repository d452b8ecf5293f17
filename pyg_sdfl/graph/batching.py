"""Node tensors ``(B, N, C)`` <-> a PyG :class:`~torch_geometric.data.Batch` of B face graphs.

Every face is the same graph (``N`` landmarks, one ``edge_index`` of ``E`` edges), so the
disjoint union of ``B`` faces is fully determined by ``B``: node ``i`` of face ``b`` becomes node
``b * N + i`` and face ``b``'s edges are the template's edges shifted by ``b * N``. We build
that once per ``(B, device)`` with tensor ops and cache it: no per-face Python loop and no
``Batch.from_data_list`` on the training hot path. Edges are face-major, so a per-face edge
tensor ``(B, E)`` flattens (``reshape(-1)``) to the batched edge order.
"""
from __future__ import annotations

from typing import Dict, Tuple, Union

import torch
from torch import Tensor
from torch_geometric.data import Batch, Data

__all__ = ["GraphBatcher"]

_Device = Union[str, torch.device, None]


class GraphBatcher:
    """Batches B copies of one landmark graph.

    Args:
        edge_index: ``(2, E)`` LongTensor of the single-face graph (row 0 source, row 1 target).
        num_nodes: ``N``, the number of landmarks per face.
    """

    def __init__(self, edge_index: Tensor, num_nodes: int) -> None:
        if not isinstance(edge_index, Tensor) or edge_index.dim() != 2 or edge_index.shape[0] != 2:
            shape = tuple(edge_index.shape) if isinstance(edge_index, Tensor) else type(edge_index).__name__
            raise ValueError(f"edge_index must be a (2, E) tensor; got {shape}")
        if edge_index.dtype != torch.long:
            raise ValueError(f"edge_index must be int64 (torch.long); got {edge_index.dtype}")
        num_nodes = int(num_nodes)
        if num_nodes < 1:
            raise ValueError(f"num_nodes must be >= 1; got {num_nodes}")
        if edge_index.numel() and (int(edge_index.min()) < 0 or int(edge_index.max()) >= num_nodes):
            raise ValueError(
                f"edge_index refers to node {int(edge_index.max())} but the graph has num_nodes={num_nodes} "
                "(does the graph match the landmark scheme?)"
            )
        self.edge_index = edge_index.detach().cpu().contiguous()
        self.num_nodes = num_nodes
        self.num_edges = int(edge_index.shape[1])
        self._cache: Dict[Tuple[int, torch.device], Dict[str, Tensor]] = {}

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(num_nodes={self.num_nodes}, num_edges={self.num_edges})"

    # -- cached index tensors ---------------------------------------------------------
    def _tensors(self, batch_size: int, device: _Device) -> Dict[str, Tensor]:
        if isinstance(batch_size, bool) or int(batch_size) != batch_size or int(batch_size) < 1:
            raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}")
        b = int(batch_size)
        dev = torch.device(device) if device is not None else torch.device("cpu")
        key = (b, dev)
        hit = self._cache.get(key)
        if hit is None:
            n, e = self.num_nodes, self.num_edges
            graphs = torch.arange(b, device=dev)
            base = self.edge_index.to(dev)
            offsets = (graphs * n).repeat_interleave(e)  # (B*E,)
            batched = base.repeat(1, b) + offsets  # face-major: face 0's edges, then face 1's ...
            hit = {
                "edge_index": batched,
                "batch": graphs.repeat_interleave(n),
                "ptr": torch.arange(b + 1, device=dev) * n,
                "edge_ptr": torch.arange(b + 1, device=dev) * e,
                "edge_inc": graphs * n,
                "zeros": torch.zeros(b, dtype=torch.long, device=dev),
            }
            self._cache[key] = hit
        return hit

    def batched_edge_index(self, batch_size: int, device: _Device = None) -> Tensor:
        """``(2, B * E)`` edge_index of the disjoint union of ``B`` faces (cached per ``(B, device)``)."""
        return self._tensors(batch_size, device)["edge_index"]

    def batch_vector(self, batch_size: int, device: _Device = None) -> Tensor:
        """``(B * N,)`` graph id of every node (PyG's ``batch``)."""
        return self._tensors(batch_size, device)["batch"]

    # -- conversions ---------------------------------------------------------------------
    def _check_nodes(self, x: Tensor) -> None:
        if not isinstance(x, Tensor) or x.dim() != 3:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"node features must be a (B, N, C) tensor; got {shape}")
        if x.shape[1] != self.num_nodes:
            raise ValueError(
                f"node features have N={x.shape[1]} nodes per face but the graph has {self.num_nodes}"
            )

    def flatten(self, x: Tensor) -> Tensor:
        """``(B, N, C)`` -> ``(B * N, C)`` node matrix of the batched graph (a view when possible)."""
        self._check_nodes(x)
        return x.reshape(x.shape[0] * self.num_nodes, x.shape[2])

    def to_batch(self, x: Tensor) -> Batch:
        """``(B, N, C)`` node features -> :class:`Batch` with ``x (B*N, C)``, ``edge_index``, ``batch``, ``ptr``.

        The result equals ``Batch.from_data_list([Data(x=x[b], edge_index=edge_index) ...])``,
        including ``to_data_list()``/``get_example()`` support.
        """
        self._check_nodes(x)
        b = x.shape[0]
        t = self._tensors(b, x.device)
        out = Batch(_base_cls=Data, x=self.flatten(x), edge_index=t["edge_index"], batch=t["batch"], ptr=t["ptr"])
        out._num_graphs = b
        out._slice_dict = {"x": t["ptr"], "edge_index": t["edge_ptr"]}
        out._inc_dict = {"x": t["zeros"], "edge_index": t["edge_inc"]}
        return out

    def to_dense(self, x: Tensor, batch_size: int) -> Tensor:
        """``(B * N, C)`` node matrix -> ``(B, N, C)``."""
        if not isinstance(x, Tensor) or x.dim() != 2:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"batched node features must be (B*N, C); got {shape}")
        b = int(batch_size)
        if x.shape[0] != b * self.num_nodes:
            raise ValueError(
                f"batched node features have {x.shape[0]} rows, expected B*N = {b}*{self.num_nodes} = {b * self.num_nodes}"
            )
        return x.reshape(b, self.num_nodes, x.shape[1])

    def edges_to_dense(self, values: Tensor, batch_size: int) -> Tensor:
        """Per-edge values of the batched graph ``(B * E, ...)`` -> per-face ``(B, E, ...)``."""
        b = int(batch_size)
        if values.dim() < 1 or values.shape[0] != b * self.num_edges:
            raise ValueError(
                f"per-edge values have {values.shape[0] if values.dim() else 0} rows, "
                f"expected B*E = {b}*{self.num_edges}"
            )
        return values.reshape(b, self.num_edges, *values.shape[1:])
