"""Reading a report's source: an Optuna study and its Records, a Record store, or a Records export file.

Reading never writes: a missing SQLite file or a database without the expected tables is an error, not a new,
empty database.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from effscope.errors import error_line
from effscope.report.data import (
    ReportError,
    Source,
    attach_fresh_measurements,
    points_from_records,
    points_from_rows,
    points_from_trials,
    screening_statistic,
)
from effscope.urls import database_url, mask_url, shown_location, sqlite_path

if TYPE_CHECKING:
    import optuna

    from effscope.profile.record import Record

__all__ = [
    "load_records_db",
    "load_records_file",
    "load_study",
    "open_study",
    "records_source",
    "require_effscope_study",
]


def _engine(location: str, what: str, option: str):
    """An engine on an existing database (an SQLite file must exist), the names of its tables, its URL, and the URL
    to read it with (store.reader_url: nothing is created beside a file this process may not write)."""
    import sqlalchemy as sa

    from effscope.profile.store import StoreError, check_database, failure_reason, path_problem, reader_url

    url = database_url(location)
    path = sqlite_path(url)
    if path is not None:
        try:  # is_dir() raises, not answers False, for a name longer than the file system takes
            if path.is_dir():
                raise ReportError(f"{path} is a folder; {option} takes a SQLite file or a SQLAlchemy URL")
            if not path.is_file():
                raise ReportError(f"{what} '{location}' does not exist; give an existing SQLite file or a database URL")
        except OSError as e:
            raise ReportError(f"cannot read {what} '{path}': {path_problem(e)}") from None
    try:
        read = reader_url(url)
        engine = sa.create_engine(read)
        tables = set(sa.inspect(engine).get_table_names())
        check_database(engine, url)  # another program's file: say so, before Optuna is let near it
    except StoreError as e:
        raise ReportError(str(e)) from None
    except Exception as e:  # bad dialect, missing driver, unreachable server, not a database
        raise ReportError(f"cannot read {what} '{mask_url(url)}': {failure_reason(e, url)}") from None
    return engine, tables, url, read


def _records(url: str, study: str | None = None) -> list[Record]:
    """Records in insertion order, opened read-only (a writer's RecordStore would create its table in a foreign
    database); rows that are not Records are skipped with a warning."""
    from effscope.profile.store import RecordStore, StoreError

    try:
        return RecordStore(url, read_only=True).records(study=study)
    except StoreError as e:
        raise ReportError(str(e)) from None


def open_study(storage: str, study: str | None = None) -> tuple[optuna.Study, optuna.storages.BaseStorage, str]:
    """An existing study to read: (study, its storage, the database URL); `study` may be left out when the storage
    holds one. Nothing is created: a missing file or a database without Optuna's tables is an error.

    Raises:
        ReportError: no such database or study (naming the studies there).
    """
    import optuna

    from effscope.search.storage import open_error

    engine, tables, url, read = _engine(storage, "the study storage", "--storage")
    if "studies" not in tables or not _stamped(engine, tables, url):
        raise ReportError(f"'{mask_url(url)}' holds no Optuna study; give the storage that `effscope search` used")
    try:  # without table creation: Optuna writes nothing to a stamped storage (it adds only what is missing)
        backend = optuna.storages.RDBStorage(read, skip_table_creation=True)
        optuna_storage = optuna.storages.get_storage(backend)
        names = optuna.get_all_study_names(storage=optuna_storage)
    except Exception as e:  # another Optuna version's schema, damaged tables: as `effscope search` says it
        raise ReportError(str(open_error(url, e))) from None
    if study is None:
        if len(names) != 1:
            listed = ", ".join(names) or "none"
            raise ReportError(f"'{mask_url(url)}' holds {len(names)} studies ({listed}); name one with --study")
        study = names[0]
    if study not in names:
        from effscope.registry import did_you_mean

        raise ReportError(
            f"no study named '{study}' in '{mask_url(url)}' "
            f"(studies there: {', '.join(names) or 'none'}){did_you_mean(study, names)}"
        )
    try:
        loaded = optuna.load_study(study_name=study, storage=optuna_storage)
    except Exception as e:
        raise ReportError(str(open_error(url, e))) from None
    return loaded, optuna_storage, url


def _stamped(engine: Any, tables: set[str], url: str) -> bool:
    """Whether Optuna's version tables hold their rows: Optuna writes them on opening a storage that lacks them,
    and fills them before it writes any study, so a storage without them holds none."""
    from effscope.profile.store import OPTUNA_VERSION_TABLES, failure_reason, tables_with_rows

    if not all(name in tables for name in OPTUNA_VERSION_TABLES):
        return False
    try:
        return len(tables_with_rows(engine, OPTUNA_VERSION_TABLES)) == len(OPTUNA_VERSION_TABLES)
    except Exception as e:  # locked, damaged
        raise ReportError(f"cannot read the study storage '{mask_url(url)}': {failure_reason(e, url)}") from None


def require_effscope_study(loaded: optuna.Study) -> None:
    """Refuse a study that `effscope search` did not make: its trials carry none of what effscope reads.

    Raises:
        ReportError: one sentence, with what to use instead.
    """
    if "objectives" not in loaded.user_attrs:
        raise ReportError(
            f"study '{loaded.study_name}' was not made by effscope search (it lacks effscope's objectives and "
            "constraints); effscope reads and exports its own studies: read others with Optuna's "
            "study.trials_dataframe()"
        )


def load_study(storage: str, study: str | None = None) -> Source:
    """A study's finished trials joined to their Records (same database, see the search/report contract).

    Raises:
        ReportError: no such database or study, or a study without finished trials.
    """
    from effscope.search.remeasure import REMEASURED_ATTR

    loaded, optuna_storage, url = open_study(storage, study)
    study = loaded.study_name
    trials = loaded.get_trials(deepcopy=False)
    finished = [t for t in trials if t.state.name in ("COMPLETE", "FAIL", "PRUNED")]
    if not finished:
        raise ReportError(f"study '{study}' has no finished trials yet; run `effscope search` on it first")
    target = str(loaded.user_attrs.get("target") or "")
    points = points_from_trials(finished, _records(url, study=study), target)
    if not any(p.timed for p in points):
        require_effscope_study(loaded)  # another tool's study: say so rather than "none measured (3 measured)"
        raise ReportError(_nothing_measured(study, points))
    running = sum(1 for t in trials if t.state.name in ("RUNNING", "WAITING"))
    directions = [d.name.lower() for d in loaded.directions]
    source = Source("study", study, points, shown_location(storage), dict(loaded.user_attrs), directions, running)
    # a system attr, not a user attr: finish_search cannot change a finished trial (effscope/search/remeasure.py)
    study_id = optuna_storage.get_study_id_from_name(study)
    fresh = optuna_storage.get_study_system_attrs(study_id).get(REMEASURED_ATTR)
    if fresh:
        attach_fresh_measurements(source.points, fresh, screening_statistic(source))
    return source


def _nothing_measured(study: str, points: list) -> str:
    """Why a study with finished trials has nothing to report: its statuses and the commonest reason."""
    statuses: dict[str, int] = {}
    reasons: dict[str, int] = {}
    for p in points:
        statuses[p.status] = statuses.get(p.status, 0) + 1
        if p.reason:
            reasons[p.reason] = reasons.get(p.reason, 0) + 1
    counts = ", ".join(f"{n} {s}" for s, n in sorted(statuses.items(), key=lambda kv: -kv[1]))
    why = f"; the commonest reason: {max(reasons, key=reasons.get)}" if reasons else "; no trial stored a reason"
    return f"study '{study}' has {len(points)} finished trial(s) and none measured a design ({counts}){why}"


def load_records_db(db: str) -> Source:
    """Every Record in a record store (`effscope profile --db`)."""
    engine, _tables, url, _read = _engine(db, "the record store", "--db")
    records = _records(url)
    if not records:
        raise ReportError(
            f"'{mask_url(url)}' holds no effscope Records; measure something first with `effscope profile ... --db`"
        )
    name = Path(url.removeprefix("sqlite:///")).stem if url.startswith("sqlite:///") else engine.url.database
    return Source("records", str(name or "records"), points_from_records(records), shown_location(db))


def records_source(records: Iterable[Record]) -> Source:
    """Records already in memory (a profile run that reports on itself), named after their targets."""
    records = list(records)
    if not records:
        raise ReportError("there are no Records to report on (the run measured nothing)")
    targets = list(dict.fromkeys(r.target for r in records))
    name = targets[0] if len(targets) == 1 else f"profile-{len(targets)}-targets"
    return Source("records", name, points_from_records(records), "(in memory)")


def _whole_records(data: Any, path: Path) -> list[Record] | None:
    """The Records of a JSON file's parsed `data` when it holds them in their own form (the file `effscope profile`
    keeps Records the store refused in), or None for anything else (flat rows are read as a table)."""
    from effscope.profile.record import NotARecordError, Record

    data = [data] if isinstance(data, dict) else data  # one Record, as `effscope import` also takes it
    if not (isinstance(data, list) and data and all(isinstance(r, dict) and "workload" in r for r in data)):
        return None
    try:
        return [Record.from_dict(r) for r in data]
    except NotARecordError as why:
        raise ReportError(
            f"cannot read records from '{path}': it holds something that is not a Record ({why})"
        ) from None


def load_records_file(path: str | Path) -> Source:
    """Records exported to CSV, Parquet or JSON (`effscope profile --csv`, `RecordStore.export`), or kept whole in
    JSON (`effscope profile`'s file of Records the store refused)."""
    import json

    import pandas as pd

    from effscope.profile.store import EXPORT_FORMATS

    path = Path(path)
    suffix = path.suffix.lower()  # as an export names its format: R.CSV is a CSV file
    if suffix not in EXPORT_FORMATS:
        database = " (a database is read with --db FILE for profile Records, --storage FILE for a study)"
        raise ReportError(
            f"cannot read records from '{path}': the suffix must be one of {', '.join(EXPORT_FORMATS)}"
            + (database if suffix in (".db", ".sqlite", ".sqlite3") else "")
        )
    if not path.is_file():
        raise ReportError(f"cannot read records from '{path}': no such file")
    rows: Any = None
    if suffix == ".json":  # parsed once: Records kept whole, or the flat rows of the table below
        try:
            text = path.read_text(encoding="utf-8")
            rows = json.loads(text) if text.strip() else []  # an export of nothing: "[\n\n]", or no text
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise _not_a_table(path, suffix, e) from None
        except RecursionError:  # json's reader recurses once per level: [[[[...]]]] exhausts the stack
            raise _not_a_table(path, suffix, ValueError("its lists or objects are nested too deeply")) from None
        whole = _whole_records(rows, path)
        if whole is not None:
            return Source("records", path.stem, points_from_records(whole), str(path))
        if (odd := _not_rows(rows)) is not None:
            raise ReportError(
                f"'{path}' is not an effscope Records export: a JSON export is a list of objects, one per Record, "
                f"but {odd}"
            )
    tiny = suffix == ".csv" and path.stat().st_size < 16  # an export of nothing: "\n", no columns
    if rows == [] or (tiny and not path.read_text(errors="replace").strip()):
        raise ReportError(f"'{path}' holds no records")
    try:
        if suffix == ".csv":
            df = pd.read_csv(path)
        elif suffix == ".parquet":
            df = pd.read_parquet(path)
        else:  # as parsed: a column with a missing value would make pandas read its ints as floats (3 as 3.0)
            df = pd.DataFrame(rows, dtype=object)
    except Exception as e:  # any parser error: the file is not what it claims to be
        raise _not_a_table(path, suffix, e) from None
    if "target" not in df.columns:
        raise ReportError(
            f"'{path}' is not an effscope Records export (it has no 'target' column); "
            "write one with `effscope profile --csv FILE`"
        )
    if df.empty:
        raise ReportError(f"'{path}' holds no records")
    if suffix == ".csv" and (short := _ragged_row(path)) is not None:
        raise ReportError(
            f"cannot read records from '{path}': {short}, so the file looks cut off or hand-edited; give a "
            "whole export (effscope export, or effscope profile --csv)"
        )
    df = df.astype(object).where(df.notna(), None)
    try:
        points = points_from_rows(_checked_rows(df.to_dict(orient="records")))
    except ReportError as why:  # a row with a bad value: name the file it is in
        raise ReportError(f"cannot read records from '{path}': {why}") from None
    return Source("records", path.stem, points, str(path))


def _ragged_row(path: Path) -> str | None:
    """The first record of a CSV file whose field count differs from its header's (a file cut off mid-row, a
    hand-edited row), as the middle of a sentence, or None. pandas reads a short row as empty cells."""
    import csv

    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        reader = csv.reader(f)
        header = next(reader, [])
        n = 0
        for row in reader:
            if not row:  # a blank line, which pandas skips too
                continue
            n += 1
            if len(row) != len(header):
                return f"record {n} (line {reader.line_num}) has {len(row)} of the header's {len(header)} fields"
    return None


def _checked_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Flat rows with their metric columns as numbers (a CSV column holding one text cell reads as text throughout:
    "12.5" becomes 12.5).

    Raises:
        ReportError: a row without a target, or a metric that is not a number (naming the record), rather than a
            design named "None" or a timing silently shown as missing.
    """
    from effscope.report.data import number_keys

    keys = number_keys()
    for n, row in enumerate(rows, 1):
        target = row.get("target")
        if target is None or not str(target).strip():
            raise ReportError(f"record {n} has no target (the design it measured)")
        for key in keys:
            value = row.get(key)
            if value is None:
                continue
            number = _as_number(value)
            if number is None:
                raise ReportError(f"record {n} (target '{target}') has {key} {value!r}, but {key} must be a number")
            row[key] = number
    return rows


def _as_number(value: Any) -> int | float | None:
    """A table cell as the number it holds (numpy's, or text such as "12.5" or "1000"), or None where it holds none."""
    from effscope.report.data import _plain

    value = _plain(value)
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return value
    for kind in (int, float) if isinstance(value, str) else (float,):  # int() would cut a Decimal's fraction
        try:
            return kind(value)
        except (TypeError, ValueError, OverflowError):
            continue
    return None


def _not_rows(data: Any) -> str | None:
    """What parsed JSON holds where it is not a list of objects (flat rows), as the end of a sentence; None where it
    is one."""
    if isinstance(data, list):
        for i, item in enumerate(data, 1):
            if not isinstance(item, dict):
                return f"item {i} of its list is {_json_kind(item)}"
        return None
    if isinstance(data, dict):
        return "it holds a single object"
    return f"it holds {_json_kind(data)}"


def _json_kind(value: Any) -> str:
    """A JSON value as a person names it: "the number 42", "a list", "null"."""
    import json

    if isinstance(value, dict | list):
        return "an object" if isinstance(value, dict) else "a list"
    text = json.dumps(value)
    text = text if len(text) <= 40 else text[:37] + "..."
    if value is None or isinstance(value, bool):
        return text
    return f"the number {text}" if isinstance(value, int | float) else f"the string {text}"


def _not_a_table(path: Path, suffix: str, error: Exception) -> ReportError:
    """A file that its reader cannot parse: not what its suffix claims."""
    return ReportError(
        f"cannot read records from '{path}': it is not a {suffix[1:].upper()} table ({error_line(error)}); give a file "
        "that effscope profile --json/--csv or effscope export wrote"
    )
