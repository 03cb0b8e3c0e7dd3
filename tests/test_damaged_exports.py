"""A damaged Records export given to `report`: a CSV cut off mid-row or hand-edited (a short row, text in a number
column, no target) and JSON nested too deeply are each refused in one sentence naming the record; no design is
invented from what is left."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from _cli import effscope

from effscope.profile.record import Record, Workload
from effscope.profile.store import RecordStore
from effscope.report._load import load_records_file
from effscope.report.data import ReportError


def _export(tmp_path: Path, n: int = 3) -> Path:
    store = RecordStore(str(tmp_path / "r.db"))
    for i in range(n):
        r = Record(target=f"vit{i}", kind="block", workload=Workload(size=(7, 7)).as_dict(), knobs={"heads": 2})
        r.counts = {"params": 10 + i, "macs": 100 + i}
        r.latency = {"latency_ms_p50": 1.5 + i, "latency_ms_p90": 2.0 + i}
        store.add(r)
    out = store.export(tmp_path / "r.csv")
    store.engine.dispose()
    return out


def _edit(path: Path, record: int, column: str, value: str) -> None:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    rows[record][rows[0].index(column)] = value
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)


def test_a_whole_export_reads(tmp_path):
    points = load_records_file(_export(tmp_path)).points
    assert [p.target for p in points] == ["vit0", "vit1", "vit2"]
    assert [p.numbers["latency_ms_p50"] for p in points] == [1.5, 2.5, 3.5]


def test_a_csv_cut_off_mid_row_is_refused_naming_the_row(tmp_path, monkeypatch, capfd):
    path = _export(tmp_path)
    text = path.read_text()
    last = text.rstrip("\n").rsplit("\n", 1)[0]  # header and two rows whole, then the third cut after 3 characters
    path.write_text(last + "\n" + text.rstrip("\n").rsplit("\n", 1)[1][:3] + "\n")
    with open(path, newline="") as f:
        width = len(next(csv.reader(f)))
    with pytest.raises(ReportError, match=rf"record 3 \(line 4\) has 1 of the header's {width} fields, so the file"):
        load_records_file(path)
    code, _, err = effscope(monkeypatch, capfd, ["report", str(path), "-o", str(tmp_path / "o.html")])
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "looks cut off or hand-edited" in err and not (tmp_path / "o.html").exists()


def test_a_row_with_fewer_fields_in_the_middle_is_refused(tmp_path):
    path = _export(tmp_path)
    lines = path.read_text().splitlines()
    lines[2] = ",".join(lines[2].split(",")[:5])
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ReportError, match=r"record 2 \(line 3\) has 5 of the header's"):
        load_records_file(path)


def test_text_in_a_number_column_is_refused_naming_the_record(tmp_path):
    path = _export(tmp_path)
    _edit(path, 2, "latency_ms_p50", "fast")
    with pytest.raises(ReportError, match=r"record 2 \(target 'vit1'\) has latency_ms_p50 'fast', but latency_ms_p50"):
        load_records_file(path)


def test_numbers_in_a_text_column_are_read_as_numbers(tmp_path):
    path = _export(tmp_path)
    _edit(path, 1, "latency_ms_p50", " 1.25 ")  # the whole column then reads as text
    points = load_records_file(path).points
    assert [p.numbers["latency_ms_p50"] for p in points] == [1.25, 2.5, 3.5]


def test_a_row_without_a_target_is_refused_not_named_none(tmp_path):
    path = _export(tmp_path)
    _edit(path, 3, "target", "")
    with pytest.raises(ReportError, match=r"record 3 has no target"):
        load_records_file(path)


def test_json_nested_too_deeply_is_one_sentence(tmp_path, monkeypatch, capfd):
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ReportError, match=r"it is not a JSON table \(its lists or objects are nested too deeply\)"):
        load_records_file(path)
    code, _, err = effscope(monkeypatch, capfd, ["report", str(path), "-o", str(tmp_path / "o.html")])
    assert code == 2 and "Traceback" not in err and "nested too deeply" in err
