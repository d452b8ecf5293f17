"""FlipAverage: the mirror convention agrees with the training augmentation's, batching, errors."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from pyg_sdfl.data.synthetic import SyntheticFaces
from pyg_sdfl.data.transforms import normalise_image, warp_sample
from pyg_sdfl.geometry import crop_matrix, crop_square
from pyg_sdfl.nn.flip_average import FlipAverage, flip_average_shift, unflip_points
from pyg_sdfl.schemes import get_scheme

S = 64


class Oracle(nn.Module):
    """Knows the landmarks of a few registered crops: returns those of the nearest one (B, N, 2)."""

    def __init__(self, images: torch.Tensor, points: torch.Tensor) -> None:
        super().__init__()
        self.images, self.points = images, points

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dist = ((x[:, None] - self.images[None]) ** 2).flatten(2).mean(-1)
        assert float(dist.min(dim=1).values.max()) < 1e-4, "an input crop is none of the registered ones"
        return self.points[dist.argmin(dim=1)]


def _crops(flip: bool, annotation_offset_x: float = 0.0, with_matrices: bool = False):
    """Two synthetic faces cropped like training data, mirrored by the affine (the augmentation's
    mirror) when ``flip``; returns ``(2, 3, S, S)`` images and ``(2, 68, 2)`` landmarks (and the
    ``(2, 2, 3)`` matrices with ``with_matrices``)."""
    scheme = get_scheme("300w")
    faces = SyntheticFaces(2, seed=3, image_size=128)
    images, points, matrices = [], [], []
    for i in range(2):
        image, pts, _ = faces.render(i)
        cx, cy, side = crop_square(pts, 1.2)
        M = crop_matrix((cx, cy), side, S, rotation_deg=7.0 * (i + 1), flip=flip)
        crop, target = warp_sample(image, pts, M, S, flip_perm=scheme.flip_permutation,
                                   annotation_offset_x=annotation_offset_x)
        images.append(torch.from_numpy(normalise_image(crop)))
        points.append(torch.from_numpy(target).float())
        matrices.append(torch.from_numpy(M))
    if with_matrices:
        return torch.stack(images), torch.stack(points), torch.stack(matrices)
    return torch.stack(images), torch.stack(points)


def test_tensor_mirror_is_the_augmentation_mirror():
    """torch.flip of a crop is the crop the training augmentation mirrors (same pixel centres), and
    un-mirroring its landmarks gives back the unmirrored landmarks: so an exactly mirror-consistent
    model is left unchanged by flip averaging."""
    images, points = _crops(flip=False)
    mirrored, mirrored_points = _crops(flip=True)
    # OpenCV's fixed-point bilinear weights round differently in <1% of pixels, by <= 2 grey levels
    diff = (images.flip(-1) - mirrored).abs()
    assert float(diff.max()) < 0.05 and float((diff > 0).float().mean()) < 0.01
    perm = torch.as_tensor(get_scheme("300w").flip_permutation)
    assert torch.allclose(unflip_points(mirrored_points, perm, S), points, atol=1e-4)

    oracle = Oracle(torch.cat([images, mirrored]), torch.cat([points, mirrored_points]))
    out = FlipAverage(oracle, get_scheme("300w").flip_permutation)(images)
    assert torch.allclose(out, points, atol=1e-4)


@pytest.mark.parametrize("offset", [0.89, -1.5])
def test_the_shift_keeps_the_annotation_offset_of_the_training_convention(offset):
    """Labels that sit ``b`` px right of the content (``annotation_offset_x``): a model that answers
    exactly what training taught it, on the plain crop and on its mirror (mirrored labels keeping
    the offset: warp_sample), is left unchanged by flip averaging with ``flip_average_shift``; the
    crops are turned 7 and 14 degrees, so the offset is not along the crop's x axis. Without the
    shift the average moves every point by ``-b`` along the image's x axis."""
    images, points, matrices = _crops(flip=False, annotation_offset_x=offset, with_matrices=True)
    mirrored, mirrored_points = _crops(flip=True, annotation_offset_x=offset)
    oracle = Oracle(torch.cat([images, mirrored]), torch.cat([points, mirrored_points]))
    wrapped = FlipAverage(oracle, get_scheme("300w").flip_permutation, annotation_offset_x=offset)
    assert torch.allclose(wrapped(images, matrices), points, atol=1e-4)
    unshifted = FlipAverage(oracle, get_scheme("300w").flip_permutation)
    expected_move = -offset * matrices[:, None, :, 0].float()  # -b e_x of the image, in crop pixels
    assert torch.allclose(unshifted(images, matrices) - points, expected_move.expand_as(points), atol=1e-4)
    assert torch.allclose(unshifted(images) - points, expected_move.expand_as(points), atol=1e-4)
    assert torch.equal(flip_average_shift(matrices, 0.0), torch.zeros(2, 2, dtype=matrices.dtype))


def test_the_average_of_two_views():
    """A mirror-inconsistent model: the output is exactly the mean of the two views' answers."""
    images, points = _crops(flip=False)
    mirrored, mirrored_points = _crops(flip=True)
    shift = torch.tensor([1.0, -2.0])
    oracle = Oracle(torch.cat([images, mirrored]), torch.cat([points, mirrored_points + shift]))
    out = FlipAverage(oracle, get_scheme("300w").flip_permutation)(images)
    # +1 px in the mirror's x is -1 px here; y is unchanged by mirroring
    assert torch.allclose(out, points + torch.tensor([-0.5, -1.0]), atol=1e-4)


def test_matches_two_separate_passes_of_a_real_model():
    """ResNet-18 + SDFL head in eval mode: one batch of 2B equals two passes of B."""
    from pyg_sdfl.config import compose
    from pyg_sdfl.engine.builders import build_model
    from pyg_sdfl.graph.mining import random_graph

    torch.manual_seed(0)
    scheme = get_scheme("300w")
    cfg = compose(["dataset.image_size=64", "backbone=resnet18", "head.hidden=16", "head.num_blocks=1"])
    model = build_model(cfg, random_graph(68, 3), 68).eval()
    x = torch.randn(3, 3, S, S)
    with torch.no_grad():
        expected = 0.5 * (model(x) + unflip_points(model(x.flip(-1)), torch.as_tensor(scheme.flip_permutation), S))
        got = FlipAverage(model, scheme.flip_permutation)(x)
    assert got.shape == (3, 68, 2)
    assert torch.allclose(got, expected, atol=1e-4)


@pytest.mark.parametrize("perm, match", [([0, 0, 1], "permutation"), ([1, 2, 0], "involution"), ([], "permutation")])
def test_bad_permutations(perm, match):
    with pytest.raises(ValueError, match=match):
        FlipAverage(nn.Identity(), perm)


def test_bad_inputs():
    wrapped = FlipAverage(lambda_model(68), get_scheme("300w").flip_permutation)
    with pytest.raises(ValueError, match="square"):
        wrapped(torch.zeros(1, 3, 32, 48))
    with pytest.raises(ValueError, match=r"\(B, 3, S, S\)"):
        wrapped(torch.zeros(3, 32, 32))
    offset = FlipAverage(lambda_model(68), get_scheme("300w").flip_permutation, annotation_offset_x=0.89)
    with pytest.raises(ValueError, match=r"needs each crop's image -> crop matrix"):
        offset(torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match=r"matrices must be \(1, 2, 3\)"):
        offset(torch.zeros(1, 3, 32, 32), torch.zeros(2, 2, 3))
    with pytest.raises(ValueError, match="unmirrored crops"):
        offset(torch.zeros(1, 3, 32, 32), torch.tensor([[[-1.0, 0.0, 5.0], [0.0, 1.0, 0.0]]]))
    with pytest.raises(ValueError, match="annotation_offset_x must be a finite number"):
        FlipAverage(lambda_model(68), get_scheme("300w").flip_permutation, annotation_offset_x=float("nan"))
    with pytest.raises(ValueError, match=r"matrices must be \(B, 2, 3\)"):
        flip_average_shift(torch.zeros(2, 3), 1.0)
    with pytest.raises(ValueError, match="unmirrored crops"):
        flip_average_shift(torch.tensor([[[-1.0, 0.0, 5.0], [0.0, 1.0, 0.0]]]), 1.0)
    with pytest.raises(ValueError, match="predicts 5 points"):
        FlipAverage(lambda_model(5), get_scheme("300w").flip_permutation)(torch.zeros(1, 3, 32, 32))


def lambda_model(num_points: int) -> nn.Module:
    class Zeros(nn.Module):
        def forward(self, x):
            return torch.zeros(x.shape[0], num_points, 2)

    return Zeros()
