"""Roofline: the device's peak matmul rate and memory bandwidth, and where each measured target sits under them.

Williams, Waterman and Patterson, "Roofline: an insightful visual performance model" (CACM 2009): a kernel of
arithmetic intensity I (work per byte moved) can run no faster than min(peak compute rate, I x memory bandwidth).
effscope counts work in MACs (the MAC convention, docs/measurement.md#macs-and-flops), so rates are MAC/s (FLOP/s = 2 x
MAC/s) and intensity is MAC/byte.

- `calibrate` measures the two roofs on one device: the peak matmul rate per dtype (square `torch.mm` GEMMs of a
  few sizes, the best rate, each at its 10th-percentile iteration time) and the memory copy bandwidth
  (`dst.copy_(src)` of a tensor far larger than the last-level cache, bytes read + written per second: STREAM's
  "copy" convention, which does not count the extra read a CPU's write-allocate adds). Both are timed with
  `measure_latency`, on CPU with the pinned thread count. The result is stored as a Record (kind "calibration",
  target "roofline") so it is traceable like a measurement; `latest_calibration` finds it again for a device,
  dtype and thread count.
- `add_roofline` fills a measured Record's `roofline` section: arithmetic intensity from the counter's bytes-moved
  estimate (Counts.bytes_moved_est, counted at batch 1: at the workload batch B the weights' bytes are read once
  per B images), the achieved MAC/s (MACs x batch / median latency), and, given a calibration for the same device,
  dtype and threads, the roofline bound and the achieved fraction of it. What cannot be computed is None with its
  reason in Record.missing, never 0.
- `roofline_points` turns Records and one calibration into the plain data of a roofline plot (no plotting here).

How to read the fraction: intensity uses an estimate of traffic with no cache reuse across ops, so a block whose
working set stays in cache (small blocks at batch 1 on a CPU) can run above the DRAM roof: a fraction over 1 means
exactly that, not a timing error. Under bf16/fp16 autocast the traced (fp32) byte counts are halved: every float
tensor is taken at 2 bytes, ignoring autocast's fp32 ops (softmax, norms) and its per-forward weight casts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from effscope.errors import SpecError, error_line

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    import torch

    from effscope.profile.record import Record
    from effscope.profile.store import RecordStore
    from effscope.profile.timing import LatencyStats

__all__ = [
    "CALIBRATION_KIND",
    "CALIBRATION_TARGET",
    "CALIBRATION_CONTENDED",
    "CONTENDED",
    "NO_CALIBRATION",
    "NO_LATENCY",
    "Calibration",
    "add_roofline",
    "attach_calibration",
    "calibrate",
    "calibration_table",
    "latest_calibration",
    "roofline_numbers",
    "roofline_points",
]

CALIBRATION_KIND = "calibration"
CALIBRATION_TARGET = "roofline"
NO_CALIBRATION = "no roofline calibration for this device: run effscope device --calibrate"
NO_LATENCY = "no latency measured"  # one text, so the CLI groups every number missing for it on one line
PROTOCOL = "effscope-roofline-v1"
CONTENDED = "cpu-contention"  # a calibration's flag: other processes took cores, so its roofs read low
CALIBRATION_CONTENDED = "calibration-contended"  # a Record's flag: its roofline was computed with such roofs

GEMM_SIZES = {"cpu": (256, 512, 1024, 2048), "cuda": (2048, 4096, 8192)}  # n of the n x n x n GEMMs tried
COPY_BYTES = {"cpu": 256 * 2**20, "cuda": 2 * 2**30}  # far above any last-level cache (H100 L2: 50 MB)
MAX_ITER_S = 0.5  # a larger GEMM is skipped when it would take longer than this per call (slow dtypes on CPU)
MAX_GEMM_N = 32768  # three fp32 matrices of this side take 12 GiB, past the size any device needs for its peak
MAX_COPY_BYTES = 64 * 2**30
AMP_DTYPES = ("bf16", "fp16")  # run under autocast: float tensors taken at 2 bytes

_TORCH_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
_CALIBRATION_FIELDS = ("peak_mac_s", "bandwidth_bytes_s", "ridge_mac_per_byte")
_BOUND_FIELDS = ("roofline_bound_mac_s", "roofline_bound_by", "roofline_fraction", "roofline_min_latency_ms")
_INTENSITY_FIELDS = ("bytes_moved_est_per_img", "intensity_mac_per_byte_b1", "intensity_mac_per_byte")
ROOFLINE_FIELDS = (*_INTENSITY_FIELDS, "achieved_mac_s", *_CALIBRATION_FIELDS, *_BOUND_FIELDS, "calibration_uid")


# ----------------------------------------------------------------------------------------------- calibration


@dataclass(frozen=True)
class Calibration:
    """The two roofs of one device (and thread count, on CPU).

    Attributes:
        device: the torch device measured ("cpu", "cuda:0").
        device_name: the CPU model or GPU name (Record.env["device_name"]), what measurements are matched on.
        threads: torch intra-op threads during the calibration (CPU); None on GPU.
        peak_mac_s: best measured matmul rate per dtype ("fp32", "bf16", "fp16"), MAC/s.
        bandwidth_bytes_s: copy bandwidth, bytes read + written per second.
        gemm_n: per dtype, n of the n x n x n GEMM that reached the peak.
        copy_bytes: size of the copied tensor.
        unsupported: dtype -> why it has no peak (not runnable on this device).
        env: the environment (effscope.profile.env.environment) the calibration ran in.
        details: every GEMM size tried per dtype, and the copy timing.
        flags: "cpu-contention" when a timing's CPU time / (wall time x threads) fell under 0.9
        (docs/measurement.md#contention): other processes took cores, so the roofs read low. uid, created_at: the stored
        Record's, once it is stored or read back.
    """

    device: str
    device_name: str
    threads: int | None
    peak_mac_s: dict[str, float]
    bandwidth_bytes_s: float
    gemm_n: dict[str, int] = field(default_factory=dict)
    copy_bytes: int | None = None
    unsupported: dict[str, str] = field(default_factory=dict)
    env: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    flags: tuple[str, ...] = ()
    uid: str | None = None
    created_at: str | None = None

    @property
    def device_identity(self) -> str | None:
        """The calibrated CPU's identity (effscope.profile.record.device_identity) from its environment; None on a GPU
        and for a calibration stored by an older effscope, which is matched by `device_name` alone."""
        from effscope.profile.record import device_identity

        return device_identity(self.env)

    def peak_flop_s(self, dtype: str) -> float:
        """Peak FLOP/s (2 per MAC)."""
        return 2 * self.peak_mac_s[dtype]

    def ridge(self, dtype: str) -> float:
        """Intensity (MAC/byte) where the memory roof meets the compute roof."""
        return self.peak_mac_s[dtype] / self.bandwidth_bytes_s

    def bound_mac_s(self, intensity: float, dtype: str) -> float:
        """The roofline bound: min(peak MAC/s, intensity x bandwidth)."""
        return min(self.peak_mac_s[dtype], intensity * self.bandwidth_bytes_s)

    def to_record(self, command: str | None = None) -> Record:
        """The calibration as a Record (kind "calibration", target "roofline"), numbers in its `roofline` section."""
        from effscope.profile.record import Record, Workload

        workload = Workload(device=self.device, dtype=",".join(self.peak_mac_s), threads=self.threads).as_dict()
        section: dict[str, Any] = {}
        for dtype, peak in self.peak_mac_s.items():
            section.update(
                {
                    f"peak_mac_s_{dtype}": peak,
                    f"peak_flop_s_{dtype}": 2 * peak,
                    f"gemm_n_{dtype}": self.gemm_n.get(dtype),
                }
            )
        section.update({"bandwidth_bytes_s": self.bandwidth_bytes_s, "copy_bytes": self.copy_bytes})
        record = Record(
            target=CALIBRATION_TARGET,
            kind=CALIBRATION_KIND,
            workload=workload,
            roofline=section,
            missing={f"peak_mac_s_{d}": why for d, why in self.unsupported.items()},
            details={"calibration": self.details},
            flags=list(self.flags),
            env=dict(self.env),
            protocol=_protocol(),
            command=command,
        )
        if self.uid is not None:
            record.uid = self.uid
        return record

    @classmethod
    def from_record(cls, record: Record) -> Calibration:
        """Read a calibration Record back."""
        section = record.roofline
        peaks = {k.removeprefix("peak_mac_s_"): v for k, v in section.items() if k.startswith("peak_mac_s_")}
        return cls(
            device=record.workload.get("device") or record.env.get("device", "cpu"),
            device_name=record.env.get("device_name") or "unknown",
            threads=record.workload.get("threads"),
            peak_mac_s=peaks,
            bandwidth_bytes_s=section["bandwidth_bytes_s"],
            gemm_n={d: section.get(f"gemm_n_{d}") for d in peaks},
            copy_bytes=section.get("copy_bytes"),
            unsupported={k.removeprefix("peak_mac_s_"): v for k, v in record.missing.items()},
            env=dict(record.env),
            details=record.details.get("calibration", {}),
            flags=tuple(record.flags),
            uid=record.uid,
            created_at=record.created_at,
        )


def _protocol() -> dict[str, Any]:
    return {
        "name": PROTOCOL,
        "gemm": "torch.mm of two n x n matrices into a preallocated output, n^3 MACs / p10 time; best over the sizes",
        "copy": "dst.copy_(src); bandwidth = 2 x bytes / p10 time (read + written, STREAM copy convention)",
        "timer": "effscope.profile.timing.measure_latency",
    }


def _dtype_support(device: torch.device, dtype: str) -> str | None:
    """None when `dtype` matmuls run on `device`, else why not."""
    import torch

    if device.type == "cuda" and dtype == "bf16" and not torch.cuda.is_bf16_supported():
        return f"bf16 is not supported on {torch.cuda.get_device_name(device)}"
    t = getattr(torch, _TORCH_DTYPES[dtype])
    try:
        torch.mm(torch.ones(8, 8, dtype=t, device=device), torch.ones(8, 8, dtype=t, device=device))
    except RuntimeError as e:
        return f"{dtype} matmul does not run on {device}: {error_line(e)}"
    return None


def _time(fn: Callable[[], object], device: torch.device, max_time_s: float) -> LatencyStats:
    from effscope.profile.timing import measure_latency

    return measure_latency(
        fn,
        device=device,
        warmup_s=min(0.1, max_time_s / 2),
        warmup_min_iters=3,
        min_iters=5,
        min_time_s=min(0.2, max_time_s),
        max_time_s=max_time_s,
    )


def _timing(stats: LatencyStats) -> dict[str, Any]:
    return {"p10_ms": stats.p10_ms, "median_ms": stats.median_ms, "rel_iqr": stats.rel_iqr, "cpu_util": stats.cpu_util}


def _peak(
    device: torch.device, dtype: str, sizes: Sequence[int], max_time_s: float
) -> tuple[float, int, list[dict[str, Any]]]:
    """Best MAC/s over square GEMMs of `sizes`; a size predicted to exceed MAX_ITER_S per call is skipped.

    A size's rate is taken at the 10th percentile of its iteration times: a peak is what the hardware reaches, and
    other processes can only slow iterations down (the median is kept in the details).
    """
    import torch

    from effscope.profile.timing import _free_memory, _oom_reason

    t = getattr(torch, _TORCH_DTYPES[dtype])
    g = torch.Generator().manual_seed(0)
    tried: list[dict[str, Any]] = []
    for n in sorted(sizes):
        if tried and tried[-1]["median_ms"] / 1e3 * (n / tried[-1]["n"]) ** 3 > MAX_ITER_S:
            tried.append({"n": n, "skipped": f"predicted over {MAX_ITER_S:g} s per call"})
            break
        try:
            a = torch.randn(n, n, generator=g).to(device=device, dtype=t)
            b = torch.randn(n, n, generator=g).to(device=device, dtype=t)
            out = torch.empty(n, n, device=device, dtype=t)
            with torch.no_grad():
                stats = _time(lambda a=a, b=b, out=out: torch.mm(a, b, out=out), device, max_time_s)
        except (RuntimeError, MemoryError) as e:
            if (reason := _oom_reason(e)) is None:
                raise
            a = b = out = None
            _free_memory(device)
            tried.append({"n": n, "skipped": reason})
            break  # a larger size will not fit either
        tried.append({"n": n, **_timing(stats), "mac_s": n**3 / (stats.p10_ms / 1e3)})
        del a, b, out
    if not any("mac_s" in t for t in tried):
        raise SpecError(f"no GEMM size fits in memory on {device} ({tried[-1]['skipped']}); give smaller --gemm-sizes")
    best = _best(tried)
    return best["mac_s"], best["n"], tried


def _bandwidth(device: torch.device, copy_bytes: int, max_time_s: float) -> tuple[float, dict[str, Any]]:
    import torch

    n = copy_bytes // 4
    src = torch.ones(n, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    stats = _time(lambda: dst.copy_(src), device, max_time_s)
    bw = 2 * 4 * n / (stats.p10_ms / 1e3)
    return bw, {"bytes": 4 * n, **_timing(stats), "bytes_s": bw}


def calibrate(
    device: str = "cpu",
    *,
    dtypes: Sequence[str] = ("fp32", "bf16", "fp16"),
    threads: int | None = None,
    sizes: Sequence[int] | None = None,
    copy_bytes: int | None = None,
    max_time_s: float = 1.0,
) -> Calibration:
    """Measure the peak matmul rate per dtype and the copy bandwidth of `device`.

    Args:
        device: "cpu", "cuda" or "cuda:N".
        dtypes: the dtypes to measure; one that does not run on the device is reported in `unsupported`.
        threads: CPU intra-op threads, pinned for the calibration and restored afterwards (None: torch's current).
        sizes: GEMM sizes n to try (default GEMM_SIZES for the device type); tests pass small ones.
        copy_bytes: size of the copied tensor (default COPY_BYTES for the device type).
        max_time_s: cap on each timing's repeats.

    Raises:
        SpecError: a bad device, dtype, size or thread count, or no dtype that runs.
    """
    import torch

    from effscope.profile.env import environment
    from effscope.profile.timing import set_threads

    dev = torch.device(device)
    if dev.type not in GEMM_SIZES:
        raise SpecError(f"calibration runs on cpu or cuda, but got device '{device}'")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SpecError(f"device '{device}' was asked for, but this torch ({torch.__version__}) sees no CUDA device")
    bad = [d for d in dtypes if d not in _TORCH_DTYPES]
    if bad or not dtypes:
        raise SpecError(f"dtypes must be among {', '.join(_TORCH_DTYPES)}, but got {', '.join(bad) or 'none'}")
    sizes = tuple(sizes or GEMM_SIZES[dev.type])
    if not 1 <= min(sizes) <= max(sizes) <= MAX_GEMM_N:
        raise SpecError(f"GEMM sizes must be integers in [1, {MAX_GEMM_N}], but got {', '.join(map(str, sizes))}")
    copy_bytes = copy_bytes or COPY_BYTES[dev.type]
    if not 4 <= copy_bytes <= MAX_COPY_BYTES:
        raise SpecError(f"the copied tensor must take 4 bytes to {MAX_COPY_BYTES // 2**30} GiB, but got {copy_bytes}")
    if not (math.isfinite(max_time_s) and max_time_s > 0):
        raise SpecError(f"the time cap must be a positive number of seconds, but got {max_time_s:g}")

    previous = set_threads(threads) if threads is not None and dev.type == "cpu" else None
    try:
        used_threads = torch.get_num_threads() if dev.type == "cpu" else None
        peaks, gemm_n, unsupported, details = {}, {}, {}, {"gemm": {}}
        for dtype in dict.fromkeys(dtypes):
            why = _dtype_support(dev, dtype)
            if why is not None:
                unsupported[dtype] = why
                continue
            peaks[dtype], gemm_n[dtype], details["gemm"][dtype] = _peak(dev, dtype, sizes, max_time_s)
        if not peaks:
            raise SpecError(f"no dtype runs on {device}: {'; '.join(unsupported.values())}")
        bandwidth, details["copy"] = _bandwidth(dev, copy_bytes, max_time_s)
        env = environment(dev, dtype=",".join(peaks), threads=used_threads)
    finally:
        if previous is not None:
            set_threads(previous)
    return Calibration(
        device=str(dev),
        device_name=env["device_name"],
        threads=used_threads,
        peak_mac_s=peaks,
        bandwidth_bytes_s=bandwidth,
        gemm_n=gemm_n,
        copy_bytes=details["copy"]["bytes"],
        unsupported=unsupported,
        env=env,
        details=details,
        flags=(CONTENDED,) if _contended(details) else (),
    )


def _best(tried: list[dict[str, Any]]) -> dict[str, Any]:
    return max((t for t in tried if "mac_s" in t), key=lambda t: t["mac_s"])


def _contended(details: dict[str, Any]) -> bool:
    """Low CPU use in the timings that set the roofs: the copy and the best fp32 GEMM, which use every thread.

    Other dtypes are not judged: some CPU kernels run on one thread by design (fp16 matmul without AVX512-FP16),
    which reads the same as contention.
    """
    from effscope.profile.timing import LOW_CPU_UTIL

    timings = [details["copy"]] + ([_best(details["gemm"]["fp32"])] if "fp32" in details["gemm"] else [])
    utils = [t["cpu_util"] for t in timings if t.get("cpu_util") is not None]
    return bool(utils) and min(utils) < LOW_CPU_UTIL


def _same_device(cal: Calibration, device_name: str | None, identity: str | None, threads: int | None) -> bool:
    from effscope.profile.record import same_device

    same = same_device(cal.device_name, cal.device_identity, device_name, identity)
    return same and (cal.device.startswith("cuda") or cal.threads == threads)  # threads: CPU


def latest_calibration(
    store: RecordStore, device_name: str | None, dtype: str, threads: int | None, identity: str | None = None
) -> Calibration | None:
    """The calibration a measurement of this device (and thread count, on CPU) in `dtype` is compared with.

    The device is its name and, where both sides record it, its CPU's identity (effscope.profile.record.same_device):
    a cloud VM names CPUs of several generations alike. The newest one with a peak for `dtype` whose cores were
    idle; else the newest such one taken under contention (its roofs read low: add_roofline flags the Record); else
    the newest one of the device without that peak, so the Record can say which peak to measure; None when the
    device has no calibration.
    """
    contended = without_dtype = None
    for record in reversed(store.records(target=CALIBRATION_TARGET, status="ok")):
        if record.kind != CALIBRATION_KIND:
            continue
        cal = Calibration.from_record(record)
        if not _same_device(cal, device_name, identity, threads):
            continue
        if dtype not in cal.peak_mac_s:
            without_dtype = without_dtype or cal
        elif CONTENDED in cal.flags:
            contended = contended or cal
        else:
            return cal
    return contended or without_dtype


def _no_calibration(
    store: RecordStore, device_name: str | None, threads: int | None, identity: str | None = None
) -> str:
    """Why a measurement has no calibration to be compared with: none of the device at all, or (on a CPU) only at
    other thread counts, which `effscope device --calibrate` without --threads would not mend, or only of other CPUs
    of the device's name."""
    from effscope.profile.record import same_device

    counts, others = set(), set()
    for record in store.records(target=CALIBRATION_TARGET, status="ok"):
        if record.kind == CALIBRATION_KIND:
            cal = Calibration.from_record(record)
            if not same_device(cal.device_name, cal.device_identity, device_name, identity):
                if cal.device_name == device_name:
                    others.add(cal.device_identity)
            elif cal.threads is not None:
                counts.add(cal.threads)
    if counts and threads is not None:
        return (
            f"no roofline calibration of this device at {threads} thread(s), only at "
            f"{', '.join(map(str, sorted(counts)))}: run effscope device --calibrate --threads {threads}"
        )
    if others:
        return (
            f"the stored roofline calibrations of '{device_name}' are of another CPU ({'; '.join(sorted(others))}), "
            f"not of this one ({identity}): run effscope device --calibrate"
        )
    return NO_CALIBRATION


# ----------------------------------------------------------------------------------------------- per Record


def _record_key(record: Record) -> tuple[str | None, str, int | None, str | None]:
    """(device name, dtype, threads, device identity) a Record is matched to a calibration on."""
    from effscope.profile.record import device_identity

    env = record.env
    return env.get("device_name"), record.workload.get("dtype", "fp32"), env.get("torch_threads"), device_identity(env)


def roofline_numbers(
    counts: dict[str, Any],
    workload: dict[str, Any],
    latency: dict[str, Any],
    calibration: Calibration | None,
    no_calibration: str = NO_CALIBRATION,
) -> tuple[dict[str, Any], dict[str, str]]:
    """The roofline section of one measurement, and why any of its fields is missing.

    Args:
        counts: Record.counts (macs and bytes_moved_est / bytes_weights_est, all counted at batch 1).
        workload: Record.workload (batch and dtype).
        latency: Record.latency (latency_ms_p50 of one forward of `batch` images).
        calibration: the device's roofs, or None.
        no_calibration: the reason given when `calibration` is None.

    Returns:
        (section, missing): section has every name of ROOFLINE_FIELDS plus `bytes_amp_scale`; a field that cannot be
        computed is None and named in `missing` with the reason.
    """
    batch, dtype = int(workload.get("batch") or 1), workload.get("dtype", "fp32")
    scale = 0.5 if dtype in AMP_DTYPES else 1.0
    out: dict[str, Any] = dict.fromkeys(ROOFLINE_FIELDS)
    out["bytes_amp_scale"] = scale
    missing: dict[str, str] = {}
    macs, moved, weights = counts.get("macs"), counts.get("bytes_moved_est"), counts.get("bytes_weights_est")
    if macs is None or not moved:
        why = "no MAC or bytes-moved count (counting was off or predates the bytes estimate)"
        missing.update(dict.fromkeys((*_INTENSITY_FIELDS, *_BOUND_FIELDS), why))
    else:
        weights = weights or 0
        per_img = (moved - weights + weights / batch) * scale  # weights are read once per batch
        out["bytes_moved_est_per_img"] = per_img
        out["intensity_mac_per_byte_b1"] = macs / (moved * scale)
        out["intensity_mac_per_byte"] = macs / per_img
    p50 = latency.get("latency_ms_p50")
    if macs is None or not p50:
        missing["achieved_mac_s"] = (
            "no MAC count"
            if macs is None
            else "a training step's MACs are not counted (the count is of the inference forward)"
            if workload.get("mode") == "train"
            else NO_LATENCY
        )
        missing.setdefault("roofline_fraction", missing["achieved_mac_s"])
    else:
        out["achieved_mac_s"] = macs * batch / (p50 / 1e3)
    if calibration is not None:
        # the copy bandwidth is the same for every dtype: known even where the dtype's peak was not measured
        out.update(bandwidth_bytes_s=calibration.bandwidth_bytes_s, calibration_uid=calibration.uid)
    if calibration is None or dtype not in calibration.peak_mac_s:
        why = no_calibration if calibration is None else _no_peak(calibration, dtype)
        for name in (*_CALIBRATION_FIELDS, *_BOUND_FIELDS, "calibration_uid"):
            if out[name] is not None:
                continue
            # a field already missing for another cause (no count, no latency) keeps it first: both must be fixed
            missing[name] = f"{missing[name]}, and {why}" if name in missing else why
        return out, missing
    out.update(peak_mac_s=calibration.peak_mac_s[dtype], ridge_mac_per_byte=calibration.ridge(dtype))
    intensity = out["intensity_mac_per_byte"]
    if intensity is not None:
        bound = calibration.bound_mac_s(intensity, dtype)
        out["roofline_bound_mac_s"] = bound
        out["roofline_bound_by"] = "memory" if intensity < calibration.ridge(dtype) else "compute"
        out["roofline_min_latency_ms"] = macs * batch / bound * 1e3
        if out["achieved_mac_s"] is not None:
            out["roofline_fraction"] = out["achieved_mac_s"] / bound
    return out, missing


def _no_peak(calibration: Calibration, dtype: str) -> str:
    """Why a calibration of the right device gives no roof for `dtype`, and what to do about it."""
    unsupported = calibration.unsupported.get(dtype)
    if unsupported is not None:
        return f"the calibration has no {dtype} peak: {unsupported}"
    return (
        f"the calibration has no {dtype} peak (it measured {', '.join(calibration.peak_mac_s)}): run effscope device "
        f"--calibrate --dtype {dtype}"
    )


def add_roofline(
    record: Record, calibration: Calibration | None = None, no_calibration: str = NO_CALIBRATION
) -> Record:
    """Fill (or refill) `record.roofline` and its reasons in `record.missing` (`no_calibration`: why there is no
    calibration), and flag a Record compared with a calibration taken under CPU contention (CALIBRATION_CONTENDED);
    returns the record."""
    for name in (*ROOFLINE_FIELDS, "bytes_amp_scale"):
        record.missing.pop(name, None)
    record.roofline, missing = roofline_numbers(
        record.counts, record.workload, record.latency, calibration, no_calibration
    )
    record.missing.update(missing)
    record.flags = [f for f in record.flags if f != CALIBRATION_CONTENDED]
    if record.roofline.get("peak_mac_s") is not None and CONTENDED in calibration.flags:  # these roofs were used
        record.flags.append(CALIBRATION_CONTENDED)
    return record


def attach_calibration(
    record: Record, store: RecordStore, cache: dict[tuple, tuple[Calibration | None, str]] | None = None
) -> Record:
    """Complete a successful measurement's roofline with the store's latest matching calibration, if any.

    The worker fills intensity and achieved MAC/s (it never touches the database); the process that owns the
    store calls this before storing the Record. `cache` (a dict) saves a lookup per Record in long runs.
    """
    if record.status != "ok" or record.kind == CALIBRATION_KIND or not record.counts:
        return record
    key = _record_key(record)
    if cache is not None and key in cache:
        cal, why = cache[key]
    else:
        device_name, dtype, threads, identity = key
        cal = latest_calibration(store, device_name, dtype, threads, identity)
        why = NO_CALIBRATION if cal is not None else _no_calibration(store, device_name, threads, identity)
        if cache is not None:
            cache[key] = cal, why
    return add_roofline(record, cal, why)


# ----------------------------------------------------------------------------------------------- plot data


def _label(record: Record) -> str:
    size = record.workload.get("size")
    label = record.target + (f" @{size[0]}x{size[1]}" if size else "")
    batch = record.workload.get("batch") or 1
    return label + (f" b{batch}" if batch > 1 else "")


def roofline_points(records: Iterable[Record], calibration: Calibration) -> dict[str, Any]:
    """The data of a roofline plot: each Record as a point under the roofs of `calibration`.

    x = arithmetic intensity at the workload batch (MAC/byte), y = achieved MAC/s; both axes are meant to be
    logarithmic. Points are recomputed with `calibration` (not the bound stored in the Record), so they sit under
    the roofs drawn. Records that cannot be placed (failed, no counts or latency, another device, a dtype the
    calibration lacks) are listed in `skipped` with the reason.

    Returns:
        {"calibration": summary, "x": axis, "y": axis, "roofs": [per dtype: peak, bandwidth, ridge and the polyline
        x/y], "points": [per Record: uid, target, family, kind, label, knobs, dtype, batch, x, y, bound_mac_s,
        fraction, bound_by, latency_ms_p50, macs], "groups": families present, "skipped": [uid, target, reason]}
    """
    from effscope.profile.record import same_device

    points, skipped = [], []
    for r in records:
        if r.kind == CALIBRATION_KIND:
            continue
        device_name, dtype, threads, identity = _record_key(r)
        reason = None
        if r.status != "ok":
            reason = f"failed: {r.error}"
        elif device_name != calibration.device_name:
            reason = f"measured on {device_name}, the calibration is of {calibration.device_name}"
        elif not same_device(device_name, identity, calibration.device_name, calibration.device_identity):
            reason = (
                f"measured on {device_name} ({identity}), the calibration is of another CPU of that name "
                f"({calibration.device_identity})"
            )
        elif not calibration.device.startswith("cuda") and threads != calibration.threads:
            reason = f"measured with {threads} threads, the calibration with {calibration.threads}"
        section, missing = roofline_numbers(r.counts, r.workload, r.latency, calibration)
        if reason is None:
            for name in ("intensity_mac_per_byte", "roofline_fraction", "peak_mac_s"):
                if section.get(name) is None:
                    reason = missing.get(name, f"{name} could not be computed")
                    break
        if reason is not None:
            skipped.append({"uid": r.uid, "target": r.target, "reason": reason})
            continue
        points.append(
            {
                "uid": r.uid,
                "target": r.target,
                "family": r.family,
                "kind": r.kind,
                "label": _label(r),
                "knobs": dict(r.knobs),
                "dtype": dtype,
                "batch": r.workload.get("batch") or 1,
                "x": section["intensity_mac_per_byte"],
                "y": section["achieved_mac_s"],
                "bound_mac_s": section["roofline_bound_mac_s"],
                "fraction": section["roofline_fraction"],
                "bound_by": section["roofline_bound_by"],
                "latency_ms_p50": r.latency.get("latency_ms_p50"),
                "macs": r.counts.get("macs"),
            }
        )
    dtypes = sorted({p["dtype"] for p in points}) or list(calibration.peak_mac_s)
    xs = [p["x"] for p in points]
    roofs = []
    for dtype in dtypes:
        ridge = calibration.ridge(dtype)
        lo = min([*xs, ridge]) / 4
        hi = max([*xs, ridge]) * 4
        roofs.append(
            {
                "dtype": dtype,
                "peak_mac_s": calibration.peak_mac_s[dtype],
                "bandwidth_bytes_s": calibration.bandwidth_bytes_s,
                "ridge_mac_per_byte": ridge,
                "x": [lo, ridge, hi],
                "y": [lo * calibration.bandwidth_bytes_s, calibration.peak_mac_s[dtype], calibration.peak_mac_s[dtype]],
            }
        )
    return {
        "calibration": {
            "uid": calibration.uid,
            "device_name": calibration.device_name,
            "threads": calibration.threads,
            "peak_mac_s": dict(calibration.peak_mac_s),
            "bandwidth_bytes_s": calibration.bandwidth_bytes_s,
            "created_at": calibration.created_at,
        },
        "x": {"name": "intensity_mac_per_byte", "label": "arithmetic intensity", "unit": "MAC/byte", "log": True},
        "y": {"name": "achieved_mac_s", "label": "achieved rate", "unit": "MAC/s", "log": True},
        "roofs": roofs,
        "points": points,
        "groups": sorted({p["family"] or p["target"] for p in points}),
        "skipped": skipped,
    }


def calibration_table(cal: Calibration) -> list[dict[str, Any]]:
    """One row per dtype (the CLI's table): peak MAC/s and FLOP/s, GEMM size, bandwidth, ridge point, and the CPU
    use of the peak's timing (CPU time / wall time x threads: 1 = every thread busy)."""
    rows = []
    for dtype, peak in cal.peak_mac_s.items():
        tried = cal.details.get("gemm", {}).get(dtype)
        rows.append(
            {
                "dtype": dtype,
                "peak_mac_s": peak,
                "peak_flop_s": 2 * peak,
                "gemm_n": cal.gemm_n.get(dtype),
                "bandwidth_bytes_s": cal.bandwidth_bytes_s,
                "ridge_mac_per_byte": cal.ridge(dtype),
                "cpu_util": _best(tried).get("cpu_util") if tried else None,
            }
        )
    for dtype, why in cal.unsupported.items():
        rows.append({"dtype": dtype, "unsupported": why})
    return rows
