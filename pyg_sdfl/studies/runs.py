"""Run records and their aggregation: the one place that turns finished runs into table rows.

* :func:`load_results` reads the ``results.json`` files of ``experiments/run.py`` into
  :class:`RunRecord` s (flattened config, metrics, provenance); :func:`flatten_config`,
  :func:`head_label` and :func:`varying_keys` describe their settings.
* :func:`group_by_condition` groups runs by condition, each group in seed order, and
  :func:`mean_std` is the statistic of a condition over its seeds: the mean and the sample standard
  deviation (``ddof=1``). :func:`aggregate_results` applies both to run records (the comparison tables
  and ``notebooks/layer_comparison.ipynb``); the occlusion study applies them to its own records
  (:func:`pyg_sdfl.studies.occlusion_study.aggregate`).
* :func:`format_cell` writes ``mean ± std`` for every table (:func:`format_table`, the comparison
  tables and the occlusion tables).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Hashable, Iterable, List, Mapping, Optional, Sequence, Tuple, TypeVar, Union

import numpy as np

__all__ = [
    "RunRecord",
    "head_label",
    "flatten_config",
    "KEYS_DECLARED_LATER",
    "TRAIN_KEYS_DECLARED_LATER",
    "load_results",
    "IGNORED_KEYS",
    "varying_keys",
    "complement_metric",
    "seed_order",
    "group_by_condition",
    "mean_std",
    "aggregate_results",
    "format_cell",
    "format_table",
]

PathLike = Union[str, Path]
T = TypeVar("T")


@dataclass(frozen=True, eq=False)
class RunRecord:
    """One finished run: where its ``results.json`` is, its flattened config and its metrics."""

    path: Path
    config: Dict[str, Any]  # flattened: "graph.k" -> 3, "head" -> "sdfl", ...
    metrics: Dict[str, Dict[str, Dict[str, float]]]  # split -> subset -> {nme, fr, auc, count}
    protocol: str = ""  # e.g. "NME / inter_ocular, crop 1.2x landmark box, 256px"
    choices: Dict[str, Any] = field(default_factory=dict)  # Hydra group picks, e.g. {"head": "gat"}
    meta: Dict[str, Any] = field(default_factory=dict)  # commit, machine, device, wall_time_s, ...
    # split -> (M,) per-face NME in the dataset's face order; {} for results written without them
    nme_per_face: Dict[str, np.ndarray] = field(default_factory=dict)

    def get(self, key: str, default: Any = None) -> Any:
        return self.config.get(key, default)


def head_label(head_cfg: Mapping[str, Any]) -> str:
    """Short name of a head config: its ``layer`` (``gcn``, ``gat``, ...) for the generic PyG head,
    otherwise the class name without ``Head``, lower-cased (``SDFLHead`` -> ``sdfl``, ``FCHead`` -> ``fc``)."""
    if not isinstance(head_cfg, Mapping):
        raise ValueError(f"head config must be a mapping; got {type(head_cfg).__name__}")
    if head_cfg.get("layer"):
        return str(head_cfg["layer"])
    target = str(head_cfg.get("_target_", "unknown"))
    name = target.rsplit(".", 1)[-1]
    return (name[:-4] if name.endswith("Head") and len(name) > 4 else name).lower()


#: config keys declared after runs were recorded, by head class: the value the code used while the key
#: was undeclared. A config without the key ran with that value, so :func:`flatten_config` fills it in
#: (comparisons would otherwise take an old run for another protocol and refuse to compare with it).
KEYS_DECLARED_LATER: Dict[str, Dict[str, Any]] = {
    target: {"head.map_hidden": 256, "head.map_kernel_size": 3}  # declared 2026-12-06 (GraphHead's defaults)
    for target in ("pyg_sdfl.nn.heads.SDFLHead", "pyg_sdfl.nn.heads.PyGLayerHead")
}

#: training keys declared after runs were recorded (any model), with the behaviour of the code before them
TRAIN_KEYS_DECLARED_LATER: Dict[str, Any] = {
    "train.freeze_backbone_epochs": 0,  # declared 2026-12-06 (pyg_sdfl.engine.fine_tuning): never frozen
    "train.backbone_lr_scale": 1.0,     # declared 2026-12-06: the backbone at the optimiser's lr
    "train.distill.teacher": None,      # declared 2026-12-06 (pyg_sdfl.engine.distillation): no teacher
    "train.distill.weight": 0.5,        # declared 2026-12-06: unused without a teacher; the declared default
}


def flatten_config(config: Mapping[str, Any], prefix: str = "") -> Dict[str, Any]:
    """Nested dict -> ``{"a.b.c": value}``; lists become tuples (hashable). Adds ``"head"`` (see
    :func:`head_label`) and ``"backbone"`` (``backbone.name``) at the top level, and the
    :data:`KEYS_DECLARED_LATER` of its head class and the :data:`TRAIN_KEYS_DECLARED_LATER` that the config lacks."""
    out: Dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten_config(value, prefix=f"{name}."))
        else:
            out[name] = tuple(value) if isinstance(value, list) else value
    if not prefix:
        if isinstance(config.get("head"), Mapping):
            out["head"] = head_label(config["head"])
            for declared, default in KEYS_DECLARED_LATER.get(str(config["head"].get("_target_")), {}).items():
                out.setdefault(declared, default)
        if isinstance(config.get("train"), Mapping):
            for declared, default in TRAIN_KEYS_DECLARED_LATER.items():
                out.setdefault(declared, default)
        if isinstance(config.get("backbone"), Mapping) and "name" in config["backbone"]:
            out["backbone"] = config["backbone"]["name"]
    return out


def load_results(root: PathLike) -> List[RunRecord]:
    """Every run result below ``root``: JSON files (searched recursively, sorted) holding a
    ``"metrics"`` (split -> subset -> ``{nme, fr, auc, count}``) and a ``"config"`` mapping, as written by
    ``experiments/run.py`` (``results.json``; its ``normalisation`` and ``crop`` become the record's
    ``protocol``; its ``choices`` and ``meta`` are kept as they are; its ``nme_per_face``, split -> list of
    per-face NMEs, becomes ``(M,)`` float arrays). Other JSON files are ignored; a missing folder gives
    ``[]``. Unreadable JSON, or per-face errors that are not lists of numbers, raise ``ValueError``
    naming the file."""
    root = Path(root)
    if not root.is_dir():
        return []
    records = []
    for path in sorted(root.rglob("*.json")):
        try:
            payload = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"cannot read results file {path}: {err}") from err
        if not isinstance(payload, dict) or not isinstance(payload.get("metrics"), dict) \
                or not isinstance(payload.get("config"), dict):
            continue
        protocol = f"NME / {payload.get('normalisation', 'inter_ocular')}"
        if payload.get("crop"):
            protocol += f", crop {payload['crop']}"
        records.append(RunRecord(path=path, config=flatten_config(payload["config"]), metrics=payload["metrics"],
                                 protocol=protocol, choices=dict(payload.get("choices") or {}),
                                 meta=dict(payload.get("meta") or {}),
                                 nme_per_face=_per_face(payload.get("nme_per_face"), path)))
    return records


def _per_face(value: Any, path: Path) -> Dict[str, np.ndarray]:
    """``nme_per_face`` of a results file: split -> ``(M,)`` float64 (``{}`` when absent)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"results file {path}: nme_per_face must map splits to lists; got {type(value).__name__}")
    out = {}
    for split, errors in value.items():
        try:
            array = np.asarray(errors, dtype=float)
        except (TypeError, ValueError) as err:
            raise ValueError(f"results file {path}: nme_per_face[{split!r}] is not a list of numbers: {err}") from err
        if array.ndim != 1:
            raise ValueError(f"results file {path}: nme_per_face[{split!r}] must be one value per face; "
                             f"got shape {array.shape}")
        out[str(split)] = array
    return out


#: config keys that differ between runs without defining a condition: the seed, paths, and where and on how
#: many threads a run computed (a joblib sweep's ``threads=auto`` and a lone run's ``threads=1`` train the same
#: model; the sweep presets leave them out of the run folders' names for the same reason)
IGNORED_KEYS: Tuple[str, ...] = ("seed", "dataset.root", "train.resume", "graph.path", "device", "threads")


def varying_keys(records: Sequence[RunRecord], ignore: Sequence[str] = IGNORED_KEYS) -> List[str]:
    """Flattened config keys whose value differs between ``records`` (the swept settings), sorted;
    ``ignore`` (seed, paths, device) and raw ``head.*`` / ``backbone.*`` keys (summarised by
    ``head`` / ``backbone``) are left out."""
    keys = sorted(set().union(*(r.config for r in records))) if records else []
    out = []
    for key in keys:
        if key in ignore or (key.startswith(("head.", "backbone.")) and key not in ("head", "backbone")):
            continue
        values = {json.dumps(r.config.get(key), sort_keys=True, default=str) for r in records}
        if len(values) > 1:
            out.append(key)
    return out


def complement_metric(split_metrics: Mapping[str, Mapping[str, float]], subset: str, metric: str = "nme") -> float:
    """Mean per-face ``metric`` over the faces *not* in ``subset`` (e.g. NME of the unoccluded faces),
    recovered exactly from the ``"all"`` and ``subset`` means and counts:
    ``(m_all n_all - m_sub n_sub) / (n_all - n_sub)``. Only valid for means (``nme``), not FR or AUC."""
    if metric != "nme":
        raise ValueError(f"only the mean NME has an exact complement; got metric={metric!r}")
    if "all" not in split_metrics or subset not in split_metrics:
        raise ValueError(f"need the 'all' and {subset!r} subsets; have {sorted(split_metrics)}")
    a, s = split_metrics["all"], split_metrics[subset]
    rest = int(a["count"]) - int(s["count"])
    if rest <= 0:
        raise ValueError(f"every face is in subset {subset!r}: no complement")
    return (float(a[metric]) * int(a["count"]) - float(s[metric]) * int(s["count"])) / rest


def seed_order(seed: Any) -> Tuple[bool, Any]:
    """Sort key of a seed: by value, a run without a seed (``None``) last."""
    return (seed is None, seed if seed is not None else 0)


def group_by_condition(items: Iterable[T], condition: Callable[[T], Hashable],
                       seed: Callable[[T], Any]) -> Dict[Hashable, List[T]]:
    """``items`` grouped by ``condition(item)`` (groups in order of first appearance), each group sorted
    by ``seed(item)`` (:func:`seed_order`; items with equal seeds keep their order)."""
    groups: Dict[Hashable, List[T]] = {}
    for item in items:
        groups.setdefault(condition(item), []).append(item)
    for members in groups.values():
        members.sort(key=lambda item: seed_order(seed(item)))
    return groups


def mean_std(values: Sequence[float], skip_nan: bool = False) -> Tuple[float, float]:
    """Mean and sample standard deviation of one condition's values over seeds ``v_1 .. v_n``:
    ``mean = sum_s v_s / n`` and ``std = sqrt(sum_s (v_s - mean)^2 / (n - 1))`` (``ddof=1``).

    ``std`` is NaN for a single value and both are NaN for none. ``skip_nan`` leaves NaN values out
    first (a run that has no value for the cell, e.g. no occluded landmark); without it a NaN value
    makes the mean NaN.
    """
    v = np.asarray(values, dtype=float)
    if skip_nan:
        v = v[~np.isnan(v)]
    mean = float(v.mean()) if v.size else math.nan
    std = float(v.std(ddof=1)) if v.size > 1 else math.nan
    return mean, std


def aggregate_results(records: Sequence[RunRecord], by: Sequence[str], split: str = "test", subset: str = "all",
                      metrics: Sequence[str] = ("nme", "fr", "auc"), seed_key: str = "seed",
                      complement: bool = False) -> List[Dict[str, Any]]:
    """Mean and standard deviation over seeds of each condition (:func:`mean_std`).

    Runs are grouped by the values of the flattened config keys ``by`` (e.g. ``("head",)`` or
    ``("head", "graph.k")``); runs lacking ``split``/``subset`` are skipped. With ``complement=True``
    the ``nme`` of the faces *outside* ``subset`` is used instead (:func:`complement_metric`).

    Returns one row per condition, sorted by the ``by`` values: the ``by`` keys, ``"runs"`` (count),
    ``"seeds"`` (sorted list), ``"faces"`` (the subset's face count of the first run), and for each
    metric ``m``: ``m`` (mean over runs), ``m_std`` (sample standard deviation, ``ddof=1``; NaN for a
    single run) and ``m_values`` (the per-run values, in seed order).
    """
    if not by:
        raise ValueError("aggregate_results needs at least one key to group by")
    if complement and tuple(metrics) != ("nme",):
        raise ValueError("complement=True is only defined for metrics=('nme',)")
    groups = group_by_condition(
        (r for r in records if subset in r.metrics.get(split, {})),
        condition=lambda r: tuple(json.dumps(r.config.get(k), sort_keys=True, default=str) for k in by),
        seed=lambda r: r.config.get(seed_key))
    rows = []
    for runs in groups.values():
        first = runs[0]
        row: Dict[str, Any] = {k: first.config.get(k) for k in by}
        row["runs"] = len(runs)
        row["seeds"] = [r.config.get(seed_key) for r in runs]
        row["faces"] = int(first.metrics[split][subset].get("count", 0))
        if complement:
            row["faces"] = int(first.metrics[split]["all"]["count"]) - row["faces"]
        for m in metrics:
            if complement:
                values = [complement_metric(r.metrics[split], subset, m) for r in runs]
            else:
                values = [float(r.metrics[split][subset][m]) for r in runs]
            row[m], row[f"{m}_std"] = mean_std(values)
            row[f"{m}_values"] = np.asarray(values, dtype=float).tolist()
        rows.append(row)
    rows.sort(key=lambda row: tuple(_sort_key(row[k]) for k in by))
    return rows


def _sort_key(value: Any) -> Tuple[int, Any]:
    if value is None:
        return (2, "")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, value)
    return (1, str(value))


def format_cell(mean: Optional[float], std: Optional[float], scale: float = 1.0, digits: int = 2,
                missing: str = "-") -> str:
    """One table cell: ``mean ± std``, both times ``scale`` with ``digits`` decimals; the mean alone
    when ``std`` is ``None`` or NaN (a single seed); ``missing`` when ``mean`` is ``None`` or NaN."""
    if mean is None or math.isnan(mean):
        return missing
    text = f"{mean * scale:.{digits}f}"
    if std is None or math.isnan(std):
        return text
    return f"{text} ± {std * scale:.{digits}f}"


def format_table(rows: Sequence[Mapping[str, Any]], by: Sequence[str], metrics: Sequence[str] = ("nme", "fr", "auc"),
                 percent: Sequence[str] = ("nme", "fr")) -> str:
    """Markdown table of :func:`aggregate_results` rows: ``mean ± std`` per metric (:func:`format_cell`;
    ``percent`` ones times 100 with 2 decimals and a ``(%)`` header, the others with 4), then runs and
    faces."""
    header = [*by] + [f"{m.upper()} (%)" if m in percent else m.upper() for m in metrics] + ["runs", "faces"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(by) + "---:|" * (len(metrics) + 2)]
    for row in rows:
        cells = [str(row[k]) for k in by]
        for m in metrics:
            scale, digits = (100.0, 2) if m in percent else (1.0, 4)
            cells.append(format_cell(row[m], row[f"{m}_std"], scale, digits))
        cells += [str(row["runs"]), str(row["faces"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
