"""Files shipped with the package for inference on arbitrary photos.

    sdfl_300w.pt             a trained 300-W model in fp16 (see :mod:`pyg_sdfl.engine.export`),
                             loaded by ``Landmarker.from_pretrained("300w")``
    haar_box_mapping.json    Haar face box -> landmark square, fitted on the 300-W training
                             set (``pyg-sdfl fit-box-mapping``)
"""
from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Dict, List

__all__ = ["PRETRAINED", "pretrained_path", "available_pretrained"]

# name accepted by Landmarker.from_pretrained -> file in this folder
PRETRAINED: Dict[str, str] = {"300w": "sdfl_300w.pt"}


def pretrained_path(name: str) -> Path:
    """Path of the shipped weights ``name`` (whether or not the file is present)."""
    if name not in PRETRAINED:
        raise ValueError(f"unknown pretrained model {name!r}; known: {sorted(PRETRAINED)}")
    return Path(str(files(__name__) / PRETRAINED[name]))


def available_pretrained() -> List[str]:
    """Names whose weights file is present in this installation."""
    return [name for name in PRETRAINED if pretrained_path(name).is_file()]
