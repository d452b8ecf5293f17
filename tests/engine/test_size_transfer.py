"""Carrying map-reading weights across crop sizes: the adjoint of area pooling, checked densely."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pyg_sdfl.engine.size_transfer import pooling_matrix, resample_map_weight, transfer_map_weights


@pytest.mark.parametrize("old, new", [((5, 5), (8, 8)), ((8, 8), (5, 5)), ((4, 4), (5, 5)), ((2, 3), (3, 4))])
def test_the_resampled_layer_answers_on_the_new_map_what_the_old_one_does_on_it_pooled(old, new):
    torch.manual_seed(0)
    rows, maps = 7, 4
    weight = torch.randn(rows, maps * old[0] * old[1], dtype=torch.float64)
    x_new = torch.randn(3, maps, *new, dtype=torch.float64)  # a batch of 3 inputs of `maps` (H, W) maps
    pooled = F.adaptive_avg_pool2d(x_new, old)
    resampled = resample_map_weight(weight, old, new)
    assert resampled.shape == (rows, maps * new[0] * new[1])
    torch.testing.assert_close(x_new.flatten(1) @ resampled.T, pooled.flatten(1) @ weight.T, rtol=1e-12, atol=1e-12)


def test_each_old_cell_is_a_mean_of_new_cells_and_equal_sizes_change_nothing():
    p = pooling_matrix((5, 5), (8, 8))
    assert p.shape == (25, 64) and (p >= 0).all()
    torch.testing.assert_close(p.sum(1), torch.ones(25, dtype=torch.float64))
    weight = torch.randn(3, 2 * 25)
    torch.testing.assert_close(resample_map_weight(weight, (5, 5), (5, 5)), weight)
    assert resample_map_weight(weight.half(), (5, 5), (8, 8)).dtype == torch.float16


def test_a_weight_that_does_not_read_whole_maps_is_refused():
    with pytest.raises(ValueError, match=r"expected a weight \(R, c \* 5 \* 5\) that reads 5x5 maps; got \(3, 24\)"):
        resample_map_weight(torch.zeros(3, 24), (5, 5), (8, 8))
    with pytest.raises(ValueError, match="map sizes must be positive"):
        resample_map_weight(torch.zeros(3, 25), (5, 5), (0, 8))


def test_transfer_resamples_the_map_reading_weights_and_passes_everything_else_through():
    source = {"head.in.lin_self.weight": torch.randn(16, 4 * 25), "head.fc1.weight": torch.randn(8, 32 * 25),
              "head.in.bias": torch.randn(16), "head.out.weight": torch.randn(2, 16),
              "other.weight": torch.randn(5, 7)}
    target = {"head.in.lin_self.weight": torch.zeros(16, 4 * 64), "head.fc1.weight": torch.zeros(8, 32 * 64),
              "head.in.bias": torch.zeros(16), "head.out.weight": torch.zeros(2, 16),
              "other.weight": torch.zeros(5, 9)}  # not a map reader: left for the strict load to name
    state, resampled = transfer_map_weights(target, source, (5, 5), (8, 8))
    assert sorted(resampled) == ["head.fc1.weight", "head.in.lin_self.weight"]
    for key in resampled:
        assert state[key].shape == target[key].shape
        torch.testing.assert_close(state[key], resample_map_weight(source[key], (5, 5), (8, 8)))
    for key in ("head.in.bias", "head.out.weight", "other.weight"):
        assert state[key] is source[key]
