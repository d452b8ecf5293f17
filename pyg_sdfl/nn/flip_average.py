"""Test-time flip averaging: predict a crop and its mirror image, un-mirror, average.

For a crop ``x`` of side ``S`` and its horizontal mirror ``x~`` (pixel column ``j`` <-> ``S - 1 - j``),

    q      = model(x)                                   (B, N, 2) crop pixels
    q~     = model(x~)                                  (B, N, 2) in the mirror's pixels
    u[i]   = (S - 1 - q~[perm[i], 0], q~[perm[i], 1])   back to x's pixels and landmark indices
    output = (q + u + s) / 2,   s = 2 b A[:, 0]                  (B, 2), per face

``perm`` is the scheme's ``flip_permutation`` (landmark ``i`` of a mirrored face is landmark
``perm[i]`` of the original, e.g. left and right eye corners swap), the same one the training
augmentation uses, and pixel centres follow :mod:`pyg_sdfl.nn.model` (0-based, so the mirror line
is ``(S - 1) / 2``). Both views go through the model as one batch of ``2B``. A model trained with
50% flip augmentation sees mirrored faces as ordinary faces, so the two predictions are two
nearly independent estimates of the same points; averaging them lowers the variance part of the
error at twice the inference cost. It also cancels any horizontal offset the model has learnt
(the mirrored view's offset comes back negated), so it hurts a model that was fine-tuned without
flips to learn the annotations' own horizontal offset (the 300-W model shipped before 2026-12-04).

The shift ``s`` puts the annotations' offset back: labels that sit ``b`` image pixels right of the
mirror-symmetric content (``dataset.annotation_offset_x``, measured by
:mod:`pyg_sdfl.studies.mirror_offset`; 0.89 px on 300-W) carry ``A b e_x`` on a crop with image ->
crop matrix ``[A | t]``; whatever offset ``c A e_x`` a model learnt, the un-mirrored view carries
``-c A e_x``, so with ``s = 2 b A[:, 0]`` (:func:`flip_average_shift`) the average is the true point
plus ``b A e_x``: the labels' convention, imposed. Training applies the same convention to its
mirrored crops (:func:`pyg_sdfl.data.transforms.mirrored_label_shift`).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from pyg_sdfl.data.transforms import checked_annotation_offset
from pyg_sdfl.schemes import check_flip_permutation

__all__ = ["FlipAverage", "unflip_points", "flip_average_shift"]


def unflip_points(points: Tensor, perm: Tensor, image_size: int) -> Tensor:
    """Points predicted on the mirrored crop ``(B, N, 2)`` -> the original crop's pixels and indices:
    ``u[:, i] = (S - 1 - p[:, perm[i], 0], p[:, perm[i], 1])``."""
    out = points[:, perm].clone()
    out[..., 0] = (image_size - 1) - out[..., 0]
    return out


def flip_average_shift(matrices: Tensor, annotation_offset_x: float) -> Tensor:
    """``s = 2 b A[:, 0]`` of each crop: ``matrices`` ``(B, 2, 3)`` image -> crop (unmirrored),
    ``b = annotation_offset_x`` in image pixels; returns ``(B, 2)`` crop pixels (zeros for ``b = 0``)."""
    if matrices.dim() != 3 or tuple(matrices.shape[1:]) != (2, 3):
        raise ValueError(f"matrices must be (B, 2, 3), got shape {tuple(matrices.shape)}")
    if bool((torch.linalg.det(matrices[:, :, :2].double()) < 0).any()):
        raise ValueError("flip averaging takes unmirrored crops; a crop matrix mirrors (det < 0)")
    return 2.0 * float(annotation_offset_x) * matrices[:, :, 0]


class FlipAverage(nn.Module):
    """Wrap a landmark model ``(B, 3, S, S) -> (B, N, 2)`` so that it averages each crop's prediction
    with the un-mirrored prediction of its mirror image (module docstring for the formula).

    Args:
        model: the landmark model (crop pixels out).
        flip_permutation: the scheme's ``flip_permutation``, ``N`` indices forming an involution.
        annotation_offset_x: ``b``, how far (image pixels) the labels sit right of the content
            (``dataset.annotation_offset_x``); when non-zero, :meth:`forward` needs each crop's
            image -> crop matrix to put it back (``s = 2 b A[:, 0]``, :func:`flip_average_shift`).
    """

    def __init__(self, model: nn.Module, flip_permutation: Sequence[int], annotation_offset_x: float = 0.0) -> None:
        super().__init__()
        perm = torch.from_numpy(check_flip_permutation(flip_permutation, len(flip_permutation)))
        self.model = model
        self.annotation_offset_x = checked_annotation_offset(annotation_offset_x)
        self.register_buffer("perm", perm, persistent=False)

    def forward(self, images: Tensor, matrices: Optional[Tensor] = None) -> Tensor:
        """``images`` ``(B, 3, S, S)`` -> ``(B, N, 2)``; ``matrices`` ``(B, 2, 3)``: each crop's image ->
        crop matrix (unmirrored), needed when ``annotation_offset_x`` is not 0 (ignored when it is)."""
        if images.dim() != 4:
            raise ValueError(f"images must be (B, 3, S, S), got shape {tuple(images.shape)}")
        size = images.shape[-1]
        if images.shape[-2] != size:
            raise ValueError(f"flip averaging needs square crops, got {tuple(images.shape[-2:])}")
        batch = images.shape[0]
        shift = None
        if self.annotation_offset_x != 0.0:
            if matrices is None:
                raise ValueError(f"annotation_offset_x={self.annotation_offset_x}: flip averaging needs each crop's "
                                 "image -> crop matrix (B, 2, 3) to put the labels' offset back")
            if matrices.shape[0] != batch:
                raise ValueError(f"matrices must be ({batch}, 2, 3), got shape {tuple(matrices.shape)}")
            shift = flip_average_shift(matrices.detach().to("cpu", torch.float64), self.annotation_offset_x)
        both = self.model(torch.cat([images, images.flip(-1)], dim=0))
        if both.shape[1] != self.perm.numel():
            raise ValueError(f"the model predicts {both.shape[1]} points; flip_permutation has {self.perm.numel()}")
        direct, back = both[:batch], unflip_points(both[batch:], self.perm, size)
        if shift is not None:
            back = back + shift.to(device=back.device, dtype=back.dtype)[:, None, :]
        return 0.5 * (direct + back)
