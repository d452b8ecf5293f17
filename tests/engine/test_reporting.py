"""run_metadata: what every reported number carries, the CPU's model and speed-deciding flags included."""
from __future__ import annotations

import platform

from pyg_sdfl.engine.reporting import CPU_FLAGS_OF_INTEREST, cpu_description, run_metadata

CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Processor
flags\t\t: fpu sse2 avx2 fma avx512f avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8 xsave

processor\t: 1
model name\t: Intel(R) Xeon(R) Processor
flags\t\t: fpu sse2 avx2 fma avx512f avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8 xsave
"""


def test_the_cpu_model_and_the_flags_that_decide_its_speed(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text(CPUINFO)
    assert cpu_description(path) == {"cpu": "Intel(R) Xeon(R) Processor", "cpu_flags": list(CPU_FLAGS_OF_INTEREST)}
    path.write_text(CPUINFO.replace(" avx512_bf16 amx_bf16 amx_tile amx_int8", "").replace("Intel(R) Xeon(R)", "AMD EPYC"))
    assert cpu_description(path) == {"cpu": "AMD EPYC Processor", "cpu_flags": ["avx2", "fma", "avx512f", "avx512_vnni"]}


def test_without_a_cpuinfo_file_the_platform_answers(tmp_path):
    assert cpu_description(tmp_path / "missing") == {"cpu": platform.processor() or "unknown", "cpu_flags": []}


def test_every_run_records_its_cpu():
    meta = run_metadata(wall_time_s=1.25, device="cpu")
    assert meta["cpu"] == cpu_description()["cpu"] and meta["cpu_flags"] == cpu_description()["cpu_flags"]
    assert meta["wall_time_s"] == 1.2 or meta["wall_time_s"] == 1.3
    assert {"commit", "machine", "torch", "torch_threads", "python"} <= set(meta)
