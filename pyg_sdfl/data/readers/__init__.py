"""Dataset readers: files -> :class:`~pyg_sdfl.data.sample.FaceSample` lists.

``DATASETS`` maps a dataset name to a function ``(root, split, **kw) -> list[FaceSample]`` that
knows the dataset's standard folder layout.
:func:`load_dataset` is the entry point configs use (``dataset.train._target_``). A new dataset
is one function registered with :func:`register_dataset`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, List, Union

from pyg_sdfl.data.readers.cofw import read_cofw
from pyg_sdfl.data.readers.w300 import read_300w, read_pts
from pyg_sdfl.data.readers.wflw import WFLW_ATTRIBUTES, read_wflw, read_wflw_attribute_lists
from pyg_sdfl.data.sample import FaceSample

__all__ = [
    "DATASETS",
    "register_dataset",
    "load_dataset",
    "read_300w",
    "read_pts",
    "read_wflw",
    "read_wflw_attribute_lists",
    "read_cofw",
    "WFLW_ATTRIBUTES",
]

PathLike = Union[str, Path]
DatasetLoader = Callable[..., List[FaceSample]]

DATASETS: Dict[str, DatasetLoader] = {}

# 300-W test folders -> the standard evaluation subsets they belong to.
_300W_TEST_GROUPS = {"lfpw": "common", "helen": "common", "ibug": "challenging"}


def register_dataset(name: str) -> Callable[[DatasetLoader], DatasetLoader]:
    """Decorator: register ``fn(root, split, **kw)`` as the standard layout of dataset ``name``."""

    def decorator(fn: DatasetLoader) -> DatasetLoader:
        if name in DATASETS:
            raise ValueError(f"dataset {name!r} is already registered")
        DATASETS[name] = fn
        return fn

    return decorator


def _check_split(name: str, split: str, allowed=("train", "test")) -> None:
    if split not in allowed:
        raise ValueError(f"dataset {name!r}: unknown split {split!r}; expected one of {list(allowed)}")


@register_dataset("300w")
def _load_300w(root: PathLike, split: str, scheme: str = "300w") -> List[FaceSample]:
    """``root/{train,test}/<part>/*.pts`` (+ images). Test faces of lfpw/helen are also tagged
    ``"common"`` and of ibug ``"challenging"`` (the standard 300-W subsets; all = "full")."""
    _check_split("300w", split)
    split_dir = Path(root) / split
    if not split_dir.is_dir():
        raise ValueError(f"300-W: folder {split_dir} not found (expected root/{split}/<part>/*.pts)")
    parts = sorted(p.name for p in split_dir.iterdir() if p.is_dir())
    if not parts:
        raise ValueError(f"300-W: no part folders (lfpw, helen, ...) in {split_dir}")
    samples = read_300w(root, folders=[f"{split}/{p}" for p in parts], scheme=scheme)
    if split == "test":
        for s in samples:
            group = _300W_TEST_GROUPS.get(s.subsets[0])
            if group is not None:
                s.subsets = s.subsets + (group,)
    return samples


@register_dataset("wflw")
def _load_wflw(root: PathLike, split: str) -> List[FaceSample]:
    """The released layout: ``root/WFLW_annotations/list_98pt_rect_attr_train_test/
    list_98pt_rect_attr_{train,test}.txt`` and ``root/WFLW_images/``.

    For ``split="test"`` without the rect_attr list, the six attribute lists
    (``list_98pt_test_*.txt``, in ``root/WFLW_annotations/list_98pt_test/`` or directly in
    ``root``) are merged instead (faces get attribute subsets but no boxes).
    """
    _check_split("wflw", split)
    root = Path(root)
    images = root / "WFLW_images"
    annotations = root / "WFLW_annotations"
    rect_attr = annotations / "list_98pt_rect_attr_train_test" / f"list_98pt_rect_attr_{split}.txt"
    if rect_attr.is_file():
        return read_wflw(rect_attr, images)
    if split == "test":
        for folder in (annotations / "list_98pt_test", root):
            if folder.is_dir() and any(folder.glob("list_98pt_test_*.txt")):
                return read_wflw_attribute_lists(folder, images)
    raise ValueError(
        f"WFLW: {rect_attr} not found (expected root/WFLW_annotations/list_98pt_rect_attr_train_test/"
        f"list_98pt_rect_attr_{split}.txt and root/WFLW_images/)"
    )


@register_dataset("cofw")
def _load_cofw(root: PathLike, split: str) -> List[FaceSample]:
    """``root/COFW_{train,test}_color.mat``."""
    _check_split("cofw", split)
    path = Path(root) / f"COFW_{split}_color.mat"
    if not path.is_file():
        raise ValueError(f"COFW: {path} not found (expected root/COFW_{{train,test}}_color.mat)")
    return read_cofw(path)


def load_dataset(name: str, root: PathLike, split: str, **kw) -> List[FaceSample]:
    """Samples of dataset ``name`` (``"300w"``, ``"wflw"``, ``"cofw"``, ...) from its standard
    layout under ``root``; ``split`` is ``"train"`` or ``"test"``. Extra keywords go to the
    dataset's loader (e.g. ``scheme`` for 300-W). Never returns an empty list."""
    try:
        loader = DATASETS[name]
    except KeyError:
        raise KeyError(f"unknown dataset {name!r}; known: {sorted(DATASETS)}") from None
    if root is None or str(root) in ("", "???"):
        raise ValueError(f"dataset {name!r}: no root folder given (set dataset.root)")
    if not Path(root).is_dir():
        raise ValueError(f"dataset {name!r}: root folder {root} not found (check dataset.root / --root)")
    samples = loader(root, split, **kw)
    if not samples:
        raise ValueError(f"dataset {name!r} split {split!r} under {root} is empty")
    return samples
