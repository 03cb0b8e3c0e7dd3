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
    direction_of,
    direction_sign,
    least_violating,
    objectives_of,
    quality_of,
    study_timing,
)
from effscope.report.markup import facts_html, notes_html, table_html
from effscope.report.sections._section import Section

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
    notes: list[str] = []
    if source.kind == "study":
        feasible = [p for p in pts if p.feasible and p.measured]
        statuses: dict[str, int] = {}
        for p in pts:
            statuses[p.status] = statuses.get(p.status, 0) + 1
        facts += [
            ("study", source.name),
            ("trials", len(pts)),
            ("distinct measured designs", sum(1 for p in dedupe_measurements(pts) if p.measured)),
            ("feasible designs", len(feasible)),
            ("trial statuses", ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items()))),
        ]
        if source.n_running:
            facts.append(("still running", source.n_running))
        if not feasible:
            notes.append("No design met every budget: the report lists the least-violating designs instead of a front.")
        direction = direction_of(source)
        if feasible:
            best_pts = sorted(best_designs(source), key=lambda p: -direction_sign(direction) * p.get(QUALITY))
            best_pts = best_pts[:MAX_BEST_ROWS]
        else:
            best_pts = least_violating(pts, direction=direction)
        best_title = "Best designs (the Pareto front)" if feasible else "Least-violating designs (nothing feasible)"
        timing = study_timing(source)
        best = design_table(best_pts, pts, quality, with_violation=not feasible, timing=timing) if best_pts else None
    else:
        ok = [p for p in pts if p.status == "ok"]
        facts += [("source", source.name), ("records", len(pts)), ("measured", len(ok))]
        failed = len(pts) - len(ok)
        if failed:
            notes.append(f"{failed} record(s) failed to measure; their reasons are in the table.")
        rows_pts = sorted(pts, key=lambda p: (p.get(LATENCY) is None, p.get(LATENCY) or 0.0, p.id))
        best_title = "Measured designs, fastest first"
        if len(rows_pts) > MAX_RECORD_ROWS:
            best_title += f" (the first {MAX_RECORD_ROWS} of {len(rows_pts)})"
        best = design_table(rows_pts[:MAX_RECORD_ROWS], pts, None, with_violation=False)
    if quality is not None and quality.is_proxy:
        notes.append(
            f"The quality objective is a proxy: {quality.display}. A front of a proxy is not an accuracy front."
        )
    targets = sorted({p.target for p in pts})
    name = target if len(targets) <= 3 or source.attrs.get("target") else f"{len(targets)} targets"
    title = f"effscope report: {name} on {device_of(source)}"
    return Summary(title, facts, objs, budgets, best_title, best, notes)


def summary_html(s: Summary) -> str:
    """The facts, objectives, budgets, notes and the table of best designs."""
    objs = "".join(
        f"<li>{html.escape(o.display)}: {html.escape(o.direction)}d"
        + (' <span class="badge">proxy</span>' if o.is_proxy else "")
        + "</li>"
        for o in s.objectives
    )
    budgets = "".join(f"<li>{html.escape(b.name)}: {html.escape(b.text)}</li>" for b in s.budgets)
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
