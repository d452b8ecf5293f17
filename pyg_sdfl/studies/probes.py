"""Probes of a trained model (``notebooks/message_passing.ipynb``): a demo model and test faces to
probe, node-feature similarity by stage and by graph distance (paper Fig. 9), parts hidden by a
painted box (landmarks hidden by it: :func:`pyg_sdfl.geometry.points_in_pixel_box`), and how the dynamic edge weights ``alpha`` move under that occlusion.

Models come from :func:`pyg_sdfl.engine.checkpoint.load_model` (a
:class:`~pyg_sdfl.engine.checkpoint.LoadedModel`). Conventions: a graph edge ``j -> i``
(``edge_index[0] = j`` the source/neighbour, ``edge_index[1] = i`` the landmark that aggregates it).
"""
from __future__ import annotations

import contextlib
import io
import math
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Dict, Iterable, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor, nn

from pyg_sdfl.geometry import landmark_box

if TYPE_CHECKING:  # pragma: no cover
    from pyg_sdfl.data.dataset import LandmarkDataset
    from pyg_sdfl.engine.checkpoint import LoadedModel
    from pyg_sdfl.engine.training import TrainResult

__all__ = [
    "DEMO_OVERRIDES",
    "train_demo_checkpoint",
    "analysis_faces",
    "STAGES",
    "cosine_similarity_matrix",
    "node_similarities",
    "similarity_by_hop",
    "part_box",
    "side_box",
    "occlude_images",
    "alpha_shift_summary",
    "self_loop_values",
]

PathLike = Union[str, Path]
Box = Tuple[int, int, int, int]


# ---------------------------------------------------------------------------- a demo model
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


# ---------------------------------------------------------------------------- faces to probe
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
    (from :func:`pyg_sdfl.studies.graph_stats.hop_distances`); pairs farther than ``max_hop`` (and unconnected ones) are left out."""
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
    x_lo, y_lo, x_hi, y_hi = landmark_box(pts[idx])
    lo, hi = np.array([x_lo, y_lo]), np.array([x_hi, y_hi])
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

