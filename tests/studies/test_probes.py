"""pyg_sdfl.studies.probes: node similarities, parts hidden by a box, alpha shifts, demo model and faces."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pyg_sdfl.data.transforms import denormalise_image, normalise_image
from pyg_sdfl.engine.checkpoint import load_model
from pyg_sdfl.geometry import points_in_pixel_box
from pyg_sdfl.graph import random_graph
from pyg_sdfl.studies import probes


def test_cosine_similarity_against_numpy() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 5, 7))
    x[1, 2] = 0.0  # a dead node in face 1
    expected = np.zeros((5, 5))
    for face in x:
        norms = np.linalg.norm(face, axis=1)
        safe = np.where(norms > 0, norms, 1.0)
        expected += (face @ face.T) / np.outer(safe, safe)
    expected /= 3
    sim = probes.cosine_similarity_matrix(torch.tensor(x, dtype=torch.float32))
    np.testing.assert_allclose(sim, expected, atol=1e-6)
    norms = np.linalg.norm(x[0], axis=1)
    np.testing.assert_allclose(probes.cosine_similarity_matrix(x[0]), (x[0] @ x[0].T) / np.outer(norms, norms),
                               atol=1e-12)
    with pytest.raises(ValueError, match=r"\(B, N, F\)"):
        probes.cosine_similarity_matrix(np.zeros(4))
    with pytest.raises(ValueError, match="NaN"):
        probes.cosine_similarity_matrix(np.full((2, 3), np.nan))


def test_similarity_by_hop() -> None:
    sim = np.array([[1, 0.9, 0.5, 0.1], [0.9, 1, 0.7, 0.3], [0.5, 0.7, 1, 0.2], [0.1, 0.3, 0.2, 1]])
    hops = np.array([[0, 1, 2, np.inf], [1, 0, 1, np.inf], [2, 1, 0, np.inf], [np.inf] * 3 + [0]])
    out = probes.similarity_by_hop(sim, hops)
    assert out == pytest.approx({1: (0.9 + 0.7) / 2, 2: 0.5})
    assert probes.similarity_by_hop(sim, hops, max_hop=1) == pytest.approx({1: 0.8})
    with pytest.raises(ValueError, match="same"):
        probes.similarity_by_hop(sim, hops[:3, :3])


# ============================================================================ occlusion
def test_boxes_and_points_in_box() -> None:
    pts = np.array([[10.0, 20.0], [30.0, 24.0], [50.0, 60.0]])
    # side 20 (x from 10 to 30), margin 0.1 -> 2 px on each side
    assert probes.part_box(pts, [0, 1], 64, margin=0.1) == (8, 18, 33, 27)
    assert probes.part_box(pts, [0, 1, 2], 48, margin=0.5) == (0, 0, 48, 48)  # clipped to the image
    assert probes.side_box(pts, 64, "left", centre=[0, 1]) == (0, 0, 21, 64)
    assert probes.side_box(pts, 64, "right") == (31, 0, 64, 64)
    np.testing.assert_array_equal(points_in_pixel_box(pts, (0, 0, 21, 64)), [True, False, False])
    np.testing.assert_array_equal(points_in_pixel_box(pts, (10, 20, 11, 21)), [True, False, False])
    with pytest.raises(ValueError, match="'left' or 'right'"):
        probes.side_box(pts, 64, "top")
    with pytest.raises(ValueError, match="at least one index"):
        probes.part_box(pts, [], 64)


def test_occlude_images_paints_only_the_box() -> None:
    rng = np.random.default_rng(3)
    crops = [rng.integers(0, 256, (16, 16, 3), dtype=np.uint8) for _ in range(2)]
    images = torch.stack([torch.from_numpy(normalise_image(c)) for c in crops])
    boxes = [(2, 3, 6, 9), (0, 0, 16, 4)]
    out = probes.occlude_images(images, boxes, colour=(10, 20, 30))
    assert out.shape == images.shape and not torch.equal(out, images)
    for crop, box, painted in zip(crops, boxes, out):
        got = denormalise_image(painted)
        x0, y0, x1, y1 = box
        inside = np.zeros((16, 16), dtype=bool)
        inside[y0:y1, x0:x1] = True
        assert (got[inside] == [10, 20, 30]).all()
        np.testing.assert_array_equal(got[~inside], crop[~inside])
    with pytest.raises(ValueError, match="one box per image"):
        probes.occlude_images(images, boxes[:1])


def test_alpha_shift_summary_by_hand() -> None:
    # 3 nodes; edges (j -> i): 0->0, 1->0, 1->1, 2->1, 2->2, 0->2
    edge_index = torch.tensor([[0, 1, 1, 2, 2, 0], [0, 0, 1, 1, 2, 2]])
    clean = torch.tensor([[0.5, 0.5, 0.6, 0.4, 0.7, 0.3]])
    occl = torch.tensor([[0.8, 0.2, 0.5, 0.5, 0.7, 0.3]])
    hidden = np.array([[False, True, False]])  # node 1 hidden
    out = probes.alpha_shift_summary(clean, occl, edge_index, hidden)
    assert out["self (occluded i)"] == pytest.approx({"delta": -0.1, "clean": 0.6, "relative": -0.1 / 0.6, "edges": 1})
    assert out["self (visible i)"]["delta"] == pytest.approx((0.3 + 0.0) / 2)
    assert out["occluded j -> visible i"] == pytest.approx({"delta": -0.3, "clean": 0.5, "relative": -0.6, "edges": 1})
    assert out["visible j -> occluded i"]["delta"] == pytest.approx(0.1)
    assert out["visible j -> visible i"]["edges"] == 1  # 0 -> 2
    assert "occluded j -> occluded i" not in out
    # 1-D inputs are one face
    assert probes.alpha_shift_summary(clean[0], occl[0], edge_index, hidden[0]) == out
    with pytest.raises(ValueError, match=r"\(B, E=6\)"):
        probes.alpha_shift_summary(clean[:, :5], occl[:, :5], edge_index, hidden)


def test_self_loop_values() -> None:
    edge_index = torch.tensor([[1, 0, 2, 1], [0, 0, 1, 1]])
    out = probes.self_loop_values(torch.tensor([0.1, 0.2, 0.3, 0.4]), edge_index, num_nodes=3)
    np.testing.assert_allclose(out[:2], [0.2, 0.4])
    assert np.isnan(out[2])


def test_node_similarities_stages(small_model) -> None:
    model, _ = small_model
    images = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        _, extras = model(images, return_intermediates=True)
    stages = {"map-to-node": "nodes_map_to_node", "after block 2": "nodes_block_1"}
    sims = probes.node_similarities(model, images, stages)
    np.testing.assert_allclose(sims["after block 2"], probes.cosine_similarity_matrix(extras["nodes_block_1"]))
    assert sims["map-to-node"].shape == (68, 68)
    with pytest.raises(ValueError, match="nodes_block_3"):
        probes.node_similarities(model, images)  # the default asks for block 4; this head has 2


def _save_small_checkpoint(path: Path, *overrides: str) -> Path:
    from omegaconf import OmegaConf

    from pyg_sdfl.config import compose
    from pyg_sdfl.engine.builders import build_model as build_from_config
    from pyg_sdfl.engine.checkpoint import save_checkpoint

    cfg = compose([*overrides, "dataset.image_size=64", "head.hidden=16", "head.num_blocks=4", "++head.map_hidden=32"])
    graph = random_graph(68, 3, seed=2)
    torch.manual_seed(3)
    model = build_from_config(cfg, graph, 68)
    save_checkpoint({"model": model.state_dict(), "graph": graph.to_dict(), "scheme": "300w",
                     "config": OmegaConf.to_container(cfg, resolve=True), "epoch": 1}, path)
    return path


def test_load_model_and_analysis_faces(tmp_path: Path) -> None:
    loaded = load_model(_save_small_checkpoint(tmp_path / "m.ckpt"))
    assert loaded.image_size == 64 and loaded.scheme.name == "300w" and not loaded.model.training
    assert torch.equal(loaded.edge_index, loaded.model.head.edge_index)
    faces, description = probes.analysis_faces(loaded, num_faces=3)
    assert len(faces) == 3 and "synthetic test faces" in description
    item = faces[0]
    assert item["image"].shape == (3, 64, 64) and item["landmarks"].shape == (68, 2)
    sims = probes.node_similarities(loaded.model, torch.stack([faces[i]["image"] for i in range(3)]))
    assert list(sims) == list(probes.STAGES)
    with pytest.raises(ValueError, match="num_faces"):
        probes.analysis_faces(loaded, num_faces=0)


def test_analysis_faces_of_a_real_dataset_model(tmp_path: Path, w300_root: Path) -> None:
    loaded = load_model(_save_small_checkpoint(tmp_path / "a.ckpt", "dataset=300w", f"dataset.root={w300_root}"))
    faces, description = probes.analysis_faces(loaded, num_faces=2)
    assert len(faces) == 2 and description == "the first 2 300w test faces"
    assert faces.samples[0].name.startswith("test/")
    # trained elsewhere: the configured root is gone, the shared data folder is used instead
    moved = load_model(_save_small_checkpoint(tmp_path / "b.ckpt", "dataset=300w", "dataset.root=/nowhere"))
    assert probes.analysis_faces(moved, 2, data_dir=w300_root.parent)[1] == "the first 2 300w test faces"
    faces, description = probes.analysis_faces(moved, 2, data_dir=tmp_path)
    assert "synthetic" in description and "not found" in description and len(faces) == 2


def test_load_model_reads_shipped_fp16_weights(tmp_path: Path) -> None:
    """The shipped-weights layout: fp16 tensors, a config reduced to what rebuilds the model."""
    from pyg_sdfl.engine.checkpoint import load_checkpoint, save_checkpoint

    full = load_checkpoint(_save_small_checkpoint(tmp_path / "full.ckpt", "dataset=300w", "dataset.root=/nowhere"))
    config = {"dataset": {k: full["config"]["dataset"][k] for k in ("name", "scheme", "image_size", "crop_scale")},
              "backbone": full["config"]["backbone"], "head": full["config"]["head"], "graph": full["config"]["graph"]}
    state = {k: v.half() if v.is_floating_point() else v for k, v in full["model"].items()}
    save_checkpoint({"kind": "pyg_sdfl.pretrained", "model": state, "graph": full["graph"], "scheme": "300w",
                     "config": config}, tmp_path / "shipped.pt")
    loaded = load_model(tmp_path / "shipped.pt")
    weight = next(loaded.model.parameters())
    assert weight.dtype == torch.float32
    faces, description = probes.analysis_faces(loaded, 2, data_dir=tmp_path)  # no test images here
    assert "synthetic" in description and faces[0]["image"].shape == (3, 64, 64)


@pytest.mark.slow
def test_train_demo_checkpoint_runs(tmp_path: Path) -> None:
    result = probes.train_demo_checkpoint(tmp_path, ["train.epochs=1", "train.max_steps_per_epoch=1",
                                                       "dataset.train.num_faces=40", "dataset.val_fraction=0.2",
                                                       "train.num_workers=0"])
    assert (tmp_path / "best.ckpt").is_file() and result.epochs_run == 1
    loaded = load_model(tmp_path / "best.ckpt")
    assert loaded.config.dataset.train.image_size == 128  # the demo renders its faces at 128 px
    assert loaded.image_size == 64
