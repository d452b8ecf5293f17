"""``pyg-sdfl``: train, evaluate and mine graphs from the command line.

    pyg-sdfl train [hydra overrides...]            same as python experiments/run.py
    pyg-sdfl evaluate --checkpoint CKPT --dataset 300w --root DIR   metrics as JSON on stdout
    pyg-sdfl graph --dataset 300w --root DIR --k 3                  mine, save, draw on the mean face
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import List, Optional

__all__ = ["main"]

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def _compose(overrides: List[str]):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def _dataset_overrides(args: argparse.Namespace) -> List[str]:
    overrides = [f"dataset={args.dataset}"]
    if args.root is not None:
        overrides.append(f"dataset.root={Path(args.root).resolve()}")
    return overrides


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from omegaconf import OmegaConf

    from pyg_sdfl.engine.checkpoint import load_checkpoint
    from pyg_sdfl.experiment import evaluate_run

    ckpt = load_checkpoint(args.checkpoint)
    cfg = OmegaConf.create(ckpt["config"])
    data_cfg = _compose(_dataset_overrides(args)).dataset
    # the model was trained at this crop size and scale: keep them
    data_cfg.image_size = cfg.dataset.image_size
    data_cfg.crop_scale = cfg.dataset.crop_scale
    cfg.dataset = data_cfg
    cfg.device = args.device
    out_dir = Path(args.out) if args.out else None
    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)
    result = evaluate_run(cfg, Path(args.checkpoint), out_dir=out_dir, splits_to_score=args.split)
    payload = {"checkpoint": str(args.checkpoint), "dataset": args.dataset, "crop_scale": float(cfg.dataset.crop_scale),
               "normalisation": str(cfg.evaluate.normalisation), "metrics": result["metrics"]}
    json.dump(payload, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


def _cmd_graph(args: argparse.Namespace) -> int:
    from pyg_sdfl.engine.builders import build_graph, load_splits, normalised_shapes
    from pyg_sdfl.plotting import plot_graph_on_shape

    cfg = _compose(_dataset_overrides(args) + [f"graph.k={args.k}", f"graph.mode={args.mode}"])
    splits = load_splits(cfg.dataset, seed=int(cfg.dataset.get("split_seed", 0)), need_test=False)
    graph = build_graph(cfg.graph, splits, crop_scale=float(cfg.dataset.crop_scale))
    out = Path(args.out or f"graph_{args.dataset}_k{args.k}_{args.mode}.pt")
    out.parent.mkdir(parents=True, exist_ok=True)
    graph.save(out)
    png = out.with_suffix(".png")
    mean_shape = normalised_shapes(splits.train, float(cfg.dataset.crop_scale)).mean(axis=0)
    plot_graph_on_shape(mean_shape, graph.edge_index, splits.scheme, path=png,
                        title=f"{args.dataset}: k={args.k}, {args.mode} mining, {len(splits.train)} training faces")
    print(json.dumps({"graph": str(out), "png": str(png), "num_nodes": graph.num_nodes, "k": graph.k,
                      "num_edges": int(graph.edge_index.shape[1])}))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pyg-sdfl", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("train", help="train and evaluate (Hydra; all arguments are Hydra overrides)", add_help=False)

    ev = sub.add_parser("evaluate", help="score a checkpoint; prints metrics JSON on stdout")
    ev.add_argument("--checkpoint", required=True)
    ev.add_argument("--dataset", required=True, help="dataset config name: 300w, wflw, cofw, synthetic")
    ev.add_argument("--root", default=None, help="dataset root folder")
    ev.add_argument("--split", nargs="+", default=["test"], help="splits to score (default: test)")
    ev.add_argument("--out", default=None, help="folder for the CED plot and prediction grid")
    ev.add_argument("--device", default="auto")

    gr = sub.add_parser("graph", help="mine the landmark graph from a training set, save it and draw it")
    gr.add_argument("--dataset", required=True)
    gr.add_argument("--root", default=None)
    gr.add_argument("--k", type=int, default=3)
    gr.add_argument("--mode", default="separate", choices=["separate", "joint"])
    gr.add_argument("--out", default=None, help="output .pt path (the PNG goes next to it)")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "train":
        from pyg_sdfl.experiment import main as hydra_main

        sys.argv = [sys.argv[0]] + argv[1:]
        hydra_main()
        return 0
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    try:
        return {"evaluate": _cmd_evaluate, "graph": _cmd_graph}[args.command](args)
    except (ValueError, KeyError, FileNotFoundError, RuntimeError) as err:
        print(f"pyg-sdfl {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
