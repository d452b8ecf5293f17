"""Figures shared by the CLI, the reports and the notebooks."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch

from pyg_sdfl.schemes import LandmarkScheme

__all__ = ["plot_graph_on_shape"]


def plot_graph_on_shape(shape: np.ndarray, edge_index: torch.Tensor, scheme: Optional[LandmarkScheme] = None,
                        path: Optional[Path] = None, title: str = "", ax=None, label_points: bool = True):
    """Draw a landmark graph on a face shape ``(N, 2)`` (image coordinates, y down).

    Edges j -> i are drawn as arrows from neighbour to landmark; a mutual pair is one line with
    arrows at both ends. Points are coloured by facial part when ``scheme`` is given.
    """
    import matplotlib

    if ax is None:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shape = np.asarray(shape, dtype=float)
    own_fig = ax is None
    if own_fig:
        fig, ax = plt.subplots(figsize=(6.5, 7), dpi=120)
    src, dst = edge_index.cpu().numpy()
    for j, i in zip(src, dst):
        if i == j:
            continue
        ax.annotate("", xy=shape[i], xytext=shape[j],
                    arrowprops=dict(arrowstyle="->", color="0.45", lw=0.6, shrinkA=2, shrinkB=2, alpha=0.8))
    if scheme is not None and scheme.parts:
        cmap = plt.get_cmap("tab10")
        for c, (part, members) in enumerate(scheme.parts.items()):
            idx = list(members)
            ax.scatter(shape[idx, 0], shape[idx, 1], s=18, color=cmap(c % 10), label=part, zorder=3)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.09), fontsize=7, ncol=4, frameon=False)
    else:
        ax.scatter(shape[:, 0], shape[:, 1], s=18, zorder=3)
    if label_points:
        for n, (x, y) in enumerate(shape):
            ax.text(x, y, str(n), fontsize=5.5, ha="left", va="bottom", zorder=4)
    ax.set_aspect("equal")
    ax.invert_yaxis()
    ax.set_xlabel("x (crop units)")
    ax.set_ylabel("y (crop units, down)")
    ax.set_title(title or "landmark graph (arrow: neighbour j -> landmark i)")
    if own_fig:
        fig.tight_layout()
        if path is not None:
            fig.savefig(path)
            plt.close(fig)
    return ax
