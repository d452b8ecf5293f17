"""Training throughput on CPU for each speed lever: bf16 autocast, channels_last, the fused graph head, torch.compile.

    python benchmarks/train_levers.py --out results/train_levers_cpu.json
    python benchmarks/train_levers.py --image-size 96 --threads 1 --compile
    python benchmarks/train_levers.py --k 67 --threads 1      # the dense graph: PyG's scatter path vs the fused one

One training step is what ``pyg_sdfl.engine.training`` does per batch: forward (under autocast when
bf16), the configured loss (Soft Wing + relative location) in fp32, backward, AdamW step. The model
is built from the Hydra configs exactly as a run builds it (``backbone``/``head`` choices), on random
images of the requested size; the data pipeline is not included (it is measured apart: one cached
300-W face is cropped and augmented in ~0.4 ms, far below a step's share per face).

Protocol: ``--warmup`` untimed steps per lever, then ``--rounds`` rounds in which every lever makes
``--steps`` timed steps (interleaved, so a change in machine load hits all levers alike); each lever
gets the median step time over its rounds. Ratios against fp32 are the numbers to compare;
absolute times vary with the machine and its load. ``torch.compile`` (``--compile``) is timed
after its compilation, which is reported separately.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any, Callable, Dict, List, Optional

import torch
from hydra import compose, initialize_config_module

from _common import metadata, write_json
from pyg_sdfl.engine.builders import build_loss, build_model
from pyg_sdfl.graph import random_graph
from pyg_sdfl.nn.heads import use_graph_backend

LEVERS = {
    "fp32": dict(precision="fp32", channels_last=False),
    "channels_last": dict(precision="fp32", channels_last=True),
    "bf16": dict(precision="bf16", channels_last=False),
    "bf16+channels_last": dict(precision="bf16", channels_last=True),
    # train.graph_backend=fused: the SDFL head's graph stack as a gather over the neighbour table, no scatter
    "bf16+channels_last+fused": dict(precision="bf16", channels_last=True, graph_backend="fused"),
}


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--head", default="sdfl")
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--k", type=int, default=3, help="neighbours per landmark of the (random) 68-point graph; 67: dense")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=3, help="timed steps per lever per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--compile", action="store_true", help="also time torch.compile (bf16+channels_last)")
    p.add_argument("--out", default=None, help="JSON file to write")
    return p.parse_args(argv)


def make_step(args: argparse.Namespace, precision: str, channels_last: bool, compiled: bool = False,
              graph_backend: str = "pyg") -> Callable[[], float]:
    """A closure running one training step on a fixed random batch; returns the loss."""
    with initialize_config_module("pyg_sdfl.configs", version_base="1.3"):
        cfg = compose("config", overrides=[f"backbone={args.backbone}", f"head={args.head}", "dataset=synthetic",
                                           f"dataset.image_size={args.image_size}"])
    graph = random_graph(68, args.k, seed=0)
    torch.manual_seed(0)
    model = build_model(cfg, graph, 68)
    use_graph_backend(model, graph_backend)  # other heads than SDFL have one path: the lever is then a repeat
    criterion = build_loss(cfg.loss, graph)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    images = torch.randn(args.batch_size, 3, args.image_size, args.image_size)
    target = torch.rand(args.batch_size, 68, 2) * args.image_size
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    forward = torch.compile(model) if compiled else model
    model.train()

    def step() -> float:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            pred = forward(images)
        loss = criterion(pred.float(), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return float(loss)

    return step


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    steps: Dict[str, Callable[[], float]] = {name: make_step(args, **kw) for name, kw in LEVERS.items()}
    compile_s, compile_error = None, None
    if args.compile:
        compiled = make_step(args, "bf16", True, compiled=True)
        start = time.perf_counter()
        try:
            compiled()  # compilation happens on the first call
        except Exception as err:  # e.g. no C++ compiler for inductor: report it, time the others
            compile_error = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            print(f"torch.compile failed, left out: {compile_error}", file=sys.stderr)
        else:
            steps["bf16+channels_last+compile"] = compiled
            compile_s = time.perf_counter() - start
    for name, step in steps.items():
        for _ in range(args.warmup):
            step()
        print(f"warmed up {name}", file=sys.stderr, flush=True)
    times: Dict[str, List[float]] = {name: [] for name in steps}
    for r in range(args.rounds):
        for name, step in steps.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                step()
            times[name].append((time.perf_counter() - start) / args.steps)
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    base = statistics.median(times["fp32"])
    results = {}
    for name, values in times.items():
        med = statistics.median(values)
        results[name] = {"ms_per_step": round(1000 * med, 1), "faces_per_s": round(args.batch_size / med, 1),
                         "speedup_vs_fp32": round(base / med, 3), "step_times_s": [round(v, 4) for v in values]}
    payload = {"what": "training step throughput per speed lever (forward + loss + backward + AdamW)",
               "settings": {k: v for k, v in vars(args).items() if k != "out"},
               "compile_time_s": None if compile_s is None else round(compile_s, 1),
               "compile_error": compile_error,
               "results": results, "meta": metadata(args.threads)}
    print(f"| lever | ms/step ({args.batch_size} faces) | faces/s | x fp32 |\n|---|---:|---:|---:|")
    for name, r in results.items():
        print(f"| {name} | {r['ms_per_step']} | {r['faces_per_s']} | {r['speedup_vs_fp32']:.2f} |")
    if compile_s is not None:
        print(f"torch.compile: {compile_s:.1f} s to compile")
    write_json(args.out, payload)
    return payload


if __name__ == "__main__":
    main()
