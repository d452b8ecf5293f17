"""Face crops for int8 calibration from a folder of unlabelled photos.

The static-int8 export (:mod:`pyg_sdfl.engine.onnx_quantize`) sets its activation ranges on face
crops. With the model's labelled dataset at hand they come from its training split
(``--calibration-root``); without it, :func:`calibration_crops_from_images` finds the faces in any
folder of photos and crops each as the training protocol crops a labelled face, around the
landmarks the fp32 model predicts for it instead of the labels::

    pyg-sdfl export --onnx --int8 --calibration-images photos/ --model 300w-160 --out sdfl_300w_160_int8.onnx

Each crop is the axis-aligned square of ``crop_scale`` x the landmark box, resized to the model's
input and ImageNet-normalised (the same :class:`~pyg_sdfl.data.LandmarkDataset` code that crops the
training faces, without augmentation). Images are visited spread evenly over the folder's sorted
files, one face each (the detector's most confident), until ``count`` faces are found; the images
left over fill in for those without a face.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Dict, List, Tuple, Union

import numpy as np

from pyg_sdfl.data import FaceSample, LandmarkDataset
from pyg_sdfl.data.sample import ImageLoadError
from pyg_sdfl.image_folder import find_images
from pyg_sdfl.inference import Landmarker

__all__ = ["calibration_crops_from_images", "visiting_order"]

log = logging.getLogger(__name__)


def visiting_order(num_images: int, count: int) -> List[int]:
    """Indices of ``num_images`` sorted files: ``count`` spread evenly first, then the others in order."""
    if num_images < 1 or count < 1:
        return list(range(max(num_images, 0)))
    first = list(dict.fromkeys(np.linspace(0, num_images - 1, min(count, num_images)).round().astype(int).tolist()))
    chosen = set(first)
    return first + [i for i in range(num_images) if i not in chosen]


def calibration_crops_from_images(landmarker: Landmarker, root: Union[str, os.PathLike], count: int,
                                  recursive: bool = True) -> Tuple[np.ndarray, Dict[str, Any]]:
    """``(K, 3, S, S)`` float32 crops of ``K <= count`` faces found in the images under ``root``, and
    a record of how they were found (``{"calibration_images", "images_visited", "faces",
    "images_without_face", "unreadable_images", "detector"}``).

    ``landmarker`` (an fp32 torch :class:`~pyg_sdfl.inference.Landmarker` of the model being
    quantised) detects and predicts each face; ``S`` is its input size. A ``ValueError`` names the
    folder when it holds no image or no face is found in any of them; unreadable files are skipped
    and counted.
    """
    if int(count) < 1:
        raise ValueError(f"calibration needs at least one face; got count={count!r}")
    paths = find_images(root, recursive=recursive)
    crops: List[np.ndarray] = []
    visited = without_face = unreadable = 0
    for index in visiting_order(len(paths), int(count)):
        if len(crops) >= int(count):
            break
        visited += 1
        try:
            image = landmarker.load_image(paths[index])
        except (ImageLoadError, OSError, ValueError) as err:
            unreadable += 1
            log.warning("calibration: skipping %s: %s", paths[index], err)
            continue
        faces = landmarker.predict(image)
        if not faces:
            without_face += 1
            continue
        sample = FaceSample(image=image, landmarks=faces[0].landmarks, name=str(paths[index]))
        crop = LandmarkDataset([sample], landmarker.scheme, landmarker.image_size, landmarker.crop_scale, augment=None)
        crops.append(crop[0]["image"].numpy())
        if visited % 16 == 0:
            log.info("calibration: %d of %d faces from %d images", len(crops), count, visited)
    if not crops:
        raise ValueError(f"no face found in the {visited} image(s) under {root} (detector {landmarker.detector_name}): "
                         "int8 calibration needs photos with faces")
    record = {"calibration_images": str(root), "images_visited": visited, "faces": len(crops),
              "images_without_face": without_face, "unreadable_images": unreadable,
              "detector": landmarker.detector_name}
    return np.stack(crops).astype(np.float32), record
