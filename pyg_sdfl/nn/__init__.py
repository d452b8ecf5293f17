"""Neural network parts: map-to-node, dynamic edge weights, DynamicGraphConv, heads, FLOP counts."""
from pyg_sdfl.nn.dynamic_graph_conv import DynamicGraphConv, edge_softmax
from pyg_sdfl.nn.edge_weighting import EdgeWeighting
from pyg_sdfl.nn.flops import count_parameters, head_flops, paper_lgrn_flops
from pyg_sdfl.nn.heads import (
    GRAPH_LAYERS,
    HEADS,
    FCHead,
    PyGLayerHead,
    SDFLHead,
    make_graph_layer,
    register_graph_layer,
)
from pyg_sdfl.nn.map_to_node import MapToNode

__all__ = [
    "DynamicGraphConv",
    "edge_softmax",
    "EdgeWeighting",
    "MapToNode",
    "SDFLHead",
    "PyGLayerHead",
    "FCHead",
    "GRAPH_LAYERS",
    "HEADS",
    "make_graph_layer",
    "register_graph_layer",
    "count_parameters",
    "head_flops",
    "paper_lgrn_flops",
]
