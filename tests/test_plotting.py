"""The figures of pyg_sdfl.plotting (used by the notebooks)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from pyg_sdfl import plotting  # noqa: E402
from pyg_sdfl.graph import random_graph  # noqa: E402
from pyg_sdfl.schemes import get_scheme  # noqa: E402


@pytest.fixture
def ax():
    fig, axis = plt.subplots()
    yield axis
    plt.close(fig)


def test_plot_landmark_matrix(ax) -> None:
    scheme = get_scheme("300w")
    cbar = plotting.plot_landmark_matrix(np.eye(68), ax, scheme, title="t", cbar_label="C")
    assert cbar.ax.get_ylabel() == "C" and ax.get_xlabel() and ax.get_ylabel()
    assert list(ax.get_xticks()) == list(range(0, 68, 5))
    assert len(ax.lines) == 2 * (len(scheme.parts) - 1)  # part separators
    with pytest.raises(ValueError, match="square"):
        plotting.plot_landmark_matrix(np.zeros((3, 4)), ax)


def test_plot_edge_values_on_shape(ax) -> None:
    g = random_graph(6, 2, seed=0)
    shape = np.random.default_rng(0).uniform(0, 30, (6, 2))
    values = np.linspace(-1, 1, g.num_edges)
    cbar = plotting.plot_edge_values_on_shape(shape, g.edge_index, values, ax, cmap="RdBu_r", cbar_label="d",
                                              image=np.zeros((32, 32, 3), np.uint8), boxes=[(0, 0, 5, 5)],
                                              node_values=np.zeros(6), highlight=[1])
    assert cbar.ax.get_ylabel() == "d"
    arrows = [c for c in ax.get_children() if type(c).__name__ == "Annotation"]
    assert len(arrows) == 6 * 2  # self-loops are not drawn
    assert len([t for t in ax.texts if t.get_text()]) == 6 and len(ax.patches) == 1  # arrows are empty texts
    with pytest.raises(ValueError, match="entries for"):
        plotting.plot_edge_values_on_shape(shape, g.edge_index, values[:3], ax)


def test_plot_graph_difference_and_part_connectivity(ax) -> None:
    shape = np.random.default_rng(1).uniform(size=(4, 2))
    plotting.plot_graph_difference(shape, [(0, 1)], [(2, 1)], [(1, 0), (3, 2)], ax, labels=("s", "j"))
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["both (2)", "only s (1)", "only j (1)"]
    fig, ax2 = plt.subplots()
    cbar = plotting.plot_part_connectivity(["a", "b"], np.array([[2, 2], [0, 4]]), ax2)
    assert "share" in cbar.ax.get_ylabel() and [t.get_text() for t in ax2.texts] == ["2", "2", "4"]
    plt.close(fig)


def test_result_plots(ax) -> None:
    rows = [{"head": h, "graph.k": k, "nme": 0.05 + 0.01 * i, "nme_std": 0.001, "nme_values": [0.05, 0.06]}
            for i, (h, k) in enumerate([("sdfl", 1), ("sdfl", 3), ("gcn", 1), ("gcn", 3)])]
    plotting.plot_condition_bars(rows, "head", "nme", ax)
    assert ax.get_ylabel() == "NME (%)" and len(ax.patches) == 4
    fig, ax2 = plt.subplots()
    plotting.plot_condition_lines(rows, "graph.k", "nme", ax2, group="head")
    assert len(ax2.lines) == 2 and list(ax2.get_xticks()) == [1.0, 3.0]
    ax2.clear()
    cats = [dict(r, kind="x" if r["graph.k"] == 1 else "y") for r in rows]
    plotting.plot_condition_lines(cats, "kind", "nme", ax2, group="head")
    assert [t.get_text() for t in ax2.get_xticklabels()] == ["x", "y"]
    plt.close(fig)


def test_similarity_alpha_and_image_plots(ax) -> None:
    plotting.plot_similarity_by_hop({"a": {1: 0.9, 2: 0.8}, "b": {1: 0.5}}, ax)
    assert len(ax.lines) == 2 and "hops" in ax.get_xlabel()
    fig, ax2 = plt.subplots()
    summaries = {"mouth": {"self (visible i)": {"relative": 0.1, "delta": 0.01}},
                 "side": {"self (visible i)": {"relative": -0.1, "delta": -0.01},
                          "occluded j -> visible i": {"relative": -0.2, "delta": -0.02}}}
    plotting.plot_alpha_shift(summaries, ax2)
    assert len(ax2.patches) == 4 and "%" in ax2.get_ylabel()
    ax2.clear()
    plotting.plot_landmarks_on_image(np.zeros((8, 8, 3), np.uint8), ax2, np.ones((3, 2)), np.zeros((3, 2)),
                                     boxes=[(0, 0, 2, 2)])
    assert ax2.get_xlabel() == "x (pixels)" and len(ax2.collections) == 2
    plotting.set_text_size(ax2, 11)
    plt.close(fig)
