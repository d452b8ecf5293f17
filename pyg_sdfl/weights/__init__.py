"""Files shipped with the package for inference on arbitrary photos.

    sdfl_300w.pt             the accurate 300-W model (ResNet-18, 256 px) in fp16 (see
                             :mod:`pyg_sdfl.engine.export`): ``Landmarker.from_pretrained("300w")``
    sdfl_300w_160.pt         the accurate network at 160 px, 2.5x fewer FLOPs than sdfl_300w.pt (the
                             file shipped as sdfl_300w.pt until 2026-12-07, commit a93cf26; its weight
                             tensors stored in int8 with per-channel scales, :mod:`pyg_sdfl.engine.weight_storage`):
                             ``Landmarker.from_pretrained("300w-160")``
    sdfl_300w_fast.pt        the small, fast 300-W model (half-width MobileNetV2, 128 px, the light
                             head, distilled from the 160 px sdfl_300w.pt shipped until 2026-12-07, commit a93cf26 (now sdfl_300w_160.pt):
                             ``experiment=fast_300w_light_distill``):
                             ``Landmarker.from_pretrained("300w-fast")``
    sdfl_300w_fast_160.pt    the same network at 160 px, distilled the same way: more accurate than
                             300w-fast, 1.4x its time (``experiment=fast_300w_light_distill
                             dataset.image_size=160``): ``Landmarker.from_pretrained("300w-fast-160")``
    <detector>_box_mapping.json
                             that detector's box -> landmark square (haar, yuface, mtcnn, dlib),
                             fitted on the 300-W training set with the detector's settings
                             (``pyg-sdfl fit-box-mapping --detector NAME``)
"""
from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Dict, List

__all__ = ["PRETRAINED", "pretrained_path", "available_pretrained"]

# name accepted by Landmarker.from_pretrained -> file in this folder
PRETRAINED: Dict[str, str] = {"300w": "sdfl_300w.pt", "300w-160": "sdfl_300w_160.pt",
                              "300w-fast": "sdfl_300w_fast.pt", "300w-fast-160": "sdfl_300w_fast_160.pt"}


def pretrained_path(name: str) -> Path:
    """Path of the shipped weights ``name`` (whether or not the file is present)."""
    if name not in PRETRAINED:
        raise ValueError(f"unknown pretrained model {name!r}; known: {sorted(PRETRAINED)}")
    return Path(str(files(__name__) / PRETRAINED[name]))


def available_pretrained() -> List[str]:
    """The names ``Landmarker.from_pretrained`` accepts here: those whose weights file is present
    (``"300w"`` accurate at 256 px, ``"300w-160"`` the accurate network at 160 px, ``"300w-fast"``
    small and fast, ``"300w-fast-160"`` the small network at 160 px; docs/predict.md#speed compares them)."""
    return [name for name in PRETRAINED if pretrained_path(name).is_file()]
