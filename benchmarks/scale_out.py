"""Training throughput of the ways to use one machine's cores: threads, DDP processes, parallel sweep jobs.

    python benchmarks/scale_out.py --root ../shared/data/300w --out results/scale_out_cpu.json

Runs ``experiments/run.py`` as users do, on the real 300-W training faces (128 px, the comparison
presets' budget, bf16 + channels_last, ResNet-18 + SDFL head), each run ``--steps`` steps of one
global batch of 32:

1. one process with all the cores as torch threads, with the SDFL head's graph stack on PyG's scatter
   path (the reference) and on the fused gather path (``train.graph_backend=fused``);
2. ``torchrun --nproc_per_node=P`` (DDP on gloo), one thread per process;
3. two jobs of a sweep with ``hydra/launcher=joblib`` (``n_jobs=2``, cores/2 threads each), against the
   same two jobs run one after the other with all the cores.

Reported: the training loop's faces per second (``history[0].faces_per_s`` of each ``results.json``:
the steps with their crops' augmentation, done in the training process (``num_workers=0``, so each
DDP rank augments its half); no start-up, image loading or validation) and the wall time of each
whole command (start-up, data, training, scoring). Needs the ``[sweeps]`` extra.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Sequence

from _common import metadata, write_json

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "experiments" / "run.py"


def _budget(root: str, steps: int) -> List[str]:
    return ["experiment=head_comparison", f"dataset.root={root}", "dataset.image_size=128",
            "train.init_backbone_from=null", "train.epochs=1", f"train.max_steps_per_epoch={steps}",
            "train.batch_size=32", "train.eval_untrained=false", "evaluate.splits=[val]", "evaluate.grid_faces=0"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _call(cmd: Sequence[str], env: Dict[str, str]) -> float:
    start = time.perf_counter()
    out = subprocess.run(list(cmd), capture_output=True, text=True, env=env, cwd=ROOT)
    if out.returncode:
        raise SystemExit(f"failed ({out.returncode}): {' '.join(cmd)}\n{out.stderr[-3000:]}")
    return time.perf_counter() - start


def _faces_per_s(results: Path) -> float:
    return float(json.loads(results.read_text())["history"][0]["faces_per_s"])


def _env(threads: int) -> Dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": str(threads)}


def one_process(root: str, steps: int, cores: int, work: Path, graph_backend: str = "pyg") -> Dict[str, Any]:
    run_dir = work / f"one_process_{graph_backend}"
    wall = _call([sys.executable, str(RUN), *_budget(root, steps), f"threads={cores}", f"hydra.run.dir={run_dir}",
                  f"train.graph_backend={graph_backend}"], _env(cores))
    label = f"1 process x {cores} threads" + ("" if graph_backend == "pyg" else f", train.graph_backend={graph_backend}")
    return {"setup": label, "faces_per_s": _faces_per_s(run_dir / "results.json"), "wall_s": wall}


def ddp(root: str, steps: int, processes: int, cores: int, work: Path) -> Dict[str, Any]:
    run_dir = work / "ddp"
    threads = max(1, cores // processes)
    wall = _call([sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}",
                  "--master_addr=127.0.0.1", f"--master_port={_free_port()}", str(RUN), *_budget(root, steps),
                  f"threads={threads}", f"hydra.run.dir={run_dir}"], _env(threads))
    return {"setup": f"{processes} processes x {threads} thread(s), DDP on gloo",
            "faces_per_s": _faces_per_s(run_dir / "results.json"), "wall_s": wall}


def sweep(root: str, steps: int, cores: int, work: Path, parallel: bool) -> Dict[str, Any]:
    sweep_dir = work / ("joblib" if parallel else "sequential")
    launcher = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"] if parallel else []
    threads = "auto" if parallel else str(cores)
    wall = _call([sys.executable, str(RUN), "-m", *_budget(root, steps), "head=sdfl,fc", "seed=0", f"threads={threads}",
                  *launcher, f"hydra.sweep.dir={sweep_dir}"], _env(max(1, cores // 2) if parallel else cores))
    rates = [_faces_per_s(p) for p in sorted(sweep_dir.glob("*/results.json"))]
    if len(rates) != 2:
        raise SystemExit(f"expected 2 jobs' results under {sweep_dir}, found {len(rates)}")
    label = (f"2-job sweep, joblib n_jobs=2 ({max(1, cores // 2)} thread(s) each)" if parallel
             else f"2-job sweep, one after the other ({cores} threads each)")
    return {"setup": label, "faces_per_s_per_job": rates,
            "faces_per_s": sum(rates) if parallel else len(rates) / sum(1 / r for r in rates), "wall_s": wall}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", required=True, help="300-W folder (../shared/data/300w)")
    parser.add_argument("--steps", type=int, default=24, help="training steps of 32 faces per run (default %(default)s)")
    parser.add_argument("--processes", type=int, default=2, help="DDP processes (default %(default)s)")
    parser.add_argument("--out", default=None, help="JSON file to write")
    args = parser.parse_args(argv)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name, fn in (("one process", lambda: one_process(args.root, args.steps, cores, work)),
                         ("one process, fused graph head", lambda: one_process(args.root, args.steps, cores, work,
                                                                                "fused")),
                         ("ddp", lambda: ddp(args.root, args.steps, args.processes, cores, work)),
                         ("sequential sweep", lambda: sweep(args.root, args.steps, cores, work, parallel=False)),
                         ("joblib sweep", lambda: sweep(args.root, args.steps, cores, work, parallel=True))):
            print(f"{name} ...", flush=True)
            rows.append(fn())
            print(f"  {rows[-1]['setup']}: {rows[-1]['faces_per_s']:.1f} faces/s, {rows[-1]['wall_s']:.0f} s", flush=True)
    base = rows[0]["faces_per_s"]
    for row in rows:
        row["relative_to_one_process"] = row["faces_per_s"] / base
    print("\n| setup | training faces/s | x one process | wall (s) |\n|---|---|---|---|")
    for row in rows:
        print(f"| {row['setup']} | {row['faces_per_s']:.1f} | {row['relative_to_one_process']:.2f} | {row['wall_s']:.0f} |")
    write_json(args.out, {"rows": rows, "steps": args.steps, "batch_size": 32, "image_size": 128,
                          "meta": metadata(threads=cores)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
