"""Fine-tuning at another crop size: carry a head's map-reading weights from one feature-map size to another.

Every head reads the backbone's stride-32 map through one layer whose input is a flattened map: the
graph heads' first graph layer sees ``n * H * W`` features per node (:class:`~pyg_sdfl.nn.map_to_node.MapToNode`,
channel-major, ``index = c * H * W + y * W + x``), the FC head's first linear ``C * H * W``. A model
trained on 160 px crops (``5 x 5`` map) therefore cannot be loaded into one built for 256 px crops
(``8 x 8``): exactly those weights differ in shape, everything else (the backbone, the convolutions, the
graph layers after the first) does not depend on the crop size.

:func:`resample_map_weight` maps such a weight ``W (R, c * h * w)`` to ``W' (R, c * H * W)`` as the
adjoint of area pooling. With ``P (h*w, H*W)`` the matrix of
``torch.nn.functional.adaptive_avg_pool2d`` from ``(H, W)`` to ``(h, w)`` (one row per old cell: the
area-weighted mean of the new cells it covers),

.. math::
    W'_{r, c} = W_{r, c}\\,P \\qquad\\Longrightarrow\\qquad W' x' = W\\,(\\mathrm{pool}(x'))

for every new map ``x' (c, H, W)``: the resampled layer answers on the finer map exactly what the old
layer answers on that map pooled to the old grid. Fine-tuning starts from the old model's function on
a smoothed view and learns the finer grid from there.
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["pooling_matrix", "resample_map_weight", "transfer_map_weights"]


def pooling_matrix(old_size: Tuple[int, int], new_size: Tuple[int, int], dtype: torch.dtype = torch.float64) -> Tensor:
    """``P (h*w, H*W)``: row ``i`` holds the weights with which ``adaptive_avg_pool2d`` of an ``(H, W)`` map to
    ``(h, w)`` = ``old_size`` averages the new cells into old cell ``i`` (row-major cells)."""
    (h, w), (hh, ww) = _size(old_size), _size(new_size)
    basis = torch.eye(hh * ww, dtype=dtype).view(hh * ww, 1, hh, ww)
    return F.adaptive_avg_pool2d(basis, (h, w)).view(hh * ww, h * w).T.contiguous()


def resample_map_weight(weight: Tensor, old_size: Tuple[int, int], new_size: Tuple[int, int]) -> Tensor:
    """``W (R, c * h * w)`` -> ``W' (R, c * H * W)``, ``W'_{r,c} = W_{r,c} P`` (:func:`pooling_matrix`).

    ``c`` is ``W.shape[1] / (h * w)`` (the maps per row: ``nodes_per_point`` for a graph head's node input,
    ``in_channels`` for the FC head); ``ValueError`` when the columns are not ``c`` whole ``(h, w)`` maps.
    Computed in float64, returned in ``W``'s dtype. Equal sizes return a copy of ``W``.
    """
    (h, w), (hh, ww) = _size(old_size), _size(new_size)
    if weight.dim() != 2 or weight.shape[1] % (h * w):
        raise ValueError(f"expected a weight (R, c * {h} * {w}) that reads {h}x{w} maps; got {tuple(weight.shape)}")
    rows, maps = weight.shape[0], weight.shape[1] // (h * w)
    old = weight.detach().to(torch.float64).reshape(rows * maps, h * w)
    new = old @ pooling_matrix((h, w), (hh, ww))
    return new.reshape(rows, maps * hh * ww).to(weight.dtype)


def transfer_map_weights(target: Mapping[str, Tensor], source: Mapping[str, Tensor], old_size: Tuple[int, int],
                         new_size: Tuple[int, int]) -> Tuple[Dict[str, Tensor], List[str]]:
    """``source``'s state with every map-reading weight resampled to ``target``'s shapes.

    A key is resampled when both tensors are 2-D with the same rows and their columns are the same
    number ``c`` of whole ``old_size`` maps (source) and ``new_size`` maps (target); every other key is
    passed through as it is, so a strict load still names anything else that does not fit.

    Returns:
        ``(state, resampled_keys)``.
    """
    (h, w), (hh, ww) = _size(old_size), _size(new_size)
    state, resampled = dict(source), []
    for key, value in source.items():
        own = target.get(key)
        if own is None or not isinstance(value, Tensor) or value.shape == own.shape:
            continue
        if value.dim() == 2 and own.dim() == 2 and value.shape[0] == own.shape[0] \
                and value.shape[1] % (h * w) == 0 and own.shape[1] % (hh * ww) == 0 \
                and value.shape[1] // (h * w) == own.shape[1] // (hh * ww):
            state[key] = resample_map_weight(value, (h, w), (hh, ww))
            resampled.append(key)
    return state, resampled


def _size(size: Tuple[int, int]) -> Tuple[int, int]:
    h, w = (int(v) for v in size)
    if h < 1 or w < 1:
        raise ValueError(f"map sizes must be positive; got {tuple(size)}")
    return h, w
