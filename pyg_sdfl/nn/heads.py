"""Regression heads: backbone map ``(B, C, H, W)`` -> raw landmark outputs ``(B, N, 2)``.

Every head has the constructor ``Head(in_channels, feature_size, num_points, edge_index, **options)``
(so a Hydra config can instantiate any of them) and ``forward(features)``. Outputs are raw: the
model maps them to pixels; targets are expected roughly in ``[-1, 1]`` and the last layer is
initialised so that outputs start near 0.

* :class:`SDFLHead` - the paper's L-GRN (Fig. 5): map-to-node, dynamic edge weights, then the
  :class:`~pyg_sdfl.nn.graph_stack.GraphStack` of ``DynamicGraphConv`` layers (conv-BN-ReLU,
  ``num_blocks`` residual graph blocks, a final conv to 2 coordinates), all sharing the face's
  attention ``alpha``, computed once per forward.
* :class:`PyGLayerHead` - the same structure with any PyG conv named in :data:`GRAPH_LAYERS`.
  That registry is the one way to name a PyG layer in config: the ``layer:`` key of
  ``configs/head/<name>.yaml`` (``_target_: pyg_sdfl.nn.heads.PyGLayerHead``) is a key of it, and
  :func:`register_graph_layer` adds one.
* :class:`FCHead` - the FC baseline: flatten -> ``hidden`` + ReLU -> ``2N``.

Both graph heads derive from :class:`GraphHead`, which holds their shared arguments and builds
their stack. Graph heads take ``forward(features, return_intermediates=True)`` and then also return a dict
with ``"nodes_map_to_node"`` ``(B, N, I)``, ``"nodes_input"`` ``(B, N, F)``,
``"nodes_block_{b}"`` ``(B, N, F)`` after each residual block, and for SDFL ``"edge_logits"``
and ``"alpha"`` ``(B, E)`` (per-face attention, edges in ``edge_index`` order).
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn
from torch_geometric.nn import GATConv, GATv2Conv, GCNConv, GraphConv, SAGEConv, TransformerConv

from pyg_sdfl.graph.batching import GraphBatcher
from pyg_sdfl.graph.mining import LandmarkGraph
from pyg_sdfl.graph.neighbour_table import NeighbourTable
from pyg_sdfl.nn.dynamic_graph_conv import SOFTMAX_OVER, DynamicGraphConv, edge_softmax
from pyg_sdfl.nn.edge_weighting import EdgeWeighting
from pyg_sdfl.nn.folded_graph_stack import FoldedGraphStack
from pyg_sdfl.nn.fused_graph_stack import gathered_rows, run_fused_graph_stack, table_alpha_to_edges, table_attention
from pyg_sdfl.nn.graph_stack import GraphStack, run_graph_stack
from pyg_sdfl.nn.map_to_node import MapToNode

__all__ = [
    "GraphHead", "SDFLHead", "PyGLayerHead", "FCHead", "GRAPH_LAYERS", "GRAPH_BACKENDS", "make_graph_layer",
    "register_graph_layer", "use_graph_backend",
]

OUTPUT_INIT_SCALE = 1e-3
#: how :class:`SDFLHead` runs its graph stack: ``"pyg"`` (MessagePassing with scatter, the reference,
#: the default) or ``"fused"`` (a gather over the fixed graph's neighbour table, :mod:`pyg_sdfl.nn.fused_graph_stack`;
#: in eval mode without autograd, BatchNorm folded in: :mod:`pyg_sdfl.nn.folded_graph_stack`)
GRAPH_BACKENDS = ("pyg", "fused")


# ----------------------------------------------------------------------------- PyG layer registry
def _mean_over_heads(cls: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Factory for multi-head attention layers whose output size must not depend on ``heads``."""

    @functools.wraps(cls)
    def make(in_channels: int, out_channels: int, **kwargs: Any) -> nn.Module:
        kwargs.setdefault("concat", False)
        return cls(in_channels, out_channels, **kwargs)

    return make


#: name -> factory ``(in_channels, out_channels, **kwargs) -> MessagePassing`` called as ``layer(x, edge_index)``.
#: The names a :class:`PyGLayerHead` accepts as ``layer`` (the ``layer:`` key of its YAML). Adding a
#: layer is one entry here (or one :func:`register_graph_layer` call before the head is built).
GRAPH_LAYERS: Dict[str, Callable[..., nn.Module]] = {
    "gcn": GCNConv,
    "gat": _mean_over_heads(GATConv),
    "gatv2": _mean_over_heads(GATv2Conv),
    "sage": SAGEConv,
    "transformer": _mean_over_heads(TransformerConv),
    "graphconv": GraphConv,
}


def register_graph_layer(name: str, factory: Callable[..., nn.Module]) -> None:
    """Add a PyG layer to :data:`GRAPH_LAYERS` (``factory(in_channels, out_channels, **kw)``)."""
    if name in GRAPH_LAYERS:
        raise ValueError(f"graph layer {name!r} is already registered")
    GRAPH_LAYERS[name] = factory


def make_graph_layer(name: str, in_channels: int, out_channels: int, **kwargs: Any) -> nn.Module:
    """Instantiate a registered PyG layer; unknown names raise ``KeyError`` listing the known ones."""
    try:
        factory = GRAPH_LAYERS[name]
    except KeyError:
        raise KeyError(f"unknown graph layer {name!r}; known: {sorted(GRAPH_LAYERS)}") from None
    return factory(in_channels, out_channels, **kwargs)


# ----------------------------------------------------------------------------- checks and init
@torch.no_grad()
def _shrink_output_layer(module: nn.Module, scale: float = OUTPUT_INIT_SCALE) -> None:
    """Scale the weights of the coordinate layer by ``scale`` and zero its biases: outputs start near 0."""
    for name, p in module.named_parameters():
        if name.endswith("bias"):
            p.zero_()
        else:
            p.mul_(scale)


def _check_feature_size(feature_size: Sequence[int]) -> Tuple[int, int]:
    try:
        h, w = (int(v) for v in feature_size)
    except (TypeError, ValueError):
        raise ValueError(f"feature_size must be (H, W); got {feature_size!r}") from None
    if h < 1 or w < 1:
        raise ValueError(f"feature_size must be positive; got {(h, w)}")
    return h, w


def _check_features(features: Tensor, in_channels: int, feature_size: Tuple[int, int], who: str) -> None:
    if not isinstance(features, Tensor) or features.dim() != 4:
        shape = tuple(features.shape) if isinstance(features, Tensor) else type(features).__name__
        raise ValueError(f"{who} expects features (B, C, H, W); got {shape}")
    if features.shape[1] != in_channels or tuple(features.shape[2:]) != feature_size:
        raise ValueError(
            f"{who} was built for features (B, {in_channels}, {feature_size[0]}, {feature_size[1]}); "
            f"got {tuple(features.shape)}"
        )


def _check_edge_index(edge_index: Union[Tensor, LandmarkGraph, None], num_points: int, who: str) -> Tensor:
    if edge_index is None:
        raise ValueError(
            f"{who} needs a landmark graph: pass edge_index (2, E), e.g. pyg_sdfl.graph.mine_graph(train_landmarks).edge_index"
        )
    if isinstance(edge_index, LandmarkGraph):
        if edge_index.num_nodes != num_points:
            raise ValueError(
                f"{who}: the graph has {edge_index.num_nodes} nodes but num_points={num_points} (wrong landmark scheme?)"
            )
        edge_index = edge_index.edge_index
    ei = torch.as_tensor(edge_index)
    if ei.dim() != 2 or ei.shape[0] != 2 or ei.shape[1] < 1:
        raise ValueError(f"{who}: edge_index must be a non-empty (2, E) tensor; got shape {tuple(ei.shape)}")
    if ei.dtype.is_floating_point or ei.dtype == torch.bool:
        raise ValueError(f"{who}: edge_index must hold integer node ids; got {ei.dtype}")
    ei = ei.long()
    if int(ei.min()) < 0 or int(ei.max()) >= num_points:
        raise ValueError(
            f"{who}: edge_index refers to node {int(ei.max())} but num_points={num_points} "
            "(the graph does not match the landmark scheme)"
        )
    return ei.contiguous()


# ----------------------------------------------------------------------------- graph heads
class GraphHead(nn.Module):
    """Map-to-node, then the :class:`~pyg_sdfl.nn.graph_stack.GraphStack` (the shared part of the graph heads).

    The stack's layers are the head's own children ``input_block``, ``blocks``, ``output_conv``
    (so the state_dict keys read ``input_block.*``, ``blocks.*``, ``output_conv.*``);
    :attr:`graph_stack` wraps them as a standalone module.

    Args:
        in_channels, feature_size, num_points, edge_index: see the module docstring.
        nodes_per_point: ``n`` maps per landmark (paper: 4); node features are ``I = n*H*W``.
        hidden: ``F`` (paper: 128).
        num_blocks: residual graph blocks (paper: 4).
        map_hidden, map_kernel_size: of the map-to-node blocks.

    A subclass builds its own modules, then calls :meth:`_build_stack` with its conv factory.
    """

    def __init__(
        self,
        in_channels: int,
        feature_size: Sequence[int],
        num_points: int,
        edge_index: Union[Tensor, LandmarkGraph, None],
        nodes_per_point: int = 4,
        hidden: int = 128,
        num_blocks: int = 4,
        map_hidden: int = 256,
        map_kernel_size: int = 3,
    ) -> None:
        super().__init__()
        who = type(self).__name__
        if int(num_points) < 2:
            raise ValueError(f"{who}: num_points must be >= 2; got {num_points}")
        if int(num_blocks) < 0 or int(hidden) < 1:
            raise ValueError(f"{who}: need num_blocks >= 0 and hidden >= 1; got {num_blocks}, {hidden}")
        self.in_channels = int(in_channels)
        self.feature_size = _check_feature_size(feature_size)
        self.num_points = int(num_points)
        self.hidden = int(hidden)
        self.num_blocks = int(num_blocks)
        self.register_buffer("edge_index", _check_edge_index(edge_index, self.num_points, who))
        self.num_edges = int(self.edge_index.shape[1])
        self.map_to_node = MapToNode(self.in_channels, self.num_points, nodes_per_point, map_hidden, map_kernel_size)
        self.node_features = self.map_to_node.node_features(self.feature_size)
        self._batcher: Optional[GraphBatcher] = None
        self._table: Optional[NeighbourTable] = None
        self._table_rows: Optional[Tensor] = None

    def _build_stack(self, make_conv: Callable[[int, int], nn.Module]) -> None:
        stack = GraphStack.build(make_conv, self.node_features, self.hidden, self.num_blocks)
        self.input_block, self.blocks, self.output_conv = stack.input_block, stack.blocks, stack.output_conv
        _shrink_output_layer(self.output_conv)

    @property
    def graph_stack(self) -> GraphStack:
        """The graph layers as a :class:`GraphStack`: ``(x (|V|, I), edge_index, alpha) -> (|V|, 2)``
        normalised coordinates. It shares this head's layers (and so its weights and modes); it is
        not a child of the head."""
        stack = GraphStack(self.input_block, self.blocks, self.output_conv)
        stack.training = self.training
        return stack

    # The batched edge_index (per (B, device)) and the neighbour table are cached; drop them whenever
    # the buffer changes.
    def _drop_caches(self) -> None:
        """Forget what was derived from the buffers and weights (a subclass adds its own caches)."""
        self._batcher = self._table = self._table_rows = None

    def _apply(self, fn, *args, **kwargs):  # type: ignore[override]
        self._drop_caches()
        return super()._apply(fn, *args, **kwargs)

    def _load_from_state_dict(self, *args, **kwargs):  # type: ignore[override]
        self._drop_caches()
        super()._load_from_state_dict(*args, **kwargs)

    @property
    def neighbour_table(self) -> NeighbourTable:
        """The padded in/out-edge tables of this head's graph, on the buffer's device."""
        if self._table is None:
            self._table = NeighbourTable.from_edge_index(self.edge_index, self.num_points).to(self.edge_index.device)
            self._table_rows = gathered_rows(self._table)
        return self._table

    @property
    def batcher(self) -> GraphBatcher:
        """Batches this head's graph: ``batched_edge_index(B, device)`` is the ``(2, B*E)`` union."""
        if self._batcher is None:
            self._batcher = GraphBatcher(self.edge_index, self.num_points)
        return self._batcher

    def edge_weights(self, maps: Tensor, edge_index: Tensor, inter: Optional[Dict[str, Tensor]]) -> Optional[Tensor]:
        """Per-edge weights ``alpha (B*E,)`` for the stack's layers, from the map-to-node maps
        ``(B, N*n, H, W)`` (and their record in ``inter``); ``None``: the layers weight edges themselves."""
        return None

    def forward(
        self, features: Tensor, return_intermediates: bool = False
    ) -> Union[Tensor, Tuple[Tensor, Dict[str, Tensor]]]:
        """Features ``(B, C, H, W)`` -> coordinates ``(B, N, 2)`` in ``[-1, 1]`` (and the intermediates:
        map-to-node nodes, the stack's hidden nodes, and what :meth:`edge_weights` records)."""
        _check_features(features, self.in_channels, self.feature_size, type(self).__name__)
        nodes, maps = self.map_to_node(features)
        edge_index = self.batcher.batched_edge_index(features.shape[0], features.device)
        inter: Optional[Dict[str, Tensor]] = {"nodes_map_to_node": nodes} if return_intermediates else None
        alpha = self.edge_weights(maps, edge_index, inter)
        coords = self._run_stack(nodes, edge_index, alpha, inter)
        return coords if inter is None else (coords, inter)

    def _run_stack(
        self, nodes: Tensor, edge_index: Tensor, alpha: Optional[Tensor], inter: Optional[Dict[str, Tensor]]
    ) -> Tensor:
        """Nodes ``(B, N, I)`` -> coordinates ``(B, N, 2)``; records the hidden nodes in ``inter``."""
        b, n = nodes.shape[0], self.num_points
        hidden: Optional[List[Tensor]] = None if inter is None else []
        x = nodes.reshape(b * n, -1)
        out = run_graph_stack(self.input_block, self.blocks, self.output_conv, x, edge_index, alpha, hidden)
        if inter is not None:
            inter["nodes_input"] = hidden[0].view(b, n, -1)
            for i, h in enumerate(hidden[1:]):
                inter[f"nodes_block_{i}"] = h.view(b, n, -1)
        return out.view(b, n, 2)

    def extra_repr(self) -> str:
        backend = getattr(self, "graph_backend", "pyg")
        return (
            ("" if backend == "pyg" else f"graph_backend={backend!r}, ")
            + f"in_channels={self.in_channels}, feature_size={self.feature_size}, num_points={self.num_points}, "
            f"num_edges={self.num_edges}, node_features={self.node_features}, hidden={self.hidden}"
        )


class SDFLHead(GraphHead):
    r"""The SDFL landmark-graph relational network (L-GRN, paper Fig. 5).

    ``features (B, C, H, W)`` -> :class:`MapToNode` -> nodes ``(B, N, I)`` with ``I = n*H*W`` and
    maps ``(B, N*n, H, W)`` -> :class:`EdgeWeighting` -> logits ``(B, E)`` -> :meth:`attention`
    ``alpha (B*E,)`` -> on the disjoint union of the B face graphs, the
    :class:`~pyg_sdfl.nn.graph_stack.GraphStack`: ``DynamicGraphConv(I, F)-BN-ReLU``,
    ``num_blocks`` residual blocks of two ``DynamicGraphConv(F, F)-BN-ReLU`` plus identity,
    ``DynamicGraphConv(F, 2)`` -> ``(B, N, 2)``. All layers share the face's attention
    :math:`\alpha` (softmax of its logits over each node's incoming edges), computed once.

    Args:
        in_channels, feature_size, num_points, edge_index: see the module docstring.
        dynamic: ``False`` = binary adjacency (all logits 1 -> uniform weights), the paper's ablation.
        softmax_over: ``"target"`` (paper) or ``"source"`` (authors' released code).
        edge_hidden: width of the edge-weighting FC (default ``N*n // 2``).
        **graph_options: of :class:`GraphHead` (``nodes_per_point``, ``hidden``, ``num_blocks``,
            ``map_hidden``, ``map_kernel_size``).
    """

    def __init__(
        self,
        in_channels: int,
        feature_size: Sequence[int],
        num_points: int,
        edge_index: Union[Tensor, LandmarkGraph, None],
        *,
        dynamic: bool = True,
        softmax_over: str = "target",
        edge_hidden: Optional[int] = None,
        **graph_options: Any,
    ) -> None:
        super().__init__(in_channels, feature_size, num_points, edge_index, **graph_options)
        if softmax_over not in SOFTMAX_OVER:
            raise ValueError(f"SDFLHead: softmax_over must be one of {SOFTMAX_OVER}; got {softmax_over!r}")
        self.dynamic = bool(dynamic)
        self.softmax_over = softmax_over
        self.edge_weighting = EdgeWeighting(
            self.map_to_node.out_channels, self.num_edges, edge_hidden, dynamic=self.dynamic
        )
        self._build_stack(lambda i, o: DynamicGraphConv(i, o, softmax_over=softmax_over))
        self.graph_backend = "pyg"
        # {"modules": the stack's modules, "key": their tensors' (id, data_ptr, version), "stack":
        # FoldedGraphStack}; a dict, so that the snapshot is not registered as a child module (nor
        # listed, copied or saved as one). Emptied by set_graph_backend, train/eval, .to() and load_state_dict.
        self._fold_cache: Dict[str, Any] = {}

    def set_graph_backend(self, backend: str) -> "SDFLHead":
        """Run the graph stack with ``backend`` (a name in :data:`GRAPH_BACKENDS`); same weights, same
        outputs (to float rounding). ``"fused"`` is the inference path: no scatter, ONNX-exportable;
        in eval mode without autograd it runs the stack with BatchNorm folded in (:meth:`folded_stack`)."""
        if backend not in GRAPH_BACKENDS:
            raise ValueError(f"graph backend must be one of {GRAPH_BACKENDS}; got {backend!r}")
        self.graph_backend = backend
        self._fold_cache = {}
        return self

    def forward(
        self, features: Tensor, return_intermediates: bool = False
    ) -> Union[Tensor, Tuple[Tensor, Dict[str, Tensor]]]:
        """Features ``(B, C, H, W)`` -> coordinates ``(B, N, 2)`` in ``[-1, 1]`` on the chosen
        :attr:`graph_backend` (intermediates as :meth:`GraphHead.forward` records them)."""
        if self.graph_backend == "pyg":
            return super().forward(features, return_intermediates)
        _check_features(features, self.in_channels, self.feature_size, type(self).__name__)
        nodes, maps = self.map_to_node(features)
        logits = self.edge_weighting(maps)
        table = self.neighbour_table
        alpha = table_attention(logits, table, self.softmax_over)
        folded = None if return_intermediates or self.training or torch.is_grad_enabled() else self.folded_stack()
        if folded is not None:
            return folded(nodes, alpha)
        hidden: Optional[List[Tensor]] = [] if return_intermediates else None
        coords = run_fused_graph_stack(self.input_block, self.blocks, self.output_conv, nodes, self._table_rows,
                                       alpha, hidden)
        if hidden is None:
            return coords
        inter = {"nodes_map_to_node": nodes, "edge_logits": logits, "alpha": table_alpha_to_edges(alpha, table),
                 "nodes_input": hidden[0], **{f"nodes_block_{i}": h for i, h in enumerate(hidden[1:])}}
        return coords, inter

    def folded_stack(self) -> Optional[FoldedGraphStack]:
        """The graph stack with BatchNorm folded in (:class:`FoldedGraphStack`), from the current
        weights and running statistics; ``None`` while any of its layers is in training mode (its
        BatchNorm then uses batch statistics: nothing to fold).

        Eager: a snapshot, kept while every tensor of the stack is the same object with the same
        storage and in-place version (an optimiser step, ``load_state_dict``, ``.to()``,
        ``torch.func.functional_call`` or a replaced parameter all rebuild it), and dropped by
        ``train()``/``eval()``, ``.to()``, ``load_state_dict`` and :meth:`set_graph_backend`. Writes
        through ``tensor.data`` bump no version: call ``eval()`` (or :meth:`set_graph_backend`) after
        them, as EMA code does before evaluating. Parameters made inside ``torch.inference_mode``
        have no version counter: then the fold is rebuilt at every call. Forward hooks on the
        stack's BatchNorm and ReLU modules do not run on this path. While exporting or compiling:
        built in the traced graph from the weights."""
        self.neighbour_table  # builds self._table_rows
        if torch.compiler.is_compiling() or torch.compiler.is_exporting():
            return self._fold()
        cache = self._fold_cache  # read once, replaced whole: threads and DataParallel replicas never see half of it
        modules = cache.get("modules")
        if modules is None:
            modules = [m for part in (self.input_block, self.blocks, self.output_conv) for m in part.modules()]
        if any(m.training for m in modules):
            return None
        # torch's own per-module dicts: 17 us for the 72 modules of the shipped head, where
        # parameters()/buffers() take 170 us
        tensors = [t for m in modules for d in (m._parameters, m._buffers) for t in d.values() if t is not None]
        if any(t.is_inference() for t in tensors):
            return self._fold()
        key = tuple((id(t), t.data_ptr(), t._version) for t in tensors)
        if cache.get("key") == key:
            return cache["stack"]
        stack = self._fold()
        self._fold_cache = {"modules": modules, "key": key, "stack": stack}
        return stack

    def _fold(self) -> FoldedGraphStack:
        if torch.compiler.is_compiling() or torch.compiler.is_exporting():
            return FoldedGraphStack.from_layers(self.input_block, self.blocks, self.output_conv,
                                                self._table_rows, self.num_points)
        with torch.inference_mode(False), torch.no_grad():  # plain tensors, usable outside inference mode
            return FoldedGraphStack.from_layers(self.input_block, self.blocks, self.output_conv,
                                                self._table_rows.clone(), self.num_points)

    def train(self, mode: bool = True) -> "SDFLHead":
        self._fold_cache = {}
        return super().train(mode)

    def _drop_caches(self) -> None:
        super()._drop_caches()
        self._fold_cache = {}

    def attention(self, logits: Tensor, edge_index: Tensor) -> Tensor:
        """Per-face edge logits ``(B, E)`` -> ``alpha (B*E,)`` on the batched ``edge_index (2, B*E)``
        (face-major), normalised as ``softmax_over`` says (:func:`edge_softmax`)."""
        return edge_softmax(logits.reshape(-1), edge_index, logits.shape[0] * self.num_points, self.softmax_over)

    def edge_weights(self, maps: Tensor, edge_index: Tensor, inter: Optional[Dict[str, Tensor]]) -> Tensor:
        """Maps ``(B, N*n, H, W)`` -> logits ``(B, E)`` -> ``alpha (B*E,)``, once for all layers."""
        logits = self.edge_weighting(maps)
        alpha = self.attention(logits, edge_index)
        if inter is not None:
            inter["edge_logits"] = logits
            inter["alpha"] = alpha.view(logits.shape[0], self.num_edges)
        return alpha


def use_graph_backend(model: nn.Module, backend: str) -> int:
    """Run every :class:`SDFLHead` inside ``model`` on ``backend`` (:data:`GRAPH_BACKENDS`); returns
    how many there were. Other heads have one path and are left alone."""
    heads = [m for m in model.modules() if isinstance(m, SDFLHead)]
    for head in heads:
        head.set_graph_backend(backend)
    return len(heads)


class PyGLayerHead(GraphHead):
    """The L-GRN structure with a stock PyG conv instead of :class:`DynamicGraphConv`.

    No dynamic edge weights: attention layers (GAT, GATv2, Transformer) use their own attention.

    Args:
        in_channels, feature_size, num_points, edge_index: see the module docstring.
        layer: a key of :data:`GRAPH_LAYERS` (``"gcn"``, ``"gat"``, ``"gatv2"``, ``"sage"``,
            ``"transformer"``, ``"graphconv"``, or one added with :func:`register_graph_layer`).
        layer_kwargs: extra constructor arguments for every conv (e.g. ``{"heads": 4}``).
        **graph_options: of :class:`GraphHead` (``nodes_per_point``, ``hidden``, ``num_blocks``,
            ``map_hidden``, ``map_kernel_size``).
    """

    def __init__(
        self,
        in_channels: int,
        feature_size: Sequence[int],
        num_points: int,
        edge_index: Union[Tensor, LandmarkGraph, None],
        *,
        layer: str = "gcn",
        layer_kwargs: Optional[Mapping[str, Any]] = None,
        **graph_options: Any,
    ) -> None:
        if layer not in GRAPH_LAYERS:
            raise KeyError(f"unknown graph layer {layer!r}; known: {sorted(GRAPH_LAYERS)}")
        super().__init__(in_channels, feature_size, num_points, edge_index, **graph_options)
        self.layer = layer
        kwargs = dict(layer_kwargs or {})
        self._build_stack(lambda i, o: make_graph_layer(layer, i, o, **kwargs))

    def extra_repr(self) -> str:
        return f"layer={self.layer!r}, " + super().extra_repr()


# ----------------------------------------------------------------------------- FC baseline
class FCHead(nn.Module):
    """FC baseline: flatten ``(B, C*H*W)`` -> Linear(``hidden``) -> BatchNorm1d -> ReLU -> Linear(``2N``)
    -> ``(B, N, 2)``.

    The BatchNorm (``norm=True``, the default) matches the conv-BN-ReLU blocks of the graph heads and
    keeps the hidden ReLUs alive: without it, AdamW at lr 2e-3 on 300-W killed 255 of the 256 hidden
    units within two epochs and the head collapsed to the mean shape (val NME stuck at ~19%).
    ``edge_index`` is accepted for a uniform constructor and ignored.
    """

    def __init__(
        self,
        in_channels: int,
        feature_size: Sequence[int],
        num_points: int,
        edge_index: Union[Tensor, LandmarkGraph, None] = None,
        hidden: int = 256,
        norm: bool = True,
    ) -> None:
        super().__init__()
        if int(num_points) < 1 or int(hidden) < 1 or int(in_channels) < 1:
            raise ValueError(
                f"FCHead: in_channels, num_points and hidden must be positive; got {in_channels}, {num_points}, {hidden}"
            )
        self.in_channels = int(in_channels)
        self.feature_size = _check_feature_size(feature_size)
        self.num_points = int(num_points)
        self.hidden = int(hidden)
        flat = self.in_channels * self.feature_size[0] * self.feature_size[1]
        self.fc1 = nn.Linear(flat, self.hidden)
        self.norm = nn.BatchNorm1d(self.hidden) if norm else nn.Identity()
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(self.hidden, 2 * self.num_points)
        _shrink_output_layer(self.fc2)

    def forward(
        self, features: Tensor, return_intermediates: bool = False
    ) -> Union[Tensor, Tuple[Tensor, Dict[str, Tensor]]]:
        _check_features(features, self.in_channels, self.feature_size, "FCHead")
        hidden = self.act(self.norm(self.fc1(features.flatten(1))))
        coords = self.fc2(hidden).view(-1, self.num_points, 2)
        return (coords, {"hidden": hidden}) if return_intermediates else coords

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, feature_size={self.feature_size}, num_points={self.num_points}"
