"""What this CPU can do at most under ONNX Runtime: one large matrix product in int8 and in fp32.

    python benchmarks/cpu_ceiling.py --out results/cpu_ceiling.json --markdown results/cpu_ceiling.md
    python benchmarks/cpu_ceiling.py --size 256 --repeats 2      # smoke

The speed table's rows are worth reading against the best the machine does with the same runtime
and threads: ``(M x K) @ (K x N)`` with ``M = K = N = --size`` (2048), as ``MatMulInteger`` (uint8
activations x int8 weights -> int32: the kernel family the static-int8 convolutions run on, with
``avx512_vnni`` / ``amx_int8`` dot products where the CPU has them) and as fp32 ``MatMul``, in
sessions built like :class:`~pyg_sdfl.engine.onnx_runtime.OnnxLandmarkModel`'s
(:func:`~pyg_sdfl.engine.onnx_runtime.session_options`, ``--threads`` intra-op threads). Throughput
counts a multiply-add as two operations, as the speed benchmark's FLOPs do (torch's FLOP counter):
``2 M K N / seconds``, the median of ``--repeats`` calls after ``--warmup``. A model whose FLOPs are
``F`` per face cannot run faster than ``F / ceiling`` per face in that precision on this machine,
whatever the batch.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any, Dict, List, Optional

import numpy as np

from _common import append_markdown, metadata, write_json

#: the ONNX IR version written (the onnx package may default to one newer than ONNX Runtime reads)
IR_VERSION = 9


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--size", type=int, default=2048, help="M = K = N of the product (default 2048)")
    p.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads (default 2)")
    p.add_argument("--repeats", type=int, default=10, help="timed calls per precision (default 10)")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls first (default 3)")
    p.add_argument("--out", default=None, help="JSON file for the results")
    p.add_argument("--markdown", default=None, help="markdown file the printout is appended to")
    args = p.parse_args(argv)
    if args.size < 1 or args.threads < 1 or args.repeats < 1 or args.warmup < 0:
        p.error("--size, --threads and --repeats must be >= 1, --warmup >= 0")
    return args


def product_model(precision: str, size: int, seed: int = 0) -> bytes:
    """An ONNX model ``Y = A @ B`` with ``B`` a constant ``(size, size)``: ``"int8"`` is MatMulInteger
    (A uint8, B int8, Y int32), ``"fp32"`` is MatMul."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    if precision == "int8":
        weight = rng.integers(-127, 128, (size, size), dtype=np.int8)
        a_type, y_type, op = TensorProto.UINT8, TensorProto.INT32, "MatMulInteger"
    elif precision == "fp32":
        weight = rng.standard_normal((size, size)).astype(np.float32)
        a_type, y_type, op = TensorProto.FLOAT, TensorProto.FLOAT, "MatMul"
    else:
        raise ValueError(f"precision must be 'int8' or 'fp32', got {precision!r}")
    graph = helper.make_graph([helper.make_node(op, ["A", "B"], ["Y"])], f"{precision}_product",
                              [helper.make_tensor_value_info("A", a_type, [size, size])],
                              [helper.make_tensor_value_info("Y", y_type, [size, size])],
                              [numpy_helper.from_array(weight, "B")])
    return helper.make_model(graph, ir_version=IR_VERSION, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString()


def product_input(precision: str, size: int, seed: int = 1) -> np.ndarray:
    """The ``A`` ``(size, size)`` fed to :func:`product_model`'s graph: uint8 for ``"int8"``, else float32."""
    rng = np.random.default_rng(seed)
    if precision == "int8":
        return rng.integers(0, 256, (size, size), dtype=np.uint8)
    return rng.standard_normal((size, size)).astype(np.float32)


def measure(precision: str, size: int, threads: int, repeats: int, warmup: int) -> Dict[str, Any]:
    """Median seconds of one product and the throughput in GOP/s (2 operations per multiply-add)."""
    import onnxruntime as ort

    from pyg_sdfl.engine.onnx_runtime import session_options

    session = ort.InferenceSession(product_model(precision, size), session_options(threads),
                                   providers=["CPUExecutionProvider"])
    feed = {"A": product_input(precision, size)}
    for _ in range(warmup):
        session.run(None, feed)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    return {"op": "MatMulInteger" if precision == "int8" else "MatMul", "size": size, "median_ms": 1e3 * seconds,
            "gop_per_s": 2.0 * size ** 3 / seconds / 1e9, "runs_ms": [round(1e3 * t, 3) for t in times]}


def report(results: Dict[str, Dict[str, Any]], meta: Dict[str, Any], args: argparse.Namespace) -> str:
    lines = [f"ONNX Runtime ceiling on {meta['cpu']} (flags: {' '.join(meta['cpu_flags']) or 'none of interest'}), "
             f"{args.threads} intra-op threads, one {args.size}^3 product, median of {args.repeats} calls:\n",
             "| precision | op | ms per product | GOP/s (2 per multiply-add) |", "|---|---|---:|---:|"]
    for precision, r in results.items():
        lines.append(f"| {precision} | {r['op']} | {r['median_ms']:.1f} | {r['gop_per_s']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise SystemExit("this benchmark needs onnxruntime: pip install -c constraints.txt \".[onnx]\"") from None
    results = {p: measure(p, args.size, args.threads, args.repeats, args.warmup) for p in ("int8", "fp32")}
    meta = metadata(args.threads)
    text = report(results, meta, args)
    print(text)
    append_markdown(args.markdown, text)
    write_json(args.out, {"results": results, "meta": meta,
                          "protocol": f"ONNX Runtime CPU, {args.threads} intra-op threads (session_options), "
                                      f"{args.warmup} warm-up then {args.repeats} timed calls, median"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
