"""`effscope profile` ended early by a signal: Ctrl-C (SIGINT) and SIGTERM (`timeout`, a CI cancel, `kill`) both
show the finished Records as the normal end shows them, write the requested files and say what is stored; the
exit code names the signal (128 + its number). Also: user text in rich strings is never read as an emoji code."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

TESTS = Path(__file__).parent  # `_targets:NAME` targets are found from here


def _profile_then_signal(tmp_path: Path, sig: signal.Signals) -> tuple[int, str, str, Path]:
    """Profile a quick target and then one that hangs (`_targets:sleepy`), in training mode; send `sig` to the
    process group (as a terminal's Ctrl-C and `timeout` do) once the first Record is stored."""
    out_json, stdout, stderr = tmp_path / "r.json", tmp_path / "out.txt", tmp_path / "err.txt"
    args = ["_targets:tiny", "_targets:sleepy", "--mode", "train", "--max-time", "0.1", "--timeout", "600"]
    cmd = [sys.executable, "-m", "effscope", "profile", *args, "--db", str(tmp_path / "r.db"), "--json", str(out_json)]
    with stdout.open("w") as o, stderr.open("w") as e:
        proc = subprocess.Popen(cmd, stdout=o, stderr=e, cwd=TESTS, start_new_session=True)
        try:
            deadline = time.monotonic() + 300
            while "[1/2] _targets:tiny: ok" not in stderr.read_text():  # printed once the Record is stored
                assert proc.poll() is None and time.monotonic() < deadline, stderr.read_text()
                time.sleep(0.05)
            os.killpg(proc.pid, sig)
            code = proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    return code, stdout.read_text(), stderr.read_text(), out_json


def _row(stdout: str, target: str) -> dict[str, str]:
    """The table row of `target`, by column header."""
    lines = stdout.splitlines()
    header = next(line for line in lines if "target" in line and "status" in line)
    row = next(line for line in lines if f" {target} " in line and "│" in line)
    names = [c.strip() for c in header.strip("┃").split("┃")]
    return dict(zip(names, (c.strip() for c in row.strip("│").split("│")), strict=True))


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_ends_the_run_early_with_what_was_measured_shown_and_written(tmp_path, sig, code):
    rc, stdout, stderr, out_json = _profile_then_signal(tmp_path, sig)
    assert rc == code, stdout + stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    assert "interrupted: stopped after 1 of 2 target(s); 1 record(s) stored" in stderr
    (record,) = json.loads(out_json.read_text())
    assert record["target"] == "_targets:tiny" and record["train_step_ms_p50"] > 0
    # The table is the normal end's: a training step's times, not blanks under inference headers.
    row = _row(stdout, "_targets:tiny")
    assert row["step p50 ms"] == f"{record['train_step_ms_p50']:.3f}"
    assert row["step p90 ms"] == f"{record['train_step_ms_p90']:.3f}"
    assert row["train img/s"] == f"{record['train_img_s']:.1f}"
    assert row["IQR %"] != "-" and row["peak mem MiB"] != "-"


def test_sigterm_is_raised_as_an_interrupt_only_inside_the_helper():
    from effscope.cli._app import Terminated, interrupt_exit_code, sigterm_as_interrupt

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt) as caught, sigterm_as_interrupt():
        signal.raise_signal(signal.SIGTERM)
        time.sleep(5)  # not reached: the handler raises at once
    assert isinstance(caught.value, Terminated)
    assert interrupt_exit_code(caught.value) == 143 and interrupt_exit_code(KeyboardInterrupt()) == 130
    assert signal.getsignal(signal.SIGTERM) is before


def test_the_peak_memory_column_says_mib():
    from rich.console import Console

    from effscope.cli.profile import _records_table
    from effscope.profile.record import Record

    r = Record(target="vit", kind="block", workload={}, memory={"peak_rss_bytes": 424_804_352})  # 405.1 MiB, 424.8 MB
    r.latency = {"latency_ms_p50": 0.005123, "latency_ms_p90": 13.19312}  # a microsecond block, a model
    console = Console(width=200, color_system=None)
    with console.capture() as cap:
        console.print(_records_table([r]))
    assert "peak mem MiB" in cap.get() and "peak mem MB" not in cap.get() and "405.1" in cap.get()
    assert " 0.00512 " in cap.get() and " 13.193 " in cap.get()  # 3 significant digits under 1 ms


def test_every_flag_is_shown_whole_in_the_table():
    from rich.console import Console

    from effscope.cli.profile import _records_table
    from effscope.profile.record import Record

    r = Record(
        target="lightvit_t", kind="model", workload={}, flags=["latency-unstable", "throughput-latency-mismatch"]
    )
    r.latency = {"latency_ms_p50": 20.0, "latency_ms_p90": 30.0}
    console = Console(width=120, color_system=None)  # a terminal too narrow for every column at its full width
    with console.capture() as cap:
        console.print(_records_table([r]))
    flags_column = "".join(line.rstrip("│ ").rsplit("│", 1)[-1].strip() for line in cap.get().splitlines()[3:-1])
    assert flags_column == "latency-unstablethroughput-latency-mismatch" and "…" not in cap.get()


@pytest.mark.parametrize(
    "text",
    [
        "tiny:sleepy",
        "_targets:sleepy: hangs",
        ":+1:",
        "x:\\[b]y:",
        "[bold]:x:",
        "cannot open [/data/weights.pt] [enforce fail at alloc.cpp:42]",
        "postgresql://user:***@host:5432/db",
    ],
)
def test_escaped_text_is_shown_as_typed_emoji_codes_included(text, capsys):
    from effscope.cli._app import esc, out

    out.print(f"[dim]{esc(text)}[/dim]", highlight=False, soft_wrap=True)
    assert capsys.readouterr().out == text + "\n"


def test_the_cli_consoles_show_no_emoji_codes_even_without_markup(capsys):
    from effscope.cli._app import err, out

    for console in (out, err):
        console.print("tiny:sleepy: done", markup=False, highlight=False)
    captured = capsys.readouterr()
    assert captured.out == captured.err == "tiny:sleepy: done\n"


def test_a_sweep_is_reported_and_no_correlation_is_made_of_missing_latencies(capsys):
    from effscope.cli.profile import _show_records
    from effscope.profile.record import Record

    records = [Record(target=f"t{i}", kind="block", workload={}, counts={"macs": 10 * i}) for i in range(3)]
    records[0].throughput = {"peak_throughput_img_s": 4564.7, "peak_throughput_batch": 16}
    _show_records(records, plans=[], by_module=None, paper=None, options=None)
    shown = capsys.readouterr().out
    assert "t0: batch sweep: peak 4,564.7 img/s at batch 16" in shown
    assert "Spearman" not in shown  # three targets, none with a latency (--no-latency): nothing to rank


def test_an_interrupt_before_the_command_handles_it_still_says_interrupted(monkeypatch, capsys):
    # typer turns a KeyboardInterrupt in a command's start (its imports, its checks) into a silent exit 130
    import effscope.profile.run
    from effscope.cli import main

    def interrupted(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(effscope.profile.run, "parse_size", interrupted)
    monkeypatch.setattr(sys, "argv", ["effscope", "profile", "hilo"])
    with pytest.raises(SystemExit) as ended:
        main()
    assert ended.value.code == 130 and capsys.readouterr().err.strip() == "interrupted"


def test_no_rank_correlation_is_printed_for_fewer_than_4_targets(capsys):
    from effscope.cli.profile import _show_records
    from effscope.profile.record import Record

    def records(n):
        return [
            Record(target=f"t{i}", kind="block", workload={}, counts={"macs": 10 * i}, latency={"latency_ms_p50": i})
            for i in range(1, n + 1)
        ]

    _show_records(records(3), plans=[], by_module=None, paper=None, options=None)
    three = " ".join(capsys.readouterr().out.split())
    assert "across 3 targets: too few for a rank correlation (it needs 4" in three and "Spearman" not in three
    _show_records(records(4), plans=[], by_module=None, paper=None, options=None)
    assert "across 4 targets: Spearman 1.000, Kendall 1.000" in capsys.readouterr().out
