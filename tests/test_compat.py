import subprocess
import sys
import textwrap


def test_timm_imports_through_shim():
    from pyg_sdfl._compat import import_timm

    timm = import_timm()
    model = timm.create_model("resnet18", features_only=True, out_indices=(4,), pretrained=False)
    assert model.feature_info.channels() == [512]


def test_shim_is_noop_when_torchvision_ops_load():
    """With a working torchvision (simulated: its ops are already declared), nothing is defined."""
    code = textwrap.dedent(
        """
        import torch
        lib = torch.library.Library("torchvision", "DEF")
        lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        import pyg_sdfl._compat as c
        c._torchvision_ops_loadable = lambda: True  # as with a CPU build whose _C loads
        assert c.ensure_torchvision_importable() is False
        assert c._library is None
        c._torchvision_ops_loadable = lambda: False  # ops missing from _C but already declared
        assert c.ensure_torchvision_importable() is False
        assert c._library is None
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
