"""engine.onnx_runtime: the ONNX backend behind Landmarker, and its errors on bad input."""
from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime", reason="the [onnx] extra (onnxruntime) is not installed")
pytest.importorskip("onnxscript", reason="the [onnx] extra (onnxscript) is not installed")
import onnx  # noqa: E402
from onnx import TensorProto, helper  # noqa: E402

from pyg_sdfl.data.synthetic import SyntheticFaces  # noqa: E402
from pyg_sdfl.engine.checkpoint import CheckpointError, load_model  # noqa: E402
from pyg_sdfl.engine.onnx_export import export_onnx  # noqa: E402
from pyg_sdfl.engine.onnx_runtime import OnnxLandmarkModel, session_options  # noqa: E402
from pyg_sdfl.inference import Landmarker  # noqa: E402


def test_wrong_image_shapes_and_types_are_named(tiny_onnx):
    model = OnnxLandmarkModel(tiny_onnx)
    for bad in (torch.zeros(1, 3, 32, 32), torch.zeros(3, 64, 64), torch.zeros(0, 3, 64, 64), torch.zeros(2, 1, 64, 64)):
        with pytest.raises(ValueError, match=r"expected images of shape \(B, 3, 64, 64\), got"):
            model(bad)
    with pytest.raises(ValueError, match="must be a tensor or an array"):
        model([[0.0]])
    out = model(np.zeros((2, 3, 64, 64), dtype=np.float64))  # arrays and other float types are cast
    assert out.shape == (2, model.num_points, 2) and out.dtype == torch.float32


def test_threads_spin_during_a_run_only(tiny_onnx):
    """The session's threads spin-wait while a run lasts (no wake-up per operator) and stop when it
    returns (no cores taken from the crop code or torch afterwards): both entries, on the model's own
    session, with the thread count asked for."""
    model = OnnxLandmarkModel(tiny_onnx, threads=1)
    options = model.session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "1"
    assert options.get_session_config_entry("session.force_spinning_stop") == "1"
    assert options.intra_op_num_threads == 1 and options.inter_op_num_threads == 1
    assert session_options(3).intra_op_num_threads == 3


def test_wrong_files_are_one_line_errors(tiny_ckpt, tmp_path):
    with pytest.raises(CheckpointError, match="no such ONNX file"):
        OnnxLandmarkModel(tmp_path / "absent.onnx")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"this is not a protobuf" * 10)
    with pytest.raises(CheckpointError, match="garbage.onnx is not a model ONNX Runtime can load") as err:
        load_model(garbage)
    assert "\n" not in str(err.value)
    torch_file_renamed = tmp_path / "weights.onnx"
    torch_file_renamed.write_bytes(tiny_ckpt.read_bytes())
    with pytest.raises(CheckpointError, match="weights.onnx is not a model ONNX Runtime can load"):
        load_model(torch_file_renamed)
    # a valid ONNX model that is not ours: an identity graph without pyg_sdfl metadata
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 64, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 64, 64])])
    foreign = tmp_path / "foreign.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10), foreign)
    with pytest.raises(CheckpointError, match=r"not a pyg_sdfl export \(no pyg_sdfl.format metadata\).*export --onnx"):
        load_model(foreign)


def test_backend_choices_are_checked(tiny_ckpt, tiny_onnx):
    with pytest.raises(ValueError, match=r"backend must be one of \('torch', 'onnx'\)"):
        load_model(tiny_ckpt, backend="tensorrt")
    with pytest.raises(CheckpointError, match="is an ONNX file: it runs on backend='onnx'"):
        load_model(tiny_onnx, backend="torch")
    with pytest.raises(ValueError, match="runs on the CPU"):
        load_model(tiny_onnx, device="cuda")
    with pytest.raises(ValueError, match="precision='bf16' runs on the torch backend"):
        Landmarker.from_checkpoint(tiny_onnx, precision="bf16", detector="haar")
    with pytest.raises(ValueError, match="the onnx backend runs on the CPU; got device='cuda'"):
        Landmarker.from_checkpoint(tiny_onnx, device="cuda", detector="haar")
    with pytest.raises(ValueError, match="is already an ONNX model"):
        export_onnx(tiny_onnx, tiny_onnx.with_name("again.onnx"))


def test_landmarker_on_onnx_equals_torch(tiny_ckpt, tiny_onnx):
    image, pts, _ = SyntheticFaces(1, seed=3, image_size=160).render(0)
    box = np.concatenate([pts.min(axis=0), pts.max(axis=0)])
    on_torch = Landmarker.from_checkpoint(tiny_ckpt, precision="fp32", detector="haar")
    on_onnx = Landmarker.from_checkpoint(tiny_onnx, detector="haar")
    assert on_onnx.backend == "onnx" and on_onnx.precision == "fp32" and on_torch.backend == "torch"
    a = on_torch.predict(image, boxes=[box])[0].landmarks
    b = on_onnx.predict(image, boxes=[box])[0].landmarks
    assert np.abs(a - b).max() < 1e-2  # two passes through the crop: 1e-3 px per pass, mapped to the image
