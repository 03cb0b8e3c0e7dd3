"""Search worker processes: each samples with its own seed, measures in its own profiler Worker and writes its
trials, under a trial cap that holds across processes and machines."""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from effscope.errors import EffscopeError, error_text
from effscope.search.space import Space
from effscope.search.storage import open_storage, sqlite_fast_commits, storage_cause, storage_error
from effscope.search.study import DASHBOARD_ATTR, make_sampler
from effscope.search.trial import SearchObjective

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

    import optuna

__all__ = ["TrialSlots", "WorkerArgs", "run_worker", "worker_process"]


@dataclass(frozen=True)
class WorkerArgs:
    space: Space
    url: str
    study_name: str
    worker_id: int
    device_name: str
    command: str
    heartbeat_s: int
    grace_s: int | None
    parent_pid: int
    predictor: str | None = None  # uid of a latency table (issue 6)
    device_identity: str | None = None  # this machine's CPU (study.device_identity_for): the cache reuses its Records


def run_worker(
    args: WorkerArgs, *, objective_hook: Callable[[SearchObjective], None] | None = None, linger: bool = True
) -> int:
    """One search worker: its own sampler seed, profiler Worker and quality process, until the trial cap.

    Args:
        linger: stop the child processes politely at the end (waits for them); False leaves them to exit on
            their own when this process exits (their pipes close), which is what a spawned worker does.

    Returns the number of trials this worker ran.

    Raises:
        StoreError: the study storage cannot be written (a full disk, a lost server); completed trials stay.
    """
    import optuna

    from effscope.profile.store import RecordStore
    from effscope.profile.worker import Worker

    # ERROR: Optuna logs an interrupted trial (Ctrl-C) with a traceback at WARNING; a real error still raises.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    storage = open_storage(args.url, heartbeat_s=args.heartbeat_s, grace_s=args.grace_s)
    sampler = make_sampler(args.space, args.space.seed + args.worker_id)
    study = optuna.load_study(study_name=args.study_name, storage=storage, sampler=sampler)
    slots = TrialSlots(study, storage, args.url, args.space.trials)
    if slots.counts()[0] >= slots.cap:
        return 0
    store = RecordStore(args.url)
    sqlite_fast_commits(store.engine)
    predictor = None
    if args.predictor is not None:
        from effscope.search.predictor import Predictor, load_table

        predictor = Predictor(load_table(store, args.predictor), args.space)
    objective = SearchObjective(
        args.space,
        store=store,
        device_name=args.device_name,
        device_identity=args.device_identity,
        study_name=args.study_name,
        command=args.command,
        measure=Worker(),
        predictor=predictor,
        dashboard=bool(storage.get_study_system_attrs(slots.study_id).get(DASHBOARD_ATTR)),
    )
    if objective_hook is not None:
        objective_hook(objective)
    objective.start()

    def orphaned() -> bool:
        return os.getppid() != args.parent_pid  # the coordinator is gone: finish this trial and stop

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna warns on enqueued presets outside a narrowed range
            while not orphaned():
                trial = slots.claim(stop=orphaned)
                if trial is None:
                    break
                try:
                    trial_id = slots.trial_id(trial)
                except BaseException:  # Ctrl-C between claiming and running: the trial must not stay RUNNING
                    with contextlib.suppress(Exception):
                        study.tell(trial, state=optuna.trial.TrialState.FAIL)
                    raise
                _run_trial(study, storage, trial, trial_id, objective)
    except KeyboardInterrupt:
        linger = True  # a child may be mid-job: let it finish quietly
    except BaseException as e:
        objective.close()
        cause = storage_cause(e) if isinstance(e, Exception) else None
        if cause is not None:  # a full disk, a lost server: one sentence, completed trials are stored
            raise storage_error(args.url, cause) from None
        raise
    if linger:  # (KeyboardInterrupt: the running trial is marked FAIL; completed ones are stored)
        objective.close()
    return len(objective.timings)


class TrialSlots:
    """The trial cap, exact across processes and machines: a trial starts only while the study holds fewer than
    `cap` completed + running trials, and the count and the start happen under one lock.

    The lock is an advisory lock on the database (PostgreSQL), or an flock on the SQLite file (SQLite's own locks
    are POSIX record locks, which an flock does not touch). Running trials count only once they have a heartbeat
    (the claimer records the first one under the lock), so a trial left RUNNING by an older, crashed process
    never blocks the cap; a dead worker's trial frees its slot once the heartbeat goes stale and it is failed.
    """

    LOCK_CLASS = 0x0EFF5C  # first key of the PostgreSQL advisory lock (the second is the study id)

    def __init__(
        self, study: optuna.Study, storage: optuna.storages.RDBStorage, url: str, cap: int, *, poll_s: float = 0.5
    ) -> None:
        from effscope.urls import sqlite_path

        self.study, self.storage, self.cap, self.poll_s = study, storage, cap, poll_s
        self.study_id = storage.get_study_id_from_name(study.study_name)
        self._sqlite = sqlite_path(url)
        self._stale_checked: float | None = None  # time.monotonic() of the last look for stale trials

    def _fail_stale(self) -> None:
        """Fail (and queue the retry of) the running trials whose heartbeat went stale, at most once per heartbeat
        interval: a trial goes stale after the grace period (3 heartbeats by default), so looking before every trial
        of a fast search (two queries each) finds nothing new; it is found at most one heartbeat later."""
        from optuna.storages import fail_stale_trials

        now = time.monotonic()
        if self._stale_checked is not None and now - self._stale_checked < (self.storage.get_heartbeat_interval() or 0):
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # experimental API; Optuna expects heartbeats under optimize() only
            fail_stale_trials(self.study)
        self._stale_checked = now

    def counts(self) -> tuple[int, int]:
        """(completed trials, running trials with a heartbeat) of the study."""
        import sqlalchemy as sa

        query = sa.text(
            "SELECT "
            "(SELECT COUNT(*) FROM trials WHERE study_id = :s AND state = 'COMPLETE'), "
            "(SELECT COUNT(*) FROM trials t JOIN trial_heartbeats h ON h.trial_id = t.trial_id "
            "WHERE t.study_id = :s AND t.state = 'RUNNING')"
        )
        with self.storage.engine.connect() as conn:
            complete, running = conn.execute(query, {"s": self.study_id}).one()
        return int(complete), int(running)

    def claim(self, stop: Callable[[], bool] = lambda: False) -> optuna.Trial | None:
        """Start the next trial (a queued one first, as Optuna's ask does), or return None once the cap is reached.

        While the remaining slots are held by running trials, wait (they may still fail and free a slot) unless
        `stop()` says otherwise.
        """
        from optuna.trial import TrialState

        while True:
            self._fail_stale()
            with self._lock():
                self._fail_orphans()
                complete, running = self.counts()
                if complete >= self.cap:
                    return None
                if complete + running < self.cap:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        trial = self.study.ask()
                    try:
                        self.storage.record_heartbeat(self.trial_id(trial))  # counted from now on
                    except BaseException:  # never leave a trial RUNNING that no heartbeat can expire
                        with contextlib.suppress(Exception):
                            self.study.tell(trial, state=TrialState.FAIL)
                        raise
                    return trial
            if stop():
                return None
            time.sleep(self.poll_s)

    def _fail_orphans(self) -> None:
        """Fail the RUNNING trials that never got a heartbeat. A claimer asks and records the first heartbeat under
        this lock, so seen under it such a trial is one whose claimer was stopped in between (Ctrl-C inside
        Optuna's ask, a kill): no heartbeat will ever expire it, and it would stay RUNNING for good."""
        import sqlalchemy as sa
        from optuna.trial import TrialState

        query = sa.text(
            "SELECT t.trial_id FROM trials t LEFT JOIN trial_heartbeats h ON h.trial_id = t.trial_id "
            "WHERE t.study_id = :s AND t.state = 'RUNNING' AND h.trial_id IS NULL"
        )
        with self.storage.engine.connect() as conn:
            orphans = [row[0] for row in conn.execute(query, {"s": self.study_id})]
        for trial_id in orphans:
            with contextlib.suppress(Exception):  # another process may have finished it meanwhile
                self.storage.set_trial_state_values(trial_id, TrialState.FAIL)

    def trial_id(self, trial: optuna.Trial) -> int:
        """The storage's id of a trial this process asked for (Optuna's cache knows it: no query)."""
        return trial.storage.get_trial_id_from_study_id_trial_number(self.study_id, trial.number)

    @contextlib.contextmanager
    def _lock(self):
        engine = self.storage.engine
        if engine.dialect.name == "postgresql":
            import sqlalchemy as sa

            key = {"a": self.LOCK_CLASS, "b": self.study_id}
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT pg_advisory_lock(:a, :b)"), key)
                try:
                    yield
                finally:
                    conn.execute(sa.text("SELECT pg_advisory_unlock(:a, :b)"), key)
                    conn.commit()
            return
        if self._sqlite is None:  # another database: no lock (the cap may overshoot by workers - 1)
            yield
            return
        import fcntl

        fd = os.open(self._sqlite, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the flock


def _run_trial(
    study: optuna.Study,
    storage: optuna.storages.RDBStorage,
    trial: optuna.Trial,
    trial_id: int,
    objective: SearchObjective,
) -> None:
    """Run one claimed trial with a heartbeat and tell its result; an objective that raises fails the trial."""
    from optuna.trial import TrialState

    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(storage.get_heartbeat_interval()):
            with contextlib.suppress(Exception):  # a missed beat is retried; a lost database ends the trial anyway
                storage.record_heartbeat(trial_id)

    thread = threading.Thread(target=beat, name="effscope-heartbeat", daemon=True)
    thread.start()
    try:
        values = objective(trial)
    except BaseException:  # KeyboardInterrupt included: the trial is failed, completed ones stay
        stop.set()
        thread.join()
        with contextlib.suppress(Exception):  # the storage itself may be what failed: keep the first error
            study.tell(trial, state=TrialState.FAIL)
        raise
    stop.set()
    thread.join()
    _tell(study, trial, values)


def _tell(study: optuna.Study, trial: optuna.Trial, values: float | tuple[float, ...]) -> None:
    """`study.tell(trial, values)` without reading the finished trial back for a return value nobody uses (one
    storage read, 6 queries, per trial): Optuna's `_tell_with_warning`, which is all `Study.tell` runs before that
    read; `study.tell` itself where an Optuna release lacks it or changed its parameters."""
    tell = _tell_without_read_back()
    if tell is None:
        study.tell(trial, values)
    else:
        tell(study=study, trial=trial, value_or_values=values)


@functools.cache
def _tell_without_read_back() -> Callable[..., object] | None:
    import inspect

    try:
        from optuna.study._tell import _tell_with_warning
    except ImportError:
        return None
    wanted = {"study", "trial", "value_or_values", "state", "skip_if_finished", "suppress_warning"}
    return _tell_with_warning if set(inspect.signature(_tell_with_warning).parameters) == wanted else None


def worker_process(args: WorkerArgs, report: Connection) -> None:
    """Entry point of a spawned worker: its own session, so a terminal Ctrl-C reaches the coordinator only.

    A worker that fails sends one sentence to the coordinator on `report` and exits non-zero: 2 for an
    EffscopeError (a full disk, a lost database), 1 for anything else (a bug: its traceback is printed too).
    """
    import sys
    import traceback

    os.setsid()
    code = 0
    try:
        # Started shielded (see start_shielded): a Ctrl-C or the coordinator's SIGINT that came meanwhile is
        # delivered here, where it stops the worker quietly.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        run_worker(args, linger=False)
    except KeyboardInterrupt:  # stopped before its first trial began: nothing to clean up
        pass
    except EffscopeError as e:
        code = _report(report, str(e), 2)
    except Exception as e:
        traceback.print_exc()
        code = _report(report, error_text(e), 1)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # the idle children see their pipes close and exit; nothing waits for their teardown


def _report(conn: Connection, text: str, code: int) -> int:
    with contextlib.suppress(OSError):
        conn.send(text)
    return code
