"""Profiling runs: targets x workloads measured in the worker, each Record stored as soon as it exists."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from effscope.errors import SpecError
from effscope.profile.measure import Job, Options
from effscope.profile.record import DTYPES, Record, Workload
from effscope.profile.target import Target, resolve_target

if TYPE_CHECKING:
    from effscope.profile.store import RecordStore
    from effscope.profile.worker import Worker

__all__ = ["SUITES", "Plan", "parse_size", "plan_suite", "profile", "rank_correlation", "validate_workload"]


@dataclass(frozen=True)
class Plan:
    """One planned measurement: a resolved target and the workload to run it under."""

    target: Target
    workload: Workload


def parse_size(text: str | None, what: str) -> tuple[int, int] | None:
    """Parse "224" or "224x256" (H x W) into (H, W)."""
    if text is None:
        return None
    parts = text.lower().replace(" ", "").split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) not in (1, 2) or min(values, default=0) < 1:
        raise SpecError(f"{what} takes N or HxW with positive integers (e.g. 224 or 224x320), but got '{text}'")
    return (values[0], values[-1])


def validate_workload(w: Workload) -> Workload:
    """Check the workload's values; one sentence per mistake."""
    from effscope.blocks._layers import ATTENTION_IMPLS

    if w.dtype not in DTYPES:
        raise SpecError(f"--dtype must be one of {', '.join(DTYPES)}, but got '{w.dtype}'")
    if not (w.device == "cpu" or w.device == "cuda" or w.device.startswith("cuda:")):
        raise SpecError(f"--device must be cpu, cuda or cuda:N, but got '{w.device}'")
    if w.batch < 1:
        raise SpecError(f"--batch must be >= 1, but got {w.batch}")
    if w.threads is not None and w.threads < 1:
        raise SpecError(f"--threads must be >= 1, but got {w.threads}")
    if w.attention not in ATTENTION_IMPLS:
        raise SpecError(f"--attention must be one of {', '.join(ATTENTION_IMPLS)}, but got '{w.attention}'")
    if w.cuda_graph and not w.device.startswith("cuda"):
        raise SpecError("--cuda-graph needs --device cuda (CUDA graphs exist only on NVIDIA GPUs)")
    return w


def _suite_zoo(base: Workload) -> list[Plan]:
    """Every model preset at its own input size and every block at its default grid, under `base`."""
    from effscope.spec import blocks, models

    plans = []
    for registry in (models(), blocks()):
        for spec in registry:
            plans.append(Plan(resolve_target(spec.name), replace(base, size=None)))
    return plans


SUITES: dict[str, Callable[[Workload], list[Plan]]] = {"zoo": _suite_zoo}


def plan_suite(name: str, base: Workload) -> list[Plan]:
    """The plans of a named suite."""
    if name not in SUITES:
        raise SpecError(f"unknown suite '{name}' (suites: {', '.join(SUITES)})")
    return SUITES[name](validate_workload(base))


def profile(
    plans: Iterable[Plan],
    options: Options,
    *,
    store: RecordStore | None,
    worker: Worker | None = None,
    provenance: dict | None = None,
    on_record: Callable[[Record], None] | None = None,
) -> list[Record]:
    """Measure each plan in the worker process and append its Record to `store` at once.

    Args:
        plans: what to measure.
        options: what to measure of each, and time limits.
        store: where Records go (None: keep them in memory only).
        worker: a running Worker to reuse; a private one is started and stopped otherwise.
        provenance: fields copied into every Record (command, study, trial).
        on_record: called with each Record as it arrives (progress display).

    Returns:
        the Records in plan order, failed ones included.
    """
    from effscope.profile.roofline import attach_calibration
    from effscope.profile.worker import Worker

    own = worker is None
    worker = worker or Worker()
    records = []
    calibrations: dict = {}  # one roofline calibration lookup per (device, dtype, threads)
    try:
        for plan in plans:
            job = Job(plan.target.name, plan.target.knobs(), plan.workload, options, dict(provenance or {}))
            record = worker.run(job)
            if record.kind == "unknown":  # the worker died before filling it in
                record.kind, record.family = plan.target.kind, plan.target.family
                record.derived = plan.target.derived()
            if store is not None:
                attach_calibration(record, store, calibrations)  # the roofline bound, when the device is calibrated
                store.add(record)
            records.append(record)
            if on_record is not None:
                on_record(record)
    finally:
        if own:
            worker.close()
    return records


def rank_correlation(records: list[Record], x: str = "macs", y: str = "latency_ms_p50") -> dict[str, float | int]:
    """Spearman and Kendall rank correlation of two numbers across successful Records (the FLOPs-vs-speed gap)."""
    from effscope.stats import kendall_tau, spearman_rho

    pairs = [(r.flat().get(x), r.flat().get(y)) for r in records if r.status == "ok"]
    pairs = [(a, b) for a, b in pairs if a is not None and b is not None]
    xs, ys = [a for a, _ in pairs], [b for _, b in pairs]
    return {"n": len(pairs), "spearman": spearman_rho(xs, ys), "kendall": kendall_tau(xs, ys)}
