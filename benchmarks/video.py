"""Tracking against per-frame detection on videos whose every frame has known landmarks.

    python benchmarks/video.py --root ../shared/data/300w --out results/video_tracking.json

Each video moves one real 300-W test face along a known smooth path (``--frames`` frames of
``--size``: the face travels, turns by up to ``--max-angle`` degrees and scales between 0.7x and
1.2x; :func:`pyg_sdfl.data.perturbations.moving_face_frames`), so the true landmarks of every frame
are the annotation carried through the same map. On each video:

* **per-frame detection**: ``Landmarker.predict(frame)`` on every frame (detector + ``passes``);
* **tracking**: ``Landmarker.track(frames)`` (detector on the first frame and when lost, else one
  pass from the previous landmarks).

Both are scored per frame with the NME (inter-ocular) of the detection matching the face; a frame
where a method returns no matching face counts as a miss (reported) and is left out of its NME.
Timing: CPU, ``--threads`` torch threads, OpenCV 1 thread, wall time per frame over the whole video
(frames already decoded, so the same for both), the two methods run one after the other on
each video.
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
from pyg_sdfl.data.perturbations import moving_face_frames
from pyg_sdfl.geometry import landmark_box, match_detection
from pyg_sdfl.inference import Landmarker, default_detector_name
from pyg_sdfl.metrics import nme


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True, help="300-W folder (test/lfpw faces are used)")
    p.add_argument("--faces", type=int, nargs="+", default=[0, 50, 100], help="indices of the test faces, one video each")
    p.add_argument("--frames", type=int, default=90)
    p.add_argument("--size", type=int, nargs=2, default=[640, 480], metavar=("W", "H"))
    p.add_argument("--max-angle", type=float, default=25.0)
    p.add_argument("--detector", default=None, help="default: the Landmarker's (yuface where installed)")
    p.add_argument("--passes", type=int, default=2)
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--write-video", default=None, help="also write the first video, tracked and drawn, to this .mp4")
    p.add_argument("--out", default=None)
    p.add_argument("--markdown", default=None)
    return p.parse_args(argv)


def score(results: List[List[Any]], truth: List[np.ndarray]) -> Dict[str, Any]:
    preds, gts, missed = [], [], 0
    for faces, gt in zip(results, truth):
        k = match_detection(landmark_box(gt), [f.box for f in faces]) if faces else None
        if k is None:
            missed += 1
            continue
        preds.append(faces[k].landmarks)
        gts.append(gt)
    errs = nme(np.stack(preds), np.stack(gts), "300w", mode="inter_ocular") if preds else np.zeros(0)
    return {"frames": len(truth), "missed": missed, "nme": float(errs.mean()) if len(errs) else None,
            "nme_per_frame": errs.round(5).tolist()}


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(1)
    start = time.perf_counter()
    test = load_dataset("300w", args.root, "test")
    args.detector = args.detector or default_detector_name()
    kw = dict(device="cpu", detector=args.detector, passes=args.passes)
    lm = Landmarker.from_checkpoint(args.checkpoint, **kw) if args.checkpoint else Landmarker.from_pretrained("300w", **kw)
    videos = []
    for index in args.faces:
        sample = test[index]
        made = list(moving_face_frames(sample.load_image(), sample.landmarks.astype(np.float64), args.frames,
                                       tuple(args.size), max_angle=args.max_angle))
        frames, truth = [f for f, _ in made], [t for _, t in made]
        t0 = time.perf_counter()
        per_frame = [lm.predict(f) for f in frames]
        t_detect = time.perf_counter() - t0
        t0 = time.perf_counter()
        tracked = list(lm.track(frames))
        t_track = time.perf_counter() - t0
        stats = dict(lm.last_track_stats)
        a, b = score(per_frame, truth), score(tracked, truth)
        video = {"face": sample.name, "frames": len(frames), "per_frame_detection": {**a, "ms_per_frame": 1000 * t_detect / len(frames)},
                 "tracking": {**b, "ms_per_frame": 1000 * t_track / len(frames), "stats": stats}}
        videos.append(video)
        print(f"{sample.name}: detection NME {100 * (a['nme'] or float('nan')):.3f}% ({a['missed']} missed, "
              f"{video['per_frame_detection']['ms_per_frame']:.1f} ms/frame); tracking NME "
              f"{100 * (b['nme'] or float('nan')):.3f}% ({b['missed']} missed, {video['tracking']['ms_per_frame']:.1f} "
              f"ms/frame, detector runs {stats.get('detector_runs')})", file=sys.stderr)
        if args.write_video and index == args.faces[0]:
            from pyg_sdfl.inference import draw_faces

            writer = cv2.VideoWriter(args.write_video, cv2.VideoWriter_fourcc(*"mp4v"), 30.0, tuple(args.size))
            for f, faces in zip(frames, tracked):
                writer.write(cv2.cvtColor(draw_faces(f, faces), cv2.COLOR_RGB2BGR))
            writer.release()
    def mean(key: str, field: str) -> float:
        vals = [v[key][field] for v in videos if v[key][field] is not None]
        return float(np.mean(vals)) if vals else float("nan")
    summary = {m: {"nme": mean(m, "nme"), "ms_per_frame": mean(m, "ms_per_frame"),
                   "missed": int(sum(v[m]["missed"] for v in videos))} for m in ("per_frame_detection", "tracking")}
    summary["nme_difference_pp"] = 100 * (summary["tracking"]["nme"] - summary["per_frame_detection"]["nme"])
    summary["speedup"] = summary["per_frame_detection"]["ms_per_frame"] / summary["tracking"]["ms_per_frame"]
    table = ("| method | videos x frames | missed | NME (%) | ms/frame |\n|---|---:|---:|---:|---:|\n"
             + "".join(f"| {m.replace('_', ' ')} | {len(videos)} x {args.frames} | {summary[m]['missed']} | "
                       f"{100 * summary[m]['nme']:.3f} | {summary[m]['ms_per_frame']:.1f} |\n"
                       for m in ("per_frame_detection", "tracking"))
             + f"\nTracking - detection: {summary['nme_difference_pp']:+.3f} pp NME; tracking is "
               f"{summary['speedup']:.2f}x faster per frame. Detector {args.detector}, {args.passes} passes, "
               f"{args.size[0]}x{args.size[1]} frames.\n")
    print(table)
    append_markdown(args.markdown, table)
    write_json(args.out, {"summary": summary, "videos": videos, "settings": vars(args),
                          "meta": {**metadata(args.threads), "wall_time_s": round(time.perf_counter() - start, 1)}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
