"""Comparison tables of the sweep presets (heads, k, ablation, graph mining).

    python experiments/run.py -m experiment=head_comparison dataset.root=../shared/data/300w   # etc.
    python experiments/aggregate.py runs --out results/graph_buys --export-runs results/graph_buys/runs
    python experiments/aggregate.py results/graph_buys/runs --out results/graph_buys           # same tables

Writes tables.md, summary.json and heads.png / k_sweep.png / ablation.png / mining.png into --out.
The logic (and the verdict rule) is in pyg_sdfl/comparison.py.
"""
import sys

from pyg_sdfl.comparison import main

if __name__ == "__main__":
    sys.exit(main())
