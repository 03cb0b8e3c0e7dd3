"""The search end to end on tiny CPU spaces: contract data, the front, reproducibility, resume, Ctrl-C, SIGKILL
recovery, several workers on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import hashlib
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
from _spaces import TINY, load, tiny, trials_of
from optuna.trial import TrialState

from effscope.errors import SpecError
from effscope.profile.store import RecordStore
from effscope.search.coordinator import run_search
from effscope.search.storage import named_constraints, storage_url
from effscope.search.study import space_toml
from effscope.search.summary import summarize


def _completed_rows(db: Path) -> int:
    """COMPLETE trials in an SQLite study file, read with plain sqlite3 (0 while the schema does not exist yet)."""
    import sqlite3

    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return conn.execute("SELECT COUNT(*) FROM trials WHERE state = 'COMPLETE'").fetchone()[0]
    except sqlite3.Error:
        return 0


def cli(*args: str, cwd: Path | None = None, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "effscope", *args], capture_output=True, text=True, timeout=150, cwd=cwd, **kw
    )


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("search")
    path = tiny(tmp)
    result = run_search(load(path), storage=str(tmp / "a.db"), command="pytest")
    return tmp, path, result


# --------------------------------------------------------------------------------------------------- contract


def test_study_and_trials_carry_the_contract_data(first_run):
    tmp, _, result = first_run
    study = optuna.load_study(study_name="tiny-cpu", storage=f"sqlite:///{tmp / 'a.db'}")
    a = study.user_attrs
    assert a["effscope_space"]["name"] == "tiny" and "toml" not in a["effscope_space"]  # short: `optuna studies`
    assert "[knobs]" in space_toml(study._storage, "tiny-cpu")
    assert (
        a["effscope_space"]["sha256"]
        == hashlib.sha256(space_toml(study._storage, "tiny-cpu").encode()).hexdigest()[:16]
    )
    assert study.metric_names == ["params", "latency_ms_p50"]
    assert a["target"] == "hilo" and a["kind"] == "block" and a["workload"]["size"] == [7, 7]
    assert a["device_name"] and a["command"] == "pytest" and a["effscope_version"]
    assert a["objectives"][0] == {
        "name": "params",
        "label": "parameters (capacity proxy, not accuracy)",
        "direction": "maximize",
        "is_proxy": True,
    }
    assert a["objectives"][1]["name"] == "latency_ms_p50" and not a["objectives"][1]["is_proxy"]
    assert [b["limit"] for b in a["budgets"]] == [100.0, 0.001]
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]

    trials = study.get_trials(deepcopy=False)
    assert len(trials) == 6 and all(t.state == TrialState.COMPLETE for t in trials)
    assert trials[0].user_attrs["preset"] == "hilo (default)"  # the published design is trial 0
    assert "heads" not in trials[0].params  # heads = 4 is outside the narrowed {1, 2}: no parameter, no sample
    store = RecordStore(str(tmp / "a.db"))
    statuses = set()
    for t in trials:
        u = t.user_attrs
        assert list(named_constraints(t.system_attrs)) == ["latency", "memory", "valid"]
        assert t.system_attrs["constraints"] == list(named_constraints(t.system_attrs).values())  # the dashboard's
        statuses.add(u["status"])
        assert u["quality_name"] == "params" and u["worker"]
        if u["status"] == "invalid":  # lofi_heads > heads: completed with a reason, never a crash
            assert t.constraints["valid"] == 1.0 and "lofi_heads <= heads" in u["reason"]
            assert u["record_uid"] is None and t.values[0] == -math.inf
            continue
        assert t.constraints["valid"] == 0.0 and t.values == [u["quality"], u["latency_ms_p50"]]
        assert u["quality"] == u["params"] and isinstance(u["knobs"], dict)
        assert u["knobs"]["head_dim"] == (32 if u.get("preset") else 16)  # the preset is measured as published
        p90 = u["latency_ms_p90"]
        assert math.isclose(t.constraints["latency"], p90 / 100.0 - 1.0)
        rec = [r for r in store.records() if r.uid == u["record_uid"]]
        assert rec and rec[0].study == "tiny-cpu" and rec[0].key
        if u["status"] == "measured":
            assert rec[0].trial == t.number
            assert u["timed_s"] >= rec[0].latency["timed_s"] > 0  # re-measurements, if any, add to it
    assert {"measured", "invalid", "cached"} <= statuses  # seed 9 draws an invalid point and a repeat


def test_front_holds_only_feasible_non_dominated_designs(first_run):
    _, _, result = first_run
    s = result.summary
    assert s.front and all(r["feasible"] for r in s.front)
    assert s.quality_label == "parameters (capacity proxy, not accuracy)"
    slices = {sl["limit"]: sl for sl in s.slices}
    assert slices[0.001]["feasible"] == 0 and slices[100.0]["feasible"] == s.feasible


def test_summary_respects_constraints():
    """A fast, infeasible design never reaches the front, whatever its values."""
    dist = {"x": optuna.distributions.IntDistribution(0, 9)}

    def trial(n, q, lat, latency_c, valid=0.0, preset=None):
        attrs = {"quality": q, "latency_ms_p50": lat, "latency_ms_p90": lat, "knobs": {"x": n}, "status": "measured"}
        if preset:
            attrs["preset"] = preset
        t = optuna.trial.create_trial(
            params={"x": n},
            distributions=dist,
            values=[q, lat],
            user_attrs=attrs,
            system_attrs={"constraints:latency": latency_c, "constraints:memory": 0.0, "constraints:valid": valid},
        )
        t.number = n
        return t

    trials = [
        trial(0, 10.0, 5.0, -0.5, preset="p"),  # feasible, dominated by 2
        trial(1, 99.0, 0.1, 0.3),  # best in both values, but over budget
        trial(2, 20.0, 4.0, -0.6),  # feasible front
        trial(3, 5.0, 1.0, -0.9),  # feasible front (fastest)
        trial(4, 50.0, 0.2, -0.9, valid=1.0),  # invalid
    ]
    info = {
        "objectives": [{"name": "q", "label": "q (proxy)", "direction": "maximize"}, {"direction": "minimize"}],
        "budgets": [{"name": "latency", "statistic": "latency_ms_p90", "limit": 10.0}],
    }
    s = summarize(trials, info)
    assert [r["trial"] for r in s.front] == [3, 2] and s.feasible == 3
    assert s.presets[0]["dominated_by"] == 2 and not s.presets[0]["on_front"]


def test_a_studys_trials_export_with_what_the_search_decided_about_each(first_run, tmp_path):
    """`export --storage` writes one row per finished trial: quality, feasibility, constraints and the front as the
    search's summary and Optuna rank it, and the knobs with their types."""
    import json

    tmp, _, _ = first_run
    r = cli("export", "--storage", str(tmp / "a.db"), "-o", "-", "--format", "json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    study = optuna.load_study(study_name="tiny-cpu", storage=storage_url(str(tmp / "a.db")))
    assert [row["trial"] for row in rows] == [t.number for t in study.trials]
    assert {row["trial"] for row in rows if row["on_front"]} == {t.number for t in study.best_trials}
    first = rows[0]
    assert first["quality_name"] == "params" and first["quality"] == first["params"] and first["preset"]
    assert first["feasible"] == (first["constraint.latency"] <= 0) and type(first["knob.heads"]) is int
    out = tmp_path / "trials.csv"
    done = cli("export", "--storage", str(tmp / "a.db"), "--study", "tiny-cpu", "-o", str(out))
    assert done.returncode == 0 and f"{len(rows)} trial(s) of study tiny-cpu written" in done.stdout
    for name in ("trials.csv", "trials.json"):  # its own export is replaced when run again, as a Records export is
        for _ in range(2):
            again = cli("export", "--storage", str(tmp / "a.db"), "--study", "tiny-cpu", "-o", str(tmp_path / name))
            assert again.returncode == 0, again.stderr
    bad = cli("export", "--storage", str(tmp / "a.db"), "--target", "hilo", "-o", "-")
    assert bad.returncode == 2 and "--storage exports a study's trials and takes only --study" in bad.stderr
    plain = optuna.create_study(study_name="plain", storage=storage_url(str(tmp_path / "plain.db")))
    plain.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    foreign = cli("export", "--storage", str(tmp_path / "plain.db"), "-o", str(tmp_path / "plain.csv"))
    assert foreign.returncode == 2 and "study 'plain' was not made by effscope search" in foreign.stderr
    assert not (tmp_path / "plain.csv").exists()
    report = cli("report", "--storage", str(tmp_path / "plain.db"), "-o", str(tmp_path / "plain.html"))
    assert report.returncode == 2 and "study 'plain' was not made by effscope search" in report.stderr


# --------------------------------------------------------------------------------------------------- runs


def test_seeded_search_is_reproducible_and_the_cli_names_the_objective(first_run):
    tmp, path, _ = first_run
    r = cli("search", str(path), "--db", str(tmp / "b.db"), "--report", str(tmp / "b.html"))
    assert r.returncode == 0, r.stderr
    assert "Pareto designs: parameters (capacity proxy, not accuracy)" in r.stdout
    assert f"report written to {tmp / 'b.html'}" in r.stdout and "Pareto front" in (tmp / "b.html").read_text()
    assert "hilo (default)" in r.stdout and "trials 6/6" in r.stderr
    # stderr is a pipe: one line per completed trial, naming it, with an ETA until the last one
    lines = [line for line in r.stderr.splitlines() if line.startswith("trial ")]
    assert sorted(int(line.split()[1]) for line in lines) == list(range(6))
    assert all(" | trials " in line and ("ETA" in line) == ("trials 6/6" not in line) for line in lines)
    a, b = trials_of(str(tmp / "a.db")), trials_of(str(tmp / "b.db"))
    assert [t.params for t in a] == [t.params for t in b]
    assert [t.user_attrs["status"] for t in a] == [t.user_attrs["status"] for t in b]
    assert [t.values[0] for t in a] == [t.values[0] for t in b]


def test_progress_names_the_trial_and_gives_an_eta():
    from effscope.cli.search import _progress_text, _trial_line
    from effscope.search.coordinator import SearchProgress

    p = SearchProgress(3, 2, 0, 3, 40, 2, None, 12.0, 2, [1, 2], eta_s=37 * 0.8 / 2, finished=[])
    t = {"trial": 2, "status": "measured", "seconds": 0.81}
    assert (
        _trial_line(t, p, "params")
        == "trial 2 measured in 0.81 s | trials 3/40 | running 2 | feasible 3 | front 2 | 12 s | ETA 15 s"
    )
    assert _progress_text(SearchProgress(3, 2, 0, 3, 400, 2, None, 12.0, 2, [], eta_s=397 * 30.0), "q").endswith(
        "ETA 3.3 h"
    )
    best = {"trial": 1, "quality": 5.0, "latency_ms_p50": 3.0, "latency_graph_ms_p50": 0.4}
    graph = SearchProgress(3, 2, 0, 3, 40, 2, best, 12.0, 2, [1, 2], eta_s=None, finished=[])
    assert "best q 5 at 0.400 ms (trial 1)" in _progress_text(graph, "q", "latency_graph_ms_p50")  # what it minimizes


def test_another_definition_under_the_same_study_name_is_refused(first_run):
    tmp, path, _ = first_run
    with pytest.raises(SpecError, match=r"study 'tiny-cpu' exists with other settings \(changed: budgets\)"):
        run_search(load(path).with_overrides(budget_ms=7.0), storage=str(tmp / "a.db"))


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_keeps_completed_trials_and_rerun_resumes(tmp_path, sig, code):
    # Deterministic, whatever the machine's speed: the signal goes out once two trials are stored, and a cap of
    # 10,000 trials cannot be reached before it arrives (a 5-trial search once finished first on a loaded machine).
    # SIGTERM (`timeout`, a CI cancel, sent to the command alone) ends it as Ctrl-C does, with its own exit code.
    path = tiny(tmp_path, trials=10_000, max_time=0.15)
    db = tmp_path / "c.db"
    proc = subprocess.Popen(
        [sys.executable, "-m", "effscope", "search", str(path), "--db", str(db)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 300
        while _completed_rows(db) < 2:  # read-only: opening an Optuna storage here would race its creation
            assert time.monotonic() < deadline and proc.poll() is None, "the search stored no two trials"
            time.sleep(0.2)
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, stderr
    assert "interrupted:" in stderr and "re-run the same command to resume" in stderr
    assert "Traceback" not in stderr
    before = {t.number: t.values for t in trials_of(str(db)) if t.state == TrialState.COMPLETE}
    assert len(before) >= 2

    r = cli("search", str(path), "--db", str(db), "--trials", str(len(before) + 2))
    assert r.returncode == 0, r.stderr
    after = trials_of(str(db))
    complete = [t for t in after if t.state == TrialState.COMPLETE]
    assert len(complete) == len(before) + 2  # the cap is exact
    assert all(after[n].values == v for n, v in before.items())  # nothing completed was lost or redone
    assert sum(1 for t in after if t.user_attrs.get("preset")) == 1  # presets are enqueued once
    assert not [t for t in after if t.state == TrialState.RUNNING]


def test_over_budget_designs_abort_early_and_complete_infeasible(tmp_path):
    path = tiny(tmp_path, budget=0.001, trials=3, max_time=2.0)
    result = run_search(load(path), storage=str(tmp_path / "d.db"))
    measured = [t for t in trials_of(str(tmp_path / "d.db")) if t.user_attrs["status"] != "invalid"]
    assert measured
    for t in measured:
        u = t.user_attrs
        assert u["status"] == "aborted-over-budget" and "the fastest third ran above" in u["reason"]
        assert "aborted-over-budget" in u["flags"] and t.constraints["latency"] > 0
    assert not result.summary.front and result.summary.feasible == 0

    # A second study on the same store reuses those partial Records: counted as cached, still aborted and infeasible.
    again = run_search(load(path), storage=str(tmp_path / "d.db"), study_name="again")
    reused = [t for t in trials_of(str(tmp_path / "d.db"), "again") if t.user_attrs["status"] != "invalid"]
    assert reused and again.summary.counts.get("aborted-over-budget", 0) == 0
    for t in reused:
        u = t.user_attrs
        assert u["status"] == "cached" and u["reason"].startswith("reused a measurement that stopped after")
        assert "aborted-over-budget" in u["flags"] and t.constraints["latency"] > 0
    assert again.summary.feasible == 0


def test_a_budget_on_the_cuda_graph_replay_turns_off_early_abort_and_needs_the_replay(tmp_path):
    """Run here without a GPU: what the objective does with a Record that a GPU would return. Early abort watches eager
    samples, so it is off; a design whose forward could not be captured is infeasible, with the capture's error."""
    from effscope.profile.record import Record
    from effscope.search.trial import SearchObjective

    gpu = tiny(tmp_path).read_text().replace("threads = 1", 'device = "cuda"')
    path = tmp_path / "gpu.toml"
    path.write_text(gpu.replace("[search]", 'statistic = "latency_graph_ms_p90"\n[search]'))
    space = load(path)
    db = str(tmp_path / "g.db")
    objective = SearchObjective(
        space, store=RecordStore(db), device_name="gpu", study_name="g", command="test", measure=None
    )
    assert space.measure["abort_margin"] and objective.options.abort_above_ms is None
    study = optuna.create_study(directions=space.directions, storage=storage_url(db), study_name="g")
    why = "CUDA graph capture failed: operation not permitted when stream is capturing"
    for latency, missing in (
        ({"latency_graph_ms_p90": 0.5, "latency_graph_ms_p50": 0.4}, {}),
        ({}, {"latency_graph_ms_p90": why}),
    ):
        trial = study.ask()
        record = Record(target="hilo", kind="block", workload={}, latency={"latency_ms_p50": 3.0, **latency})
        record.missing.update(missing)
        values = objective._finish(trial, {}, quality=1.0, record=record, valid=True)
        study.tell(trial, values)
    captured, uncaptured = study.get_trials()
    assert named_constraints(captured.system_attrs)["latency"] == pytest.approx(0.5 / 100.0 - 1.0)
    assert captured.values == [1.0, 0.4]  # the second objective is the replay's median, not eager's 3.0 ms
    assert captured.user_attrs["latency_graph_ms_p90"] == 0.5 and captured.user_attrs["latency_ms_p50"] == 3.0
    assert named_constraints(uncaptured.system_attrs)["latency"] == 1.0
    assert uncaptured.user_attrs["reason"] == f"latency_graph_ms_p90: {why}" and uncaptured.values[1] == math.inf


def test_a_memory_budget_needs_the_peak_a_design_without_one_is_infeasible_with_its_reason(tmp_path):
    from effscope.profile.record import Record
    from effscope.search.trial import SearchObjective

    path = tmp_path / "mem.toml"
    path.write_text(tiny(tmp_path).read_text().replace("[search]", "memory_bytes = 1000\n[search]"))
    space = load(path)
    db = str(tmp_path / "m.db")
    objective = SearchObjective(
        space, store=RecordStore(db), device_name="cpu", study_name="m", command="t", measure=None
    )
    study = optuna.create_study(directions=space.directions, storage=storage_url(db), study_name="m")
    why = "this OS does not expose a resettable peak RSS (/proc/self/clear_refs)"
    for peak in (500, None):
        trial = study.ask()
        record = Record(
            target="hilo", kind="block", workload={}, latency={"latency_ms_p50": 0.4, "latency_ms_p90": 0.5}
        )
        record.memory = {"peak_rss_bytes": peak}
        if peak is None:
            record.missing["peak_rss_bytes"] = why
        study.tell(trial, objective._finish(trial, {}, quality=1.0, record=record, valid=True))
    measured, unmeasured = study.get_trials()
    assert named_constraints(measured.system_attrs)["memory"] == pytest.approx(500 / 1000 - 1.0)
    assert "reason" not in measured.user_attrs
    # on the CPU the budget and the stored figure are the RSS, never labelled as GPU memory
    assert space.memory_budget.statistic == "peak_rss_bytes" and "peak_mem_bytes" not in measured.user_attrs
    assert measured.user_attrs["peak_rss_bytes"] == 500
    assert space.with_overrides(device="cuda").memory_budget.statistic == "peak_mem_bytes"
    assert named_constraints(unmeasured.system_attrs)["memory"] == 1.0  # never silently within the budget
    assert unmeasured.user_attrs["reason"] == f"peak_rss_bytes: {why}"
    # a Record measured where the peak was hidden (another search's reused process) is no cache hit here
    hidden = Record(target="hilo", kind="block", workload={}, latency={"latency_ms_p90": 0.5}, key="k" * 16)
    hidden.memory = {"peak_rss_bytes": None}
    objective.store.add(hidden)
    assert objective._cached("k" * 16) is None
    seen = Record(target="hilo", kind="block", workload={}, latency={"latency_ms_p90": 0.5}, key="k" * 16)
    seen.memory = {"peak_rss_bytes": 500}
    objective.store.add(seen)
    assert objective._cached("k" * 16).uid == seen.uid
    # the measured attention mode times its cores in the measuring process first: no clean peak RSS to budget
    path.write_text(path.read_text().replace("threads = 1", 'threads = 1\nattention = "measured"'))
    with pytest.raises(SpecError, match="memory_bytes needs the peak RSS, which .* cannot give on the CPU"):
        load(path)


def test_a_training_search_budgets_and_minimizes_the_training_step(tmp_path):
    """[workload] mode = "train": each design's training step (forward, backward, AdamW) is timed, budgeted and
    minimized, under its own names; forward latencies appear nowhere, and a latency table is refused."""
    from effscope.report._load import load_study
    from effscope.report.contents import report_data
    from effscope.search.predictor import PredictorError, check_compatible

    path = tmp_path / "train.toml"
    path.write_text(tiny(tmp_path, trials=3).read_text().replace("size = [7, 7]", 'size = [7, 7]\nmode = "train"'))
    space = load(path)
    with pytest.raises(PredictorError, match="times a training step"):
        check_compatible(None, space, "dev")  # refused before the table is even read
    db = str(tmp_path / "t.db")
    result = run_search(space, storage=db)
    study = optuna.load_study(study_name="train-cpu", storage=storage_url(db))
    assert study.user_attrs["objectives"][1]["name"] == "train_step_ms_p50"
    assert [b["statistic"] for b in study.user_attrs["budgets"]] == ["train_step_ms_p90"] * 2
    measured = [t for t in study.get_trials() if t.user_attrs["status"] == "measured"]
    assert measured
    for t in measured:
        u = t.user_attrs
        assert u["train_step_ms_p50"] > 0 and u["train_img_s"] > 0 and "latency_ms_p50" not in u
        assert t.values[1] == u["train_step_ms_p50"]
        assert math.isclose(t.constraints["latency"], u["train_step_ms_p90"] / 100.0 - 1.0)
        (record,) = [r for r in RecordStore(db).records() if r.uid == u["record_uid"]]
        assert record.workload["mode"] == "train" and "latency_ms_p50" not in record.latency
    assert result.summary.front and all(r["train_step_ms_p90"] <= 100.0 for r in result.summary.front)
    front = report_data(load_study(db)).front
    assert front.x_statistic == "train_step_ms_p90" and front.x_label.startswith("training step p90")
    assert front.slices.columns[4:6] == ["training step p50 (ms)", "training step p90 (ms)"]


def test_multi_block_space_with_a_computed_proxy(tmp_path):
    path = tmp_path / "zoo.toml"
    path.write_text(
        """
[space]
target = ["vit", "hilo"]
[workload]
size = [7, 7]
threads = 1
[objectives]
quality = "synflow"
[budgets]
latency_ms = 100
[search]
trials = 4
seed = 1
[measure]
max_time_s = 0.05
window_s = 0.05
[knobs.vit]
heads = [1, 2]
[knobs.hilo]
heads = [1, 2]
lofi_heads = 1
"""
    )
    result = run_search(load(path), storage=str(tmp_path / "z.db"), study_name="zoo")
    trials = trials_of(str(tmp_path / "z.db"), "zoo")
    assert [t.user_attrs.get("preset") for t in trials[:2]] == ["vit (default)", "hilo (default)"]
    assert {t.params["block"] for t in trials} <= {"vit", "hilo"}
    for t in trials:
        assert all(p == "block" or p.startswith(t.params["block"] + ".") for p in t.params)
        if t.user_attrs["status"] in ("measured", "cached"):
            assert math.isfinite(t.user_attrs["quality"]) and t.user_attrs["quality_name"] == "synflow"
        if t.user_attrs["status"] == "measured":  # counted beside the proxy, after the timing: one Record of both
            records = RecordStore(str(tmp_path / "z.db")).records()
            (record,) = [r for r in records if r.uid == t.user_attrs["record_uid"]]
            assert record.counts["macs"] == t.user_attrs["macs"] > 0 and record.details["count"]["macs_by_module"]
            assert record.latency["latency_ms_p50"] > 0 and record.roofline["achieved_mac_s"] > 0
    assert result.summary.quality_label == "synflow (zero-cost proxy, not accuracy)"


def test_sigkilled_worker_loses_no_completed_trial_and_its_trial_is_retried(tmp_path):
    # No invalid or repeated designs here: every trial measures, so the survivor outlives the heartbeat grace.
    text = TINY.format(budget=100.0, trials=10, max_time=0.4)
    text = text.replace("lofi_heads = { low = 0, high = 2 }", "lofi_heads = 0")
    path = tmp_path / "tiny.toml"
    path.write_text(text.replace("mlp_ratio = [1.0, 2.0]", "mlp_ratio = { low = 1.0, high = 4.0 }"))
    db = tmp_path / "k.db"
    pids: list[int] = []
    out: dict = {}

    def progress(p):
        pids[:] = p.worker_pids

    def run():
        out["result"] = run_search(
            load(path), storage=str(db), workers=2, heartbeat_s=1, grace_s=2, on_progress=progress, poll_s=0.3
        )

    thread = threading.Thread(target=run)
    thread.start()
    victim, killed_trial, completed_before = None, None, {}
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and victim is None:
        time.sleep(0.2)
        if len(pids) < 2 or not db.exists():
            continue
        trials = trials_of(str(db))
        running = [t for t in trials if t.state == TrialState.RUNNING and t.user_attrs.get("worker")]
        # Kill only once each worker has completed a trial: which one finishes first depends on the machine's load.
        writers = {t.user_attrs.get("worker") for t in trials if t.state == TrialState.COMPLETE}
        if sum(t.state == TrialState.COMPLETE for t in trials) >= 2 and len(writers) == 2 and running:
            victim_trial = running[0]
            pid = int(victim_trial.user_attrs["worker"].rsplit(":", 1)[1])
            if pid in pids:
                completed_before = {t.number: t.values for t in trials if t.state == TrialState.COMPLETE}
                os.kill(pid, signal.SIGKILL)
                victim, killed_trial = pid, victim_trial
    assert victim is not None, "no running trial to kill"
    thread.join(150)
    assert not thread.is_alive()
    trials = trials_of(str(db))
    assert all(trials[n].values == v for n, v in completed_before.items())
    # The trial the worker was running when SIGKILL landed: the one seen running, or, when that one completed between
    # the read and the kill (a loaded machine), the next one it had started. Either way exactly one is left undone.
    (lost,) = [t for t in trials if t.user_attrs.get("worker") == killed_trial.user_attrs["worker"] and not t.values]
    assert lost.number >= killed_trial.number and lost.state == TrialState.FAIL
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == lost.number]
    assert retries and retries[0].state == TrialState.COMPLETE
    assert retries[0].params == lost.params
    workers = {t.user_attrs["worker"] for t in trials if t.state == TrialState.COMPLETE}
    assert len(workers) == 2  # both workers wrote trials into the one SQLite file
    assert any("SIGKILL" in n for n in out["result"].notes)
    (failure,) = out["result"].failures  # a dead worker is a failed search (the CLI exits non-zero)
    assert failure.cause == "killed" and failure.reason == "was killed by SIGKILL"


# --------------------------------------------------------------------------------------------------- PostgreSQL


def test_two_workers_share_one_study_on_postgresql(tmp_path, postgres_url):
    path = tiny(tmp_path, trials=6)
    result = run_search(load(path), storage=postgres_url, workers=2, heartbeat_s=2)
    trials = trials_of(postgres_url)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 6  # the cap is exact across workers (an advisory lock on PostgreSQL)
    assert len({t.user_attrs["worker"] for t in complete}) == 2
    store = RecordStore(storage_url(postgres_url))
    uids = {r.uid for r in store.records(study="tiny-cpu")}
    assert {t.user_attrs["record_uid"] for t in complete if t.user_attrs["record_uid"]} <= uids
    assert result.storage_url == storage_url(postgres_url) and result.summary.trials == len(complete)


def test_storage_creation_retries_a_concurrent_schema_creation(monkeypatch):
    from effscope.search import storage as storage_mod

    monkeypatch.setattr(storage_mod.time, "sleep", lambda s: None)
    calls = []

    def flaky(url, **kw):
        calls.append(url)
        if len(calls) < 3:
            raise RuntimeError("(sqlite3.IntegrityError) UNIQUE constraint failed: alembic_version.version_num")
        return "storage"

    assert storage_mod._create_rdb_storage(flaky, "sqlite:///x.db", {}) == "storage" and len(calls) == 3

    def broken(url, **kw):
        calls.append(url)
        raise RuntimeError("connection refused")

    calls.clear()
    with pytest.raises(RuntimeError, match="connection refused"):
        storage_mod._create_rdb_storage(broken, "sqlite:///x.db", {})
    assert len(calls) == 1  # other errors are not retried
