"""``pyg-sdfl``: train, evaluate, mine graphs and predict landmarks from the command line.

    pyg-sdfl train [hydra overrides...]            same as python experiments/run.py
    pyg-sdfl evaluate [--checkpoint CKPT] [--dataset 300w] --root DIR   metrics as JSON on stdout
    pyg-sdfl graph --dataset 300w --root DIR --k 3                  mine, save, draw on the mean face
    pyg-sdfl predict IMAGE|FOLDER [...] [--box X0 Y0 X1 Y1] [--out annotated.png] [--json]
                     [--jsonl FILE [--resume]] [--detector NAME] [--passes K] [--workers N]
    pyg-sdfl video IN.mp4 [--out OUT.mp4] [--jsonl FILE] [--detector NAME] [--passes K]
    pyg-sdfl export --checkpoint RUN/best.ckpt [--out FILE]         the compact fp16 weights file
    pyg-sdfl export --checkpoint FILE.pt --storage int8 --out F.pt  int8 weights, half the size again
    pyg-sdfl export --onnx [--checkpoint FILE | --model 300w-fast] [--out FILE.onnx]   an ONNX file with metadata
    pyg-sdfl export --onnx --int8 --calibration-root ../shared/data/300w --model 300w   its static-int8 model
    pyg-sdfl export --onnx --int8 --calibration-images photos/ --model 300w-160    calibrated on your own photos
    pyg-sdfl fit-box-mapping --root DIR [--detector NAME]            detection -> landmark square

Errors print one line on stderr and exit with code 2. ``predict`` processes every image even when
some fail (one stderr line and an ``{"image", "error"}`` JSON record each, exit 2 at the end) and
exits with 1 when the only problem is an image without a face; ``video`` exits with 1 when no
frame had a face. Progress bars are drawn on stderr only when it is a terminal (``--quiet``: never).
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
    from pyg_sdfl.engine.checkpoint import load_model, resolve_backend
    from pyg_sdfl.experiment import evaluate_run
    from pyg_sdfl.weights import pretrained_path

    _use_threads(args)
    checkpoint = Path(args.checkpoint) if args.checkpoint else pretrained_path(_model_name(args))
    device = resolve_device(str(args.device))
    if resolve_backend(checkpoint, args.backend, device) == "onnx" and args.precision == "bf16":
        raise ValueError("--precision bf16 runs on the torch backend; ONNX Runtime runs the model in fp32")
    loaded = load_model(checkpoint, device=device, backend=args.backend)
    cfg = loaded.config.copy()
    dataset = args.dataset or str(cfg.dataset.name)
    data_cfg = compose(_dataset_overrides(args, dataset)).dataset
    # the model was trained at this crop size and scale: keep them
    data_cfg.image_size = cfg.dataset.image_size
    data_cfg.crop_scale = cfg.dataset.crop_scale
    cfg.dataset = data_cfg
    cfg.device = args.device
    cfg.train.precision = "fp32" if loaded.backend == "onnx" else args.precision
    cfg.evaluate.flip_test = bool(args.flip_test)
    out_dir = Path(args.out) if args.out else None
    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)
    result = evaluate_run(cfg, loaded, out_dir=out_dir, splits_to_score=args.split)
    payload = {"checkpoint": str(checkpoint), "kind": loaded.kind, "backend": loaded.backend, "epoch": loaded.epoch,
               "dataset": dataset,
               "crop_scale": float(cfg.dataset.crop_scale), "image_size": int(cfg.dataset.image_size),
               "precision": str(cfg.train.precision), "normalisation": str(cfg.evaluate.normalisation),
               "flip_test": bool(args.flip_test), "metrics": result["metrics"]}
    if "quantization" in loaded.meta:  # an int8 ONNX export: fp32 interface, int8 convolutional part
        payload["quantization"] = loaded.meta["quantization"]
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


def _detector_settings(pairs: Optional[List[str]]) -> dict:
    """``--set KEY=VALUE`` pairs -> detector parameters (values parsed as YAML: 0.5, true, [1, 2])."""
    import yaml

    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--set {pair!r}: expected KEY=VALUE")
        out[key.strip()] = yaml.safe_load(value)
    return out


def _cmd_fit_box_mapping(args: argparse.Namespace) -> int:
    import numpy as np

    from pyg_sdfl.data import load_dataset
    from pyg_sdfl.detection.mapping import (detector_mapping_path, mapping_errors, match_annotated_faces,
                                            summarize_errors)
    from pyg_sdfl.detection.fitting import fit_detector_mapping
    from pyg_sdfl.detection.keypoint_mapping import KeypointMapping, keypoint_errors
    from pyg_sdfl.detection.registry import create_detector
    from pyg_sdfl.geometry import landmark_square
    from pyg_sdfl.schemes import get_scheme

    params = _detector_settings(args.set)
    if args.detector == "haar":  # the Haar flags of earlier versions
        params = {"scale_factor": args.scale_factor, "min_neighbors": args.min_neighbors, "min_size": args.min_size,
                  "max_side": args.max_side, **params}
    detector = create_detector(args.detector, **params)
    train = load_dataset("300w", args.root, "train")
    if args.limit:  # an even spread over the parts, for a quick check
        train = train[:: max(1, len(train) // args.limit)][: args.limit]
    parts = sorted({s.subsets[0] for s in train if s.subsets})
    left, right = get_scheme("300w").inter_ocular
    mapping = fit_detector_mapping(train, detector, (left, right), kind=args.kind,
                                   data=f"300-W train ({', '.join(parts)}): {len(train)} faces")
    info = mapping.info
    if not args.no_test and (Path(args.root) / "test").is_dir():
        test = load_dataset("300w", args.root, "test")
        pairs, missed, _ = match_annotated_faces(test, detector)
        if isinstance(mapping, KeypointMapping):
            with_points = [(d, pts) for d, pts in pairs if d.keypoints is not None]
            if with_points:
                err = keypoint_errors(mapping, np.stack([d.keypoints for d, _ in with_points]),
                                      np.stack([pts for _, pts in with_points]), left, right,
                                      np.stack([d.box for d, _ in with_points]))
                info["test"] = {"faces_total": len(test), "faces_matched": len(with_points),
                                "faces_unmatched": len(test) - len(with_points), **summarize_errors(err),
                                "abs_angle_error_deg_median": float(np.median(np.abs(err["angle"])))}
        elif pairs:
            boxes = np.stack([d.box for d, _ in pairs])
            squares = np.array([landmark_square(pts) for _, pts in pairs])
            info["test"] = {"faces_total": len(test), "faces_matched": len(pairs), "faces_unmatched": int(missed),
                            **summarize_errors(mapping_errors(mapping, boxes, squares))}
    out = Path(args.out) if args.out else detector_mapping_path(args.detector)
    mapping.save(out)
    print(json.dumps({"out": str(out), **mapping.to_dict()}, indent=2))
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from pyg_sdfl.weights import pretrained_path

    if bool(args.checkpoint) == bool(args.model):
        raise ValueError("export: give exactly one of --checkpoint FILE and --model NAME")
    if args.model and not args.onnx:  # the weights-file path writes into pyg_sdfl/weights/ by default: never from itself
        raise ValueError("export: --model NAME is for --onnx; a weights file is made from a training checkpoint or "
                         "an exported weights file (--checkpoint FILE)")
    if not args.int8 and (args.calibration_root or args.calibration_images or args.calibration_faces is not None):
        raise ValueError("export: --calibration-root, --calibration-images and --calibration-faces are for --int8")
    if args.int8 and not args.onnx:
        raise ValueError("export: --int8 quantises an ONNX export; add --onnx (--storage int8 stores a weights "
                         "file's weights in int8)")
    if args.onnx and args.storage != "fp16":
        raise ValueError("export: --storage is for the weights file, not for --onnx (use --int8 there)")
    if args.int8 and bool(args.calibration_root) == bool(args.calibration_images):
        raise ValueError("export: --int8 needs --calibration-root DIR, the dataset whose training faces set the int8 "
                         "ranges (e.g. ../shared/data/300w), or --calibration-images DIR, a folder of photos with "
                         "faces (one of the two)")
    source = Path(args.checkpoint) if args.checkpoint else pretrained_path(args.model)
    if args.onnx:
        from pyg_sdfl.engine.onnx_export import export_onnx
        from pyg_sdfl.engine.onnx_quantize import CALIBRATION_FACES, export_onnx_int8

        default = source.with_suffix("").name + ("_int8.onnx" if args.int8 else ".onnx")
        out = Path(args.out) if args.out else Path(default)
        if args.int8:
            count = CALIBRATION_FACES if args.calibration_faces is None else args.calibration_faces
            if args.calibration_images:
                written = _export_int8_from_images(source, out, args.calibration_images, count, args.opset)
            else:
                written = export_onnx_int8(source, out, args.calibration_root, count, opset=args.opset)
        else:
            written = export_onnx(source, out, opset=args.opset)
        print(json.dumps({"out": str(written), "size_mb": round(written.stat().st_size / 2**20, 2), "opset": args.opset}))
        return 0
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
    if args.out is None and _is_exported_file(source):
        raise ValueError(f"export: {source} is an exported weights file: give --out FILE (the default output is the "
                         "shipped 300w model, pyg_sdfl/weights/sdfl_300w.pt)")
    out = Path(args.out) if args.out else pretrained_path("300w")
    box_mapping = args.box_mapping if args.box_mapping else "default"
    written = export_pretrained(source, out, box_mapping=box_mapping, metrics=metrics, command=args.command_line,
                                data=args.data, machine=machine, notes=args.notes, storage=args.storage)
    print(json.dumps({"out": str(written), "size_mb": round(written.stat().st_size / 2**20, 2)}))
    return 0


def _is_exported_file(path: Path) -> bool:
    from pyg_sdfl.engine.checkpoint import EXPORTED_KIND, load_checkpoint

    return load_checkpoint(path).get("kind") == EXPORTED_KIND


def _export_int8_from_images(source: Path, out: Path, folder: str, count: int, opset: int) -> Path:
    """--int8 --calibration-images: the faces of a folder of photos set the int8 ranges."""
    if source.suffix.lower() == ".onnx":
        raise ValueError(f"export: {source} is already an ONNX model: quantise its torch checkpoint or weights file")
    from pyg_sdfl.calibration_faces import calibration_crops_from_images
    from pyg_sdfl.engine.onnx_quantize import export_onnx_int8_from_crops
    from pyg_sdfl.inference import Landmarker

    landmarker = Landmarker.from_checkpoint(source, precision="fp32", backend="torch")
    print(f"pyg-sdfl export: finding {count} calibration faces under {folder} "
          f"(detector {landmarker.detector_name})", file=sys.stderr)
    crops, record = calibration_crops_from_images(landmarker, folder, count)
    print(f"pyg-sdfl export: {record['faces']} faces from {record['images_visited']} images "
          f"({record['images_without_face']} without a face, {record['unreadable_images']} unreadable)", file=sys.stderr)
    note = {"calibration_split": "images", **record}
    return export_onnx_int8_from_crops(source, out, crops, note, opset)


def _predict_out_path(out: Path, index: int, count: int) -> Path:
    return out if count == 1 else out.with_name(f"{out.stem}_{index}{out.suffix}")


def _detector_choices() -> Optional[List[str]]:
    """The registry's detector names for ``--detector``; ``None`` (any string, checked when the
    model is built) when the registry cannot be imported."""
    try:
        from pyg_sdfl.detection.registry import available_detectors
    except ImportError:
        return None
    return sorted(available_detectors())


def _load_landmarker(args: argparse.Namespace):
    """The Landmarker of ``--checkpoint`` (else the shipped 300-W model) with ``--device``,
    ``--flip-test``, ``--detector`` and ``--passes``."""
    from pyg_sdfl.inference import Landmarker

    _use_threads(args)
    kwargs = {"device": args.device, "flip_test": bool(getattr(args, "flip_test", False)),
              "backend": args.backend, "precision": args.precision}
    if args.detector is not None:
        kwargs["detector"] = args.detector
    if args.passes is not None:
        kwargs["passes"] = args.passes
    name = _model_name(args)
    if args.checkpoint:
        return Landmarker.from_checkpoint(args.checkpoint, **kwargs)
    return Landmarker.from_pretrained(name, **kwargs)


def _use_threads(args: argparse.Namespace) -> None:
    """``--threads N``: torch's threads, and so ONNX Runtime's (its sessions take torch's count), before any
    model is loaded; without it, torch's default (all cores, or ``OMP_NUM_THREADS``)."""
    if getattr(args, "threads", None) is not None:
        import torch

        torch.set_num_threads(int(args.threads))


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {value}")
    return value


def _show_progress(args: argparse.Namespace) -> bool:
    """Progress bars go to stderr only when it is a terminal (never into logs, pipes or captured
    output) and --quiet is not given."""
    return not args.quiet and sys.stderr.isatty()


class _Console:
    """Lines to stdout/stderr that do not tear a tqdm bar (tqdm.write while one is shown)."""

    def __init__(self, bar=None) -> None:
        self.bar = bar

    def out(self, line: str) -> None:
        self._write(line, sys.stdout)

    def err(self, line: str) -> None:
        self._write(line, sys.stderr)

    def _write(self, line: str, stream) -> None:
        if self.bar is not None and not self.bar.disable:
            self.bar.write(line, file=stream)
        else:
            print(line, file=stream, flush=True)


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


_NO_FACE_LINES = 20  # "no face found" lines listed on stderr at most; the records have them all


def _predict_inputs(inputs: List[str]) -> List[dict]:
    """One ``{"image"}`` entry per image to process: files as given (any suffix), the images of
    each folder (recursively, sorted). A folder without images is an ``{"image", "error"}`` entry."""
    from pyg_sdfl.image_folder import find_images

    entries = []
    for item in inputs:
        if Path(item).is_dir():
            try:
                entries.extend({"image": str(p)} for p in find_images(item, recursive=True))
            except ValueError as exc:
                entries.append({"image": str(item), "error": str(exc)})
        else:
            entries.append({"image": str(item)})
    return entries


def _cmd_predict(args: argparse.Namespace) -> int:
    """Every image is processed, whatever happens to the others. Each image that cannot be read
    (or whose --box does not fit it, or whose annotated copy cannot be written) gets one line on
    stderr and a ``{"image", "error"}`` record in the JSON; the good ones' results are all
    printed. Exit code: 2 if any image failed, else 1 if any image had no face, else 0.

    Files are decoded in ``--workers`` processes and ``--batch-images`` images at a time go through
    the model together. ``--jsonl`` writes each record as soon as it is known (flushed);
    ``--resume`` skips the images FILE already has with ``"faces"`` and appends to it."""
    import numpy as np
    from tqdm import tqdm

    from pyg_sdfl.image_folder import JsonlWriter, completed_images, predict_images
    from pyg_sdfl.inference import default_detector_name

    boxes = None
    if args.box:
        boxes = np.asarray(args.box, dtype=np.float64)
        for box in boxes:
            if not np.isfinite(box).all() or box[2] <= box[0] or box[3] <= box[1]:
                raise ValueError(f"--box {' '.join(f'{v:g}' for v in box)}: expected X0 Y0 X1 Y1 with X1 > X0 and Y1 > Y0")
    out = Path(args.out) if args.out else None
    if out is not None and out.suffix.lower() not in (".png", ".jpg", ".jpeg"):
        raise ValueError(f"--out {out}: use a .png (or .jpg) file name")
    if args.workers < 0:
        raise ValueError(f"--workers {args.workers}: expected 0 (decode in this process) or more")
    if args.batch_images < 1:
        raise ValueError(f"--batch-images {args.batch_images}: expected 1 or more")
    if args.resume and not args.jsonl:
        raise ValueError("--resume needs --jsonl FILE (the records of the run to resume)")
    if args.passes is not None and args.passes < 1:
        raise ValueError(f"--passes {args.passes}: expected 1 or more")

    entries = _predict_inputs(args.images)
    done = completed_images(args.jsonl) if args.resume else set()
    todo = [e for e in entries if "error" not in e and e["image"] not in done]
    skipped = sum("error" not in e and e["image"] in done for e in entries)
    has_folder = any(Path(item).is_dir() for item in args.images)
    show_bar = _show_progress(args) and (len(todo) > 1 or has_folder)
    bar = tqdm(total=len(todo), unit="image", desc="predict", file=sys.stderr, leave=False, disable=not show_bar)
    console = _Console(bar)
    if args.resume and skipped:
        console.err(f"pyg-sdfl predict: resuming {args.jsonl}: {skipped} image(s) already done, {len(todo)} to go")
    writer = JsonlWriter(args.jsonl, append=bool(args.resume)) if args.jsonl else None
    # the model is loaded with the first readable image: none at all when no image is readable
    results = predict_images(lambda: _load_landmarker(args), [e["image"] for e in todo], batch_images=args.batch_images,
                             num_workers=args.workers, boxes=boxes, box_type=args.box_type)
    records = []  # kept for --json only
    without: List[str] = []
    failed = with_faces = 0
    try:
        for index, entry in enumerate(entries):
            if "error" not in entry and entry["image"] in done:
                continue
            record = dict(entry)
            if "error" not in record:
                result = next(results)
                if result.error is not None:
                    record["error"] = result.error
                else:
                    record["faces"] = [f.to_dict() for f in result.faces]
                    with_faces += bool(result.faces)
                    if not result.faces:
                        without.append(record["image"])
                    elif out is not None:
                        path = _predict_out_path(out, index, len(entries))
                        try:
                            _write_annotated(path, result.image, result.faces)
                            record["annotated"] = str(path)
                        except OSError as exc:
                            record["error"] = str(exc)
                bar.update(1)
            if "error" in record:  # one line on stderr, as it happens
                failed += 1
                console.err(f"pyg-sdfl predict: error: {record['error']}")
            if writer is not None:
                writer.write(record)
            if args.json:
                records.append(record)
            elif "faces" in record:
                console.out(f"{record['image']}: {len(record['faces'])} face(s)"
                            + (f" -> {record['annotated']}" if "annotated" in record else ""))
                for face in record["faces"]:
                    console.out(f"  box {face['box']} score {face['score']}")
    finally:
        results.close()  # stops the decoding workers, also when the loop ends early
        bar.close()
        if writer is not None:
            writer.close()
    if args.json:
        json.dump(records, sys.stdout, indent=1)
        sys.stdout.write("\n")
    detector = args.detector or default_detector_name()
    for image_path in without[:_NO_FACE_LINES]:
        print(f"pyg-sdfl predict: no face found in {image_path} (the {detector!r} face detector found none; "
              "give the face's box with --box X0 Y0 X1 Y1)", file=sys.stderr)
    if len(without) > _NO_FACE_LINES:
        print(f"pyg-sdfl predict: ... and {len(without) - _NO_FACE_LINES} more image(s) without a face "
              '(their records have "faces": [])', file=sys.stderr)
    if show_bar:  # a terminal: the run's tally after the bar
        print(f"pyg-sdfl predict: {with_faces} image(s) with faces, {len(without)} without, {failed} failed"
              + (f", {skipped} skipped (already in {args.jsonl})" if skipped else ""), file=sys.stderr)
    if failed:
        return 2
    return 1 if without else 0


def _cmd_video(args: argparse.Namespace) -> int:
    """Track the faces of a video; an annotated copy (--out) and/or one JSON line per frame
    (--jsonl); a one-line summary on stdout. Exit code 0, 1 when no frame had a face, 2 for errors."""
    from pyg_sdfl.video import annotate_video

    if args.out is None and args.jsonl is None:
        raise ValueError("give --out OUT.mp4 (an annotated copy) and/or --jsonl FILE (landmarks per frame)")
    if args.passes is not None and args.passes < 1:
        raise ValueError(f"--passes {args.passes}: expected 1 or more")
    stats = annotate_video(lambda: _load_landmarker(args), args.input, out_path=args.out, jsonl_path=args.jsonl,
                           progress=_show_progress(args))
    written = ", ".join(str(p) for p in (stats["out"], stats["jsonl"]) if p)
    runs = stats["detector_runs"]
    print(f"{stats['video']}: {stats['frames']} frames, {stats['faces']} faces "
          f"({stats['frames_with_faces']} frames with a face), {'?' if runs is None else runs} detector runs, "
          f"{stats['fps']} frames/s -> {written}")
    if stats["frames_with_faces"] == 0:
        print(f"pyg-sdfl video: no face found in any frame of {stats['video']}", file=sys.stderr)
        return 1
    return 0


def _model_name(args: argparse.Namespace) -> str:
    """``--model`` (default ``300w``); refused together with ``--checkpoint``, which would win silently."""
    if args.checkpoint and args.model:
        raise ValueError("give --checkpoint FILE or --model NAME, not both")
    return args.model or "300w"


def _pretrained_names() -> List[str]:
    from pyg_sdfl.weights import PRETRAINED

    return sorted(PRETRAINED)


def _runtime_arguments(parser: argparse.ArgumentParser, default_precision: str) -> None:
    """--model, --backend, --precision, --threads: which shipped model, what runs it, in which precision, on how
    many CPU threads."""
    parser.add_argument("--model", default=None, choices=_pretrained_names(),
                        help="the shipped model when no --checkpoint is given: 300w (accurate, 256 px, the default), "
                             "300w-160 (the accurate network at 160 px: 2.5x fewer FLOPs), 300w-fast (small and fast) "
                             "or 300w-fast-160 (the small network at 160 px); see docs/predict.md#speed")
    parser.add_argument("--backend", default=None, choices=["torch", "onnx"],
                        help="torch, or onnx (ONNX Runtime, the [onnx] extra; a torch file is exported in memory "
                             "first); default: onnx for a .onnx --checkpoint, else torch")
    parser.add_argument("--precision", default=default_precision, choices=["auto", "fp32", "bf16"],
                        help=f"torch backend: bf16 autocast, fp32, or auto (bf16 where the CPU/GPU runs it natively); "
                             f"default {default_precision}")
    parser.add_argument("--threads", type=_positive_int, default=None, metavar="N",
                        help="CPU threads of torch and ONNX Runtime (default: all cores, or OMP_NUM_THREADS; "
                             "docs/predict.md#speed)")


def _model_arguments(parser: argparse.ArgumentParser, detectors: Optional[List[str]]) -> None:
    parser.add_argument("--checkpoint", default=None,
                        help="a training checkpoint (best.ckpt), exported weights or an exported .onnx file instead of "
                             "the shipped model")
    _runtime_arguments(parser, "auto")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--detector", default=None, choices=detectors, metavar="NAME",
                        help="the face detector" + (f": {', '.join(detectors)}" if detectors else "")
                             + " (default: the Landmarker's, see docs/predict.md)")
    parser.add_argument("--passes", type=int, default=None, metavar="K",
                        help="model passes per detected face: 1 crops from the detection, each further pass re-crops "
                             "around the previous landmarks (default: the Landmarker's)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pyg-sdfl", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("train", help="train and evaluate (Hydra; all arguments are Hydra overrides)", add_help=False)

    ev = sub.add_parser("evaluate", help="score a model (the shipped one by default); prints metrics JSON on stdout")
    ev.add_argument("--checkpoint", default=None,
                    help="a training checkpoint (best.ckpt), an exported weights file or an exported .onnx file "
                         "(default: the shipped model, --model)")
    _runtime_arguments(ev, "fp32")
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

    detectors = _detector_choices()
    pr = sub.add_parser("predict", help="landmarks of the faces in photos and folders of photos (the shipped 300-W model "
                                        "by default)")
    pr.add_argument("images", nargs="+", metavar="IMAGE",
                    help="image files (any format OpenCV reads) or folders (searched recursively for "
                         ".jpg/.png/.bmp/.tif/.webp/... files, any case)")
    pr.add_argument("--box", nargs=4, type=float, action="append", metavar=("X0", "Y0", "X1", "Y1"),
                    help="a face box in pixels (repeat for several faces; applies to every IMAGE); without it the "
                         "face detector finds the faces")
    pr.add_argument("--box-type", choices=["landmark", "detector"], default="landmark",
                    help="landmark: --box is tight around the face's landmarks (jaw to brows; default); "
                         "detector: a face-detector box, mapped like a detection")
    pr.add_argument("--out", default=None, help="write an annotated PNG (for several images: OUT_<index>.png)")
    pr.add_argument("--json", action="store_true", help='print [{"image", "faces": [{"box", "score", "landmarks"}]}]; an image that failed is '
                         '{"image", "error"}')
    pr.add_argument("--jsonl", default=None, metavar="FILE",
                    help="write one JSON record per image to FILE as it is done (JSON Lines, the records of --json)")
    pr.add_argument("--resume", action="store_true",
                    help="with --jsonl: skip the images FILE already has with faces (failed ones are tried again) and "
                         "append to it")
    _model_arguments(pr, detectors)
    pr.add_argument("--workers", type=int, default=2, metavar="N",
                    help="processes decoding image files (default 2; 0 decodes in the main process)")
    pr.add_argument("--batch-images", type=int, default=8, metavar="N",
                    help="images whose faces go through the model together (default 8)")
    pr.add_argument("--quiet", action="store_true",
                    help="no progress bar (one is shown on stderr when it is a terminal and there are several images "
                         "or a folder)")
    pr.add_argument("--flip-test", action="store_true",
                    help="average each face with its mirror image (twice the model cost); lowers the shipped "
                         "model's test NME from 3.21 to 3.13%% (docs/results.md)")

    vid = sub.add_parser("video", help="track the faces of a video: an annotated copy and/or JSON Lines per frame")
    vid.add_argument("input", metavar="IN", help="a video file (mp4, mov, avi, mkv, webm, ...: what OpenCV's FFmpeg reads)")
    vid.add_argument("--out", default=None, help="the annotated copy: .mp4 (mp4v) or .avi (MJPG)")
    vid.add_argument("--jsonl", default=None, metavar="FILE",
                     help='one JSON line per frame: {"frame", "time_s", "faces": [{"box", "score", "landmarks", ...}]}')
    _model_arguments(vid, detectors)
    vid.add_argument("--quiet", action="store_true", help="no progress bar (one is shown when stderr is a terminal)")

    exp = sub.add_parser("export", help="write the compact fp16 weights file shipped in pyg_sdfl/weights/, or with "
                                        "--onnx an ONNX file")
    exp.add_argument("--checkpoint", default=None,
                     help="training checkpoint (best.ckpt), or an exported weights file (to change its --storage, or "
                          "with --onnx)")
    exp.add_argument("--storage", choices=["fp16", "int8"], default="fp16",  # weight_storage.STORAGES (tested)
                     help="how the weights file stores its tensors: fp16 (default), or int8 weights with one scale per "
                          "output channel (half the size; pyg_sdfl/engine/weight_storage.py)")
    exp.add_argument("--model", default=None, choices=_pretrained_names(),
                     help="with --onnx: export a shipped model instead of --checkpoint")
    exp.add_argument("--onnx", action="store_true",
                     help="write an ONNX file (dynamic batch, the SDFL head on its scatter-free path; scheme, graph, "
                          "crop and provenance in its metadata; checked against torch with ONNX Runtime before it is "
                          "kept); needs the [onnx] extra")
    exp.add_argument("--opset", type=int, default=18, help="with --onnx: the ONNX opset (default 18)")
    exp.add_argument("--int8", action="store_true",
                     help="with --onnx: write the static-int8 model (backbone and map-to-node int8, the graph part fp32; "
                          "ranges calibrated on training faces of the model's dataset under --calibration-root; "
                          "docs/predict.md)")
    exp.add_argument("--calibration-root", default=None,
                     help="with --int8: the dataset root whose training split calibrates the int8 ranges")
    exp.add_argument("--calibration-images", default=None,
                     help="with --int8, instead of --calibration-root: a folder of photos (searched recursively) whose "
                          "faces, found by the default detector and cropped around the fp32 model's landmarks, set the "
                          "int8 ranges: no labelled dataset needed")
    exp.add_argument("--calibration-faces", type=int, default=None,
                     help="with --int8: how many faces calibrate the ranges (default 64)")
    exp.add_argument("--out", default=None,
                     help="output file (default: the package's pyg_sdfl/weights/sdfl_300w.pt; with --onnx: "
                          "<source name>.onnx in the current folder)")
    exp.add_argument("--metrics", default=None,
                     help="JSON file of metrics to record; a run's results.json is reduced to its summary")
    exp.add_argument("--box-mapping", default=None, help="box mapping JSON (default: the package's)")
    exp.add_argument("--command", dest="command_line", default=None, help="the training command, for the record")
    exp.add_argument("--data", default=None, help="the training data, for the record")
    exp.add_argument("--machine", default=None,
                     help="where it was trained, for the record (default: from --metrics' meta, else this machine)")
    exp.add_argument("--notes", default=None)

    fb = sub.add_parser("fit-box-mapping", help="fit a detector's detection -> landmark-square mapping on 300-W training faces")
    fb.add_argument("--root", required=True, help="300-W root (train/<part>/*.pts + images; test/ is scored if present)")
    fb.add_argument("--detector", default="haar",
                    help="the detector (a name of pyg_sdfl/configs/detector/; default haar)")
    fb.add_argument("--kind", choices=["box", "keypoints"], default="box",
                    help="box (default): the first crop from the detector's box; keypoints: from its five points "
                         "(measured worse on turned and occluded faces: pyg_sdfl/detection/fitting.py)")
    fb.add_argument("--set", action="append", metavar="KEY=VALUE", help="a detector setting (repeat), e.g. --set score_threshold=0.6")
    fb.add_argument("--out", default=None,
                    help="output JSON (default: the package's pyg_sdfl/weights/<detector>_box_mapping.json)")
    fb.add_argument("--no-test", action="store_true", help="do not score the mapping on root/test")
    fb.add_argument("--limit", type=int, default=None, help="use only this many training faces (a quick check)")
    fb.add_argument("--scale-factor", type=float, default=1.1, help="haar only")
    fb.add_argument("--min-neighbors", type=int, default=5, help="haar only")
    fb.add_argument("--min-size", type=int, default=30, help="haar only")
    fb.add_argument("--max-side", type=int, default=1024, help="haar only")
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
                "predict": _cmd_predict, "video": _cmd_video, "export": _cmd_export}[args.command](args)
    except (ValueError, KeyError, OSError, RuntimeError, ImportError) as err:  # ImportError: a detector's extra
        print(f"pyg-sdfl {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
