"""The search coordinator: create the study once, start the worker processes, watch them, summarize.

One coordinator process creates the study (and the database) once, enqueues the family's published presets, then
starts N worker processes (effscope.search.workers); each samples with its own seed (base + worker id). Heartbeats
fail and retry the trial of a killed worker (docs/search.md#storage), and re-running resumes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import warnings
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from effscope.errors import SpecError
from effscope.search.space import Space, check_searchable
from effscope.search.storage import open_storage, storage_cause, storage_error, storage_url
from effscope.search.study import (
    device_identity_for,
    device_name_for,
    make_sampler,
    prepare_study,
    study_info,
    study_name_for,
)
from effscope.search.summary import (
    SearchSummary,
    best_row,
    count_designs,
    feasible_front,
    is_feasible,
    summarize,
    trial_row,
)
from effscope.search.workers import WorkerArgs, worker_process

if TYPE_CHECKING:
    from multiprocessing.connection import Connection
    from multiprocessing.process import BaseProcess

    import optuna

__all__ = ["HEARTBEAT_S", "SearchProgress", "SearchResult", "WorkerFailure", "resolve_space", "run_search", "search"]

HEARTBEAT_S = 10
MAX_SEED = 2**32 - 1  # numpy's seed range, which Optuna's samplers use


@dataclass
class SearchProgress:
    """What the coordinator reports while workers run.

    `finished` lists the trials completed since this run started, oldest first: trial (number), status and
    seconds (its own wall time). `eta_s` is trials left x the median seconds of a completed trial / workers alive
    (None before the first trial completes).
    """

    done: int
    running: int
    failed: int
    feasible: int
    cap: int
    front_size: int
    best: dict[str, Any] | None
    elapsed_s: float
    workers_alive: int
    worker_pids: list[int]
    eta_s: float | None = None
    finished: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class SearchResult:
    """What a search returns (`run_search`, `effscope.search`, and what `effscope search` prints).

    Attributes:
        study_name: the Optuna study (the same name resumes it).
        storage_url: the database holding the study and the Records (an SQLAlchemy URL).
        created: True when this call created the study, False when it resumed one.
        summary: counts by status, the feasible Pareto front (one row per design), the published designs'
            positions and the best design under each budget (`SearchSummary`).
        notes: one sentence each: presets outside a narrowed space, a study already at its cap, a dead worker.
        elapsed_s: wall time of the call.
        failures: worker processes that ended early (`WorkerFailure`); completed trials are stored anyway.
        space: the space searched, overrides applied (None when `run_search` was not told).
    """

    study_name: str
    storage_url: str
    created: bool
    summary: SearchSummary
    notes: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0
    failures: list[WorkerFailure] = field(default_factory=list)
    space: Space | None = None


@dataclass(frozen=True)
class WorkerFailure:
    """A worker process that ended before the search was done.

    cause: "error" (an EffscopeError such as an unwritable database: `reason` is its sentence), "crash" (any other
    exception, a bug: its traceback went to stderr) or "killed" (a signal).
    """

    worker: str
    cause: str
    reason: str


def _progress(
    study: optuna.Study, space: Space, started: float, procs: Sequence[BaseProcess], before: Collection[int] = ()
) -> SearchProgress:
    """The study's progress; `before`: the numbers of trials already complete when this run started."""
    import statistics

    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    seconds = {t.number: _seconds(t) for t in complete}
    timed = [v for v in seconds.values() if v is not None]
    alive = sum(1 for p in procs if p.is_alive())
    left = max(0, space.trials - len(complete))
    eta = left * statistics.median(timed) / max(1, alive) if timed else None
    new = sorted((t for t in complete if t.number not in before), key=lambda t: (t.datetime_complete, t.number))
    finished = [{"trial": t.number, "status": t.user_attrs.get("status"), "seconds": seconds[t.number]} for t in new]
    rows = [trial_row(t) for t in complete if is_feasible(t)]
    front = feasible_front(rows, space.directions)
    best = best_row(rows, space.direction, space.latency_budget.statistic)
    return SearchProgress(
        done=len(complete),
        running=sum(1 for t in trials if t.state == TrialState.RUNNING),
        failed=sum(1 for t in trials if t.state == TrialState.FAIL),
        feasible=count_designs(rows),
        cap=space.trials,
        front_size=len(front),
        best=best,
        elapsed_s=time.monotonic() - started,
        workers_alive=alive,
        worker_pids=[p.pid for p in procs if p.is_alive()],
        eta_s=eta,
        finished=finished,
    )


def _seconds(t: optuna.trial.FrozenTrial) -> float | None:
    if t.datetime_start is None or t.datetime_complete is None:
        return None
    return (t.datetime_complete - t.datetime_start).total_seconds()


def run_search(
    space: Space,
    *,
    storage: str | None = None,
    study_name: str | None = None,
    workers: int = 1,
    command: str = "",
    on_progress: Callable[[SearchProgress], None] | None = None,
    heartbeat_s: int = HEARTBEAT_S,
    grace_s: int | None = None,
    poll_s: float = 1.0,
    predictor: str | None = None,
) -> SearchResult:
    """Run (or resume) a search: create the study once, start `workers` worker processes, wait, summarize.

    Args:
        space: the search space, command-line overrides applied.
        storage: an SQLite file or SQLAlchemy URL holding both the study and the Records (default ./effscope.db).
        study_name: default `<space>-<device>`; the same name resumes.
        workers: worker processes on this machine (each with its own profiler Worker).
        command: the command line, stored with the study and every Record.
        on_progress: called about every `poll_s` seconds with the study's progress.
        heartbeat_s, grace_s: a worker silent for grace_s (default 3 x heartbeat_s) has its trial failed and
            retried by another worker or by the next run.
        predictor: a latency table's name or uid (`effscope lut build`): screens candidates, rejects only.

    Raises:
        EffscopeError: bad options, an unreachable database, a study of that name with another definition.
        KeyboardInterrupt: after the workers stopped; every completed trial is stored.
    """
    import multiprocessing as mp

    import optuna

    from effscope.profile.child import start_shielded
    from effscope.profile.store import RecordStore

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if workers < 1:
        raise SpecError(f"--workers must be >= 1, but got {workers}")
    if workers > space.trials:  # each worker runs one trial at a time: the rest would start, then only wait
        raise SpecError(
            f"--workers must be at most the trial cap (--trials, {space.trials}), but got {workers}; "
            "a worker runs one trial at a time, so more workers than trials only wait"
        )
    if heartbeat_s < 1:
        raise SpecError(f"the heartbeat must be >= 1 s, but got {heartbeat_s}")
    if not 0 <= space.seed <= MAX_SEED - (workers - 1):
        raise SpecError(
            f"the sampler seed (--seed, or [search] seed in the space) must be an integer in "
            f"[0, {MAX_SEED - (workers - 1)}] (worker i samples with seed + i; samplers take 0 to 2**32 - 1), "
            f"but got {space.seed}"
        )
    make_sampler(space, space.seed)  # a sampler that cannot start (gp without scipy) fails here, not in a worker
    name = study_name_for(space, study_name)
    check_searchable(space)  # one design, or a size no design takes: every trial would say the same
    if space.quality == "train" and not space.data:
        raise SpecError("quality 'train' needs --data DIR (an ImageFolder: root/<class>/<image>)")
    if space.data:
        from effscope.search.imagefolder import open_imagefolder

        open_imagefolder(space.data)  # decodes a sample: a folder of non-images fails here, not in every trial
    started = time.monotonic()
    device_name = device_name_for(space.workload)
    identity = device_identity_for(space.workload)  # tells apart CPUs of one generic name (docs/search.md#storage)
    url = storage_url(storage)
    table = None
    if predictor is not None:  # read before anything is created: a refused table leaves no database or study
        from effscope.search.predictor import check_compatible, find_table

        table = find_table(url, predictor)
        check_compatible(table, space, device_name, identity)
    RecordStore(url)  # creates the Record table (and an SQLite file) before any worker starts
    optuna_storage = open_storage(url)
    try:
        study, created, notes = prepare_study(
            space, optuna_storage, name, device_name=device_name, command=command, device_identity=identity
        )
    except Exception as e:  # Optuna's StorageInternalError on a database that refuses its writes: one sentence
        cause = storage_cause(e)
        if cause is None:
            raise
        raise storage_error(url, cause) from None
    if table is not None:
        study.set_user_attr("predictor", table.summary())
    if space.workload.device == "cpu" and workers > 1 and not space.workload.threads:
        notes.append(f"{workers} workers time on one CPU; set [workload] threads so they do not oversubscribe it")

    ctx = mp.get_context("spawn")
    procs, reports = [], []
    before = {t.number for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"}
    done = len(before)
    if done >= space.trials:
        notes.append(f"the study already has {done} completed trials (cap {space.trials}); raise --trials to go on")
    for wid in range(workers if done < space.trials else 0):
        args = WorkerArgs(
            space, url, name, wid, device_name, command, heartbeat_s, grace_s, os.getpid(), table and table.uid,
            device_identity=identity,
        )  # fmt: skip
        receive, send = ctx.Pipe(duplex=False)
        p = ctx.Process(target=worker_process, args=(args, send), name=f"effscope-search-{wid}", daemon=False)
        start_shielded(p)
        send.close()
        procs.append(p)
        reports.append(receive)
    try:
        while any(p.is_alive() for p in procs):
            for p in procs:
                p.join(poll_s / max(1, len(procs)))
            if on_progress is not None:
                on_progress(_progress(study, space, started, procs, before))
    except KeyboardInterrupt:
        _stop(procs)
        raise
    failures = [_failure(p, r) for p, r in zip(procs, reports, strict=True) if p.exitcode]
    for f in failures:
        if f.cause == "killed":
            notes.append(f"worker {f.worker} {f.reason}; its running trial is retried after the heartbeat grace")
    if any(f.cause == "killed" for f in failures):  # the others failed their own trial before they stopped
        notes += _fail_stale(url, name, heartbeat_s, grace_s)
    if table is not None:
        from effscope.search.remeasure import finish_search

        notes += finish_search(
            study, space, table, RecordStore(url), storage=optuna_storage, device_name=device_name, command=command
        )
    summary = summarize(study.get_trials(deepcopy=False), study_info(study))
    return SearchResult(name, url, created, summary, notes, time.monotonic() - started, failures, space)


def resolve_space(
    space: str | Space,
    *,
    budget_ms: float | None = None,
    trials: int | None = None,
    device: str | None = None,
    data: str | None = None,
    seed: int | None = None,
) -> Space:
    """A shipped space's name or a TOML path (or a Space), with the command-line overrides applied."""
    from effscope.search.space import load_space

    sp = space if isinstance(space, Space) else load_space(space)
    return sp.with_overrides(budget_ms=budget_ms, device=device, trials=trials, data=data, seed=seed)


def search(
    space: str | Space,
    *,
    budget_ms: float | None = None,
    trials: int | None = None,
    workers: int = 1,
    storage: str | None = None,
    study: str | None = None,
    device: str | None = None,
    data: str | None = None,
    seed: int | None = None,
    heartbeat: int = HEARTBEAT_S,
    predictor: str | None = None,
    command: str = "",
    on_progress: Callable[[SearchProgress], None] | None = None,
) -> SearchResult:
    """What `effscope search SPACE [options]` runs (and `effscope.search`): the options, as the command's, applied to
    the space, then `run_search`. Re-running with the same space and options resumes the study."""
    return run_search(
        resolve_space(space, budget_ms=budget_ms, trials=trials, device=device, data=data, seed=seed),
        storage=storage,
        study_name=study,
        workers=workers,
        command=command,
        on_progress=on_progress,
        heartbeat_s=heartbeat,
        predictor=predictor,
    )


def _failure(proc: BaseProcess, report: Connection) -> WorkerFailure:
    """Why a worker process ended with a non-zero exit code (its one sentence, or the signal)."""
    if proc.exitcode < 0:
        return WorkerFailure(proc.name, "killed", f"was killed by {signal.Signals(-proc.exitcode).name}")
    try:
        reason = report.recv() if report.poll() else f"exited with code {proc.exitcode}"
    except (EOFError, OSError):  # it closed its end unsent: it died starting, before the search code ran
        reason = (
            f"exited with code {proc.exitcode} while starting, before it could say why (its traceback is above); "
            "most often the calling script, which each worker imports again, ran effscope.search() outside "
            "`if __name__ == '__main__':`"
        )
    return WorkerFailure(proc.name, "error" if proc.exitcode == 2 else "crash", reason)


def _fail_stale(url: str, name: str, heartbeat_s: int, grace_s: int | None) -> list[str]:
    """After a worker died: once its heartbeat is stale, fail its trial and queue the retry (for the next run when
    the survivors already reached the cap), so no trial is left RUNNING forever."""
    import optuna
    from optuna.trial import TrialState

    storage = open_storage(url, heartbeat_s=heartbeat_s, grace_s=grace_s)
    study = optuna.load_study(study_name=name, storage=storage)
    if not study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        return []
    time.sleep((grace_s or 3 * heartbeat_s) + heartbeat_s)
    before = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
    except Exception as e:  # the storage itself may be what is broken: the next run fails them instead
        cause = storage_cause(e)
        if cause is None:
            raise
        return [f"the dead worker's trial stays RUNNING until the next run ({storage_error(url, cause)})"]
    failed = sorted({t.number for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))} - before)
    if not failed:
        return []
    return [f"trial(s) {', '.join(map(str, failed))} of the dead worker were failed and queued again for the next run"]


def _stop(procs: Sequence[BaseProcess], timeout: float = 30.0) -> None:
    """Ask every worker to stop (SIGINT: its running trial is failed), then wait; kill the stragglers.

    A worker still starting up keeps the signal pending until it can handle it (see `start_shielded`).
    """
    for p in procs:
        if p.is_alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGINT)
    deadline = time.monotonic() + timeout
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
        if p.is_alive():
            p.kill()
            p.join(5)
