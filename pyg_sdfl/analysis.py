"""Looking inside the landmark graph and a trained model: the computations behind ``notebooks/``.

Four groups of functions, each used by one notebook (the figures are in :mod:`pyg_sdfl.plotting`):

* **Where things are** - :func:`repo_root`, :func:`shared_data_dir`, :func:`find_checkpoint`,
  :func:`find_results_dir`.
* **The mined graph** (``landmark_graph.ipynb``) - :func:`load_reference_shapes` (real 300-W /
  WFLW annotations, or synthetic faces when they are absent), :func:`graph_to_networkx`,
  :func:`graph_statistics`, :func:`connected_components`, :func:`part_connectivity`,
  :func:`compare_graphs`, :func:`hop_distances`.
* **Message passing in a trained model** (``message_passing.ipynb``) - :func:`train_demo_checkpoint`,
  :func:`load_model`, :func:`analysis_faces`, :func:`node_similarities` /
  :func:`cosine_similarity_matrix` (paper Fig. 9), :func:`similarity_by_hop`, :func:`occlude_images`,
  :func:`alpha_shift_summary` (dynamic edge weights under occlusion),
  :class:`GraphRelationalPart` and :func:`explain_landmark` (PyG's GNNExplainer).
* **Experiment results** (``layer_comparison.ipynb``) - :func:`load_results`,
  :func:`aggregate_results` (mean +- std over seeds), :func:`complement_metric`, :func:`format_table`.

Conventions: a graph edge ``j -> i`` (``edge_index[0] = j`` the source/neighbour,
``edge_index[1] = i`` the landmark that aggregates it), as everywhere in :mod:`pyg_sdfl.graph`.
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor, nn

# tqdm.auto (used by the engine's progress bars and imported by torch_geometric) warns on import in
# a Jupyter kernel without ipywidgets, then falls back to plain bars. The notebooks show no progress
# bars: import it here first, with that warning silenced, so it stays out of their outputs.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="IProgress not found")
    import tqdm.auto  # noqa: F401,E402

from pyg_sdfl.graph.mining import LandmarkGraph  # noqa: E402
from pyg_sdfl.schemes import LandmarkScheme, get_scheme  # noqa: E402

if TYPE_CHECKING:  # pragma: no cover
    import networkx

    from pyg_sdfl.data.dataset import LandmarkDataset
    from pyg_sdfl.engine.training import TrainResult

__all__ = [
    # locations
    "repo_root",
    "shared_data_dir",
    "find_checkpoint",
    "find_results_dir",
    # graph
    "ShapeSet",
    "load_reference_shapes",
    "graph_to_networkx",
    "graph_statistics",
    "connected_components",
    "part_connectivity",
    "compare_graphs",
    "hop_distances",
    # model
    "DEMO_OVERRIDES",
    "train_demo_checkpoint",
    "LoadedModel",
    "load_model",
    "analysis_faces",
    "cosine_similarity_matrix",
    "node_similarities",
    "similarity_by_hop",
    "STAGES",
    "part_box",
    "side_box",
    "points_in_box",
    "occlude_images",
    "alpha_shift_summary",
    "self_loop_values",
    "GraphRelationalPart",
    "explain_landmark",
    "edge_ablation",
    # results
    "RunRecord",
    "head_label",
    "flatten_config",
    "load_results",
    "varying_keys",
    "aggregate_results",
    "complement_metric",
    "format_table",
]

PathLike = Union[str, Path]
Box = Tuple[int, int, int, int]

#: environment variables that point the notebooks elsewhere
ENV_DATA = "PYG_SDFL_DATA"
ENV_CHECKPOINT = "PYG_SDFL_CHECKPOINT"
ENV_RESULTS = "PYG_SDFL_RESULTS"


# ============================================================================ locations
def repo_root(start: Optional[PathLike] = None) -> Path:
    """The project folder: the first of ``start`` (default: the working directory) and its parents
    holding a ``pyproject.toml`` next to a ``pyg_sdfl`` folder; else the folder above the installed
    package (an editable install)."""
    here = Path(start if start is not None else Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").is_file() and (folder / "pyg_sdfl").is_dir():
            return folder
    return Path(__file__).resolve().parents[1]


def shared_data_dir(start: Optional[PathLike] = None) -> Optional[Path]:
    """``$PYG_SDFL_DATA`` if set, else ``<repo>/../shared/data``; ``None`` when that folder is absent."""
    env = os.environ.get(ENV_DATA)
    candidate = Path(env) if env else repo_root(start).parent / "shared" / "data"
    return candidate.resolve() if candidate.is_dir() else None


def find_checkpoint(explicit: Optional[PathLike] = None, start: Optional[PathLike] = None) -> Optional[Path]:
    """A trained model to analyse: ``explicit``, else ``$PYG_SDFL_CHECKPOINT``, else the model shipped
    with the package (``pyg_sdfl/weights``, e.g. ``sdfl_300w.pt``), else the first ``*.ckpt`` (sorted)
    in that folder; ``None`` when there is none, or when ``$PYG_SDFL_CHECKPOINT`` is ``none`` (the
    notebooks then train their demo model). Training checkpoints and shipped weights both load
    with :func:`load_model`.

    Raises ``FileNotFoundError`` when an explicit or environment path does not exist (a typo should
    not silently fall back to the demo model).
    """
    if explicit is None and os.environ.get(ENV_CHECKPOINT, "").strip().lower() == "none":
        return None
    for given, what in ((explicit, "checkpoint"), (os.environ.get(ENV_CHECKPOINT), f"${ENV_CHECKPOINT}")):
        if given:
            path = Path(given)
            if not path.is_file():
                raise FileNotFoundError(f"{what} {path} does not exist")
            return path.resolve()
    try:
        from pyg_sdfl.weights import available_pretrained, pretrained_path
    except ImportError:  # a package without shipped weights
        pass
    else:
        for name in available_pretrained():
            return pretrained_path(name)
    for weights in (Path(__file__).resolve().parent / "weights", repo_root(start) / "pyg_sdfl" / "weights"):
        found = sorted(weights.glob("*.ckpt")) if weights.is_dir() else []
        if found:
            return found[0]
    return None


def find_results_dir(start: Optional[PathLike] = None) -> Path:
    """``$PYG_SDFL_RESULTS`` if set, else ``<repo>/results`` (which may not exist)."""
    env = os.environ.get(ENV_RESULTS)
    return Path(env).resolve() if env else repo_root(start) / "results"


# ============================================================================ reference shapes
@dataclass(frozen=True, eq=False)
class ShapeSet:
    """Landmark shapes of one dataset in the frame of their own crop.

    Attributes:
        name: ``"300w"``, ``"wflw"`` or ``"synthetic"``.
        scheme: the landmark scheme.
        shapes: ``(M, N, 2)`` float64, each face in its own square crop (``crop_scale`` x the landmark
            box), centred on the box centre, in units of the crop side (so values lie in about
            ``[-0.5, 0.5]``; y points down). This is the frame the engine mines graphs in.
        source: a sentence saying where the shapes come from.
        real: ``True`` for human annotations, ``False`` for the synthetic fallback.
    """

    name: str
    scheme: LandmarkScheme
    shapes: np.ndarray
    source: str
    real: bool

    @property
    def mean_shape(self) -> np.ndarray:
        """``(N, 2)`` mean of :attr:`shapes`."""
        return self.shapes.mean(axis=0)


def load_reference_shapes(
    dataset: str,
    data_dir: Optional[PathLike] = None,
    crop_scale: float = 1.2,
    synthetic_faces: int = 1000,
    fallback: bool = True,
) -> Optional[ShapeSet]:
    """Real annotations to mine graphs from, or synthetic faces when they are absent.

    * ``"300w"``: every ``.pts`` under ``data_dir/300w/train`` (68 points).
    * ``"wflw"``: the six WFLW test attribute lists in ``data_dir/wflw-annotations``, each distinct
      face once (98 points). No images are needed.

    When the folder is missing (or ``data_dir`` is ``None``) and ``fallback`` is true, ``"300w"`` falls
    back to ``synthetic_faces`` procedurally generated 68-point faces (``real=False``) and ``"wflw"``
    returns ``None`` (there is no synthetic 98-point face). Only landmarks are read, never images.
    """
    from pyg_sdfl.data.readers import load_dataset, read_wflw_attribute_lists
    from pyg_sdfl.engine.builders import normalised_shapes

    data = Path(data_dir) if data_dir is not None else None
    if dataset == "300w":
        root = data / "300w" if data is not None else None
        if root is not None and (root / "train").is_dir():
            samples = load_dataset("300w", root, "train")
            parts = sorted({s.subsets[0] for s in samples if s.subsets})
            source = f"300-W training annotations ({len(samples)} faces: {', '.join(parts)})"
            return ShapeSet("300w", get_scheme("300w"), normalised_shapes(samples, crop_scale), source, True)
    elif dataset == "wflw":
        root = data / "wflw-annotations" if data is not None else None
        if root is not None and root.is_dir():
            samples = read_wflw_attribute_lists(root, image_root=root)
            source = f"WFLW test annotations ({len(samples)} distinct faces of the six attribute lists)"
            return ShapeSet("wflw", get_scheme("wflw"), normalised_shapes(samples, crop_scale), source, True)
    else:
        raise ValueError(f"unknown reference dataset {dataset!r}; expected '300w' or 'wflw'")
    if not fallback or dataset == "wflw":
        return None
    from pyg_sdfl.data.synthetic import SyntheticFaces

    if int(synthetic_faces) < 2:
        raise ValueError(f"synthetic_faces must be >= 2 to compute correlations; got {synthetic_faces}")
    faces = SyntheticFaces(int(synthetic_faces), seed=0)
    source = (f"SYNTHETIC faces ({len(faces)} procedurally generated 68-point shapes): the real 300-W "
              "annotations were not found")
    return ShapeSet("synthetic", get_scheme("300w"), normalised_shapes(list(faces), crop_scale), source, False)


# ============================================================================ graph statistics
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


# ============================================================================ a trained model
#: a demo SDFL model on synthetic faces: about a minute on 2 idle CPU cores, validation NME about 9%
DEMO_OVERRIDES: Tuple[str, ...] = (
    "dataset.image_size=64",
    "dataset.train.num_faces=960",
    "++dataset.train.image_size=128",
    "dataset.test.num_faces=64",
    "++dataset.test.image_size=128",
    "dataset.val_fraction=0.1",
    "train.epochs=6",
    "train.batch_size=32",
    "train.num_workers=1",
    "train.optimizer.lr=3e-3",
    "train.scheduler.milestones=[5]",
    "evaluate.grid_faces=0",
    "seed=0",
)


def train_demo_checkpoint(run_dir: PathLike, overrides: Sequence[str] = (), quiet: bool = True) -> "TrainResult":
    """Train a small SDFL model on synthetic faces with the engine and return its ``TrainResult``
    (``run_dir/best.ckpt`` is the best-on-validation checkpoint).

    The configuration is the package default (``pyg_sdfl/configs``) with :data:`DEMO_OVERRIDES`
    and then ``overrides`` applied (Hydra override syntax). ``quiet`` swallows the progress bars.
    """
    from pyg_sdfl.config import compose
    from pyg_sdfl.engine.training import train

    cfg = compose(list(DEMO_OVERRIDES) + list(overrides))
    sink = io.StringIO()
    with contextlib.ExitStack() as stack:
        if quiet:
            stack.enter_context(contextlib.redirect_stderr(sink))
            stack.enter_context(warnings.catch_warnings())
            warnings.simplefilter("ignore")
        return train(cfg, Path(run_dir))


@dataclass(eq=False)
class LoadedModel:
    """A trained model ready for analysis (eval mode, on ``device``)."""

    model: nn.Module
    graph: LandmarkGraph
    scheme: LandmarkScheme
    config: Any  # omegaconf DictConfig of the run
    path: Path

    @property
    def image_size(self) -> int:
        return int(self.config.dataset.image_size)

    @property
    def edge_index(self) -> Tensor:
        return self.graph.edge_index


def load_model(path: PathLike, device: Union[str, torch.device] = "cpu") -> LoadedModel:
    """Rebuild the model from a checkpoint's own config and load its weights strictly (fp32).

    Works for training checkpoints (``best.ckpt``) and for shipped weights, whose config keeps only
    what rebuilds the model (``dataset.{name, scheme, image_size, crop_scale}``, backbone, head)
    and whose tensors may be fp16.
    """
    from omegaconf import OmegaConf

    from pyg_sdfl.engine.builders import build_model
    from pyg_sdfl.engine.checkpoint import load_checkpoint, load_state_dict_strict

    ckpt = load_checkpoint(path, map_location=device)
    cfg = OmegaConf.create(ckpt["config"])
    graph = LandmarkGraph.from_dict(ckpt["graph"])
    scheme = get_scheme(ckpt["scheme"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_model(cfg, graph, scheme.num_points)
    load_state_dict_strict(model, ckpt["model"])
    model.to(device).eval()
    return LoadedModel(model=model, graph=graph, scheme=scheme, config=cfg, path=Path(path))


def analysis_faces(loaded: LoadedModel, num_faces: int = 32,
                   data_dir: Optional[PathLike] = None) -> Tuple["LandmarkDataset", str]:
    """Test faces matching the model: ``(LandmarkDataset, description)``, cropped as in training.

    A synthetic-data model gets its own test faces (the config's test seed and render size). A
    model trained on a real dataset gets the first ``num_faces`` test faces of that dataset, read
    from its configured ``dataset.root`` or else from ``data_dir/<dataset name>``; when neither
    exists, a 68-point (300-W scheme) model falls back to synthetic faces (said in the description)
    and other schemes raise ``ValueError``.
    """
    from pyg_sdfl.data.dataset import LandmarkDataset
    from pyg_sdfl.data.readers import load_dataset
    from pyg_sdfl.data.synthetic import SyntheticFaces

    cfg = loaded.config.dataset
    n = int(num_faces)
    if n < 1:
        raise ValueError(f"num_faces must be >= 1; got {num_faces}")
    samples, description = None, ""
    if cfg.name != "synthetic":
        roots = [cfg.get("root"), Path(data_dir) / cfg.name if data_dir is not None else None]
        root = next((Path(r) for r in roots if r not in (None, "", "???") and Path(r).is_dir()), None)
        if root is not None:
            samples = load_dataset(cfg.name, root, "test")[:n]
            description = f"the first {len(samples)} {cfg.name} test faces"
    if samples is None:
        if cfg.name != "synthetic" and loaded.scheme.name != "300w":
            raise ValueError(f"no {cfg.name} test data found (dataset.root={cfg.get('root')!r}, data_dir={data_dir}) "
                             f"and no synthetic faces exist for scheme {loaded.scheme.name!r}")
        if cfg.name == "synthetic":
            from hydra.utils import instantiate

            faces = instantiate(cfg.test, num_faces=n)  # the run's own test distribution
            description = f"{n} synthetic test faces (seed {faces.seed})"
        else:
            faces = SyntheticFaces(n, seed=1)
            description = (f"{n} synthetic test faces: the model was trained on {cfg.name}, "
                           "whose test images were not found")
        samples = list(faces)
    dataset = LandmarkDataset(samples, loaded.scheme, image_size=loaded.image_size,
                              crop_scale=float(cfg.crop_scale))
    return dataset, description


# ---------------------------------------------------------------------------- node features
#: stage label -> key of the head's intermediates; "after block b" is 1-based like the paper
STAGES: Dict[str, str] = {
    "map-to-node": "nodes_map_to_node",
    "after block 2": "nodes_block_1",
    "after block 4": "nodes_block_3",
}


def _as_tensor(x: Union[Tensor, np.ndarray]) -> Tensor:
    return x.detach().cpu().double() if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x), dtype=torch.float64)


def cosine_similarity_matrix(nodes: Union[Tensor, np.ndarray]) -> np.ndarray:
    """``S[i, j] = <h_i, h_j> / (|h_i| |h_j|)`` averaged over faces: nodes ``(B, N, F)`` or ``(N, F)``
    -> ``(N, N)`` float64. A node whose feature vector is all zeros has similarity 0 to everything
    (itself included) instead of NaN."""
    x = _as_tensor(nodes)
    if x.dim() == 2:
        x = x.unsqueeze(0)
    if x.dim() != 3 or x.shape[1] < 1 or x.shape[2] < 1:
        raise ValueError(f"node features must be (B, N, F) or (N, F); got {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError("node features contain NaN or inf")
    unit = torch.nn.functional.normalize(x, dim=-1, eps=1e-12)
    return (unit @ unit.transpose(1, 2)).mean(dim=0).numpy()


@torch.no_grad()
def node_similarities(model: nn.Module, images: Tensor, stages: Mapping[str, str] = STAGES) -> Dict[str, np.ndarray]:
    """Cosine similarity matrices ``(N, N)`` of the node features at each stage (paper Fig. 9),
    averaged over the batch ``images (B, 3, S, S)``. Stages missing from the head (fewer blocks) raise."""
    model.eval()
    _, extras = model(images, return_intermediates=True)
    missing = [key for key in stages.values() if key not in extras]
    if missing:
        raise ValueError(f"the model's head gives no {missing}; available: {sorted(k for k in extras if k.startswith('nodes'))}")
    return {label: cosine_similarity_matrix(extras[key]) for label, key in stages.items()}


def similarity_by_hop(similarity: np.ndarray, hops: np.ndarray, max_hop: Optional[int] = None) -> Dict[int, float]:
    """Mean ``similarity[i, j]`` over landmark pairs ``i != j`` at each graph distance ``hops[i, j]``
    (from :func:`hop_distances`); pairs farther than ``max_hop`` (and unconnected ones) are left out."""
    sim, hop = np.asarray(similarity, dtype=np.float64), np.asarray(hops, dtype=np.float64)
    if sim.shape != hop.shape or sim.ndim != 2 or sim.shape[0] != sim.shape[1]:
        raise ValueError(f"similarity {sim.shape} and hops {hop.shape} must be the same (N, N) shape")
    off = ~np.eye(sim.shape[0], dtype=bool) & np.isfinite(hop)
    values = sorted({int(h) for h in hop[off]})
    if max_hop is not None:
        values = [h for h in values if h <= max_hop]
    return {h: float(sim[off & (hop == h)].mean()) for h in values}


# ---------------------------------------------------------------------------- occlusion
def part_box(landmarks: np.ndarray, indices: Iterable[int], image_size: int, margin: float = 0.15) -> Box:
    """Axis-aligned box ``(x0, y0, x1, y1)`` (integer pixels, exclusive ends, inside the image) around
    the landmarks ``indices`` of one face ``(N, 2)``, grown by ``margin`` x the box side on each side."""
    pts = np.asarray(landmarks, dtype=np.float64)
    idx = list(indices)
    if pts.ndim != 2 or pts.shape[1] != 2 or not idx:
        raise ValueError(f"need landmarks (N, 2) and at least one index; got {pts.shape} and {idx}")
    sel = pts[idx]
    lo, hi = sel.min(axis=0), sel.max(axis=0)
    pad = margin * float((hi - lo).max())
    x0, y0 = np.floor(lo - pad).astype(int)
    x1, y1 = np.ceil(hi + pad).astype(int) + 1
    s = int(image_size)
    return (max(0, int(x0)), max(0, int(y0)), min(s, int(x1)), min(s, int(y1)))


def side_box(landmarks: np.ndarray, image_size: int, side: str = "left", centre: Optional[Iterable[int]] = None) -> Box:
    """Box covering the image-``side`` (``"left"``/``"right"``) of the crop, full height, up to the
    face's vertical centre line ``cx`` = the mean x of the landmarks ``centre`` (default: all of them):
    pixel columns with centre ``<= cx`` for the left side, ``> cx`` for the right side."""
    pts = np.asarray(landmarks, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"landmarks must be (N, 2); got {pts.shape}")
    idx = list(centre) if centre is not None else list(range(len(pts)))
    cx = float(pts[idx, 0].mean())
    s = int(image_size)
    split = min(max(math.floor(cx) + 1, 0), s)
    if side == "left":
        return (0, 0, split, s)
    if side == "right":
        return (split, 0, s, s)
    raise ValueError(f"side must be 'left' or 'right'; got {side!r}")


def points_in_box(landmarks: np.ndarray, box: Box) -> np.ndarray:
    """``(N,)`` bool: landmark (pixel centre coordinates) inside the painted pixels ``x0 <= x < x1``
    (rounded to the nearest pixel), same for y."""
    pts = np.rint(np.asarray(landmarks, dtype=np.float64))
    x0, y0, x1, y1 = box
    return (pts[:, 0] >= x0) & (pts[:, 0] < x1) & (pts[:, 1] >= y0) & (pts[:, 1] < y1)


def occlude_images(images: Tensor, boxes: Sequence[Box], colour: Tuple[int, int, int] = (128, 128, 128)) -> Tensor:
    """Copies of normalised crops ``(B, 3, S, S)`` with box ``b`` painted in ``colour`` on image ``b``
    (through uint8 RGB, like the training augmentation's occluders)."""
    from pyg_sdfl.data.transforms import denormalise_image, normalise_image, paint_occlusion

    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (B, 3, S, S); got {tuple(images.shape)}")
    if len(boxes) != images.shape[0]:
        raise ValueError(f"need one box per image: {len(boxes)} boxes for {images.shape[0]} images")
    out = []
    for image, box in zip(images, boxes):
        crop = denormalise_image(image)
        paint_occlusion(crop, box, colour)
        out.append(torch.from_numpy(normalise_image(crop)))
    return torch.stack(out).to(images.device, images.dtype)


def alpha_shift_summary(alpha_clean: Union[Tensor, np.ndarray], alpha_occluded: Union[Tensor, np.ndarray],
                        edge_index: Tensor, occluded: Union[Tensor, np.ndarray]) -> Dict[str, Dict[str, float]]:
    """How the dynamic edge weights move when some landmarks are hidden.

    ``alpha_*``: ``(B, E)`` (or ``(E,)``) weights of the same faces clean and occluded;
    ``occluded``: ``(B, N)`` (or ``(N,)``) bool, landmark inside the occluder. Every edge ``j -> i``
    of every face falls in one category: ``"self (occluded i)"``, ``"self (visible i)"``,
    ``"occluded j -> visible i"``, ``"visible j -> visible i"``, ``"occluded j -> occluded i"``,
    ``"visible j -> occluded i"``. Returns per category ``{"delta": mean(alpha_occ - alpha_clean),
    "clean": mean alpha_clean, "relative": mean delta / mean clean, "edges": count}`` (categories
    with no edge are left out).
    """
    a0, a1 = _as_tensor(alpha_clean).numpy(), _as_tensor(alpha_occluded).numpy()
    occ = np.asarray(occluded.cpu() if isinstance(occluded, Tensor) else occluded).astype(bool)
    if a0.ndim == 1:
        a0, a1, occ = a0[None], a1[None], occ[None]
    src, dst = edge_index.cpu().numpy()
    if a0.shape != a1.shape or a0.ndim != 2 or a0.shape[1] != len(src):
        raise ValueError(f"alpha_clean {a0.shape} and alpha_occluded {a1.shape} must both be (B, E={len(src)})")
    if occ.ndim != 2 or occ.shape[0] != a0.shape[0] or occ.shape[1] <= int(max(src.max(), dst.max())):
        raise ValueError(f"occluded must be (B={a0.shape[0]}, N) bool; got {occ.shape}")
    occ_src, occ_dst = occ[:, src], occ[:, dst]
    self_loop = np.broadcast_to(src == dst, a0.shape)
    name = lambda o: "occluded" if o else "visible"  # noqa: E731
    masks = {f"self ({name(o)} i)": self_loop & (occ_dst == o) for o in (True, False)}
    for oj, oi in ((True, False), (False, False), (True, True), (False, True)):
        masks[f"{name(oj)} j -> {name(oi)} i"] = ~self_loop & (occ_src == oj) & (occ_dst == oi)
    out = {}
    for label, m in masks.items():
        if m.any():
            delta, clean = float((a1 - a0)[m].mean()), float(a0[m].mean())
            out[label] = {"delta": delta, "clean": clean, "relative": delta / clean if clean else math.nan,
                          "edges": int(m.sum())}
    return out


def self_loop_values(values: Union[Tensor, np.ndarray], edge_index: Tensor, num_nodes: Optional[int] = None) -> np.ndarray:
    """Per-edge ``values (E,)`` -> ``(N,)``: the value of each node's self-loop ``i -> i`` (NaN for a
    node without one), e.g. how much a landmark keeps of its own feature, ``alpha_ii``."""
    vals = _as_tensor(values).numpy().reshape(-1)
    src, dst = edge_index.cpu().numpy()
    if vals.shape[0] != src.shape[0]:
        raise ValueError(f"values has {vals.shape[0]} entries for {src.shape[0]} edges")
    n = int(num_nodes) if num_nodes is not None else int(max(src.max(), dst.max())) + 1
    out = np.full(n, np.nan)
    loops = src == dst
    out[dst[loops]] = vals[loops]
    return out


# ---------------------------------------------------------------------------- explainers
class GraphRelationalPart(nn.Module):
    """The graph layers of a trained graph head as a plain PyG model, for ``torch_geometric.explain``.

    ``forward(x, edge_index, edge_logits=None)``: node features after map-to-node ``x (|V|, I)``,
    ``edge_index (2, |E|)`` and, for an :class:`~pyg_sdfl.nn.heads.SDFLHead`, the per-edge logits
    ``(|E|,)`` -> landmark coordinates ``(|V|, 2)`` in crop pixels (``(o + 1) S / 2 - 0.5``, as
    :class:`~pyg_sdfl.nn.model.LandmarkModel`). For one face it equals the full model's output
    given that face's map-to-node features and edge logits.
    """

    def __init__(self, head: nn.Module, image_size: int) -> None:
        super().__init__()
        if not all(hasattr(head, name) for name in ("input_block", "blocks", "output_conv")):
            raise ValueError(f"{type(head).__name__} is not a graph head (no input_block/blocks/output_conv)")
        self.head = head
        self.image_size = int(image_size)
        self.needs_logits = hasattr(head, "edge_weighting")

    def forward(self, x: Tensor, edge_index: Tensor, edge_logits: Optional[Tensor] = None) -> Tensor:
        from pyg_sdfl.nn.model import normalised_to_pixels

        if self.needs_logits and edge_logits is None:
            raise ValueError("this head weights edges dynamically: pass edge_logits (|E|,)")
        args = (edge_index, edge_logits) if self.needs_logits else (edge_index,)
        h = self.head.input_block(x, *args)
        for block in self.head.blocks:
            h = block(h, *args)
        return normalised_to_pixels(self.head.output_conv(h, *args), self.image_size)


def explain_landmark(model: nn.Module, image: Tensor, landmark: int, epochs: int = 200, lr: float = 0.01,
                     seed: int = 0, **coeffs: float) -> Tensor:
    """GNNExplainer (regression mode) for one landmark of one face: which edges drive its prediction.

    Runs ``model`` on ``image (3, S, S)`` to get the face's map-to-node features (and edge logits),
    then fits a soft mask over the graph's edges (``edge_index`` order, self-loops included) that
    keeps the prediction of ``landmark`` (squared error in crop pixels) while using as few edges as
    possible (``torch_geometric.explain.algorithm.GNNExplainer`` with ``coeffs``). Returns the mask
    ``(E,)`` in ``[0, 1]``; edges that cannot reach the landmark within the head's layers are 0.
    """
    from torch_geometric.explain import Explainer, GNNExplainer

    if image.dim() != 3:
        raise ValueError(f"image must be one (3, S, S) crop; got {tuple(image.shape)}")
    head = model.head
    n = int(head.num_points)
    if not 0 <= int(landmark) < n:
        raise ValueError(f"landmark {landmark} out of range for {n} points")
    model.eval()
    with torch.no_grad():
        _, extras = model(image.unsqueeze(0), return_intermediates=True)
    part = GraphRelationalPart(head, model.image_size).eval()
    kwargs = {"edge_logits": extras["edge_logits"][0]} if part.needs_logits else {}
    explainer = Explainer(
        model=part, algorithm=GNNExplainer(epochs=int(epochs), lr=float(lr), **coeffs), explanation_type="model",
        node_mask_type=None, edge_mask_type="object",
        model_config=dict(mode="regression", task_level="node", return_type="raw"),
    )
    state = torch.random.get_rng_state()
    torch.manual_seed(int(seed))
    try:
        explanation = explainer(extras["nodes_map_to_node"][0], head.edge_index, index=int(landmark), **kwargs)
    finally:
        torch.random.set_rng_state(state)
    return explanation.edge_mask.detach()


@torch.no_grad()
def edge_ablation(model: nn.Module, image: Tensor) -> Tensor:
    """Leave-one-edge-out sensitivity of one face: ``(E, N)`` displacement in crop pixels of every
    landmark's prediction when the message along edge ``e`` is removed in every graph layer.

    The message is multiplied by 0 through PyG's explainer masks
    (``torch_geometric.explain.algorithm.utils.set_masks``), exactly as GNNExplainer masks it; the
    other weights are not renormalised. Row ``e`` is ``|f(mask_e) - f(1)|`` per landmark, with ``f``
    the :class:`GraphRelationalPart` of ``model`` on the face's map-to-node features.
    """
    from torch_geometric.explain.algorithm.utils import clear_masks, set_masks

    if image.dim() != 3:
        raise ValueError(f"image must be one (3, S, S) crop; got {tuple(image.shape)}")
    model.eval()
    _, extras = model(image.unsqueeze(0), return_intermediates=True)
    part = GraphRelationalPart(model.head, model.image_size).eval()
    x, edge_index = extras["nodes_map_to_node"][0], model.head.edge_index
    kwargs = {"edge_logits": extras["edge_logits"][0]} if part.needs_logits else {}
    base = part(x, edge_index, **kwargs)
    num_edges = edge_index.shape[1]
    out = torch.empty(num_edges, base.shape[0])
    for e in range(num_edges):
        mask = torch.ones(num_edges, device=x.device)
        mask[e] = 0.0
        set_masks(part, mask, edge_index, apply_sigmoid=False)
        try:
            out[e] = (part(x, edge_index, **kwargs) - base).norm(dim=-1).cpu()
        finally:
            clear_masks(part)
    return out


# ============================================================================ results of experiments
@dataclass(frozen=True, eq=False)
class RunRecord:
    """One finished run: where its ``results.json`` is, its flattened config and its metrics."""

    path: Path
    config: Dict[str, Any]  # flattened: "graph.k" -> 3, "head" -> "sdfl", ...
    metrics: Dict[str, Dict[str, Dict[str, float]]]  # split -> subset -> {nme, fr, auc, count}
    protocol: str = ""  # e.g. "NME / inter_ocular, crop 1.2x landmark box, 256px"
    choices: Dict[str, Any] = field(default_factory=dict)  # Hydra group picks, e.g. {"head": "gat"}
    meta: Dict[str, Any] = field(default_factory=dict)  # commit, machine, device, wall_time_s, ...

    def get(self, key: str, default: Any = None) -> Any:
        return self.config.get(key, default)


def head_label(head_cfg: Mapping[str, Any]) -> str:
    """Short name of a head config: its ``layer`` (``gcn``, ``gat``, ...) for the generic PyG head,
    otherwise the class name without ``Head``, lower-cased (``SDFLHead`` -> ``sdfl``, ``FCHead`` -> ``fc``)."""
    if not isinstance(head_cfg, Mapping):
        raise ValueError(f"head config must be a mapping; got {type(head_cfg).__name__}")
    if head_cfg.get("layer"):
        return str(head_cfg["layer"])
    target = str(head_cfg.get("_target_", "unknown"))
    name = target.rsplit(".", 1)[-1]
    return (name[:-4] if name.endswith("Head") and len(name) > 4 else name).lower()


def flatten_config(config: Mapping[str, Any], prefix: str = "") -> Dict[str, Any]:
    """Nested dict -> ``{"a.b.c": value}``; lists become tuples (hashable). Adds ``"head"`` (see
    :func:`head_label`) and ``"backbone"`` (``backbone.name``) at the top level."""
    out: Dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten_config(value, prefix=f"{name}."))
        else:
            out[name] = tuple(value) if isinstance(value, list) else value
    if not prefix:
        if isinstance(config.get("head"), Mapping):
            out["head"] = head_label(config["head"])
        if isinstance(config.get("backbone"), Mapping) and "name" in config["backbone"]:
            out["backbone"] = config["backbone"]["name"]
    return out


def load_results(root: PathLike) -> List[RunRecord]:
    """Every run result below ``root``: JSON files (searched recursively, sorted) holding a
    ``"metrics"`` (split -> subset -> ``{nme, fr, auc, count}``) and a ``"config"`` mapping, as written by
    ``experiments/run.py`` (``results.json``; its ``normalisation`` and ``crop`` become the record's
    ``protocol``; its ``choices`` and ``meta`` are kept as they are). Other JSON files are ignored; a
    missing folder gives ``[]``. Unreadable JSON raises ``ValueError`` naming the file."""
    root = Path(root)
    if not root.is_dir():
        return []
    records = []
    for path in sorted(root.rglob("*.json")):
        try:
            payload = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"cannot read results file {path}: {err}") from err
        if not isinstance(payload, dict) or not isinstance(payload.get("metrics"), dict) \
                or not isinstance(payload.get("config"), dict):
            continue
        protocol = f"NME / {payload.get('normalisation', 'inter_ocular')}"
        if payload.get("crop"):
            protocol += f", crop {payload['crop']}"
        records.append(RunRecord(path=path, config=flatten_config(payload["config"]), metrics=payload["metrics"],
                                 protocol=protocol, choices=dict(payload.get("choices") or {}),
                                 meta=dict(payload.get("meta") or {})))
    return records


#: config keys that differ between runs without defining a condition
_IGNORED_KEYS = ("seed", "dataset.root", "train.resume", "graph.path", "device")


def varying_keys(records: Sequence[RunRecord], ignore: Sequence[str] = _IGNORED_KEYS) -> List[str]:
    """Flattened config keys whose value differs between ``records`` (the swept settings), sorted;
    ``ignore`` (seed, paths, device) and raw ``head.*`` / ``backbone.*`` keys (summarised by
    ``head`` / ``backbone``) are left out."""
    keys = sorted(set().union(*(r.config for r in records))) if records else []
    out = []
    for key in keys:
        if key in ignore or (key.startswith(("head.", "backbone.")) and key not in ("head", "backbone")):
            continue
        values = {json.dumps(r.config.get(key), sort_keys=True, default=str) for r in records}
        if len(values) > 1:
            out.append(key)
    return out


def complement_metric(split_metrics: Mapping[str, Mapping[str, float]], subset: str, metric: str = "nme") -> float:
    """Mean per-face ``metric`` over the faces *not* in ``subset`` (e.g. NME of the unoccluded faces),
    recovered exactly from the ``"all"`` and ``subset`` means and counts:
    ``(m_all n_all - m_sub n_sub) / (n_all - n_sub)``. Only valid for means (``nme``), not FR or AUC."""
    if metric != "nme":
        raise ValueError(f"only the mean NME has an exact complement; got metric={metric!r}")
    if "all" not in split_metrics or subset not in split_metrics:
        raise ValueError(f"need the 'all' and {subset!r} subsets; have {sorted(split_metrics)}")
    a, s = split_metrics["all"], split_metrics[subset]
    rest = int(a["count"]) - int(s["count"])
    if rest <= 0:
        raise ValueError(f"every face is in subset {subset!r}: no complement")
    return (float(a[metric]) * int(a["count"]) - float(s[metric]) * int(s["count"])) / rest


def aggregate_results(records: Sequence[RunRecord], by: Sequence[str], split: str = "test", subset: str = "all",
                      metrics: Sequence[str] = ("nme", "fr", "auc"), seed_key: str = "seed",
                      complement: bool = False) -> List[Dict[str, Any]]:
    """Mean and standard deviation over seeds of each condition.

    Runs are grouped by the values of the flattened config keys ``by`` (e.g. ``("head",)`` or
    ``("head", "graph.k")``); runs lacking ``split``/``subset`` are skipped. With ``complement=True``
    the ``nme`` of the faces *outside* ``subset`` is used instead (:func:`complement_metric`).

    Returns one row per condition, sorted by the ``by`` values: the ``by`` keys, ``"runs"`` (count),
    ``"seeds"`` (sorted list), ``"faces"`` (the subset's face count of the first run), and for each
    metric ``m``: ``m`` (mean over runs), ``m_std`` (sample standard deviation, ``ddof=1``; NaN for a
    single run) and ``m_values`` (the per-run values, in seed order).
    """
    if not by:
        raise ValueError("aggregate_results needs at least one key to group by")
    if complement and tuple(metrics) != ("nme",):
        raise ValueError("complement=True is only defined for metrics=('nme',)")
    groups: Dict[Tuple[str, ...], List[Tuple[Any, RunRecord]]] = {}
    for r in records:
        table = r.metrics.get(split, {})
        if subset not in table:
            continue
        key = tuple(json.dumps(r.config.get(k), sort_keys=True, default=str) for k in by)
        groups.setdefault(key, []).append((r.config.get(seed_key), r))
    rows = []
    for key, runs in groups.items():
        runs.sort(key=lambda t: (t[0] is None, t[0] if t[0] is not None else 0))
        first = runs[0][1]
        row: Dict[str, Any] = {k: first.config.get(k) for k in by}
        row["runs"] = len(runs)
        row["seeds"] = [s for s, _ in runs]
        row["faces"] = int(first.metrics[split][subset].get("count", 0))
        if complement:
            row["faces"] = int(first.metrics[split]["all"]["count"]) - row["faces"]
        for m in metrics:
            if complement:
                values = np.array([complement_metric(r.metrics[split], subset, m) for _, r in runs], dtype=float)
            else:
                values = np.array([float(r.metrics[split][subset][m]) for _, r in runs], dtype=float)
            row[m] = float(values.mean())
            row[f"{m}_std"] = float(values.std(ddof=1)) if len(values) > 1 else math.nan
            row[f"{m}_values"] = values.tolist()
        rows.append(row)
    rows.sort(key=lambda row: tuple(_sort_key(row[k]) for k in by))
    return rows


def _sort_key(value: Any) -> Tuple[int, Any]:
    if value is None:
        return (2, "")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, value)
    return (1, str(value))


def format_table(rows: Sequence[Mapping[str, Any]], by: Sequence[str], metrics: Sequence[str] = ("nme", "fr", "auc"),
                 percent: Sequence[str] = ("nme", "fr")) -> str:
    """Markdown table of :func:`aggregate_results` rows: ``mean ± std`` per metric (``percent`` ones
    times 100, with a ``(%)`` header), then runs and faces."""
    header = [*by] + [f"{m.upper()} (%)" if m in percent else m.upper() for m in metrics] + ["runs", "faces"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(by) + "---:|" * (len(metrics) + 2)]
    for row in rows:
        cells = [str(row[k]) for k in by]
        for m in metrics:
            scale, digits = (100.0, 2) if m in percent else (1.0, 4)
            mean, std = row[m] * scale, row[f"{m}_std"] * scale
            cells.append(f"{mean:.{digits}f} ± {std:.{digits}f}" if not math.isnan(std) else f"{mean:.{digits}f}")
        cells += [str(row["runs"]), str(row["faces"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
