"""The occlusion study over trained runs (the paper's Fig. 2c), run by ``experiments/occlusion.py``:
each run's test faces and occlusion record (:func:`evaluate_run_dir`, through
:func:`pyg_sdfl.studies.occlusion.evaluate_occlusion`), the mean and std over the seeds of each head
(:func:`aggregate`, with :func:`pyg_sdfl.studies.runs.mean_std`), the Markdown tables
(:func:`markdown_report`), the JSON file and the figures (:func:`write_report`, :func:`plot_examples`).
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from pyg_sdfl.data.dataset import LandmarkDataset, denormalise_image
from pyg_sdfl.engine.checkpoint import load_model
from pyg_sdfl.engine.reporting import json_default, json_safe
from pyg_sdfl.geometry import landmark_box
from pyg_sdfl.studies.occlusion import (
    GREY,
    KINDS,
    apply_occluder,
    coverage,
    evaluate_occlusion,
    occluded_points,
    occluder_mask,
)
from pyg_sdfl.studies.runs import RunRecord, flatten_config, format_cell, group_by_condition, head_label, mean_std, \
    varying_keys

if TYPE_CHECKING:  # pragma: no cover
    from pyg_sdfl.engine.checkpoint import LoadedModel

__all__ = [
    "DEFAULT_FRACTIONS",
    "METRICS",
    "checkpoint_of",
    "load_test_faces",
    "evaluate_run_dir",
    "aggregate",
    "condition_warnings",
    "markdown_table",
    "markdown_report",
    "plot_curves",
    "plot_examples",
    "protocol_text",
    "write_report",
]

DEFAULT_FRACTIONS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)
METRICS = ("nme_all", "nme_visible", "nme_occluded", "nme_visible_clean")


# ============================================================================ runs and data
def checkpoint_of(run_dir: Path) -> Path:
    """``run_dir/best.ckpt``; ``FileNotFoundError`` naming the folder when it is not there."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder {run_dir} does not exist")
    path = run_dir / "best.ckpt"
    if not path.is_file():
        raise FileNotFoundError(f"run folder {run_dir} has no best.ckpt (is the run finished?)")
    return path


def load_test_faces(loaded: LoadedModel, root: Optional[Path] = None) -> LandmarkDataset:
    """The test faces of the checkpoint's dataset, un-augmented, at its image size and crop scale.

    With ``root`` the dataset's config group (``dataset=<name>``) is composed afresh with
    ``dataset.root=root`` (the stored config is resolved, so its paths are literal); without it the
    stored dataset config is used as it is.
    """
    from hydra.utils import instantiate

    from pyg_sdfl.config import compose

    stored = loaded.config.dataset
    if root is not None:
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"--root {root} does not exist or is not a folder")
        data_cfg = compose([f"dataset={stored.name}", f"++dataset.root={root.resolve()}"]).dataset
    else:
        data_cfg = stored
        stored_root = stored.get("root")
        if stored_root is not None and not Path(str(stored_root)).is_dir():
            raise FileNotFoundError(f"the checkpoint's dataset.root {stored_root!r} does not exist here: "
                                    "pass --root with the dataset folder")
    if data_cfg.get("test") is None:
        raise ValueError(f"dataset {stored.name!r} has no test split")
    samples = list(instantiate(data_cfg.test))
    if not samples:
        raise ValueError(f"dataset {stored.name!r}: the test split is empty")
    found = samples[0].landmarks.shape[0]
    if found != loaded.scheme.num_points:
        raise ValueError(f"the test faces have {found} landmarks but the model predicts "
                         f"{loaded.scheme.num_points} (scheme {loaded.scheme.name!r})")
    return LandmarkDataset(samples, loaded.scheme, image_size=loaded.image_size,
                           crop_scale=float(stored.crop_scale), augment=None,
                           cache_images=bool(data_cfg.get("cache_images", False)))


def evaluate_run_dir(run_dir: Path, dataset: LandmarkDataset, loaded: Optional[LoadedModel] = None,
                     kinds: Sequence[str] = tuple(KINDS), fractions: Sequence[float] = DEFAULT_FRACTIONS,
                     seed: int = 0, batch_size: int = 32, device: str = "cpu",
                     precision: Optional[str] = None) -> Dict[str, Any]:
    """Occlusion results of one run on ``dataset``: a JSON-ready record.

    ``precision`` defaults to the checkpoint's ``train.precision``. ``dataset`` must match the
    model's crop size (checked)."""
    run_dir = Path(run_dir)
    if loaded is None:
        loaded = load_model(checkpoint_of(run_dir), device=device)
    if dataset.image_size != loaded.image_size:
        raise ValueError(f"{run_dir}: the model takes {loaded.image_size}px crops, the dataset gives "
                         f"{dataset.image_size}px")
    cfg = loaded.config
    precision = precision or str(cfg.train.get("precision", "fp32"))
    start = time.perf_counter()
    results = evaluate_occlusion(loaded.model, dataset, loaded.scheme, kinds=kinds, fractions=fractions,
                                 seed=seed, batch_size=batch_size, device=device, precision=precision)
    return {
        "run": run_dir.name,
        "path": str(run_dir),
        "head": head_label(cfg.head),
        "seed": int(cfg.get("seed", 0)),
        "precision": precision,
        "image_size": loaded.image_size,
        "crop_scale": float(cfg.dataset.crop_scale),
        "dataset": str(cfg.dataset.name),
        "wall_time_s": round(time.perf_counter() - start, 1),
        "results": {kind: {_key(f): stats for f, stats in per.items()} for kind, per in results.items()},
    }


def _key(fraction: float) -> str:
    return f"{float(fraction):g}"


# ============================================================================ aggregation
def aggregate(records: Sequence[Mapping[str, Any]]) -> Dict[str, Any]:
    """Mean and sample std over the runs of each head (:func:`~pyg_sdfl.studies.runs.mean_std`, NaN
    values left out: a run with no occluded landmark has no occluded NME; std NaN for one run):
    ``{head: {"runs", "seeds", "results": {kind: {fraction: {metric: {"mean", "std", "values"}}}}}}``.
    Heads are ordered SDFL first, FC last, the others alphabetically; runs in seed order."""
    groups = group_by_condition(records, condition=lambda r: r["head"], seed=lambda r: r["seed"])
    out: Dict[str, Any] = {}
    for head in sorted(groups, key=_head_order):
        runs = groups[head]
        table: Dict[str, Any] = {}
        for kind, per in runs[0]["results"].items():
            table[kind] = {}
            for fraction in per:
                cell = {}
                for metric in METRICS:
                    values = [float(r["results"][kind][fraction][metric]) for r in runs]
                    mean, std = mean_std(values, skip_nan=True)
                    cell[metric] = {"mean": mean, "std": std, "values": values}
                table[kind][fraction] = cell
        out[head] = {"runs": [r["run"] for r in runs], "seeds": [r["seed"] for r in runs], "results": table}
    return out


def _head_order(head: str) -> Tuple[int, str]:
    return (0 if head == "sdfl" else 2 if head == "fc" else 1, head)


def condition_warnings(records: Sequence[Mapping[str, Any]], configs: Sequence[Mapping[str, Any]]) -> List[str]:
    """Settings other than the seed that differ between runs of one head (they would be averaged)."""
    notes = []
    by_head: Dict[str, List[RunRecord]] = {}
    for record, config in zip(records, configs):
        by_head.setdefault(record["head"], []).append(
            RunRecord(path=Path(record["path"]), config=flatten_config(config), metrics={}))
    for head, runs in by_head.items():
        keys = varying_keys(runs) if len(runs) > 1 else []
        if keys:
            notes.append(f"runs of head {head!r} differ in {', '.join(keys)}: averaged together")
    return notes


# ============================================================================ reports
def markdown_table(aggregated: Mapping[str, Any], kind: str, metric: str = "nme_visible") -> str:
    """Head x occluded fraction, ``metric`` in percent as mean ± std over seeds."""
    heads = list(aggregated)
    fractions = list(next(iter(aggregated.values()))["results"][kind])
    header = ["head", "runs"] + [f"{100 * float(f):g}%" for f in fractions]
    lines = ["| " + " | ".join(header) + " |", "|---|---:|" + "---:|" * len(fractions)]
    for head in heads:
        cells = [head, str(len(aggregated[head]["runs"]))]
        stats = [aggregated[head]["results"][kind][f][metric] for f in fractions]
        cells += [format_cell(c["mean"], c["std"], scale=100, digits=2, missing="–") for c in stats]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def markdown_report(aggregated: Mapping[str, Any], protocol: str, kinds: Sequence[str]) -> str:
    titles = {"nme_visible": "NME of the visible landmarks (%)", "nme_occluded": "NME of the occluded landmarks (%)",
              "nme_visible_clean": "Same visible landmarks on the clean crops (%)"}
    parts = ["# Occlusion robustness\n", protocol + "\n"]
    for metric, title in titles.items():
        for kind in kinds:
            parts.append(f"## {title}: {kind}\n")
            parts.append(markdown_table(aggregated, kind, metric))
    return "\n".join(parts)


#: line colours of the other heads (red is SDFL's, black FC's)
_PALETTE = ("tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan",
            "tab:gray")


def _style(head: str, index: int) -> Dict[str, Any]:
    if head == "fc":
        return dict(color="black", linestyle="--", linewidth=1.8)
    if head == "sdfl":
        return dict(color="tab:red", linestyle="-", linewidth=2.2)
    return dict(color=_PALETTE[index % len(_PALETTE)], linestyle="-", linewidth=1.3)


def plot_curves(aggregated: Mapping[str, Any], kinds: Sequence[str], path: Path, title: str = "",
                footer: str = "") -> Path:
    """Panels (kind x {visible, occluded}): NME (%) against the occluded fraction (%), one line per
    head with a +-std band over seeds; ``footer``: a small provenance line at the bottom."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = (("nme_visible", "visible landmarks"), ("nme_occluded", "occluded landmarks"))
    fig, axes = plt.subplots(len(kinds), 2, figsize=(10, 3.6 * len(kinds)), dpi=120, squeeze=False, sharex=True)
    for row, kind in enumerate(kinds):
        for col, (metric, label) in enumerate(metrics):
            ax = axes[row, col]
            for i, (head, entry) in enumerate(aggregated.items()):
                cells = entry["results"][kind]
                xs = np.array([100 * float(f) for f in cells])
                mean = np.array([_nan(cells[f][metric]["mean"]) for f in cells]) * 100
                std = np.nan_to_num(np.array([_nan(cells[f][metric]["std"]) for f in cells]) * 100)
                ok = ~np.isnan(mean)
                style = _style(head, i)
                ax.plot(xs[ok], mean[ok], marker="o", markersize=3.5, label=f"{head} (n={len(entry['runs'])})", **style)
                ax.fill_between(xs[ok], (mean - std)[ok], (mean + std)[ok], color=style["color"], alpha=0.15, linewidth=0)
            ax.set_title(f"{kind}: {label}", fontsize=10)
            ax.set_ylabel("NME (%)")
            ax.grid(alpha=0.3)
            if row == len(kinds) - 1:
                ax.set_xlabel("occluded share of the face box (%)")
    axes[0, 0].legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    if footer:
        fig.subplots_adjust(bottom=fig.subplotpars.bottom + 0.04)
        fig.text(0.01, 0.005, footer, fontsize=6, color="0.35", ha="left", va="bottom")
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def _nan(value: Any) -> float:
    return math.nan if value is None else float(value)


def plot_examples(dataset: LandmarkDataset, face: int, kinds: Sequence[str], fractions: Sequence[float], seed: int,
                  path: Path) -> Path:
    """Face ``face`` of ``dataset`` under every occluder: rows = kinds, columns = fractions; ground
    truth visible (green) and occluded (red), face box outlined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    if not 0 <= face < len(dataset):
        raise ValueError(f"--example-face {face} out of range for {len(dataset)} test faces")
    item = dataset[face]
    image, landmarks = item["image"], item["landmarks"].numpy().astype(np.float64)
    box = landmark_box(landmarks)
    size = image.shape[-1]
    fig, axes = plt.subplots(len(kinds), len(fractions), figsize=(2.1 * len(fractions), 2.35 * len(kinds)), dpi=110,
                             squeeze=False)
    for row, kind in enumerate(kinds):
        for col, fraction in enumerate(fractions):
            mask, info = occluder_mask(kind, box, fraction, size, seed, face)
            hidden = occluded_points(landmarks, mask)
            ax = axes[row, col]
            ax.imshow(denormalise_image(apply_occluder(image, mask)))
            ax.add_patch(Rectangle((box[0], box[1]), box[2] - box[0], box[3] - box[1], fill=False, lw=0.6,
                                   edgecolor="yellow", linestyle=":"))
            ax.scatter(*landmarks[~hidden].T, s=5, c="lime")
            ax.scatter(*landmarks[hidden].T, s=5, c="red")
            side = f", {info['side']}" if "side" in info else ""
            ax.set_title(f"{kind}{side} {100 * fraction:g}%\ncover {100 * coverage(mask, box):.1f}%, "
                         f"{int(hidden.sum())} hidden", fontsize=7)
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


# ============================================================================ report files
def protocol_text(record: Mapping[str, Any], faces: int, seed: int) -> str:
    """The protocol sentence of the report: data and crop of ``record`` (one run's record, all runs
    share them), ``faces`` test faces, the occluders and their ``seed``, the statistic."""
    return (f"{record['dataset']} test faces ({faces}), crop {record['crop_scale']}x the landmark box at "
            f"{record['image_size']}px; NME / inter-ocular distance (outer eye corners), mean over faces; "
            f"occluders painted RGB {GREY} inside the tight landmark box, seed {seed}; "
            f"band from the left or right side (per face), patches = random rectangles; "
            f"mean ± std over seeds (runs per head in the 'runs' column).")


def write_report(payload: Mapping[str, Any], out: Path) -> Dict[str, Path]:
    """``occlusion.json`` (``payload`` as strict JSON: NaN written as ``null``), ``occlusion.md``
    (:func:`markdown_report` of its ``aggregated``, ``protocol`` and ``kinds``) and ``occlusion.png``
    (:func:`plot_curves`, titled from its first run, with a provenance footer from its ``meta``) into
    ``out``; returns the paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "occlusion.json", "markdown": out / "occlusion.md", "curves": out / "occlusion.png"}
    paths["json"].write_text(json.dumps(json_safe(payload), indent=2, default=json_default, allow_nan=False))
    aggregated, kinds = payload["aggregated"], payload["kinds"]
    paths["markdown"].write_text(markdown_report(aggregated, payload["protocol"], kinds))
    first, meta = payload["runs"][0], payload["meta"]
    footer = (f"{len(payload['runs'])} runs of {', '.join(aggregated)}; commit {str(meta['commit'])[:7]}; "
              f"{meta['machine']}; evaluation {meta.get('wall_time_s', '?')} s; each model's run, config and seed "
              "in occlusion.json")
    plot_curves(aggregated, kinds, paths["curves"],
                title=f"{first['dataset']} test, {first['image_size']}px crops: NME under synthetic occlusion",
                footer=footer)
    return paths
