"""Results are identical with and without the optional torch-scatter extra.

PyG uses torch-scatter for its scatter/segment ops when it is installed, torch's own scatter
otherwise. Both paths are exercised here by toggling PyG's switch; the torch-scatter side runs
only where the extra is installed (`pip install --no-build-isolation ".[scatter]"`).
"""
from __future__ import annotations

import importlib.util

import pytest
import torch
import torch_geometric.typing as pyg_typing

from pyg_sdfl.graph import mine_graph
from pyg_sdfl.nn import SDFLHead

HAS_SCATTER = importlib.util.find_spec("torch_scatter") is not None


def _run_head(monkeypatch, with_scatter: bool):
    monkeypatch.setattr(pyg_typing, "WITH_TORCH_SCATTER", with_scatter)
    torch.manual_seed(0)
    shapes = torch.randn(30, 20, 2).numpy() * 0.1 + torch.rand(1, 20, 2).numpy()
    head = SDFLHead(in_channels=8, feature_size=(2, 2), num_points=20, edge_index=mine_graph(shapes, k=3).edge_index,
                    hidden=16, num_blocks=2, map_hidden=8)
    features = torch.randn(4, 8, 2, 2, requires_grad=True)
    out = head(features)
    out.sum().backward()
    return out.detach(), features.grad.clone()


def test_native_scatter_path_runs(monkeypatch):
    out, grad = _run_head(monkeypatch, with_scatter=False)
    assert torch.isfinite(out).all() and torch.isfinite(grad).all()


@pytest.mark.skipif(not HAS_SCATTER, reason="torch-scatter (the optional [scatter] extra) is not installed")
def test_torch_scatter_and_native_paths_agree(monkeypatch):
    out_native, grad_native = _run_head(monkeypatch, with_scatter=False)
    out_scatter, grad_scatter = _run_head(monkeypatch, with_scatter=True)
    torch.testing.assert_close(out_scatter, out_native, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad_scatter, grad_native, rtol=1e-5, atol=1e-6)
