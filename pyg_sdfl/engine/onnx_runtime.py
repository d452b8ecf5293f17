"""Run an exported ONNX landmark model with ONNX Runtime, as a drop-in for the torch model.

:class:`OnnxLandmarkModel` is an ``nn.Module`` with the torch model's contract, ``images
(B, 3, S, S)`` -> ``landmarks (B, N, 2)`` crop pixels, so :class:`~pyg_sdfl.inference.Landmarker`,
:class:`~pyg_sdfl.nn.flip_average.FlipAverage` and the evaluation loop use it unchanged. It runs on
ONNX Runtime's CPU execution provider with ``threads`` intra-op threads (default: torch's
thread count), built by :func:`session_options`: the threads spin-wait for work while a run lasts
and stop when it returns, so that they neither sleep between the model's many small operators nor
take the cores from the crop code and from torch afterwards. :func:`load_onnx_model` rebuilds the :class:`~pyg_sdfl.engine.checkpoint.LoadedModel`
record (scheme, graph, config, box mapping, provenance) from the file's metadata alone
(:mod:`pyg_sdfl.engine.onnx_export` writes it).

Bad input is a one-line error: a missing file, a file ONNX Runtime cannot parse or an ONNX model
without pyg_sdfl's metadata are :class:`~pyg_sdfl.engine.checkpoint.CheckpointError`; images of
the wrong shape or type are ``ValueError`` naming the expected ``(B, 3, S, S)``; a missing
``onnxruntime`` is an ``ImportError`` naming the extra to install.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, Optional, Union

import numpy as np
import torch
from torch import Tensor, nn

from pyg_sdfl.engine.checkpoint import CheckpointError, LoadedModel, complete_config
from pyg_sdfl.engine.onnx_export import FORMAT, METADATA_PREFIX, first_error_line
from pyg_sdfl.graph import LandmarkGraph
from pyg_sdfl.schemes import get_scheme

__all__ = ["OnnxLandmarkModel", "load_onnx_model", "onnxruntime_available", "session_options"]

_REQUIRED = ("format", "scheme", "image_size", "num_points", "config", "graph")


def onnxruntime_available() -> bool:
    """Whether ``onnxruntime`` is installed (the ``[onnx]`` extra)."""
    import importlib.util

    return importlib.util.find_spec("onnxruntime") is not None


def _import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise ImportError(
            "the ONNX backend needs onnxruntime: install the extra with `pip install -c constraints.txt \"pyg_sdfl[onnx]\"`"
        ) from None
    return onnxruntime


def session_options(threads: int) -> Any:
    """ONNX Runtime session options for our CPU sessions: ``threads`` intra-op threads, one
    inter-op thread, warnings only, and the intra-op threads spin-waiting *during* a run only
    (``session.intra_op.allow_spinning=1`` with ``session.force_spinning_stop=1``).

    Why both (2-core AMD EPYC VM, 2 threads, interleaved rounds, 2026-12-07): a run is a chain of
    small operators, and threads that sleep between them pay a wake-up for each: ``300w-fast-160``
    took 1.79 ms per face at batch 1 with sleeping threads and 1.16 ms with spinning ones
    (``300w-fast`` 1.21 -> 0.73 ms, the static-int8 ``300w`` 10.5 -> 9.2 ms; batch 32 unchanged).
    Threads left spinning *after* a run take the cores from whatever runs next: a small torch
    convolution stack took 6.1-6.4 ms right after a run that leaves them spinning against 2.9-4.7 ms
    with no run before it and 3.3-3.7 ms after a run that stops them.
    """
    ort = _import_onnxruntime()
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "1")
    options.add_session_config_entry("session.force_spinning_stop", "1")
    return options


class OnnxLandmarkModel(nn.Module):
    """An exported landmark model on ONNX Runtime (CPU).

    Args:
        source: the ``.onnx`` file, or its bytes.
        threads: ONNX Runtime intra-op threads (default ``torch.get_num_threads()``).
        name: how errors name the model (default: the path).

    Shapes:
        - **input:** ``images (B, 3, S, S)`` float (a tensor or a NumPy array; cast to float32)
        - **output:** ``(B, N, 2)`` float32 tensor, crop pixels
    """

    #: what runs it (``LandmarkModel`` has no such attribute: torch)
    backend = "onnx"

    def __init__(self, source: Union[str, os.PathLike, bytes], threads: Optional[int] = None,
                 name: Optional[str] = None) -> None:
        super().__init__()
        ort = _import_onnxruntime()
        if isinstance(source, (bytes, bytearray)):
            data, self.name = bytes(source), name or "ONNX model"
        else:
            path = Path(source)
            self.name = name or str(path)
            if not path.is_file():
                raise CheckpointError(f"{path}: no such ONNX file")
            data = path.read_bytes()
        options = session_options(int(threads or torch.get_num_threads()))
        try:
            self.session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own pybind exception types
            raise CheckpointError(f"{self.name} is not a model ONNX Runtime can load: {first_error_line(err)}") from None
        custom = self.session.get_modelmeta().custom_metadata_map
        self.metadata: Dict[str, str] = {k[len(METADATA_PREFIX):]: v for k, v in custom.items()
                                         if k.startswith(METADATA_PREFIX)}
        missing = [k for k in _REQUIRED if k not in self.metadata]
        if missing:
            raise CheckpointError(
                f"{self.name} is an ONNX model but not a pyg_sdfl export (no {METADATA_PREFIX}{missing[0]} metadata); "
                "write one with `pyg-sdfl export --onnx`"
            )
        if self.metadata["format"] != FORMAT:
            raise CheckpointError(f"{self.name}: pyg_sdfl ONNX format {self.metadata['format']!r}, this code reads {FORMAT!r}")
        self.image_size = int(self.metadata["image_size"])
        self.num_points = int(self.metadata["num_points"])
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise CheckpointError(f"{self.name}: expected one input (images), found {len(inputs)}")
        self.input_name = inputs[0].name
        self.output_name = self.session.get_outputs()[0].name

    def forward(self, images: Union[Tensor, np.ndarray]) -> Tensor:
        """``images (B, 3, S, S)`` (tensor or array, any float type) -> landmarks ``(B, N, 2)`` float32
        crop pixels; ``ValueError`` naming the expected shape for anything else."""
        s = self.image_size
        if isinstance(images, Tensor):
            array = images.detach().to("cpu", torch.float32).contiguous().numpy()
        elif isinstance(images, np.ndarray):
            array = np.ascontiguousarray(images, dtype=np.float32)
        else:
            raise ValueError(f"{self.name}: images must be a tensor or an array (B, 3, {s}, {s}); got {type(images).__name__}")
        if array.ndim != 4 or array.shape[1:] != (3, s, s) or array.shape[0] < 1:
            raise ValueError(f"{self.name}: expected images of shape (B, 3, {s}, {s}), got {tuple(array.shape)}")
        try:
            out = self.session.run([self.output_name], {self.input_name: array})[0]
        except Exception as err:  # onnxruntime's Fail / InvalidArgument are not RuntimeErrors
            raise RuntimeError(f"{self.name}: ONNX Runtime failed: {first_error_line(err)}") from None
        return torch.from_numpy(out)

    def extra_repr(self) -> str:
        return f"{self.name!r}, image_size={self.image_size}, num_points={self.num_points}"


def load_onnx_model(path: Union[str, os.PathLike], threads: Optional[int] = None) -> LoadedModel:
    """An exported ``.onnx`` file as a :class:`LoadedModel` (``kind="onnx"``), its record rebuilt
    from the file's metadata (the model itself never goes through torch)."""
    path = Path(path)
    runtime = OnnxLandmarkModel(path, threads=threads)
    md = runtime.metadata
    try:
        config = complete_config(json.loads(md["config"]))
        graph = LandmarkGraph.from_dict(json.loads(md["graph"]))
        scheme = get_scheme(md["scheme"])
        box_mapping = json.loads(md.get("box_mapping", "null"))
        meta = json.loads(md.get("meta", "{}"))
        quantization = json.loads(md.get("quantization", "null"))  # an int8 export (onnx_quantize) says how
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise CheckpointError(f"{path}: unreadable pyg_sdfl metadata ({first_error_line(err)})") from None
    if scheme.num_points != runtime.num_points or int(config.dataset.image_size) != runtime.image_size:
        raise CheckpointError(f"{path}: its metadata disagree (scheme {scheme.name}: {scheme.num_points} points, "
                              f"config: {int(config.dataset.image_size)} px; the file says {runtime.num_points} "
                              f"points, {runtime.image_size} px)")
    meta = dict(meta)
    meta.setdefault("onnx_file", path.name)
    if quantization is not None:
        meta["quantization"] = quantization
    return LoadedModel(model=runtime, graph=graph, scheme=scheme, config=config, path=path, kind="onnx", backend="onnx",
                       epoch=meta.get("source_epoch"), box_mapping=box_mapping, meta=meta)
