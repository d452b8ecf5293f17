"""Shared pieces of the benchmark scripts: loading our model, timing, metadata, JSON.

Imported by ``benchmarks/peers.py`` and ``benchmarks/speed.py`` as a sibling module (run them as
scripts: ``python benchmarks/peers.py ...``). Our model runs through
:class:`pyg_sdfl.inference.Landmarker`, i.e. exactly what users get.
"""
from __future__ import annotations

import json
import os
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import cv2
import numpy as np

from pyg_sdfl.engine.reporting import json_default, run_metadata
from pyg_sdfl.inference import Landmarker

__all__ = ["load_ours", "load_landmarker", "model_file", "describe", "predict_in_box", "time_methods", "metadata", "write_json",
           "append_markdown"]


def load_ours(checkpoint: Optional[str], flip_test: bool = False) -> Landmarker:
    """Our model on CPU: a training checkpoint / exported file, or (``None``) the shipped 300-W model;
    ``flip_test`` averages each face with its mirror image."""
    from pyg_sdfl.engine.checkpoint import CheckpointError

    try:
        if checkpoint:
            return Landmarker.from_checkpoint(checkpoint, device="cpu", flip_test=flip_test)
        return Landmarker.from_pretrained("300w", device="cpu", flip_test=flip_test)
    except CheckpointError as err:
        raise SystemExit(f"cannot load our model: {err}") from None


def model_file(spec: str) -> Path:
    """A shipped model's name (:data:`pyg_sdfl.weights.PRETRAINED`) or a file path -> the weights file."""
    from pyg_sdfl.weights import PRETRAINED, pretrained_path

    return pretrained_path(spec) if spec in PRETRAINED else Path(spec)


def load_landmarker(spec: str, backend: str = "torch", precision: str = "fp32", **options: Any) -> Landmarker:
    """A shipped model by name or a file (checkpoint, exported weights, ``.onnx``) on the CPU with
    ``backend`` and ``precision`` and the Haar detector (always installed; benchmarks give the boxes)."""
    from pyg_sdfl.engine.checkpoint import CheckpointError
    from pyg_sdfl.weights import PRETRAINED

    kwargs = dict(device="cpu", backend=backend, precision=precision, detector="haar", **options)
    try:
        if spec in PRETRAINED:
            return Landmarker.from_pretrained(spec, **kwargs)
        return Landmarker.from_checkpoint(spec, **kwargs)
    except CheckpointError as err:
        raise SystemExit(f"cannot load model {spec!r}: {err}") from None


def describe(lm: Landmarker) -> Dict[str, Any]:
    """What the numbers are of: weights file, architecture, crop protocol, size."""
    model = lm.model
    meta = lm.meta
    return {
        "weights": str(meta.get("source", "")),
        "backbone": str(getattr(model.backbone, "name", type(model.backbone).__name__)),
        "head": type(model.head).__name__,
        "image_size": lm.image_size,
        "crop_scale": lm.crop_scale,
        "scheme": lm.scheme.name,
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "weights_meta": {k: v for k, v in meta.items() if isinstance(v, (str, int, float, bool)) or v is None},
    }


def predict_in_box(lm: Landmarker, image: np.ndarray, box: Sequence[float]) -> np.ndarray:
    """``(N, 2)`` image-pixel landmarks of the face in ``box`` (a tight landmark box), batch 1."""
    faces = lm.predict(image, boxes=np.asarray(box, dtype=np.float64)[None], box_type="landmark")
    return faces[0].landmarks


def time_methods(methods: Dict[str, Callable[[Any], Any]], items: Sequence[Any], repeats: int = 5,
                 warmup: int = 1) -> Dict[str, Dict[str, Any]]:
    """Milliseconds per item of each ``methods[name](item)``.

    ``warmup`` untimed passes over ``items``, then ``repeats`` rounds; in each round every method
    makes one timed pass over ``items`` (interleaved, so a change in machine load hits all methods
    alike). A pass gives elapsed / len(items); each method gets the median of its passes.
    """
    if not items or repeats < 1:
        raise ValueError("need at least one item and one repeat")
    for _ in range(warmup):
        for fn in methods.values():
            for item in items:
                fn(item)
    runs: Dict[str, List[float]] = {name: [] for name in methods}
    for _ in range(repeats):
        for name, fn in methods.items():
            start = time.perf_counter()
            for item in items:
                fn(item)
            runs[name].append(1000.0 * (time.perf_counter() - start) / len(items))
    return {name: {"median_ms": statistics.median(r), "runs_ms": [round(v, 4) for v in r], "items": len(items),
                   "repeats": repeats, "warmup": warmup} for name, r in runs.items()}


def metadata(threads: int) -> Dict[str, Any]:
    """Commit, machine (CPU model and flags: ``run_metadata``), versions, the exact command, thread
    settings and the load at the time."""
    meta = run_metadata(device="cpu")
    meta.update({
        "torch_threads": threads,
        "opencv_threads": cv2.getNumThreads(),
        "command": " ".join(shlex.quote(a) for a in [Path(sys.executable).name] + sys.argv),
        "load_average_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    })
    return meta


def write_json(path: Optional[str], payload: Dict[str, Any]) -> None:
    if not path:
        return
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2, default=json_default) + "\n")
    print(f"wrote {out}")


def append_markdown(path: Optional[str], text: str) -> None:
    """Append ``text`` under a heading with the time and the command."""
    if not path:
        return
    with open(path, "a") as handle:
        handle.write(f"\n### {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: `{' '.join(sys.argv)}`\n\n")
        handle.write(text)

