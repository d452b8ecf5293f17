"""`python experiments/run.py` (Hydra) writes its outputs into Hydra's run directory; -m sweeps."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TINY = ["dataset.image_size=64", "dataset.train.num_faces=96", "dataset.test.num_faces=16",
        "dataset.val_fraction=0.2", "train.batch_size=16", "train.num_workers=0", "train.epochs=1",
        "train.max_steps_per_epoch=1", "evaluate.grid_faces=2"]


@pytest.mark.slow
def test_run_writes_results_in_hydra_dir(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "experiments" / "run.py"), *TINY, f"hydra.run.dir={tmp_path}"],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    payload = json.loads((tmp_path / "results.json").read_text())
    assert set(payload["metrics"]) == {"val", "test"}
    for name in ("results.md", "ced.png", "predictions_test.png", "best.ckpt", "last.ckpt", ".hydra/config.yaml"):
        assert (tmp_path / name).exists(), name
    assert "NME" in out.stdout


@pytest.mark.slow
def test_multirun_sweep(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "experiments" / "run.py"), "-m", *TINY, "head=sdfl,fc",
                          f"hydra.sweep.dir={tmp_path}"], capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    results = sorted(tmp_path.glob("*/results.json"))
    assert len(results) == 2
    heads = {json.loads(p.read_text())["config"]["head"]["_target_"].rsplit(".", 1)[-1] for p in results}
    assert heads == {"SDFLHead", "FCHead"}
