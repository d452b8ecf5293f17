"""The notebooks in notebooks/ run top to bottom with nbmake, and are committed with their outputs.

Executing a committed notebook catches any drift between its code and the library API. To refresh
the committed outputs after changing a notebook or the library, run from the repository root:

    python tests/test_notebooks.py                 # every notebook, outputs written in place
    python tests/test_notebooks.py message_passing # just one
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Iterable, List

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS_DIR = REPO / "notebooks"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
EXPECTED = {"landmark_graph.ipynb", "message_passing.ipynb", "layer_comparison.ipynb"}
# layer_comparison.ipynb has figures only once results/ holds runs; committed without, it shows the commands
WITH_FIGURES = {"landmark_graph.ipynb", "message_passing.ipynb"}
CELL_TIMEOUT_S = 300


def run_notebook(path: Path):
    """Execute a notebook with nbmake (in its own folder, the notebook's kernel); returns nbmake's result
    (``.nb`` with fresh outputs, ``.error`` None or the failing cell)."""
    from nbmake.nb_run import NotebookRun

    return NotebookRun(path, default_timeout=CELL_TIMEOUT_S).execute()


def _failure(path: Path, result) -> str:
    err = result.error
    return f"{path.name} raised in cell {err.failing_cell_index}: {err.summary}\n{err.trace}"


def test_every_expected_notebook_is_there() -> None:
    assert {p.name for p in NOTEBOOKS} == EXPECTED


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes_without_error(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the notebooks' fallbacks are what a fresh clone sees: no results folder override, no checkpoint override
    monkeypatch.delenv("PYG_SDFL_RESULTS", raising=False)
    result = run_notebook(path)
    assert result.error is None, _failure(path, result)


def _write_fixture_results(root: Path) -> None:
    """results.json files shaped like experiments/run.py's: 3 heads x 2 seeds at k=3, a k sweep of the
    SDFL head, test subsets all/occluded. The numbers are made up for the test."""
    def payload(head: dict, k: int, seed: int, nme: float) -> dict:
        occ = nme * 1.5
        return {
            "metrics": {"test": {"all": {"nme": nme, "fr": nme / 2, "auc": 1 - 10 * nme, "count": 40},
                                 "occluded": {"nme": occ, "fr": occ / 2, "auc": 1 - 10 * occ, "count": 10}},
                        "val": {"all": {"nme": nme, "fr": 0.0, "auc": 0.5, "count": 8}}},
            "config": {"seed": seed, "graph": {"k": k, "mode": "separate"}, "head": head,
                       "backbone": {"_target_": "pyg_sdfl.nn.backbones.create_backbone", "name": "resnet18"},
                       "dataset": {"name": "synthetic", "image_size": 64}},
        }

    heads = {"sdfl": {"_target_": "pyg_sdfl.nn.heads.SDFLHead", "hidden": 128},
             "gcn": {"_target_": "pyg_sdfl.nn.heads.PyGLayerHead", "layer": "gcn"},
             "fc": {"_target_": "pyg_sdfl.nn.heads.FCHead"}}
    runs = [(name, 3, seed, 0.05 + 0.01 * h + 0.002 * seed) for h, name in enumerate(heads) for seed in (0, 1)]
    runs += [("sdfl", k, seed, 0.05 + 0.003 * abs(k - 3) + 0.002 * seed) for k in (1, 5) for seed in (0, 1)]
    for n, (name, k, seed, nme) in enumerate(runs):
        folder = root / f"run{n}"
        folder.mkdir(parents=True)
        (folder / "results.json").write_text(json.dumps(payload(heads[name], k, seed, nme)))


@pytest.mark.slow
def test_layer_comparison_plots_results_when_present(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The committed notebook has no results to plot; this runs its plotting cells on fixture results."""
    _write_fixture_results(tmp_path / "results")
    monkeypatch.setenv("PYG_SDFL_RESULTS", str(tmp_path / "results"))
    path = NOTEBOOKS_DIR / "layer_comparison.ipynb"
    result = run_notebook(path)
    assert result.error is None, _failure(path, result)
    outputs = [o for c in result.nb.cells if c.cell_type == "code" for o in c.outputs]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 3, f"expected the head, k-sweep and occlusion figures; got {len(images)} images"
    text = json.dumps([o.get("text", "") for o in outputs] + [o.get("data", {}).get("text/markdown", "") for o in outputs])
    assert "10 run(s)" in text and "sdfl" in text and "gcn" in text


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_committed_with_outputs(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, f"{path.name} has no code cells"
    counts = [c.execution_count for c in code]
    assert counts == list(range(1, len(code) + 1)), f"{path.name}: run it top to bottom before committing; counts {counts}"
    outputs = [o for c in code for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"], f"{path.name} is committed with an error output"
    if path.name in WITH_FIGURES:
        assert any("image/png" in o.get("data", {}) for o in outputs), f"{path.name} is committed without its figures"
    blob = json.dumps([o for o in outputs])
    assert str(REPO) not in blob, f"{path.name}'s outputs contain this machine's absolute repository path"


def _refresh(names: Iterable[str]) -> List[str]:
    """Execute notebooks and write their outputs in place (cell timing metadata stripped)."""
    done = []
    for path in NOTEBOOKS:
        if names and path.stem not in names and path.name not in names:
            continue
        start = time.perf_counter()
        result = run_notebook(path)
        elapsed = time.perf_counter() - start
        if result.error is not None:
            raise SystemExit(_failure(path, result))
        for cell in result.nb.cells:
            cell.metadata.pop("execution", None)
        nbformat.write(result.nb, path)
        done.append(f"{path.name}: {elapsed:.1f} s")
        print(done[-1], flush=True)
    return done


if __name__ == "__main__":
    _refresh(sys.argv[1:])
