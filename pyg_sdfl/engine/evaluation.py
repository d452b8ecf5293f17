"""Predict a dataset and score it: crop-pixel predictions -> original-image coordinates -> metrics."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from pyg_sdfl.data.dataset import LandmarkDataset
from pyg_sdfl.engine.distributed import SINGLE_PROCESS, DistributedContext, gather_objects
from pyg_sdfl.engine.reporting import cpu_description
from pyg_sdfl.geometry import crop_to_image
from pyg_sdfl.metrics import nme as per_face_nme
from pyg_sdfl.metrics import summarize
from pyg_sdfl.nn.flip_average import FlipAverage
from pyg_sdfl.schemes import LandmarkScheme

__all__ = ["Predictions", "predict", "evaluate", "precision_autocast", "resolve_precision", "cpu_bf16_flags"]

PRECISIONS = ("fp32", "bf16", "auto")
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")  # CPU features that run bf16 matrix products natively (in CPU_FLAGS_OF_INTEREST)


@dataclass
class Predictions:
    """Predictions and ground truth of one dataset, both ``(M, N, 2)`` in original-image pixels."""

    pred: np.ndarray
    target: np.ndarray
    pred_crop: np.ndarray
    indices: np.ndarray
    subsets: List[tuple]
    names: List[str]


@torch.no_grad()
def predict(
    model: nn.Module,
    dataset: LandmarkDataset,
    batch_size: int = 32,
    device: torch.device | str = "cpu",
    num_workers: int = 0,
    precision: str = "fp32",
    flip_permutation: Optional[Sequence[int]] = None,
    annotation_offset_x: float = 0.0,
    context: DistributedContext = SINGLE_PROCESS,
) -> Predictions:
    """Run ``model`` over ``dataset`` (no augmentation) and collect original-image predictions.

    With ``flip_permutation`` (the scheme's), each crop's prediction is averaged with that of its
    mirror image (:class:`~pyg_sdfl.nn.flip_average.FlipAverage`, twice the cost), keeping the
    annotations' horizontal offset ``annotation_offset_x`` (image pixels, ``dataset.annotation_offset_x``).
    In a multi-process run (``context``), rank ``r`` of ``W`` predicts faces ``r, r + W, ...`` and every
    rank returns the predictions of all faces, gathered and put back in dataset order.
    """
    device = torch.device(device)
    precision = resolve_precision(precision, device)  # once: "auto" reads the CPU's flags
    was_training = model.training
    model.eval()
    net = FlipAverage(model, flip_permutation, annotation_offset_x).to(device) if flip_permutation is not None else model
    shard = Subset(dataset, range(context.rank, len(dataset), context.world_size)) if context.enabled else dataset
    loader = DataLoader(shard, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    preds, mats, idx = [], [], []
    for batch in loader:
        images = batch["image"].to(device, non_blocking=True)
        with precision_autocast(device, precision):
            out = net(images, batch["matrix"]) if flip_permutation is not None else net(images)
        preds.append(out.float().cpu().numpy())
        mats.append(batch["matrix"].numpy().astype(np.float64))
        idx.append(batch["index"].numpy())
    model.train(was_training)
    parts = gather_objects(context, (preds, mats, idx))
    pred_crop = np.concatenate([p for part in parts for p in part[0]]).astype(np.float64)
    matrices = np.concatenate([m for part in parts for m in part[1]])
    indices = np.concatenate([i for part in parts for i in part[2]])
    if context.enabled:  # back to dataset order: the same faces in the same order as one process scores them
        order = np.argsort(indices, kind="stable")
        pred_crop, matrices, indices = pred_crop[order], matrices[order], indices[order]
    samples = [dataset.samples[i] for i in indices]
    target = np.stack([np.asarray(s.landmarks, dtype=np.float64) for s in samples])
    return Predictions(
        pred=crop_to_image(pred_crop, matrices),
        target=target,
        pred_crop=pred_crop,
        indices=indices,
        subsets=[tuple(s.subsets) for s in samples],
        names=[s.name for s in samples],
    )


def evaluate(
    model: nn.Module,
    dataset: LandmarkDataset,
    scheme: LandmarkScheme,
    batch_size: int = 32,
    device: torch.device | str = "cpu",
    threshold: float = 0.1,
    normalisation: str = "inter_ocular",
    precision: str = "fp32",
    flip_test: bool = False,
    annotation_offset_x: float = 0.0,
    context: DistributedContext = SINGLE_PROCESS,
) -> Dict[str, Any]:
    """NME, FR@threshold and AUC@threshold overall and per subset tag.

    ``flip_test`` averages each face's prediction with its mirror image's (scheme's flip
    permutation, the annotations' horizontal offset ``annotation_offset_x`` kept: :func:`predict`).
    In a multi-process run (``context``) each rank predicts a shard and the metrics are computed on
    all faces, gathered (:func:`predict`), on every rank.
    Returns ``{"summary": {...}, "nme": (M,) per-face errors, "predictions": Predictions}``.
    """
    preds = predict(model, dataset, batch_size=batch_size, device=device, precision=precision,
                    flip_permutation=scheme.flip_permutation if flip_test else None,
                    annotation_offset_x=annotation_offset_x, context=context)
    errors = per_face_nme(preds.pred, preds.target, scheme, mode=normalisation)
    summary = summarize(errors, preds.subsets, threshold=threshold)
    return {"summary": summary, "nme": errors, "predictions": preds}


def cpu_bf16_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> List[str]:
    """The native-bf16 features (:data:`BF16_CPU_FLAGS`) this CPU lists in ``cpuinfo``'s flags
    (read by :func:`~pyg_sdfl.engine.reporting.cpu_description`); ``[]`` where the file does not exist
    (not Linux) or lists none."""
    listed = cpu_description(cpuinfo)["cpu_flags"]
    return [flag for flag in BF16_CPU_FLAGS if flag in listed]


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """``train.precision`` -> ``"fp32"`` or ``"bf16"``. ``"auto"`` is bf16 where the hardware runs it
    natively (a CUDA device that supports bf16; a CPU with avx512_bf16 or AMX, on which bf16
    autocast trains about 2x faster, see docs/training_on_cpu.md) and fp32 elsewhere (emulated bf16
    is slower than fp32)."""
    if precision not in PRECISIONS:
        raise ValueError(f"train.precision must be one of {list(PRECISIONS)}, got {precision!r}")
    if precision != "auto":
        return precision
    device = torch.device(device)
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if device.type == "cpu" and cpu_bf16_flags() else "fp32"


def precision_autocast(device: torch.device, precision: str):
    """The autocast context of a run's ``train.precision``: ``"bf16"`` (bfloat16 autocast on the
    device) or ``"fp32"`` (autocast explicitly off); anything else is a ``ValueError``. Training,
    evaluation and the occlusion study all go through it, so they compute alike. ``"auto"`` is
    resolved first (:func:`resolve_precision`)."""
    precision = resolve_precision(precision, device)
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    if precision != "fp32":
        raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
    return torch.autocast(device_type=device.type, enabled=False)
