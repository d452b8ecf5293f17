"""Hydra launchers for the comparison sweeps (the [sweeps] extra): hydra/launcher=joblib runs a preset's
sweep in parallel local processes with a share of the cores each, and hydra/launcher=sdfl_slurm
(pyg_sdfl/configs/hydra/launcher) composes and renders the sbatch script a cluster would be sent.
Every test skips with its reason where the extra is not installed; CI installs it."""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest
from omegaconf import DictConfig

from pyg_sdfl.config import CONFIG_DIR, compose

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "experiments" / "run.py"
PRESETS = ("head_comparison", "k_sweep", "ablation", "mining")
SLURM_LAUNCHER = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
# the resources of one training run documented in configs/hydra/launcher/sdfl_slurm.yaml
SLURM_JOB = {"timeout_min": 240, "cpus_per_task": 8, "gpus_per_node": 1, "tasks_per_node": 1, "nodes": 1,
             "mem_gb": 32, "partition": None, "array_parallelism": 16, "max_num_timeout": 0}


def _needs_submitit() -> None:
    pytest.importorskip("submitit", reason="the [sweeps] extra (submitit) is not installed")
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher",
                        reason="the [sweeps] extra (hydra-submitit-launcher) is not installed")


def _needs_joblib_launcher() -> None:
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher",
                        reason="the [sweeps] extra (hydra-joblib-launcher) is not installed")


def _slurm(overrides: List[str]) -> DictConfig:
    return compose(["hydra/launcher=sdfl_slurm", "experiment=head_comparison", *overrides], return_hydra_config=True)


# ============================================================================ SLURM (composed and dry-run here)
def test_the_slurm_launcher_config_is_in_the_packaged_config_tree() -> None:
    assert (CONFIG_DIR / "hydra" / "launcher" / "sdfl_slurm.yaml").is_file()  # shipped by configs/**/*.yaml


def test_the_slurm_launcher_composes_with_the_documented_job() -> None:
    _needs_submitit()
    cfg = _slurm(["dataset.root=/data/300w"])
    launcher = cfg.hydra.launcher
    assert launcher._target_ == SLURM_LAUNCHER
    assert {key: launcher[key] for key in SLURM_JOB} == SLURM_JOB
    assert cfg.hydra.runtime.choices["hydra/launcher"] == "sdfl_slurm"
    # the plugin's other fields come with it (extended, not copied), and the preset's sweep is untouched
    assert launcher.signal_delay_s == 120 and launcher.setup is None and launcher.qos is None and "name" in launcher
    assert cfg.hydra.sweep.dir == "runs/head_comparison"
    assert set(cfg.hydra.sweeper.params) == {"head", "seed"}
    # the job itself is the preset's
    protocol = compose(["experiment=sweep_protocol", "dataset.root=/data/300w"])
    assert cfg.dataset.root == "/data/300w" and cfg.train.epochs == protocol.train.epochs


def test_command_line_overrides_reach_the_slurm_launcher() -> None:
    _needs_submitit()
    cfg = _slurm(["dataset.root=/x", "hydra.launcher.partition=gpu", "hydra.launcher.timeout_min=600",
                  "hydra.launcher.mem_gb=64", "hydra.sweep.dir=/shared/sweeps/heads"])
    assert cfg.hydra.launcher.partition == "gpu"
    assert cfg.hydra.launcher.timeout_min == 600 and cfg.hydra.launcher.mem_gb == 64
    assert cfg.hydra.launcher.submitit_folder == "/shared/sweeps/heads/.submitit/%j"  # under the sweep dir
    # the plugin's own config stays reachable as it is
    plain = compose(["hydra/launcher=submitit_slurm", "experiment=head_comparison", "dataset.root=/x"],
                    return_hydra_config=True).hydra.launcher
    assert plain._target_ == SLURM_LAUNCHER and plain.timeout_min == 60 and plain.gpus_per_node is None


# A stand-in for SLURM's sbatch: keeps the script it is given and refuses it, so that nothing waits for
# a job. The only part of the chain not run for real is the cluster; the launcher that maps the config
# to submitit's parameters (hydra_submitit_launcher's launch()) and submitit, which writes the pickled
# jobs and the sbatch script, are the installed ones, started by the real command line.
FAKE_SBATCH = """#!/bin/sh
cp "$1" "$(dirname "$0")/../submitted.sh"
echo "sbatch (test stand-in): not submitted" >&2
exit 1
"""


def test_a_slurm_sweep_renders_the_sbatch_script_of_the_documented_job(tmp_path: Path) -> None:
    """``experiments/run.py -m experiment=head_comparison hydra/launcher=sdfl_slurm`` down to sbatch: a dry run
    (there is no SLURM here; a stand-in sbatch receives the script)."""
    _needs_submitit()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(FAKE_SBATCH)
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")  # submitit only checks that srun exists (on a cluster)
    for tool in ("sbatch", "srun"):
        (bin_dir / tool).chmod(0o755)
    sweep = tmp_path / "sweep"
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    out = subprocess.run([sys.executable, str(RUN), "-m", "experiment=head_comparison", "hydra/launcher=sdfl_slurm",
                          "hydra.launcher.partition=gpu", "dataset.root=/data/300w", f"hydra.sweep.dir={sweep}"],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert out.returncode != 0 and "(test stand-in): not submitted" in out.stderr, out.stderr[-3000:]
    script = (tmp_path / "submitted.sh").read_text()
    flags = dict(re.findall(r"^#SBATCH --([\w-]+)=(.*)$", script, re.M))
    params = _slurm(["dataset.root=/x"]).hydra.sweeper.params  # head_comparison: heads x seeds, one array job
    expected = {(f"head={h}", f"seed={s}") for h in str(params["head"]).split(",") for s in str(params["seed"]).split(",")}
    jobs = len(expected)
    assert {key: flags.get(key) for key in ("time", "cpus-per-task", "gpus-per-node", "ntasks-per-node", "nodes",
                                            "mem", "partition", "array", "job-name")} == {
        "time": "240", "cpus-per-task": "8", "gpus-per-node": "1", "ntasks-per-node": "1", "nodes": "1",
        "mem": "32GB", "partition": "gpu", "array": f"0-{jobs - 1}%{min(jobs, 16)}", "job-name": "experiment"}
    assert flags["signal"] == "USR2@120"  # submitit's warning to a run about to hit the time limit
    submitit_dir = sweep / ".submitit"
    assert flags["output"] == str(submitit_dir / "%A_%a" / "%A_%a_0_log.out")
    # each array task starts submitit in the submitting Python, on the pickled jobs next to the script
    command = script.strip().splitlines()[-1]
    assert command.startswith("srun ") and command.endswith(
        f"{shlex.quote(sys.executable)} -u -m submitit.core._submit {submitit_dir / '%j'}")
    # one pickled job per run of the sweep, each the preset's job with its own head and seed
    from submitit.core.utils import DelayedSubmission

    pickled = [DelayedSubmission.load(path).args[0] for path in submitit_dir.glob("*.pkl")]
    assert len(pickled) == jobs
    assert {tuple(overrides[:2]) for overrides in pickled} == expected
    assert all(overrides[2:] == ["experiment=head_comparison", "dataset.root=/data/300w"] for overrides in pickled), \
        pickled[0]  # Hydra's own overrides (hydra.launcher.*, hydra.sweep.dir) are the launcher's, not the job's


# ============================================================================ joblib (runs here)
# the tiniest real run of a preset's protocol: synthetic faces, one step, no figures
TINY = ["dataset=synthetic", "dataset.train.num_faces=16", "dataset.test.num_faces=8", "dataset.image_size=64",
        "dataset.val_fraction=0.25", "train.epochs=1", "train.batch_size=8", "train.max_steps_per_epoch=1",
        "train.eval_untrained=false", "train.init_backbone_from=null", "evaluate.grid_faces=0", "device=cpu"]
N_JOBS = 2
# the job's log lines carry the process id and the time of the process that wrote them
LOG_FORMAT = "%(process)d %(created)f %(message)s"


def _first_two_swept(preset: str) -> Tuple[str, List[str]]:
    """The preset's swept key other than the seed, and the first two of its values."""
    params = compose([f"experiment={preset}", "dataset.root=/x"], return_hydra_config=True).hydra.sweeper.params
    [key] = [k for k in params if k != "seed"]
    return key, [v.strip() for v in str(params[key]).split(",")][:2]


def _job_log(job_dir: Path) -> List[Tuple[int, float]]:
    """(process id, time) of every record of a job's Hydra log (``<hydra.job.name>.log``, :data:`LOG_FORMAT`;
    the continuation lines of a multi-line message are skipped)."""
    [log] = job_dir.glob("*.log")
    return [(int(m.group(1)), float(m.group(2))) for m in re.finditer(r"^(\d+) (\d+\.\d+) ", log.read_text(), re.M)]


def _swept_value(payload: Dict[str, Any], key: str) -> Any:
    """What a job's results.json records for a swept config group (head, variant) or key (graph.k)."""
    if key in payload["choices"]:
        return payload["choices"][key]
    node = payload["config"]
    for part in key.split("."):
        node = node[part]
    return node


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@pytest.mark.slow
@pytest.mark.parametrize("preset", PRESETS)
def test_a_preset_sweep_runs_in_parallel_joblib_processes(preset: str, tmp_path: Path) -> None:
    _needs_joblib_launcher()
    key, values = _first_two_swept(preset)
    sweep = tmp_path / "sweep"
    # the tiny budget's keys join the preset's exclusions, so that the job folders are named as in a real
    # sweep (all of them would make a folder name over 255 characters)
    exclude = ["experiment", "dataset.root", "device"] + [o.split("=", 1)[0] for o in TINY]
    with subprocess.Popen([sys.executable, str(RUN), "-m", f"experiment={preset}", f"{key}={','.join(values)}",
                           "seed=0", *TINY, "hydra/launcher=joblib", f"hydra.launcher.n_jobs={N_JOBS}",
                           f"hydra.sweep.dir={sweep}",
                           f"hydra.job.config.override_dirname.exclude_keys=[{','.join(exclude)}]",
                           f"hydra.job_logging.formatters.simple.format='{LOG_FORMAT}'"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path) as proc:
        try:
            stdout, stderr = proc.communicate(timeout=600)
        finally:
            proc.kill()  # only if it is still running (a timeout)
    assert proc.returncode == 0, stderr[-3000:]
    assert f"Joblib.Parallel(n_jobs={N_JOBS},backend=loky" in stdout + stderr

    # the preset's subdir, hydra.job.override_dirname: the job's own overrides, sorted, joined by ","
    jobs: Dict[str, Path] = {value: sweep / ",".join(sorted([f"{key}={value}", "seed=0"])) for value in values}
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == sorted(p.name for p in jobs.values())
    spans = {}
    for value, job_dir in jobs.items():
        payload = json.loads((job_dir / "results.json").read_text())
        assert str(_swept_value(payload, key)) == value, key
        assert payload["config"]["dataset"]["name"] == "synthetic" and payload["choices"]["experiment"] == preset
        # needs threads=auto (lead): each of the n_jobs parallel jobs takes its share of the cores
        assert payload["meta"]["torch_threads"] == max(1, _cores() // N_JOBS)
        lines = _job_log(job_dir)
        assert lines and len({pid for pid, _ in lines}) == 1, lines  # one process wrote the job's log
        # (process, its first log record, its results.json written at the end of the job)
        spans[value] = (lines[0][0], lines[0][1], (job_dir / "results.json").stat().st_mtime)
    (pid_a, start_a, end_a), (pid_b, start_b, end_b) = spans.values()
    assert len({pid_a, pid_b, proc.pid}) == 3  # two worker processes, neither of them the launching one
    assert start_a < end_b and start_b < end_a  # and they ran at the same time
