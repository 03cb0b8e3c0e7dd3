"""Records back into a store: Record.from_dict, `effscope import` (idempotent, one sentence per bad input, nothing
stored lost), and a reader without write access that leaves no -wal or -shm file behind."""

from __future__ import annotations

import json
import os
import sqlite3

import pytest
from _cli import effscope

from effscope.profile.record import NotARecordError, Record, Workload
from effscope.profile.store import RecordStore, StoreError


def _record(target="vit", p50=1.5) -> Record:
    r = Record(target=target, kind="block", workload=Workload(size=(14, 14)).as_dict(), knobs={"depths": (2, 2)})
    r.latency = {"latency_ms_p50": p50}
    r.details = {"input_size": [14, 14], "time_by_module_ms": {"attn": 0.5}}
    r.protocol = {"name": "effscope-v2"}
    return r


def _stored(db, n=2) -> list[Record]:
    store = RecordStore(str(db))
    records = [_record(p50=1.0 + i) for i in range(n)]
    for r in records:
        store.add(r)
    store.engine.dispose()  # the last connection closes: SQLite checkpoints and deletes -wal and -shm
    return records


def _no_write_access(monkeypatch) -> None:
    """Refuse write access as a user's account would (the tests may run as root, whom permissions do not stop)."""
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: mode != os.W_OK and real_access(p, mode, **kw))


def _sidecars(db) -> list[str]:
    return sorted(p.name for p in db.parent.iterdir() if p.name != db.name)


def _rows(db) -> list[tuple[str, str]]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("select uid, data from effscope_records order by id").fetchall()
    conn.close()
    return rows


# ------------------------------------------------------------------------------------------- read-only reader


def test_a_reader_without_write_access_leaves_no_wal_files(tmp_path, monkeypatch, capfd):
    db = tmp_path / "r.db"
    records = _stored(db)
    assert _sidecars(db) == [] and db.read_bytes()[18:20] == b"\x02\x02"  # WAL mode, checkpointed
    _no_write_access(monkeypatch)
    store = RecordStore(str(db), read_only=True)
    assert [r.uid for r in store.records()] == [r.uid for r in records]
    assert store.distinct("target") == ["vit"]
    assert _sidecars(db) == []  # none while the connection is open either (as root, SQLite deletes its own on close)
    with pytest.raises(StoreError) as caught:
        store.add(_record())
    assert str(caught.value) == (
        f"cannot write to the record store {db}: it was opened read-only, as this process may not write it or its "
        "folder"
    )
    store.engine.dispose()
    code, out, err = effscope(monkeypatch, capfd, ["export", "--db", str(db), "-o", "-", "--format", "json"])
    assert code == 0 and [row["uid"] for row in json.loads(out)] == [r.uid for r in records], err
    assert _sidecars(db) == []  # the owner's next write is not refused for a -shm someone else owns
    monkeypatch.undo()
    assert RecordStore(str(db)).add(_record()) == 3


def test_a_reader_without_write_access_sees_what_a_working_writer_has_not_checkpointed(tmp_path, monkeypatch):
    db = tmp_path / "r.db"
    _stored(db)
    writer = RecordStore(str(db))
    late = _record(target="late")
    writer.add(late)  # in the -wal until the writer closes
    assert _sidecars(db) == ["r.db-shm", "r.db-wal"]
    _no_write_access(monkeypatch)
    reader = RecordStore(str(db), read_only=True)
    assert [r.target for r in reader.records()] == ["vit", "vit", "late"]
    reader.engine.dispose()
    writer.engine.dispose()


def test_a_reader_without_write_access_warns_of_a_wal_a_crashed_writer_left(tmp_path, monkeypatch, capfd):
    import shutil

    db = tmp_path / "r.db"
    _stored(db)
    writer = RecordStore(str(db))
    writer.add(_record(target="late"))  # committed into the -wal, not yet into the file
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    for name in ("r.db", "r.db-wal"):  # what a writer killed mid-run leaves when its -shm is gone
        shutil.copy(tmp_path / name, crashed / name)
    writer.engine.dispose()
    _no_write_access(monkeypatch)
    reader = RecordStore(str(crashed / "r.db"), read_only=True)
    assert [r.target for r in reader.records()] == ["vit", "vit"]  # without the -wal's Record, and said so:
    assert "r.db-wal holds writes not yet in r.db (a writer stopped without its -shm)" in capfd.readouterr().err
    reader.engine.dispose()


def test_a_reader_with_write_access_still_opens_read_write(tmp_path):
    """mode=rw: SQLite deletes the -wal and -shm files it made when the reader closes."""
    db = tmp_path / "r.db"
    _stored(db, n=1)
    store = RecordStore(str(db), read_only=True)
    assert len(store.records()) == 1 and "mode=rw" in str(store.engine.url)
    store.engine.dispose()
    assert _sidecars(db) == []
    with pytest.raises(StoreError, match=r"it was opened read-only; open it without read_only$"):
        store.add(_record())


# ------------------------------------------------------------------------------------------- Record.from_dict


def test_from_dict_is_the_inverse_of_to_dict_and_from_json_uses_it():
    r = _record()
    r.study, r.trial, r.flags, r.missing = "s", 3, ["unstable"], {"energy_j_per_img": "no NVML"}
    back = Record.from_dict(r.to_dict())
    assert back.to_dict() == r.to_dict() and back.uid == r.uid and back.details["time_by_module_ms"] == {"attn": 0.5}
    assert Record.from_json(r.to_json()).to_dict() == back.to_dict()
    newer = {**r.to_dict(), "gpu_power_trace": [1, 2], "zz": 0}
    assert Record.from_dict(newer).to_dict() == r.to_dict()  # reading a newer effscope's Record: extras ignored
    with pytest.raises(
        NotARecordError, match=r"^it has field\(s\) this effscope does not know \(gpu_power_trace, zz\)"
    ):
        Record.from_dict(newer, strict=True)
    with pytest.raises(NotARecordError, match="its data lacks workload"):
        Record.from_dict({"target": "vit", "kind": "block"})
    with pytest.raises(NotARecordError, match="its data is a JSON list, not an object"):
        Record.from_dict([r.to_dict()])


# ------------------------------------------------------------------------------------------- effscope import


def _write(path, data) -> str:
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


def test_import_adds_new_records_and_skips_those_already_stored(tmp_path, monkeypatch, capfd):
    db = tmp_path / "r.db"
    (old,) = _stored(db, n=1)
    new = [_record(target="a"), _record(target="b")]
    rescue = _write(tmp_path / "rescue.json", [old.to_dict(), *(r.to_dict() for r in new), new[0].to_dict()])
    code, out, err = effscope(monkeypatch, capfd, ["import", rescue, "--db", str(db)])
    assert code == 0, err
    said = " ".join(out.split())  # rich wraps a long line
    assert said == f"2 record(s) from {rescue} added to sqlite:///{db}; 2 skipped (already stored)"
    assert _rows(db) == [(r.uid, r.to_json()) for r in (old, *new)]  # stored exactly as measured
    code, out, _ = effscope(monkeypatch, capfd, ["import", rescue, "--db", str(db)])
    assert code == 0 and out.startswith("0 record(s)") and "4 skipped" in out
    assert len(_rows(db)) == 3


def test_import_uses_the_default_store_as_export_does(tmp_path, monkeypatch, capfd):
    db = tmp_path / "env.db"
    monkeypatch.setenv("EFFSCOPE_DB", str(db))
    r = _record()
    code, out, err = effscope(monkeypatch, capfd, ["import", _write(tmp_path / "one.json", r.to_dict())])
    assert code == 0 and out.startswith("1 record(s)"), err
    assert [x.uid for x in RecordStore(str(db), read_only=True).records()] == [r.uid]


def _one_error(monkeypatch, capfd, args: list[str]) -> str:
    code, out, err = effscope(monkeypatch, capfd, args)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err.strip().removeprefix("error: ")


def test_import_refuses_what_is_not_effscope_records_in_one_sentence_and_stores_nothing(tmp_path, monkeypatch, capfd):
    db = tmp_path / "r.db"
    stored = _stored(db)
    before = _rows(db)
    good = _record().to_dict()
    flat = tmp_path / "flat.json"
    RecordStore(str(db), read_only=True).export(flat)  # the flat rows that export and profile --json write
    cases = {
        _write(tmp_path / "bad.json", "[{"): "it is not JSON (",
        _write(tmp_path / "num.json", "7"): "it holds a JSON number, not Records",
        _write(tmp_path / "empty.json", "[]"): "it holds no Records",
        _write(tmp_path / "other.json", [good, {"name": "x"}]): "item 2 is not an effscope Record (its data lacks",
        _write(tmp_path / "newer.json", [{**good, "extra": 1}]): "(it has field(s) this effscope does not know (extra)",
        _write(tmp_path / "nouid.json", [{k: v for k, v in good.items() if k != "uid"}]): "item 1 has no uid",
        str(flat): "it holds flat rows (as effscope profile --json and effscope export write them)",
        str(RecordStore(str(db), read_only=True).export(tmp_path / "flat.csv")): "a CSV file holds flat rows",
        _write(tmp_path / "null.json", "null"): "it holds a JSON null, not Records",
        # the store's columns would refuse these half-way through a file: each is caught before the first is stored
        _write(tmp_path / "nostatus.json", [good, {**good, "uid": "b" * 32, "status": None}]): (
            "item 2 cannot be stored: its status is missing"
        ),
        _write(tmp_path / "longuid.json", [{**good, "uid": "u" * 40}]): (
            "item 1 cannot be stored: its uid is longer than the store takes (40 characters, at most 32)"
        ),
        str(tmp_path / "missing.json"): "no such file",
        str(tmp_path): "Is a directory",
    }
    for path, why in cases.items():
        error = _one_error(monkeypatch, capfd, ["import", path, "--db", str(db)])
        assert error.startswith(f"cannot import '{path}': ") and why in error, error
    assert _rows(db) == before and len(before) == len(stored)


def test_import_into_an_unreachable_store_is_one_sentence(tmp_path, monkeypatch, capfd):
    path = _write(tmp_path / "r.json", [_record().to_dict()])
    error = _one_error(monkeypatch, capfd, ["import", path, "--db", str(tmp_path / "no" / "r.db")])
    assert (
        error == f"cannot create the record store {tmp_path / 'no' / 'r.db'}: folder {tmp_path / 'no'} does not exist"
    )


def test_a_store_failing_midway_keeps_what_was_added_and_a_second_import_adds_the_rest(tmp_path, monkeypatch, capfd):
    db = tmp_path / "r.db"
    _stored(db, n=0)
    records = [_record(target=t) for t in "abc"]
    path = _write(tmp_path / "r.json", [r.to_dict() for r in records])
    real_add = RecordStore.add

    def locked_on_b(self, record):
        if record.target == "b":  # as add() reports a write the lock refused
            raise StoreError(self._failure("write to", sqlite3.OperationalError("database is locked")))
        return real_add(self, record)

    monkeypatch.setattr(RecordStore, "add", locked_on_b)
    error = _one_error(monkeypatch, capfd, ["import", path, "--db", str(db)])
    assert "database is locked, which means another process holds a write lock on it" in error
    assert error.endswith(
        "(after adding 1 and skipping 0 of the 3 Records in " + path + "; importing the file again adds the rest)"
    )
    assert [uid for uid, _ in _rows(db)] == [records[0].uid]
    monkeypatch.setattr(RecordStore, "add", real_add)
    code, out, _ = effscope(monkeypatch, capfd, ["import", path, "--db", str(db)])
    assert code == 0 and out.startswith("2 record(s)") and "1 skipped" in out
    assert [uid for uid, _ in _rows(db)] == [r.uid for r in records]


def test_a_report_reads_an_export_whose_suffix_is_upper_case_as_export_wrote_it(tmp_path):
    from effscope.report._load import load_records_file

    store = RecordStore(str(tmp_path / "r.db"))
    stored = _stored(store.url)
    store.export(str(tmp_path / "R.CSV"))
    source = load_records_file(tmp_path / "R.CSV")
    assert sorted(p.target for p in source.points) == sorted(r.target for r in stored)


@pytest.mark.parametrize("name", ["none.csv", "none.json"])
def test_a_report_of_an_export_of_nothing_says_it_holds_no_records(tmp_path, name):
    from effscope.report._load import load_records_file
    from effscope.report.data import ReportError

    store = RecordStore(str(tmp_path / "r.db"))
    _stored(store.url)
    store.export(str(tmp_path / name), target="nothing")  # a filter that matches no Record
    with pytest.raises(ReportError, match=r"holds no records$"):
        load_records_file(tmp_path / name)


def test_a_report_reads_one_record_kept_whole(tmp_path):
    from effscope.report._load import load_records_file

    (tmp_path / "one.json").write_text(json.dumps(_record().to_dict()))  # one object, as `effscope import` takes
    assert [p.target for p in load_records_file(tmp_path / "one.json").points] == ["vit"]


def test_a_report_reads_a_json_export_s_values_as_the_store_holds_them(tmp_path):
    from effscope.report._load import load_records_file

    store = RecordStore(str(tmp_path / "r.db"))
    record = _record()
    record.knobs["mlp_ratio"], record.env = 4.0, {"mkl_version": "2024.2"}
    store.add(record)
    store.export(str(tmp_path / "r.json"))
    (point,) = load_records_file(tmp_path / "r.json").points  # JSON parsed once, not guessed at by pandas
    assert (point.knobs["mlp_ratio"], point.env["mkl_version"], point.order) == (4.0, "2024.2", record.created_at)
    assert type(point.knobs["mlp_ratio"]) is float  # not 4: a whole float stays a float, as in the store


@pytest.mark.parametrize("suffix", [".json", ".csv"])
def test_a_report_reads_whole_numbers_back_as_ints_where_other_records_lack_them(tmp_path, suffix):
    """JSON keeps a knob 3 and a CPU family 25 as ints beside a Record without them; CSV cannot (a column with blanks
    reads 25.0), so the CPU identity is written the same from either."""
    from effscope.profile.record import device_identity
    from effscope.report._load import load_records_file

    store = RecordStore(str(tmp_path / "r.db"))
    cpu = {"device_type": "cpu", "device_name": "AMD EPYC", "cpu_vendor": "AuthenticAMD", "cpu_family": 25,
           "cpu_model_number": 1}  # fmt: skip
    with_them = _record()
    with_them.knobs["lofi_heads"], with_them.env = 3, cpu
    for r in (with_them, _record("pvt")):
        store.add(r)
    store.export(str(tmp_path / f"r{suffix}"))
    first = next(p for p in load_records_file(tmp_path / f"r{suffix}").points if p.target == "vit")
    assert device_identity(first.env) == device_identity(cpu) == "AuthenticAMD family 25 model 1"
    if suffix == ".json":
        assert type(first.knobs["lofi_heads"]) is int and type(first.env["cpu_family"]) is int


@pytest.mark.parametrize(
    ("text", "what"),
    [
        ("42", "it holds the number 42"),
        ('"hello"', 'it holds the string "hello"'),
        ("NaN", "it holds the number NaN"),
        ("null", "it holds null"),
        ('{"a": 1}', "it holds a single object"),
        ('{"target": "vit"}', "it holds a single object"),
        ('{"target": [1, 2]}', "it holds a single object"),
        ('[{"target": "vit"}, 5]', "item 2 of its list is the number 5"),
        ("[[1]]", "item 1 of its list is a list"),
    ],
)
def test_a_json_file_that_is_not_a_list_of_objects_is_one_sentence(tmp_path, text, what):
    from effscope.report._load import load_records_file
    from effscope.report.data import ReportError

    path = tmp_path / "b.json"
    path.write_text(text)
    with pytest.raises(ReportError) as e:
        load_records_file(path)
    assert str(e.value) == (
        f"'{path}' is not an effscope Records export: a JSON export is a list of objects, one per Record, but {what}"
    )


def test_a_report_of_a_row_with_a_bad_size_names_the_file_the_row_and_the_value(tmp_path, monkeypatch, capfd):
    (tmp_path / "b.json").write_text('[{"target": "vit", "height": 7.5, "width": "x"}]')
    monkeypatch.chdir(tmp_path)
    error = _one_error(monkeypatch, capfd, ["report", "b.json"])
    assert error == (
        "cannot read records from 'b.json': record 1 (target 'vit') has height 7.5, but height must be a whole "
        "number ≥ 1"
    )


def test_a_record_another_process_stored_since_the_look_up_is_skipped_not_an_error(tmp_path, monkeypatch):
    store = RecordStore(str(tmp_path / "r.db"))
    record = _record()
    store.add(record)
    real, looks = RecordStore._has_uid, []

    def misses_first(self, uid):  # the first look-up misses it, as when another process stores it just after
        looks.append(uid)
        return len(looks) > 1 and real(self, uid)

    monkeypatch.setattr(RecordStore, "_has_uid", misses_first)
    assert store.add_if_new(record) is False  # the unique uid refused the copy; it is there: skipped
    assert len(store.records()) == 1 and len(looks) == 2
