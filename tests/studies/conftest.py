"""Fixtures shared by the tests of pyg_sdfl.studies."""
from __future__ import annotations

import pytest
import torch

from pyg_sdfl.data.dataset import LandmarkDataset
from pyg_sdfl.data.synthetic import SyntheticFaces
from pyg_sdfl.graph import random_graph
from pyg_sdfl.nn.heads import SDFLHead
from pyg_sdfl.nn.backbones import create_backbone
from pyg_sdfl.nn.model import LandmarkModel


@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(0)
    graph = random_graph(68, 3, seed=0)
    backbone = create_backbone("resnet18")
    model = LandmarkModel(backbone, SDFLHead(backbone.out_channels, (2, 2), 68, graph.edge_index, hidden=16,
                                             num_blocks=2, map_hidden=32), image_size=64)
    with torch.no_grad():  # non-uniform edge weights (the last edge layer starts at zero)
        model.head.edge_weighting.fc[-1].weight.normal_(0, 0.5)
    return model.eval(), graph


@pytest.fixture(scope="module")
def tiny_faces():
    return LandmarkDataset(list(SyntheticFaces(6, seed=1, image_size=96)), "300w", image_size=64)
