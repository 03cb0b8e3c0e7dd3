"""Latency and throughput timing, following the protocol of docs/measurement.md#timing.

Latency: a time-budgeted warm-up (docs/measurement.md#warm-up), then adaptive repeats until the IQR is tight or a time
cap is reached, summarized robustly (median, p10/p90/p99, IQR; docs/measurement.md#repeats). On GPU each iteration is
bracketed by CUDA events, with a synchronized wall time beside them (docs/measurement.md#timers) and an optional L2
flush as triton's do_bench does (docs/measurement.md#cache-flush). On CPU each iteration is timed with perf_counter, and
the ratio of process CPU time to wall time x threads is recorded: it is what reveals a contended machine when dispersion
does not (docs/measurement.md#contention).

Throughput: images over one synchronized window of at least `window_s` (docs/measurement.md#throughput), and a
power-of-two batch sweep that finds the peak and records the batch that ran out of memory instead of backing off.

A fixed reference workload (`REFERENCE_ID`) is timed in each run so results can be given as ratios to it
(docs/measurement.md#contention).

Interleaved A/B timing (`interleaved`) compares two callables in one process, and chooses the attention core of the
measured mode (`time_attention_cores`, docs/measurement.md#attention-core).

Nothing here prints; every result is a frozen dataclass the caller stores.
"""

from __future__ import annotations

import dataclasses
import gc
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from effscope.errors import SpecError, error_line

if TYPE_CHECKING:
    from effscope.blocks.attention import CoreChoice

__all__ = [
    "ABTiming",
    "FLUSH_BYTES",
    "LOW_CPU_UTIL",
    "REFERENCE_ID",
    "WARMUP_S",
    "LatencyStats",
    "SweepPoint",
    "SweepResult",
    "ThroughputStats",
    "batch_sweep",
    "capture_cuda_graph",
    "interleaved",
    "measure_latency",
    "measure_throughput",
    "reference_workload",
    "set_threads",
    "time_attention_cores",
    "time_chunk",
    "time_reference",
]

Clock = Callable[[], float]

# Warm-up floor: do_bench's 25 ms (with at least 10 calls for latency). At batch 1 on the CPU, medians after it
# matched those after 0.1 s within 0.6 % (benchmarks/warmup_floor.py); first calls are slow for a few calls, not 0.1 s.
WARMUP_S = 0.025
FLUSH_BYTES = 256 * 1024 * 1024  # do_bench's L2 flush buffer: larger than any current GPU's L2
REFERENCE_ID = "ref-mlp-v1"
LOW_CPU_UTIL = 0.9  # cpu_util below this: other processes competed for the cores (docs/measurement.md#contention)

_ABORT_MIN_SAMPLES = 3  # abort_if is consulted from this many timed samples on
_MIN_SAMPLES_AT_CAP = 3  # the time cap never leaves fewer samples than this (or min_iters, if smaller)
_CHECK_EVERY_UNTIL = 1000  # stop rules run after every sample up to here, then after every 1 % more samples


# --------------------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class LatencyStats:
    """Per-iteration latency of one callable, summarized robustly.

    `samples_ms` holds the raw per-iteration times the statistics come from: CUDA-event times on GPU
    (`timer="cuda_event"`), perf_counter times on CPU (`timer="perf_counter"`). `wall_median_ms` is the median of
    synchronized perf_counter times taken around the same iterations (equal to `median_ms` on CPU).
    `stable` says the IQR criterion (IQR / median <= target over at least `min_iters` samples) was met before the
    time cap, or by a fixed `iters` count; `aborted` that `abort_if` stopped the run.
    `cpu_util` (CPU only) is process CPU time / (wall time x `threads`) over the timed calls: under ~0.9 the
    machine was contended, or the workload does not use all threads (compare with the reference's ratio).
    `total_s` = `warmup_s` + `timed_s`; `flush_cache` says whether a 256 MB buffer was zeroed before each
    iteration; `reference_id` names the reference workload when this is its timing (`REFERENCE_ID`), else None.
    """

    median_ms: float
    p10_ms: float
    p90_ms: float
    p99_ms: float
    iqr_ms: float
    mean_ms: float
    n: int
    warmup_iters: int
    warmup_s: float
    total_s: float
    timer: str
    wall_median_ms: float
    rel_iqr: float
    stable: bool
    cpu_util: float | None
    aborted: bool
    samples_ms: tuple[float, ...]
    timed_s: float = 0.0
    threads: int | None = None
    flush_cache: bool = False
    reference_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The fields as plain data (JSON-serializable; nested results become dicts)."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class ThroughputStats:
    """Images per second over one synchronized window: `img_s` = `iters` x `batch` / `window_s`.

    `window_s` is the measured window (at least the requested one); `cpu_util` as in LatencyStats (None on GPU).
    `telemetry` is what a sampler passed to measure_throughput saw over exactly this window (a Telemetry), so
    energy per image is `telemetry.energy_j / (iters * batch)`.
    """

    img_s: float
    batch: int
    iters: int
    window_s: float
    cpu_util: float | None
    warmup_iters: int = 0
    warmup_s: float = 0.0
    threads: int | None = None
    telemetry: Any = None

    def as_dict(self) -> dict[str, Any]:
        """The fields as plain data (JSON-serializable; nested results become dicts)."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class SweepPoint:
    """One batch of a sweep: its throughput, or why it has none (`failure`, e.g. out of memory)."""

    batch: int
    img_s: float | None
    failure: str | None = None
    stats: ThroughputStats | None = None


@dataclass(frozen=True)
class SweepResult:
    """A batch sweep: every batch tried, the peak, and the batch that ran out of memory (None if none did).

    `stop_reason` is "max_batch" (every batch ran), "oom", or "patience" (throughput stopped improving).
    """

    points: tuple[SweepPoint, ...]
    peak_img_s: float | None
    peak_batch: int | None
    oom_batch: int | None
    stop_reason: str

    def as_dict(self) -> dict[str, Any]:
        """The sweep as plain data (JSON-serializable; per-batch stats included)."""
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------------------------------- helpers


def _check_device(device: str | torch.device) -> torch.device:
    dev = torch.device(device)
    if dev.type not in ("cpu", "cuda"):
        raise SpecError(f"The timing device must be cpu or cuda, but got (device={str(dev)!r}).")
    return dev


def _require(ok: bool, rule: str, **values: object) -> None:
    if not ok:
        shown = ", ".join(f"{k}={v!r}" for k, v in values.items())
        raise SpecError(f"`{rule}` must hold, but got ({shown}).")


def _synchronizer(dev: torch.device) -> Callable[[], None]:
    if dev.type == "cuda":
        return lambda: torch.cuda.synchronize(dev)
    return lambda: None


def _flush_buffer(dev: torch.device) -> torch.Tensor:
    """The buffer zeroed before each iteration to evict caches (do_bench: 256 MB of int32)."""
    return torch.empty(FLUSH_BYTES // 4, dtype=torch.int32, device=dev)


def _percentiles(samples: Sequence[float], qs: Sequence[float]) -> list[float]:
    return [float(v) for v in np.percentile(np.asarray(samples, dtype=np.float64), qs)]


def _rel(iqr: float, median: float) -> float:
    if median > 0:
        return iqr / median
    return 0.0 if iqr == 0 else math.inf


def _rel_iqr(samples: Sequence[float]) -> float:
    p25, p50, p75 = _percentiles(samples, (25, 50, 75))
    return _rel(p75 - p25, p50)


def _warm_up(
    fn: Callable[[], object],
    sync: Callable[[], None],
    clock: Clock,
    *,
    min_s: float,
    min_iters: int,
    cap_s: float,
    flush: torch.Tensor | None = None,
) -> tuple[int, float]:
    """Run `fn` until both `min_s` and `min_iters` are reached (or `cap_s` passed); return (iterations, seconds)."""
    sync()
    t0 = clock()
    n, elapsed = 0, 0.0
    while not ((elapsed >= min_s and n >= min_iters) or elapsed >= cap_s):
        if flush is not None:
            flush.zero_()
        fn()
        sync()
        n += 1
        elapsed = clock() - t0
    return n, elapsed


# --------------------------------------------------------------------------------------------------- latency


def measure_latency(
    fn: Callable[[], object],
    *,
    device: str | torch.device,
    warmup_s: float = WARMUP_S,
    warmup_min_iters: int = 10,
    min_iters: int = 10,
    min_time_s: float = 0.2,
    max_time_s: float = 5.0,
    target_rel_iqr: float = 0.05,
    flush_cache: bool = False,
    abort_if: Callable[[tuple[float, ...]], bool] | None = None,
    max_iters: int = 100_000,
    warmup_iters: int | None = None,
    iters: int | None = None,
    clock: Clock = time.perf_counter,
    cpu_clock: Clock = time.process_time,
) -> LatencyStats:
    """Time `fn()` repeatedly and summarize its per-iteration latency.

    `warmup_iters` / `iters` replace the time-budgeted warm-up / the adaptive repeats with exactly that many calls
    (a paper's fixed protocol); the time caps and the IQR stop rule then do not apply, and `stable` says whether the
    count met the rule anyway (fewer than `min_iters` samples never do).

    Warm-up runs until at least `warmup_s` seconds and `warmup_min_iters` calls have passed (or `max_time_s`).
    Timed iterations then repeat until IQR / median <= `target_rel_iqr`, checked once `min_iters` samples and
    `min_time_s` seconds are reached, or until `max_time_s` seconds of timed wall time (never fewer than
    min(min_iters, 3) samples) or `max_iters` samples (which bounds the memory of microsecond-scale workloads).
    Each timed iteration starts from an idle device: on GPU it is synchronized on both sides, so the event time
    includes the launch gaps inside the iteration but no queueing from the previous one.

    Args:
        fn: the workload; called with no arguments, as is (wrap it in no_grad / autocast yourself).
        device: "cpu" or a CUDA device; selects CUDA events or perf_counter.
        flush_cache: zero a 256 MB buffer before each iteration (outside the timed region) so every iteration
            starts with cold caches; right for block micro-benchmarks, wrong for whole models
            (docs/measurement.md#cache-flush).
        abort_if: called with the samples so far (ms) after each iteration from the third on (every 1 % more
            samples past 1000); returning True stops the run early (`aborted=True`).
        clock, cpu_clock: wall and process-CPU clocks in seconds (injectable for tests).
    """
    dev = _check_device(device)
    _require(warmup_s >= 0, "warmup_s >= 0", warmup_s=warmup_s)
    _require(warmup_min_iters >= 0, "warmup_min_iters >= 0", warmup_min_iters=warmup_min_iters)
    _require(min_iters >= 1, "min_iters >= 1", min_iters=min_iters)
    _require(min_time_s >= 0, "min_time_s >= 0", min_time_s=min_time_s)
    _require(max_time_s > 0, "max_time_s > 0", max_time_s=max_time_s)
    _require(target_rel_iqr > 0, "target_rel_iqr > 0", target_rel_iqr=target_rel_iqr)
    _require(max_iters >= min_iters, "max_iters >= min_iters", max_iters=max_iters, min_iters=min_iters)

    cuda = dev.type == "cuda"
    sync = _synchronizer(dev)
    flush = _flush_buffer(dev) if flush_cache else None
    threads = None if cuda else torch.get_num_threads()

    _require(warmup_iters is None or warmup_iters >= 0, "warmup_iters >= 0", warmup_iters=warmup_iters)
    _require(iters is None or iters >= 1, "iters >= 1", iters=iters)
    if warmup_iters is not None:
        warm_iters, warm_s = _warm_up(fn, sync, clock, min_s=0.0, min_iters=warmup_iters, cap_s=math.inf, flush=flush)
    else:
        warm_iters, warm_s = _warm_up(
            fn, sync, clock, min_s=warmup_s, min_iters=warmup_min_iters, cap_s=max_time_s, flush=flush
        )

    if cuda:
        stream = torch.cuda.current_stream(dev)
        start_ev = torch.cuda.Event(enable_timing=True)
        end_ev = torch.cuda.Event(enable_timing=True)
    samples: list[float] = []
    walls: list[float] = []
    cpu_s = 0.0
    stable = aborted = False
    floor_n = min(min_iters, _MIN_SAMPLES_AT_CAP)
    next_check = 0

    sync()
    t_start = clock()
    while True:
        if flush is not None:
            flush.zero_()
            sync()
        if cuda:
            t0 = clock()
            start_ev.record(stream)
            fn()
            end_ev.record(stream)
            sync()
            t1 = clock()
            samples.append(float(start_ev.elapsed_time(end_ev)))
        else:
            c0 = cpu_clock()
            t0 = clock()
            fn()
            t1 = clock()
            cpu_s += cpu_clock() - c0
            samples.append((t1 - t0) * 1e3)
        walls.append((t1 - t0) * 1e3)

        n = len(samples)
        elapsed = t1 - t_start
        if iters is not None:
            if n >= iters:  # the same rule as the adaptive loop's: a tight IQR over at least min_iters samples
                stable = n >= min_iters and _rel_iqr(samples) <= target_rel_iqr
                break
            continue
        if n < _CHECK_EVERY_UNTIL or n >= next_check:
            next_check = n + max(1, n // 100)
            if abort_if is not None and n >= _ABORT_MIN_SAMPLES and abort_if(tuple(samples)):
                aborted = True
                break
            if n >= min_iters and elapsed >= min_time_s and _rel_iqr(samples) <= target_rel_iqr:
                stable = True
                break
        if (elapsed >= max_time_s and n >= floor_n) or n >= max_iters:
            break
    timed_s = clock() - t_start

    p10, p25, p50, p75, p90, p99 = _percentiles(samples, (10, 25, 50, 75, 90, 99))
    wall_total_s = sum(walls) / 1e3
    cpu_util = None if cuda or wall_total_s <= 0 else cpu_s / (wall_total_s * threads)
    return LatencyStats(
        median_ms=p50,
        p10_ms=p10,
        p90_ms=p90,
        p99_ms=p99,
        iqr_ms=p75 - p25,
        mean_ms=float(np.mean(samples)),
        n=len(samples),
        warmup_iters=warm_iters,
        warmup_s=warm_s,
        total_s=warm_s + timed_s,
        timer="cuda_event" if cuda else "perf_counter",
        wall_median_ms=_percentiles(walls, (50,))[0] if cuda else p50,
        rel_iqr=_rel(p75 - p25, p50),
        stable=stable,
        cpu_util=cpu_util,
        aborted=aborted,
        samples_ms=tuple(samples),
        timed_s=timed_s,
        threads=threads,
        flush_cache=flush_cache,
    )


def capture_cuda_graph(fn: Callable[[], object], device: str | torch.device) -> Callable[[], None]:
    """Capture `fn()` in a CUDA graph and return a callable that replays it.

    The replay launches the whole forward at once, so its time is the GPU's work without the host's per-kernel
    launch cost: beside the eager time it shows how host-bound a workload is (docs/measurement.md#host-overhead).
    `fn` is warmed up on a side stream first, as capture requires; it must not synchronize with the host or
    change shapes. Under autocast, its weight cache must be off (`cache_enabled=False`) while capturing.
    Raises RuntimeError when capture fails.
    """
    dev = _check_device(device)
    _require(dev.type == "cuda", "device is a CUDA device", device=str(dev))
    side = torch.cuda.Stream(dev)
    side.wait_stream(torch.cuda.current_stream(dev))
    with torch.cuda.stream(side):
        for _ in range(3):
            fn()
    torch.cuda.current_stream(dev).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph.replay


# --------------------------------------------------------------------------------------------------- A/B


def time_chunk(fn: Callable[[], object], n: int, device: torch.device) -> float:
    """Seconds per call over n back-to-back calls (the GPU synchronized around them)."""
    sync = _synchronizer(device)
    sync()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    sync()
    return (time.perf_counter() - t0) / n


@dataclass(frozen=True)
class ABTiming:
    """Per-round seconds per call of A and B, and the statistics the comparisons print."""

    a: list[float]
    b: list[float]

    @property
    def ratios(self) -> list[float]:
        return [x / y for x, y in zip(self.a, self.b, strict=True)]

    @property
    def ratio_median(self) -> float:
        return statistics.median(self.ratios)

    @property
    def ratio_quartiles(self) -> tuple[float, float]:
        if len(self.ratios) < 2:
            return self.ratios[0], self.ratios[0]
        q = statistics.quantiles(self.ratios, n=4)
        return q[0], q[2]

    @property
    def ratio_of_min(self) -> float:
        """min(A) / min(B): contention only adds time, so the fastest chunks are the steadier comparison."""
        return min(self.a) / min(self.b)


def interleaved(
    a: Callable[[], object],
    b: Callable[[], object],
    *,
    rounds: int,
    chunk_s: float,
    device: torch.device,
    warmup_s: float = 0.3,
) -> ABTiming:
    """Warm both up for `warmup_s` (allocator and caches settle: glibc serves large fresh tensors from mmap until
    its dynamic threshold has grown past them), then `rounds` rounds of one chunk of A and one of B, in alternating
    order so that drift hits both alike; a chunk is as many calls as fit in about `chunk_s` seconds."""
    end = time.perf_counter() + warmup_s
    a(), b()
    while time.perf_counter() < end:
        a(), b()
    n = max(1, round(chunk_s / max(time_chunk(a, 1, device), time_chunk(b, 1, device))))
    ta, tb = [], []
    for r in range(rounds):
        if r % 2:
            tb.append(time_chunk(b, n, device))
            ta.append(time_chunk(a, n, device))
        else:
            ta.append(time_chunk(a, n, device))
            tb.append(time_chunk(b, n, device))
    return ABTiming(ta, tb)


# The measured attention core: a short interleaved comparison per distinct call (about 40 ms on any call that takes
# under 2 ms), and the fused kernel unless the explicit path is clearly faster: ties keep SDPA, which writes no
# logits, and a choice that does not flip with noise keeps Records of one design alike across runs.
CORE_ROUNDS, CORE_CHUNK_S, CORE_WARMUP_S = 7, 0.002, 0.01
CORE_EXPLICIT_MARGIN = 1.03  # the explicit path is chosen when SDPA takes longer than this many times its time
CORE_LOGITS_SHARE = 0.25  # on a GPU, the explicit path is not tried when its logits need more of the free memory


def time_attention_cores(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None, scale: float
) -> CoreChoice:
    """The faster attention core for this call on its own device (a `Tuner` for `measuring_attention`)."""
    from effscope.blocks.attention import CoreChoice, attend, attention_impl

    device = q.device
    logits_bytes = q.numel() // q.shape[-1] * k.shape[-2] * 4  # softmax runs in fp32 under autocast
    if device.type == "cuda" and logits_bytes > CORE_LOGITS_SHARE * torch.cuda.mem_get_info(device)[0]:
        why = f"the explicit path's {logits_bytes / 2**30:.1f} GiB of logits exceed a quarter of the free memory"
        return CoreChoice("sdpa", None, why)

    def run(impl: str) -> Callable[[], object]:
        def call() -> object:
            with attention_impl(impl):
                return attend(q, k, v, scale=scale, bias=bias)

        return call

    try:
        with torch.no_grad():
            t = interleaved(
                run("sdpa"),
                run("explicit"),
                rounds=CORE_ROUNDS,
                chunk_s=CORE_CHUNK_S,
                device=device,
                warmup_s=CORE_WARMUP_S,
            )
    except Exception as exc:  # noqa: BLE001 - only out-of-memory is expected; anything else propagates
        reason = _oom_reason(exc)
        if reason is None:
            raise
        _free_memory(device)
        return CoreChoice("sdpa", None, f"the explicit path ran {reason}")
    ratio = t.ratio_median
    if ratio > CORE_EXPLICIT_MARGIN:
        return CoreChoice("explicit", ratio, f"sdpa took {ratio:.2f}x the explicit path's time")
    return CoreChoice("sdpa", ratio, f"sdpa took {ratio:.2f}x the explicit path's time")


# --------------------------------------------------------------------------------------------------- throughput


def measure_throughput(
    fn: Callable[[], object],
    *,
    batch: int,
    device: str | torch.device,
    window_s: float = 1.0,
    warmup_s: float = WARMUP_S,
    warmup_min_iters: int = 3,
    sampler: Any = None,
    warmup_iters: int | None = None,
    iters: int | None = None,
    clock: Clock = time.perf_counter,
    cpu_clock: Clock = time.process_time,
) -> ThroughputStats:
    """Images per second of `fn()` (one call processes `batch` images) over one synchronized window.

    After a warm-up of at least `warmup_s` seconds and `warmup_min_iters` calls (capped at max(warmup_s,
    window_s)), `fn` runs back to back, without synchronizing between calls, until `window_s` has passed; the
    device is then synchronized and the window closed, so the window covers all the work and is >= `window_s`.

    `sampler` (e.g. telemetry.GpuSampler, anything with start() and stop() -> result) is started after the
    warm-up's synchronization and stopped after the window's, so its energy covers exactly the images counted;
    its result is returned in `telemetry`. It is stopped even when `fn` raises.

    `warmup_iters` / `iters` replace the time-budgeted warm-up / the window with exactly that many calls, timed as
    one synchronized loop (how LightViT, LITv2 and timm time throughput).
    """
    dev = _check_device(device)
    _require(batch >= 1, "batch >= 1", batch=batch)
    _require(window_s > 0, "window_s > 0", window_s=window_s)
    _require(warmup_s >= 0, "warmup_s >= 0", warmup_s=warmup_s)
    cuda = dev.type == "cuda"
    sync = _synchronizer(dev)
    threads = None if cuda else torch.get_num_threads()

    _require(warmup_iters is None or warmup_iters >= 0, "warmup_iters >= 0", warmup_iters=warmup_iters)
    _require(iters is None or iters >= 1, "iters >= 1", iters=iters)
    if warmup_iters is not None:
        warm_iters, warm_s = _warm_up(fn, sync, clock, min_s=0.0, min_iters=warmup_iters, cap_s=math.inf)
    else:
        warm_iters, warm_s = _warm_up(
            fn, sync, clock, min_s=warmup_s, min_iters=warmup_min_iters, cap_s=max(warmup_s, window_s)
        )

    sync()
    if sampler is not None:
        sampler.start()
    try:
        c0 = cpu_clock()
        t0 = clock()
        done = 0
        while True:
            fn()
            done += 1
            if (done >= iters) if iters is not None else (clock() - t0 >= window_s):
                break
        sync()
        window = clock() - t0
        cpu = cpu_clock() - c0
    finally:
        tel = sampler.stop() if sampler is not None else None
    return ThroughputStats(
        img_s=done * batch / window,
        batch=batch,
        iters=done,
        window_s=window,
        cpu_util=None if cuda else cpu / (window * threads),
        warmup_iters=warm_iters,
        warmup_s=warm_s,
        threads=threads,
        telemetry=tel,
    )


def _oom_reason(exc: BaseException) -> str | None:
    """A one-line reason if `exc` is an out-of-memory error (CUDA or CPU allocator), else None."""
    oom_types: tuple[type[BaseException], ...] = (MemoryError,)
    for holder in (torch, torch.cuda):
        cls = getattr(holder, "OutOfMemoryError", None)
        if isinstance(cls, type):
            oom_types += (cls,)
    text = str(exc).strip()
    is_oom = isinstance(exc, oom_types) or (
        isinstance(exc, RuntimeError)
        and any(m in text.lower() for m in ("not enough memory", "out of memory", "can't allocate memory"))
    )
    if not is_oom:
        return None
    return f"out of memory: {error_line(exc)[:200]}"


def _free_memory(dev: torch.device) -> None:
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.empty_cache()


def batch_sweep(
    make_fn: Callable[[int], Callable[[], object]],
    *,
    device: str | torch.device,
    batches: Sequence[int] | None = None,
    max_batch: int = 1024,
    window_s: float = 1.0,
    warmup_s: float = WARMUP_S,
    patience: int | None = None,
    clock: Clock = time.perf_counter,
    cpu_clock: Clock = time.process_time,
) -> SweepResult:
    """Throughput at growing batch sizes, to find the peak (instead of timm's back-off on OOM).

    `make_fn(batch)` returns the callable for that batch (building inputs is part of it, so an OOM while
    allocating them is caught too). Batches are `batches` (default: powers of two 1, 2, 4, ...) up to `max_batch`,
    in increasing order. An out-of-memory error (torch.OutOfMemoryError, MemoryError, or a RuntimeError saying
    "not enough memory" / "out of memory") is recorded as that batch's failure, memory is freed, and the sweep
    stops; any other error propagates. With `patience`, the sweep also stops after that many batches in a row
    below the best throughput so far.
    """
    dev = _check_device(device)
    _require(max_batch >= 1, "max_batch >= 1", max_batch=max_batch)
    _require(patience is None or patience >= 1, "patience is None or patience >= 1", patience=patience)
    if batches is None:
        sizes = [1 << k for k in range(max_batch.bit_length()) if 1 << k <= max_batch]
    else:
        _require(all(int(b) >= 1 for b in batches), "every batch >= 1", batches=tuple(batches))
        sizes = sorted({int(b) for b in batches if int(b) <= max_batch})

    points: list[SweepPoint] = []
    best: SweepPoint | None = None
    oom_batch: int | None = None
    stop_reason = "max_batch"
    worse_in_a_row = 0
    for b in sizes:
        fn = None
        failure = None
        try:
            fn = make_fn(b)
            stats = measure_throughput(
                fn, batch=b, device=dev, window_s=window_s, warmup_s=warmup_s, clock=clock, cpu_clock=cpu_clock
            )
        except Exception as exc:  # only OOM is a result; anything else is a bug and propagates
            failure = _oom_reason(exc)
            if failure is None:
                raise
        fn = None  # the next batch must not allocate beside this one's inputs
        if failure is not None:
            _free_memory(dev)  # the exception's frames held the failed batch's tensors in reference cycles
            points.append(SweepPoint(batch=b, img_s=None, failure=failure))
            oom_batch = b
            stop_reason = "oom"
            break
        point = SweepPoint(batch=b, img_s=stats.img_s, stats=stats)
        points.append(point)
        if best is None or point.img_s > best.img_s:
            best = point
            worse_in_a_row = 0
        else:
            worse_in_a_row += 1
            if patience is not None and worse_in_a_row >= patience:
                stop_reason = "patience"
                break
    return SweepResult(
        points=tuple(points),
        peak_img_s=None if best is None else best.img_s,
        peak_batch=None if best is None else best.batch,
        oom_batch=oom_batch,
        stop_reason=stop_reason,
    )


# --------------------------------------------------------------------------------------------------- reference


def reference_workload(device: str | torch.device, *, dtype: torch.dtype = torch.float32) -> Callable[[], None]:
    """The fixed reference workload `ref-mlp-v1`, as a callable (no autograd).

    One call computes, with tensors drawn once from a CPU generator seeded 0 and cast to `dtype` on `device`:
      1. `a @ b` with a, b of shape 512 x 512                                  (134,217,728 MACs)
      2. `fc2(gelu(fc1(x)))` with x of shape 256 x 384, fc1: 384 -> 1536 and fc2: 1536 -> 384, both with bias,
         exact (erf) GELU                                                      (301,989,888 MACs)
    436,207,616 MACs in all. The shapes never change: a new workload gets a new identity string.
    """
    dev = _check_device(device)
    g = torch.Generator().manual_seed(0)

    def draw(*shape: int) -> torch.Tensor:
        return (torch.randn(*shape, generator=g) * 0.05).to(device=dev, dtype=dtype)

    a, b = draw(512, 512), draw(512, 512)
    x, w1, b1, w2, b2 = draw(256, 384), draw(1536, 384), draw(1536), draw(384, 1536), draw(384)

    def run() -> None:
        with torch.no_grad():
            torch.mm(a, b)
            F.linear(F.gelu(F.linear(x, w1, b1)), w2, b2)

    return run


def time_reference(
    device: str | torch.device,
    *,
    dtype: torch.dtype = torch.float32,
    max_time_s: float = 2.0,
    clock: Clock = time.perf_counter,
    cpu_clock: Clock = time.process_time,
) -> LatencyStats:
    """Latency of the reference workload (`reference_workload`), labelled `REFERENCE_ID`.

    Timed in every run (same device, dtype and threads as the measurements) so results can be reported as ratios
    to it; its `cpu_util` is also the cleanest contention signal, since the matmuls use every thread.
    """
    stats = measure_latency(
        reference_workload(device, dtype=dtype),
        device=device,
        max_time_s=max_time_s,
        clock=clock,
        cpu_clock=cpu_clock,
    )
    return dataclasses.replace(stats, reference_id=REFERENCE_ID)


def set_threads(n: int) -> int:
    """Pin torch's intra-op thread count to `n` and return the previous one.

    Never more than the cores you own (docs/measurement.md#contention).
    """
    _require(isinstance(n, int) and n >= 1, "threads >= 1", threads=n)
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    return previous
