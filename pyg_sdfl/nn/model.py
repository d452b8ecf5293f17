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
from typing import Any, Callable, Dict, Optional, Tuple, Union

from torch import Tensor, nn

from pyg_sdfl.nn.backbones import Backbone, create_backbone

__all__ = ["LandmarkModel", "build_model", "normalised_to_pixels", "pixels_to_normalised"]


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


def build_model(
    backbone: Union[str, Backbone],
    head_factory: Callable[..., nn.Module],
    num_points: int,
    edge_index: Tensor,
    image_size: int = 256,
    **head_kwargs: Any,
) -> LandmarkModel:
    """Assemble a :class:`LandmarkModel`.

    ``backbone`` is a registry name (built with :func:`create_backbone`, random init) or a built
    :class:`Backbone`. The head is
    ``head_factory(backbone.out_channels, backbone.output_size(image_size), num_points, edge_index, **head_kwargs)``.
    """
    if isinstance(backbone, str):
        backbone = create_backbone(backbone)
    if not isinstance(backbone, Backbone):
        raise ValueError(f"backbone must be a name or a Backbone, got {type(backbone).__name__}")
    if edge_index.dim() != 2 or edge_index.shape[0] != 2:
        raise ValueError(f"edge_index must have shape (2, E), got {tuple(edge_index.shape)}")
    if edge_index.numel() and (int(edge_index.min()) < 0 or int(edge_index.max()) >= num_points):
        raise ValueError(f"edge_index refers to nodes outside [0, {num_points}) for num_points={num_points}")
    head = head_factory(backbone.out_channels, backbone.output_size(image_size), num_points, edge_index, **head_kwargs)
    model = LandmarkModel(backbone, head, image_size=image_size)
    if model.num_points is not None and model.num_points != num_points:
        raise ValueError(f"head reports num_points={model.num_points}, but num_points={num_points} was asked for")
    if model.num_points is None:
        model.num_points = int(num_points)
    return model
