"""Neural network parts: map-to-node, dynamic edge weights, DynamicGraphConv, the graph stack, heads, FLOP counts.

The public names of each module are its ``__all__``; this package re-exports them.
"""
from pyg_sdfl.nn import dynamic_graph_conv, edge_weighting, graph_stack, heads, map_to_node
from pyg_sdfl.nn.dynamic_graph_conv import *  # noqa: F401,F403
from pyg_sdfl.nn.edge_weighting import *  # noqa: F401,F403
from pyg_sdfl.nn.flops import count_parameters, head_flops, paper_lgrn_flops
from pyg_sdfl.nn.graph_stack import *  # noqa: F401,F403
from pyg_sdfl.nn.heads import *  # noqa: F401,F403
from pyg_sdfl.nn.map_to_node import *  # noqa: F401,F403

__all__ = [
    *dynamic_graph_conv.__all__,
    *edge_weighting.__all__,
    *map_to_node.__all__,
    *graph_stack.__all__,
    *heads.__all__,
    "count_parameters",
    "head_flops",
    "paper_lgrn_flops",
]
