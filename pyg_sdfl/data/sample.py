"""One annotated face: the common type every reader returns, and the one way image files are read.

Coordinates follow one convention throughout ``pyg_sdfl.data``: 0-based pixel *centres*, so the
top-left pixel of an image is centred on ``(0, 0)`` and covers ``[-0.5, 0.5]^2``. This is
OpenCV's convention for ``warpAffine`` and ``flip``.

Image files (:func:`read_image`, :func:`probe_image`). OpenCV decodes a truncated JPEG without
an error: libjpeg prints "Premature end of JPEG file" (naming no file) and fills the missing
rows with grey. So before decoding, :func:`check_image_bytes` walks the file's structure, without
decoding pixels: a JPEG's marker segments and entropy-coded scans up to its end-of-image marker, a
PNG's chunks (length and CRC-32 of every critical chunk) up to ``IEND``. A file cut short or with
a damaged PNG chunk raises :class:`ImageLoadError` naming the file and the byte where it breaks.
Data after a JPEG's end-of-image marker (e.g. a phone's motion-photo video) is allowed. Other
formats are left to OpenCV's decoder, which returns nothing for what it cannot read.

Huge images. Pictures of up to :data:`MAX_IMAGE_PIXELS` (2^28, about 268 million pixels: 768 MiB
decoded as RGB; phones make 200 MP photos) are decoded at full resolution; larger ones raise
:class:`ImageLoadError` naming the file, its size and the limit, from the header, before any
memory is spent. PIL's own 179 MP "decompression bomb" refusal does not apply: JPEG and PNG sizes
come from the structure walk, other formats' from PIL's header reader with the refusal reported
as this limit's error.
"""
from __future__ import annotations

import io
import re
import struct
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

__all__ = [
    "FaceSample",
    "ImageLoadError",
    "ImageSource",
    "MAX_IMAGE_PIXELS",
    "as_rgb_uint8",
    "check_image_bytes",
    "check_image_size",
    "check_points",
    "probe_image",
    "read_image",
    "stack_landmarks",
]

ImageSource = Union[str, Path, np.ndarray, Callable[[], np.ndarray]]

# IMREAD_IGNORE_ORIENTATION: annotations refer to the stored pixel grid, not an EXIF-rotated one.
_IMREAD_FLAGS = cv2.IMREAD_COLOR_RGB | cv2.IMREAD_IGNORE_ORIENTATION

MAX_IMAGE_PIXELS = 2**28
"""The largest picture decoded, in pixels (width x height): 268,435,456, 768 MiB as RGB uint8."""

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers (they carry the size): C0-CF except DHT (C4), JPG (C8) and DAC (CC)
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# inside entropy-coded data 0xFF is always followed by 0x00 (stuffing) or a restart marker D0-D7:
# anything else is the marker that ends the scan
_JPEG_SCAN_END = re.compile(rb"\xff[^\x00\xd0-\xd7]")


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


def _jpeg_size(data: bytes, where: str) -> Tuple[int, int]:
    """Walk a JPEG's marker segments and scans to its end-of-image marker; its ``(width, height)``.

    Stray bytes between segments are skipped, as libjpeg does (with a warning) when decoding.
    """
    n = len(data)
    truncated = f"the file ends at byte {n}, before the end-of-image marker; an incomplete download or copy?"
    pos, size = 2, None
    while True:
        pos = data.find(b"\xff", pos)
        while 0 <= pos < n and data[pos] == 0xFF:  # fill bytes
            pos += 1
        if pos < 0 or pos >= n:
            raise ImageLoadError(f"truncated JPEG ({truncated}): {where}")
        marker = data[pos]
        pos += 1
        if marker == 0xD9:  # end of image
            break
        if marker == 0x00 or marker == 0x01 or 0xD0 <= marker <= 0xD7:  # no segment follows
            continue
        if pos + 2 > n:
            raise ImageLoadError(f"truncated JPEG ({truncated}): {where}")
        length = (data[pos] << 8) | data[pos + 1]
        if length < 2:
            raise ImageLoadError(f"corrupt JPEG (a segment of length {length} at byte {pos}): {where}")
        if pos + length > n:
            raise ImageLoadError(f"truncated JPEG (inside a segment that should end at byte {pos + length}; "
                                 f"{truncated}): {where}")
        if marker in _JPEG_SOF and length >= 7:
            height, width = struct.unpack_from(">HH", data, pos + 3)
            size = (width, height)
        pos += length
        if marker == 0xDA:  # start of scan: entropy-coded data up to the next marker
            found = _JPEG_SCAN_END.search(data, pos)
            if found is None:
                raise ImageLoadError(f"truncated JPEG (inside the compressed image data; {truncated}): {where}")
            pos = found.start()
    if size is None:
        raise ImageLoadError(f"corrupt JPEG (no frame header): {where}")
    return size


def _png_size(data: memoryview, where: str) -> Tuple[int, int]:
    """Walk a PNG's chunks to ``IEND``, checking every critical chunk's CRC; its ``(width, height)``."""
    n = len(data)
    pos, size = len(_PNG_SIGNATURE), None
    while True:
        if pos + 8 > n:
            raise ImageLoadError(f"truncated PNG (the file ends at byte {n}, before the IEND chunk; "
                                 f"an incomplete download or copy?): {where}")
        length, kind = struct.unpack_from(">I4s", data, pos)
        end = pos + 12 + length
        name = kind.decode("latin-1")
        if end > n:
            raise ImageLoadError(f"truncated PNG (the file ends at byte {n}, inside the {name} chunk that should "
                                 f"end at byte {end}; an incomplete download or copy?): {where}")
        # critical chunks (upper-case first letter) must be intact, as libpng requires
        if kind[0] < 0x60 and zlib.crc32(data[pos + 4:end - 4]) != struct.unpack_from(">I", data, end - 4)[0]:
            raise ImageLoadError(f"corrupt PNG (CRC mismatch in the {name} chunk at byte {pos}): {where}")
        if kind == b"IHDR" and length >= 8:
            size = struct.unpack_from(">II", data, pos + 8)
        if kind == b"IEND":
            break
        pos = end
    if size is None:
        raise ImageLoadError(f"corrupt PNG (no IHDR chunk): {where}")
    return int(size[0]), int(size[1])


def check_image_bytes(data: bytes, where: str) -> Optional[Tuple[int, int]]:
    """``(width, height)`` of a complete JPEG or PNG file's bytes, ``None`` for other formats.

    Walks the structure without decoding pixels (see the module docstring) and raises
    :class:`ImageLoadError` mentioning ``where`` (the file) for a file cut short or a damaged
    PNG chunk.
    """
    if data[:3] == b"\xff\xd8\xff":
        return _jpeg_size(data, where)
    if data[:8] == _PNG_SIGNATURE:
        return _png_size(memoryview(data), where)
    return None


def check_image_size(width: int, height: int, where: str, max_pixels: int = MAX_IMAGE_PIXELS) -> None:
    """:class:`ImageLoadError` naming ``where`` if ``width x height`` is empty or above ``max_pixels``."""
    if width <= 0 or height <= 0:
        raise ImageLoadError(f"image has no pixels ({width} x {height}): {where}")
    if width * height > max_pixels:
        raise ImageLoadError(
            f"image too large: {width} x {height} = {width * height / 1e6:.0f} million pixels, above the limit of "
            f"{max_pixels / 1e6:.0f} million ({3 * max_pixels / 2**20:.0f} MiB decoded); downscale it first: {where}"
        )


def _other_format_size(data: bytes, where: str) -> Tuple[int, int]:
    """Size from PIL's header reader (no pixels decoded), for formats other than JPEG and PNG."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                return im.size
    except Image.DecompressionBombError as exc:
        raise ImageLoadError(f"image too large ({exc}); downscale it first: {where}") from None
    except UnidentifiedImageError:
        raise ImageLoadError(f"cannot read image header (corrupt or not an image): {where}") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageLoadError(f"cannot read image header (corrupt or not an image): {where}: {exc}") from None


def _read_bytes(path: Union[str, Path]) -> Tuple[Path, bytes]:
    path = Path(path)
    if not path.is_file():
        raise ImageLoadError(f"image file not found: {path}")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageLoadError(f"cannot read image file {path}: {exc.strerror or exc}") from None
    if not data:
        raise ImageLoadError(f"image file is empty (0 bytes): {path}")
    return path, data


def read_image(path: Union[str, Path], apply_orientation: bool = False,
               max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Decode an image file with OpenCV to ``(H, W, 3)`` uint8 RGB.

    Raises :class:`ImageLoadError` naming the file if it is missing, truncated, corrupt, not an
    image, or larger than ``max_pixels`` (checked from the header for JPEG and PNG, after
    decoding for other formats; see the module docstring). ``apply_orientation`` rotates by the
    file's EXIF orientation (a photo as viewers show it); by default the stored pixel grid is
    returned, which is what dataset annotations refer to.
    """
    path, data = _read_bytes(path)
    size = check_image_bytes(data, str(path))
    if size is not None:
        check_image_size(size[0], size[1], str(path), max_pixels)
    flags = cv2.IMREAD_COLOR_RGB if apply_orientation else _IMREAD_FLAGS
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flags)
    if image is None:
        raise ImageLoadError(f"cannot decode image file (corrupt or not an image): {path}")
    if size is None:
        check_image_size(image.shape[1], image.shape[0], str(path), max_pixels)
    return image


def probe_image(path: Union[str, Path], max_pixels: int = MAX_IMAGE_PIXELS) -> Tuple[int, int]:
    """Readability check without decoding pixels: the file's ``(width, height)``.

    Reads the whole file and runs the checks of :func:`read_image` except the decoding: catches
    missing files, non-image files, broken headers, truncated JPEG and PNG files, damaged PNG
    chunks and pictures above ``max_pixels``. Damage inside a JPEG's compressed data, or in
    other formats, is reported by :func:`read_image` when the decoder rejects it.
    """
    path, data = _read_bytes(path)
    size = check_image_bytes(data, str(path)) or _other_format_size(data, str(path))
    check_image_size(size[0], size[1], str(path), max_pixels)
    return size


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
