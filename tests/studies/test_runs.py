"""pyg_sdfl.studies.runs: run records, the aggregation over seeds and the cell formatter."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from pyg_sdfl.studies import runs


def _payload(head: dict, k: int, seed: int, nme: float, count: int = 10, occ: float | None = None) -> dict:
    test = {"all": {"nme": nme, "fr": 0.1, "auc": 0.5 + seed, "count": count}}
    if occ is not None:
        test["occluded"] = {"nme": occ, "fr": 0.2, "auc": 0.4, "count": 4}
    return {"metrics": {"test": test}, "normalisation": "inter_ocular", "crop": "1.2x landmark box, 64px",
            "config": {"seed": seed, "graph": {"k": k, "mode": "separate", "path": None}, "head": head,
                       "backbone": {"name": "resnet18"}, "train": {"milestones": [5]}}}


SDFL = {"_target_": "pyg_sdfl.nn.heads.SDFLHead", "hidden": 128}
GCN = {"_target_": "pyg_sdfl.nn.heads.PyGLayerHead", "layer": "gcn"}
FC = {"_target_": "pyg_sdfl.nn.heads.FCHead"}


def _write(root: Path, name: str, payload) -> None:
    (root / name).mkdir(parents=True)
    (root / name / "results.json").write_text(json.dumps(payload) if not isinstance(payload, str) else payload)


def test_head_label_and_flatten_config() -> None:
    assert runs.head_label(SDFL) == "sdfl" and runs.head_label(GCN) == "gcn" and runs.head_label(FC) == "fc"
    flat = runs.flatten_config(_payload(SDFL, 3, 0, 0.1)["config"])
    assert flat["graph.k"] == 3 and flat["head"] == "sdfl" and flat["backbone"] == "resnet18"
    assert flat["head.hidden"] == 128 and flat["train.milestones"] == (5,)
    with pytest.raises(ValueError, match="mapping"):
        runs.head_label("sdfl")


def test_load_results_and_varying_keys(tmp_path: Path) -> None:
    assert runs.load_results(tmp_path / "missing") == []
    _write(tmp_path, "a", _payload(SDFL, 3, 0, 0.05))
    _write(tmp_path, "b", _payload(GCN, 3, 0, 0.06))
    _write(tmp_path, "c", _payload(SDFL, 5, 1, 0.07))
    (tmp_path / "other.json").write_text(json.dumps({"metrics": [1, 2]}))  # not a run result: ignored
    records = runs.load_results(tmp_path)
    assert [r.path.parent.name for r in records] == ["a", "b", "c"]
    assert records[0].protocol == "NME / inter_ocular, crop 1.2x landmark box, 64px"
    assert runs.varying_keys(records) == ["graph.k", "head"]  # seed ignored, head.* summarised by head
    _write(tmp_path, "d", "{not json")
    with pytest.raises(ValueError, match="cannot read results file .*d"):
        runs.load_results(tmp_path)


def test_load_results_keeps_the_per_face_errors(tmp_path: Path) -> None:
    with_faces = {**_payload(SDFL, 3, 0, 0.05), "nme_per_face": {"test": [0.04, 0.06], "val": [0.1]}}
    _write(tmp_path, "a", with_faces)
    _write(tmp_path, "b", _payload(SDFL, 3, 1, 0.05))  # written before per-face errors were kept
    a, b = runs.load_results(tmp_path)
    assert set(a.nme_per_face) == {"test", "val"} and a.nme_per_face["test"].dtype == float
    assert a.nme_per_face["test"].tolist() == [0.04, 0.06] and b.nme_per_face == {}
    for bad, match in (([0.1, "x"], r"nme_per_face\['test'\] is not a list of numbers"),
                       ([[0.1], [0.2]], r"nme_per_face\['test'\] must be one value per face")):
        _write(tmp_path, "c", {**with_faces, "nme_per_face": {"test": bad}})
        with pytest.raises(ValueError, match=match):
            runs.load_results(tmp_path)
        (tmp_path / "c" / "results.json").unlink()
        (tmp_path / "c").rmdir()
    _write(tmp_path, "d", {**with_faces, "nme_per_face": [0.1]})
    with pytest.raises(ValueError, match="nme_per_face must map splits to lists"):
        runs.load_results(tmp_path)


def test_aggregate_results_mean_and_std_over_seeds(tmp_path: Path) -> None:
    _write(tmp_path, "s0", _payload(SDFL, 3, 0, 0.05, occ=0.08))
    _write(tmp_path, "s1", _payload(SDFL, 3, 1, 0.07, occ=0.10))
    _write(tmp_path, "g0", _payload(GCN, 3, 0, 0.09, occ=0.12))
    _write(tmp_path, "k5", _payload(SDFL, 5, 0, 0.06))
    _write(tmp_path, "k10", _payload(SDFL, 10, 0, 0.08))
    records = runs.load_results(tmp_path)
    rows = runs.aggregate_results(records, by=["head", "graph.k"])
    assert [(r["head"], r["graph.k"]) for r in rows] == [("gcn", 3), ("sdfl", 3), ("sdfl", 5), ("sdfl", 10)]
    sdfl = rows[1]
    assert sdfl["runs"] == 2 and sdfl["seeds"] == [0, 1] and sdfl["faces"] == 10
    assert sdfl["nme"] == pytest.approx(0.06) and sdfl["nme_std"] == pytest.approx(math.sqrt(2) * 0.01)
    assert sdfl["nme_values"] == pytest.approx([0.05, 0.07])
    assert sdfl["auc"] == pytest.approx(1.0) and sdfl["auc_std"] == pytest.approx(math.sqrt(0.5))
    assert math.isnan(rows[0]["nme_std"]) and rows[0]["runs"] == 1
    # the occluded subset exists in three runs only
    occ = runs.aggregate_results(records, by=["head"], subset="occluded", metrics=("nme",))
    assert [(r["head"], r["runs"]) for r in occ] == [("gcn", 1), ("sdfl", 2)]
    assert occ[1]["nme"] == pytest.approx(0.09) and occ[1]["faces"] == 4
    # complement: faces without the tag, (0.05*10 - 0.08*4)/6 and (0.07*10 - 0.10*4)/6
    rest = runs.aggregate_results(records, by=["head"], subset="occluded", metrics=("nme",), complement=True)
    assert rest[1]["nme_values"] == pytest.approx([0.18 / 6, 0.3 / 6]) and rest[1]["faces"] == 6
    with pytest.raises(ValueError, match="at least one key"):
        runs.aggregate_results(records, by=[])
    with pytest.raises(ValueError, match="complement"):
        runs.aggregate_results(records, by=["head"], complement=True)


def test_complement_metric() -> None:
    split = {"all": {"nme": 0.05, "count": 10}, "occluded": {"nme": 0.08, "count": 4}}
    assert runs.complement_metric(split, "occluded") == pytest.approx(0.03)
    with pytest.raises(ValueError, match="only the mean NME"):
        runs.complement_metric(split, "occluded", "fr")
    with pytest.raises(ValueError, match="no complement"):
        runs.complement_metric({"all": {"nme": 1, "count": 4}, "x": {"nme": 1, "count": 4}}, "x")
    with pytest.raises(ValueError, match="need the 'all'"):
        runs.complement_metric(split, "blur")


def test_format_table() -> None:
    rows = [{"head": "sdfl", "nme": 0.06, "nme_std": 0.0141421, "fr": 0.1, "fr_std": float("nan"),
             "runs": 2, "faces": 10}]
    text = runs.format_table(rows, ["head"], metrics=("nme", "fr"))
    assert "| head | NME (%) | FR (%) | runs | faces |" in text
    assert "| sdfl | 6.00 ± 1.41 | 10.00 | 2 | 10 |" in text


def test_mean_std_over_seeds() -> None:
    mean, std = runs.mean_std([0.2, 0.3, 0.7])
    assert mean == pytest.approx(0.4) and std == pytest.approx(math.sqrt((0.04 + 0.01 + 0.09) / 2))
    mean, std = runs.mean_std([0.5])
    assert mean == 0.5 and math.isnan(std)  # one seed: no spread
    assert all(math.isnan(v) for v in runs.mean_std([0.5, float("nan")]))
    assert runs.mean_std([0.5, float("nan"), 0.7], skip_nan=True) == pytest.approx((0.6, math.sqrt(0.02)))
    assert all(math.isnan(v) for v in runs.mean_std([float("nan")], skip_nan=True))


def test_group_by_condition_keeps_first_appearance_and_sorts_by_seed() -> None:
    items = [("b", 1), ("a", None), ("b", 0), ("a", 2), ("b", 1)]
    groups = runs.group_by_condition(items, condition=lambda t: t[0], seed=lambda t: t[1])
    assert list(groups) == ["b", "a"]
    assert groups["b"] == [("b", 0), ("b", 1), ("b", 1)] and groups["a"] == [("a", 2), ("a", None)]


def test_format_cell() -> None:
    assert runs.format_cell(0.0639, 0.0007, scale=100, digits=2) == "6.39 ± 0.07"
    assert runs.format_cell(0.376, None, digits=4) == "0.3760"
    assert runs.format_cell(0.376, float("nan"), digits=4) == "0.3760"
    assert runs.format_cell(None, 0.1) == "-" and runs.format_cell(float("nan"), None, missing="–") == "–"


def test_load_results_fills_in_keys_declared_later(tmp_path: Path) -> None:
    """A graph head's map-to-node keys were undeclared (the code's 256 / 3) before 2026-12-06: an old
    results file reads as the declared defaults, a file that sets them keeps its values, an FC head gains nothing."""
    _write(tmp_path, "old", _payload(SDFL, 3, 0, 0.05))
    _write(tmp_path, "gcn", _payload(GCN, 3, 0, 0.05))
    _write(tmp_path, "light", _payload({**SDFL, "map_hidden": 128, "map_kernel_size": 1}, 3, 0, 0.05))
    _write(tmp_path, "new", _payload({**SDFL, "map_hidden": 256, "map_kernel_size": 3}, 3, 1, 0.05))
    _write(tmp_path, "z_fc", _payload(FC, 3, 0, 0.05))
    gcn, light, new, old, fc = runs.load_results(tmp_path)
    for record in (old, gcn, new):
        assert (record.get("head.map_hidden"), record.get("head.map_kernel_size")) == (256, 3)
    assert (light.get("head.map_hidden"), light.get("head.map_kernel_size")) == (128, 1)
    assert "head.map_hidden" not in fc.config
    assert runs.varying_keys([old, new]) == []  # the same protocol, not two
    # filled in by flatten_config itself, so every reader of configs agrees (the occlusion study flattens checkpoints')
    assert runs.flatten_config(_payload(SDFL, 3, 0, 0.05)["config"])["head.map_kernel_size"] == 3
    assert "head.map_hidden" not in runs.flatten_config(_payload(SDFL, 3, 0, 0.05)["config"], prefix="x.")


def test_keys_declared_later_are_the_heads_defaults() -> None:
    """The filled-in values are what the head classes do without the key, and what the YAMLs now declare."""
    import inspect

    from pyg_sdfl.config import compose
    from pyg_sdfl.nn.heads import GraphHead

    defaults = inspect.signature(GraphHead.__init__).parameters
    for target, keys in runs.KEYS_DECLARED_LATER.items():
        for key, value in keys.items():
            assert defaults[key.split(".", 1)[1]].default == value, (target, key)
    for head in ("sdfl", "gat", "sage", "gcn"):
        cfg = compose([f"head={head}"])
        for key, value in runs.KEYS_DECLARED_LATER[str(cfg.head._target_)].items():
            assert cfg.head[key.split(".", 1)[1]] == value, (head, key)
    from omegaconf import OmegaConf

    cfg = compose([])
    for key, value in runs.TRAIN_KEYS_DECLARED_LATER.items():
        assert OmegaConf.select(cfg, key, default="absent") == value, key


def test_training_keys_declared_later_are_filled_in(tmp_path: Path) -> None:
    """A results file from before train.freeze_backbone_epochs / train.backbone_lr_scale reads as never frozen,
    one lr; a file that sets them keeps its values, and the comparison sees the difference."""
    old = _payload(SDFL, 3, 0, 0.05)
    warm = _payload(SDFL, 3, 0, 0.05)
    warm["config"]["train"].update(freeze_backbone_epochs=20, backbone_lr_scale=0.25)
    _write(tmp_path, "a_old", old)
    _write(tmp_path, "b_warm", warm)
    old_record, warm_record = runs.load_results(tmp_path)
    assert (old_record.get("train.freeze_backbone_epochs"), old_record.get("train.backbone_lr_scale")) == (0, 1.0)
    assert (warm_record.get("train.freeze_backbone_epochs"), warm_record.get("train.backbone_lr_scale")) == (20, 0.25)
    assert runs.varying_keys([old_record, warm_record]) == ["train.backbone_lr_scale", "train.freeze_backbone_epochs"]
    assert "train.backbone_lr_scale" not in runs.flatten_config({"seed": 0})
