"""Fixtures shared by the detector tests: a default Haar detector and the 300-W LFPW test faces."""
from __future__ import annotations

import pytest

from pyg_sdfl.detection import HaarFaceDetector


@pytest.fixture(scope="module")
def detector() -> HaarFaceDetector:
    return HaarFaceDetector()


@pytest.fixture(scope="module")
def lfpw_test(w300_root):
    from pyg_sdfl.data import read_300w

    return read_300w(w300_root, folders=["test/lfpw"])
