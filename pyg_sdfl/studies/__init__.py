"""Studies of the landmark graph, trained models and finished runs: what ``notebooks/`` and
``experiments/`` call. One job per module:

* :mod:`~pyg_sdfl.studies.paths` - where the data, a trained model and the results are
  (``PYG_SDFL_DATA``, ``PYG_SDFL_CHECKPOINT``, ``PYG_SDFL_RESULTS``);
* :mod:`~pyg_sdfl.studies.shapes` - reference landmark shapes (real annotations or synthetic faces);
* :mod:`~pyg_sdfl.studies.graph_stats` - statistics of a mined graph (networkx);
* :mod:`~pyg_sdfl.studies.probes` - probes of a trained model: node similarities, parts hidden by a
  box, shifts of the dynamic edge weights;
* :mod:`~pyg_sdfl.studies.explainers` - GNNExplainer and edge ablation on a graph head;
* :mod:`~pyg_sdfl.studies.runs` - run records and the one aggregation over seeds and cell formatter;
* :mod:`~pyg_sdfl.studies.comparison` - the comparison tables of the sweep presets (``experiments/aggregate.py``);
* :mod:`~pyg_sdfl.studies.paired` - paired per-face differences of two runs, their bootstrap interval over
  faces, and the comparison tables' verdict;
* :mod:`~pyg_sdfl.studies.occlusion` - synthetic occluders and the visible / occluded NME;
* :mod:`~pyg_sdfl.studies.occlusion_study` - the occlusion study over trained runs: records, aggregation,
  Markdown, figures (``experiments/occlusion.py``).

The figures of the notebooks are in :mod:`pyg_sdfl.plotting`.
"""
import warnings

# tqdm.auto (used by the engine's progress bars and imported by torch_geometric) warns on import in
# a Jupyter kernel without ipywidgets, then falls back to plain bars. The notebooks show no progress
# bars: import it here first, with that warning silenced, so it stays out of their outputs.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="IProgress not found")
    import tqdm.auto  # noqa: F401,E402
