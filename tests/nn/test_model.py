"""LandmarkModel: shapes, the pixel convention, intermediates and input checks."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from pyg_sdfl.nn.backbones import create_backbone
from pyg_sdfl.nn.model import LandmarkModel, normalised_to_pixels, pixels_to_normalised


class PatchBackbone(nn.Module):
    """A tiny stride-32 'backbone' so these tests stay fast."""

    def __init__(self, channels: int = 4) -> None:
        super().__init__()
        self.out_channels = channels
        self.conv = nn.Conv2d(3, channels, kernel_size=32, stride=32)

    def forward(self, x):
        return self.conv(x)


class FlattenHead(nn.Module):
    """Head(in_channels, feature_size, num_points, edge_index): flatten + linear -> (B, N, 2)."""

    def __init__(self, in_channels, feature_size, num_points, edge_index=None):
        super().__init__()
        self.num_points = num_points
        self.linear = nn.Linear(in_channels * feature_size[0] * feature_size[1], num_points * 2)

    def forward(self, features):
        return self.linear(features.flatten(1)).reshape(features.shape[0], self.num_points, 2)


class ConstantHead(nn.Module):
    """Ignores the features and returns fixed normalised coordinates (B, N, 2)."""

    def __init__(self, coords):
        super().__init__()
        self.coords = nn.Parameter(torch.as_tensor(coords, dtype=torch.float32))
        self.num_points = self.coords.shape[0]

    def forward(self, features):
        return self.coords.expand(features.shape[0], -1, -1) + 0 * features.mean()


class IntermediateHead(FlattenHead):
    def forward(self, features, return_intermediates=False):
        out = super().forward(features)
        if return_intermediates:
            return out, {"flat": features.flatten(1)}
        return out


def test_pixel_convention_edges_and_centre():
    s = 256
    head = ConstantHead([[-1.0, -1.0], [0.0, 0.0], [1.0, 1.0], [-1.0 + 1.0 / s, 1.0 - 1.0 / s]])
    model = LandmarkModel(PatchBackbone(), head, image_size=s)
    out = model(torch.zeros(2, 3, s, s))
    # crop edges at -0.5 and S - 0.5, centre (S - 1) / 2, centre of pixel 0 and of pixel S - 1
    expected = torch.tensor([[-0.5, -0.5], [127.5, 127.5], [255.5, 255.5], [0.0, 255.0]])
    torch.testing.assert_close(out, expected.expand(2, -1, -1))


def test_pixel_maps_are_inverse():
    p = torch.rand(3, 5, 2) * 300 - 20
    torch.testing.assert_close(normalised_to_pixels(pixels_to_normalised(p, 256), 256), p, rtol=0, atol=1e-4)


def test_forward_backward_with_a_real_backbone():
    torch.manual_seed(0)
    backbone = create_backbone("resnet18")
    head = FlattenHead(backbone.out_channels, backbone.output_size(256), 7)
    model = LandmarkModel(backbone, head)
    out = model(torch.randn(2, 3, 256, 256))
    assert out.shape == (2, 7, 2)
    out.sum().backward()
    assert head.linear.weight.grad is not None
    assert backbone.body.conv1.weight.grad is not None


def test_other_image_size():
    model = LandmarkModel(PatchBackbone(), FlattenHead(4, (4, 4), 5), image_size=128)
    assert model(torch.randn(1, 3, 128, 128)).shape == (1, 5, 2)


@pytest.mark.parametrize("shape", [(2, 3, 255, 255), (2, 1, 256, 256), (3, 256, 256), (2, 3, 128, 128)])
def test_bad_image_shape(shape):
    model = LandmarkModel(PatchBackbone(), FlattenHead(4, (8, 8), 5))
    with pytest.raises(ValueError, match=r"expected images of shape \(B, 3, 256, 256\)"):
        model(torch.randn(*shape))


def test_head_output_is_checked():
    class Bad(nn.Module):
        num_points = 5

        def forward(self, features):
            return torch.zeros(features.shape[0], 4, 2)

    model = LandmarkModel(PatchBackbone(), Bad())
    with pytest.raises(ValueError, match=r"head returned coordinates of shape \(1, 4, 2\), expected \(1, 5, 2\)"):
        model(torch.zeros(1, 3, 256, 256))


def test_intermediates_pass_through_to_the_head():
    model = LandmarkModel(PatchBackbone(), IntermediateHead(4, (8, 8), 3))
    images = torch.randn(2, 3, 256, 256)
    coords, extras = model(images, return_intermediates=True)
    assert coords.shape == (2, 3, 2)
    assert extras["flat"].shape == (2, 4 * 64)
    assert extras["features"].shape == (2, 4, 8, 8)
    torch.testing.assert_close(normalised_to_pixels(extras["normalised"], 256), coords)
    torch.testing.assert_close(model(images), coords)


def test_intermediates_without_head_support():
    model = LandmarkModel(PatchBackbone(), FlattenHead(4, (8, 8), 3))
    coords, extras = model(torch.randn(1, 3, 256, 256), return_intermediates=True)
    assert set(extras) == {"features", "normalised"}


def test_channels_last_model():
    torch.manual_seed(0)
    model = LandmarkModel(PatchBackbone(), FlattenHead(4, (8, 8), 3)).eval()
    images = torch.randn(2, 3, 256, 256)
    ref = model(images)
    model = model.to(memory_format=torch.channels_last)
    out = model(images.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
