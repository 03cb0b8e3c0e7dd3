"""Section "summary": what the report covers (target, device, counts), its objectives and budgets, and its
best designs."""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

from effscope.report.data import (
    LATENCY,
    QUALITY,
    Budget,
    Objective,
    Source,
    Table,
    best_designs,
    budgets_of,
    dedupe_measurements,
    design_table,
    device_of,
    differing_workload_parts,
    direction_of,
    direction_sign,
    finite,
    front_differences,
    front_name,
    front_statistic,
    least_violating,
    number_name,
    objectives_of,
    quality_of,
    study_device_parts,
    study_timing,
    workload_groups,
    workload_label,
)
from effscope.report.markup import facts_html, notes_html, table_html
from effscope.report.sections._section import Section
from effscope.report.sections.trust import SECTION as TRUST

__all__ = ["SECTION", "Summary", "summary_html", "summary_section"]


MAX_BEST_ROWS = 8
MAX_RECORD_ROWS = 100


@dataclass
class Summary:
    title: str
    facts: list[tuple[str, Any]]
    objectives: list[Objective]
    budgets: list[Budget]
    best_title: str
    best: Table | None
    notes: list[str]


def summary_section(source: Source) -> Summary:
    """What the report covers: target, device and counts, the objectives and budgets, the best designs."""
    objs = objectives_of(source)
    budgets = budgets_of(source)
    quality = quality_of(source)
    pts = source.points
    target = source.attrs.get("target") or ", ".join(sorted({p.target for p in pts}))
    kind = source.attrs.get("kind") or ", ".join(sorted({str(p.kind) for p in pts if p.kind}))
    facts: list[tuple[str, Any]] = [("target", target), ("kind", kind), ("device", device_of(source))]
    part = _study_part(source) if source.kind == "study" else _records_part(source)
    facts += part.facts
    notes = _load_notes(pts) + part.notes
    if quality is not None and quality.is_proxy:
        notes.append(
            f"The quality objective is a proxy: {quality.display}. A front of a proxy is not an accuracy front."
        )
    targets = sorted({p.target for p in pts})
    name = target if len(targets) <= 3 or source.attrs.get("target") else f"{len(targets)} targets"
    title = f"effscope report: {name} on {device_of(source)}"
    return Summary(title, facts, objs, budgets, part.best_title, part.best, notes)


# flags saying the machine, not the design, may have set a timing
LOAD_FLAGS = ("cpu-contention", "device-contention", "gpu-throttled")


def _load_notes(pts: list) -> list[str]:
    """Say first when the machine was busy or unsteady, or the timings did not settle: every ranking and
    correlation below carries it."""
    timed = dedupe_measurements([p for p in pts if p.timed])
    loaded = [p for p in timed if any(f in p.flags for f in LOAD_FLAGS)]
    unstable = [p for p in timed if "latency-unstable" in p.flags]
    notes = []
    if loaded:
        flags = ", ".join(sorted({f for p in loaded for f in p.flags if f in LOAD_FLAGS}))
        notes.append(
            f"{len(loaded)} of {len(timed)} timed designs were measured on a busy or unsteady device ({flags}): their "
            "latencies, and the rankings and correlations built on them, may reflect the machine more than the "
            "designs. Measure again on an idle machine before trusting them."
        )
    if unstable:
        notes.append(
            f"{len(unstable)} of {len(timed)} timed designs did not settle within their time cap (latency-unstable): "
            "a wide spread, or too few samples to judge. A longer cap (profile --max-time; a search space's [measure] "
            "max_time_s) or a quieter machine narrows it."
        )
    if notes:
        notes[-1] += f' Each design\'s flags are in the tables; the section "{TRUST.title}" has the details.'
    return notes


@dataclass
class _Part:
    """What the study or the Records branch adds to the summary."""

    facts: list[tuple[str, Any]]
    notes: list[str]
    best_title: str
    best: Table | None


def _study_part(source: Source) -> _Part:
    pts = source.points
    quality = quality_of(source)
    feasible = [p for p in dedupe_measurements(pts) if p.feasible and p.measured]  # a cached repeat counts once
    statuses: dict[str, int] = {}
    for p in pts:
        statuses[p.status] = statuses.get(p.status, 0) + 1
    facts: list[tuple[str, Any]] = [
        ("study", source.name),
        ("trials", len(pts)),
        ("distinct measured designs", sum(1 for p in dedupe_measurements(pts) if p.measured)),
        ("feasible designs", len(feasible)),
        ("trial statuses", ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items()))),
    ]
    if source.n_running:
        facts.append(("still running", source.n_running))
    keys = study_device_parts(pts)
    notes: list[str] = []
    direction = direction_of(source)
    timing = study_timing(source)
    if feasible:
        best_pts = sorted(best_designs(source), key=lambda p: -direction_sign(direction) * p.get(QUALITY))
        best_pts = best_pts[:MAX_BEST_ROWS]
        best_title = f"Best designs: {front_name(source)}"
        notes += _front_difference_notes(source)
    else:
        best_pts = least_violating(pts, direction=direction)
        best_title = "Least-violating designs (nothing feasible)"
        # the note promises a list only where one follows
        notes.append(
            "No design met every budget: the report lists the least-violating designs instead of a front."
            if best_pts
            else "No design met every budget, and none was measured fully enough to say how close it came."
        )
    best = (
        design_table(best_pts, pts, quality, with_violation=not feasible, timing=timing, workload_keys=keys)
        if best_pts
        else None
    )
    notes[:0] = _several_cpus_notes(pts, keys, tabled=best is not None)
    notes += _published_notes(source)
    return _Part(facts, notes, best_title, best)


def _published_notes(source: Source) -> list[str]:
    """Where each published design (a preset the search measured first) sits against what the search found: the
    question a reader brings, answered beside the best designs rather than only as a star in the figure."""
    from effscope.report.sections.front import where_published

    quality = quality_of(source)
    presets = [p for p in source.points if p.preset]
    if quality is None or not presets:
        return []
    budgets = budgets_of(source)
    best, stat = best_designs(source), front_statistic(budgets)
    margin = finite((source.attrs.get("predictor") or {}).get("margin"))
    said = [f"{p.id}: {where_published(p, best, stat, budgets, quality, margin)}" for p in presets]
    return [f"Published design{'s' if len(said) > 1 else ''}: {'; '.join(said)}."]


def _several_cpus_notes(pts: list, keys: list[str], *, tabled: bool) -> list[str]:
    """Say where a study's trials ran on several CPUs of one name, and what the report keeps apart and what not."""
    groups = workload_groups(pts, keys) if keys else {}
    if len(groups) < 2:
        return []
    named = ", and the table below names each trial's CPU" if tabled else ""
    return [
        f"This study's trials were measured on {len(groups)} CPUs of one name ({'; '.join(groups)}): a study made "
        "before effscope stored its CPU's identity resumes on any CPU of that name. Latencies of different CPUs are "
        f"not comparable: the MACs-vs-latency figure and its correlations compare trials only within one CPU{named}; "
        "the front, the budgets and the knob importance still take each trial's latency as measured on its own CPU. "
        "Search again on one CPU for a front to trust."
    ]


def _front_difference_notes(source: Source) -> list[str]:
    """Name the designs on which the report's front and the search's own front (its objectives, as the CLI, Optuna
    and optuna-dashboard rank them) disagree."""
    theirs_only, ours_only = front_differences(source)
    timing = study_timing(source)
    if not (theirs_only or ours_only) or timing is None:
        return []
    objective = number_name(timing)
    stat = number_name(front_statistic(budgets_of(source)))
    notes = [
        f"This front ranks latency by {stat}; the search's own front (its summary, Optuna, optuna-dashboard) "
        f"ranks it by its objective, {objective}, so the two can differ."
    ]
    if theirs_only:
        notes.append(
            f"On the front of the search's objectives ({objective}) but not on this one: "
            + ", ".join(p.id for p in theirs_only)
            + "."
        )
    if ours_only:
        notes.append(
            f"On this front ({stat}) but not on the front of the search's objectives ({objective}): "
            + ", ".join(p.id for p in ours_only)
            + "."
        )
    return notes


def _records_part(source: Source) -> _Part:
    pts = source.points
    measured = [p for p in pts if p.measured]
    aborted = [p for p in pts if p.aborted]
    source_text = source.storage or source.name  # the file as given (r.db), not its stem
    facts: list[tuple[str, Any]] = [("source", source_text), ("records", len(pts)), ("measured", len(measured))]
    notes: list[str] = []
    failed = len(pts) - len(measured) - len(aborted)
    if failed:
        notes.append(f"{failed} record(s) failed to measure; their reasons are in the table.")
    if aborted:
        facts.append(("aborted over a budget", len(aborted)))
        notes.append(
            f"{len(aborted)} record(s) were aborted over a search's latency budget: their timings are partial, so they "
            "are listed after the measured designs and left out of every figure and correlation."
        )
    keys = differing_workload_parts(pts)
    groups = workload_groups(pts)
    if keys:
        notes.append(
            f"These records were measured under {len(groups)} workloads (differing in "
            f"{', '.join(keys)}): latencies of different workloads are not comparable, so the table ranks within each "
            "workload and the MACs-vs-latency figure and its correlations compare designs only within one workload."
        )
    notes += _study_records_notes(pts)
    order = {name: i for i, name in enumerate(groups)}
    rows_pts = sorted(
        pts,
        key=lambda p: (
            not p.measured,
            not p.aborted,
            order.get(workload_label(p, keys), 0),
            p.get(LATENCY) is None,
            p.get(LATENCY) or 0.0,
            p.id,
        ),
    )
    if measured:
        best_title = "Measured designs, fastest first" + (" within each workload" if keys else "")
    else:
        best_title = "Records (none measured: " + ("aborted or failed)" if aborted else "every one failed)")
    if len(rows_pts) > MAX_RECORD_ROWS:
        best_title += f" (the first {MAX_RECORD_ROWS} of {len(rows_pts)})"
    best = design_table(rows_pts[:MAX_RECORD_ROWS], pts, None, with_violation=False, workload_keys=keys)
    return _Part(facts, notes, best_title, best)


def _study_records_notes(pts: list) -> list[str]:
    """Records made by a search hold no quality, constraints or trial states: the front needs the study itself."""
    studies = sorted({p.study for p in pts if p.study})
    if not studies:
        return []
    named = ", ".join(f"'{s}'" for s in studies)
    return [
        f"Some of these Records were measured by the search {named}. Records are not the study's trials (they lack "
        "its quality objective, constraints and trial states), so no Pareto front is drawn from them: run "
        f"`effscope report --storage DB --study {studies[0]}` on the search's database for the front."
    ]


def summary_html(s: Summary) -> str:
    """The facts, objectives, budgets, notes and the table of best designs."""
    objs = "".join(
        f"<li>{html.escape(o.display)}: {html.escape(o.direction)}d"
        + (' <span class="badge">proxy</span>' if o.is_proxy else "")
        + "</li>"
        for o in s.objectives
    )
    budgets = "".join(
        f"<li>{html.escape(b.name)}: {html.escape(b.text)} (<code>{html.escape(b.statistic)}</code>)</li>"
        for b in s.budgets
    )
    parts = [facts_html(s.facts)]
    if objs:
        parts.append(f"<h3>Objectives</h3><ul>{objs}</ul>")
    if budgets:
        loosest = "the loosest latency budget is the search's constraint; tighter ones slice the front below"
        parts.append(f'<h3>Budgets</h3><ul>{budgets}</ul><p class="hint">{loosest}.</p>')
    parts.append(notes_html(s.notes))
    if s.best is not None:
        parts.append(f"<h3>{html.escape(s.best_title)}</h3>{table_html(s.best)}")
    return "".join(parts)


SECTION = Section("summary", "Summary", summary_section, summary_html, after=None)
