r"""Distillation: a trained teacher's predictions on each training view become a second target.

With ``train.distill.teacher`` set (a model file, or a shipped name such as ``"300w"``), every training
view is also cut at the teacher's crop side ``T`` (``LandmarkDataset(teacher_size=T)``: the same region,
turn, mirror and occluder), the teacher predicts on it without gradients, and the student's loss is

.. math::
    \mathcal{L} = (1 - w)\,\mathcal{L}_{SDFL}(\hat P, P) + w\,\mathcal{L}_{SDFL}(\hat P, P^{t}),
    \qquad P^{t} = \tfrac{S}{T}\,(P^{t}_{T} + \tfrac12) - \tfrac12,

with :math:`P` the labels, :math:`P^t_T` the teacher's landmarks in its ``T x T`` crop mapped to the student's
``S x S`` crop (both crops cover the same square) and ``w = train.distill.weight``. Mirrored views need no
special care: the teacher learnt the same mirrored-label convention as the labels it is mixed with.

Validation and model selection use the labels only. The teacher must predict the run's landmark scheme on
crops of the same ``dataset.crop_scale`` and ``dataset.annotation_offset_x``; it runs in eval mode under the
run's precision.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Union

import torch
from torch import Tensor

from pyg_sdfl.engine.checkpoint import CheckpointError, LoadedModel, load_model
from pyg_sdfl.nn.heads import use_graph_backend
from pyg_sdfl.weights import PRETRAINED, pretrained_path

log = logging.getLogger(__name__)

__all__ = ["Teacher", "teacher_file", "load_teacher", "to_student_pixels", "distillation_loss", "checked_weight"]


def checked_weight(weight: float) -> float:
    """``train.distill.weight`` as a float in ``[0, 1]``; a ``ValueError`` saying what the ends mean otherwise."""
    w = float(weight)
    if not 0.0 <= w <= 1.0:
        raise ValueError(f"train.distill.weight={weight}: give a weight in [0, 1] (0: the labels alone, "
                         f"1: the teacher alone)")
    return w


def teacher_file(spec: str) -> Path:
    """``train.distill.teacher``: a shipped model's name (``"300w"``, ``"300w-fast"``) or a model file."""
    path = pretrained_path(spec) if spec in PRETRAINED else Path(spec)
    if not path.is_file():
        raise CheckpointError(f"train.distill.teacher={spec}: no such model file (give a training checkpoint, an "
                              f"exported file, or one of the shipped names {sorted(PRETRAINED)})")
    return path


def to_student_pixels(points: Tensor, teacher_size: int, student_size: int) -> Tensor:
    """Crop pixels of a ``T x T`` crop -> those of an ``S x S`` crop of the same square:
    ``p_S = (S / T) (p_T + 0.5) - 0.5``; ``points (..., 2)``."""
    f = float(student_size) / float(teacher_size)
    return (points + 0.5) * f - 0.5


def distillation_loss(criterion: Callable[[Tensor, Tensor], Tensor], pred: Tensor, labels: Tensor,
                      teacher_points: Tensor, weight: float) -> Tensor:
    """``(1 - w) criterion(pred, labels) + w criterion(pred, teacher_points)``; all ``(B, N, 2)`` student crop pixels."""
    w = float(weight)
    return (1.0 - w) * criterion(pred, labels) + w * criterion(pred, teacher_points)


class Teacher:
    """A loaded teacher: ``targets(images (B, 3, T, T)) -> (B, N, 2)`` in the student's crop pixels.

    Args:
        loaded: the teacher model (:func:`~pyg_sdfl.engine.checkpoint.load_model`), moved to the device.
        weight: ``w`` of the loss above, in ``[0, 1]``.
        student_size: ``S``, the student's crop side.
        channels_last: keep the teacher's weights channels-last (as the run's images, ``train.channels_last``).

    The teacher runs its SDFL heads on the fused graph path (the same function as PyG's, without scatter).
    """

    def __init__(self, loaded: LoadedModel, weight: float, student_size: int, channels_last: bool = False) -> None:
        self.weight = checked_weight(weight)
        self.loaded = loaded
        self.model = loaded.model.eval()
        use_graph_backend(self.model, "fused")
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)
        self.image_size = int(loaded.image_size)
        self.student_size = int(student_size)

    @torch.no_grad()
    def targets(self, images: Tensor) -> Tensor:
        """Teacher landmarks on its views ``(B, 3, T, T)``, as ``(B, N, 2)`` float32 student crop pixels."""
        return to_student_pixels(self.model(images).float(), self.image_size, self.student_size)


def load_teacher(spec: Union[str, Path], weight: float, scheme_name: str, crop_scale: float, student_size: int,
                 device: Union[str, torch.device], channels_last: bool = False,
                 annotation_offset_x: float = 0.0) -> Teacher:
    """The teacher of ``train.distill``, checked against the run: the same landmark scheme, crop scale and
    labels' offset (``dataset.annotation_offset_x``: a teacher that learnt another mirrored-label convention
    would pull the student sideways on mirrored views)."""
    loaded = load_model(teacher_file(str(spec)), device=device)
    if loaded.scheme.name != scheme_name:
        raise CheckpointError(f"train.distill.teacher={spec} predicts scheme {loaded.scheme.name!r}, the run trains "
                              f"{scheme_name!r}: a teacher must predict the same landmarks")
    teacher_scale = float(loaded.config.dataset.crop_scale)
    if abs(teacher_scale - float(crop_scale)) > 1e-9:
        raise CheckpointError(f"train.distill.teacher={spec} was trained on crops of {teacher_scale}x the landmark "
                              f"box, the run uses dataset.crop_scale={crop_scale}: give them the same crop scale")
    if abs(loaded.annotation_offset_x - float(annotation_offset_x)) > 1e-9:
        raise CheckpointError(f"train.distill.teacher={spec} learnt labels {loaded.annotation_offset_x} px right of the "
                              f"content (its dataset.annotation_offset_x), the run uses {annotation_offset_x}: its "
                              f"landmarks on mirrored views would carry another offset than the labels")
    teacher = Teacher(loaded, weight, student_size, channels_last)
    log.info("distillation: teacher %s (%s, %d px), loss = %.2f x labels + %.2f x teacher", loaded.path,
             loaded.config.backbone.name, teacher.image_size, 1 - teacher.weight, teacher.weight)
    if teacher.weight == 0.0:
        log.warning("train.distill.weight=0: the teacher runs on every view but takes no part in the loss")
    return teacher
