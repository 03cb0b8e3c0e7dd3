"""Another program's SQLite file given as --db or --storage: refused in one sentence before anything is written to it
(profile, import, search), and never written by a command that only reads (report, export); Optuna's errors on a
storage of another schema version read the same in search, report and export; paths too long for the file system;
and --workers above the trial cap."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import optuna
import pytest
from _cli import effscope
from _spaces import load, tiny

from effscope.errors import EffscopeError, SpecError
from effscope.profile.record import Record, Workload
from effscope.profile.store import OPTUNA_TABLES, RecordStore, StoreError, check_sqlite_database
from effscope.report._load import open_study
from effscope.report.data import ReportError
from effscope.search.storage import open_storage, storage_url

optuna.logging.set_verbosity(optuna.logging.WARNING)

FOREIGN = {
    "users": "CREATE TABLE users(id INTEGER PRIMARY KEY, name TEXT); INSERT INTO users VALUES (1, 'alice');",
    "trials": "CREATE TABLE trials(id INTEGER, x TEXT); INSERT INTO trials VALUES (1, 'x');",
    "studies": "CREATE TABLE studies(id INTEGER, name TEXT); INSERT INTO studies VALUES (1, 'mine');",
    # Optuna's columns, but rows without the version tables Optuna always fills first
    "trials-lookalike": (
        "CREATE TABLE trials(trial_id INTEGER, study_id INTEGER, state TEXT); INSERT INTO trials VALUES (1, 1, 'x');"
    ),
}
WHY = {
    "users": "it holds tables of another program (users)",
    "trials": "its table trials is not Optuna's (it lacks column(s) trial_id, study_id, state)",
    "studies": "its table studies is not Optuna's (it lacks column(s) study_id, study_name)",
    "trials-lookalike": (
        "its table(s) trials are not Optuna's (its version_info and alembic_version are missing or empty)"
    ),
}


def _foreign(tmp_path: Path, kind: str = "users") -> Path:
    db = tmp_path / "w.db"
    with sqlite3.connect(db) as conn:
        conn.executescript(FOREIGN[kind])
    conn.close()
    return db


def _files(folder: Path) -> dict[str, bytes]:
    """Every file in the folder (the database, and any -wal, -shm or journal beside it), by name."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.suffix == ".db" or "-" in p.name}


def _tables(db: Path) -> set[str]:
    with sqlite3.connect(db) as conn:
        names = {name for (name,) in conn.execute("select name from sqlite_master where type = 'table'")}
    conn.close()
    return names


def _one_sentence(err: str) -> str:
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


def _optuna_study(db: Path, name: str = "s") -> None:
    optuna.create_study(study_name=name, storage=storage_url(str(db)))
    optuna.storages.RDBStorage(storage_url(str(db))).engine.dispose()


# ------------------------------------------------------------------------------------ writers: refused, unchanged


@pytest.mark.parametrize("kind", sorted(FOREIGN))
@pytest.mark.parametrize("opener", ["record store", "study storage"])
def test_writers_refuse_another_programs_file_before_writing(tmp_path, kind, opener):
    db = _foreign(tmp_path, kind)
    before = _files(tmp_path)
    with pytest.raises(StoreError) as caught:
        RecordStore(str(db)) if opener == "record store" else open_storage(storage_url(str(db)))
    assert (
        str(caught.value) == f"'{db}' is not an effscope database: {WHY[kind]}; give a new file or one effscope wrote"
    )
    assert _files(tmp_path) == before  # not even switched to WAL


def test_search_on_a_foreign_trials_table_is_refused_and_leaves_the_file_as_it_was(tmp_path, monkeypatch, capfd):
    db = _foreign(tmp_path, "trials")
    space = tiny(tmp_path, trials=2)
    before = _files(tmp_path)
    code, _, err = effscope(monkeypatch, capfd, ["search", str(space), "--storage", str(db), "--trials", "2"])
    assert code == 2
    assert (
        _one_sentence(err)
        == f"error: '{db}' is not an effscope database: {WHY['trials']}; give a new file or one effscope wrote"
    )
    assert _files(tmp_path) == before and _tables(db) == {"trials"}


def test_profile_and_import_refuse_another_programs_file(tmp_path, monkeypatch, capfd):
    db = _foreign(tmp_path, "users")
    record = Record(target="vit", kind="block", workload=Workload(size=(14, 14)).as_dict())
    record.latency = {"latency_ms_p50": 1.0}
    (tmp_path / "r.json").write_text(json.dumps([record.to_dict()]))
    before = _files(tmp_path)
    for args in (
        ["profile", "vit", "--tokens", "7", "--max-time", "0.2", "--db", str(db)],
        ["import", str(tmp_path / "r.json"), "--db", str(db)],
    ):
        code, _, err = effscope(monkeypatch, capfd, args)
        assert code == 2, (args, err)
        assert "is not an effscope database: it holds tables of another program (users)" in _one_sentence(err)
        assert _files(tmp_path) == before


@pytest.mark.parametrize("command", ["report", "export"])
@pytest.mark.parametrize("kind", ["studies", "trials", "users"])
def test_report_and_export_never_write_another_programs_file(tmp_path, monkeypatch, capfd, command, kind):
    db = _foreign(tmp_path, kind)
    before = _files(tmp_path)
    out = tmp_path / ("o.html" if command == "report" else "o.csv")
    code, _, err = effscope(monkeypatch, capfd, [command, "--storage", str(db), "-o", str(out)])
    assert code == 2
    line = _one_sentence(err)
    assert "is not an effscope database" in line or "holds no Optuna study" in line, line
    assert _files(tmp_path) == before and not out.exists()


def test_effscope_and_optuna_tables_are_accepted(tmp_path):
    db = tmp_path / "s.db"
    _optuna_study(db)
    store = RecordStore(str(db))
    with store.engine.begin() as conn:  # the latency tables' table (effscope.search.predictor)
        conn.exec_driver_sql("CREATE TABLE effscope_luts(id INTEGER PRIMARY KEY)")
    store.engine.dispose()
    open_storage(storage_url(str(db))).engine.dispose()
    RecordStore(str(db), read_only=True).engine.dispose()


def test_a_storage_left_empty_by_a_killed_search_resumes(tmp_path):
    """Optuna creates its tables, then stamps its version: a search killed in between left empty tables only."""
    db = tmp_path / "s.db"
    RecordStore(str(db)).engine.dispose()
    _optuna_study(tmp_path / "ref.db")
    with sqlite3.connect(tmp_path / "ref.db") as ref:
        schema = [sql for (sql,) in ref.execute("select sql from sqlite_master where type = 'table'")]
    ref.close()
    with sqlite3.connect(db) as conn:
        for sql in schema:
            if "alembic_version" not in sql:
                conn.execute(sql)
    conn.close()
    open_storage(storage_url(str(db))).engine.dispose()
    assert "alembic_version" in _tables(db)


def test_optuna_tables_are_the_ones_optuna_creates():
    from optuna.storages._rdb import models

    made = set(models.BaseModel.metadata.tables) | {"alembic_version"}
    assert set(OPTUNA_TABLES) == made
    for name, columns in OPTUNA_TABLES.items():
        if name in models.BaseModel.metadata.tables:
            assert set(columns) <= set(models.BaseModel.metadata.tables[name].columns.keys()), name


def test_a_server_database_is_not_checked():
    check_sqlite_database("postgresql://u@127.0.0.1:1/db")  # may hold other programs' tables; not even reached


# ------------------------------------------------------------------- report/export: read only, one sentence


def _stored_version(db: Path, alembic: str, library: str | None = None) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute("update alembic_version set version_num = ?", (alembic,))
        if library:
            conn.execute("update version_info set schema_version = 99, library_version = ?", (library,))
    conn.close()


@pytest.mark.parametrize(("alembic", "library"), [("v3.0.0.d", None), ("v9.9.9.z", "9.0.0")])
def test_report_and_export_say_what_search_says_of_another_optuna_version(
    tmp_path, monkeypatch, capfd, alembic, library
):
    db = tmp_path / "s.db"
    _optuna_study(db)
    _stored_version(db, alembic, library)
    before = _files(tmp_path)
    with pytest.raises(StoreError) as searched:
        open_storage(storage_url(str(db)))
    assert "no longer compatible with the table schema" in str(searched.value)
    for command, out in (("report", "o.html"), ("export", "o.csv")):
        code, _, err = effscope(monkeypatch, capfd, [command, "--storage", str(db), "-o", str(tmp_path / out)])
        assert code == 2
        assert _one_sentence(err) == f"error: {searched.value}"
    assert _files(tmp_path) == before


def test_reading_a_study_creates_no_missing_table(tmp_path):
    db = tmp_path / "s.db"
    _optuna_study(db)
    with sqlite3.connect(db) as conn:
        conn.execute("drop table trial_heartbeats")  # Optuna would create it again on opening
    conn.close()
    tables = _tables(db)
    loaded, storage, _ = open_study(str(db))
    assert loaded.study_name == "s"
    storage._backend.engine.dispose()
    assert _tables(db) == tables


def test_a_storage_without_its_version_rows_holds_no_study_and_is_not_stamped(tmp_path):
    db = tmp_path / "s.db"
    _optuna_study(db)
    with sqlite3.connect(db) as conn:
        conn.execute("delete from trial_values")
        conn.execute("delete from study_directions")
        conn.execute("delete from studies")
        conn.execute("delete from alembic_version")
    conn.close()
    before = _files(tmp_path)
    with pytest.raises(ReportError, match="holds no Optuna study"):
        open_study(str(db))
    assert _files(tmp_path) == before


# ---------------------------------------------------------------------------------------- paths too long


def test_a_path_longer_than_the_file_system_allows_is_one_sentence(tmp_path, monkeypatch, capfd):
    long = tmp_path / ("a" * 300 + ".db")
    with pytest.raises(StoreError, match="the file name is longer than the file system allows"):
        RecordStore(str(long))
    with pytest.raises(ReportError, match="the file name is longer than the file system allows"):
        open_study(str(long))
    for args in (["report", "--storage", str(long)], ["export", "--db", str(long), "-o", str(tmp_path / "o.csv")]):
        code, _, err = effscope(monkeypatch, capfd, args)
        assert code == 2 and "longer than the file system allows" in _one_sentence(err)


# ---------------------------------------------------------------------------------------------- --workers


def test_workers_above_the_trial_cap_are_refused_before_anything_is_made(tmp_path, monkeypatch, capfd):
    from effscope.search.coordinator import run_search

    db = tmp_path / "s.db"
    with pytest.raises(SpecError, match=r"--workers must be at most the trial cap \(--trials, 2\), but got 3"):
        run_search(load(tiny(tmp_path, trials=2)), storage=str(db), workers=3)
    code, _, err = effscope(
        monkeypatch, capfd, ["search", str(tiny(tmp_path)), "--storage", str(db), "--trials", "1", "--workers", "999"]
    )
    assert code == 2 and "--workers must be at most the trial cap (--trials, 1), but got 999" in _one_sentence(err)
    assert not db.exists()


def test_a_storage_error_while_the_study_is_prepared_is_one_sentence(tmp_path, monkeypatch):
    import sqlalchemy.exc
    from optuna.exceptions import StorageInternalError

    from effscope.search import coordinator

    def refused(*args, **kwargs):
        try:
            raise sqlalchemy.exc.OperationalError("INSERT", {}, sqlite3.OperationalError("no such column: x"))
        except sqlalchemy.exc.OperationalError as e:
            raise StorageInternalError("An exception is raised during the commit.") from e

    monkeypatch.setattr(coordinator, "prepare_study", refused)
    with pytest.raises(EffscopeError, match="cannot write the study storage .*no such column: x"):
        coordinator.run_search(load(tiny(tmp_path, trials=1)), storage=str(tmp_path / "s.db"))
