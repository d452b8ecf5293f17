"""Systematic offset of a trained model's landmarks, and what removing it would be worth.

    python benchmarks/mirror_bias.py --checkpoint runs/cpu_300w_160/best.ckpt --root ../shared/data/300w \\
        --out results/cpu_300w_160/mirror_bias.json

For the validation split (carved from training, used for model selection) and the test split it
reports the mean residual ``pred - target`` over all faces and landmarks, per axis, in original
image pixels and in crop pixels, and how the horizontal residual varies with face size
(correlation with the inter-ocular distance). Then it fits the mean image-pixel residual on the
*validation* split only and scores the test split with that shift subtracted (both axes, and x
only): the NME a constant correction would give. Nothing here changes the shipped model.

Why it matters: training used to mirror half of the faces with ``x' = W - 1 - x`` (0-based pixel
centres). The 300-W annotations sit ``b`` = 0.89 px right of the mirror-symmetric content
(``benchmarks/annotation_offset.py``, no model involved), so the mirrored labels carried ``-b`` where
the originals carry ``+b``; the model learnt their average, 0, and was ``-b`` off on every test
face. Mirrored crops now keep ``b`` (``dataset.annotation_offset_x``), and this script is how a
trained model shows it: its mean x residual should be ~0. A vertical offset, untouched by
mirroring, is learnt either way.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, Dict, List, Optional

import numpy as np
import torch

from _common import metadata, write_json
from pyg_sdfl.engine.builders import build_datasets, load_splits
from pyg_sdfl.engine.checkpoint import load_model
from pyg_sdfl.engine.evaluation import predict
from pyg_sdfl.metrics import nme, normalisation_distance


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="a training checkpoint (best.ckpt) with its config")
    p.add_argument("--root", required=True, help="the dataset root the checkpoint was trained on")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None, help="write the results as JSON here")
    return p.parse_args(argv)


def residuals(model, dataset, precision: str) -> Dict[str, Any]:
    """Predictions of one split and their residuals in image and crop pixels."""
    preds = predict(model, dataset, precision=precision)
    target_crop = np.stack([dataset[int(i)]["landmarks"].numpy() for i in preds.indices]).astype(np.float64)
    return {"preds": preds, "image": preds.pred - preds.target, "crop": preds.pred_crop - target_crop}


def describe_split(res: Dict[str, Any], scheme: str) -> Dict[str, Any]:
    target = res["preds"].target
    iod = normalisation_distance(target, scheme, "inter_ocular")
    per_face_x = res["image"][..., 0].mean(axis=1)
    return {
        "faces": int(len(target)),
        "mean_residual_image_px": res["image"].mean(axis=(0, 1)).round(4).tolist(),
        "mean_residual_crop_px": res["crop"].mean(axis=(0, 1)).round(4).tolist(),
        "faces_with_negative_x_residual": float((per_face_x < 0).mean()),
        "corr_x_residual_vs_interocular": float(np.corrcoef(per_face_x, iod)[0, 1]),
        "mean_interocular_px": float(iod.mean()),
        "nme": float(nme(res["preds"].pred, target, scheme).mean()),
    }


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    loaded = load_model(args.checkpoint)
    cfg, model = loaded.config, loaded.model
    cfg.dataset.root = args.root
    for part in ("train", "test"):  # a training checkpoint stores its readers' roots resolved, not as ${dataset.root}
        if part in cfg.dataset and "root" in cfg.dataset[part]:
            cfg.dataset[part].root = args.root
    splits = load_splits(cfg.dataset)
    datasets = build_datasets(cfg, splits)
    precision = str(cfg.train.precision)
    scheme = splits.scheme.name

    res = {name: residuals(model, datasets[name], precision) for name in ("val", "test")}
    report = {name: describe_split(r, scheme) for name, r in res.items()}
    shift = res["val"]["image"].mean(axis=(0, 1))
    test = res["test"]["preds"]
    corrected = {
        "none": report["test"]["nme"],
        "xy": float(nme(test.pred - shift, test.target, scheme).mean()),
        "x_only": float(nme(test.pred - [shift[0], 0.0], test.target, scheme).mean()),
    }
    lines = [f"{args.checkpoint}: {cfg.dataset.image_size} px crops"]
    for name, r in report.items():
        lines.append(f"  {name}: mean residual (x, y) {r['mean_residual_image_px']} image px, "
                     f"{r['mean_residual_crop_px']} crop px; corr(x residual, inter-ocular) "
                     f"{r['corr_x_residual_vs_interocular']:+.3f}; NME {100 * r['nme']:.3f}%")
    lines.append(f"  test NME with the validation mean shift {shift.round(3).tolist()} removed: "
                 f"{100 * corrected['xy']:.3f}% (x only: {100 * corrected['x_only']:.3f}%; none: {100 * corrected['none']:.3f}%)")
    print("\n".join(lines))
    write_json(args.out, {
        "checkpoint": args.checkpoint, "image_size": int(cfg.dataset.image_size), "precision": precision,
        "splits": report, "validation_shift_image_px": shift.round(4).tolist(),
        "test_nme_after_removing_validation_shift": corrected,
        "meta": metadata(args.threads),
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
