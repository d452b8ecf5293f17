"""Validation NME by epoch of several runs on one figure, from their ``results.json`` (or checkpoints).

    python benchmarks/learning_curves.py --run "AdamW=runs/A/results.json" --run "SGD=runs/B/results.json" \\
        --title "300-W, 160 px" --out results/mirror_fix/learning_curves.png

Each ``--run LABEL=PATH`` reads the per-epoch ``history`` (``epoch``, ``val_nme``) that training writes
into ``results.json`` and into ``last.ckpt``. A run that stopped early (diverged, time limit) is
drawn as far as it went; its last point is marked with a cross.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", action="append", required=True, help="LABEL=PATH of a results.json or a checkpoint")
    p.add_argument("--title", default="Validation NME by epoch")
    p.add_argument("--ymax", type=float, default=None, help="clip the axis at this NME (%%), e.g. for a diverged run")
    p.add_argument("--reference", action="append", default=[],
                   help="LABEL=NME: a dashed horizontal line at that validation NME (%%), e.g. the model to beat")
    p.add_argument("--out", required=True, help="PNG to write")
    return p.parse_args(argv)


def read_history(path: Path) -> Tuple[List[Dict], Optional[int]]:
    """``(history, planned epochs)`` of a results.json or a training checkpoint."""
    if path.suffix == ".json":
        record = json.loads(path.read_text())
        config = record.get("config") or {}
    else:
        import torch

        record = torch.load(path, map_location="cpu", weights_only=False)
        config = record.get("config") or {}
    planned = (config.get("train") or {}).get("epochs")
    return list(record.get("history") or []), planned


def curve(history: Sequence[Dict]) -> Tuple[List[int], List[float]]:
    points = [(int(h["epoch"]), 100.0 * float(h["val_nme"])) for h in history if h.get("val_nme") is not None]
    return [e for e, _ in points], [v for _, v in points]


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for spec in args.run:
        label, _, path = spec.partition("=")
        if not path:
            raise SystemExit(f"--run wants LABEL=PATH, got {spec!r}")
        history, planned = read_history(Path(path))
        epochs, nme = curve(history)
        if not epochs:
            print(f"{label}: no validated epoch in {path}", file=sys.stderr)
            continue
        best = min(range(len(nme)), key=nme.__getitem__)
        line, = ax.plot(epochs, nme, "-", label=f"{label}: best {nme[best]:.2f}% (epoch {epochs[best]})")
        ax.plot([epochs[best]], [nme[best]], "*", color=line.get_color(), markersize=10)
        if planned is not None and epochs[-1] < int(planned):
            ax.plot([epochs[-1]], [min(nme[-1], args.ymax or nme[-1])], "x", color=line.get_color(), markersize=9)
    for spec in args.reference:
        label, _, value = spec.partition("=")
        try:
            level = float(value)
        except ValueError:
            raise SystemExit(f"--reference wants LABEL=NME (a number, %), got {spec!r}") from None
        ax.axhline(level, color="0.4", linestyle="--", linewidth=1, label=f"{label}: {level:.2f}%")
    ax.set_yscale("log")
    # plain numbers on the log axis (3.4, not 3.4 x 10^0), on the minor ticks too
    from matplotlib.ticker import FormatStrFormatter
    ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.yaxis.set_minor_formatter(FormatStrFormatter("%g"))
    if args.ymax:
        ax.set_ylim(top=args.ymax)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation NME (%)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    ax.set_title(args.title)
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
