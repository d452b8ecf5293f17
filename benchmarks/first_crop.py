"""Where the first crop should come from: the detector's box or its five keypoints, pass by pass.

    python benchmarks/first_crop.py --root ../shared/data/300w --out results/first_crop.json

For each keypoint detector (default: yuface, mtcnn) both mappings are fitted on the 300-W training
faces (``pyg_sdfl.detection.fitting.fit_detector_mapping`` with ``kind="keypoints"``, which fits the
box mapping on the same pairs as its fallback), then the shipped model predicts the matched face of each test image from
each first crop and re-crops ``--passes - 1`` times (the Landmarker's public steps). NME
(inter-ocular), FR@10 per pass, on test/lfpw and on ``--hard-copies`` turned (<= 60 degrees) and
0-40% occluded copies of the first ``--hard-faces`` test faces (seed 0, as in
``benchmarks/detectors.py``). Same detections for both mappings, so the rows differ only in the
first crop.
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
from detectors import build, hard_set
from pyg_sdfl.data import load_dataset
from pyg_sdfl.detection.fitting import fit_detector_mapping
from pyg_sdfl.detection.mapping import BoxMapping
from pyg_sdfl.geometry import landmark_box, line_angle, match_detection
from pyg_sdfl.inference import Landmarker
from pyg_sdfl.metrics import nme


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True)
    p.add_argument("--detectors", nargs="+", default=["yuface", "mtcnn"])
    p.add_argument("--passes", type=int, default=3)
    p.add_argument("--hard-faces", type=int, default=80)
    p.add_argument("--hard-copies", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None)
    p.add_argument("--markdown", default=None)
    return p.parse_args(argv)


def per_pass(lm: Landmarker, items: List[Dict[str, Any]], detections: List[Any], passes: int) -> Dict[str, Any]:
    errs, roll_err = [], []
    for it, d in zip(items, detections):
        if d is None:
            continue
        sq = lm.squares_from_detections([d])
        truth = it["landmarks"]
        roll_err.append(abs((sq[0, 3] - line_angle(truth[36], truth[45]) + 180) % 360 - 180))
        errs.append([float(nme(pred, truth[None], "300w")[0])
                     for pred, _ in lm.iterate_passes([it["image"]], [0], sq, passes)])
    e = np.array(errs)
    return {"faces": len(e), "nme_per_pass": e.mean(axis=0).tolist(), "fr_per_pass": (e > 0.1).mean(axis=0).tolist(),
            "first_crop_abs_roll_error_deg": {"median": float(np.median(roll_err)),
                                              "p90": float(np.percentile(roll_err, 90))}}


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(1)
    start = time.perf_counter()
    train = load_dataset("300w", args.root, "train")
    test = load_dataset("300w", args.root, "test")
    sets = {"test/lfpw": [{"image": s.load_image(), "landmarks": s.landmarks.astype(np.float64)} for s in test],
            "turned + occluded": hard_set(test[: args.hard_faces], args.hard_copies, 60.0, 0.4, 0)}
    results: Dict[str, Any] = {}
    lines = ["| detector | first crop | set | faces | " + " | ".join(f"NME p{k + 1} (%)" for k in range(args.passes))
             + " | FR last (%) | first-crop roll error, median / p90 (deg) |",
             "|---|---|---|---:|" + "---:|" * args.passes + "---:|---:|"]
    for name in args.detectors:
        detector = build(name)
        keypoints = fit_detector_mapping(train, detector, (36, 45), kind="keypoints", progress=False)
        mappings = {"box": BoxMapping.from_dict(keypoints.box), "keypoints": keypoints}  # one fit, the same pairs
        for set_name, items in sets.items():
            found = []
            for it in items:
                dets = detector(it["image"])
                k = match_detection(landmark_box(it["landmarks"]), [d.box for d in dets], 0.3) if dets else None
                found.append(None if k is None else dets[k])
            for kind, mapping in mappings.items():
                lm = Landmarker.from_pretrained("300w", detector=detector, box_mapping=mapping)
                r = per_pass(lm, items, found, args.passes)
                results[f"{name}/{kind}/{set_name}"] = r
                print(f"{name} {kind} {set_name}: {r}", file=sys.stderr)
                re = r["first_crop_abs_roll_error_deg"]
                lines.append(f"| {name} | {kind} | {set_name} | {r['faces']} | "
                             + " | ".join(f"{100 * v:.3f}" for v in r["nme_per_pass"])
                             + f" | {100 * r['fr_per_pass'][-1]:.2f} | {re['median']:.1f} / {re['p90']:.1f} |")
    table = "\n".join(lines) + "\n"
    print(table)
    append_markdown(args.markdown, table)
    write_json(args.out, {"results": results, "settings": vars(args),
                          "meta": {**metadata(args.threads), "wall_time_s": round(time.perf_counter() - start, 1)}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
