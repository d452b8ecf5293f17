"""Static int8 quantisation of an exported model for ONNX Runtime, calibrated on real face crops.

    pyg-sdfl export --onnx --int8 --calibration-root ../shared/data/300w --model 300w --out sdfl_300w_int8.onnx
    pyg-sdfl predict photo.jpg --checkpoint sdfl_300w_int8.onnx

The fp32 export of :mod:`pyg_sdfl.engine.onnx_export` is quantised with ONNX Runtime's
``quantize_static`` in the QDQ format:

* **what:** the convolutional part, i.e. the backbone and map-to-node (99% of the 256 px accurate
  model's FLOPs): its convolutions with int8 weights per output channel, and its activations in
  uint8 per tensor, the residual additions, ReLUs (ReLU6 as Clip) and max-pooling included, so that a tensor stays
  int8 from one convolution to the next. The graph part (edge weighting, the graph layers' MatMuls,
  the softmax, the read-out) stays fp32: a few percent of the FLOPs, and the coordinates keep their
  resolution. Which node is which part comes from the module path the exporter records
  (:func:`~pyg_sdfl.engine.onnx_export.node_stages`); a node without it is left fp32 unless it is a
  convolution. ONNX Runtime runs the quantised convolutions as ``QLinearConv``, with int8
  dot-product instructions where the CPU has them (``avx512_vnni``, ``amx_int8``). Measured on the
  256 px ``300w`` (2-core AMD EPYC, interleaved, 2026-12-07): 7.99 ms per face at batch 1 against
  8.61 with the convolutions alone quantised, which leaves a dequantise / requantise around every
  addition and ReLU (8.27 against 8.93 in a second comparison); test/lfpw NME 3.211% against 3.218%
  (fp32 3.210%). Quantising the graph part's additions too cost 0.20 pp (3.419%).
* **calibration:** the activation ranges (MinMax) come from ``count`` faces of the model's own
  dataset's *training* split (never its test split), cropped as the model was trained and is
  evaluated: the landmark square times ``crop_scale``, no augmentation. The faces are spread evenly
  over the split, so the choice is deterministic. Without the dataset, any folder of photos will do
  (``--calibration-images DIR``: :mod:`pyg_sdfl.calibration_faces` finds the faces and crops them the
  same way around the fp32 model's own predictions; :func:`export_onnx_int8_from_crops`).
* **metadata:** the file carries the fp32 export's ``pyg_sdfl.*`` entries (scheme, graph, crop
  protocol, provenance), so it loads wherever an ONNX export does (``Landmarker``, ``pyg-sdfl
  predict/evaluate --checkpoint FILE``), plus ``pyg_sdfl.quantization`` (JSON): the method, the
  calibration faces, and the largest and mean landmark difference from the fp32 export on them, in
  crop pixels.

Measured on the shipped models (2-core AMD EPYC VM with avx512_vnni, ``benchmarks/speed.py
--int8``): see the README's speed table. int8 is an export option, not a default: it changes
the numbers slightly (test/lfpw +0.001 to +0.013 pp on the shipped models), and it needs faces
to calibrate (the training data, or any folder of photos); the small models gain too (``300w-fast-160`` 0.83 against 1.14 ms at
batch 1, interleaved). Accuracy and speed were measured on CPUs with int8 dot products only; without them
(no ``avx512_vnni``, ``avx_vnni`` or ``amx_int8``) ONNX Runtime's u8s8 kernels can saturate and
lose accuracy (its documentation suggests ``reduce_range`` there): check a file with ``pyg-sdfl
evaluate --checkpoint FILE.onnx`` on the machine that will run it. A mean landmark change above
:data:`WARN_MEAN_PX` on the calibration faces is logged as a warning.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional, Union

import numpy as np
import torch

from pyg_sdfl.engine.checkpoint import LoadedModel, load_model
from pyg_sdfl.engine.onnx_export import (METADATA_PREFIX, ONNX_OPSET, PARITY_ATOL_PX, check_parity, node_stages,
                                         onnx_model_bytes, require_onnx, write_model_file)
from pyg_sdfl.engine.onnx_runtime import OnnxLandmarkModel

__all__ = ["CALIBRATION_FACES", "CONVOLUTIONAL_PART", "QUANTISED_OPS", "WARN_MEAN_PX", "calibration_crops", "quantize_onnx", "export_onnx_int8",
           "export_onnx_int8_from_crops"]

log = logging.getLogger(__name__)

#: training faces whose activations set the int8 ranges by default
CALIBRATION_FACES = 64
#: the operator types quantised, in the parts of :data:`CONVOLUTIONAL_PART` (convolutions anywhere)
QUANTISED_OPS = ("Conv", "Add", "Relu", "Clip", "MaxPool")
#: the parts (:func:`~pyg_sdfl.engine.onnx_export.node_stage`) whose activations run in int8
CONVOLUTIONAL_PART = ("backbone", "map_to_node")
#: mean |int8 - fp32| on the calibration crops (crop pixels) above which the export warns (measured: 0.11-0.17)
WARN_MEAN_PX = 0.5


def calibration_crops(loaded: LoadedModel, root: Union[str, os.PathLike], count: int = CALIBRATION_FACES,
                      split: str = "train") -> np.ndarray:
    """``(count, 3, S, S)`` float32 crops of ``count`` faces spread evenly over ``split`` of the model's
    dataset under ``root``, cropped by the model's protocol (ImageNet-normalised, no augmentation)."""
    from pyg_sdfl.data import LandmarkDataset, load_dataset

    if int(count) < 1:
        raise ValueError(f"calibration needs at least one face; got count={count!r}")
    name = str(loaded.config.dataset.name)
    samples = load_dataset(name, root, split)
    if not samples:
        raise ValueError(f"no {split} faces of {name!r} under {root}: --calibration-root needs the dataset the "
                         "model was trained on (without it, --calibration-images DIR takes any folder of photos)")
    picks = np.unique(np.linspace(0, len(samples) - 1, min(int(count), len(samples))).round().astype(int))
    dataset = LandmarkDataset([samples[i] for i in picks], loaded.scheme, loaded.image_size, loaded.crop_scale,
                              augment=None)
    return np.stack([dataset[i]["image"].numpy() for i in range(len(dataset))]).astype(np.float32)


def quantize_onnx(data: bytes, calibration: np.ndarray, note: Optional[Dict[str, Any]] = None) -> bytes:
    """The static-int8 (QDQ) model of the fp32 ONNX model ``data``, its ranges from ``calibration``
    ``(K, 3, S, S)``; ``data``'s metadata is carried over and ``pyg_sdfl.quantization`` added
    (``note`` merged into it). See the module docstring for what is quantised."""
    require_onnx()
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    calibration = np.ascontiguousarray(calibration, dtype=np.float32)
    if calibration.ndim != 4 or calibration.shape[1] != 3 or len(calibration) == 0:
        raise ValueError(f"calibration crops must be (K, 3, S, S) with K >= 1; got {calibration.shape}")
    source = onnx.load_from_string(data)
    input_name = source.graph.input[0].name

    class _Crops(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches = iter([{input_name: calibration[i:i + 8]} for i in range(0, len(calibration), 8)])

        def get_next(self) -> Optional[Dict[str, np.ndarray]]:
            return next(self._batches, None)

    stage = node_stages(source)  # by node name: quant_pre_process keeps the names, not the metadata
    with tempfile.TemporaryDirectory(prefix="pyg_sdfl_int8_") as tmp:
        fp32, prepared, int8 = (Path(tmp) / n for n in ("fp32.onnx", "prepared.onnx", "int8.onnx"))
        fp32.write_bytes(data)
        quant_pre_process(str(fp32), str(prepared))
        keep_fp32 = [n.name for n in onnx.load(str(prepared)).graph.node
                     if n.op_type != "Conv" and stage.get(n.name, "other") not in CONVOLUTIONAL_PART]
        quantize_static(str(prepared), str(int8), _Crops(), quant_format=QuantFormat.QDQ, per_channel=True,
                        weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8,
                        op_types_to_quantize=list(QUANTISED_OPS), nodes_to_exclude=keep_fp32,
                        calibrate_method=CalibrationMethod.MinMax)
        proto = onnx.load(str(int8))
    del proto.metadata_props[:]
    for entry in source.metadata_props:
        proto.metadata_props.add(key=entry.key, value=entry.value)
    crops = torch.from_numpy(calibration)
    with torch.no_grad():
        diff = (OnnxLandmarkModel(proto.SerializeToString(), name="int8 model")(crops)
                - OnnxLandmarkModel(data, name="fp32 export")(crops)).abs().numpy()
    quantisation = {
        "method": "onnxruntime quantize_static, QDQ, MinMax calibration",
        "quantised_ops": list(QUANTISED_OPS), "quantised_parts": list(CONVOLUTIONAL_PART),
        "weights": "int8 per output channel", "activations": "uint8 per tensor",
        "calibration_faces": int(len(calibration)),
        "max_px_difference_to_fp32": round(float(diff.max()), 4),
        "mean_px_difference_to_fp32": round(float(diff.mean()), 4),
        **(note or {}),
    }
    proto.metadata_props.add(key=METADATA_PREFIX + "quantization", value=json.dumps(quantisation))
    log.info("int8 vs fp32 on the %d calibration crops: max %.3g px, mean %.3g px", len(calibration),
             diff.max(), diff.mean())
    if diff.mean() > WARN_MEAN_PX:
        log.warning("int8 moves the landmarks by %.2f px on average on the calibration crops (more than %.1f px): "
                    "check its accuracy with `pyg-sdfl evaluate --checkpoint FILE.onnx` before using it",
                    diff.mean(), WARN_MEAN_PX)
    return proto.SerializeToString()


def export_onnx_int8(
    source: Union[str, os.PathLike, LoadedModel],
    out: Union[str, os.PathLike],
    calibration_root: Union[str, os.PathLike],
    count: int = CALIBRATION_FACES,
    opset: int = ONNX_OPSET,
) -> Path:
    """Export ``source`` to ONNX in memory (fp32, parity-checked against torch as
    :func:`~pyg_sdfl.engine.onnx_export.export_onnx` does) and write its static-int8 model, calibrated on ``count`` training faces of its
    dataset under ``calibration_root``, to ``out``. Returns ``out``."""
    loaded = _torch_model(source)
    crops = calibration_crops(loaded, calibration_root, count)
    note = {"calibration_split": "train", "calibration_dataset": str(loaded.config.dataset.name),
            "calibration_root": str(calibration_root)}
    return export_onnx_int8_from_crops(loaded, out, crops, note, opset)


def export_onnx_int8_from_crops(
    source: Union[str, os.PathLike, LoadedModel],
    out: Union[str, os.PathLike],
    crops: np.ndarray,
    note: Dict[str, Any],
    opset: int = ONNX_OPSET,
) -> Path:
    """:func:`export_onnx_int8` with calibration crops ``(K, 3, S, S)`` given (e.g. faces of
    unlabelled photos: :func:`pyg_sdfl.calibration_faces.calibration_crops_from_images`); ``note``
    says where they came from and is stored in the file's ``pyg_sdfl.quantization`` metadata."""
    loaded = _torch_model(source)
    if crops.ndim != 4 or tuple(crops.shape[1:]) != (3, loaded.image_size, loaded.image_size):
        raise ValueError(f"calibration crops must be (K, 3, {loaded.image_size}, {loaded.image_size}) for this model; "
                         f"got {tuple(crops.shape)}")
    fp32 = onnx_model_bytes(loaded, opset)
    check_parity(fp32, loaded, PARITY_ATOL_PX)  # the fp32 export reproduces torch before it is quantised
    return write_model_file(quantize_onnx(fp32, crops, note), out)


def _torch_model(source: Union[str, os.PathLike, LoadedModel]) -> LoadedModel:
    loaded = source if isinstance(source, LoadedModel) else load_model(source)
    if loaded.backend != "torch":
        raise ValueError(f"{loaded.path} is already an ONNX model: quantise its torch checkpoint or weights file instead")
    return loaded
