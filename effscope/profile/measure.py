"""One measurement job, run inside the dedicated worker process: build, count, time, and fill a Record.

Everything that can fail for a given target (build, OOM, a crash in the forward) is caught here and turned into a
failed Record with its reason; the worker (worker.py) covers what cannot be caught (a killed process, a hang).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import torch

from effscope.errors import EffscopeError, error_line, error_text
from effscope.metrics import GRAPH_TIMED, MODULE_TIME_REPEATS, TIMED
from effscope.profile.record import PROTOCOL, Record, Workload
from effscope.profile.timing import LOW_CPU_UTIL

if TYPE_CHECKING:
    from effscope.blocks.attention import CoreChoice
    from effscope.profile.target import Target
    from effscope.profile.timing import LatencyStats

__all__ = ["Job", "Options", "describe_failure", "describe_protocol", "peak_rss_hidden", "run_job"]

_AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
REFERENCE_DRIFT = 1.2  # the reference slowed by more than this between before and after the target: contention
# On a CPU calls do not overlap, so the throughput window and the latency repeats time the same work: speeds further
# apart than this mean the machine changed between them (on a GPU, back-to-back calls overlap by design)
THROUGHPUT_LATENCY_AGREE = 1.25
HOST_BOUND = 1.25  # eager latency over this many times the CUDA-graph replay's: launching kernels dominates


@dataclass(frozen=True)
class Options:
    """What to measure and how long to spend on it.

    Attributes:
        count: params and MACs (fvcore with effscope's handles, cross-checked).
        elementwise: also count element-wise ops, in their own column.
        latency: per-iteration latency statistics.
        throughput: images/s over one synchronized window of `window_s`.
        sweep: a powers-of-two batch sweep for peak throughput (OOM-safe).
        reference: time the fixed reference module in the same process, for ratios across sessions.
        max_time_s: cap on the adaptive latency repeats.
        window_s: throughput / energy window.
        abort_above_ms: stop timing once the latency is clearly above this (search early abort).
        timeout_s: wall-clock limit for the whole job, enforced by the worker.
        module_times: time each stage/block with hooks (details["time_by_module_ms"], for the breakdown report).
        fresh_process: run the job in a new worker process. CPU peak RSS is only honest in a fresh process (the
            allocator keeps what earlier jobs freed); a search that has no CPU memory budget may reuse one.
        warmup_iters, iters: fixed warm-up and timed iteration counts instead of the time-budgeted warm-up, the
            adaptive latency repeats and the throughput window (a paper's protocol; None: effscope's own).
        protocol: the name of the paper protocol these options replay (profile/protocols.py), recorded in the
            Record; its cudnn.benchmark setting applies during the job. protocol_changes: the protocol's settings
            the user changed (recorded, so a modified replay never passes for the paper's).
    """

    count: bool = True
    elementwise: bool = False
    latency: bool = True
    throughput: bool = True
    sweep: bool = False
    reference: bool = True
    max_time_s: float = 5.0
    window_s: float = 1.0
    abort_above_ms: float | None = None
    timeout_s: float = 600.0
    fresh_process: bool = True
    module_times: bool = True
    warmup_iters: int | None = None
    iters: int | None = None
    protocol: str | None = None
    protocol_changes: tuple[str, ...] = ()  # the protocol's settings the user changed, e.g. ("batch=2",)


@dataclass(frozen=True)
class Job:
    """A picklable measurement request sent to the worker."""

    target: str
    knobs: dict[str, Any]
    workload: Workload
    options: Options = field(default_factory=Options)
    record_fields: dict[str, Any] = field(default_factory=dict)  # provenance copied into the Record
    module: Any = None  # an nn.Module instance given from Python: measured as is (pickled to the worker)


def describe_failure(e: BaseException, device: str) -> str:
    """One sentence for a failed measurement, naming out-of-memory plainly."""
    text = error_line(e)
    if isinstance(e, torch.cuda.OutOfMemoryError):
        return f"out of memory on {device}: {text}"
    if isinstance(e, MemoryError) or "can't allocate memory" in text or "not enough memory" in text:
        return f"out of memory on {device}: {text}"
    if isinstance(e, EffscopeError):
        return text
    return error_text(e)


def run_job(job: Job, *, first_in_process: bool = True) -> Record:
    """Run one job in this process and return its Record (failed, with the reason, if anything raised).

    Args:
        job: what to measure.
        first_in_process: False when earlier jobs ran in this process, whose freed memory makes CPU peak RSS
            meaningless (it is then reported missing).
    """
    record = Record(target=job.target, kind="unknown", workload=job.workload.as_dict(), **job.record_fields)
    record.protocol = describe_protocol(job.options)
    try:
        _run(job, record, first_in_process)
    except Exception as e:  # one target's failure is data, not a dead run
        record.status = "failed"
        record.error = describe_failure(e, job.workload.device)
    finally:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return record


def describe_protocol(o: Options) -> dict[str, Any]:
    """How this job times, as stored in the Record: effscope's own protocol, fixed counts, or a paper's."""
    from effscope.profile.timing import WARMUP_S

    fixed = o.warmup_iters is not None or o.iters is not None
    # What was asked; what ran (warm-up calls and seconds, samples, the window) is in the Record's sections.
    if not o.latency:
        repeats = "not measured"
    elif o.iters is not None:
        repeats = f"{o.iters} iterations"
    else:
        repeats = f"adaptive until IQR/median <= 0.05 or {o.max_time_s:g} s"
    if not o.throughput:
        throughput = "not measured"
    elif o.iters is not None:
        throughput = f"{o.iters} iterations as one synchronized loop"
    else:
        throughput = f"synchronized window of >= {o.window_s:g} s" + (
            ", right after the latency repeats (one re-priming call, no second warm-up)" if o.latency else ""
        )
    described: dict[str, Any] = {
        "name": o.protocol or ("fixed-iterations" if fixed else PROTOCOL),
        "warmup": f"{o.warmup_iters} iterations"
        if o.warmup_iters is not None
        else f"time-budgeted: >= {WARMUP_S:g} s and >= 10 iterations, cut short at {o.max_time_s:g} s",
        "repeats": repeats,
        "throughput": throughput,
        "throughput_window_s": o.window_s if o.throughput and o.iters is None else None,
        "warmup_iters": o.warmup_iters,
        "iters": o.iters,
        "no_grad": True,
        "eval": True,
    }
    if o.protocol:
        from effscope.profile.protocols import get_protocol

        p = get_protocol(o.protocol)
        described.update(
            {"source": p.source, "cudnn_benchmark": p.cudnn_benchmark, "changed": list(o.protocol_changes)}
        )
    return described


def _run(job: Job, record: Record, first_in_process: bool) -> None:
    from effscope.blocks.attention import attention_impl, measures_attention, measuring_attention
    from effscope.profile.env import environment
    from effscope.profile.target import Bound, Target, resolve_target
    from effscope.profile.timing import set_threads, time_attention_cores

    wl, opts = job.workload, job.options
    device = torch.device(wl.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise EffscopeError(
            f"device '{wl.device}' was asked for, but this torch ({torch.__version__}) sees no CUDA device; "
            "use --device cpu or install a CUDA build of torch"
        )
    if wl.threads:
        set_threads(wl.threads)
    torch.manual_seed(0)
    # Per job, as a reused worker may have run a protocol that turned it on (recorded in the environment).
    torch.backends.cudnn.benchmark = bool(opts.protocol and record.protocol.get("cudnn_benchmark"))
    if job.module is None:
        target = resolve_target(job.target, job.knobs)
    else:
        target = Target(job.target, "custom", instance=job.module)
    record.kind, record.family = target.kind, target.family
    record.knobs, record.derived = target.knobs(), target.derived()
    record.env = environment(
        device,
        dtype="fp32",  # parameters and inputs; a lower precision runs under autocast (amp)
        amp=_AMP_DTYPES.get(wl.dtype),
        threads=wl.threads,
        memory_format="channels_last" if wl.channels_last else "contiguous",
        compiled=wl.compile,
        cuda_graph=wl.cuda_graph,
        attention=wl.attention,
    )
    # Memory first, in a clean process: the baseline is taken before anything else allocates (the reference
    # workload and fvcore's tracing would otherwise leave freed memory that the model reuses, hiding its peak).
    baseline_rss = _reset_peak_rss() if first_in_process else None
    measured_core = measures_attention(device.type, wl.attention)
    with attention_impl(wl.attention), measuring_attention(time_attention_cores) as attention_choices:
        module = target.build(device).eval()
        args = target.example_args(module, wl.batch, wl.size, device)
        # The size measured, where the workload left it to the target (Record.input_size reads it).
        record.details["input_size"] = target.input_size(module, wl.size)
        record.details["input_shapes"] = [list(a.shape) for a in args if isinstance(a, torch.Tensor)]
        if wl.channels_last:
            module = module.to(memory_format=torch.channels_last)
            args = tuple(
                a.contiguous(memory_format=torch.channels_last) if isinstance(a, torch.Tensor) and a.ndim == 4 else a
                for a in args
            )
        bound = Bound(module, args)
        tensors = bound.tensors(args)
        if wl.compile:
            # Dynamo keeps its compiled code per code object (Bound.forward serves every job) and stops compiling
            # after 8 entries: from the 9th compiled job in one process (a search's worker) it ran eager, silently.
            # Each job starts from empty caches; in a caller's process (isolate=False) its own compiled functions
            # compile again on their next call.
            torch._dynamo.reset()
        runner = torch.compile(bound) if wl.compile else bound
        amp_dtype = _AMP_DTYPES.get(wl.dtype)

        def forward(cache: bool = True, fn: Callable[..., tuple[torch.Tensor, ...]] = runner):
            if not amp_dtype:  # the timed call: no more harness around the module than a user's own loop has
                with torch.no_grad():
                    return fn(*tensors)
            with torch.no_grad(), torch.autocast(device.type, dtype=amp_dtype, cache_enabled=cache):
                return fn(*tensors)

        if measured_core and not wl.compile:  # choose each call's core now, before memory and time are measured
            forward(fn=bound)
        heap_note = peak_rss_hidden(wl)
        train = wl.mode == "train"
        work = _train_step(module, runner, tensors, device, amp_dtype) if train else forward
        _memory(work, device, baseline_rss, first_in_process, record, heap_note)
        reference_before = _time_reference(device) if opts.reference else None
        if opts.latency:
            _latency(work, device, replace(wl, cuda_graph=wl.cuda_graph and not train), opts, record)
        over_budget = bool(record.latency.get("latency_aborted"))  # nothing more to learn from its timing
        if opts.throughput and over_budget:
            why = "not timed: the latency repeats stopped early, the design being clearly over the latency budget"
            record.missing.update(dict.fromkeys(("throughput_img_s", "energy_j_per_img", "mean_power_w"), why))
        elif opts.throughput:
            _throughput(work, device, wl, opts, record)
            if not wl.flush_cache:  # only the latency repeats flush the caches: the two differ by design then
                _check_throughput_against_latency(device, record)
        if reference_before is not None:
            _reference(reference_before, _time_reference(device), record)
        if train:
            _as_training(record)
            module.eval()  # counting below is of the inference forward
        if opts.sweep and not train:
            _sweep(target, module, wl, opts, record, amp_dtype)
        if opts.module_times and not over_budget and not train:
            record.details["time_by_module_ms"] = _module_times(lambda: forward(fn=bound), module, device)
        if opts.count:  # last: tracing allocates, and its counts do not depend on timing
            _count(module, target.example_args(module, 1, wl.size, device), opts, record)
    if measured_core:
        _attention_choices(attention_choices, wl.compile, record)
    _roofline(record)


def peak_rss_hidden(wl: Workload) -> str | None:
    """Why this workload's CPU peak RSS is not measured even in a fresh process, or None: the measured attention
    mode times its cores in that process before the memory pass, and their freed memory hides the peak."""
    from effscope.blocks.attention import measures_attention

    if wl.device == "cpu" and measures_attention("cpu", wl.attention) and not wl.compile:
        return "the attention cores were timed in this process first: their freed memory hides the peak"
    return None


def _attention_choices(choices: dict[tuple, CoreChoice], compiled: bool, record: Record) -> None:
    """The measured mode's choice for every attention call the job made (details["attention_choices"])."""
    from effscope.blocks.attention import UNMEASURED_CORE, describe_call

    if compiled:
        record.missing["attention_choices"] = (
            f"under torch.compile every attention call takes {UNMEASURED_CORE}: the measured choice is not compiled in"
        )
        return
    record.details["attention_choices"] = [
        {**describe_call(key), "core": c.core, "sdpa_over_explicit": c.sdpa_over_explicit, "why": c.why}
        for key, c in choices.items()
    ]


def _train_step(
    module: torch.nn.Module,
    runner: Callable[..., tuple[torch.Tensor, ...]],
    tensors: tuple[torch.Tensor, ...],
    device: torch.device,
    amp_dtype: torch.dtype | None,
):
    """One training step as a callable: forward in train mode (under autocast when asked), a scalar loss, backward,
    and an AdamW step (through a GradScaler in fp16). The loss is the mean square of the first output, a stand-in
    whose cost is negligible beside the network's."""
    module.train()
    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        raise EffscopeError("there is nothing to train: the target has no parameters that require gradients")
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    scaler = torch.amp.GradScaler(device.type) if amp_dtype is torch.float16 else None

    def step(cache: bool = True) -> None:
        optimizer.zero_grad(set_to_none=True)
        amp = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else contextlib.nullcontext()
        with amp:
            loss = runner(*tensors)[0].float().pow(2).mean()  # the bound module returns a tuple of tensors
        if scaler is None:
            loss.backward()
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()

    return step


# Training mode measures a step, not a forward: its numbers get names that say so (latency_ms_p50 ->
# train_step_ms_p50, latency_ms_p90_lo -> train_step_ms_p90_lo, ...).
_TRAIN_PREFIXES = {TIMED["infer"]: TIMED["train"], "latency_wall_ms_": "train_step_wall_ms_"}
_TRAIN_NAMES = {
    "latency_n": "train_step_n",
    "throughput_img_s": "train_img_s",
    "latency_vs_reference": "train_step_vs_reference",
}


def _training_name(key: str) -> str:
    for old, new in _TRAIN_PREFIXES.items():
        if key.startswith(old):
            return new + key[len(old) :]
    return _TRAIN_NAMES.get(key, key)


def _as_training(record: Record) -> None:
    for section in (record.latency, record.throughput, record.reference):
        renamed = {_training_name(k): v for k, v in section.items()}
        section.clear()
        section.update(renamed)
    record.missing = {_training_name(k): v for k, v in record.missing.items()}


def _roofline(record: Record) -> None:
    from effscope.profile.roofline import add_roofline

    # Intensity and achieved MAC/s; the bound needs the device's calibration, which the process owning the record
    # store adds (run.profile -> roofline.attach_calibration): the worker never opens the database.
    add_roofline(record)


def _module_times(
    forward: Callable[[], object], module: torch.nn.Module, device: torch.device, repeats: int = MODULE_TIME_REPEATS
) -> dict[str, float]:
    """Mean wall time per forward of each module up to three levels deep (stages, blocks, and blocks kept in a
    ModuleList, which is never called itself), named as in macs_by_module.

    Hooks synchronize the GPU around each module, which serializes execution: the times are for the report's
    share-of-time breakdown, not a latency figure.
    """
    import time

    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    totals: dict[str, float] = {}
    starts: dict[str, float] = {}
    handles = []
    for name, sub in module.named_modules():
        if not name or name.count(".") > 2:
            continue

        def pre(_m: torch.nn.Module, _a: tuple[Any, ...], name: str = name) -> None:
            sync()
            starts[name] = time.perf_counter()

        def post(_m: torch.nn.Module, _a: tuple[Any, ...], _o: Any, name: str = name) -> None:
            sync()
            totals[name] = totals.get(name, 0.0) + time.perf_counter() - starts[name]

        handles += [sub.register_forward_pre_hook(pre), sub.register_forward_hook(post)]
    try:
        forward()  # warm
        totals.clear()
        for _ in range(repeats):
            forward()
    finally:
        for h in handles:
            h.remove()
    return {name: 1e3 * t / repeats for name, t in totals.items()}


def _count(module: torch.nn.Module, args: tuple[Any, ...], opts: Options, record: Record) -> None:
    from effscope.profile.counting import count

    c = count(module, args, elementwise=opts.elementwise)
    record.counts = c.summary()
    record.details["count"] = c.details()


def _memory(
    forward: Callable[[], object],
    device: torch.device,
    baseline_rss: tuple[int, int] | None,
    first_in_process: bool,
    record: Record,
    heap_note: str | None = None,
) -> None:
    """Peak memory of one call of `forward`. On the CPU the peak RSS needs the job's process to be clean; `heap_note`
    says why it is not, though it is the first job there. `baseline_rss`: (RSS, its file-backed part) in bytes when
    the peak mark was reset."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        forward()
        torch.cuda.synchronize(device)
        record.memory = {
            "peak_mem_bytes": torch.cuda.max_memory_allocated(device),
            "peak_mem_reserved_bytes": torch.cuda.max_memory_reserved(device),
        }
        return
    forward()
    peak = _peak_rss()
    if baseline_rss is None or peak is None or heap_note:
        record.memory = {"peak_rss_bytes": None}
        if not first_in_process:
            heap_note = "measured in a reused worker process, where memory freed by earlier jobs hides this job's peak"
        record.missing["peak_rss_bytes"] = (
            heap_note or "this OS does not expose a resettable peak RSS (/proc/self/clear_refs)"
        )
    else:
        # Library code paged in by the first forward (libtorch, oneDNN: 10-20 MiB) is file-backed RSS, not the
        # target's memory: its growth is taken out (it stays resident, so its growth now is its growth at the peak).
        rss, file_backed = baseline_rss
        file_growth = max(0, (_status_kb("RssFile") or 0) * 1024 - file_backed)
        record.memory = {"peak_rss_bytes": max(0, peak - rss - file_growth)}
        record.details["rss_file_growth_bytes"] = file_growth


def _latency(forward: Callable[..., object], device: torch.device, wl: Workload, opts: Options, record: Record) -> None:
    from effscope.profile.timing import measure_latency

    abort = None
    if opts.abort_above_ms is not None:
        limit = opts.abort_above_ms

        def abort(samples_ms: list[float]) -> bool:
            # clearly over budget: even the fastest third of the runs so far is above the limit
            return len(samples_ms) >= 5 and sorted(samples_ms)[len(samples_ms) // 3] > limit

    stats = measure_latency(
        forward,
        device=device,
        max_time_s=opts.max_time_s,
        flush_cache=wl.flush_cache,
        abort_if=abort,
        warmup_iters=opts.warmup_iters,
        iters=opts.iters,
    )
    record.latency = {
        "latency_ms_p50": stats.median_ms,
        "latency_ms_p10": stats.p10_ms,
        "latency_ms_p90": stats.p90_ms,
        "latency_ms_p99": stats.p99_ms,
        "latency_ms_iqr": stats.iqr_ms,
        "latency_ms_mean": stats.mean_ms,
        "latency_n": stats.n,
        "latency_timer": stats.timer,
        "latency_wall_ms_p50": stats.wall_median_ms,
        "latency_stable": stats.stable,
        "cpu_util": stats.cpu_util,
        "latency_aborted": stats.aborted,
        "latency_warmup_iters": stats.warmup_iters,
        "latency_warmup_s": stats.warmup_s,
    }
    record.details["latency_samples_ms"] = list(stats.samples_ms)
    record.latency.update(latency_intervals(stats.samples_ms))
    _add_timed(record, stats.timed_s)
    if stats.aborted:
        record.flags.append("aborted-over-budget")
    if not stats.stable:
        record.flags.append("latency-unstable")
    if wl.cuda_graph:
        _cuda_graph_latency(forward, device, opts, record)


def latency_intervals(
    samples_ms: Sequence[float], prefix: str = TIMED["infer"], quantiles: Sequence[str] = ("p50", "p90", "p99")
) -> dict[str, float | None]:
    """95 % confidence intervals of the median, p90 and p99 (latency_ms_p50_lo / _hi, ...; `prefix` names other
    timings), distribution-free from order statistics; where the samples are too few for one, the samples' range
    stands in (a weaker interval)."""
    from effscope.stats import quantile_interval

    out: dict[str, float | None] = {}
    for name in quantiles:
        q = int(name[1:]) / 100
        interval = quantile_interval(samples_ms, q) or ((min(samples_ms), max(samples_ms)) if samples_ms else None)
        out[f"{prefix}{name}_lo"], out[f"{prefix}{name}_hi"] = interval or (None, None)
    return out


def _cuda_graph_latency(forward: Callable[..., object], device: torch.device, opts: Options, record: Record) -> None:
    """Latency of a CUDA-graph replay beside eager, and how host-bound the eager figure is.

    The replay costs the GPU's work alone; eager adds the host launching each kernel. Where eager is over
    HOST_BOUND times the replay, the eager latency measures the host CPU more than the GPU: flag it."""
    from effscope.profile.timing import capture_cuda_graph, measure_latency

    keys = ("latency_graph_ms_p50", "latency_graph_ms_p90", "host_bound_ratio")
    if device.type != "cuda":
        record.latency.update(dict.fromkeys(keys))
        record.missing.update(dict.fromkeys(keys, "CUDA graphs need a GPU"))
        return
    try:
        replay = capture_cuda_graph(lambda: forward(cache=False), device)  # autocast's cache must be off
    except RuntimeError as e:
        why = f"CUDA graph capture failed: {error_line(e)}"
        record.latency.update(dict.fromkeys(keys))
        record.missing.update(dict.fromkeys(keys, why))
        return
    stats = measure_latency(replay, device=device, max_time_s=opts.max_time_s)
    _add_timed(record, stats.timed_s)
    ratio = host_bound_ratio(record.latency.get("latency_ms_p50"), stats.median_ms)
    record.latency.update(
        {"latency_graph_ms_p50": stats.median_ms, "latency_graph_ms_p90": stats.p90_ms, "host_bound_ratio": ratio}
    )
    if ratio is None:
        record.missing["host_bound_ratio"] = "it needs both an eager and a replay median above 0"
    # Its intervals decide a search whose budget is on the replay (search/uncertainty.py), as eager's do.
    record.latency.update(latency_intervals(stats.samples_ms, GRAPH_TIMED, ("p50", "p90")))
    if ratio is not None and ratio > HOST_BOUND:
        record.flags.append("host-bound")


def _latency_ran(record: Record) -> bool:
    return bool(record.latency.get("latency_n"))


def _add_timed(record: Record, seconds: float) -> None:
    """Add seconds spent inside the target's timed iterations (warm-ups, counting and the reference workload are
    not): over a search's wall time this is its duty cycle."""
    record.latency["timed_s"] = record.latency.get("timed_s", 0.0) + seconds


def _check_throughput_against_latency(device: torch.device, record: Record) -> None:
    """On a CPU, store throughput x p50 latency / batch (1 when both timed the same speed) in
    details["throughput_vs_latency"], and flag throughput-latency-mismatch when it is off by THROUGHPUT_LATENCY_AGREE
    either way."""
    p50, img_s = record.latency.get("latency_ms_p50"), record.throughput.get("throughput_img_s")
    if device.type != "cpu" or not p50 or not img_s:
        return
    ratio = img_s * (p50 / 1e3) / record.throughput["throughput_batch"]
    record.details["throughput_vs_latency"] = ratio
    if max(ratio, 1 / ratio) > THROUGHPUT_LATENCY_AGREE:
        record.flags.append("throughput-latency-mismatch")


def host_bound_ratio(eager_ms: float | None, graph_ms: float | None) -> float | None:
    """Eager latency / CUDA-graph replay latency; None when either is missing or not positive."""
    if not eager_ms or not graph_ms or eager_ms <= 0 or graph_ms <= 0:
        return None
    return eager_ms / graph_ms


def _throughput(
    forward: Callable[[], object], device: torch.device, wl: Workload, opts: Options, record: Record
) -> None:
    from effscope.profile.telemetry import GpuSampler, nvml_index
    from effscope.profile.timing import measure_throughput

    # The sampler covers exactly the synchronized window (not the warm-up), so energy / images is per image.
    sampler = GpuSampler(nvml_index(device)) if device.type == "cuda" else None
    # Right after the latency repeats the forward is warm: one call re-primes it (after a CUDA-graph replay, say)
    # instead of a second warm-up. A fixed-iteration protocol keeps its own warm-up count.
    warm = {"warmup_s": 0.0, "warmup_min_iters": 1} if _latency_ran(record) and opts.warmup_iters is None else {}
    t = measure_throughput(
        forward,
        batch=wl.batch,
        device=device,
        window_s=opts.window_s,
        sampler=sampler,
        warmup_iters=opts.warmup_iters,
        iters=opts.iters,
        **warm,
    )
    record.throughput = {"throughput_img_s": t.img_s, "throughput_batch": t.batch, "throughput_window_s": t.window_s}
    _add_timed(record, t.window_s)
    tel = t.telemetry
    reason = (
        "energy and telemetry need an NVIDIA GPU (NVML); this run is on the CPU"
        if sampler is None
        else (tel.missing_reason if tel is not None else "no telemetry came back from the sampler")
    )
    if sampler is None or tel is None or tel.missing_reason:
        record.energy = {"energy_j_per_img": None, "mean_power_w": None}
        record.missing.update({"energy_j_per_img": reason, "mean_power_w": reason})
        return
    images = t.batch * t.iters
    record.energy = {
        "energy_j_per_img": tel.energy_j / images if tel.energy_j is not None else None,
        "mean_power_w": tel.mean_power_w,
        "sm_clock_mhz_mean": tel.sm_clock_mhz,
        "temp_c_max": tel.temp_c_max,
        "throttled": tel.throttled,
    }
    for key, value in record.energy.items():
        if value is None:
            record.missing[key] = (
                "NVML gave neither an energy counter nor power readings for this GPU"
                if key in ("energy_j_per_img", "mean_power_w")
                else "NVML gave no reading of it during the throughput window"
            )
    record.details["telemetry"] = tel.as_dict()
    if tel.throttled:
        record.flags.append("gpu-throttled")


def _sweep(
    target: Target,
    module: torch.nn.Module,
    wl: Workload,
    opts: Options,
    record: Record,
    amp_dtype: torch.dtype | None,
) -> None:
    from effscope.profile.target import Bound
    from effscope.profile.timing import batch_sweep

    device = torch.device(wl.device)

    def make_fn(batch: int):
        args = target.example_args(module, batch, wl.size, device)
        bound = Bound(module, args)
        tensors = bound.tensors(args)

        def fn():
            amp = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else contextlib.nullcontext()
            with torch.no_grad(), amp:
                return bound(*tensors)

        return fn

    result = batch_sweep(make_fn, device=device, window_s=opts.window_s)
    record.throughput.update({"peak_throughput_img_s": result.peak_img_s, "peak_throughput_batch": result.peak_batch})
    if result.peak_img_s is None:  # the smallest batch already ran out of memory
        why = result.points[0].failure if result.points else "the sweep timed no batch"
        record.missing.update(dict.fromkeys(("peak_throughput_img_s", "peak_throughput_batch"), why))
    record.details["batch_sweep"] = result.as_dict() if hasattr(result, "as_dict") else str(result)


def _time_reference(device: torch.device):
    from effscope.profile.timing import time_reference

    return time_reference(device, max_time_s=1.0)


def _reference(before: LatencyStats, after: LatencyStats, record: Record) -> None:
    """Reference module timed before and after the target: ratios across sessions, and a contention check."""
    lat = record.latency.get("latency_ms_p50")
    ref_ms = min(before.median_ms, after.median_ms)
    record.reference = {
        "reference_id": before.reference_id,
        "reference_ms_p50": ref_ms,
        "reference_ms_p50_before": before.median_ms,
        "reference_ms_p50_after": after.median_ms,
        "reference_cpu_util": min(before.cpu_util, after.cpu_util) if before.cpu_util is not None else None,
        "latency_vs_reference": lat / ref_ms if lat else None,
    }
    if not lat:
        from effscope.profile.roofline import NO_LATENCY

        record.missing["latency_vs_reference"] = NO_LATENCY
    # The reference's matmuls use every thread, so a low ratio there means other processes took the cores (a small
    # target may use fewer threads than it was given, so its own ratio would mislead); a reference that slowed
    # down between before and after means the machine changed under the target.
    low_util = (
        record.reference["reference_cpu_util"] is not None and record.reference["reference_cpu_util"] < LOW_CPU_UTIL
    )
    drift = max(before.median_ms, after.median_ms) / ref_ms
    if low_util or drift > REFERENCE_DRIFT:
        record.flags.append("cpu-contention" if before.cpu_util is not None else "device-contention")


def _reset_peak_rss() -> tuple[int, int] | None:
    """Reset the kernel's peak-RSS mark (VmHWM) and return the current RSS and its file-backed part (RssFile, 0
    where the kernel does not split RSS) in bytes, or None where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _status_kb("VmRSS") * 1024, (_status_kb("RssFile") or 0) * 1024
    except (OSError, TypeError):
        return None


def _peak_rss() -> int | None:
    kb = _status_kb("VmHWM")
    return kb * 1024 if kb is not None else None


def _status_kb(field_name: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None
