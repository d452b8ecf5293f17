"""pyg_sdfl.studies.comparison and experiments/aggregate.py: the four comparison tables from sweep results.

The fixture runs are results.json files laid out as a real sweep writes them
(``runs/<preset>/<override_dirname>/results.json``), with the config and the Hydra choices of a real
composition of that preset and condition, test/val NMEs chosen by hand and per-face NMEs that average
to them: a fixed face-difficulty profile (the same faces in the same order in every run) times the run's
NME, plus, where a test asks for it, zero-mean per-face noise of the run's own.
"""
from __future__ import annotations

import copy
import functools
import importlib.util
import json
import statistics
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import pytest
from omegaconf import OmegaConf

import numpy as np

from pyg_sdfl.config import compose
from pyg_sdfl.studies import comparison, paired
from pyg_sdfl.studies.runs import flatten_config

REPO = Path(__file__).resolve().parents[2]


def _script():
    """``experiments/aggregate.py`` as a module (its ``main`` is the command line)."""
    spec = importlib.util.spec_from_file_location("aggregate_script", REPO / "experiments" / "aggregate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ============================================================================ fixture runs
@functools.lru_cache(maxsize=None)
def _composed(overrides: Tuple[str, ...]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """The resolved job config (no ``hydra`` key) and the Hydra group choices of one composition."""
    job = compose(overrides)
    full = compose(overrides, return_hydra_config=True)
    config = OmegaConf.to_container(job, resolve=True)
    choices = {k: v for k, v in OmegaConf.to_container(full.hydra.runtime.choices).items() if not k.startswith("hydra/")}
    return config, choices


def test_fixture_config_is_a_real_composition() -> None:
    config, choices = _composed(("experiment=head_comparison", "dataset.root=/x", "head=gat"))
    assert "hydra" not in config
    assert config["head"]["_target_"] == "pyg_sdfl.nn.heads.PyGLayerHead" and config["head"]["layer"] == "gat"
    assert config["graph"]["k"] == 3 and config["graph"]["mode"] == "separate"
    assert config["loss"]["point"]["_target_"] == "pyg_sdfl.losses.SoftWingLoss" and config["loss"]["lambda_"] == 1.0
    assert config["dataset"]["train"]["root"] == "/x"  # interpolations resolved
    assert choices["experiment"] == "head_comparison" and choices["head"] == "gat" and choices["variant"] is None


def fr_of(nme: float) -> float:
    """Made-up but known FR and AUC for a run of test NME ``nme``."""
    return round(2 * nme, 6)


def auc_of(nme: float) -> float:
    return round(1 - 5 * nme, 6)


@functools.lru_cache(maxsize=None)
def _difficulty(faces: int) -> np.ndarray:
    """How hard each face is, relative to the mean (mean exactly 1, skewed like real NMEs)."""
    profile = np.random.default_rng(12345).gamma(4.0, 0.25, faces)
    return profile / profile.mean()


def per_face(nme: float, faces: int, noise: float = 0.0, key: str = "") -> List[float]:
    """Per-face NMEs of a run of mean ``nme``: ``nme * difficulty`` plus zero-mean Gaussian noise of std
    ``noise`` drawn from ``key`` (the run's own faces better and worse than its mean)."""
    errors = nme * _difficulty(faces)
    if noise:
        extra = np.random.default_rng(zlib.crc32(key.encode())).normal(0.0, noise, faces)
        errors = errors + extra - extra.mean()
    return errors.tolist()


def make_run(root: Path, experiment: str, seed: int, test_nme: float, val_nme: float, *, head: Optional[str] = None,
             k: Optional[int] = None, variant: Optional[str] = None, wall: float = 100.0,
             edit: Optional[Callable[[Dict[str, Any]], None]] = None, face_noise: float = 0.0,
             with_per_face: bool = True, test_faces: int = 224) -> Path:
    """Write ``root/<experiment>/<override_dirname>/results.json`` as ``run_experiment`` would, with
    per-face NMEs (:func:`per_face`, noise ``face_noise``) unless ``with_per_face`` is false (a run
    exported before they were kept)."""
    overrides = [f"experiment={experiment}", "dataset.root=/x", f"seed={seed}"]
    swept = {"seed": seed}
    for name, value in (("head", head), ("graph.k", k), ("variant", variant)):
        if value is not None:
            overrides.append(f"{name}={value}")
            swept[name] = value
    config, choices = _composed(tuple(overrides))
    config = copy.deepcopy(config)
    if edit is not None:
        edit(config)
    stats = lambda nme, count: {"nme": nme, "fr": fr_of(nme), "auc": auc_of(nme), "count": count}  # noqa: E731
    payload = {
        "metrics": {
            "val": {"all": stats(val_nme, 201), "helen": stats(val_nme + 0.01, 88)},
            "test": {"all": stats(test_nme, test_faces), "lfpw": stats(test_nme, test_faces),
                     "common": stats(test_nme, test_faces)},
        },
        "best_epoch": 9,
        "best_val_nme": val_nme,
        "history": [{"epoch": e, "loss": 50.0 / e, "lr": 0.002, "faces_per_s": 90.0, "val_nme": val_nme + 0.01 * (10 - e),
                     "val_fr": 0.1, "val_auc": 0.3} for e in range(1, 11)],
        "dataset": "300w",
        "normalisation": "inter_ocular",
        "crop": "1.2x landmark box, 96px",
        "config": config,
        "choices": dict(choices),
        "meta": {"commit": "abc123", "machine": "vm x86_64 2 cpus", "device": "cpu", "torch": "2.13.0+cpu",
                 "torch_threads": 1, "python": "3.11.7", "wall_time_s": wall, "cpu": "Intel(R) Xeon(R) Processor",
                 "cpu_flags": ["avx512f", "avx512_bf16", "amx_bf16"]},
    }
    folder = root / experiment / ",".join(f"{key}={value}" for key, value in sorted(swept.items()))
    if with_per_face:
        payload["nme_per_face"] = {"val": per_face(val_nme, 201),
                                   "test": per_face(test_nme, test_faces, face_noise, str(folder.relative_to(root)))}
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps(payload, indent=2))
    (folder / "results.md").write_text("# not JSON\n")
    return folder / "results.json"


# hand-picked test NMEs (seed 0, seed 1); val NME = test NME + 0.01
HEADS = {"sdfl": (0.050, 0.052), "fc": (0.0505, 0.0525), "gat": (0.060, 0.062), "transformer": (0.040, 0.041),
         "gcn": (0.070,)}
K_SWEEP = {1: (0.058, 0.060), 67: (0.0512, 0.0530)}
ABLATION = {"binary_adjacency": (0.056, 0.057), "l1_loss": (0.049, 0.055)}
MINING = {"paper": (0.049,), "joint_mining": (0.047, 0.048), "random_graph": (0.070, 0.075)}


def write_sweep(root: Path, heads=HEADS, k_sweep=K_SWEEP, ablation=ABLATION, mining=MINING) -> Path:
    """The four presets as the real sweep ran them: the k=3 / paper reference only in head_comparison
    (the mining preset also ran ``paper`` for seed 0, to check that its own run wins)."""
    walls = iter(range(100, 1000, 10))
    for head, nmes in heads.items():
        for seed, nme in enumerate(nmes):
            make_run(root, "head_comparison", seed, nme, nme + 0.01, head=head, wall=float(next(walls)))
    for k, nmes in k_sweep.items():
        for seed, nme in enumerate(nmes):
            make_run(root, "k_sweep", seed, nme, nme + 0.01, k=k, wall=float(next(walls)))
    for preset, table in (("ablation", ablation), ("mining", mining)):
        for variant, nmes in table.items():
            for seed, nme in enumerate(nmes):
                make_run(root, preset, seed, nme, nme + 0.01, variant=variant, wall=float(next(walls)))
    return root


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    return write_sweep(tmp_path_factory.mktemp("sweep") / "runs")


@pytest.fixture(scope="module")
def built(sweep) -> comparison.Comparison:
    warnings = []
    runs = comparison.load_runs([sweep], warnings)
    return comparison.build_comparison(runs, warnings=warnings)


def _table(comp: comparison.Comparison, name: str) -> comparison.ComparisonTable:
    return next(t for t in comp.tables if t.spec.name == name)


def _row(table: comparison.ComparisonTable, condition: Any) -> Dict[str, Any]:
    return next(r for r in table.rows if r["condition"] == condition)


def _expected_verdict(ref: Sequence[float], row: Sequence[float]) -> str:
    """The seed-spread rule by hand."""
    if len(ref) < 2 or len(row) < 2:
        return "n/a (1 seed)"
    delta = statistics.fmean(row) - statistics.fmean(ref)
    if abs(delta) <= statistics.stdev(ref) + statistics.stdev(row):
        return "no significant difference"
    return "better" if delta < 0 else "worse"


def _expected_paired(ref: Sequence[float], row: Sequence[float]) -> str:
    """The paired test by hand for noiseless fixture runs (seed ``s`` at index ``s``): every face's
    difference is ``(row_s - ref_s) * difficulty``, one sign, so a seed's interval excludes 0 exactly
    when ``row_s != ref_s``."""
    deltas = [r - f for r, f in zip(row, ref)]
    if len(deltas) < 2:
        return "n/a (1 seed)"
    if all(d < 0 for d in deltas):
        return "better"
    if all(d > 0 for d in deltas):
        return "worse"
    return "no significant difference"


def _check_row_verdicts(row: Dict[str, Any], ref: Sequence[float], nmes: Sequence[float]) -> None:
    assert row["seed_verdict"] == _expected_verdict(ref, nmes)
    assert row["paired_verdict"] == _expected_paired(ref, nmes)
    both = {row["seed_verdict"], row["paired_verdict"]}
    if any(v.startswith("n/a") for v in both):
        assert row["verdict"].startswith("n/a")
    elif len(both) == 1 and both < {"better", "worse"}:
        assert row["verdict"] == row["paired_verdict"]
    else:
        assert row["verdict"] == "no significant difference"
    # one entry per seed both rows ran, each the same seed's difference
    assert [e["seed"] for e in row["paired"]] == list(range(min(len(ref), len(nmes))))
    for e in row["paired"]:
        assert e["mean_diff"] == pytest.approx(nmes[e["seed"]] - ref[e["seed"]], abs=1e-12)
        assert e["ci_low"] <= e["mean_diff"] <= e["ci_high"] and e["faces"] == 224


# ============================================================================ the verdict rule
def test_verdict_rule_by_hand() -> None:
    # ref 0.050, 0.052: mean 0.051, std 0.0014142; gat 0.060, 0.062: delta 0.010 > 0.0028284
    delta, text = comparison.verdict([0.050, 0.052], [0.060, 0.062])
    assert delta == pytest.approx(0.010) and text == "worse"
    assert comparison.verdict([0.050, 0.052], [0.040, 0.041]) == (pytest.approx(-0.0105), "better")
    # delta 0.0005 inside the spread 0.0028284
    assert comparison.verdict([0.050, 0.052], [0.0505, 0.0525])[1] == "no significant difference"
    # the bound is strict: |delta| == spread is not significant (spread 0 here, delta 0)
    assert comparison.verdict([1.0, 1.0], [1.0, 1.0])[1] == "no significant difference"
    assert comparison.verdict([1.0, 1.0], [2.0, 2.0])[1] == "worse"
    # delta 2 vs spread 2*sqrt(2): not significant although the means differ
    assert comparison.verdict([0.0, 2.0], [2.0, 4.0])[1] == "no significant difference"
    assert comparison.verdict([0.05], [0.09, 0.10]) == (pytest.approx(0.045), "n/a (1 seed)")
    assert comparison.verdict([0.05, 0.06], [0.09])[1] == "n/a (1 seed)"
    with pytest.raises(ValueError, match="both sides"):
        comparison.verdict([], [0.1])


# ============================================================================ the tables
def test_heads_table_means_stds_and_verdicts(built) -> None:
    heads = _table(built, "heads")
    # reference first, then the preset's order
    assert [r["condition"] for r in heads.rows] == ["sdfl", "fc", "gcn", "gat", "transformer"]
    assert heads.borrowed == []
    ref = heads.rows[0]
    assert ref["reference"] and ref["verdict"] == "reference" and ref["delta_nme"] is None
    for head, nmes in HEADS.items():
        row = _row(heads, head)
        assert row["seeds"] == list(range(len(nmes))) and row["faces"] == 224
        assert row["nme"] == pytest.approx(statistics.fmean(nmes))
        assert row["nme_values"] == pytest.approx(list(nmes))
        assert row["fr"] == pytest.approx(statistics.fmean(fr_of(n) for n in nmes))
        assert row["auc"] == pytest.approx(statistics.fmean(auc_of(n) for n in nmes))
        assert row["val_nme"] == pytest.approx(statistics.fmean(n + 0.01 for n in nmes))
        if len(nmes) > 1:
            assert row["nme_std"] == pytest.approx(statistics.stdev(nmes))
            assert row["auc_std"] == pytest.approx(statistics.stdev([auc_of(n) for n in nmes]))
            assert row["val_nme_std"] == pytest.approx(statistics.stdev([n + 0.01 for n in nmes]))
        else:
            assert row["nme_std"] is None and row["val_nme_std"] is None
        if head != "sdfl":
            assert row["delta_nme"] == pytest.approx(statistics.fmean(nmes) - statistics.fmean(HEADS["sdfl"]))
            _check_row_verdicts(row, HEADS["sdfl"], nmes)
            assert [e["run"] for e in row["paired"]] == row["runs"][:len(row["paired"])]
            assert [e["reference_run"] for e in row["paired"]] == ref["runs"][:len(row["paired"])]
        assert row["runs"] == [f"head_comparison/head={head},seed={s}" for s in range(len(nmes))]
    assert ref["paired"] == [] and ref["paired_verdict"] is None and ref["seed_verdict"] is None
    conditions = ("fc", "gcn", "gat", "transformer")
    assert [_row(heads, h)["verdict"] for h in conditions] == \
        ["no significant difference", "n/a (1 seed)", "worse", "better"]
    # fc: +0.05 pp on every face in both seeds, so the paired test says worse, but that is inside the seed spread
    assert [_row(heads, h)["paired_verdict"] for h in conditions] == ["worse", "n/a (1 seed)", "worse", "better"]
    assert [_row(heads, h)["seed_verdict"] for h in conditions] == \
        ["no significant difference", "n/a (1 seed)", "worse", "better"]
    assert any("heads: head=gcn lacks seed(s) [1]" in w for w in built.warnings)


def test_k_table_borrows_the_reference_from_head_comparison(built) -> None:
    table = _table(built, "k_sweep")
    assert [r["condition"] for r in table.rows] == [1, 3, 67]  # in order of k
    ref = _row(table, 3)
    assert ref["reference"] and ref["nme_values"] == pytest.approx(list(HEADS["sdfl"]))
    assert table.borrowed == ["head_comparison/head=sdfl,seed=0", "head_comparison/head=sdfl,seed=1"]
    assert ref["runs"] == table.borrowed
    assert table.num_points == 68 and _row(table, 67)["label"] == "67 (dense, N-1)"
    for k, nmes in K_SWEEP.items():
        row = _row(table, k)
        assert row["delta_nme"] == pytest.approx(statistics.fmean(nmes) - statistics.fmean(HEADS["sdfl"]))
        _check_row_verdicts(row, HEADS["sdfl"], nmes)
        assert [e["reference_run"] for e in row["paired"]] == table.borrowed  # paired with the borrowed runs
    assert _row(table, 1)["verdict"] == "worse" and _row(table, 67)["verdict"] == "no significant difference"


def test_ablation_and_mining_tables(built) -> None:
    ablation = _table(built, "ablation")
    assert [r["condition"] for r in ablation.rows] == ["paper", "binary_adjacency", "l1_loss"]  # paper first
    assert _row(ablation, "paper")["nme_values"] == pytest.approx(list(HEADS["sdfl"]))
    assert len(ablation.borrowed) == 2
    assert _row(ablation, "binary_adjacency")["verdict"] == "worse"
    assert _row(ablation, "l1_loss")["verdict"] == "no significant difference"  # 0.049, 0.055: wide spread
    assert _row(ablation, "l1_loss")["paired_verdict"] == "no significant difference"  # -0.1 pp, then +0.3 pp
    # mining ran paper for seed 0 itself: that run wins; seed 1 comes from head_comparison
    mining = _table(built, "mining")
    assert [r["condition"] for r in mining.rows] == ["paper", "joint_mining", "random_graph"]
    paper = _row(mining, "paper")
    assert paper["runs"] == ["mining/seed=0,variant=paper", "head_comparison/head=sdfl,seed=1"]  # seed order
    assert paper["nme_values"] == pytest.approx([MINING["paper"][0], HEADS["sdfl"][1]])
    assert mining.borrowed == ["head_comparison/head=sdfl,seed=1"]
    ref = [MINING["paper"][0], HEADS["sdfl"][1]]
    for variant in ("joint_mining", "random_graph"):
        _check_row_verdicts(_row(mining, variant), ref, MINING[variant])
        assert [e["reference_run"] for e in _row(mining, variant)["paired"]] == paper["runs"]
    assert _row(mining, "random_graph")["verdict"] == "worse" and _row(mining, "joint_mining")["verdict"] == "better"


def test_markdown_names_protocol_rule_and_borrowed_runs(built) -> None:
    text = comparison.render_markdown(built)
    assert comparison.VERDICT_RULE in text
    protocol, _ = _composed(("experiment=head_comparison", "dataset.root=/x"))  # the presets' budget, whatever it is
    assert f"{protocol['dataset']['image_size']} px" in text and f"{protocol['train']['epochs']} epochs" in text
    assert "crop 1.2x" in text and "resnet18" in text
    assert "precision bf16" in text and "Seeds: 0, 1" in text and "abc123" in text and "vm x86_64 2 cpus" in text
    assert "CPU Intel(R) Xeon(R) Processor (avx512f avx512_bf16 amx_bf16)" in text
    assert "resnet18 initialised from the shared backbone backbone_pretrain/best.ckpt;" in text
    runs = built.runs
    total = sum(r.record.meta["wall_time_s"] for r in runs)
    assert len(runs) == sum(map(len, [*HEADS.values(), *K_SWEEP.values(), *ABLATION.values(), *MINING.values()]))
    assert f"over {len(runs)} runs, {total / len(runs):.0f} s per run" in text
    assert "| **sdfl** (reference) | 0, 1 | 5.10 ± 0.14 |" in text
    gat = next(line for line in text.splitlines() if line.startswith("| gat |"))
    assert gat.startswith("| gat | 0, 1 | 6.10 ± 0.14 | 12.20 ± 0.28 | 0.6950 ± 0.0071 | 7.10 ± 0.14 | +1.00 | "
                          "0: +1.00 [+0.9")  # every face +1 pp x its difficulty: the interval is near +1.00
    assert "<br>1: +1.00 [+0.9" in gat and gat.endswith("] | worse | worse | worse |")
    gcn = next(line for line in text.splitlines() if line.startswith("| gcn |"))
    # Δ NME is against the reference's mean over seeds 0, 1 (5.10); the paired Δ against its seed-0 run (5.00)
    assert gcn.startswith("| gcn | 0 | 7.00 | 14.00 | 0.6500 | 8.00 | +1.90 | 0: +2.00 [")
    assert gcn.endswith("] | n/a (1 seed) | n/a (1 seed) | n/a (1 seed) |")
    assert "| fc | 0, 1 |" in text and "| worse | no significant difference | no significant difference |" in text
    assert "head_comparison/head=sdfl,seed=0, head_comparison/head=sdfl,seed=1" in text
    assert "k = N-1 = 67 is the dense graph" in text
    assert ("| k | seeds | test NME (%) | FR@10 (%) | AUC@10 | val NME (%) | Δ NME vs k=3 (pp) | "
            "paired Δ (pp) per seed: mean [95% CI] | paired | seed spread | verdict |") in text
    assert "| **3** (reference) | 0, 1 | 5.10 ± 0.14 | 10.20 ± 0.28 | 0.7450 ± 0.0071 | 6.10 ± 0.14 " \
        "| — | — | — | — | reference |" in text
    assert "Reference row variant=paper, seed(s) 1: this preset ran no reference run for them; taken from the " \
        "head_comparison SDFL run(s) with the identical config: head_comparison/head=sdfl,seed=1." in text
    assert "NME normalised by inter-ocular distance; FR and AUC at 10%" in text
    summary = comparison.summary_dict(built)
    assert summary["rule"] == comparison.VERDICT_RULE
    assert set(summary["tables"]) == {"heads", "k_sweep", "ablation", "mining"}
    assert summary["meta"]["wall_time_s_total"] == pytest.approx(total)
    protocol, _ = _composed(("experiment=head_comparison", "dataset.root=/x"))
    assert summary["protocol"]["image_size"] == [protocol["dataset"]["image_size"]]
    assert summary["protocol"]["epochs"] == [protocol["train"]["epochs"]]


# ============================================================================ paired statistics, three seeds
REF3 = (0.050, 0.052, 0.051)  # the reference's test NME in seeds 0, 1, 2
GAIN = 0.004  # every variant below: 0.4 pp lower mean NME than the reference run of the same seed


def _three_seed_sweep(root: Path) -> Path:
    """head_comparison with three seeds: sdfl (reference), gat (0.4 pp better on every face, small face
    noise), gcn (the same means, face noise 25x larger), fc (the same means, no per-face errors), sage
    (the same means, scored on 200 faces)."""
    for seed, nme in enumerate(REF3):
        make_run(root, "head_comparison", seed, nme, nme + 0.01, head="sdfl", face_noise=0.002)
        make_run(root, "head_comparison", seed, nme - GAIN, nme + 0.01, head="gat", face_noise=0.002)
        make_run(root, "head_comparison", seed, nme - GAIN, nme + 0.01, head="gcn", face_noise=0.05)
        make_run(root, "head_comparison", seed, nme - GAIN, nme + 0.01, head="fc", with_per_face=False)
        make_run(root, "head_comparison", seed, nme - GAIN, nme + 0.01, head="sage", test_faces=200)
    return root


@pytest.fixture(scope="module")
def three_seeds(tmp_path_factory) -> Tuple[Path, comparison.Comparison]:
    root = _three_seed_sweep(tmp_path_factory.mktemp("three") / "runs")
    warnings: list = []
    return root, comparison.build_comparison(comparison.load_runs([root]), warnings=warnings)


def test_a_consistent_gain_in_every_seed_is_better(three_seeds) -> None:
    _, built = three_seeds
    gat = _row(_table(built, "heads"), "gat")
    assert gat["seeds"] == [0, 1, 2] and gat["seed_verdict"] == "better"  # 0.4 pp > 0.1 + 0.1 pp spread
    assert [e["seed"] for e in gat["paired"]] == [0, 1, 2]
    for e in gat["paired"]:
        assert e["mean_diff"] == pytest.approx(-GAIN, abs=1e-12)  # the face noise has mean 0 in every run
        assert e["ci_high"] < 0 and e["ci_low"] < -GAIN < e["ci_high"] and e["faces"] == 224
        assert e["run"] == f"head_comparison/head=gat,seed={e['seed']}"
        assert e["reference_run"] == f"head_comparison/head=sdfl,seed={e['seed']}"
    assert gat["paired_verdict"] == "better" and gat["verdict"] == "better"


def test_a_mean_gain_drowned_in_face_noise_is_not_better(three_seeds) -> None:
    _, built = three_seeds
    gcn = _row(_table(built, "heads"), "gcn")
    # the seed means are those of gat: the seed spread alone would call it better
    assert gcn["nme_values"] == pytest.approx(_row(_table(built, "heads"), "gat")["nme_values"])
    assert gcn["seed_verdict"] == "better"
    # but on the same faces the difference is noise: 1.96 * 0.05 / sqrt(224) = 0.65 pp either side of -0.4 pp
    assert all(e["mean_diff"] == pytest.approx(-GAIN, abs=1e-12) for e in gcn["paired"])
    assert any(e["ci_low"] < 0 < e["ci_high"] for e in gcn["paired"])
    assert gcn["paired_verdict"] == "no significant difference"
    assert gcn["verdict"] == "no significant difference"


def test_runs_without_per_face_errors_get_no_verdict(three_seeds) -> None:
    _, built = three_seeds
    fc = _row(_table(built, "heads"), "fc")
    assert fc["seed_verdict"] == "better" and fc["paired"] == []
    assert fc["paired_verdict"] == "n/a (no per-face errors)"
    assert fc["verdict"] == "n/a (no per-face errors; seed spread: better)"
    assert any(w.startswith("heads: 3 run(s) have no per-face test errors (e.g. head_comparison/head=fc,seed=0")
               for w in built.warnings)


def test_runs_scored_on_different_faces_are_not_paired(three_seeds) -> None:
    _, built = three_seeds
    sage = _row(_table(built, "heads"), "sage")
    assert sage["paired"] == [] and sage["paired_verdict"] == "n/a (per-face errors do not match)"
    assert sage["verdict"] == "n/a (per-face errors do not match; seed spread: better)"
    assert "no paired statistics for head_comparison/head=sage,seed=0 against head_comparison/head=sdfl,seed=0: " \
        "head_comparison/head=sage,seed=0 scored 200 test faces, head_comparison/head=sdfl,seed=0 224" in built.warnings


def test_three_seed_markdown_and_paired_figure(three_seeds, tmp_path) -> None:
    _, built = three_seeds
    text = comparison.render_markdown(built)
    gat = next(line for line in text.splitlines() if line.startswith("| gat |"))
    assert gat.count("<br>") == 2 and "0: -0.40 [-0.4" in gat and "2: -0.40 [-0.4" in gat
    assert gat.endswith("| better | better | better |")
    assert "| n/a (no per-face errors) | better | n/a (no per-face errors; seed spread: better) |" in text
    paths = comparison.write_outputs(built, tmp_path)
    assert paths["heads_paired"].stat().st_size > 1000
    assert comparison.format_paired([{"seed": 0, "mean_diff": -0.0012, "ci_low": -0.002, "ci_high": -0.0005}]) == \
        "0: -0.12 [-0.20, -0.05]"
    assert comparison.format_paired([]) == "—"


def test_check_same_faces_catches_a_list_that_is_not_the_reported_split(three_seeds, tmp_path) -> None:
    root, _ = three_seeds
    runs = {r.id: r for r in comparison.load_runs([root])}
    gat, sdfl = runs["head_comparison/head=gat,seed=0"], runs["head_comparison/head=sdfl,seed=0"]
    assert comparison.check_same_faces(gat, sdfl, "test") == 224
    payload = json.loads(gat.record.path.read_text())
    payload["nme_per_face"]["test"] = payload["nme_per_face"]["val"][:1] * 224  # another split's numbers
    (tmp_path / "head_comparison" / "head=gat,seed=0").mkdir(parents=True)
    (tmp_path / "head_comparison" / "head=gat,seed=0" / "results.json").write_text(json.dumps(payload))
    wrong = comparison.load_runs([tmp_path])[0]
    with pytest.raises(ValueError, match=r"head=gat,seed=0: its per-face test errors average .*, its reported NME is"):
        comparison.check_same_faces(wrong, sdfl, "test")
    with pytest.raises(ValueError, match="has no per-face val2 errors"):
        comparison.check_same_faces(gat, sdfl, "val2")


def test_subsets_other_than_all_have_no_paired_statistics(three_seeds) -> None:
    root, _ = three_seeds
    built = comparison.build_comparison(comparison.load_runs([root]), subset="lfpw")
    gat = _row(_table(built, "heads"), "gat")
    assert gat["paired"] == [] and gat["paired_verdict"] == "n/a (no per-face errors for subset 'lfpw')"
    assert gat["verdict"] == "n/a (no per-face errors for subset 'lfpw'; seed spread: better)"


# ============================================================================ files and round trip
def test_cli_writes_everything_and_the_export_round_trips(sweep, tmp_path, capsys) -> None:
    out = tmp_path / "graph_buys"
    assert _script().main([str(sweep), "--out", str(out), "--export-runs", str(out / "runs")]) == 0
    printed = capsys.readouterr()
    assert "## heads" in printed.out and "warning: heads: head=gcn lacks seed(s) [1]" in printed.err
    for name in ("tables.md", "summary.json", "heads.png", "k_sweep.png", "ablation.png", "mining.png",
                 "heads_paired.png", "k_sweep_paired.png", "ablation_paired.png", "mining_paired.png"):
        assert (out / name).stat().st_size > 1000, name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["tables"]["k_sweep"]["rows"][1]["condition"] == 3
    assert summary["tables"]["heads"]["rows"][2]["nme_std"] is None  # gcn: one seed, strict JSON null

    exported = sorted(p.relative_to(out / "runs").as_posix() for p in (out / "runs").rglob("*.json"))
    originals = sorted(f"{p.parent.parent.name}/{p.parent.name}.json" for p in sweep.rglob("results.json"))
    assert exported == originals
    compact = json.loads((out / "runs" / "k_sweep" / "graph.k=67,seed=1.json").read_text())
    full = json.loads((sweep / "k_sweep" / "graph.k=67,seed=1" / "results.json").read_text())
    assert compact["nme_per_face"] == full["nme_per_face"]  # kept, exactly: the paired statistics come back
    assert compact["history"] == [{"epoch": h["epoch"], "val_nme": h["val_nme"]} for h in full["history"]]
    assert {k: v for k, v in compact.items() if k != "history"} == \
        {k: v for k, v in full.items() if k != "history"}
    assert summary["tables"]["k_sweep"]["rows"][2]["paired"][0]["run"] == "k_sweep/graph.k=67,seed=0"

    again = tmp_path / "again"
    assert _script().main([str(out / "runs"), "--out", str(again)]) == 0
    assert (again / "tables.md").read_text() == (out / "tables.md").read_text()
    assert json.loads((again / "summary.json").read_text()) == summary
    # the out folder itself (summary.json + runs/) reads back too: summary.json is not a run
    assert _script().main([str(out), "--out", str(tmp_path / "third")]) == 0
    assert (tmp_path / "third" / "tables.md").read_text() == (out / "tables.md").read_text()


def test_same_run_twice_counts_once(sweep, tmp_path) -> None:
    export = tmp_path / "export"
    comparison.export_runs(comparison.load_runs([sweep]), export)
    warnings = []
    runs = comparison.load_runs([sweep, export], warnings)
    assert len(runs) == len(comparison.load_runs([sweep]))
    assert sum("found twice" in w for w in warnings) == len(runs)


# ============================================================================ errors and skipped tables
def test_no_results_names_the_folders(tmp_path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "other.json").write_text(json.dumps({"x": 1}))
    with pytest.raises(ValueError, match=r"no run results .* found under .*a, .*b"):
        comparison.load_runs([tmp_path / "a", tmp_path / "b"])
    with pytest.raises(ValueError, match=r"runs folder .*missing does not exist"):
        comparison.load_runs([tmp_path / "missing"])


def test_script_reports_errors_with_status_2(tmp_path) -> None:
    out = subprocess.run([sys.executable, str(REPO / "experiments" / "aggregate.py"), str(tmp_path), "--out",
                          str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and "error: no run results" in out.stderr and str(tmp_path) in out.stderr
    assert not (tmp_path / "out").exists()


def test_missing_reference_skips_the_table_and_names_the_runs(tmp_path) -> None:
    root = write_sweep(tmp_path / "runs", heads={"gat": (0.06, 0.062)}, ablation={})
    warnings = []
    runs = comparison.load_runs([root])
    reasons = {spec.name: comparison.build_table(spec, runs, warnings=warnings) for spec in comparison.TABLES}
    assert reasons["heads"] == (None, "no reference row (head=sdfl): missing head_comparison runs with head=sdfl, "
                                      "seed 0, 1")
    assert reasons["k_sweep"] == (None, "no reference row (graph.k=3): missing k_sweep runs with graph.k=3 or "
                                        "head_comparison runs with head=sdfl (k=3, no variant), seed 0, 1")
    assert reasons["ablation"] == (None, "no ablation runs found")
    # mining ran its own paper run for seed 0: the table is built, the missing seed named
    assert reasons["mining"][0] is not None and reasons["mining"][0].borrowed == []
    assert warnings == ["mining: the reference row lacks seed(s) [1]: missing mining runs with variant=paper or "
                        "head_comparison runs with head=sdfl (k=3, no variant), seed 1"]
    built = comparison.build_comparison(runs)
    assert [t.spec.name for t in built.tables] == ["mining"] and set(built.skipped) == {"heads", "k_sweep", "ablation"}
    assert "k_sweep table skipped: no reference row (graph.k=3)" in " ".join(built.warnings)
    assert "## Skipped tables" in comparison.render_markdown(built)


def test_no_table_at_all_is_an_error(tmp_path) -> None:
    root = write_sweep(tmp_path / "runs", heads={"gat": (0.06,)}, k_sweep={1: (0.05,)}, ablation={}, mining={})
    with pytest.raises(ValueError, match=r"no comparison table could be built: heads: no reference row \(head=sdfl\)"):
        comparison.build_comparison(comparison.load_runs([root]))


def test_partial_reference_warns_with_the_missing_seed(tmp_path) -> None:
    root = write_sweep(tmp_path / "runs", heads={"sdfl": (0.05,), "gat": (0.06, 0.062)}, k_sweep={}, ablation={},
                       mining={})
    warnings = []
    built = comparison.build_comparison(comparison.load_runs([root]), warnings=warnings)
    assert "heads: the reference row lacks seed(s) [1]: missing head_comparison runs with head=sdfl, seed 1" in warnings
    assert _row(_table(built, "heads"), "gat")["verdict"] == "n/a (1 seed)"


def test_a_different_protocol_is_not_borrowed(tmp_path) -> None:
    root = tmp_path / "runs"
    make_run(root, "head_comparison", 0, 0.05, 0.06, head="sdfl", edit=lambda c: c["train"].update(epochs=5))
    make_run(root, "head_comparison", 0, 0.06, 0.07, head="gat", edit=lambda c: c["train"].update(epochs=5))
    make_run(root, "k_sweep", 0, 0.05, 0.06, k=1)
    warnings = []
    built = comparison.build_comparison(comparison.load_runs([root]), warnings=warnings)
    assert "k_sweep" in built.skipped and [t.spec.name for t in built.tables] == ["heads"]
    epochs = _composed(("experiment=k_sweep", "dataset.root=/x"))[0]["train"]["epochs"]
    assert any("not borrowing head_comparison/head=sdfl,seed=0" in w and f"train.epochs=5 (vs {epochs})" in w for w in warnings)


@pytest.mark.parametrize("variant", ["binary_adjacency", "l1_loss"])
def test_a_single_variant_sweep_borrows_the_reference_despite_the_keys_its_variant_sets(tmp_path, variant) -> None:
    # `experiment=ablation variant=binary_adjacency` alone: head.dynamic (or the whole loss group) is what the
    # variant changes, not a different protocol; any other difference still refuses the loan
    root = tmp_path / "runs"
    for seed in (0, 1):
        make_run(root, "head_comparison", seed, 0.05, 0.06, head="sdfl")
        make_run(root, "ablation", seed, 0.051, 0.061, variant=variant)
    warnings = []
    built = comparison.build_comparison(comparison.load_runs([root]), warnings=warnings)
    assert "ablation" in [t.spec.name for t in built.tables], warnings
    assert not any("not borrowing" in w for w in warnings), warnings
    assert comparison.variant_keys("binary_adjacency") == {"head.dynamic"} and comparison.variant_keys("l1_loss") == {"loss."}
    make_run(tmp_path / "other", "head_comparison", 0, 0.05, 0.06, head="sdfl", edit=lambda c: c["train"].update(epochs=5))
    make_run(tmp_path / "other", "ablation", 0, 0.051, 0.061, variant=variant)
    warnings = []
    comparison.build_comparison(comparison.load_runs([tmp_path / "other"]), warnings=warnings)
    assert any("not borrowing" in w and "train.epochs=5" in w for w in warnings), warnings


def test_two_different_runs_of_one_condition_are_refused(tmp_path) -> None:
    make_run(tmp_path / "a", "head_comparison", 0, 0.05, 0.06, head="sdfl")
    make_run(tmp_path / "b", "head_comparison", 0, 0.07, 0.08, head="sdfl")
    with pytest.raises(ValueError, match=r"two different results for run head_comparison/head=sdfl,seed=0"):
        comparison.load_runs([tmp_path / "a", tmp_path / "b"])


def test_two_runs_of_one_condition_and_seed_are_refused(tmp_path) -> None:
    first = make_run(tmp_path, "head_comparison", 0, 0.05, 0.06, head="gat")
    other = tmp_path / "head_comparison" / "head=gat,seed=0,train.epochs=5" / "results.json"
    other.parent.mkdir()
    other.write_text(first.read_text())
    with pytest.raises(ValueError, match=r"two head_comparison runs with head=gat and seed 0: .*seed=0/results.json "
                                         r"and .*train.epochs=5/results.json; pass only one"):
        comparison.load_runs([tmp_path])


def test_runs_of_other_presets_are_ignored_with_a_warning(tmp_path) -> None:
    make_run(tmp_path, "head_comparison", 0, 0.05, 0.06, head="sdfl")
    make_run(tmp_path, "cpu_300w", 0, 0.05, 0.06)
    warnings = []
    runs = comparison.load_runs([tmp_path], warnings)
    assert [r.id for r in runs] == ["head_comparison/head=sdfl,seed=0"]
    assert warnings == ["1 run(s) of preset 'cpu_300w' ignored (not one of ablation, head_comparison, k_sweep, mining)"]


def test_table_conditions_match_the_presets() -> None:
    assert comparison.preset_conditions("head_comparison", "head")[0] == "sdfl"
    assert comparison.preset_conditions("k_sweep", "graph.k") == [1, 2, 3, 4, 6, 9, 17, 67]
    for spec in comparison.TABLES:
        conditions = comparison.preset_conditions(spec.experiment, spec.key)
        if spec.experiment == comparison.REFERENCE_EXPERIMENT or spec.key == "graph.k":
            assert spec.reference in conditions
        # the borrowed reference is the reference setting of every table
        flat = flatten_config(_composed((f"experiment={spec.experiment}", "dataset.root=/x"))[0])
        assert flat["head"] == comparison.REFERENCE_SETTING["head"]
        assert flat["graph.k"] == comparison.REFERENCE_SETTING["graph.k"]
    assert comparison.preset_conditions("nope", "head") == []


@pytest.mark.slow
def test_committed_tables_rebuild_byte_for_byte(tmp_path, capsys) -> None:
    """results/graph_buys: the exported runs give back the committed tables.md and summary.json."""
    committed = REPO / "results" / "graph_buys"
    if not (committed / "runs").is_dir():
        pytest.skip("no committed comparison runs")
    assert _script().main([str(committed / "runs"), "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    for name in ("tables.md", "summary.json"):
        assert (tmp_path / name).read_bytes() == (committed / name).read_bytes(), name


def _on_fused(config: Dict[str, Any]) -> None:
    """``make_run(edit=...)``: the run trained with ``train.graph_backend=fused``."""
    config["train"].update(graph_backend="fused")


def test_a_k_sweep_on_the_fused_backend_keeps_its_own_reference_and_says_so(tmp_path) -> None:
    # the dense k costs 2-3x a sparse run on PyG's scatter path: the k sweep may train on the fused gather path;
    # the pyg head_comparison reference is then not borrowed, the sweep's own k=3 runs are its reference
    root = tmp_path / "runs"
    for seed in (0, 1):
        make_run(root, "head_comparison", seed, 0.050, 0.060, head="sdfl")
        for k, nme in ((3, 0.051), (67, 0.056)):
            make_run(root, "k_sweep", seed, nme + 0.001 * seed, nme + 0.01, k=k, edit=_on_fused)
    warnings = []
    built = comparison.build_comparison(comparison.load_runs([root]), warnings=warnings)
    table = _table(built, "k_sweep")
    assert table.borrowed == [] and _row(table, 3)["runs"] == ["k_sweep/graph.k=3,seed=0", "k_sweep/graph.k=3,seed=1"]
    assert _row(table, 3)["nme_values"] == pytest.approx([0.051, 0.052])
    assert table.graph_backends == {"fused": sorted(_row(table, 3)["runs"] + _row(table, 67)["runs"])}
    assert _table(built, "heads").graph_backends == {}
    assert not any("borrowing" in w for w in warnings), warnings  # every seed has its own reference
    text = comparison.render_markdown(built)
    assert ("Graph backend: All 4 runs trained the SDFL head with train.graph_backend=fused (the same function and "
            "gradients as PyG's scatter path to float rounding): k_sweep/graph.k=3,seed=0,") in text
    assert text.count("Graph backend:") == 1  # the heads table ran on pyg: no note
    summary = comparison.summary_dict(built)
    assert summary["tables"]["k_sweep"]["graph_backends"] == {"fused": table.graph_backends["fused"]}
    assert "graph_backends" not in summary["tables"]["heads"]
    # without its own k=3 runs the fused sweep has no reference: the pyg one is refused, by name
    other = tmp_path / "other"
    make_run(other, "head_comparison", 0, 0.050, 0.060, head="sdfl")
    make_run(other, "k_sweep", 0, 0.056, 0.066, k=67, edit=_on_fused)
    warnings = []
    built = comparison.build_comparison(comparison.load_runs([other]), warnings=warnings)
    assert "k_sweep" in built.skipped
    assert any("not borrowing head_comparison/head=sdfl,seed=0" in w and "train.graph_backend='pyg' (vs 'fused')" in w
               for w in warnings), warnings


def test_a_run_on_another_thread_count_is_still_borrowed(tmp_path) -> None:
    # the head comparison ran on joblib (threads=auto), a lone ablation run with threads=1: the same model
    root = tmp_path / "runs"
    for seed in (0, 1):
        make_run(root, "head_comparison", seed, 0.05, 0.06, head="sdfl")
        make_run(root, "ablation", seed, 0.051, 0.061, variant="binary_adjacency", edit=lambda c: c.update(threads=1))
    warnings = []
    built = comparison.build_comparison(comparison.load_runs([root]), warnings=warnings)
    assert _table(built, "ablation").borrowed == ["head_comparison/head=sdfl,seed=0", "head_comparison/head=sdfl,seed=1"]
    assert not any("not borrowing" in w for w in warnings), warnings


def test_a_table_mixing_backends_counts_them(tmp_path) -> None:
    root = tmp_path / "runs"
    for seed in (0, 1):
        make_run(root, "k_sweep", seed, 0.051, 0.061, k=3)
        make_run(root, "k_sweep", seed, 0.056, 0.066, k=67, edit=_on_fused)
    table = _table(comparison.build_comparison(comparison.load_runs([root])), "k_sweep")
    assert table.graph_backends == {"fused": ["k_sweep/graph.k=67,seed=0", "k_sweep/graph.k=67,seed=1"]}
    assert ("Graph backend: 2 of the 4 runs (the others on pyg) trained the SDFL head with train.graph_backend=fused"
            in comparison.render_table(table))
