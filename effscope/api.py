"""The Python API: what `effscope profile`, `effscope search` and `effscope report` do, as functions that return
Records, search results and paths.

import effscope
record = effscope.profile("litv2_s", batch=8, max_time_s=2)      # a preset, block, pattern-free name
record = effscope.profile(my_module, size=(160, 160))            # an nn.Module instance
print(record.latency["latency_ms_p50"], record.counts["macs"])
effscope.report([record], output="r.html")
result = effscope.search("hilo_block", trials=20, storage="effscope.db")   # a shipped space or a .toml path
print(result.summary.front[0]["knobs"])
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import pickle
import re
import sys
import types
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from effscope.errors import SpecError

if TYPE_CHECKING:
    from torch import nn

    from effscope.profile.record import Record
    from effscope.search.coordinator import SearchProgress, SearchResult

__all__ = ["callable_package", "profile", "report", "search"]

_MAIN_GUARD = re.compile(r"^if\s+__name__\s*==\s*['\"]__main__['\"]\s*:", re.MULTILINE)


def profile(
    target: str | nn.Module,
    *,
    device: str = "cpu",
    dtype: str = "fp32",
    batch: int = 1,
    size: int | tuple[int, int] | None = None,
    knobs: dict[str, Any] | None = None,
    mode: str = "infer",
    isolate: bool = True,
    db: str | None = None,
    **options: Any,
) -> Record:
    """Count and measure one target, as `effscope profile` does, and return its Record.

    Args:
        target: a block or preset name (`effscope blocks list`, `effscope models list`), `module:callable` or
            `path/to/file.py:callable` returning an nn.Module, or an nn.Module instance. A module that takes other
            inputs than an image batch (B, 3, H, W) defines `example_args(batch, size, device)`.
        device, dtype, batch: as the command's --device, --dtype, --batch.
        size: input size of a model, or token grid of a block: N or (H, W); None uses the target's own.
        knobs: knob values of a registered block or preset, e.g. {"window_size": 4}.
        mode: "infer", or "train" to time a training step (forward, backward, AdamW step): its numbers are named
            train_step_ms_p50, train_img_s, ...
        isolate: measure in a spawned process (the default, as the command does): a crash or a hang becomes a failed
            Record, and CPU peak memory is honest; an nn.Module instance is pickled to it, so its class must be
            importable. False measures in this process: faster to start, works for any module, but a crash takes
            the caller down and CPU peak memory is missing.
        db: also store the Record in this record store (SQLite file or SQLAlchemy URL); None keeps it in memory.
        **options: measurement options, with the names of `effscope.profile.measure.Options` (max_time_s,
            window_s, latency, throughput, count, sweep, elementwise, reference, timeout_s, ...), and
            `cuda_graph` (default: on for CUDA devices).

    Raises:
        SpecError and its kin: an unknown target or option, a bad knob or workload (one sentence each).
    """
    from torch import nn

    from effscope.profile.measure import Options
    from effscope.profile.record import Workload
    from effscope.profile.run import Plan, check_device, validate_options, validate_workload
    from effscope.profile.run import profile as run_profile
    from effscope.profile.target import Target, resolve_target

    cuda_graph = options.pop("cuda_graph", device.startswith("cuda"))
    allowed = {f.name for f in dataclasses.fields(Options)}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise SpecError(f"unknown option(s) {', '.join(unknown)}; the options are {', '.join(sorted(allowed))}")
    grid = (size, size) if isinstance(size, int) else (tuple(size) if size is not None else None)
    workload = validate_workload(
        Workload(device=device, dtype=dtype, batch=batch, size=grid, cuda_graph=cuda_graph, mode=mode)
    )
    check_device(workload.device)
    opts = validate_options(Options(**options))
    if isinstance(target, nn.Module):
        if knobs:
            raise SpecError("knobs apply to registered blocks and presets, not to a module instance")
        resolved = Target(type(target).__name__, "custom", instance=target)
    elif isinstance(target, str):
        resolved = resolve_target(target, overrides=knobs)
    else:
        raise SpecError(f"target must be a name or an nn.Module, but got {type(target).__name__}")
    if isolate:
        _check_main_guard()
    store = None
    if db is not None:
        from effscope.profile.store import RecordStore

        store = RecordStore(db)
    runner = None
    if not isolate:
        from effscope.profile.worker import InProcess

        runner = InProcess()
    try:
        (record,) = run_profile([Plan(resolved, workload)], opts, store=store, worker=runner, provenance=_provenance())
    except (pickle.PicklingError, AttributeError, TypeError) as e:
        if resolved.instance is None or not isolate:
            raise
        raise SpecError(
            f"the {resolved.name} instance cannot be sent to the measurement process ({e}); make its class importable "
            "and its attributes picklable, or pass isolate=False"
        ) from None
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

    Returns:
        The `SearchResult` (effscope.search.coordinator): study_name, storage_url, created, summary (a
        `SearchSummary`: counts, the feasible Pareto front as rows of plain dicts, the presets' positions, the best
        design per budget), notes, elapsed_s, failures (workers that ended early) and space.

    Raises:
        SpecError and its kin: a bad space or option, an unreachable database, a study of that name with another
        definition. Worker processes are spawned: call it under `if __name__ == '__main__':` in a script.
    """
    from effscope.search.coordinator import search as run

    if multiprocessing.parent_process() is not None:
        raise SpecError(
            "effscope.search() ran while one of its worker processes was starting: put your script's calls under "
            "`if __name__ == '__main__':`"
        )
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
    records: Sequence[Record] | None = None,
    *,
    output: str | Path,
    db: str | None = None,
    storage: str | None = None,
    study: str | None = None,
) -> Path:
    """Write the HTML report of `records` (Records from `profile`), of every Record in `db`, or of a search study in
    `storage`; return its path. One source only, as `effscope report` takes."""
    from effscope.report.build import build_report

    return build_report(
        output=output,
        records=list(records) if records is not None else None,
        db=db,
        storage=storage,
        study=study,
        command=_provenance()["command"],
    )


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


def _check_main_guard() -> None:
    """Measuring in a spawned process imports the caller's script again there: without a main guard the script
    would start measuring inside that process too. Say so in one sentence instead of multiprocessing's traceback."""
    if multiprocessing.parent_process() is not None:
        raise SpecError(
            "effscope.profile() ran while effscope's measurement process was starting: put your script's calls under "
            "`if __name__ == '__main__':`, or pass isolate=False"
        )
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if not path:  # interactive: nothing is imported again
        return
    try:
        source = Path(path).read_text(errors="replace")
    except OSError:
        return
    if not _MAIN_GUARD.search(source):
        raise SpecError(
            f"{Path(path).name} calls effscope.profile() outside `if __name__ == '__main__':`; effscope measures in a "
            "spawned process, which imports the script again, so put the calls under that guard (or pass "
            "isolate=False to measure in this process)"
        )
