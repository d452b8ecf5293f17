"""Fine-tuning a pretrained backbone under a new head: a head-first warm-up and a lower backbone lr.

A fresh head on a trained backbone sends large, random gradients into the backbone during its first
epochs; at the head's learning rate they undo much of what the backbone had learnt (the light head on the
160 px 300-W backbone then shipped, ``experiment=cpu_300w_160_light``, sat at 5-7% validation NME until the first lr
drop). Two settings, both off by default:

- ``train.freeze_backbone_epochs = E``: during epochs ``0 .. E-1`` the backbone's parameters take no
  gradient (``requires_grad=False``, so autograd does not even record the backbone and each step costs
  about a forward pass of it) and its batch-norm layers stay in eval mode (their running statistics are
  kept). From epoch ``E`` on the whole model trains.
- ``train.backbone_lr_scale = s``: the backbone's parameters form their own optimiser group at
  ``lr_backbone = s * train.optimizer.lr`` (the schedule scales both groups alike); group 0 holds the
  rest of the model at ``train.optimizer.lr``. ``s = 1`` keeps one group, as runs before this setting.

Both are functions of the epoch and the config, so a resumed run freezes exactly as an uninterrupted one.
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, List, Union

from torch import nn

__all__ = ["backbone_frozen", "set_backbone_trainable", "parameter_groups"]


def backbone_frozen(epoch: int, freeze_epochs: int) -> bool:
    """Whether the backbone is frozen in (0-based) ``epoch``: ``epoch < freeze_epochs``."""
    if int(freeze_epochs) < 0:
        raise ValueError(f"train.freeze_backbone_epochs={freeze_epochs}: give 0 (never frozen) or more epochs")
    return int(epoch) < int(freeze_epochs)


def set_backbone_trainable(model: nn.Module, trainable: bool) -> None:
    """``requires_grad = trainable`` on every parameter of ``model.backbone`` (the rest is left alone)."""
    for parameter in _backbone(model).parameters():
        parameter.requires_grad_(trainable)


def parameter_groups(model: nn.Module, backbone_lr_scale: float,
                     lr: float) -> Union[Iterable[nn.Parameter], List[Dict[str, Any]]]:
    """The optimiser's ``params``: ``model.parameters()`` when ``backbone_lr_scale == 1``, else two groups,
    ``[{"params": rest}, {"params": backbone, "lr": backbone_lr_scale * lr}]`` (group 0 at the optimiser's lr).

    Raises:
        ValueError: a scale that is not positive, or a model whose backbone holds every parameter.
    """
    scale = float(backbone_lr_scale)
    if not scale > 0:
        raise ValueError(f"train.backbone_lr_scale={backbone_lr_scale}: give a positive factor "
                         f"(1 = the backbone at the optimiser's lr; freeze it with train.freeze_backbone_epochs)")
    if scale == 1.0:
        return model.parameters()
    backbone_ids = {id(p) for p in _backbone(model).parameters()}
    rest = [p for p in model.parameters() if id(p) not in backbone_ids]
    if not rest:
        raise ValueError("train.backbone_lr_scale: the model has no parameters outside its backbone")
    return [{"params": rest}, {"params": list(_backbone(model).parameters()), "lr": scale * float(lr)}]


def _backbone(model: nn.Module) -> nn.Module:
    backbone = getattr(model, "backbone", None)
    if not isinstance(backbone, nn.Module):
        raise ValueError(f"{type(model).__name__} has no `backbone` module to freeze or to give its own lr")
    return backbone
