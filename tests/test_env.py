"""The recorded environment: flat, JSON-serializable, complete; the CPU description; the GPU branch with fakes."""

from __future__ import annotations

import json
import types

import torch

from effscope.profile import env, telemetry

KEYS = {
    "effscope_version", "timestamp_utc", "hostname", "os", "python_version", "torch_version", "torch_cuda_build",
    "numpy_version", "fvcore_version", "device", "device_type", "device_name", "driver_version", "cuda_version",
    "cudnn_version", "tf32_matmul", "tf32_cudnn", "float32_matmul_precision", "cudnn_benchmark", "dtype", "amp",
    "memory_format", "compile", "cuda_graph", "threads", "torch_threads", "cpu_logical", "cpu_model",
    "memory_total_bytes",
}  # fmt: skip
SCALARS = (str, int, float, bool, type(None))


def test_environment_is_flat_json_with_the_keys():
    e = env.environment(
        "cpu", dtype=torch.bfloat16, threads=2, memory_format=torch.channels_last, compiled="reduce-overhead",
        cuda_graph=False, amp=torch.bfloat16,
    )  # fmt: skip
    assert KEYS <= set(e)
    assert all(isinstance(v, SCALARS) for v in e.values()), {k: type(v) for k, v in e.items()}
    assert json.loads(json.dumps(e)) == e
    assert e["dtype"] == "bfloat16" and e["amp"] == "bfloat16" and e["memory_format"] == "channels_last"
    assert e["compile"] == "reduce-overhead" and e["cuda_graph"] is False and e["threads"] == 2
    assert e["cuda_version"] is None and e["cudnn_version"] is None and e["driver_version"] is None
    assert e["device"] == "cpu" and e["device_name"] and e["torch_threads"] == torch.get_num_threads()
    import effscope

    assert e["effscope_version"] == effscope.__version__ and e["torch_version"] == torch.__version__


def test_environment_on_gpu_reads_cuda_and_nvml(monkeypatch):
    props = types.SimpleNamespace(
        name="NVIDIA H100 80GB HBM3", major=9, minor=0, multi_processor_count=132, total_memory=85_000_000_000
    )
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: props)
    monkeypatch.setattr(telemetry, "nvml_index", lambda dev: 0)
    info = {k: None for k in ("power_limit_w", "max_sm_clock_mhz", "cuda_driver_version")}
    info |= {"driver_version": "550.54.15", "missing_reason": None}
    monkeypatch.setattr(telemetry, "gpu_info", lambda index: info)
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    e = env.environment("cuda:0", dtype=torch.float16)
    assert e["device_name"] == "NVIDIA H100 80GB HBM3" and e["gpu_capability"] == "9.0"
    assert e["driver_version"] == "550.54.15" and e["cuda_version"] == "12.4" and e["device_type"] == "cuda"
    assert all(isinstance(v, SCALARS) for v in e.values())
    json.dumps(e)


def test_cpu_info():
    info = env.cpu_info()
    assert set(info) >= {"cpu_model", "cpu_physical_cores", "cpu_logical", "torch_threads", "memory_total_bytes"}
    assert info["torch_threads"] == torch.get_num_threads()
    assert info["memory_total_bytes"] is None or info["memory_total_bytes"] > 0


CPUINFO = """\
processor\t: 0
model name\t: Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz
physical id\t: 0
core id\t\t: 0

processor\t: 1
model name\t: Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz
physical id\t: 0
core id\t\t: 0

processor\t: 2
model name\t: Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz
physical id\t: 0
core id\t\t: 1

processor\t: 3
model name\t: Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz
physical id\t: 1
core id\t\t: 0
"""


def test_parse_cpuinfo_counts_physical_cores_across_sockets():
    assert env._parse_cpuinfo(CPUINFO) == ("Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz", 3)
    assert env._parse_cpuinfo("processor\t: 0\nBogoMIPS\t: 50.00\n") == (None, None)  # aarch64 says neither
