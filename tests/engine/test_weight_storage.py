"""engine.weight_storage: fp16, or int8 weights with one scale per output channel."""
from __future__ import annotations

import pytest
import torch

from pyg_sdfl.engine.weight_storage import (
    INT8_MIN_NUMEL,
    dequantise_per_channel,
    quantise_per_channel,
    read_stored_state,
    store_state,
)


def test_per_channel_int8_is_within_half_a_step_of_each_channel():
    torch.manual_seed(0)
    weight = torch.randn(8, 4, 3, 3) * torch.logspace(-3, 1, 8)[:, None, None, None]  # channels of unequal size
    q, scale = quantise_per_channel(weight)
    assert q.dtype == torch.int8 and q.shape == weight.shape and scale.shape == (8,)
    assert torch.equal(q.reshape(8, -1).abs().amax(1), torch.full((8,), 127, dtype=torch.int8))  # each channel's max
    back = dequantise_per_channel(q, scale)
    error = (back - weight).abs().reshape(8, -1).amax(1)
    assert torch.all(error <= scale / 2 * (1 + 1e-5))
    assert torch.allclose(scale, weight.reshape(8, -1).abs().amax(1) / 127)


def test_an_all_zero_channel_reads_back_as_zeros():
    weight = torch.randn(3, 5)
    weight[1] = 0
    q, scale = quantise_per_channel(weight)
    assert scale[1] == 1 and torch.all(q[1] == 0)
    assert torch.all(dequantise_per_channel(q, scale)[1] == 0)


def test_the_grid_survives_requantisation_and_per_channel_rescaling():
    """What a symmetric per-channel int8 quantiser derives from the read-back weights, also after a
    per-channel factor (BatchNorm folded into the convolution), is the stored integers again."""
    torch.manual_seed(1)
    q, scale = quantise_per_channel(torch.randn(16, 8, 3, 3))
    back = dequantise_per_channel(q, scale)
    q2, scale2 = quantise_per_channel(back)
    assert torch.equal(q2, q) and torch.allclose(scale2, scale)
    folded = back * torch.rand(16)[:, None, None, None].add(0.1)
    assert torch.equal(quantise_per_channel(folded)[0], q)


def test_store_state_int8_keeps_small_and_integer_tensors_out():
    state = {
        "conv.weight": torch.randn(32, 16, 3, 3),  # 4608 elements: int8
        "small.weight": torch.randn(4, 4),  # below INT8_MIN_NUMEL: fp16
        "bn.running_var": torch.rand(2048),  # one dimension (however long): fp16
        "gat.att_src": torch.randn(1, 4, 512),  # not a "weight": fp16
        "bn.num_batches_tracked": torch.tensor(7),  # integer: unchanged
        "huge.bias": torch.tensor([1e6, 1.0]),  # beyond fp16: fp32
    }
    assert state["small.weight"].numel() < INT8_MIN_NUMEL <= state["conv.weight"].numel()
    stored, scales, kept = store_state(state, "int8")
    assert stored["conv.weight"].dtype == torch.int8 and set(scales) == {"conv.weight"}
    assert stored["small.weight"].dtype == stored["bn.running_var"].dtype == stored["gat.att_src"].dtype == torch.float16
    assert stored["bn.num_batches_tracked"].dtype == torch.int64 and kept == ["huge.bias"]
    back = read_stored_state(stored, scales)
    assert back["conv.weight"].dtype == torch.float32
    assert (back["conv.weight"] - state["conv.weight"]).abs().max() <= scales["conv.weight"].max() / 2 * (1 + 1e-5)
    fp16, none, _ = store_state(state, "fp16")
    assert not none and fp16["conv.weight"].dtype == torch.float16


def test_store_state_refuses_an_unknown_storage_and_inconsistent_scales():
    with pytest.raises(ValueError, match=r"storage must be one of \('fp16', 'int8'\); got 'int4'"):
        store_state({}, "int4")
    stored, scales, _ = store_state({"fc.weight": torch.randn(64, 32)}, "int8")
    with pytest.raises(ValueError, match=r"int8 tensors without scales \['fc.weight'\]"):
        read_stored_state(stored, {})
    with pytest.raises(ValueError, match=r"scales without tensors \['v'\]"):
        read_stored_state(stored, {**scales, "v": torch.ones(2)})
    with pytest.raises(ValueError, match="two or more dimensions"):
        quantise_per_channel(torch.ones(5))


def test_the_cli_offers_exactly_the_storages(capsys):
    from pyg_sdfl.cli import main
    from pyg_sdfl.engine.weight_storage import STORAGES

    with pytest.raises(SystemExit):
        main(["export", "--checkpoint", "x.ckpt", "--storage", "int4"])
    offered = capsys.readouterr().err.split("choose from ")[1].split(")")[0]
    assert [c.strip(" '") for c in offered.split(",")] == list(STORAGES)
