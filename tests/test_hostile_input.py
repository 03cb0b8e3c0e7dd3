"""Bad input, as a hostile but realistic user types it: one table of (command, exit code, a phrase the message must
contain). Every case must end with that code, print no traceback, and never print the password of a URL.

The cases run through the console entry point in this process (`effscope.cli.main`, with file-descriptor capture):
each fails during validation, before anything is measured, so the table stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from _cli import effscope

PW = "s3cretpw"  # the password in every URL below; it must never be printed

CASES = [
    # 1. an export or report is never written onto a database in use (its path, another spelling, its -wal file)
    (["profile", "vit", "--db", "{tmp}/x.db", "--csv", "{tmp}/x.db"], 2, "it is a database this command uses"),
    (["profile", "vit", "--db", "{tmp}/x.db", "--json", "{tmp}/../{name}/x.db"], 2, "it is a database this command"),
    (["profile", "vit", "--json", "effscope.db"], 2, "it is a database this command uses"),  # the default database
    (["profile", "vit", "--db", "{tmp}/x.db", "--json", "{tmp}/x.db-wal"], 2, "it is a database this command uses"),
    (["search", "hilo_block", "--db", "{tmp}/r.html", "--report", "{tmp}/r.html"], 2, "it is a database this command"),
    (["report", "--db", "{tmp}/r.html", "-o", "{tmp}/r.html"], 2, "it is a database this command uses"),
    # 2, 3. database URLs: one rule everywhere, passwords masked in every message
    (["profile", "vit", "--db", f"postgresql://u:{PW}@localhost:notaport/db"], 2, "is not a database URL"),
    (
        ["profile", "vit", "--db", f"nosuchdb://u:{PW}@host/db"],
        2,
        "cannot open the record store 'nosuchdb://u:***@host",
    ),
    (["report", "--storage", f"postgresql://u:{PW}@127.0.0.1:1/db"], 2, "'postgresql+psycopg2://u:***@127.0.0.1:1/db'"),
    # 4. the sampler seed is checked before any worker starts
    (["search", "hilo_block", "--seed", "-1", "--db", "{tmp}/s.db"], 2, "must be an integer in [0, 4294967295]"),
    (["search", "hilo_block", "--seed", "4294967295", "--workers", "2", "--db", "{tmp}/s.db"], 2, "[0, 4294967294]"),
    # 8. unusable output paths are found before measuring
    (["profile", "vit", "--json", "{tmp}"], 2, "it is a folder; give a file name"),
    (["profile", "vit", "--json", "{tmp}/ro.json"], 2, "the file is read-only"),
    (["profile", "vit", "--json", "/proc/effscope.json"], 2, "folder /proc does not take new files"),
    (["profile", "vit", "--csv", "/no/such/dir/r.csv"], 2, "folder /no/such/dir does not exist"),
    (["profile", "vit", "--report", "{tmp}/r.txt"], 2, "the report is an HTML file"),
    (["search", "hilo_block", "--db", "{tmp}/s.db", "--report", "/no/such/dir/r.html"], 2, "folder /no/such/dir does"),
    # 9. in-memory SQLite, time limits and devices are checked up front, by every command
    (["search", "hilo_block", "--storage", "sqlite://"], 2, "'sqlite://' is an in-memory SQLite database"),
    (["profile", "vit", "--db", "sqlite:///:memory:"], 2, "is an in-memory SQLite database"),
    (["report", "--storage", "sqlite://"], 2, "is an in-memory SQLite database"),
    (["lut", "build", "hilo_block", "--db", "sqlite://"], 2, "is an in-memory SQLite database"),
    (["calibrate", "lightvit", "--device", "cpu", "--data", "{tmp}/nodata", "--storage", "sqlite://"], 2, "in-memory"),
    (["profile", "vit", "--timeout", "0"], 2, "--timeout must be a positive number of seconds, but got 0"),
    (["profile", "vit", "--timeout", "-1"], 2, "--timeout must be a positive number of seconds, but got -1"),
    (["profile", "vit", "--max-time", "-1"], 2, "--max-time must be a positive number of seconds, but got -1"),
    (["profile", "vit", "--max-time", "nan"], 2, "--max-time must be a positive number of seconds, but got nan"),
    (["profile", "vit", "--device", "cuda:99"], 2, "--device cuda:99 asks for a CUDA device, but"),
    pytest.param(
        ["profile", "vit", "--device", "cuda"],
        2,
        "--device cuda asks for a CUDA device, but",
        marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device"),
    ),
    (["device", "--calibrate", "--device", "cuda:99"], 2, "--device cuda:99 asks for a CUDA device, but"),
    # 11. smaller ones
    (["report", "--db", "{tmp}/x.db", "-o", "/nonexistent/dir/r.html"], 2, "folder /nonexistent/dir does not exist"),
    (["search", "{tmp}/spacedir"], 2, "is a folder; give a .toml file or a shipped space's name"),
    (["search", "{tmp}/tpu.toml", "--db", "{tmp}/s.db"], 2, "tpu.toml: [workload] device must be cpu, cuda or cuda:N"),
    (["search", "hilo_block", "--predictor", "nope", "--db", "{tmp}/s.db"], 2, "no latency table 'nope'"),
    (["profile", "cagevit", "--set", "qkv_bias=maybe"], 2, "knob 'qkv_bias' of"),
    # 6. a module:callable target is looked up, never imported, in the command's own process
    (["profile", "nosuchmod:build"], 2, "no module named 'nosuchmod'"),
    (["profile", "{tmp}/missing.py:build"], 2, "cannot find the file"),
    (["profile", "nosuchmod:"], 2, "is not module:callable"),
    # 12. found before a worker starts: a knob given twice, sizes and counts past what torch or the machine takes
    (["profile", "vit", "--set", "heads=2", "--set", "heads=3"], 2, "--set gives knob 'heads' twice"),
    (["profile", "vit", "--batch", "99999999999999999999"], 2, "--batch must be an integer in [1, 1048576]"),
    (["profile", "vit", "--threads", "100000"], 2, "(the CPUs this process may use), but got 100000"),
    (["profile", "vit", "--tokens", "99999999999999999999"], 2, "--tokens takes N or HxW with integers in [1, 65536]"),
    (["profile", "pvt_sra", "--tokens", "1"], 2, "pvt_sra cannot take --tokens 1x1: pvt_sra: the token grid must"),
    (["profile", "pvtv2_b0", "--resolution", "7"], 2, "pvtv2_b0 cannot take --resolution 7x7"),
    # a BatchNorm on a 1x1 map must not hide the size check (the meta forward runs in eval mode, as measured)
    (["profile", "litv2_s", "--resolution", "31"], 2, "litv2_s cannot take --resolution 31x31: LITv2 needs images"),
    (["profile", "cagevit", "--tokens", "14"], 2, "cagevit takes num_major + num_fusion = 592 tokens, but got 196"),
    (["device", "--calibrate", "--gemm-sizes", "100000000"], 2, "--gemm-sizes takes integers in [1, 32768]"),
    (["device", "--calibrate", "--max-time", "-1"], 2, "--max-time must be a positive number of seconds, but got -1"),
    (["device", "--calibrate", "--dtype", "int8"], 2, "--dtype must be one of fp32, bf16, fp16, but got int8"),
    (["device", "--threads", "3"], 2, "--threads applies only with --calibrate"),
    (["models", "show", "hilo"], 2, "'hilo' is a block, not a model: effscope blocks show hilo"),
    (["search", "{tmp}/cuda99.toml", "--db", "{tmp}/s.db"], 2, "cuda99.toml: [workload] device cuda:99 asks for a"),
    (["lut", "build", "{tmp}/cuda99.toml", "--db", "{tmp}/s.db"], 2, "[workload] device cuda:99 asks for a CUDA"),
    (["report", "{tmp}/x.db"], 2, "(a database is read with --db FILE for profile Records, --storage FILE for"),
    (["report", "{tmp}/junk.json"], 2, "it is not a JSON table"),
    (["profile", "vit", "--db", ""], 2, "the database location is empty"),
]

CUDA99_SPACE = """
[space]
target = "hilo"
[workload]
device = "cuda:99"
[budgets]
latency_ms = 2
[knobs]
heads = [2, 4]
"""

TPU_SPACE = """
[space]
target = "hilo"
[workload]
device = "tpu"
"""


def _ids(case) -> str:
    args = case.values[0] if hasattr(case, "values") else case[0]
    return " ".join(args).replace("{tmp}/", "")


@pytest.fixture
def place(tmp_path, monkeypatch):
    """A working folder with a read-only file, a folder, a space naming an unknown device; the cwd is there."""
    ro = tmp_path / "ro.json"
    ro.write_text("[]")
    ro.chmod(0o444)
    (tmp_path / "spacedir").mkdir()
    (tmp_path / "tpu.toml").write_text(TPU_SPACE)
    (tmp_path / "cuda99.toml").write_text(CUDA99_SPACE)
    (tmp_path / "junk.json").write_text("not json")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("EFFSCOPE_DB", raising=False)
    return tmp_path


@pytest.mark.parametrize("args,code,phrase", CASES, ids=[_ids(c) for c in CASES])
def test_bad_input_is_one_sentence_with_its_exit_code(place, monkeypatch, capfd, args, code, phrase):
    args = [a.format(tmp=place, name=place.name) for a in args]
    got, out, err = effscope(monkeypatch, capfd, args)
    assert got == code, out + err
    assert phrase in err, err
    assert len(err.strip().splitlines()) == 1, err  # one sentence
    assert "Traceback" not in out + err
    assert PW not in out + err
    assert not list(Path(place).glob(".*.tmp.*"))  # no temporary file left behind


# --- a profile run that ends early keeps what it measured ---------------------------------------------------------


def _measured(target: str):
    from effscope.profile.record import Record

    return Record(
        target=target,
        kind="block",
        family="vit",
        workload={"device": "cpu", "size": [14, 14]},
        knobs={},
        counts={"macs": 1e6, "params": 1000},
        latency={"latency_ms_p50": 1.0, "latency_ms_p90": 1.1},
    )


def _two_then(stop: BaseException):
    """A stand-in for measure_plans: two Records arrive, then `stop` is raised while the third is measured."""

    def measure_plans(plans, options, *, worker=None, provenance=None):
        for plan in list(plans)[:2]:
            yield _measured(plan.target.name)
        raise stop

    return measure_plans


def _stored_targets(db: Path) -> list[str]:
    from effscope.profile.store import RecordStore

    return sorted(r.target for r in RecordStore(str(db)).records())


def test_ctrl_c_in_profile_keeps_the_stored_records_and_writes_the_files_asked_for(place, monkeypatch, capfd):
    monkeypatch.setattr("effscope.profile.run.measure_plans", _two_then(KeyboardInterrupt()))
    args = ["profile", "vit", "hilo", "pvt_sra", "--db", "x.db", "--json", "run.json", "--csv", "run.csv"]
    code, out, err = effscope(monkeypatch, capfd, args)
    assert code == 130, out + err
    assert "interrupted: stopped after 2 of 3 target(s); 2 record(s) stored in" in err
    assert _stored_targets(place / "x.db") == ["hilo", "vit"]
    assert {r["target"] for r in json.loads((place / "run.json").read_text())} == {"vit", "hilo"}
    assert (place / "run.csv").read_text().count("\n") == 3  # header and two rows
    assert "Traceback" not in out + err


def test_a_store_that_fails_mid_run_loses_no_measured_record(place, monkeypatch, capfd):
    from effscope.profile import run as run_module
    from effscope.profile.store import RecordStore, StoreError

    stored = run_module.store_record

    def store_once(record, store, calibrations=None):
        if record.target == "hilo":
            raise StoreError("cannot write to the record store 'x.db': database is locked")
        stored(record, store, calibrations)

    monkeypatch.setattr("effscope.profile.run.measure_plans", _two_then(AssertionError("never reached")))
    monkeypatch.setattr("effscope.profile.run.store_record", store_once)
    code, out, err = effscope(monkeypatch, capfd, ["profile", "vit", "hilo", "pvt_sra", "--db", "x.db"])
    assert code == 2, out + err
    assert _stored_targets(place / "x.db") == ["vit"]
    (kept,) = place.glob("effscope-unstored-*.json")  # the Record the store refused, whole, in a file of its own
    assert [r["target"] for r in json.loads(kept.read_text())] == ["hilo"]
    assert f"not stored: hilo; kept whole in {kept.name}; once the store works, this adds them:" in err
    assert f"\n  effscope import {kept.name} --db sqlite:///{place / 'x.db'}\n" in err  # whole, to paste
    assert err.strip().splitlines()[-1].startswith("error: cannot write to the record store")
    monkeypatch.setattr("effscope.profile.run.store_record", stored)  # the store works again: the printed command
    code, out, err = effscope(monkeypatch, capfd, ["import", kept.name, "--db", "x.db"])
    assert code == 0, out + err
    assert _stored_targets(place / "x.db") == ["hilo", "vit"]
    (hilo,) = RecordStore(str(place / "x.db")).records(target="hilo")
    assert hilo.to_dict() == json.loads(kept.read_text())[0]  # the Record as measured: nothing flattened away
    code, out, err = effscope(monkeypatch, capfd, ["report", kept.name, "-o", "kept.html"])  # and a report reads it
    assert code == 0 and "hilo" in (place / "kept.html").read_text(), out + err


def test_refused_records_go_to_the_temp_folder_when_the_working_folder_takes_no_file(place, monkeypatch, capsys):
    import os
    import tempfile
    import time

    from effscope.cli.profile import _keep_unstored
    from effscope.profile.record import Record

    monkeypatch.setattr(time, "strftime", lambda fmt: "20261128-120000")
    monkeypatch.setattr(os, "getpid", lambda: 7)
    (place / "effscope-unstored-20261128-120000-7.json").mkdir()  # the working folder cannot take that file
    (place / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(place / "tmp"))
    record = Record(target="vit", kind="block", workload={"device": "cpu"})
    _keep_unstored([record], "postgresql://u:pw@db.example/x", None)
    kept = place / "tmp" / "effscope-unstored-20261128-120000-7.json"
    assert [r["uid"] for r in json.loads(kept.read_text())] == [record.uid]
    err = capsys.readouterr().err
    assert f"\n  effscope import {kept} --db 'postgresql://u:***@db.example/x'   (put the password back" in err
    assert "pw" not in err


def test_a_forward_that_returns_no_tensor_is_refused_not_counted_as_free():
    from effscope.errors import SpecError
    from effscope.profile.target import Bound

    class Discards(torch.nn.Module):
        def forward(self, x):
            x.sum()

    bound = Bound(Discards(), (torch.ones(2),))
    with pytest.raises(SpecError, match="the forward returned no tensor"):
        bound(*bound.tensors((torch.ones(2),)))


def test_a_calibration_gemm_that_does_not_fit_is_one_sentence(monkeypatch):
    from effscope.errors import SpecError
    from effscope.profile import roofline

    def allocation_fails(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory: ...")

    monkeypatch.setattr(roofline, "_time", allocation_fails)
    with pytest.raises(SpecError, match="no GEMM size fits in memory on cpu .out of memory"):
        roofline.calibrate("cpu", dtypes=("fp32",), sizes=(64,), max_time_s=0.01)
