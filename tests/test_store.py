"""The record store: append-only, readable as a DataFrame, exportable, and clear about bad locations."""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest

from effscope.profile.record import Record, Workload, canonical_key
from effscope.profile.store import RecordStore, StoreError


def _record(target="vit", p50=1.5, **kw):
    r = Record(
        target=target,
        kind="block",
        workload=Workload(size=(14, 14)).as_dict(),
        knobs={"heads": 4, "depths": (2, 2)},
        **kw,
    )
    r.counts = {"params": 10, "macs": 100, "flops": 200}
    r.latency = {"latency_ms_p50": p50}
    r.memory = {"peak_rss_bytes": None}
    r.missing = {"peak_rss_bytes": "no /proc here"}
    return r


def test_append_only_and_dataframe(tmp_path):
    db = tmp_path / "r.db"
    store = RecordStore(str(db))
    first = store.add(_record(p50=1.5))
    second = store.add(_record(p50=1.7))  # the same measurement again: a new row, nothing overwritten
    assert second == first + 1
    again = RecordStore(str(db))  # a new connection sees both
    df = again.dataframe()
    assert list(df["latency_ms_p50"]) == [1.5, 1.7]
    assert list(df["knob.depths"]) == ["2,2", "2,2"]
    assert df.loc[0, "height"] == 14 and df.loc[0, "missing"] == "peak_rss_bytes: no /proc here"
    assert pd.isna(df.loc[0, "peak_rss_bytes"])  # missing stays missing, never 0


def test_round_trip_keeps_every_field(tmp_path):
    store = RecordStore(str(tmp_path / "r.db"))
    r = _record(study="s1", trial=3)
    r.key = canonical_key("vit", r.knobs, Workload(), "cpu")
    store.add(r)
    (back,) = store.records()
    assert back.uid == r.uid and back.knobs == {"heads": 4, "depths": [2, 2]} and back.trial == 3
    assert store.latest(r.key).uid == r.uid and store.latest("nope") is None
    assert [x.uid for x in store.records(study="s1")] == [r.uid] and store.records(study="s2") == []


def test_failed_records_are_kept_and_not_served_from_the_cache(tmp_path):
    store = RecordStore(str(tmp_path / "r.db"))
    bad = _record(status="failed", error="out of memory on cpu")
    bad.key = "k"
    store.add(bad)
    assert store.latest("k") is None
    assert store.dataframe()["error"].tolist() == ["out of memory on cpu"]


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".json"])
def test_export(tmp_path, suffix):
    store = RecordStore(str(tmp_path / "r.db"))
    store.add(_record(p50=2.0))
    path = store.export(tmp_path / f"out{suffix}")
    if suffix == ".csv":
        back = pd.read_csv(path)
    elif suffix == ".parquet":
        back = pd.read_parquet(path)
    else:
        back = pd.DataFrame(json.loads(path.read_text()))
    assert float(back["latency_ms_p50"][0]) == 2.0


@pytest.mark.parametrize("suffix", [".parquet", ".json", ".csv"])
def test_export_keeps_booleans_and_small_numbers_where_some_records_lack_them(tmp_path, suffix):
    """A failed Record has no latency_stable: the column must stay boolean (Parquet once wrote the text "False",
    which a filter reads as true), and a tiny number must not round to 0 (JSON once kept 10 decimals)."""
    store = RecordStore(str(tmp_path / "r.db"))
    for stable in (True, False):
        r = _record()
        r.latency.update(latency_stable=stable, latency_ms_p99_lo=3.2e-11)
        store.add(r)
    store.add(_record(status="failed", error="out of memory on cpu"))
    path = store.export(tmp_path / f"out{suffix}")
    read = {".parquet": pd.read_parquet, ".json": lambda p: pd.DataFrame(json.loads(p.read_text())), ".csv": None}
    if read[suffix] is None:  # CSV has no types: the cells read back as pandas infers them
        assert pd.read_csv(path)["latency_stable"].tolist()[:2] == [True, False]
        return
    back = read[suffix](path)
    assert back["latency_stable"].tolist()[:2] == [True, False] and pd.isna(back["latency_stable"][2])
    assert back[back["latency_stable"].fillna(False).astype(bool)].shape[0] == 1  # only the stable Record
    assert back["latency_ms_p99_lo"][0] == pytest.approx(3.2e-11)


def test_a_json_export_keeps_every_digit_of_a_float(tmp_path):
    """pandas' to_json keeps 15 significant digits at most: 0.48425750014757796 came back 0.484257500147578."""
    store = RecordStore(str(tmp_path / "r.db"))
    store.add(_record(p50=0.48425750014757796))
    failed = _record(status="failed", error="out of memory on cpu")
    failed.latency = {}
    store.add(failed)  # no latency: null, never NaN
    path = store.export(tmp_path / "out.json")
    back = json.loads(path.read_text())
    assert back[0]["latency_ms_p50"] == 0.48425750014757796 and back[1]["latency_ms_p50"] is None
    assert list(back[0]) == list(store.dataframe().columns)  # one object per Record, every column, in order
    assert path.read_text().startswith('[\n {\n  "')  # as pandas wrote it: indent 1, no space after ':'


def test_canonical_key_is_stable_and_discriminating():
    w = Workload(batch=2)
    assert canonical_key("hilo", {"a": 1, "b": 2}, w, "cpu") == canonical_key("hilo", {"b": 2, "a": 1}, w, "cpu")
    assert canonical_key("hilo", {"a": 1}, w, "cpu") != canonical_key("hilo", {"a": 1}, Workload(batch=4), "cpu")
    assert canonical_key("hilo", {"a": 1}, w, "cpu") != canonical_key("hilo", {"a": 1}, w, "H100")


def test_bad_locations_are_one_clear_sentence(tmp_path):
    with pytest.raises(StoreError, match="folder .* does not exist"):
        RecordStore(str(tmp_path / "no" / "such" / "r.db"))
    with pytest.raises(StoreError, match="cannot open the record store 'nosuchdb://x'.*SQLAlchemy URL"):
        RecordStore("nosuchdb://x")
    pytest.importorskip("psycopg2")
    with pytest.raises(
        StoreError, match=r"cannot reach the record store 'postgresql\+psycopg2://u:\*\*\*@127.0.0.1:1/"
    ):
        RecordStore("postgresql+psycopg2://u:secret@127.0.0.1:1/db")
    ro = tmp_path / "ro"
    ro.mkdir()
    os.chmod(ro, 0o500)
    if os.access(ro, os.W_OK):  # root ignores permissions
        pytest.skip("running as root: permission checks do not apply")
    with pytest.raises(StoreError, match="permission denied"):
        RecordStore(str(ro / "r.db"))


def test_export_rejects_unknown_formats(tmp_path):
    from effscope.errors import SpecError

    store = RecordStore(str(tmp_path / "r.db"))
    with pytest.raises(SpecError, match="suffix must be one of .csv, .parquet, .json"):
        store.export(tmp_path / "x.xlsx")


class _Connection:
    """An SQLite connection as the pragmas see it: the statements run, and a journal-mode switch that finds the
    file locked `locked` times before it succeeds."""

    def __init__(self, mode: str, locked: int) -> None:
        self.mode, self.locked, self.statements = mode, locked, []

    def cursor(self):
        return self

    def execute(self, sql: str):
        import sqlite3

        self.statements.append(sql)
        if sql == "PRAGMA journal_mode=WAL" and self.locked:
            self.locked -= 1
            raise sqlite3.OperationalError("database is locked")
        return self

    def fetchone(self):
        return (self.mode,)

    def close(self) -> None:
        pass


def test_the_wal_switch_waits_for_other_connections_and_retries_what_sqlite_will_not_wait_for(monkeypatch):
    from effscope.profile.store import sqlite_connection_pragmas

    monkeypatch.setattr("time.sleep", lambda s: None)
    racing = _Connection("delete", locked=3)
    sqlite_connection_pragmas(racing, busy_timeout_ms=60_000, synchronous="NORMAL")
    assert racing.statements == [
        "PRAGMA busy_timeout=60000",  # first: everything after it waits for other connections' locks
        "PRAGMA journal_mode",
        *["PRAGMA journal_mode=WAL"] * 4,  # "database is locked" three times, then switched
        "PRAGMA synchronous=NORMAL",
    ]
    already = _Connection("wal", locked=0)
    sqlite_connection_pragmas(already, busy_timeout_ms=30_000)
    assert already.statements == ["PRAGMA busy_timeout=30000", "PRAGMA journal_mode"]
