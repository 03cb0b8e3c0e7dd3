"""Prove effscope on a GPU in one call: device and roofline, every preset, the zoo, measurement fidelity, a search and
the latency predictor, each step in its own process under its own time budget, then a summary.

    make gpu-check                                        # CUDA device 0, results in reports/gpu-check/
    python3 benchmarks/gpu_check.py --out DIR --limit 420
    python3 benchmarks/gpu_check.py --device cpu --quick  # the same steps at CPU size, in under 3 minutes
    make gpu-check GPU_CHECK_ARGS="--official .official --limit 560"   # and against the official code

Steps, in this order (their shares of --limit; time a step leaves unused passes to the later ones):
  device     `effscope device` and `effscope device --calibrate` (peak MAC/s per dtype, copy bandwidth)
  presets    every preset's forward at batch 1 in fp32 and bf16 (output finite, bf16 against fp32), failures kept
  protocols  `effscope profile litv2_s --protocol litv2` and `lightvit_t --protocol lightvit`, beside the papers' img/s
  fidelity   benchmarks/measurement_fidelity.py on the device (repeatability, agreement with torch.utils.benchmark),
             target by target while time allows
  search     a short `effscope search litv2` with the space's GPU latency budgets on the CUDA-graph replay,
             stopped like Ctrl-C at its budget; its HTML report
  predictor  benchmarks/predictor_quality.py on the device (small sample)
  official   only with --official DIR (the official checkouts, benchmarks/official_code.py): every block, then
             every preset, timed against the official code interleaved at batch 64 in fp32 and bf16
             (benchmarks/vs_official.py), while time allows
  zoo        last, with all the time the others left: the zoo suite with energy and telemetry, every preset, then
             every block, at bf16 batch 64, then the presets at fp32 batch 1 while time allows; its HTML report
A step that fails or runs out of time is recorded as such and the next one starts; the run ends before --limit.

Output, at most 8 files (a lent GPU machine returns no more): gpu-check.db (SQLite: the calibration, every Record,
the search study and the latency table), results.json (each step's status, wall time and data), zoo.html,
search.html, summary.md (device, versions, steps, headline figures) and log.txt (every step's console output).

Offline GPU machines: `make gpu-wheels` (on a machine with internet) puts the wheels a CUDA image usually lacks
(fvcore, optuna, plotly, SQLAlchemy and their small dependencies) into .whl/; carry that folder with the working
tree and this script installs them into a temporary folder first. The machine's own CUDA torch is always used.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import importlib.util
import json
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "reports" / "gpu-check"
DB, RESULTS, SUMMARY, LOG, ZOO_HTML, SEARCH_HTML = (
    "gpu-check.db",
    "results.json",
    "summary.md",
    "log.txt",
    "zoo.html",
    "search.html",
)
OUTPUT_FILES = (DB, RESULTS, SUMMARY, LOG, ZOO_HTML, SEARCH_HTML)  # a lent GPU machine returns at most 8 files
NEEDED_MODULES = (
    *("fvcore", "optuna", "plotly", "sqlalchemy", "pandas", "typer", "rich", "pynvml", "tqdm"),
    *("portalocker", "tabulate"),  # fvcore.nn's, which a CUDA image may lack as well
)
SMOKE_IMPORTS = ("torch", "fvcore.nn", "optuna", "plotly.graph_objects", "sqlalchemy", "pynvml", "effscope.cli")
MIN_STEP_S = 5.0  # a step with less time than this left is skipped instead of started
SUMMARY_RESERVE_S = 5.0  # kept back from the last step for results.json and summary.md
STOP_GRACE_S = 20.0  # an interrupted search's workers get this long to stop before they are killed
LOG_MAX_BYTES = 15 * 2**20  # a returned file may not exceed 16 MiB


class CheckError(Exception):
    """A step could not do its work; the message is its one-line reason."""


# ------------------------------------------------------------------------------------------------------ settings


@dataclass(frozen=True)
class ZooGroup:
    """Targets profiled under one (dtype, batch); `targets` None means every preset ("models") or block."""

    label: str
    dtype: str
    batch: int
    registry: str  # "models" or "blocks"
    targets: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Settings:
    """What each step does on this device: GPU-sized by default, CPU-sized with --quick."""

    device: str
    quick: bool
    calibrate_args: tuple[str, ...]
    zoo_groups: tuple[ZooGroup, ...]
    zoo_max_time_s: float
    zoo_window_s: float
    zoo_first_guess_s: float  # expected seconds per zoo target until one has been measured
    protocol_runs: tuple[tuple[str, str, tuple[str, ...]], ...]  # (preset, --protocol, extra options)
    fidelity_targets: tuple[str, ...] | None
    fidelity_max_time_s: float
    fidelity_timer_s: float
    fidelity_guess_s: float  # expected seconds per fidelity target (and for its profile job) until one is timed
    search_space: str
    search_statistic: str  # the statistic its latency budgets limit (the shipped space's own is replaced)
    search_trials: int
    predictor_space: str
    predictor_samples: int
    predictor_holdout: int
    predictor_max_time_s: float
    predictor_window_s: float
    report_reserve_s: float  # time kept back in the zoo and search steps for their HTML report
    preset_calls: int = 4  # forwards per preset and dtype: the first includes one-time costs, the rest are timed
    official_batch: int = 64
    official_dtypes: tuple[str, ...] = ("fp32", "bf16")
    official_targets: tuple[str, ...] | None = None  # None: every preset and block with official code
    official_rounds: int = 7
    official_chunk_s: float = 0.15
    official_guess_s: float = 8.0  # expected seconds per comparison until one has run
    official: str | None = None  # the folder of official checkouts; None leaves the official step out


def settings_for(device: str, quick: bool) -> Settings:
    """The steps' settings: the full check (a GPU), or a CPU-sized one that exercises every step in minutes."""
    if quick:
        return Settings(
            device=device,
            quick=True,
            calibrate_args=("--dtype", "fp32", "--gemm-sizes", "256", "--copy-mib", "16", "--max-time", "0.2"),
            zoo_groups=(
                ZooGroup("bf16 batch 2", "bf16", 2, "models", ("pvtv2_b0",)),
                ZooGroup("bf16 batch 2", "bf16", 2, "blocks", ("hilo",)),
                ZooGroup("fp32 batch 1", "fp32", 1, "models", ("cxv_cnv",)),
            ),
            zoo_max_time_s=0.2,
            zoo_window_s=0.2,
            zoo_first_guess_s=6.0,
            protocol_runs=(("pvtv2_b0", "litv2", ("--batch", "2", "--warmup-iters", "1", "--iters", "2")),),
            fidelity_targets=("vit",),
            fidelity_max_time_s=0.3,
            fidelity_timer_s=0.3,
            fidelity_guess_s=5.0,
            search_space="hilo_block",
            search_statistic="latency_ms_p90",
            search_trials=4,
            predictor_space="hilo_block",
            predictor_samples=2,
            predictor_holdout=1,
            predictor_max_time_s=0.2,
            predictor_window_s=0.1,
            report_reserve_s=12.0,
            preset_calls=2,
            official_batch=2,
            official_dtypes=("fp32",),
            official_targets=("pvt_sra", "hilo"),
            official_rounds=3,
            official_chunk_s=0.05,
            official_guess_s=4.0,
        )
    return Settings(
        device=device,
        quick=False,
        calibrate_args=("--max-time", "0.5"),
        zoo_groups=(
            ZooGroup("bf16 batch 64", "bf16", 64, "models"),
            ZooGroup("bf16 batch 64", "bf16", 64, "blocks"),
            ZooGroup("fp32 batch 1", "fp32", 1, "models"),
        ),
        zoo_max_time_s=1.0,
        zoo_window_s=2.0,  # the energy counter updates about every 100 ms: a longer window reads it better
        zoo_first_guess_s=8.0,
        # As the papers ran them, except LightViT's 100 + 1000 iterations of batch 1024 (over 5 minutes on an H100):
        # fewer iterations, which the Record's protocol lists as changed.
        protocol_runs=(
            ("litv2_s", "litv2", ()),
            ("lightvit_t", "lightvit", ("--warmup-iters", "10", "--iters", "30")),
        ),
        fidelity_targets=None,
        fidelity_max_time_s=1.0,
        fidelity_timer_s=1.0,
        fidelity_guess_s=15.0,  # an H200: 17 s per target at 3 s + 2 s caps; 13 s the job
        search_space="litv2",
        # Eager GPU times measured the host in every run so far; the replay is the GPU's work (docs/search.md).
        search_statistic="latency_graph_ms_p90",
        search_trials=12,
        predictor_space="litv2",
        predictor_samples=2,
        predictor_holdout=1,
        predictor_max_time_s=0.5,
        predictor_window_s=0.25,
        report_reserve_s=15.0,
    )


@dataclass(frozen=True)
class Step:
    """One step of the check; `share` is its fraction of the time limit."""

    name: str
    share: float
    what: str


# Steps with a fixed amount of work run first and pass the time they leave unused to the zoo, which runs last
# because it can use any amount of time (it measures targets while time allows).
STEPS = (
    Step("device", 0.08, "effscope device, and the roofline calibration"),
    Step("presets", 0.08, "every preset's forward at batch 1, fp32 and bf16"),
    Step("protocols", 0.14, "the papers' own timing protocols (LITv2, LightViT) on the device"),
    # Five targets, eager and graph replay: 60-100 s on an H200, whose host makes eager timings slow to settle.
    Step("fidelity", 0.16, "measurement fidelity: repeatability, agreement with torch.utils.benchmark"),
    # A GPU search's first trial took 19 s on an H100 (processes, CUDA, counting): the step needs a minute or more.
    Step("search", 0.18, "a short search under a latency budget measured on the device, and its report"),
    Step("predictor", 0.10, "latency predictor quality on held-out designs"),
    Step("zoo", 0.26, "the zoo suite with energy and telemetry, and its report"),
)
# With --official, before the zoo: 48 interleaved comparisons at batch 64 take a few minutes.
OFFICIAL_STEP = Step("official", 0.35, "effscope against the official code, interleaved, each dtype")


def steps_for(settings: Settings) -> tuple[Step, ...]:
    """The steps this check runs: the official comparison only when the official checkouts were given."""
    if settings.official is None:
        return STEPS
    return (*STEPS[:-1], OFFICIAL_STEP, STEPS[-1])


def step_deadlines(steps: Sequence[Step], start: float, limit: float) -> list[float]:
    """When each step must have ended: its cumulative share of the limit, less the summary's reserve at the end."""
    total = sum(s.share for s in steps)
    usable = max(0.0, limit - SUMMARY_RESERVE_S)
    deadlines, acc = [], 0.0
    for s in steps:
        acc += s.share
        deadlines.append(start + usable * acc / total)
    return deadlines


# ------------------------------------------------------------------------------------------------- orchestration


@dataclass
class StepResult:
    """How one step ended: ok, partial (its own budget cut it short), failed, out of time, or skipped."""

    step: str
    what: str
    status: str
    budget_s: float
    wall_s: float = 0.0
    reason: str | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "what": self.what,
            "status": self.status,
            "budget_s": round(self.budget_s, 1),
            "wall_s": round(self.wall_s, 1),
            "reason": self.reason,
            "data": self.data,
        }


def run_steps(
    steps: Sequence[Step],
    command_for: Callable[[Step, float], list[str]],
    *,
    limit: float,
    work: Path,
    log: Path,
    env: dict[str, str] | None = None,
    echo: Callable[[str], None] = print,
    min_step_s: float = MIN_STEP_S,
) -> list[StepResult]:
    """Run each step's command in its own process group until the step's deadline; never past `limit` seconds.

    A step's process writes its data to `work/<step>.json` ({"data": ...} or {"error": "..."}); its console output
    is appended to `log`. A step still running at its deadline is killed with everything it started; a step with
    less than `min_step_s` left is skipped.
    """
    start = time.time()
    results = []
    for step, deadline in zip(steps, step_deadlines(steps, start, limit), strict=True):
        budget = deadline - time.time()
        if budget < min_step_s:
            results.append(
                StepResult(step.name, step.what, "skipped", max(0.0, budget), reason="no time left in --limit")
            )
            echo(f"[{time.time() - start:5.0f} s] {step.name}: skipped (no time left)")
            continue
        echo(f"[{time.time() - start:5.0f} s] {step.name}: {step.what} (budget {budget:.0f} s)")
        offset = log.stat().st_size if log.exists() else 0
        with log.open("a", encoding="utf-8") as fh:
            fh.write(f"\n===== step {step.name}: {step.what} (budget {budget:.0f} s)\n")
        t0 = time.time()
        status, code = _run_group(command_for(step, deadline), budget, log, env)
        wall = time.time() - t0
        fragment = _read_fragment(work / f"{step.name}.json")
        data = fragment.get("data") or {}
        reason = fragment.get("error")
        if status == "out of time":
            reason = f"still running at its deadline ({budget:.0f} s): stopped"
        elif status == "failed":
            reason = reason or f"exit code {code}: {_last_line(log, offset)}"
        elif data.get("incomplete"):
            status, reason = "partial", data["incomplete"]
        results.append(StepResult(step.name, step.what, status, budget, wall, reason, data))
        echo(
            f"[{time.time() - start:5.0f} s] {step.name}: {status} in {wall:.1f} s" + (f" ({reason})" if reason else "")
        )
    return results


def _run_group(cmd: list[str], timeout: float, log: Path, env: dict[str, str] | None) -> tuple[str, int | None]:
    """Run `cmd` in a new process group with output appended to `log`; kill the whole group at `timeout`."""
    with log.open("ab") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=ROOT, start_new_session=True)
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            return "out of time", None
        except BaseException:  # Ctrl-C on the check: take the step down with it
            _kill_group(proc)
            raise
    return ("ok" if code == 0 else "failed"), code


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _read_fragment(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _last_line(log: Path, offset: int) -> str:
    with log.open("rb") as fh:
        fh.seek(offset)
        lines = [ln.strip() for ln in fh.read().decode("utf-8", "replace").splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "no output"


# ------------------------------------------------------------------------------------------------- the steps


@dataclass(frozen=True)
class Context:
    """What a step's process knows: the settings, where to write, and when it must have finished."""

    settings: Settings
    out: Path
    deadline: float
    fragment: Path  # where the step's data goes, for the orchestrator

    @property
    def db(self) -> Path:
        return self.out / DB

    def left(self) -> float:
        return self.deadline - time.time()

    def save(self, data: dict[str, Any]) -> None:
        """Write the step's data so far (atomically): a step stopped at its deadline keeps what it measured."""
        tmp = self.fragment.with_suffix(".tmp")
        tmp.write_text(json.dumps({"data": plain(data)}, allow_nan=False), encoding="utf-8")
        os.replace(tmp, self.fragment)


def fits(left_s: float, walls: Sequence[float], guess_s: float) -> bool:
    """Whether one more item (a zoo target, a comparison) may start with `left_s` seconds left: the mean of those
    timed so far (else `guess_s`), with a 20 % margin, so that no item is started only to be killed."""
    return left_s >= 1.2 * (statistics.mean(walls) if walls else guess_s)


def _say(text: str) -> None:
    print(text, flush=True)


def _cli(ctx: Context, args: Sequence[str]) -> str:
    """Run `python -m effscope ARGS`, echo its output into the log, and return it; a non-zero exit is an error."""
    cmd = [sys.executable, "-m", "effscope", *args]
    _say("$ effscope " + " ".join(args))
    try:
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=max(1.0, ctx.left()), check=False)
    except subprocess.TimeoutExpired:
        raise CheckError(f"`effscope {' '.join(args)}` did not finish within the step's budget") from None
    text = done.stdout + done.stderr
    _say(text)
    if done.returncode != 0:
        last = [ln for ln in text.splitlines() if ln.strip()][-1:] or ["no output"]
        raise CheckError(f"`effscope {' '.join(args)}` exited with code {done.returncode}: {last[0].strip()}")
    return text


def step_device(ctx: Context) -> dict[str, Any]:
    from effscope.profile.roofline import CALIBRATION_KIND, CALIBRATION_TARGET, Calibration
    from effscope.profile.store import RecordStore

    s = ctx.settings
    _cli(ctx, ["device"])
    _cli(ctx, ["device", "--calibrate", "--device", s.device, "--db", str(ctx.db), *s.calibrate_args])
    found = [
        r
        for r in RecordStore(str(ctx.db)).records(target=CALIBRATION_TARGET, status="ok")
        if r.kind == CALIBRATION_KIND
    ]
    if not found:
        raise CheckError("the calibration ran but stored no calibration Record")
    cal = Calibration.from_record(found[-1])
    return {
        "calibration": {
            "device_name": cal.device_name,
            "peak_mac_s": cal.peak_mac_s,
            "gemm_n": cal.gemm_n,
            "bandwidth_bytes_s": cal.bandwidth_bytes_s,
            "copy_bytes": cal.copy_bytes,
            "unsupported": cal.unsupported,
            "flags": list(cal.flags),
        }
    }


def _first_tensor(out: Any):
    import torch

    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (list, tuple)) and out:
        return _first_tensor(out[0])
    if isinstance(out, dict) and out:
        return _first_tensor(next(iter(out.values())))
    raise CheckError(f"the forward returned {type(out).__name__}, not a tensor")


def step_presets(ctx: Context) -> dict[str, Any]:
    """Every preset at batch 1: fp32 and bf16 forward, output finite, bf16 against fp32, a short timing."""
    import contextlib

    import torch

    from effscope.profile.measure import describe_failure
    from effscope.profile.target import resolve_target
    from effscope.spec import models

    device = torch.device(ctx.settings.device)
    cuda = device.type == "cuda"
    sync = (lambda: torch.cuda.synchronize(device)) if cuda else (lambda: None)
    rows: list[dict[str, Any]] = []
    names = models().names()
    longest = 0.0
    for i, name in enumerate(names):
        if ctx.left() < 1.5 * longest + 1.0:
            rows += [{"preset": n, "dtype": None, "status": "not run: out of time"} for n in names[i:]]
            break
        t_start = time.time()
        reference = None
        try:
            target = resolve_target(name)
            module = target.build(device).eval()
            args = target.example_args(module, 1, None, device)
        except Exception as e:
            rows += [
                {"preset": name, "dtype": d, "status": "failed", "error": describe_failure(e, str(device))}
                for d in ("fp32", "bf16")
            ]
            continue
        for dtype in ("fp32", "bf16"):
            row: dict[str, Any] = {"preset": name, "dtype": dtype, "input": list(args[0].shape)}
            amp = torch.autocast(device.type, dtype=torch.bfloat16) if dtype == "bf16" else contextlib.nullcontext()
            try:
                if cuda:
                    torch.cuda.reset_peak_memory_stats(device)
                times = []
                for _ in range(ctx.settings.preset_calls):
                    sync()
                    t0 = time.perf_counter()
                    with torch.no_grad(), amp:
                        out = _first_tensor(module(*args))
                    sync()
                    times.append(1e3 * (time.perf_counter() - t0))
                value = out.float()
                if not bool(torch.isfinite(value).all()):
                    raise CheckError("the output holds NaN or inf")
                row.update(status="ok", output=list(value.shape), first_ms=times[0], ms=statistics.median(times[1:]))
                if cuda:
                    row["peak_mem_bytes"] = torch.cuda.max_memory_allocated(device)
                if reference is None:
                    reference = value
                else:
                    row["rel_diff_vs_fp32"] = float((value - reference).norm() / reference.norm().clamp_min(1e-30))
            except Exception as e:
                row.update(status="failed", error=describe_failure(e, str(device)))
            rows.append(row)
        del module
        if cuda:
            torch.cuda.empty_cache()
        longest = max(longest, time.time() - t_start)
        _say(f"{name}: " + ", ".join(f"{r['dtype']} {r['status']}" for r in rows[-2:]))
        ctx.save(_presets_data(rows, names))
    return _presets_data(rows, names)


def _presets_data(rows: list[dict[str, Any]], names: list[str]) -> dict[str, Any]:
    data: dict[str, Any] = {
        "rows": rows,
        "ok": {d: sum(1 for r in rows if r["dtype"] == d and r["status"] == "ok") for d in ("fp32", "bf16")},
        "presets": len(names),
    }
    not_run = [n for n in names if not any(r["preset"] == n and r["status"] != "not run: out of time" for r in rows)]
    if not_run:
        data["incomplete"] = f"{len(not_run)} preset(s) not run for lack of time: {', '.join(not_run)}"
    return data


def _zoo_row(group: ZooGroup, record, wall_s: float) -> dict[str, Any]:
    f = record.flat()
    keys = (
        "params",
        "macs",
        "latency_ms_p50",
        "latency_ms_p90",
        "latency_ms_iqr",
        "latency_graph_ms_p50",
        "host_bound_ratio",
        "throughput_img_s",
        "peak_mem_bytes",
        "peak_rss_bytes",
        "energy_j_per_img",
        "mean_power_w",
        "sm_clock_mhz_mean",
        "temp_c_max",
        "throttled",
        "roofline_fraction",
    )
    return {
        "target": record.target,
        "kind": record.kind,
        "group": group.label,
        "dtype": group.dtype,
        "batch": group.batch,
        "status": record.status,
        "error": record.error,
        "flags": f.get("flags") or "",
        "wall_s": wall_s,
        **{k: f.get(k) for k in keys},
        "attention_cores": [c["core"] for c in record.details.get("attention_choices", [])],
        "missing": dict(record.missing),
    }


def step_zoo(ctx: Context) -> dict[str, Any]:
    """The zoo, group by group; new targets stop starting when only the report's time is left.

    On a GPU (and in quick mode) one measurement process serves every target: CUDA's peak-memory counters reset per
    job, so reuse keeps GPU memory honest and saves a process start per target (after a failure the next target
    gets a fresh process, as a CUDA error can poison one)."""
    from effscope.profile.measure import Options
    from effscope.profile.record import Workload
    from effscope.profile.run import Plan, rank_correlation
    from effscope.profile.run import profile as run_profile
    from effscope.profile.store import RecordStore
    from effscope.profile.target import resolve_target
    from effscope.profile.worker import Worker
    from effscope.report import build_report
    from effscope.spec import blocks, models

    s = ctx.settings
    registries = {"models": models(), "blocks": blocks()}
    plans = []
    cuda = s.device.startswith("cuda")  # the graph replay beside eager shows which figures are host-bound
    for g in s.zoo_groups:
        for name in g.targets or registries[g.registry].names():
            plans.append(
                (
                    g,
                    Plan(
                        resolve_target(name), Workload(device=s.device, dtype=g.dtype, batch=g.batch, cuda_graph=cuda)
                    ),
                )
            )
    store = RecordStore(str(ctx.db))
    # A fresh process per target only where it buys honest numbers and time allows: CPU peak RSS (full check).
    options = Options(
        max_time_s=s.zoo_max_time_s, window_s=s.zoo_window_s, fresh_process=s.device == "cpu" and not s.quick
    )
    command = " ".join(["python", "benchmarks/gpu_check.py", *sys.argv[1:]])
    records, rows, not_run, walls = [], [], [], []
    with Worker() as worker:
        for g, plan in plans:
            left = ctx.left() - s.report_reserve_s
            if not fits(left, walls, s.zoo_first_guess_s):
                not_run.append(f"{plan.target.name} ({g.label})")
                continue
            t0 = time.time()
            (record,) = run_profile(
                [plan],
                replace(options, timeout_s=max(5.0, left)),
                store=store,
                worker=worker,
                provenance={"command": f"{command} (zoo step, {g.label})"},
            )
            walls.append(time.time() - t0)
            if record.status != "ok":
                worker.close()
            records.append(record)
            rows.append(_zoo_row(g, record, walls[-1]))
            _say(f"{plan.target.name} ({g.label}): {record.status} in {walls[-1]:.1f} s {record.error or ''}")
            ctx.save({"rows": rows, "not_run": not_run, "correlations": {}})
    data: dict[str, Any] = {"rows": rows, "not_run": not_run, "correlations": {}}
    for label in dict.fromkeys(g.label for g in s.zoo_groups):
        group = [r for r, row in zip(records, rows, strict=True) if row["group"] == label]
        if sum(r.status == "ok" for r in group) >= 3:
            data["correlations"][label] = rank_correlation(group)
    if not_run:
        data["incomplete"] = f"{len(not_run)} target(s) not run for lack of time"
    if records:
        path = build_report(output=ctx.out / ZOO_HTML, records=records, command=f"{command} (zoo step)")
        _say(f"report written to {path}")
    return data


# Published throughput to set beside a replayed protocol: (figure, where it comes from). LightViT publishes none
# per model that we could check (docs/measurement.md#paper-protocols).
PAPER_THROUGHPUT = {("litv2_s", "litv2"): (1471.0, "LITv2 README, RTX 3090")}


def step_protocols(ctx: Context) -> dict[str, Any]:
    """`effscope profile PRESET --protocol NAME` for each paper protocol, beside the paper's own figure."""
    s = ctx.settings
    rows: list[dict[str, Any]] = []
    for preset, protocol, extra in s.protocol_runs:
        args = ["profile", preset, "--device", s.device, "--protocol", protocol, *extra, "--db", str(ctx.db)]
        text = _cli(ctx, [*args, "--format", "json"])
        (row,), _ = json.JSONDecoder().raw_decode(text[text.index("[") :])  # stdout (the Record) comes first
        paper = PAPER_THROUGHPUT.get((preset, protocol))
        rows.append(
            {
                "target": preset,
                "protocol": row.get("protocol"),
                "dtype": row.get("dtype"),
                "batch": row.get("batch"),
                "img_s": row.get("throughput_img_s"),
                "peak_mem_bytes": row.get("peak_mem_bytes", row.get("peak_rss_bytes")),
                "status": row.get("status"),
                "paper_img_s": paper[0] if paper else None,
                "paper_source": paper[1] if paper else "no per-model figure published that we could check",
            }
        )
        ctx.save({"rows": rows})
    return {"rows": rows}


def step_fidelity(ctx: Context) -> dict[str, Any]:
    """benchmarks/measurement_fidelity.py, target by target: what it measured is kept if the step is stopped, and
    a target that would run past the step's deadline is not started."""
    import measurement_fidelity

    s = ctx.settings

    def progress(res: dict[str, Any]) -> None:
        row = res["rows"][-1]
        _say(f"{row['target']}: repeat {row['repeat_ratio']:.4f}, agreement {row['agreement_ratio']:.4f}")
        ctx.save(res)

    res = measurement_fidelity.run(
        s.device,
        targets=list(s.fidelity_targets) if s.fidelity_targets else None,
        max_time_s=s.fidelity_max_time_s,
        timer_time_s=s.fidelity_timer_s,
        deadline=ctx.deadline,
        guess_s=s.fidelity_guess_s,
        progress=progress,
    )
    measurement_fidelity.print_results(res)
    if res["not_run"]:
        res["incomplete"] = f"not run for lack of time: {', '.join(res['not_run'])}"
    return res


def _space_budgeting(name: str, statistic: str, folder: Path) -> Path:
    """The shipped space `name` with its latency budgets on `statistic`, written as `folder/<name>.toml` (so the
    study keeps the space's name)."""
    from effscope.search.space import load_space

    text = load_space(name).text
    line = f'statistic = "{statistic}"'
    text, found = re.subn(r"(?m)^statistic\s*=.*$", line, text)
    if not found:
        text = re.sub(r"(?m)^\[budgets\]\s*$", f"[budgets]\n{line}", text, count=1)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.toml"
    path.write_text(text, encoding="utf-8")
    return path


def step_search(ctx: Context) -> dict[str, Any]:
    """`effscope search` as a user runs it; at its budget it gets Ctrl-C (completed trials are kept), then the
    report is written from the storage if the search could not write it itself."""
    s = ctx.settings
    study = f"gpu-check-{s.search_space}"
    html = ctx.out / SEARCH_HTML
    space_file = _space_budgeting(s.search_space, s.search_statistic, ctx.fragment.parent / "space")
    args = ["search", str(space_file), "--device", s.device, "--trials", str(s.search_trials)]
    args += ["--db", str(ctx.db), "--study", study, "--report", str(html)]
    _say("$ effscope " + " ".join(args))
    since, started = datetime.datetime.now(), time.perf_counter()  # Optuna stamps trials with local naive time
    proc = subprocess.Popen([sys.executable, "-m", "effscope", *args], cwd=ROOT)
    interrupted = False
    try:
        code = proc.wait(max(1.0, ctx.left() - s.report_reserve_s - STOP_GRACE_S))
    except subprocess.TimeoutExpired:
        interrupted = True
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
    wall_s = time.perf_counter() - started
    failed = CheckError(f"`effscope search` exited with code {code} (its output is in {LOG})")
    try:
        data = _search_data(ctx.db, study, since, wall_s)
    except Exception:
        if interrupted or code == 0:
            raise
        raise failed from None  # it failed before its study existed
    data["interrupted"], data["exit_code"] = interrupted, code
    if not interrupted and code != 0:
        ctx.save(data)  # the trials that did complete (a worker died, say) stay in the results
        raise failed
    if interrupted:
        data["incomplete"] = f"stopped at the step's budget after {data['trials']} of {s.search_trials} trials"
        if data["trials"] and not html.exists():
            _cli(ctx, ["report", "--storage", str(ctx.db), "--study", study, "-o", str(html)])
    return data


def _search_data(db: Path, study_name: str, since: datetime.datetime, wall_s: float) -> dict[str, Any]:
    """The study's summary; its duty cycle counts the trials this run started (a resumed study has older ones)."""
    import optuna

    from effscope.search.storage import storage_url
    from effscope.search.study import study_info
    from effscope.search.summary import summarize, timed_seconds

    study = optuna.load_study(study_name=study_name, storage=storage_url(str(db)))
    trials = study.get_trials(deepcopy=False)
    summary = summarize(trials, study_info(study))
    seconds = [t.duration.total_seconds() for t in trials if t.state.name == "COMPLETE" and t.duration]
    timed = timed_seconds([t for t in trials if t.datetime_start and t.datetime_start >= since])
    return {
        "study": study_name,
        "quality": summary.quality_label,
        "budget": summary.budget,
        "counts": summary.counts,
        "trials": summary.trials,
        "feasible": summary.feasible,
        "front": summary.front[:10],
        "presets": summary.presets,
        "slices": summary.slices,
        "seconds_per_trial_median": statistics.median(seconds) if seconds else None,
        "wall_s": wall_s,
        "timed_s": timed,
        "duty_cycle": timed / wall_s if wall_s > 0 else None,
    }


def step_predictor(ctx: Context) -> dict[str, Any]:
    import predictor_quality

    s = ctx.settings
    res = predictor_quality.run(
        [s.predictor_space],
        samples=s.predictor_samples,
        holdout=s.predictor_holdout,
        db=str(ctx.db),
        device=s.device,
        max_time_s=s.predictor_max_time_s,
        window_s=s.predictor_window_s,
        screening=False,  # a CPU figure, not a device one
        on_progress=_say,
    )
    predictor_quality.print_results(res)
    return res


def step_official(ctx: Context) -> dict[str, Any]:
    """benchmarks/vs_official.py's comparison for each target and dtype while time allows: what it compared is
    kept if the step is stopped, and a comparison expected to run past the step's deadline is not started."""
    import torch
    import vs_official
    from official_code import Official, commits
    from official_pairs import BLOCK_BENCH_CASES, PRESET_CASES

    from effscope.blocks.attention import attention_rule

    s = ctx.settings
    device = torch.device(s.device)
    cases = [*BLOCK_BENCH_CASES.values(), *PRESET_CASES.values()]  # blocks first: many rows in little time
    if s.official_targets is not None:
        cases = [c for c in cases if c.name in s.official_targets]
    official = Official(Path(s.official))
    data: dict[str, Any] = {
        "batch": s.official_batch,
        "rounds": s.official_rounds,
        "chunk_s": s.official_chunk_s,
        "attention_rule": attention_rule(device.type, "auto"),
        "official_commits": commits(Path(s.official)),
        "rows": [],
        "not_run": [],
    }
    seconds: list[float] = []
    _say(vs_official.HEADER)
    for case in cases:
        for dtype in s.official_dtypes:
            if not fits(ctx.left(), seconds, s.official_guess_s):
                data["not_run"].append(f"{case.name} {dtype}")
                continue
            t0 = time.perf_counter()
            try:
                row = vs_official.compare(
                    case,
                    official,
                    batch=s.official_batch,
                    device=device,
                    dtype=dtype,
                    rounds=s.official_rounds,
                    chunk_s=s.official_chunk_s,
                )
            except Exception as e:  # one target's failure (an OOM, an official module that does not build) is a row
                row = {"target": case.name, "batch": s.official_batch, "error": f"{type(e).__name__}: {e}"[:300]}
            seconds.append(time.perf_counter() - t0)
            row["dtype"] = dtype
            data["rows"].append(row)
            _say(vs_official.row_line(row))
            ctx.save(data)
    if data["not_run"]:
        data["incomplete"] = f"not run for lack of time: {', '.join(data['not_run'])}"
    return data


STEP_FUNCTIONS: dict[str, Callable[[Context], dict[str, Any]]] = {
    "device": step_device,
    "presets": step_presets,
    "zoo": step_zoo,
    "fidelity": step_fidelity,
    "search": step_search,
    "predictor": step_predictor,
    "protocols": step_protocols,
    "official": step_official,
}


def run_one_step(name: str, ctx: Context) -> int:
    """Body of a step's process: run the step, write its fragment (data, or data so far and the error)."""
    try:
        ctx.save(STEP_FUNCTIONS[name](ctx))
    except Exception as e:
        import traceback

        traceback.print_exc()
        text = str(e).strip().splitlines()[0] if str(e).strip() else ""
        fragment = {**_read_fragment(ctx.fragment), "error": f"{type(e).__name__}: {text}"[:500]}
        ctx.fragment.write_text(json.dumps(fragment), encoding="utf-8")
        return 1
    return 0


# ----------------------------------------------------------------------------------------------------- results


def plain(value: Any) -> Any:
    """JSON types only: tuples as lists, NaN and inf as None, anything else unknown as its text."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)


def describe_machine(device: str) -> dict[str, Any]:
    """Device, driver and package versions for the summary (NVML only: no CUDA context in the orchestrator)."""
    import platform
    from importlib import metadata

    import torch

    from effscope import __version__
    from effscope.profile.env import cpu_info

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda_build": torch.version.cuda,
        "effscope": __version__,
        "cpu": cpu_info(),
    }
    for dist in ("fvcore", "optuna", "plotly", "SQLAlchemy", "pandas", "nvidia-ml-py"):
        try:
            info[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            info[dist] = None
    if device.startswith("cuda"):
        from effscope.profile.telemetry import gpu_info, nvml_index

        info["gpu"] = gpu_info(nvml_index(torch.device(device)))
        info["cudnn"] = torch.backends.cudnn.version()
    return info


def _fmt(value: Any, spec: str = "", scale: float = 1.0) -> str:
    """The CLI's table cell ('-' for a missing number; results went through `plain`, so inf is missing too),
    imported on use: effscope is importable here only once `ensure_packages` has run."""
    from effscope.cli._app import fmt

    return fmt(value, spec, scale)


def _table(header: Sequence[str], rows: list[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(r) + " |" for r in rows]


def render_summary(result: dict[str, Any]) -> str:
    """summary.md from results.json's content: the device line, the steps, then each step's headline figures."""
    m = result["machine"]
    gpu = m.get("gpu") or {}
    if gpu.get("name"):
        device = (
            f"{gpu['name']} (driver {gpu.get('driver_version')}, CUDA driver {gpu.get('cuda_driver_version')}, "
            f"{_fmt(gpu.get('memory_total_bytes'), '.0f', 2**30)} GiB, "
            f"power limit {_fmt(gpu.get('power_limit_w'), '.0f')} W)"
        )
    else:
        device = f"{m['cpu'].get('cpu_model')} ({m['cpu'].get('cpu_logical')} logical CPUs)" + (
            f"; GPU not readable: {gpu.get('missing_reason')}" if gpu else ""
        )
    lines = [
        f"# effscope GPU check{' (quick mode)' if result['quick'] else ''} on {result['device']}",
        "",
        f"- device: {device}",
        f"- software: Python {m['python']}, torch {m['torch']} (CUDA build {m['torch_cuda_build']}, cuDNN "
        f"{m.get('cudnn', '-')}), effscope {m['effscope']}, fvcore {m['fvcore']}, optuna {m['optuna']}, "
        f"plotly {m['plotly']}, SQLAlchemy {m['SQLAlchemy']}",
        f"- host CPU: {m['cpu'].get('cpu_model')}, {m['cpu'].get('cpu_logical')} logical CPUs",
        f"- command: `{result['command']}`; limit {result['limit_s']:.0f} s, finished in {result['wall_s']:.0f} s; "
        f"started {result['started_utc']}",
        "",
        "## Steps",
        "",
    ]
    lines += _table(
        ("step", "status", "wall s", "budget s", "note"),
        [
            (
                r["step"],
                r["status"],
                f"{r['wall_s']:.1f}",
                f"{r['budget_s']:.0f}",
                (r["reason"] or "").replace("|", "/"),
            )
            for r in result["steps"]
        ],
    )
    by_name = {r["step"]: r for r in result["steps"]}
    for name, render in SUMMARY_SECTIONS:
        step = by_name.get(name)
        if step and step["data"]:
            lines += ["", *render(step["data"])]
    return "\n".join(lines) + "\n"


def _summary_device(d: dict[str, Any]) -> list[str]:
    cal = d["calibration"]
    rows = [
        (dtype, _fmt(peak, ".1f", 1e9), _fmt(cal["gemm_n"].get(dtype), "d"), _fmt(cal["bandwidth_bytes_s"], ".1f", 1e9))
        for dtype, peak in cal["peak_mac_s"].items()
    ]
    rows += [(dtype, f"not measured: {why}", "", "") for dtype, why in cal["unsupported"].items()]
    flags = f" (flags: {', '.join(cal['flags'])})" if cal["flags"] else ""
    return [f"## Roofline calibration of {cal['device_name']}{flags}", ""] + _table(
        ("dtype", "peak GMAC/s", "GEMM n", "copy GB/s"), rows
    )


def _summary_presets(d: dict[str, Any]) -> list[str]:
    by_preset: dict[str, dict[str, dict[str, Any]]] = {}
    for r in d["rows"]:
        by_preset.setdefault(r["preset"], {})[r["dtype"] or "-"] = r
    rows = []
    for name, per in by_preset.items():
        fp32, bf16 = per.get("fp32", {}), per.get("bf16", {})

        def cell(r: dict[str, Any]) -> str:
            if r.get("status") == "ok":
                return _fmt(r.get("ms"), ".2f")
            return (r.get("error") or r.get("status") or "not run").replace("|", "/")[:80]

        rows.append(
            (
                name,
                cell(fp32) if fp32 else cell(per.get("-", {})),
                cell(bf16) if bf16 else "-",
                _fmt(bf16.get("rel_diff_vs_fp32"), ".2e"),
                _fmt(bf16.get("peak_mem_bytes"), ".0f", 2**20),
            )
        )
    return [
        f"## Every preset at batch 1: fp32 {d['ok']['fp32']}/{d['presets']} ran, bf16 {d['ok']['bf16']}/{d['presets']}",
        "",
        "Times are the median of the calls after a first one, a sanity check only (the zoo step measures).",
        "",
    ] + _table(("preset", "fp32 ms", "bf16 ms", "bf16 vs fp32 (rel. L2)", "bf16 peak MiB"), rows)


def _summary_zoo(d: dict[str, Any]) -> list[str]:
    from effscope.stats import MIN_RANK_PAIRS

    rows = []
    for r in d["rows"]:
        ok = r["status"] == "ok"
        rows.append(
            (
                r["target"],
                r["group"],
                "ok" if ok else f"failed: {(r['error'] or '').replace('|', '/')[:80]}",
                _fmt(r["macs"], ".3f", 1e9),
                _fmt(r["latency_ms_p50"], ".3f"),
                _fmt(r["latency_ms_p90"], ".3f"),
                _fmt(r.get("latency_graph_ms_p50"), ".3f"),
                _fmt(r.get("host_bound_ratio"), ".2f"),
                _fmt(r["throughput_img_s"], ",.0f"),
                _fmt(r["peak_mem_bytes"] if r["peak_mem_bytes"] is not None else r["peak_rss_bytes"], ".0f", 2**20),
                _fmt(r["energy_j_per_img"], ".4f"),
                _fmt(r["mean_power_w"], ".0f"),
                _explicit_of_timed(r.get("attention_cores")),
                r["flags"],
            )
        )
    lines = ["## Zoo", ""] + _table(
        (
            "target",
            "workload",
            "status",
            "GMACs/img",
            "p50 ms",
            "p90 ms",
            "graph p50 ms",
            "eager/graph",
            "img/s",
            "peak MiB",
            "J/img",
            "W",
            "explicit cores",
            "flags",
        ),
        rows,
    )
    if any(r.get("attention_cores") for r in d["rows"]):
        lines.append(
            "\n`explicit cores`: of the target's distinct attention calls, each timed both ways before measuring, how "
            "many took the explicit matmul-softmax-matmul path over fused SDPA."
        )
    if any(r.get("latency_graph_ms_p50") for r in d["rows"]):
        lines.append(
            "\n`graph p50 ms` replays the forward as one CUDA graph: the GPU's work without the host launching each "
            "kernel. `eager/graph` above 1.25 (flag host-bound) means the eager figures measure the host CPU more "
            "than the GPU."
        )
    for label, c in d["correlations"].items():
        ranked = (
            f"Spearman {c['spearman']:.3f}, Kendall {c['kendall']:.3f}"
            if c["n"] >= MIN_RANK_PAIRS
            else "too few for a rank correlation"
        )
        lines.append(f"\nMACs vs measured p50 latency, {label}: {ranked} (n={c['n']})")
    if d["not_run"]:
        lines.append(f"\nNot run for lack of time: {', '.join(d['not_run'])}")
    missing = sorted({f"{k}: {why}" for r in d["rows"] for k, why in r["missing"].items() if k == "energy_j_per_img"})
    if missing:
        lines.append(f"\nMissing: {'; '.join(missing)}")
    return lines


def _explicit_of_timed(cores: list[str] | None) -> str:
    return f"{cores.count('explicit')} of {len(cores)}" if cores else "-"


def _timing_cells(r: dict[str, Any], prefix: str = "") -> tuple[str, ...]:
    """A fidelity row's two medians, their ratio, Timer's median and the agreement (eager, or prefix "graph_")."""
    keys = ("median_ms_1", "median_ms_2", "repeat_ratio", "timer_median_ms", "agreement_ratio")
    return tuple(_fmt(r[prefix + k], ".4f") for k in keys)


def _worst_sentence(d: dict[str, Any], target: str, prefix: str = "") -> str:
    repeat, agree = 100 * d[f"worst_{prefix}repeat_dev"], 100 * d[f"worst_{prefix}agreement_dev"]

    def missed(value: float, goal: float) -> str:
        return f"target {goal:g} %" + (": **missed**" if value > goal else "")

    return (
        f"Worst repeatability deviation {repeat:.2f} % ({missed(repeat, float(target))}); worst "
        f"disagreement with torch.utils.benchmark {agree:.2f} % ({missed(agree, 3.0)})"
    )


def _summary_fidelity(d: dict[str, Any]) -> list[str]:
    target = "1" if d["device"].startswith("cuda") else "5"
    rows = [
        (
            r["target"],
            *_timing_cells(r),
            _fmt(100 * r["rel_iqr_1"] if r["rel_iqr_1"] is not None else None, ".1f"),
        )
        for r in d["rows"]
    ]
    parts = [_worst_sentence(d, target)] if rows else ["No target was measured"]
    if "loop_overhead_us" in d:
        parts.append(f"timing-loop overhead {d['loop_overhead_us']:.2f} us per iteration")
    if "job_wall_s" in d:
        parts.append(f"one profile job {d['job_wall_s']:.1f} s wall for {d['job_timed_s']:.2f} s timed")
    if d.get("not_run"):
        parts.append(f"not run for lack of time: {', '.join(d['not_run'])}")
    table = _table(("target", "median 1 ms", "median 2 ms", "repeat", "Timer ms", "agreement", "IQR %"), rows)
    head = ["## Measurement fidelity (batch 1, fp32)", "", "; ".join(parts) + ".", ""]
    return head + table + _summary_graph_fidelity(d)


def _summary_graph_fidelity(d: dict[str, Any]) -> list[str]:
    """The same two checks on the CUDA-graph replay (GPU only): the GPU's repeatability without the host's."""
    graph = [r for r in d["rows"] if "graph_median_ms_1" in r or "graph_error" in r]
    if not graph:
        return []
    rows = [
        (r["target"], f"capture failed: {r['graph_error']}"[:80], "", "", "", "", "")
        if "graph_error" in r
        else (r["target"], *_timing_cells(r, "graph_"), _fmt(r["host_bound"], ".2f"))
        for r in graph
    ]
    worst = (
        _worst_sentence(d, "1", "graph_") + "."
        if d.get("worst_graph_repeat_dev") is not None
        else "No graph could be captured."
    )
    return [
        "",
        "The same forward replayed as one CUDA graph, which removes the host's per-kernel launch cost; "
        "eager/graph is how many times longer the eager timing took. " + worst,
        "",
    ] + _table(("target", "graph 1 ms", "graph 2 ms", "repeat", "Timer ms", "agreement", "eager/graph"), rows)


def _summary_protocols(d: dict[str, Any]) -> list[str]:
    rows = [
        (
            r["target"],
            r["protocol"] or "-",
            f"{r['dtype']} batch {r['batch']}",
            _fmt(r["img_s"], ",.1f"),
            _fmt(r["peak_mem_bytes"], ".0f", 2**20),
            f"{_fmt(r['paper_img_s'], ',.0f')} ({r['paper_source']})",
        )
        for r in d["rows"]
    ]
    return [
        "## The papers' protocols",
        "",
        "Throughput timed as each paper's script does (fixed warm-up and timed iterations in one synchronized loop); "
        "the paper's figure was measured on its own GPU, so compare the order of magnitude, not the digits.",
        "",
    ] + _table(("target", "protocol", "workload", "img/s", "peak MiB", "paper's img/s"), rows)


def _summary_search(d: dict[str, Any]) -> list[str]:
    from effscope.metrics import GRAPH_TIMED

    b = d["budget"]
    timed = b["statistic"].rsplit("_", 1)[0] + "_"  # the budgeted timing's keys: latency_ms_, latency_graph_ms_, ...
    name = "graph " if timed == GRAPH_TIMED else ""
    counts = ", ".join(f"{v} {k}" for k, v in d["counts"].items() if v)
    lines = [
        f"## Search `{d['study']}`",
        "",
        f"{d['trials']} completed trials{f' ({counts})' if counts else ''}; {d['feasible']} feasible under "
        f"{b['statistic']} <= "
        f"{b['limit']:g} ms; median {_fmt(d['seconds_per_trial_median'], '.1f')} s per trial; quality: {d['quality']}.",
        f"Duty cycle (seconds in timed iterations / the search's wall time): {_fmt(d.get('duty_cycle'), '.1%')} "
        f"({_fmt(d.get('timed_s'), '.1f')} of {_fmt(d.get('wall_s'), '.1f')} s).",
    ]
    for sl in d["slices"]:
        best = sl["best"]
        tail = (
            f"; best quality {best['quality']:.4g} (trial {best['trial']}, "
            f"{name}p50 {_fmt(best.get(timed + 'p50'), '.3f')} ms)"
            if best
            else ""
        )
        lines.append(f"- under {sl['statistic']} <= {sl['limit']:g} ms: {sl['feasible']} feasible{tail}")
    for p in d["presets"]:
        where = "on the front" if p["on_front"] else ("feasible" if p["feasible"] else "infeasible")
        lines.append(
            f"- preset {p['preset']} (trial {p['trial']}): {name}p50 {_fmt(p.get(timed + 'p50'), '.3f')} ms, "
            f"{name}p90 {_fmt(p.get(timed + 'p90'), '.3f')} ms"
            + (f", eager p50 {_fmt(p.get('latency_ms_p50'), '.3f')} ms" if name else "")
            + f", {where}"
        )
    return lines


def _summary_predictor(d: dict[str, Any]) -> list[str]:
    lines = ["## Latency predictor"]
    for name, e in d["spaces"].items():
        v = e["validation"]
        lines += [
            "",
            f"{name} ({e['kind']}-level, predicting {e['statistic']}): {v['n_train']} training / {v['n_holdout']} "
            f"held-out designs, {e['entries']} table entries, built in {e['build_s']:.0f} s; fit {v['fit']}: "
            f"MAPE {_fmt(100 * v['mape'] if v.get('mape') is not None else None, '.1f')} %, "
            f"within 10 % {_fmt(100 * v['within_10'] if v.get('within_10') is not None else None, '.0f')} %, "
            f"Kendall tau {_fmt(v.get('kendall_tau'), '.3f')}",
        ]
    return lines


def _summary_official(d: dict[str, Any]) -> list[str]:
    rows, ratios = [], []
    for r in d["rows"]:
        if "error" in r:
            rows.append((r["target"], r["dtype"], f"failed: {r['error']}".replace("|", "/")[:80], "", "", "", "", ""))
            continue
        ratios.append((r["ratio_median"], f"{r['target']} {r['dtype']}"))
        rows.append(
            (
                r["target"],
                r["dtype"],
                f"{r['ratio_median']:.3f}x [{r['ratio_q1']:.2f}-{r['ratio_q3']:.2f}]",
                f"{r['ratio_of_min']:.3f}x",
                _fmt(r["ms_ours"], ".2f"),
                _fmt(r["ms_official"], ".2f"),
                _fmt(r["max_rel_diff"], ".1e"),
                _explicit_of_timed(r.get("measured_cores")),
            )
        )
    said = [f"effscope's attention core: {d['attention_rule']}."]
    if ratios:
        ratio, name = max(ratios)
        said.append(
            f"{sum(x <= 1.0 for x, _ in ratios)} of {len(ratios)} comparisons at or under 1.00x; the slowest "
            f"relative to the official code: {name} at {ratio:.3f}x."
        )
    if d["not_run"]:
        said.append(f"Not run for lack of time: {', '.join(d['not_run'])}.")
    head = [
        f"## Against the official code (batch {d['batch']}, median of {d['rounds']} interleaved per-round ratios)",
        "",
        " ".join(said),
    ]
    table = _table(
        ("target", "dtype", "ours/official [q1-q3]", "min/min", "ours ms", "official ms", "max rel diff", "explicit"),
        rows,
    )
    return head + [""] + table


SUMMARY_SECTIONS: tuple[tuple[str, Callable[[dict[str, Any]], list[str]]], ...] = (
    ("device", _summary_device),
    ("presets", _summary_presets),
    ("protocols", _summary_protocols),
    ("zoo", _summary_zoo),
    ("fidelity", _summary_fidelity),
    ("search", _summary_search),
    ("predictor", _summary_predictor),
    ("official", _summary_official),
)


# -------------------------------------------------------------------------------------------------------- setup


def ensure_packages(
    root: Path = ROOT, needed: Sequence[str] = NEEDED_MODULES, site: Path | None = None
) -> dict[str, str]:
    """Make effscope and its dependencies importable here and in every step; returns the environment for steps.

    Modules this Python lacks are installed from root/.whl/ (made by `make gpu-wheels`) into `site` (default: a
    folder in the temp directory), which goes first on the import path.
    """
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    paths = [str(root)]
    missing = [m for m in needed if importlib.util.find_spec(m) is None]
    wheels = sorted((root / ".whl").glob("*.whl"))
    if missing and wheels:
        site = site or Path(tempfile.gettempdir()) / "effscope-gpu-check-site"
        print(f"installing {len(wheels)} carried wheel(s) from .whl/ into {site} (missing: {', '.join(missing)})")
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile"]
            + ["--no-cache-dir", "--upgrade", "--target", str(site), *map(str, wheels)],
            check=True,
        )
        sys.path.insert(0, str(site))
        paths.insert(0, str(site))
        importlib.invalidate_caches()
        missing = [m for m in needed if importlib.util.find_spec(m) is None]
    if missing:
        raise CheckError(
            f"this Python lacks {', '.join(missing)}; install effscope's dependencies (pip install -e .), or on an "
            "offline machine carry the wheels that `make gpu-wheels` puts into .whl/"
        )
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    env["PYTHONPATH"] = os.pathsep.join(paths + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def check_imports(env: dict[str, str], modules: Sequence[str] = SMOKE_IMPORTS) -> None:
    """Import what the steps use in a fresh process, so that a missing dependency of a dependency is one sentence
    now rather than a failed step later."""
    done = subprocess.run(
        [sys.executable, "-c", "import " + ", ".join(modules)], env=env, cwd=ROOT, capture_output=True, text=True
    )
    if done.returncode != 0:
        last = [ln for ln in done.stderr.splitlines() if ln.strip()][-1:] or [f"exit code {done.returncode}"]
        raise CheckError(f"the steps cannot import their packages ({last[0].strip()}); see `make gpu-wheels`")


def _check_device(device: str, quick: bool) -> None:
    import torch

    if not (device == "cpu" or device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit())):
        raise CheckError(f"--device must be cpu, cuda or cuda:N, but got '{device}'")
    if device == "cpu" and not quick:  # GPU-sized steps on a CPU run out of time and prove nothing
        raise CheckError("--device cpu checks the kit itself and needs --quick (CPU-sized steps)")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise CheckError(
            f"no CUDA device is visible to torch {torch.__version__} (CUDA build {torch.version.cuda}); "
            "check the kit on the CPU with --device cpu --quick"
        )


def _check_official(folder: Path) -> None:
    from official_code import REPOS

    lacking = sorted(repo for repo in set(REPOS.values()) if not (folder / repo).is_dir())
    if lacking:
        raise CheckError(
            f"--official {folder} lacks the checkouts {', '.join(lacking)}; it must hold one folder per official "
            "repository (see benchmarks/official_code.py)"
        )


def _prepare_out(out: Path, overwrite: bool) -> None:
    earlier = [name for name in OUTPUT_FILES if (out / name).exists()]
    if earlier and not overwrite:
        raise CheckError(
            f"{out} already holds an earlier check ({', '.join(earlier)}); give another --out or add --overwrite"
        )
    out.mkdir(parents=True, exist_ok=True)
    for name in earlier:
        (out / name).unlink()


def main(argv: Sequence[str] | None = None) -> int:
    started = time.time()  # --limit counts from here: installing wheels and checking imports use it too
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))  # the first paragraph
    parser.add_argument("--out", type=Path, default=None, help=f"output folder (default {DEFAULT_OUT})")
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N, or cpu (with --quick)")
    parser.add_argument("--quick", action="store_true", help="CPU-sized steps: check the kit itself in minutes")
    parser.add_argument("--limit", type=float, default=None, help="seconds for the whole run (default 420; quick 170)")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier check's files in --out")
    parser.add_argument(
        "--official",
        type=Path,
        default=None,
        help="folder of the official checkouts (benchmarks/official_code.py): adds a step timing effscope against "
        "the official code",
    )
    parser.add_argument("--step", choices=STEP_FUNCTIONS, help=argparse.SUPPRESS)  # a step's own process
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    a = parser.parse_args(argv)
    out = (a.out or DEFAULT_OUT).resolve()  # steps run from the project root
    settings = settings_for(a.device, a.quick)
    if a.official is not None:
        settings = replace(settings, official=str(a.official.resolve()))
    if a.step:
        return run_one_step(a.step, Context(settings, out, a.deadline, a.work / f"{a.step}.json"))
    limit = a.limit if a.limit is not None else (170.0 if a.quick else 420.0)
    try:
        if not limit > 0:
            raise CheckError(f"--limit must be a positive number of seconds, but got {limit:g}")
        if a.official is not None:
            _check_official(a.official)
        env = ensure_packages(needed=NEEDED_MODULES + (("einops",) if a.official is not None else ()))
        check_imports(env)
        _check_device(a.device, a.quick)
        _prepare_out(out, a.overwrite)
    except CheckError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return check(settings, out, limit, env, started)


def check(settings: Settings, out: Path, limit: float, env: dict[str, str], started: float) -> int:
    """Run every step, then write results.json and summary.md; 0 when every step ended ok or partial."""
    started_utc = datetime.datetime.fromtimestamp(started, datetime.timezone.utc).isoformat(timespec="seconds")
    machine = describe_machine(settings.device)
    log = out / LOG
    with tempfile.TemporaryDirectory(prefix="effscope-gpu-check-") as work:

        def command_for(step: Step, deadline: float) -> list[str]:
            cmd = [sys.executable, str(Path(__file__).resolve()), "--step", step.name, "--work", work]
            cmd += ["--out", str(out), "--device", settings.device, "--deadline", repr(deadline)]
            cmd += ["--official", settings.official] if settings.official else []
            return cmd + (["--quick"] if settings.quick else [])

        try:
            steps = run_steps(
                steps_for(settings),
                command_for,
                limit=limit - (time.time() - started),
                work=Path(work),
                log=log,
                env=env,
            )
        except KeyboardInterrupt:
            print(f"interrupted: the finished steps' data is in {out}", file=sys.stderr)
            return 130
    if log.exists() and log.stat().st_size > LOG_MAX_BYTES:
        _trim(log)
    if (out / DB).exists():
        _settle(out / DB)
    result = {
        "command": " ".join(["python", "benchmarks/gpu_check.py", *sys.argv[1:]]),
        "device": settings.device,
        "quick": settings.quick,
        "limit_s": limit,
        "started_utc": started_utc,
        "wall_s": time.time() - started,
        "machine": machine,
        "steps": [s.as_dict() for s in steps],
    }
    result = plain(result)
    (out / RESULTS).write_text(json.dumps(result, indent=1, allow_nan=False), encoding="utf-8")
    summary = render_summary(result)
    (out / SUMMARY).write_text(summary, encoding="utf-8")
    print(summary)
    print(f"results in {out}: {', '.join(sorted(p.name for p in out.iterdir()))}")
    return 0 if all(s.status in ("ok", "partial") for s in steps) else 1


def _settle(db: Path) -> None:
    """Fold a killed step's write-ahead log into the database file: the last connection to close does that, and
    removes the -wal and -shm files."""
    import sqlite3

    try:
        sqlite3.connect(db).close()
    except sqlite3.Error as e:
        print(f"warning: {db} could not be opened to settle its write-ahead log: {e}", file=sys.stderr)


def _trim(log: Path) -> None:
    data = log.read_bytes()
    keep = LOG_MAX_BYTES // 2
    log.write_bytes(data[:keep] + b"\n[... log trimmed to fit the 16 MiB return limit ...]\n" + data[-keep:])


if __name__ == "__main__":
    sys.exit(main())
