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


# A one-step synthetic run: the smallest real training checkpoint, shared by every test that
# needs a model file (inference, checkpoint loading, export, the CLI). Trained once per session.
TINY_RUN = ["dataset.image_size=64", "dataset.train.num_faces=40", "dataset.test.num_faces=4",
            "dataset.val_fraction=0.2", "train.batch_size=8", "train.num_workers=0", "train.epochs=1",
            "train.max_steps_per_epoch=1", "evaluate.grid_faces=0", "device=cpu", "backbone=mobilenetv2_100",
            "head.hidden=32", "head.num_blocks=1"]


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory) -> Path:
    """``best.ckpt`` of :data:`TINY_RUN`."""
    from pyg_sdfl.config import compose
    from pyg_sdfl.engine.training import train

    run = tmp_path_factory.mktemp("tiny_run")
    train(compose(TINY_RUN), run)
    return run / "best.ckpt"


@pytest.fixture(scope="session")
def tiny_onnx(tiny_ckpt, tmp_path_factory) -> Path:
    """:func:`tiny_ckpt` exported to ONNX (needs the [onnx] extra; the tests that use it skip without it)."""
    pytest.importorskip("onnxruntime", reason="the [onnx] extra (onnxruntime) is not installed")
    pytest.importorskip("onnxscript", reason="the [onnx] extra (onnxscript) is not installed")
    from pyg_sdfl.engine.onnx_export import export_onnx

    return export_onnx(tiny_ckpt, tmp_path_factory.mktemp("onnx") / "tiny.onnx")
