"""benchmarks/learning_curves.py: runs' validation curves from their results.json, with reference
lines, and a clear error on a malformed --reference or --run."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "learning_curves.py"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("learning_curves_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run_file(tmp_path: Path, epochs: int = 6, planned: int = 10) -> Path:
    history = [{"epoch": e, "loss": 1.0, "val_nme": 0.05 - 0.002 * e if e % 2 == 0 else None}
               for e in range(1, epochs + 1)]
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"history": history, "config": {"train": {"epochs": planned}}}))
    return path


def test_curve_keeps_validated_epochs_in_percent(script, tmp_path: Path) -> None:
    history, planned = script.read_history(_run_file(tmp_path))
    epochs, nme = script.curve(history)
    assert planned == 10 and epochs == [2, 4, 6]
    assert nme == pytest.approx([4.6, 4.2, 3.8])


def test_plot_with_a_reference_line(script, tmp_path: Path) -> None:
    out = tmp_path / "curve.png"
    assert script.main(["--run", f"A={_run_file(tmp_path)}", "--reference", "previous model=3.56",
                        "--out", str(out)]) == 0
    assert out.stat().st_size > 1000 and out.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("args, message", [
    (["--reference", "previous=three"], "--reference wants LABEL=NME"),
    (["--reference", "no value"], "--reference wants LABEL=NME"),
])
def test_bad_reference_is_a_clear_error(script, tmp_path: Path, args, message) -> None:
    with pytest.raises(SystemExit, match=message):
        script.main(["--run", f"A={_run_file(tmp_path)}", *args, "--out", str(tmp_path / "x.png")])


def test_bad_run_is_a_clear_error(script, tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="--run wants LABEL=PATH"):
        script.main(["--run", "just-a-label", "--out", str(tmp_path / "x.png")])
