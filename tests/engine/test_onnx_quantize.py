"""Static int8 ONNX export: what is quantised, the metadata it carries, and the accuracy it keeps on real faces."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime", reason="the [onnx] extra (onnxruntime) is not installed")
pytest.importorskip("onnxscript", reason="the [onnx] extra (onnxscript) is not installed")
import onnx  # noqa: E402

from pyg_sdfl.engine.checkpoint import load_model  # noqa: E402
from pyg_sdfl.engine.onnx_export import METADATA_PREFIX, node_stages  # noqa: E402
from pyg_sdfl.engine.onnx_quantize import (CONVOLUTIONAL_PART, QUANTISED_OPS, calibration_crops,  # noqa: E402
                                           export_onnx_int8, quantize_onnx)
from pyg_sdfl.weights import pretrained_path  # noqa: E402


@pytest.fixture(scope="module")
def tiny_int8(tiny_onnx, tmp_path_factory):
    crops = np.random.default_rng(0).standard_normal((6, 3, 64, 64)).astype(np.float32)
    data = quantize_onnx(tiny_onnx.read_bytes(), crops, {"calibration_split": "random test crops"})
    path = tmp_path_factory.mktemp("int8") / "tiny_int8.onnx"
    path.write_bytes(data)
    return path


def test_convolutions_are_quantised_and_the_graph_head_is_not(tiny_int8):
    graph = onnx.load(tiny_int8).graph
    producers = {out: node for node in graph.node for out in node.output}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    matmuls = [n for n in graph.node if n.op_type == "MatMul"]
    assert convs and matmuls
    # QDQ: every convolution reads a dequantised input and dequantised (per-channel int8) weights
    for conv in convs:
        assert all(producers[name].op_type == "DequantizeLinear" for name in conv.input[:2]), conv.name
    # the graph head's products run in fp32
    for mm in matmuls:
        assert not any(name in producers and producers[name].op_type == "DequantizeLinear" for name in mm.input), mm.name


def test_the_convolutional_part_stays_int8_between_convolutions(tiny_onnx, tiny_int8):
    """In the backbone (the tiny model's MobileNetV2) no activation runs in fp32 between two
    convolutions: the quantiser absorbs each ReLU6 clip into the range of the convolution before it
    (quantising the convolutions alone leaves all 34 as dequantise -> Clip -> quantise), and the
    residual additions read int8 tensors. Every addition of the graph part reads fp32, its products
    and biases keep their resolution. Node names are the fp32 export's, whose module paths say the part."""
    stage = node_stages(onnx.load(tiny_onnx))
    graph = onnx.load(tiny_int8).graph
    producers = {out: node for node in graph.node for out in node.output}

    def reads_int8(node):
        return any(name in producers and producers[name].op_type == "DequantizeLinear" for name in node.input)

    activations = [n.name for n in graph.node if n.op_type in ("Clip", "Relu") and stage.get(n.name) in CONVOLUTIONAL_PART]
    assert not activations
    adds = [n for n in graph.node if n.op_type == "Add" and stage.get(n.name) in CONVOLUTIONAL_PART]
    graph_adds = [n for n in graph.node if n.op_type == "Add" and stage.get(n.name) == "graph_part"]
    assert adds and graph_adds
    assert all(reads_int8(n) for n in adds), [n.name for n in adds if not reads_int8(n)]
    assert not any(reads_int8(n) for n in graph_adds), [n.name for n in graph_adds if reads_int8(n)]


def test_int8_file_carries_the_metadata_and_loads_like_any_export(tiny_onnx, tiny_int8):
    props = {p.key: p.value for p in onnx.load(tiny_int8).metadata_props}
    source = {p.key: p.value for p in onnx.load(tiny_onnx).metadata_props}
    assert {k: props[k] for k in source} == source
    note = json.loads(props[METADATA_PREFIX + "quantization"])
    assert note["quantised_ops"] == list(QUANTISED_OPS) and note["calibration_faces"] == 6
    assert note["quantised_parts"] == ["backbone", "map_to_node"]
    assert note["calibration_split"] == "random test crops"
    loaded = load_model(tiny_int8)
    assert loaded.backend == "onnx" and loaded.meta["quantization"] == note
    out = loaded.model(torch.zeros(2, 3, 64, 64))
    assert out.shape == (2, loaded.scheme.num_points, 2) and torch.isfinite(out).all()


def test_bad_calibration_crops_are_a_clear_error(tiny_onnx):
    with pytest.raises(ValueError, match=r"\(K, 3, S, S\)"):
        quantize_onnx(tiny_onnx.read_bytes(), np.zeros((3, 64, 64), np.float32))


@pytest.mark.skipif(not pretrained_path("300w").is_file(), reason="the shipped 300-W weights are absent")
def test_shipped_model_in_int8_keeps_its_accuracy_on_real_test_faces(w300_root, tmp_path):
    from pyg_sdfl.data import LandmarkDataset, load_dataset

    loaded = load_model(pretrained_path("300w"))
    path = export_onnx_int8(loaded, tmp_path / "sdfl_300w_int8.onnx", w300_root, count=16)
    int8 = load_model(path)
    assert int8.meta["quantization"]["calibration_split"] == "train"
    samples = load_dataset("300w", w300_root, "test")[::7]  # 32 faces spread over the test split
    data = LandmarkDataset(samples, loaded.scheme, loaded.image_size, loaded.crop_scale)
    images = torch.stack([data[i]["image"] for i in range(len(data))])
    truth = torch.stack([torch.as_tensor(data[i]["landmarks"]) for i in range(len(data))])
    with torch.no_grad():
        fp32, quantised = loaded.model(images), int8.model(images)

    def nme(pred):  # per face, inter-ocular (outer eye corners 36, 45), in percent
        return 100 * ((pred - truth).norm(dim=-1).mean(-1) / (truth[:, 36] - truth[:, 45]).norm(dim=-1))

    # measured on all 224 test faces: 3.210% -> 3.211% (the convolutions alone int8: 3.218%); on these 32,
    # a bound with room for the sample
    assert abs(float(nme(quantised).mean() - nme(fp32).mean())) <= 0.05
    assert float((quantised - fp32).abs().mean()) <= 0.5  # crop pixels


def test_cli_int8_needs_onnx_and_a_calibration_root(tiny_ckpt):
    import subprocess
    import sys

    def export(*flags):
        return subprocess.run([sys.executable, "-m", "pyg_sdfl.cli", "export", "--checkpoint", str(tiny_ckpt), *flags],
                              capture_output=True, text=True, timeout=600)

    no_onnx = export("--int8", "--calibration-root", "somewhere")
    assert no_onnx.returncode == 2 and "--int8 quantises an ONNX export; add --onnx" in no_onnx.stderr
    no_root = export("--onnx", "--int8")
    assert no_root.returncode == 2 and "--int8 needs --calibration-root DIR" in no_root.stderr
    no_int8 = export("--onnx", "--calibration-root", "somewhere")
    assert no_int8.returncode == 2 and "--calibration-root, --calibration-images and --calibration-faces are for " \
        "--int8" in no_int8.stderr
    both = export("--onnx", "--int8", "--calibration-root", "somewhere", "--calibration-images", "photos")
    assert both.returncode == 2 and "(one of the two)" in both.stderr
    storage = export("--onnx", "--storage", "int8")
    assert storage.returncode == 2 and "--storage is for the weights file, not for --onnx" in storage.stderr
    assert "Traceback" not in no_onnx.stderr + no_root.stderr + no_int8.stderr + both.stderr + storage.stderr


def test_an_onnx_file_is_not_quantised_again(tiny_onnx, tmp_path):
    with pytest.raises(ValueError, match="already an ONNX model"):
        export_onnx_int8(tiny_onnx, tmp_path / "again.onnx", tmp_path)


@pytest.mark.skipif(not pretrained_path("300w").is_file(), reason="the shipped 300-W weights are absent")
def test_calibration_faces_come_from_the_training_split_spread_evenly(w300_root):
    loaded = load_model(pretrained_path("300w"))
    from pyg_sdfl.data import LandmarkDataset, load_dataset

    crops = calibration_crops(loaded, w300_root, count=5)
    assert crops.shape == (5, 3, loaded.image_size, loaded.image_size) and crops.dtype == np.float32
    train = load_dataset("300w", w300_root, "train")
    picks = [train[i] for i in np.linspace(0, len(train) - 1, 5).round().astype(int)]  # first to last, evenly
    expected = LandmarkDataset(picks, loaded.scheme, loaded.image_size, loaded.crop_scale)
    np.testing.assert_array_equal(crops, np.stack([expected[i]["image"].numpy() for i in range(5)]))
    with pytest.raises(ValueError, match="at least one face"):
        calibration_crops(loaded, w300_root, count=0)


def test_int8_stored_weights_are_not_rounded_again(tiny_ckpt, tmp_path):
    """A weights file stored in int8 (engine.weight_storage), exported and statically quantised:
    each int8 convolution weight is the stored integers, up to a per-channel sign (BatchNorm's
    negative factors folded in), not a second rounding of them."""
    from onnx import numpy_helper

    from pyg_sdfl.engine.export import export_pretrained
    from pyg_sdfl.engine.onnx_export import export_onnx

    stored_file = export_pretrained(tiny_ckpt, tmp_path / "int8.pt", storage="int8")
    stored = {k: v.numpy().astype(np.int64) for k, v in torch.load(stored_file, weights_only=True)["model"].items()
              if v.dtype == torch.int8}
    crops = np.random.default_rng(0).standard_normal((6, 3, 64, 64)).astype(np.float32)
    graph = onnx.load_from_string(quantize_onnx(export_onnx(stored_file, tmp_path / "w.onnx").read_bytes(), crops,
                                                {"calibration_split": "random test crops"})).graph
    compared = 0
    for tensor in graph.initializer:
        name = tensor.name.removesuffix("_quantized")
        if tensor.data_type != onnx.TensorProto.INT8 or name not in stored:
            continue
        onnx_q, q = numpy_helper.to_array(tensor).astype(np.int64), stored[name]
        rows, ref = onnx_q.reshape(len(onnx_q), -1), q.reshape(len(q), -1)
        sign = np.where((rows * ref).sum(1, keepdims=True) < 0, -1, 1)
        assert np.array_equal(rows, sign * ref), name
        compared += 1
    assert compared >= 5, f"only {compared} int8 weights found by name"


@pytest.mark.skipif(not pretrained_path("300w-fast").is_file(), reason="the shipped 300w-fast weights are absent")
def test_cli_int8_calibrated_on_a_folder_of_photos(w300_root, tmp_path):
    """--calibration-images: unlabelled photos (300-W training images copied without their .pts)
    calibrate the int8 export, and the file records where its faces came from."""
    import shutil
    import subprocess
    import sys

    from pyg_sdfl.data import read_300w

    photos = tmp_path / "photos"
    photos.mkdir()
    for i, s in enumerate(read_300w(w300_root, folders=["train/afw"])[:3]):
        shutil.copy(s.image, photos / f"{i}{s.image.suffix}")
    out = tmp_path / "fast_int8.onnx"
    run = subprocess.run([sys.executable, "-m", "pyg_sdfl.cli", "export", "--onnx", "--int8", "--model", "300w-fast",
                          "--calibration-images", str(photos), "--calibration-faces", "3", "--out", str(out)],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    assert "3 faces from 3 images (0 without a face, 0 unreadable)" in run.stderr
    note = load_model(out).meta["quantization"]
    assert note["calibration_split"] == "images" and note["calibration_faces"] == 3
    assert note["calibration_images"] == str(photos) and note["faces"] == 3
