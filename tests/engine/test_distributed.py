"""DDP under torchrun (2 gloo processes on 127.0.0.1) against one process on the same global batch.

The runs use SGD (``train=paper``): Adam divides each gradient by its own running magnitude, so a
gradient that is zero in exact arithmetic (a bias feeding a batch norm) but 1e-9 of rounding noise
in one run and -1e-9 in the other would move by +lr in one and -lr in the other; SGD passes the
rounding noise on at its own size, so parameters after K steps can be compared at 1e-5. K is small
(4): this toy model (64 px crops, 4 faces per process, 2x2 maps in the last stage's batch norms) is
ill-conditioned enough that rounding differences grow about tenfold per step (measured: 1e-8 after
one step, 5e-7 after 4, 3e-4 after 6). The growth depends on the CPU's kernels: at lr 1e-4 the 4-step
difference was 1.28e-5 on the 2-core AMD EPYC VM (2026-12-06, the same at commit d421338), so the runs
use lr 5e-5, where both this comparison (< 1e-5) and the control without SyncBatchNorm (> 1e-4) hold there.
"""
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pyg_sdfl.engine.checkpoint import load_checkpoint
from pyg_sdfl.engine.distributed import SINGLE_PROCESS, from_environment, thread_budget

ROOT = Path(__file__).resolve().parents[2]
RUN = ROOT / "experiments" / "run.py"
# fp32, no channels_last, 2 epochs x 2 steps of a global batch of 8, the SDFL head (its graph batch norms too),
# pose-balanced sampling (a weighted draw with replacement, sliced per rank like a shuffle); 9 test faces:
# the ranks score unequal shards
SMALL = ["train=paper", "train.optimizer.lr=0.00005", "dataset.image_size=64", "dataset.train.num_faces=64", "dataset.test.num_faces=9",
         "dataset.val_fraction=0.25", "train.batch_size=8", "train.num_workers=0", "train.epochs=2",
         "train.max_steps_per_epoch=2", "train.precision=fp32", "train.channels_last=false",
         "train.eval_untrained=false", "train.augment.occlusion_prob=0.5", "evaluate.grid_faces=0", "threads=1",
         "train.balance=true"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(run_dir: Path, *overrides: str, processes: int = 1) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if processes == 1:
        cmd = [sys.executable, str(RUN)]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}",
               "--master_addr=127.0.0.1", f"--master_port={_free_port()}", str(RUN)]
    out = subprocess.run([*cmd, *SMALL, *overrides, f"hydra.run.dir={run_dir}"], capture_output=True, text=True,
                         timeout=900, cwd=run_dir.parent, env=env)
    assert out.returncode == 0, (out.stdout[-2000:], out.stderr[-4000:])
    return out


def _weights(run_dir: Path):
    return load_checkpoint(run_dir / "last.ckpt")["model"]


def _max_difference(a, b) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].is_floating_point())


@pytest.mark.slow
def test_two_processes_train_the_model_one_process_trains_and_resume_under_ddp_is_exact(tmp_path):
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    _run(single, "train.sync_batchnorm=true")
    out = _run(ddp, "train.sync_batchnorm=true", processes=2)
    ddp_weights = _weights(ddp)
    # 4 SGD steps of the same global batches, across an epoch boundary: the same model, to rounding
    assert _max_difference(_weights(single), ddp_weights) < 1e-5
    # rank 0 alone wrote the run, and its results say how it ran
    results = (ddp / "results.json").read_text()
    assert '"processes": 2' in results and '"backend": "gloo"' in results
    assert sorted(p.name for p in ddp.glob("*.ckpt")) == ["best.ckpt", "last.ckpt"]

    # interrupted after epoch 1, resumed under DDP: the uninterrupted run's weights
    resumed = tmp_path / "resumed"
    _run(resumed, "train.sync_batchnorm=true", "train.epochs=1", processes=2)
    _run(resumed, "train.sync_batchnorm=true", "train.resume=last", processes=2)
    assert _max_difference(_weights(resumed), ddp_weights) < 1e-6

    # crops resampled on the device (train.crops=device): each rank's bank batches are its slice of the
    # global batch, so the equivalence holds there too
    single_bank, ddp_bank = tmp_path / "single_bank", tmp_path / "ddp_bank"
    _run(single_bank, "train.sync_batchnorm=true", "train.crops=device")
    _run(ddp_bank, "train.sync_batchnorm=true", "train.crops=device", processes=2)
    assert _max_difference(_weights(single_bank), _weights(ddp_bank)) < 1e-5

    # metrics gathered over the ranks: scored on all validation and test faces, as the single run was
    import json
    one, two = json.loads((single / "results.json").read_text()), json.loads((ddp / "results.json").read_text())
    for split in ("val", "test"):
        assert two["metrics"][split]["all"]["count"] == one["metrics"][split]["all"]["count"]
        assert len(two["nme_per_face"][split]) == len(one["nme_per_face"][split])
        assert abs(two["metrics"][split]["all"]["nme"] - one["metrics"][split]["all"]["nme"]) < 1e-4


@pytest.mark.slow
def test_without_sync_batchnorm_each_process_normalises_its_own_slice(tmp_path):
    """The control: the same runs without train.sync_batchnorm end measurably apart (so the
    comparison above can fail)."""
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    _run(single, "train.epochs=1")
    _run(ddp, "train.epochs=1", processes=2)
    assert _max_difference(_weights(single), _weights(ddp)) > 1e-4


def test_a_single_process_joins_no_group(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert from_environment(torch.device("cpu")) is SINGLE_PROCESS
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert from_environment(torch.device("cpu")) is SINGLE_PROCESS


def test_an_incomplete_torchrun_environment_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    for key in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(ValueError, match="RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT not set: start distributed runs "
                                         "with torchrun"):
        from_environment(torch.device("cpu"))


def test_more_processes_than_gpus_is_a_clear_error(monkeypatch):
    for key, value in {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": "29500"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match="process 1 of 2 on this machine has no GPU of its own: 1 visible"):
        from_environment(torch.device("cuda"))


def test_torchrun_with_a_sweep_is_refused(tmp_path):
    env = {**os.environ, "WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(_free_port()), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, str(RUN), "-m", *SMALL, "seed=0,1", f"hydra.sweep.dir={tmp_path}"],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert out.returncode == 2
    assert "torchrun with -m (a sweep)" in out.stderr


def test_thread_budget_shares_the_cores():
    assert thread_budget("auto", parallel_jobs=1, cores=16) is None  # a lone process keeps torch's default
    assert thread_budget("auto", parallel_jobs=2, cores=2) == 1
    assert thread_budget("auto", parallel_jobs=3, cores=16) == 5
    assert thread_budget("auto", parallel_jobs=8, cores=2) == 1
    assert thread_budget(3) == 3 and thread_budget(None) is None
    for bad in ("many", 0, 1.5, True):
        with pytest.raises(ValueError, match="expected 'auto' or a positive integer"):
            thread_budget(bad)
