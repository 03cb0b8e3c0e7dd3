"""The Python API: what `effscope profile`, `effscope search` and `effscope report` do, as functions that return
Records, search results and paths.

import effscope
record = effscope.profile("litv2_s", batch=8, max_time_s=2)      # a preset, block, pattern-free name
record = effscope.profile(my_module, size=(160, 160))            # an nn.Module instance
record = effscope.profile("hilo", threads=1, attention="sdpa")   # and channels_last=True, as the command's flags
print(record.latency["latency_ms_p50"], record.counts["macs"])
effscope.report([record], output="r.html")
effscope.report("records.csv", output="r.html")                  # a Records export (CSV, Parquet or JSON)
result = effscope.search("hilo_block", trials=20, storage="effscope.db")   # a shipped space or a .toml path
print(result.summary.front[0]["knobs"])
"""

from __future__ import annotations

import dataclasses
import math
import multiprocessing
import os
import pickle
import re
import sys
import types
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from effscope.errors import SpecError
from effscope.knobs import plain_number

if TYPE_CHECKING:
    import torch
    from torch import nn

    from effscope.profile.record import Record
    from effscope.search.coordinator import SearchProgress, SearchResult

__all__ = ["callable_package", "profile", "report", "search"]

_MAIN_GUARD = re.compile(r"^if\s+__name__\s*==\s*['\"]__main__['\"]\s*:", re.MULTILINE)


def profile(
    target: str | nn.Module,
    *,
    device: str | torch.device = "cpu",
    dtype: str | None = None,
    batch: int | None = None,
    size: int | tuple[int, int] | None = None,
    knobs: dict[str, Any] | None = None,
    mode: str = "infer",
    protocol: str | None = None,
    threads: int | None = None,
    channels_last: bool = False,
    attention: str = "auto",
    compile: bool = False,  # noqa: A002 - the command's --compile, and Workload's field
    flush_cache: bool = False,
    isolate: bool = True,
    db: str | os.PathLike[str] | None = None,
    **options: Any,
) -> Record:
    """Count and measure one target, as `effscope profile` does, and return its Record.

    Args:
        target: a block or preset name (`effscope blocks list`, `effscope models list`), `module:callable` or
            `path/to/file.py:callable` returning an nn.Module, or an nn.Module instance. A module that takes other
            inputs than an image batch (B, 3, H, W) defines `example_args(batch, size, device)`.
        device, dtype, batch: as the command's --device (a str or a torch.device), --dtype (default fp32) and --batch
            (default 1).
        size: input size of a model, or token grid of a block: N or (H, W), integers; None uses the target's own.
        knobs: knob values of a registered block or preset, e.g. {"window_size": 4}.
        mode: "infer", or "train" to time a training step (forward, backward, AdamW step): its numbers are named
            train_step_ms_p50, train_img_s, ...
        protocol: time as a paper did, as the command's --protocol: "lightvit", "litv2" or "timm" set the dtype,
            batch, warm-up and timed iteration counts (`effscope.profile.protocols`). A dtype, batch, warmup_iters
            or iters given beside it overrides the paper's and is recorded in the Record's protocol["changed"], so a
            modified replay never passes for the paper's own.
        threads, channels_last, attention: as the command's --threads (torch intra-op threads, pinned for the
            measurement; None leaves torch's own count), --channels-last (the module and its 4-D inputs in
            channels_last memory format; with isolate=False an instance is converted in place) and --attention (the
            attention core: "auto", "measured", "sdpa" or "explicit"). The Record's env says what was used: threads,
            memory_format and attention_core.
        compile, flush_cache: as --compile (torch.compile the module before timing; env.compile) and --flush-cache
            (overwrite a 256 MB buffer before each timed call, so a block is timed with cold caches). A compiled
            measurement starts from empty torch.compile caches: with isolate=False, the caller's own compiled
            functions compile again on their next call.
        isolate: measure in a spawned process (the default, as the command does): a crash or a hang becomes a failed
            Record, and CPU peak memory is honest; an nn.Module instance is pickled to it, so its class must be
            importable there (defined in a module or a script file, not in a notebook, `python -c` or stdin). False
            measures in this process: faster to start, works for any module, but a crash takes the caller down and
            CPU peak memory is missing; torch's thread count is restored afterwards when `threads` pinned it.
        db: also store the Record in this record store (SQLite file or SQLAlchemy URL); None keeps it in memory.
        **options: measurement options, with the names of `effscope.profile.measure.Options`: count, elementwise,
            latency, throughput, sweep, reference, module_times, max_time_s, window_s, timeout_s, warmup_iters and
            iters; and `cuda_graph` (default: on for CUDA devices in inference). Options's other fields are effscope's
            own bookkeeping and are refused: protocol and protocol_changes (set from `protocol`), fresh_process (a
            single measurement always starts its own process) and abort_above_ms (the search's early stop, which
            leaves a Record's latency cut short).

    Numbers may be numpy's (np.int64, np.float32, ..., as a DataFrame's column gives them): each is checked and
    recorded as the Python int or float it stands for.

    Raises:
        EffscopeError (effscope.errors, also `effscope.EffscopeError`), the one base class to catch: its kinds
        SpecError, KnobError and UnknownNameError say in one sentence what is wrong with the target, a knob, an
        option or the workload; a store that cannot be opened raises its StoreError, also an EffscopeError.
    """
    import torch
    from torch import nn

    from effscope.profile.measure import Options
    from effscope.profile.protocols import apply_protocol
    from effscope.profile.record import Workload
    from effscope.profile.run import (
        Plan,
        check_device,
        check_input_size,
        default_cuda_graph,
        validate_options,
        validate_workload,
    )
    from effscope.profile.run import profile as run_profile
    from effscope.profile.target import Target, resolve_target

    device = _device(device)
    # numbers from numpy or pandas (np.int64, ...) checked and recorded as Python's own: a Record is JSON
    batch, threads = plain_number(batch), plain_number(threads)
    options = {name: plain_number(value) for name, value in options.items()}
    for name, value in (("dtype", dtype), ("mode", mode), ("protocol", protocol)):
        if value is not None and not isinstance(value, str):
            raise SpecError(f"{name} must be a name (a str), but got {value!r}")
    if batch is not None and not _is_int(batch):
        raise SpecError(f"batch must be an integer, but got {batch!r}")
    if not isinstance(isolate, bool):
        raise SpecError(f"isolate must be True or False, but got {isolate!r}")
    if knobs is not None and not isinstance(knobs, Mapping):
        raise SpecError(f"knobs must be a dict of knob names to values, but got {knobs!r}")
    if db is not None and not isinstance(db, str | os.PathLike):
        raise SpecError(f"db must be a path or an SQLAlchemy URL (a str), but got {db!r}")
    runtime = _runtime(threads, channels_last, attention, compile, flush_cache)
    cuda_graph = options.pop("cuda_graph", default_cuda_graph(device, mode))
    if not isinstance(cuda_graph, bool):
        raise SpecError(f"cuda_graph must be True or False, but got {cuda_graph!r}")
    _check_options(options)
    grid = _grid(size)
    timing = apply_protocol(
        protocol,
        device,
        dtype=dtype,
        batch=batch,
        warmup_iters=options.pop("warmup_iters", None),
        iters=options.pop("iters", None),
        latency=options.pop("latency", None),
    )
    workload = validate_workload(
        Workload(
            device=device,
            dtype=timing.dtype,
            batch=timing.batch,
            size=grid,
            cuda_graph=cuda_graph,
            mode=mode,
            **runtime,
        ),
        arguments=True,
    )
    check_device(workload.device)
    opts = validate_options(Options(**options, **timing.options()))
    if isinstance(target, nn.Module):
        if knobs:
            raise SpecError("knobs apply to registered blocks and presets, not to a module instance")
        resolved = Target(type(target).__name__, "custom", instance=target)
    elif isinstance(target, str):
        resolved = resolve_target(target, overrides=dict(knobs) if knobs is not None else None)
    else:
        raise SpecError(f"target must be a name or an nn.Module, but got {type(target).__name__}")
    if grid is not None:
        check_input_size(resolved, grid, "size")
    if isolate:
        _check_main_guard("profile")
        if resolved.instance is not None:
            _check_importable(resolved.instance)
    store = None
    if db is not None:
        from effscope.profile.store import RecordStore

        store = RecordStore(os.fspath(db))
    runner = None
    if not isolate:
        from effscope.profile.worker import InProcess

        runner = InProcess()
    # measured in this process, the pinned thread count would outlive the call: put the caller's back
    caller_threads = torch.get_num_threads() if threads is not None and not isolate else None
    try:
        (record,) = run_profile([Plan(resolved, workload)], opts, store=store, worker=runner, provenance=_provenance())
    except (pickle.PicklingError, AttributeError, TypeError) as e:
        if resolved.instance is None or not isolate:
            raise
        raise SpecError(
            f"the {resolved.name} instance cannot be sent to the measurement process ({e}); make its class importable "
            "and its attributes picklable, or pass isolate=False"
        ) from None
    finally:
        if caller_threads is not None:
            torch.set_num_threads(caller_threads)
    return record


def search(
    space: str,
    *,
    trials: int | None = None,
    budget_ms: float | None = None,
    storage: str | None = None,
    study: str | None = None,
    device: str | None = None,
    workers: int = 1,
    data: str | None = None,
    seed: int | None = None,
    heartbeat: int = 10,
    predictor: str | None = None,
    on_progress: Callable[[SearchProgress], None] | None = None,
) -> SearchResult:
    """Search a space as `effscope search SPACE` does (the same code), and return its SearchResult.

    Args:
        space: a shipped space name (`effscope search --list`) or a .toml file.
        trials, budget_ms, storage, study, device, workers, data, seed, heartbeat, predictor: the command's
            --trials, --budget-ms, --storage (default ./effscope.db), --study (default <space>-<device>; the same
            name resumes), --device, --workers, --data, --seed, --heartbeat and --predictor.
        on_progress: called about once a second with a `SearchProgress` while the workers run.

    Numbers may be numpy's (np.int64, np.float32, ...), taken as the Python int or float they stand for.

    Returns:
        The `SearchResult` (effscope.search.coordinator): study_name, storage_url, created, summary (a
        `SearchSummary`: counts, the feasible Pareto front as rows of plain dicts, the presets' positions, the best
        design per budget), notes, elapsed_s, failures (workers that ended early) and space.

    Raises:
        EffscopeError (effscope.errors, also `effscope.EffscopeError`), the one base class to catch: a bad space or
        option, an unreachable database, a study of that name with another definition, each in one sentence.
        Worker processes are spawned and import the calling script again: call it under
        `if __name__ == '__main__':` in a script (a script without that guard is refused before any worker starts).
    """
    from effscope.search.coordinator import search as run

    space = _text("space", space, path=True, required=True)
    storage, data = _text("storage", storage, path=True), _text("data", data, path=True)
    for name, value in (("study", study), ("device", device), ("predictor", predictor)):
        _text(name, value)
    # numbers from numpy or pandas (np.int64, ...) as Python's own: the study's attributes are JSON
    trials, budget_ms, workers, seed, heartbeat = map(plain_number, (trials, budget_ms, workers, seed, heartbeat))
    for name, value in (("trials", trials), ("workers", workers), ("seed", seed), ("heartbeat", heartbeat)):
        if not _is_int(value) and not (value is None and name in ("trials", "seed")):
            raise SpecError(f"{name} must be an integer, but got {value!r}")
    # by the argument's name here; the shared checks behind these name the command's options (--trials, ...)
    number = isinstance(budget_ms, int | float) and not isinstance(budget_ms, bool)
    if budget_ms is not None and not (number and math.isfinite(budget_ms) and budget_ms > 0):
        raise SpecError(f"budget_ms must be a positive number of milliseconds, but got {budget_ms!r}")
    for name, value, unit in (("trials", trials, ""), ("workers", workers, ""), ("heartbeat", heartbeat, " s")):
        if value is not None and value < 1:
            raise SpecError(f"{name} must be >= 1{unit}, but got {value}")
    _check_main_guard("search")
    return run(
        space,
        budget_ms=budget_ms,
        trials=trials,
        workers=workers,
        storage=storage,
        study=study,
        device=device,
        data=data,
        seed=seed,
        heartbeat=heartbeat,
        predictor=predictor,
        command=_provenance()["command"],
        on_progress=on_progress,
    )


def report(
    records: Sequence[Record] | str | os.PathLike[str] | None = None,
    *,
    output: str | Path,
    db: str | None = None,
    storage: str | None = None,
    study: str | None = None,
    plotlyjs: str = "inline",
) -> Path:
    """Write the HTML report of `records`, of every Record in `db`, or of a search study in `storage`; return its
    path. One source only, as `effscope report` takes.

    Args:
        records: Records (from `profile`), or the path of a Records export (CSV, Parquet or JSON, as
            `effscope profile --csv/--json`, `effscope export` or `RecordStore.export` write it), read as
            `effscope report RECORDS.csv` reads it.
        plotlyjs: as the command's --plotlyjs: "inline" (one offline file, ~5 MB), "directory" (plotly.min.js
            written once beside the report) or "cdn" (needs internet to read).
    """
    from effscope.report.build import build_report

    output = _text("output", output, path=True, required=True)
    db, storage = _text("db", db, path=True), _text("storage", storage, path=True)
    for name, value in (("study", study), ("plotlyjs", plotlyjs)):
        _text(name, value)
    in_memory, export = _report_records(records)
    return build_report(
        output=output,
        records=in_memory,
        records_csv=export,
        db=db,
        storage=storage,
        study=study,
        plotlyjs=plotlyjs,
        command=_provenance()["command"],
        arguments=True,
    )


def _text(name: str, value: Any, *, path: bool = False, required: bool = False) -> Any:
    """A string argument (or, where `path`, an os.PathLike, returned as its string); None where not `required`."""
    if value is None and not required:
        return None
    if path and isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str):
        raise SpecError(f"{name} must be {'a path or ' if path else ''}a string, but got {value!r}")
    return value


class _CallablePackage(types.ModuleType):
    """A package that is also the API function of its name: `effscope.profile(...)` measures, while
    `import effscope.profile as p; p.count` and `from effscope.profile.store import RecordStore` keep working."""

    _api_function: str

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return globals()[self._api_function](*args, **kwargs)


def callable_package(module_name: str, function_name: str) -> None:
    """Make the package `module_name` callable as this module's `function_name` (its docstring is the help)."""
    module = sys.modules[module_name]
    module.__class__ = _CallablePackage
    module._api_function = function_name


def _provenance() -> dict[str, str]:
    main = sys.modules.get("__main__")
    where = getattr(main, "__file__", None)
    return {"command": f"python {Path(where).name}" if where else "python (interactive)"}


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _device(device: object) -> str:
    """The device as the command takes it: a str, or a torch.device written as one ("cuda:0")."""
    import torch

    if isinstance(device, str):
        return device
    if isinstance(device, torch.device):
        return str(device)
    raise SpecError(f"device must be cpu, cuda or cuda:N (a str or a torch.device), but got {device!r}")


def _grid(size: object) -> tuple[int, int] | None:
    """`size` as (H, W), with the command's --resolution / --tokens rule (run.parse_size): N or (H, W), integers in
    [1, MAX_SIDE]."""
    from effscope.profile.record import MAX_SIDE
    from effscope.profile.run import parse_size

    if size is None:
        return None
    size = type(size)(map(plain_number, size)) if type(size) in (tuple, list) else plain_number(size)  # np.int64s
    if _is_int(size):
        text: str | None = str(size)
    elif isinstance(size, tuple | list) and len(size) == 2 and all(_is_int(v) for v in size):
        text = f"{size[0]}x{size[1]}"
    else:
        text = None
    try:
        if text is not None:
            return parse_size(text, "size")
    except SpecError:
        pass
    raise SpecError(
        f"size takes N or (H, W) with integers in [1, {MAX_SIDE}] (e.g. 224 or (224, 320)), but got {size!r}"
    )


def _runtime(
    threads: object, channels_last: object, attention: object, compile_: object, flush_cache: object
) -> dict[str, Any]:
    """The runtime arguments as Workload fields, their types checked here; their values are checked with the rest
    of the workload by the command's own rule (validate_workload)."""
    if threads is not None and not _is_int(threads):
        raise SpecError(f"threads must be None or an integer, but got {threads!r}")
    switches = {"channels_last": channels_last, "compile": compile_, "flush_cache": flush_cache}
    switches = {name: plain_number(value) for name, value in switches.items()}  # numpy's bool too
    for name, value in switches.items():
        if not isinstance(value, bool):
            raise SpecError(f"{name} must be True or False, but got {value!r}")
    if not isinstance(attention, str):
        raise SpecError(f"attention must be a name (a str), but got {attention!r}")
    return {"threads": threads, "attention": attention, **switches}


def _report_records(records: Any) -> tuple[list[Record] | None, str | os.PathLike[str] | None]:
    """report()'s `records` as build_report's two sources: (Records in memory, None) or (None, an export's path)."""
    from effscope.profile.record import Record
    from effscope.profile.store import EXPORT_FORMATS

    if records is None or isinstance(records, str | os.PathLike):
        return None, records
    if hasattr(records, "columns") and hasattr(records, "to_csv"):  # iterating a DataFrame gives its column names
        raise SpecError(
            "records takes Records or the path of a Records export, but got a DataFrame: pass the store it came "
            "from as db=, or write it with .to_csv(PATH, index=False) and pass PATH"
        )
    try:
        held = list(records)  # any iterable of Records
    except TypeError:
        got = repr(records)
    else:
        others = sorted({type(r).__name__ for r in held if not isinstance(r, Record)})
        if not others:
            return held, None
        got = f"a {type(records).__name__} holding {', '.join(others)}"
    raise SpecError(
        f"records takes a list of Records (from effscope.profile) or the path of a Records export "
        f"({', '.join(EXPORT_FORMATS)}), but got {got}"
    )


# Options fields a caller does not set: `protocol` is profile()'s own argument, the others are effscope's bookkeeping.
_INTERNAL_OPTIONS = ("abort_above_ms", "fresh_process", "protocol", "protocol_changes")
_OPTION_KINDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "bool": (lambda v: isinstance(v, bool), "True or False"),
    "float": (lambda v: isinstance(v, int | float) and not isinstance(v, bool), "a number"),
    "int | None": (lambda v: v is None or _is_int(v), "an integer or None"),
}


def _check_options(options: dict[str, Any]) -> None:
    """Refuse an unknown or internal option, or one of the wrong type, in one sentence naming the options; the
    values' ranges are checked after, by the command's own validate_options / validate_workload."""
    from effscope.profile.measure import Options

    types_ = {f.name: f.type for f in dataclasses.fields(Options)}
    allowed = sorted(name for name in types_ if name not in _INTERNAL_OPTIONS) + ["cuda_graph"]
    unknown = sorted(set(options) - set(types_))
    if unknown:
        raise SpecError(f"unknown option(s) {', '.join(unknown)}; the options are {', '.join(allowed)}")
    internal = sorted(set(options) & set(_INTERNAL_OPTIONS))
    if internal:
        hint = " (give protocol=NAME)" if {"protocol", "protocol_changes"} & set(internal) else ""
        raise SpecError(
            f"{', '.join(internal)} {'is' if len(internal) == 1 else 'are'} set by effscope itself{hint}; the options "
            f"are {', '.join(allowed)}"
        )
    for name, value in options.items():
        check, what = _OPTION_KINDS.get(str(types_[name]), (lambda v: True, ""))
        if not check(value):
            raise SpecError(f"option {name} must be {what}, but got {value!r}")


def _main_importable(main: types.ModuleType | None) -> bool:
    """Whether a spawned process can import the caller's `__main__` again (as multiprocessing's spawn does): by its
    module name (`python -m pkg.mod`) or from its file; not a notebook, `python -c` or a script read from stdin."""
    if main is None:
        return False
    if getattr(getattr(main, "__spec__", None), "name", None):
        return True
    path = getattr(main, "__file__", None)
    return bool(path) and Path(path).is_file()


def _check_importable(module: nn.Module) -> None:
    """An instance is pickled to the measurement process, which finds its classes by module and name: a class
    defined in a `__main__` that process cannot import (a notebook, `python -c`, stdin) would fail there with only
    an exit code, so say so here in one sentence."""
    if _main_importable(sys.modules.get("__main__")):
        return
    for sub in module.modules():
        cls = type(sub)
        if cls.__module__ == "__main__":
            raise SpecError(
                f"{cls.__qualname__} is defined interactively (in a notebook, `python -c` or stdin), so effscope's "
                "measurement process cannot import it: define it in a module or .py file, or pass isolate=False"
            )


def _check_main_guard(function: str) -> None:
    """Measuring (or searching) in a spawned process imports the caller's script again there: without a main guard
    the script would start measuring inside that process too. Say so in one sentence instead of multiprocessing's
    traceback. `function`: "profile" or "search", as messages name it."""
    fallback = ", or pass isolate=False" if function == "profile" else ""
    # While a spawned child imports the script, multiprocessing marks it `_inheriting`; parent_process() is still
    # None then (it is set only once the child's target starts, where a call is legitimate).
    if getattr(multiprocessing.current_process(), "_inheriting", False):
        raise SpecError(
            f"effscope.{function}() ran while one of effscope's processes was starting and importing your script: "
            f"put your script's calls under `if __name__ == '__main__':`{fallback}"
        )
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if not path:  # interactive: nothing is imported again
        return
    if not _main_importable(main):
        raise SpecError(
            f"effscope.{function}() runs in spawned processes, which import the calling script again, but this one "
            f"was read from {path}: save it as a .py file and run that{fallback}"
        )
    try:
        source = Path(path).read_text(errors="replace")
    except OSError:
        return
    if not _MAIN_GUARD.search(source):
        verb = "measures" if function == "profile" else "searches"
        in_process = " (or pass isolate=False to measure in this process)" if fallback else ""
        raise SpecError(
            f"{Path(path).name} calls effscope.{function}() outside `if __name__ == '__main__':`; effscope {verb} in "
            f"spawned processes, which import the script again, so put the calls under that guard{in_process}"
        )
