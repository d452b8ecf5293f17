"""Landmark graphs: neighbourhood mining (edge_index) and batching of face graphs."""
from pyg_sdfl.graph.batching import GraphBatcher
from pyg_sdfl.graph.mining import (
    LandmarkGraph,
    dense_graph,
    graph_from_neighbours,
    landmark_correlation,
    mine_graph,
    random_graph,
)

__all__ = [
    "GraphBatcher",
    "LandmarkGraph",
    "dense_graph",
    "graph_from_neighbours",
    "landmark_correlation",
    "mine_graph",
    "random_graph",
]
