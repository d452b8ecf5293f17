"""Neighbourhood mining: which landmarks pass features to which (paper Eq. 1-2).

From ``M`` training shapes ``P`` of shape ``(M, N, 2)`` we compute a landmark-to-landmark
correlation matrix and keep, for every landmark ``i``, the ``k + 1`` most correlated landmarks
(itself included) as its incoming neighbourhood:

* ``mode="separate"`` (the paper, Eq. 1): Pearson correlation over the training set of the x
  coordinates and of the y coordinates separately,
  ``C = (|corr_x| + |corr_y|) / 2``  with ``corr_x[i, j] = corr(x_i, x_j)`` over the M faces.
* ``mode="joint"``: one correlation of the 2-D points, each axis centred on its own mean:
  ``C[i, j] = |sum_m <d_i^m, d_j^m>| / sqrt(sum_m |d_i^m|^2 * sum_m |d_j^m|^2)`` where
  ``d_i^m = p_i^m - mean_m(p_i)``.  It is the cosine of the two centred 2M-vectors.

Before correlating, each face is normalised (``normalize="centroid"``, the default): its
centroid is subtracted and it is divided by its RMS radius. Without this the face's position
and size in the image dominate and every pair of landmarks correlates at ~0.99. Our training
crops remove translation and scale the same way (a square around the landmark box), so this
is the correlation the network actually sees. ``normalize="none"`` uses the raw coordinates.

Eq. 2: ``M_ij = 1`` iff ``C_ij`` is among the ``k + 1`` largest entries of row ``i``. We keep
the self-loop ``i`` explicitly first (``C_ii = 1`` is the row maximum anyway) and rank the
others by ``C_ij`` descending; ties go to the smaller index ``j`` (a stable sort), so mining is
deterministic.

The result is a :class:`LandmarkGraph` whose ``edge_index`` follows PyG's convention
(``source_to_target`` flow): ``edge_index[0]`` is the source ``j``, ``edge_index[1]`` the target
``i`` that aggregates it; edges are grouped by target ``i = 0 .. N-1``, each group being
``[i, n_1, ..., n_k]`` (self first, then neighbours by rank).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import numpy as np
import torch

from pyg_sdfl.json_files import read_json

__all__ = [
    "uniform_laplacian",
    "LandmarkGraph",
    "landmark_correlation",
    "mine_graph",
    "random_graph",
    "dense_graph",
    "graph_from_neighbours",
]

_CORRELATION_MODES = ("separate", "joint")
_NORMALIZATIONS = ("centroid", "none")
_FORMAT_VERSION = 1


# ----------------------------------------------------------------------------- validation
def _check_landmarks(landmarks: Any) -> np.ndarray:
    """Return ``landmarks`` as float64 ``(M, N, 2)`` or raise a ``ValueError`` naming the problem."""
    arr = np.asarray(landmarks)
    if arr.ndim != 3 or arr.shape[-1] != 2:
        raise ValueError(f"landmarks must have shape (M, N, 2) (faces, points, xy); got {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"landmarks must be numeric; got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    num_faces, num_points, _ = arr.shape
    if num_faces < 2:
        raise ValueError(f"need at least M=2 faces to compute a correlation; got M={num_faces}")
    if num_points < 2:
        raise ValueError(f"need at least N=2 landmarks to build a graph; got N={num_points}")
    bad = ~np.isfinite(arr)
    if bad.any():
        faces = np.unique(np.nonzero(bad)[0])
        raise ValueError(
            f"landmarks contain NaN/inf values in {len(faces)} face(s) (first: {faces[:5].tolist()}); "
            "drop or impute them before mining a graph"
        )
    return arr


def _normalise_faces(arr: np.ndarray, normalize: str) -> np.ndarray:
    if normalize == "none":
        return arr
    if normalize != "centroid":
        raise ValueError(f"unknown normalize={normalize!r}; expected one of {_NORMALIZATIONS}")
    centred = arr - arr.mean(axis=1, keepdims=True)
    radius = np.sqrt((centred**2).sum(axis=2).mean(axis=1))  # (M,)
    degenerate = np.nonzero(radius <= 1e-12)[0]
    if degenerate.size:
        raise ValueError(
            f"{degenerate.size} face(s) have all landmarks at one point (first: {degenerate[:5].tolist()}); "
            "cannot normalise their scale"
        )
    return centred / radius[:, None, None]


def _constant_check(arr: np.ndarray, centred: np.ndarray, axis_names: str, what: str = "") -> None:
    """Raise if some landmark coordinate never varies over the faces (its correlation is undefined).

    ``arr`` is the (normalised) ``(M, N, A)`` data, ``centred`` the same minus its mean over faces.
    A coordinate counts as constant when its std is below ``1e-9`` times the data's magnitude.
    """
    std = np.sqrt((centred**2).mean(axis=0))  # (N, A)
    scale = max(float(np.abs(arr).max()), 1e-300)
    const = np.argwhere(std <= 1e-9 * scale)
    if const.size:
        desc = ", ".join(f"landmark {int(i)} ({axis_names[int(a)]})" for i, a in const[:6])
        raise ValueError(
            f"landmark coordinates are constant over all faces{what}, so their correlation is undefined: "
            + desc
            + (" ..." if len(const) > 6 else "")
        )


# ----------------------------------------------------------------------------- correlation
def landmark_correlation(
    landmarks: np.ndarray, mode: str = "separate", normalize: str = "centroid"
) -> np.ndarray:
    """Absolute landmark correlation matrix ``C`` of shape ``(N, N)``, values in ``[0, 1]``.

    Args:
        landmarks: training shapes ``(M, N, 2)``, ``M >= 2`` faces, finite values.
        mode: ``"separate"`` for ``(|corr_x| + |corr_y|) / 2`` (paper Eq. 1) or ``"joint"`` for the
            correlation of the centred 2-D points (see the module docstring).
        normalize: ``"centroid"`` (remove each face's centroid and RMS scale first) or ``"none"``.

    Raises:
        ValueError: wrong shape, ``M < 2``, NaN/inf, a landmark coordinate constant over all faces,
            unknown ``mode``/``normalize``.
    """
    if mode not in _CORRELATION_MODES:
        raise ValueError(f"unknown correlation mode {mode!r}; expected one of {_CORRELATION_MODES}")
    if normalize not in _NORMALIZATIONS:
        raise ValueError(f"unknown normalize={normalize!r}; expected one of {_NORMALIZATIONS}")
    raw = _check_landmarks(landmarks)
    _constant_check(raw, raw - raw.mean(axis=0, keepdims=True), "xy")
    arr = _normalise_faces(raw, normalize)
    centred = arr - arr.mean(axis=0, keepdims=True)  # (M, N, 2), each landmark/axis centred over faces
    _constant_check(arr, centred, "xy", what=" after removing each face's position and scale")
    if mode == "separate":
        corr = np.zeros((arr.shape[1], arr.shape[1]))
        for axis in range(2):  # two axes, not a per-face loop
            d = centred[:, :, axis]  # (M, N)
            cov = d.T @ d
            std = np.sqrt(np.diag(cov))
            corr += np.abs(cov / np.outer(std, std))
        corr /= 2.0
    else:
        d = centred.transpose(1, 0, 2).reshape(arr.shape[1], -1)  # (N, 2M)
        cov = d @ d.T
        std = np.sqrt(np.diag(cov))
        corr = np.abs(cov / np.outer(std, std))
    corr = np.clip(corr, 0.0, 1.0)
    corr = 0.5 * (corr + corr.T)  # exact symmetry despite rounding
    np.fill_diagonal(corr, 1.0)
    return corr


def _top_k_neighbours(corr: np.ndarray, k: int) -> np.ndarray:
    """``(N, k)`` indices of the k largest off-diagonal entries of each row, ties -> smaller index.

    Values are rounded to 12 decimals first so that pairs equal in exact arithmetic tie on every
    BLAS, and the stable sort then prefers the smaller index.
    """
    keyed = -np.round(corr.astype(np.float64), 12)
    np.fill_diagonal(keyed, np.inf)  # self goes last; it is added explicitly
    order = np.argsort(keyed, axis=1, kind="stable")
    return order[:, :k]


# ----------------------------------------------------------------------------- the graph
def uniform_laplacian(edge_index: torch.Tensor, num_nodes: int, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """Dense uniform graph Laplacian ``L = I - D^{-1} A`` of shape ``(N, N)``.

    Edges follow PyG's ``source_to_target`` convention: column ``k`` of ``edge_index`` is
    ``(j, i) = (source, target)`` and makes ``j`` a neighbour of ``i``. Self loops are ignored,
    duplicate edges count once. ``L[i, i] = 1`` and ``L[i, j] = -1/|N_i|`` for ``j in N_i``, where
    ``N_i`` excludes ``i``; so ``(L P)_i = p_i - mean_{j in N_i} p_j``. Computed in float64, returned
    as ``dtype`` (default: torch's default dtype).
    """
    if not isinstance(edge_index, torch.Tensor) or edge_index.dim() != 2 or edge_index.shape[0] != 2:
        shape = tuple(edge_index.shape) if isinstance(edge_index, torch.Tensor) else type(edge_index).__name__
        raise ValueError(f"edge_index must be a tensor of shape (2, E), got {shape}")
    if edge_index.dtype.is_floating_point or edge_index.dtype == torch.bool:
        raise ValueError(f"edge_index must hold integers, got {edge_index.dtype}")
    num_nodes = int(num_nodes)
    if num_nodes <= 0:
        raise ValueError(f"num_nodes must be positive, got {num_nodes}")
    edge_index = edge_index.detach().to("cpu", torch.long)
    if edge_index.numel() and (int(edge_index.min()) < 0 or int(edge_index.max()) >= num_nodes):
        raise ValueError(f"edge_index has node ids outside [0, {num_nodes})")
    src, dst = edge_index
    keep = src != dst
    adjacency = torch.zeros(num_nodes, num_nodes, dtype=torch.float64)
    adjacency[dst[keep], src[keep]] = 1.0  # row i: neighbours of i
    degree = adjacency.sum(dim=1)
    lonely = (degree == 0).nonzero().flatten().tolist()
    if lonely:
        raise ValueError(f"nodes {lonely} have no neighbours besides themselves: relative location undefined")
    laplacian = torch.eye(num_nodes, dtype=torch.float64) - adjacency / degree[:, None]
    return laplacian.to(dtype or torch.get_default_dtype())



@dataclass(frozen=True, eq=False)
class LandmarkGraph:
    """A landmark neighbourhood graph with self-loops, every node having in-degree ``k + 1``.

    Attributes:
        edge_index: ``LongTensor (2, N * (k + 1))``; row 0 = source ``j``, row 1 = target ``i``;
            grouped by target ``i`` ascending, each group ``[self, neighbour_1, ..., neighbour_k]``.
        num_nodes: ``N``.
        k: neighbours per node, self excluded.
        mode: how it was made: ``"separate"``, ``"joint"`` (mined), ``"random"``, ``"dense"``, ``"custom"``.
        correlation: the ``(N, N)`` correlation matrix it was mined from, or ``None``.
    """

    edge_index: torch.Tensor
    num_nodes: int
    k: int
    mode: str
    correlation: Optional[np.ndarray] = field(default=None, repr=False)

    def __post_init__(self) -> None:
        ei = self.edge_index
        n, k = int(self.num_nodes), int(self.k)
        if not isinstance(ei, torch.Tensor) or ei.dtype != torch.long:
            raise ValueError("edge_index must be a torch.LongTensor")
        if not 1 <= k < n:
            raise ValueError(f"k must satisfy 1 <= k < num_nodes={n}; got k={k}")
        expected = (2, n * (k + 1))
        if tuple(ei.shape) != expected:
            raise ValueError(f"edge_index must have shape {expected} for N={n}, k={k}; got {tuple(ei.shape)}")
        if ei.numel() and (int(ei.min()) < 0 or int(ei.max()) >= n):
            raise ValueError(f"edge_index has node ids outside [0, {n})")
        targets = torch.arange(n).repeat_interleave(k + 1)
        if not torch.equal(ei[1].cpu(), targets):
            raise ValueError("edge_index must be grouped by target: row 1 must be [0]*(k+1) + [1]*(k+1) + ...")
        groups = ei[0].cpu().view(n, k + 1)
        if not torch.equal(groups[:, 0], torch.arange(n)):
            raise ValueError("each target's first incoming edge must be its self-loop")
        if (groups[:, 1:] == torch.arange(n)[:, None]).any():
            raise ValueError("a node lists itself among its k neighbours (only one self-loop allowed)")
        srt = groups.sort(dim=1).values
        if (srt[:, 1:] == srt[:, :-1]).any():
            raise ValueError("edge_index contains duplicate edges")
        if self.correlation is not None:
            c = np.asarray(self.correlation)
            if c.shape != (n, n):
                raise ValueError(f"correlation must be ({n}, {n}); got {c.shape}")
        object.__setattr__(self, "edge_index", ei.cpu().contiguous())
        object.__setattr__(self, "num_nodes", n)
        object.__setattr__(self, "k", k)

    # -- queries ---------------------------------------------------------------
    @property
    def num_edges(self) -> int:
        return int(self.edge_index.shape[1])

    def neighbour_matrix(self) -> np.ndarray:
        """``(N, k)`` int array: row ``i`` lists the k neighbours of ``i`` by rank (self excluded)."""
        return self.edge_index[0].view(self.num_nodes, self.k + 1)[:, 1:].numpy().copy()

    def neighbours(self, i: int) -> List[int]:
        """The k landmarks that ``i`` aggregates from, by decreasing rank, self excluded."""
        if not 0 <= int(i) < self.num_nodes:
            raise IndexError(f"landmark {i} out of range for a graph of {self.num_nodes} nodes")
        return [int(j) for j in self.neighbour_matrix()[int(i)]]

    def adjacency(self, self_loops: bool = True) -> np.ndarray:
        """Binary ``(N, N)`` float matrix ``A[i, j] = 1`` iff ``j -> i`` is an edge (paper's ``M``)."""
        a = np.zeros((self.num_nodes, self.num_nodes))
        src, dst = self.edge_index.numpy()
        a[dst, src] = 1.0
        if not self_loops:
            np.fill_diagonal(a, 0.0)
        return a

    def laplacian(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Uniform graph Laplacian ``L = I - D^-1 A`` (A without self-loops), shape ``(N, N)``.

        Row ``i`` has 1 on the diagonal and ``-1/|N_i|`` on the neighbours, so for landmarks
        ``P (N, 2)``, ``(L @ P)[i] = p_i - mean_{j in N(i)} p_j`` (paper Eq. 6-8).
        """
        return uniform_laplacian(self.edge_index, self.num_nodes, dtype=dtype)

    # -- (de)serialisation -------------------------------------------------------
    def to_dict(self) -> Dict[str, Any]:
        """Plain dict of tensors/ints/strs, safe for ``torch.load(..., weights_only=True)``."""
        d: Dict[str, Any] = {
            "format_version": _FORMAT_VERSION,
            "edge_index": self.edge_index.clone(),
            "num_nodes": self.num_nodes,
            "k": self.k,
            "mode": self.mode,
        }
        if self.correlation is not None:
            d["correlation"] = torch.as_tensor(np.asarray(self.correlation, dtype=np.float64))
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "LandmarkGraph":
        missing = {"edge_index", "num_nodes", "k", "mode"} - set(d)
        if missing:
            raise ValueError(f"graph dict is missing keys {sorted(missing)}")
        version = int(d.get("format_version", _FORMAT_VERSION))
        if version != _FORMAT_VERSION:
            raise ValueError(f"unsupported graph format_version {version}; this code reads {_FORMAT_VERSION}")
        corr = d.get("correlation")
        if corr is not None:
            corr = np.asarray(corr.detach().cpu().numpy() if isinstance(corr, torch.Tensor) else corr, dtype=np.float64)
        return cls(
            edge_index=torch.as_tensor(d["edge_index"], dtype=torch.long),
            num_nodes=int(d["num_nodes"]),
            k=int(d["k"]),
            mode=str(d["mode"]),
            correlation=corr,
        )

    def save(self, path: Union[str, Path]) -> Path:
        """Write the graph: ``.json`` -> JSON (human-readable), anything else -> ``torch.save``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix.lower() == ".json":
            d = self.to_dict()
            d = {key: (v.tolist() if isinstance(v, torch.Tensor) else v) for key, v in d.items()}
            path.write_text(json.dumps(d))
        else:
            torch.save(self.to_dict(), path)
        return path

    @classmethod
    def load(cls, path: Union[str, Path]) -> "LandmarkGraph":
        """Read a graph written by :meth:`save` (``torch.load`` with ``weights_only=True``)."""
        path = Path(path)
        if path.suffix.lower() == ".json":
            d = read_json(path, "graph file")
        else:
            d = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(d, dict):
            raise ValueError(f"{path} does not contain a graph dict")
        return cls.from_dict(d)


# ----------------------------------------------------------------------------- constructors
def graph_from_neighbours(neighbours: np.ndarray, mode: str = "custom", correlation: Optional[np.ndarray] = None) -> LandmarkGraph:
    """Build a :class:`LandmarkGraph` from an ``(N, k)`` array of neighbour indices (self excluded)."""
    nb = np.asarray(neighbours)
    if nb.ndim != 2 or not np.issubdtype(nb.dtype, np.integer):
        raise ValueError(f"neighbours must be an integer array of shape (N, k); got {nb.shape} {nb.dtype}")
    n, k = nb.shape
    src = np.concatenate([np.arange(n)[:, None], nb], axis=1).reshape(-1)
    dst = np.repeat(np.arange(n), k + 1)
    edge_index = torch.as_tensor(np.stack([src, dst]), dtype=torch.long)
    return LandmarkGraph(edge_index=edge_index, num_nodes=n, k=k, mode=mode, correlation=correlation)


def _check_k(k: int, n: int) -> int:
    if isinstance(k, bool) or int(k) != k:
        raise ValueError(f"k must be an integer; got {k!r}")
    k = int(k)
    if k < 1:
        raise ValueError(f"k must be >= 1; got k={k}")
    if k >= n:
        raise ValueError(f"k={k} neighbours impossible with N={n} landmarks: need k <= N-1={n - 1}")
    return k


def mine_graph(
    landmarks: np.ndarray, k: int = 3, mode: str = "separate", normalize: str = "centroid"
) -> LandmarkGraph:
    """Mine the top-``k`` correlation graph from training landmarks ``(M, N, 2)`` (paper Eq. 1-2).

    Returns a :class:`LandmarkGraph` with ``N * (k + 1)`` edges (self-loops included), the
    correlation matrix attached. Deterministic: ties are broken towards the smaller index.
    """
    arr = _check_landmarks(landmarks)
    k = _check_k(k, arr.shape[1])
    corr = landmark_correlation(arr, mode=mode, normalize=normalize)
    return graph_from_neighbours(_top_k_neighbours(corr, k), mode=mode, correlation=corr)


def random_graph(num_nodes: int, k: int, seed: int = 0) -> LandmarkGraph:
    """Random graph with the same in-degree ``k + 1`` (self + k distinct random others), for ablations."""
    if int(num_nodes) < 2:
        raise ValueError(f"num_nodes must be >= 2; got {num_nodes}")
    n = int(num_nodes)
    k = _check_k(k, n)
    rng = np.random.default_rng(seed)
    # For each row, a random permutation of the other nodes: argsort of random keys, self pushed last.
    keys = rng.random((n, n))
    np.fill_diagonal(keys, np.inf)
    nb = np.argsort(keys, axis=1, kind="stable")[:, :k]
    return graph_from_neighbours(nb, mode="random")


def dense_graph(num_nodes: int) -> LandmarkGraph:
    """Fully connected graph: every node aggregates all ``N - 1`` others plus itself (``k = N - 1``)."""
    n = int(num_nodes)
    if n < 2:
        raise ValueError(f"num_nodes must be >= 2; got {num_nodes}")
    full = np.broadcast_to(np.arange(n, dtype=np.int64), (n, n))
    others = full[~np.eye(n, dtype=bool)].reshape(n, n - 1)
    return graph_from_neighbours(others, mode="dense")
