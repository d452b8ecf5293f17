"""pyg_sdfl.studies.occlusion_study and experiments/occlusion.py: the occlusion study over trained runs
(records, aggregation over seeds, reports)."""
from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

from pyg_sdfl.studies import occlusion_study


def _script():
    path = Path(__file__).resolve().parents[2] / "experiments" / "occlusion.py"
    spec = importlib.util.spec_from_file_location("occlusion_script", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A checkpoint trained for one step on synthetic faces (its stored test split: 5 faces)."""
    from pyg_sdfl.config import compose
    from pyg_sdfl.engine.training import train

    run_dir = tmp_path_factory.mktemp("runs") / "head=sdfl,seed=0"
    cfg = compose(["dataset.image_size=64", "dataset.train.num_faces=24", "++dataset.train.image_size=96",
                    "dataset.test.num_faces=5", "++dataset.test.image_size=96", "dataset.val_fraction=0.25",
                    "train.batch_size=8", "train.num_workers=0", "train.epochs=1", "train.max_steps_per_epoch=1",
                    "evaluate.grid_faces=0"])
    train(cfg, run_dir)
    return run_dir


def test_script_writes_the_reports(tiny_run, tmp_path, capsys):
    script = _script()
    out = tmp_path / "occ"
    payload = script.main([str(tiny_run), "--out", str(out), "--fractions", "0", "0.3", "--batch-size", "4"])
    printed = capsys.readouterr().out
    for name in ("occlusion.json", "occlusion.md", "occlusion.png", "occlusion_examples.png"):
        assert (out / name).stat().st_size > 0, name
    saved = json.loads((out / "occlusion.json").read_text())  # strict JSON: NaN written as null
    assert saved["command"].startswith("python experiments/occlusion.py ")
    assert {"commit", "machine", "wall_time_s"} <= set(saved["meta"])
    run = saved["runs"][0]
    assert (run["run"], run["head"], run["seed"]) == ("head=sdfl,seed=0", "sdfl", 0)
    assert run["results"]["band"]["0"]["faces"] == 5  # the checkpoint's own test split
    assert run["results"]["patches"]["0"]["nme_occluded"] is None
    agg = saved["aggregated"]["sdfl"]["results"]["band"]["0.3"]["nme_visible"]
    assert agg["mean"] == pytest.approx(run["results"]["band"]["0.3"]["nme_visible"]) and agg["std"] is None
    assert "| sdfl | 1 |" in printed and "30%" in printed
    assert "| sdfl | 1 |" in (out / "occlusion.md").read_text()
    assert list(payload["aggregated"]) == ["sdfl"] and payload["fractions"] == [0.0, 0.3]


def test_script_takes_a_dataset_object(tiny_run, tiny_faces, tmp_path):
    payload = _script().main([str(tiny_run), "--out", str(tmp_path), "--fractions", "0.1", "--kinds", "band"],
                             dataset=tiny_faces)
    assert payload["runs"][0]["results"]["band"]["0.1"]["faces"] == len(tiny_faces)
    assert set(payload["runs"][0]["results"]) == {"band"}


def test_aggregate_means_and_stds_over_seeds():
    def record(head, seed, value):
        stats = {m: value for m in occlusion_study.METRICS}
        return {"run": f"{head}{seed}", "head": head, "seed": seed, "results": {"band": {"0.1": stats}}}

    rows = occlusion_study.aggregate([record("fc", 1, 0.30), record("sdfl", 0, 0.10), record("fc", 0, 0.20),
                                      record("gat", 0, float("nan"))])
    assert list(rows) == ["sdfl", "gat", "fc"]
    fc = rows["fc"]["results"]["band"]["0.1"]["nme_visible"]
    assert rows["fc"]["seeds"] == [0, 1] and fc["values"] == [0.20, 0.30]
    assert fc["mean"] == pytest.approx(0.25) and fc["std"] == pytest.approx(np.std([0.2, 0.3], ddof=1))
    assert math.isnan(rows["sdfl"]["results"]["band"]["0.1"]["nme_visible"]["std"])
    assert math.isnan(rows["gat"]["results"]["band"]["0.1"]["nme_visible"]["mean"])
    table = occlusion_study.markdown_table(rows, "band")
    assert "| fc | 2 | 25.00 ± 7.07 |" in table and "| gat | 1 | – |" in table


def test_script_errors_are_clear(tiny_run, tmp_path):
    script = _script()
    empty = tmp_path / "unfinished"
    empty.mkdir()
    with pytest.raises(SystemExit, match="no best.ckpt"):
        script.main([str(tiny_run), str(empty), "--out", str(tmp_path / "o")])
    with pytest.raises(SystemExit, match="--root .*does not exist"):
        script.main([str(tiny_run), "--root", str(tmp_path / "no_300w"), "--out", str(tmp_path / "o")])
    assert not (tmp_path / "o").exists(), "nothing is written before the inputs are checked"


def test_script_reads_the_300w_test_faces(w300_root):
    """``--root`` replaces the stored (resolved) dataset root; faces are cropped as the model was trained."""
    from types import SimpleNamespace

    from omegaconf import OmegaConf

    from pyg_sdfl.schemes import get_scheme

    stored = {"dataset": {"name": "300w", "root": "/elsewhere/300w", "crop_scale": 1.2, "image_size": 64}}
    loaded = SimpleNamespace(config=OmegaConf.create(stored), scheme=get_scheme("300w"), image_size=64)
    faces = occlusion_study.load_test_faces(loaded, w300_root)
    assert len(faces) == 224 and faces.augment is None and faces.crop_scale == 1.2
    assert tuple(faces[0]["image"].shape) == (3, 64, 64)
    with pytest.raises(FileNotFoundError, match="pass --root"):
        occlusion_study.load_test_faces(loaded, None)


def test_committed_report_renders_back_byte_for_byte(tmp_path):
    """The committed study (results/graph_buys/occlusion): its JSON and its Markdown come back unchanged
    from write_report, and aggregating its runs again gives its aggregated table."""
    committed = Path(__file__).resolve().parents[2] / "results" / "graph_buys" / "occlusion"
    if not (committed / "occlusion.json").is_file():
        pytest.skip("no committed occlusion study")
    payload = json.loads((committed / "occlusion.json").read_text())

    def nan_for_null(value):
        if isinstance(value, dict):
            return {k: nan_for_null(v) for k, v in value.items()}
        if isinstance(value, list):
            return [nan_for_null(v) for v in value]
        return math.nan if value is None else value

    again = occlusion_study.aggregate([nan_for_null(r) for r in payload["runs"]])
    paths = occlusion_study.write_report(dict(payload, aggregated=again), tmp_path)
    assert paths["json"].read_bytes() == (committed / "occlusion.json").read_bytes()
    assert paths["markdown"].read_bytes() == (committed / "occlusion.md").read_bytes()
    first = payload["runs"][0]
    faces = first["results"]["band"]["0"]["faces"]
    assert occlusion_study.protocol_text(first, faces, payload["seed"]) == payload["protocol"]
