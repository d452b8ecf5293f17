"""Every backbone x head combination runs forward and backward on CPU and returns (B, N, 2)."""
from __future__ import annotations

import pytest
import torch

from pyg_sdfl.graph import mine_graph
from pyg_sdfl.nn import FCHead, PyGLayerHead, SDFLHead
from pyg_sdfl.nn.backbones import available_backbones, create_backbone
from pyg_sdfl.nn.model import LandmarkModel

IMAGE = 64  # stride 32 -> a 2x2 map: the smallest input all backbones accept, to keep 64 runs fast
N = 68
HEADS = {
    "sdfl": lambda **kw: SDFLHead(**kw, hidden=16, num_blocks=1, map_hidden=16),
    "sdfl_binary": lambda **kw: SDFLHead(**kw, hidden=16, num_blocks=1, map_hidden=16, dynamic=False),
    "fc": lambda **kw: FCHead(**kw, hidden=16),
    **{name: (lambda name=name: (lambda **kw: PyGLayerHead(**kw, layer=name, hidden=16, num_blocks=1, map_hidden=16)))()
       for name in ("gcn", "gat", "gatv2", "sage", "transformer", "graphconv")},
}


@pytest.fixture(scope="module")
def edge_index():
    g = torch.Generator().manual_seed(0)
    shapes = torch.randn(40, N, 2, generator=g).numpy() * 0.05 + torch.rand(1, N, 2, generator=g).numpy()
    return mine_graph(shapes, k=3).edge_index


@pytest.fixture(scope="module", params=sorted(available_backbones()))
def backbone(request):
    torch.manual_seed(0)
    return create_backbone(request.param)


@pytest.mark.parametrize("head_name", sorted(HEADS))
def test_forward_backward(backbone, head_name, edge_index):
    side = IMAGE // backbone.reduction
    head = HEADS[head_name](in_channels=backbone.out_channels, feature_size=(side, side), num_points=N,
                            edge_index=edge_index)
    model = LandmarkModel(backbone, head, image_size=IMAGE)
    images = torch.randn(2, 3, IMAGE, IMAGE)
    coords = model(images)
    assert coords.shape == (2, N, 2)
    assert torch.isfinite(coords).all()
    model.zero_grad(set_to_none=True)
    coords.square().mean().backward()
    assert all(p.grad is not None for p in head.parameters() if p.requires_grad)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in backbone.parameters())
