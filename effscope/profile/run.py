"""Profiling runs: targets x workloads measured in the worker, each Record stored as soon as it exists."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from effscope.errors import SpecError
from effscope.profile.env import usable_cpus
from effscope.profile.measure import Job, Options
from effscope.profile.record import DTYPES, MAX_BATCH, MAX_SIDE, MODES, Record, Workload
from effscope.profile.target import Target, resolve_target

if TYPE_CHECKING:
    from effscope.profile.store import RecordStore
    from effscope.profile.worker import Worker

__all__ = [
    "SUITES",
    "Plan",
    "check_device",
    "check_input_size",
    "meta_forward",
    "measure_plans",
    "parse_size",
    "plan_suite",
    "profile",
    "rank_correlation",
    "store_record",
    "validate_options",
    "validate_workload",
]


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
    example = "14 or 14x28" if what == "--tokens" else "224 or 224x320"
    if len(values) not in (1, 2) or not 1 <= min(values, default=0) <= max(values) <= MAX_SIDE:
        raise SpecError(f"{what} takes N or HxW with integers in [1, {MAX_SIDE}] (e.g. {example}), but got '{text}'")
    return (values[0], values[-1])


def default_cuda_graph(device: str, mode: str) -> bool:
    """Whether a profile times a CUDA-graph replay beside eager when not told: on a GPU, for a forward."""
    return device.startswith("cuda") and mode == "infer"


def validate_workload(w: Workload, where: str | None = None, *, arguments: bool = False) -> Workload:
    """Check the workload's values; one sentence per mistake.

    Args:
        where: for a workload read from a file, the file as messages name it ("search space x.toml"); each
            mistake then names the file and its [workload] key instead of the command-line option.
        arguments: name each mistake by its Python keyword argument (effscope.profile's batch=, threads=, ...)
            instead of the command-line option.
    """
    from effscope.blocks.attention import ATTENTION_IMPLS

    def name(key: str) -> str:
        if where:
            return f"{where}: [workload] {key.replace('-', '_')}"
        return key.replace("-", "_") if arguments else f"--{key}"

    if w.dtype not in DTYPES:
        raise SpecError(f"{name('dtype')} must be one of {', '.join(DTYPES)}, but got '{w.dtype}'")
    if w.mode not in MODES:
        raise SpecError(f"{name('mode')} must be one of {', '.join(MODES)}, but got '{w.mode}'")
    if not (w.device == "cpu" or w.device == "cuda" or re.fullmatch(r"cuda:\d+", w.device)):
        raise SpecError(f"{name('device')} must be cpu, cuda or cuda:N, but got '{w.device}'")
    if not 1 <= w.batch <= MAX_BATCH:
        raise SpecError(f"{name('batch')} must be an integer in [1, {MAX_BATCH}], but got {w.batch}")
    cpus = usable_cpus()
    if w.threads is not None and not 1 <= w.threads <= cpus:
        raise SpecError(
            f"{name('threads')} must be in [1, {cpus}] (the CPUs this process may use), but got {w.threads}"
        )
    if w.size is not None and max(w.size) > MAX_SIDE:
        what = name("size") if where else "the input size"
        raise SpecError(f"{what} must be at most {MAX_SIDE} per side, but got {w.size[0]}x{w.size[1]}")
    if w.attention not in ATTENTION_IMPLS:
        raise SpecError(f"{name('attention')} must be one of {', '.join(ATTENTION_IMPLS)}, but got '{w.attention}'")
    if w.cuda_graph and not w.device.startswith("cuda"):
        cuda = "[workload] device = 'cuda'" if where else "device='cuda'" if arguments else "--device cuda"
        raise SpecError(f"{name('cuda-graph')} needs {cuda} (CUDA graphs exist only on NVIDIA GPUs)")
    if w.cuda_graph and w.mode == "train":  # a replay times one forward; a training step is not captured
        mode = "[workload] mode = 'train'" if where else "mode='train'" if arguments else "--mode train"
        raise SpecError(f"{name('cuda-graph')} times a forward replayed as a CUDA graph, which {mode} does not run")
    return w


def meta_forward(target: Target, size: tuple[int, int] | None) -> None:
    """One forward of the target at batch 1 on the meta device: shapes only, no memory and no data, so a size the
    target cannot take raises its InputSizeError at once. Some ops have no meta kernel and raise other errors."""
    import torch

    module = target.build("meta").eval()  # as measured: a training-mode BatchNorm would fail first on a tiny map
    with torch.no_grad():
        module(*target.example_args(module, 1, size, "meta"))


def check_input_size(target: Target, size: tuple[int, int], what: str) -> None:
    """Refuse an input size the target cannot take, before any worker starts: one forward on the meta device (no
    memory, no data, a second at most for the largest preset). Any other failure is left to the measurement, which
    reports it in full; a `module:callable` is never run in this process.

    Raises:
        SpecError: the target's own sentence on why this size does not fit.
    """
    from effscope.errors import InputSizeError

    if target.kind == "custom" or target.instance is not None:
        return
    try:
        meta_forward(target, size)
    except InputSizeError as e:
        raise SpecError(f"{target.name} cannot take {what} {size[0]}x{size[1]}: {e}") from None
    except Exception:  # noqa: BLE001 - not a size problem: the measurement reports it with its traceback
        return


def validate_options(o: Options) -> Options:
    """Check the time limits and iteration counts of a profiling run; one sentence per mistake."""
    for option, value in (("--timeout", o.timeout_s), ("--max-time", o.max_time_s)):
        if not (math.isfinite(value) and value > 0):
            raise SpecError(f"{option} must be a positive number of seconds, but got {value:g}")
    for option, value, least in (("--warmup-iters", o.warmup_iters, 0), ("--iters", o.iters, 1)):
        if value is not None and value < least:
            raise SpecError(f"{option} must be an integer >= {least}, but got {value}")
    return o


def check_device(device: str, option: str = "--device") -> None:
    """Check that this machine's torch can run on `device` (cheap: no CUDA context is created); `option` is where
    the device was given, as messages name it.

    Raises:
        SpecError: a CUDA device on a torch built without CUDA, or an index past the visible devices.
    """
    if not device.startswith("cuda"):
        return
    import torch

    if not torch.backends.cuda.is_built():
        raise SpecError(
            f"{option} {device} asks for a CUDA device, but this torch ({torch.__version__}) is built without CUDA; "
            "use --device cpu or install a CUDA build of torch"
        )
    count = torch.cuda.device_count()  # NVML first where available: no context is created here
    index = torch.device(device).index or 0
    if index >= count:
        raise SpecError(
            f"{option} {device} asks for a CUDA device, but this machine shows {count} (cuda:0 to cuda:{count - 1}); "
            "use --device cpu or one of those"
            if count
            else f"{option} {device} asks for a CUDA device, but torch sees none on this machine; use --device cpu"
        )


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


def measure_plans(
    plans: Iterable[Plan], options: Options, *, worker: Worker | None = None, provenance: dict | None = None
) -> Iterator[Record]:
    """Measure each plan in the worker process and yield its Record as it arrives, not yet stored.

    Close the generator (`contextlib.closing`) when stopping early: that stops a private worker at once.

    Args:
        plans: what to measure.
        options: what to measure of each, and time limits.
        worker: a running Worker to reuse; a private one is started and stopped otherwise.
        provenance: fields copied into every Record (command, study, trial).
    """
    from effscope.profile.worker import Worker

    own = worker is None
    worker = worker or Worker()
    try:
        for plan in plans:
            job = Job(
                plan.target.name,
                plan.target.knobs(),
                plan.workload,
                options,
                dict(provenance or {}),
                module=plan.target.instance,
            )
            record = worker.run(job)
            if record.kind == "unknown":  # the worker died before filling it in
                record.kind, record.family = plan.target.kind, plan.target.family
                record.derived = plan.target.derived()
            yield record
    finally:
        if own:
            worker.close()


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
    records = []
    calibrations: dict = {}  # one roofline calibration lookup per (device, dtype, threads)
    with closing(measure_plans(plans, options, worker=worker, provenance=provenance)) as arriving:
        for record in arriving:
            if store is not None:
                store_record(record, store, calibrations)
            records.append(record)
            if on_record is not None:
                on_record(record)
    return records


def store_record(record: Record, store: RecordStore, calibrations: dict | None = None) -> None:
    """Append a measured Record to the store, its roofline completed with the device's calibration when the store
    holds one (`calibrations` caches the lookup across Records)."""
    from effscope.profile.roofline import attach_calibration

    attach_calibration(record, store, calibrations)
    store.add(record)


def rank_correlation(records: list[Record], x: str = "macs", y: str = "latency_ms_p50") -> dict[str, float | int]:
    """Spearman and Kendall rank correlation of two numbers across successful Records (the FLOPs-vs-speed gap)."""
    from effscope.stats import kendall_tau, spearman_rho

    pairs = [(r.flat().get(x), r.flat().get(y)) for r in records if r.status == "ok"]
    pairs = [(a, b) for a, b in pairs if a is not None and b is not None]
    xs, ys = [a for a, _ in pairs], [b for _, b in pairs]
    return {"n": len(pairs), "spearman": spearman_rho(xs, ys), "kendall": kendall_tau(xs, ys)}
