"""The landmark model: backbone + head, images in, crop-pixel coordinates out.

Coordinate convention (used everywhere in this package): pixel ``k`` of an ``S``-pixel crop
has its centre at coordinate ``k`` (0-based pixel centres), so the crop spans ``[-0.5, S - 0.5]``
and its centre is ``(S - 1) / 2``. A head predicts normalised coordinates ``o`` where ``-1`` and
``+1`` are the crop's outer edges (the ``align_corners=False`` convention of
``torch.nn.functional.grid_sample``), and

    p = (o + 1) * S / 2 - 0.5        o = (2 p + 1) / S - 1

so ``o = 0`` is the crop centre ``(S - 1) / 2``.
"""
from __future__ import annotations

import inspect
from typing import Any, Dict, Optional, Tuple, Union

from torch import Tensor, nn

__all__ = ["LandmarkModel", "normalised_to_pixels", "pixels_to_normalised"]


def normalised_to_pixels(coords: Tensor, image_size: int) -> Tensor:
    """``p = (o + 1) * S / 2 - 0.5``: normalised ``[-1, 1]`` (crop edges) -> pixel coordinates."""
    return (coords + 1.0) * (image_size / 2.0) - 0.5


def pixels_to_normalised(coords: Tensor, image_size: int) -> Tensor:
    """``o = (2 p + 1) / S - 1``: the inverse of :func:`normalised_to_pixels`."""
    return (2.0 * coords + 1.0) / image_size - 1.0


def _accepts_keyword(module: nn.Module, name: str) -> bool:
    try:
        params = inspect.signature(module.forward).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


class LandmarkModel(nn.Module):
    """``images (B, 3, S, S)`` -> backbone ``(B, C, S/32, S/32)`` -> head ``(B, N, 2)`` in ``[-1, 1]``
    -> landmark coordinates ``(B, N, 2)`` in pixels of the ``S x S`` crop (see module docstring).

    Args:
        backbone: a module mapping images to a feature map (e.g. :class:`Backbone`).
        head: ``forward(features (B, C, H, W)) -> (B, N, 2)`` normalised coordinates; if its
            ``forward`` accepts ``return_intermediates`` it may return ``(coords, extras)``.
        image_size: ``S``, the side of the square input crop.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, image_size: int = 256) -> None:
        super().__init__()
        if int(image_size) <= 0:
            raise ValueError(f"image_size must be positive, got {image_size}")
        self.backbone = backbone
        self.head = head
        self.image_size = int(image_size)
        self.num_points: Optional[int] = getattr(head, "num_points", None)
        self._head_has_intermediates = _accepts_keyword(head, "return_intermediates")

    def _check_images(self, images: Tensor) -> None:
        s = self.image_size
        if not isinstance(images, Tensor):
            raise ValueError(f"images must be a torch.Tensor, got {type(images).__name__}")
        if images.dim() != 4 or tuple(images.shape[1:]) != (3, s, s):
            raise ValueError(f"expected images of shape (B, 3, {s}, {s}), got {tuple(images.shape)}")

    def _check_coords(self, coords: Tensor, batch: int) -> None:
        n = self.num_points
        ok = coords.dim() == 3 and coords.shape[0] == batch and coords.shape[2] == 2
        if not ok or (n is not None and coords.shape[1] != n):
            expected = f"({batch}, {n if n is not None else 'N'}, 2)"
            raise ValueError(f"head returned coordinates of shape {tuple(coords.shape)}, expected {expected}")

    def forward(
        self, images: Tensor, return_intermediates: bool = False
    ) -> Union[Tensor, Tuple[Tensor, Dict[str, Any]]]:
        """Predict landmarks.

        Returns ``(B, N, 2)`` pixel coordinates, or with ``return_intermediates=True`` the pair
        ``(coords, extras)`` where ``extras`` has ``"features"`` (the backbone map),
        ``"normalised"`` (the head's ``[-1, 1]`` output) and, for heads that support it, whatever
        the head returned as intermediates (a dict is merged in; anything else goes under ``"head"``).
        """
        self._check_images(images)
        features = self.backbone(images)
        extras: Dict[str, Any] = {}
        if return_intermediates and self._head_has_intermediates:
            out = self.head(features, return_intermediates=True)
            if isinstance(out, tuple) and len(out) == 2:
                normalised, head_extras = out
            else:
                normalised, head_extras = out, None
            if isinstance(head_extras, dict):
                extras.update(head_extras)
            elif head_extras is not None:
                extras["head"] = head_extras
        else:
            normalised = self.head(features)
        self._check_coords(normalised, images.shape[0])
        coords = normalised_to_pixels(normalised, self.image_size)
        if not return_intermediates:
            return coords
        extras["features"] = features
        extras["normalised"] = normalised
        return coords, extras

    def extra_repr(self) -> str:
        return f"image_size={self.image_size}, num_points={self.num_points}"
