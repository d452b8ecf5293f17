"""pyg_sdfl.studies.paths: where the data, a trained model and the results are."""
from __future__ import annotations

from pathlib import Path

import pytest

import pyg_sdfl
from pyg_sdfl.studies import paths

REPO = Path(__file__).resolve().parents[2]


def test_repo_root_from_the_notebooks_folder_and_elsewhere(tmp_path: Path) -> None:
    assert paths.repo_root(REPO / "notebooks") == REPO
    assert paths.repo_root(REPO) == REPO
    # outside any checkout it falls back to the folder above the (editable) package
    assert paths.repo_root(tmp_path) == Path(pyg_sdfl.__file__).resolve().parents[1]


def test_shared_data_dir_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYG_SDFL_DATA", str(tmp_path))
    assert paths.shared_data_dir() == tmp_path.resolve()
    monkeypatch.setenv("PYG_SDFL_DATA", str(tmp_path / "absent"))
    assert paths.shared_data_dir() is None


def test_find_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYG_SDFL_CHECKPOINT", raising=False)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        paths.find_checkpoint(tmp_path / "nope.ckpt")
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"x")
    assert paths.find_checkpoint(ckpt) == ckpt.resolve()
    monkeypatch.setenv("PYG_SDFL_CHECKPOINT", str(ckpt))
    assert paths.find_checkpoint() == ckpt.resolve()
    monkeypatch.setenv("PYG_SDFL_CHECKPOINT", str(tmp_path / "typo.ckpt"))
    with pytest.raises(FileNotFoundError, match="PYG_SDFL_CHECKPOINT"):
        paths.find_checkpoint()
    monkeypatch.setenv("PYG_SDFL_CHECKPOINT", "none")  # force the demo model
    assert paths.find_checkpoint() is None
    assert paths.find_checkpoint(ckpt) == ckpt.resolve()


def test_find_checkpoint_without_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYG_SDFL_CHECKPOINT", raising=False)
    found = paths.find_checkpoint()
    assert found is None or (found.is_file() and found.parent.name == "weights")


def test_find_results_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYG_SDFL_RESULTS", raising=False)
    assert paths.find_results_dir(REPO / "notebooks") == REPO / "results"
    monkeypatch.setenv("PYG_SDFL_RESULTS", str(tmp_path))
    assert paths.find_results_dir() == tmp_path.resolve()
