"""Landmark losses (paper Eq. 6-10).

All point losses take ``pred`` and ``target`` of shape ``(B, N, 2)`` in pixels of the crop, apply
a function ``f`` to each coordinate difference ``x = pred - target`` (x and y separately), sum over
the two coordinates and average over points and faces:

    loss = 1 / (B N) * sum_{b, i} [ f(x_{b,i,x}) + f(x_{b,i,y}) ]

The functions:

* L1: ``f(x) = |x|``
* L2: ``f(x) = x^2`` (so the loss is the mean squared point-to-point distance)
* Wing (Feng et al. 2018): ``f(x) = w ln(1 + |x| / eps)`` if ``|x| < w``, else ``|x| - C`` with
  ``C = w - w ln(1 + w / eps)`` (continuous at ``|x| = w``)
* Soft Wing (SDFL Eq. 9): ``f(x) = |x|`` if ``|x| < w1``, else ``w2 ln(1 + |x| / eps) + B`` with
  ``B = w1 - w2 ln(1 + w1 / eps)`` (continuous at ``|x| = w1``); defaults w1=2, w2=20, eps=0.5

The relative-location loss (Eq. 6-8) compares uniform-Laplacian coordinates
``delta = L P``, ``delta_i = p_i - 1/|N_i| sum_{j in N_i} p_j`` (self excluded), of the prediction
and the target with a point loss; :class:`SDFLLoss` is Eq. 10, ``point + lambda * relative``.
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from pyg_sdfl.graph.mining import uniform_laplacian  # re-exported: the loss's Laplacian is the graph's

__all__ = [
    "L1Loss",
    "L2Loss",
    "PointLoss",
    "RelativeLocationLoss",
    "SDFLLoss",
    "SoftWingLoss",
    "WingLoss",
    "uniform_laplacian",
]


def _check_points(pred: Tensor, target: Tensor, where: str) -> None:
    if not isinstance(pred, Tensor) or not isinstance(target, Tensor):
        raise ValueError(f"{where}: pred and target must be torch tensors")
    if pred.dim() != 3 or pred.shape[-1] != 2:
        raise ValueError(f"{where}: pred must have shape (B, N, 2), got {tuple(pred.shape)}")
    if pred.shape != target.shape:
        raise ValueError(f"{where}: pred {tuple(pred.shape)} and target {tuple(target.shape)} shapes differ")
    if pred.shape[0] == 0 or pred.shape[1] == 0:
        raise ValueError(f"{where}: empty input of shape {tuple(pred.shape)}")
    if not torch.isfinite(target).all():
        raise ValueError(f"{where}: target contains NaN or infinite values")


class PointLoss(nn.Module):
    """Base class: ``loss = mean_{b,i} sum_{c in {x,y}} f(pred - target)``; subclasses define ``f``."""

    def elementwise(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        """``pred, target (B, N, 2)`` in pixels -> scalar."""
        _check_points(pred, target, type(self).__name__)
        return self.elementwise(pred - target).sum(dim=-1).mean()


class L1Loss(PointLoss):
    """``f(x) = |x|``."""

    def elementwise(self, x: Tensor) -> Tensor:
        return x.abs()


class L2Loss(PointLoss):
    """``f(x) = x^2``: the mean squared point-to-point distance."""

    def elementwise(self, x: Tensor) -> Tensor:
        return x * x


def _positive(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value}")
    return value


class WingLoss(PointLoss):
    """Wing loss: ``w ln(1 + |x|/eps)`` for ``|x| < w``, else ``|x| - C``, ``C = w - w ln(1 + w/eps)``."""

    def __init__(self, w: float = 10.0, eps: float = 2.0) -> None:
        super().__init__()
        self.w = _positive("w", w)
        self.eps = _positive("eps", eps)
        self.C = self.w - self.w * math.log1p(self.w / self.eps)

    def elementwise(self, x: Tensor) -> Tensor:
        a = x.abs()
        return torch.where(a < self.w, self.w * torch.log1p(a / self.eps), a - self.C)

    def extra_repr(self) -> str:
        return f"w={self.w}, eps={self.eps}"


class SoftWingLoss(PointLoss):
    """Soft Wing (Eq. 9): ``|x|`` for ``|x| < w1``, else ``w2 ln(1 + |x|/eps) + B``,
    ``B = w1 - w2 ln(1 + w1/eps)``."""

    def __init__(self, w1: float = 2.0, w2: float = 20.0, eps: float = 0.5) -> None:
        super().__init__()
        self.w1 = _positive("w1", w1)
        self.w2 = _positive("w2", w2)
        self.eps = _positive("eps", eps)
        self.B = self.w1 - self.w2 * math.log1p(self.w1 / self.eps)

    def elementwise(self, x: Tensor) -> Tensor:
        a = x.abs()
        return torch.where(a < self.w1, a, self.w2 * torch.log1p(a / self.eps) + self.B)

    def extra_repr(self) -> str:
        return f"w1={self.w1}, w2={self.w2}, eps={self.eps}"


class RelativeLocationLoss(nn.Module):
    """Eq. 6-8: ``base(L P_pred, L P_target)`` with the uniform Laplacian of the landmark graph.

    Args:
        edge_index: ``(2, E)`` landmark graph (self loops allowed and ignored), PyG convention
            ``(source, target)``: the neighbours of ``i`` are the sources of edges into ``i``.
        num_nodes: ``N``.
        base: a point loss applied to the relative locations (e.g. :class:`SoftWingLoss`).
    """

    def __init__(self, edge_index: Tensor, num_nodes: int, base: nn.Module) -> None:
        super().__init__()
        self.num_nodes = int(num_nodes)
        self.base = base
        self.register_buffer("laplacian", uniform_laplacian(edge_index, num_nodes))

    def relative_locations(self, points: Tensor) -> Tensor:
        """``(B, N, 2)`` -> ``delta = L P`` of shape ``(B, N, 2)``."""
        if points.dim() != 3 or tuple(points.shape[1:]) != (self.num_nodes, 2):
            raise ValueError(
                f"RelativeLocationLoss: expected points of shape (B, {self.num_nodes}, 2), got {tuple(points.shape)}"
            )
        return torch.matmul(self.laplacian.to(points.dtype), points)

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        _check_points(pred, target, type(self).__name__)
        return self.base(self.relative_locations(pred), self.relative_locations(target))


class SDFLLoss(nn.Module):
    """Eq. 10: ``loss = point(pred, target) + lambda * relative(pred, target)``.

    ``relative_loss=None`` (or ``lambda_=0``) trains with the point loss alone. After every call
    ``last_components`` holds detached scalars ``{"point", "relative" (if used), "total"}``;
    ``forward(..., return_components=True)`` also returns them.
    """

    def __init__(self, point_loss: nn.Module, relative_loss: Optional[nn.Module] = None, lambda_: float = 1.0) -> None:
        super().__init__()
        lambda_ = float(lambda_)
        if not math.isfinite(lambda_) or lambda_ < 0:
            raise ValueError(f"lambda_ must be a finite number >= 0, got {lambda_}")
        self.point_loss = point_loss
        self.relative_loss = relative_loss
        self.lambda_ = lambda_
        self.last_components: Dict[str, Tensor] = {}

    def forward(
        self, pred: Tensor, target: Tensor, return_components: bool = False
    ) -> Union[Tensor, Tuple[Tensor, Dict[str, Tensor]]]:
        point = self.point_loss(pred, target)
        total = point
        components = {"point": point.detach()}
        if self.relative_loss is not None and self.lambda_ > 0:
            relative = self.relative_loss(pred, target)
            total = point + self.lambda_ * relative
            components["relative"] = relative.detach()
        components["total"] = total.detach()
        self.last_components = components
        return (total, components) if return_components else total

    def extra_repr(self) -> str:
        return f"lambda_={self.lambda_}"
