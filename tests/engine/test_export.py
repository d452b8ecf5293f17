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


def test_int8_storage_halves_the_file_and_loads_back_close(tiny_ckpt, tmp_path):
    fp16 = export_pretrained(tiny_ckpt, tmp_path / "fp16.pt")
    out = export_pretrained(tiny_ckpt, tmp_path / "int8.pt", storage="int8")
    raw = torch.load(out, map_location="cpu", weights_only=True)
    int8 = sorted(k for k, v in raw["model"].items() if v.dtype == torch.int8)
    assert raw["format"] == 2 and int8 and sorted(raw["int8_scales"]) == int8
    assert raw["meta"]["storage"].startswith("int8 weights")
    assert out.stat().st_size < 0.75 * fp16.stat().st_size
    a, b = load_model(fp16), load_model(out)
    stored = raw["model"][int8[0]].float() * raw["int8_scales"][int8[0]].view(-1, *[1] * (raw["model"][int8[0]].dim() - 1))
    assert torch.equal(b.model.state_dict()[int8[0]], stored)  # read back as s_o q, in fp32
    images = torch.randn(2, 3, a.image_size, a.image_size)
    with torch.no_grad():
        assert (a.model(images) - b.model(images)).abs().max() < 0.05 * a.image_size


def test_a_pyg_sdfl_without_int8_storage_refuses_the_file(tiny_ckpt, tmp_path, monkeypatch):
    """Format 2 keeps an older reader from loading the raw integers as weights."""
    from pyg_sdfl.engine import checkpoint

    out = export_pretrained(tiny_ckpt, tmp_path / "int8.pt", storage="int8")
    monkeypatch.setattr(checkpoint, "NEWEST_FORMAT", 1)
    with pytest.raises(CheckpointError, match="has format 2, newer than this pyg_sdfl reads"):
        load_model(out)


def test_an_int8_file_with_a_lost_scale_is_one_clear_error(tiny_ckpt, tmp_path):
    raw = torch.load(export_pretrained(tiny_ckpt, tmp_path / "int8.pt", storage="int8"), weights_only=True)
    lost = sorted(raw["int8_scales"])[0]
    del raw["int8_scales"][lost]
    torch.save(raw, tmp_path / "broken.pt")
    with pytest.raises(CheckpointError, match=r"broken\.pt: int8 storage is inconsistent: .*without scales \['"
                       + lost.replace(".", r"\.")):
        load_model(tmp_path / "broken.pt")


def test_re_exporting_an_exported_file_keeps_its_provenance(tiny_ckpt, tmp_path):
    first = export_pretrained(tiny_ckpt, tmp_path / "fp16.pt", command="tiny run", data="synthetic faces",
                              metrics={"test": {"nme": 0.5}})
    again = export_pretrained(first, tmp_path / "int8.pt", storage="int8", command="pyg-sdfl export --storage int8",
                              notes="smaller")
    meta = torch.load(again, weights_only=True)["meta"]
    assert meta["command"] == "tiny run" and meta["data"] == "synthetic faces" and meta["metrics"] == {"test": {"nme": 0.5}}
    assert meta["re_export"]["command"] == "pyg-sdfl export --storage int8" and meta["re_export"]["notes"] == "smaller"
    assert meta["re_export"]["source"] == "fp16.pt" and meta["re_export"]["source_storage"] == "fp16"
    assert torch.load(again, weights_only=True)["box_mapping"] == torch.load(first, weights_only=True)["box_mapping"]


def test_int8_tensors_without_any_scales_are_refused(tiny_ckpt, tmp_path):
    """A format-2 file whose scales entry is gone must not load its raw integers as weights."""
    raw = torch.load(export_pretrained(tiny_ckpt, tmp_path / "int8.pt", storage="int8"), weights_only=True)
    del raw["int8_scales"]
    torch.save(raw, tmp_path / "no_scales.pt")
    with pytest.raises(CheckpointError, match=r"no_scales\.pt: int8 storage is inconsistent: .*int8 tensors without scales"):
        load_model(tmp_path / "no_scales.pt")


def test_re_export_keeps_an_absent_box_mapping_and_never_overwrites_its_source(tiny_ckpt, tmp_path):
    first = export_pretrained(tiny_ckpt, tmp_path / "none.pt", box_mapping=None)
    again = export_pretrained(first, tmp_path / "int8.pt", storage="int8")
    assert torch.load(again, weights_only=True)["box_mapping"] is None
    before = first.read_bytes()
    with pytest.raises(ValueError, match="would overwrite its own source"):
        export_pretrained(first, first, storage="int8")
    assert first.read_bytes() == before


def test_cli_storage_int8_and_a_re_export_needs_out(tiny_ckpt, tmp_path, capsys):
    from pyg_sdfl.cli import main

    out = tmp_path / "int8.pt"
    assert main(["export", "--checkpoint", str(tiny_ckpt), "--storage", "int8", "--out", str(out)]) == 0
    assert torch.load(out, weights_only=True)["format"] == 2
    capsys.readouterr()
    assert main(["export", "--checkpoint", str(out), "--storage", "fp16"]) == 2
    assert "is an exported weights file: give --out FILE" in capsys.readouterr().err
