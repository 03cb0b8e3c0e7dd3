"""Section "front": quality against measured latency: every design, the Pareto front, presets, budget lines and
the front within each budget."""

from __future__ import annotations

import dataclasses
import html
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from effscope.report.data import (
    LATENCY,
    LATENCY_UNCERTAIN,
    OVER_WHEN_REMEASURED,
    PREDICTED_INFEASIBLE,
    QUALITY,
    Budget,
    Marker,
    Objective,
    Point,
    Source,
    Table,
    budget_slices,
    budgets_of,
    constraint_lines,
    dedupe_measurements,
    design_table,
    direction_sign,
    finite,
    fresh_measurement_text,
    front_statistic,
    hover,
    knobs_short,
    latency_budgets,
    least_violating,
    number_name,
    objectives_of,
    pareto_front,
    quality_of,
    quantity,
    study_timing,
    timing_columns,
    varying_knobs,
)
from effscope.report.markup import notes_html, table_html
from effscope.report.sections._section import Section

if TYPE_CHECKING:
    import plotly.graph_objects as go

__all__ = [
    "Front",
    "SECTION",
    "front_figure",
    "front_html",
    "front_section",
    "published_table",
    "slice_table",
    "where_published",
]


@dataclass
class Front:
    x_statistic: str  # the latency statistic on x: the one the budgets limit (latency_ms_p90), else p50
    x_label: str
    y_label: str
    direction: str
    groups: dict[str, list[Marker]]  # "infeasible", "feasible", "best", "least violating"
    front_line: list[tuple[float, float]]
    presets: list[Marker]
    budget_lines: list[tuple[float, str]]
    slices: Table
    slices_hint: str | None  # how to read the per-budget table when it has several budgets
    least_violating: Table | None
    notes: list[str]
    over_when_remeasured: list[Marker]  # feasible by the search's measurement, over budget in a fresh process
    published: Table | None  # every published design, where the predictor rejected one (the figure cannot show it)


def front_section(source: Source) -> Front | None:
    """Quality vs measured latency: groups, the front, presets, budget lines and the per-budget table.

    x is the statistic the latency budgets limit (`front_statistic`), so the picture, the budget lines and the
    per-budget table judge a design by one number.
    """
    quality = quality_of(source)
    if source.kind != "study" or quality is None:
        return None
    budgets = budgets_of(source)
    stat = front_statistic(budgets)
    pts = [p for p in source.points if p.get(QUALITY) is not None and p.get(stat) is not None]
    if not pts:
        return None
    direction = quality.direction
    feasible = [p for p in dedupe_measurements(pts) if p.feasible and p.measured]
    best = pareto_front(feasible, direction, x=stat)
    best_ids = {p.id for p in best}
    name = number_name(stat)
    x_label = _x_label(source, stat)
    if latency_budgets(budgets):
        notes = [f"x is the measured {name}, the statistic the budgets limit: a design left of a budget line meets it."]
    else:
        notes = [f"x is {x_label}; the study sets no latency budget."]
    if stat != LATENCY:
        notes[0] += f" The front is the best quality at each {name}; the search itself minimizes the median (p50)."
    groups: dict[str, list[Marker]] = {
        "infeasible": [_marker(p, stat, QUALITY, quality, budgets) for p in pts if not (p.feasible and p.measured)],
        "feasible": [_marker(p, stat, QUALITY, quality, budgets) for p in feasible if p.id not in best_ids],
        "best": [_marker(p, stat, QUALITY, quality, budgets) for p in best],
    }
    lv_table = None
    if not feasible:
        lv = least_violating(source.points, direction=direction)
        groups["least violating"] = [
            _marker(p, stat, QUALITY, quality, budgets)
            for p in lv
            if p.get(QUALITY) is not None and p.get(stat) is not None
        ]
        lv_table = design_table(lv, source.points, quality, with_violation=True, timing=study_timing(source))
        notes.insert(
            0, f"No design met every budget. The {len(lv)} least-violating designs are highlighted and listed."
        )
    left_out: dict[str, int] = {}
    for p in source.points:
        if p.get(QUALITY) is None or p.get(stat) is None:
            left_out[p.status] = left_out.get(p.status, 0) + 1
    if left_out:
        counts = ", ".join(f"{k}: {v}" for k, v in sorted(left_out.items()))
        notes.append(
            f"{sum(left_out.values())} design(s) lack a quality or {name} value and are not plotted ({counts})."
        )
    lines = [(b.limit, f"budget: {b.text}") for b in latency_budgets(budgets) if b.statistic == stat]
    presets = [_marker(p, stat, QUALITY, quality, budgets) for p in pts if p.preset]
    over = [p for p in feasible if p.over_budget_when_remeasured]
    if over:
        notes.append(
            "Over the budget when re-measured in a fresh process after the search, so feasible by the search's "
            "measurement only (ringed and marked below): "
            + ", ".join(f"{p.id} ({fresh_measurement_text(p.fresh_measurement)})" for p in over)
            + "."
        )
    margin = finite((source.attrs.get("predictor") or {}).get("margin"))
    published = published_table(source.points, best, stat, budgets, quality, margin)
    if published is not None:
        notes.append(
            "Published designs the latency predictor rejected were never measured, so they are not plotted; the "
            "table of published designs below gives their predicted latency."
        )
    if any(m.x_interval for ms in groups.values() for m in ms):
        notes.append(
            f"The horizontal bar through a design is the 95 % confidence interval of its {name}. A design whose "
            "interval contains a budget is measured again; if it still does, it is flagged latency-uncertain: "
            "feasible or not by chance."
        )
    return Front(
        x_statistic=stat,
        x_label=x_label,
        y_label=quality.display,
        direction=direction,
        groups={k: v for k, v in groups.items() if v},
        front_line=[(p.get(stat), p.get(QUALITY)) for p in best],
        presets=presets,
        budget_lines=lines,
        slices=slice_table(source.points, budgets, quality, study_timing(source)),
        slices_hint=(
            "Each design is listed once, under the tightest budget it meets; the front within a looser budget is "
            "its own rows plus all the rows above it."
        )
        if len(latency_budgets(budgets)) > 1
        else None,
        least_violating=lv_table,
        notes=notes,
        # a ring over the design's own marker, which already draws its interval
        over_when_remeasured=[
            dataclasses.replace(_marker(p, stat, QUALITY, quality, budgets), x_interval=None) for p in over
        ],
        published=published,
    )


def _x_label(source: Source, stat: str) -> str:
    """The front's x title: the budgets' statistic, the median, or, for a study that does not describe its second
    objective, that objective's own (honest) label."""
    if stat != LATENCY:
        return f"{number_name(stat)} (ms, measured; the budgets' statistic)"
    objs = objectives_of(source)
    if not source.attrs.get("objectives") and len(objs) > 1:
        return objs[1].label
    return "median latency p50 (ms, measured)"


def _marker(
    p: Point, x: str, y: str, quality: Objective | None, budgets: Sequence[Budget] = (), *, x_scale: float = 1.0
) -> Marker:
    xv, yv = p.get(x), p.get(y)
    lo, hi = p.get(f"{x}_lo"), p.get(f"{x}_hi")
    interval = (lo / x_scale, hi / x_scale) if lo is not None and hi is not None else None
    lines = hover(p, quality, budgets)
    if lo is not None and hi is not None:  # the bar the figure draws, in numbers
        lines.append((f"95 % interval of {number_name(x)}", f"{lo:.4g} to {hi:.4g} ms"))
    return Marker(p.id, xv / x_scale if xv is not None else None, yv, lines, interval)


def slice_table(
    points: Sequence[Point], budgets: Sequence[Budget], quality: Objective, timing: str | None = None
) -> Table:
    """The fronts per budget, tightest budget first, each design once: under the tightest budget whose front it is
    on. A looser budget's front is its own rows plus the tighter budgets' rows; a budget nothing fits says so."""
    names = varying_knobs(points)
    timing = timing_columns(points, timing)
    columns = ["tightest budget met", "designs within", "design", quality.display, *timing.values(), "knobs"]
    rows: list[list[Any]] = []
    listed: set[str] = set()
    for s in budget_slices(points, budgets, quality.direction):
        label = s.budget.text if s.budget else "no budget (all feasible designs)"
        if not s.front:
            rows.append([label, s.n_within, "no design fits", None, None, None, ""])
        new = [p for p in s.front if p.id not in listed]
        if s.front and not new:
            rows.append([label, s.n_within, "no design beyond the rows above", None, None, None, ""])
        ranked = sorted(new, key=lambda p: -direction_sign(quality.direction) * p.get(QUALITY))
        for i, p in enumerate(ranked):
            shown = [label, s.n_within] if i == 0 else ["", ""]
            marks = [OVER_WHEN_REMEASURED] if p.over_budget_when_remeasured else []
            marks += [LATENCY_UNCERTAIN] if LATENCY_UNCERTAIN in p.flags else []  # it meets the budget by chance
            design = f"{p.id} ({'; '.join(marks)})" if marks else p.id
            rows.append([*shown, design, p.get(QUALITY), *(p.get(k) for k in timing), knobs_short(p, names)])
        listed.update(p.id for p in s.front)
    return Table(columns, rows)


def published_table(
    points: Sequence[Point],
    best: Sequence[Point],
    stat: str,
    budgets: Sequence[Budget],
    quality: Objective,
    margin: float | None = None,
) -> Table | None:
    """Every published design (preset) and where it sits, in trial order; None unless the latency predictor rejected
    one: such a design was never measured, so the figure cannot show it, and it is listed with its predicted latency
    only, never as measured."""
    presets = [p for p in points if p.preset]
    if not any(p.status == PREDICTED_INFEASIBLE for p in presets):
        return None
    name = number_name(stat)
    columns = ["published design", quality.display, f"{name} (ms, measured)", f"predicted {name} (ms)", "where it sits"]
    rows = [
        [
            p.id,
            p.get(QUALITY),
            p.get(stat),
            p.get("predicted_latency_ms"),
            where_published(p, best, stat, budgets, quality, margin),
        ]
        for p in presets
    ]
    return Table(columns, rows)


def where_published(
    p: Point, best: Sequence[Point], stat: str, budgets: Sequence[Budget], quality: Objective, margin: float | None
) -> str:
    """Where a published design sits: predicted infeasible, on the front, dominated, or why it is infeasible."""
    if p.status == PREDICTED_INFEASIBLE:
        limits = [b for b in latency_budgets(budgets) if b.statistic == stat]
        over = f"the budget {quantity(limits[-1].limit, limits[-1].unit)}" if limits else "the budget"
        over += f" × margin {margin:.3g}" if margin is not None else ""
        predicted = p.get("predicted_latency_ms")
        said = f"predicted {predicted:.4g} ms, over {over}" if predicted is not None else f"predicted over {over}"
        return f"predicted infeasible (not measured): {said}"
    if p.id in {b.id for b in best}:
        return "on the front" + (f"; {OVER_WHEN_REMEASURED}" if p.over_budget_when_remeasured else "")
    if p.feasible and p.measured:
        sign = direction_sign(quality.direction)
        by = [b.id for b in best if b.get(stat) <= p.get(stat) and sign * (b.get(QUALITY) - p.get(QUALITY)) >= 0]
        return "feasible, dominated" + (f" by {by[0]}" if by else "")
    if p.aborted:
        return "aborted over the budget (partial timings)"
    if not p.timed:
        return p.status + (f": {p.reason}" if p.reason else "")
    missed = dataclasses.replace(p, constraints={k: v for k, v in p.constraints.items() if v > 0})
    return "infeasible: " + ("; ".join(text for _, text in constraint_lines(missed, budgets)) or p.status)


# ------------------------------------------------------------------ drawing (plotly loads here, not on import)


def front_figure(f: Front) -> go.Figure:
    """Quality vs measured latency: infeasible, feasible, best; the front as a staircase; presets; budgets."""
    import plotly.graph_objects as go

    from effscope.report.figures import (
        BEST,
        BUDGET,
        FEASIBLE,
        GREY,
        axis_layout,
        finish_figure,
        log_worthy,
        marker_trace,
        rounded,
    )

    fig = go.Figure()
    styles = {
        "infeasible": ("infeasible (over a budget or invalid)", {"color": GREY, "symbol": "x", "size": 8}),
        "feasible": ("feasible", {"color": FEASIBLE, "symbol": "circle", "size": 9, "opacity": 0.8}),
        "least violating": (
            "least violating (nothing is feasible)",
            {"color": BEST, "symbol": "diamond-open", "size": 13, "line": {"width": 2}},
        ),
        "best": (
            f"best: the Pareto front on {number_name(f.x_statistic)}",
            {"color": BEST, "symbol": "diamond", "size": 11},
        ),
    }
    if f.front_line:
        xs, ys = zip(*f.front_line, strict=True)
        fig.add_trace(
            go.Scatter(
                x=rounded(xs),
                y=rounded(ys),
                mode="lines",
                line={"color": BEST, "width": 1.5, "shape": "hv", "dash": "dot"},
                hoverinfo="skip",
                showlegend=False,
            )
        )
    for group, (name, style) in styles.items():
        if f.groups.get(group):
            fig.add_trace(marker_trace(f.groups[group], name, **style))
    if f.over_when_remeasured:  # a ring over the design's own marker: it stays in its group, marked
        fig.add_trace(
            marker_trace(
                f.over_when_remeasured,
                OVER_WHEN_REMEASURED + " (fresh process)",
                symbol="circle-open",
                size=22,
                color=BUDGET,  # the budget lines' colour: this design misses one
                line={"width": 2.5},
            )
        )
    xs = [m.x for ms in f.groups.values() for m in ms] + [b for b, _ in f.budget_lines]
    log_x = log_worthy(xs)
    if f.presets:
        ordered = sorted(f.presets, key=lambda m: m.x or 0.0)
        trace = marker_trace(
            ordered, "published presets", symbol="star-open", size=17, color="#000", line={"width": 1.5}
        )
        trace.update(
            mode="markers+text",
            text=[_preset_name(m) for m in ordered],
            textposition=_label_sides(ordered, f.groups, xs, log_x),
            textfont={"size": 12},
            cliponaxis=False,
        )
        fig.add_trace(trace)
    for i, (limit, label) in enumerate(f.budget_lines):
        fig.add_vline(x=limit, line={"color": BUDGET, "dash": "dash", "width": 1.5})
        fig.add_annotation(
            x=math.log10(limit) if log_x else limit,  # annotations on a log axis take log10 positions
            y=1.0 + 0.07 * i,
            yref="paper",
            text=html.escape(label),
            showarrow=False,
            xanchor="right",
            yanchor="bottom",
            font={"color": BUDGET, "size": 12},
        )
    return finish_figure(
        fig,
        560,
        # a latency is never negative: a preset's text label must not stretch the axis below 0 on a narrow page
        xaxis=axis_layout(f.x_label, xs, rangemode="nonnegative"),
        yaxis=axis_layout(f.y_label, [m.y for ms in f.groups.values() for m in ms]),
        margin={"t": 40 + 24 * len(f.budget_lines)},
    )


# The plot area a desktop report gives the front, in px, and the size of a label and of a marker: enough to tell which
# sides of a star are free, not a layout engine.
PLOT_PX = (800, 440)
CHAR_PX, LINE_PX, STAR_PX, MARKER_PX = 7.0, 16.0, 10.0, 5.0
# A label's sides in the order they are tried: above and below read best, then beside, then the corners.
LABEL_SIDES = (
    "top center",
    "bottom center",
    "middle right",
    "middle left",
    "top right",
    "bottom right",
    "top left",
    "bottom left",
)


def _label_sides(
    presets: Sequence[Marker], groups: dict[str, list[Marker]], xs: Sequence[float | None], log_x: bool
) -> list[str]:
    """Where each preset's label goes: the first side where it covers no other label, star or design and stays
    inside the plot; where no side is free (a cluster of presets), the side that covers least."""
    from effscope.report.figures import log_worthy

    others = [m for ms in groups.values() for m in ms]
    ys = [m.y for m in others] + [m.y for m in presets]
    to_x = _to_fraction(xs, log_x, from_zero=True)
    to_y = _to_fraction(ys, log_worthy(ys), from_zero=False)
    width, height = PLOT_PX

    def at(m: Marker) -> tuple[float, float]:  # pixels from the plot's top left
        return to_x(m.x) * width, (1 - to_y(m.y)) * height

    def around(m: Marker, r: float) -> tuple[float, float, float, float]:
        x, y = at(m)
        return x - r, y - r, x + r, y + r

    taken = [around(m, STAR_PX) for m in presets] + [around(m, MARKER_PX) for m in others]
    sides = []
    for m in presets:
        x, y = at(m)
        w = len(_preset_name(m)) * CHAR_PX
        costs = []
        for side in LABEL_SIDES:
            box = _label_box(side, x, y, w)
            cover = sum(_overlap(box, other) for other in taken)
            outside = max(0.0, -box[0]) + max(0.0, box[2] - width) + max(0.0, -box[1]) + max(0.0, box[3] - height)
            costs.append((cover + LINE_PX * outside, side, box))
            if costs[-1][0] == 0:
                break
        _, side, box = min(costs, key=lambda c: c[0])  # the first of equals: the order above
        taken.append(box)
        sides.append(side)
    return sides


def _to_fraction(values: Sequence[float | None], log: bool, *, from_zero: bool) -> Callable[[float | None], float]:
    """Where a value sits along an axis drawn over `values`, from 0 to 1 (a linear latency axis starts at 0)."""
    f = math.log10 if log else float
    vs = [f(v) for v in values if v is not None and (v > 0 or not log)]
    if not vs:
        return lambda v: 0.5
    lo, hi = (min(0.0, min(vs)) if from_zero and not log else min(vs)), max(vs)
    span = hi - lo or 1.0
    return lambda v: 0.5 if v is None or (log and v <= 0) else (f(v) - lo) / span


def _label_box(side: str, x: float, y: float, w: float) -> tuple[float, float, float, float]:
    """The box (left, top, right, bottom) a label of width w takes on that side of a star at (x, y)."""
    vertical, horizontal = side.split()
    top = {"top": y - STAR_PX - LINE_PX, "bottom": y + STAR_PX, "middle": y - LINE_PX / 2}[vertical]
    left = {"center": x - w / 2, "right": x + STAR_PX, "left": x - STAR_PX - w}[horizontal]
    return left, top, left + w, top + LINE_PX


def _overlap(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    """The area two boxes share."""
    return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))


def _preset_name(m: Marker) -> str:
    return next((str(v) for k, v in m.hover if k == "preset"), m.id)


def front_html(f: Front) -> str:
    """Notes, the figure, the front per budget and, when nothing is feasible, the least-violating designs."""
    from effscope.report.figures import figure_html

    parts = [notes_html(f.notes), figure_html(front_figure(f), "fig-front")]
    hint = f'<p class="hint">{html.escape(f.slices_hint)}</p>' if f.slices_hint else ""
    parts.append("<h3>The front per budget</h3>" + hint + table_html(f.slices))
    if f.least_violating is not None:
        parts.append("<h3>Least-violating designs</h3>" + table_html(f.least_violating))
    if f.published is not None:
        parts.append("<h3>Published designs</h3>" + table_html(f.published))
    return "".join(parts)


SECTION = Section("front", "Pareto front: quality vs measured latency", front_section, front_html, after="summary")
