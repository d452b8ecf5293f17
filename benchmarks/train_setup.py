"""The fastest correct CPU training setup on this machine: image size, threads vs processes, data pipeline.

    python benchmarks/train_setup.py --root ../shared/data/300w --out results/train_setup_cpu.json
    python benchmarks/train_setup.py --root ../shared/data/300w --data-only --sizes 128 160 256 --out results/data_pipeline_cpu.json

Measured in one sitting, each number a median over interleaved rounds:

* **model step** (forward under bf16 autocast + channels_last where the CPU has native bf16, else
  fp32; Soft Wing + relative loss; backward; AdamW), ResNet-18 + SDFL head, batch 32, at each
  ``--sizes``: faces per second with **one process of all threads** and with **one process per
  core** (each with one thread, all stepping at once: what a 2-job sweep or a 2-rank gloo DDP run
  can reach at most, before communication), summed over processes;
* **data pipeline**: one augmented 300-W training crop (cached decoded images, the training
  augmentation: rotation, scale, shift, mirror, occluder) from ``LandmarkDataset.__getitem__``, in
  one thread: faces per second per loader worker, and the share of one core a loader worker needs
  to feed the model step; and the same crops from an image bank on the CPU (``train.crops=device``,
  batches of 32), one thread.

So the table says where a run's time goes and which setup to pick. The CPU model and flags are
recorded (``meta``); bf16 is used where ``avx512_bf16`` or ``amx_bf16`` is listed.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import sys
import time
from typing import Any, Dict, List, Optional

import torch

from _common import metadata, write_json

__all__ = ["main"]


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default=None, help="300-W root for the data-pipeline timing (skipped without)")
    p.add_argument("--sizes", type=int, nargs="+", default=[160, 256])
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=2, help="cores to use: one process of N threads vs N processes")
    p.add_argument("--steps", type=int, default=3, help="timed steps per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--data-faces", type=int, default=200, help="crops timed per size in the data pipeline")
    p.add_argument("--data-only", action="store_true", help="time the data pipeline alone (needs --root)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    if args.data_only and not args.root:
        p.error("--data-only times the data pipeline on 300-W: give --root")
    return args


def _precision() -> str:
    from pyg_sdfl.engine.evaluation import cpu_bf16_flags

    return "bf16" if cpu_bf16_flags() else "fp32"


def _make_step(backbone: str, size: int, batch: int, precision: str):
    """One training step on a fixed random batch (channels_last), as ``train_levers.py`` times it."""
    from train_levers import make_step

    return make_step(argparse.Namespace(backbone=backbone, head="sdfl", image_size=size, batch_size=batch),
                     precision, channels_last=True)


def _timed_steps(backbone: str, size: int, batch: int, precision: str, threads: int, steps: int,
                 warmup: int, start_at: Optional[float]) -> List[float]:
    """Seconds per step of ``steps`` steps after ``warmup``; with ``start_at`` (a perf_counter-free
    wall time) the timed part waits for it, so that concurrent processes step together."""
    torch.set_num_threads(threads)
    step = _make_step(backbone, size, batch, precision)
    for _ in range(warmup):
        step()
    if start_at is not None:
        while time.time() < start_at:
            time.sleep(0.01)
    out = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        out.append(time.perf_counter() - t0)
    return out


def _worker(args_tuple, queue) -> None:
    queue.put(_timed_steps(*args_tuple))


def processes_throughput(backbone: str, size: int, batch: int, precision: str, processes: int, steps: int) -> float:
    """Faces per second summed over ``processes`` one-thread processes stepping at the same time."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    start_at = time.time() + 25.0  # after every process has built its model and warmed up
    procs = [ctx.Process(target=_worker, args=((backbone, size, batch, precision, 1, steps, 1, start_at), queue))
             for _ in range(processes)]
    for p in procs:
        p.start()
    results = [queue.get() for _ in procs]
    for p in procs:
        p.join()
    return sum(batch / statistics.median(r) for r in results)


def data_pipeline(root: str, size: int, faces: int, batch: int = 32) -> Dict[str, float]:
    """Augmented crops per second, one thread, cached images: from one loader worker
    (``LandmarkDataset.__getitem__``, OpenCV) and from an image bank on the CPU
    (``train.crops=device``: :class:`pyg_sdfl.data.device_crops.ImageBank`, ``batch`` faces a call)."""
    from pyg_sdfl.config import compose
    from pyg_sdfl.data.device_crops import ImageBank
    from pyg_sdfl.engine.builders import build_datasets, load_splits

    cfg = compose(["experiment=cpu_300w_160", f"dataset.root={root}", f"dataset.image_size={size}"])
    splits = load_splits(cfg.dataset)
    splits.train = splits.train[:faces]
    splits.val, splits.test = [], []
    torch.set_num_threads(1)
    train = build_datasets(cfg, splits)["train"]
    train.set_epoch(1)
    for i in range(10):
        train[i]
    t0 = time.perf_counter()
    for i in range(len(train)):
        train[i]
    per_face = (time.perf_counter() - t0) / len(train)
    bank = ImageBank(train, "cpu")
    order = list(range(len(train)))
    bank.batch(order[:batch])
    t0 = time.perf_counter()
    for start in range(0, len(order) - batch + 1, batch):
        bank.batch(order[start:start + batch])
    bank_per_face = (time.perf_counter() - t0) / (len(order) // batch * batch)
    return {"ms_per_face": round(1000 * per_face, 3), "faces_per_s_per_worker": round(1 / per_face, 1),
            "bank_cpu_ms_per_face": round(1000 * bank_per_face, 3),
            "bank_cpu_faces_per_s_per_thread": round(1 / bank_per_face, 1)}


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    args = parse_args(argv)
    precision = _precision()
    results: Dict[str, Any] = {}
    for size in args.sizes:
        if args.data_only:
            results[str(size)] = {"data": data_pipeline(args.root, size, args.data_faces)}
            print(f"{size}px: {results[str(size)]}", file=sys.stderr, flush=True)
            continue
        one, many = [], []
        for r in range(args.rounds):
            times = _timed_steps(args.backbone, size, args.batch_size, precision, args.threads, args.steps, 1 if r else 2, None)
            one.append(args.batch_size / statistics.median(times))
            many.append(processes_throughput(args.backbone, size, args.batch_size, precision, args.threads, args.steps))
            print(f"{size}px round {r + 1}: 1 x {args.threads} threads {one[-1]:.1f} faces/s, "
                  f"{args.threads} x 1 thread {many[-1]:.1f} faces/s", file=sys.stderr, flush=True)
        row: Dict[str, Any] = {"one_process_faces_per_s": round(statistics.median(one), 1),
                               "processes_faces_per_s": round(statistics.median(many), 1)}
        row["processes_over_threads"] = round(row["processes_faces_per_s"] / row["one_process_faces_per_s"], 3)
        if args.root:
            row["data"] = data_pipeline(args.root, size, args.data_faces)
            row["loader_core_share_at_model_rate"] = round(row["one_process_faces_per_s"] / row["data"]["faces_per_s_per_worker"], 3)
        results[str(size)] = row
        print(f"{size}px: {row}", file=sys.stderr, flush=True)
    sizes = [str(s) for s in args.sizes]
    if len(sizes) > 1 and not args.data_only:
        base = results[sizes[0]]["one_process_faces_per_s"]
        for s in sizes[1:]:
            results[s]["cost_vs_" + sizes[0]] = round(base / results[s]["one_process_faces_per_s"], 2)
    payload = {"what": "CPU training throughput: model step by image size, one process of N threads vs N one-thread "
                       "processes, and the data pipeline per loader worker",
               "precision": precision, "settings": {k: v for k, v in vars(args).items() if k != "out"},
               "results": results, "meta": metadata(args.threads)}
    print(f"| crop | 1 process x {args.threads} threads | {args.threads} processes x 1 thread | data: ms/face/worker "
          f"| image bank on the CPU: ms/face/thread |")
    print("|---:|---:|---:|---:|---:|")
    for s, r in results.items():
        data = r.get("data", {})
        print(f"| {s} | {r.get('one_process_faces_per_s', '-')} | {r.get('processes_faces_per_s', '-')} | {data.get('ms_per_face', '-')} "
              f"| {data.get('bank_cpu_ms_per_face', '-')} |")
    write_json(args.out, payload)
    return payload


if __name__ == "__main__":
    main()
