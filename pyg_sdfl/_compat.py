"""Import shims for this environment.

timm imports torchvision. The only torchvision matching torch 2.13 here is a CUDA build whose
compiled ops fail to load with the CPU torch, so ``import torchvision`` raises
``operator torchvision::nms does not exist``. When torchvision's ``_C`` library cannot be loaded,
we declare the op schemas ``torchvision::nms`` and ``torchvision::qnms`` with ``torch.library``
so that torchvision's pure-Python parts (all timm needs) import. Where torchvision works, this
module does nothing.
"""
from __future__ import annotations

import importlib.util
import os

import torch

__all__ = ["ensure_torchvision_importable", "import_timm"]

_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_library = None  # keeps the torch.library.Library alive: its definitions vanish with it


def _torchvision_ops_loadable() -> bool:
    """True if torchvision's compiled ``_C`` extension loads into this torch."""
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return True  # nothing to patch: timm will report the missing package itself
    folder = list(spec.submodule_search_locations)[0]
    candidates = [f for f in os.listdir(folder) if f.startswith("_C") and f.endswith((".so", ".pyd"))]
    if not candidates:
        return False
    try:
        torch.ops.load_library(os.path.join(folder, candidates[0]))
    except (OSError, RuntimeError):
        return False
    return True


def ensure_torchvision_importable() -> bool:
    """Make ``import torchvision`` succeed; returns True if a shim was installed.

    A no-op (returns False) when torchvision's ops already load or were already declared.
    """
    global _library
    if _library is not None:
        return True
    if _torchvision_ops_loadable():
        return False
    missing = [name for name in _SCHEMAS if not _op_exists(name)]
    if not missing:
        return False
    _library = torch.library.Library("torchvision", "DEF")
    for name in missing:
        _library.define(_SCHEMAS[name])
    return True


def _op_exists(name: str) -> bool:
    try:
        torch._C._dispatch_find_schema_or_throw(f"torchvision::{name}", "")
        return True
    except RuntimeError:
        return False


def import_timm():
    """Import and return timm, applying :func:`ensure_torchvision_importable` first."""
    ensure_torchvision_importable()
    import timm

    return timm
