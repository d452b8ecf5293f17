"""CPU inference speed: every shipped model on every backend, beside dlib, and the cost of every stage.

    python benchmarks/speed.py --root ../shared/data/300w --out results/speed_cpu.json \\
        --markdown results/speed_cpu.md                       # every shipped model (available_pretrained)
    python benchmarks/speed.py --models 300w outputs/RUN/best.ckpt --int8   # a name and a file; + ONNX int8
    python benchmarks/speed.py --root ../shared/data/300w --faces 4 --batch 4 --repeats 1 --warmup 0  # smoke

**Matrix.** For each model of ``--models`` (names of :func:`pyg_sdfl.weights.available_pretrained`,
default all of them, and/or files), loaded as users load it (:class:`pyg_sdfl.inference.Landmarker`,
CPU), one row per way of running it:

* ``torch / fused / fp32`` -- what ``Landmarker`` runs by default on a CPU without native bf16;
* ``torch / fused / bf16`` -- bf16 autocast with channels_last (``precision="bf16"``);
* ``torch / pyg / fp32`` -- the SDFL heads on PyG message passing, the reference path
  (``use_graph_backend(model, "pyg")``): what the fused graph path buys;
* ``onnx / fused / fp32`` -- ONNX Runtime on the model exported in memory (``backend="onnx"``);
* ``onnx / fused / int8`` -- only with ``--int8`` (needs ``--root``): the static-int8 export
  (:mod:`pyg_sdfl.engine.onnx_quantize`, ``pyg-sdfl export --onnx --int8``: backbone and map-to-node
  int8 in ONNX Runtime's QDQ format, the graph part fp32, ranges calibrated on 64 training faces under ``--root``).

Each row at batch 1 and at batch ``--batch`` (32), in ms per face:

* ``model``: the network alone, ``(B, 3, S, S)`` preprocessed crops in (channels_last for bf16),
  under the Landmarker's own precision context;
* ``pass``: one Landmarker model pass, ``Landmarker.landmarks_in_squares`` from decoded images and
  given squares (crop warp + normalise + network + back to image pixels), the squares from the
  ground-truth landmarks (``squares_from_landmarks``: the accuracy protocol's crop);
* ``/dlib``: our pass time over dlib's 68-point shape predictor time at the same batch (dlib's
  call crops internally too), in brackets our model time over dlib's. dlib gets the same decoded
  images and the landmark boxes; it has no batch, so its batch-32 figure is 32 faces one after another.

Every row also records ``max_px_diff_to_fp32``: its largest landmark difference (image pixels) from
the ``torch / fused / fp32`` row on the batch-32 faces, and the achieved GFLOP/s (FLOPs of one face
/ model time per face); for each model the best row's figure is printed under the table.

**Staged profile.** For each model on the torch backend in fp32, on both graph paths (fused and
PyG), one prediction split into stages, each timed on its own (``time.perf_counter`` around it,
inside ``torch.inference_mode``):

* pre-processing: ``decode`` (JPEG -> RGB, OpenCV), ``crop`` (the crop square of the landmark box
  and one ``cv2.warpAffine`` to the input size), ``normalise`` (ImageNet normalisation, HWC -> CHW,
  stacking the batch);
* ``backbone``: the CNN to its stride-32 map;
* head, when it is a graph head (:class:`pyg_sdfl.nn.GraphHead`): ``map_to_node`` (two
  conv-BN-ReLU blocks, reshape to nodes), for an SDFL head ``edge_weighting`` (global average pool +
  2 FC -> one logit per edge), ``graph_layers`` (PyG path: the batched edge index, the attention
  ``alpha`` by a grouped softmax and the head's :class:`~pyg_sdfl.nn.GraphStack`; fused path:
  :func:`~pyg_sdfl.nn.fused_graph_stack.table_attention` and the head's
  :meth:`~pyg_sdfl.nn.SDFLHead.folded_stack`, BatchNorm folded into the layers, as the head runs
  itself at inference: :mod:`pyg_sdfl.nn.folded_graph_stack`); other
  heads are one ``head`` stage;
* post-processing: ``to_pixels`` (normalised -> crop pixels -> image pixels).

The staged output is checked against the model's own ``forward`` and ``Landmarker.predict``, and the
unsplit pipeline is timed too (``end_to_end``). The head share (head stages / sum of stages) at
batch 1 and 32 is the issue-13 figure (target: <= 5% for the shipped model at batch 1). Under ONNX
Runtime (fp32) the split comes from ONNX Runtime's own profiler: each node's kernel time, attributed
to the backbone, map-to-node or the graph part by the torch module it was exported from
(:func:`onnx_node_profile`).

**Protocol.** ``--threads`` torch threads (default 2) and as many ONNX Runtime intra-op threads,
OpenCV 1 thread, dlib single-threaded; inference mode. Matrix: ``--warmup`` untimed passes, then
``--repeats`` (7) rounds in which every row and dlib make one timed pass each, interleaved so that
a change in machine load hits all alike; medians over rounds. Batch 1 runs ``--faces`` faces one
after another, batch 32 one batch of the first ``--batch`` faces. ``--root`` takes the first
``--faces`` 300-W test faces, else synthetic faces written as JPEG. The JSON holds everything
(runs, FLOPs, parameters, CPU model and flags from /proc/cpuinfo, versions, the command).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from _common import append_markdown, describe, load_landmarker, metadata, model_file, time_methods, write_json
from pyg_sdfl.data.sample import FaceSample
from pyg_sdfl.data.transforms import normalise_image
from pyg_sdfl.engine.evaluation import precision_autocast
from pyg_sdfl.geometry import crop_matrix, crop_square, crop_to_image, landmark_box
from pyg_sdfl.inference import Landmarker, warp_crop
from pyg_sdfl.nn.flops import head_flops
from pyg_sdfl.nn.fused_graph_stack import table_attention
from pyg_sdfl.nn.heads import GraphHead, SDFLHead, use_graph_backend
from pyg_sdfl.nn.model import normalised_to_pixels
from pyg_sdfl.weights import available_pretrained

PRE = ("decode", "crop", "normalise")
POST = ("to_pixels",)
CPU = torch.device("cpu")
_START = time.perf_counter()


def progress(message: str) -> None:
    """One line of progress on stderr, with the seconds since the script started (the full run takes
    minutes and prints its tables only at the end)."""
    print(f"[{time.perf_counter() - _START:6.0f} s] {message}", file=sys.stderr, flush=True)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=None,
                   help="shipped model names and/or model files; default: every shipped model present")
    p.add_argument("--root", default=None, help="300-W folder (test faces); default: synthetic faces written as JPEG")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    p.add_argument("--markdown", default=None, help="also append the Markdown tables to this file")
    p.add_argument("--threads", type=int, default=2, help="torch and ONNX Runtime threads")
    p.add_argument("--faces", type=int, default=32, help="faces of a batch-1 pass")
    p.add_argument("--batch", type=int, default=32, help="the large batch (one batch of the first faces)")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--int8", action="store_true", help="also a static-int8 ONNX Runtime row per model (calibrated on training faces under --root)")
    return p.parse_args(argv)


def benchmark_faces(root: Optional[str], count: int, workdir: Path) -> Tuple[List[FaceSample], str]:
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


# ----------------------------------------------------------------------------- the matrix
@dataclass
class Row:
    """One way of running one model, loaded and ready to time."""

    model: str
    backend: str
    graph: str
    precision: str
    lm: Landmarker

    @property
    def key(self) -> str:
        return f"{self.model} | {self.backend} | {self.graph} | {self.precision}"


def int8_landmarker(spec: str, workdir: Path, root: str) -> Landmarker:
    """The model's static-int8 ONNX export (:mod:`pyg_sdfl.engine.onnx_quantize`: the convolutional part int8,
    ranges calibrated on 64 training faces under ``root``), as a Landmarker."""
    from pyg_sdfl.engine.checkpoint import load_model
    from pyg_sdfl.engine.onnx_quantize import export_onnx_int8
    from pyg_sdfl.engine.onnx_runtime import OnnxLandmarkModel

    loaded = load_model(model_file(spec), backend="torch")
    path = export_onnx_int8(loaded, workdir / f"{Path(spec).stem}_int8.onnx", root)
    runtime = OnnxLandmarkModel(path, name=f"{spec} (ONNX, static int8)")
    return Landmarker(runtime, loaded.scheme, loaded.image_size, loaded.crop_scale, device="cpu", detector="haar",
                      meta=loaded.meta, precision="fp32")


def model_rows(spec: str, int8: bool, workdir: Path, root: Optional[str] = None) -> List[Row]:
    """The matrix rows of one model: torch fused fp32 / bf16, torch PyG fp32 (SDFL heads only), ONNX fp32 (+ int8).
    A model without an SDFL head has one graph path, labelled ``--``."""
    progress(f"loading {spec}: torch fp32 / bf16, PyG, ONNX Runtime{' and the int8 export' if int8 else ''}")
    reference = load_landmarker(spec, "torch", "fp32")
    sdfl = use_graph_backend(reference.model, "pyg") > 0
    fused = "fused" if sdfl else "--"
    rows = [Row(spec, "torch", fused, p, load_landmarker(spec, "torch", p)) for p in ("fp32", "bf16")]
    if sdfl:
        rows.append(Row(spec, "torch", "pyg", "fp32", reference))
    rows.append(Row(spec, "onnx", fused, "fp32", load_landmarker(spec, "onnx", "fp32")))
    if int8:
        rows.append(Row(spec, "onnx", fused, "int8", int8_landmarker(spec, workdir, root)))
    return rows


@dataclass
class Faces:
    """Decoded images with their ground-truth landmarks and landmark boxes."""

    images: List[np.ndarray]
    landmarks: np.ndarray
    boxes: np.ndarray


def model_input(lm: Landmarker, faces: Faces, idx: Sequence[int]) -> torch.Tensor:
    """The preprocessed crops ``(B, 3, S, S)`` of faces ``idx`` as ``landmarks_in_squares`` makes them."""
    mats = lm.crop_matrices(lm.squares_from_landmarks(faces.landmarks[list(idx)]))
    x = torch.from_numpy(np.stack([normalise_image(warp_crop(faces.images[i], M, lm.image_size))
                                   for i, M in zip(idx, mats)]))
    return x.contiguous(memory_format=torch.channels_last) if lm.backend == "torch" and lm.precision == "bf16" else x


def model_call(lm: Landmarker, x: torch.Tensor) -> torch.Tensor:
    with precision_autocast(CPU, lm.precision):
        return lm.model(x)


def pass_args(lm: Landmarker, faces: Faces, idx: Sequence[int]) -> Tuple[List[np.ndarray], List[int], np.ndarray]:
    """``landmarks_in_squares`` arguments for faces ``idx``: their images, owners, landmark squares."""
    return [faces.images[i] for i in idx], list(range(len(idx))), lm.squares_from_landmarks(faces.landmarks[list(idx)])


def row_methods(row: Row, faces: Faces, groups: Sequence[Sequence[int]]) -> Dict[str, Callable[[int], Any]]:
    """``{key/model, key/pass}``: functions of a group number, their inputs made beforehand."""
    inputs = [model_input(row.lm, faces, g) for g in groups]
    args = [pass_args(row.lm, faces, g) for g in groups]
    return {f"{row.key}/model": lambda k: model_call(row.lm, inputs[k]),
            f"{row.key}/pass": lambda k: row.lm.landmarks_in_squares(*args[k])}


def dlib_method(predictor: Any, faces: Faces, groups: Sequence[Sequence[int]]) -> Callable[[int], Any]:
    return lambda k: [predictor(faces.images[i], faces.boxes[i]) for i in groups[k]]


def time_matrix(rows: Sequence[Row], predictor: Any, faces: Faces, batch: int, count: int, repeats: int,
                warmup: int) -> Dict[str, Dict[str, Any]]:
    """Median ms per face of every row's model and pass (and dlib) over ``count`` faces in batches
    of ``batch``, all interleaved within each round (:func:`time_methods`)."""
    groups = [list(range(lo, min(lo + batch, count))) for lo in range(0, count, batch)]
    methods: Dict[str, Callable[[int], Any]] = {}
    for row in rows:
        row.lm.batch_size = batch
        methods.update(row_methods(row, faces, groups))
    if predictor is not None:
        methods["dlib"] = dlib_method(predictor, faces, groups)
    timed = time_methods(methods, list(range(len(groups))), repeats=repeats, warmup=warmup)
    faces_per_item = count / len(groups)
    return {name: {"ms_per_face": t["median_ms"] / faces_per_item,
                   "runs_ms_per_face": [round(v / faces_per_item, 4) for v in t["runs_ms"]]}
            for name, t in timed.items()}


def max_px_diffs(rows: Sequence[Row], faces: Faces, count: int) -> Dict[str, float]:
    """Each row's largest landmark difference (image px) from the first row (torch fused fp32)."""
    outs = {row.key: row.lm.landmarks_in_squares(*pass_args(row.lm, faces, range(count))) for row in rows}
    first = outs[rows[0].key]
    return {key: float(np.abs(out - first).max()) for key, out in outs.items()}


def dlib_predictor() -> Tuple[Any, Optional[str]]:
    """dlib's 68-point shape predictor, or ``(None, why it is skipped)``."""
    try:
        from pyg_sdfl.peers import DlibShapePredictor

        return DlibShapePredictor(), None
    except (ImportError, FileNotFoundError) as err:
        return None, f"{type(err).__name__}: {err}"


def matrix_results(rows: Sequence[Row], timings: Dict[str, Dict[str, Dict[str, Any]]], diffs: Dict[str, float],
                   model_flops: Dict[str, int]) -> Dict[str, Dict[str, Any]]:
    """Per row: backend, graph, precision and per batch model / pass ms per face, ratios to dlib, GFLOP/s."""
    out = {}
    for row in rows:
        entry: Dict[str, Any] = {"model": row.model, "backend": row.backend, "graph": row.graph,
                                 "precision": row.precision, "max_px_diff_to_fp32": diffs[row.key]}
        for bkey, t in timings.items():
            m, p = t[f"{row.key}/model"], t[f"{row.key}/pass"]
            dlib = t.get("dlib", {}).get("ms_per_face")
            entry[bkey] = {
                "model_ms_per_face": m["ms_per_face"], "pass_ms_per_face": p["ms_per_face"],
                "model_runs_ms_per_face": m["runs_ms_per_face"], "pass_runs_ms_per_face": p["runs_ms_per_face"],
                "ratio_to_dlib": p["ms_per_face"] / dlib if dlib else None,
                "model_ratio_to_dlib": m["ms_per_face"] / dlib if dlib else None,
                "achieved_gflops": model_flops[row.model] / (m["ms_per_face"] * 1e-3) / 1e9,
            }
        out[row.key] = entry
    return out


# ----------------------------------------------------------------------------- the staged profile
class StagedPipeline:
    """:meth:`Landmarker.predict <pyg_sdfl.inference.Landmarker.predict>` split into timed stages,
    over a batch of faces from several images, with the SDFL head on ``graph`` (``"fused"`` or
    ``"pyg"``); :meth:`run` returns image-pixel landmarks ``(B, N, 2)``."""

    def __init__(self, lm: Landmarker, graph: str = "fused") -> None:
        self.lm = lm
        self.model = lm.model
        self.head = self.model.head
        self.graph = graph if isinstance(self.head, SDFLHead) else "pyg"
        use_graph_backend(self.model, self.graph)  # end_to_end's forward runs the same path
        self.split_head = isinstance(self.head, GraphHead)
        self.graph_stack = self.head.graph_stack if self.split_head else None  # shares the head's layers
        if self.graph == "fused":
            self.table = self.head.neighbour_table
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
        if self.split_head:
            normalised, t = self.graph_head(features, times, t)
        else:
            normalised = self.head(features)
            t, times["head"] = clock(), times["head"] + clock() - t
        coords = normalised_to_pixels(normalised, self.model.image_size)
        out = crop_to_image(coords.numpy().astype(np.float64), np.stack(mats))
        times["to_pixels"] += clock() - t
        return out

    def graph_head(self, features: torch.Tensor, times: Dict[str, float], t: float) -> Tuple[torch.Tensor, float]:
        """The graph head's stages; returns normalised coordinates ``(B, N, 2)`` and the clock."""
        clock = time.perf_counter
        head, b = self.head, features.shape[0]
        nodes, maps = head.map_to_node(features)
        t, times["map_to_node"] = clock(), times["map_to_node"] + clock() - t
        logits = None
        if isinstance(head, SDFLHead):
            logits = head.edge_weighting(maps)
            t, times["edge_weighting"] = clock(), times["edge_weighting"] + clock() - t
        if self.graph == "fused":
            alpha = table_attention(logits, self.table, head.softmax_over)
            normalised = head.folded_stack()(nodes, alpha)
        else:
            edge_index = head.batcher.batched_edge_index(b, features.device)
            alpha = None if logits is None else head.attention(logits, edge_index)
            normalised = self.graph_stack(nodes.reshape(b * head.num_points, -1), edge_index, alpha)
            normalised = normalised.view(b, head.num_points, 2)
        t, times["graph_layers"] = clock(), times["graph_layers"] + clock() - t
        return normalised, t

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

    def check(self, samples: Sequence[FaceSample], boxes: np.ndarray) -> None:
        """The staged split must compute what ``model.forward`` and ``Landmarker.predict`` compute."""
        n = min(4, len(samples))
        staged = self.run(samples[:n], boxes[:n], {name: 0.0 for name in self.stages})
        whole = self.end_to_end(samples[:n], boxes[:n])
        single = np.concatenate([self.end_to_end(samples[i:i + 1], boxes[i:i + 1]) for i in range(n)])
        for name, other in (("model.forward", whole), ("Landmarker.predict", single)):
            if not np.allclose(staged, other, atol=1e-3):
                raise SystemExit(f"staged pipeline ({self.graph}) differs from {name} by "
                                 f"{np.abs(staged - other).max():.3g} px")


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


def groups_of(stages: Sequence[str]) -> Dict[str, List[str]]:
    head = [s for s in stages if s not in PRE and s not in POST and s != "backbone"]
    return {"pre-processing": [s for s in PRE if s in stages], "backbone": ["backbone"], "head": head,
            "post-processing": [s for s in POST if s in stages]}


def staged_profile(pipe: StagedPipeline, samples, boxes, args: argparse.Namespace) -> Dict[str, Any]:
    """The checked, staged profile of one model on one graph path at batch 1 and ``--batch``."""
    pipe.check(samples, boxes)
    results = {
        "batch_1": measure(pipe, samples[: args.faces], boxes[: args.faces], 1, args.repeats, args.warmup),
        f"batch_{args.batch}": measure(pipe, samples[: args.batch], boxes[: args.batch], args.batch,
                                       args.repeats, args.warmup),
    }
    groups = {}
    for key, r in results.items():
        groups[key] = {g: sum(r["stage_ms_per_face"][m] for m in members) for g, members in groups_of(pipe.stages).items()}
        groups[key]["head_share_of_total"] = groups[key]["head"] / r["total_ms_per_face"]
    return {"graph": pipe.graph, "stages": pipe.stages, "results": results, "groups_ms_per_face": groups}


def flops(lm: Landmarker) -> Dict[str, Any]:
    """FLOPs (2 x MAC, one face) of backbone and head; parameters of both (a torch Landmarker)."""
    model = lm.model
    x = torch.zeros(1, 3, lm.image_size, lm.image_size)
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        features = model.backbone(x)
    backbone = int(counter.get_total_flops())
    head = head_flops(model.head, tuple(features.shape[1:]))
    return {
        "backbone_flops": backbone, "head_flops": int(head["total"]), "total_flops": backbone + int(head["total"]),
        "head_by_module_flops": head["by_module"], "head_share_of_flops": head["total"] / (backbone + head["total"]),
        "backbone_params": int(sum(p.numel() for p in model.backbone.parameters())),
        "head_params": int(head["params"]), "head_params_by_module": head["params_by_module"],
    }


# ----------------------------------------------------------------------------- Markdown
def _ms(v: Optional[float]) -> str:
    return "--" if v is None else f"{v:.3f}"


def _ratio(p: Optional[float], m: Optional[float]) -> str:
    return "--" if p is None else f"{p:.2f} ({m:.2f})"


def matrix_table(matrix: Dict[str, Dict[str, Any]], dlib: Dict[str, Any], bkeys: Sequence[str]) -> str:
    """Rows model x backend x graph x precision (+ dlib); per batch: model, pass ms/face, pass/dlib (model/dlib)."""
    heads = [f"{k.replace('_', ' ')}: {c}" for k in bkeys for c in ("model ms/face", "pass ms/face", "/dlib pass (model)")]
    lines = ["| model | backend | graph | precision | " + " | ".join(heads) + " |",
             "|---|---|---|---|" + "---:|" * len(heads)]
    for e in matrix.values():
        cells = []
        for k in bkeys:
            b = e[k]
            cells += [_ms(b["model_ms_per_face"]), _ms(b["pass_ms_per_face"]),
                      _ratio(b["ratio_to_dlib"], b["model_ratio_to_dlib"])]
        lines.append(f"| {e['model']} | {e['backend']} | {e['graph']} | {e['precision']} | " + " | ".join(cells) + " |")
    if "skipped" not in dlib:
        cells = [c for k in bkeys for c in ("--", _ms(dlib[k]["ms_per_face"]), "1")]
        lines.append("| dlib 68-point shape predictor | dlib | -- | -- | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def throughput_lines(matrix: Dict[str, Dict[str, Any]], fl: Dict[str, Dict[str, Any]], bkeys: Sequence[str]) -> str:
    """Per model and batch: FLOPs / the best row's model time = achieved GFLOP/s."""
    lines = []
    for model, f in fl.items():
        entries = [e for e in matrix.values() if e["model"] == model]
        for k in bkeys:
            best = min(entries, key=lambda e: e[k]["model_ms_per_face"])
            b = best[k]
            lines.append(f"- {model}, {k.replace('_', ' ')}: {f['total_flops'] / 1e6:.0f} MFLOP/face / "
                         f"{b['model_ms_per_face']:.3f} ms ({best['backend']} {best['graph']} {best['precision']}) "
                         f"= {b['achieved_gflops']:.1f} GFLOP/s achieved")
    return "\n".join(lines) + "\n"


def head_share_table(profiles: Dict[str, Dict[str, Dict[str, Any]]], bkeys: Sequence[str]) -> str:
    """Rows model x graph path; per batch: head ms/face (share of the sum of stages), total ms/face."""
    heads = [f"{k.replace('_', ' ')}: {c}" for k in bkeys for c in ("head ms/face (share)", "total ms/face")]
    lines = ["| model | graph path | " + " | ".join(heads) + " |", "|---|---|" + "---:|" * len(heads)]
    for model, by_graph in profiles.items():
        for graph, prof in by_graph.items():
            cells = []
            for k in bkeys:
                g, r = prof["groups_ms_per_face"][k], prof["results"][k]
                cells += [f"{g['head']:.3f} ({100 * g['head_share_of_total']:.1f}%)", f"{r['total_ms_per_face']:.3f}"]
            lines.append(f"| {model} | {graph} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def stage_table(prof: Dict[str, Any]) -> str:
    """One profile's stages: ms/face (share of the sum) at each batch."""
    results, keys = prof["results"], list(prof["results"])
    lines = ["| stage | " + " | ".join(f"batch {results[k]['batch']}: ms/face (share)" for k in keys) + " |",
             "|---|" + "---:|" * len(keys)]
    for group, members in groups_of(prof["stages"]).items():
        for name in members:
            cells = [f"{results[k]['stage_ms_per_face'][name]:.3f} "
                     f"({100 * results[k]['stage_ms_per_face'][name] / results[k]['total_ms_per_face']:.1f}%)" for k in keys]
            label = name if group == "backbone" else f"{group}: {name}"
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("| **total (sum of stages)** | " + " | ".join(f"**{results[k]['total_ms_per_face']:.3f}**" for k in keys) + " |")
    lines.append("| end to end (unsplit forward) | " + " | ".join(f"{results[k]['end_to_end_ms_per_face']:.3f}" for k in keys) + " |")
    return "\n".join(lines) + "\n"


def report(payload: Dict[str, Any], bkeys: Sequence[str], args: argparse.Namespace) -> str:
    meta, fl = payload["meta"], payload["flops"]
    out = [f"CPU inference speed. CPU: {meta['cpu']} (flags: {' '.join(meta['cpu_flags']) or 'none of interest'}); "
           f"{args.threads} torch / ONNX Runtime threads, OpenCV 1 thread; {payload['faces']}; batch 1 over "
           f"{args.faces} faces, batch {args.batch} as one batch; median of {args.repeats} interleaved rounds after "
           f"{args.warmup} warm-up.\n", matrix_table(payload["matrix"], payload["dlib"], bkeys)]
    if "skipped" in payload["dlib"]:
        out.append(f"dlib skipped: {payload['dlib']['skipped']}\n")
    out.append("Achieved throughput (FLOPs of one face / model time of the fastest row):\n")
    out.append(throughput_lines(payload["matrix"], fl, bkeys))
    for model, f in fl.items():
        out.append(f"- {model}: FLOPs/face backbone {f['backbone_flops'] / 1e6:.1f} M, head {f['head_flops'] / 1e6:.1f} M "
                   f"({100 * f['head_share_of_flops']:.1f}%); parameters backbone {f['backbone_params'] / 1e6:.2f} M, "
                   f"head {f['head_params'] / 1e6:.2f} M.")
    out.append("\nONNX Runtime fp32: the head's share of the model time and the graph part's (edge weighting, the "
               "graph layers, the read-out), from ONNX Runtime's own per-node profile (shares of the summed "
               "node times):\n")
    out.append(onnx_share_table(payload["onnx_node_profile"], bkeys))
    out.append("\nStaged profile (torch, fp32), graph head share of the sum of stages:\n")
    out.append(head_share_table(payload["staged"], bkeys))
    for model, by_graph in payload["staged"].items():
        for graph, prof in by_graph.items():
            out.append(f"\nStages of {model}, {graph} graph path:\n\n" + stage_table(prof))
    return "\n".join(out) + "\n"


ONNX_STAGES = ("backbone", "map_to_node", "graph_part")


def onnx_node_stages(data: bytes) -> Tuple[Dict[str, str], Dict[str, str]]:
    """``(stage of each node name, producing node of each value name)`` of an exported model."""
    import onnx

    from pyg_sdfl.engine.onnx_export import node_stages

    model = onnx.load_from_string(data)
    producer = {value: n.name for n in model.graph.node for value in n.output}
    return node_stages(model), producer


def attribute_node_times(events: Sequence[Dict[str, Any]], stage: Dict[str, str],
                         producer: Dict[str, str]) -> Tuple[Dict[str, float], Dict[str, int]]:
    """Sum ONNX Runtime's per-node kernel times (its profiler's ``"cat": "Node"`` events named
    ``<node>_kernel_time``, ``dur`` in microseconds, in execution order) by stage. ONNX Runtime renames
    what it rewrites, so a node is found by (1) its own name, (2) ``<value>_nchwc``: a convolution
    moved to the blocked NCHWc layout, named after the value its original produced, (3) a value it
    produces; (4) anything else (a layout reorder between two convolutions) joins the stage of the
    node that ran just before it. Returns ``(microseconds by stage, events found by each rule)``."""
    times: Dict[str, float] = {}
    rules = {"name": 0, "nchwc_value": 0, "value": 0, "previous": 0}
    previous = "other"
    for e in events:
        node = e["name"][: -len("_kernel_time")]
        if node in stage:
            st, rule = stage[node], "name"
        elif node.endswith("_nchwc") and node[: -len("_nchwc")] in producer:
            st, rule = stage[producer[node[: -len("_nchwc")]]], "nchwc_value"
        elif node in producer:
            st, rule = stage[producer[node]], "value"
        else:
            st, rule = previous, "previous"
        times[st] = times.get(st, 0.0) + float(e["dur"])
        rules[rule] += 1
        previous = st
    return times, rules


def onnx_node_profile_one(data: bytes, x: np.ndarray, calls: int, warmup: int) -> Dict[str, Any]:
    """ONNX Runtime's own profile of ``calls`` runs on ``x`` ``(B, 3, S, S)`` after ``warmup`` runs
    whose events are dropped, in a session built as :class:`~pyg_sdfl.engine.onnx_runtime.OnnxLandmarkModel`
    builds its own (plus profiling): ms per face by stage (:func:`attribute_node_times`), the sum of node times and
    the wall time per face of the profiled runs (the sum is smaller: between nodes the runtime
    schedules, allocates and waits)."""
    import json

    import onnxruntime as ort

    from pyg_sdfl.engine.onnx_runtime import session_options

    stage, producer = onnx_node_stages(data)
    batch = len(x)
    with tempfile.TemporaryDirectory() as tmp:
        options = session_options(torch.get_num_threads())
        options.enable_profiling, options.profile_file_prefix = True, str(Path(tmp) / "ort")
        session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: x}
        for _ in range(warmup):  # profiled too; their events are dropped below
            session.run(None, feed)
        start = time.perf_counter()
        for _ in range(calls):
            session.run(None, feed)
        wall = (time.perf_counter() - start) / calls
        events = json.loads(Path(session.end_profiling()).read_text())
    nodes = [e for e in events if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time")]
    per_run = len(nodes) // (warmup + calls)
    times, rules = attribute_node_times(nodes[per_run * warmup:], stage, producer)
    total = sum(times.values())
    out: Dict[str, Any] = {f"{k}_ms_per_face": times.get(k, 0.0) / 1e3 / calls / batch for k in ONNX_STAGES + ("other",)}
    out.update({f"{k}_share": times.get(k, 0.0) / total for k in ONNX_STAGES})
    out.update({"head_share": out["map_to_node_share"] + out["graph_part_share"],
                "node_sum_ms_per_face": total / 1e3 / calls / batch, "wall_ms_per_face": 1e3 * wall / batch,
                "nodes_per_run": per_run, "found_by": rules, "calls": calls})
    return out


def onnx_node_profile(rows: Sequence[Row], faces: Faces, args: argparse.Namespace,
                      bkeys: Sequence[str]) -> Dict[str, Dict[str, Any]]:
    """The head's and the graph part's share of the ONNX Runtime fp32 model time, from ONNX Runtime's
    per-node profile of the model's own export (:func:`onnx_node_profile_one`), at batch 1 (``--faces``
    runs, at least 20) and ``--batch`` (``--repeats`` runs, at least 3)."""
    from pyg_sdfl.engine.checkpoint import load_model
    from pyg_sdfl.engine.onnx_export import onnx_model_bytes

    out: Dict[str, Dict[str, Any]] = {}
    for row in rows:
        if row.backend != "onnx" or row.precision != "fp32":
            continue
        progress(f"ONNX Runtime per-node profile of {row.model}")
        data = onnx_model_bytes(load_model(model_file(row.model), backend="torch"))
        out[row.model] = {}
        for key, batch in zip(bkeys, (1, args.batch)):
            x = model_input(row.lm, faces, range(batch)).numpy()
            calls = max(args.faces, 20) if batch == 1 else max(args.repeats, 3)
            out[row.model][key] = onnx_node_profile_one(data, x, calls, warmup=max(args.warmup, 1))
    return out


def onnx_share_table(shares: Dict[str, Dict[str, Any]], bkeys: Sequence[str]) -> str:
    """Rows model; per batch: the head's ms/face (share of the node time) and the graph part's."""
    cols = [f"{k.replace('_', ' ')}: {c} ms/face (share)" for k in bkeys for c in ("head", "graph part")]
    lines = ["| model (ONNX Runtime, fp32) | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for model, by_batch in shares.items():
        cells = []
        for k in bkeys:
            e = by_batch[k]
            head_ms = e["map_to_node_ms_per_face"] + e["graph_part_ms_per_face"]
            cells.append(f"{head_ms:.3f} ({100 * e['head_share']:.1f}%)")
            cells.append(f"{e['graph_part_ms_per_face']:.3f} ({100 * e['graph_part_share']:.1f}%)")
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- main
def run_matrix(rows: Sequence[Row], faces: Faces, fl: Dict[str, Dict[str, Any]], args: argparse.Namespace,
               bkeys: Sequence[str]) -> Tuple[Dict[str, Dict[str, Any]], Dict[str, Any]]:
    """``(matrix results, dlib results or {"skipped": why})``."""
    predictor, skipped = dlib_predictor()
    if skipped:
        print(f"dlib skipped: {skipped}", file=sys.stderr)
    timings = {}
    for key, batch, count in ((bkeys[0], 1, args.faces), (bkeys[1], args.batch, args.batch)):
        progress(f"matrix at batch {batch}: {len(rows)} rows{' and dlib' if predictor is not None else ''}, "
                 f"{args.warmup} warm-up + {args.repeats} interleaved rounds")
        timings[key] = time_matrix(rows, predictor, faces, batch, count, args.repeats, args.warmup)
    diffs: Dict[str, float] = {}
    for spec in fl:
        diffs.update(max_px_diffs([r for r in rows if r.model == spec], faces, args.batch))
    matrix = matrix_results(rows, timings, diffs, {m: f["total_flops"] for m, f in fl.items()})
    return matrix, ({"skipped": skipped} if skipped else {k: timings[k]["dlib"] for k in bkeys})


def run_staged(rows: Sequence[Row], samples: Sequence[FaceSample], boxes: np.ndarray,
               args: argparse.Namespace) -> Dict[str, Dict[str, Any]]:
    """``{model: {graph path: staged profile}}`` of the torch fp32 rows."""
    staged: Dict[str, Dict[str, Any]] = {}
    for row in rows:
        if row.backend == "torch" and row.precision == "fp32":
            pipe = StagedPipeline(row.lm, row.graph)
            progress(f"staged profile of {row.model}, {pipe.graph} graph path")
            staged.setdefault(row.model, {})[pipe.graph] = staged_profile(pipe, samples, boxes, args)
    return staged


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)  # before the ONNX sessions: they take torch's thread count
    cv2.setNumThreads(1)
    specs = args.models or available_pretrained()
    if args.int8 and not args.root:
        raise SystemExit("--int8 needs --root: the int8 ranges are calibrated on that dataset's training faces")
    if not specs:
        raise SystemExit("no shipped model in this installation: name model files with --models")
    count = max(args.faces, args.batch)
    bkeys = ["batch_1", f"batch_{args.batch}"]
    with tempfile.TemporaryDirectory() as tmp:
        samples, faces_desc = benchmark_faces(args.root, count, Path(tmp))
        if len(samples) < count:
            raise SystemExit(f"need {count} faces, found {len(samples)}")
        landmarks = np.stack([s.landmarks for s in samples])
        faces = Faces([s.load_image() for s in samples], landmarks, landmark_box(landmarks))
        rows = [row for spec in specs for row in model_rows(spec, args.int8, Path(tmp), args.root)]
        reference = {r.model: r.lm for r in rows if r.backend == "torch" and r.graph != "pyg" and r.precision == "fp32"}
        fl = {spec: flops(reference[spec]) for spec in specs}
        with torch.inference_mode():
            matrix, dlib = run_matrix(rows, faces, fl, args, bkeys)
            staged = run_staged(rows, samples, faces.boxes, args)
            onnx_shares = onnx_node_profile(rows, faces, args, bkeys)
    payload = {
        "models": {spec: describe(reference[spec]) for spec in specs}, "faces": faces_desc, "matrix": matrix,
        "dlib": dlib, "staged": staged, "onnx_node_profile": onnx_shares, "flops": fl,
        "protocol": (f"CPU, torch threads {args.threads}, ONNX Runtime intra-op threads {args.threads}, OpenCV 1 "
                     f"thread, torch.inference_mode; matrix: {args.warmup} warm-up then {args.repeats} rounds, every "
                     "row (model alone, Landmarker.landmarks_in_squares pass) and dlib interleaved in each round, "
                     f"medians; batch 1 over {args.faces} faces, batch {args.batch} one batch; squares from the "
                     "ground-truth landmarks, dlib on the landmark boxes; staged: torch fp32, each stage timed "
                     "with perf_counter"),
        "meta": metadata(args.threads),
    }
    text = report(payload, bkeys, args)
    print(text)
    append_markdown(args.markdown, text)
    write_json(args.out, payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
