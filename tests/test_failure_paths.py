"""Nothing lost, nothing leaked: what effscope does when things go wrong around a run (issue 10).

Exports onto a database, passwords in URLs, full disks, crashing or hanging user modules, markup in failure
reasons, concurrent workers and the trial cap, Ctrl-C while starting. The bad-input table is test_hostile_input.py.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
from _spaces import load, tiny, trials_of
from optuna.trial import TrialState

from effscope.output import OutputError
from effscope.profile.env import cpu_info
from effscope.profile.record import Record
from effscope.profile.store import RecordStore
from effscope.urls import database_url

PW = "s3cretpw"
EFFSCOPE = str(Path(sys.executable).with_name("effscope"))  # the console script: the cwd is not on its sys.path


def run(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([EFFSCOPE, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd)


def _study_with_a_record(db: Path) -> None:
    """An SQLite file holding a study with one completed trial and one Record, as effscope leaves them."""
    RecordStore(str(db)).add(Record(target="vit", kind="block", workload={"device": "cpu"}))
    study = optuna.create_study(study_name="kept", storage=f"sqlite:///{db}")
    study.add_trial(optuna.trial.create_trial(value=1.0))


def _intact(db: Path) -> bool:
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    trials = optuna.load_study(study_name="kept", storage=f"sqlite:///{db}").get_trials()
    return [t.value for t in trials] == [1.0] and len(RecordStore(str(db)).records()) == 1


# --------------------------------------------------------------------------------------------------- 1. exports


def test_an_export_onto_the_database_is_refused_and_nothing_is_lost(tmp_path):
    db, named_html = tmp_path / "x.db", tmp_path / "x.html"  # a database may carry any name
    _study_with_a_record(db)
    _study_with_a_record(named_html)
    for option, database, output in (("--csv", db, db), ("--json", db, db), ("--report", named_html, named_html)):
        r = run("profile", "vit", "--tokens", "7", "--db", str(database), option, str(output))
        assert r.returncode == 2 and "it is a database this command uses" in r.stderr, r.stdout + r.stderr
    assert _intact(db) and _intact(named_html)

    store = RecordStore(str(tmp_path / "records.csv"))  # the store's own export API keeps the same rule
    with pytest.raises(OutputError, match="it is a database this command uses"):
        store.export(tmp_path / "records.csv")


def test_a_failed_export_leaves_the_old_file_and_no_temporary_one(tmp_path, monkeypatch):
    import pandas as pd

    store = RecordStore(str(tmp_path / "r.db"))
    store.add(Record(target="vit", kind="block", workload={"device": "cpu"}))
    out = tmp_path / "records.csv"
    out.write_text("created_at,uid,target\nthe previous export\n")

    def disk_full(self, path, *args, **kwargs):
        Path(path).write_text("target,half a ro")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(pd.DataFrame, "to_csv", disk_full)
    with pytest.raises(OutputError, match=r"records.csv': No space left on device; nothing was written"):
        store.export(out)
    assert out.read_text() == "created_at,uid,target\nthe previous export\n"
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("r.db")) == ["records.csv"]


# --------------------------------------------------------------------------------------------------- 2, 3. URLs


def test_passwords_never_leave_the_process_and_report_reads_postgresql(tmp_path, postgres_url):
    # trust authentication accepts any password: the one in the URL is only there to leak
    url = postgres_url.replace("postgres@", f"postgres:{PW}@")
    space = tiny(tmp_path, trials=2)
    outputs = [
        run("search", str(space), "--db", url, "--report", str(tmp_path / "s.html")),
        run("profile", "vit", "--tokens", "7", "--max-time", "0.05", "--no-throughput", "--db", url),
        run("report", "--storage", url, "-o", str(tmp_path / "r.html")),  # a fresh process, the documented driver
        run("report", "--db", url, "-o", str(tmp_path / "p.html")),
    ]
    for r in outputs:
        assert r.returncode == 0, r.stdout + r.stderr
        assert PW not in r.stdout + r.stderr
    assert "postgres:***@" in outputs[0].stdout and "postgres:***@" in outputs[1].stdout
    for html in ("s.html", "r.html", "p.html"):
        text = (tmp_path / html).read_text()
        assert PW not in text and "postgres:***@" in text

    import sqlalchemy as sa

    records = RecordStore(postgres_url).records()
    assert len(records) >= 2 and all(PW not in r.command and "postgres:***@" in r.command for r in records)
    attrs = optuna.load_study(study_name="tiny-cpu", storage=database_url(postgres_url)).user_attrs
    assert PW not in json.dumps(attrs) and "postgres:***@" in attrs["command"]
    engine = sa.create_engine(database_url(postgres_url))
    with engine.connect() as conn:  # nowhere in the database at all
        for table in sa.inspect(engine).get_table_names():
            rows = conn.execute(sa.text(f'SELECT * FROM "{table}"')).fetchall()
            assert PW not in repr(rows), table


# --------------------------------------------------------------------------------------------------- 4, 5. disks


def _in_small_tmpfs(tmp_path: Path, script: str, size: str = "4m") -> subprocess.CompletedProcess[str]:
    """Run `script` (sh) with $DISK a fresh tmpfs of `size`, in a private mount namespace (gone afterwards)."""
    if not shutil.which("unshare"):
        pytest.skip("unshare is not installed")
    disk = tmp_path / "disk"
    disk.mkdir()
    probe = subprocess.run(
        ["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=1m tmpfs {disk}"], capture_output=True, timeout=30
    )
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs in a private namespace here: {probe.stderr.decode().strip()}")
    env = {**os.environ, "DISK": str(disk), "EFFSCOPE": EFFSCOPE, "PY": sys.executable}
    wrapped = f"mount -t tmpfs -o size={size} tmpfs $DISK && cd $DISK && {script}"
    return subprocess.run(
        ["unshare", "-rm", "sh", "-c", wrapped], capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path
    )


def _fill(leave_bytes: int) -> str:
    """sh: fill $DISK but `leave_bytes`."""
    return (
        "avail=$(df --output=avail -B1 $DISK | tail -1); "
        f"dd if=/dev/zero of=$DISK/filler bs=4096 count=$(( (avail - {leave_bytes}) / 4096 )) 2>/dev/null; "
    )


def test_an_export_onto_a_full_disk_is_one_sentence_and_the_records_stay(tmp_path):
    db = tmp_path / "r.db"
    r = _in_small_tmpfs(
        tmp_path,
        _fill(0) + f"$EFFSCOPE profile vit --tokens 7 --max-time 0.05 --no-throughput --db {db} --json $DISK/out.json; "
        "echo exit=$?; ls -a $DISK",
    )
    assert "exit=2" in r.stdout, r.stdout + r.stderr
    assert "out.json': No space left on device; nothing was written" in r.stderr
    lines = [line for line in r.stderr.strip().splitlines() if not line.startswith("[1/1] vit")]  # progress line
    assert "Traceback" not in r.stderr and len(lines) == 1
    assert "out.json" not in r.stdout.split("exit=2")[1] and ".tmp." not in r.stdout  # no partial file at all
    assert [x.status for x in RecordStore(str(db)).records()] == ["ok"]  # measured and stored before the export


def test_a_search_whose_disk_fills_exits_2_and_keeps_its_completed_trials(tmp_path):
    space = tiny(tmp_path, trials=2)
    r = _in_small_tmpfs(
        tmp_path,
        f"$EFFSCOPE search {space} --db $DISK/s.db >/dev/null 2>&1 || exit 9; "
        + _fill(96 * 1024)
        + f"$EFFSCOPE search {space} --db $DISK/s.db --trials 8; echo exit=$?; "
        f"rm $DISK/filler; cp $DISK/s.db* {tmp_path}/",
        size="8m",
    )
    assert "exit=2" in r.stdout, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    assert "database or disk is full" in r.stderr or "No space left on device" in r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert errors and all(len(line) < 400 for line in errors)  # one sentence each, not pages
    trials = trials_of(str(tmp_path / "s.db"))
    assert sum(t.state == TrialState.COMPLETE for t in trials) >= 2  # the first run's trials are all there


def test_the_exit_code_says_when_a_worker_died():
    from effscope.cli.search import failure_exit_code, failure_lines
    from effscope.search.coordinator import WorkerFailure

    class Result:
        failures: list = []

    ok, full, killed = Result(), Result(), Result()
    full.failures = [WorkerFailure("effscope-search-0", "error", "cannot write the study storage 'x': disk full")]
    killed.failures = [WorkerFailure("effscope-search-1", "killed", "was killed by SIGKILL")]
    assert failure_exit_code(ok) == 0 and failure_lines(ok) == []
    assert failure_exit_code(full) == 2 and "worker effscope-search-0 stopped: cannot write" in failure_lines(full)[0]
    assert failure_exit_code(killed) == 1 and failure_lines(killed)[0].endswith("was killed by SIGKILL")


# --------------------------------------------------------------------------------------------------- 6, 7. targets


def test_user_modules_are_imported_in_the_measurement_process(tmp_path):
    (tmp_path / "boom.py").write_text(
        'raise RuntimeError("cannot open [/data/weights.pt] [enforce fail at alloc.cpp:42]")\n'
    )
    (tmp_path / "loops.py").write_text("while True:\n    pass\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "model.py").write_text(
        "from torch import nn\n\n\ndef build():\n    return nn.Conv2d(3, 4, 3, stride=4)\n"
    )
    db = str(tmp_path / "r.db")
    r = run("profile", "boom:build", "sub/model.py:build", "--max-time", "0.05", "--no-throughput", "--db", db,
            cwd=tmp_path)  # fmt: skip
    assert r.returncode == 1, r.stdout + r.stderr  # a target failed; the run went on and finished
    assert "Traceback" not in r.stderr and "MarkupError" not in r.stderr
    assert "[/data/weights.pt]" in r.stdout and "[enforce" in r.stdout  # shown as typed, not read as markup
    bad, good = RecordStore(db).records()
    assert bad.status == "failed" and "RuntimeError: cannot open [/data/weights.pt] [enforce fail" in bad.error
    assert good.status == "ok" and good.target == "sub/model.py:build" and good.counts["params"] == 112

    r = run("profile", "loops:build", "--timeout", "2", "--db", db, cwd=tmp_path, timeout=120)
    assert r.returncode == 1 and "timed out after 2 s" in r.stdout, r.stdout + r.stderr
    hung = RecordStore(db).records()[-1]
    assert hung.status == "failed"
    # the child recorded nothing; the parent still says which host it failed on, but not the run's settings
    assert hung.env["hostname"] == socket.gethostname() and hung.env["device_name"] == cpu_info()["cpu_model"]
    assert hung.env["device"] == "cpu" and "dtype" not in hung.env and "torch_threads" not in hung.env


# --------------------------------------------------------------------------------------------------- 10. the cap


def _slots(db: Path, cap: int):
    from effscope.search.storage import open_storage
    from effscope.search.workers import TrialSlots

    storage = open_storage(f"sqlite:///{db}", heartbeat_s=60)
    study = optuna.load_study(study_name="cap", storage=storage)
    return TrialSlots(study, storage, f"sqlite:///{db}", cap, poll_s=0.01)


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # the study.ask() calls below, outside optimize()
def test_trial_slots_count_completed_and_heartbeating_trials_only(tmp_path):
    from effscope.search.storage import open_storage

    db = tmp_path / "cap.db"
    storage = open_storage(f"sqlite:///{db}", heartbeat_s=60)
    study = optuna.create_study(study_name="cap", storage=storage)
    for value in (1.0, 2.0):
        study.add_trial(optuna.trial.create_trial(value=value))
    study.ask()  # RUNNING without a heartbeat: left by a crashed process, it holds no slot
    alive = study.ask()
    study_id = storage.get_study_id_from_name("cap")
    storage.record_heartbeat(storage.get_trial_id_from_study_id_trial_number(study_id, alive.number))

    assert _slots(db, 3).counts() == (2, 1)
    assert _slots(db, 3).claim(stop=lambda: True) is None  # 2 completed + 1 running fill a cap of 3: wait
    assert _slots(db, 2).claim() is None  # the cap is reached
    assert _slots(db, 4).claim() is not None
    # the trial that never got a heartbeat was failed under the lock: nothing can expire it otherwise
    states = {t.number: t.state for t in optuna.load_study(study_name="cap", storage=f"sqlite:///{db}").trials}
    assert states[2] == optuna.trial.TrialState.FAIL and states[3] == optuna.trial.TrialState.RUNNING


def test_concurrent_claims_never_pass_the_cap(tmp_path):
    db = tmp_path / "cap.db"
    optuna.create_study(study_name="cap", storage=f"sqlite:///{db}")  # not yet in WAL: six connections switch it
    claimed, errors, barrier = [], [], threading.Barrier(6, timeout=120)

    def claim() -> None:
        try:
            slots = _slots(db, 4)
            barrier.wait()
            claimed.append(slots.claim(stop=lambda: True))
        except Exception as e:  # a failed thread fails the test, and breaks the barrier instead of hanging the rest
            errors.append(repr(e))
            barrier.abort()

    threads = [threading.Thread(target=claim, daemon=True) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    assert not errors
    assert sum(t is not None for t in claimed) == 4 and len(claimed) == 6


def test_three_workers_stop_at_exactly_the_cap(tmp_path):
    from effscope.search.coordinator import run_search

    db = tmp_path / "w.db"
    result = run_search(load(tiny(tmp_path, trials=4, max_time=0.3)), storage=str(db), workers=3, heartbeat_s=2)
    trials = trials_of(str(db))
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 4 == result.summary.trials
    assert not [t for t in trials if t.state == TrialState.RUNNING] and not result.failures


def test_the_summary_never_counts_running_trials_as_completed():
    from effscope.cli.search import summary_line
    from effscope.search.coordinator import SearchResult
    from effscope.search.summary import summarize

    def trial(n, state, status="measured"):
        t = optuna.trial.create_trial(
            state=state,
            values=[1.0, 2.0] if state == TrialState.COMPLETE else None,
            user_attrs={"status": status, "knobs": {}, "latency_ms_p50": 5.0},
            system_attrs={"constraints:latency": -0.5, "constraints:memory": 0.0, "constraints:valid": 0.0},
        )
        t.number = n
        return t

    trials = [trial(0, TrialState.COMPLETE), trial(1, TrialState.COMPLETE, "cached"), trial(2, TrialState.RUNNING)]
    trials.append(trial(3, TrialState.FAIL))
    info = {
        "objectives": [{"name": "q", "label": "q", "direction": "maximize"}, {"direction": "minimize"}],
        "budgets": [{"name": "latency", "statistic": "latency_ms_p50", "limit": 10.0}],
    }
    s = summarize(trials, info)
    assert (s.trials, s.counts, s.running, s.failed) == (2, {"measured": 1, "cached": 1}, 1, 1)
    assert s.feasible == 1 and s.slices[0]["feasible"] == 1  # the cached repeat is the same design, counted once
    line = summary_line(SearchResult("st", "sqlite:////x.db", False, s), cap=3)
    assert line == "study st in sqlite:////x.db: 2 of 3 trials completed (1 measured, 1 cached); not counted: 1 " + (
        "failed, 1 still running"
    )


def test_the_best_under_a_budget_is_the_fastest_of_equal_quality():
    from effscope.search.summary import best_row, summarize

    def trial(n, p90):
        t = optuna.trial.create_trial(
            values=[7.0, p90 - 1.0],
            user_attrs={"status": "measured", "knobs": {"heads": n}, "latency_ms_p90": p90},
            system_attrs={"constraints:latency": -0.5, "constraints:memory": 0.0, "constraints:valid": 0.0},
        )
        t.number = n
        return t

    info = {
        "objectives": [{"name": "q", "label": "q", "direction": "maximize"}, {"direction": "minimize"}],
        "budgets": [{"name": "latency", "statistic": "latency_ms_p90", "limit": 10.0}],
    }
    s = summarize([trial(0, 5.0), trial(1, 4.0), trial(2, 6.0)], info)
    assert s.slices[0]["best"]["trial"] == 1 and [r["trial"] for r in s.front] == [1]  # trial 1 dominates 0 and 2
    assert best_row([], "maximize", "latency_ms_p90") is None


# --------------------------------------------------------------------------------------------------- 11.


SPELLINGS = [("true", True), ("True", True), ("1", True), ("yes", True), ("false", False), ("FALSE", False),
             ("0", False), ("off", False)]  # fmt: skip


@pytest.mark.parametrize("spelling,value", SPELLINGS)
def test_bool_knobs_take_the_usual_spellings(spelling, value):
    from effscope.profile.target import resolve_target

    assert resolve_target("cagevit", assignments=[f"qkv_bias={spelling}"]).knobs()["qkv_bias"] is value


def test_an_unknown_predictor_leaves_no_empty_study(tmp_path):
    from effscope.search.coordinator import run_search
    from effscope.search.predictor import PredictorError

    db = tmp_path / "p.db"
    with pytest.raises(PredictorError, match="no latency table 'nope'"):
        run_search(load(tiny(tmp_path)), storage=str(db), predictor="nope")
    assert optuna.get_all_study_names(f"sqlite:///{db}") == []


def test_a_report_creates_at_most_its_own_folder(tmp_path):
    from effscope.report import check_report_output

    assert check_report_output(tmp_path / "new" / "r.html") == tmp_path / "new" / "r.html"
    with pytest.raises(OutputError, match="does not exist"):
        check_report_output(tmp_path / "a" / "b" / "r.html")
    assert sorted(tmp_path.iterdir()) == []  # checking creates nothing


def _spawned_children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == pid and b"spawn_main" in cmdline:  # not multiprocessing's resource tracker
            found.append(int(stat.parent.name))
    return found


def test_a_ctrl_c_that_another_thread_receives_waits_until_the_child_is_started():
    """SIGINT blocked in the starting thread may still reach another thread of the process; Python then raises in the
    starting thread, which must not happen between launching a child and sending it its start-up data."""
    from effscope.profile.child import start_shielded

    class Launch:  # stands in for Process.start: a signal in the middle, then the part that must not be skipped
        finished = False

        def start(self) -> None:
            os.kill(os.getpid(), signal.SIGINT)  # the main thread blocks it: the kernel gives it to `other`
            time.sleep(0.2)
            self.finished = True

    stop = threading.Event()
    other = threading.Thread(target=stop.wait, daemon=True)  # created before the block: SIGINT reaches it
    other.start()
    launch = Launch()
    try:
        with pytest.raises(KeyboardInterrupt):
            start_shielded(launch)  # the Ctrl-C is kept: raised once the child is started
    finally:
        stop.set()
    assert launch.finished


def test_a_sigterm_turned_into_an_interrupt_also_waits_until_the_child_is_started():
    from effscope.cli._app import Terminated, sigterm_as_interrupt
    from effscope.profile.child import start_shielded

    class Launch:
        finished = False

        def start(self) -> None:
            os.kill(os.getpid(), signal.SIGTERM)  # `timeout` ends the command while it starts a child
            self.finished = True

    launch = Launch()
    with pytest.raises(Terminated), sigterm_as_interrupt():
        start_shielded(launch)
    assert launch.finished


def _busy_serve(conn) -> None:
    while conn.recv() is not None:
        time.sleep(600)  # a long measurement: it reads no further request until it ends
        conn.send("done")


def test_closing_a_child_busy_with_a_request_stops_it_at_once():
    """After Ctrl-C the parent closes its measurement process mid-job: waiting for a polite exit would only wait out
    the job (or the grace time), so the busy child is killed; an idle one is asked to stop and exits by itself."""
    from effscope.profile.child import ChildProcess

    busy = ChildProcess(_busy_serve, (), "busy process")
    busy.send("work")
    proc, calls = busy._proc, []
    join, kill = proc.join, proc.kill
    proc.join = lambda timeout=None: (calls.append("join"), join(timeout))
    proc.kill = lambda: (calls.append("kill"), kill())
    busy.close()
    assert calls[0] == "kill" and proc.exitcode == -signal.SIGKILL  # no grace wait before the kill

    idle = ChildProcess(_busy_serve, (), "idle process")
    idle.start()
    proc = idle._proc
    idle.close()
    assert proc.exitcode == 0


def test_ctrl_c_while_the_workers_start_prints_no_traceback(tmp_path):
    # The event, not a delay: Ctrl-C (SIGINT to the whole process group, as a terminal sends it) the moment the
    # first worker process exists, while it is still importing its modules.
    proc = subprocess.Popen(
        [EFFSCOPE, "search", str(tiny(tmp_path, trials=50)), "--db", str(tmp_path / "s.db")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not _spawned_children(proc.pid):
            assert time.monotonic() < deadline and proc.poll() is None, "no worker process was started"
            time.sleep(0.01)
        os.killpg(proc.pid, signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    assert "re-run the same command to resume" in stderr


class _ConnToTheDead:
    """A pipe whose reader was killed: one request arrives, and the reply cannot be sent."""

    def __init__(self, request):
        self.requests, self.sent = [request], 0

    def recv(self):
        if not self.requests:
            raise EOFError
        return self.requests.pop()

    def send(self, payload):
        self.sent += 1
        raise BrokenPipeError(32, "Broken pipe")


def test_a_child_whose_parent_was_killed_exits_quietly(monkeypatch, capfd):
    """A measurement or quality process must not print a BrokenPipeError traceback into the search's output."""
    import effscope.profile.env as env
    import effscope.profile.measure as measure
    from effscope.profile import worker
    from effscope.search import objectives

    monkeypatch.setattr(env, "retain_freed_heap", lambda: None)  # a child's malloc setting, not this process's

    monkeypatch.setattr(
        measure, "run_job", lambda job, first_in_process: Record(target="vit", kind="block", workload={})
    )
    conn = _ConnToTheDead("job")
    worker._serve(conn, None)
    assert conn.sent == 1
    conn = _ConnToTheDead((lambda: 1, {}))
    monkeypatch.setattr(objectives.signal, "signal", lambda *a: None)
    objectives._serve(conn, None)
    assert conn.sent == 1 and "Traceback" not in capfd.readouterr().err
