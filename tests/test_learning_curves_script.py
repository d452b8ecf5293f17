"""experiments/learning_curves.py: several runs' validation curves and best-epoch scores."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "experiments" / "learning_curves.py"


def _module():
    spec = importlib.util.spec_from_file_location("learning_curves_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(folder: Path, val, best_epoch: int, test_nme: float) -> Path:
    folder.mkdir(parents=True)
    history = [{"epoch": i + 1, "val_nme": v, "faces_per_s": 40.0 + i} for i, v in enumerate(val)]
    (folder / "results.json").write_text(json.dumps({
        "history": history, "best_epoch": best_epoch, "best_val_nme": val[best_epoch - 1],
        "metrics": {"test": {"lfpw": {"nme": test_nme, "fr": 0.0045, "count": 224}}},
        "meta": {"wall_time_s": 123.4}}))
    return folder


def test_table_plot_and_copies(tmp_path):
    a = _run(tmp_path / "a", [0.10, 0.06, 0.07], 2, 0.0471)
    b = _run(tmp_path / "b", [0.09, 0.08, 0.05], 3, 0.0450)
    out = tmp_path / "out"
    assert _module().main([f"lr1e-3={a}", f"lr3e-4={b}", "--out", str(out)]) == 0
    table = (out / "learning_curves.md").read_text().splitlines()
    assert table[2] == "| lr1e-3 | 2 / 3 | 6.00 | 4.71 | 0.45 | 123 | 41.0 |"
    assert table[3] == "| lr3e-4 | 3 / 3 | 5.00 | 4.50 | 0.45 | 123 | 41.0 |"
    assert (out / "learning_curves.png").stat().st_size > 10_000
    assert json.loads((out / "lr3e-4.json").read_text())["best_epoch"] == 3


@pytest.mark.parametrize("args, message", [
    (["nolabel"], "expected LABEL=RUN_DIR; got 'nolabel'"),
    (["x=/nowhere"], "x: no results.json in /nowhere (not a finished run folder)"),
])
def test_bad_arguments_are_one_clear_line(tmp_path, args, message):
    out = subprocess.run([sys.executable, str(SCRIPT), *args, "--out", str(tmp_path / "o")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and out.stderr.strip().splitlines()[-1] == message


def test_two_runs_with_one_label_are_refused(tmp_path):
    a = _run(tmp_path / "a", [0.1], 1, 0.05)
    with pytest.raises(SystemExit, match="labels must differ"):
        _module().main([f"x={a}", f"x={a}", "--out", str(tmp_path / "o")])
