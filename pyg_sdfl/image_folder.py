"""Landmarks for folders of images: find the files, decode them in worker processes, batch the faces.

    from pyg_sdfl.inference import Landmarker
    from pyg_sdfl.image_folder import JsonlWriter, completed_images, predict_directory

    lm = Landmarker.from_pretrained()
    done = completed_images("faces.jsonl")              # resume: the images already done
    with JsonlWriter("faces.jsonl", append=True) as out:
        for result in predict_directory(lm, "photos/", skip=done):
            out.write(result.to_record())              # {"image", "faces"} or {"image", "error"}

- :func:`find_images`: the image files under a folder (:data:`IMAGE_EXTENSIONS`, any case),
  sorted; hidden files and folders (names starting with ``.``, e.g. macOS ``._x.jpg``) are
  skipped and symbolic links to folders are not followed.
- :class:`ImageFiles` and :func:`iter_decoded`: each file decoded by
  :func:`~pyg_sdfl.data.sample.read_image` with its EXIF orientation applied (as
  :meth:`Landmarker.load_image <pyg_sdfl.inference.Landmarker.load_image>` does), in
  ``num_workers`` :class:`torch.utils.data.DataLoader` worker processes, in the files' order. A
  file that cannot be read never raises in a worker: its item carries the error message (which
  names the file) instead of the pixels.
- :func:`predict_images` / :func:`predict_directory`: decoded images are grouped ``batch_images``
  at a time and passed to ``landmarker.predict_batch``, so that the faces of several images share
  the model's forward passes; one :class:`ImageResult` per image, in order.
- :class:`JsonlWriter` and :func:`completed_images`: JSON Lines output written as it goes (one
  record per line, flushed), and the images a previous, possibly interrupted, run completed.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Set, Union

import numpy as np
from torch.utils.data import DataLoader, Dataset

from pyg_sdfl.data.sample import ImageLoadError, read_image

__all__ = [
    "IMAGE_EXTENSIONS",
    "DecodedImage",
    "ImageFiles",
    "ImageResult",
    "JsonlWriter",
    "completed_images",
    "find_images",
    "iter_decoded",
    "predict_directory",
    "predict_images",
    "read_jsonl",
]

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({
    ".jpg", ".jpeg", ".jpe",          # JPEG
    ".png",                           # PNG
    ".bmp", ".dib",                   # Windows bitmaps
    ".tif", ".tiff",                  # TIFF
    ".webp",                          # WebP
    ".jp2",                           # JPEG 2000
    ".avif",                          # AVIF
    ".gif",                           # GIF (first frame)
    ".pbm", ".pgm", ".ppm", ".pnm",   # portable any-map
    ".sr", ".ras",                    # Sun raster
    ".hdr", ".pic",                   # Radiance HDR (tone-mapped to 8 bits by OpenCV)
})
"""Lower-case file suffixes :func:`find_images` collects: the formats the pinned OpenCV build
(``opencv-python-headless`` 4.12) decodes. A file named on the command line is read whatever its
suffix; this set only decides which files of a folder are pictures."""

PathLike = Union[str, os.PathLike]


# ---------------------------------------------------------------------------- finding files
def find_images(root: PathLike, recursive: bool = True) -> List[Path]:
    """The image files in folder ``root`` (and its sub-folders when ``recursive``), sorted by path.

    A file is an image when its suffix, lower-cased, is in :data:`IMAGE_EXTENSIONS`. Hidden
    entries (names starting with ``.``) are skipped; symbolic links to folders are not followed
    (no loops), symbolic links to files are listed.

    Raises:
        FileNotFoundError: ``root`` does not exist.
        NotADirectoryError: ``root`` is a file.
        ValueError: ``root`` holds no image file (the message names the folder and the suffixes).
    """
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"image folder not found: {root}")
    if not root.is_dir():
        raise NotADirectoryError(f"not a folder: {root}")
    found: List[Path] = []
    for folder, dirs, files in os.walk(root, followlinks=False):
        dirs[:] = [d for d in dirs if not d.startswith(".")] if recursive else []
        base = Path(folder)
        found.extend(base / name for name in files
                     if not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS)
    if not found:
        where = "or its sub-folders " if recursive else ""
        raise ValueError(f"no image files in {root} {where}(looked for {', '.join(sorted(IMAGE_EXTENSIONS))}, any case)")
    return sorted(found)


# ---------------------------------------------------------------------------- decoding
@dataclass
class DecodedImage:
    """One file, decoded or not: ``image`` (``(H, W, 3)`` uint8 RGB) or ``error`` (a message naming
    the file), never both. ``index`` is its position in the list of paths."""

    index: int
    path: Path
    image: Optional[np.ndarray] = field(default=None, repr=False)
    error: Optional[str] = None


class ImageFiles(Dataset):
    """A map-style dataset of image files: item ``i`` is the :class:`DecodedImage` of ``paths[i]``.

    Decoding uses :func:`~pyg_sdfl.data.sample.read_image` (truncated JPEG/PNG files, empty files,
    non-images and pictures above its pixel limit are errors naming the file). ``__getitem__``
    never raises for a bad file: the error travels back as the item's ``error``, so a worker
    process survives any file.
    """

    def __init__(self, paths: Sequence[PathLike], apply_orientation: bool = True) -> None:
        self.paths = [Path(p) for p in paths]
        self.apply_orientation = bool(apply_orientation)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> DecodedImage:
        path = self.paths[index]
        try:
            image = read_image(path, apply_orientation=self.apply_orientation)
        except ImageLoadError as exc:
            return DecodedImage(index, path, error=str(exc))
        except Exception as exc:  # anything else a decoder throws (MemoryError, cv2.error): still this file's
            return DecodedImage(index, path, error=f"cannot read image file {path}: {type(exc).__name__}: {exc}")
        return DecodedImage(index, path, image=image)


def _keep(item: Any) -> Any:
    """The DataLoader's collate: items stay as they are (no conversion to tensors, no stacking)."""
    return item


def iter_decoded(paths: Sequence[PathLike], num_workers: int = 2, prefetch: int = 2,
                 apply_orientation: bool = True) -> Iterator[DecodedImage]:
    """Decode ``paths`` in order, ``num_workers`` files at a time in worker processes.

    ``num_workers=0`` decodes in this process. At most ``prefetch * num_workers`` decoded pictures
    wait in memory ahead of the consumer. The pixels come back through a pipe (NumPy arrays, not
    shared-memory tensors), so a small ``/dev/shm`` (containers) is no limit. With one path (or
    none) no worker is started.
    """
    if int(num_workers) < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers!r}")
    if int(prefetch) < 1:
        raise ValueError(f"prefetch must be >= 1, got {prefetch!r}")
    dataset = ImageFiles(paths, apply_orientation=apply_orientation)
    workers = min(int(num_workers), len(dataset)) if len(dataset) > 1 else 0
    if workers == 0:
        for index in range(len(dataset)):
            yield dataset[index]
        return
    loader = DataLoader(dataset, batch_size=None, shuffle=False, num_workers=workers, collate_fn=_keep,
                        prefetch_factor=int(prefetch), persistent_workers=False)
    yield from loader


# ---------------------------------------------------------------------------- prediction
@dataclass
class ImageResult:
    """The outcome for one image: ``faces`` (a list of :class:`~pyg_sdfl.inference.Face`, empty
    when none was found) or ``error`` (a message naming the file), never both. ``image`` is the
    decoded picture (``None`` on error), kept for drawing."""

    path: Path
    faces: Optional[List[Any]] = None
    error: Optional[str] = None
    image: Optional[np.ndarray] = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_record(self, decimals: int = 2) -> Dict[str, Any]:
        """``{"image", "faces": [Face.to_dict(), ...]}``, or ``{"image", "error"}`` for a failure."""
        if self.error is not None:
            return {"image": str(self.path), "error": self.error}
        return {"image": str(self.path), "faces": [f.to_dict(decimals) for f in self.faces or []]}


LandmarkerSource = Union[Any, Callable[[], Any]]


def _predict_chunk(landmarker: Any, chunk: List[DecodedImage], boxes: Optional[Any], box_type: str) -> List[ImageResult]:
    """Faces of every decoded image of ``chunk`` in one ``predict_batch`` call; when that raises a
    ``ValueError`` (a given box outside one of the images), image by image, so that only the
    images at fault fail."""
    try:
        per_image = landmarker.predict_batch([item.image for item in chunk],
                                             boxes=None if boxes is None else [boxes] * len(chunk), box_type=box_type)
    except ValueError as exc:
        if len(chunk) > 1:
            return [result for item in chunk for result in _predict_chunk(landmarker, [item], boxes, box_type)]
        path = chunk[0].path
        return [ImageResult(path, error=str(exc) if str(path) in str(exc) else f"{path}: {exc}")]
    return [ImageResult(item.path, faces=list(faces), image=item.image) for item, faces in zip(chunk, per_image)]


def predict_images(landmarker: LandmarkerSource, paths: Sequence[PathLike], batch_images: int = 8,
                   num_workers: int = 2, boxes: Optional[Any] = None,
                   box_type: str = "landmark") -> Iterator[ImageResult]:
    """Landmarks of every face in the image files ``paths``: one :class:`ImageResult` per path, in order.

    Files are decoded by :func:`iter_decoded` (``num_workers`` processes); readable ones are passed
    to ``landmarker.predict_batch`` ``batch_images`` at a time (the faces of all of them go through
    the model together). An unreadable file, or one that a given box does not fit, is a result with
    ``error``; the others are unaffected. A model error (or any other exception) ends the iteration.

    Args:
        landmarker: a :class:`~pyg_sdfl.inference.Landmarker`, or a zero-argument callable returning
            one: it is called once, with the first readable image, so that no model is loaded when
            no file can be read.
        boxes: ``None`` (the detector finds the faces), or ``(M, 4)`` boxes given to every image.
        box_type: how to read ``boxes`` (see :meth:`Landmarker.predict <pyg_sdfl.inference.Landmarker.predict>`).
    """
    if int(batch_images) < 1:
        raise ValueError(f"batch_images must be >= 1, got {batch_images!r}")
    model = landmarker if hasattr(landmarker, "predict_batch") else None
    pending: List[DecodedImage] = []  # in file order: errors wait behind the readable images before them

    def flush() -> Iterator[ImageResult]:
        nonlocal model
        readable = [item for item in pending if item.error is None]
        results: Dict[int, ImageResult] = {}
        if readable:
            if model is None:
                model = landmarker()
            results = {item.index: r for item, r in zip(readable, _predict_chunk(model, readable, boxes, box_type))}
        for item in pending:
            yield results[item.index] if item.error is None else ImageResult(item.path, error=item.error)
        pending.clear()

    ready = 0
    for item in iter_decoded(paths, num_workers=num_workers):
        pending.append(item)
        ready += item.error is None
        if ready >= batch_images:
            yield from flush()
            ready = 0
    yield from flush()


def predict_directory(landmarker: LandmarkerSource, root: PathLike, batch_images: int = 8, num_workers: int = 2,
                      skip: Iterable[PathLike] = frozenset(), recursive: bool = True, boxes: Optional[Any] = None,
                      box_type: str = "landmark") -> Iterator[ImageResult]:
    """:func:`predict_images` on :func:`find_images` ``(root, recursive)``, less the paths in
    ``skip`` (compared as strings, as :func:`completed_images` returns them: resume with the same
    ``root`` spelling)."""
    skipped = {str(p) for p in skip}
    paths = [p for p in find_images(root, recursive=recursive) if str(p) not in skipped]
    return predict_images(landmarker, paths, batch_images=batch_images, num_workers=num_workers, boxes=boxes,
                          box_type=box_type)


# ---------------------------------------------------------------------------- JSON Lines
class JsonlWriter:
    """Append JSON records to a file, one per line, each line flushed as it is written (a run that
    is interrupted keeps every record written before).

    ``append=False`` starts the file afresh. ``append=True`` continues it; if its last line was cut
    short by an interrupted run (no final newline, not valid JSON), that fragment is removed first,
    with a warning, so that the next record starts on a line of its own.
    """

    def __init__(self, path: PathLike, append: bool = False) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if append and self.path.is_file():
            self._repair_tail()
        self._file = open(self.path, "a" if append else "w", encoding="utf-8")

    def _repair_tail(self) -> None:
        with open(self.path, "rb+") as f:
            data = f.read()
            if not data or data.endswith(b"\n"):
                return
            cut = data.rfind(b"\n") + 1
            tail = data[cut:]
            try:
                json.loads(tail.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                logger.warning("%s: dropping an incomplete last line (%d bytes; an interrupted run?)", self.path, len(tail))
                f.truncate(cut)
            else:  # a complete record without its newline
                f.seek(0, os.SEEK_END)
                f.write(b"\n")

    def write(self, record: Mapping[str, Any]) -> None:
        self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "JsonlWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def read_jsonl(path: PathLike) -> List[Dict[str, Any]]:
    """The records of a JSON Lines file (blank lines ignored). An incomplete last line (an
    interrupted run) is left out with a warning; any other line that is not a JSON object is a
    ``ValueError`` naming the file and the line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"JSON Lines file {path} is not UTF-8 text") from None
    lines = text.split("\n")
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    records = []
    for number, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            if number == last:
                logger.warning("%s: ignoring an incomplete last line %d (an interrupted run?)", path, number + 1)
                continue
            raise ValueError(f"JSON Lines file {path}, line {number + 1}: not valid JSON ({err})") from None
        if not isinstance(record, dict):
            raise ValueError(f"JSON Lines file {path}, line {number + 1}: expected a JSON object, got "
                             f"{type(record).__name__}")
        records.append(record)
    return records


def completed_images(jsonl_path: PathLike) -> Set[str]:
    """The ``"image"`` of every record of ``jsonl_path`` that has ``"faces"`` and no ``"error"``
    (an image done, with or without faces); images whose record has an ``"error"`` (unreadable, or
    its annotated copy could not be written) are not in it, so a resumed run tries them again. A missing file is an empty set (the first run of a resumable command)."""
    path = Path(jsonl_path)
    if not path.exists():
        return set()
    return {str(r["image"]) for r in read_jsonl(path) if "faces" in r and "error" not in r and "image" in r}
