"""Reference landmark shapes to mine graphs from: real 300-W / WFLW annotations, or synthetic faces
when they are absent (``notebooks/landmark_graph.ipynb``)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np

from pyg_sdfl.schemes import LandmarkScheme, get_scheme

__all__ = ["ShapeSet", "load_reference_shapes"]

PathLike = Union[str, Path]


@dataclass(frozen=True, eq=False)
class ShapeSet:
    """Landmark shapes of one dataset in the frame of their own crop.

    Attributes:
        name: ``"300w"``, ``"wflw"`` or ``"synthetic"``.
        scheme: the landmark scheme.
        shapes: ``(M, N, 2)`` float64, each face in its own square crop (``crop_scale`` x the landmark
            box), centred on the box centre, in units of the crop side (so values lie in about
            ``[-0.5, 0.5]``; y points down). This is the frame the engine mines graphs in.
        source: a sentence saying where the shapes come from.
        real: ``True`` for human annotations, ``False`` for the synthetic fallback.
    """

    name: str
    scheme: LandmarkScheme
    shapes: np.ndarray
    source: str
    real: bool

    @property
    def mean_shape(self) -> np.ndarray:
        """``(N, 2)`` mean of :attr:`shapes`."""
        return self.shapes.mean(axis=0)


def load_reference_shapes(
    dataset: str,
    data_dir: Optional[PathLike] = None,
    crop_scale: float = 1.2,
    synthetic_faces: int = 1000,
    fallback: bool = True,
) -> Optional[ShapeSet]:
    """Real annotations to mine graphs from, or synthetic faces when they are absent.

    * ``"300w"``: every ``.pts`` under ``data_dir/300w/train`` (68 points).
    * ``"wflw"``: the six WFLW test attribute lists in ``data_dir/wflw-annotations``, each distinct
      face once (98 points). No images are needed.

    When the folder is missing (or ``data_dir`` is ``None``) and ``fallback`` is true, ``"300w"`` falls
    back to ``synthetic_faces`` procedurally generated 68-point faces (``real=False``) and ``"wflw"``
    returns ``None`` (there is no synthetic 98-point face). Only landmarks are read, never images.
    """
    from pyg_sdfl.data.readers import load_dataset, read_wflw_attribute_lists
    from pyg_sdfl.engine.builders import normalised_shapes

    data = Path(data_dir) if data_dir is not None else None
    if dataset == "300w":
        root = data / "300w" if data is not None else None
        if root is not None and (root / "train").is_dir():
            samples = load_dataset("300w", root, "train")
            parts = sorted({s.subsets[0] for s in samples if s.subsets})
            source = f"300-W training annotations ({len(samples)} faces: {', '.join(parts)})"
            return ShapeSet("300w", get_scheme("300w"), normalised_shapes(samples, crop_scale), source, True)
    elif dataset == "wflw":
        root = data / "wflw-annotations" if data is not None else None
        if root is not None and root.is_dir():
            samples = read_wflw_attribute_lists(root, image_root=root)
            source = f"WFLW test annotations ({len(samples)} distinct faces of the six attribute lists)"
            return ShapeSet("wflw", get_scheme("wflw"), normalised_shapes(samples, crop_scale), source, True)
    else:
        raise ValueError(f"unknown reference dataset {dataset!r}; expected '300w' or 'wflw'")
    if not fallback or dataset == "wflw":
        return None
    from pyg_sdfl.data.synthetic import SyntheticFaces

    if int(synthetic_faces) < 2:
        raise ValueError(f"synthetic_faces must be >= 2 to compute correlations; got {synthetic_faces}")
    faces = SyntheticFaces(int(synthetic_faces), seed=0)
    source = (f"SYNTHETIC faces ({len(faces)} procedurally generated 68-point shapes): the real 300-W "
              "annotations were not found")
    return ShapeSet("synthetic", get_scheme("300w"), normalised_shapes(list(faces), crop_scale), source, False)

