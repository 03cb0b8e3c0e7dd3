"""GPU telemetry, driven by a fake pynvml module: energy delta, throttle decoding, fallbacks, missing-with-reason."""

from __future__ import annotations

import sys
import time
import types

import pytest
import torch

from effscope.profile import telemetry
from effscope.profile.telemetry import GpuSampler, decode_reasons


class NVMLError(Exception):
    pass


def fake_nvml(
    *,
    energy_mj=(1_000_000, 1_250_000),
    reasons=(0x1,),
    count=1,
    init_error=None,
    event_reasons=True,
    power_mw=300_000,
    unsupported=(),
):
    """A stand-in for the pynvml module with scripted readings; `m.calls` counts init/shutdown."""
    m = types.ModuleType("pynvml")
    m.NVMLError = NVMLError
    m.NVML_CLOCK_SM, m.NVML_CLOCK_MEM, m.NVML_TEMPERATURE_GPU = 1, 2, 0
    m.calls = {"init": 0, "shutdown": 0, "energy": 0}
    energy_iter = iter(energy_mj)
    state = {"reason": 0}

    def maybe_unsupported(name):
        if name in unsupported:
            raise NVMLError("Not Supported")

    def nvmlInit():
        m.calls["init"] += 1
        if init_error is not None:
            raise init_error

    def nvmlShutdown():
        m.calls["shutdown"] += 1

    def energy(h):
        maybe_unsupported("energy")
        m.calls["energy"] += 1
        return next(energy_iter)

    def clock_info(h, kind):
        maybe_unsupported("clock")
        return {1: 1980 - 10 * (state["reason"] % 3), 2: 2619}[kind]

    def reason_reader(h):
        value = reasons[min(state["reason"], len(reasons) - 1)]
        state["reason"] += 1
        return value

    m.nvmlInit, m.nvmlShutdown = nvmlInit, nvmlShutdown
    m.nvmlDeviceGetCount = lambda: count
    m.nvmlDeviceGetHandleByIndex = lambda i: f"handle{i}"
    m.nvmlDeviceGetUUID = lambda h: f"GPU-uuid-{h[-1]}"
    m.nvmlDeviceGetTotalEnergyConsumption = energy
    m.nvmlDeviceGetClockInfo = clock_info
    m.nvmlDeviceGetTemperature = lambda h, sensor: 41 + state["reason"] % 5
    m.nvmlDeviceGetPowerUsage = lambda h: power_mw
    m.nvmlDeviceGetCurrentClocksThrottleReasons = reason_reader
    if event_reasons is True:
        m.nvmlDeviceGetCurrentClocksEventReasons = reason_reader
    elif isinstance(event_reasons, Exception):  # the binding has the call, the driver does not

        def missing_symbol(h):
            raise event_reasons

        m.nvmlDeviceGetCurrentClocksEventReasons = missing_symbol
    m.nvmlDeviceGetName = lambda h: b"NVIDIA H100 80GB HBM3"
    m.nvmlSystemGetDriverVersion = lambda: "550.54.15"
    m.nvmlSystemGetNVMLVersion = lambda: "12.550.54.15"
    m.nvmlSystemGetCudaDriverVersion = lambda: 12040
    m.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(total=85_520_809_984)
    m.nvmlDeviceGetEnforcedPowerLimit = lambda h: 700_000
    m.nvmlDeviceGetMaxClockInfo = lambda h, kind: {1: 1980, 2: 2619}[kind]
    return m


@pytest.fixture
def install(monkeypatch):
    def put(module):
        monkeypatch.setitem(sys.modules, "pynvml", module)
        return module

    return put


class StepClock:
    """perf_counter stand-in: each read moves `step` seconds on."""

    def __init__(self, step: float) -> None:
        self.t, self.step = 0.0, step

    def __call__(self) -> float:
        self.t += self.step
        return self.t


def window(sampler: GpuSampler) -> telemetry.Telemetry:
    with sampler:
        pass
    return sampler.result


# --------------------------------------------------------------------------------------------------- sampler


def test_energy_is_the_counter_delta_and_power_its_rate(install):
    nvml = install(fake_nvml(energy_mj=(1_000_000, 1_250_000)))
    synced = []
    t = window(GpuSampler(0, sync=lambda: synced.append(1), clock=StepClock(5.0)))
    assert t.missing_reason is None and t.energy_source == "counter"
    assert t.window_s == pytest.approx(5.0)
    assert t.energy_j == pytest.approx(250.0)
    assert t.mean_power_w == pytest.approx(50.0)
    assert nvml.calls["energy"] == 2 and len(synced) == 2  # read once at each end, after a sync
    assert nvml.calls["init"] == nvml.calls["shutdown"] == 1
    assert t.samples >= 2 and t.power_w_max == pytest.approx(300.0)
    assert t.sm_clock_mhz_min <= t.sm_clock_mhz <= 1980 and t.mem_clock_mhz == 2619
    assert 41 <= t.temp_c_max <= 45
    assert t.warnings == ()


def test_throttle_reasons_are_decoded_and_flagged(install):
    install(fake_nvml(reasons=(0x1, 0x4 | 0x20)))
    t = window(GpuSampler(clock=StepClock(2.0)))
    assert set(t.throttle_reasons) == {"GpuIdle", "SwPowerCap", "SwThermalSlowdown"}
    assert t.throttled is True


def test_idle_and_sync_boost_are_not_throttling(install):
    install(fake_nvml(reasons=(0x1, 0x10)))
    t = window(GpuSampler(clock=StepClock(2.0)))
    assert t.throttle_reasons == ("GpuIdle", "SyncBoost") and t.throttled is False


@pytest.mark.parametrize("event_reasons", [False, NVMLError("Function Not Found")])
def test_falls_back_to_throttle_reasons_call(install, event_reasons):
    install(fake_nvml(reasons=(0x8,), event_reasons=event_reasons))
    t = window(GpuSampler(clock=StepClock(2.0)))
    assert t.throttle_reasons == ("HwSlowdown",) and t.throttled is True
    assert not any("reasons" in w for w in t.warnings)


def test_unreadable_reasons_leave_throttled_unknown(install):
    nvml = install(fake_nvml(event_reasons=False))
    del nvml.nvmlDeviceGetCurrentClocksThrottleReasons
    t = window(GpuSampler(clock=StepClock(2.0)))
    assert t.throttled is None and t.throttle_reasons == ()
    assert any("clock-event reasons" in w for w in t.warnings)


def test_short_window_warns_about_energy(install):
    install(fake_nvml())
    t = window(GpuSampler(clock=StepClock(0.2)))
    assert any("window under 1 s" in w and "unreliable" in w for w in t.warnings)


def test_unsupported_quantity_is_missing_not_zero(install):
    install(fake_nvml(unsupported=("clock",)))
    t = window(GpuSampler(clock=StepClock(2.0)))
    assert t.sm_clock_mhz is None and t.sm_clock_mhz_min is None and t.mem_clock_mhz is None
    assert t.energy_j == pytest.approx(250.0)
    assert sum("SM clock unreadable" in w for w in t.warnings) == 1  # warned once, not per sample


def test_no_energy_counter_falls_back_to_sampled_power(install):
    install(fake_nvml(unsupported=("energy",), power_mw=200_000))
    t = window(GpuSampler(clock=StepClock(3.0)))
    assert t.energy_source == "sampled_power"
    assert t.energy_j == pytest.approx(200.0 * 3.0) and t.mean_power_w == pytest.approx(200.0)
    assert any("no energy counter" in w for w in t.warnings)


def test_background_thread_samples_during_the_window(install):
    install(fake_nvml())
    with GpuSampler(interval_s=0.01) as sampler:
        time.sleep(0.15)
    assert sampler.result.samples >= 4  # start + end + several from the thread, even on a loaded machine
    assert sampler.result.window_s >= 0.15


def test_sampler_is_closed_when_the_window_raises(install):
    nvml = install(fake_nvml())
    sampler = GpuSampler(clock=StepClock(2.0))
    with pytest.raises(RuntimeError, match="boom"), sampler:
        raise RuntimeError("boom")
    assert sampler.result is not None and nvml.calls["shutdown"] == 1


# --------------------------------------------------------------------------------------------------- missing


def assert_missing(t: telemetry.Telemetry, reason: str) -> None:
    assert reason in t.missing_reason
    numbers = ("energy_j", "mean_power_w", "window_s", "sm_clock_mhz", "sm_clock_mhz_min", "mem_clock_mhz")
    assert all(getattr(t, k) is None for k in (*numbers, "temp_c_max", "power_w_max", "throttled"))
    assert t.samples == 0


def test_missing_when_pynvml_is_not_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` raise ImportError
    assert_missing(window(GpuSampler()), "not installed")
    ok, reason = telemetry.nvml_available()
    assert not ok and "not installed" in reason
    info = telemetry.gpu_info()
    assert "not installed" in info["missing_reason"] and info["name"] is None


def test_missing_when_nvml_init_fails(install):
    install(fake_nvml(init_error=NVMLError("NVML Shared Library Not Found")))
    assert_missing(window(GpuSampler()), "Shared Library Not Found")
    assert telemetry.nvml_available() == (
        False,
        "NVML could not start (no NVIDIA driver or library): NVML Shared Library Not Found",
    )


@pytest.mark.parametrize(("count", "index", "reason"), [(0, 0, "no GPU"), (1, 3, "GPU index 3 is not present")])
def test_missing_when_the_gpu_is_absent(install, count, index, reason):
    nvml = install(fake_nvml(count=count))
    assert_missing(window(GpuSampler(index)), reason)
    assert nvml.calls["init"] == nvml.calls["shutdown"]


# --------------------------------------------------------------------------------------------------- info


def test_decode_reasons():
    assert decode_reasons(0) == ()
    assert decode_reasons(0x4 | 0x40 | 0x80) == ("SwPowerCap", "HwThermalSlowdown", "HwPowerBrakeSlowdown")
    assert decode_reasons(0x8 | 0x400) == ("HwSlowdown", "Unknown(0x400)")


def test_gpu_info_reads_every_field(install):
    nvml = install(fake_nvml())
    nvml.nvmlDeviceGetEnforcedPowerLimit = lambda h: (_ for _ in ()).throw(NVMLError("Not Supported"))
    info = telemetry.gpu_info(0)
    assert info["name"] == "NVIDIA H100 80GB HBM3" and info["driver_version"] == "550.54.15"
    assert info["cuda_driver_version"] == "12.4" and info["memory_total_bytes"] == 85_520_809_984
    assert info["max_sm_clock_mhz"] == 1980 and info["missing_reason"] is None
    assert info["power_limit_w"] is None and info["missing"] == {"power_limit_w": "Not Supported"}
    assert telemetry.nvml_available() == (True, "")


def test_nvml_index_matches_the_cuda_device_by_uuid(install, monkeypatch):
    install(fake_nvml(count=3))
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: types.SimpleNamespace(uuid="uuid-2"))
    assert telemetry.nvml_index("cuda:0") == 2
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: types.SimpleNamespace(uuid="other"))
    assert telemetry.nvml_index("cuda:1") == 1  # no match: the CUDA index
