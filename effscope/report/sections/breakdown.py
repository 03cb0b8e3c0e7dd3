"""Section "breakdown": where the work goes: each design's share of MACs per top-level part beside its share of
measured time."""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import TYPE_CHECKING

from effscope.metrics import MODULE_TIME_REPEATS
from effscope.report.data import Point, Source, best_designs, direction_of, least_violating, module_shares
from effscope.report.markup import notes_html
from effscope.report.sections._section import Section

if TYPE_CHECKING:
    import plotly.graph_objects as go

__all__ = ["Breakdown", "BreakdownItem", "SECTION", "breakdown_figure", "breakdown_html", "breakdown_section"]


MAX_BREAKDOWNS = 4
MIN_PART_SHARE = 2.0  # percent; smaller parts are folded into "other"


@dataclass
class BreakdownItem:
    design: str
    parts: list[str]
    macs_share: list[float]  # percent of the design's MACs
    time_share: list[float | None] | None  # percent of measured time, None when not measured


@dataclass
class Breakdown:
    items: list[BreakdownItem]
    notes: list[str]


def breakdown_section(source: Source) -> Breakdown | None:
    """Share of MACs per top-level part (stages of a model, attention/MLP of a block) beside share of time."""
    if source.kind == "study":
        front = best_designs(source) or least_violating(source.points, direction=direction_of(source))
        chosen = [p for p in front if p.macs_by_module] or [p for p in source.points if p.macs_by_module][:1]
    else:
        latest: dict[str, Point] = {}
        for p in sorted(source.points, key=lambda p: (p.kind != "model", p.order or "")):
            if p.macs_by_module and p.target not in latest:
                latest[p.target] = p
        chosen = list(latest.values())
    items = []
    untimed: list[str] = []
    for p in chosen[:MAX_BREAKDOWNS]:
        parts = module_shares(p.macs_by_module or {})
        total = sum(m for _, m in parts)
        if not parts or total <= 0:
            continue
        time_share = None
        if p.time_by_module_ms:
            times = [part_time(p.time_by_module_ms, n) for n, _ in parts]
            t_total = sum(t for t in times if t is not None)
            if t_total > 0:
                time_share = [None if t is None else 100 * t / t_total for t in times]
                missed = [n for n, t in zip(parts, times, strict=True) if t is None]
                if missed:
                    untimed.append(f"{p.id} ({', '.join(n for n, _ in missed)})")
        items.append(
            _merge_small(BreakdownItem(p.id, [n for n, _ in parts], [100 * m / total for _, m in parts], time_share))
        )
    if not items:
        return None
    notes = []
    if not any(i.time_share for i in items):
        notes.append(
            "Only the MACs share is shown: these Records carry no per-module timing, so the share of measured time "
            "per part is not available (it is never estimated from MACs)."
        )
    if untimed:
        notes.append(
            "Parts that were not timed (ops outside any submodule never are) have no time segment, and the time "
            f"shares of that design are of its timed parts only: {'; '.join(untimed)}."
        )
    if any(i.time_share for i in items):
        notes.append(
            f"A part's time is its mean over {MODULE_TIME_REPEATS} forwards, after a warm one, timed with a hook "
            "around every part (on a GPU the hooks also wait for each part to finish): read the time bars as shares, "
            "not as latencies."
        )
    left_out = [p.id for p in chosen[MAX_BREAKDOWNS:]]
    if left_out:
        notes.append(f"Not shown (at most {MAX_BREAKDOWNS} designs): {', '.join(left_out)}.")
    return Breakdown(items, notes)


def part_time(time_by_module_ms: dict[str, float], part: str) -> float | None:
    """A part's measured time: its own, else the sum of its children's (a container such as a stage's list of blocks
    is never called itself, so only its blocks were timed); None where neither was timed."""
    own = time_by_module_ms.get(part)
    if own is not None:
        return own
    depth = part.count(".") + 1
    kids = [t for n, t in time_by_module_ms.items() if n.startswith(part + ".") and n.count(".") == depth]
    return sum(kids) if kids else None


def _merge_small(item: BreakdownItem, below: float = MIN_PART_SHARE) -> BreakdownItem:
    """Fold parts under `below` percent (of MACs and of time) into one "other" part, so the legend stays readable."""
    times = item.time_share or [None] * len(item.parts)
    small = [i for i, (m, t) in enumerate(zip(item.macs_share, times, strict=True)) if m < below and (t or 0) < below]
    if len(small) < 2:
        return item
    keep = [i for i in range(len(item.parts)) if i not in small]
    other = f"other (parts < {below:g} % each)"
    macs = [item.macs_share[i] for i in keep] + [sum(item.macs_share[i] for i in small)]
    time = None
    if item.time_share is not None:
        time = [times[i] for i in keep] + [sum(times[i] or 0.0 for i in small)]
    return BreakdownItem(item.design, [item.parts[i] for i in keep] + [other], macs, time)


# ------------------------------------------------------------------ drawing (plotly loads here, not on import)


def breakdown_figure(b: Breakdown) -> go.Figure:
    """100 % stacked bars: each design's share of MACs per part, and its share of measured time when known."""
    import plotly.graph_objects as go

    from effscope.report.figures import GREY, PARTS_PALETTE, finish_figure, rounded

    fig = go.Figure()
    labels: list[str] = []
    for item in b.items:
        rows = [(f"{item.design} · MACs", item.macs_share)]
        if item.time_share:
            rows.append((f"{item.design} · time", item.time_share))
        labels += [label for label, _ in rows]
        # colours restart per design, each design a legend group of its own: a shared sequence ran out of colours
        # with a few models, and their later parts were all drawn in the grey of "other"
        for j, part in enumerate(item.parts):
            xs = [shares[j] for _, shares in rows]
            fig.add_trace(
                go.Bar(
                    y=[label for label, _ in rows],
                    x=rounded(xs),
                    name=part,
                    legendgroup=item.design,
                    legendgrouptitle={"text": item.design} if j == 0 else None,
                    orientation="h",
                    marker={"color": GREY if part.startswith("other") else PARTS_PALETTE[j % len(PARTS_PALETTE)]},
                    text=[f"{x:.0f}%" if x is not None and x >= 6 else "" for x in xs],
                    textposition="inside",
                    insidetextanchor="middle",
                    hovertemplate=f"{html.escape(part)}: %{{x:.1f}} % of %{{y}}<extra></extra>",
                )
            )
    entries = sum(len(item.parts) + 1 for item in b.items)  # a group title and its parts
    return finish_figure(
        fig,
        max(200, 110 + 44 * len(labels), 60 + 22 * entries),
        barmode="stack",
        xaxis={"title": {"text": "share of the design (%)"}, "range": [0, 100]},
        yaxis={"automargin": True, "categoryorder": "array", "categoryarray": labels[::-1]},  # first design on top
        legend={"traceorder": "grouped"},
    )


def breakdown_html(b: Breakdown) -> str:
    """The figure and notes."""
    from effscope.report.figures import figure_html

    return figure_html(breakdown_figure(b), "fig-breakdown") + notes_html(b.notes)


SECTION = Section("breakdown", "Where the work goes", breakdown_section, breakdown_html, after="scaling")
