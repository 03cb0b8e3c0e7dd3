"""Timing primitives: statistics, stop rules, warm-up, abort, throughput window and batch sweep.

Most tests drive the loops with a fake clock advanced by the workload itself, so they assert exact behaviour and
never depend on this (noisy, shared) machine's speed; the few real-clock tests only assert lower bounds that
time.sleep guarantees.
"""

from __future__ import annotations

import itertools
import json
import time

import numpy as np
import pytest
import torch

from effscope.errors import SpecError
from effscope.profile import timing


class FakeClock:
    """A wall clock and a process-CPU clock that only move when the fake workload says so."""

    def __init__(self) -> None:
        self.t = 0.0
        self.cpu = 0.0

    def __call__(self) -> float:
        return self.t

    def cpu_clock(self) -> float:
        return self.cpu

    def work(self, seconds: float, *, cpu_per_s: float = 2.0) -> None:
        self.t += seconds
        self.cpu += seconds * cpu_per_s


def workload(clock: FakeClock, durations_ms, *, cpu_per_s: float = 2.0):
    """A callable whose n-th call takes durations_ms[n] (cycled) on the fake clock; it counts its calls."""
    it = itertools.cycle(durations_ms)

    def fn() -> None:
        fn.calls += 1
        clock.work(next(it) / 1e3, cpu_per_s=cpu_per_s)

    fn.calls = 0
    return fn


def latency(fn, clock: FakeClock, **kw) -> timing.LatencyStats:
    kw.setdefault("device", "cpu")
    return timing.measure_latency(fn, clock=clock, cpu_clock=clock.cpu_clock, **kw)


# --------------------------------------------------------------------------------------------------- latency


def test_statistics_match_numpy_on_known_samples():
    clock = FakeClock()
    fn = workload(clock, [1, 2, 3, 4, 5])
    s = latency(fn, clock, warmup_s=0, warmup_min_iters=0, min_iters=10, min_time_s=0.0, max_time_s=0.3)
    assert not s.stable and not s.aborted  # rel IQR of 1..5 ms never reaches 5 %: the cap ends the run
    assert s.timed_s >= 0.3
    a = np.asarray(s.samples_ms)
    assert len(a) == s.n and s.n == fn.calls
    assert s.median_ms == pytest.approx(np.median(a))
    assert s.p10_ms == pytest.approx(np.percentile(a, 10))
    assert s.p90_ms == pytest.approx(np.percentile(a, 90))
    assert s.p99_ms == pytest.approx(np.percentile(a, 99))
    assert s.iqr_ms == pytest.approx(np.percentile(a, 75) - np.percentile(a, 25))
    assert s.mean_ms == pytest.approx(a.mean())
    assert s.rel_iqr == pytest.approx(s.iqr_ms / s.median_ms)
    assert s.median_ms == pytest.approx(3.0)
    assert s.timer == "perf_counter" and s.wall_median_ms == s.median_ms
    assert s.total_s == pytest.approx(s.warmup_s + s.timed_s)


def test_stable_workload_stops_once_min_iters_and_min_time_are_reached():
    clock = FakeClock()
    fn = workload(clock, [2.0])
    s = latency(fn, clock, warmup_s=0, warmup_min_iters=0, min_iters=10, min_time_s=0.099, max_time_s=5.0)
    assert s.stable and s.rel_iqr == 0.0
    assert s.n == 50  # 0.099 s of 2 ms calls: the IQR is tight from the start, min_time_s decides
    s = latency(fn, clock, warmup_s=0, warmup_min_iters=0, min_iters=30, min_time_s=0.0, max_time_s=5.0)
    assert s.stable and s.n == 30  # here min_iters decides


def test_iqr_rule_stops_at_the_first_sample_that_meets_the_target():
    noisy, tight = [1.0, 3.0] * 10, [2.0] * 1000
    clock = FakeClock()
    fn = workload(clock, noisy + tight)
    s = latency(fn, clock, warmup_s=0, warmup_min_iters=0, min_iters=10, min_time_s=0.0, target_rel_iqr=0.05)
    assert s.stable
    expected = next(
        n
        for n in range(10, 1020)
        if np.subtract(*np.percentile((noisy + tight)[:n], [75, 25])) / np.median((noisy + tight)[:n]) <= 0.05
    )
    assert s.n == expected and expected > len(noisy)


def test_warmup_is_time_budgeted_and_excluded_from_samples():
    clock = FakeClock()
    first = [100.0]  # a slow first call (lazy init), then a steady 1 ms
    fn = workload(clock, first + [1.0] * 10_000)
    s = latency(fn, clock, warmup_s=0.1205, warmup_min_iters=10, min_iters=5, min_time_s=0.0)
    assert s.warmup_s >= 0.1205 and s.warmup_iters >= 10
    assert s.warmup_iters == 22  # 100 ms + 21 x 1 ms is the first to pass 0.1205 s
    assert max(s.samples_ms) == pytest.approx(1.0)
    assert fn.calls == s.warmup_iters + s.n


def test_fixed_counts_replace_the_budgeted_warmup_and_the_adaptive_repeats():
    clock = FakeClock()
    fn = workload(clock, [1.0, 9.0])  # unstable: the IQR rule alone would keep sampling to the cap
    s = latency(fn, clock, warmup_iters=3, iters=7, max_time_s=0.001)  # the time cap does not cut a fixed count
    assert (s.warmup_iters, s.n, fn.calls) == (3, 7, 10) and not s.stable
    fn = workload(clock, [2.0])
    t = timing.measure_throughput(
        fn, batch=4, device="cpu", window_s=100.0, warmup_iters=5, iters=30, clock=clock, cpu_clock=clock.cpu_clock
    )
    assert (t.warmup_iters, t.iters, fn.calls) == (5, 30, 35)
    assert t.window_s == pytest.approx(0.060) and t.img_s == pytest.approx(4 * 30 / 0.060)  # 30 calls, one loop
    with pytest.raises(SpecError, match="iters >= 1"):
        latency(fn, clock, iters=0)


def test_a_fixed_count_under_min_iters_is_never_stable():
    """The stop rule is IQR / median <= 5 % over at least 10 samples: --iters 4 of a flat workload does not meet it."""
    clock = FakeClock()
    flat = workload(clock, [2.0])
    s = latency(flat, clock, warmup_iters=0, iters=4)
    assert (s.n, s.rel_iqr, s.stable) == (4, 0.0, False)
    assert latency(flat, clock, warmup_iters=0, iters=10).stable  # 10 samples, zero spread: the rule holds
    assert latency(flat, clock, warmup_iters=0, iters=4, min_iters=3).stable  # a caller's own, lower minimum
    # the named protocols all take more timed iterations than the minimum, so they are judged by the IQR alone
    from effscope.profile.protocols import PROTOCOLS

    assert min(p.iters for p in PROTOCOLS.values()) >= 10
    s = latency(flat, clock, warmup_iters=10, iters=PROTOCOLS["timm"].iters)
    assert s.n == 40 and s.stable


def test_abort_if_stops_early():
    clock = FakeClock()
    fn = workload(clock, [10.0])
    seen = []

    def over_budget(samples):
        seen.append(len(samples))
        return float(np.median(samples)) > 5.0

    s = latency(fn, clock, warmup_min_iters=1, warmup_s=0, min_iters=10, abort_if=over_budget)
    assert s.aborted and not s.stable
    assert s.n == 3 and seen == [3]  # consulted from the third sample on
    assert s.samples_ms == pytest.approx((10.0, 10.0, 10.0))


def test_max_iters_bounds_the_samples():
    clock = FakeClock()
    s = latency(workload(clock, [1.0, 3.0]), clock, warmup_s=0, min_iters=10, min_time_s=0, max_iters=40)
    assert s.n == 40 and not s.stable


def test_time_cap_keeps_a_floor_of_samples():
    clock = FakeClock()
    fn = workload(clock, [2000.0])  # each call is longer than the whole budget
    s = latency(fn, clock, warmup_s=0.1, warmup_min_iters=10, min_iters=10, max_time_s=1.0)
    assert s.warmup_iters == 1  # the warm-up is capped by max_time_s too
    assert s.n == 3 and not s.stable


def test_cpu_utilization_ratio():
    clock = FakeClock()
    torch.set_num_threads(2)
    fn = workload(clock, [1.0], cpu_per_s=1.0)  # one busy thread out of two: half the CPU the run could use
    s = latency(fn, clock, warmup_s=0, min_time_s=0.0)
    assert s.threads == 2
    assert s.cpu_util == pytest.approx(0.5)


def test_real_clock_sleep_is_never_under_its_duration():
    s = timing.measure_latency(
        lambda: time.sleep(0.002), device="cpu", warmup_s=0, warmup_min_iters=2, min_iters=5, min_time_s=0.0,
        max_time_s=0.2, target_rel_iqr=1.0,
    )  # fmt: skip
    assert s.n >= 5 and s.stable
    assert min(s.samples_ms) >= 2.0
    assert s.cpu_util is not None and s.cpu_util < 0.5  # sleeping uses no CPU


def test_cpu_cache_flush_runs_before_every_iteration(monkeypatch):
    zeroed = []

    class Buffer:
        def zero_(self):
            zeroed.append(clock.t)

    monkeypatch.setattr(timing, "_flush_buffer", lambda dev: Buffer())
    clock = FakeClock()
    fn = workload(clock, [1.0])
    s = latency(fn, clock, warmup_s=0, warmup_min_iters=3, min_iters=5, min_time_s=0.0, flush_cache=True)
    assert s.flush_cache and len(zeroed) == fn.calls == s.warmup_iters + s.n


@pytest.mark.parametrize(
    "kw", [{"min_iters": 0}, {"max_time_s": 0}, {"target_rel_iqr": 0}, {"warmup_s": -1}, {"device": "meta"}]
)
def test_bad_protocol_is_a_spec_error(kw):
    with pytest.raises(SpecError, match="must"):
        timing.measure_latency(lambda: None, **{"device": "cpu", **kw})


def test_gpu_path_uses_events_and_a_synchronized_wall_time(monkeypatch):
    """The CUDA code path, driven by fake events: events time the kernel, the wall clock also sees the sync."""
    clock = FakeClock()
    calls = {"sync": 0, "flush": 0}

    class FakeEvent:
        def __init__(self, enable_timing=False):
            assert enable_timing
            self.t = None

        def record(self, stream=None):
            self.t = clock.t

        def elapsed_time(self, end):
            return (end.t - self.t) * 1e3

    def synchronize(device=None):
        calls["sync"] += 1
        clock.work(0.5e-3)  # waiting for the device costs wall time the events do not see

    class Buffer:
        def zero_(self):
            calls["flush"] += 1

    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    monkeypatch.setattr(torch.cuda, "synchronize", synchronize)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: "stream")
    monkeypatch.setattr(timing, "_flush_buffer", lambda dev: Buffer())
    fn = workload(clock, [2.0])
    s = latency(fn, clock, device="cuda", warmup_s=0, warmup_min_iters=2, min_iters=5, min_time_s=0, flush_cache=True)
    assert s.timer == "cuda_event" and s.stable
    assert s.median_ms == pytest.approx(2.0)
    assert s.wall_median_ms == pytest.approx(2.5)
    assert s.cpu_util is None and s.threads is None
    assert calls["flush"] == s.warmup_iters + s.n and s.flush_cache
    assert calls["sync"] >= 2 * s.n  # after each flush and after each timed iteration


# --------------------------------------------------------------------------------------------------- throughput


def test_throughput_counts_images_over_one_window():
    clock = FakeClock()
    fn = workload(clock, [10.0])
    t = timing.measure_throughput(fn, batch=8, device="cpu", window_s=0.095, clock=clock, cpu_clock=clock.cpu_clock)
    assert t.window_s >= 0.095 and t.iters == 10
    assert t.img_s == pytest.approx(8 * t.iters / t.window_s)
    assert t.warmup_iters >= 3 and t.batch == 8
    assert t.cpu_util == pytest.approx(1.0)


class WindowSampler:
    """Records when it was started and stopped on the fake clock, like GpuSampler's start()/stop()."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock, self.started, self.stopped = clock, None, None

    def start(self) -> None:
        self.started = self.clock.t

    def stop(self) -> str:
        self.stopped = self.clock.t
        return "telemetry"


def test_throughput_sampler_covers_exactly_the_window():
    clock = FakeClock()
    fn = workload(clock, [10.0])
    sampler = WindowSampler(clock)
    t = timing.measure_throughput(
        fn, batch=2, device="cpu", window_s=0.05, warmup_s=0.03, sampler=sampler, clock=clock,
        cpu_clock=clock.cpu_clock,
    )  # fmt: skip
    assert t.telemetry == "telemetry"
    assert sampler.started == pytest.approx(t.warmup_s)  # after the warm-up, not before it
    assert sampler.stopped - sampler.started == pytest.approx(t.window_s)


def test_throughput_sampler_is_stopped_when_fn_raises():
    clock = FakeClock()
    sampler = WindowSampler(clock)
    calls = iter(range(100))

    def fn():
        clock.work(0.01)
        if next(calls) == 5:
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        timing.measure_throughput(fn, batch=1, device="cpu", warmup_s=0, sampler=sampler, clock=clock)
    assert sampler.stopped is not None


def test_throughput_real_window_is_at_least_requested():
    t = timing.measure_throughput(lambda: time.sleep(0.01), batch=4, device="cpu", window_s=0.15, warmup_s=0.0)
    assert t.window_s >= 0.15
    assert t.img_s <= 4 / 0.01  # sleep never returns early


def _sweep_make_fn(clock, *, oom_at=None, slow_from=None, error=None):
    def make_fn(batch):
        if oom_at is not None and batch >= oom_at:
            raise error or torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        per_image_ms = 1.0 if slow_from is None or batch < slow_from else 4.0
        return workload(clock, [1.0 + per_image_ms * batch])

    return make_fn


def test_batch_sweep_records_oom_and_keeps_the_best_batch():
    clock = FakeClock()
    r = timing.batch_sweep(
        _sweep_make_fn(clock, oom_at=32, slow_from=8), device="cpu", window_s=0.05, clock=clock,
        cpu_clock=clock.cpu_clock,
    )  # fmt: skip
    assert [p.batch for p in r.points] == [1, 2, 4, 8, 16, 32]
    assert r.oom_batch == 32 and r.stop_reason == "oom"
    last = r.points[-1]
    assert last.img_s is None and "out of memory" in last.failure
    assert r.peak_batch == 4  # throughput fell at 8 and 16: the peak is not the last batch that ran
    assert r.peak_img_s == max(p.img_s for p in r.points if p.img_s is not None)
    data = json.loads(json.dumps(r.as_dict()))
    assert data["oom_batch"] == 32 and data["points"][0]["stats"]["batch"] == 1


def test_batch_sweep_catches_cpu_allocator_oom_raised_while_running():
    clock = FakeClock()

    def make_fn(batch):
        base = workload(clock, [1.0])

        def fn():
            if batch >= 4:
                raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: not enough memory")
            base()

        return fn

    r = timing.batch_sweep(make_fn, device="cpu", window_s=0.01, clock=clock, cpu_clock=clock.cpu_clock)
    assert r.oom_batch == 4 and r.peak_batch == 2
    assert "not enough memory" in r.points[-1].failure


def test_batch_sweep_lets_other_errors_through():
    clock = FakeClock()
    make_fn = _sweep_make_fn(clock, oom_at=2, error=ValueError("a bug"))
    with pytest.raises(ValueError, match="a bug"):
        timing.batch_sweep(make_fn, device="cpu", window_s=0.01, clock=clock, cpu_clock=clock.cpu_clock)


def test_batch_sweep_bounds_and_patience():
    clock = FakeClock()
    kw = {"device": "cpu", "window_s": 0.01, "clock": clock, "cpu_clock": clock.cpu_clock}
    r = timing.batch_sweep(_sweep_make_fn(clock), max_batch=20, **kw)
    assert [p.batch for p in r.points] == [1, 2, 4, 8, 16] and r.stop_reason == "max_batch" and r.oom_batch is None
    r = timing.batch_sweep(_sweep_make_fn(clock, slow_from=4), batches=(8, 1, 2, 4, 16, 64), max_batch=32,
                           patience=2, **kw)  # fmt: skip
    assert [p.batch for p in r.points] == [1, 2, 4, 8] and r.stop_reason == "patience" and r.peak_batch == 2


# --------------------------------------------------------------------------------------------------- reference


def test_reference_workload_is_the_documented_one():
    from torch.utils.flop_counter import FlopCounterMode

    run = timing.reference_workload("cpu")
    with FlopCounterMode(display=False) as counter:
        run()
    assert counter.get_total_flops() == 2 * 436_207_616  # FLOPs = 2 x the documented MACs


def test_time_reference_is_labelled():
    s = timing.time_reference("cpu", max_time_s=0.3)
    assert s.reference_id == timing.REFERENCE_ID == "ref-mlp-v1"
    assert s.n >= 3 and s.median_ms > 0 and s.timer == "perf_counter"


def test_set_threads_returns_the_previous_value():
    torch.set_num_threads(2)
    assert timing.set_threads(1) == 2
    assert torch.get_num_threads() == 1
    assert timing.set_threads(2) == 1
    with pytest.raises(SpecError, match="threads >= 1"):
        timing.set_threads(0)
