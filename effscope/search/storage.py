"""The study storage: Optuna's RDB storage on the search's database, and writing trial attributes fast.

Storage is one database for the study and the Records (an SQLite file by default, PostgreSQL for many machines);
heartbeats fail and retry the trial of a killed worker (docs/search.md#storage).
"""

from __future__ import annotations

import json
import time
import warnings
from typing import TYPE_CHECKING, Any

from effscope.errors import EffscopeError

if TYPE_CHECKING:
    import optuna
    import sqlalchemy

__all__ = [
    "open_storage",
    "set_finished_trial_attrs",
    "sqlite_fast_commits",
    "storage_cause",
    "storage_error",
    "storage_url",
    "write_trial",
]

MAX_RETRY = 2  # a design that kills its worker twice is not tried a third time


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
        sqlite_fast_commits(storage.engine)
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


def sqlite_fast_commits(engine: sqlalchemy.engine.Engine) -> None:
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
    from effscope.profile.store import StoreError
    from effscope.urls import mask_command, mask_url

    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return StoreError(f"cannot write the study storage '{mask_url(url)}': {mask_command(text)}")


# --------------------------------------------------------------------------------------------------- trial attributes


def write_trial(trial: optuna.Trial, attrs: dict[str, Any], constraints: dict[str, float]) -> None:
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


def set_finished_trial_attrs(study: optuna.Study, trial_id: int, attrs: dict[str, Any]) -> None:
    """Upsert user attrs of a COMPLETE trial (Optuna's API refuses finished trials; RDB storages only)."""
    from optuna.storages import RDBStorage
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    storage = study._storage
    backend = getattr(storage, "_backend", storage)
    if not isinstance(backend, RDBStorage):
        raise EffscopeError("re-measured numbers are stored on finished trials of an RDB storage only")
    with _create_scoped_session(backend.scoped_session) as session:
        for key, value in attrs.items():
            row = session.query(models.TrialUserAttributeModel).filter_by(trial_id=trial_id, key=key).one_or_none()
            if row is None:
                session.add(models.TrialUserAttributeModel(trial_id=trial_id, key=key, value_json=json.dumps(value)))
            else:
                row.value_json = json.dumps(value)
