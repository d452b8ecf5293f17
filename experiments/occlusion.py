"""Occlusion robustness of trained models (the paper's Fig. 2c): visible and occluded NME against
the occluded share of the face.

    python experiments/occlusion.py runs/head_comparison/head=* --root ../shared/data/300w \\
        --out results/occlusion [--fractions 0 0.1 0.2 0.3 0.4 0.5] [--seed 0]

Each RUN_DIR's ``best.ckpt`` is loaded strictly and rebuilt from its own stored config and graph;
the test faces of its dataset (300-W: test/lfpw) are cropped at the checkpoint's image size and
crop scale, with ``dataset.root`` replaced by ``--root`` (without ``--root``, the checkpoint's own
dataset config is used as stored: e.g. synthetic faces). Every model sees the same occluders
(:func:`pyg_sdfl.studies.occlusion.evaluate_occlusion`, seeded per face) and runs at its training
precision. Writes to ``--out``:

* ``occlusion.json``: per run (dir name, head, seed, results), mean +- std over seeds per head,
  metadata (commit, machine, wall time) and the command line;
* ``occlusion.png``: NME (%) of the visible and of the occluded landmarks against the occluded
  fraction, band and patches, one line per head (band = std over seeds; FC dashed black);
* ``occlusion_examples.png``: one test face under each occluder;
* ``occlusion.md``: the tables (also printed): visible and occluded NME, head x fraction.

This script parses the command line and runs the study; the study itself (records, aggregation,
reports, figures) is :mod:`pyg_sdfl.studies.occlusion_study`.
"""
from __future__ import annotations

import argparse
import logging
import math
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

import torch
from omegaconf import OmegaConf

from pyg_sdfl.data.dataset import LandmarkDataset
from pyg_sdfl.engine.builders import resolve_device
from pyg_sdfl.engine.checkpoint import CheckpointError, load_model
from pyg_sdfl.engine.reporting import run_metadata
from pyg_sdfl.studies.occlusion import KINDS
from pyg_sdfl.studies.occlusion_study import (
    DEFAULT_FRACTIONS,
    aggregate,
    checkpoint_of,
    condition_warnings,
    evaluate_run_dir,
    load_test_faces,
    markdown_table,
    plot_examples,
    protocol_text,
    write_report,
)
from pyg_sdfl.studies.runs import head_label

log = logging.getLogger("pyg_sdfl.occlusion")


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dirs", nargs="+", type=Path, help="training run folders, each with best.ckpt")
    parser.add_argument("--root", type=Path, default=None,
                        help="dataset folder (e.g. ../shared/data/300w); default: the checkpoint's own dataset config")
    parser.add_argument("--out", type=Path, default=Path("results/occlusion"), help="output folder")
    parser.add_argument("--fractions", type=float, nargs="+", default=list(DEFAULT_FRACTIONS),
                        help="occluded shares of the face box, in [0, 1]")
    parser.add_argument("--kinds", nargs="+", choices=list(KINDS), default=list(KINDS))
    parser.add_argument("--seed", type=int, default=0, help="occluder seed (the same occluders for every model)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    parser.add_argument("--precision", choices=["checkpoint", "fp32", "bf16"], default="checkpoint",
                        help="autocast precision; default: the checkpoint's train.precision")
    parser.add_argument("--example-face", type=int, default=0, help="test face drawn in occlusion_examples.png")
    args = parser.parse_args(argv)
    bad = [f for f in args.fractions if not (math.isfinite(f) and 0 <= f <= 1)]
    if bad:
        parser.error(f"--fractions must lie in [0, 1]; got {bad}")
    if args.seed < 0:
        parser.error(f"--seed must be >= 0; got {args.seed}")
    if args.batch_size < 1:
        parser.error(f"--batch-size must be >= 1; got {args.batch_size}")
    return args


def run(args: argparse.Namespace, command: str, dataset: Optional[LandmarkDataset] = None) -> Dict[str, Any]:
    """Evaluate every run and write the reports; ``dataset`` replaces the checkpoints' test sets
    (tests use it)."""
    start = time.perf_counter()
    checkpoints = [checkpoint_of(d) for d in args.run_dirs]  # every folder checked before any work
    if args.root is not None and not args.root.is_dir():
        raise FileNotFoundError(f"--root {args.root} does not exist or is not a folder")
    device = str(resolve_device(args.device))
    fractions = sorted(dict.fromkeys(float(f) for f in args.fractions))
    precision = None if args.precision == "checkpoint" else args.precision
    datasets: Dict[Tuple[int, float], LandmarkDataset] = {}
    records, configs = [], []
    for run_dir, ckpt in zip(args.run_dirs, checkpoints):
        loaded = load_model(ckpt, device=device)
        data = dataset
        if data is None:
            key = (loaded.image_size, float(loaded.config.dataset.crop_scale), str(loaded.config.dataset.name))
            if key not in datasets:
                datasets[key] = load_test_faces(loaded, args.root)
            data = datasets[key]
        log.info("%s: head %s, seed %s, %d test faces", run_dir, head_label(loaded.config.head),
                 loaded.config.get("seed"), len(data))
        record = evaluate_run_dir(run_dir, data, loaded=loaded, kinds=args.kinds, fractions=fractions, seed=args.seed,
                                  batch_size=args.batch_size, device=device, precision=precision)
        records.append(record)
        configs.append(OmegaConf.to_container(loaded.config, resolve=True))
        del loaded
    aggregated = aggregate(records)
    notes = condition_warnings(records, configs)
    for note in notes:
        log.warning(note)
    first = records[0]
    example_data = dataset if dataset is not None else next(iter(datasets.values()))
    protocol = protocol_text(first, len(example_data), args.seed)
    payload = {
        "protocol": protocol,
        "kinds": list(args.kinds),
        "fractions": fractions,
        "seed": args.seed,
        "runs": records,
        "aggregated": aggregated,
        "notes": notes,
        "command": command,
        "meta": run_metadata(time.perf_counter() - start, device),
    }
    write_report(payload, args.out)
    plot_examples(example_data, args.example_face, args.kinds, fractions, args.seed, args.out / "occlusion_examples.png")
    for kind in args.kinds:
        print(f"\nVisible-landmark NME (%), {kind} occluder, by occluded fraction\n")
        print(markdown_table(aggregated, kind, "nme_visible"))
    print(f"results: {args.out / 'occlusion.json'}  tables: {args.out / 'occlusion.md'}  "
          f"plots: {args.out / 'occlusion.png'}, {args.out / 'occlusion_examples.png'}")
    return payload


def main(argv: Optional[Sequence[str]] = None, dataset: Optional[LandmarkDataset] = None) -> Dict[str, Any]:
    """Command-line entry; ``dataset`` (tests) replaces the checkpoints' test sets."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    words = list(sys.argv[1:] if argv is None else argv)
    command = shlex.join(["python", sys.argv[0] if argv is None else "experiments/occlusion.py", *words])
    args = parse_args(words)
    try:
        return run(args, command, dataset=dataset)
    except (FileNotFoundError, CheckpointError) as err:
        raise SystemExit(f"error: {err}") from None


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
