"""The CLI as a user meets it: real subprocesses, exit codes, one-sentence errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "effscope", *args], capture_output=True, text=True, timeout=120)


def test_blocks_list_names_every_block():
    from effscope.spec import blocks

    r = run("blocks", "list")
    assert r.returncode == 0, r.stderr
    for name in blocks().names():
        assert name in r.stdout


def test_blocks_show_applies_set_and_reports_params():
    r = run("blocks", "show", "vit", "--set", "heads=3", "--set", "head_dim=64")
    assert r.returncode == 0, r.stderr
    assert "dim = 192" in r.stdout and "params: 444,864" in r.stdout


def test_models_show_rounds_derived_fractions_for_reading():
    r = run("models", "show", "litv2_s")
    assert r.returncode == 0, r.stderr
    assert "alpha = 0.8333," in r.stdout and "params: 27,844,000" in r.stdout  # 10 Lo-Fi of 12 heads


def test_models_list_compares_with_official_counts():
    r = run("models", "list")
    assert r.returncode == 0, r.stderr
    assert "off by" not in r.stdout


@pytest.mark.parametrize(
    "args,message",
    [
        (("blocks", "show", "vitt"), "unknown block 'vitt'; did you mean 'vit'?"),
        (("blocks", "show", "vit", "--set", "heads=0"), "knob 'heads' of vit must be int in [1, 32], but got 0"),
        (("blocks", "show", "vit", "--set", "heads=x"), "but got 'x'"),
        (("blocks", "show", "vit", "--set", "heads"), "--set takes knob=value"),
        (("blocks", "show", "vit", "--set", "head=3"), "did you mean 'heads'?"),
        (("models", "show", "nope"), "unknown model 'nope'"),
    ],
)
def test_bad_input_is_one_sentence_and_exit_2(args, message):
    r = run(*args)
    assert r.returncode == 2
    assert message in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("args", [("--debug", "blocks", "show", "vitt"), ("blocks", "show", "vitt", "--debug")])
def test_debug_shows_the_traceback_and_keeps_the_exit_code(args):
    r = run(*args)
    assert r.returncode == 2 and "Traceback" in r.stderr


def test_version():
    r = run("--version")
    assert r.returncode == 0 and r.stdout.startswith("effscope ")


def test_profile_stores_a_record_and_writes_json(tmp_path):
    import json

    db, out, html = tmp_path / "r.db", tmp_path / "out.json", tmp_path / "r.html"
    r = run(
        "profile",
        "vit",
        "--tokens",
        "7",
        "--max-time",
        "0.2",
        "--db",
        str(db),
        "--json",
        str(out),
        "--report",
        str(html),
    )
    assert r.returncode == 0, r.stderr
    assert "vit @7x7" in r.stdout and "1 record(s) stored" in r.stdout
    assert f"report written to {html}" in r.stdout and "<html" in html.read_text()
    (row,) = json.loads(out.read_text())
    assert row["status"] == "ok" and row["macs"] > 0 and row["height"] == 7
    assert "energy_j_per_img: energy and telemetry need an NVIDIA GPU" in row["missing"]


def test_profile_of_a_failing_target_exits_1_and_keeps_the_record(tmp_path):
    from effscope.profile.store import RecordStore

    db = tmp_path / "r.db"
    r = subprocess.run(
        [sys.executable, "-m", "effscope", "profile", "_targets:raising", "--db", str(db)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=str(Path(__file__).parent),
    )
    assert r.returncode == 1 and "forward exploded on purpose" in r.stdout
    assert [x.status for x in RecordStore(str(db)).records()] == ["failed"]


@pytest.mark.parametrize(
    "args,message",
    [
        (("profile", "hilo_atn"), "unknown target 'hilo_atn'; did you mean 'hilo'?"),
        (("profile", "hilo", "--resolution", "224"), "'hilo' is a block: give its token grid with --tokens"),
        (("profile", "litv2_s", "--tokens", "14"), "'litv2_s' is a model: give its input size with --resolution"),
        (("profile", "hilo", "--set", "window_size=0"), "knob 'window_size' of hilo must be"),
        (("profile", "hilo", "--dtype", "int8"), "--dtype must be one of fp32, bf16, fp16"),
        (("profile", "hilo", "--db", "nosuchdb://x"), "cannot open the record store 'nosuchdb://x'"),
        (("profile", "hilo", "--db", "/no/such/dir/r.db"), "folder /no/such/dir does not exist"),
        (("profile", "hilo", "--json", "/no/such/dir/r.json"), "cannot write '/no/such/dir/r.json'"),
        (("profile",), "give either a TARGET or --suite NAME"),
        (("profile", "--suite", "zooo"), "unknown suite 'zooo' (suites: zoo)"),
    ],
)
def test_profile_bad_input_is_one_sentence_and_exit_2(args, message):
    r = run(*args)
    assert r.returncode == 2, r.stdout + r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr


def test_counting_notes_say_what_the_macs_leave_out_and_which_flag_counts_it():
    from effscope.cli.profile import counting_notes
    from effscope.profile.record import Record

    r = Record(target="t", kind="block", workload={})
    r.counts = {"pool_ops": 100352}
    r.details = {"count": {"uncounted_ops": {"aten::add_": 2, "aten::sort": 1, "aten::gt": 1, "aten::linalg_inv": 1}}}
    assert counting_notes(r) == [
        "pooling reads, kept out of MACs: 100,352 (pool_ops)",
        "not in the MAC convention (element-wise; --elementwise counts them): aten::add_ x2, aten::gt x1",
        "counted nowhere (no formula in effscope or fvcore): aten::linalg_inv x1, aten::sort x1",
    ]
    assert counting_notes(Record(target="t", kind="block", workload={})) == []
