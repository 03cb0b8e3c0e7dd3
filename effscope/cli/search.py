"""`effscope search` and `effscope calibrate`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer
from rich.table import Table

from effscope.cli._app import (
    app,
    command_line,
    err,
    esc,
    fmt,
    interrupt_exit_code,
    out,
    shown_url,
    sigterm_as_interrupt,
)
from effscope.errors import EffscopeError, SpecError
from effscope.units import si

if TYPE_CHECKING:
    from effscope.search.coordinator import SearchProgress, SearchResult
    from effscope.search.space import Space
    from effscope.search.summary import SearchSummary

STORAGE_HELP = (
    "Study + Record database: an SQLite file or SQLAlchemy URL (postgresql://user@host/db for many machines; "
    "default $EFFSCOPE_DB, else ./effscope.db)."
)


def _storage(storage: str | None, db: str | None) -> str | None:
    if storage and db and storage != db:
        from effscope.urls import mask_url

        raise SpecError(
            f"--storage and --db are two names for the same option; give only one, but got --storage "
            f"'{mask_url(storage)}' and --db '{mask_url(db)}'"
        )
    return storage or db


def _list_table() -> Table:
    from effscope.search.space import list_spaces

    table = Table(title="search spaces (search_spaces/*.toml)", title_justify="left")
    for col in ("space", "target", "kind", "quality", "budgets", "workload", "trials", "description"):
        table.add_column(col)
    for s in list_spaces():
        budgets = ", ".join(f"{b.limit:g} ms" for b in s.latency_budgets)
        w = s.workload
        table.add_row(
            s.name,
            s.target if len(s.targets) == 1 else f"{len(s.targets)} blocks",
            s.kind,
            s.quality,
            f"{s.latency_budget.statistic.removeprefix('latency_ms_')} <= {budgets}",
            f"{w.device} {w.dtype} b{w.batch} {'x'.join(map(str, w.size or ()))}",
            str(s.trials),
            s.description,
        )
    return table


def _knob_text(row: dict, space: Space) -> str:
    """The searched knobs of a design, compactly (a multi-block space names the block first), and any pinned knob
    the design does not share (a published design keeps its own values)."""
    from effscope.knobs import format_value, to_jsonable

    ts = space.target_named(row["block"]) if row.get("block") else space.targets[0]
    off_pin = [k for k, v in ts.pins.items() if k in row["knobs"] and row["knobs"][k] != to_jsonable(v)]
    shown = [*ts.domains, *off_pin]
    text = " ".join(f"{k}={format_value(row['knobs'][k])}" for k in shown if k in row["knobs"])
    return esc(f"{row['block']}: {text}" if row.get("block") else text)


def _quality_fmt(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.4g}" if abs(v) < 1e5 else f"{v:.3e}"


def _front_table(summary: SearchSummary, space: Space) -> Table:
    b = summary.budget
    table = Table(
        title=f"Pareto designs: {summary.quality_label}"
        + (f" vs {_timing_label(space)}" if len(summary.directions) > 1 else "")
        + f", feasible under {b['statistic']} <= {b['limit']:g} ms",
        title_justify="left",
    )
    # params and MACs have their own columns unless the quality objective is one of them already
    counts = [(c, key) for c, key in (("params", "params"), ("MACs", "macs")) if key != summary.quality_name]
    for col in ("trial", "design", summary.quality_name, *_timing_columns(space), *(c for c, _ in counts), "knobs"):
        table.add_column(col, justify="left" if col in ("design", "knobs") else "right")
    for r in summary.front:
        cells = {"params": fmt(r["params"], ",d"), "macs": si(r["macs"]) if r["macs"] is not None else "-"}
        table.add_row(
            str(r["trial"]),
            esc(r["preset"] or r["status"]),
            _quality_fmt(r["quality"]),
            fmt(r.get(space.timing("p50")), ".3f"),
            fmt(r.get(space.timing("p90")), ".3f"),
            *(cells[key] for _, key in counts),
            _knob_text(r, space),
        )
    return table


def _timing_columns(space: Space) -> tuple[str, str]:
    short = "graph " if space.budgets_graph_replay else "step " if space.workload.mode == "train" else ""
    return (f"{short}p50 ms", f"{short}p90 ms")


def _timing_label(space: Space) -> str:
    return f"median {space.timing_name} (ms)"


def _preset_table(summary: SearchSummary, space: Space) -> Table:
    table = Table(title="published designs (enqueued first)", title_justify="left")
    for col in ("trial", "preset", summary.quality_name, *_timing_columns(space), "position"):
        table.add_column(col, justify="left" if col in ("preset", "position") else "right")
    for r in summary.presets:
        if r["on_front"]:
            where = "on the front"
        elif not r["feasible"]:
            where = "infeasible: " + _why_infeasible(r, summary.budget)
        elif r["dominated_by"] is not None:
            where = f"dominated by trial {r['dominated_by']}"
        else:
            where = "feasible, not on the front"
        table.add_row(
            str(r["trial"]),
            esc(r["preset"]),
            _quality_fmt(r["quality"]),
            fmt(r.get(space.timing("p50")), ".3f"),
            fmt(r.get(space.timing("p90")), ".3f"),
            esc(where),
        )
    return table


def _why_infeasible(r: dict, budget: dict) -> str:
    v = r.get("violations", {})
    if "valid" in v or r.get("status") in ("invalid", "failed", "predicted-infeasible"):
        return r.get("reason") or r.get("status") or "invalid"  # a predicted design's reason says it was predicted
    parts = []
    if "latency" in v:
        stat = r.get(budget["statistic"])
        parts.append(f"{budget['statistic']} {fmt(stat, '.3f')} ms > {budget['limit']:g} ms")
    if "memory" in v:
        parts.append("peak memory over its limit")
    return "; ".join(parts) or (r.get("reason") or r.get("status") or "")


def _progress_text(p: SearchProgress, quality: str, timing: str = "latency_ms_p50") -> str:
    """The progress line; `timing` is the median the search minimizes (Space.timing("p50"))."""
    best = ""
    if p.best is not None:
        lat = p.best.get(timing)
        best = f" | best {quality} {_quality_fmt(p.best['quality'])}" + (
            f" at {lat:.3f} ms (trial {p.best['trial']})" if lat is not None else f" (trial {p.best['trial']})"
        )
    eta = f" | ETA {_duration(p.eta_s)}" if p.eta_s is not None and p.done < p.cap else ""
    return (
        f"trials {p.done}/{p.cap} | running {p.running} | feasible {p.feasible} | front {p.front_size}"
        f"{best} | {p.elapsed_s:.0f} s{eta}"
    )


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _trial_line(t: dict, p: SearchProgress, quality: str, timing: str = "latency_ms_p50") -> str:
    """One completed trial (stderr is not a terminal: a log gets a line per trial)."""
    took = f" in {t['seconds']:.2f} s" if t["seconds"] is not None else ""
    return f"trial {t['trial']} {t['status'] or 'done'}{took} | {_progress_text(p, quality, timing)}"


def summary_line(result: SearchResult, cap: int) -> str:
    """The search's first line: completed trials (by status) against the cap; failed and running ones apart."""
    s = result.summary
    kinds = ", ".join(f"{v} {k}" for k, v in s.counts.items() if v)
    done = (
        f"{s.trials} of {cap} trials" if s.trials <= cap else f"{s.trials} trials (more than this run's cap of {cap})"
    )
    text = f"study {result.study_name} in {shown_url(result.storage_url)}: {done} completed"
    text += f" ({esc(kinds)})" if kinds else ""
    apart = [f"{n} {what}" for n, what in ((s.failed, "failed"), (s.running, "still running")) if n]
    return text + (f"; not counted: {', '.join(apart)}" if apart else "")


def print_summary(result: SearchResult, space: Space) -> None:
    """The tables a finished (or interrupted) search prints: the front, the presets, the budget slices."""
    s = result.summary
    out.print(summary_line(result, space.trials))
    out.print(f"quality objective: {esc(s.quality_label)}")
    if s.front:
        out.print(_front_table(s, space))
    else:
        out.print(f"no feasible design yet under {s.budget['statistic']} <= {s.budget['limit']:g} ms")
    if s.presets:
        out.print(_preset_table(s, space))
    for sl in s.slices:
        best = sl["best"]
        tail = f"; best {s.quality_name} {_quality_fmt(best['quality'])} (trial {best['trial']})" if best else ""
        out.print(f"under {sl['statistic']} <= {sl['limit']:g} ms: {sl['feasible']} feasible design(s){tail}")
    for note in result.notes:
        out.print(f"[dim]note: {esc(note)}[/dim]")


def failure_lines(result: SearchResult) -> list[str]:
    """One sentence per worker that ended early (stderr), and the exit code: 2 when one met an EffscopeError (an
    unwritable database: the user can act on it), 1 when one crashed or was killed, 0 when none did."""
    lines = []
    for f in result.failures:
        if f.cause == "error":
            lines.append(f"error: worker {f.worker} stopped: {f.reason}")
        elif f.cause == "crash":
            lines.append(f"error: worker {f.worker} crashed ({f.reason}); its traceback is above")
        else:
            lines.append(f"error: worker {f.worker} {f.reason}")
    if lines:
        lines.append("completed trials are kept; re-run the same command to resume")
    return lines


def failure_exit_code(result: SearchResult) -> int:
    if not result.failures:
        return 0
    return 2 if any(f.cause == "error" for f in result.failures) else 1


def check_space_device(sp: Space, given: str | None) -> None:
    """The space's device must exist here; the message names where it came from (--device or the file)."""
    from effscope.profile.run import check_device

    check_device(sp.workload.device, "--device" if given else f"search space {sp.path}: [workload] device")


def all_failed_line(result: SearchResult) -> str | None:
    """One sentence when no completed trial measured anything: the commonest reason, once."""
    s = result.summary
    if not s.all_failed:
        return None
    n, reason = s.all_failed["count"], s.all_failed["reason"]
    return (
        f"error: all {s.trials} completed trial(s) failed and none was measured; the commonest reason ({n} of "
        f"them): {reason}"
    )


@app.command()
def search(
    space: str = typer.Argument(None, help="A shipped space (effscope search --list) or a .toml file."),
    list_: bool = typer.Option(False, "--list", help="List the shipped search spaces and exit."),
    budget_ms: float = typer.Option(None, "--budget-ms", help="Latency budget in ms (replaces the space's)."),
    trials: int = typer.Option(None, "--trials", help="Completed trials the study stops at (all workers)."),
    workers: int = typer.Option(1, "--workers", help="Worker processes on this machine."),
    storage: str = typer.Option(None, "--storage", help=STORAGE_HELP),
    db: str = typer.Option(None, "--db", help="Same as --storage."),
    study: str = typer.Option(None, "--study", help="Study name (default <space>-<device>); the same name resumes."),
    device: str = typer.Option(None, "--device", help="cpu, cuda or cuda:N (replaces the space's)."),
    data: str = typer.Option(None, "--data", help="ImageFolder directory: real proxy batches; needed by 'train'."),
    seed: int = typer.Option(None, "--seed", help="Base sampler seed (worker i uses seed + i)."),
    heartbeat: int = typer.Option(10, "--heartbeat", help="Seconds between worker heartbeats (stale trials retried)."),
    predictor: str = typer.Option(
        None, "--predictor", help="Latency table name or uid (effscope lut build): skips designs predicted over budget."
    ),
    report: str = typer.Option(None, "--report", help="Also write the study's HTML report to this file."),
) -> None:
    """Search a space's knobs for the best quality under a latency budget measured on the device."""
    from effscope.search.coordinator import resolve_space
    from effscope.search.coordinator import search as run

    if list_:
        if space is not None:
            raise SpecError(f"--list lists every shipped space and takes no SPACE, but got '{space}'; drop one of them")
        out.print(_list_table())
        return
    if space is None:
        raise SpecError("give a SPACE (a shipped name or a .toml file), or --list to see the shipped ones")
    sp = resolve_space(space, budget_ms=budget_ms, device=device, trials=trials, data=data, seed=seed)
    check_space_device(sp, device)
    if report:  # before minutes of searching: an unwritable report (or one onto the database) fails now
        from effscope.report import check_report_output
        from effscope.urls import database_url

        check_report_output(report, protect=[database_url(_storage(storage, db))])
    label = sp.quality
    interactive = err.is_terminal
    printed: set[int] = set()

    with err.status("starting the search", spinner="dots") if interactive else _Null() as status:

        def progress(p: SearchProgress) -> None:
            if interactive:  # the status line, updated in place
                status.update(esc(_progress_text(p, label, sp.timing("p50"))))
                return
            for t in p.finished:
                if t["trial"] not in printed:
                    printed.add(t["trial"])
                    err.print(_trial_line(t, p, label, sp.timing("p50")), markup=False, highlight=False, soft_wrap=True)

        try:
            with sigterm_as_interrupt():  # `timeout`, a CI cancel: the workers are stopped as after Ctrl-C
                result = run(
                    sp,
                    storage=_storage(storage, db),
                    study=study,
                    workers=workers,
                    command=command_line(),
                    on_progress=progress,
                    heartbeat=heartbeat,
                    predictor=predictor,
                )
        except KeyboardInterrupt as e:
            result, interrupt = None, e
    if result is None:
        try:
            _interrupted(sp, _storage(storage, db), study, report)
        except KeyboardInterrupt:  # a second Ctrl-C ends the summary, not what was stored
            err.print("interrupted again: completed trials are kept; re-run the same command to resume", soft_wrap=True)
        raise typer.Exit(interrupt_exit_code(interrupt))
    print_summary(result, sp)
    for line in failure_lines(result):
        err.print(line, markup=False, highlight=False, soft_wrap=True)
    if report:
        _write_report(report, _storage(storage, db) or result.storage_url, result.study_name)
    if nothing_measured := all_failed_line(result):
        err.print(nothing_measured, markup=False, highlight=False, soft_wrap=True)
    code = failure_exit_code(result) or (1 if result.summary.all_failed else 0)  # a search that measured nothing
    if code:
        raise typer.Exit(code)


def _write_report(report: str, storage: str, study: str) -> None:
    """--report: the storage as the user gave it (the report shows it)."""
    from effscope.report import build_report

    path = build_report(output=report, storage=storage, study=study, command=command_line())
    out.print(f"report written to {esc(path)}")


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None

    def update(self, *_a, **_k) -> None:
        return None


def _interrupted(space: Space, storage: str | None, study_name: str | None, report: str | None) -> None:
    """After Ctrl-C: the summary of what is stored (and --report), what was kept, and how to resume."""
    import optuna

    from effscope.search.coordinator import SearchResult
    from effscope.search.storage import storage_url
    from effscope.search.study import study_info, study_name_for
    from effscope.search.summary import summarize

    name = study_name_for(space, study_name)
    url = storage_url(storage)
    try:
        st = optuna.load_study(study_name=name, storage=url)
        s = summarize(st.get_trials(deepcopy=False), study_info(st))
    except Exception:  # no study yet (stopped while starting), or the storage is what failed
        err.print(f"interrupted: completed trials are kept in {shown_url(url)}")
        err.print("re-run the same command to resume")
        return
    print_summary(SearchResult(name, url, False, s, space=space), space)
    if report and s.trials:
        try:
            _write_report(report, storage or url, name)
        except EffscopeError as e:  # the summary above is still worth its exit code
            err.print(f"error: {e}", markup=False, highlight=False, soft_wrap=True)
    err.print(f"interrupted: {s.trials} completed trial(s) are kept in {shown_url(url)} (study {esc(name)})")
    err.print("re-run the same command to resume")


@app.command()
def calibrate(
    space: str = typer.Argument(..., help="A model-level space (shipped name or .toml)."),
    data: str = typer.Option(..., "--data", help="ImageFolder directory (root/<class>/<image>) to short-train on."),
    samples: int = typer.Option(8, "--samples", help="Designs sampled from the space and short-trained."),
    steps: int = typer.Option(None, "--steps", help="Training steps per design (default: the space's [train])."),
    storage: str = typer.Option(None, "--storage", help=STORAGE_HELP),
    db: str = typer.Option(None, "--db", help="Same as --storage."),
    study: str = typer.Option(None, "--study", help="Study the calibration is stored with (default <space>-<device>)."),
    device: str = typer.Option(None, "--device", help="cpu, cuda or cuda:N (replaces the space's)."),
    seed: int = typer.Option(None, "--seed", help="Seed of the design sample."),
    budget_ms: float = typer.Option(
        None, "--budget-ms", help="As the search's --budget-ms, to store the calibration with a study searched so."
    ),
) -> None:
    """Short-train a sample of a space and report each proxy's Kendall tau against it (stored with the study)."""
    from effscope.search.calibrate import calibrate_proxies
    from effscope.search.space import load_space

    sp = load_space(space).with_overrides(budget_ms=budget_ms, device=device, data=data, seed=seed)
    check_space_device(sp, device)
    with err.status("calibrating", spinner="dots") if err.is_terminal else _Null() as status:

        def progress(i: int, n: int, row: dict) -> None:
            text = f"design {i}/{n}: " + (
                f"top-1 {row['train']:.1f} %" if _num(row.get("train")) is not None else f"failed: {row.get('train')}"
            )
            if err.is_terminal:
                status.update(esc(text))
            else:
                err.print(text, markup=False, highlight=False, soft_wrap=True)

        try:
            with sigterm_as_interrupt():
                result = calibrate_proxies(
                    sp,
                    samples=samples,
                    steps=steps,
                    storage=_storage(storage, db),
                    study_name=study,
                    command=command_line(),
                    on_design=progress,
                )
        except KeyboardInterrupt as e:
            result = e
    if isinstance(result, KeyboardInterrupt):
        err.print(_calibration_interrupted(result), markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(interrupt_exit_code(result))
    table = Table(
        title=f"proxies vs short-training val top-1 ({result.train_steps} steps, {result.n} designs)",
        title_justify="left",
    )
    for col in ("proxy", "label", "Kendall tau", "n"):
        table.add_column(col, justify="right" if col in ("Kendall tau", "n") else "left")
    for name, c in result.taus.items():
        table.add_row(name, c["label"], fmt(c["kendall_tau"], "+.3f"), str(c["n"]))
    out.print(table)
    for name, c in result.taus.items():
        if "why_missing" in c:
            out.print(f"[dim]{esc(name)}: no Kendall tau: {esc(c['why_missing'])}[/dim]")
    designs = Table(title="designs", title_justify="left")
    for col in ("design", "top-1 %", *result.taus):
        designs.add_column(col, justify="left" if col == "design" else "right")
    for row in result.rows:
        train = _num(row.get("train"))
        designs.add_row(
            esc(row["design"]),
            fmt(train, ".1f") if train is not None else "failed",
            *[_quality_fmt(_num(row.get(n))) for n in result.taus],
        )
    out.print(designs)
    for note in result.notes:
        out.print(f"[dim]note: {esc(note)}[/dim]")
    failed = [r["train"] for r in result.rows if isinstance(r.get("train"), str)]
    if failed and len(failed) == len(result.rows):  # nothing to correlate: said once, nothing replaced in the study
        common = max(failed, key=failed.count)  # the first of the commonest
        err.print(
            f"error: all {len(failed)} designs failed to train, so no calibration was stored; the commonest reason "
            f"({failed.count(common)} of them): {common}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(1)
    out.print(
        f"stored with study {esc(result.study_name)} in {shown_url(result.storage_url)} "
        "(study user_attrs['calibration'])"
    )


def _calibration_interrupted(e: KeyboardInterrupt) -> str:
    """After Ctrl-C: what the study keeps of this calibration."""
    from effscope.urls import mask_url

    stored = getattr(e, "stored", 0)
    if not stored:
        return "interrupted: no design had finished training, so nothing of this calibration was stored"
    return (
        f"interrupted: {stored} short-trained design(s) are kept with study {e.study_name} in "  # type: ignore[attr-defined]
        f"{mask_url(e.storage_url)}; re-run the same command to resume"  # type: ignore[attr-defined]
    )


def _num(v: object) -> float | None:
    return v if isinstance(v, int | float) else None
