"""A trained model as an ONNX file that carries everything needed to use it.

    pyg-sdfl export --onnx --checkpoint RUN/best.ckpt --out model.onnx
    pyg-sdfl export --onnx --model 300w-fast --out sdfl_300w_fast.onnx

The network is exported with ``torch.onnx.export(dynamo=True)`` (opset :data:`ONNX_OPSET`) from
the model as :func:`~pyg_sdfl.engine.checkpoint.load_model` rebuilds it, with the SDFL head on its
fused path in inference (:mod:`pyg_sdfl.nn.folded_graph_stack`: BatchNorm folded into the graph
layers, one dense attention matrix per face), so the ONNX graph has no scatter and no
BatchNormalization: Conv, MatMul, Softmax, one GatherND (the edge logits into the neighbour table)
and elementwise nodes, plus the fold's products of constants, which ONNX Runtime folds at load.

Graph: input ``images`` ``(B, 3, S, S)`` float32 (ImageNet-normalised crops, ``B`` dynamic) ->
output ``landmarks`` ``(B, N, 2)`` float32, crop pixels (0-based pixel centres).

The file's metadata (``metadata_props``, each value a string; JSON where structured):

    pyg_sdfl.format       "1"
    pyg_sdfl.scheme       the landmark scheme's name ("300w")
    pyg_sdfl.image_size   S
    pyg_sdfl.num_points   N
    pyg_sdfl.config       the model config (dataset: name, scheme, image_size, crop_scale; backbone; head; graph)
    pyg_sdfl.graph        the landmark graph (edge_index, num_nodes, k, mode)
    pyg_sdfl.box_mapping  the detector-box mapping stored with the weights, or null
    pyg_sdfl.meta         provenance: the source file and its sha256, the source's own meta
                          (training command, data, metrics, machine), opset, versions, export time

Every export is checked before it is kept: ONNX Runtime's output on random crops must equal the
torch model's within :data:`PARITY_ATOL_PX` pixels, else nothing is written.
"""
from __future__ import annotations

import copy
import datetime as _dt
import hashlib
import io
import json
import logging
import os
import platform
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Union

import torch

from pyg_sdfl import __version__
from pyg_sdfl.engine.checkpoint import LoadedModel, load_model
from pyg_sdfl.engine.export import model_config
from pyg_sdfl.nn.heads import use_graph_backend

__all__ = ["ONNX_OPSET", "PARITY_ATOL_PX", "METADATA_PREFIX", "export_onnx", "first_error_line", "onnx_model_bytes",
           "require_onnx", "check_parity", "write_model_file", "node_stage", "node_stages"]

log = logging.getLogger(__name__)

ONNX_OPSET = 18
#: largest |ONNX Runtime - torch| allowed at export, in crop pixels (measured: 3e-5 px on the shipped model)
PARITY_ATOL_PX = 1e-3
METADATA_PREFIX = "pyg_sdfl."
FORMAT = "1"


def node_stage(namespace: str) -> str:
    """The part of the model an exported node belongs to, from the torch module path that the dynamo
    exporter records in its ``namespace`` metadata (e.g. ``": pyg_sdfl.nn.model.LandmarkModel/backbone:
    ...Backbone/..."``): ``"backbone"``; ``"map_to_node"`` (the head's map-to-node convolutions);
    ``"graph_part"`` (the rest of the head: edge weighting, the graph layers, the read-out; and the
    model's own normalised -> crop pixel ops); ``"other"`` for anything else (the input's shape, or a
    node without the metadata)."""
    if "/backbone:" in namespace:
        return "backbone"
    if "map_to_node" in namespace:
        return "map_to_node"
    if "LandmarkModel/" in namespace:
        return "graph_part"
    return "other"


def node_stages(model: Any) -> Dict[str, str]:
    """``{node name: node_stage(its namespace)}`` of an ONNX ``ModelProto`` exported by this module."""
    return {n.name: node_stage({p.key: p.value for p in n.metadata_props}.get("namespace", "")) for n in model.graph.node}


def require_onnx() -> None:
    """An ``ImportError`` naming the ``[onnx]`` extra unless ``onnx`` and ``onnxscript`` are installed."""
    missing = [name for name in ("onnx", "onnxscript") if _find(name) is None]
    if missing:
        raise ImportError(
            f"ONNX export needs {', '.join(missing)}: install the extra with "
            "`pip install -c constraints.txt \"pyg_sdfl[onnx]\"`"
        )


def _find(name: str) -> Any:
    import importlib.util

    return importlib.util.find_spec(name)


def first_error_line(err: BaseException) -> str:
    """The first line of an error's text (ONNX tooling errors run to pages), or its type's name."""
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _plain(value: Any) -> Any:
    """JSON-ready copy: tensors -> lists, everything else kept."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if torch.is_tensor(value):
        return value.tolist()
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


def _metadata(loaded: LoadedModel, opset: int) -> Dict[str, str]:
    from omegaconf import OmegaConf

    cfg = loaded.config  # only the model's sections: data paths may be unset (exported files carry none)
    dataset = {k: cfg.dataset[k] for k in ("name", "scheme", "image_size", "crop_scale", "annotation_offset_x") if k in cfg.dataset}
    config = model_config({"dataset": dataset, **{k: OmegaConf.to_container(cfg[k], resolve=True)
                                                  for k in ("backbone", "head", "graph") if k in cfg}})
    graph = {k: v for k, v in loaded.graph.to_dict().items() if k != "correlation"}
    meta = {
        "source": loaded.path.name,
        "source_sha256": _sha256(loaded.path) if loaded.path.is_file() else None,
        "source_kind": loaded.kind,
        "source_epoch": loaded.epoch,
        "source_meta": loaded.meta,
        "opset": opset,
        "exported_at_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "exported_on": f"{platform.platform()}, {platform.machine()}",
        "versions": {"pyg_sdfl": __version__, "torch": torch.__version__},
    }
    values = {
        "format": FORMAT,
        "scheme": loaded.scheme.name,
        "image_size": str(loaded.image_size),
        "num_points": str(loaded.scheme.num_points),
        "config": json.dumps(_plain(config)),
        "graph": json.dumps(_plain(graph)),
        "box_mapping": json.dumps(_plain(loaded.box_mapping)),
        "meta": json.dumps(_plain(meta), default=str),
    }
    return {METADATA_PREFIX + k: v for k, v in values.items()}


def onnx_model_bytes(loaded: LoadedModel, opset: int = ONNX_OPSET) -> bytes:
    """The serialised ONNX model (with its metadata) of a loaded torch model; the model is moved
    to the CPU in fp32 with its SDFL heads on the fused path. Takes a few seconds."""
    require_onnx()
    import onnx

    if loaded.backend != "torch":
        raise ValueError(f"{loaded.path} is already an ONNX model: export its torch checkpoint or weights file instead")
    model = copy.deepcopy(loaded.model).float().cpu().eval()  # the caller's model keeps its device, mode and path
    use_graph_backend(model, "fused")
    s = loaded.image_size
    example = torch.zeros(2, 3, s, s)
    batch = torch.export.Dim("batch", min=1, max=65536)
    buffer = io.BytesIO()
    # the exporter's passes log at INFO every node they remove and every constant they leave to ONNX
    # Runtime (the folded graph layers' weight products, folded when a session loads): warnings only,
    # unless the caller set these loggers' levels
    quiet = [log_ for log_ in map(logging.getLogger, ("onnxscript", "onnx_ir")) if log_.level == logging.NOTSET]
    try:
        for log_ in quiet:
            log_.setLevel(logging.WARNING)
        with torch.no_grad():
            model(example)  # an eager pass first: the heads build their cached tables outside the trace
            try:
                program = torch.onnx.export(model, (example,), dynamo=True, opset_version=int(opset),
                                            input_names=["images"], output_names=["landmarks"],
                                            dynamic_shapes={"images": {0: batch}}, verbose=False)
            except Exception as err:  # the exporter's own error types, pages long: one line and the cause
                raise RuntimeError(f"ONNX export of {loaded.path} failed: {first_error_line(err)}") from err
    finally:
        for log_ in quiet:
            log_.setLevel(logging.NOTSET)
    proto = program.model_proto
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), int(opset))  # what was written
    for key, value in _metadata(loaded, int(opset)).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "pyg_sdfl"
    proto.producer_version = __version__
    try:
        onnx.checker.check_model(proto)
    except Exception as err:  # onnx.checker.ValidationError is not a RuntimeError
        raise RuntimeError(f"the ONNX export of {loaded.path} is not a valid model: {first_error_line(err)}") from None
    buffer.write(proto.SerializeToString())
    return buffer.getvalue()


def check_parity(data: bytes, loaded: LoadedModel, atol_px: float) -> float:
    """Largest |ORT - torch| in pixels on random crops at batch 1 and 3 (ValueError above ``atol_px``)."""
    from pyg_sdfl.engine.onnx_runtime import OnnxLandmarkModel

    runtime = OnnxLandmarkModel(data, name="export check")
    model = copy.deepcopy(loaded.model).float().cpu().eval()  # what was exported, whatever the caller's mode
    g = torch.Generator().manual_seed(0)
    s = loaded.image_size
    worst = 0.0
    with torch.no_grad():
        for b in (1, 3):
            x = torch.randn(b, 3, s, s, generator=g)
            worst = max(worst, float((runtime(x) - model(x)).abs().max()))
    if not worst <= atol_px:
        raise ValueError(f"the ONNX export differs from the torch model by {worst:.3g} px (> {atol_px} px); not written")
    return worst


def export_onnx(
    source: Union[str, os.PathLike, LoadedModel],
    out: Union[str, os.PathLike],
    opset: int = ONNX_OPSET,
    check: bool = True,
    atol_px: float = PARITY_ATOL_PX,
) -> Path:
    """Write ``source`` (a training checkpoint, an exported weights file or a :class:`LoadedModel`)
    as the ONNX file ``out`` (see the module docstring). With ``check`` (and ONNX Runtime
    installed) the file is written only if ONNX Runtime reproduces the torch output within
    ``atol_px`` pixels. Returns ``out``."""
    loaded = source if isinstance(source, LoadedModel) else load_model(source)
    data = onnx_model_bytes(loaded, opset)
    if check:
        if _find("onnxruntime") is None:
            log.warning("onnxruntime is not installed: the ONNX file is written without the parity check")
        else:
            worst = check_parity(data, loaded, atol_px)
            log.info("ONNX Runtime vs torch on random crops: max |difference| %.2g px", worst)
    return write_model_file(data, out)


def write_model_file(data: bytes, out: Union[str, os.PathLike]) -> Path:
    """Write ``data`` to ``out`` through a temporary file in its folder and a rename (a crash leaves no
    half-written model), readable by all (0644); returns ``out``."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, out)
    out.chmod(0o644)
    return out
