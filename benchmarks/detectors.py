"""Face detectors side by side: found rate, false positives and ms per image on 300-W, and on
300-W test faces turned in-plane (+-60 degrees) and partly occluded (0-40%).

    python benchmarks/detectors.py --root ../shared/data/300w --out results/detectors_300w.json \\
        --markdown results/detectors_300w.md --sheet results/detector_unmatched.png

* **found**: the image's annotated face has a matching detection (:func:`pyg_sdfl.geometry.match_detection`:
  the detection's centre inside the face's landmark box and IoU >= ``--min-iou``).
* **unmatched**: every other detection (a false positive, or a real face that 300-W does not
  annotate: the images are crops of 2x the face box, so neighbours' faces show at the edges).
  Each is listed in the JSON and drawn into ``--sheet`` to be looked at.
* **ms/image**: the detector alone on the decoded RGB image, CPU, ``--threads`` torch threads,
  OpenCV 1 thread, mean over all images of the split (one pass; the split's images are the load).
* **rotated + occluded** (``--hard-copies`` per test face, seed ``--seed``): angle uniform in
  [-60, 60] degrees about the face centre (canvas grown, edge pixels repeated), then a noise rectangle
  covering a uniform 0-40% of the landmark box. Found rate, and the end-to-end NME of our shipped
  model with this detector (its fitted mapping, ``--passes`` passes) on the faces found, and on
  the faces every detector of the run found (the same faces for each row), and on all faces with a
  missed face counted as NME = 1 (a failure), so that a detector cannot look good by finding only
  the easy faces.
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Any, Dict, List, Optional

import cv2
import numpy as np
import torch

from _common import append_markdown, metadata, write_json
from pyg_sdfl.data import load_dataset
from pyg_sdfl.data.perturbations import occlude_face, rotate_face
from pyg_sdfl.detection.registry import detector_fitted_with, installed_detectors
from pyg_sdfl.detection.mapping import load_detector_mapping
from pyg_sdfl.geometry import box_iou, landmark_box, match_detection
from pyg_sdfl.inference import Landmarker
from pyg_sdfl.metrics import nme, summarize


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True, help="300-W folder with train/<part> and test/<part>")
    p.add_argument("--detectors", nargs="+", default=None, help="registry names (default: every installed one)")
    p.add_argument("--splits", nargs="+", default=["train", "test"])
    p.add_argument("--max-images", type=int, default=0, help="first N images per split (0: all; quick checks)")
    p.add_argument("--min-iou", type=float, default=0.3)
    p.add_argument("--hard-copies", type=int, default=2, help="rotated + occluded copies per test face (0: skip)")
    p.add_argument("--max-angle", type=float, default=60.0)
    p.add_argument("--max-occlusion", type=float, default=0.4)
    p.add_argument("--passes", type=int, default=2, help="model passes for the end-to-end NME on the hard set")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None)
    p.add_argument("--markdown", default=None)
    p.add_argument("--sheet", default=None, help="PNG contact sheet of the unmatched detections")
    return p.parse_args(argv)


def build(name: str) -> Any:
    """The detector with the settings its shipped mapping was fitted with (else its defaults)."""
    return detector_fitted_with(load_detector_mapping(name), name)


def run_split(detector: Any, samples: List[Any], min_iou: float) -> Dict[str, Any]:
    found, unmatched, seconds = 0, [], 0.0
    for s in samples:
        image = s.load_image()
        t0 = time.perf_counter()
        dets = detector(image)
        seconds += time.perf_counter() - t0
        k = match_detection(landmark_box(s.landmarks), [d.box for d in dets], min_iou)
        found += k is not None
        for j, d in enumerate(dets):
            if j != k:
                iou = float(box_iou(d.box, landmark_box(s.landmarks))[0, 0])
                unmatched.append({"image": str(s.image), "box": d.box.round(1).tolist(), "score": round(d.score, 4),
                                  "iou_with_annotated_face": round(iou, 3)})
    return {"images": len(samples), "found": found, "found_rate": found / max(1, len(samples)),
            "unmatched": len(unmatched), "unmatched_detections": unmatched,
            "ms_per_image": 1000.0 * seconds / max(1, len(samples))}


def hard_set(samples: List[Any], copies: int, max_angle: float, max_occ: float, seed: int) -> List[Dict[str, Any]]:
    rng = np.random.default_rng(seed)
    out = []
    for s in samples:
        base = s.load_image()
        for c in range(copies):
            angle = float(rng.uniform(-max_angle, max_angle))
            occ = float(rng.uniform(0.0, max_occ))
            image, pts = rotate_face(base, s.landmarks, angle)
            image = occlude_face(image, pts, occ, rng)
            out.append({"image": image, "landmarks": pts, "angle": angle, "occlusion": occ, "name": f"{s.name}#{c}"})
    return out


def run_hard(lm: Landmarker, items: List[Dict[str, Any]], min_iou: float, passes: int) -> Dict[str, Any]:
    preds, found_idx, seconds = [], [], 0.0
    for i, it in enumerate(items):
        t0 = time.perf_counter()
        faces = lm.predict(it["image"], passes=passes)
        seconds += time.perf_counter() - t0
        k = match_detection(landmark_box(it["landmarks"]), [f.box for f in faces], min_iou) if faces else None
        if k is not None:
            found_idx.append(i)
            preds.append(faces[k].landmarks)
    target = np.stack([it["landmarks"] for it in items])
    angles = np.array([abs(it["angle"]) for it in items])
    res: Dict[str, Any] = {"items": len(items), "found": len(found_idx), "found_rate": len(found_idx) / len(items),
                           "ms_per_image_end_to_end": 1000.0 * seconds / len(items)}
    errs_all = np.ones(len(items))
    if found_idx:
        idx = np.array(found_idx)
        errs = nme(np.stack(preds), target[idx], "300w", mode="inter_ocular")
        errs_all[idx] = errs
        res["found_faces"] = summarize(errs)["all"]
    found_set = set(found_idx)
    res["nme_per_item"] = [round(float(errs_all[i]), 5) if i in found_set else None for i in range(len(items))]
    res["all_faces_missed_as_failure"] = {"nme_mean": float(errs_all.mean()), "nme_median": float(np.median(errs_all)),
                                          "fr": float((errs_all > 0.1).mean())}
    bins = [(0, 20), (20, 40), (40, 61)]
    res["by_angle"] = []
    for lo, hi in bins:
        sel = (angles >= lo) & (angles < hi)
        f = np.isin(np.flatnonzero(sel), found_idx)
        e = errs_all[sel]
        res["by_angle"].append({"abs_angle": f"{lo}-{min(hi, 60)}", "items": int(sel.sum()), "found": int(f.sum()),
                                "nme_found": float(e[e < 1].mean()) if (e < 1).any() else None})
    return res


def contact_sheet(entries: List[Dict[str, Any]], path: str, cell: int = 160, cols: int = 8) -> None:
    """Each unmatched detection's surroundings (1.5x its box), box drawn, labelled."""
    if not entries:
        return
    tiles = []
    for e in entries:
        img = cv2.imread(e["image"])
        if img is None:
            continue
        x0, y0, x1, y1 = e["box"]
        cx, cy, side = (x0 + x1) / 2, (y0 + y1) / 2, 1.5 * max(x1 - x0, y1 - y0)
        k = cell / side
        M = np.array([[k, 0, cell / 2 - k * cx], [0, k, cell / 2 - k * cy]])
        tile = cv2.warpAffine(img, M, (cell, cell), borderValue=(40, 40, 40))
        p0 = (int(round(cell / 2 - k * (cx - x0))), int(round(cell / 2 - k * (cy - y0))))
        p1 = (int(round(cell / 2 + k * (x1 - cx))), int(round(cell / 2 + k * (y1 - cy))))
        cv2.rectangle(tile, p0, p1, (0, 0, 255), 1)
        label = f"{e['detector']} {e['split']} {e['score']:.2f}"
        cv2.putText(tile, label, (3, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (255, 255, 255), 1, cv2.LINE_AA)
        cv2.putText(tile, str(e["index"]), (3, cell - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 255, 255), 1, cv2.LINE_AA)
        tiles.append(tile)
    rows = [tiles[i:i + cols] for i in range(0, len(tiles), cols)]
    rows[-1] += [np.zeros_like(tiles[0])] * (cols - len(rows[-1]))
    cv2.imwrite(path, np.vstack([np.hstack(r) for r in rows]))
    print(f"wrote {path} ({len(tiles)} detections)")


def markdown(results: Dict[str, Any], splits: List[str]) -> str:
    head = ["detector"] + [f"{s}: found" for s in splits] + [f"{s}: unmatched" for s in splits] + \
        [f"{s}: ms/img" for s in splits] + ["hard: found", "hard: NME found (%)", "hard: FR found (%)",
                                            "hard: NME common faces (%)", "hard: NME all, miss=fail (%)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in results.items():
        cells = [name]
        cells += [f"{r[s]['found']}/{r[s]['images']}" for s in splits]
        cells += [str(r[s]["unmatched"]) for s in splits]
        cells += [f"{r[s]['ms_per_image']:.1f}" for s in splits]
        h = r.get("hard")
        if h:
            ff = h.get("found_faces")
            cf = h.get("common_faces") or {}
            cells += [f"{h['found']}/{h['items']}", f"{100 * ff['nme']:.2f}" if ff else "-",
                      f"{100 * ff['fr']:.2f}" if ff else "-",
                      f"{100 * cf['nme']:.2f} ({cf['items']})" if cf.get("nme") is not None else "-",
                      f"{100 * h['all_faces_missed_as_failure']['nme_mean']:.2f}"]
        else:
            cells += ["-"] * 5
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(1)
    start = time.perf_counter()
    names = args.detectors or installed_detectors()
    data = {s: load_dataset("300w", args.root, s) for s in args.splits}
    if args.max_images:
        data = {s: v[: args.max_images] for s, v in data.items()}
    hard = []
    if args.hard_copies and "test" in data:
        hard = hard_set(data["test"], args.hard_copies, args.max_angle, args.max_occlusion, args.seed)
    results: Dict[str, Any] = {}
    sheet: List[Dict[str, Any]] = []
    for name in names:
        detector = build(name)
        print(f"{name}: {detector!r}", file=sys.stderr)
        results[name] = {"detector": repr(detector)}
        for split, samples in data.items():
            r = run_split(detector, samples, args.min_iou)
            results[name][split] = r
            print(f"  {split}: found {r['found']}/{r['images']}, unmatched {r['unmatched']}, "
                  f"{r['ms_per_image']:.1f} ms/image", file=sys.stderr)
            for e in r["unmatched_detections"]:
                e["index"] = len(sheet)
                sheet.append({**e, "detector": name, "split": split})
        if hard:
            lm = Landmarker.from_pretrained("300w", detector=detector, passes=args.passes)
            results[name]["hard"] = run_hard(lm, hard, args.min_iou, args.passes)
            h = results[name]["hard"]
            print(f"  hard: found {h['found']}/{h['items']}, NME(found) "
                  f"{100 * h.get('found_faces', {}).get('nme', float('nan')):.2f}%", file=sys.stderr)
    if hard:  # the faces every detector found: the same faces for every row
        per = {n: r["hard"]["nme_per_item"] for n, r in results.items() if "hard" in r}
        common = [i for i in range(len(hard)) if all(v[i] is not None for v in per.values())]
        for n, v in per.items():
            e = np.array([v[i] for i in common])
            results[n]["hard"]["common_faces"] = {"items": len(common), "nme": float(e.mean()) if len(e) else None,
                                                  "fr": float((e > 0.1).mean()) if len(e) else None}
    table = markdown(results, list(data))
    header = (f"Detectors on 300-W ({', '.join(f'{s}: {len(v)} images' for s, v in data.items())}); match: centre in "
              f"the landmark box and IoU >= {args.min_iou}; hard = {len(hard)} rotated (|angle| <= {args.max_angle:g}) and "
              f"occluded (<= {100 * args.max_occlusion:.0f}%) copies of the test faces, end-to-end NME of the shipped "
              f"model with {args.passes} passes.\n\n")
    print(header + table)
    append_markdown(args.markdown, header + table)
    if args.sheet:
        contact_sheet(sheet, args.sheet)
    write_json(args.out, {"results": results, "min_iou": args.min_iou, "hard": {
        "copies_per_face": args.hard_copies, "max_angle": args.max_angle, "max_occlusion": args.max_occlusion,
        "seed": args.seed, "passes": args.passes}, "meta": {**metadata(args.threads),
                                                            "wall_time_s": round(time.perf_counter() - start, 1)}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
