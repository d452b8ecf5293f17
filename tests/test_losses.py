"""Losses: hand-computed values, continuity at the switch points, reductions, graph Laplacian."""
from __future__ import annotations

import math

import pytest
import torch

from pyg_sdfl.config import CONFIG_DIR as CONFIGS
from pyg_sdfl.config import compose
from pyg_sdfl.engine.builders import build_loss
from pyg_sdfl.graph import dense_graph

from pyg_sdfl.losses import (
    L1Loss,
    L2Loss,
    RelativeLocationLoss,
    SDFLLoss,
    SoftWingLoss,
    WingLoss,
    uniform_laplacian,
)


def one_point(dx: float, dy: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    pred = torch.tensor([[[dx, dy]]], dtype=torch.float64)
    return pred, torch.zeros_like(pred)


# ---------------------------------------------------------------- hand-computed values

def test_l1_l2_hand_values():
    pred = torch.tensor([[[1.0, -2.0], [3.0, 4.0]]])
    target = torch.zeros_like(pred)
    assert L1Loss()(pred, target).item() == pytest.approx((3 + 7) / 2)
    assert L2Loss()(pred, target).item() == pytest.approx((5 + 25) / 2)


def test_wing_hand_values():
    loss = WingLoss(w=10, eps=2)
    # C = 10 - 10 ln 6 = -7.917594692...
    assert loss.C == pytest.approx(-7.917594692280550)
    # |x| = 1 < w: 10 ln 1.5 = 4.054651081...
    assert loss(*one_point(1.0)).item() == pytest.approx(4.054651081081644)
    # |x| = 12 >= w: 12 - C = 19.917594692...
    assert loss(*one_point(-12.0)).item() == pytest.approx(19.917594692280550)
    # x and y summed: 4.0546... + 19.9175...
    assert loss(*one_point(1.0, 12.0)).item() == pytest.approx(4.054651081081644 + 19.917594692280550)


def test_soft_wing_hand_values():
    loss = SoftWingLoss()  # w1=2, w2=20, eps=0.5
    # B = 2 - 20 ln 5 = -30.188758248682...
    assert loss.B == pytest.approx(-30.188758248682007)
    assert loss(*one_point(1.5)).item() == pytest.approx(1.5)
    # |x| = 3: 20 ln 7 + B = 2 + 20 ln 1.4 = 8.729444732...
    assert loss(*one_point(-3.0)).item() == pytest.approx(8.729444732424258)
    assert loss(*one_point(0.0)).item() == 0.0


def test_soft_wing_gradients():
    loss = SoftWingLoss()
    x = torch.tensor([[[0.7, -3.0]]], dtype=torch.float64, requires_grad=True)
    loss(x, torch.zeros_like(x)).backward()
    # d|x|/dx = 1 below w1; d/dx [20 ln(1 + |x|/0.5)] = -20 / 3.5 at x = -3
    torch.testing.assert_close(x.grad, torch.tensor([[[1.0, -20.0 / 3.5]]], dtype=torch.float64))


# ---------------------------------------------------------------- continuity at the switch

@pytest.mark.parametrize(
    "loss, switch",
    [(WingLoss(10, 2), 10.0), (WingLoss(4, 1), 4.0), (SoftWingLoss(), 2.0), (SoftWingLoss(1, 5, 0.2), 1.0)],
)
def test_continuous_at_switch_point(loss, switch):
    h = 1e-9
    below = loss.elementwise(torch.tensor(switch - h, dtype=torch.float64)).item()
    at = loss.elementwise(torch.tensor(switch, dtype=torch.float64)).item()
    above = loss.elementwise(torch.tensor(switch + h, dtype=torch.float64)).item()
    assert below == pytest.approx(at, abs=1e-7)
    assert above == pytest.approx(at, abs=1e-7)
    # and symmetric
    assert loss.elementwise(torch.tensor(-switch, dtype=torch.float64)).item() == pytest.approx(at)


# ---------------------------------------------------------------- reduction

REFERENCE = {  # scalar formulas written out independently of the implementation
    "l1": abs,
    "l2": lambda x: x * x,
    "wing": lambda x: 10 * math.log(1 + abs(x) / 2) if abs(x) < 10 else abs(x) - (10 - 10 * math.log(1 + 10 / 2)),
    "soft_wing": lambda x: abs(x) if abs(x) < 2 else 20 * math.log(1 + abs(x) / 0.5) + 2 - 20 * math.log(1 + 2 / 0.5),
}


LOSS_CLASSES = {"l1": L1Loss, "l2": L2Loss, "wing": WingLoss, "soft_wing": SoftWingLoss}


@pytest.mark.parametrize("name", sorted(LOSS_CLASSES))
def test_reduction_is_sum_over_xy_mean_over_points_and_faces(name):
    torch.manual_seed(0)
    loss = LOSS_CLASSES[name]()
    pred = torch.randn(3, 5, 2, dtype=torch.float64) * 8
    target = torch.randn(3, 5, 2, dtype=torch.float64) * 8
    f = REFERENCE[name]
    diff = (pred - target).tolist()
    expected = sum(f(dx) + f(dy) for face in diff for dx, dy in face) / 15
    assert loss(pred, target).item() == pytest.approx(expected)


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("loss", [L1Loss(), L2Loss(), WingLoss(), SoftWingLoss()])
def test_bad_inputs(loss):
    with pytest.raises(ValueError, match="shapes differ"):
        loss(torch.zeros(2, 5, 2), torch.zeros(2, 4, 2))
    with pytest.raises(ValueError, match=r"\(B, N, 2\)"):
        loss(torch.zeros(5, 2), torch.zeros(5, 2))
    with pytest.raises(ValueError, match="NaN"):
        loss(torch.zeros(1, 2, 2), torch.tensor([[[0.0, float("nan")], [0.0, 0.0]]]))


def test_bad_parameters_and_names():
    with pytest.raises(ValueError, match="w must be"):
        WingLoss(w=0)
    with pytest.raises(ValueError, match="eps must be"):
        SoftWingLoss(eps=-1)


@pytest.mark.parametrize("option", sorted(p.stem for p in (CONFIGS / "loss").glob("*.yaml")))
def test_every_loss_config_builds_through_hydra_target(option):
    """Losses are built only from their YAML ``_target_`` (the one registration mechanism)."""
    cfg = compose([f"loss={option}"])
    graph = dense_graph(3)
    loss = build_loss(cfg.loss, graph)
    assert loss.lambda_ == float(cfg.loss.lambda_)
    assert type(loss.point_loss).__name__ == cfg.loss.point._target_.rsplit(".", 1)[1]
    pred, target = torch.randn(2, 3, 2), torch.randn(2, 3, 2)
    assert torch.isfinite(loss(pred, target))


# ---------------------------------------------------------------- relative locations

def test_uniform_laplacian_hand_values_and_direction():
    # edges (source, target): 1->0, 2->0, 0->1, 2->2 (self loop), 0->2, 0->2 (duplicate), 0->0
    edge_index = torch.tensor([[1, 2, 0, 2, 0, 0, 0], [0, 0, 1, 2, 2, 2, 0]])
    L = uniform_laplacian(edge_index, 3)
    expected = torch.tensor([[1.0, -0.5, -0.5], [-1.0, 1.0, 0.0], [-1.0, 0.0, 1.0]])
    torch.testing.assert_close(L, expected)


def test_laplacian_checks():
    with pytest.raises(ValueError, match=r"nodes \[1\] have no neighbours"):
        uniform_laplacian(torch.tensor([[1, 1], [0, 1]]), 2)
    with pytest.raises(ValueError, match="outside"):
        uniform_laplacian(torch.tensor([[0, 5], [1, 0]]), 2)
    with pytest.raises(ValueError, match=r"shape \(2, E\)"):
        uniform_laplacian(torch.tensor([0, 1]), 2)
    with pytest.raises(ValueError, match="integers"):
        uniform_laplacian(torch.tensor([[0.0, 1.0], [1.0, 0.0]]), 2)


def test_relative_location_loss_hand_value():
    # path 0 - 1 - 2 (both directions) plus self loops
    edge_index = torch.tensor([[0, 1, 1, 2, 0, 1, 2], [1, 0, 2, 1, 0, 1, 2]])
    loss = RelativeLocationLoss(edge_index, 3, L1Loss())
    pred = torch.tensor([[[0.0, 0.0], [2.0, 0.0], [4.0, 2.0]]])
    target = torch.zeros_like(pred)
    # delta_0 = p0 - p1 = (-2, 0); delta_1 = p1 - (p0 + p2)/2 = (0, -1); delta_2 = p2 - p1 = (2, 2)
    torch.testing.assert_close(loss.relative_locations(pred), torch.tensor([[[-2.0, 0.0], [0.0, -1.0], [2.0, 2.0]]]))
    assert loss(pred, target).item() == pytest.approx((2 + 1 + 4) / 3)


def test_relative_loss_ignores_translation_but_not_deformation():
    torch.manual_seed(0)
    edge_index = torch.tensor([[0, 1, 2, 3, 1, 2, 3, 0], [1, 2, 3, 0, 0, 1, 2, 3]])
    loss = RelativeLocationLoss(edge_index, 4, SoftWingLoss())
    target = torch.randn(2, 4, 2) * 20
    assert loss(target + torch.tensor([7.0, -3.0]), target).item() == pytest.approx(0.0, abs=1e-5)
    deformed = target.clone()
    deformed[:, 0] += 5
    assert loss(deformed, target).item() > 0.1


def test_relative_loss_checks_num_points():
    loss = RelativeLocationLoss(torch.tensor([[0, 1], [1, 0]]), 2, L1Loss())
    with pytest.raises(ValueError, match=r"expected points of shape \(B, 2, 2\)"):
        loss(torch.zeros(1, 3, 2), torch.zeros(1, 3, 2))
    with pytest.raises(ValueError, match="NaN"):
        loss(torch.zeros(1, 2, 2), torch.full((1, 2, 2), float("nan")))


# ---------------------------------------------------------------- Eq. 10

def test_sdfl_loss_combines_with_lambda():
    torch.manual_seed(0)
    edge_index = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])
    point, relative = SoftWingLoss(), RelativeLocationLoss(edge_index, 3, SoftWingLoss())
    loss = SDFLLoss(point, relative, lambda_=0.5)
    pred = (torch.randn(4, 3, 2) * 5).requires_grad_()
    target = torch.randn(4, 3, 2) * 5
    total, parts = loss(pred, target, return_components=True)
    expected = point(pred, target) + 0.5 * relative(pred, target)
    torch.testing.assert_close(total, expected)
    assert set(parts) == {"point", "relative", "total"}
    torch.testing.assert_close(parts["total"], parts["point"] + 0.5 * parts["relative"])
    assert loss.last_components is parts and not parts["total"].requires_grad
    total.backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0


def test_sdfl_loss_without_relative_and_default_lambda():
    loss = SDFLLoss(L1Loss())
    pred, target = one_point(3.0, 4.0)
    assert loss(pred, target).item() == pytest.approx(7.0)
    assert set(loss.last_components) == {"point", "total"}
    assert SDFLLoss(L1Loss(), None).lambda_ == 1.0
    with pytest.raises(ValueError, match="lambda_"):
        SDFLLoss(L1Loss(), None, lambda_=-1)
