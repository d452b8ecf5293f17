"""benchmarks/cpu_ceiling.py: the products it times compute A @ B exactly (int8 into int32, fp32 to
rounding), and a small run writes its table and JSON; bad arguments are refused."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime", reason="the [onnx] extra (onnxruntime) is not installed")
pytest.importorskip("onnx", reason="the [onnx] extra (onnx) is not installed")

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def ceiling():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import cpu_ceiling
    finally:
        sys.path.remove(str(BENCHMARKS))
    return cpu_ceiling


@pytest.mark.parametrize("precision", ["int8", "fp32"])
def test_the_timed_product_is_the_matrix_product(ceiling, precision):
    import onnx
    import onnxruntime as ort

    size = 48
    data = ceiling.product_model(precision, size)
    weight = onnx.numpy_helper.to_array(onnx.load_from_string(data).graph.initializer[0])
    a = ceiling.product_input(precision, size)
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    got = session.run(None, {"A": a})[0]
    if precision == "int8":
        assert weight.dtype == np.int8 and a.dtype == np.uint8 and got.dtype == np.int32
        np.testing.assert_array_equal(got, a.astype(np.int64) @ weight.astype(np.int64))
    else:
        np.testing.assert_allclose(got, a @ weight, rtol=1e-4, atol=1e-3)


def test_small_run_writes_table_and_json(ceiling, tmp_path, capsys):
    out, md = tmp_path / "c.json", tmp_path / "c.md"
    assert ceiling.main(["--size", "64", "--repeats", "2", "--warmup", "1", "--threads", "1",
                         "--out", str(out), "--markdown", str(md)]) == 0
    payload = json.loads(out.read_text())
    for precision in ("int8", "fp32"):
        r = payload["results"][precision]
        assert r["size"] == 64 and len(r["runs_ms"]) == 2 and r["gop_per_s"] > 0
        assert r["gop_per_s"] == pytest.approx(2 * 64 ** 3 / (r["median_ms"] / 1e3) / 1e9)
    assert "cpu_flags" in payload["meta"]
    assert "| int8 | MatMulInteger |" in md.read_text() and "| fp32 | MatMul |" in capsys.readouterr().out


def test_bad_arguments_are_refused(ceiling):
    with pytest.raises(SystemExit):
        ceiling.parse_args(["--size", "0"])
    with pytest.raises(ValueError, match="int8' or 'fp32'"):
        ceiling.product_model("bf16", 8)
