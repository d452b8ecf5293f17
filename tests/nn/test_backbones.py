"""Backbones: every registered one runs forward + backward at 256 and gives (B, C, 8, 8)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pyg_sdfl.nn.backbones import BACKBONES, Backbone, MultiResolutionFusion, create_backbone

# Output channels of the stride-32 map, from the architectures' definitions.
EXPECTED_CHANNELS = {
    "resnet18": 512,
    "resnet34": 512,
    "mobilenetv2_100": 320,
    "efficientnet_b0": 320,
    "efficientnet_b1": 320,
    "vgg16": 512,
    "res2net50_26w_4s": 2048,
    "hrnet_w18_small": 256,  # fused to the default fuse_channels
}


def test_registry_holds_the_issue_backbones():
    assert set(EXPECTED_CHANNELS) <= set(BACKBONES)


@pytest.mark.parametrize("name", sorted(EXPECTED_CHANNELS))
def test_forward_backward_at_256(name):
    torch.manual_seed(0)
    backbone = create_backbone(name)
    assert isinstance(backbone, Backbone)
    assert backbone.reduction == 32
    assert backbone.out_channels == EXPECTED_CHANNELS[name]
    assert backbone.output_size(256) == (8, 8)
    images = torch.randn(2, 3, 256, 256)
    out = backbone(images)
    assert out.shape == (2, EXPECTED_CHANNELS[name], 8, 8)
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    unused = [k for k, p in backbone.named_parameters() if p.requires_grad and p.grad is None]
    assert not unused, f"parameters without gradient: {unused[:5]}"
    first = next(p for p in backbone.parameters() if p.dim() == 4)  # the stem conv
    assert first.grad is not None and first.grad.abs().sum() > 0


def test_hrnet_fuses_its_four_branches():
    backbone = create_backbone("hrnet_w18_small", fuse_channels=64)
    assert backbone.feature_reductions == (4, 8, 16, 32)
    assert backbone.feature_channels == (16, 32, 64, 128)
    assert backbone.out_channels == 64
    backbone.eval()
    out = backbone(torch.randn(1, 3, 256, 256))
    assert out.shape == (1, 64, 8, 8)


def test_fusion_matches_a_dense_computation():
    torch.manual_seed(0)
    fusion = MultiResolutionFusion([2, 3], 4).eval()
    with torch.no_grad():
        fusion.bn.running_mean.uniform_(-1, 1)
        fusion.bn.running_var.uniform_(0.5, 2)
        fusion.bn.weight.uniform_(0.5, 2)
        fusion.bn.bias.uniform_(-1, 1)
    fine = torch.randn(2, 2, 8, 12)
    coarse = torch.randn(2, 3, 2, 3)
    out = fusion([fine, coarse])
    # independent: 4x4 box means by reshaping, then 1x1 conv as a matrix product, BN, ReLU
    pooled = fine.reshape(2, 2, 2, 4, 3, 4).mean(dim=(3, 5))
    stacked = torch.cat([pooled, coarse], dim=1)
    w = fusion.conv.weight[:, :, 0, 0]
    z = torch.einsum("oc,bchw->bohw", w, stacked)
    bn = fusion.bn
    z = (z - bn.running_mean[None, :, None, None]) / torch.sqrt(bn.running_var[None, :, None, None] + bn.eps)
    z = z * bn.weight[None, :, None, None] + bn.bias[None, :, None, None]
    torch.testing.assert_close(out, F.relu(z), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["resnet18", "hrnet_w18_small"])
def test_channels_last_matches_contiguous(name):
    torch.manual_seed(0)
    backbone = create_backbone(name).eval()
    images = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        ref = backbone(images)
        backbone = backbone.to(memory_format=torch.channels_last)
        out = backbone(images.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


def test_non_square_input():
    backbone = create_backbone("mobilenetv2_100").eval()
    with torch.no_grad():
        out = backbone(torch.randn(1, 3, 256, 320))
    assert out.shape == (1, 320, 8, 10)
    assert backbone.output_size((256, 320)) == (8, 10)


def test_unknown_name_lists_known_backbones():
    with pytest.raises(ValueError, match="unknown backbone 'resnet1000'.*resnet18.*vgg16"):
        create_backbone("resnet1000")


def test_pretrained_is_refused_with_a_clear_reason():
    with pytest.raises(ValueError, match="no network"):
        create_backbone("resnet18", pretrained=True)


def test_fuse_channels_only_for_multibranch():
    with pytest.raises(ValueError, match="fuse_channels"):
        create_backbone("resnet18", fuse_channels=128)


def test_reserved_kwargs_rejected():
    with pytest.raises(ValueError, match="out_indices"):
        create_backbone("resnet18", out_indices=(3,))


@pytest.mark.parametrize(
    "shape, message",
    [
        ((1, 1, 256, 256), r"expected images of shape \(B, 3, H, W\)"),
        ((3, 256, 256), r"expected images of shape"),
        ((1, 3, 250, 256), "multiple of 32"),
    ],
)
def test_bad_input_shapes(shape, message):
    backbone = create_backbone("mobilenetv2_100")
    with pytest.raises(ValueError, match=message):
        backbone(torch.randn(*shape))
    with pytest.raises(ValueError, match="multiple of 32"):
        backbone.output_size(100)
