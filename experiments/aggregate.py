"""Comparison tables of the sweep presets (heads, k, ablation, graph mining).

    python experiments/run.py -m experiment=head_comparison dataset.root=../shared/data/300w   # etc.
    python experiments/aggregate.py runs --out results/graph_buys --export-runs results/graph_buys/runs
    python experiments/aggregate.py results/graph_buys/runs --out results/graph_buys           # same tables

Writes tables.md, summary.json and heads.png / k_sweep.png / ablation.png / mining.png into --out, and
<table>_paired.png (per-seed paired differences with their bootstrap intervals) for every table whose runs
kept their per-face errors. The logic (and the verdict rule) is in pyg_sdfl/studies/comparison.py, the
paired statistics in pyg_sdfl/studies/paired.py.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from pyg_sdfl.studies.comparison import aggregate, render_markdown


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aggregate.py",
        description="Comparison tables (heads, k, ablation, mining) from the runs of the four sweep presets.",
    )
    parser.add_argument("runs_dirs", nargs="+", metavar="RUNS_DIR",
                        help="folders searched recursively for results.json (or files written by --export-runs)")
    parser.add_argument("--out", default="results/graph_buys",
                        help="where tables.md, summary.json and the PNGs go (default: %(default)s)")
    parser.add_argument("--export-runs", metavar="DIR", default=None,
                        help="also write one compact JSON per run to DIR/<experiment>/<run>.json")
    parser.add_argument("--split", default="test", help="split of the reported metrics (default: %(default)s)")
    parser.add_argument("--subset", default="all", help="subset of that split (default: %(default)s)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command line of ``experiments/aggregate.py``; returns the exit status (2 on a bad input)."""
    args = build_parser().parse_args(argv)
    try:
        comparison, paths, exported = aggregate(args.runs_dirs, args.out, export_dir=args.export_runs,
                                                split=args.split, subset=args.subset)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for message in comparison.warnings:
        print(f"warning: {message}", file=sys.stderr)
    print(render_markdown(comparison))
    print(f"wrote {', '.join(str(p) for p in paths.values())}")
    if args.export_runs:
        print(f"exported {len(exported)} runs to {args.export_runs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
