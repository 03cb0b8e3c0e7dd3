"""Section "insight": what a study's search found: knob importance, parallel coordinates and the hypervolume
history."""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from effscope.report.data import (
    IMPORTANCE_BINS,
    LATENCY,
    QUALITY,
    TRAIN_STEP,
    Objective,
    Point,
    Source,
    best_designs,
    budgets_of,
    dedupe_measurements,
    direction_sign,
    eta_squared,
    front_name,
    hypervolume_2d,
    is_number,
    knob_text,
    latency_budgets,
    number_name,
    quality_of,
    study_timing,
    timing_key,
    varying_knobs,
)
from effscope.report.markup import notes_html
from effscope.report.sections._section import Section

if TYPE_CHECKING:
    import plotly.graph_objects as go

__all__ = [
    "Hypervolume",
    "Importance",
    "Insight",
    "ParallelAxis",
    "ParallelLine",
    "SECTION",
    "hypervolume_figure",
    "hypervolume_history",
    "importance_figure",
    "insight_html",
    "insight_section",
    "parallel_coordinates",
    "parallel_figure",
]


MAX_PARALLEL_KNOBS = 12
MAX_DISTINCT_TICKS = 6
MIN_IMPORTANCE_POINTS = 4


@dataclass
class Importance:
    objective: str
    knobs: list[str]
    eta2: list[float]


@dataclass
class ParallelAxis:
    name: str
    ticks: list[tuple[float, str]]


@dataclass
class ParallelLine:
    id: str
    group: str  # "best", "feasible", "infeasible"
    ys: list[float | None]


@dataclass
class Hypervolume:
    trials: list[int]
    values: list[float]
    reference: tuple[float, float]
    reference_text: str
    unit: str  # what the area is measured in: the quality's own unit times milliseconds, e.g. "synflow × ms"


@dataclass
class Insight:
    importance: list[Importance]
    axes: list[ParallelAxis]
    lines: list[ParallelLine]
    hypervolume: Hypervolume | None
    notes: list[str]  # on the knob importance
    n_designs: int = 0  # the distinct measured designs behind the importance and the lines
    parallel_notes: list[str] = field(default_factory=list)


def insight_section(source: Source) -> Insight | None:
    """Knob importance, parallel coordinates and the hypervolume history of a study."""
    quality = quality_of(source)
    if source.kind != "study":
        return None
    measured = [p for p in dedupe_measurements(source.points) if p.measured]
    names = varying_knobs(measured)
    if len(measured) < 2 or not names:
        return None
    timing = timing_key(measured, study_timing(source))
    label = {LATENCY: "median latency (ms)", TRAIN_STEP: "median training step (ms)"}.get(timing)
    objectives = [(timing, label or f"median {number_name(timing).removesuffix(' p50')} (ms)")]
    if quality is not None:
        objectives.insert(0, (QUALITY, quality.display))
    importance = []
    if len(measured) >= MIN_IMPORTANCE_POINTS:
        for key, label in objectives:
            pts = [p for p in measured if p.get(key) is not None]
            scores = []
            for k in names:
                have = [p for p in pts if k in p.knobs]
                e = eta_squared([p.knobs[k] for p in have], [p.get(key) for p in have])
                if e is not None:
                    scores.append((k, e))
            scores.sort(key=lambda kv: -kv[1])
            if scores:
                importance.append(Importance(label, [k for k, _ in scores], [e for _, e in scores]))
    axes, lines = parallel_coordinates(measured, names[:MAX_PARALLEL_KNOBS], objectives, best_designs(source))
    hv = hypervolume_history(source, quality) if quality is not None else None
    notes = [
        "Knob importance is η²: the share of an objective's variance that a knob explains on its own (numeric knobs "
        f"grouped into {IMPORTANCE_BINS} ranges). Each knob's share is its own, so they need not add up to 1; it "
        f"ignores interactions, and from {len(measured)} designs it is a hint, not a finding.",
    ]
    parallel_notes = [f"Lines marked best are the summary's best designs: {front_name(source)}."]
    return Insight(importance, axes, lines, hv, notes, len(measured), parallel_notes)


def parallel_coordinates(
    points: Sequence[Point], knobs: Sequence[str], objectives: Sequence[tuple[str, str]], front: Sequence[Point]
) -> tuple[list[ParallelAxis], list[ParallelLine]]:
    """Axes scaled to [0, 1] (numbers by value, categories evenly) and one line per design."""
    front_ids = {p.id for p in front}
    columns: list[tuple[str, list[Any]]] = [(k, [p.knobs.get(k) for p in points]) for k in knobs]
    columns += [(label, [p.get(key) for p in points]) for key, label in objectives]
    axes, scaled = [], []
    for name, values in columns:
        present = [v for v in values if v is not None]
        if present and all(is_number(v) for v in present):
            lo, hi = min(present), max(present)
            pos = [None if v is None else (0.5 if hi == lo else (v - lo) / (hi - lo)) for v in values]
            distinct = sorted(set(present))
            if len(distinct) <= MAX_DISTINCT_TICKS:  # few values: tick each one
                ticks = [(0.5 if hi == lo else (v - lo) / (hi - lo), _num(v)) for v in distinct]
            else:
                ticks = [(0.0, _num(lo)), (0.5, _num((lo + hi) / 2)), (1.0, _num(hi))]
            ticks = _spread(ticks)
        else:
            cats = sorted({knob_text(v) for v in present})
            where = {c: (i / (len(cats) - 1) if len(cats) > 1 else 0.5) for i, c in enumerate(cats)}
            pos = [None if v is None else where[knob_text(v)] for v in values]
            ticks = [(where[c], c) for c in cats]
        axes.append(ParallelAxis(name, ticks))
        scaled.append(pos)
    lines = []
    for i, p in enumerate(points):
        group = "best" if p.id in front_ids else "feasible" if p.feasible else "infeasible"
        lines.append(ParallelLine(p.id, group, [col[i] for col in scaled]))
    return axes, lines


def _spread(ticks: list[tuple[float, str]], gap: float = 0.07) -> list[tuple[float, str]]:
    """Drop ticks that would print on top of a neighbour (the ends are kept)."""
    if len(ticks) <= 2:
        return ticks
    kept = [ticks[0]]
    for pos, text in ticks[1:-1]:
        if pos - kept[-1][0] >= gap and ticks[-1][0] - pos >= gap:
            kept.append((pos, text))
    return [*kept, ticks[-1]]


def _num(v: float) -> str:
    """An axis tick: thousands separators for large numbers, 4 significant digits otherwise."""
    if isinstance(v, int) or (abs(v) >= 1e4 and abs(v) < 1e12):
        return f"{v:,.0f}"
    return f"{v:.4g}"


def hypervolume_history(source: Source, quality: Objective) -> Hypervolume | None:
    """Hypervolume of the feasible (quality, latency p50) points after each trial, against one fixed reference.

    The reference point: latency at the loosest latency budget (or 10 % past the slowest feasible design without
    one), quality 10 % of the feasible range worse than the worst feasible design.
    """
    direction = quality.direction
    sign = direction_sign(direction)
    trials = sorted((p for p in source.points if p.trial is not None), key=lambda p: p.trial)
    feasible = [p for p in trials if p.feasible and p.measured and p.get(QUALITY) is not None]
    if not feasible:
        return None
    qs = [p.get(QUALITY) for p in feasible]
    timing = timing_key(feasible, study_timing(source))
    lats = [p.get(timing) for p in feasible]
    worst_q = min(qs) if sign > 0 else max(qs)
    q_span = (max(qs) - min(qs)) or abs(worst_q) or 1.0
    q_ref = worst_q - sign * 0.1 * q_span
    lat_budgets = latency_budgets(budgets_of(source))
    if lat_budgets:
        l_ref = lat_budgets[-1].limit
        # the budget limits another statistic (p90): every feasible design's median is below it, so none falls out
        l_text = f"the loosest latency budget, which limits {number_name(lat_budgets[-1].statistic)}"
    else:
        l_ref = max(lats) + 0.1 * ((max(lats) - min(lats)) or max(lats))
        l_text = "10 % past the slowest feasible design"
    l_ref = max(l_ref, max(lats) * (1 + 1e-9))  # p50 below a p90 budget, but keep every feasible point inside
    xs, values, done = [], [], []
    feasible_ids = {p.id for p in feasible}
    for p in trials:
        if p.id in feasible_ids:
            done.append((p.get(QUALITY), p.get(timing)))
        xs.append(p.trial)
        values.append(hypervolume_2d(done, (q_ref, l_ref), direction))
    text = (
        f"reference point: {quality.display} = {q_ref:.4g} (10 % of the feasible range worse than the worst "
        f"feasible design), {number_name(timing)} = {l_ref:.4g} ms ({l_text})"
    )
    return Hypervolume(xs, values, (q_ref, l_ref), text, f"{quality.name} × ms")


# ------------------------------------------------------------------ drawing (plotly loads here, not on import)


def importance_figure(ins: Insight) -> go.Figure:
    """η² per knob as horizontal bars, one colour per objective."""
    import plotly.graph_objects as go

    from effscope.report.figures import PALETTE, finish_figure, rounded

    fig = go.Figure()
    for i, imp in enumerate(ins.importance):
        fig.add_trace(
            go.Bar(
                y=imp.knobs,
                x=rounded(imp.eta2),
                name=imp.objective,
                orientation="h",
                marker={"color": PALETTE[i % len(PALETTE)]},
                hovertemplate="%{y}: η² = %{x:.3f}<extra>" + html.escape(imp.objective) + "</extra>",
            )
        )
    knobs = {k for imp in ins.importance for k in imp.knobs}
    return finish_figure(
        fig,
        max(260, 150 + 34 * len(knobs) * max(1, len(ins.importance))),
        barmode="group",
        xaxis={
            "title": {"text": "η² (share of the objective's variance explained by the knob alone)"},
            "range": [0, 1],
        },
        yaxis={"autorange": "reversed"},
    )


def parallel_figure(ins: Insight, *, phone: bool = False) -> go.Figure:
    """Parallel coordinates drawn in SVG (plotly's parcoords needs WebGL): one polyline per design.

    The axes stand side by side; for a phone (`phone`) they run across the page, one under the other: side by side,
    a phone leaves each axis a few dozen pixels and their names and ticks print on top of each other.
    """
    import plotly.graph_objects as go

    from effscope.report.figures import BEST, FEASIBLE, GREY, finish_figure

    fig = go.Figure()
    n = len(ins.axes)

    def at(axis: Any, value: Any) -> tuple[Any, Any]:  # (x, y) of a value on an axis
        return (value, axis) if phone else (axis, value)

    styles = {
        "infeasible": ("infeasible", {"color": GREY, "width": 1}),
        "feasible": ("feasible", {"color": FEASIBLE, "width": 1.2}),
        "best": ("best: the Pareto front", {"color": BEST, "width": 2.5}),
    }
    for group, (name, line) in styles.items():
        lines = [ln for ln in ins.lines if ln.group == group]
        if not lines:
            continue
        xs: list[Any] = []
        ys: list[Any] = []
        for ln in lines:
            xs += [*range(n), None]
            ys += [*(None if y is None else round(y, 4) for y in ln.ys), None]
        x, y = at(xs, ys)
        fig.add_trace(
            go.Scatter(x=x, y=y, mode="lines", name=name, line=line, opacity=0.85, hoverinfo="skip", legendgroup=group)
        )
        # hover at the last axis (latency) names the design; one point per design keeps the page small
        ends = [ln for ln in lines if ln.ys and ln.ys[-1] is not None]
        x, y = at([n - 1] * len(ends), [round(ln.ys[-1], 4) for ln in ends])
        fig.add_trace(
            go.Scatter(
                x=x,
                y=y,
                mode="markers",
                marker={"color": line["color"], "size": 5},
                text=[html.escape(ln.id) for ln in ends],
                hovertemplate="%{text}<extra></extra>",
                legendgroup=group,
                showlegend=False,
            )
        )
    label = {"showarrow": False, "font": {"size": 11}, "bgcolor": "rgba(255,255,255,0.75)"}
    for i, axis in enumerate(ins.axes):
        (x0, y0), (x1, y1) = at(i, 0), at(i, 1)
        fig.add_shape(type="line", x0=x0, x1=x1, y0=y0, y1=y1, line={"color": "#555", "width": 1}, layer="below")
        if not phone:
            for pos, text in axis.ticks:
                fig.add_annotation(x=i, y=pos, text=html.escape(text), xanchor="left", xshift=4, **label)
            continue
        # the axis' name above it, its ticks below it (the ends flush with the axis' ends)
        name = {**label, "font": {"size": 12}, "xanchor": "left", "yanchor": "bottom", "yshift": 2}
        fig.add_annotation(x=0, y=i, text=f"<b>{html.escape(axis.name)}</b>", **name)
        for pos, text, anchor in _spread_across(axis.ticks):
            fig.add_annotation(x=pos, y=i, text=html.escape(text), xanchor=anchor, yanchor="top", yshift=-3, **label)
    if phone:
        return finish_figure(
            fig,
            round(PHONE_AXIS_PX * (n - 1 + 0.9)) + 20,
            # drawn, though bare: an axis not drawn would keep the margin the wide layout's x ticks pushed (the
            # page's script draws this layout in the wide figure's place, report/html.py)
            xaxis={"range": [-0.02, 1.02], "showticklabels": False, "showgrid": False, "ticks": ""},
            yaxis={"visible": False, "range": [n - 1 + 0.4, -0.5]},  # the first axis on top
            margin={"l": 10, "r": 10, "t": 10, "b": 10},
        )
    return finish_figure(
        fig,
        480,
        xaxis={
            "tickvals": list(range(n)),
            "ticktext": [_wrap(a.name) for a in ins.axes],
            "showgrid": False,
            "range": [-0.2, n - 0.4],
            "side": "top",
            "ticks": "",
        },
        yaxis={"visible": False, "range": [-0.06, 1.06]},
        margin={"t": 90},
    )


# The phone's parallel coordinates: the gap between two axes, and the width its tick labels are spread over (the
# plot on a 360 px screen) with the width of a character (11 px labels) and the least gap between two labels.
PHONE_AXIS_PX = 84
PHONE_PLOT_PX, CHAR_PX, LABEL_GAP_PX = 310, 6.5, 10


def _spread_across(ticks: Sequence[tuple[float, str]]) -> list[tuple[float, str, str]]:
    """Ticks along an axis that runs across the page, each with its anchor (the ends flush with the axis' ends);
    one that would print on top of a neighbour is dropped (the ends are kept)."""

    def span(pos: float, text: str) -> tuple[float, float, str]:
        width, at = len(text) * CHAR_PX, pos * PHONE_PLOT_PX
        if pos <= 0.0:
            return at, at + width, "left"
        if pos >= 1.0:
            return at - width, at, "right"
        return at - width / 2, at + width / 2, "center"

    spans = [span(pos, text) for pos, text in ticks]
    kept = [0] if ticks else []
    for i in range(1, len(ticks)):
        if i == len(ticks) - 1:  # the end stays; the neighbours it would print on go
            while len(kept) > 1 and spans[i][0] - spans[kept[-1]][1] < LABEL_GAP_PX:
                kept.pop()
            kept.append(i)
        elif spans[i][0] - spans[kept[-1]][1] >= LABEL_GAP_PX:
            kept.append(i)
    return [(*ticks[i], spans[i][2]) for i in kept]


def _wrap(text: str, width: int = 16) -> str:
    """Break a long axis name into lines so neighbouring names do not overlap."""
    words, lines, cur = text.split(" "), [], ""
    for w in words:
        if cur and len(cur) + 1 + len(w) > width:
            lines.append(cur)
            cur = w
        else:
            cur = f"{cur} {w}".strip()
    lines.append(cur)
    return "<br>".join(html.escape(x) for x in lines)


def hypervolume_figure(ins: Insight) -> go.Figure:
    """The hypervolume after each trial, as a staircase."""
    import plotly.graph_objects as go

    from effscope.report.figures import FEASIBLE, finish_figure, integer_ticks, rounded

    hv = ins.hypervolume
    assert hv is not None
    fig = go.Figure(
        go.Scatter(
            x=hv.trials,
            y=rounded(hv.values),
            mode="lines+markers",
            line={"shape": "hv", "color": FEASIBLE},
            name="hypervolume",
            hovertemplate="after trial %{x}: %{y:.4g}<extra></extra>",
        )
    )
    return finish_figure(
        fig,
        380,
        xaxis={"title": {"text": "trial number"}, **integer_ticks(hv.trials)},
        yaxis={"title": {"text": f"hypervolume ({hv.unit})"}, "rangemode": "tozero"},
        showlegend=False,
    )


def insight_html(ins: Insight) -> str:
    """Knob importance, parallel coordinates and the hypervolume history, each where it has data."""
    from effscope.report.figures import figure_html

    parts = []
    if ins.importance:
        parts.append(
            f"<h3>Knob importance (from {ins.n_designs} measured designs)</h3>"
            + figure_html(importance_figure(ins), "fig-importance")
            + notes_html(ins.notes)
        )
    if ins.axes:
        parts.append(
            "<h3>Parallel coordinates</h3>"
            + figure_html(parallel_figure(ins), "fig-parallel", phone=parallel_figure(ins, phone=True))
            + notes_html(ins.parallel_notes)
        )
    if ins.hypervolume is not None:
        parts.append(
            "<h3>Hypervolume history</h3>"
            + f'<p class="hint">{html.escape(ins.hypervolume.reference_text)}.</p>'
            + figure_html(hypervolume_figure(ins), "fig-hypervolume")
        )
    return "".join(parts)


SECTION = Section("insight", "Search insight", insight_section, insight_html, after="breakdown")
