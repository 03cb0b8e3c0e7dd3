"""The record store: an append-only table in a real database (an SQLite file by default, any SQLAlchemy URL).

Each Record is inserted in its own committed transaction, so a crash loses at most the record being measured;
re-running a measurement adds a row, nothing is ever updated or deleted.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from effscope.errors import EffscopeError, SpecError
from effscope.profile.record import Record
from effscope.urls import DEFAULT_DB, database_url, mask_command, mask_url, sqlite_path

if TYPE_CHECKING:
    import pandas as pd
    from sqlalchemy.engine.interfaces import DBAPIConnection
    from sqlalchemy.pool import ConnectionPoolEntry

__all__ = ["DEFAULT_DB", "EXPORT_FORMATS", "RecordStore", "StoreError", "sqlite_connection_pragmas", "write_table"]

EXPORT_FORMATS = (".csv", ".parquet", ".json")


class StoreError(EffscopeError):
    """The database cannot be opened, reached or written."""


def write_table(df: pd.DataFrame, path: str | Path, fmt: str, *, databases: Iterable[str | None] = ()) -> Path:
    """Write a table of Records as csv, parquet or json, atomically and never onto one of `databases`.

    Raises:
        OutputError: the path is unusable or the write failed (one sentence; nothing half-written is left).
    """
    from effscope.output import write_atomic

    return write_atomic(path, lambda tmp: write_frame(df, tmp, fmt), databases=databases)


def write_frame(df: pd.DataFrame, out: Any, fmt: str) -> None:
    """Write a table as csv, parquet or json to a path or an open text stream (stdout): one writer for the files
    and for `-`, so both hold the same text (a missing number is an empty CSV cell or JSON null, never NaN)."""
    if fmt == "csv":
        df.to_csv(out, index=False)
    elif fmt == "parquet":
        df.astype({c: "string" for c in df.columns if df[c].dtype == object}).to_parquet(out, index=False)
    else:
        df.to_json(out, orient="records", indent=1)


class RecordStore:
    """Append-only Record table.

    Args:
        db: an SQLite file path or an SQLAlchemy URL (postgresql://user@host/db, sqlite:///path.db); None uses
            $EFFSCOPE_DB or ./effscope.db.

    Raises:
        StoreError: the database cannot be created or reached; the message names the URL and what is allowed.
    """

    def __init__(self, db: str | None = None) -> None:
        import sqlalchemy as sa

        self.url = database_url(db)
        path = sqlite_path(self.url)
        if path is not None:
            if not path.parent.is_dir():
                raise StoreError(f"cannot create the record store {path}: folder {path.parent} does not exist")
            if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
                raise StoreError(f"cannot write the record store {path}: permission denied")
        try:
            self.engine = sa.create_engine(self.url, future=True)
        except Exception as e:  # bad dialect, missing driver, malformed URL
            raise StoreError(
                f"cannot open the record store '{mask_url(self.url)}' ({type(e).__name__}: {_first_line(e)}); "
                "use an SQLite file path or an SQLAlchemy URL such as postgresql://user@host/dbname"
            ) from None
        if self.engine.dialect.name == "sqlite":
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        meta = sa.MetaData()
        self.table = sa.Table(
            "effscope_records",
            meta,
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("uid", sa.String(32), nullable=False, unique=True),
            sa.Column("created_at", sa.String(40), nullable=False),
            sa.Column("target", sa.String(200), nullable=False, index=True),
            sa.Column("kind", sa.String(16), nullable=False),
            sa.Column("status", sa.String(16), nullable=False),
            sa.Column("device", sa.String(64)),
            sa.Column("key", sa.String(64), index=True),
            sa.Column("study", sa.String(200), index=True),
            sa.Column("data", sa.Text, nullable=False),
        )
        try:
            meta.create_all(self.engine)
        except Exception as e:
            raise StoreError(f"cannot reach the record store '{mask_url(self.url)}': {_first_line(e)}") from None

    def add(self, record: Record) -> int:
        """Append one Record in its own transaction; returns its row id."""
        row = {
            "uid": record.uid,
            "created_at": record.created_at,
            "target": record.target,
            "kind": record.kind,
            "status": record.status,
            "device": record.env.get("device_name") or record.workload.get("device"),
            "key": record.key,
            "study": record.study,
            "data": record.to_json(),
        }
        try:
            with self.engine.begin() as conn:
                return int(conn.execute(self.table.insert().values(**row)).inserted_primary_key[0])
        except Exception as e:
            raise StoreError(f"cannot write to the record store '{mask_url(self.url)}': {_first_line(e)}") from None

    def records(
        self, *, target: str | None = None, key: str | None = None, status: str | None = None, study: str | None = None
    ) -> list[Record]:
        """Records in insertion order, optionally filtered."""
        import sqlalchemy as sa

        q = sa.select(self.table.c.data).order_by(self.table.c.id)
        for column, value in (("target", target), ("key", key), ("status", status), ("study", study)):
            if value is not None:
                q = q.where(self.table.c[column] == value)
        with self.engine.connect() as conn:
            return [Record.from_json(text) for (text,) in conn.execute(q)]

    def latest(self, key: str) -> Record | None:
        """The newest successful Record with this canonical key (the measurement cache), or None."""
        found = self.records(key=key, status="ok")
        return found[-1] if found else None

    def dataframe(self, **filters: Any) -> pd.DataFrame:
        """All (or filtered) records as one flat DataFrame, one row per Record."""
        import pandas as pd

        return pd.DataFrame([r.flat() for r in self.records(**filters)])

    def export(self, path: str | Path, **filters: Any) -> Path:
        """Write the records to CSV, Parquet or JSON, chosen by the file suffix (never onto this database)."""
        return write_table(self.dataframe(**filters), path, export_format(path), databases=[self.url])


def export_format(path: str | Path) -> str:
    """The table format a file name asks for by its suffix: csv, parquet or json.

    Raises:
        SpecError: any other suffix.
    """
    suffix = Path(path).suffix.lower()
    if suffix not in EXPORT_FORMATS:
        raise SpecError(f"cannot export to '{path}': the suffix must be one of {', '.join(EXPORT_FORMATS)}")
    return suffix[1:]


# Switching a file to WAL needs it to itself. When the switch would deadlock with another connection's lock upgrade
# (several workers opening a file that is not yet in WAL), SQLite answers "database is locked" at once instead of
# waiting out the busy timeout, so the switch is retried for up to about 18 s.
WAL_SWITCH_TRIES = 40
# How long a connection waits for another's lock before SQLite answers "database is locked": search workers and
# profile runs writing Records and the study to one file take turns within it.
SQLITE_BUSY_TIMEOUT_S = 60


def sqlite_connection_pragmas(
    dbapi_conn: DBAPIConnection, *, busy_timeout_ms: int = SQLITE_BUSY_TIMEOUT_S * 1000, synchronous: str | None = None
) -> None:
    """Set up one new SQLite connection: concurrent writers wait for each other (the busy timeout, set first so that
    everything after it waits too), and the file is put in WAL (readers and one writer at once) unless it is. If
    others hold the file throughout the retries, this connection works in the file's current journal mode."""
    cur = dbapi_conn.cursor()
    try:
        cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        if str(cur.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
            _switch_to_wal(cur)
        if synchronous:
            cur.execute(f"PRAGMA synchronous={synchronous}")
    finally:
        cur.close()


def _switch_to_wal(cur: Any) -> None:
    import sqlite3
    import time

    for attempt in range(WAL_SWITCH_TRIES):
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e):
                raise
            time.sleep(min(0.05 * (attempt + 1), 0.5))


def _sqlite_pragmas(dbapi_conn: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
    sqlite_connection_pragmas(dbapi_conn)


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return mask_command(text)  # a driver may quote the URL it was given
