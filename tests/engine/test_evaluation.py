"""engine.evaluation: crop predictions -> image coordinates -> metrics, checked with an oracle model.

The oracle returns the dataset's own crop-pixel landmarks (plus a known offset), in loader order,
so every error below is computed by hand from the data, not from another run.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from pyg_sdfl.data.dataset import LandmarkDataset
from pyg_sdfl.data.synthetic import SyntheticFaces
from pyg_sdfl.engine.evaluation import cpu_bf16_flags, evaluate, precision_autocast, predict, resolve_precision
from pyg_sdfl.geometry import crop_to_image
from pyg_sdfl.metrics import nme
from pyg_sdfl.schemes import get_scheme

SCHEME = get_scheme("300w")


class Oracle(nn.Module):
    """Returns the crop landmarks of the next faces in dataset order, plus ``offset`` crop pixels."""

    def __init__(self, dataset: LandmarkDataset, offset=(0.0, 0.0)) -> None:
        super().__init__()
        self.targets = torch.stack([dataset[i]["landmarks"] for i in range(len(dataset))])
        self.offset = torch.tensor(offset)
        self.cursor = 0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = self.targets[self.cursor:self.cursor + len(images)] + self.offset
        self.cursor += len(images)
        return out


@pytest.fixture(scope="module")
def dataset() -> LandmarkDataset:
    samples = list(SyntheticFaces(10, seed=3, image_size=160))
    for i, s in enumerate(samples):
        s.subsets = ("even",) if i % 2 == 0 else ("odd",)
    return LandmarkDataset(samples, SCHEME, image_size=64, crop_scale=1.2)


def test_an_exact_oracle_scores_zero_in_image_coordinates(dataset):
    preds = predict(Oracle(dataset), dataset, batch_size=3)
    assert list(preds.indices) == list(range(len(dataset)))
    assert preds.pred.shape == preds.target.shape == (len(dataset), 68, 2)
    assert np.abs(preds.pred - preds.target).max() < 1e-3  # float32 crops mapped back exactly


def test_an_offset_in_the_crop_becomes_its_scaled_offset_in_the_image(dataset):
    result = evaluate(Oracle(dataset, offset=(2.0, 0.0)), dataset, SCHEME, batch_size=4)
    preds = result["predictions"]
    matrices = np.stack([dataset[i]["matrix"].numpy().astype(np.float64) for i in range(len(dataset))])
    scale = np.linalg.norm(matrices[:, 0, :2], axis=1)  # crop pixels per image pixel (rotation-free crops)
    np.testing.assert_allclose(preds.pred - preds.target, np.stack([2.0 / scale, 0 * scale], -1)[:, None, :]
                               .repeat(68, axis=1), atol=1e-3)
    expected = nme(preds.pred, preds.target, SCHEME)
    np.testing.assert_allclose(result["nme"], expected)
    summary = result["summary"]
    assert summary["all"]["count"] == 10 and summary["even"]["count"] == summary["odd"]["count"] == 5
    assert summary["all"]["nme"] == pytest.approx(float(expected.mean()))
    assert summary["even"]["nme"] == pytest.approx(float(expected[::2].mean()))


def test_crop_to_image_inverts_the_crop_matrix():
    rng = np.random.default_rng(0)
    matrices = np.concatenate([rng.normal(size=(4, 2, 2)) + 3 * np.eye(2), rng.normal(size=(4, 2, 1))], axis=2)
    points = rng.uniform(0, 100, size=(4, 7, 2))
    crop = np.einsum("bij,bnj->bni", matrices[:, :, :2], points) + matrices[:, None, :, 2]
    np.testing.assert_allclose(crop_to_image(crop, matrices), points, atol=1e-9)


def test_precision_autocast_accepts_only_known_precisions():
    with precision_autocast(torch.device("cpu"), "bf16"):
        assert torch.mm(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.bfloat16
    with precision_autocast(torch.device("cpu"), "fp32"):
        assert torch.mm(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.float32
    with pytest.raises(ValueError, match=r"one of \['fp32', 'bf16', 'auto'\]"):
        precision_autocast(torch.device("cpu"), "fp16")


def test_auto_precision_is_bf16_only_where_the_cpu_runs_it_natively(tmp_path):
    amd, old = tmp_path / "amd", tmp_path / "old"
    amd.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16\n")
    old.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2\n")
    assert cpu_bf16_flags(amd) == ["avx512_bf16"] and cpu_bf16_flags(old) == []
    assert cpu_bf16_flags(tmp_path / "absent") == []
    expected = "bf16" if cpu_bf16_flags() else "fp32"
    assert resolve_precision("auto", "cpu") == expected
    assert resolve_precision("fp32", "cpu") == "fp32" and resolve_precision("bf16", "cpu") == "bf16"
