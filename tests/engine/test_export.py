"""engine.export: a training checkpoint -> the compact fp16 weights file, re-read strictly."""
from __future__ import annotations

import pytest
import torch

from pyg_sdfl.engine.checkpoint import EXPORTED_KIND, CheckpointError, load_model
from pyg_sdfl.engine.export import export_pretrained


def test_export_round_trip(tiny_ckpt, tmp_path):
    out = export_pretrained(tiny_ckpt, tmp_path / "w.pt", metrics={"test": {"nme": 0.5}}, command="tiny run",
                            data="synthetic faces", machine="test machine")
    raw = torch.load(out, map_location="cpu", weights_only=True)
    assert raw["kind"] == EXPORTED_KIND and "optimizer" not in raw and "rng" not in raw
    floats = [v for v in raw["model"].values() if v.is_floating_point()]
    assert floats and all(v.dtype == torch.float16 for v in floats)
    assert raw["meta"]["metrics"] == {"test": {"nme": 0.5}} and raw["meta"]["command"] == "tiny run"
    assert "root" not in raw["config"]["dataset"]  # no paths of the training machine
    assert out.stat().st_size < 0.6 * tiny_ckpt.stat().st_size
    full, small = load_model(tiny_ckpt), load_model(out)
    images = torch.randn(2, 3, full.image_size, full.image_size)
    with torch.no_grad():
        a, b = full.model(images), small.model(images)
    assert (a - b).abs().max() < 0.05 * full.image_size  # fp16 rounding only
    with pytest.raises(ValueError, match="MB limit"):
        export_pretrained(tiny_ckpt, tmp_path / "too_big.pt", max_mb=0.01)
    assert not (tmp_path / "too_big.pt").exists()


def test_strict_loading_of_a_tampered_file(tiny_ckpt, tmp_path):
    out = export_pretrained(tiny_ckpt, tmp_path / "w.pt")
    payload = torch.load(out, map_location="cpu", weights_only=True)
    dropped = sorted(payload["model"])[0]
    del payload["model"][dropped]
    torch.save(payload, tmp_path / "tampered.pt")
    with pytest.raises(CheckpointError, match="missing keys: " + dropped.replace(".", r"\.")):
        load_model(tmp_path / "tampered.pt")


def test_export_refuses_a_file_that_is_not_a_training_checkpoint(tmp_path):
    torch.save({"model": {}}, tmp_path / "bare.pt")
    with pytest.raises(CheckpointError, match="lacks 'config'"):
        export_pretrained(tmp_path / "bare.pt", tmp_path / "w.pt")
    assert not (tmp_path / "w.pt").exists()
