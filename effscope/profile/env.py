"""The environment recorded with every number (docs/measurement.md#environment), and a CPU description for
`effscope device`.

Identical architectures have been seen to differ 2x across nodes and dates until the environment was recorded:
device, driver, library versions, numeric flags, dtype, memory format, compile mode and threads travel with each
result. Everything here reads state; nothing changes it.
"""

from __future__ import annotations

import datetime
import functools
import importlib.metadata
import json
import os
import platform
import re
import socket
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "HEAP_PAD_BYTES",
    "SPEED_FLAGS",
    "TIMING_ENV_NAMES",
    "TIMING_ENV_PREFIXES",
    "cpu_frequency",
    "cpu_info",
    "environment",
    "git_state",
    "host_environment",
    "retain_freed_heap",
    "timing_env_vars",
]

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


@functools.cache
def _version(dist: str) -> str | None:
    """An installed distribution's version, without importing it (fvcore is heavy); read once per process."""
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


# Instruction-set extensions that change which kernels torch and oneDNN run (x86 "flags", aarch64 "Features"). Part
# of a CPU's identity (record.device_identity): a flag added here makes the CPUs that have it another device to the
# studies, caches and calibrations recorded before.
SPEED_FLAGS = (
    "fma", "avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8",
    "asimd", "asimddp", "sve", "sve2", "bf16", "i8mm",
)  # fmt: skip


def _int(text: str | None) -> int | None:
    try:
        return int(text.strip()) if text is not None else None
    except ValueError:
        return None


def _cpu_ident(text: str) -> dict[str, Any]:
    """Vendor, family, model number, stepping, microcode and the SPEED_FLAGS present, from the first processor of
    /proc/cpuinfo text; None for what it does not say (aarch64 has no family/model/stepping lines). All but the
    microcode make a device's identity (effscope.profile.record.device_identity)."""
    block: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if block:
                break
            continue
        key, _, value = line.partition(":")
        block.setdefault(key.strip(), value.strip())
    flags = block.get("flags", block.get("Features"))
    present = set(flags.split()) if flags is not None else set()
    return {
        "cpu_vendor": block.get("vendor_id") or None,
        "cpu_family": _int(block.get("cpu family")),
        "cpu_model_number": _int(block.get("model")),
        "cpu_stepping": _int(block.get("stepping")),
        "cpu_microcode": block.get("microcode") or None,
        # "" when the CPU lists its flags and has none of SPEED_FLAGS; None when it lists none
        "cpu_flags": None if flags is None else " ".join(f for f in SPEED_FLAGS if f in present),
    }


@functools.cache
def _cpu_static() -> dict[str, Any]:
    """What /proc/cpuinfo says that cannot change while the process runs (read once: it is long on big hosts)."""
    text = _read("/proc/cpuinfo") or ""
    model, cores = _parse_cpuinfo(text)
    return {"model": model, "cores": cores, **_cpu_ident(text)}


_CPUFREQ = "/sys/devices/system/cpu/cpu0/cpufreq/"


def _word(path: str) -> str | None:
    text = _read(path)
    return (text.strip() or None) if text is not None else None


def _mhz(path: str) -> float | None:
    khz = _int(_read(path))  # cpufreq writes kHz
    return None if khz is None else khz / 1000


def _boost() -> bool | None:
    """Whether frequency boost (turbo) is on: the policy's or the global cpufreq switch, or intel_pstate's."""
    for path in (_CPUFREQ + "boost", "/sys/devices/system/cpu/cpufreq/boost"):
        value = _int(_read(path))
        if value is not None:
            return bool(value)
    no_turbo = _int(_read("/sys/devices/system/cpu/intel_pstate/no_turbo"))
    return None if no_turbo is None else not no_turbo


def cpu_frequency() -> dict[str, Any]:
    """CPU 0's frequency scaling as cpufreq exposes it (all None in most VMs and containers, which hide it)."""
    return {
        "cpu_freq_governor": _word(_CPUFREQ + "scaling_governor"),
        "cpu_freq_driver": _word(_CPUFREQ + "scaling_driver"),
        "cpu_freq_mhz": _mhz(_CPUFREQ + "scaling_cur_freq"),
        "cpu_freq_max_mhz": _mhz(_CPUFREQ + "cpuinfo_max_freq"),
        "cpu_freq_limit_mhz": _mhz(_CPUFREQ + "scaling_max_freq"),
        "cpu_boost": _boost(),
    }


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
    cgroup quota), torch's intra-op threads, the SIMD level torch dispatches to, total memory, the CPU's identity
    (vendor, family, model number, stepping, microcode, speed-relevant flags: what tells apart two CPUs a VM
    names alike) and CPU 0's frequency scaling (cpu_frequency)."""
    static = _cpu_static()
    return {
        "cpu_model": static["model"] or platform.processor() or platform.machine() or None,
        "cpu_physical_cores": static["cores"],
        "cpu_logical": os.cpu_count(),
        "cpu_affinity": _affinity(),
        "cpu_quota": _cpu_quota(),
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "memory_total_bytes": _memory_total_bytes(),
        **{k: v for k, v in static.items() if k.startswith("cpu_")},
        **cpu_frequency(),
    }


# --------------------------------------------------------------------------------------------------- software

# Environment variables that change CPU (and a few GPU) timings: thread counts and placement (OpenMP, MKL, OpenBLAS),
# the allocator (glibc tunables, jemalloc/tcmalloc via LD_PRELOAD), oneDNN's and ATen's instruction set, CUDA's
# allocator and launch mode. Recorded under their own names, only those that are set.
TIMING_ENV_PREFIXES = ("OMP_", "KMP_", "GOMP_", "MKL_", "OPENBLAS_", "MALLOC_", "TCMALLOC_", "DNNL_", "ONEDNN_")
TIMING_ENV_NAMES = (
    "LD_PRELOAD", "GLIBC_TUNABLES", "ATEN_CPU_CAPABILITY", "CUDA_LAUNCH_BLOCKING", "CUDA_MODULE_LOADING",
    "CUBLAS_WORKSPACE_CONFIG", "NVIDIA_TF32_OVERRIDE", "PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF",
)  # fmt: skip


def timing_env_vars() -> dict[str, str]:
    """The set TIMING_ENV_PREFIXES / TIMING_ENV_NAMES variables of this process, by name (sorted)."""
    return {k: v for k, v in sorted(os.environ.items()) if k in TIMING_ENV_NAMES or k.startswith(TIMING_ENV_PREFIXES)}


@functools.cache
def _torch_libraries() -> dict[str, str | None]:
    """MKL and oneDNN versions and ATen's parallel backend, from torch.__config__.parallel_info() (which, unlike
    torch.__config__.show(), never asks the CUDA runtime anything)."""
    try:
        info = torch.__config__.parallel_info()
    except Exception:  # noqa: BLE001 - a build without it records None
        info = ""

    def find(pattern: str) -> str | None:
        m = re.search(pattern, info)
        return m.group(1).strip() if m else None

    return {
        "mkl_version": find(r"Math Kernel Library Version (\d[\w.]*)"),
        "onednn_version": find(r"(?:MKL-DNN|oneDNN) v(\d[\w.]*)"),
        "torch_parallel_backend": find(r"ATen parallel backend: ([^\n]+)"),
    }


def _mkldnn_enabled() -> bool | None:
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled)
    except Exception:  # noqa: BLE001
        return None


_GIT_TIMEOUT_S = 2.0


def _git(root: Path, *args: str) -> str | None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")} | {"GIT_OPTIONAL_LOCKS": "0"}
    try:
        done = subprocess.run(
            ["git", "-C", str(root), *args],
            capture_output=True,
            text=True,
            timeout=_GIT_TIMEOUT_S,
            env=env,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError):  # no git, or it hung
        return None
    return done.stdout if done.returncode == 0 else None


@functools.cache
def git_state() -> tuple[str | None, bool | None]:
    """(commit, dirty) of the effscope code this process runs, asked once per process: from its git checkout (dirty:
    tracked files under effscope/ differ from the commit), else the commit pip recorded for an install from git
    (dirty None); (None, None) for a release install, or where git is missing, slow or refuses the directory."""
    return _git_state_of(Path(__file__).resolve().parents[1])


def _git_state_of(package: Path) -> tuple[str | None, bool | None]:
    root = package.parent
    if (root / ".git").exists():  # the package's parent is the checkout (not a site-packages inside some repo)
        head = (_git(root, "rev-parse", "HEAD") or "").strip()
        if not re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", head):
            return None, None
        status = _git(root, "status", "--porcelain", "--untracked-files=no", "--", package.name)
        return head, None if status is None else bool(status.strip())
    try:
        direct = importlib.metadata.distribution(package.name).read_text("direct_url.json")
        commit = json.loads(direct or "{}").get("vcs_info", {}).get("commit_id")
    except (importlib.metadata.PackageNotFoundError, ValueError, AttributeError):
        commit = None
    return (commit if isinstance(commit, str) else None), None


def _load_average() -> tuple[float | None, float | None, float | None]:
    try:
        return os.getloadavg()
    except (AttributeError, OSError):
        return None, None, None


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


def host_environment(device: str | torch.device) -> dict[str, Any]:
    """What environment() records about the host and the software, read without asking the device anything: safe
    in a process that must never initialize CUDA (the parent of a measurement child), so that a Record whose child
    died or hung still says where it ran. `device_name` is the CPU model for a CPU device and None for a GPU (only
    the child asks CUDA which GPU it is).

    Returns:
        Keys effscope_version, timestamp_utc, hostname, os, machine, python_version, python_implementation,
        torch_version, torch_cuda_build, numpy_version, fvcore_version, device, device_type, device_name,
        effscope_git_commit, effscope_git_dirty, load_avg_1m / _5m / _15m, the cpu_info() keys but torch_threads,
        and the set timing environment variables (timing_env_vars).
    """
    from effscope._version import __version__

    dev = torch.device(device)
    commit, dirty = git_state()
    load = _load_average()
    # torch_threads is the run's setting, not the host's: the parent's count would pass for the measured one
    cpu = {k: v for k, v in cpu_info().items() if k != "torch_threads"}
    return {
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
        "device_name": cpu["cpu_model"] if dev.type == "cpu" else None,
        "effscope_git_commit": commit,
        "effscope_git_dirty": dirty,
        "load_avg_1m": load[0],
        "load_avg_5m": load[1],
        "load_avg_15m": load[2],
        **cpu,
        **timing_env_vars(),
    }


def environment(
    device: str | torch.device,
    *,
    dtype: torch.dtype | str,
    threads: int | None = None,
    memory_format: torch.memory_format | str = "contiguous",
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
        memory_format: "channels_last" or "contiguous" (a torch.memory_format is named without "torch.").
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
        malloc_top_pad_bytes (retain_freed_heap); mkl_version, onednn_version, torch_parallel_backend (from
        torch.__config__.parallel_info()) and mkldnn_enabled; effscope_git_commit and effscope_git_dirty
        (git_state: `effscope_version` alone is the same for every commit); load_avg_1m / _5m / _15m
        (os.getloadavg(), at this call); the cpu_info() keys (cpu_model, cpu_physical_cores, cpu_logical,
        cpu_affinity = logical CPUs this process may use, cpu_quota, cpu_capability, memory_total_bytes,
        cpu_vendor, cpu_family, cpu_model_number, cpu_stepping, cpu_microcode, cpu_flags, cpu_freq_governor,
        cpu_freq_driver, cpu_freq_mhz, cpu_freq_max_mhz, cpu_freq_limit_mhz, cpu_boost); and, under their own
        upper-case names, the timing-relevant environment variables that are set (timing_env_vars:
        OMP_NUM_THREADS, KMP_AFFINITY, MALLOC_ARENA_MAX, LD_PRELOAD, ...). On GPU also gpu_* keys,
        cuda_driver_version and nvml_missing_reason. A key the machine does not expose is None, never a guess.
    """
    from effscope.blocks.attention import attention_rule

    dev = torch.device(device)
    with warnings.catch_warnings():  # newer torch deprecates allow_tf32 reads in favour of fp32_precision
        warnings.simplefilter("ignore")
        tf32_matmul = bool(torch.backends.cuda.matmul.allow_tf32)
        tf32_cudnn = bool(torch.backends.cudnn.allow_tf32)
    env: dict[str, Any] = {
        **host_environment(dev),
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
        **_torch_libraries(),
        "mkldnn_enabled": _mkldnn_enabled(),
    }
    if dev.type == "cuda":
        env.update(_gpu_fields(dev))
    return env
