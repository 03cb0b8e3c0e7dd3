"""benchmarks/gpu_check.py: the step budgets with fake steps, the summary, the wheel bootstrap, bad input, and the
whole check in its CPU quick mode (so the kit cannot rot between GPU runs)."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


@pytest.fixture(scope="module")
def kit():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses resolve annotations through the module's entry
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------------------------------------ wheels

# What the lent GPU machines' CUDA images carry (their package list); everything else must come from .whl/.
GPU_IMAGE_PACKAGES = {"torch", "numpy", "pandas", "typer", "rich", "nvidia-ml-py", "pyyaml", "narwhals", "effscope"}


def _norm(name: str) -> str:
    return name.lower().replace("_", "-")


def test_every_package_the_check_imports_comes_with_the_image_or_a_carried_wheel(kit):
    """`make gpu-wheels` once lacked portalocker and tabulate, which fvcore.nn imports: a GPU machine without them
    could not start the check. Import what the check's steps import, and name each distribution that got loaded."""
    makefile = (ROOT / "Makefile").read_text()
    listed = makefile.split("GPU_WHEELS ?=", 1)[1].split("\ngpu-wheels:", 1)[0].replace("\\\n", " ")
    wheels = {_norm(w.strip("'").split(">")[0].split("<")[0].split("=")[0]) for w in listed.split()} | {"fvcore"}
    smoke = ", ".join(m for m in kit.SMOKE_IMPORTS if m != "torch")
    code = (
        "import sys, json, importlib.metadata as md; import torch; base = set(sys.modules); "
        f"import {smoke}; loaded = {{m.split('.')[0] for m in set(sys.modules) - base}}; "
        "names = md.packages_distributions(); print(json.dumps(sorted({d for m in loaded for d in names.get(m, [])})))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = {_norm(d) for d in json.loads(done.stdout)}
    assert "portalocker" in loaded  # the probe sees fvcore's dependencies
    assert not loaded - wheels - GPU_IMAGE_PACKAGES, "add these to GPU_WHEELS in the Makefile"


# ------------------------------------------------------------------------------------------------ budgets


def test_deadlines_are_cumulative_shares_and_leave_the_summary_its_reserve(kit):
    steps = [kit.Step("a", 0.5, ""), kit.Step("b", 0.25, ""), kit.Step("c", 0.25, "")]
    d = kit.step_deadlines(steps, 100.0, 45.0)
    usable = 45.0 - kit.SUMMARY_RESERVE_S
    assert d == pytest.approx([100 + usable * 0.5, 100 + usable * 0.75, 100 + usable])
    assert sum(s.share for s in kit.STEPS) == pytest.approx(1.0)


def _fake(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_each_outcome_is_recorded_and_a_hung_step_is_killed_with_its_children(kit, tmp_path):
    work, log = tmp_path / "work", tmp_path / "log.txt"
    work.mkdir()
    grandchild = tmp_path / "grandchild.pid"
    fragment = "import json, sys; open(sys.argv[1], 'w').write(json.dumps({'data': %s}))"
    codes = {  # the hung step first: steps after it get only their own share, which keeps the test short
        "hung": (
            "import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']);"
            f" open({str(grandchild)!r}, 'w').write(str(p.pid)); time.sleep(60)",
            False,
        ),
        "ok": (fragment % "{'x': 1}", True),
        "partial": (fragment % "{'incomplete': 'ran 2 of 3'}", True),
        "failing": ("import sys; print('something broke here'); sys.exit(3)", False),
        "after": (fragment % "{'y': 2}", True),
    }
    steps = [kit.Step(name, 1.0, f"fake {name}") for name in codes]

    def command_for(step, _deadline):
        code, writes = codes[step.name]
        return _fake(code) + ([str(work / f"{step.name}.json")] if writes else [])

    limit = 5 * 3.0 + kit.SUMMARY_RESERVE_S
    t0 = time.time()
    results = kit.run_steps(steps, command_for, limit=limit, work=work, log=log, echo=lambda _: None, min_step_s=0.5)
    wall = time.time() - t0
    by = {r.step: r for r in results}
    assert [r.status for r in results] == ["out of time", "ok", "partial", "failed", "ok"]
    assert "deadline" in by["hung"].reason and by["hung"].wall_s < 3.0 + 1.0
    assert by["ok"].data == {"x": 1}
    assert by["partial"].reason == "ran 2 of 3"
    assert "exit code 3" in by["failing"].reason and "something broke here" in by["failing"].reason
    assert by["after"].data == {"y": 2}  # the steps after a hung one still run
    assert wall < limit - kit.SUMMARY_RESERVE_S + 1.0  # never past the limit
    pid = int(grandchild.read_text())
    time.sleep(0.2)
    assert not _alive(pid), "the hung step's own children must be killed with it"
    assert "===== step failing" in log.read_text()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "State:\tZ" in status.read_text())


def test_a_step_without_time_left_is_skipped(kit, tmp_path):
    steps = [kit.Step("long", 0.8, ""), kit.Step("starved", 0.2, "")]
    results = kit.run_steps(
        steps,
        lambda step, _d: _fake("import time; time.sleep(60)" if step.name == "long" else "pass"),
        limit=kit.SUMMARY_RESERVE_S + 5.0,  # "starved" gets 1 s, under the 2 s minimum
        work=tmp_path,
        log=tmp_path / "log.txt",
        echo=lambda _: None,
        min_step_s=2.0,
    )
    assert [r.status for r in results] == ["out of time", "skipped"]


def test_fidelity_starts_no_target_it_expects_to_run_past_its_deadline(kit, monkeypatch):
    """On a fake clock each target takes 10 s: with 25 s the first two run (guess 5 s, then 10 s each), the third
    and the profile job are listed as not run, and what was measured is handed on after every target."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import measurement_fidelity as fidelity
    finally:
        sys.path.pop(0)
    now = [1000.0]

    class Clock:
        time = perf_counter = staticmethod(lambda: now[0])

    def fake_target(name, *_):
        now[0] += 10.0
        medians = {"median_ms_1": 2.0, "median_ms_2": 2.02, "timer_median_ms": 2.04, "rel_iqr_1": 0.01}
        return {"target": name, **medians, "repeat_ratio": 1.01, "repeat_ratio_p10": 1.0, "agreement_ratio": 0.98}

    monkeypatch.setattr(fidelity, "time", Clock)
    monkeypatch.setattr(fidelity, "_measure_target", fake_target)
    handed_on = []
    res = fidelity.run(
        "cpu",
        targets=["vit", "hilo", "lightvit"],
        deadline=now[0] + 25.0,
        guess_s=5.0,
        progress=lambda r: handed_on.append([row["target"] for row in r["rows"]]),
    )
    assert [r["target"] for r in res["rows"]] == ["vit", "hilo"]
    assert res["not_run"] == ["lightvit", "profile job"] and "job_wall_s" not in res
    assert handed_on == [["vit"], ["vit", "hilo"]]
    assert res["worst_repeat_dev"] == pytest.approx(0.01) and res["worst_agreement_dev"] == pytest.approx(0.02)
    summary = "\n".join(kit._summary_fidelity(res))
    assert "not run for lack of time: lightvit, profile job" in summary and "profile job 0" not in summary


def test_the_official_step_runs_only_with_the_checkouts_and_before_the_zoo(kit):
    settings = kit.settings_for("cuda", False)
    assert [s.name for s in kit.steps_for(settings)] == [s.name for s in kit.STEPS]
    with_official = kit.steps_for(dataclasses.replace(settings, official="/checkouts"))
    assert [s.name for s in with_official][-2:] == ["official", "zoo"]


def test_official_commits_are_read_without_the_git_program(monkeypatch, tmp_path):
    """A lent GPU machine may have no git: the commits come from each checkout's own .git folder, and a folder
    without one is unknown (never the enclosing repository's commit, as `git -C` would answer)."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import official_code

    monkeypatch.setenv("PATH", str(tmp_path / "no-programs"))
    sha, other = "a" * 40, "b" * 40
    layouts = {
        "detached": {"HEAD": sha},
        "loose": {"HEAD": "ref: refs/heads/main", "refs/heads/main": sha},
        "packed": {
            "HEAD": "ref: refs/heads/main",
            "packed-refs": f"# pack-refs\n{other} refs/heads/x\n{sha} refs/heads/main",
        },
    }
    for name, files in layouts.items():
        for rel, text in files.items():
            (tmp_path / name / ".git" / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / name / ".git" / rel).write_text(text + "\n")
        assert official_code.checked_out_commit(tmp_path / name) == sha, name
    (tmp_path / "plain").mkdir()
    assert official_code.checked_out_commit(tmp_path / "plain") == "unknown (not a git checkout)"
    assert official_code.commits(tmp_path)["PVT"] == "unknown (not a git checkout)"


def test_the_official_step_keeps_failures_as_rows_and_starts_nothing_past_its_deadline(kit, monkeypatch, tmp_path):
    """On a fake clock each comparison takes 10 s: with 35 s, pvt_sra runs in fp32 and bf16 (guess 8 s, then 10 s),
    hilo fp32 fails (kept as a row), hilo bf16 is not started; what was compared is saved after each."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import official_code
    import vs_official

    now = [1000.0]

    class Clock:
        time = perf_counter = staticmethod(lambda: now[0])

    def fake_compare(case, _official, *, batch, dtype, **_):
        now[0] += 10.0
        if (case.name, dtype) == ("hilo", "fp32"):
            raise RuntimeError("CUDA out of memory")
        return {
            "target": case.name,
            "batch": batch,
            **dict(ratio_median=0.95, ratio_q1=0.94, ratio_q3=0.96, ratio_of_min=0.97, ms_ours=1.0, ms_official=1.05),
            **dict(max_rel_diff=3e-7, measured_cores=[]),
        }

    monkeypatch.setattr(kit, "time", Clock)
    monkeypatch.setattr(official_code, "Official", lambda root: None)
    monkeypatch.setattr(official_code, "commits", lambda root: {"PVT": "abc"})
    monkeypatch.setattr(vs_official, "compare", fake_compare)
    settings = dataclasses.replace(
        kit.settings_for("cpu", True), official=str(tmp_path), official_targets=("hilo", "pvt_sra")
    )
    settings = dataclasses.replace(settings, official_dtypes=("fp32", "bf16"), official_guess_s=8.0)
    ctx = kit.Context(settings, tmp_path, now[0] + 35.0, tmp_path / "official.json")
    data = kit.step_official(ctx)
    rows = [(r["target"], r["dtype"], "error" in r) for r in data["rows"]]
    assert rows == [("pvt_sra", "fp32", False), ("pvt_sra", "bf16", False), ("hilo", "fp32", True)]
    assert json.loads(ctx.fragment.read_text())["data"]["rows"] == data["rows"]
    assert data["not_run"] == ["hilo bf16"] and data["incomplete"] == "not run for lack of time: hilo bf16"
    text = "\n".join(kit._summary_official(data))
    assert "2 of 2 comparisons at or under 1.00x" in text and "failed: RuntimeError: CUDA out of memory" in text
    assert "Not run for lack of time: hilo bf16." in text


def test_official_checkouts_missing_are_one_sentence(tmp_path):
    (tmp_path / "PVT").mkdir()
    cmd = [sys.executable, str(SCRIPT), "--device", "cpu", "--quick", "--official", str(tmp_path)]
    done = subprocess.run([*cmd, "--out", str(tmp_path / "out")], capture_output=True, text=True)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"--official {tmp_path} lacks the checkouts CXV, Efficient_ViT_with_DW" in done.stderr
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------------ summary


def test_summary_shows_every_step_and_never_prints_a_missing_number_as_zero(kit):
    result = {
        "command": "python benchmarks/gpu_check.py",
        "device": "cuda",
        "quick": False,
        "limit_s": 330,
        "wall_s": 300.2,
        "started_utc": "2026-11-27T00:00:00+00:00",
        "machine": {
            "python": "3.12.1",
            "torch": "2.11.0",
            "torch_cuda_build": "12.8",
            "cudnn": 90100,
            "effscope": "0.1.0",
            "fvcore": "0.1.5",
            "optuna": "5.0.0",
            "plotly": "7.1.0",
            "SQLAlchemy": "2.0",
            "cpu": {"cpu_model": "Xeon", "cpu_logical": 16},
            "gpu": {"name": "NVIDIA H100", "driver_version": "570", "cuda_driver_version": "12.8"},
        },
        "steps": [
            {"step": "device", "status": "failed", "wall_s": 1.0, "budget_s": 30, "reason": "boom", "data": {}},
            {
                "step": "zoo",
                "status": "partial",
                "wall_s": 100.0,
                "budget_s": 120,
                "reason": "2 target(s) not run for lack of time",
                "data": {
                    "rows": [
                        {
                            "target": "litv2_s",
                            "group": "bf16 batch 64",
                            "status": "ok",
                            "error": None,
                            "macs": 3.7e9,
                            "latency_ms_p50": 20.0,
                            "latency_ms_p90": 21.0,
                            "throughput_img_s": 3200.0,
                            "peak_mem_bytes": 2**30,
                            "peak_rss_bytes": None,
                            "energy_j_per_img": None,
                            "mean_power_w": None,
                            "flags": "",
                            "missing": {"energy_j_per_img": "NVML has no energy counter here"},
                        },
                        {
                            "target": "lightvit_t",
                            "group": "bf16 batch 64",
                            "status": "ok",
                            "error": None,
                            "macs": 0.78e9,
                            "latency_ms_p50": 26.0,
                            "latency_ms_p90": 27.0,
                            "latency_graph_ms_p50": 5.2,
                            "host_bound_ratio": 5.0,
                            "throughput_img_s": 2400.0,
                            "peak_mem_bytes": 2**29,
                            "peak_rss_bytes": None,
                            "energy_j_per_img": 0.06,
                            "mean_power_w": 180.0,
                            "flags": "host-bound",
                            "attention_cores": ["sdpa", "explicit", "sdpa"],
                            "missing": {},
                        },
                    ],
                    "not_run": ["hilo (bf16 batch 64)", "vit (bf16 batch 64)"],
                    "correlations": {
                        "bf16 batch 64": {"n": 3, "spearman": 1.0, "kendall": 1.0},
                        "fp32 batch 1": {"n": 5, "spearman": 0.9, "kendall": 0.8},
                    },
                },
            },
            {
                "step": "fidelity",
                "status": "ok",
                "wall_s": 40.0,
                "budget_s": 50,
                "reason": None,
                "data": {
                    "device": "cuda",
                    "worst_repeat_dev": 0.7,
                    "worst_agreement_dev": 0.3,
                    "worst_graph_repeat_dev": 0.004,
                    "worst_graph_agreement_dev": 0.02,
                    "loop_overhead_us": 2.0,
                    "job_wall_s": 17.0,
                    "job_timed_s": 0.8,
                    "rows": [
                        {
                            "target": "vit",
                            "median_ms_1": 0.27,
                            "median_ms_2": 0.47,
                            "repeat_ratio": 1.74,
                            "timer_median_ms": 0.26,
                            "agreement_ratio": 1.04,
                            "rel_iqr_1": 0.29,
                            "graph_median_ms_1": 0.1421,
                            "graph_median_ms_2": 0.1426,
                            "graph_repeat_ratio": 1.0035,
                            "graph_timer_median_ms": 0.145,
                            "graph_agreement_ratio": 0.98,
                            "host_bound": 1.9,
                        },
                        {
                            "target": "hilo",
                            "median_ms_1": 0.7,
                            "median_ms_2": 0.7,
                            "repeat_ratio": 1.0,
                            "timer_median_ms": 0.7,
                            "agreement_ratio": 1.0,
                            "rel_iqr_1": None,
                            "graph_error": "operation not permitted when stream is capturing",
                        },
                    ],
                },
            },
            {"step": "search", "status": "skipped", "wall_s": 0.0, "budget_s": 2, "reason": "no time", "data": {}},
        ],
    }
    text = kit.render_summary(result)
    assert "NVIDIA H100 (driver 570" in text
    for step in ("| device | failed", "| zoo | partial", "| search | skipped"):
        assert step in text
    row = next(line for line in text.splitlines() if line.startswith("| litv2_s"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[6:13] == ["-", "-", "3,200", "1024", "-", "-", "-"]  # no graph replay, energy, cores: never 0
    row = next(line for line in text.splitlines() if line.startswith("| lightvit_t"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[6:8] == ["5.200", "5.00"] and cells[-2:] == ["1 of 3", "host-bound"]
    assert "how many took the explicit matmul-softmax-matmul path" in text
    assert "Worst repeatability deviation 0.40 % (target 1 %)" in text  # the graph replay's, beside eager's 70 %
    assert "Worst repeatability deviation 70.00 % (target 1 %: **missed**)" in text
    graph_rows = [line for line in text.splitlines() if line.startswith(("| vit", "| hilo"))][2:]
    assert "1.0035" in graph_rows[0] and "| 1.90 |" in graph_rows[0]
    assert "capture failed: operation not permitted" in graph_rows[1]
    assert "NVML has no energy counter here" in text
    assert "Not run for lack of time: hilo (bf16 batch 64), vit (bf16 batch 64)" in text
    assert "bf16 batch 64: too few for a rank correlation (n=3)" in text  # 3 targets: no ±1 printed as a finding
    assert "fp32 batch 1: Spearman 0.900, Kendall 0.800 (n=5)" in text


def test_the_search_step_budgets_the_cuda_graph_replay_and_says_so(kit, tmp_path):
    path = kit._space_budgeting("litv2", "latency_graph_ms_p90", tmp_path)
    assert path.name == "litv2.toml" and 'statistic = "latency_graph_ms_p90"' in path.read_text()
    from effscope.search.space import load_space

    space = load_space(str(path))
    assert space.budgets_graph_replay and space.workload.cuda_graph and space.name == "litv2"
    eager = kit._space_budgeting("hilo_block", "latency_ms_p50", tmp_path / "eager")
    assert load_space(str(eager)).latency_budget.statistic == "latency_ms_p50"  # the shipped space's line replaced
    preset = {"preset": "litv2_s", "trial": 0, "on_front": True, "feasible": True, "latency_ms_p50": 10.4}
    preset |= {"latency_graph_ms_p50": 9.7, "latency_graph_ms_p90": 9.8}
    data = {"study": "gpu-check-litv2", "budget": {"statistic": "latency_graph_ms_p90", "limit": 40.0}}
    data |= {"counts": {}, "trials": 1, "feasible": 1, "seconds_per_trial_median": 2.0, "quality": "synflow"}
    data |= {"slices": [], "presets": [preset]}
    text = "\n".join(kit._summary_search(data))
    assert "feasible under latency_graph_ms_p90 <= 40 ms" in text
    assert "preset litv2_s (trial 0): graph p50 9.700 ms, graph p90 9.800 ms, eager p50 10.400 ms" in text


def test_plain_makes_strict_json(kit):
    value = kit.plain({"a": (1, float("nan")), "b": float("inf"), "c": Path("x"), 3: None})
    assert value == {"a": [1, None], "b": None, "c": "x", "3": None}
    json.dumps(value, allow_nan=False)


# ------------------------------------------------------------------------------------------------ set-up


def _wheel(folder: Path, name: str) -> Path:
    """A minimal pure-Python wheel holding module `name` (pip installs it offline)."""
    path = folder / f"{name}-1.0-py3-none-any.whl"
    dist = f"{name}-1.0.dist-info"
    files = {
        f"{name}.py": "VALUE = 42\n",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(f"{p},,\n" for p in files) + f"{dist}/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as z:
        for p, text in {**files, f"{dist}/RECORD": record}.items():
            z.writestr(p, text)
    return path


def test_missing_modules_are_installed_from_carried_wheels(kit, tmp_path, monkeypatch):
    name = "effscope_carried_probe"
    (tmp_path / ".whl").mkdir()
    _wheel(tmp_path / ".whl", name)
    monkeypatch.setattr(sys, "path", list(sys.path))
    env = kit.ensure_packages(tmp_path, needed=(name,), site=tmp_path / "site")
    assert importlib.import_module(name).VALUE == 42
    assert env["PYTHONPATH"].split(os.pathsep)[:2] == [str(tmp_path / "site"), str(tmp_path)]
    sys.modules.pop(name, None)


def test_missing_modules_without_wheels_is_one_sentence(kit, tmp_path):
    with pytest.raises(kit.CheckError, match="lacks effscope_absent_probe.*make gpu-wheels"):
        kit.ensure_packages(tmp_path, needed=("effscope_absent_probe",))


@pytest.mark.parametrize(
    ("args", "phrase"),
    [
        (["--device", "tpu"], "--device must be cpu, cuda or cuda:N"),
        (["--device", "cpu", "--limit", "0"], "--limit must be a positive number"),
        (["--device", "cpu"], "--device cpu checks the kit itself and needs --quick"),
        pytest.param(
            ["--device", "cuda"],
            "no CUDA device is visible",
            marks=pytest.mark.skipif(
                importlib.util.find_spec("torch") is not None and __import__("torch").cuda.is_available(),
                reason="a GPU is visible here",
            ),
        ),
    ],
)
def test_bad_input_is_one_sentence_and_exit_2(args, phrase, tmp_path):
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *args, "--out", str(tmp_path / "out")], capture_output=True, text=True
    )
    assert done.returncode == 2
    assert phrase in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------------ end to end


@pytest.fixture(scope="module")
def two_trials(tmp_path_factory):
    """A database whose study `gpu-check-hilo_block` holds two completed trials (made once, copied per test)."""
    db = tmp_path_factory.mktemp("searched") / "gpu-check.db"
    cmd = [sys.executable, "-m", "effscope", "search", "hilo_block", "--trials", "2", "--db", str(db)]
    cmd += ["--study", "gpu-check-hilo_block"]
    assert subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT).returncode == 0
    return db


def _search_context(kit, tmp_path, db: Path, search_s: float):
    import shutil

    out = tmp_path / "out"
    out.mkdir()
    shutil.copy(db, out / kit.DB)
    settings = dataclasses.replace(kit.settings_for("cpu", True), search_trials=1000)
    deadline = time.time() + kit.STOP_GRACE_S + settings.report_reserve_s + search_s
    return kit.Context(settings, out, deadline, tmp_path / "search.json")


def test_a_search_at_its_budget_is_stopped_like_ctrl_c_and_reported_from_the_storage(kit, tmp_path, two_trials):
    """The GPU search usually ends this way. The study holds two trials already, so the check does not depend on
    how many trials this machine completes before the stop."""
    ctx = _search_context(kit, tmp_path, two_trials, search_s=3.0)  # 3 s of searching, then Ctrl-C
    data = kit.step_search(ctx)
    assert data["interrupted"] and data["trials"] >= 2
    assert data["exit_code"] == 130  # it stopped its workers and exited as after Ctrl-C, it was not killed
    assert data["incomplete"] == f"stopped at the step's budget after {data['trials']} of 1000 trials"
    assert (ctx.out / kit.SEARCH_HTML).stat().st_size > 0  # written from the storage after the stop
    assert 0 <= data["timed_s"] < data["wall_s"]  # only this run's trials: the two earlier ones are not in it
    assert data["duty_cycle"] == data["timed_s"] / data["wall_s"]


def test_a_failed_search_keeps_its_completed_trials_in_the_results(kit, tmp_path, two_trials, monkeypatch):
    class DiedSearch:  # `effscope search` exiting 1, as when a worker died
        def __init__(self, *args, **kwargs):
            pass

        def wait(self, timeout=None):
            return 1

    ctx = _search_context(kit, tmp_path, two_trials, search_s=60.0)
    monkeypatch.setattr(kit.subprocess, "Popen", DiedSearch)
    assert kit.run_one_step("search", ctx) == 1
    fragment = json.loads(ctx.fragment.read_text())
    assert "exited with code 1" in fragment["error"]
    assert fragment["data"]["trials"] == 2 and fragment["data"]["exit_code"] == 1


def test_quick_mode_runs_every_step_on_the_cpu(kit, tmp_path):
    out = tmp_path / "out"
    # Budgets are shares of the limit: a generous one keeps a loaded machine from cutting steps short (idle, the
    # check takes about a minute; only a broken step would use its whole share). With a busy loop beside it on 2 cores
    # and a limit of 1800 s, the presets step ran out of its ~230 s after 11 of 15 presets; at 3600 s it has ~570 s.
    cmd = [sys.executable, str(SCRIPT), "--device", "cpu", "--quick", "--out", str(out), "--limit", "3600"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=3700)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    files = sorted(p.name for p in out.iterdir())
    assert set(files) == set(kit.OUTPUT_FILES) and len(files) <= 8
    result = json.loads((out / "results.json").read_text())
    steps = {s["step"]: s for s in result["steps"]}
    assert list(steps) == [s.name for s in kit.STEPS]
    assert all(s["status"] == "ok" for s in steps.values()), {k: (s["status"], s["reason"]) for k, s in steps.items()}
    assert steps["device"]["data"]["calibration"]["peak_mac_s"]["fp32"] > 0
    presets = steps["presets"]["data"]
    assert presets["ok"] == {"fp32": presets["presets"], "bf16": presets["presets"]}
    (replayed,) = steps["protocols"]["data"]["rows"]
    assert replayed["protocol"] == "litv2 (changed: batch=2, warmup_iters=1, iters=2)" and replayed["img_s"] > 0
    zoo = steps["zoo"]["data"]["rows"]
    assert [r["status"] for r in zoo] == ["ok"] * len(zoo) and {r["dtype"] for r in zoo} == {"bf16", "fp32"}
    assert all(r["energy_j_per_img"] is None and r["missing"]["energy_j_per_img"] for r in zoo)
    assert steps["search"]["data"]["trials"] == 4
    assert steps["predictor"]["data"]["spaces"]["hilo_block"]["validation"]["n_holdout"] >= 1
    summary = (out / "summary.md").read_text()
    headings = ("## Steps", "## Roofline", "## Every preset", "## The papers' protocols", "## Zoo", "## Search")
    for heading in (*headings, "## Measurement fidelity"):
        assert heading in summary
    # A second run into the same folder refuses instead of mixing two checks in one database.
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "already holds an earlier check" in again.stderr
