"""Turn a training checkpoint into the compact weights file the package ships.

    pyg-sdfl export --checkpoint RUN/best.ckpt --metrics RUN/results.json \\
        --command "python experiments/run.py experiment=cpu_300w_160 dataset.root=..." \\
        --data "300-W train (afw, helen, lfpw), 10% held out for validation" --machine "2-core CPU"

The file is a plain dict (``torch.load(weights_only=True)`` reads it, and so does
:func:`pyg_sdfl.engine.checkpoint.load_checkpoint`)::

    {"format": 1, "kind": "pyg_sdfl.pretrained",
     "model": state dict, floating tensors in fp16 (fp32 where a value would overflow fp16),
              or with storage="int8" weight tensors in int8 ("format": 2, "int8_scales": {key: (O,) fp32}:
              :mod:`pyg_sdfl.engine.weight_storage`),
     "graph": LandmarkGraph.to_dict(), "scheme": "300w",
     "config": {"dataset": {name, scheme, image_size, crop_scale, annotation_offset_x}, "backbone": ..., "head": ..., "graph": ...},
     "box_mapping": BoxMapping.to_dict() or None,
     "meta": {provenance: command, data, protocol, machine, wall time, epoch, metrics, versions, ...}}

No optimiser state, RNG state or local paths of the training machine travel with it. The source may
also be an exported file (to change its storage): its provenance is carried over, and what is given
here is added to it.
"""
from __future__ import annotations

import datetime as _dt
import platform
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Union

import torch

from pyg_sdfl import __version__
from pyg_sdfl.detection.mapping import BoxMapping, load_default_box_mapping
from pyg_sdfl.engine.checkpoint import EXPORTED_KIND, CheckpointError, load_checkpoint, load_model, save_checkpoint
from pyg_sdfl.engine.weight_storage import INT8_STORAGE_FORMAT, store_state

__all__ = ["MAX_SHIPPED_MB", "export_pretrained", "model_config"]

MAX_SHIPPED_MB = 30.0


def model_config(config: Mapping[str, Any]) -> Dict[str, Any]:
    """The parts of a resolved training config needed to rebuild the model (no data paths)."""
    missing = [k for k in ("dataset", "backbone", "head") if k not in config]
    if missing:
        raise ValueError(f"the checkpoint's config lacks {missing}")
    dataset = config["dataset"]
    return {
        "dataset": {k: dataset[k] for k in ("name", "scheme", "image_size", "crop_scale", "annotation_offset_x") if k in dataset},
        "backbone": dict(config["backbone"]),
        "head": dict(config["head"]),
        "graph": dict(config.get("graph", {})),
    }


def _plain(value: Any) -> Any:
    """Nested dicts/lists of numbers and strings only (weights_only-safe)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, str):
        return str(value)  # also str subclasses such as torch.__version__
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if torch.is_tensor(value) and value.numel() == 1:
        return value.item()
    return str(value)


def export_pretrained(
    checkpoint: Union[str, Path],
    out: Union[str, Path],
    box_mapping: Any = "default",
    metrics: Optional[Mapping[str, Any]] = None,
    command: Optional[str] = None,
    data: Optional[str] = None,
    machine: Optional[str] = None,
    notes: Optional[str] = None,
    max_mb: Optional[float] = MAX_SHIPPED_MB,
    storage: str = "fp16",
) -> Path:
    """Write the shipped weights file ``out`` from training checkpoint ``checkpoint`` (or from an
    exported file, to change its storage; its provenance is kept and the given fields are added
    under ``meta["re_export"]``).

    Args:
        box_mapping: a :class:`~pyg_sdfl.detection.BoxMapping`, a path to its JSON, ``None`` (none
            stored), or ``"default"``: the package's ``haar_box_mapping.json`` if present (for an
            exported source: the mapping it stores, if any).
        metrics: validation/test metrics to record (e.g. the run's ``results.json``).
        command, data, machine, notes: provenance, stored as given (``machine`` defaults to a
            description of this machine, marked as the exporting one).
        max_mb: refuse (``ValueError``, nothing written) a file whose tensors exceed this size.
        storage: ``"fp16"`` or ``"int8"`` (weight tensors in int8 with per-channel scales, half the
            size; :mod:`pyg_sdfl.engine.weight_storage`).

    The written file is re-read and loaded strictly into a freshly built model before returning.
    """
    if Path(out).resolve() == Path(checkpoint).resolve():
        raise ValueError(f"export would overwrite its own source {checkpoint}: give another output file")
    ckpt = load_checkpoint(checkpoint, map_location="cpu")
    for key in ("config", "graph", "scheme"):
        if key not in ckpt:
            raise CheckpointError(f"{checkpoint} lacks {key!r}: not a pyg_sdfl training checkpoint")
    state, scales, kept_fp32 = store_state(ckpt["model"], storage)
    size_mb = sum(v.numel() * v.element_size() for v in (*state.values(), *scales.values()) if torch.is_tensor(v)) / 2**20
    if max_mb is not None and size_mb > max_mb:
        raise ValueError(f"the exported weights would take {size_mb:.1f} MB, over the {max_mb} MB limit")

    re_export = ckpt.get("kind") == EXPORTED_KIND
    if isinstance(box_mapping, str) and box_mapping == "default":
        if re_export:  # the mapping the file stores, or none if it stores none
            stored = ckpt.get("box_mapping")
            box_mapping = BoxMapping.from_dict(stored) if stored is not None else None
        else:
            box_mapping = load_default_box_mapping()
    elif isinstance(box_mapping, (str, Path)):
        box_mapping = BoxMapping.load(box_mapping)
    if box_mapping is not None and not isinstance(box_mapping, BoxMapping):
        raise ValueError(f"box_mapping must be a BoxMapping, a path, 'default' or None; got {type(box_mapping).__name__}")

    config = model_config(ckpt["config"])
    ds = config["dataset"]
    old_meta = dict(ckpt.get("meta") or {})
    if re_export:  # the training's provenance stays, what is given is added
        meta = _re_export_meta(old_meta, Path(checkpoint).name, command, data, machine, metrics, notes, storage,
                               kept_fp32)
        return _write(out, ckpt, state, scales, config, box_mapping, meta)
    meta = {
        "source_checkpoint": Path(checkpoint).name,
        "epoch": ckpt.get("epoch"),
        "best": _plain(ckpt.get("best")),
        "training_wall_time_s": old_meta.get("wall_time_s"),
        "training_device": old_meta.get("device"),
        "command": command,
        "data": data,
        "protocol": (f"square crop of {ds.get('crop_scale')} x the landmark box side, resized to "
                     f"{ds.get('image_size')} px; NME normalised by the inter-ocular distance (outer eye corners); "
                     "model selected on a validation split carved from the training set"),
        "machine": machine or f"(exported on) {platform.platform()}, {platform.processor() or platform.machine()}",
        "metrics": _plain(metrics) if metrics is not None else None,
        "training_config": _plain({k: ckpt["config"].get(k) for k in ("train", "loss", "seed")}),
        "notes": notes,
        "storage": _storage_note(storage, kept_fp32),
        "exported_at_utc": _now(),
        "versions": _versions(),
    }
    return _write(out, ckpt, state, scales, config, box_mapping, meta)


def _storage_note(storage: str, kept_fp32: list) -> str:
    note = {"fp16": "fp16", "int8": "int8 weights with per-channel fp32 scales, other tensors fp16"}[storage]
    return note + (f" (fp32: {kept_fp32})" if kept_fp32 else "")


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _versions() -> Dict[str, str]:
    return {"pyg_sdfl": __version__, "torch": torch.__version__}


def _re_export_meta(old: Dict[str, Any], source: str, command: Optional[str], data: Optional[str],
                    machine: Optional[str], metrics: Optional[Mapping[str, Any]], notes: Optional[str],
                    storage: str, kept_fp32: list) -> Dict[str, Any]:
    """An exported file's provenance, carried into its re-export: the given fields are added under
    ``re_export`` (the training's own command, data, machine and metrics stay as they were)."""
    meta = dict(old)
    meta["re_export"] = {
        "source": source, "source_storage": old.get("storage"), "source_exported_at_utc": old.get("exported_at_utc"),
        "source_versions": old.get("versions"), "earlier_re_export": old.get("re_export"),
        "command": command, "data": data, "machine": machine,
        "metrics": _plain(metrics) if metrics is not None else None, "notes": notes,
    }
    meta.update(storage=_storage_note(storage, kept_fp32), exported_at_utc=_now(), versions=_versions())
    return meta


def _write(out: Union[str, Path], ckpt: Mapping[str, Any], state: Dict[str, Any], scales: Dict[str, torch.Tensor],
           config: Dict[str, Any], box_mapping: Optional[BoxMapping], meta: Dict[str, Any]) -> Path:
    payload = {
        "kind": EXPORTED_KIND,
        "model": state,
        "graph": ckpt["graph"],
        "scheme": ckpt["scheme"],
        "config": config,
        "box_mapping": _plain(box_mapping.to_dict()) if box_mapping is not None else None,
        "meta": _plain(meta),
    }
    if scales:
        payload.update({"format": INT8_STORAGE_FORMAT, "int8_scales": scales})
    out = save_checkpoint(payload, out)
    out.chmod(0o644)  # a file to ship: readable by all (the atomic write creates it 0600)
    _verify(out)
    return out


def _verify(path: Path) -> None:
    """Re-read ``path`` with weights_only and load it strictly into a rebuilt model, or delete it and raise."""
    try:
        load_model(path)
    except Exception:
        path.unlink(missing_ok=True)
        raise
