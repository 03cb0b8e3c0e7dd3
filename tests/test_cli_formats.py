"""Output for programs: --format json/csv on stdout with notes on stderr, `-` for stdout, `effscope export`, name
patterns, a progress line per target when stderr is not a terminal, and a user's model from the working folder."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from effscope.errors import UnknownNameError
from effscope.profile.target import expand_patterns

QUICK = ("--tokens", "7", "--max-time", "0.1", "--no-throughput")


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "effscope", *args], capture_output=True, text=True, timeout=180, cwd=cwd
    )


def test_listings_in_json_and_csv_are_the_data_alone():
    blocks = json.loads(run("blocks", "list", "--format", "json").stdout)
    assert {"block": "hilo", "family": "litv2"}.items() <= next(b for b in blocks if b["block"] == "hilo").items()
    rows = list(csv.DictReader(io.StringIO(run("models", "list", "--format", "csv").stdout)))
    b0 = next(r for r in rows if r["model"] == "pvtv2_b0")
    assert b0["params"] == b0["official_params"] == "3666760" and b0["match"] == "exact"
    r = run("models", "list", "--format", "xml")
    assert r.returncode == 2 and "--format must be one of table, json, csv, but got 'xml'" in r.stderr


@pytest.fixture(scope="module")
def profiled(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """One profile run with `--json -`: its store and its output (a module fixture: it costs a worker start)."""
    db = tmp_path_factory.mktemp("store") / "r.db"
    r = run("profile", "vit", *QUICK, "--db", str(db), "--json", "-")
    assert r.returncode == 0, r.stderr
    return db, r


@pytest.fixture()
def store(profiled) -> Path:
    return profiled[0]


def test_json_dash_puts_the_records_alone_on_stdout_and_the_notes_on_stderr(profiled):
    _, r = profiled
    (row,) = json.loads(r.stdout)  # nothing but the JSON array on stdout
    assert row["target"] == "vit" and row["status"] == "ok" and row["macs"] > 0
    assert "1 record(s) stored" in r.stderr
    assert "[1/1] vit: ok" in r.stderr  # not a terminal: one progress line per target


@pytest.mark.parametrize(
    "args,message",
    [
        (("--json", "x.parquet"), "--json writes JSON, but 'x.parquet' ends in .parquet"),
        (("--csv", "x.json"), "--csv writes CSV, but 'x.json' ends in .json"),
        (("--json", "-", "--csv", "-"), "--json - and --csv - both ask for stdout"),
        (("--json", "-", "--format", "csv"), "--json - and --format csv both ask for stdout"),
    ],
)
def test_an_output_that_names_the_wrong_format_is_refused_before_measuring(args, message, tmp_path):
    r = run("profile", "vit", *QUICK, "--db", str(tmp_path / "r.db"), *args, cwd=tmp_path)
    assert r.returncode == 2 and message in r.stderr
    assert not (tmp_path / "r.db").exists() and not (tmp_path / "-").exists()


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".json"])
def test_export_writes_every_record_in_the_format_its_suffix_names(store, tmp_path, suffix):
    import pandas as pd

    out = tmp_path / f"all{suffix}"
    r = run("export", "--db", str(store), "-o", str(out))
    assert r.returncode == 0 and "1 record(s)" in r.stdout, r.stderr
    read = {".csv": pd.read_csv, ".parquet": pd.read_parquet, ".json": pd.read_json}[suffix]
    frame = read(out)
    assert list(frame["target"]) == ["vit"] and "knob.heads" in frame.columns  # flat columns, not a blob


def test_export_to_stdout_and_its_errors(store, tmp_path):
    (row,) = json.loads(run("export", "--db", str(store), "-o", "-", "--format", "json", "--target", "vit").stdout)
    assert row["target"] == "vit"
    cases = [
        (("--db", str(store), "-o", "-"), "-o - writes json or csv"),  # default csv works; table does not
        (("--db", str(store), "-o", str(tmp_path / "x.csv"), "--target", "vi"), "has --target vi (targets there: vit)"),
        (("--db", str(store), "-o", str(tmp_path / "x.csv"), "--format", "json"), "--format json does not match"),
        (("--db", str(tmp_path / "none.db"), "-o", str(tmp_path / "x.csv")), "there is no record store at"),
        (("--db", str(store), "-o", str(tmp_path / "x.txt")), "the suffix must be one of .csv, .parquet, .json"),
        (("--db", str(store), "-o", str(store.with_suffix(".csv")), "--status", "lost"), "--status must be ok or"),
    ]
    assert run("export", "--db", str(store), "-o", "-").stdout.startswith("created_at,")
    for args, message in cases[1:]:
        r = run("export", *args)
        assert r.returncode == 2 and message in r.stderr, (args, r.stderr)
    assert not (tmp_path / "x.csv").exists() and not (tmp_path / "none.db").exists()
    r = run("export", *cases[0][0], "--format", "table")
    assert r.returncode == 2 and cases[0][1] in r.stderr


def test_an_output_replaces_effscope_files_and_never_another_file(store, tmp_path):
    """A rerun refreshes its export or report; a user's own file of that name is refused and kept."""
    for name in ("all.csv", "all.json", "all.parquet"):
        for _ in range(2):
            r = run("export", "--db", str(store), "-o", str(tmp_path / name))
            assert r.returncode == 0, r.stderr
    report = tmp_path / "r.html"
    for _ in range(2):
        assert run("report", "--db", str(store), "-o", str(report)).returncode == 0
    (tmp_path / "empty.csv").touch()
    assert run("export", "--db", str(store), "-o", str(tmp_path / "empty.csv")).returncode == 0
    for name, text in (("mine.csv", "a,b\n1,2\n"), ("mine.json", '{"a": 1}'), ("mine.html", "<title>notes</title>")):
        (tmp_path / name).write_text(text)
        command = "report" if name.endswith(".html") else "export"
        r = run(command, "--db", str(store), "-o", str(tmp_path / name))
        assert r.returncode == 2 and "exists and is not effscope's output" in r.stderr, r.stderr
        assert (tmp_path / name).read_text() == text
    (tmp_path / "mine.parquet").write_bytes(b"PAR1 not really")
    assert run("export", "--db", str(store), "-o", str(tmp_path / "mine.parquet")).returncode == 2


def test_an_export_keeps_knob_types_and_whole_numbers_beside_missing_ones(store, tmp_path):
    """A JSON export holds numbers as numbers: a knob another target lacks stays 4, not "4" or 4.0."""
    import shutil

    from effscope.profile.record import Record
    from effscope.profile.store import RecordStore

    db = tmp_path / "two.db"
    shutil.copy(store, db)
    RecordStore(str(db)).add(Record(target="other", kind="block", workload={}, knobs={"depths": (2, 2)}))
    rows = json.loads(run("export", "--db", str(db), "-o", "-", "--format", "json").stdout)
    assert rows[0]["knob.heads"] == 4 and type(rows[0]["knob.heads"]) is int and rows[1]["knob.heads"] is None
    assert rows[1]["knob.depths"] == "2,2" and rows[0]["batch"] == 1


def test_stdout_json_is_strict_json_as_the_file_is(store, tmp_path):
    import shutil

    from effscope.profile.record import Record
    from effscope.profile.store import RecordStore

    db = tmp_path / "two.db"
    shutil.copy(store, db)
    RecordStore(str(db)).add(Record(target="broken", kind="block", workload={}, status="failed", error="boom"))

    def not_json(constant: str) -> None:
        raise AssertionError(f"{constant} is not JSON: a missing number must be null")

    rows = json.loads(run("export", "--db", str(db), "-o", "-", "--format", "json").stdout, parse_constant=not_json)
    assert [r["target"] for r in rows] == ["vit", "broken"] and rows[1]["macs"] is None
    run("export", "--db", str(db), "-o", str(tmp_path / "all.json"))
    assert json.loads((tmp_path / "all.json").read_text(), parse_constant=not_json) == rows  # one writer for both


def test_name_patterns_expand_over_the_registry_in_its_order():
    assert expand_patterns(["pvtv2_b[01]", "cxv_c*"]) == ["pvtv2_b0", "pvtv2_b1", "cxv_cnv", "cxv_cpv", "cxv_cltv"]
    assert expand_patterns(["hilo", "hil?", "pkg.mod:build"]) == ["hilo", "pkg.mod:build"]  # each name once
    with pytest.raises(UnknownNameError, match="no block or model matches 'zz\\*'"):
        expand_patterns(["zz*"])


def test_a_model_in_the_working_folder_and_a_file_path_are_targets(tmp_path):
    (tmp_path / "mymodel.py").write_text("import torch\n\ndef build():\n    return torch.nn.Conv2d(3, 8, 3)\n")
    db = str(tmp_path / "r.db")
    for target in ("mymodel:build", str(tmp_path / "mymodel.py") + ":build"):
        r = run("profile", target, "--max-time", "0.1", "--no-throughput", "--db", db, "--format", "csv", cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        (row,) = csv.DictReader(io.StringIO(r.stdout))
        assert row["target"] == target and row["status"] == "ok" and int(row["params"]) == 3 * 8 * 9 + 8


def test_terminal_output_reads_in_units_and_says_a_shared_note_once(tmp_path):
    from effscope.units import binary_bytes, si

    assert (si(781_049_600), si(13_984), si(512), binary_bytes(135_148_564_480)) == (
        "781 M",
        "13.98 K",
        "512",
        "125.9 GiB",
    )
    r = run("profile", "vit", "hilo", *QUICK, "--db", str(tmp_path / "r.db"))
    assert r.returncode == 0, r.stderr
    header = next(line for line in r.stdout.splitlines() if "target" in line and "status" in line)
    assert " MACs " in header and "GMACs" not in header
    assert r.stdout.count("every target: ") >= 1 and r.stdout.count("no roofline calibration") == 1
    device = run("device").stdout
    assert "GiB" in device and "None" not in device and "_bytes │ 1" not in device
    assert "<bool>" not in run("profile", "--help").stdout  # flags take no value


def test_a_paper_protocol_is_replayed_and_recorded_with_what_was_changed(tmp_path):
    r = run(
        "profile", "hilo", "--tokens", "7", "--protocol", "litv2", "--batch", "2", "--iters", "3",
        "--warmup-iters", "1", "--db", str(tmp_path / "r.db"), "--format", "json",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    (row,) = json.loads(r.stdout)
    assert row["protocol"] == "litv2 (changed: batch=2, warmup_iters=1, iters=3)"
    assert row["dtype"] == "bf16" and row["batch"] == 2  # LITv2's AMP, as bf16 autocast on a CPU
    assert "latency_ms_p50" not in row and row["throughput_img_s"] > 0  # the paper published throughput only
    assert "protocol litv2: LITv2 main.py --throughput" in r.stderr
    from effscope.profile.store import RecordStore

    (record,) = RecordStore(str(tmp_path / "r.db")).records()
    assert record.protocol["iters"] == 3 and record.protocol["warmup_iters"] == 1
    for args, message in (
        (("--protocol", "swin"), "unknown protocol 'swin'; the protocols are lightvit, litv2, timm"),
        (("--iters", "0"), "--iters must be an integer >= 1, but got 0"),
    ):
        bad = run("profile", "hilo", "--tokens", "7", "--db", str(tmp_path / "r.db"), *args)
        assert bad.returncode == 2 and message in bad.stderr


def test_training_mode_on_the_command_line(tmp_path):
    r = run("profile", "hilo", *QUICK, "--mode", "train", "--batch", "2", "--db", str(tmp_path / "r.db"))
    assert r.returncode == 0, r.stderr
    header = next(line for line in r.stdout.splitlines() if "target" in line and "status" in line)
    assert "step p50 ms" in header and "train img/s" in header
    row = next(line for line in r.stdout.splitlines() if line.startswith("│ hilo"))
    assert row.split("│")[5].strip() not in ("", "-")  # the step's p50 was measured
    bad = run("profile", "hilo", "--tokens", "7", "--mode", "fit", "--db", str(tmp_path / "r.db"))
    assert bad.returncode == 2 and "--mode must be one of infer, train, but got 'fit'" in bad.stderr


def test_by_module_table_gives_params_macs_and_time_per_module(tmp_path):
    r = run("profile", "pvtv2_b0", "--resolution", "64", "--by-module", "3", "--max-time", "0.1", "--no-throughput",
            "--db", str(tmp_path / "r.db"))  # fmt: skip
    assert r.returncode == 0, r.stderr
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]]
            for line in r.stdout.splitlines() if line.startswith("│ ") and "by module" not in line}  # fmt: skip
    assert rows["(whole)"][:1] == ["3,666,760"] and rows["stages.0.0"][0] == "89,216"
    assert rows["head"][0] == "257,000" and rows["stages.0.0"][3] not in ("", "-")  # a block inside a ModuleList
    assert rows["stages.0"][3] not in ("", "-")  # the ModuleList: the sum of its blocks' times
    assert "stages.0.0.attn" not in rows  # three levels only
    bad = run("profile", "pvtv2_b0", "--by-module", "0", "--db", str(tmp_path / "r.db"))
    assert bad.returncode == 2 and "--by-module takes the number of levels to show, an integer >= 1" in bad.stderr
