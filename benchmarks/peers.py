"""Peer comparison on a 300-W folder: dlib's 68-point shape predictor and our model, side by side.

    python benchmarks/peers.py --root ../shared/data/300w --split test \\
        --checkpoint outputs/RUN/best.ckpt --out results/peers_300w_lfpw.json

Same faces, same metric code (:func:`pyg_sdfl.metrics.nme` / :func:`~pyg_sdfl.metrics.summarize`:
NME normalised by the inter-ocular distance, outer eye corners 36/45; FR and AUC at 10%).

* Ours (:class:`pyg_sdfl.inference.Landmarker`, the shipped model unless ``--checkpoint``): its
  own protocol, a square crop of ``crop_scale`` (1.2) times the ground-truth landmark box's
  longer side, resized to the model's input size.
* dlib (``pip install ".[peers]"``) gets two boxes, and the better is reported:
  (a) the tight ground-truth landmark box;
  (b) a box in the style of dlib's own frontal face detector, on which the shape predictor was
  trained: a :class:`~pyg_sdfl.detection.BoxStyle` (centre offset and scale relative to the landmark
  box, four scalars) fitted on the ``--fit-split`` faces where the detector finds the face, then
  applied to every evaluated face's landmark box, so every face gets a box even where the
  detector misses it. How many evaluated faces the detector itself finds is reported, with both
  methods' scores on that subset using the detector's actual boxes.
* Ours end to end, as ``pyg-sdfl predict`` runs on a photo, one row per detector (``--detectors``,
  default every installed one, each with its shipped fitted mapping) and number of passes
  (``--passes``: 1 = the detector's crop only, then re-crops from the prediction); no ground truth
  used; the detection that matches the annotated face's landmark box (IoU >= ``--min-iou``) is
  scored, on the faces found. Their ms/image include the detector and every pass.
* dlib end to end: dlib's own detector plus its 68-point predictor, in the same table.
* ``--flip-test``: also our model with test-time flip averaging (twice the model cost).

Timing: CPU, batch 1, ``--threads`` torch threads (OpenCV 1 thread; dlib is single-threaded),
``--repeats`` rounds after one warm-up pass; in each round every method makes one timed pass over
the first ``--timing-faces`` faces (interleaved); median of each method's per-pass ms/face. Every timed pipeline starts from the image file: JPEG decode + box +
pre-processing + prediction + mapping back to image pixels (face detection is not included; it
is timed on its own for reference).
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Any, Callable, Dict, List, Optional

import cv2
import numpy as np
import torch

from _common import append_markdown, describe, load_ours, metadata, predict_in_box, time_methods, write_json
from pyg_sdfl.data import load_dataset
from pyg_sdfl.metrics import nme, summarize
from pyg_sdfl.detection import DlibFaceDetector, fit_box_style, require_dlib
from pyg_sdfl.detection.mapping import load_detector_mapping
from pyg_sdfl.detection.registry import installed_detectors
from pyg_sdfl.inference import Landmarker
from pyg_sdfl.geometry import box_iou, landmark_box, match_detection
from pyg_sdfl.peers import DlibShapePredictor


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True, help="300-W folder with train/<part> and test/<part>")
    p.add_argument("--split", default="test", help="faces to evaluate (default: test)")
    p.add_argument("--fit-split", default="train", help="faces to fit the detector box style on (default: train)")
    p.add_argument("--fit-faces", type=int, default=0, help="use only the first N fit faces (0: all)")
    p.add_argument("--max-faces", type=int, default=0, help="evaluate only the first N faces (0: all; for quick checks)")
    p.add_argument("--checkpoint", default=None,
                   help="our model (best.ckpt or an exported file); default: the shipped 300-W model")
    p.add_argument("--no-ours", action="store_true", help="run dlib only")
    p.add_argument("--flip-test", action="store_true", help="add rows for our model with test-time flip averaging")
    p.add_argument("--detectors", nargs="+", default=None,
                   help="detectors for our end-to-end rows (default: every installed one with a shipped mapping)")
    p.add_argument("--passes", nargs="+", type=int, default=[1, 2, 3], help="model passes of the end-to-end rows")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    p.add_argument("--markdown", default=None, help="also append the Markdown table to this file")
    p.add_argument("--min-iou", type=float, default=0.3, help="IoU for a detection to count as the face")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--timing-faces", type=int, default=20)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threshold", type=float, default=0.1, help="FR / AUC threshold")
    return p.parse_args(argv)


def detect_face(detector: DlibFaceDetector, image: np.ndarray, box: np.ndarray, min_iou: float) -> Optional[np.ndarray]:
    """dlib's box of the annotated face: upsample 0, then once more if the face was missed."""
    for upsample in (0, 1):
        found = detector(image, upsample)
        index = match_detection(box, [d.box for d in found], min_iou)
        if index is not None:
            return found[index].box
    return None


def fit_detector_style(samples, detector, min_iou: float):
    """Landmark-box -> dlib-detector-box style from the faces the detector finds."""
    sources, targets = [], []
    for s in samples:
        box = landmark_box(s.landmarks)
        det = detect_face(detector, s.load_image(), box, min_iou)
        if det is not None:
            sources.append(box)
            targets.append(det)
    if len(sources) < 10:
        raise SystemExit(f"dlib's detector found only {len(sources)} of {len(samples)} fit faces: too few to fit a box style")
    sources, targets = np.array(sources), np.array(targets)
    style = fit_box_style(sources, targets)
    fit_iou = np.array([box_iou(a, b)[0, 0] for a, b in zip(style.detector_boxes(sources), targets)])
    return style, {"faces": len(samples), "detected": len(sources), "median_iou_after_fit": float(np.median(fit_iou))}


def score(pred: np.ndarray, target: np.ndarray, threshold: float) -> Dict[str, Any]:
    errors = nme(pred, target, "300w", mode="inter_ocular")
    stats = summarize(errors, threshold=threshold)["all"]
    stats["mean_offset_px"] = (pred - target).mean(axis=(0, 1)).round(3).tolist()  # systematic shift (x, y)
    return {"summary": stats, "nme_per_face": errors}


def end_to_end(lm: Landmarker, image: np.ndarray, box: np.ndarray, passes: int, min_iou: float) -> Optional[List[np.ndarray]]:
    """Our end-to-end prediction of the annotated face after each of ``passes`` passes, or ``None``
    when the detector misses it: detection, mapping, then re-crops (the Landmarker's public steps)."""
    detections = lm.detect(image)
    k = match_detection(box, [d.box for d in detections], min_iou) if detections else None
    if k is None:
        return None
    first = lm.squares_from_detections([detections[k]])
    return [landmarks[0] for landmarks, _ in lm.iterate_passes([image], [0], first, passes)]


def markdown(rows: List[Dict[str, Any]], threshold: float, decode_ms: float) -> str:
    pct = int(round(100 * threshold))
    lines = [f"| method | box | faces | NME (%) | FR@{pct} (%) | AUC@{pct} | ms/face |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        s = r["summary"]
        ms = f"{r['ms_per_face']:.2f}" if r.get("ms_per_face") is not None else "-"
        lines.append(f"| {r['method']} | {r['box']} | {s['count']} | {100 * s['nme']:.2f} | {100 * s['fr']:.2f} | "
                     f"{s['auc']:.4f} | {ms} |")
    lines.append("")
    lines.append(f"ms/face: CPU, batch 1, from the image file (JPEG decode {decode_ms:.2f} ms included) to landmarks "
                 "in image pixels; face detection included only in the end-to-end rows (detector + passes, dlib end to end).")
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    require_dlib()
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(1)
    start = time.perf_counter()

    faces = load_dataset("300w", args.root, args.split)
    if args.max_faces > 0:
        faces = faces[: args.max_faces]
    target = np.stack([s.landmarks.astype(np.float64) for s in faces])
    gt_boxes = landmark_box(target)
    predictor = DlibShapePredictor()
    detector = DlibFaceDetector()
    ours = None if args.no_ours else load_ours(args.checkpoint)
    ours_flip = load_ours(args.checkpoint, flip_test=True) if ours is not None and args.flip_test else None

    fit_faces = load_dataset("300w", args.root, args.fit_split)
    if args.fit_faces > 0:
        fit_faces = fit_faces[: args.fit_faces]
    print(f"fitting the dlib-detector box style on {len(fit_faces)} {args.fit_split} faces ...", file=sys.stderr)
    style, fit_info = fit_detector_style(fit_faces, detector, args.min_iou)
    styled_boxes = style.detector_boxes(gt_boxes)

    print(f"predicting {len(faces)} {args.split} faces ...", file=sys.stderr)
    preds: Dict[str, List[np.ndarray]] = {"dlib_gt": [], "dlib_style": [], "ours": [], "ours_flip": []}
    det_index, det_pred = [], []
    names = [n for n in (args.detectors or installed_detectors()) if load_detector_mapping(n) is not None]
    e2e = {} if ours is None else {
        n: Landmarker.from_pretrained("300w", device="cpu", detector=n) if not args.checkpoint else
        Landmarker.from_checkpoint(args.checkpoint, device="cpu", detector=n) for n in names}
    e2e_found: Dict[str, List[int]] = {n: [] for n in e2e}
    e2e_pred: Dict[str, List[List[np.ndarray]]] = {n: [] for n in e2e}
    max_passes = max(args.passes)
    for i, s in enumerate(faces):
        image = s.load_image()
        preds["dlib_gt"].append(predictor(image, gt_boxes[i]))
        preds["dlib_style"].append(predictor(image, styled_boxes[i]))
        if ours is not None:
            preds["ours"].append(predict_in_box(ours, image, gt_boxes[i]))
        for n, lm in e2e.items():  # detector + mapping + re-crops: no ground truth used
            got = end_to_end(lm, image, gt_boxes[i], max_passes, args.min_iou)
            if got is not None:
                e2e_found[n].append(i)
                e2e_pred[n].append(got)
        if ours_flip is not None:
            preds["ours_flip"].append(predict_in_box(ours_flip, image, gt_boxes[i]))
        det = detect_face(detector, image, gt_boxes[i], args.min_iou)
        if det is not None:
            det_index.append(i)
            det_pred.append(predictor(image, det))

    # timing: same faces, same start (the image file), batch 1
    timed = faces[: args.timing_faces]
    runs: Dict[str, Callable[[Any], Any]] = {
        "decode": lambda s: s.load_image(),
        "dlib_gt": lambda s: predictor(s.load_image(), landmark_box(s.landmarks)),
        "dlib_style": lambda s: predictor(s.load_image(), style.detector_boxes(landmark_box(s.landmarks))[0]),
        "dlib_detector_only": lambda s: detector(s.load_image(), 0),
        "dlib_end_to_end": lambda s: [predictor(im, d.box) for im in [s.load_image()] for d in detector(im, 0)],
    }
    for n, lm in e2e.items():
        runs[f"{n}_detector_only"] = (lambda l: lambda s: l.detect(s.load_image()))(lm)
        for k in args.passes:
            runs[f"ours_{n}_p{k}"] = (lambda l, k: lambda s: l.predict(s.load_image(), passes=k))(lm, k)
    if ours is not None:
        runs["ours"] = lambda s: predict_in_box(ours, s.load_image(), landmark_box(s.landmarks))
    if ours_flip is not None:
        runs["ours_flip"] = lambda s: predict_in_box(ours_flip, s.load_image(), landmark_box(s.landmarks))
    timing = time_methods(runs, timed, repeats=args.repeats)

    rows: List[Dict[str, Any]] = []
    protocol = f"{ours.crop_scale:g}x landmark box, {ours.image_size}px" if ours is not None else ""
    if ours is not None:
        rows.append({"method": "pyg_sdfl (ours)", "box": f"own crop: {protocol}", "key": "ours",
                     **score(np.stack(preds["ours"]), target, args.threshold), "ms_per_face": timing["ours"]["median_ms"]})
    if ours_flip is not None:
        rows.append({"method": "pyg_sdfl (ours) + flip test", "box": f"own crop: {protocol}", "key": "ours_flip",
                     **score(np.stack(preds["ours_flip"]), target, args.threshold),
                     "ms_per_face": timing["ours_flip"]["median_ms"]})
    for n in e2e:
        if not e2e_found[n]:
            continue
        idx = np.array(e2e_found[n])
        kind = getattr(e2e[n].box_mapping, "kind", "box")
        for k in args.passes:
            rows.append({"method": "pyg_sdfl (ours)", "box": f"{n} detector + {kind} mapping, {k} pass{'es' if k > 1 else ''}",
                         "key": f"ours_{n}_p{k}", "detector": n, "passes": k,
                         **score(np.stack([p[k - 1] for p in e2e_pred[n]]), target[idx], args.threshold),
                         "ms_per_face": timing[f"ours_{n}_p{k}"]["median_ms"]})
    rows.append({"method": "dlib 68", "box": "ground-truth landmark box", "key": "dlib_gt",
                 **score(np.stack(preds["dlib_gt"]), target, args.threshold), "ms_per_face": timing["dlib_gt"]["median_ms"]})
    rows.append({"method": "dlib 68", "box": "dlib-detector-style box (fitted)", "key": "dlib_style",
                 **score(np.stack(preds["dlib_style"]), target, args.threshold),
                 "ms_per_face": timing["dlib_style"]["median_ms"]})
    if det_index:
        idx = np.array(det_index)
        rows.append({"method": "dlib 68", "box": "dlib detector's own box (found faces only): dlib end to end",
                     "key": "dlib_detector", **score(np.stack(det_pred), target[idx], args.threshold),
                     "ms_per_face": timing["dlib_end_to_end"]["median_ms"]})
        if ours is not None and len(det_index) < len(faces):
            rows.append({"method": "pyg_sdfl (ours)", "box": "own crop, same found faces", "key": "ours_found",
                         **score(np.stack(preds["ours"])[idx], target[idx], args.threshold), "ms_per_face": None})
    dlib_rows = [r for r in rows if r["key"] in ("dlib_gt", "dlib_style")]
    best = min(dlib_rows, key=lambda r: r["summary"]["nme"])

    table = markdown(rows, args.threshold, timing["decode"]["median_ms"])
    header = (f"Peer comparison: 300-W {args.split} ({len(faces)} faces, {args.root}); NME normalised by the "
              f"inter-ocular distance (outer eye corners 36/45); FR/AUC at {args.threshold:g}. dlib's better box: "
              f"{best['box']}. dlib detector found {len(det_index)}/{len(faces)} faces"
              + "".join(f", {n} {len(e2e_found[n])}/{len(faces)}" for n in e2e) + ".\n\n")
    print(header + table)
    append_markdown(args.markdown, header + table)

    payload = {
        "dataset": "300w", "split": args.split, "root": args.root, "faces": len(faces),
        "normalisation": "inter_ocular (outer eye corners 36, 45)", "threshold": args.threshold,
        "rows": [{k: v for k, v in r.items()} for r in rows],
        "dlib_best": {"box": best["box"], "key": best["key"], **best["summary"]},
        "box_style": {**style.to_dict(), "fit_split": args.fit_split, **fit_info, "min_iou": args.min_iou,
                      "formula": "c' = c + (dx w, dy h), w' = sx w, h' = sy h (c, w, h of the tight landmark box)"},
        "detector_on_eval": {"found": len(det_index), "of": len(faces), "upsample": "0, then 1 if missed",
                             "min_iou": args.min_iou},
        "detectors_on_eval": {n: {"found": len(e2e_found[n]), "of": len(faces), "min_iou": args.min_iou,
                                  "mapping": getattr(e2e[n].box_mapping, "kind", "box"),
                                  "missed": [faces[i].name for i in sorted(set(range(len(faces))) - set(e2e_found[n]))]}
                              for n in e2e},
        "timing": {**timing, "protocol": (
            f"CPU, batch 1, torch threads {args.threads}, OpenCV 1 thread, dlib single-threaded; "
            f"{args.repeats} interleaved rounds of one timed pass per method over {len(timed)} faces after 1 warm-up "
            "pass, median ms/face; "
            "from the image file: decode + box + pre-processing + prediction + mapping to image pixels; "
            "no face detection in the rows with a given box; the end-to-end rows (ours_<detector>_p<passes>, "
            "dlib_end_to_end) include it; <detector>_detector_only times it alone, per image")},
        "ours": describe(ours) if ours is not None else None,
        "dlib": {"model": predictor.model_path.name, "version": getattr(require_dlib(), "__version__", "unknown"),
                 "note": "dlib returns integer pixel positions"},
        "meta": {**metadata(args.threads), "wall_time_s": round(time.perf_counter() - start, 1)},
    }
    write_json(args.out, payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
