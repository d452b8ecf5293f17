"""Statistics of a mined landmark graph through networkx: degrees, components, hop distances, which
facial parts listen to which, and the difference of two graphs (``notebooks/landmark_graph.ipynb``).

Conventions: a graph edge ``j -> i`` (``edge_index[0] = j`` the source/neighbour,
``edge_index[1] = i`` the landmark that aggregates it), as everywhere in :mod:`pyg_sdfl.graph`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

import numpy as np

from pyg_sdfl.graph.mining import LandmarkGraph
from pyg_sdfl.schemes import LandmarkScheme

if TYPE_CHECKING:  # pragma: no cover
    import networkx

__all__ = ["graph_to_networkx", "hop_distances", "graph_statistics", "connected_components", "part_connectivity",
           "compare_graphs"]


def _directed_edges(graph: LandmarkGraph) -> np.ndarray:
    """``(E', 2)`` array of ``(source j, target i)`` pairs without self-loops."""
    src, dst = graph.edge_index.numpy()
    keep = src != dst
    return np.stack([src[keep], dst[keep]], axis=1)


def graph_to_networkx(graph: LandmarkGraph, self_loops: bool = False) -> "networkx.DiGraph":
    """The graph as a ``networkx.DiGraph`` (edge ``j -> i`` as in ``edge_index``), through
    :func:`torch_geometric.utils.to_networkx`; nodes ``0 .. N-1``, self-loops dropped unless asked for."""
    from torch_geometric.data import Data
    from torch_geometric.utils import to_networkx

    data = Data(edge_index=graph.edge_index, num_nodes=graph.num_nodes)
    return to_networkx(data, remove_self_loops=not self_loops)


def hop_distances(graph: LandmarkGraph) -> np.ndarray:
    """``(N, N)`` shortest-path lengths in the *undirected* graph (edges in either direction,
    self-loops ignored): ``0`` on the diagonal, ``inf`` between unconnected landmarks."""
    import networkx as nx

    und = graph_to_networkx(graph).to_undirected()
    out = np.full((graph.num_nodes, graph.num_nodes), np.inf)
    for i, lengths in nx.all_pairs_shortest_path_length(und):
        for j, d in lengths.items():
            out[i, j] = d
    return out


def graph_statistics(graph: LandmarkGraph, scheme: Optional[LandmarkScheme] = None) -> Dict[str, float]:
    """Summary numbers of a landmark graph (self-loops excluded everywhere).

    Returns a dict with: ``num_nodes``, ``k``, ``directed_edges`` (``N k``), ``undirected_edges``
    (distinct landmark pairs), ``reciprocity`` (fraction of directed edges ``j -> i`` whose reverse
    ``i -> j`` is also an edge; 1 for a symmetric graph), ``in_degree`` (``k`` for every node),
    ``out_degree_min/mean/max`` (how many landmarks use a given one as a neighbour),
    ``unused_nodes`` (out-degree 0: nobody listens to them), ``weak_components`` and
    ``strong_components`` (counts), ``largest_component`` (nodes in the largest weak component),
    ``diameter`` and ``mean_hops`` (undirected, within the largest weak component), and, with a
    ``scheme`` that has parts, ``cross_part_fraction`` (directed edges between different facial parts).
    """
    import networkx as nx

    g = graph_to_networkx(graph)
    und = g.to_undirected()
    edges = _directed_edges(graph)
    pairs = {(int(a), int(b)) for a, b in edges}
    reciprocal = sum((b, a) in pairs for a, b in pairs)
    out_deg = np.array([g.out_degree(n) for n in range(graph.num_nodes)])
    weak = list(nx.weakly_connected_components(g))
    largest = und.subgraph(max(weak, key=len))
    stats: Dict[str, float] = {
        "num_nodes": graph.num_nodes,
        "k": graph.k,
        "directed_edges": len(pairs),
        "undirected_edges": und.number_of_edges(),
        "reciprocity": reciprocal / max(len(pairs), 1),
        "in_degree": float(np.mean([g.in_degree(n) for n in range(graph.num_nodes)])),
        "out_degree_min": int(out_deg.min()),
        "out_degree_mean": float(out_deg.mean()),
        "out_degree_max": int(out_deg.max()),
        "unused_nodes": int((out_deg == 0).sum()),
        "weak_components": len(weak),
        "strong_components": nx.number_strongly_connected_components(g),
        "largest_component": len(largest),
        "diameter": nx.diameter(largest) if len(largest) > 1 else 0,
        "mean_hops": nx.average_shortest_path_length(largest) if len(largest) > 1 else 0.0,
    }
    if scheme is not None and scheme.parts:
        _check_scheme(graph, scheme)
        part = _part_ids(scheme)
        stats["cross_part_fraction"] = float(np.mean(part[edges[:, 0]] != part[edges[:, 1]])) if len(edges) else 0.0
    return stats


def _check_scheme(graph: LandmarkGraph, scheme: LandmarkScheme) -> None:
    if graph.num_nodes != scheme.num_points:
        raise ValueError(f"the graph has {graph.num_nodes} nodes but scheme {scheme.name!r} has {scheme.num_points} points")
    if not scheme.parts:
        raise ValueError(f"scheme {scheme.name!r} defines no facial parts")


def _part_ids(scheme: LandmarkScheme) -> np.ndarray:
    ids = np.empty(scheme.num_points, dtype=np.int64)
    for p, members in enumerate(scheme.parts.values()):
        ids[list(members)] = p
    return ids


def connected_components(graph: LandmarkGraph, scheme: Optional[LandmarkScheme] = None,
                         strong: bool = False) -> List[Dict[str, Any]]:
    """The weakly (or, with ``strong=True``, strongly) connected components, largest first.

    Each entry: ``{"nodes": sorted landmark list, "size": int, "parts": {part: count}}`` (``parts``
    only with a scheme). A weak component ignores edge direction; in a strong one every landmark
    reaches every other along edges ``j -> i``.
    """
    import networkx as nx

    g = graph_to_networkx(graph)
    comps = nx.strongly_connected_components(g) if strong else nx.weakly_connected_components(g)
    out = []
    for comp in sorted(comps, key=lambda c: (-len(c), min(c))):
        entry: Dict[str, Any] = {"nodes": sorted(int(n) for n in comp), "size": len(comp)}
        if scheme is not None and scheme.parts:
            entry["parts"] = {name: sum(int(i) in comp for i in members)
                              for name, members in scheme.parts.items() if any(int(i) in comp for i in members)}
        out.append(entry)
    return out


def part_connectivity(graph: LandmarkGraph, scheme: LandmarkScheme) -> Tuple[List[str], np.ndarray]:
    """Which facial parts listen to which: ``(names, counts)`` with ``counts[a, b]`` the number of
    edges ``j -> i`` whose target ``i`` (the landmark) is in part ``a`` and whose source ``j`` (its
    neighbour) is in part ``b``; self-loops excluded. Rows sum to ``k`` times the part's size."""
    _check_scheme(graph, scheme)
    names = list(scheme.parts)
    part = _part_ids(scheme)
    edges = _directed_edges(graph)
    counts = np.zeros((len(names), len(names)), dtype=np.int64)
    np.add.at(counts, (part[edges[:, 1]], part[edges[:, 0]]), 1)
    return names, counts


def compare_graphs(a: LandmarkGraph, b: LandmarkGraph) -> Dict[str, Any]:
    """Directed edges (self-loops excluded) shared and not shared by two graphs on the same nodes.

    Returns ``{"common", "only_a", "only_b"}`` as sorted lists of ``(j, i)`` pairs and ``"jaccard"``
    ``= |A & B| / |A | B|``.
    """
    if a.num_nodes != b.num_nodes:
        raise ValueError(f"graphs have {a.num_nodes} and {b.num_nodes} nodes: cannot compare them")
    ea = {(int(j), int(i)) for j, i in _directed_edges(a)}
    eb = {(int(j), int(i)) for j, i in _directed_edges(b)}
    union = ea | eb
    return {
        "common": sorted(ea & eb),
        "only_a": sorted(ea - eb),
        "only_b": sorted(eb - ea),
        "jaccard": len(ea & eb) / len(union) if union else 1.0,
    }
