"""A damaged or foreign record store: one clear sentence (or one warning per unreadable row), no traceback, and
nothing already recorded lost."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys

import pytest

from effscope.profile.record import Record, Workload
from effscope.profile.store import RecordStore, StoreError


def _record(target="vit", p50=1.5, key=None) -> Record:
    r = Record(target=target, kind="block", workload=Workload(size=(14, 14)).as_dict(), knobs={"heads": 4}, key=key)
    r.latency = {"latency_ms_p50": p50}
    return r


def _store(path, n=3, key="k") -> list[Record]:
    """A record store with `n` Records sharing one cache key; returns them in insertion order."""
    store = RecordStore(str(path))
    records = [_record(p50=1.0 + i, key=key) for i in range(n)]
    for r in records:
        store.add(r)
    store.engine.dispose()
    return records


def _damage(path, row_id: int, data: str) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("update effscope_records set data = ? where id = ?", (data, row_id))
    conn.close()


def _rows(path) -> int:
    with sqlite3.connect(path) as conn:
        (n,) = conn.execute("select count(*) from effscope_records").fetchone()
    conn.close()
    return n


def _cli(*args: str, cwd=None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "effscope", *args], capture_output=True, text=True, timeout=120, cwd=cwd
    )


def _one_error_line(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    return r.stderr


@pytest.mark.parametrize(
    ("data", "why"),
    [
        ("not json {", "its data is not JSON"),
        ("{}", "its data lacks target, kind, workload"),
        ("[1, 2]", "its data is a JSON list, not an object"),
        ('{"target": "vit", "kind": "block", "workload": "big"}', "its workload is not an object"),
        ('{"target": "vit", "kind": "block", "workload": {}, "flags": "x"}', "its flags is not a list"),
    ],
)
def test_a_damaged_row_is_skipped_with_one_warning_and_the_rest_stay_readable(tmp_path, capsys, data, why):
    db = tmp_path / "r.db"
    first, second, third = _store(db)
    _damage(db, 3, data)  # the newest: the search cache falls back to the one before it
    store = RecordStore(str(db))
    assert [r.uid for r in store.records()] == [first.uid, second.uid]
    warning = capsys.readouterr().err
    assert warning == f"warning: row 3 (uid {third.uid}) of {db} is not a Record ({why}); skipped\n"
    assert store.latest("k").uid == second.uid  # the path search's trials take
    assert list(store.dataframe()["uid"]) == [first.uid, second.uid]
    assert capsys.readouterr().err == ""  # warned once per row, not once per read
    store.add(_record())  # still writable
    assert len(store.records()) == 3 and _rows(db) == 4  # the damaged row is skipped, never deleted


def test_many_damaged_rows_end_in_one_summary_line(tmp_path, capsys):
    db = tmp_path / "r.db"
    records = _store(db, n=10)
    for row_id in range(2, 10):
        _damage(db, row_id, "garbage")
    assert [r.uid for r in RecordStore(str(db)).records()] == [records[0].uid, records[-1].uid]
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(" (uid")[0] for line in lines[:5]] == [f"warning: row {i}" for i in range(2, 7)]
    assert lines[5:] == [f"warning: 3 more rows of {db} are not Records either (ids 7, 8, 9); skipped"]


def test_export_and_report_succeed_on_the_readable_rows(tmp_path):
    db = tmp_path / "r.db"
    first, second, third = _store(db)
    _damage(db, 2, "not json {")
    r = _cli("export", "--db", str(db), "-o", "-", "--format", "csv")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert [line.split(",")[1] for line in r.stdout.splitlines()[1:]] == [first.uid, third.uid]
    assert (
        r.stderr.strip() == f"warning: row 2 (uid {second.uid}) of {db} is not a Record (its data is not JSON); skipped"
    )
    r = _cli("report", "--db", str(db), "-o", str(tmp_path / "r.html"))
    assert r.returncode == 0 and "Traceback" not in r.stderr and "row 2" in r.stderr, r.stderr
    assert (tmp_path / "r.html").is_file()


def test_a_foreign_effscope_records_table_is_one_sentence(tmp_path):
    from effscope.report._load import load_records_db
    from effscope.report.data import ReportError

    db = tmp_path / "other.db"
    with sqlite3.connect(db) as conn:
        conn.execute("create table effscope_records(x int)")
        conn.execute("insert into effscope_records values (7)")
    conn.close()
    message = f"{db} has an effscope_records table that is not effscope's (missing column(s) id, uid, "
    for read_only in (False, True):
        with pytest.raises(StoreError, match=r"that is not effscope's .*so it is not an effscope record store"):
            RecordStore(str(db), read_only=read_only)
    with pytest.raises(ReportError, match="not an effscope record store; name another file"):
        load_records_db(str(db))
    assert message in _one_error_line(_cli("export", "--db", str(db), "-o", "-", "--format", "csv"))
    assert message in _one_error_line(_cli("report", "--db", str(db), "-o", str(tmp_path / "r.html")))
    with sqlite3.connect(db) as conn:
        assert conn.execute("select x from effscope_records").fetchall() == [(7,)]  # the other program's data kept
    conn.close()


def test_reading_never_writes(tmp_path):
    empty = tmp_path / "empty.db"
    empty.touch()
    assert RecordStore(str(empty), read_only=True).records() == []
    r = _cli("export", "--db", str(empty), "-o", "-", "--format", "csv")
    assert "no Record in" in _one_error_line(r)
    assert empty.stat().st_size == 0  # no schema written into it
    missing = tmp_path / "missing.db"
    with pytest.raises(StoreError, match="there is no record store at"):
        RecordStore(str(missing), read_only=True)
    assert not missing.exists()
    with pytest.raises(StoreError, match="opened read-only"):
        RecordStore(str(empty), read_only=True).add(_record())


def test_export_reads_a_write_protected_store(tmp_path, monkeypatch):
    db = tmp_path / "r.db"
    (record,) = _store(db, n=1)
    os.chmod(db, 0o444)
    if os.access(db, os.W_OK):  # root ignores permissions: refuse write access as a user's account would
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda p, mode, **kw: mode != os.W_OK and real_access(p, mode, **kw))
    assert [r.uid for r in RecordStore(str(db), read_only=True).records()] == [record.uid]
    with pytest.raises(StoreError, match="cannot write the record store .*permission denied"):
        RecordStore(str(db))  # a writer still says so at once


def test_a_wal_store_in_a_read_only_folder_is_read_from_the_file_alone(tmp_path, monkeypatch):
    from effscope.profile.store import failure_reason

    folder = tmp_path / "ro"
    folder.mkdir()
    db = folder / "r.db"
    _store(db, n=1)
    with sqlite3.connect(db) as conn:
        assert conn.execute("pragma journal_mode").fetchone() == ("wal",)
    conn.close()
    os.chmod(folder, 0o555)
    try:
        if os.access(folder, os.W_OK):  # root may write anywhere: make this process one that may not
            real_access = os.access
            monkeypatch.setattr(os, "access", lambda p, mode, **kw: mode != os.W_OK and real_access(p, mode, **kw))
        assert len(RecordStore(str(db), read_only=True).records()) == 1
        assert sorted(f.name for f in folder.iterdir()) == ["r.db"]  # no -wal or -shm left for the owner to trip on
        # where SQLite still cannot open such a file (a -wal without its -shm), the failure says why
        error = sqlite3.OperationalError("attempt to write a readonly database")
        message = failure_reason(error, f"sqlite:///{db}")
    finally:
        os.chmod(folder, 0o755)
    assert f"it is in WAL mode and its folder {folder} is not writable, so SQLite cannot create its -shm" in message
    assert "copy the file to a writable folder" in message


def test_reading_a_study_in_a_folder_this_process_may_not_write_creates_nothing_there(tmp_path, monkeypatch):
    import optuna

    from effscope.report._load import open_study

    folder = tmp_path / "ro"
    folder.mkdir()
    db = folder / "s.db"
    optuna.create_study(study_name="s", storage=f"sqlite:///{db}").optimize(lambda t: t.suggest_float("x", 0, 1), 2)
    with sqlite3.connect(db) as conn:
        conn.execute("pragma journal_mode=wal")
    conn.close()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: mode != os.W_OK and real_access(p, mode, **kw))
    loaded, _, _ = open_study(str(db))
    assert loaded.study_name == "s" and len(loaded.trials) == 2
    assert sorted(f.name for f in folder.iterdir()) == ["s.db"]  # no -wal or -shm for the owner to trip on


def test_a_folder_is_not_a_store(tmp_path):
    from effscope.report._load import load_records_db
    from effscope.report.data import ReportError

    folder = tmp_path / "adir"
    folder.mkdir()
    wanted = f"{folder} is a folder; a record store or study storage is an SQLite file or an SQLAlchemy URL"
    for read_only in (False, True):
        with pytest.raises(StoreError) as caught:
            RecordStore(str(folder), read_only=read_only)
        assert str(caught.value) == wanted
    with pytest.raises(ReportError) as caught:
        load_records_db(str(folder))
    assert str(caught.value) == f"{folder} is a folder; --db takes a SQLite file or a SQLAlchemy URL"  # its option
    assert wanted in _one_error_line(_cli("export", "--db", str(folder), "-o", "-", "--format", "csv"))


def test_a_locked_store_says_what_that_means_and_loses_nothing(tmp_path, monkeypatch):
    import effscope.profile.store as store_module

    db = tmp_path / "r.db"
    _store(db, n=2)
    monkeypatch.setattr(store_module, "SQLITE_BUSY_TIMEOUT_S", 0.1)
    store = RecordStore(str(db))
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another process in the middle of a write
    try:
        with pytest.raises(StoreError) as caught:
            store.add(_record())
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    message = str(caught.value)
    assert message.endswith(
        "database is locked, which means another process holds a write lock on it; retry when that finishes"
    )
    assert len(message.splitlines()) == 1
    assert len(store.records()) == 2
    store.add(_record())  # once the lock is gone, writing works again
    assert _rows(db) == 3


def test_a_disk_io_error_asks_about_the_disk(tmp_path):
    from effscope.profile.store import failure_reason

    error = sqlite3.OperationalError("disk I/O error")
    assert (
        failure_reason(error, f"sqlite:///{tmp_path / 'r.db'}")
        == "disk I/O error; is the disk full, or the file on a network share?"
    )
