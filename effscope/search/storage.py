"""The study storage: Optuna's RDB storage on the search's database, and writing a trial's attributes (one commit).

Storage is one database for the study and the Records (an SQLite file by default, PostgreSQL for many machines);
heartbeats fail and retry the trial of a killed worker (docs/search.md#storage).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from effscope.errors import EffscopeError

if TYPE_CHECKING:
    import optuna
    import sqlalchemy
    from sqlalchemy.engine.interfaces import DBAPIConnection
    from sqlalchemy.pool import ConnectionPoolEntry

__all__ = [
    "CONSTRAINTS",
    "DASHBOARD_CONSTRAINTS",
    "delete_unused_study",
    "named_constraints",
    "open_error",
    "open_storage",
    "sqlite_fast_commits",
    "storage_cause",
    "storage_error",
    "storage_url",
    "write_attrs",
    "write_trial",
]

MAX_RETRY = 2  # a design that kills its worker twice is not tried a third time


def open_storage(url: str, *, heartbeat_s: int | None = None, grace_s: int | None = None) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage on `url`; with a heartbeat, stale trials of dead workers are failed and retried.

    Raises:
        StoreError: the database cannot be reached, holds another program's tables, or another Optuna version's
            schema (one sentence naming it).
    """
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    from effscope.profile.store import SQLITE_BUSY_TIMEOUT_S, check_sqlite_database

    check_sqlite_database(url)  # before Optuna creates its tables in another program's file
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):  # concurrent writers wait instead of failing
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}}
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
        sqlite_fast_commits(storage.engine)
        return storage
    except Exception as e:
        raise open_error(url, e) from None


def open_error(url: str, e: BaseException) -> EffscopeError:
    """The one sentence for a study storage that Optuna cannot open (unreachable, another Optuna version's schema,
    damaged tables): what `search`, `report` and `export` say alike."""
    from effscope.profile.store import StoreError, first_line
    from effscope.urls import mask_url

    return StoreError(f"cannot open the study storage '{mask_url(url)}': {first_line(e)}")


def _create_rdb_storage(
    rdb_storage: type[optuna.storages.RDBStorage], url: str, kwargs: dict[str, Any], attempts: int = 5
) -> optuna.storages.RDBStorage:
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


def delete_unused_study(storage: optuna.storages.BaseStorage, study_name: str) -> bool:
    """Delete a study in which no trial ever started: it holds at most the presets its creation enqueued (creating
    it again enqueues them again). For a study this run created and then stored nothing in; a study with any other
    trial is kept. Returns whether it was deleted."""
    from optuna.trial import TrialState

    study_id = storage.get_study_id_from_name(study_name)
    if any(t.state != TrialState.WAITING for t in storage.get_all_trials(study_id, deepcopy=False)):
        return False
    storage.delete_study(study_id)
    return True


def storage_url(storage: str | None) -> str:
    """The database URL of a study: the one rule of `effscope.urls.database_url` (a path means an SQLite file)."""
    from effscope.urls import database_url

    return database_url(storage)


def sqlite_fast_commits(engine: sqlalchemy.engine.Engine) -> None:
    """WAL with synchronous=NORMAL: a commit is not fsynced (a killed process loses nothing, a power cut may lose the
    last commits but never corrupts the file); fsync per commit would cost ~10 ms per attribute on some disks."""
    import sqlalchemy as sa

    from effscope.profile.store import sqlite_connection_pragmas

    if engine.dialect.name != "sqlite":
        return

    def pragmas(dbapi_conn: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
        sqlite_connection_pragmas(dbapi_conn, synchronous="NORMAL")

    sa.event.listen(engine, "connect", pragmas)
    engine.dispose()  # connections opened before the listener get the pragmas on reconnect


def storage_cause(e: BaseException) -> BaseException | None:
    """The database or OS error behind `e` (Optuna wraps a failed commit in StorageInternalError), or None."""
    import sqlalchemy.exc
    from optuna.exceptions import StorageInternalError

    while e is not None:
        if isinstance(e, sqlalchemy.exc.OperationalError | sqlalchemy.exc.DatabaseError | OSError):
            return e
        e = e.__cause__ if isinstance(e, StorageInternalError) else None
    return None


def storage_error(url: str, e: BaseException) -> EffscopeError:
    from effscope.profile.store import StoreError, first_line
    from effscope.urls import mask_url

    return StoreError(f"cannot write the study storage '{mask_url(url)}': {first_line(e)}")


# --------------------------------------------------------------------------------------------------- trial attributes

CONSTRAINTS = ("latency", "memory", "valid")  # the contract's order (docs/search.md#feasibility)
DASHBOARD_CONSTRAINTS = "constraints"  # the trial system attr optuna-dashboard reads: a list of floats


def write_trial(
    trial: optuna.Trial, trial_id: int, attrs: dict[str, Any], constraints: dict[str, float], *, dashboard: bool = True
) -> None:
    """Store a trial's constraints (in the contract's order) and user attrs, in one transaction (`write_attrs`).

    Each constraint goes to system attr `constraints:<name>`, the key `Trial.set_constraint` writes and Optuna 5 and
    effscope read (written directly: `set_constraint` reads the trial back first, 1 ms each); when `dashboard`, all
    three also go as one list to system attr `constraints`, the older key that optuna-dashboard reads (its
    `_serializer.py`: `system_attrs.get("constraints", [])`), so the dashboard's feasibility is effscope's. Optuna
    itself then sees each constraint twice (`0`, `1`, `2` beside the names); `named_constraints` gives effscope's
    three. The storage overhead is measured by benchmarks/search_throughput.py (docs/search.md#storage).
    """
    system: dict[str, Any] = {f"{DASHBOARD_CONSTRAINTS}:{key}": float(constraints[key]) for key in CONSTRAINTS}
    if dashboard:
        system[DASHBOARD_CONSTRAINTS] = [float(constraints[k]) for k in CONSTRAINTS]
    write_attrs(trial, trial_id, user=attrs, system=system)


_ATTR_TABLES = {"user": "trial_user_attributes", "system": "trial_system_attributes"}  # Optuna's RDB schema


def write_attrs(
    trial: optuna.Trial,
    trial_id: int,
    *,
    user: Mapping[str, Any] | None = None,
    system: Mapping[str, Any] | None = None,
) -> None:
    """Store user and system attrs of an unfinished trial, in one transaction on Optuna's RDB storage.

    Optuna's API commits each attribute on its own: a session, a read of the trial, an upsert and a commit, about
    0.4 ms each, 10 ms for the ~28 attributes of a trial. Here the same rows (key, `json.dumps(value)`, upserted on
    (trial_id, key) as Optuna does) go in one statement per table, in one transaction, after the check Optuna makes
    (a finished trial cannot be updated), so that the attributes appear together or not at all. `trial`'s own view
    (`trial.user_attrs`) is updated as `Trial.set_user_attr` updates it. On another storage, or a database without
    an upsert, each attribute goes through Optuna's public API.

    Raises:
        KeyError: no trial has this id.
        UpdateFinishedTrialError: the trial is finished (another process failed it, say).
        StorageInternalError: the database refused the write (its error is the cause: `storage_cause`).
    """
    user, system = dict(user or {}), dict(system or {})
    engine = _upsert_engine(trial.storage)
    if engine is None:
        for key, value in system.items():
            trial.storage.set_trial_system_attr(trial_id, key, value)
        for key, value in user.items():
            trial.set_user_attr(key, value)
        return
    _upsert_attrs(engine, trial_id, {"user": user, "system": system})
    cached = getattr(trial, "_cached_frozen_trial", None)  # what `Trial.set_user_attr` keeps up to date
    if cached is not None:
        cached.user_attrs.update(user)
        cached.system_attrs.update(system)


def _upsert_engine(storage: optuna.storages.BaseStorage) -> sqlalchemy.engine.Engine | None:
    """The engine of the RDBStorage behind `storage` (Optuna wraps it in a cache) when its database has an upsert."""
    import sqlite3

    from optuna.storages import RDBStorage

    backend = getattr(storage, "_backend", storage)
    if not isinstance(backend, RDBStorage):
        return None
    name = backend.engine.dialect.name
    if name in ("postgresql", "mysql") or (name == "sqlite" and sqlite3.sqlite_version_info >= (3, 24, 0)):
        return backend.engine
    return None


def _upsert_attrs(engine: sqlalchemy.engine.Engine, trial_id: int, attrs: dict[str, dict[str, Any]]) -> None:
    import json

    import sqlalchemy as sa
    from optuna.exceptions import StorageInternalError, UpdateFinishedTrialError

    dialect = engine.dialect.name
    try:
        with engine.begin() as conn:
            state = conn.execute(
                sa.text("SELECT state FROM trials WHERE trial_id = :t"), {"t": trial_id}
            ).scalar_one_or_none()
            if state is None:
                raise KeyError(f"no trial with id {trial_id} in the study storage")
            if state in ("COMPLETE", "PRUNED", "FAIL"):  # TrialState.is_finished(), as stored
                raise UpdateFinishedTrialError(f"Trial with id {trial_id} has already finished and can not be updated.")
            for kind, values in attrs.items():
                if values:
                    rows = [{"trial_id": trial_id, "key": k, "value_json": json.dumps(v)} for k, v in values.items()]
                    conn.execute(_upsert(dialect, _ATTR_TABLES[kind]), rows)
    except sa.exc.SQLAlchemyError as e:  # as Optuna reports a failed commit (storage_cause finds the cause)
        raise StorageInternalError("An exception is raised during the commit of trial attributes.") from e


def _upsert(dialect: str, table_name: str) -> Any:
    """INSERT ... ON CONFLICT (trial_id, key) DO UPDATE (ON DUPLICATE KEY UPDATE on MySQL): Optuna's own statement."""
    import sqlalchemy as sa

    table = sa.table(table_name, sa.column("trial_id"), sa.column("key"), sa.column("value_json"))
    if dialect == "mysql":
        from sqlalchemy.dialects.mysql import insert as mysql_insert

        stmt = mysql_insert(table)
        return stmt.on_duplicate_key_update(value_json=stmt.inserted.value_json)
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    stmt = insert(table)
    return stmt.on_conflict_do_update(index_elements=["trial_id", "key"], set_={"value_json": stmt.excluded.value_json})


def named_constraints(system_attrs: dict[str, Any]) -> dict[str, float]:
    """A trial's named constraints (`constraints:<name>` system attrs), without the dashboard's list copy."""
    prefix = f"{DASHBOARD_CONSTRAINTS}:"
    return {k[len(prefix) :]: float(v) for k, v in system_attrs.items() if k.startswith(prefix)}
