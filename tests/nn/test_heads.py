"""Heads: shapes, structure, intermediates, isolation of faces, the layer registry, errors, the shipped weights."""
from __future__ import annotations

import pytest
import torch

from pyg_sdfl.graph import random_graph
from pyg_sdfl.nn import GRAPH_LAYERS, DynamicGraphConv, FCHead, PyGLayerHead, SDFLHead, register_graph_layer
from pyg_sdfl.nn.graph_stack import GraphConvBNReLU, ResidualGraphBlock
from pyg_sdfl.weights import pretrained_path

N, C, HW = 10, 8, (4, 4)
SMALL = dict(nodes_per_point=2, hidden=16, num_blocks=2, map_hidden=8)


@pytest.fixture(scope="module")
def graph():
    return random_graph(N, 3, seed=0)


def _features(b: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, C, *HW, generator=torch.Generator().manual_seed(seed))


def test_sdfl_head_structure_matches_the_paper(graph) -> None:
    head = SDFLHead(C, HW, N, graph.edge_index)  # paper defaults: n=4, F=128, 4 blocks
    assert head.node_features == 4 * 4 * 4 and head.hidden == 128 and len(head.blocks) == 4
    assert isinstance(head.input_block, GraphConvBNReLU) and isinstance(head.input_block.conv, DynamicGraphConv)
    assert (head.input_block.conv.in_channels, head.input_block.conv.out_channels) == (64, 128)
    for block in head.blocks:
        assert isinstance(block, ResidualGraphBlock)
        assert isinstance(block.block1.norm, torch.nn.BatchNorm1d) and isinstance(block.block2.act, torch.nn.ReLU)
    assert isinstance(head.output_conv, DynamicGraphConv) and head.output_conv.out_channels == 2
    out = head(_features(2))
    assert out.shape == (2, N, 2)


def test_residual_block_adds_the_identity() -> None:
    torch.manual_seed(0)
    g = random_graph(6, 2, seed=1)
    block = ResidualGraphBlock(DynamicGraphConv(4, 4), DynamicGraphConv(4, 4), 4).eval()
    x, logits = torch.randn(6, 4), torch.randn(g.num_edges)
    inner = block.block2(block.block1(x, g.edge_index, logits), g.edge_index, logits)
    torch.testing.assert_close(block(x, g.edge_index, logits), x + inner)


@pytest.mark.parametrize("make", [
    lambda g: SDFLHead(C, HW, N, g.edge_index, **SMALL),
    lambda g: SDFLHead(C, HW, N, g, dynamic=False, **SMALL),
    lambda g: SDFLHead(C, HW, N, g.edge_index, softmax_over="source", **SMALL),
    *[(lambda name: lambda g: PyGLayerHead(C, HW, N, g.edge_index, layer=name, **SMALL))(name) for name in sorted(GRAPH_LAYERS)],
    lambda g: FCHead(C, HW, N, None, hidden=32),
], ids=["sdfl", "sdfl_binary", "sdfl_source", *sorted(GRAPH_LAYERS), "fc"])
def test_heads_output_shape_start_near_zero_and_train(graph, make) -> None:
    torch.manual_seed(0)
    head = make(graph)
    out = head(_features())
    assert out.shape == (3, N, 2)
    assert out.abs().max() < 0.05, "the coordinate layer must start near 0"
    (head(_features()) - 1).pow(2).sum().backward()
    missing = [n for n, p in head.named_parameters() if p.grad is None]
    assert not missing, f"no gradient reached {missing}"


def test_sdfl_intermediates(graph) -> None:
    torch.manual_seed(1)
    head = SDFLHead(C, HW, N, graph.edge_index, **SMALL)
    with torch.no_grad():
        head.edge_weighting.fc[2].weight.normal_()  # make the attention non-uniform
    coords, inter = head(_features(), return_intermediates=True)
    e = graph.num_edges
    assert inter["nodes_map_to_node"].shape == (3, N, 2 * 4 * 4)
    assert inter["nodes_input"].shape == (3, N, 16)
    assert [k for k in inter if k.startswith("nodes_block_")] == ["nodes_block_0", "nodes_block_1"]
    assert inter["nodes_block_1"].shape == (3, N, 16)
    assert inter["edge_logits"].shape == inter["alpha"].shape == (3, e)
    # per face, alpha is the softmax of that face's logits over each target's incoming edges
    tgt = graph.edge_index[1]
    for face in range(3):
        a, l = inter["alpha"][face], inter["edge_logits"][face]
        for i in range(N):
            torch.testing.assert_close(a[tgt == i], torch.softmax(l[tgt == i], dim=0))
    torch.testing.assert_close(head(_features()), coords)


def test_binary_adjacency_gives_uniform_alpha(graph) -> None:
    head = SDFLHead(C, HW, N, graph.edge_index, dynamic=False, **SMALL)
    _, inter = head(_features(), return_intermediates=True)
    assert torch.equal(inter["edge_logits"], torch.ones(3, graph.num_edges))
    torch.testing.assert_close(inter["alpha"], torch.full((3, graph.num_edges), 0.25))
    assert not any("edge_weighting" in n for n, _ in head.named_parameters())


@pytest.mark.parametrize("name", ["sdfl", "gat"])
def test_faces_do_not_leak_across_the_batch(graph, name: str) -> None:
    torch.manual_seed(2)
    head = (SDFLHead(C, HW, N, graph.edge_index, **SMALL) if name == "sdfl"
            else PyGLayerHead(C, HW, N, graph.edge_index, layer="gat", **SMALL))
    for p in head.parameters():  # leave the near-zero init so differences are visible
        p.data.normal_(0, 0.3)
    head.eval()  # BatchNorm with running statistics: faces are independent
    feats = _features(4, seed=3)
    batch = head(feats)
    for face in range(4):
        torch.testing.assert_close(head(feats[face : face + 1])[0], batch[face], atol=1e-5, rtol=1e-5)


def test_pyg_head_intermediates(graph) -> None:
    head = PyGLayerHead(C, HW, N, graph.edge_index, layer="sage", **SMALL)
    _, inter = head(_features(), return_intermediates=True)
    assert set(inter) == {"nodes_map_to_node", "nodes_input", "nodes_block_0", "nodes_block_1"}


def test_layer_kwargs_reach_the_layers(graph) -> None:
    head = PyGLayerHead(C, HW, N, graph.edge_index, layer="gat", layer_kwargs={"heads": 3}, **SMALL)
    assert head.input_block.conv.heads == 3
    assert head(_features()).shape == (3, N, 2)  # heads averaged: widths unchanged


def test_adding_a_layer_is_one_registry_entry(graph) -> None:
    from torch_geometric.nn import GraphConv

    register_graph_layer("graphconv_mean", lambda i, o, **kw: GraphConv(i, o, aggr="mean", **kw))
    try:
        head = PyGLayerHead(C, HW, N, graph.edge_index, layer="graphconv_mean", **SMALL)
        assert head.output_conv.aggr == "mean"
        assert head(_features()).shape == (3, N, 2)
    finally:
        GRAPH_LAYERS.pop("graphconv_mean")


def test_unknown_graph_layer_lists_the_known_ones() -> None:
    with pytest.raises(KeyError, match="unknown graph layer 'gin'.*'gat'"):
        PyGLayerHead(C, HW, N, random_graph(N, 3, seed=0).edge_index, layer="gin")


def test_fc_head_is_flatten_hidden_bn_relu_2n() -> None:
    torch.manual_seed(4)
    head = FCHead(C, HW, N, hidden=32)
    for p in head.parameters():
        p.data.normal_(0, 0.1)
    feats = _features()
    z = feats.flatten(1) @ head.fc1.weight.t() + head.fc1.bias
    # training mode: BatchNorm with the batch's biased statistics
    z_bn = (z - z.mean(0)) / torch.sqrt(z.var(0, unbiased=False) + head.norm.eps) * head.norm.weight + head.norm.bias
    expected = torch.relu(z_bn) @ head.fc2.weight.t() + head.fc2.bias
    torch.testing.assert_close(head(feats), expected.view(3, N, 2))
    plain = FCHead(C, HW, N, hidden=32, norm=False)
    plain.load_state_dict({k: v for k, v in head.state_dict().items() if not k.startswith("norm.")})
    expected = torch.relu(z) @ head.fc2.weight.t() + head.fc2.bias
    torch.testing.assert_close(plain(feats), expected.view(3, N, 2))
    assert head.fc1.in_features == C * 16 and head.fc2.out_features == 2 * N


def test_graph_survives_state_dict_and_device_moves(graph) -> None:
    torch.manual_seed(5)
    head = SDFLHead(C, HW, N, graph.edge_index, **SMALL).eval()
    for p in head.parameters():
        p.data.normal_(0, 0.3)
    other = SDFLHead(C, HW, N, random_graph(N, 3, seed=9).edge_index, **SMALL).eval()
    feats = _features()
    other(feats)  # warm other's batched-edge cache with its own graph
    other.load_state_dict(head.state_dict())  # strict: includes the graph buffer
    assert torch.equal(other.edge_index, graph.edge_index)
    torch.testing.assert_close(other(feats), head(feats))
    moved = head.to(torch.float64)
    assert moved(feats.double()).dtype == torch.float64


def test_bad_inputs_raise_clear_errors(graph) -> None:
    head = SDFLHead(C, HW, N, graph.edge_index, **SMALL)
    with pytest.raises(ValueError, match=r"built for features \(B, 8, 4, 4\)"):
        head(torch.randn(2, C, 5, 4))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        head(torch.randn(C, 4, 4))
    with pytest.raises(ValueError, match="refers to node 9 but num_points=8"):
        SDFLHead(C, HW, 8, graph.edge_index, **SMALL)
    with pytest.raises(ValueError, match="graph has 10 nodes but num_points=12"):
        PyGLayerHead(C, HW, 12, graph, **SMALL)
    with pytest.raises(ValueError, match="needs a landmark graph"):
        SDFLHead(C, HW, N, None, **SMALL)
    with pytest.raises(ValueError, match=r"\(2, E\)"):
        SDFLHead(C, HW, N, graph.edge_index.t(), **SMALL)
    with pytest.raises(ValueError, match="softmax_over"):
        SDFLHead(C, HW, N, graph.edge_index, softmax_over="rows", **SMALL)
    with pytest.raises(ValueError, match="feature_size"):
        FCHead(C, (4,), N)
    with pytest.raises(ValueError, match=r"built for features \(B, 8, 4, 4\)"):
        FCHead(C, HW, N)(torch.randn(2, C, 4, 5))


def test_fc_head_hidden_units_survive_adamw():
    """Regression: without the BatchNorm, AdamW at the presets' lr (2e-3) killed most hidden ReLUs
    (1 of 256 alive after 10 epochs on 300-W; <= 81 of 256 here) and the FC head collapsed to the
    mean shape. With it, nearly every unit keeps firing on some input."""
    torch.manual_seed(0)
    head = FCHead(512, (3, 3), 68, hidden=256)
    optimizer = torch.optim.AdamW(head.parameters(), lr=2e-3, weight_decay=1e-4)
    base = torch.rand(68, 2)
    for _ in range(60):
        features = torch.relu(torch.randn(32, 512, 3, 3)) * 0.5
        target = base + 0.05 * torch.randn(32, 68, 2) + 0.02 * features[:, :136].mean((2, 3)).view(32, 68, 2)
        loss = (head(features) - target).abs().mean() * 96
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    head.eval()
    with torch.no_grad():
        features = torch.relu(torch.randn(64, 512, 3, 3)) * 0.5
        hidden = head(features, return_intermediates=True)[1]["hidden"]
    assert (hidden > 0).any(0).float().mean() >= 0.9


def test_head_options_are_keywords(graph) -> None:
    """The head-specific options follow the four shared arguments by name only: a fifth positional
    argument is an error, not silently ``dynamic`` or ``layer``."""
    with pytest.raises(TypeError):
        SDFLHead(C, HW, N, graph.edge_index, 2)
    with pytest.raises(TypeError):
        PyGLayerHead(C, HW, N, graph.edge_index, "gat")
    with pytest.raises(TypeError, match="unexpected keyword"):
        SDFLHead(C, HW, N, graph.edge_index, hiden=16)


SHIPPED = pretrained_path("300w")


@pytest.mark.skipif(not SHIPPED.is_file(), reason=f"shipped weights {SHIPPED.name} are absent")
def test_shipped_head_keys_load_strictly_and_its_graph_stack_reproduces_it() -> None:
    """The head built from the shipped file's own config has exactly the file's head keys and shapes."""
    raw = torch.load(SHIPPED, map_location="cpu", weights_only=True)
    options = {k: v for k, v in raw["config"]["head"].items() if not k.startswith("_")}
    state = {k[len("head."):]: v.float() if v.is_floating_point() else v
             for k, v in raw["model"].items() if k.startswith("head.")}
    edge_index = state["edge_index"]
    channels = state["map_to_node.blocks.0.0.weight"].shape[1]
    side = int(raw["config"]["dataset"]["image_size"]) // 32
    head = SDFLHead(channels, (side, side), 68, edge_index, **options).eval()
    assert {k: tuple(v.shape) for k, v in head.state_dict().items()} == {k: tuple(v.shape) for k, v in state.items()}
    head.load_state_dict(state, strict=True)
    features = torch.randn(2, channels, side, side, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        coords, inter = head(features, return_intermediates=True)
        ei = head.batcher.batched_edge_index(2)
        stack = head.graph_stack
        out = stack(inter["nodes_map_to_node"].reshape(2 * 68, -1), ei, alpha=inter["alpha"].reshape(-1))
    assert not stack.training and not any(k.startswith("graph_stack") for k in head.state_dict())
    torch.testing.assert_close(out.view(2, 68, 2), coords, atol=0, rtol=0)
