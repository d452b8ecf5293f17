"""Inference speed on CPU: ms per face at batch 1, faces/s at batch 32, cost of every stage.

    python benchmarks/speed.py --root ../shared/data/300w --out results/speed_cpu.json   # shipped model
    python benchmarks/speed.py --checkpoint outputs/RUN/best.ckpt                          # a run, synthetic faces

The model runs as :class:`pyg_sdfl.inference.Landmarker` runs it (its crop, its weights loading).
Stages of one prediction, each timed on its own (``time.perf_counter`` around it, inside
``torch.inference_mode``):

* pre-processing: ``decode`` (JPEG -> RGB, OpenCV), ``crop`` (the crop square from the box and
  one ``cv2.warpAffine`` to the model's input size), ``normalise`` (ImageNet normalisation,
  HWC -> CHW, stacking the batch);
* ``backbone``: the CNN to its stride-32 map;
* head, split along its submodules when it is a graph head (:class:`pyg_sdfl.nn.GraphHead`):
  ``map_to_node`` (two conv-BN-ReLU blocks, reshape to nodes), for an SDFL head
  ``edge_weighting`` (global average pool + 2 FC -> one logit per edge), ``graph_layers`` (the
  batched edge index, for SDFL the attention ``alpha`` (one softmax), and the head's
  :class:`~pyg_sdfl.nn.GraphStack`); other heads are timed as one ``head`` stage;
* post-processing: ``to_pixels`` (normalised -> crop pixels -> image pixels through the inverse
  crop affine).

The staged pipeline's output is checked against the model's own ``forward`` (same numbers), and
the unsplit pipeline is timed too (``end_to_end``), so the stage sum can be compared with it.
Protocol: ``--threads`` torch threads (default 2), OpenCV 1 thread; ``--warmup`` untimed passes,
then ``--repeats`` timed passes; batch 1 runs one face after another over ``--faces`` faces
(ms per face = pass time / faces), batch 32 runs one batch per pass; medians over passes.
FLOPs of the backbone and the head (one face) are reported next to the times.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import cv2
import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from _common import append_markdown, describe, load_ours, metadata, write_json
from pyg_sdfl.data.sample import FaceSample
from pyg_sdfl.data.transforms import normalise_image
from pyg_sdfl.geometry import crop_matrix, crop_square, crop_to_image, landmark_box
from pyg_sdfl.inference import Landmarker, warp_crop
from pyg_sdfl.nn.flops import head_flops
from pyg_sdfl.nn.heads import GraphHead, SDFLHead
from pyg_sdfl.nn.model import normalised_to_pixels

PRE = ("decode", "crop", "normalise")
POST = ("to_pixels",)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=None,
                   help="our model (best.ckpt or an exported file); default: the shipped 300-W model")
    p.add_argument("--root", default=None, help="300-W folder (test faces); default: synthetic faces written as JPEG")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    p.add_argument("--markdown", default=None, help="also append the Markdown table to this file")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--faces", type=int, default=32, help="faces per batch-1 pass (and the batch-32 batch)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--warmup", type=int, default=2)
    return p.parse_args(argv)


def benchmark_faces(root: Optional[str], count: int, workdir: Path) -> tuple:
    """``(samples with image files, description)``: 300-W test faces, or synthetic faces saved as JPEG."""
    if root:
        from pyg_sdfl.data import load_dataset

        samples = load_dataset("300w", root, "test")[:count]
        return samples, f"first {len(samples)} 300-W test faces under {root}"
    from pyg_sdfl.data.synthetic import SyntheticFaces

    samples = []
    for i, s in enumerate(SyntheticFaces(count, seed=7, image_size=256)):
        path = workdir / f"face_{i:03d}.jpg"
        cv2.imwrite(str(path), cv2.cvtColor(s.load_image(), cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
        samples.append(FaceSample(image=path, landmarks=s.landmarks, name=s.name))
    return samples, f"{len(samples)} synthetic faces (256 px JPEG, quality 95)"


class StagedPipeline:
    """:meth:`Landmarker.predict <pyg_sdfl.inference.Landmarker.predict>` split into timed stages,
    over a batch of faces from several images; :meth:`run` returns image-pixel landmarks ``(B, N, 2)``."""

    def __init__(self, lm: Landmarker) -> None:
        self.lm = lm
        self.model = lm.model
        self.head = self.model.head
        self.split_head = isinstance(self.head, GraphHead)
        self.graph_stack = self.head.graph_stack if self.split_head else None  # shares the head's layers
        self.stages = list(PRE) + ["backbone"]
        if isinstance(self.head, SDFLHead):
            self.stages += ["map_to_node", "edge_weighting", "graph_layers"]
        elif self.split_head:
            self.stages += ["map_to_node", "graph_layers"]
        else:
            self.stages += ["head"]
        self.stages += list(POST)

    def run(self, samples: Sequence[FaceSample], boxes: np.ndarray, times: Dict[str, float]) -> np.ndarray:
        clock = time.perf_counter
        t = clock()
        images = [s.load_image() for s in samples]
        t, times["decode"] = clock(), times["decode"] + clock() - t
        crops, mats = zip(*(self.crop(im, box) for im, box in zip(images, boxes)))
        t, times["crop"] = clock(), times["crop"] + clock() - t
        x = self.to_tensor(crops)
        t, times["normalise"] = clock(), times["normalise"] + clock() - t
        features = self.model.backbone(x)
        t, times["backbone"] = clock(), times["backbone"] + clock() - t
        head, b = self.head, x.shape[0]
        if self.split_head:
            nodes, maps = head.map_to_node(features)
            t, times["map_to_node"] = clock(), times["map_to_node"] + clock() - t
            logits = None
            if isinstance(head, SDFLHead):
                logits = head.edge_weighting(maps)
                t, times["edge_weighting"] = clock(), times["edge_weighting"] + clock() - t
            edge_index = head.batcher.batched_edge_index(b, features.device)
            alpha = None if logits is None else head.attention(logits, edge_index)
            normalised = self.graph_stack(nodes.reshape(b * head.num_points, -1), edge_index, alpha)
            normalised = normalised.view(b, head.num_points, 2)
            t, times["graph_layers"] = clock(), times["graph_layers"] + clock() - t
        else:
            normalised = head(features)
            t, times["head"] = clock(), times["head"] + clock() - t
        coords = normalised_to_pixels(normalised, self.model.image_size)
        out = crop_to_image(coords.numpy().astype(np.float64), np.stack(mats))
        times["to_pixels"] += clock() - t
        return out

    def crop(self, image: np.ndarray, box: np.ndarray) -> tuple:
        """The Landmarker's crop of the face in a landmark box: ``(crop (S, S, 3), M (2, 3))``, the
        square of ``crop_scale`` times the box's longer side around its centre."""
        cx, cy, side = crop_square(np.reshape(box, (2, 2)), self.lm.crop_scale)
        M = crop_matrix((cx, cy), side, self.lm.image_size)
        return warp_crop(image, M, self.lm.image_size), M

    @staticmethod
    def to_tensor(crops: Sequence[np.ndarray]) -> torch.Tensor:
        return torch.from_numpy(np.stack([normalise_image(c) for c in crops]))

    def end_to_end(self, samples: Sequence[FaceSample], boxes: np.ndarray) -> np.ndarray:
        """The whole prediction without the stage split: ``Landmarker.predict`` one image at a time
        at batch 1; at larger batches the same steps with one ``model.forward`` for the batch."""
        if len(samples) == 1:
            return self.lm.predict(samples[0].load_image(), boxes[:1], "landmark")[0].landmarks[None]
        crops, mats = zip(*(self.crop(s.load_image(), box) for s, box in zip(samples, boxes)))
        coords = self.model(self.to_tensor(crops))
        return crop_to_image(coords.numpy().astype(np.float64), np.stack(mats))


def measure(pipe: StagedPipeline, samples, boxes, batch: int, repeats: int, warmup: int) -> Dict[str, Any]:
    """Median ms per face of every stage and of the whole pipeline, over ``repeats`` passes."""
    groups = [slice(i, i + batch) for i in range(0, len(samples), batch)]
    per_pass: List[Dict[str, float]] = []
    end_to_end: List[float] = []
    for k in range(warmup + repeats):
        times = {name: 0.0 for name in pipe.stages}
        for g in groups:
            pipe.run(samples[g], boxes[g], times)
        start = time.perf_counter()
        for g in groups:
            pipe.end_to_end(samples[g], boxes[g])
        e2e = time.perf_counter() - start
        if k >= warmup:
            per_pass.append({name: 1000.0 * v / len(samples) for name, v in times.items()})
            end_to_end.append(1000.0 * e2e / len(samples))
    stages = {name: statistics.median(p[name] for p in per_pass) for name in pipe.stages}
    totals = [sum(p.values()) for p in per_pass]
    total = statistics.median(totals)
    return {
        "batch": batch, "faces_per_pass": len(samples), "repeats": repeats, "warmup": warmup,
        "stage_ms_per_face": stages,
        "total_ms_per_face": total,
        "total_runs_ms_per_face": [round(v, 4) for v in totals],
        "end_to_end_ms_per_face": statistics.median(end_to_end),
        "faces_per_s": 1000.0 / total,
        "end_to_end_faces_per_s": 1000.0 / statistics.median(end_to_end),
    }


def flops(ours: Landmarker) -> Dict[str, Any]:
    """FLOPs (2 x MAC, one face) of backbone and head; parameters of both."""
    model = ours.model
    x = torch.zeros(1, 3, ours.image_size, ours.image_size)
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        features = model.backbone(x)
    backbone = int(counter.get_total_flops())
    head = head_flops(model.head, tuple(features.shape[1:]))
    return {
        "backbone_flops": backbone, "head_flops": int(head["total"]), "head_by_module_flops": head["by_module"],
        "head_share_of_flops": head["total"] / (backbone + head["total"]),
        "backbone_params": int(sum(p.numel() for p in model.backbone.parameters())),
        "head_params": int(head["params"]), "head_params_by_module": head["params_by_module"],
    }


def groups_of(stages: Sequence[str]) -> Dict[str, List[str]]:
    head = [s for s in stages if s not in PRE and s not in POST and s != "backbone"]
    return {"pre-processing": [s for s in PRE if s in stages], "backbone": ["backbone"], "head": head,
            "post-processing": [s for s in POST if s in stages]}


def markdown(results: Dict[str, Dict[str, Any]], stages: Sequence[str], fl: Dict[str, Any]) -> str:
    keys = list(results)
    lines = ["| stage | " + " | ".join(f"batch {results[k]['batch']}: ms/face (share)" for k in keys) + " |",
             "|---|" + "---:|" * len(keys)]
    for group, members in groups_of(stages).items():
        for name in members:
            cells = []
            for k in keys:
                r = results[k]
                v = r["stage_ms_per_face"][name]
                cells.append(f"{v:.3f} ({100 * v / r['total_ms_per_face']:.1f}%)")
            label = name if group in ("backbone",) else f"{group}: {name}"
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        if group == "head" and len(members) > 1:
            cells = []
            for k in keys:
                r = results[k]
                v = sum(r["stage_ms_per_face"][m] for m in members)
                cells.append(f"**{v:.3f} ({100 * v / r['total_ms_per_face']:.1f}%)**")
            lines.append("| **head, all** | " + " | ".join(cells) + " |")
    lines.append("| **total (sum of stages)** | " + " | ".join(f"**{results[k]['total_ms_per_face']:.3f}**" for k in keys) + " |")
    lines.append("| end to end (unsplit forward) | " + " | ".join(f"{results[k]['end_to_end_ms_per_face']:.3f}" for k in keys) + " |")
    lines.append("| faces/s (sum of stages) | " + " | ".join(f"{results[k]['faces_per_s']:.1f}" for k in keys) + " |")
    lines.append("")
    lines.append(f"FLOPs per face (2 x MAC): backbone {fl['backbone_flops'] / 1e6:.1f} M, head {fl['head_flops'] / 1e6:.1f} M "
                 f"({100 * fl['head_share_of_flops']:.1f}% of the model); parameters: backbone "
                 f"{fl['backbone_params'] / 1e6:.2f} M, head {fl['head_params'] / 1e6:.2f} M.")
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(1)
    ours = load_ours(args.checkpoint)
    pipe = StagedPipeline(ours)
    with tempfile.TemporaryDirectory() as tmp, torch.inference_mode():
        samples, faces_desc = benchmark_faces(args.root, max(args.faces, args.batch), Path(tmp))
        boxes = landmark_box(np.stack([s.landmarks for s in samples]))
        # the staged split must compute what model.forward computes
        check = {name: 0.0 for name in pipe.stages}
        staged = pipe.run(samples[:4], boxes[:4], check)
        whole = pipe.end_to_end(samples[:4], boxes[:4])
        single = np.concatenate([pipe.end_to_end(samples[i:i + 1], boxes[i:i + 1]) for i in range(4)])  # predict()
        for name, other in (("model.forward", whole), ("Landmarker.predict", single)):
            if not np.allclose(staged, other, atol=1e-3):
                raise SystemExit(f"staged pipeline differs from {name} by {np.abs(staged - other).max():.3g} px")
        results = {
            "batch_1": measure(pipe, samples[: args.faces], boxes[: args.faces], 1, args.repeats, args.warmup),
            f"batch_{args.batch}": measure(pipe, samples[: args.batch], boxes[: args.batch], args.batch,
                                           args.repeats, args.warmup),
        }
    fl = flops(ours)
    desc = describe(ours)
    header = (f"CPU inference speed: {desc['backbone']} + {desc['head']}, {desc['image_size']} px input "
              f"(crop {desc['crop_scale']:g}x landmark box); {args.threads} torch threads, OpenCV 1 thread; "
              f"{faces_desc}; median of {args.repeats} passes after {args.warmup} warm-up.\n\n")
    table = markdown(results, pipe.stages, fl)
    print(header + table)
    append_markdown(args.markdown, header + table)
    groups = {}
    for key, r in results.items():
        groups[key] = {g: sum(r["stage_ms_per_face"][m] for m in members) for g, members in groups_of(pipe.stages).items()}
        groups[key]["head_share_of_total"] = groups[key]["head"] / r["total_ms_per_face"]
    payload = {
        "model": desc, "faces": faces_desc, "stages": pipe.stages, "results": results, "groups_ms_per_face": groups,
        "flops": fl,
        "protocol": (f"CPU, torch threads {args.threads}, OpenCV 1 thread, torch.inference_mode, fp32; each stage "
                     f"timed with perf_counter; {args.warmup} warm-up then {args.repeats} timed passes, medians; "
                     "pre-processing = JPEG decode + crop warp + normalise; post = back to image pixels"),
        "meta": metadata(args.threads),
    }
    write_json(args.out, payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
