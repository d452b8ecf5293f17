"""Occlusion robustness of trained models (the paper's Fig. 2c): visible and occluded NME against
the occluded share of the face.

    python experiments/occlusion.py runs/head_comparison/head=* --root ../shared/data/300w \\
        --out results/occlusion [--fractions 0 0.1 0.2 0.3 0.4 0.5] [--seed 0]

Each RUN_DIR's ``best.ckpt`` is loaded strictly and rebuilt from its own stored config and graph;
the test faces of its dataset (300-W: test/lfpw) are cropped at the checkpoint's image size and
crop scale, with ``dataset.root`` replaced by ``--root`` (without ``--root``, the checkpoint's own
dataset config is used as stored: e.g. synthetic faces). Every model sees the same occluders
(:func:`pyg_sdfl.occlusion.evaluate_occlusion`, seeded per face) and runs at its training
precision. Writes to ``--out``:

* ``occlusion.json``: per run (dir name, head, seed, results), mean +- std over seeds per head,
  metadata (commit, machine, wall time) and the command line;
* ``occlusion.png``: NME (%) of the visible and of the occluded landmarks against the occluded
  fraction, band and patches, one line per head (band = std over seeds; FC dashed black);
* ``occlusion_examples.png``: one test face under each occluder;
* ``occlusion.md``: the tables (also printed): visible and occluded NME, head x fraction.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from omegaconf import OmegaConf

from pyg_sdfl.analysis import LoadedModel, RunRecord, flatten_config, head_label, load_model, varying_keys
from pyg_sdfl.data.dataset import LandmarkDataset, denormalise_image
from pyg_sdfl.engine.builders import resolve_device
from pyg_sdfl.engine.checkpoint import CheckpointError
from pyg_sdfl.engine.reporting import json_default, json_safe, run_metadata
from pyg_sdfl.occlusion import (
    GREY,
    KINDS,
    apply_occluder,
    coverage,
    evaluate_occlusion,
    face_box,
    occluded_points,
    occluder_mask,
)

log = logging.getLogger("pyg_sdfl.occlusion")

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
    """Mean and sample std (``ddof=1``; NaN for one run) over the runs of each head:
    ``{head: {"runs", "seeds", "results": {kind: {fraction: {metric: {"mean", "std", "values"}}}}}}``.
    Heads are ordered SDFL first, FC last, the others alphabetically; runs in seed order."""
    groups: Dict[str, List[Mapping[str, Any]]] = {}
    for record in records:
        groups.setdefault(record["head"], []).append(record)
    out: Dict[str, Any] = {}
    for head in sorted(groups, key=_head_order):
        runs = sorted(groups[head], key=lambda r: r["seed"])
        table: Dict[str, Any] = {}
        for kind, per in runs[0]["results"].items():
            table[kind] = {}
            for fraction in per:
                cell = {}
                for metric in METRICS:
                    values = np.array([float(r["results"][kind][fraction][metric]) for r in runs], dtype=float)
                    finite = values[~np.isnan(values)]
                    cell[metric] = {
                        "mean": float(finite.mean()) if finite.size else math.nan,
                        "std": float(finite.std(ddof=1)) if finite.size > 1 else math.nan,
                        "values": values.tolist(),
                    }
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
def _cell(stats: Mapping[str, Any]) -> str:
    mean, std = stats["mean"], stats["std"]
    if mean is None or math.isnan(mean):
        return "–"
    if std is None or math.isnan(std):
        return f"{100 * mean:.2f}"
    return f"{100 * mean:.2f} ± {100 * std:.2f}"


def markdown_table(aggregated: Mapping[str, Any], kind: str, metric: str = "nme_visible") -> str:
    """Head x occluded fraction, ``metric`` in percent as mean ± std over seeds."""
    heads = list(aggregated)
    fractions = list(next(iter(aggregated.values()))["results"][kind])
    header = ["head", "runs"] + [f"{100 * float(f):g}%" for f in fractions]
    lines = ["| " + " | ".join(header) + " |", "|---|---:|" + "---:|" * len(fractions)]
    for head in heads:
        cells = [head, str(len(aggregated[head]["runs"]))]
        cells += [_cell(aggregated[head]["results"][kind][f][metric]) for f in fractions]
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
    box = face_box(landmarks)
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


# ============================================================================ command line
def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dirs", nargs="+", type=Path, help="training run folders, each with best.ckpt")
    parser.add_argument("--root", type=Path, default=None,
                        help="dataset folder (e.g. ../shared/data/300w); default: the checkpoint's own dataset config")
    parser.add_argument("--out", type=Path, default=Path("results/occlusion"), help="output folder")
    parser.add_argument("--fractions", type=float, nargs="+", default=list(DEFAULT_FRACTIONS),
                        help="occluded shares of the face box, in [0, 1]")
    parser.add_argument("--kinds", nargs="+", choices=list(KINDS), default=list(KINDS))
    parser.add_argument("--seed", type=int, default=0, help="occluder seed (the same occluders for every model)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    parser.add_argument("--precision", choices=["checkpoint", "fp32", "bf16"], default="checkpoint",
                        help="autocast precision; default: the checkpoint's train.precision")
    parser.add_argument("--example-face", type=int, default=0, help="test face drawn in occlusion_examples.png")
    args = parser.parse_args(argv)
    bad = [f for f in args.fractions if not (math.isfinite(f) and 0 <= f <= 1)]
    if bad:
        parser.error(f"--fractions must lie in [0, 1]; got {bad}")
    if args.seed < 0:
        parser.error(f"--seed must be >= 0; got {args.seed}")
    if args.batch_size < 1:
        parser.error(f"--batch-size must be >= 1; got {args.batch_size}")
    return args


def run(args: argparse.Namespace, command: str, dataset: Optional[LandmarkDataset] = None) -> Dict[str, Any]:
    """Evaluate every run and write the reports; ``dataset`` replaces the checkpoints' test sets
    (tests use it)."""
    start = time.perf_counter()
    checkpoints = [checkpoint_of(d) for d in args.run_dirs]  # every folder checked before any work
    if args.root is not None and not args.root.is_dir():
        raise FileNotFoundError(f"--root {args.root} does not exist or is not a folder")
    device = str(resolve_device(args.device))
    fractions = sorted(dict.fromkeys(float(f) for f in args.fractions))
    precision = None if args.precision == "checkpoint" else args.precision
    datasets: Dict[Tuple[int, float], LandmarkDataset] = {}
    records, configs = [], []
    for run_dir, ckpt in zip(args.run_dirs, checkpoints):
        loaded = load_model(ckpt, device=device)
        data = dataset
        if data is None:
            key = (loaded.image_size, float(loaded.config.dataset.crop_scale), str(loaded.config.dataset.name))
            if key not in datasets:
                datasets[key] = load_test_faces(loaded, args.root)
            data = datasets[key]
        log.info("%s: head %s, seed %s, %d test faces", run_dir, head_label(loaded.config.head),
                 loaded.config.get("seed"), len(data))
        record = evaluate_run_dir(run_dir, data, loaded=loaded, kinds=args.kinds, fractions=fractions, seed=args.seed,
                                  batch_size=args.batch_size, device=device, precision=precision)
        records.append(record)
        configs.append(OmegaConf.to_container(loaded.config, resolve=True))
        del loaded
    aggregated = aggregate(records)
    notes = condition_warnings(records, configs)
    for note in notes:
        log.warning(note)
    first = records[0]
    example_data = dataset if dataset is not None else next(iter(datasets.values()))
    protocol = (f"{first['dataset']} test faces ({len(example_data)}), crop {first['crop_scale']}x the landmark box at "
                f"{first['image_size']}px; NME / inter-ocular distance (outer eye corners), mean over faces; "
                f"occluders painted RGB {GREY} inside the tight landmark box, seed {args.seed}; "
                f"band from the left or right side (per face), patches = random rectangles; "
                f"mean ± std over seeds (runs per head in the 'runs' column).")
    args.out.mkdir(parents=True, exist_ok=True)
    payload = {
        "protocol": protocol,
        "kinds": list(args.kinds),
        "fractions": fractions,
        "seed": args.seed,
        "runs": records,
        "aggregated": aggregated,
        "notes": notes,
        "command": command,
        "meta": run_metadata(time.perf_counter() - start, device),
    }
    (args.out / "occlusion.json").write_text(json.dumps(json_safe(payload), indent=2, default=json_default,
                                                        allow_nan=False))
    report = markdown_report(aggregated, protocol, args.kinds)
    (args.out / "occlusion.md").write_text(report)
    meta = payload["meta"]
    footer = (f"{len(records)} runs of {', '.join(aggregated)}; commit {str(meta['commit'])[:7]}; {meta['machine']}; "
              f"evaluation {meta.get('wall_time_s', '?')} s; each model's run, config and seed in occlusion.json")
    plot_curves(aggregated, args.kinds, args.out / "occlusion.png",
                title=f"{first['dataset']} test, {first['image_size']}px crops: NME under synthetic occlusion",
                footer=footer)
    plot_examples(example_data, args.example_face, args.kinds, fractions, args.seed, args.out / "occlusion_examples.png")
    for kind in args.kinds:
        print(f"\nVisible-landmark NME (%), {kind} occluder, by occluded fraction\n")
        print(markdown_table(aggregated, kind, "nme_visible"))
    print(f"results: {args.out / 'occlusion.json'}  tables: {args.out / 'occlusion.md'}  "
          f"plots: {args.out / 'occlusion.png'}, {args.out / 'occlusion_examples.png'}")
    return payload


def main(argv: Optional[Sequence[str]] = None, dataset: Optional[LandmarkDataset] = None) -> Dict[str, Any]:
    """Command-line entry; ``dataset`` (tests) replaces the checkpoints' test sets."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    words = list(sys.argv[1:] if argv is None else argv)
    command = shlex.join(["python", sys.argv[0] if argv is None else "experiments/occlusion.py", *words])
    args = parse_args(words)
    try:
        return run(args, command, dataset=dataset)
    except (FileNotFoundError, CheckpointError) as err:
        raise SystemExit(f"error: {err}") from None


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
