"""From a resolved config to objects: samples, splits, graph, datasets, model, loss, optimiser.

Every object with a ``_target_`` in the config is built with :func:`hydra.utils.instantiate`,
so a new head, backbone, loss or dataset reader is one YAML file plus one class;
:func:`pyg_sdfl.config.instantiate_node` (re-exported here) turns Hydra's wrapped errors back into the
reader's or class's own message.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from pyg_sdfl.config import instantiate_node
from pyg_sdfl.data.dataset import LandmarkDataset
from pyg_sdfl.data.sample import FaceSample
from pyg_sdfl.data.splits import train_val_split
from pyg_sdfl.data.transforms import AugmentConfig
from pyg_sdfl.geometry import crop_square
from pyg_sdfl.graph import LandmarkGraph, dense_graph, mine_graph, random_graph
from pyg_sdfl.losses import RelativeLocationLoss, SDFLLoss
from pyg_sdfl.nn.model import LandmarkModel
from pyg_sdfl.schemes import LandmarkScheme, get_scheme

log = logging.getLogger(__name__)

__all__ = [
    "DataSplits",
    "instantiate_node",
    "load_splits",
    "normalised_shapes",
    "build_graph",
    "build_datasets",
    "build_model",
    "build_loss",
    "resolve_device",
]


@dataclass
class DataSplits:
    """Samples of one dataset: ``train`` and ``val`` are disjoint parts of the training set."""

    scheme: LandmarkScheme
    train: List[FaceSample]
    val: List[FaceSample]
    test: List[FaceSample]


def _as_config(cfg: Any) -> DictConfig:
    return cfg if isinstance(cfg, DictConfig) else OmegaConf.create(cfg)


def load_splits(dataset_cfg: Mapping[str, Any], seed: Optional[int] = None, need_test: bool = True,
                need_train: bool = True) -> DataSplits:
    """Read the dataset named by ``dataset_cfg`` and carve the validation split from train.

    The split depends only on ``dataset_cfg.val_fraction`` and ``seed`` (default: the config's
    ``split_seed``), so a resumed run and an
    evaluation see exactly the faces the training run saw. ``need_train=False`` reads the test
    set only (``train`` and ``val`` stay empty): scoring a test set needs no training folder.
    """
    cfg = _as_config(dataset_cfg)
    seed = int(cfg.split_seed) if seed is None else int(seed)
    if OmegaConf.is_missing(cfg, "root"):
        raise ValueError(f"dataset {cfg.name!r} needs its folder: set dataset.root=DIR (pyg-sdfl: --root DIR)")
    scheme = get_scheme(cfg.scheme)
    train, val = [], []
    if need_train:
        train_all = list(instantiate_node(cfg.train, "dataset.train"))
        if not train_all:
            raise ValueError(f"dataset {cfg.name!r}: the training set is empty (check dataset.root)")
        _check_scheme(train_all, scheme, f"dataset {cfg.name!r} (train)")
        train_idx, val_idx = train_val_split(len(train_all), float(cfg.val_fraction), seed)
        train, val = [train_all[i] for i in train_idx], [train_all[i] for i in val_idx]
    test = list(instantiate_node(cfg.test, "dataset.test")) if need_test and cfg.get("test") is not None else []
    if test:
        _check_scheme(test, scheme, f"dataset {cfg.name!r} (test)")
    return DataSplits(scheme=scheme, train=train, val=val, test=test)


def _check_scheme(samples: Sequence[FaceSample], scheme: LandmarkScheme, where: str) -> None:
    n = samples[0].landmarks.shape[0]
    if n != scheme.num_points:
        raise ValueError(
            f"{where} has {n} landmarks per face but the config's scheme {scheme.name!r} has "
            f"{scheme.num_points}: set dataset.scheme to match the data"
        )


def normalised_shapes(samples: Sequence[FaceSample], crop_scale: float = 1.2) -> np.ndarray:
    """Landmarks in the frame of their own crop, ``(M, N, 2)`` in units of the crop side.

    Mining correlations on raw image coordinates would mostly measure where and how large the
    face is (every pair of points correlates through translation and scale); in the crop frame
    the correlations reflect the face's shape, as in the paper.
    """
    shapes = np.stack([np.asarray(s.landmarks, dtype=np.float64) for s in samples])
    out = np.empty_like(shapes)
    for i, pts in enumerate(shapes):
        cx, cy, side = crop_square(pts, crop_scale)
        out[i] = (pts - np.array([cx, cy])) / side
    return out


def build_graph(graph_cfg: Mapping[str, Any], splits: DataSplits, crop_scale: float = 1.2, seed: int = 0) -> LandmarkGraph:
    """Mine (or load, or draw at random) the landmark graph from the *training* split only."""
    cfg = _as_config(graph_cfg)
    n = splits.scheme.num_points
    if cfg.get("path"):
        graph = LandmarkGraph.load(cfg.path)
    elif cfg.mode == "dense":
        graph = dense_graph(n)
    elif cfg.mode == "random":
        graph = random_graph(n, int(cfg.k), seed=seed)
    else:
        graph = mine_graph(normalised_shapes(splits.train, crop_scale), k=int(cfg.k), mode=str(cfg.mode))
    if graph.num_nodes != n:
        raise ValueError(f"the graph has {graph.num_nodes} nodes but scheme {splits.scheme.name!r} has {n} points")
    return graph


def augment_config(augment_cfg: Optional[Mapping[str, Any]], image_size: int) -> Optional[AugmentConfig]:
    """The training augmentation; translation is given in pixels of a 256 crop and scaled to ours."""
    if augment_cfg is None:
        return None
    values = dict(_as_config(augment_cfg))
    values["translation"] = float(values.get("translation", 0.0)) * image_size / 256.0
    return AugmentConfig(**values)


def build_datasets(cfg: DictConfig, splits: DataSplits, augment_train: bool = True,
                   teacher_size: Optional[int] = None) -> Dict[str, LandmarkDataset]:
    """Torch datasets for train (augmented, unless ``augment_train=False``), val and test (crop only).

    Splits without faces get no dataset; evaluation passes ``augment_train=False`` so that the
    training faces are scored on the same crops as val and test. ``teacher_size``: the training set also
    gives each view at that side (``"teacher_image"``, :mod:`pyg_sdfl.engine.distillation`).
    """
    common = dict(
        scheme=splits.scheme,
        image_size=int(cfg.dataset.image_size),
        crop_scale=float(cfg.dataset.crop_scale),
        on_bad_image=str(cfg.dataset.on_bad_image),
        cache_images=bool(cfg.dataset.cache_images),
        annotation_offset_x=float(cfg.dataset.annotation_offset_x),
    )
    out = {}
    if splits.train:
        augment = augment_config(cfg.train.augment, common["image_size"]) if augment_train else None
        out["train"] = LandmarkDataset(splits.train, augment=augment, seed=int(cfg.seed), teacher_size=teacher_size,
                                       **common)
    if splits.val:
        out["val"] = LandmarkDataset(splits.val, augment=None, **common)
    if splits.test:
        out["test"] = LandmarkDataset(splits.test, augment=None, **common)
    return out


def build_model(cfg: Mapping[str, Any], graph: LandmarkGraph, num_points: int) -> LandmarkModel:
    """Backbone from ``cfg.backbone``, head from ``cfg.head`` (partial), wired to the graph."""
    cfg = _as_config(cfg)
    image_size = int(cfg.dataset.image_size)
    backbone = instantiate_node(cfg.backbone, "backbone")
    if image_size % backbone.reduction:
        raise ValueError(f"dataset.image_size={image_size} is not a multiple of the backbone stride {backbone.reduction}")
    side = image_size // backbone.reduction
    head = instantiate_node(cfg.head, "head")(
        in_channels=backbone.out_channels,
        feature_size=(side, side),
        num_points=num_points,
        edge_index=graph.edge_index,
    )
    return LandmarkModel(backbone, head, image_size=image_size)


def build_loss(loss_cfg: Mapping[str, Any], graph: LandmarkGraph) -> SDFLLoss:
    """Eq. 10: point loss + lambda x relative-location loss on the graph's uniform Laplacian."""
    cfg = _as_config(loss_cfg)
    lam = float(cfg.lambda_)
    relative = None
    if lam > 0:
        relative = RelativeLocationLoss(graph.edge_index, graph.num_nodes, base=instantiate_node(cfg.relative, "loss.relative"))
    return SDFLLoss(instantiate_node(cfg.point, "loss.point"), relative, lambda_=lam)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} asked for, but CUDA is not available on this machine")
    return device
