"""Head-first warm-up and a lower backbone lr (pyg_sdfl.engine.fine_tuning), alone and inside tiny runs."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from pyg_sdfl.config import compose
from pyg_sdfl.engine.checkpoint import CheckpointError, load_checkpoint
from pyg_sdfl.engine.distributed import DistributedContext
from pyg_sdfl.engine.fine_tuning import backbone_frozen, parameter_groups, set_backbone_trainable
from pyg_sdfl.engine.training import train

TINY = ["train=quick", "dataset.image_size=64", "dataset.train.num_faces=96", "dataset.test.num_faces=16",
        "dataset.val_fraction=0.17", "train.batch_size=16", "train.num_workers=0", "evaluate.grid_faces=4",
        "train.max_steps_per_epoch=2", "train.eval_untrained=false"]


class _Model(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
        self.head = nn.Linear(4, 2)


def test_the_backbone_is_frozen_for_the_first_epochs_only() -> None:
    assert [backbone_frozen(e, 2) for e in range(4)] == [True, True, False, False]
    assert not backbone_frozen(0, 0)
    with pytest.raises(ValueError, match="freeze_backbone_epochs=-1"):
        backbone_frozen(0, -1)


def test_set_backbone_trainable_touches_the_backbone_alone() -> None:
    model = _Model()
    set_backbone_trainable(model, False)
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert all(p.requires_grad for p in model.head.parameters())
    set_backbone_trainable(model, True)
    assert all(p.requires_grad for p in model.parameters())
    with pytest.raises(ValueError, match="no `backbone` module"):
        set_backbone_trainable(nn.Linear(2, 2), False)


def test_parameter_groups_give_the_backbone_its_own_lr() -> None:
    model = _Model()
    assert list(parameter_groups(model, 1.0, 1e-3)) == list(model.parameters())  # one group, as before
    rest, backbone = parameter_groups(model, 0.25, 2e-3)
    assert rest["params"] == list(model.head.parameters()) and "lr" not in rest
    assert backbone["params"] == list(model.backbone.parameters()) and backbone["lr"] == pytest.approx(5e-4)
    optimizer = torch.optim.AdamW(parameter_groups(model, 0.25, 2e-3), lr=2e-3)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([2e-3, 5e-4])
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="backbone_lr_scale"):
            parameter_groups(model, bad, 1e-3)
    with pytest.raises(ValueError, match="no parameters outside its backbone"):
        parameter_groups(_OnlyBackbone(), 0.5, 1e-3)


class _OnlyBackbone(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Linear(2, 2)


def _weights(path: Path, prefix: str) -> dict:
    return {k: v for k, v in load_checkpoint(path)["model"].items() if k.startswith(prefix)}


def test_a_frozen_backbone_keeps_its_weights_and_statistics_then_trains(tmp_path: Path) -> None:
    source = tmp_path / "source"
    train(compose(TINY + ["train.epochs=1"]), source)
    start = _weights(source / "last.ckpt", "backbone.")
    warm = TINY + [f"train.init_backbone_from={source / 'last.ckpt'}", "train.freeze_backbone_epochs=1",
                   "train.backbone_lr_scale=0.5", "train.scheduler.milestones=[5]"]
    train(compose(warm + ["train.epochs=1"]), tmp_path / "frozen")
    frozen = _weights(tmp_path / "frozen" / "last.ckpt", "backbone.")
    # weights, batch-norm running statistics and their counters: all as init_backbone_from put them
    assert frozen.keys() == start.keys() and all(torch.equal(frozen[k], start[k]) for k in start)
    # while the head trained: the same run at lr 0 keeps the head's initial weights
    train(compose(warm + ["train.epochs=1", "train.optimizer.lr=0"]), tmp_path / "still")
    head_start = _weights(tmp_path / "still" / "last.ckpt", "head.")
    head_trained = _weights(tmp_path / "frozen" / "last.ckpt", "head.")
    assert any(not torch.equal(head_trained[k], head_start[k]) for k in head_start if k.endswith("weight"))

    train(compose(warm + ["train.epochs=2"]), tmp_path / "then_trained")
    trained = _weights(tmp_path / "then_trained" / "last.ckpt", "backbone.")
    assert all(not torch.equal(trained[k], start[k]) for k in start if k.endswith("conv1.weight"))
    assert any(k.endswith("conv1.weight") for k in start)
    groups = load_checkpoint(tmp_path / "then_trained" / "last.ckpt")["optimizer"]["param_groups"]
    assert [g["lr"] for g in groups] == pytest.approx([2e-3, 1e-3])  # train=quick's lr, x0.5 for the backbone

    # the freeze follows the epoch: the frozen run resumed for a second epoch ends where the whole run did
    train(compose(warm + ["train.epochs=2", "train.resume=last"]), tmp_path / "frozen")
    resumed = load_checkpoint(tmp_path / "frozen" / "last.ckpt")["model"]
    whole = load_checkpoint(tmp_path / "then_trained" / "last.ckpt")["model"]
    assert all(torch.allclose(resumed[k].float(), whole[k].float(), atol=1e-6) for k in whole)


def test_freezing_is_refused_under_torchrun_before_anything_is_built(tmp_path: Path) -> None:
    cfg = compose(TINY + ["train.epochs=1", "train.freeze_backbone_epochs=1"])
    with pytest.raises(ValueError, match="not supported under torchrun"):
        train(cfg, tmp_path, DistributedContext(world_size=2, backend="gloo"))
    assert not any(tmp_path.iterdir())


def test_freezing_a_random_backbone_is_warned_about(tmp_path: Path, caplog) -> None:
    train(compose(TINY + ["train.epochs=1", "train.freeze_backbone_epochs=1"]), tmp_path)
    assert "freezes a backbone that starts from random weights" in caplog.text


def test_resuming_with_another_backbone_lr_scale_is_refused(tmp_path: Path) -> None:
    """The optimiser's groups are part of the run: the saved lrs would silently win (or the group count
    differ), so a changed scale stops with what to do instead."""
    train(compose(TINY + ["train.epochs=1"]), tmp_path)  # one group (scale 1, as every run before the key)
    with pytest.raises(CheckpointError, match=r"backbone_lr_scale=1.0, the config says 0.5.*train.init_from"):
        train(compose(TINY + ["train.epochs=2", "train.backbone_lr_scale=0.5", "train.resume=last"]), tmp_path)
    train(compose(TINY + ["train.epochs=2", "train.resume=last"]), tmp_path)  # the same scale resumes
