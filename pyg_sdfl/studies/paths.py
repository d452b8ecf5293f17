"""Where the studies find their inputs: the project folder, the shared data, a trained model, results.

Three environment variables point them elsewhere: ``PYG_SDFL_DATA`` (:data:`ENV_DATA`, the shared data
folder), ``PYG_SDFL_CHECKPOINT`` (:data:`ENV_CHECKPOINT`, a model file, or ``none`` for the notebooks'
demo model) and ``PYG_SDFL_RESULTS`` (:data:`ENV_RESULTS`, the results folder).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

__all__ = ["ENV_DATA", "ENV_CHECKPOINT", "ENV_RESULTS", "repo_root", "shared_data_dir", "find_checkpoint",
           "find_results_dir"]

PathLike = Union[str, Path]

#: the installed package folder (``pyg_sdfl/``)
_PACKAGE_DIR = Path(__file__).resolve().parents[1]

#: environment variables that point the notebooks elsewhere
ENV_DATA = "PYG_SDFL_DATA"
ENV_CHECKPOINT = "PYG_SDFL_CHECKPOINT"
ENV_RESULTS = "PYG_SDFL_RESULTS"


def repo_root(start: Optional[PathLike] = None) -> Path:
    """The project folder: the first of ``start`` (default: the working directory) and its parents
    holding a ``pyproject.toml`` next to a ``pyg_sdfl`` folder; else the folder above the installed
    package (an editable install)."""
    here = Path(start if start is not None else Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").is_file() and (folder / "pyg_sdfl").is_dir():
            return folder
    return _PACKAGE_DIR.parent


def shared_data_dir(start: Optional[PathLike] = None) -> Optional[Path]:
    """``$PYG_SDFL_DATA`` if set, else ``<repo>/../shared/data``; ``None`` when that folder is absent."""
    env = os.environ.get(ENV_DATA)
    candidate = Path(env) if env else repo_root(start).parent / "shared" / "data"
    return candidate.resolve() if candidate.is_dir() else None


def find_checkpoint(explicit: Optional[PathLike] = None, start: Optional[PathLike] = None) -> Optional[Path]:
    """A trained model to analyse: ``explicit``, else ``$PYG_SDFL_CHECKPOINT``, else the model shipped
    with the package (``pyg_sdfl/weights``, e.g. ``sdfl_300w.pt``), else the first ``*.ckpt`` (sorted)
    in that folder; ``None`` when there is none, or when ``$PYG_SDFL_CHECKPOINT`` is ``none`` (the
    notebooks then train their demo model). Training checkpoints and shipped weights both load
    with :func:`pyg_sdfl.engine.checkpoint.load_model`.

    Raises ``FileNotFoundError`` when an explicit or environment path does not exist (a typo should
    not silently fall back to the demo model).
    """
    if explicit is None and os.environ.get(ENV_CHECKPOINT, "").strip().lower() == "none":
        return None
    for given, what in ((explicit, "checkpoint"), (os.environ.get(ENV_CHECKPOINT), f"${ENV_CHECKPOINT}")):
        if given:
            path = Path(given)
            if not path.is_file():
                raise FileNotFoundError(f"{what} {path} does not exist")
            return path.resolve()
    try:
        from pyg_sdfl.weights import available_pretrained, pretrained_path
    except ImportError:  # a package without shipped weights
        pass
    else:
        for name in available_pretrained():
            return pretrained_path(name)
    for weights in (_PACKAGE_DIR / "weights", repo_root(start) / "pyg_sdfl" / "weights"):
        found = sorted(weights.glob("*.ckpt")) if weights.is_dir() else []
        if found:
            return found[0]
    return None


def find_results_dir(start: Optional[PathLike] = None) -> Path:
    """``$PYG_SDFL_RESULTS`` if set, else ``<repo>/results`` (which may not exist)."""
    env = os.environ.get(ENV_RESULTS)
    return Path(env).resolve() if env else repo_root(start) / "results"
