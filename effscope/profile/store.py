"""The record store: an append-only table in a real database (an SQLite file by default, any SQLAlchemy URL).

Each Record is inserted in its own committed transaction, so a crash loses at most the record being measured;
re-running a measurement adds a row, nothing is ever updated or deleted. Reading skips (with a warning) a row that is
not a Record, so one damaged row leaves the others readable; a read-only store (export) never writes to its file,
nor leaves -wal and -shm files beside it where this process may not write (they would block the owner's writes).
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from effscope.errors import EffscopeError, SpecError, error_line
from effscope.profile.record import NotARecordError, Record
from effscope.urls import DEFAULT_DB, database_url, mask_command, mask_url, sqlite_path

if TYPE_CHECKING:
    import pandas as pd
    import sqlalchemy as sa
    from sqlalchemy.engine.interfaces import DBAPIConnection
    from sqlalchemy.pool import ConnectionPoolEntry

__all__ = [
    "DEFAULT_DB",
    "EXPORT_FORMATS",
    "RECORDS_TABLE",
    "RecordStore",
    "StoreError",
    "check_database",
    "check_sqlite_database",
    "tables_with_rows",
    "failure_reason",
    "first_line",
    "check_store_location",
    "new_sqlite_file",
    "open_elsewhere",
    "remove_if_empty",
    "sqlite_connection_pragmas",
    "write_table",
]

EXPORT_FORMATS = (".csv", ".parquet", ".json")
RECORDS_TABLE = "effscope_records"
# effscope's own tables (effscope_records, the latency tables' effscope_luts) share this prefix.
EFFSCOPE_PREFIX = "effscope_"
# Optuna's RDB tables, each with columns it has had in every schema (v0.9.0.a to Optuna 5's v3.2.0.a), kept here
# rather than read from optuna so that profile does not import it: a table of one of these names without them is
# another program's. Optuna creates them all at once, and stamps version_info and alembic_version before it writes
# any study.
OPTUNA_TABLES = {
    "alembic_version": ("version_num",),
    "version_info": ("version_info_id", "schema_version", "library_version"),
    "studies": ("study_id", "study_name"),
    "study_directions": ("study_direction_id", "study_id"),
    "study_user_attributes": ("study_user_attribute_id", "study_id", "key"),
    "study_system_attributes": ("study_system_attribute_id", "study_id", "key"),
    "trials": ("trial_id", "study_id", "state"),
    "trial_params": ("param_id", "trial_id", "param_name"),
    "trial_values": ("trial_value_id", "trial_id"),
    "trial_intermediate_values": ("trial_intermediate_value_id", "trial_id"),
    "trial_user_attributes": ("trial_user_attribute_id", "trial_id", "key"),
    "trial_system_attributes": ("trial_system_attribute_id", "trial_id", "key"),
    "trial_heartbeats": ("trial_heartbeat_id", "trial_id"),
}
OPTUNA_VERSION_TABLES = ("version_info", "alembic_version")


class StoreError(EffscopeError):
    """The database cannot be opened, reached or written."""


def write_table(df: pd.DataFrame, path: str | Path, fmt: str, *, databases: Iterable[str | None] = ()) -> Path:
    """Write a table of Records as csv, parquet or json, atomically and never onto one of `databases`.

    Raises:
        OutputError: the path is unusable or the write failed (one sentence; nothing half-written is left).
    """
    from effscope.output import write_atomic

    return write_atomic(path, lambda tmp: write_frame(df, tmp, fmt), databases=databases)


def rows_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Flat rows (Records, listings) as a DataFrame whose integer and boolean columns keep their type where some rows
    lack them (a knob of one target, a trial number, a failed Record's flags): pandas would make integers floats
    (num_classes 1000.0) and booleans objects, which Parquet then writes as the text "False" (true when filtered)."""
    import pandas as pd

    df = pd.DataFrame(rows)
    for column in df.columns:
        values = [row[column] for row in rows if row.get(column) is not None]
        if not values:
            continue
        if df[column].dtype.kind == "f" and all(type(v) is int for v in values):
            df[column] = df[column].astype("Int64")
        elif df[column].dtype == object and all(type(v) is bool for v in values):
            df[column] = df[column].astype("boolean")
    return df


def write_frame(df: pd.DataFrame, out: Any, fmt: str) -> None:
    """Write a table as csv, parquet or json to a path or an open text stream (stdout): one writer for the files
    and for `-`, so both hold the same text (a missing number is an empty CSV cell or JSON null, never NaN)."""
    if fmt == "csv":
        df.to_csv(out, index=False)
    elif fmt == "parquet":
        df.astype({c: "string" for c in df.columns if df[c].dtype == object}).to_parquet(out, index=False)
    else:  # json.dumps, not to_json: pandas keeps 15 digits at most, so a float would not read back equal
        text = json.dumps([_json_row(row) for row in df.to_dict(orient="records")], indent=1, separators=(",", ":"))
        if isinstance(out, str | os.PathLike):
            Path(out).write_text(text, encoding="utf-8")
        else:
            out.write(text)


def _json_row(row: dict[Any, Any]) -> dict[str, Any]:
    return {str(k): _json_value(v) for k, v in row.items()}


def _json_value(value: Any) -> Any:
    """A table cell as plain JSON, as pandas wrote it: numpy scalars as numbers, a missing value (None, NaN, NA) or
    an infinity as null."""
    if isinstance(value, dict):
        return _json_row(value)
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, str | bytes):  # a numpy scalar
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, bool | int | float | str):
        return value
    import pandas as pd

    return None if pd.isna(value) is True else str(value)  # pd.NA, NaT; anything else as its text


class RecordStore:
    """Append-only Record table.

    Args:
        db: an SQLite file path or an SQLAlchemy URL (postgresql://user@host/db, sqlite:///path.db); None uses
            $EFFSCOPE_DB or ./effscope.db.
        read_only: open an existing store only to read it (export): no write access is needed and nothing is
            created, neither a missing file nor the Record table, nor (without write access) -wal or -shm files.

    Raises:
        StoreError: the database cannot be created or reached, or its `effscope_records` table is someone else's;
            the message names the URL and what is allowed.
    """

    def __init__(self, db: str | None = None, *, read_only: bool = False) -> None:
        import sqlalchemy as sa

        self.url = database_url(db)
        self.read_only = read_only
        self.path = sqlite_path(self.url)
        self.location = str(self.path) if self.path is not None else mask_url(self.url)
        self.writable = True  # False: an SQLite file this process may not write, opened for reading only
        if self.path is not None:
            _check_sqlite_location(self.path, read_only)
            self.writable = _may_write(self.path)
        try:
            opened = _reader_url(self.url, self.writable) if read_only and self.path is not None else self.url
            self.engine = sa.create_engine(opened, future=True)
        except Exception as e:  # bad dialect, missing driver, malformed URL
            raise StoreError(
                f"cannot open the record store '{mask_url(self.url)}' ({type(e).__name__}: {first_line(e)}); "
                "use an SQLite file path or an SQLAlchemy URL such as postgresql://user@host/dbname"
            ) from None
        if self.path is not None:  # read without the store's pragmas: its first connection switches the file to WAL
            check_sqlite_database(self.url, opened)
        if self.engine.dialect.name == "sqlite":
            sa.event.listen(self.engine, "connect", _sqlite_reader_pragmas if read_only else _sqlite_pragmas)
        meta = sa.MetaData()
        self.table = _records_table(meta)
        self._has_table = self._check_table()
        if not self._has_table and not read_only:
            try:
                meta.create_all(self.engine)
            except Exception as e:
                raise StoreError(self._failure("reach", e)) from None
            self._has_table = True

    def _failure(self, action: str, e: Exception) -> str:
        return f"cannot {action} the record store '{mask_url(self.url)}': {failure_reason(e, self.url)}"

    def _check_table(self) -> bool:
        """Whether the Record table exists; a table of that name without effscope's columns is an error."""
        import sqlalchemy as sa

        try:
            inspector = sa.inspect(self.engine)
            if not inspector.has_table(RECORDS_TABLE):
                return False
            present = {column["name"] for column in inspector.get_columns(RECORDS_TABLE)}
        except Exception as e:  # unreachable server, not a database, locked, read-only WAL folder
            raise StoreError(self._failure("read" if self.read_only else "reach", e)) from None
        missing = [column.name for column in self.table.columns if column.name not in present]
        if missing:  # another program's table of that name
            raise StoreError(
                f"{self.location} has an {RECORDS_TABLE} table that is not effscope's (missing column(s) "
                f"{', '.join(missing)}), so it is not an effscope record store; name another "
                f"{'file' if self.path is not None else 'database'}"
            )
        return True

    def add(self, record: Record) -> int:
        """Append one Record in its own transaction; returns its row id."""
        if self.read_only:
            why = "; open it without read_only" if self.writable else ", as this process may not write it or its folder"
            raise StoreError(f"cannot write to the record store {self.location}: it was opened read-only{why}")
        try:
            with self.engine.begin() as conn:
                return int(conn.execute(self.table.insert().values(**_row(record))).inserted_primary_key[0])
        except Exception as e:
            raise StoreError(self._failure("write to", e)) from None

    def add_if_new(self, record: Record) -> bool:
        """Append a Record unless the store holds one with its uid (an import run twice adds nothing twice); returns
        whether it was added.

        Raises:
            StoreError: the look-up or the write failed.
        """
        if self._has_uid(record.uid):
            return False
        try:
            self.add(record)
        except StoreError:
            if self._has_uid(record.uid):  # the uid column is unique: another process stored it since the look-up
                return False
            raise
        return True

    def _has_uid(self, uid: str) -> bool:
        import sqlalchemy as sa

        if not self._has_table:
            return False
        try:
            with self.engine.connect() as conn:
                return conn.execute(sa.select(self.table.c.id).where(self.table.c.uid == uid)).first() is not None
        except Exception as e:
            raise StoreError(self._failure("read", e)) from None

    def records(
        self, *, target: str | None = None, key: str | None = None, status: str | None = None, study: str | None = None
    ) -> list[Record]:
        """Records in insertion order, optionally filtered.

        A row that is not a Record (damaged data) is skipped with a warning on stderr, so the others stay readable.
        """
        filters = {"target": target, "key": key, "status": status, "study": study}
        return _records_from_rows(list(self._rows(filters)), self.location)

    def _rows(self, filters: dict[str, str | None], *, newest_first: bool = False) -> Iterator[tuple[int, Any, Any]]:
        """The (id, uid, data) rows whose filter columns hold the given values (None: any), in insertion order or
        newest first, read as they are taken (a reader that stops early reads no more of them)."""
        import sqlalchemy as sa

        if not self._has_table:  # a reader's store that nothing has been written to (yet)
            self._has_table = self._check_table()
            if not self._has_table:
                return
        columns = self.table.c
        q = sa.select(columns.id, columns.uid, columns.data)
        q = q.order_by(columns.id.desc() if newest_first else columns.id)
        for column, value in filters.items():
            if value is not None:
                q = q.where(columns[column] == value)
        try:
            with self.engine.connect() as conn:
                yield from conn.execute(q)
        except Exception as e:
            raise StoreError(self._failure("read", e)) from None

    def distinct(self, column: str) -> list[str]:
        """The distinct values stored in one filter column (target, status or study), sorted; none without a table."""
        import sqlalchemy as sa

        if not self._has_table:
            self._has_table = self._check_table()
            if not self._has_table:
                return []
        c = self.table.c[column]
        try:
            with self.engine.connect() as conn:
                return sorted(v for (v,) in conn.execute(sa.select(c).distinct().where(c.is_not(None))).all())
        except Exception as e:
            raise StoreError(self._failure("read", e)) from None

    def latest(self, key: str, where: Callable[[Record], bool] | None = None) -> Record | None:
        """The newest successful Record with this canonical key (the measurement cache) that `where` accepts (every
        one, without it), or None. Rows are read newest first, and only until one is accepted."""
        with contextlib.closing(self._rows({"key": key, "status": "ok"}, newest_first=True)) as rows:
            for row in rows:
                for record in _records_from_rows([row], self.location):
                    if where is None or where(record):
                        return record
        return None

    def dataframe(self, **filters: Any) -> pd.DataFrame:
        """All (or filtered) records as one flat DataFrame, one row per Record."""
        return rows_frame([r.flat() for r in self.records(**filters)])

    def export(self, path: str | Path, **filters: Any) -> Path:
        """Write the records to CSV, Parquet or JSON, chosen by the file suffix (never onto this database)."""
        return write_table(self.dataframe(**filters), path, export_format(path), databases=[self.url])


def _records_table(meta: sa.MetaData) -> sa.Table:
    """The Record table's definition (in `meta`)."""
    import sqlalchemy as sa

    return sa.Table(
        RECORDS_TABLE,
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


def _row(record: Record) -> dict[str, Any]:
    """The Record table's row of a Record: the columns the store filters on, and the whole Record as JSON."""
    return {
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


def row_problem(record: Record) -> str | None:
    """Why the Record table would refuse this Record's row (a missing value, a value of another type, a text longer
    than its column: PostgreSQL enforces lengths, SQLite does not), or None; read from the table's definition, so
    that an import can check every Record before it stores the first."""
    import sqlalchemy as sa

    row = _row(record)
    for column in _records_table(sa.MetaData()).columns:
        if column.name not in row:  # the id, which the store assigns
            continue
        value = row[column.name]
        if value is None:
            if not column.nullable:
                return f"its {column.name} is missing"
            continue
        length = getattr(column.type, "length", None)
        if isinstance(column.type, sa.String) and not isinstance(value, str):
            return f"its {column.name} is not text: {value!r}"
        if length is not None and len(value) > length:
            return f"its {column.name} is longer than the store takes ({len(value)} characters, at most {length})"
    return None


def _check_sqlite_location(path: Path, read_only: bool) -> None:
    try:  # is_dir() and is_file() raise, not answer False, for a name too long (ENAMETOOLONG) or a folder denied
        if path.is_dir():
            raise StoreError(
                f"{path} is a folder; a record store or study storage is an SQLite file or an SQLAlchemy URL"
            )
        if read_only:
            if not path.is_file():
                raise StoreError(
                    f"there is no record store at {path}; give --db with the file that effscope profile wrote"
                )
            return
        if not path.parent.is_dir():
            raise StoreError(f"cannot create the record store {path}: folder {path.parent} does not exist")
        if not _may_write(path):
            raise StoreError(f"cannot write the record store {path}: permission denied")
    except OSError as e:
        raise StoreError(f"cannot use the record store {path}: {path_problem(e)}") from None


def path_problem(e: OSError) -> str:
    """What an OS error on a path means for the person who typed it, as the end of a sentence."""
    if e.errno == errno.ENAMETOOLONG:
        return "the file name is longer than the file system allows; give a shorter path"
    return f"{e.strerror or e}; give a path this process can reach"


def not_effscope(location: str, problem: str) -> str:
    """The one sentence for a database that another program made."""
    return f"'{location}' is not an effscope database: {problem}; give a new file or one effscope wrote"


def database_problem(engine: sa.engine.Engine) -> str | None:
    """Why an SQLite database is another program's (as the middle of a sentence), or None: it may hold only
    effscope's tables and Optuna's, and a table with an Optuna name must have Optuna's columns; where Optuna's tables
    hold rows, its version tables must too (Optuna fills them before it writes a study). A server database
    (PostgreSQL) is not checked: it may be shared with other programs' tables."""
    import sqlalchemy as sa

    inspector = sa.inspect(engine)
    names = {n for n in (*inspector.get_table_names(), *inspector.get_view_names()) if not n.startswith("sqlite_")}
    foreign = sorted(n for n in names if not n.startswith(EFFSCOPE_PREFIX) and n not in OPTUNA_TABLES)
    if foreign:
        shown = ", ".join(foreign[:10]) + (", ..." if len(foreign) > 10 else "")
        return f"it holds tables of another program ({shown})"
    optuna = sorted(names & OPTUNA_TABLES.keys())
    for name in optuna:
        present = {column["name"] for column in inspector.get_columns(name)}
        missing = [column for column in OPTUNA_TABLES[name] if column not in present]
        if missing:
            return f"its table {name} is not Optuna's (it lacks column(s) {', '.join(missing)})"
    if not optuna:
        return None
    filled = tables_with_rows(engine, optuna)
    unstamped = [n for n in OPTUNA_VERSION_TABLES if n not in filled]
    if unstamped and set(filled) - set(OPTUNA_VERSION_TABLES):
        # a search killed while Optuna created its tables leaves them empty, and resumes: that file is accepted
        data = [n for n in filled if n not in OPTUNA_VERSION_TABLES]
        return f"its table(s) {', '.join(data)} are not Optuna's (its {' and '.join(unstamped)} are missing or empty)"
    return None


def tables_with_rows(engine: sa.engine.Engine, names: Iterable[str]) -> list[str]:
    """Those of `names` (existing tables) that hold at least one row."""
    import sqlalchemy as sa

    with engine.connect() as conn:
        return [n for n in names if conn.execute(sa.text(f'SELECT 1 FROM "{n}" LIMIT 1')).first() is not None]


def check_database(engine: sa.engine.Engine, url: str) -> None:
    """Refuse an SQLite database of another program (`database_problem`) before anything writes to it.

    Raises:
        StoreError: one sentence naming the file and its foreign tables.
    """
    path = sqlite_path(url)
    if path is None:
        return
    problem = database_problem(engine)
    if problem is not None:
        raise StoreError(not_effscope(str(path), problem))


def check_sqlite_database(url: str, opened: str | None = None) -> None:
    """`check_database` on an existing, non-empty SQLite file (a new file passes), opened with `opened` (default:
    `reader_url(url)`) and a reader's pragmas, which write nothing.

    Raises:
        StoreError: another program's database, or one that cannot be read (one sentence).
    """
    import sqlalchemy as sa

    path = sqlite_path(url)
    if path is None:
        return
    try:
        if not path.is_file() or path.stat().st_size == 0:
            return
        engine = sa.create_engine(opened or reader_url(url), future=True)
    except OSError as e:
        raise StoreError(f"cannot use the database {path}: {path_problem(e)}") from None
    except Exception as e:
        raise StoreError(f"cannot read the database {path}: {failure_reason(e, url)}") from None
    sa.event.listen(engine, "connect", _sqlite_reader_pragmas)
    try:
        problem = database_problem(engine)
    except Exception:  # not a database, locked: the caller's own open says so, in its words
        problem = None
    finally:
        engine.dispose()
    if problem is not None:
        raise StoreError(not_effscope(str(path), problem))


def check_store_location(url: str) -> None:
    """Refuse what `RecordStore(url)` would refuse about an SQLite file (a folder, a missing folder, no permission,
    another program's database), checked without creating anything: for a command that opens its store late.

    Raises:
        StoreError: one sentence naming the path.
    """
    path = sqlite_path(url)
    if path is not None:
        _check_sqlite_location(path, read_only=False)
        if path.exists():  # opened to read: what is wrong with the file is said as the store says it
            RecordStore(url, read_only=True).engine.dispose()


def new_sqlite_file(url: str) -> Path | None:
    """The SQLite file of `url` when nothing is there yet: one this run will create, and may remove again when it
    stores nothing in it (`remove_if_empty`). None for a file already there, which is never removed, or a server."""
    path = sqlite_path(url)
    return path if path is not None and not os.path.lexists(path) else None


def remove_if_empty(path: Path) -> bool:
    """Remove an SQLite file that `new_sqlite_file` named, with its -wal, -shm and -journal, when it holds no row (no
    Record, latency table or study; Optuna stamps its version when it makes its tables): what a refused or failed
    run leaves of no value. Every connection of this process to it must be closed. A file that cannot be read, or
    that another process has open (it may be about to store there), is kept.

    Returns:
        whether it was removed.
    """
    import sqlalchemy as sa

    if open_elsewhere(path):
        return False
    engine = sa.create_engine(reader_url(database_url(str(path))), future=True)  # creates nothing, not even the file
    try:
        names = [n for n in sa.inspect(engine).get_table_names() if n not in OPTUNA_VERSION_TABLES]
        if tables_with_rows(engine, [n for n in names if not n.startswith("sqlite_")]):
            return False
    except Exception:  # gone, locked or damaged: kept as it is
        return False
    finally:
        engine.dispose()
    with contextlib.suppress(OSError):  # a courtesy: never in the way of the error the run reports
        for end in ("", "-wal", "-shm", "-journal"):
            Path(f"{path}{end}").unlink(missing_ok=True)
    return True


def open_elsewhere(path: Path) -> bool:
    """Whether another process of this user has an SQLite file (or its -wal, -shm, journal) open, read from /proc;
    True where that cannot be told (no /proc), so that what may be in use is never removed. Another user's
    processes are not seen."""
    proc = Path("/proc")
    if not (proc / "self" / "fd").is_dir():
        return True
    names = {os.path.realpath(f"{path}{end}") for end in ("", "-wal", "-shm", "-journal")}
    mine = str(os.getpid())
    for process in proc.iterdir():
        if not process.name.isdigit() or process.name == mine:
            continue
        try:
            fds = list((process / "fd").iterdir())
        except OSError:  # another user's process, or one that ended meanwhile
            continue
        for fd in fds:
            with contextlib.suppress(OSError):  # closed meanwhile
                if os.readlink(fd) in names:
                    return True
    return False


def _may_write(path: Path) -> bool:
    """Whether this process may write an SQLite file and its folder (where SQLite makes its -wal, -shm, journal)."""
    return os.access(path.parent, os.W_OK) and (not path.exists() or os.access(path, os.W_OK))


def reader_url(url: str) -> str:
    """The URL a process that only reads a database opens: for an SQLite file, one that creates nothing, neither the
    file nor (where this process may not write) -wal and -shm files beside it; any other URL as it is."""
    path = sqlite_path(url)
    return url if path is None else _reader_url(url, _may_write(path))


def _reader_url(url: str, writable: bool = True) -> str:
    """The SQLite URL a reader opens. With write access, mode=rw: a missing file is an error instead of a new
    database, and the -wal and -shm files SQLite makes are deleted when the connection closes.

    Without it, reading must create nothing: files made by this process would belong to it and refuse the owner's
    next write ("readonly database"). mode=ro suits a file not in WAL mode (nothing is made to read it) and one whose
    -wal and -shm exist (a writer is at work: they are used as they are). On a WAL file without them, mode=ro would
    create both and leave them behind, so that file is opened immutable, read from the file alone: it then holds
    every committed Record (a writer that closes checkpoints its -wal into the file and deletes it). A -wal that a
    crashed writer left without its -shm is not read; the owner's next open recovers it."""
    from urllib.parse import quote

    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if not parsed.database or parsed.database.startswith("file:"):  # already an SQLite URI: as the user wrote it
        return url
    path = Path(parsed.database).expanduser().resolve()
    if writable:
        mode = {"mode": "rw"}
    elif _in_wal_mode(path) and not all(Path(f"{path}{end}").exists() for end in ("-wal", "-shm")):
        mode = {"mode": "ro", "immutable": "1"}
        wal = Path(f"{path}-wal")
        if wal.exists() and wal.stat().st_size > 0:  # a writer that crashed left writes only it could recover
            print(
                f"warning: {wal} holds writes not yet in {path.name} (a writer stopped without its -shm); this "
                "process may not write the folder, so it reads without them until the owner opens the store again",
                file=sys.stderr,
            )
    else:
        mode = {"mode": "ro"}
    query = {**parsed.query, **mode, "uri": "true"}
    return parsed.set(database=f"file:{quote(str(path))}", query=query).render_as_string(hide_password=False)


def failure_reason(e: Exception, url: str) -> str:
    """A database error's first line, with what SQLite's terse answers mean and what to do about them."""
    text = first_line(e)
    lowered = text.lower()
    path = sqlite_path(url)
    if "database is locked" in lowered:
        return f"{text}, which means another process holds a write lock on it; retry when that finishes"
    if "disk i/o error" in lowered:
        return f"{text}; is the disk full, or the file on a network share?"
    if path is not None and ("readonly database" in lowered or "unable to open" in lowered):
        if not os.access(path.parent, os.W_OK) and _in_wal_mode(path):
            return (
                f"it is in WAL mode and its folder {path.parent} is not writable, so SQLite cannot create its -shm "
                "file; copy the file to a writable folder and use the copy"
            )
    if path is not None and "file is not a database" in lowered:
        return f"{path} is not an SQLite database; give the file that effscope profile wrote"
    return text


def _in_wal_mode(path: Path) -> bool:
    """Whether an SQLite file is in WAL mode, read from its header (bytes 18 and 19 are 2) without SQLite."""
    try:
        with open(path, "rb") as f:
            header = f.read(20)
    except OSError:
        return False
    return header.startswith(b"SQLite format 3\x00") and header[18:20] == b"\x02\x02"


# Unreadable rows already warned about, by (store, row id): search asks for the same keys again and again.
_WARNED_ROWS: set[tuple[str, int]] = set()
# Past this many unreadable rows in one read, the rest are summed up in one line.
WARN_ROWS_ONE_BY_ONE = 5


def _records_from_rows(rows: Iterable[tuple[int, Any, Any]], location: str) -> list[Record]:
    """The Records in (id, uid, data) rows; each row that is not one is skipped with a warning line on stderr."""
    records, unreadable = [], []
    for row_id, uid, text in rows:
        try:
            records.append(Record.from_json(text))
        except NotARecordError as why:
            unreadable.append((row_id, uid, str(why)))
    _warn_unreadable(unreadable, location)
    return records


def _warn_unreadable(rows: list[tuple[int, Any, str]], location: str) -> None:
    fresh = [row for row in rows if (location, row[0]) not in _WARNED_ROWS]
    _WARNED_ROWS.update((location, row_id) for row_id, _, _ in fresh)
    for row_id, uid, why in fresh[:WARN_ROWS_ONE_BY_ONE]:
        named = f" (uid {uid})" if uid else ""
        print(f"warning: row {row_id}{named} of {location} is not a Record ({why}); skipped", file=sys.stderr)
    rest = fresh[WARN_ROWS_ONE_BY_ONE:]
    if rest:
        ids = ", ".join(str(row_id) for row_id, _, _ in rest[:20]) + (", ..." if len(rest) > 20 else "")
        print(
            f"warning: {len(rest)} more rows of {location} are not Records either (ids {ids}); skipped", file=sys.stderr
        )


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
    dbapi_conn: DBAPIConnection,
    *,
    busy_timeout_ms: int | None = None,
    synchronous: str | None = None,
    wal: bool = True,
) -> None:
    """Set up one new SQLite connection: concurrent writers wait for each other (the busy timeout, default
    SQLITE_BUSY_TIMEOUT_S, set first so that everything after it waits too), and the file is put in WAL (readers and
    one writer at once) unless it is. If others hold the file throughout the retries, this connection works in the
    file's current journal mode. A reader (`wal=False`) keeps the journal mode it finds: switching it writes the
    file."""
    timeout_ms = SQLITE_BUSY_TIMEOUT_S * 1000 if busy_timeout_ms is None else busy_timeout_ms
    cur = dbapi_conn.cursor()
    try:
        cur.execute(f"PRAGMA busy_timeout={int(timeout_ms)}")
        if wal and str(cur.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
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


def _sqlite_reader_pragmas(dbapi_conn: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
    sqlite_connection_pragmas(dbapi_conn, wal=False)


def first_line(e: BaseException) -> str:
    """An error's first line (its type where it has no text), any password in it masked."""
    return mask_command(error_line(e))  # a driver may quote the URL it was given
