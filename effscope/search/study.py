"""The search: an Optuna study whose objective measures each design with the profiler on the target device.

One coordinator process creates the study (and the database) once, enqueues the family's published presets,
then starts N worker processes; each worker samples with its own seed (base + worker id), measures in its own
profiler Worker (a separate process: the sampler never shares a process with timing), computes quality in a
separate quality process, and writes the trial. Latency, memory and validity are trial-level constraints
(docs/search.md#feasibility); invalid, out-of-memory and over-budget designs COMPLETE with a violation and a reason.

Storage is one database for the study and the Records (an SQLite file by default, PostgreSQL for many
machines); heartbeats fail and retry the trial of a killed worker (docs/search.md#storage), and re-running resumes.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import socket
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from effscope.errors import EffscopeError, KnobError, SpecError, UnknownNameError
from effscope.knobs import to_jsonable
from effscope.search.objectives import OBJECTIVES, QualityError, label_for
from effscope.search.space import ZOO_PARAM, Space

if TYPE_CHECKING:
    import optuna

    from effscope.profile.record import Record
    from effscope.profile.store import RecordStore

__all__ = [
    "SearchProgress",
    "SearchResult",
    "SearchSummary",
    "TrialSlots",
    "WorkerFailure",
    "default_study_name",
    "open_storage",
    "prepare_study",
    "run_search",
    "summarize",
]

HEARTBEAT_S = 10
MAX_SEED = 2**32 - 1  # numpy's seed range, which Optuna's samplers use
MAX_RETRY = 2  # a design that kills its worker twice is not tried a third time


# --------------------------------------------------------------------------------------------------- storage


def open_storage(url: str, *, heartbeat_s: int | None = None, grace_s: int | None = None) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage on `url`; with a heartbeat, stale trials of dead workers are failed and retried.

    Raises:
        StoreError: the database cannot be reached (one sentence naming it).
    """
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    from effscope.profile.store import StoreError
    from effscope.urls import mask_command, mask_url

    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}  # concurrent writers wait instead of failing
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            if heartbeat_s:
                kwargs.update(
                    heartbeat_interval=int(heartbeat_s),
                    grace_period=int(grace_s or 3 * heartbeat_s),
                    heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY),
                )
            storage = _create_rdb_storage(RDBStorage, url, kwargs)
        _sqlite_fast_commits(storage.engine)
        return storage
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise StoreError(f"cannot open the study storage '{mask_url(url)}': {mask_command(first)}") from None


def _create_rdb_storage(rdb_storage, url: str, kwargs: dict[str, Any], attempts: int = 5):
    """RDBStorage(url), retried when another process is creating the same schema at that moment.

    Optuna creates its tables on first connection without a lock; two processes doing it at once (a reader
    beside a starting search, machines starting together on one PostgreSQL) collide on alembic_version.
    """
    for attempt in range(attempts):
        try:
            return rdb_storage(url, **kwargs)
        except Exception as e:
            text = str(e)
            racing = "alembic_version" in text or "already exists" in text
            if not racing or attempt == attempts - 1:
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


def storage_url(storage: str | None) -> str:
    """The database URL of a study: the one rule of `effscope.urls.database_url` (a path means an SQLite file)."""
    from effscope.urls import database_url

    return database_url(storage)


def device_name_for(workload) -> str:
    """The device name a Record's environment will carry (the cache key's device), without timing anything.

    CPU: read here. CUDA: asked in a spawned process, so the coordinator never creates a CUDA context.
    """
    if workload.device == "cpu":
        from effscope.profile.env import cpu_info

        return str(cpu_info()["cpu_model"])
    from effscope.search.objectives import QualityError, QualityProcess

    proc = QualityProcess()
    try:
        return proc.call(_cuda_device_name, {"device": workload.device}, timeout=120)
    except QualityError as e:
        raise SpecError(f"--device {workload.device}: {e}") from None
    finally:
        proc.close()


def _cuda_device_name(device: str) -> str:
    import torch

    if not torch.cuda.is_available():
        raise EffscopeError(
            f"device '{device}' was asked for, but this torch ({torch.__version__}) sees no CUDA device; "
            "use --device cpu or install a CUDA build of torch"
        )
    index = torch.device(device).index
    return torch.cuda.get_device_properties(index if index is not None else 0).name


# --------------------------------------------------------------------------------------------------- the study


def default_study_name(space: Space) -> str:
    """One study per space and device unless --study says otherwise (so re-running the command resumes)."""
    return f"{space.name}-{space.workload.device.replace(':', '')}"


def objectives_attr(space: Space) -> list[dict[str, Any]]:
    q = OBJECTIVES[space.quality]
    out = [
        {
            "name": q.name,
            "label": label_for(q.name, space.train),
            "direction": space.direction,
            "is_proxy": q.is_proxy,
        }
    ]
    if space.latency_objective:
        out.append(
            {
                "name": "latency_ms_p50",
                "label": "median latency (ms, measured)",
                "direction": "minimize",
                "is_proxy": False,
            }
        )
    return out


def prepare_study(
    space: Space, storage, study_name: str, *, device_name: str, command: str
) -> tuple[optuna.Study, bool, list[str]]:
    """Create the study once (attrs, presets enqueued) or check that an existing one is the same search.

    Returns:
        (study, created, notes): notes say which presets were enqueued or left out and why.

    Raises:
        SpecError: a study of that name exists with another space, workload, objective or budget.
    """
    import optuna

    from effscope import __version__
    from effscope.urls import mask_command

    signature = space.signature()
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
        created = False
    except KeyError:
        study = optuna.create_study(
            study_name=study_name, storage=storage, directions=space.directions, load_if_exists=True
        )
        created = True
    study_id = storage.get_study_id_from_name(study_name)
    stored = storage.get_study_system_attrs(study_id).get("effscope:signature")
    if stored is not None and stored != signature:
        diff = sorted(k for k in signature if stored.get(k) != signature[k])
        raise SpecError(
            f"study '{study_name}' exists with other settings ({', '.join(diff) or 'definition'} differ); pass --study "
            "NAME to start another study, or run the same space and options to resume it"
        )
    theirs = study.user_attrs.get("device_name")
    if stored is not None and theirs is not None and theirs != device_name:
        raise SpecError(
            f"study '{study_name}' is measured on '{theirs}' but this machine has '{device_name}'; latencies from "
            "different devices do not belong in one study: pass --study NAME for this device"
        )
    if [d.name.lower() for d in study.directions] != space.directions:
        raise SpecError(f"study '{study_name}' has directions {study.directions}; pass --study NAME for a new one")
    notes: list[str] = []
    if stored is None:
        budgets = [b.as_dict() for b in space.budgets]
        attrs = {
            "effscope_space": {"name": space.name, "path": space.path, "toml": space.text},
            "target": space.target,
            "kind": space.kind,
            "workload": space.workload.as_dict(),
            "device_name": device_name,
            "objectives": objectives_attr(space),
            "budgets": budgets,
            "command": mask_command(command),
            "effscope_version": __version__,
        }
        for key, value in attrs.items():
            study.set_user_attr(key, value)
        notes += enqueue_presets(study, space)
        # Last: marks the study as prepared (a run stopped before this point prepares it again, idempotently).
        storage.set_study_system_attr(study_id, "effscope:signature", signature)
    return study, created, notes


def enqueue_presets(study: optuna.Study, space: Space) -> list[str]:
    """Enqueue each published design once; one note per preset that lies outside the narrowed space.

    "Once" is by preset name, not by parameters (Optuna's skip_if_exists): presets that differ only in knobs the
    space pins or narrows away have equal parameters, and each must still be measured.
    """
    notes = []
    existing = {t.user_attrs.get("preset") for t in study.get_trials(deepcopy=False)}
    for ts, name, config in space.presets():
        params, outside = ts.preset_params(config)
        if len(space.targets) > 1:
            params = {ZOO_PARAM: ts.name, **params}
        if name in existing:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            study.enqueue_trial(params, user_attrs={"preset": name})
        if outside:
            notes.append(f"preset {name} lies outside the narrowed space ({', '.join(outside)}); measured as published")
    return notes


def make_sampler(space: Space, seed: int) -> optuna.samplers.BaseSampler:
    """The space's sampler: TPE (multivariate, grouped for conditional spaces) by default."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if space.sampler == "tpe":
            # group: the chosen block (or a preset outside a narrowed categorical) decides which parameters exist
            kwargs: dict[str, Any] = {"multivariate": True, "group": True, "seed": seed, "constant_liar": True}
            if space.n_startup_trials is not None:
                kwargs["n_startup_trials"] = space.n_startup_trials
            return optuna.samplers.TPESampler(**kwargs)
        if space.sampler == "nsga2":
            return optuna.samplers.NSGAIISampler(seed=seed)
        if space.sampler == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        try:
            import scipy  # noqa: F401
        except ImportError:
            raise SpecError("sampler 'gp' needs scipy (pip install scipy); use tpe or nsga2 otherwise") from None
        return optuna.samplers.GPSampler(seed=seed)


# --------------------------------------------------------------------------------------------------- objective


def _worst(direction: str) -> float:
    return -math.inf if direction == "maximize" else math.inf


def _fastest_third(record: Record) -> float | None:
    samples = sorted(record.details.get("latency_samples_ms") or [])
    return samples[len(samples) // 3] if samples else None


class SearchObjective:
    """The Optuna objective: sample a design, measure it (or reuse its cached Record), score it, constrain it.

    Args:
        space: the search space (overrides applied).
        store: the Record store (same database as the study).
        device_name: the cache key's device.
        study_name: copied into each Record.
        command: the command line, copied into each Record.
        measure: a profiler Worker (one per search worker process).
        quality: a QualityProcess for computed objectives (None: created on first use).
        predictor: a latency Predictor; a candidate predicted over budget x (1 + 2 x MAPE) is not measured
            (except a seeded ~5 % spot check), every other candidate is.
    """

    def __init__(
        self,
        space: Space,
        *,
        store: RecordStore,
        device_name: str,
        study_name: str,
        command: str,
        measure,
        quality=None,
        predictor=None,
    ) -> None:
        self.space = space
        self.predictor = predictor  # effscope.search.predictor.Predictor: rejects only (issue 6)
        self.store = store
        self.device_name = device_name
        self.study_name = study_name
        self.command = command
        self.measure = measure
        self._quality = quality
        self.worker_tag = f"{socket.gethostname()}:{os.getpid()}"
        self._preset: str | None = None
        self.timings: list[dict[str, float]] = []  # per trial: measure_s, quality_s (benchmarks read these)

    @property
    def options(self):
        from effscope.profile.measure import Options

        m = self.space.measure
        margin = m["abort_margin"]
        return Options(
            count=True,
            latency=True,
            throughput=m["throughput"],
            reference=m["reference"],
            max_time_s=m["max_time_s"],
            window_s=m["window_s"],
            abort_above_ms=self.space.latency_budget.limit * margin if margin else None,
            timeout_s=m["timeout_s"],
            # CPU peak RSS is honest only in a fresh process (seconds per design); reuse it unless it is budgeted.
            fresh_process=self.space.workload.device == "cpu" and self.space.memory_budget is not None,
        )

    def quality_process(self):
        from effscope.search.objectives import QualityProcess

        if self._quality is None:
            self._quality = QualityProcess(threads=self.space.workload.threads)
        return self._quality

    def close(self) -> None:
        if self._quality is not None:
            self._quality.close()
        self.measure.close()

    # ---------------------------------------------------------------------------------------------- one trial

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, float]:
        from effscope.profile.record import canonical_key
        from effscope.profile.target import resolve_target

        space = self.space
        timing = {"measure_s": 0.0, "quality_s": 0.0}
        self.timings.append(timing)
        trial.set_user_attr("worker", self.worker_tag)  # which machine/process runs it, visible while it runs
        preset = trial.user_attrs.get("preset")
        self._preset = preset
        ts, overrides = space.suggest(trial, preset)
        attrs: dict[str, Any] = {}
        try:
            if preset is not None and preset in ts.presets:
                # A published design is measured as published (its params were enqueued from the same values).
                name = preset if ts.kind == "model" else ts.name
                target = resolve_target(name, ts.presets[preset].knob_values())
            else:
                target = resolve_target(ts.name, overrides)
        except (KnobError, UnknownNameError, SpecError) as e:
            attrs.update(knobs=to_jsonable({**ts.base.knob_values(), **overrides}), status="invalid", reason=str(e))
            return self._finish(trial, attrs, quality=None, record=None, valid=False)
        attrs["knobs"] = to_jsonable(target.knobs())

        key = canonical_key(target.name, target.knobs(), space.workload, self.device_name)
        record = self._cached(key)
        t0 = time.perf_counter()
        if record is not None:
            attrs["status"] = "cached"
        elif self.predictor is not None and self._screen(trial, ts, target, attrs):
            return self._rejected(trial, attrs)
        else:
            from effscope.profile.run import Plan, profile

            provenance = {"study": self.study_name, "trial": trial.number, "key": key, "command": self.command}
            record = profile(
                [Plan(target, space.workload)],
                self.options,
                store=self.store,
                worker=self.measure,
                provenance=provenance,
            )[0]
            attrs["status"] = "measured"
        timing["measure_s"] = time.perf_counter() - t0
        attrs["record_uid"] = record.uid
        attrs["flags"] = list(record.flags)
        if record.status != "ok":
            attrs.update(status="failed", reason=record.error or "the measurement failed")
            return self._finish(trial, attrs, quality=None, record=record, valid=False)
        aborted = "aborted-over-budget" in record.flags
        if aborted:
            lat = record.latency.get("latency_ms_p50")
            limit = self.options.abort_above_ms
            attrs.update(
                status="aborted-over-budget",
                reason=(
                    f"stopped after {record.latency.get('latency_n')} timed runs: the fastest third ran above "
                    f"{limit:g} ms (budget {space.latency_budget.limit:g} ms x {space.measure['abort_margin']:g}); "
                    f"median so far {lat:.3g} ms"
                ),
            )

        t0 = time.perf_counter()
        quality, why = self._quality_of(trial, target, record, skip=aborted)
        timing["quality_s"] = time.perf_counter() - t0
        if why is not None:
            attrs["reason"] = f"{attrs['reason']}; {why}" if "reason" in attrs else why
        return self._finish(trial, attrs, quality=quality, record=record, valid=quality is not None or aborted)

    def _screen(self, trial, ts, target, attrs: dict[str, Any]) -> bool:
        """Predict; True when the candidate is rejected unmeasured (a spot-checked rejection is measured)."""
        from effscope.search.predictor import reject_rule, spot_check

        try:
            predicted = self.predictor.predict(ts, target.config)
        except EffscopeError:
            predicted = None  # no prediction: measure
        if predicted is None:
            return False
        attrs["predicted_latency_ms"] = predicted
        if not reject_rule(predicted, self.space.latency_budget.limit, self.predictor.mape):
            return False
        if spot_check(self.space.seed, trial.number):
            attrs["spot_check"] = True  # rejected by the predictor, measured anyway to count false rejections
            return False
        return True

    def _rejected(self, trial, attrs: dict[str, Any]):
        """Complete a predicted-infeasible trial: its predicted violation, no measurement, no quality."""
        space, p = self.space, attrs["predicted_latency_ms"]
        b = space.latency_budget
        attrs.update(
            status="predicted-infeasible",
            reason=(
                f"predicted {b.statistic} {p:.3g} ms > {b.limit:g} ms x {self.predictor.margin:.3g} (budget x "
                f"(1 + 2 x MAPE {self.predictor.mape:.3f})) by latency table '{self.predictor.table.name}'; "
                "not measured"
            ),
            record_uid=None,
            flags=[],
            quality=None,
            quality_name=space.quality,
        )
        if self._preset is not None:
            attrs["preset"] = self._preset
        write_trial(trial, attrs, {"latency": p / b.limit - 1.0, "memory": 0.0, "valid": 0.0})
        q = _worst(space.direction)
        return (q, math.inf) if space.latency_objective else q

    def _cached(self, key: str) -> Record | None:
        record = self.store.latest(key)
        if record is None:
            return None
        if "aborted-over-budget" in record.flags:
            # A partial measurement stays valid only while it is still clearly over the current budget.
            limit = self.options.abort_above_ms
            fastest = _fastest_third(record)
            if limit is None or fastest is None or fastest <= limit:
                return None
        return record

    def _quality_of(self, trial, target, record: Record, *, skip: bool) -> tuple[float | None, str | None]:
        q = OBJECTIVES[self.space.quality]
        if q.source == "record":
            value = record.counts.get(q.name)
            if value is None:
                return None, f"{q.name} is missing from the measurement"
            return float(value), None
        if skip:
            return None, f"{q.name} not computed: the design is over budget"
        reused = record.study != self.study_name or record.trial != trial.number
        for t in trial.study.get_trials(deepcopy=False, states=_complete()) if reused else ():
            if (
                t.user_attrs.get("record_uid") == record.uid
                and t.user_attrs.get("quality_name") == q.name
                and isinstance(t.user_attrs.get("quality"), int | float)
            ):
                return float(t.user_attrs["quality"]), None  # same design, same settings: same value
        from effscope.search.objectives import evaluate

        kwargs = {
            "target_name": target.name,
            "knobs": target.knobs(),
            "names": [q.name],
            "workload": self.space.workload.as_dict(),
            "proxy": self.space.proxy,
            "train": self.space.train,
            "data": self.space.data,
        }
        try:
            out = self.quality_process().call(evaluate, kwargs, timeout=self.space.measure["timeout_s"] * 4)
        except QualityError as e:
            return None, f"{q.name}: {e}"
        value = out.get(q.name)
        if isinstance(value, str):
            return None, f"{q.name}: {value}"
        return float(value), None

    def _finish(self, trial, attrs: dict[str, Any], *, quality: float | None, record: Record | None, valid: bool):
        space = self.space
        flat = record.flat() if record is not None else {}
        peak = flat.get("peak_mem_bytes", flat.get("peak_rss_bytes"))
        stat = flat.get(space.latency_budget.statistic)
        attrs.setdefault("record_uid", None)
        attrs.setdefault("flags", [])
        for k in ("latency_ms_p50", "latency_ms_p90", "latency_ms_iqr", "params", "macs", "throughput_img_s"):
            attrs[k] = flat.get(k)
        attrs[space.latency_budget.statistic] = stat  # the budgeted statistic, whichever it is
        attrs["peak_mem_bytes"] = peak
        attrs["quality"] = quality
        attrs["quality_name"] = space.quality
        if self._preset is not None:
            attrs["preset"] = self._preset
        constraints = {
            "latency": stat / space.latency_budget.limit - 1.0 if stat is not None else 0.0,
            "memory": peak / space.memory_budget.limit - 1.0 if space.memory_budget and peak is not None else 0.0,
            "valid": 0.0 if valid else 1.0,
        }
        write_trial(trial, attrs, constraints)
        q = quality if quality is not None else _worst(space.direction)
        if not space.latency_objective:
            return q
        lat = flat.get("latency_ms_p50")
        return q, lat if lat is not None else math.inf


def _complete():
    from optuna.trial import TrialState

    return (TrialState.COMPLETE,)


def write_trial(trial, attrs: dict[str, Any], constraints: dict[str, float]) -> None:
    """Store a trial's constraints (in the contract's order) and user attrs, in one transaction where possible.

    Optuna's public API commits each attribute on its own (about 20 commits a trial); on an RDB storage they go in
    one session instead, which keeps the storage overhead a small fraction of a trial. The public API is the
    fallback, with the same stored result.
    """
    backend = getattr(trial.storage, "_backend", trial.storage)
    system = {f"constraints:{key}": constraints[key] for key in ("latency", "memory", "valid")}
    try:
        _write_rdb(backend, trial._trial_id, system, attrs)
        return
    except _NoFastPath:
        pass
    for key in ("latency", "memory", "valid"):
        trial.set_constraint(key, constraints[key])
    for key, value in attrs.items():
        trial.set_user_attr(key, value)


class _NoFastPath(Exception):
    """The storage is not one `_write_rdb` knows; the public API is used instead."""


def _write_rdb(backend, trial_id: int, system: dict[str, Any], user: dict[str, Any]) -> None:
    """Upsert a trial's system and user attrs with one statement each, in one transaction (SQLite, PostgreSQL)."""
    import json

    try:
        from optuna.storages import RDBStorage
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session
        from sqlalchemy.dialects import postgresql, sqlite
    except ImportError:
        raise _NoFastPath from None
    if not isinstance(backend, RDBStorage) or backend.engine.name not in ("sqlite", "postgresql"):
        raise _NoFastPath
    insert = sqlite.insert if backend.engine.name == "sqlite" else postgresql.insert
    with _create_scoped_session(backend.scoped_session) as session:
        trial = models.TrialModel.find_or_raise_by_id(trial_id, session)
        backend.check_trial_is_updatable(trial_id, trial.state)
        for model, values in ((models.TrialSystemAttributeModel, system), (models.TrialUserAttributeModel, user)):
            rows = [{"trial_id": trial_id, "key": k, "value_json": json.dumps(v)} for k, v in values.items()]
            stmt = insert(model.__table__).values(rows)
            stmt = stmt.on_conflict_do_update(
                index_elements=[model.__table__.c.trial_id, model.__table__.c.key],
                set_={"value_json": stmt.excluded.value_json},
            )
            session.execute(stmt)


def _sqlite_fast_commits(engine) -> None:
    """WAL with synchronous=NORMAL: a commit is not fsynced (a killed process loses nothing, a power cut may lose the
    last commits but never corrupts the file); fsync per commit would cost ~10 ms per attribute on some disks."""
    import sqlalchemy as sa

    if engine.dialect.name != "sqlite":
        return

    def pragmas(dbapi_conn, _record) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=60000")
        cur.close()

    sa.event.listen(engine, "connect", pragmas)
    engine.dispose()  # connections opened before the listener get the pragmas on reconnect


# --------------------------------------------------------------------------------------------------- workers


@dataclass(frozen=True)
class _WorkerArgs:
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


def run_worker(
    args: _WorkerArgs, *, objective_hook: Callable[[SearchObjective], None] | None = None, linger: bool = True
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
    _sqlite_fast_commits(store.engine)
    predictor = None
    if args.predictor is not None:
        from effscope.search.predictor import Predictor, load_table

        predictor = Predictor(load_table(store, args.predictor), args.space)
    objective = SearchObjective(
        args.space,
        store=store,
        device_name=args.device_name,
        study_name=args.study_name,
        command=args.command,
        measure=Worker(),
        predictor=predictor,
    )
    if objective_hook is not None:
        objective_hook(objective)

    def orphaned() -> bool:
        return os.getppid() != args.parent_pid  # the coordinator is gone: finish this trial and stop

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna warns on enqueued presets outside a narrowed range
            while not orphaned():
                trial = slots.claim(stop=orphaned)
                if trial is None:
                    break
                _run_trial(study, storage, trial, slots.trial_id(trial), objective)
    except KeyboardInterrupt:
        linger = True  # a child may be mid-job: let it finish quietly
    except BaseException as e:
        objective.close()
        cause = _storage_cause(e) if isinstance(e, Exception) else None
        if cause is not None:  # a full disk, a lost server: one sentence, completed trials are stored
            raise _storage_error(args.url, cause) from None
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

    def __init__(self, study, storage, url: str, cap: int, *, poll_s: float = 0.5) -> None:
        from effscope.urls import sqlite_path

        self.study, self.storage, self.cap, self.poll_s = study, storage, cap, poll_s
        self.study_id = storage.get_study_id_from_name(study.study_name)
        self._sqlite = sqlite_path(url)

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

    def claim(self, stop: Callable[[], bool] = lambda: False):
        """Start the next trial (a queued one first, as Optuna's ask does), or return None once the cap is reached.

        While the remaining slots are held by running trials, wait (they may still fail and free a slot) unless
        `stop()` says otherwise.
        """
        from optuna.storages import fail_stale_trials
        from optuna.trial import TrialState

        while True:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # experimental API; Optuna expects heartbeats under optimize() only
                fail_stale_trials(self.study)
            with self._lock():
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

    def trial_id(self, trial) -> int:
        return self.storage.get_trial_id_from_study_id_trial_number(self.study_id, trial.number)

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


def _run_trial(study, storage, trial, trial_id: int, objective) -> None:
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
    study.tell(trial, values)


def _storage_cause(e: BaseException) -> BaseException | None:
    """The database or OS error behind `e` (Optuna wraps a failed commit in StorageInternalError), or None."""
    import sqlalchemy.exc
    from optuna.exceptions import StorageInternalError

    while e is not None:
        if isinstance(e, sqlalchemy.exc.OperationalError | sqlalchemy.exc.DatabaseError | OSError):
            return e
        e = e.__cause__ if isinstance(e, StorageInternalError) else None
    return None


def _storage_error(url: str, e: BaseException) -> EffscopeError:
    from effscope.profile.store import StoreError
    from effscope.urls import mask_command, mask_url

    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return StoreError(f"cannot write the study storage '{mask_url(url)}': {mask_command(text)}")


def _worker_process(args: _WorkerArgs, report) -> None:
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
        text = str(e).strip().splitlines()[0] if str(e).strip() else ""
        code = _report(report, f"{type(e).__name__}: {text}" if text else type(e).__name__, 1)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # the idle children see their pipes close and exit; nothing waits for their teardown


def _report(conn, text: str, code: int) -> int:
    with contextlib.suppress(OSError):
        conn.send(text)
    return code


# --------------------------------------------------------------------------------------------------- results


@dataclass
class SearchProgress:
    """What the coordinator reports while workers run."""

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


@dataclass
class SearchSummary:
    """The data of a finished (or interrupted) search: counts, the feasible front and the presets' positions.

    `trials` counts COMPLETE trials only and `counts` splits them by effscope status (measured, cached, invalid,
    ...); failed and still-running trials are counted apart and never as completed.

    Rows are plain dicts: trial, preset, status, quality, latency_ms_p50, latency_ms_p90, params, macs, knobs,
    feasible, on_front, dominated_by.
    """

    quality_name: str
    quality_label: str
    directions: list[str]
    counts: dict[str, int]
    trials: int
    feasible: int
    front: list[dict[str, Any]]
    presets: list[dict[str, Any]]
    slices: list[dict[str, Any]]
    budget: dict[str, Any]
    failed: int = 0
    running: int = 0


@dataclass
class SearchResult:
    """What `run_search` returns."""

    study_name: str
    storage_url: str
    created: bool
    summary: SearchSummary
    notes: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0
    failures: list[WorkerFailure] = field(default_factory=list)


@dataclass(frozen=True)
class WorkerFailure:
    """A worker process that ended before the search was done.

    cause: "error" (an EffscopeError such as an unwritable database: `reason` is its sentence), "crash" (any other
    exception, a bug: its traceback went to stderr) or "killed" (a signal).
    """

    worker: str
    cause: str
    reason: str


def _row(t) -> dict[str, Any]:
    a = t.user_attrs
    return {
        **{k: v for k, v in a.items() if k.startswith("latency_ms_")},
        "trial": t.number,
        "preset": a.get("preset"),
        "status": a.get("status"),
        "quality": a.get("quality"),
        "latency_ms_p50": a.get("latency_ms_p50"),
        "latency_ms_p90": a.get("latency_ms_p90"),
        "params": a.get("params"),
        "macs": a.get("macs"),
        "knobs": a.get("knobs", {}),
        "block": t.params.get(ZOO_PARAM),
        "reason": a.get("reason"),
        "feasible": is_feasible(t),
        "violations": {k: v for k, v in t.constraints.items() if v > 0},
        "values": list(t.values or []),
    }


def is_feasible(t) -> bool:
    """All constraints <= 0; a completed trial without constraints is not an effscope measurement."""
    c = t.constraints
    return bool(c) and all(v <= 0.0 for v in c.values()) and t.values is not None and all(map(math.isfinite, t.values))


def _dominates(a: Sequence[float], b: Sequence[float], directions: Sequence[str]) -> bool:
    better = False
    for x, y, d in zip(a, b, directions, strict=True):
        if d == "minimize":
            x, y = -x, -y
        if x < y:
            return False
        if x > y:
            better = True
    return better


def pareto(rows: list[dict[str, Any]], directions: Sequence[str]) -> list[dict[str, Any]]:
    """Rows not dominated by another row (identical values all stay)."""
    return [r for r in rows if not any(_dominates(o["values"], r["values"], directions) for o in rows if o is not r)]


def _unique(front: list[dict[str, Any]], directions: Sequence[str]) -> list[dict[str, Any]]:
    """Front rows by latency (2 objectives), one per design (a cached repeat shares its values)."""
    seen, unique = set(), []
    for r in sorted(front, key=lambda r: (r["values"][-1] if len(directions) > 1 else 0, r["trial"])):
        k = repr(sorted(r["knobs"].items())) + str(r["block"])
        if k not in seen:
            seen.add(k)
            unique.append(r)
    return unique


def summarize(trials, space_info: dict[str, Any]) -> SearchSummary:
    """Counts, the feasible Pareto front and the presets' positions, from stored trials (pure: no storage)."""
    from optuna.trial import TrialState

    directions = [o["direction"] for o in space_info["objectives"]]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    counts: dict[str, int] = {}
    for t in complete:
        s = t.user_attrs.get("status", "unknown")
        counts[s] = counts.get(s, 0) + 1
    rows = [_row(t) for t in complete]
    feasible = [r for r in rows if r["feasible"]]
    front = pareto(feasible, directions)
    unique = _unique(front, directions)
    if len(directions) == 1:
        unique.sort(key=lambda r: r["values"][0], reverse=directions[0] == "maximize")
    front_ids = {r["trial"] for r in front}
    presets = []
    for r in rows:
        if r["preset"] is None:
            continue
        r = dict(r, on_front=r["trial"] in front_ids)
        r["dominated_by"] = next(
            (f["trial"] for f in unique if r["feasible"] and _dominates(f["values"], r["values"], directions)), None
        )
        presets.append(r)
    budgets = [b for b in space_info["budgets"] if b["name"] == "latency"]
    loosest = max(budgets, key=lambda b: b["limit"])
    slices = []
    for b in sorted(budgets, key=lambda b: b["limit"]):
        under = [r for r in feasible if r.get(b["statistic"]) is not None and r[b["statistic"]] <= b["limit"]]
        best = None
        if under:
            best = max(under, key=lambda r: r["values"][0] if directions[0] == "maximize" else -r["values"][0])
        slices.append({"limit": b["limit"], "statistic": b["statistic"], "feasible": len(under), "best": best})
    return SearchSummary(
        quality_name=space_info["objectives"][0]["name"],
        quality_label=space_info["objectives"][0]["label"],
        directions=directions,
        counts=counts,
        trials=len(complete),
        failed=sum(1 for t in trials if t.state == TrialState.FAIL),
        running=sum(1 for t in trials if t.state == TrialState.RUNNING),
        feasible=len(feasible),
        front=unique,
        presets=presets,
        slices=slices,
        budget=loosest,
    )


def _progress(study, space: Space, started: float, procs) -> SearchProgress:
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    rows = [_row(t) for t in complete if is_feasible(t)]
    front = _unique(pareto(rows, space.directions), space.directions)
    best = None
    if rows:
        sign = 1 if space.direction == "maximize" else -1
        best = max(rows, key=lambda r: sign * r["values"][0])
    return SearchProgress(
        done=len(complete),
        running=sum(1 for t in trials if t.state == TrialState.RUNNING),
        failed=sum(1 for t in trials if t.state == TrialState.FAIL),
        feasible=len(rows),
        cap=space.trials,
        front_size=len(front),
        best=best,
        elapsed_s=time.monotonic() - started,
        workers_alive=sum(1 for p in procs if p.is_alive()),
        worker_pids=[p.pid for p in procs if p.is_alive()],
    )


def study_info(study) -> dict[str, Any]:
    return {"objectives": study.user_attrs["objectives"], "budgets": study.user_attrs["budgets"]}


# --------------------------------------------------------------------------------------------------- coordinator


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
    if heartbeat_s < 1:
        raise SpecError(f"the heartbeat must be >= 1 s, but got {heartbeat_s}")
    if not 0 <= space.seed <= MAX_SEED - (workers - 1):
        raise SpecError(
            f"the sampler seed (--seed, or [search] seed in the space) must be an integer in "
            f"[0, {MAX_SEED - (workers - 1)}] (worker i samples with seed + i; samplers take 0 to 2**32 - 1), "
            f"but got {space.seed}"
        )
    make_sampler(space, space.seed)  # a sampler that cannot start (gp without scipy) fails here, not in a worker
    if space.quality == "train" and not space.data:
        raise SpecError("quality 'train' needs --data DIR (an ImageFolder: root/<class>/<image>)")
    if space.data:
        from effscope.search.data import open_imagefolder

        open_imagefolder(space.data)
    started = time.monotonic()
    device_name = device_name_for(space.workload)
    url = storage_url(storage)
    RecordStore(url)  # creates the Record table (and an SQLite file) before any worker starts
    table = None
    if predictor is not None:  # checked before the study exists: a bad name leaves no empty study behind
        from effscope.search.predictor import check_compatible, load_table

        table = load_table(RecordStore(url), predictor)
        check_compatible(table, space, device_name)
    optuna_storage = open_storage(url)
    name = study_name or default_study_name(space)
    study, created, notes = prepare_study(space, optuna_storage, name, device_name=device_name, command=command)
    if table is not None:
        study.set_user_attr("predictor", table.summary())
    if space.workload.device == "cpu" and workers > 1 and not space.workload.threads:
        notes.append(f"{workers} workers time on one CPU; set [workload] threads so they do not oversubscribe it")

    ctx = mp.get_context("spawn")
    procs, reports = [], []
    done = sum(1 for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE")
    if done >= space.trials:
        notes.append(f"the study already has {done} completed trials (cap {space.trials}); raise --trials to go on")
    for wid in range(workers if done < space.trials else 0):
        args = _WorkerArgs(
            space, url, name, wid, device_name, command, heartbeat_s, grace_s, os.getpid(), table and table.uid
        )
        receive, send = ctx.Pipe(duplex=False)
        p = ctx.Process(target=_worker_process, args=(args, send), name=f"effscope-search-{wid}", daemon=False)
        start_shielded(p)
        send.close()
        procs.append(p)
        reports.append(receive)
    try:
        while any(p.is_alive() for p in procs):
            for p in procs:
                p.join(poll_s / max(1, len(procs)))
            if on_progress is not None:
                on_progress(_progress(study, space, started, procs))
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
        from effscope.search.predictor import finish_search

        notes += finish_search(study, space, table, RecordStore(url), device_name=device_name, command=command)
    summary = summarize(study.get_trials(deepcopy=False), study_info(study))
    return SearchResult(name, url, created, summary, notes, time.monotonic() - started, failures)


def _failure(proc, report) -> WorkerFailure:
    """Why a worker process ended with a non-zero exit code (its one sentence, or the signal)."""
    if proc.exitcode < 0:
        return WorkerFailure(proc.name, "killed", f"was killed by {signal.Signals(-proc.exitcode).name}")
    reason = report.recv() if report.poll() else f"exited with code {proc.exitcode}"
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
        cause = _storage_cause(e)
        if cause is None:
            raise
        return [f"the dead worker's trial stays RUNNING until the next run ({_storage_error(url, cause)})"]
    failed = sorted({t.number for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))} - before)
    if not failed:
        return []
    return [f"trial(s) {', '.join(map(str, failed))} of the dead worker were failed and queued again for the next run"]


def _stop(procs, timeout: float = 30.0) -> None:
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
