"""GPU telemetry through NVML (docs/measurement.md#energy).

`GpuSampler` samples SM/memory clocks, temperature, power and the clock-event (throttle) reasons in a background
thread during a window, and reads the total-energy counter at both ends. `gpu_info` describes a GPU once.

pynvml (package nvidia-ml-py) is imported lazily, so this module imports fine on machines without it, without a
driver or without a GPU; what cannot be read is missing with a reason, never 0. Clocks and power limits are only
read, never changed.

NVML numbers GPUs in its own (PCI) order, which CUDA_VISIBLE_DEVICES does not change: use `nvml_index(device)` to
find the NVML index of a torch CUDA device.
"""

from __future__ import annotations

import dataclasses
import importlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

__all__ = [
    "THROTTLE_REASONS",
    "GpuSampler",
    "Telemetry",
    "decode_reasons",
    "gpu_info",
    "nvml_available",
    "nvml_index",
]

# Bits of nvmlClocksEventReasons (nvml.h; the older nvmlClocksThrottleReason* constants have the same values).
_REASON_BITS = (
    (0x1, "GpuIdle"),
    (0x2, "ApplicationsClocksSetting"),
    (0x4, "SwPowerCap"),
    (0x8, "HwSlowdown"),
    (0x10, "SyncBoost"),
    (0x20, "SwThermalSlowdown"),
    (0x40, "HwThermalSlowdown"),
    (0x80, "HwPowerBrakeSlowdown"),
    (0x100, "DisplayClockSetting"),
)
# The reasons that mean the clocks were held down by power or heat (idle, sync boost, app clocks do not).
THROTTLE_REASONS = frozenset(
    {"SwPowerCap", "HwSlowdown", "SwThermalSlowdown", "HwThermalSlowdown", "HwPowerBrakeSlowdown"}
)
_REASON_GETTERS = ("nvmlDeviceGetCurrentClocksEventReasons", "nvmlDeviceGetCurrentClocksThrottleReasons")
_SHORT_WINDOW_S = 1.0  # the energy counter updates about every 100 ms and the sensor samples part of the time


def decode_reasons(mask: int) -> tuple[str, ...]:
    """Names of the clock-event reason bits set in `mask` (unknown bits as "Unknown(0x...)")."""
    names = [name for bit, name in _REASON_BITS if mask & bit]
    unknown = mask & ~sum(bit for bit, _ in _REASON_BITS)
    bit = 1
    while unknown:
        if unknown & bit:
            names.append(f"Unknown(0x{bit:x})")
            unknown &= ~bit
        bit <<= 1
    return tuple(names)


# --------------------------------------------------------------------------------------------------- NVML access


class _Unavailable(Exception):
    """NVML cannot be used; the message is the reason."""


def _msg(exc: BaseException) -> str:
    return str(exc).strip() or type(exc).__name__


def _start_nvml() -> ModuleType:
    """Import pynvml and initialize NVML (the caller must pair it with `_stop_nvml`)."""
    try:
        nvml = importlib.import_module("pynvml")
    except ImportError as exc:
        raise _Unavailable("pynvml is not installed (pip install nvidia-ml-py)") from exc
    try:
        nvml.nvmlInit()
    except Exception as exc:  # NVMLError_LibraryNotFound, _DriverNotLoaded, ...: any failure means no NVML
        raise _Unavailable(f"NVML could not start (no NVIDIA driver or library): {_msg(exc)}") from exc
    return nvml


def _stop_nvml(nvml: ModuleType) -> None:
    try:
        nvml.nvmlShutdown()
    except Exception:  # shutting down is best effort; a failure here changes no number
        pass


def _open(index: int) -> tuple[ModuleType, Any]:
    """Initialized NVML and the handle of GPU `index`, or _Unavailable with the reason."""
    nvml = _start_nvml()
    try:
        count = nvml.nvmlDeviceGetCount()
        if count == 0:
            raise _Unavailable("NVML found no GPU")
        if not 0 <= index < count:
            raise _Unavailable(f"GPU index {index} is not present (NVML sees {count} GPU(s))")
        return nvml, nvml.nvmlDeviceGetHandleByIndex(index)
    except _Unavailable:
        _stop_nvml(nvml)
        raise
    except Exception as exc:
        _stop_nvml(nvml)
        raise _Unavailable(f"NVML could not open GPU {index}: {_msg(exc)}") from exc


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def nvml_available(index: int = 0) -> tuple[bool, str]:
    """Whether NVML can read GPU `index`; when not, the reason (not installed, no driver/library, no GPU)."""
    try:
        nvml, _ = _open(index)
    except _Unavailable as exc:
        return False, str(exc)
    _stop_nvml(nvml)
    return True, ""


def nvml_index(device: object = None) -> int:
    """The NVML index of a torch CUDA device (default: the current one), matched by UUID.

    Falls back to the CUDA index when NVML or the UUID is unavailable (right whenever CUDA_VISIBLE_DEVICES and
    CUDA_DEVICE_ORDER leave the numbering alone, as on a single-GPU machine).
    """
    import torch

    dev = torch.device("cuda" if device is None else device)
    cuda_index = dev.index if dev.index is not None else torch.cuda.current_device()
    try:
        uuid = str(torch.cuda.get_device_properties(cuda_index).uuid).lower()
        nvml = _start_nvml()
    except Exception:
        return cuda_index
    try:
        for i in range(nvml.nvmlDeviceGetCount()):
            nvml_uuid = _text(nvml.nvmlDeviceGetUUID(nvml.nvmlDeviceGetHandleByIndex(i))).lower()
            if nvml_uuid.removeprefix("gpu-") == uuid.removeprefix("gpu-"):
                return i
    except Exception:
        pass
    finally:
        _stop_nvml(nvml)
    return cuda_index


# --------------------------------------------------------------------------------------------------- sampler


@dataclass(frozen=True)
class Telemetry:
    """What NVML saw during one window.

    `energy_j` is the total-energy counter's difference across the window (`energy_source="counter"`), or, where
    the GPU has no counter, mean sampled power x window (`"sampled_power"`); `mean_power_w` = energy / window.
    Energy per image is the caller's: energy_j / images processed in the window. `throttled` is True when any of
    THROTTLE_REASONS was seen, None when the reasons could not be read. `warnings` name unreadable quantities and
    short windows. When NVML is unavailable, `missing_reason` says why and every number is None (never 0).
    """

    energy_j: float | None
    mean_power_w: float | None
    window_s: float | None
    sm_clock_mhz: float | None
    sm_clock_mhz_min: float | None
    mem_clock_mhz: float | None
    temp_c_max: float | None
    power_w_max: float | None
    throttle_reasons: tuple[str, ...]
    throttled: bool | None
    samples: int
    warnings: tuple[str, ...]
    missing_reason: str | None
    energy_source: str | None = None
    gpu_index: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """The fields as plain data (JSON-serializable; nested results become dicts)."""
        return dataclasses.asdict(self)

    @classmethod
    def missing(cls, reason: str, *, gpu_index: int | None = None) -> Telemetry:
        """A Telemetry with no numbers, saying why."""
        return cls(
            energy_j=None,
            mean_power_w=None,
            window_s=None,
            sm_clock_mhz=None,
            sm_clock_mhz_min=None,
            mem_clock_mhz=None,
            temp_c_max=None,
            power_w_max=None,
            throttle_reasons=(),
            throttled=None,
            samples=0,
            warnings=(),
            missing_reason=reason,
            gpu_index=gpu_index,
        )


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


class GpuSampler:
    """Samples GPU `index` through NVML in a background thread while the `with` block runs.

    ```
    torch.cuda.synchronize()
    with GpuSampler(0, sync=torch.cuda.synchronize) as sampler:
        run_the_window()
    telemetry = sampler.result
    ```
    Every `interval_s` it reads SM and memory clocks, temperature, power and the clock-event reasons (falling back
    to the older ThrottleReasons call); the energy counter is read at entry and exit, each time after `sync()` so
    queued GPU work lands inside the window. Sampling never raises: an unreadable quantity becomes None with a
    warning, and without NVML the result is `Telemetry.missing(reason)`. The NVML calls release the GIL.
    """

    def __init__(
        self,
        index: int = 0,
        *,
        interval_s: float = 0.05,
        sync: Callable[[], object] | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if not interval_s > 0:
            raise ValueError(f"`interval_s > 0` must hold, but got (interval_s={interval_s!r}).")
        self.index = index
        self.interval_s = interval_s
        self.result: Telemetry | None = None
        self._sync = sync
        self._clock = clock
        self._nvml: ModuleType | None = None
        self._handle: Any = None
        self._missing: str | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._started = False
        self._t0 = 0.0
        self._e0: float | None = None
        self._sm: list[float] = []
        self._mem: list[float] = []
        self._temp: list[float] = []
        self._power: list[float] = []
        self._mask = 0
        self._mask_reads = 0
        self._n = 0
        self._warnings: dict[str, str] = {}  # quantity -> first failure, so a dead sensor warns once
        self._reason_getters: list[str] = []

    def __enter__(self) -> GpuSampler:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        """Open NVML, read the energy counter and start sampling (no-op beyond recording why, without NVML)."""
        assert not self._started, "a GpuSampler runs one window"
        self._started = True
        try:
            self._nvml, self._handle = _open(self.index)
        except _Unavailable as exc:
            self._missing = str(exc)
            return
        self._reason_getters = [name for name in _REASON_GETTERS if hasattr(self._nvml, name)]
        if not self._reason_getters:
            self._warnings["clock-event reasons"] = "clock-event reasons unreadable: this pynvml lacks the call"
        try:
            if self._sync is not None:
                self._sync()
            self._t0 = self._clock()
            self._e0 = self._read_energy()
            self._sample()
            self._thread = threading.Thread(target=self._run, name="effscope-gpu-sampler", daemon=True)
            self._thread.start()
        except BaseException:
            _stop_nvml(self._nvml)  # a failed sync (a CUDA error) must not leave NVML open
            raise

    def stop(self) -> Telemetry:
        """Close the window: read the energy counter, stop sampling, close NVML; return (and keep) the result."""
        assert self._started, "stop() before start()"
        if self.result is not None:
            return self.result
        if self._missing is not None:
            self.result = Telemetry.missing(self._missing, gpu_index=self.index)
            return self.result
        if self._sync is not None:
            self._sync()
        window = self._clock() - self._t0
        e1 = self._read_energy()
        self._stop.set()
        assert self._thread is not None
        self._thread.join()
        self._sample()
        _stop_nvml(self._nvml)
        self.result = self._summarize(window, e1)
        return self.result

    # ---------------------------------------------------------------------------- reading

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def _read(self, quantity: str, read: Callable[[], float]) -> float | None:
        try:
            return float(read())
        except Exception as exc:  # NotSupported, NoPermission, GpuIsLost...: the quantity is missing
            with self._lock:
                self._warnings.setdefault(quantity, f"{quantity} unreadable: {_msg(exc)}")
            return None

    def _read_energy(self) -> float | None:
        nvml, h = self._nvml, self._handle
        return self._read("energy counter", lambda: nvml.nvmlDeviceGetTotalEnergyConsumption(h))

    def _read_reasons(self) -> int | None:
        # The newer ClocksEvent name may exist in the binding but not in an older driver: fall back once.
        while self._reason_getters:
            try:
                return int(getattr(self._nvml, self._reason_getters[0])(self._handle))
            except Exception as exc:
                if len(self._reason_getters) == 1:
                    with self._lock:
                        self._warnings.setdefault("clock-event reasons", f"clock-event reasons unreadable: {_msg(exc)}")
                    return None
                self._reason_getters.pop(0)
        return None

    def _sample(self) -> None:
        nvml, h = self._nvml, self._handle
        sm = self._read("SM clock", lambda: nvml.nvmlDeviceGetClockInfo(h, nvml.NVML_CLOCK_SM))
        mem = self._read("memory clock", lambda: nvml.nvmlDeviceGetClockInfo(h, nvml.NVML_CLOCK_MEM))
        temp = self._read("temperature", lambda: nvml.nvmlDeviceGetTemperature(h, nvml.NVML_TEMPERATURE_GPU))
        power_mw = self._read("power", lambda: nvml.nvmlDeviceGetPowerUsage(h))
        mask = self._read_reasons()
        with self._lock:
            self._n += 1
            for values, v in ((self._sm, sm), (self._mem, mem), (self._temp, temp)):
                if v is not None:
                    values.append(v)
            if power_mw is not None:
                self._power.append(power_mw / 1e3)
            if mask is not None:
                self._mask |= mask
                self._mask_reads += 1

    def _summarize(self, window: float, e1: float | None) -> Telemetry:
        warnings = list(self._warnings.values())
        if window < _SHORT_WINDOW_S:
            warnings.append(f"window under 1 s ({window:.3f} s): energy is unreliable (prefer >= 5 s)")
        energy_j: float | None = None
        source: str | None = None
        if self._e0 is not None and e1 is not None:
            energy_j, source = (e1 - self._e0) / 1e3, "counter"
        elif self._power:
            energy_j, source = _mean(self._power) * window, "sampled_power"
            warnings.append("no energy counter: energy is mean sampled power x window")
        reasons = decode_reasons(self._mask)
        return Telemetry(
            energy_j=energy_j,
            mean_power_w=energy_j / window if energy_j is not None and window > 0 else None,
            window_s=window,
            sm_clock_mhz=_mean(self._sm),
            sm_clock_mhz_min=min(self._sm) if self._sm else None,
            mem_clock_mhz=_mean(self._mem),
            temp_c_max=max(self._temp) if self._temp else None,
            power_w_max=max(self._power) if self._power else None,
            throttle_reasons=reasons,
            throttled=any(r in THROTTLE_REASONS for r in reasons) if self._mask_reads else None,
            samples=self._n,
            warnings=tuple(warnings),
            missing_reason=None,
            energy_source=source,
            gpu_index=self.index,
        )


# --------------------------------------------------------------------------------------------------- info

_INFO_KEYS = (
    "name",
    "uuid",
    "driver_version",
    "nvml_version",
    "cuda_driver_version",
    "memory_total_bytes",
    "power_limit_w",
    "max_sm_clock_mhz",
    "max_mem_clock_mhz",
)


def _cuda_version(v: int) -> str:
    return f"{v // 1000}.{v % 1000 // 10}"  # NVML encodes 12.4 as 12040


def gpu_info(index: int = 0) -> dict[str, Any]:
    """A description of GPU `index` from NVML.

    Returns a dict with `index`, the keys name, uuid, driver_version, nvml_version, cuda_driver_version (the
    newest CUDA the driver supports), memory_total_bytes, power_limit_w (enforced), max_sm_clock_mhz and
    max_mem_clock_mhz, `missing_reason` (why nothing could be read, else None) and `missing` (key -> reason for
    each single value that could not be read). Unread values are None.
    """
    info: dict[str, Any] = {"index": index, **dict.fromkeys(_INFO_KEYS), "missing_reason": None, "missing": {}}
    try:
        nvml, h = _open(index)
    except _Unavailable as exc:
        info["missing_reason"] = str(exc)
        return info
    readers: dict[str, Callable[[], Any]] = {
        "name": lambda: _text(nvml.nvmlDeviceGetName(h)),
        "uuid": lambda: _text(nvml.nvmlDeviceGetUUID(h)),
        "driver_version": lambda: _text(nvml.nvmlSystemGetDriverVersion()),
        "nvml_version": lambda: _text(nvml.nvmlSystemGetNVMLVersion()),
        "cuda_driver_version": lambda: _cuda_version(int(nvml.nvmlSystemGetCudaDriverVersion())),
        "memory_total_bytes": lambda: int(nvml.nvmlDeviceGetMemoryInfo(h).total),
        "power_limit_w": lambda: nvml.nvmlDeviceGetEnforcedPowerLimit(h) / 1e3,
        "max_sm_clock_mhz": lambda: int(nvml.nvmlDeviceGetMaxClockInfo(h, nvml.NVML_CLOCK_SM)),
        "max_mem_clock_mhz": lambda: int(nvml.nvmlDeviceGetMaxClockInfo(h, nvml.NVML_CLOCK_MEM)),
    }
    try:
        for key, read in readers.items():
            try:
                info[key] = read()
            except Exception as exc:  # one unsupported query leaves the others readable
                info["missing"][key] = _msg(exc)
    finally:
        _stop_nvml(nvml)
    return info
