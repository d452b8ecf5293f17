"""Figures shared by the CLI, the reports and the notebooks."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Tuple

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


# ----------------------------------------------------------------------------- analysis figures
# Used by notebooks/ (see pyg_sdfl.studies). Every function draws into a given ``ax`` and returns
# what it drew (``ax`` or the colour bar), so figures compose; none switches the backend.
__all__ += [
    "plot_landmark_matrix",
    "plot_edge_values_on_shape",
    "plot_graph_difference",
    "plot_part_connectivity",
    "plot_similarity_by_hop",
    "plot_condition_bars",
    "plot_condition_lines",
    "plot_landmarks_on_image",
    "set_text_size",
    "plot_alpha_shift",
]


def set_text_size(ax, fontsize: float):
    """Set the size of every text drawn inside ``ax`` (e.g. the landmark indices of
    :func:`plot_graph_on_shape`, which are small for a figure meant to be saved at 120 dpi)."""
    for text in ax.texts:
        text.set_fontsize(fontsize)
    return ax


def _part_spans(scheme: Optional[LandmarkScheme]):
    """``[(name, first, last)]`` of the scheme's parts when each is a contiguous index range."""
    if scheme is None or not scheme.parts:
        return []
    spans = []
    for name, members in scheme.parts.items():
        idx = sorted(members)
        if idx != list(range(idx[0], idx[-1] + 1)):
            return []
        spans.append((name, idx[0], idx[-1]))
    return sorted(spans, key=lambda s: s[1])


def plot_landmark_matrix(matrix: np.ndarray, ax, scheme: Optional[LandmarkScheme] = None, title: str = "",
                         cmap: str = "viridis", vmin: Optional[float] = None, vmax: Optional[float] = None,
                         cbar_label: str = "", xlabel: str = "landmark j", ylabel: str = "landmark i",
                         tick_step: Optional[int] = None, colorbar: bool = True, line_colour: str = "white"):
    """An ``(N, N)`` landmark-by-landmark matrix as an image with a colour bar (NaN cells stay blank).

    Index ticks every ``tick_step`` landmarks (5 up to 70 points, else 10); with a ``scheme`` whose
    parts are index ranges, thin ``line_colour`` lines separate the parts and the part names label
    the top axis. Returns the colour bar (or the image when ``colorbar=False``).
    """
    m = np.asarray(matrix, dtype=float)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"matrix must be square (N, N); got {m.shape}")
    n = m.shape[0]
    im = ax.imshow(m, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    step = tick_step or (5 if n <= 70 else 10)
    ticks = np.arange(0, n, step)
    ax.set_xticks(ticks)
    ax.set_yticks(ticks)
    ax.tick_params(labelsize=7)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    spans = _part_spans(scheme)
    if spans:
        for _, first, _ in spans[1:]:
            ax.axhline(first - 0.5, color=line_colour, lw=0.6, alpha=0.8)
            ax.axvline(first - 0.5, color=line_colour, lw=0.6, alpha=0.8)
        top = ax.secondary_xaxis("top")
        top.set_xticks([(a + b) / 2 for _, a, b in spans])
        top.set_xticklabels([name.replace("_", " ") for name, _, _ in spans], rotation=40, ha="left", fontsize=7)
        top.tick_params(length=0)
    if title:
        ax.set_title(title, fontsize=10, pad=28 if spans else 6)
    if not colorbar:
        return im
    return ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label=cbar_label)


def plot_edge_values_on_shape(shape: np.ndarray, edge_index: torch.Tensor, values: np.ndarray, ax,
                              cmap: str = "viridis", vmin: Optional[float] = None, vmax: Optional[float] = None,
                              cbar_label: str = "", title: str = "", image: Optional[np.ndarray] = None,
                              node_values: Optional[np.ndarray] = None, highlight: Sequence[int] = (),
                              boxes: Sequence[Tuple[int, int, int, int]] = (), label_points: bool = True,
                              min_width: float = 0.6, max_width: float = 2.2, fontsize: float = 7.0,
                              diverging: Optional[bool] = None):
    """A landmark graph on a face with every edge ``j -> i`` coloured (and thickened) by ``values (E,)``.

    ``shape (N, 2)`` in image coordinates (y down); self-loops are not drawn: pass their values as
    ``node_values (N,)`` to colour the points with the same colour map. ``image`` is shown behind
    (pixel centres at integer coordinates), ``boxes`` ``(x0, y0, x1, y1)`` are outlined (occluders),
    ``highlight`` landmarks get a red ring. For a ``diverging`` scale (default: when ``vmin < 0 < vmax``)
    edges far from the middle of the scale are drawn thicker and on top, otherwise the edges with the
    largest values. Returns the colour bar.
    """
    import matplotlib as mpl
    from matplotlib.patches import Rectangle

    shape = np.asarray(shape, dtype=float)
    vals = np.asarray(values.detach().cpu() if isinstance(values, torch.Tensor) else values, dtype=float).reshape(-1)
    src, dst = edge_index.cpu().numpy()
    if vals.shape[0] != src.shape[0]:
        raise ValueError(f"values has {vals.shape[0]} entries for {src.shape[0]} edges")
    lo = float(np.nanmin(vals)) if vmin is None else vmin
    hi = float(np.nanmax(vals)) if vmax is None else vmax
    norm = mpl.colors.Normalize(vmin=lo, vmax=hi if hi > lo else lo + 1e-12)
    cm = mpl.colormaps[cmap]
    if image is not None:
        ax.imshow(image, alpha=0.55)
    if diverging is None:
        diverging = lo < 0 < hi
    strength = lambda t: abs(2 * t - 1) if diverging else t  # noqa: E731
    scaled = np.clip(np.asarray(norm(vals), dtype=float), 0, 1)
    for e in np.argsort([strength(t) for t in scaled], kind="stable"):  # the strongest drawn last, on top
        j, i = src[e], dst[e]
        if i == j:
            continue
        t = float(scaled[e])
        width = min_width + (max_width - min_width) * strength(t)
        ax.annotate("", xy=shape[i], xytext=shape[j],
                    arrowprops=dict(arrowstyle="-|>", color=cm(t), lw=width, shrinkA=2.5, shrinkB=2.5,
                                    mutation_scale=6 + 2 * width))
    colours = "0.15" if node_values is None else cm(norm(np.asarray(node_values, dtype=float)))
    ax.scatter(shape[:, 0], shape[:, 1], s=16, c=colours, edgecolors="white", linewidths=0.4, zorder=3)
    for h in highlight:
        ax.scatter(*shape[int(h)], s=140, facecolors="none", edgecolors="red", linewidths=1.6, zorder=4)
    for x0, y0, x1, y1 in boxes:
        ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, hatch="//", ec="0.3", lw=0.8))
    if label_points:
        for n, (x, y) in enumerate(shape):
            ax.text(x + 0.6, y - 0.6, str(n), fontsize=fontsize, zorder=5,
                    bbox=dict(boxstyle="square,pad=0.05", fc="white", ec="none", alpha=0.6))
    ax.set_aspect("equal")
    if image is None:
        ax.invert_yaxis()
    else:
        ax.set_xlim(-0.5, image.shape[1] - 0.5)
        ax.set_ylim(image.shape[0] - 0.5, -0.5)
    ax.set_xlabel("x (pixels)" if image is not None else "x")
    ax.set_ylabel("y (pixels, down)" if image is not None else "y (down)")
    if title:
        ax.set_title(title, fontsize=10)
    sm = mpl.cm.ScalarMappable(norm=norm, cmap=cm)
    return ax.figure.colorbar(sm, ax=ax, fraction=0.046, pad=0.04, label=cbar_label)


def plot_graph_difference(shape: np.ndarray, only_a: Sequence[Tuple[int, int]], only_b: Sequence[Tuple[int, int]],
                          common: Sequence[Tuple[int, int]], ax, labels: Tuple[str, str] = ("A", "B"),
                          title: str = "", label_points: bool = True, fontsize: float = 8.0):
    """Two graphs on one face: shared edges ``(j, i)`` in light grey, edges only in the first graph in
    blue, only in the second in orange (arrows point from neighbour ``j`` to landmark ``i``)."""
    from matplotlib.lines import Line2D

    shape = np.asarray(shape, dtype=float)
    styles = ((common, "0.75", 0.7), (only_a, "tab:blue", 1.4), (only_b, "tab:orange", 1.4))
    for edges, colour, width in styles:
        for j, i in edges:
            ax.annotate("", xy=shape[i], xytext=shape[j],
                        arrowprops=dict(arrowstyle="-|>", color=colour, lw=width, shrinkA=2, shrinkB=2, mutation_scale=8))
    ax.scatter(shape[:, 0], shape[:, 1], s=12, c="0.15", zorder=3)
    if label_points:
        for n, (x, y) in enumerate(shape):
            ax.text(x, y, str(n), fontsize=fontsize, ha="left", va="bottom", zorder=4)
    handles = [Line2D([], [], color="0.75", lw=1, label=f"both ({len(common)})"),
               Line2D([], [], color="tab:blue", lw=1.5, label=f"only {labels[0]} ({len(only_a)})"),
               Line2D([], [], color="tab:orange", lw=1.5, label=f"only {labels[1]} ({len(only_b)})")]
    ax.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, fontsize=8, frameon=False)
    ax.set_aspect("equal")
    ax.invert_yaxis()
    ax.set_xlabel("x (crop units)")
    ax.set_ylabel("y (crop units, down)")
    if title:
        ax.set_title(title, fontsize=10, pad=22)
    return ax


def plot_part_connectivity(names: Sequence[str], counts: np.ndarray, ax, title: str = "",
                           normalise_rows: bool = True, cmap: str = "Blues"):
    """Part-to-part edge counts (:func:`pyg_sdfl.studies.graph_stats.part_connectivity`): row = the landmark's
    part, column = its neighbour's part. With ``normalise_rows`` the colour is the share of the row's
    edges (the printed numbers stay counts). Returns the colour bar."""
    counts = np.asarray(counts, dtype=float)
    shown = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1) if normalise_rows else counts
    im = ax.imshow(shown, cmap=cmap, vmin=0, vmax=1 if normalise_rows else None)
    labels = [n.replace("_", " ") for n in names]
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(labels, rotation=40, ha="right", fontsize=8)
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels(labels, fontsize=8)
    for a in range(len(names)):
        for b in range(len(names)):
            if counts[a, b]:
                ax.text(b, a, str(int(counts[a, b])), ha="center", va="center", fontsize=7,
                        color="white" if shown[a, b] > 0.6 * np.max(shown) else "black")
    ax.set_xlabel("part of the neighbour j")
    ax.set_ylabel("part of the landmark i")
    if title:
        ax.set_title(title, fontsize=10)
    return ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04,
                              label="share of the row's edges" if normalise_rows else "edges")


def plot_similarity_by_hop(curves: Mapping[str, Mapping[int, float]], ax, title: str = ""):
    """Mean cosine similarity against graph distance, one line per stage (``{stage: {hop: mean}}``)."""
    for label, curve in curves.items():
        hops = sorted(curve)
        ax.plot(hops, [curve[h] for h in hops], marker="o", label=label)
    ax.set_xlabel("graph distance between two landmarks (hops, undirected)")
    ax.set_ylabel("mean cosine similarity of their features")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    return ax


def _metric_label(metric: str, percent: bool) -> str:
    return f"{metric.upper()}{' (%)' if percent else ''}"


def plot_condition_bars(rows: Sequence[Mapping[str, Any]], x: str, metric: str, ax, percent: bool = True,
                        title: str = "", ylabel: str = ""):
    """Bars of ``metric`` per condition (rows of :func:`pyg_sdfl.studies.runs.aggregate_results` keyed by
    ``x``), error bars = std over seeds, dots = the individual runs."""
    scale = 100.0 if percent else 1.0
    names = [str(r[x]) for r in rows]
    means = np.array([r[metric] for r in rows]) * scale
    stds = np.nan_to_num(np.array([r[f"{metric}_std"] for r in rows]) * scale)
    pos = np.arange(len(rows))
    ax.bar(pos, means, yerr=stds, capsize=4, color="tab:blue", alpha=0.75)
    for p, r in zip(pos, rows):
        vals = np.asarray(r[f"{metric}_values"]) * scale
        ax.scatter(np.full(len(vals), p) + np.linspace(-0.12, 0.12, len(vals)), vals, s=12, c="black", zorder=3)
    ax.set_xticks(pos)
    ax.set_xticklabels(names)
    ax.set_xlabel(x)
    ax.set_ylabel(ylabel or _metric_label(metric, percent))
    ax.grid(axis="y", alpha=0.3)
    if title:
        ax.set_title(title, fontsize=10)
    return ax


def plot_condition_lines(rows: Sequence[Mapping[str, Any]], x: str, metric: str, ax, group: Optional[str] = None,
                         percent: bool = True, title: str = "", xlabel: str = "", ylabel: str = ""):
    """``metric`` against a setting ``x`` (e.g. ``graph.k``), one line per value of ``group`` (e.g.
    ``head``); shaded band = std over seeds. A numeric ``x`` is placed on a numeric axis, anything
    else as categories in order of first appearance."""
    scale = 100.0 if percent else 1.0
    values = [r[x] for r in rows]
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    categories = list(dict.fromkeys(str(v) for v in values))
    position = (lambda v: float(v)) if numeric else (lambda v: float(categories.index(str(v))))  # noqa: E731
    groups: dict = {}
    for r in rows:
        groups.setdefault(r.get(group) if group else None, []).append(r)
    for g, members in groups.items():
        members = sorted(members, key=lambda r: position(r[x]))
        xs = np.array([position(r[x]) for r in members])
        mean = np.array([r[metric] for r in members]) * scale
        std = np.nan_to_num(np.array([r[f"{metric}_std"] for r in members]) * scale)
        line, = ax.plot(xs, mean, marker="o", label=str(g) if group else None)
        ax.fill_between(xs, mean - std, mean + std, color=line.get_color(), alpha=0.2)
    if numeric:
        ax.set_xticks(sorted({float(v) for v in values}))
    else:
        ax.set_xticks(range(len(categories)))
        ax.set_xticklabels(categories)
    ax.set_xlabel(xlabel or x)
    ax.set_ylabel(ylabel or _metric_label(metric, percent))
    ax.grid(alpha=0.3)
    if group:
        ax.legend(title=group, fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    return ax


def plot_landmarks_on_image(image: np.ndarray, ax, target: Optional[np.ndarray] = None,
                            pred: Optional[np.ndarray] = None, title: str = "",
                            boxes: Sequence[Tuple[int, int, int, int]] = ()):
    """A crop ``(H, W, 3)`` uint8 with ground truth (green dots) and prediction (red crosses), both
    ``(N, 2)`` in pixel-centre coordinates; ``boxes`` (occluders) outlined. Axes in pixels."""
    from matplotlib.patches import Rectangle

    ax.imshow(image)
    if target is not None:
        t = np.asarray(target, dtype=float)
        ax.scatter(t[:, 0], t[:, 1], s=9, c="lime", edgecolors="black", linewidths=0.3, label="ground truth")
    if pred is not None:
        p = np.asarray(pred, dtype=float)
        ax.scatter(p[:, 0], p[:, 1], s=14, c="red", marker="x", linewidths=0.8, label="prediction")
    for x0, y0, x1, y1 in boxes:
        ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, hatch="//", ec="white", lw=0.8))
    ax.set_xlim(-0.5, image.shape[1] - 0.5)
    ax.set_ylim(image.shape[0] - 0.5, -0.5)
    ax.set_xlabel("x (pixels)")
    ax.set_ylabel("y (pixels)")
    if title:
        ax.set_title(title, fontsize=9)
    return ax


def plot_alpha_shift(summaries: Mapping[str, Mapping[str, Mapping[str, float]]], ax, key: str = "relative",
                     title: str = ""):
    """Grouped bars of :func:`pyg_sdfl.studies.probes.alpha_shift_summary` results, one group per edge
    category and one bar per occlusion (``{occlusion: summary}``); ``key="relative"`` plots the mean
    change of alpha in percent of its clean value, ``"delta"`` the absolute change."""
    cats: list = []
    for summary in summaries.values():
        cats += [c for c in summary if c not in cats]
    width = 0.8 / max(len(summaries), 1)
    pos = np.arange(len(cats))
    scale = 100.0 if key == "relative" else 1.0
    for n, (name, summary) in enumerate(summaries.items()):
        vals = [summary[c][key] * scale if c in summary else np.nan for c in cats]
        ax.bar(pos + (n - (len(summaries) - 1) / 2) * width, vals, width, label=name)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(pos)
    ax.set_xticklabels([c.replace(" -> ", " ->\n") for c in cats], fontsize=8)
    ax.set_xlabel("edge j -> i (self = the landmark's own feature)")
    ax.set_ylabel("mean change of alpha (% of its clean value)" if key == "relative" else "mean change of alpha")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, title="occluder")
    if title:
        ax.set_title(title, fontsize=10)
    return ax
