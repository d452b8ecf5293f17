"""The comparison tables of the four sweep presets: heads, k, ablation and graph mining.

``python experiments/aggregate.py RUNS_DIR [RUNS_DIR ...] --out results/graph_buys`` (:func:`aggregate`)
reads every run written by ``python experiments/run.py -m experiment=<preset>`` (``results.json``) or
exported by ``--export-runs`` (one compact JSON per run) and builds four tables:

==========  ================  ===========  =============================================
table       preset            condition    reference row
==========  ================  ===========  =============================================
heads       head_comparison   ``head``     ``sdfl``
k_sweep     k_sweep           ``graph.k``  ``3``
ablation    ablation          variant      ``paper``
mining      mining            variant      ``paper``
==========  ================  ===========  =============================================

Each row is the mean and sample standard deviation (``ddof=1``) over seeds of the test NME, FR and
AUC (one split and subset, by default ``test`` / ``all``) and of the validation NME. A row is
compared with the reference row twice (:data:`VERDICT_RULE`):

* paired over the same test faces (:func:`paired_comparison`): for every seed both rows ran, the
  per-face NME difference of the row's run from the reference run of that seed, its mean and a 95%
  percentile-bootstrap interval over faces (:mod:`pyg_sdfl.studies.paired`); the paired test says
  "better" / "worse" when every seed's interval lies below / above 0;
* by the seed spread (:func:`verdict`): ``delta = mean_row - mean_ref`` beyond ``std_ref + std_row``.

The row is called "better" / "worse" only when both say so.

Reference borrowing: the reference setting (SDFL head, k=3, variant ``paper``) is the same config
in all four presets, so the real sweep ran it once, in ``head_comparison``. A table whose own preset
has no reference run for a seed takes that seed's ``head_comparison`` SDFL run instead, after checking
that its config equals the table's own runs on every setting those runs share (the run's own preset
wins when both exist).

Graph backend: ``train.graph_backend=fused`` trains the SDFL head on the gather path instead of PyG's
scatter path (the same function and gradients to float rounding; ``tests/engine/test_training.py``),
e.g. to afford the dense graph of the k sweep. A table whose runs used it says which (:attr:`ComparisonTable.
graph_backends`, a note under the table); a reference run on another backend is not borrowed (the
config check above), so such a table needs its own reference runs.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, FrozenSet, List, Mapping, NamedTuple, Optional, Sequence, Set, Tuple, Union

import numpy as np

from pyg_sdfl.config import CONFIG_DIR
from pyg_sdfl.engine.reporting import json_safe
from pyg_sdfl.studies.paired import CONFIDENCE, RESAMPLES, bootstrap_ci, combine, paired_difference, paired_test
from pyg_sdfl.studies.runs import IGNORED_KEYS, RunRecord, aggregate_results, flatten_config, format_cell, load_results

__all__ = [
    "TableSpec",
    "TABLES",
    "REFERENCE_EXPERIMENT",
    "REFERENCE_SETTING",
    "VERDICT_RULE",
    "Run",
    "ComparisonTable",
    "Comparison",
    "preset_conditions",
    "load_runs",
    "verdict",
    "PairedComparison",
    "check_same_faces",
    "paired_comparison",
    "build_table",
    "build_comparison",
    "format_paired",
    "render_markdown",
    "summary_dict",
    "plot_table",
    "plot_paired",
    "compact_payload",
    "export_runs",
    "write_outputs",
    "aggregate",
]

PathLike = Union[str, Path]

#: the Hydra presets of the comparison (``pyg_sdfl/configs/experiment/<name>.yaml``)
PRESET_DIR = CONFIG_DIR / "experiment"


@dataclass(frozen=True)
class TableSpec:
    """One comparison table.

    Attributes:
        name: table id, also the PNG's name (``heads`` -> ``heads.png``) and the key in ``summary.json``.
        title: heading in ``tables.md``.
        experiment: the preset whose runs fill the table (``choices.experiment`` of a run).
        key: the condition, a key of the flattened config (``head`` is the head label, ``variant`` the
            Hydra ``variant`` pick, ``"paper"`` when absent).
        label: column header of the condition.
        reference: the condition value of the reference row.
    """

    name: str
    title: str
    experiment: str
    key: str
    label: str
    reference: Any


TABLES: Tuple[TableSpec, ...] = (
    TableSpec("heads", "Head: SDFL vs an FC head and six PyG graph layers (same backbone, loss, k=3 graph)",
              "head_comparison", "head", "head", "sdfl"),
    TableSpec("k_sweep", "Neighbours per landmark k (SDFL head)", "k_sweep", "graph.k", "k", 3),
    TableSpec("ablation", "Ablation: one change each from the paper's setting (SDFL head, k=3)",
              "ablation", "variant", "variant", "paper"),
    TableSpec("mining", "Graph mining: separate-axis correlation (paper) vs joint correlation vs a random graph",
              "mining", "variant", "variant", "paper"),
)

#: the preset that holds the reference runs the other tables may borrow
REFERENCE_EXPERIMENT = "head_comparison"
#: the reference setting, identical in every preset (flattened-config keys, ``variant`` included)
REFERENCE_SETTING: Dict[str, Any] = {"head": "sdfl", "graph.k": 3, "variant": "paper"}

VERDICT_RULE = (
    f"Verdict: a row is called 'better' (or 'worse') than the reference row only when two tests both say so: "
    f"paired, in every seed both rows ran, the {100 * CONFIDENCE:g}% percentile-bootstrap interval over test faces "
    f"({RESAMPLES:,} resamples) of the mean per-face NME difference from the reference run of the same seed lies "
    f"below (above) 0; and over seeds, mean_row lies below (above) mean_ref by more than std_ref + std_row "
    f"(sample standard deviations, ddof=1). Otherwise 'no significant difference'; 'n/a (reason; the other "
    f"test's answer)' when either test cannot be made: fewer than 2 seeds, or per-face errors missing or not of "
    f"the same faces."
)

#: flattened keys that differ between runs of one condition without defining it
_IGNORED = (*IGNORED_KEYS, "experiment", "variant")


# ============================================================================ runs
@dataclass(frozen=True, eq=False)
class Run:
    """One loaded run.

    Attributes:
        record: the run's :class:`~pyg_sdfl.studies.runs.RunRecord`; its flattened config also holds
            ``"experiment"`` and ``"variant"`` (``"paper"`` when the run picked none).
        experiment: the preset that produced it (``choices.experiment``).
        name: the run folder name, e.g. ``"head=gat,seed=0"`` (``<name>/results.json`` or ``<name>.json``).
    """

    record: RunRecord
    experiment: str
    name: str

    @property
    def id(self) -> str:
        """``"<experiment>/<name>"``: unique per run, stable across exports."""
        return f"{self.experiment}/{self.name}"

    @property
    def seed(self) -> Any:
        return self.record.config.get("seed")

    @property
    def config(self) -> Dict[str, Any]:
        return self.record.config


def preset_conditions(experiment: str, key: str) -> List[Any]:
    """The values of ``key`` that preset ``experiment`` sweeps over (its ``hydra.sweeper.params``), in
    the preset's order, numbers as ``int``; ``[]`` when the preset or the parameter does not exist."""
    from omegaconf import OmegaConf

    path = PRESET_DIR / f"{experiment}.yaml"
    if not path.is_file():
        return []
    params = OmegaConf.select(OmegaConf.load(path), "hydra.sweeper.params", default=None) or {}
    if key not in params:
        return []
    out: List[Any] = []
    for item in str(params[key]).split(","):
        item = item.strip()
        out.append(int(item) if item.lstrip("-").isdigit() else item)
    return out


def _run_name(path: Path) -> str:
    return path.parent.name if path.name == "results.json" else path.stem


def _experiment_of(record: RunRecord, known: Sequence[str]) -> Optional[str]:
    """``choices.experiment``; else the nearest parent folder named like a known preset."""
    chosen = record.choices.get("experiment")
    if chosen:
        return str(chosen)
    for parent in record.path.parents:
        if parent.name in known:
            return parent.name
    return None


def load_runs(dirs: Sequence[PathLike], warnings: Optional[List[str]] = None) -> List[Run]:
    """Every run of the comparison presets under ``dirs`` (searched recursively).

    Runs of other presets, and runs whose preset cannot be told, are left out with a warning; the same
    run found twice (e.g. in a sweep folder and in an export of it: same preset, same run name, same
    metrics) is kept once. Appends its warnings to ``warnings`` when given.

    Raises ``ValueError`` when a folder does not exist, when no run result is found under any of them
    (naming them all), and when two different runs share one preset, condition and seed (naming both).
    """
    warnings = warnings if warnings is not None else []
    if not dirs:
        raise ValueError("give at least one runs folder")
    for d in dirs:
        if not Path(d).is_dir():
            raise ValueError(f"runs folder {d} does not exist")
    records = [r for d in dirs for r in load_results(d)]
    if not records:
        raise ValueError("no run results (results.json, or JSON files exported by --export-runs) found under "
                         + ", ".join(str(d) for d in dirs))
    presets = sorted({spec.experiment for spec in TABLES})
    runs: Dict[Tuple[str, str], Run] = {}
    unknown, other = [], {}
    for record in records:
        experiment = _experiment_of(record, presets)
        if experiment is None:
            unknown.append(str(record.path))
            continue
        if experiment not in presets:
            other.setdefault(experiment, 0)
            other[experiment] += 1
            continue
        variant = record.choices.get("variant") or "paper"
        record = dataclasses.replace(record, config={**record.config, "experiment": experiment, "variant": variant})
        run = Run(record=record, experiment=experiment, name=_run_name(record.path))
        seen = runs.get((experiment, run.name))
        if seen is not None:
            if seen.record.metrics != record.metrics:
                raise ValueError(f"two different results for run {run.id}: {seen.record.path} and {record.path}; "
                                 "pass only one of their folders")
            warnings.append(f"run {run.id} found twice ({seen.record.path}, {record.path}): counted once")
            continue
        runs[(experiment, run.name)] = run
    if unknown:
        warnings.append(f"{len(unknown)} run(s) without choices.experiment outside a preset-named folder, "
                        f"ignored: {', '.join(unknown)}")
    for experiment, count in sorted(other.items()):
        warnings.append(f"{count} run(s) of preset {experiment!r} ignored (not one of {', '.join(presets)})")
    _check_unique_conditions(list(runs.values()))
    return sorted(runs.values(), key=lambda r: r.id)


def _check_unique_conditions(runs: Sequence[Run]) -> None:
    keys = {spec.experiment: spec.key for spec in TABLES}
    seen: Dict[Tuple[str, str, str], Run] = {}
    for run in runs:
        cond = (run.experiment, json.dumps(run.config.get(keys[run.experiment]), default=str), json.dumps(run.seed))
        if cond in seen:
            first = seen[cond]
            key = keys[run.experiment]
            raise ValueError(f"two {run.experiment} runs with {key}={run.config.get(key)} "
                             f"and seed {run.seed}: {first.record.path} and {run.record.path}; pass only one")
        seen[cond] = run


# ============================================================================ tables
def verdict(reference: Sequence[float], values: Sequence[float]) -> Tuple[float, str]:
    """NME difference of a row from the reference row, and the seed-spread rule's verdict (one half of
    the table's verdict; :func:`paired_comparison` gives the other).

    ``delta = mean(values) - mean(reference)`` (negative = lower error = better). With at least two
    values on each side, ``"better"`` (``delta < 0``) or ``"worse"`` only when
    ``|delta| > std(reference) + std(values)`` (sample standard deviations, ``ddof=1``), else
    ``"no significant difference"``; with fewer, ``"n/a (1 seed)"``.
    """
    ref = np.asarray(reference, dtype=float)
    row = np.asarray(values, dtype=float)
    if ref.size == 0 or row.size == 0:
        raise ValueError(f"verdict needs values on both sides; got {ref.size} reference and {row.size} row values")
    delta = float(row.mean() - ref.mean())
    if ref.size < 2 or row.size < 2:
        return delta, "n/a (1 seed)"
    spread = float(ref.std(ddof=1) + row.std(ddof=1))
    if abs(delta) > spread:
        return delta, "better" if delta < 0 else "worse"
    return delta, "no significant difference"


class PairedComparison(NamedTuple):
    """:func:`paired_comparison`'s answer: one entry per paired seed, the paired test's verdict, and the
    runs that have no per-face errors of the split (why the verdict may be n/a)."""

    seeds: List[Dict[str, Any]]
    verdict: str
    missing: List[str]


def check_same_faces(run: Run, reference: Run, split: str) -> int:
    """The number of faces ``M`` both runs scored on ``split``; ``ValueError`` unless they can be the same
    faces in the same order.

    ``results.json`` stores the per-face errors in the dataset's fixed face order but no face names, so
    this checks what it can: both runs hold ``M`` per-face errors, ``M`` equals the ``count`` of
    ``metrics[split]["all"]`` of both runs, and each run's per-face errors average to its reported NME
    (relative tolerance 1e-6): the list is the split the metrics describe.
    """
    counts = []
    for r in (run, reference):
        errors = r.record.nme_per_face.get(split)
        if errors is None:
            raise ValueError(f"{r.id} has no per-face {split} errors")
        stats = r.record.metrics.get(split, {}).get("all", {})
        count = stats.get("count")
        if count is None or int(count) != errors.size:
            raise ValueError(f"{r.id}: {errors.size} per-face {split} errors but metrics count {count}")
        if errors.size and not math.isclose(float(errors.mean()), float(stats.get("nme", math.nan)), rel_tol=1e-6):
            raise ValueError(f"{r.id}: its per-face {split} errors average {float(errors.mean()):.6g}, "
                             f"its reported NME is {stats.get('nme')}")
        counts.append(errors.size)
    if counts[0] != counts[1]:
        raise ValueError(f"{run.id} scored {counts[0]} {split} faces, {reference.id} {counts[1]}")
    return counts[0]


def paired_comparison(row_runs: Sequence[Run], ref_runs: Sequence[Run], split: str = "test", subset: str = "all",
                      warnings: Optional[List[str]] = None, confidence: float = CONFIDENCE,
                      resamples: int = RESAMPLES, seed: int = 0) -> PairedComparison:
    """Paired statistics of a row's runs against the reference runs of the same seeds, over the faces of
    ``split``.

    For each seed ``s`` both rows ran (in seed order): ``d = nme_row_s - nme_ref_s`` per face
    (:func:`~pyg_sdfl.studies.paired.paired_difference`, after :func:`check_same_faces`) and
    :func:`~pyg_sdfl.studies.paired.bootstrap_ci` of its mean (``confidence``, ``resamples``, ``seed``;
    the same bootstrap seed for every pair). Each entry: ``seed``, ``mean_diff``, ``ci_low``,
    ``ci_high`` (NME fractions, negative = the row's error is lower), ``faces`` (``M``), ``run``,
    ``reference_run``. The verdict is :func:`~pyg_sdfl.studies.paired.paired_test` of the entries, or:

    * ``"n/a (no per-face errors)"`` when a run of a paired seed has none for ``split`` (results exported
      before they were kept; their ids are in ``missing``), with no entries;
    * ``"n/a (per-face errors do not match)"`` when two paired runs cannot be the same faces (the reason
      is appended to ``warnings``), with no entries;
    * ``"n/a (no per-face errors for subset ...)"`` for a ``subset`` other than ``"all"``: results store
      the per-face errors of whole splits only, without the faces' subset tags.
    """
    warnings = warnings if warnings is not None else []
    if subset != "all":
        return PairedComparison([], f"n/a (no per-face errors for subset {subset!r})", [])
    ref_by_seed = {json.dumps(r.seed): r for r in ref_runs}
    pairs = [(r, ref_by_seed[json.dumps(r.seed)]) for r in sorted(row_runs, key=lambda r: _seed_key(r.seed))
             if json.dumps(r.seed) in ref_by_seed]
    missing = sorted({r.id for pair in pairs for r in pair if split not in r.record.nme_per_face})
    if missing:
        return PairedComparison([], "n/a (no per-face errors)", missing)
    entries = []
    for run, ref in pairs:
        try:
            faces = check_same_faces(run, ref, split)
            diff = paired_difference(run.record.nme_per_face[split], ref.record.nme_per_face[split])
        except ValueError as err:
            warnings.append(f"no paired statistics for {run.id} against {ref.id}: {err}")
            return PairedComparison([], "n/a (per-face errors do not match)", [])
        ci = bootstrap_ci(diff, confidence=confidence, resamples=resamples, seed=seed)
        entries.append({"seed": run.seed, "mean_diff": ci.mean, "ci_low": ci.low, "ci_high": ci.high,
                        "faces": faces, "run": run.id, "reference_run": ref.id})
    return PairedComparison(entries, paired_test([(e["mean_diff"], e["ci_low"], e["ci_high"]) for e in entries]), [])


@dataclass
class ComparisonTable:
    """A built table: its spec, its rows (reference first, or in order of ``k``) and where the
    reference runs came from.

    Each row: ``condition`` (the value of ``spec.key``), ``label``, ``reference`` (bool), ``seeds``,
    ``runs`` (run ids, in seed order like the values), ``faces``, for ``m`` in nme/fr/auc: ``m``, ``m_std``,
    ``m_values`` (test split),
    ``val_nme``, ``val_nme_std``, ``val_nme_values``, ``delta_nme`` (:func:`verdict`), ``paired`` (one
    entry per seed both rows ran: ``seed``, ``mean_diff``, ``ci_low``, ``ci_high``, ``faces``, ``run``,
    ``reference_run``; :func:`paired_comparison`), ``paired_verdict`` (the paired test),
    ``seed_verdict`` (the seed-spread rule) and ``verdict`` (both joined:
    :func:`~pyg_sdfl.studies.paired.combine`). On the reference row ``delta_nme``, ``paired_verdict``
    and ``seed_verdict`` are ``None``, ``paired`` is ``[]`` and ``verdict`` is ``"reference"``.
    Standard deviations of a single run are ``None``.
    """

    spec: TableSpec
    rows: List[Dict[str, Any]]
    borrowed: List[str] = field(default_factory=list)  # reference run ids taken from head_comparison
    borrowed_seeds: List[Any] = field(default_factory=list)  # their seeds
    num_points: Optional[int] = None  # landmarks per face (the dense graph is k = N-1)
    #: ``train.graph_backend`` -> run ids, for the table's runs on a backend other than ``pyg`` (empty: all on pyg)
    graph_backends: Dict[str, List[str]] = field(default_factory=dict)


@dataclass
class Comparison:
    """All built tables, the runs they use, what was skipped and why, and the split they report."""

    tables: List[ComparisonTable]
    runs: List[Run]  # the runs used by at least one table, sorted by id
    skipped: Dict[str, str]  # table name -> reason
    warnings: List[str]
    split: str = "test"
    subset: str = "all"


@functools.lru_cache(maxsize=None)
def variant_keys(variant: Any) -> FrozenSet[str]:
    """The flattened config keys that ``variant=<variant>`` sets (``configs/variant/<variant>.yaml``):
    what a run of that variant may differ on from the reference; a group it swaps in ``defaults``
    comes as a prefix (``"loss."``); empty for an unknown variant."""
    from omegaconf import OmegaConf

    path = PRESET_DIR.parent / "variant" / f"{variant}.yaml"
    if variant is None or not path.is_file():
        return frozenset()
    content = OmegaConf.to_container(OmegaConf.load(path)) or {}
    keys: Set[str] = set()
    for name, value in content.items():
        if name == "defaults":  # "override /loss: l1" swaps a whole group: every "loss.*" key (as the prefix "loss.")
            for item in value or []:
                for entry in (item if isinstance(item, Mapping) else {}):
                    keys.add(str(entry).replace("override", "").strip().strip("/").replace("/", ".") + ".")
        else:
            keys.update(flatten_config(value, prefix=f"{name}.") if isinstance(value, Mapping) else {str(name)})
    return frozenset(keys)


def _config_mismatch(candidate: Run, own: Sequence[Run], key: str) -> List[str]:
    """Settings on which ``candidate`` differs from what every run in ``own`` shares (ignoring the
    swept ``key``, the keys that already vary inside ``own``, the keys the ``own`` runs' variants set,
    seeds and paths)."""
    keys = set(candidate.config).union(*(r.config for r in own))
    set_by_variants = set().union(*(variant_keys(r.config.get("variant")) for r in own))
    out = []
    for k in sorted(keys):
        if k == key or k in _IGNORED or any(k == p or (p.endswith(".") and k.startswith(p)) for p in set_by_variants):
            continue
        values = {json.dumps(r.config.get(k), sort_keys=True, default=str) for r in own}
        if len(values) != 1:
            continue
        mine = json.dumps(candidate.config.get(k), sort_keys=True, default=str)
        if mine not in values:
            out.append(f"{k}={candidate.config.get(k)!r} (vs {own[0].config.get(k)!r})")
    return out


def _condition_order(spec: TableSpec, conditions: Sequence[Any]) -> List[Any]:
    if spec.key == "graph.k":
        return sorted(conditions, key=lambda c: (not isinstance(c, (int, float)), c if isinstance(c, (int, float)) else 0))
    preset = [c for c in preset_conditions(spec.experiment, spec.key) if c in conditions]
    rest = [c for c in conditions if c not in preset]
    order = preset + rest
    if spec.reference in order:
        order.remove(spec.reference)
        order.insert(0, spec.reference)
    return order


def _seed_key(seed: Any) -> Tuple[str, Any]:
    return (type(seed).__name__, seed)


def _nan_to_none(value: float) -> Optional[float]:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def _num_points(runs: Sequence[Run]) -> Optional[int]:
    from pyg_sdfl.schemes import get_scheme

    names = {r.config.get("dataset.scheme") for r in runs} - {None}
    if len(names) != 1:
        return None
    try:
        return get_scheme(str(names.pop())).num_points
    except KeyError:
        return None


def _expected(spec: TableSpec, seeds: Sequence[Any]) -> str:
    where = f"{spec.experiment} runs with {spec.key}={spec.reference}"
    if spec.experiment != REFERENCE_EXPERIMENT:
        where += f" or {REFERENCE_EXPERIMENT} runs with head=sdfl (k=3, no variant)"
    return f"{where}, seed {', '.join(str(s) for s in seeds)}"


def build_table(spec: TableSpec, runs: Sequence[Run], split: str = "test", subset: str = "all",
                warnings: Optional[List[str]] = None) -> Tuple[Optional[ComparisonTable], str]:
    """One table from ``runs`` (all loaded runs; the spec picks its own and, where needed, borrows the
    reference). Returns ``(table, "")``, or ``(None, reason)`` when the table cannot be built: no runs of
    its preset, no run with the ``split``/``subset``, or no reference row (the reason names the missing
    runs). Appends warnings (reference seeds missing, borrowed runs refused) to ``warnings``."""
    warnings = warnings if warnings is not None else []
    own = [r for r in runs if r.experiment == spec.experiment]
    if not own:
        return None, f"no {spec.experiment} runs found"
    own = [r for r in own if subset in r.record.metrics.get(split, {})]
    if not own:
        return None, f"no {spec.experiment} run has metrics for split {split!r}, subset {subset!r}"
    own_ref_seeds = {json.dumps(r.seed) for r in own if r.config.get(spec.key) == spec.reference}
    borrowed: List[Run] = []
    if spec.experiment != REFERENCE_EXPERIMENT:
        donors = [r for r in runs if r.experiment == REFERENCE_EXPERIMENT
                  and all(r.config.get(k) == v for k, v in REFERENCE_SETTING.items())
                  and json.dumps(r.seed) not in own_ref_seeds and subset in r.record.metrics.get(split, {})]
        for donor in donors:
            diff = _config_mismatch(donor, own, spec.key)
            if diff:
                warnings.append(f"{spec.name}: not borrowing {donor.id} as the reference ({spec.key}={spec.reference}): "
                                f"its config differs from the {spec.experiment} runs: {'; '.join(diff)}")
            else:
                borrowed.append(donor)
    members = own + borrowed
    ref_runs = [r for r in members if r.config.get(spec.key) == spec.reference]
    all_seeds = sorted({json.dumps(r.seed) for r in members}, key=lambda s: _seed_key(json.loads(s)))
    if not ref_runs:
        return None, (f"no reference row ({spec.key}={spec.reference}): missing " +
                      _expected(spec, [json.loads(s) for s in all_seeds]))
    missing_ref = [json.loads(s) for s in all_seeds if s not in {json.dumps(r.seed) for r in ref_runs}]
    if missing_ref:
        warnings.append(f"{spec.name}: the reference row lacks seed(s) {missing_ref}: missing "
                        + _expected(spec, missing_ref))

    records = [r.record for r in members]
    test_rows = {json.dumps(row[spec.key], default=str): row
                 for row in aggregate_results(records, by=[spec.key], split=split, subset=subset)}
    val_rows = {json.dumps(row[spec.key], default=str): row
                for row in aggregate_results(records, by=[spec.key], split="val", subset="all", metrics=("nme",))}
    by_condition: Dict[str, List[Run]] = {}
    for r in members:
        by_condition.setdefault(json.dumps(r.config.get(spec.key), default=str), []).append(r)
    num_points = _num_points(members)
    ref_key = json.dumps(spec.reference, default=str)
    ref_values = test_rows[ref_key]["nme_values"]
    no_per_face: set = set()
    rows = []
    for condition in _condition_order(spec, [test_rows[k][spec.key] for k in test_rows]):
        ck = json.dumps(condition, default=str)
        t, v = test_rows[ck], val_rows.get(ck)
        seeds_missing = [json.loads(s) for s in all_seeds if s not in {json.dumps(x) for x in t["seeds"]}]
        if seeds_missing and ck != ref_key:
            warnings.append(f"{spec.name}: {spec.key}={condition} lacks seed(s) {seeds_missing}")
        is_ref = ck == ref_key
        label = str(condition)
        if spec.key == "graph.k" and num_points is not None and condition == num_points - 1:
            label = f"{condition} (dense, N-1)"
        row: Dict[str, Any] = {
            "condition": condition,
            "label": label,
            "reference": is_ref,
            "seeds": t["seeds"],
            "runs": [r.id for r in sorted(by_condition[ck], key=lambda r: (_seed_key(r.seed), r.id))],
            "faces": t["faces"],
        }
        for m in ("nme", "fr", "auc"):
            row[m], row[f"{m}_std"], row[f"{m}_values"] = t[m], _nan_to_none(t[f"{m}_std"]), t[f"{m}_values"]
        row["val_nme"] = v["nme"] if v else None
        row["val_nme_std"] = _nan_to_none(v["nme_std"]) if v else None
        row["val_nme_values"] = v["nme_values"] if v else []
        if is_ref:
            row.update(delta_nme=None, seed_verdict=None, paired=[], paired_verdict=None, verdict="reference")
        else:
            row["delta_nme"], row["seed_verdict"] = verdict(ref_values, t["nme_values"])
            pc = paired_comparison(by_condition[ck], by_condition[ref_key], split=split, subset=subset,
                                   warnings=warnings)
            no_per_face.update(pc.missing)
            row["paired"], row["paired_verdict"] = pc.seeds, pc.verdict
            row["verdict"] = combine(pc.verdict, row["seed_verdict"])
        rows.append(row)
    if no_per_face:
        first = sorted(no_per_face)[0]
        warnings.append(f"{spec.name}: {len(no_per_face)} run(s) have no per-face {split} errors (e.g. {first}; "
                        "runs exported before they were kept): no paired statistics for their rows")
    borrowed.sort(key=lambda r: r.id)
    return ComparisonTable(spec=spec, rows=rows, borrowed=[r.id for r in borrowed],
                           borrowed_seeds=sorted({r.seed for r in borrowed}, key=_seed_key), num_points=num_points,
                           graph_backends=_graph_backends(members)), ""


def _graph_backends(runs: Sequence[Run]) -> Dict[str, List[str]]:
    """``train.graph_backend`` -> sorted run ids, for the runs not on the reference path ``pyg`` (runs
    from before the key existed count as ``pyg``)."""
    out: Dict[str, List[str]] = {}
    for r in sorted(runs, key=lambda r: r.id):
        backend = r.config.get("train.graph_backend") or "pyg"
        if backend != "pyg":
            out.setdefault(str(backend), []).append(r.id)
    return out


def build_comparison(runs: Sequence[Run], split: str = "test", subset: str = "all",
                     warnings: Optional[List[str]] = None) -> Comparison:
    """All four tables (:data:`TABLES`) from loaded runs; a table that cannot be built is skipped with
    a warning. Raises ``ValueError`` when none can be built (with every reason). Appends its warnings to
    ``warnings`` when given (the comparison's ``warnings`` is that list)."""
    warnings = warnings if warnings is not None else []
    tables, skipped = [], {}
    for spec in TABLES:
        table, reason = build_table(spec, runs, split=split, subset=subset, warnings=warnings)
        if table is None:
            skipped[spec.name] = reason
            warnings.append(f"{spec.name} table skipped: {reason}")
        else:
            tables.append(table)
    if not tables:
        raise ValueError("no comparison table could be built: "
                         + "; ".join(f"{name}: {reason}" for name, reason in skipped.items()))
    used = {rid for t in tables for row in t.rows for rid in row["runs"]}
    return Comparison(tables=tables, runs=[r for r in runs if r.id in used], skipped=skipped, warnings=warnings,
                      split=split, subset=subset)


# ============================================================================ protocol and meta
def _distinct(runs: Sequence[Run], key: str) -> List[Any]:
    values = []
    for r in runs:
        v = r.config.get(key)
        if v is not None and v not in values:
            values.append(v)
    return values


def _join(values: Sequence[Any]) -> str:
    return " / ".join(str(v) for v in values) if values else "?"


def protocol_dict(runs: Sequence[Run]) -> Dict[str, List[Any]]:
    """The training and evaluation settings of ``runs``, each as the list of its distinct values (one
    value when the runs agree): dataset, crop, image size, backbone, epochs, batch, optimizer, lr,
    milestones and gamma of the schedule, precision, normalisation, threshold."""
    keys = {
        "dataset": "dataset.name", "crop_scale": "dataset.crop_scale", "image_size": "dataset.image_size",
        "backbone": "backbone", "init_backbone_from": "train.init_backbone_from", "epochs": "train.epochs", "batch_size": "train.batch_size",
        "optimizer": "train.optimizer._target_", "lr": "train.optimizer.lr",
        "milestones": "train.scheduler.milestones", "gamma": "train.scheduler.gamma", "precision": "train.precision",
        "normalisation": "evaluate.normalisation", "threshold": "evaluate.threshold",
    }
    out = {name: _distinct(runs, key) for name, key in keys.items()}
    out["optimizer"] = [str(v).rsplit(".", 1)[-1] for v in out["optimizer"]]
    out["milestones"] = [list(v) if isinstance(v, tuple) else v for v in out["milestones"]]
    return out


def meta_dict(runs: Sequence[Run]) -> Dict[str, Any]:
    """Seeds, commits, machines, devices, torch threads and wall time (total, per run) of ``runs``."""
    walls = [float(r.record.meta["wall_time_s"]) for r in runs if r.record.meta.get("wall_time_s") is not None]
    seeds = sorted({r.seed for r in runs if r.seed is not None}, key=_seed_key)

    def distinct(name: str) -> List[Any]:
        values = []
        for r in runs:
            v = r.record.meta.get(name)
            if v is not None and v not in values:
                values.append(v)
        return values

    return {
        "runs": len(runs),
        "seeds": seeds,
        "commits": sorted(distinct("commit")),
        "machines": sorted(distinct("machine")),
        "cpus": sorted({f"{r.record.meta['cpu']} ({' '.join(r.record.meta.get('cpu_flags') or []) or 'no flags listed'})"
                        for r in runs if r.record.meta.get("cpu")}),
        "devices": sorted(distinct("device")),
        "torch_threads": sorted(distinct("torch_threads")),
        "wall_time_s_total": round(sum(walls), 1) if walls else None,
        "wall_time_s_per_run": {"mean": round(float(np.mean(walls)), 1), "min": round(min(walls), 1),
                                "max": round(max(walls), 1), "runs_timed": len(walls)} if walls else None,
    }


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


# ============================================================================ Markdown and JSON
def _threshold_pct(runs: Sequence[Run]) -> str:
    values = _distinct(runs, "evaluate.threshold")
    return _join([f"{100 * float(v):g}" for v in values]) if values else "10"


def format_paired(entries: Sequence[Mapping[str, Any]]) -> str:
    """The paired cell: one ``seed: mean [low, high]`` per seed (percentage points, 2 decimals, signed),
    joined by ``<br>``; ``—`` when there are none."""
    if not entries:
        return "—"
    return "<br>".join(f"{e['seed']}: {100 * e['mean_diff']:+.2f} [{100 * e['ci_low']:+.2f}, {100 * e['ci_high']:+.2f}]"
                       for e in entries)


def render_table(table: ComparisonTable, threshold_pct: str = "10") -> str:
    """One table in Markdown: condition, seeds, test NME / FR (%) / AUC and validation NME (%) as
    ``mean ± std`` over seeds, the NME difference from the reference (percentage points), the paired
    difference per seed with its interval (:func:`format_paired`), the paired test's and the seed
    spread's verdicts and the verdict; footnotes name borrowed reference runs and the dense graph."""
    spec = table.spec
    ref = next(r for r in table.rows if r["reference"])
    header = [spec.label, "seeds", "test NME (%)", f"FR@{threshold_pct} (%)", f"AUC@{threshold_pct}", "val NME (%)",
              f"Δ NME vs {spec.label}={ref['condition']} (pp)",
              f"paired Δ (pp) per seed: mean [{100 * CONFIDENCE:g}% CI]", "paired", "seed spread", "verdict"]
    lines = ["| " + " | ".join(header) + " |", "|---|---|" + "---:|" * 6 + "---|" * 3]
    for row in table.rows:
        label = f"**{row['label']}** (reference)" if row["reference"] else row["label"]
        cells = [
            label,
            ", ".join(str(s) for s in row["seeds"]),
            format_cell(row["nme"], row["nme_std"], 100, 2),
            format_cell(row["fr"], row["fr_std"], 100, 2),
            format_cell(row["auc"], row["auc_std"], 1, 4),
            format_cell(row["val_nme"], row["val_nme_std"], 100, 2),
            "—" if row["delta_nme"] is None else f"{100 * row['delta_nme']:+.2f}",
            format_paired(row["paired"]),
            row["paired_verdict"] or "—",
            row["seed_verdict"] or "—",
            row["verdict"],
        ]
        lines.append("| " + " | ".join(cells) + " |")
    notes = []
    if table.borrowed:
        seeds = ", ".join(str(s) for s in table.borrowed_seeds)
        notes.append(f"Reference row {spec.key}={spec.reference}, seed(s) {seeds}: this preset ran no reference run "
                     f"for them; taken from the {REFERENCE_EXPERIMENT} SDFL run(s) with the identical config: "
                     f"{', '.join(table.borrowed)}.")
    total = sum(len(row["runs"]) for row in table.rows)
    for backend, ids in table.graph_backends.items():
        which = f"All {total} runs" if len(ids) == total else f"{len(ids)} of the {total} runs (the others on pyg)"
        notes.append(f"Graph backend: {which} trained the SDFL head with train.graph_backend={backend} (the same "
                     f"function and gradients as PyG's scatter path to float rounding): {', '.join(ids)}.")
    if spec.key == "graph.k" and table.num_points is not None:
        notes.append(f"k = N-1 = {table.num_points - 1} is the dense graph (every landmark a neighbour of every other).")
    return "\n".join(lines) + "\n" + "".join(f"\n{n}\n" for n in notes)


def render_markdown(comparison: Comparison) -> str:
    """``tables.md``: a header naming the protocol (data, crop, image size, backbone, schedule, seeds,
    commits, machines, wall time), the verdict rule, then the tables."""
    runs = comparison.runs
    p, meta = protocol_dict(runs), meta_dict(runs)
    thr = _threshold_pct(runs)
    faces = _join(sorted({row["faces"] for t in comparison.tables for row in t.rows}))
    per_run = meta["wall_time_s_per_run"]
    milestones = _join([", ".join(str(e) for e in m) if isinstance(m, list) else m for m in p["milestones"]])
    schedule = (f" (x{_join(p['gamma'])} after epochs {milestones})"
                if p["milestones"] and p["gamma"] else "")
    wall = ("unknown" if per_run is None else
            f"{_hours(meta['wall_time_s_total'])} in total over {per_run['runs_timed']} runs, "
            f"{per_run['mean']:.0f} s per run on average (min {per_run['min']:.0f} s, max {per_run['max']:.0f} s)")
    starts = [f"{Path(str(v)).parent.name}/{Path(str(v)).name}" for v in p["init_backbone_from"]]
    start = ("from scratch" if not starts else f"initialised from the shared backbone {_join(starts)}"
             + (" (some runs from scratch)" if any(not r.config.get("train.init_backbone_from") for r in runs) else ""))
    cpus = f", CPU {'; '.join(meta['cpus'])}" if meta.get("cpus") else ""
    lines = [
        "# Comparison tables: heads, k, ablation, graph mining",
        "",
        f"Protocol: dataset {_join(p['dataset'])}, reported on split `{comparison.split}` (subset "
        f"`{comparison.subset}`, {faces} faces); crop {_join(p['crop_scale'])}x the landmark box resized to "
        f"{_join(p['image_size'])} px; backbone {_join(p['backbone'])} {start}; {_join(p['epochs'])} epochs, "
        f"{_join(p['optimizer'])} lr {_join(p['lr'])}{schedule}, batch "
        f"{_join(p['batch_size'])}, precision {_join(p['precision'])}. NME normalised by "
        f"{_join(p['normalisation']).replace('_', '-')} "
        f"distance; FR and AUC at {thr}%.",
        "",
        f"Seeds: {', '.join(str(s) for s in meta['seeds'])}. Commit(s): {', '.join(meta['commits']) or 'unknown'}. "
        f"Machine(s): {'; '.join(meta['machines']) or 'unknown'}{cpus} (device {_join(meta['devices'])}, "
        f"{_join(meta['torch_threads'])} torch threads). Wall time: {wall}.",
        "",
        "Cells are mean ± sample standard deviation (ddof=1) over seeds (no ± with one seed). The best epoch "
        "of every run was chosen on the validation split (carved from train); the test columns are a report "
        "only and selected nothing. Δ NME: row mean minus reference mean, in percentage points (negative = "
        "lower error). Paired Δ, per seed both rows ran: the mean over the same faces of the row's per-face NME "
        "minus the reference run's of that seed, with its percentile-bootstrap interval over faces; 'paired' and "
        "'seed spread' are the two tests' answers, 'verdict' joins them.",
        "",
        VERDICT_RULE,
        "",
    ]
    for table in comparison.tables:
        lines += [f"## {table.spec.name}: {table.spec.title}", "",
                  f"Preset `experiment={table.spec.experiment}`.", "", render_table(table, thr)]
    if comparison.skipped:
        lines += ["## Skipped tables", ""] + [f"- {name}: {reason}" for name, reason in comparison.skipped.items()] + [""]
    return "\n".join(lines).rstrip() + "\n"


def summary_dict(comparison: Comparison) -> Dict[str, Any]:
    """``summary.json``: the rule, the split, protocol and meta of the runs used, every table's rows,
    the skipped tables and the warnings. Missing standard deviations are ``null``."""
    return {
        "rule": VERDICT_RULE,
        "split": comparison.split,
        "subset": comparison.subset,
        "protocol": protocol_dict(comparison.runs),
        "meta": meta_dict(comparison.runs),
        "tables": {
            t.spec.name: {"title": t.spec.title, "experiment": t.spec.experiment, "key": t.spec.key,
                          "reference": t.spec.reference, "reference_borrowed_from": t.borrowed,
                          "reference_borrowed_seeds": t.borrowed_seeds,
                          "num_points": t.num_points, "rows": t.rows,
                          **({"graph_backends": t.graph_backends} if t.graph_backends else {})}
            for t in comparison.tables
        },
        "skipped": comparison.skipped,
        "warnings": comparison.warnings,
    }


# ============================================================================ figures
def provenance_line(runs: Sequence[Run]) -> str:
    """One line naming what produced a figure: runs, seeds, config (crop, epochs, backbone),
    commit(s), machine(s) and wall time, from :func:`protocol_dict` and :func:`meta_dict`."""
    meta, proto = meta_dict(runs), protocol_dict(runs)
    config = ", ".join(f"{k}={_join(v)}" for k, v in proto.items() if k in ("image_size", "epochs", "backbone", "precision"))
    wall = meta.get("wall_time_s_total")
    return (f"{meta['runs']} runs, seeds {_join(meta['seeds'])}; {config}; commit {_join([c[:7] for c in meta['commits']])}; "
            f"{_join(meta['machines'])}; {_hours(wall) if wall else 'wall time n/a'} of runs")


def plot_table(table: ComparisonTable, path: PathLike, footer: Optional[str] = None) -> Path:
    """The table's test NME (%) ± std over seeds (dots: single runs): bars per condition with the
    reference bar highlighted, or, for the k sweep, a line against k on a log axis with the dense
    graph (k = N-1) labelled. ``footer``: a small provenance line under the axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.container import BarContainer

    from pyg_sdfl.plotting import plot_condition_bars, plot_condition_lines

    spec, rows = table.spec, table.rows
    plot_rows = [{**r, "nme_std": math.nan if r["nme_std"] is None else r["nme_std"]} for r in rows]
    fig, ax = plt.subplots(figsize=(max(4.5, 0.8 * len(rows) + 2), 3.8), dpi=120)
    title = f"{spec.name}: test NME ± std over seeds"
    if spec.key == "graph.k":
        plot_condition_lines(plot_rows, x="condition", metric="nme", ax=ax, title=title,
                             xlabel="k (neighbours per landmark)", ylabel="test NME (%)")
        ks = [float(r["condition"]) for r in rows]
        ax.set_xscale("log")
        ax.set_xticks(ks)
        ax.set_xticklabels([str(r["condition"]) for r in rows])
        ax.minorticks_off()
        ref = next(r for r in rows if r["reference"])
        ax.scatter([float(ref["condition"])], [100 * ref["nme"]], s=140, marker="*", color="tab:red", zorder=4,
                   label=f"reference k={ref['condition']}")
        if table.num_points is not None:
            for r in rows:
                if r["condition"] == table.num_points - 1:
                    ax.annotate(f"dense (k=N-1={r['condition']})", (float(r["condition"]), 100 * r["nme"]),
                                textcoords="offset points", xytext=(-10, 12), ha="right", fontsize=8,
                                arrowprops={"arrowstyle": "-", "lw": 0.6})
        ax.legend(fontsize=8)
    else:
        plot_condition_bars(plot_rows, x="label", metric="nme", ax=ax, title=title, ylabel="test NME (%)")
        ax.set_xlabel(spec.label)
        bars = next(c for c in ax.containers if isinstance(c, BarContainer))
        for patch, r in zip(bars.patches, rows):
            if r["reference"]:
                patch.set_facecolor("tab:red")
                patch.set_label(f"reference ({r['label']})")
        ax.legend(fontsize=8)
        if len(rows) > 4:
            plt.setp(ax.get_xticklabels(), rotation=30, ha="right")
    fig.tight_layout()
    return _save_with_footer(fig, path, footer)


def _save_with_footer(fig, path: PathLike, footer: Optional[str]) -> Path:
    """Write ``fig`` to ``path`` with the small provenance ``footer`` line under its axes, and close it."""
    import matplotlib.pyplot as plt

    if footer:
        fig.subplots_adjust(bottom=fig.subplotpars.bottom + 0.08)
        fig.text(0.01, 0.01, footer, fontsize=5.5, color="0.35", ha="left", va="bottom", wrap=True)
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def plot_paired(table: ComparisonTable, path: PathLike, footer: Optional[str] = None) -> Path:
    """The table's paired differences: for each row but the reference (top to bottom in table order),
    one point per seed at its mean per-face test-NME difference from the reference run of that seed
    (pp), with its bootstrap interval as a horizontal bar; a line at 0; each row's verdict on the right.
    Rows without paired statistics are named with their n/a reason."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in table.rows if not r["reference"]]
    ref = next(r for r in table.rows if r["reference"])
    seeds = sorted({json.dumps(e["seed"]) for r in rows for e in r["paired"]}, key=lambda s: _seed_key(json.loads(s)))
    colours = {s: plt.get_cmap("tab10")(i % 10) for i, s in enumerate(seeds)}
    offsets = {s: (i - (len(seeds) - 1) / 2) * min(0.5 / max(len(seeds), 1), 0.2) for i, s in enumerate(seeds)}
    fig, ax = plt.subplots(figsize=(7.0, 0.45 * len(rows) + 1.8), dpi=120)
    ax.axvline(0.0, color="0.3", lw=0.8)
    labelled = set()
    for y, r in enumerate(rows):
        for e in r["paired"]:
            key = json.dumps(e["seed"])
            ax.errorbar(100 * e["mean_diff"], y + offsets[key], fmt="o", ms=4, capsize=2, lw=1, color=colours[key],
                        xerr=[[100 * (e["mean_diff"] - e["ci_low"])], [100 * (e["ci_high"] - e["mean_diff"])]],
                        label=None if key in labelled else f"seed {e['seed']}")
            labelled.add(key)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([r["label"] for r in rows], fontsize=8)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    for y, r in enumerate(rows):
        ax.annotate(r["verdict"] if r["paired"] else r["paired_verdict"], (1.01, y), xycoords=("axes fraction", "data"),
                    fontsize=7, va="center")
    ax.set_xlabel(f"paired Δ test NME vs {table.spec.label}={ref['condition']} (pp), same seed and faces; "
                  f"bars: {100 * CONFIDENCE:g}% CI")
    ax.set_title(f"{table.spec.name}: paired difference from the reference, per seed", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    if labelled:
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.subplots_adjust(right=0.72)
    return _save_with_footer(fig, path, footer)


# ============================================================================ files
def compact_payload(payload: Mapping[str, Any], experiment: Optional[str] = None) -> Dict[str, Any]:
    """A ``results.json`` payload with its ``history`` cut to ``[{"epoch", "val_nme"}]`` for the validated
    epochs; ``choices.experiment`` set to ``experiment`` when the run did not record it. ``nme_per_face``
    (a few hundred floats per split) is kept as it is, so that an exported run gives the same paired
    statistics as the original."""
    out = dict(payload)
    out["history"] = [{"epoch": h.get("epoch"), "val_nme": h["val_nme"]}
                      for h in payload.get("history") or [] if isinstance(h, Mapping) and "val_nme" in h]
    if experiment is not None:
        choices = dict(out.get("choices") or {})
        choices.setdefault("experiment", experiment)
        out["choices"] = choices
    return out


def export_runs(runs: Sequence[Run], out_dir: PathLike) -> List[Path]:
    """One compact JSON per run (:func:`compact_payload`) at ``out_dir/<experiment>/<run name>.json``;
    :func:`load_runs` on ``out_dir`` gives the same runs back. Returns the written paths."""
    from pyg_sdfl.engine.reporting import json_default

    out_dir = Path(out_dir)
    written = []
    for run in runs:
        payload = json.loads(run.record.path.read_text())
        target = out_dir / run.experiment / f"{run.name}.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.resolve() != run.record.path.resolve():
            target.write_text(json.dumps(compact_payload(payload, run.experiment), indent=1, default=json_default) + "\n")
        written.append(target)
    return written


def write_outputs(comparison: Comparison, out: PathLike) -> Dict[str, Path]:
    """``tables.md``, ``summary.json`` and one PNG per built table into ``out``, plus ``<table>_paired.png``
    (:func:`plot_paired`) for a table with paired statistics; returns the paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": out / "tables.md", "summary": out / "summary.json"}
    paths["markdown"].write_text(render_markdown(comparison))
    paths["summary"].write_text(json.dumps(json_safe(summary_dict(comparison)), indent=1, allow_nan=False) + "\n")
    for table in comparison.tables:
        ids = {rid for row in table.rows for rid in row["runs"]}
        footer = provenance_line([r for r in comparison.runs if r.id in ids])
        paths[table.spec.name] = plot_table(table, out / f"{table.spec.name}.png", footer=footer)
        if any(row["paired"] for row in table.rows):
            name = f"{table.spec.name}_paired"
            paths[name] = plot_paired(table, out / f"{name}.png", footer=footer)
    return paths


def aggregate(dirs: Sequence[PathLike], out: PathLike, export_dir: Optional[PathLike] = None,
              split: str = "test", subset: str = "all") -> Tuple[Comparison, Dict[str, Path], List[Path]]:
    """Load, build, write; with ``export_dir`` also export every run of the four presets there.
    Returns the comparison, the written output paths and the exported run files."""
    warnings: List[str] = []
    runs = load_runs(dirs, warnings)
    comparison = build_comparison(runs, split=split, subset=subset, warnings=warnings)
    paths = write_outputs(comparison, out)
    exported = export_runs(runs, export_dir) if export_dir is not None else []
    return comparison, paths, exported
