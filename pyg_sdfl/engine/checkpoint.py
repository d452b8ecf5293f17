"""Checkpoints: written atomically, read strictly, loadable with ``torch.load(weights_only=True)``.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts:

    {"format": 1, "model": state_dict, "optimizer": ..., "scheduler": ..., "epoch": int,
     "best": {"epoch": int, "val_nme": float}, "rng": {...}, "graph": LandmarkGraph.to_dict(),
     "scheme": "300w", "config": resolved config as a dict, "history": [...], "meta": {...}}

An exported weights file (:mod:`pyg_sdfl.engine.export`) is the same kind of dict with
``"kind": "pyg_sdfl.pretrained"``, fp16 tensors (or int8 weights with per-channel scales in
``"int8_scales"``, ``"format": 2``: :mod:`pyg_sdfl.engine.weight_storage`) and only the model part
of the config. :func:`load_checkpoint` reads int8-stored weights back to fp32.
:func:`load_model` is the one function that turns either kind back into a model.
"""
from __future__ import annotations

import os
import pickle
import random
import tempfile
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from pyg_sdfl.config import CONFIG_DIR, compose
from pyg_sdfl.engine.builders import build_model
from pyg_sdfl.engine.weight_storage import INT8_STORAGE_FORMAT, read_stored_state
from pyg_sdfl.graph import LandmarkGraph
from pyg_sdfl.schemes import LandmarkScheme, get_scheme

__all__ = [
    "BACKENDS",
    "CheckpointError",
    "float_state",
    "resolve_backend",
    "save_checkpoint",
    "load_checkpoint",
    "load_state_dict_strict",
    "LoadedModel",
    "load_model",
    "complete_config",
    "EXPORTED_KIND",
    "capture_rng_state",
    "restore_rng_state",
    "remove_stale_temporaries",
]

FORMAT_VERSION = 1  # what save_checkpoint writes unless the payload names its own format
NEWEST_FORMAT = INT8_STORAGE_FORMAT  # the newest format load_checkpoint reads (2: int8-stored weights)
EXPORTED_KIND = "pyg_sdfl.pretrained"  # the "kind" entry of an exported weights file
MODEL_SECTIONS = ("backbone", "head")  # taken whole from a file's config, never merged with defaults


_TEMPORARY_SUFFIX = ".tmp"  # save_checkpoint writes ".<name>.<random>.tmp" next to <name>, then renames it


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used as asked: missing, corrupt, or incompatible."""


def save_checkpoint(state: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write ``state`` to ``path`` atomically: a temporary file in the same folder, then rename.

    A crash mid-write leaves the previous checkpoint intact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT_VERSION, **state}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=_TEMPORARY_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def remove_stale_temporaries(folder: str | os.PathLike) -> List[Path]:
    """Delete the ``.<name>.*.tmp`` files that :func:`save_checkpoint` left in ``folder`` when it
    was killed mid-write (each is as large as a checkpoint); returns the deleted paths.

    Only for a folder no process is writing to (a locked run folder, or a run being resumed).
    """
    stale = sorted(p for p in Path(folder).glob(f".*.ckpt.*{_TEMPORARY_SUFFIX}") if p.is_file())
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``; one clear line for missing or foreign files.

    Weights stored in int8 (``"int8_scales"``, :mod:`pyg_sdfl.engine.weight_storage`) come back in
    fp32 as ``s_o q`` and the scales entry is dropped, so every reader sees float tensors; an int8
    tensor without its scale is a :class:`CheckpointError`.

    Never falls back to ``weights_only=False`` (which can run arbitrary code) and never advises it.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, not a checkpoint file (a run folder holds best.ckpt and last.ckpt)")
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"cannot read checkpoint {path}: the file is empty (0 bytes; an interrupted copy?)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:  # torch's message advises weights_only=False: never repeat that
        raise CheckpointError(f"{path} is not a pyg_sdfl checkpoint: not a torch file of tensors and plain values "
                              f"({type(err).__name__})") from None
    except Exception as err:  # truncated files, foreign formats
        raise CheckpointError(f"cannot read checkpoint {path} (truncated, or not a torch file): "
                              f"{type(err).__name__}: {err}") from None
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{path} is not a pyg_sdfl checkpoint (no 'model' entry)")
    if state.get("format", 0) > NEWEST_FORMAT:
        raise CheckpointError(f"{path} has format {state['format']}, newer than this pyg_sdfl reads ({NEWEST_FORMAT})")
    try:  # int8-stored weights (engine.weight_storage) read back in fp32; int8 without scales is refused
        state["model"] = read_stored_state(state["model"], state.pop("int8_scales", {}))
    except ValueError as err:
        raise CheckpointError(f"{path}: {err}") from None
    return state


def load_state_dict_strict(module: nn.Module, state_dict: Mapping[str, torch.Tensor], what: str = "model") -> None:
    """``load_state_dict(strict=True)`` with an error that lists missing, unexpected and mis-shaped keys."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    mis_shaped = sorted(
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(own) & set(state_dict)
        if hasattr(state_dict[k], "shape") and tuple(state_dict[k].shape) != tuple(own[k].shape)
    )
    if missing or unexpected or mis_shaped:
        parts = []
        for label, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", mis_shaped)):
            if keys:
                shown = ", ".join(keys[:10]) + (f", ... ({len(keys)} in all)" if len(keys) > 10 else "")
                parts.append(f"{label}: {shown}")
        raise CheckpointError(f"the checkpoint's {what} does not match the configured {what}; " + "; ".join(parts))
    module.load_state_dict(state_dict, strict=True)


def complete_config(stored: Mapping[str, Any]) -> DictConfig:
    """A file's stored config on top of the package defaults for its dataset.

    Training checkpoints store the whole resolved config; exported files only the model part
    (``dataset.{name, scheme, image_size, crop_scale, annotation_offset_x}``, ``backbone``, ``head``, ``graph``). Both
    come back as a complete config, so every reader finds every declared key (``evaluate.*``,
    ``train.precision``, ``dataset.split_seed``, ...), also for files written before a key was
    declared; a missing ``train`` section comes from ``train=quick`` (fp32). ``backbone`` and
    ``head`` are taken whole (a stored FC head must not gain the SDFL
    head's options); every other section is merged key by key, the file winning.
    """
    stored = OmegaConf.to_container(OmegaConf.create(dict(stored)), resolve=False)
    name = str((stored.get("dataset") or {}).get("name", ""))
    overrides = [f"dataset={name}"] if (CONFIG_DIR / "dataset" / f"{name}.yaml").is_file() else []
    overrides.append("train=quick")  # fp32 evaluation unless the file says otherwise (not the first run's "auto")
    base = OmegaConf.create(OmegaConf.to_container(compose(overrides), resolve=False))
    for key in MODEL_SECTIONS:
        if key in stored and key in base:
            del base[key]
    return OmegaConf.merge(base, stored)


@dataclass(eq=False)
class LoadedModel:
    """A model rebuilt from a training checkpoint or an exported file, in eval mode on ``device``.

    Attributes:
        model: the :class:`~pyg_sdfl.nn.model.LandmarkModel`, fp32, ``(B, 3, S, S)`` -> ``(B, N, 2)``
            crop pixels.
        graph: the landmark graph it was trained with.
        scheme: its landmark scheme.
        config: :func:`complete_config` of the file's config.
        path: the file.
        kind: ``"training"`` (a run's ``best.ckpt``/``last.ckpt``) or ``"exported"``.
        epoch: the epoch of the weights (a training checkpoint's best epoch if it records one).
        box_mapping: the detector-box mapping stored in the file (a dict), or ``None``.
        meta: the file's provenance (``meta`` entry), ``{}`` if none.
        backend: what runs ``model``: ``"torch"`` (an ``nn.Module`` of torch layers) or ``"onnx"``
            (an :class:`~pyg_sdfl.engine.onnx_runtime.OnnxLandmarkModel`, same contract, ONNX Runtime).
    """

    model: nn.Module
    graph: LandmarkGraph
    scheme: LandmarkScheme
    config: DictConfig
    path: Path
    kind: str
    epoch: Optional[int] = None
    box_mapping: Optional[Dict[str, Any]] = None
    meta: Dict[str, Any] = field(default_factory=dict)
    backend: str = "torch"

    @property
    def image_size(self) -> int:
        """Side ``S`` of the square crops the model takes."""
        return int(self.config.dataset.image_size)

    @property
    def crop_scale(self) -> float:
        """Crop side over the landmark-box side at training time."""
        return float(self.config.dataset.crop_scale)

    @property
    def annotation_offset_x(self) -> float:
        """Image pixels the training labels sat right of the mirror-symmetric content; test-time flip
        averaging imposes it. Files written before the key existed get their dataset's declared
        value (300-W: 0.89), which is right for any model scored against those labels; 0 where the
        dataset declares none."""
        return float(self.config.dataset.get("annotation_offset_x", 0.0))

    @property
    def edge_index(self) -> torch.Tensor:
        """The graph's ``(2, E)`` edges, row 0 source ``j``, row 1 target ``i``."""
        return self.graph.edge_index


#: what can run a loaded model: torch itself, or ONNX Runtime (the ``[onnx]`` extra)
BACKENDS = ("torch", "onnx")


def resolve_backend(path: str | os.PathLike, backend: Optional[str] = None,
                    device: str | torch.device = "cpu") -> str:
    """What runs the model in ``path``: ``backend`` checked against :data:`BACKENDS`, by default ``"onnx"``
    for a ``.onnx`` file and ``"torch"`` otherwise; a ``.onnx`` file on torch (:class:`CheckpointError`)
    or the onnx backend on a device other than the CPU (``ValueError``) is refused, before anything loads."""
    is_onnx = Path(path).suffix.lower() == ".onnx"
    backend = backend or ("onnx" if is_onnx else "torch")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}; got {backend!r}")
    if is_onnx and backend != "onnx":
        raise CheckpointError(f"{path} is an ONNX file: it runs on backend='onnx', not {backend!r}")
    if backend == "onnx" and torch.device(device).type != "cpu":
        raise ValueError(f"the onnx backend runs on the CPU; got device={str(device)!r} (use backend='torch' there)")
    return backend


def float_state(state: Mapping[str, Any]) -> Dict[str, Any]:
    """A state dict with its floating tensors in fp32 (exported files store fp16)."""
    return {k: (v.float() if torch.is_tensor(v) and v.is_floating_point() else v) for k, v in state.items()}


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu", backend: Optional[str] = None) -> LoadedModel:
    """The one loader: rebuild the model from a file's own config and graph, load its weights strictly.

    Works for training checkpoints and exported weights files (fp16 tensors are cast to fp32), and
    for ``.onnx`` files written by ``pyg-sdfl export --onnx``. ``backend`` (:data:`BACKENDS`;
    default ``"onnx"`` for a ``.onnx`` file, else ``"torch"``) says what runs the model: with
    ``"onnx"`` a torch file is exported to ONNX in memory (a few seconds) and run by ONNX Runtime
    on the CPU. Every failure is a :class:`CheckpointError` with one line naming the file and what
    is wrong (missing entries, a scheme the package does not know, keys or shapes that do not match).
    """
    path = Path(path)
    backend = resolve_backend(path, backend, device)
    if path.suffix.lower() == ".onnx":
        from pyg_sdfl.engine.onnx_runtime import load_onnx_model

        return load_onnx_model(path)
    loaded = _load_torch_model(path, device)
    if backend == "onnx":
        from dataclasses import replace

        from pyg_sdfl.engine.onnx_export import onnx_model_bytes
        from pyg_sdfl.engine.onnx_runtime import OnnxLandmarkModel

        runtime = OnnxLandmarkModel(onnx_model_bytes(loaded), name=f"{path} (as ONNX)")
        return replace(loaded, model=runtime, backend="onnx")
    return loaded


def _load_torch_model(path: Path, device: str | torch.device) -> LoadedModel:
    path = Path(path)
    ckpt = load_checkpoint(path, map_location="cpu")
    missing = [k for k in ("config", "graph", "scheme") if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path} lacks {missing}: it cannot be rebuilt into a model")
    stored = ckpt["config"]
    absent = [k for k in ("dataset", "backbone", "head") if k not in stored]
    if absent:
        raise CheckpointError(f"{path}: its config has no {absent} section")
    try:
        scheme = get_scheme(ckpt["scheme"])
    except (KeyError, ValueError) as err:
        raise CheckpointError(f"{path}: {err}") from None
    config = complete_config(stored)
    graph = LandmarkGraph.from_dict(ckpt["graph"])
    model = build_model(config, graph, scheme.num_points)
    load_state_dict_strict(model, float_state(ckpt["model"]))
    model.to(device).eval()
    best = ckpt.get("best") or {}
    epoch = best.get("epoch", ckpt.get("epoch", (ckpt.get("meta") or {}).get("epoch")))
    return LoadedModel(model=model, graph=graph, scheme=scheme, config=config, path=path,
                       kind="exported" if ckpt.get("kind") == EXPORTED_KIND else "training",
                       epoch=None if epoch is None else int(epoch), box_mapping=ckpt.get("box_mapping"),
                       meta=dict(ckpt.get("meta") or {}))


def capture_rng_state() -> Dict[str, Any]:
    """Python, NumPy and torch RNG states as weights_only-safe values."""
    np_state = np.random.get_state()
    state = {
        "python": _python_state_to_list(random.getstate()),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    random.setstate(_python_state_from_list(state["python"]))
    np_state = state["numpy"]
    np.random.set_state(("MT19937", np_state["keys"].cpu().numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached_gaussian"]))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def _python_state_to_list(state: tuple) -> list:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _python_state_from_list(state: list) -> tuple:
    version, internal, gauss = state
    return (version, tuple(internal), gauss)
