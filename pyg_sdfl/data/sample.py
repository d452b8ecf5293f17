"""One annotated face: the common type every reader returns.

Coordinates follow one convention throughout ``pyg_sdfl.data``: 0-based pixel *centres*, so the
top-left pixel of an image is centred on ``(0, 0)`` and covers ``[-0.5, 0.5]^2``. This is
OpenCV's convention for ``warpAffine`` and ``flip``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

__all__ = [
    "FaceSample",
    "ImageLoadError",
    "ImageSource",
    "as_rgb_uint8",
    "check_points",
    "probe_image",
    "read_image",
    "stack_landmarks",
]

ImageSource = Union[str, Path, np.ndarray, Callable[[], np.ndarray]]

# IMREAD_IGNORE_ORIENTATION: annotations refer to the stored pixel grid, not an EXIF-rotated one.
_IMREAD_FLAGS = cv2.IMREAD_COLOR_RGB | cv2.IMREAD_IGNORE_ORIENTATION


class ImageLoadError(RuntimeError):
    """An image that is missing, unreadable or not an ``H x W x 3`` uint8 picture."""


def check_points(points: Any, where: str, num_points: Optional[int] = None) -> np.ndarray:
    """Return ``points`` as float32 ``(N, 2)``; ``ValueError`` naming ``where`` otherwise.

    Checks the shape, the expected count ``num_points`` (when given) and that every coordinate
    is finite.
    """
    arr = np.asarray(points, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"{where}: landmarks must have shape (N, 2), got {arr.shape}")
    if num_points is not None and arr.shape[0] != num_points:
        raise ValueError(f"{where}: expected {num_points} landmarks, found {arr.shape[0]}")
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        raise ValueError(
            f"{where}: non-finite (NaN or infinite) coordinates at landmark indices {np.flatnonzero(bad).tolist()}"
        )
    return arr


def as_rgb_uint8(image: Any, where: str) -> np.ndarray:
    """Check/convert an in-memory image to ``(H, W, 3)`` uint8 RGB.

    Grayscale ``(H, W)`` or ``(H, W, 1)`` is repeated to three channels. Anything else (other
    dtypes, 4 channels, empty) raises :class:`ImageLoadError`.
    """
    if not isinstance(image, np.ndarray):
        raise ImageLoadError(f"{where}: expected a numpy image, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ImageLoadError(f"{where}: image dtype must be uint8, got {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] == 0 or image.shape[1] == 0:
        raise ImageLoadError(f"{where}: image must be (H, W, 3) RGB, got shape {image.shape}")
    return image


def read_image(path: Union[str, Path]) -> np.ndarray:
    """Decode an image file with OpenCV to ``(H, W, 3)`` uint8 RGB.

    Raises :class:`ImageLoadError` if the file is missing or cannot be decoded.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageLoadError(f"image file not found: {path}")
    image = cv2.imread(str(path), _IMREAD_FLAGS)
    if image is None:
        raise ImageLoadError(f"cannot decode image file (corrupt or not an image): {path}")
    return image


def probe_image(path: Union[str, Path]) -> Tuple[int, int]:
    """Cheap readability check: ``(width, height)`` from the file header, without decoding pixels.

    Catches missing files, non-image files and broken headers (not damage deeper in the pixel
    data, which :func:`read_image` reports at load time).
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise ImageLoadError(f"image file not found: {path}")
    try:
        with Image.open(path) as im:
            width, height = im.size
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ImageLoadError(f"cannot read image header (corrupt or not an image): {path}: {exc}") from exc
    if width <= 0 or height <= 0:
        raise ImageLoadError(f"image has no pixels: {path}")
    return width, height


@dataclass
class FaceSample:
    """An annotated face.

    Attributes:
        image: where the pixels come from: a file path (decoded lazily by :meth:`load_image`), an
            ``(H, W, 3)`` uint8 RGB array, or a zero-argument callable returning one.
        landmarks: float32 ``(N, 2)``, 0-based pixel centres ``(x, y)`` in the image.
        box: optional float32 ``(4,)`` face box ``x0, y0, x1, y1`` (as given by the dataset;
            crops use the landmarks, not this box).
        attributes: free-form per-face annotations, e.g. WFLW's ``{"pose": 1, "blur": 0, ...}``.
        subsets: evaluation subsets the face belongs to, e.g. ``("lfpw",)`` or ``("pose", "blur")``.
        name: an identifier, unique within the dataset it was read from.
        occluded: optional bool ``(N,)`` per-landmark occlusion flags (COFW).
    """

    image: ImageSource
    landmarks: np.ndarray
    box: Optional[np.ndarray] = None
    attributes: Dict[str, Any] = field(default_factory=dict)
    subsets: Tuple[str, ...] = ()
    name: str = ""
    occluded: Optional[np.ndarray] = None

    def __post_init__(self) -> None:
        where = f"face sample {self.name!r}"
        self.landmarks = check_points(self.landmarks, where)
        if self.box is not None:
            box = np.asarray(self.box, dtype=np.float32).reshape(-1)
            if box.shape != (4,) or not np.isfinite(box).all():
                raise ValueError(f"{where}: box must be 4 finite numbers x0, y0, x1, y1, got {self.box!r}")
            if box[2] < box[0] or box[3] < box[1]:
                raise ValueError(f"{where}: box {box.tolist()} has x1 < x0 or y1 < y0")
            self.box = box
        if self.occluded is not None:
            occ = np.asarray(self.occluded).reshape(-1)
            if occ.shape != (self.landmarks.shape[0],):
                raise ValueError(
                    f"{where}: occluded has {occ.shape[0]} flags for {self.landmarks.shape[0]} landmarks"
                )
            self.occluded = occ.astype(bool)
        if isinstance(self.subsets, str):
            self.subsets = (self.subsets,)
        self.subsets = tuple(str(s) for s in self.subsets)
        if isinstance(self.image, (str, Path)):
            self.image = Path(self.image)
        elif not (isinstance(self.image, np.ndarray) or callable(self.image)):
            raise TypeError(f"{where}: image must be a path, an array or a callable, got {type(self.image).__name__}")

    def __repr__(self) -> str:
        if isinstance(self.image, np.ndarray):
            image = f"array{self.image.shape}"
        elif isinstance(self.image, Path):
            image = str(self.image)
        else:
            image = "<callable>"
        return (
            f"FaceSample(name={self.name!r}, image={image}, {self.num_points} landmarks, "
            f"subsets={self.subsets}, box={None if self.box is None else self.box.tolist()})"
        )

    @property
    def num_points(self) -> int:
        return int(self.landmarks.shape[0])

    def load_image(self) -> np.ndarray:
        """The pixels as ``(H, W, 3)`` uint8 RGB; :class:`ImageLoadError` when they cannot be had.

        In-memory arrays are returned as they are (not copied): do not modify them in place.
        """
        where = f"face sample {self.name!r}"
        source = self.image
        if isinstance(source, Path):
            try:
                return read_image(source)
            except ImageLoadError as exc:
                raise ImageLoadError(f"{where}: {exc}") from None
        if isinstance(source, np.ndarray):
            return as_rgb_uint8(source, where)
        try:
            image = source()
        except ImageLoadError:
            raise
        except Exception as exc:  # a generator's own failure, reported as this face's image failing
            raise ImageLoadError(f"{where}: the image callable raised {type(exc).__name__}: {exc}") from exc
        return as_rgb_uint8(image, where)


def stack_landmarks(samples: Sequence[FaceSample]) -> np.ndarray:
    """All faces' landmarks as float64 ``(M, N, 2)``; ``ValueError`` if counts differ or it is empty."""
    if len(samples) == 0:
        raise ValueError("no samples to stack")
    counts = {s.landmarks.shape[0] for s in samples}
    if len(counts) != 1:
        raise ValueError(f"samples have different numbers of landmarks: {sorted(counts)}")
    return np.stack([np.asarray(s.landmarks, dtype=np.float64) for s in samples])
