"""Shared test fixtures: where the real data lives, and skips when it is absent."""
from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
W300 = SHARED_DATA / "300w"
WFLW_ANNOTATIONS = SHARED_DATA / "wflw-annotations"


@pytest.fixture(scope="session")
def w300_root() -> Path:
    if not (W300 / "train").is_dir():
        pytest.skip(f"real 300-W data not found at {W300} (../shared/data is absent on this machine)")
    return W300


@pytest.fixture(scope="session")
def wflw_annotations_root() -> Path:
    if not WFLW_ANNOTATIONS.is_dir():
        pytest.skip(f"WFLW annotations not found at {WFLW_ANNOTATIONS} (../shared/data is absent)")
    return WFLW_ANNOTATIONS
