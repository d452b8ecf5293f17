"""Where the 300-W annotations sit against the mirror-symmetric image content, without a model.

    python benchmarks/annotation_offset.py --root ../shared/data/300w \\
        --out results/annotation_offset.json --plot results/annotation_offset.png

For each landmark ``i`` the mean grey patch around its label (over all faces of a part) is compared
with the mirrored mean patch around its partner ``perm[i]`` (:mod:`pyg_sdfl.studies.mirror_offset`):
labels that sit ``b`` px right of the feature they mark show up as a horizontal shift ``-2 b``
between the two. Reported, each in image pixels:

* ``b`` per part of the data (train lfpw / helen / afw, test lfpw) and for the whole training split
  (the value of ``dataset.annotation_offset_x``);
* the method's controls: the vertical shift (mirroring cannot cause one), and the training split
  with its labels moved by known amounts (the estimate must move with them);
* ``b`` by face size: the shared copy downscaled large faces to a 448 px square (2x the landmark
  box), so faces with a landmark box near 224 px were shrunk and the rest were not;
* the same comparison on the training pipeline's crops (crop pixels), with the mirror convention
  of before (``annotation_offset_x = 0``) and the configured one: what
  ``tests/data/test_mirror_convention.py`` checks.
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Any, Dict, List, Optional

import cv2
import numpy as np

from _common import metadata, write_json
from pyg_sdfl.config import compose
from pyg_sdfl.data.dataset import LandmarkDataset
from pyg_sdfl.data.readers import read_300w
from pyg_sdfl.schemes import get_scheme
from pyg_sdfl.studies.mirror_offset import annotation_offset, crop_mirror_offset

PARTS = ("train/lfpw", "train/helen", "train/afw", "test/lfpw")
REGIONS = {"jaw": range(0, 17), "brows": range(17, 27), "nose": range(27, 36), "eyes": range(36, 48), "mouth": range(48, 68)}


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True, help="300-W root (train/<part>, test/<part>)")
    p.add_argument("--radius", type=int, default=12, help="patch radius in image pixels")
    p.add_argument("--crop-faces", type=int, default=600, help="training faces in the crop-pipeline check")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    p.add_argument("--plot", default=None, help="write the per-landmark figure here (PNG)")
    return p.parse_args(argv)


def measure(samples, perm, radius: int, move_x: float = 0.0) -> Dict[str, Any]:
    images = (cv2.cvtColor(cv2.imread(str(s.image)), cv2.COLOR_BGR2GRAY) for s in samples)
    labels = (np.asarray(s.landmarks, dtype=np.float64) + [move_x, 0.0] for s in samples)
    return annotation_offset(images, labels, perm, radius).to_dict()


def box_side(sample) -> float:
    pts = np.asarray(sample.landmarks)
    return float((pts.max(axis=0) - pts.min(axis=0)).max())


def plot(result: Dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(13, 4), gridspec_kw={"width_ratios": [3, 1.2]})
    per_point = -np.asarray(result["train"]["per_point_shift_px"]) / 2.0
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for c, (name, idx) in zip(colours, REGIONS.items()):
        idx = list(idx)
        ax.bar(idx, per_point[idx], color=c, label=name)
    ax.axhline(result["train"]["offset_px"], color="k", lw=1, ls="--", label=f"median {result['train']['offset_px']:.2f} px")
    ax.axhline(0, color="grey", lw=0.5)
    ax.set_xlabel("landmark (iBUG 68)")
    ax.set_ylabel("label - content, x (image px)")
    ax.set_title(f"300-W train ({result['train']['faces']} faces): each label vs its mirrored partner")
    ax.legend(ncol=3, fontsize=8)
    names = list(PARTS) + ["train, labels -b", "train, labels +0.5"]
    values = [result["parts"][p]["offset_px"] for p in PARTS] + [result["controls"]["moved_minus_b"]["offset_px"],
                                                                   result["controls"]["moved_plus_half"]["offset_px"]]
    bx.barh(range(len(names)), values, color=["C0"] * len(PARTS) + ["C7", "C7"])
    bx.set_yticks(range(len(names)), names, fontsize=8)
    bx.invert_yaxis()
    bx.axvline(0, color="grey", lw=0.5)
    bx.set_xlabel("b (image px)")
    bx.set_title("by part, and two controls")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    t0 = time.perf_counter()
    scheme = get_scheme("300w")
    perm = scheme.flip_permutation
    train = read_300w(args.root, folders=["train"])
    result: Dict[str, Any] = {"train": measure(train, perm, args.radius), "parts": {}}
    b = result["train"]["offset_px"]
    print(f"train ({len(train)} faces): b = {b:+.3f} px (vertical control {result['train']['vertical_control_px']:+.3f})", flush=True)
    for part in PARTS:
        result["parts"][part] = measure(read_300w(args.root, folders=[part]), perm, args.radius)
        print(f"  {part}: b = {result['parts'][part]['offset_px']:+.3f} px", flush=True)
    result["controls"] = {"moved_minus_b": measure(train, perm, args.radius, -b),
                          "moved_plus_half": measure(train, perm, args.radius, 0.5)}
    print(f"  controls: labels moved by {-b:+.2f} px -> {result['controls']['moved_minus_b']['offset_px']:+.3f}; "
          f"by +0.5 px -> {result['controls']['moved_plus_half']['offset_px']:+.3f} (expected {b + 0.5:+.3f})", flush=True)
    sides = np.array([box_side(s) for s in train])
    shrunk = sides >= 215  # the copy's faces downscaled to a 448 px square (2x a ~224 px landmark box)
    result["by_face_size"] = {
        "landmark_box_ge_215px_downscaled": measure([s for s, m in zip(train, shrunk) if m], perm, args.radius),
        "landmark_box_lt_215px_native": measure([s for s, m in zip(train, shrunk) if not m], perm, args.radius),
    }
    print("  by size: downscaled {:+.3f}, native {:+.3f}".format(
        result["by_face_size"]["landmark_box_ge_215px_downscaled"]["offset_px"],
        result["by_face_size"]["landmark_box_lt_215px_native"]["offset_px"]), flush=True)

    configured = float(compose(["dataset=300w"]).dataset.annotation_offset_x)
    crops = {}
    for size in (128, 160):
        for name, offset in (("before (offset 0)", 0.0), (f"configured ({configured})", configured)):
            ds = LandmarkDataset(train[: args.crop_faces], scheme, image_size=size, crop_scale=1.2, annotation_offset_x=offset)
            r = crop_mirror_offset(ds, range(len(ds)))
            crops[f"{size}px, {name}"] = {"offset_crop_px": round(r.offset, 4), "vertical_control_crop_px": round(r.vertical_control, 4),
                                           "faces": r.faces}
            print(f"  crops {size}px {name}: mirrored labels vs mirrored pixels {r.offset:+.3f} crop px", flush=True)
    result["crop_pipeline"] = crops
    result["configured_annotation_offset_x"] = configured
    result["wall_time_s"] = round(time.perf_counter() - t0, 1)
    result["meta"] = metadata(1)
    if args.plot:
        plot(result, args.plot)
    write_json(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
