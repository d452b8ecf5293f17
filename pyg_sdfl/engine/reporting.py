"""Results on disk: a JSON for scripts, a Markdown table for people, a CED plot and a grid of faces."""
from __future__ import annotations

import json
import math
import os
import platform
import subprocess
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence

import numpy as np
import torch

__all__ = ["CPU_FLAGS_OF_INTEREST", "cpu_description", "json_default", "json_safe", "run_metadata", "write_results", "metrics_table", "plot_ced", "plot_prediction_grid"]


#: The /proc/cpuinfo flags that decide CPU speed here (vector width, bf16 and AMX units).
CPU_FLAGS_OF_INTEREST = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile", "amx_int8")


def cpu_description(cpuinfo: str | Path = "/proc/cpuinfo") -> Dict[str, Any]:
    """``{"cpu": model name, "cpu_flags": [...]}``: the CPU's model and which of
    :data:`CPU_FLAGS_OF_INTEREST` any of its cores lists (timings differ by 2x between VMs that share a
    name but not AMX); ``platform.processor()`` and ``[]`` where ``cpuinfo`` cannot be read (not Linux)."""
    try:
        lines = Path(cpuinfo).read_text().splitlines()
    except OSError:
        lines = []
    model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), None)
    listed = {flag for line in lines if line.startswith("flags") for flag in line.split(":", 1)[1].split()}
    flags = [flag for flag in CPU_FLAGS_OF_INTEREST if flag in listed]
    return {"cpu": model or platform.processor() or "unknown", "cpu_flags": flags}


def run_metadata(wall_time_s: Optional[float] = None, device: Optional[str] = None) -> Dict[str, Any]:
    """Commit, machine and library versions, stored next to every reported number."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                                cwd=Path(__file__).resolve().parent).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    meta = {
        "commit": commit,
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cpus",
        **cpu_description(),
        "device": device or "cpu",
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }
    if device and device.startswith("cuda") and torch.cuda.is_available():
        meta["gpu"] = torch.cuda.get_device_name(0)
    if wall_time_s is not None:
        meta["wall_time_s"] = round(float(wall_time_s), 1)
    return meta


def metrics_table(results: Mapping[str, Mapping[str, Mapping[str, float]]], threshold: float = 0.1) -> str:
    """Markdown table: one row per (split, subset) with NME, FR and AUC in percent."""
    pct = int(round(threshold * 100))
    lines = [f"| split | subset | faces | NME (%) | FR@{pct} (%) | AUC@{pct} |", "|---|---|---:|---:|---:|---:|"]
    for split, summary in results.items():
        for subset, row in summary.items():
            lines.append(f"| {split} | {subset} | {row['count']} | {100 * row['nme']:.3f} | {100 * row['fr']:.2f} | {row['auc']:.4f} |")
    return "\n".join(lines) + "\n"


def write_results(run_dir: Path, payload: Dict[str, Any], threshold: float = 0.1) -> Dict[str, Path]:
    """Write ``results.json`` and ``results.md``; returns their paths."""
    run_dir = Path(run_dir)
    json_path = run_dir / "results.json"
    json_path.write_text(json.dumps(payload, indent=2, default=json_default))
    md_path = run_dir / "results.md"
    header = f"# Results\n\nNME normalised by {payload.get('normalisation', 'inter_ocular')}; crop {payload.get('crop', '')}\n\n"
    md_path.write_text(header + metrics_table(payload["metrics"], threshold))
    return {"json": json_path, "markdown": md_path}


def plot_ced(curves: Mapping[str, np.ndarray], path: Path, threshold: float = 0.1, step: float = 1e-4) -> Path:
    """Cumulative error distribution, one line per split/subset; legend states each AUC."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pyg_sdfl.metrics import auc, ced_curve

    fig, ax = plt.subplots(figsize=(5.5, 4.2), dpi=120)
    for label, errors in curves.items():
        x, y = ced_curve(errors, threshold=threshold, step=step)
        ax.plot(100 * x, 100 * y, label=f"{label} (AUC {auc(errors, threshold=threshold, step=step):.3f})")
    ax.set_xlabel("NME (%)")
    ax.set_ylabel("faces with NME below x (%)")
    ax.set_xlim(0, 100 * threshold)
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("Cumulative error distribution")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def plot_learning_curve(history: Sequence[Mapping[str, float]], path: Path,
                        untrained_val_nme: Optional[float] = None, best_epoch: Optional[int] = None) -> Path:
    """Validation NME (%) per epoch, from the untrained model (epoch 0) on, and the mean training
    loss on a second axis; the best epoch is marked. ``history`` holds the training's per-epoch
    records (``epoch``, ``loss``, ``val_nme`` where validated)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    validated = [(int(r["epoch"]), 100 * float(r["val_nme"])) for r in history if "val_nme" in r]
    if untrained_val_nme is not None:
        validated.insert(0, (0, 100 * float(untrained_val_nme)))
    fig, ax = plt.subplots(figsize=(5.5, 4.0), dpi=120)
    if validated:
        epochs, nme = zip(*validated)
        ax.plot(epochs, nme, "o-", color="tab:blue", label="validation NME")
        if untrained_val_nme is not None:
            ax.annotate(f"untrained {nme[0]:.1f}%", (0, nme[0]), textcoords="offset points", xytext=(6, -4), fontsize=8)
    if best_epoch is not None and any(e == best_epoch for e, _ in validated):
        best = dict(validated)[best_epoch]
        ax.plot([best_epoch], [best], "*", color="tab:red", markersize=12, label=f"best: epoch {best_epoch}, {best:.2f}%")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation NME (%)")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.yaxis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.grid(alpha=0.3, which="both")
    losses = [(int(r["epoch"]), float(r["loss"])) for r in history if "loss" in r]
    if losses:
        twin = ax.twinx()
        twin.plot(*zip(*losses), "s--", color="tab:gray", alpha=0.6, markersize=3, label="training loss")
        twin.set_ylabel("training loss")
        lines = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
        ax.legend(lines, [line.get_label() for line in lines], loc="upper right", fontsize=8)
    ax.set_title("Learning curve")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def plot_prediction_grid(images: Sequence[np.ndarray], preds: np.ndarray, targets: np.ndarray, errors: np.ndarray,
                         path: Path, columns: int = 4) -> Path:
    """Crops with ground truth (green) and prediction (red), per-face NME in the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = len(images)
    rows = max(1, int(np.ceil(count / columns)))
    fig, axes = plt.subplots(rows, columns, figsize=(2.6 * columns, 2.8 * rows), dpi=100, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i, (ax, image) in enumerate(zip(axes.ravel(), images)):
        ax.imshow(image)
        ax.scatter(targets[i, :, 0], targets[i, :, 1], s=4, c="lime", label="ground truth")
        ax.scatter(preds[i, :, 0], preds[i, :, 1], s=4, c="red", label="prediction")
        ax.set_title(f"NME {100 * errors[i]:.2f}%", fontsize=8)
    axes.ravel()[0].legend(loc="upper left", fontsize=6, markerscale=2)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def json_default(value: Any) -> Any:
    """``json.dumps(default=...)`` hook: NumPy scalars and arrays, and paths, as plain values."""
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def json_safe(value: Any) -> Any:
    """A copy fit for strict JSON (``allow_nan=False``): NaN and infinities -> ``None`` (null),
    tuples -> lists, numpy scalars -> Python numbers, mapping keys -> ``str``; recursive."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        return json_safe(value.item())
    return value
