"""The environment recorded with every number (docs/measurement.md#environment), and a CPU description for
`effscope device`.

Identical architectures have been seen to differ 2x across nodes and dates until the environment was recorded:
device, driver, library versions, numeric flags, dtype, memory format, compile mode and threads travel with each
result. Everything here reads state; nothing changes it.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import socket
import sys
import warnings
from pathlib import Path
from typing import Any

import torch

__all__ = ["HEAP_PAD_BYTES", "cpu_info", "environment", "retain_freed_heap"]

HEAP_PAD_BYTES = 1 << 30  # freed heap glibc keeps mapped in a measurement process (docs/measurement.md#allocator)
_M_TOP_PAD = -2  # mallopt parameter, from glibc's malloc.h
_heap_pad: int | None = None  # set once retain_freed_heap() took effect in this process


def retain_freed_heap() -> bool:
    """Have glibc keep up to HEAP_PAD_BYTES of freed heap mapped (mallopt M_TOP_PAD) instead of returning it to the
    OS after each forward and faulting it back in on the next one. Without it, a CPU forward's time includes a
    varying share of page faults: on this project's VM, PVTv2-b0's median at batch 1 nearly doubled and a LightViT
    block's spread reached 24 % of its median (reports/allocator_cpu.txt).

    Called first thing in a measurement process (never in a user's own). Returns False where the C library is not
    glibc (nothing is changed there); the Record's environment says which (`malloc_top_pad_bytes`).
    """
    global _heap_pad
    import ctypes
    import ctypes.util

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = libc.mallopt(_M_TOP_PAD, HEAP_PAD_BYTES) == 1
    except (OSError, AttributeError):
        return False
    _heap_pad = HEAP_PAD_BYTES if ok else None
    return ok


def _version(dist: str) -> str | None:
    """An installed distribution's version, without importing it (fvcore is heavy)."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _name(value: object) -> str:
    """The name without its "torch." prefix: float32 for torch.float32, channels_last for torch.channels_last."""
    return str(value).removeprefix("torch.")


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text()
    except OSError:
        return None


# --------------------------------------------------------------------------------------------------- CPU


def _parse_cpuinfo(text: str) -> tuple[str | None, int | None]:
    """(model name, physical cores) from /proc/cpuinfo text; None for what it does not say."""
    model = None
    cores: set[tuple[str, str]] = set()
    block: dict[str, str] = {}
    for line in [*text.splitlines(), ""]:
        if not line.strip():
            if "core id" in block:
                cores.add((block.get("physical id", "0"), block["core id"]))
            block = {}
            continue
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        block[key] = value
        if model is None and key in ("model name", "Model", "Hardware") and value:
            model = value
    return model, len(cores) or None


def _memory_total_bytes() -> int | None:
    meminfo = _read("/proc/meminfo")
    if meminfo:
        for line in meminfo.splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024  # the kernel writes kB (KiB)
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _cpu_quota() -> float | None:
    """CPUs allowed by the cgroup (v2 cpu.max, else v1 cfs quota), None when unlimited or unknown."""
    try:
        text = _read("/sys/fs/cgroup/cpu.max")
        if text is not None:
            parts = text.split()  # "<quota> <period>" or "max <period>"
            return int(parts[0]) / int(parts[1]) if len(parts) >= 2 and parts[0] != "max" else None
        quota, period = _read("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"), _read("/sys/fs/cgroup/cpu/cpu.cfs_period_us")
        if quota and period and int(quota) > 0:
            return int(quota) / int(period)
    except (ValueError, ZeroDivisionError):
        pass
    return None


def _affinity() -> int | None:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def usable_cpus() -> int:
    """The logical CPUs this process may run on (its affinity mask where the OS has one)."""
    return _affinity() or os.cpu_count() or 1


def cpu_info() -> dict[str, Any]:
    """The CPU as effscope sees it: model, physical cores, logical CPUs, CPUs this process may use (affinity and
    cgroup quota), torch's intra-op threads, the SIMD level torch dispatches to, and total memory."""
    model, cores = _parse_cpuinfo(_read("/proc/cpuinfo") or "")
    return {
        "cpu_model": model or platform.processor() or platform.machine() or None,
        "cpu_physical_cores": cores,
        "cpu_logical": os.cpu_count(),
        "cpu_affinity": _affinity(),
        "cpu_quota": _cpu_quota(),
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "memory_total_bytes": _memory_total_bytes(),
    }


# --------------------------------------------------------------------------------------------------- GPU


def _gpu_fields(dev: torch.device) -> dict[str, Any]:
    from effscope.profile import telemetry

    index = dev.index if dev.index is not None else torch.cuda.current_device()
    props = torch.cuda.get_device_properties(index)
    info = telemetry.gpu_info(telemetry.nvml_index(dev))
    return {
        "device_name": props.name,
        "gpu_capability": f"{props.major}.{props.minor}",
        "gpu_sm_count": props.multi_processor_count,
        "gpu_memory_total_bytes": props.total_memory,
        "gpu_power_limit_w": info["power_limit_w"],
        "gpu_max_sm_clock_mhz": info["max_sm_clock_mhz"],
        "driver_version": info["driver_version"],
        "cuda_driver_version": info["cuda_driver_version"],
        "nvml_missing_reason": info["missing_reason"],
        "cuda_version": torch.version.cuda,
        "cudnn_version": torch.backends.cudnn.version(),
    }


# --------------------------------------------------------------------------------------------------- all


def environment(
    device: str | torch.device,
    *,
    dtype: torch.dtype | str,
    threads: int | None = None,
    memory_format: torch.memory_format | str = "contiguous_format",
    compiled: bool | str = False,
    cuda_graph: bool = False,
    amp: torch.dtype | str | None = None,
    attention: str = "auto",
) -> dict[str, Any]:
    """Everything a measurement depends on besides the model, as a flat JSON-serializable dict.

    Args:
        device: the measured device ("cpu", "cuda", "cuda:1").
        dtype: the parameters' and inputs' dtype.
        threads: the thread count the run asked for (None: not pinned); `torch_threads` is what torch uses now.
        memory_format: e.g. torch.channels_last or "contiguous_format".
        compiled: False, True, or the torch.compile mode ("default", "reduce-overhead", "max-autotune").
        cuda_graph: whether iterations replay a captured CUDA graph.
        amp: the autocast dtype when running under AMP, else None.
        attention: the attention core selected for the run ("auto", "measured", "sdpa" or "explicit").

    Returns:
        Keys effscope_version, timestamp_utc, hostname, os, machine, python_version, torch_version,
        torch_cuda_build, numpy_version, fvcore_version, device, device_type, device_name, driver_version,
        cuda_version, cudnn_version (the last three None on CPU), the TF32 / cudnn / matmul-precision flags, dtype,
        amp, memory_format, compile, cuda_graph, attention_core (the attention core `attend` uses on this device,
        in words: the automatic rule or the forced core), threads, torch_threads, torch_interop_threads,
        malloc_top_pad_bytes (retain_freed_heap), and the
        cpu_info() keys; on GPU also gpu_* keys, cuda_driver_version and nvml_missing_reason.
    """
    from effscope._version import __version__
    from effscope.blocks.attention import attention_rule

    dev = torch.device(device)
    with warnings.catch_warnings():  # newer torch deprecates allow_tf32 reads in favour of fp32_precision
        warnings.simplefilter("ignore")
        tf32_matmul = bool(torch.backends.cuda.matmul.allow_tf32)
        tf32_cudnn = bool(torch.backends.cudnn.allow_tf32)
    env: dict[str, Any] = {
        "effscope_version": __version__,
        "timestamp_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "hostname": socket.gethostname(),
        "os": platform.platform(),
        "machine": platform.machine(),
        "python_version": platform.python_version(),
        "python_implementation": sys.implementation.name,
        "torch_version": torch.__version__,
        "torch_cuda_build": torch.version.cuda,
        "numpy_version": _version("numpy"),
        "fvcore_version": _version("fvcore"),
        "device": str(dev),
        "device_type": dev.type,
        "device_name": None,
        "driver_version": None,
        "cuda_version": None,
        "cudnn_version": None,
        "tf32_matmul": tf32_matmul,
        "tf32_cudnn": tf32_cudnn,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
        "dtype": _name(dtype),
        "amp": None if amp is None else _name(amp),
        "memory_format": _name(memory_format),
        "compile": compiled,
        "cuda_graph": bool(cuda_graph),
        "attention_core": attention_rule(dev.type, attention),
        "threads": threads,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "malloc_top_pad_bytes": _heap_pad,  # None: the C library's default (freed heap returned to the OS)
        **cpu_info(),
    }
    if dev.type == "cuda":
        env.update(_gpu_fields(dev))
    else:
        env["device_name"] = env["cpu_model"]
    return env
