"""Several runs' validation curves on one plot, and their best-epoch scores in one table.

    python experiments/learning_curves.py LABEL=RUN_DIR [LABEL=RUN_DIR ...] --out results/some_study

Each ``RUN_DIR`` is a finished run folder of ``experiments/run.py`` (its ``results.json``). Writes
``learning_curves.png`` (validation NME by epoch, one line per run, the chosen epoch marked) and
``learning_curves.md`` (per run: best epoch, validation NME there, test/lfpw NME and FR@10 of that
checkpoint, training wall time and mean training faces/s) into ``--out``, and copies each
``results.json`` there as ``LABEL.json`` so that the table can be checked against the runs.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read_run(spec: str) -> Tuple[str, Path, Dict[str, Any]]:
    """``LABEL=RUN_DIR`` -> (label, results.json path, its content); a clear error otherwise."""
    label, sep, folder = spec.partition("=")
    if not sep or not label or not folder:
        raise SystemExit(f"expected LABEL=RUN_DIR; got {spec!r}")
    path = Path(folder) / "results.json"
    if not path.is_file():
        raise SystemExit(f"{label}: no results.json in {folder} (not a finished run folder)")
    results = json.loads(path.read_text())
    if not results.get("history"):
        raise SystemExit(f"{label}: {path} has no training history")
    return label, path, results


def row_of(label: str, results: Dict[str, Any]) -> Dict[str, Any]:
    """The table row of one run: NMEs and FR in percent, the test split's ``lfpw`` subset."""
    test = results.get("metrics", {}).get("test", {}).get("lfpw", {})
    rates = [h["faces_per_s"] for h in results["history"] if h.get("faces_per_s")]
    return {"run": label, "best_epoch": results["best_epoch"], "epochs": len(results["history"]),
            "val_nme": 100 * results["best_val_nme"],
            "test_nme": 100 * test["nme"] if "nme" in test else None,
            "test_fr": 100 * test["fr"] if "fr" in test else None,
            "wall_time_s": results.get("meta", {}).get("wall_time_s"),
            "faces_per_s": sum(rates) / len(rates) if rates else None}


def render_table(rows: Sequence[Dict[str, Any]]) -> str:
    def fmt(value, spec):
        return "" if value is None else format(value, spec)

    lines = ["| run | best epoch / epochs | val NME (%) | test/lfpw NME (%) | FR@10 (%) | train wall (s) | faces/s |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['run']} | {r['best_epoch']} / {r['epochs']} | {r['val_nme']:.2f} | {fmt(r['test_nme'], '.2f')} "
                     f"| {fmt(r['test_fr'], '.2f')} | {fmt(r['wall_time_s'], '.0f')} | {fmt(r['faces_per_s'], '.1f')} |")
    return "\n".join(lines) + "\n"


def plot_curves(runs: Sequence[Tuple[str, Dict[str, Any]]], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(8, 4.5))
    # one colour per run: the default cycle repeats after 10, tab20 after 20, then line styles tell them apart
    colours = plt.get_cmap("tab10" if len(runs) <= 10 else "tab20").colors
    for i, (label, results) in enumerate(runs):
        points = [(h["epoch"], 100 * h["val_nme"]) for h in results["history"] if h.get("val_nme") is not None]
        line, = ax.plot(*zip(*points), marker=".", label=label, color=colours[i % len(colours)],
                        linestyle=("-", "--", ":")[(i // len(colours)) % 3])
        best = dict(points).get(results["best_epoch"])
        if best is not None:
            ax.plot([results["best_epoch"]], [best], "o", mfc="none", ms=10, color=line.get_color())
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation NME (%), log scale")
    ax.set_title("validation NME by epoch (circle: the chosen checkpoint)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", help="LABEL=RUN_DIR, one per run")
    parser.add_argument("--out", required=True, help="folder to write into")
    args = parser.parse_args(argv)
    read = [read_run(spec) for spec in args.runs]
    labels = [label for label, _, _ in read]
    if len(set(labels)) != len(labels):
        raise SystemExit(f"labels must differ; got {labels}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows: List[Dict[str, Any]] = []
    for label, path, results in read:
        shutil.copyfile(path, out / f"{label}.json")
        rows.append(row_of(label, results))
    plot_curves([(label, results) for label, _, results in read], out / "learning_curves.png")
    table = render_table(rows)
    (out / "learning_curves.md").write_text(table)
    print(table, end="")
    print(f"wrote {out / 'learning_curves.png'}, {out / 'learning_curves.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
