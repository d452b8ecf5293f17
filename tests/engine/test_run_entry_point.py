"""`python experiments/run.py` (Hydra) writes its outputs into Hydra's run directory; -m sweeps;
a kill while best.ckpt is written is repaired on resume; user errors are one line and exit 2."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pyg_sdfl.engine.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[2]
RUN = ROOT / "experiments" / "run.py"
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


# Runs experiments/run.py in a process that SIGKILLs itself on the second rename onto best.ckpt:
# epoch 2's best.ckpt is then fully written to its temporary file and synced, but not yet renamed,
# and last.ckpt (written first) already records best epoch 2. A real kill of a real process.
KILL_AT_SECOND_BEST = """
import os, runpy, signal, sys
real_replace, renames = os.replace, []
def replace(src, dst, *args, **kwargs):
    if os.path.basename(str(dst)) == "best.ckpt":
        renames.append(dst)
        if len(renames) == 2:
            os.kill(os.getpid(), signal.SIGKILL)
    return real_replace(src, dst, *args, **kwargs)
os.replace = replace
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_kill_while_best_ckpt_is_written_then_resume(tmp_path):
    args = [*TINY, "train.epochs=2", "evaluate.grid_faces=0", f"hydra.run.dir={tmp_path}"]
    killed = subprocess.run([sys.executable, "-c", KILL_AT_SECOND_BEST, str(RUN), *args],
                            capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert killed.returncode == -signal.SIGKILL, "epoch 2 did not improve: no kill\n" + killed.stderr[-3000:]
    temporaries = list(tmp_path.glob(".best.ckpt.*.tmp"))
    assert len(temporaries) == 1 and temporaries[0].stat().st_size > 0
    last = load_checkpoint(tmp_path / "last.ckpt")
    assert last["epoch"] == last["best"]["epoch"] == 2 and load_checkpoint(tmp_path / "best.ckpt")["epoch"] == 1
    first_part = last["meta"]["wall_time_s"]

    t0 = time.perf_counter()
    resumed = subprocess.run([sys.executable, str(RUN), *args, "train.resume=last"],
                             capture_output=True, text=True, timeout=600, cwd=tmp_path)
    second_part_outside = time.perf_counter() - t0
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert not list(tmp_path.glob(".*.tmp"))
    assert "removed 1 temporary checkpoint file" in resumed.stdout + resumed.stderr
    results = json.loads((tmp_path / "results.json").read_text())
    best = load_checkpoint(tmp_path / "best.ckpt")
    # the reported best epoch is the one whose weights best.ckpt holds, and the reported val
    # metrics (scored from best.ckpt) are that epoch's validation during training
    assert results["best_epoch"] == best["epoch"] == best["best"]["epoch"] == 2
    assert results["metrics"]["val"]["all"]["nme"] == pytest.approx(results["history"][1]["val_nme"], rel=1e-6)
    assert results["best_val_nme"] == pytest.approx(best["best"]["val_nme"], rel=1e-12)
    # the run's wall time covers the killed part and the resumed one (rounded to 0.1 s)
    assert first_part - 0.05 <= results["meta"]["wall_time_s"] <= first_part + second_part_outside + 0.05


def test_a_user_error_is_one_line_on_stderr_and_exit_2(tmp_path):
    out = subprocess.run([sys.executable, str(RUN), *TINY, "train.epochs=0", f"hydra.run.dir={tmp_path}"],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert out.returncode == 2, out.stderr[-3000:]
    assert out.stderr.strip().splitlines() == [
        "pyg-sdfl train: error: train.epochs=0: a run needs at least one epoch; set train.epochs to 1 or more"]
    assert not (tmp_path / "run.lock").exists()  # released on the way out


def test_a_second_run_into_a_busy_folder_is_refused_and_leaves_the_holders_records(tmp_path):
    from pyg_sdfl.engine.run_lock import RunLock

    records = [".hydra/config.yaml", ".hydra/hydra.yaml", ".hydra/overrides.yaml"]
    (tmp_path / ".hydra").mkdir()
    for name in records:
        (tmp_path / name).write_text(f"# the holder's {name}\n")
    with RunLock(tmp_path, records=records):  # this test process is the run holding the folder
        out = subprocess.run([sys.executable, str(RUN), *TINY, "seed=1", f"hydra.run.dir={tmp_path}"],
                             capture_output=True, text=True, timeout=600, cwd=tmp_path)
        assert out.returncode == 2, out.stderr[-3000:]
        [line] = out.stderr.strip().splitlines()
        assert line.startswith(f"pyg-sdfl train: error: the run folder {tmp_path} is in use by process {os.getpid()} "
                               f"on {socket.gethostname()} (started ")
        for name in records:
            assert (tmp_path / name).read_text() == f"# the holder's {name}\n", name
        assert not (tmp_path / "last.ckpt").exists() and not (tmp_path / "results.json").exists()
