"""EdgeWeighting: one logit per edge per face from the pooled maps (paper Sec. III-B), against its formula."""
from __future__ import annotations

import pytest
import torch

from pyg_sdfl.nn import EdgeWeighting

B, C, H, W, E = 3, 12, 4, 5, 30


def _maps(seed: int = 0, batch: int = B) -> torch.Tensor:
    return torch.randn(batch, C, H, W, generator=torch.Generator().manual_seed(seed))


def _trained(seed: int = 0) -> EdgeWeighting:
    """A module whose second layer has left its zero init."""
    torch.manual_seed(seed)
    module = EdgeWeighting(C, E, hidden_channels=8)
    with torch.no_grad():
        module.fc[2].weight.normal_()
        module.fc[2].bias.normal_()
    return module


def test_one_logit_per_edge_per_face_by_the_formula() -> None:
    module = _trained()
    maps = _maps()
    logits = module(maps)
    assert logits.shape == (B, E)
    fc1, fc2 = module.fc[0], module.fc[2]
    pooled = maps.mean(dim=(2, 3))  # GAP, (B, C)
    expected = torch.relu(pooled @ fc1.weight.t() + fc1.bias) @ fc2.weight.t() + fc2.bias
    torch.testing.assert_close(logits, expected)


def test_logits_depend_on_each_face_alone() -> None:
    module = _trained(1)
    maps = _maps(1)
    logits = module(maps)
    assert not torch.allclose(logits[0], logits[1]), "different faces must get different edge weights"
    changed = maps.clone()
    changed[1] += 1.0
    out = module(changed)
    assert torch.equal(out[[0, 2]], logits[[0, 2]]) and not torch.allclose(out[1], logits[1])
    for face in range(B):
        torch.testing.assert_close(module(maps[face : face + 1])[0], logits[face])
    # global average pooling: moving values around inside a map changes nothing
    shuffled = maps.flatten(2)[:, :, torch.randperm(H * W, generator=torch.Generator().manual_seed(2))].view_as(maps)
    torch.testing.assert_close(module(shuffled), logits)


def test_a_fresh_module_starts_at_the_binary_adjacency_and_can_leave_it() -> None:
    torch.manual_seed(3)
    module = EdgeWeighting(C, E)
    assert module.hidden_channels == 16  # max(16, C // 2)
    maps = _maps(3).requires_grad_(True)
    logits = module(maps)
    assert torch.equal(logits, torch.zeros(B, E))  # equal logits -> uniform alpha after the softmax
    (logits * torch.randn(B, E)).sum().backward()
    assert module.fc[2].weight.grad.abs().sum() > 0 and module.fc[2].bias.grad.abs().sum() > 0


def test_gradients_reach_the_maps_and_every_parameter() -> None:
    module = _trained(4)
    maps = _maps(4).requires_grad_(True)
    (module(maps) * torch.randn(B, E)).sum().backward()
    assert maps.grad is not None and maps.grad.abs().sum() > 0
    for name, p in module.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_reset_parameters_returns_to_zero_logits() -> None:
    module = _trained(5)
    assert module(_maps()).abs().sum() > 0
    module.reset_parameters()
    assert torch.equal(module(_maps()), torch.zeros(B, E))


def test_static_module_has_no_parameters_and_returns_ones() -> None:
    module = EdgeWeighting(C, E, dynamic=False)
    assert list(module.parameters()) == [] and module.fc is None
    maps = _maps().double()
    logits = module(maps)
    assert logits.dtype == torch.float64 and torch.equal(logits, torch.ones(B, E, dtype=torch.float64))
    assert "dynamic=False" in repr(module)


def test_bad_shapes_raise() -> None:
    module = EdgeWeighting(C, E)
    with pytest.raises(ValueError, match=r"expects maps \(B, 12, H, W\); got \(3, 12, 20\)"):
        module(torch.randn(B, C, H * W))
    with pytest.raises(ValueError, match=r"expects maps \(B, 12, H, W\); got \(3, 11, 4, 5\)"):
        module(torch.randn(B, C - 1, H, W))
    with pytest.raises(ValueError, match="must be positive"):
        EdgeWeighting(0, E)
    with pytest.raises(ValueError, match="must be positive"):
        EdgeWeighting(C, 0)
