"""A refused or failed run leaves nothing behind: no database file and no study that it created and stored nothing
in, and whatever was there before, untouched. Refusals are checked before the database is opened; a calibration
whose every design fails removes what it created. Fast: fake training, no measurement."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
from _cli import effscope
from _spaces import SMALL_LITV2, load, tiny

from effscope.profile.record import Record
from effscope.profile.store import RecordStore, new_sqlite_file, remove_if_empty


@pytest.fixture
def place(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("EFFSCOPE_DB", raising=False)
    return tmp_path


def _contents(db: Path) -> dict[str, int]:
    """Each table of an SQLite file with its number of rows, read without writing."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        names = [n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {n: conn.execute(f'SELECT count(*) FROM "{n}"').fetchone()[0] for n in names}


def _databases(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".db" in p.name)


# --------------------------------------------------------------------------------------------------- search --predictor


@pytest.mark.parametrize("db", [[], ["--db", "new.db"]], ids=["default-db", "new-db"])
def test_a_search_refused_for_its_predictor_creates_no_database(place, monkeypatch, capfd, db):
    code, _, err = effscope(monkeypatch, capfd, ["search", str(tiny(place)), *db, "--predictor", "nosuch"])
    assert code == 2 and "no latency table 'nosuch'" in err and "(stored: none)" in err, err
    assert _databases(place) == []


def test_a_latency_table_of_another_device_is_refused_leaving_its_database_as_it_was(place, monkeypatch, capfd):
    import sqlalchemy as sa

    from effscope.search import predictor as P

    space = load(tiny(place))
    table = P.LatencyTable(
        name="t", space=space.name, target=space.target, kind=space.kind, workload=space.workload.as_dict(),
        device_name="another device", statistic=space.latency_budget.statistic, features=[], entries=[],
        fit={"kind": "sum"}, validation={},
    )  # fmt: skip
    engine = sa.create_engine("sqlite:///l.db")
    P.save_table(SimpleNamespace(engine=engine), table)  # a database holding only that table
    engine.dispose()
    before = _contents(place / "l.db")
    code, _, err = effscope(monkeypatch, capfd, ["search", "tiny.toml", "--db", "l.db", "--predictor", "t"])
    assert code == 2 and "latency table 't' does not fit space tiny" in err, err
    assert _contents(place / "l.db") == before == {"effscope_luts": 1}  # no Record table, no study added


# --------------------------------------------------------------------------------------------------- lut build


@pytest.mark.parametrize(
    "options,phrase",
    [
        (["--samples", "1"], "--samples must be >= 2"),
        (["--name", " x"], "--name must be a name of 1 to 200 printable characters"),
        (["--samples", "100"], "fewer than the 108 asked for (--samples + --holdout)"),
        (["--train"], "latency tables predict a forward's latency"),
    ],
    ids=["samples", "name", "too-many", "train-mode"],
)
def test_a_refused_lut_build_creates_no_database(place, monkeypatch, capfd, options, phrase):
    space = tiny(place)
    if options == ["--train"]:
        space.write_text(space.read_text().replace("[workload]\n", '[workload]\nmode = "train"\n'))
        options = []
    code, _, err = effscope(monkeypatch, capfd, ["lut", "build", str(space), "--db", "l.db", *options])
    assert code == 2 and phrase in err, err
    assert _databases(place) == []


def test_a_lut_build_names_an_unusable_database_before_it_draws_designs(place, monkeypatch, capfd):
    # 100000 designs would take minutes to refuse; the missing folder is named first, before any drawing
    args = ["lut", "build", str(tiny(place)), "--db", "no/such/folder/l.db", "--samples", "100000"]
    code, _, err = effscope(monkeypatch, capfd, args)
    assert code == 2 and "no/such/folder does not exist" in err and "asked for" not in err, err
    Path("not-effscope.db").write_text("plain text")
    code, _, err = effscope(monkeypatch, capfd, [*args[:3], "--db", "not-effscope.db"])
    assert code == 2 and "not-effscope.db is not an SQLite database" in err, err
    assert Path("not-effscope.db").read_text() == "plain text"


# --------------------------------------------------------------------------------------------------- calibrate


class Training:
    """Stands in for the quality process: each design trains (`fail` None), fails with that reason, or is
    interrupted (`fail` a KeyboardInterrupt)."""

    fail: str | BaseException | None = None

    def __init__(self, **_):
        pass

    def call(self, fn, kwargs, *, timeout):
        if isinstance(Training.fail, BaseException):
            raise Training.fail
        if Training.fail is not None:
            return dict.fromkeys(kwargs["names"], Training.fail)
        return {name: float(i + 1) for i, name in enumerate(kwargs["names"])}

    def close(self):
        pass


@pytest.fixture
def training(monkeypatch):
    from effscope.search import objectives

    Training.fail = None
    monkeypatch.setattr(objectives, "QualityProcess", Training)
    return Training


def _calibrate(monkeypatch, capfd, place: Path, images: Path, db: str, *more: str) -> tuple[int, str, str]:
    (place / "cal.toml").write_text(SMALL_LITV2)
    args = ["calibrate", "cal.toml", "--data", str(images), "--samples", "4", "--db", db, *more]
    return effscope(monkeypatch, capfd, args)


def test_a_calibration_whose_every_design_fails_leaves_no_database(place, monkeypatch, capfd, images, training):
    training.fail = "out of memory"
    code, _, err = _calibrate(monkeypatch, capfd, place, images, "c.db")
    assert code == 1 and "error: all 4 designs failed to train, so no calibration was stored" in err, err
    assert _databases(place) == []


def test_a_failed_calibration_leaves_no_study_in_a_database_that_holds_records(
    place, monkeypatch, capfd, images, training
):
    record = Record(target="hilo", kind="block", workload={})
    RecordStore("r.db").add(record)
    training.fail = "out of memory"
    code, _, err = _calibrate(monkeypatch, capfd, place, images, "r.db")
    assert code == 1, err
    assert optuna.get_all_study_names("sqlite:///r.db") == []
    assert [r.uid for r in RecordStore("r.db", read_only=True).records()] == [record.uid]  # what was there stays


def test_a_failed_calibration_removes_only_the_study_it_created(place, monkeypatch, capfd, images, training):
    code, _, err = _calibrate(monkeypatch, capfd, place, images, "c.db")
    assert code == 0, err
    before = optuna.load_study(study_name="cal-cpu", storage="sqlite:///c.db").user_attrs["calibration"]
    training.fail = "out of memory"
    code, _, err = _calibrate(monkeypatch, capfd, place, images, "c.db", "--study", "new")
    assert code == 1, err
    assert optuna.get_all_study_names("sqlite:///c.db") == ["cal-cpu"]
    code, _, err = _calibrate(monkeypatch, capfd, place, images, "c.db", "--steps", "3")  # nothing to reuse
    assert code == 1, err
    assert optuna.load_study(study_name="cal-cpu", storage="sqlite:///c.db").user_attrs["calibration"] == before


def test_a_calibration_interrupted_before_any_design_trained_leaves_no_database(
    place, monkeypatch, capfd, images, training
):
    training.fail = KeyboardInterrupt()
    code, _, err = _calibrate(monkeypatch, capfd, place, images, "c.db")
    assert code == 130 and "no design had finished training, so nothing of this calibration was stored" in err, err
    assert _databases(place) == []


# --------------------------------------------------------------------------------------------------- the helpers


def test_only_a_new_database_that_holds_nothing_is_removed(place):
    assert new_sqlite_file("sqlite:///" + str(place / "x.db")) == place / "x.db"
    RecordStore("empty.db").engine.dispose()
    optuna.storages.RDBStorage("sqlite:///empty.db").engine.dispose()  # Optuna's tables, stamped with its version
    assert remove_if_empty(place / "empty.db") and _databases(place) == []
    store = RecordStore("kept.db")
    store.add(Record(target="hilo", kind="block", workload={}))
    store.engine.dispose()
    assert new_sqlite_file("sqlite:///" + str(place / "kept.db")) is None  # one already there is never named
    assert not remove_if_empty(place / "kept.db") and _contents(place / "kept.db")["effscope_records"] == 1


def test_a_study_is_deleted_only_while_no_trial_has_started(place):
    from effscope.search.storage import delete_unused_study

    storage = optuna.storages.RDBStorage("sqlite:///s.db")
    study = optuna.create_study(study_name="used", storage=storage)
    study.enqueue_trial({"x": 1.0})
    study.tell(study.ask(), 1.0)
    optuna.create_study(study_name="unused", storage=storage).enqueue_trial({"x": 1.0})
    assert not delete_unused_study(storage, "used") and delete_unused_study(storage, "unused")
    assert optuna.get_all_study_names(storage) == ["used"]


def test_a_new_database_another_process_has_open_is_kept(place):
    """That process may store there later (a profile measuring while a calibration beside it fails): removing the
    file under it would lose what it stores."""
    import subprocess
    import sys

    from effscope.profile.store import open_elsewhere

    RecordStore("shared.db").engine.dispose()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sqlite3, sys, time; sqlite3.connect('shared.db').execute('select 1'); "
         "print('open', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "open"
        assert open_elsewhere(place / "shared.db")
        assert not remove_if_empty(place / "shared.db") and (place / "shared.db").exists()
    finally:
        holder.kill()
        holder.wait()  # reaped: its descriptors are gone
    assert remove_if_empty(place / "shared.db") and _databases(place) == []
