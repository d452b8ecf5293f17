"""``pyg-sdfl``: train, evaluate, mine graphs and predict landmarks from the command line.

    pyg-sdfl train [hydra overrides...]            same as python experiments/run.py
    pyg-sdfl evaluate [--checkpoint CKPT] [--dataset 300w] --root DIR   metrics as JSON on stdout
    pyg-sdfl graph --dataset 300w --root DIR --k 3                  mine, save, draw on the mean face
    pyg-sdfl predict IMAGE [IMAGE...] [--box X0 Y0 X1 Y1] [--out annotated.png] [--json]
    pyg-sdfl export --checkpoint RUN/best.ckpt [--out FILE]         the compact fp16 weights file
    pyg-sdfl fit-box-mapping --root DIR                              Haar box -> landmark square

Errors print one line on stderr and exit with code 2. ``predict`` processes every image even when
some fail (one stderr line and an ``{"image", "error"}`` JSON record each, exit 2 at the end) and
exits with 1 when the only problem is an image without a face.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import List, Optional

from pyg_sdfl.config import KEY_TYPES, compose, validate
from pyg_sdfl.json_files import read_json

__all__ = ["main"]

def _dataset_overrides(args: argparse.Namespace, dataset: Optional[str] = None) -> List[str]:
    overrides = [f"dataset={dataset or args.dataset}"]
    if args.root is not None:
        overrides.append(f"dataset.root={Path(args.root).resolve()}")
    return overrides


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from pyg_sdfl.engine.builders import resolve_device
    from pyg_sdfl.engine.checkpoint import load_model
    from pyg_sdfl.experiment import evaluate_run
    from pyg_sdfl.weights import pretrained_path

    checkpoint = Path(args.checkpoint) if args.checkpoint else pretrained_path("300w")
    loaded = load_model(checkpoint, device=resolve_device(str(args.device)))
    cfg = loaded.config.copy()
    dataset = args.dataset or str(cfg.dataset.name)
    data_cfg = compose(_dataset_overrides(args, dataset)).dataset
    # the model was trained at this crop size and scale: keep them
    data_cfg.image_size = cfg.dataset.image_size
    data_cfg.crop_scale = cfg.dataset.crop_scale
    cfg.dataset = data_cfg
    cfg.device = args.device
    cfg.evaluate.flip_test = bool(args.flip_test)
    out_dir = Path(args.out) if args.out else None
    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)
    result = evaluate_run(cfg, loaded, out_dir=out_dir, splits_to_score=args.split)
    payload = {"checkpoint": str(checkpoint), "kind": loaded.kind, "epoch": loaded.epoch, "dataset": dataset,
               "crop_scale": float(cfg.dataset.crop_scale), "image_size": int(cfg.dataset.image_size),
               "precision": str(cfg.train.precision), "normalisation": str(cfg.evaluate.normalisation),
               "flip_test": bool(args.flip_test), "metrics": result["metrics"]}
    json.dump(payload, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


def _cmd_graph(args: argparse.Namespace) -> int:
    from pyg_sdfl.engine.builders import build_graph, load_splits, normalised_shapes
    from pyg_sdfl.plotting import plot_graph_on_shape

    cfg = compose(_dataset_overrides(args) + [f"graph.k={args.k}", f"graph.mode={args.mode}"])
    validate(cfg)
    splits = load_splits(cfg.dataset, need_test=False)
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


def _cmd_fit_box_mapping(args: argparse.Namespace) -> int:
    from pyg_sdfl.data import load_dataset
    from pyg_sdfl.detection import (HaarFaceDetector, collect_box_pairs, default_box_mapping_path,
                                    fit_box_mapping_on_samples, mapping_errors, summarize_errors)

    detector = HaarFaceDetector(scale_factor=args.scale_factor, min_neighbors=args.min_neighbors,
                                min_size=args.min_size, max_side=args.max_side)
    train = load_dataset("300w", args.root, "train")
    if args.limit:  # an even spread over the parts, for a quick check
        train = train[:: max(1, len(train) // args.limit)][: args.limit]
    parts = sorted({s.subsets[0] for s in train if s.subsets})
    mapping = fit_box_mapping_on_samples(train, detector, data=f"300-W train ({', '.join(parts)}): {len(train)} faces")
    info = mapping.info
    if not args.no_test and (Path(args.root) / "test").is_dir():
        test = load_dataset("300w", args.root, "test")
        boxes, squares, missed = collect_box_pairs(test, detector)
        if len(boxes):
            info["test"] = {"faces_total": len(test), "faces_matched": int(len(boxes)), "faces_unmatched": int(missed),
                            **summarize_errors(mapping_errors(mapping, boxes, squares))}
    out = Path(args.out) if args.out else default_box_mapping_path()
    mapping.save(out)
    print(json.dumps({"out": str(out), **mapping.to_dict()}, indent=2))
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from pyg_sdfl.weights import pretrained_path
    from pyg_sdfl.engine.export import export_pretrained

    metrics = None
    if args.metrics:
        metrics = read_json(args.metrics, "metrics file")
        if isinstance(metrics, dict) and "metrics" in metrics:  # a run's results.json: its summary only
            keep = ("metrics", "best_epoch", "best_val_nme", "dataset", "normalisation", "crop", "meta")
            metrics = {k: metrics[k] for k in keep if k in metrics}
    machine = args.machine
    if machine is None and isinstance(metrics, dict):
        machine = (metrics.get("meta") or {}).get("machine")
    out = Path(args.out) if args.out else pretrained_path("300w")
    box_mapping = args.box_mapping if args.box_mapping else "default"
    written = export_pretrained(args.checkpoint, out, box_mapping=box_mapping, metrics=metrics, command=args.command_line,
                                data=args.data, machine=machine, notes=args.notes)
    print(json.dumps({"out": str(written), "size_mb": round(written.stat().st_size / 2**20, 2)}))
    return 0


def _predict_out_path(out: Path, index: int, count: int) -> Path:
    return out if count == 1 else out.with_name(f"{out.stem}_{index}{out.suffix}")


def _predict_failed(record: dict, message: str) -> None:
    """Mark one image's record as failed and say so on stderr, one line, as it happens."""
    record["error"] = message
    print(f"pyg-sdfl predict: error: {message}", file=sys.stderr, flush=True)


def _write_annotated(path: Path, image, faces) -> None:
    import cv2

    from pyg_sdfl.inference import draw_faces

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        written = cv2.imwrite(str(path), cv2.cvtColor(draw_faces(image, faces), cv2.COLOR_RGB2BGR))
    except (OSError, cv2.error) as exc:
        raise OSError(f"could not write {path}: {exc}") from None
    if not written:
        raise OSError(f"could not write {path}")


def _cmd_predict(args: argparse.Namespace) -> int:
    """Every image is processed, whatever happens to the others. Each image that cannot be read
    (or whose --box does not fit it, or whose annotated copy cannot be written) gets one line on
    stderr and a ``{"image", "error"}`` record in the JSON; the good ones' results are all
    printed. Exit code: 2 if any image failed, else 1 if any image had no face, else 0."""
    import numpy as np

    from pyg_sdfl.data.sample import ImageLoadError
    from pyg_sdfl.inference import Landmarker

    boxes = None
    if args.box:
        boxes = np.asarray(args.box, dtype=np.float64)
        for box in boxes:
            if not np.isfinite(box).all() or box[2] <= box[0] or box[3] <= box[1]:
                raise ValueError(f"--box {' '.join(f'{v:g}' for v in box)}: expected X0 Y0 X1 Y1 with X1 > X0 and Y1 > Y0")
    out = Path(args.out) if args.out else None
    if out is not None and out.suffix.lower() not in (".png", ".jpg", ".jpeg"):
        raise ValueError(f"--out {out}: use a .png (or .jpg) file name")
    results = [{"image": str(image)} for image in args.images]
    landmarker = None  # loaded with the first readable image: no model load when none is
    without = []
    for index, (record, image_path) in enumerate(zip(results, args.images)):
        try:
            image = Landmarker.load_image(image_path)  # ImageLoadError names the file
        except ImageLoadError as exc:
            _predict_failed(record, str(exc))
            continue
        if landmarker is None:  # a model that cannot be loaded is an error of the whole command
            landmarker = (Landmarker.from_checkpoint(args.checkpoint, device=args.device, flip_test=args.flip_test)
                          if args.checkpoint else
                          Landmarker.from_pretrained("300w", device=args.device, flip_test=args.flip_test))
        try:
            faces = landmarker.predict(image, boxes=boxes, box_type=args.box_type)
        except ValueError as exc:  # a --box outside this image
            message = str(exc) if str(image_path) in str(exc) else f"{image_path}: {exc}"
            _predict_failed(record, message)
            continue
        record["faces"] = [f.to_dict() for f in faces]
        if not faces:
            without.append(image_path)
        elif out is not None:
            path = _predict_out_path(out, index, len(args.images))
            try:
                _write_annotated(path, image, faces)
                record["annotated"] = str(path)
            except OSError as exc:
                _predict_failed(record, str(exc))
    if args.json:
        json.dump(results, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        for res in results:
            if "faces" not in res:
                continue
            print(f"{res['image']}: {len(res['faces'])} face(s)" + (f" -> {res['annotated']}" if "annotated" in res else ""))
            for face in res["faces"]:
                print(f"  box {face['box']} score {face['score']}")
    for image_path in without:
        print(f"pyg-sdfl predict: no face found in {image_path} (the Haar frontal-face detector found none; "
              "give the face's box with --box X0 Y0 X1 Y1)", file=sys.stderr)
    if any("error" in r for r in results):
        return 2
    return 1 if without else 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pyg-sdfl", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("train", help="train and evaluate (Hydra; all arguments are Hydra overrides)", add_help=False)

    ev = sub.add_parser("evaluate", help="score a model (the shipped one by default); prints metrics JSON on stdout")
    ev.add_argument("--checkpoint", default=None,
                    help="a training checkpoint (best.ckpt) or an exported weights file (default: the shipped 300-W model)")
    ev.add_argument("--dataset", default=None,
                    help="dataset config name: 300w, wflw, cofw, synthetic (default: the model's training dataset)")
    ev.add_argument("--root", default=None, help="dataset root folder")
    ev.add_argument("--split", nargs="+", default=["test"], choices=KEY_TYPES["evaluate.splits"].choices,
                    help="splits to score (default: test; val is carved from train with the model's split seed, "
                         "train is the rest of the training faces); all on evaluation crops, never augmented")
    ev.add_argument("--out", default=None, help="folder for the CED plot and prediction grid")
    ev.add_argument("--device", default="auto")
    ev.add_argument("--flip-test", action="store_true", help="average each face with its mirror image (2x cost)")

    gr = sub.add_parser("graph", help="mine the landmark graph from a training set, save it and draw it")
    gr.add_argument("--dataset", required=True)
    gr.add_argument("--root", default=None)
    gr.add_argument("--k", type=int, default=3)
    gr.add_argument("--mode", default="separate", choices=["separate", "joint"])
    gr.add_argument("--out", default=None, help="output .pt path (the PNG goes next to it)")

    pr = sub.add_parser("predict", help="landmarks of the faces in photos (the shipped 300-W model by default)")
    pr.add_argument("images", nargs="+", metavar="IMAGE", help="image files (any format OpenCV reads)")
    pr.add_argument("--box", nargs=4, type=float, action="append", metavar=("X0", "Y0", "X1", "Y1"),
                    help="a face box in pixels (repeat for several faces; applies to every IMAGE); without it the "
                         "Haar face detector finds the faces")
    pr.add_argument("--box-type", choices=["landmark", "detector"], default="landmark",
                    help="landmark: --box is tight around the face's landmarks (jaw to brows; default); "
                         "detector: a face-detector box, mapped like a Haar detection")
    pr.add_argument("--out", default=None, help="write an annotated PNG (for several images: OUT_<index>.png)")
    pr.add_argument("--json", action="store_true", help='print [{"image", "faces": [{"box", "score", "landmarks"}]}]; an image that failed is '
                         '{"image", "error"}')
    pr.add_argument("--checkpoint", default=None, help="a training checkpoint (best.ckpt) instead of the shipped model")
    pr.add_argument("--device", default="cpu")
    pr.add_argument("--flip-test", action="store_true",
                    help="average each face with its mirror image (twice the model cost); helps models trained with "
                         "flips, not the shipped one (docs/results.md)")

    exp = sub.add_parser("export", help="write the compact fp16 weights file shipped in pyg_sdfl/weights/")
    exp.add_argument("--checkpoint", required=True, help="training checkpoint (best.ckpt)")
    exp.add_argument("--out", default=None, help="output file (default: the package's pyg_sdfl/weights/sdfl_300w.pt)")
    exp.add_argument("--metrics", default=None,
                     help="JSON file of metrics to record; a run's results.json is reduced to its summary")
    exp.add_argument("--box-mapping", default=None, help="box mapping JSON (default: the package's)")
    exp.add_argument("--command", dest="command_line", default=None, help="the training command, for the record")
    exp.add_argument("--data", default=None, help="the training data, for the record")
    exp.add_argument("--machine", default=None,
                     help="where it was trained, for the record (default: from --metrics' meta, else this machine)")
    exp.add_argument("--notes", default=None)

    fb = sub.add_parser("fit-box-mapping", help="fit the Haar-box -> landmark-square mapping on 300-W training faces")
    fb.add_argument("--root", required=True, help="300-W root (train/<part>/*.pts + images; test/ is scored if present)")
    fb.add_argument("--out", default=None, help="output JSON (default: the package's pyg_sdfl/weights/haar_box_mapping.json)")
    fb.add_argument("--no-test", action="store_true", help="do not score the mapping on root/test")
    fb.add_argument("--limit", type=int, default=None, help="use only this many training faces (a quick check)")
    fb.add_argument("--scale-factor", type=float, default=1.1)
    fb.add_argument("--min-neighbors", type=int, default=5)
    fb.add_argument("--min-size", type=int, default=30)
    fb.add_argument("--max-side", type=int, default=1024)
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
        return {"evaluate": _cmd_evaluate, "graph": _cmd_graph, "fit-box-mapping": _cmd_fit_box_mapping,
                "predict": _cmd_predict, "export": _cmd_export}[args.command](args)
    except (ValueError, KeyError, FileNotFoundError, RuntimeError) as err:
        print(f"pyg-sdfl {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
