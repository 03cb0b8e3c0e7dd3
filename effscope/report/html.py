"""Render a report's data (data.py) into one HTML document with plotly.

plotly.js goes into the page once ("inline", offline, about 4.8 MB), or into one shared plotly.min.js next to the
reports ("directory"), or comes from the CDN ("cdn", only when asked: a CDN page is blank offline). Every figure is
SVG (no WebGL), so a report renders in any browser, headless ones included. No optuna or torch here.
"""

from __future__ import annotations

import datetime as _dt
import html
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from effscope._version import __version__
from effscope.report.data import (
    Breakdown,
    Front,
    Gap,
    Insight,
    Marker,
    ReportData,
    ReportError,
    Scaling,
    Summary,
    Table,
    Trust,
)
from effscope.report.sections import REGISTERED
from effscope.units import si

__all__ = ["PLOTLYJS_FILE", "PLOTLYJS_MODES", "render", "write_plotlyjs"]

PLOTLYJS_MODES = ("inline", "directory", "cdn")
PLOTLYJS_FILE = "plotly.min.js"

# Okabe-Ito (colour-blind safe), then a few more distinct hues for many families.
PALETTE = (
    "#0072B2",
    "#E69F00",
    "#009E73",
    "#CC79A7",
    "#56B4E9",
    "#D55E00",
    "#000000",
    "#999933",
    "#882255",
    "#44AA99",
    "#117733",
    "#AA4499",
)
# Parts of a module: many distinct hues (Okabe-Ito, then Paul Tol's muted and light schemes).
PARTS_PALETTE = (
    *PALETTE[:6],
    "#332288",
    "#88CCEE",
    "#44AA99",
    "#117733",
    "#999933",
    "#DDCC77",
    "#CC6677",
    "#882255",
    "#AA4499",
    "#77AADD",
    "#EE8866",
    "#BBCC33",
)
GREY = "#b8b8b8"
BEST = "#D55E00"
FEASIBLE = "#0072B2"
BUDGET = "#CC79A7"
FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, 'DejaVu Sans', sans-serif"

_AXIS = {"showgrid": True, "gridcolor": "#e6e6e6", "zeroline": False, "linecolor": "#888", "ticks": "outside"}
_AXIS["automargin"] = True
TEMPLATE = go.layout.Template(
    layout={
        "font": {"family": FONT, "size": 13, "color": "#222"},
        "paper_bgcolor": "white",
        "plot_bgcolor": "white",
        "colorway": PALETTE,
        "xaxis": _AXIS,
        "yaxis": _AXIS,
        "hoverlabel": {"align": "left", "font": {"size": 12}},
        # Legends sit right of the plot: below it they collide with the x-axis title.
        "legend": {"orientation": "v", "yanchor": "top", "y": 1, "xanchor": "left", "x": 1.02, "font": {"size": 12}},
        "margin": {"l": 70, "r": 30, "t": 40, "b": 40},
    }
)
CONFIG = {"displaylogo": False, "responsive": True}


# -------------------------------------------------------------------------------------------------- helpers


def _r(v: Any) -> Any:
    """Round a number to 5 significant digits (smaller pages, same picture)."""
    if isinstance(v, float) and math.isfinite(v):
        return float(f"{v:.5g}")
    return v


def _rs(values: Sequence[Any]) -> list[Any]:
    return [_r(v) for v in values]


def cell(v: Any) -> str:
    """A table cell or hover value: '-' for missing, thousands separators, 4 significant digits."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if abs(v) >= 1e12 or (v != 0 and abs(v) < 1e-3):
            return f"{v:.3e}"
        if abs(v) >= 1e4:
            return f"{v:,.0f}"
        return f"{v:.4g}"
    return str(v)


def _hover_data(ms: Sequence[Marker]) -> tuple[list[list[str]], str]:
    """Hover as customdata + one template: labels are written once per trace, not once per point (smaller pages).

    A line a design lacks shows as '-'; the first line (the design's name) is the title.
    """
    labels: list[str] = []
    for m in ms:
        labels += [k for k, _ in m.hover[1:] if k not in labels]
    rows = []
    for m in ms:
        values = dict(m.hover[1:])
        rows.append(
            [html.escape(cell(m.hover[0][1] if m.hover else m.id))] + [html.escape(cell(values.get(k))) for k in labels]
        )
    lines = "".join(f"<br>{html.escape(k)}: %{{customdata[{i + 1}]}}" for i, k in enumerate(labels))
    return rows, "<b>%{customdata[0]}</b>" + lines + "<extra></extra>"


def _log_worthy(values: Sequence[float | None]) -> bool:
    vs = [v for v in values if v is not None and v > 0]
    return len(vs) > 1 and max(vs) / min(vs) > 20


def tick_text(v: float) -> str:
    """A tick's full value: 0.5, 2, 100, 20,000 (never plotly's bare '2' or '5' between decades)."""
    return f"{v:,.12g}"


def log_ticks(values: Sequence[float | None], fmt: Callable[[float], str] = tick_text) -> dict[str, Any]:
    """Ticks for a log axis, each labelled with its full value by `fmt`: 1-2-5 per decade, decades only past 1000x,
    more per decade under 20x; none under 3x (plotly labels such a short log axis in full itself).

    The ticks reach one step past the data on both sides, so the axis' padding still has a labelled tick.
    """
    vs = [v for v in values if v is not None and v > 0]
    if not vs or max(vs) / min(vs) < 3:
        return {}
    lo, hi = min(vs), max(vs)
    steps = (1,) if hi / lo > 1000 else (1, 2, 5) if hi / lo > 20 else (1, 1.5, 2, 3, 4, 5, 7)
    reach = 10.0 if steps == (1,) else 2.5
    first, last = math.floor(math.log10(lo / reach)), math.ceil(math.log10(hi * reach))
    vals = [float(f"{m}e{e}") for e in range(first, last + 1) for m in steps]
    vals = [v for v in vals if lo / reach <= v <= hi * reach]
    return {"tickvals": vals, "ticktext": [fmt(v) for v in vals]}


def _axis(
    title: str, values: Sequence[float | None], fmt: Callable[[float], str] = tick_text, **more: Any
) -> dict[str, Any]:
    """An axis with its title; logarithmic when the values span more than 20x, every tick labelled in full by `fmt`."""
    axis: dict[str, Any] = {"title": {"text": title}, **more}
    if _log_worthy(values):
        axis["type"] = "log"
        axis.update(log_ticks(values, fmt))
    return axis


def _markers(ms: Sequence[Marker], name: str, **marker: Any) -> go.Scatter:
    customdata, template = _hover_data(ms)
    return go.Scatter(
        x=_rs([m.x for m in ms]),
        y=_rs([m.y for m in ms]),
        mode="markers",
        name=name,
        marker=marker,
        customdata=customdata,
        hovertemplate=template,
        error_x=_interval_bars(ms, marker.get("color")),
    )


def _interval_bars(ms: Sequence[Marker], color: str | None) -> dict[str, Any] | None:
    """Each marker's 95 % interval of x as a horizontal bar (none where it was not measured)."""
    if not any(m.x_interval for m in ms):
        return None
    below = [m.x - m.x_interval[0] if m.x_interval and m.x is not None else None for m in ms]
    above = [m.x_interval[1] - m.x if m.x_interval and m.x is not None else None for m in ms]
    return {
        "type": "data",
        "symmetric": False,
        "array": _rs(above),
        "arrayminus": _rs(below),
        "width": 0,
        "thickness": 1,
        "color": color,
    }


def _points(
    ms: Sequence[Marker], name: str, marker: dict[str, Any], x_label: str, y_label: str, **trace: Any
) -> go.Scatter:
    """Markers whose hover is their name and the two plotted numbers (compact: no per-point labels)."""
    template = f"<b>%{{text}}</b><br>{html.escape(x_label)}: %{{x:.4g}}<br>{html.escape(y_label)}: %{{y:.4g}}"
    return go.Scatter(
        x=_rs([m.x for m in ms]),
        y=_rs([m.y for m in ms]),
        mode="markers",
        name=name,
        marker=marker,
        text=[html.escape(m.id) for m in ms],
        hovertemplate=template + "<extra>%{fullData.name}</extra>",
        **trace,
    )


def _finish(fig: go.Figure, height: int, **layout: Any) -> go.Figure:
    """Template and height; a legend only where it tells two or more things apart (unless `showlegend` says)."""
    entries = {t.legendgroup or t.name for t in fig.data if t.showlegend is not False and t.name}
    layout.setdefault("showlegend", len(entries) > 1)
    fig.update_layout(template=TEMPLATE, height=height, **layout)
    return fig


# -------------------------------------------------------------------------------------------------- figures


def front_figure(f: Front) -> go.Figure:
    """Quality vs measured latency: infeasible, feasible, best; the front as a staircase; presets; budgets."""
    fig = go.Figure()
    styles = {
        "infeasible": ("infeasible (over a budget or invalid)", {"color": GREY, "symbol": "x", "size": 8}),
        "feasible": ("feasible", {"color": FEASIBLE, "symbol": "circle", "size": 9, "opacity": 0.8}),
        "least violating": (
            "least violating (nothing is feasible)",
            {"color": BEST, "symbol": "diamond-open", "size": 13, "line": {"width": 2}},
        ),
        "best": ("best: the Pareto front", {"color": BEST, "symbol": "diamond", "size": 11}),
    }
    if f.front_line:
        xs, ys = zip(*f.front_line, strict=True)
        fig.add_trace(
            go.Scatter(
                x=_rs(xs),
                y=_rs(ys),
                mode="lines",
                line={"color": BEST, "width": 1.5, "shape": "hv", "dash": "dot"},
                hoverinfo="skip",
                showlegend=False,
            )
        )
    for group, (name, style) in styles.items():
        if f.groups.get(group):
            fig.add_trace(_markers(f.groups[group], name, **style))
    xs = [m.x for ms in f.groups.values() for m in ms] + [b for b, _ in f.budget_lines]
    log_x = _log_worthy(xs)
    if f.presets:
        ordered = sorted(f.presets, key=lambda m: m.x or 0.0)
        trace = _markers(ordered, "published presets", symbol="star-open", size=17, color="#000", line={"width": 1.5})
        trace.update(
            mode="markers+text",
            text=[_preset_name(m) for m in ordered],
            textposition=[_label_side(m.x, xs, log_x, i) for i, m in enumerate(ordered)],
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
    return _finish(
        fig,
        560,
        xaxis=_axis(f.x_label, xs),
        yaxis=_axis(f.y_label, [m.y for ms in f.groups.values() for m in ms]),
        margin={"t": 40 + 24 * len(f.budget_lines)},
    )


def _label_side(x: float | None, xs: Sequence[float | None], log: bool, i: int) -> str:
    """Where a preset's label goes: away from the plot's left/right edge, alternating above and below."""
    vs = [v for v in xs if v is not None and (v > 0 or not log)]
    if x is None or not vs or max(vs) == min(vs):
        return "top center"
    f = math.log if log else float
    where = (f(x) - f(min(vs))) / (f(max(vs)) - f(min(vs)))
    vertical = "top" if i % 2 == 0 else "bottom"
    return f"{vertical} {'left' if where > 0.75 else 'right' if where < 0.25 else 'center'}"


def _preset_name(m: Marker) -> str:
    return next((str(v) for k, v in m.hover if k == "preset"), m.id)


def gap_figure(g: Gap) -> go.Figure:
    """MACs vs measured latency, one colour per family; throughput beside it (same MACs axis) when batch > 1."""
    h = g.headline
    single = g.series[0].family if len(g.series) == 1 else None  # one family: named in the title, no legend
    titles = [
        "latency vs MACs" + (f" ({single})" if single else "") + ": "
        f"Spearman ρ = {cell(h.get('Spearman ρ (MACs, latency)'))}, "
        f"Kendall τ = {cell(h.get('Kendall τ (MACs, latency)'))} (n = {h.get('n')})"
    ]
    if g.throughput:
        titles.append(
            f"throughput vs MACs: Spearman ρ = {cell(h.get('Spearman ρ (MACs, throughput)'))}, "
            f"Kendall τ = {cell(h.get('Kendall τ (MACs, throughput)'))}"
        )
    fig = make_subplots(rows=1, cols=len(titles), subplot_titles=titles, horizontal_spacing=0.1)
    for i, s in enumerate(g.series):
        color = PALETTE[i % len(PALETTE)]
        symbols = ["diamond" if k == "model" else "circle" for k in s.kinds]
        marker = {"color": color, "size": 10, "symbol": symbols if len(set(symbols)) > 1 else symbols[0]}
        fig.add_trace(
            _points(s.markers, s.family, marker, g.x_label, "latency p50 (ms)", legendgroup=s.family), row=1, col=1
        )
        keep = [j for j, t in enumerate(s.throughput) if t is not None]
        if g.throughput and keep:
            tp = [Marker(s.markers[j].id, s.markers[j].x, s.throughput[j], []) for j in keep]
            if len(set(symbols)) > 1:
                marker = {**marker, "symbol": [symbols[j] for j in keep]}
            right = _points(tp, s.family, marker, g.x_label, "throughput (img/s)", legendgroup=s.family)
            right.update(showlegend=False)
            fig.add_trace(right, row=1, col=2)
    macs = [m.x for s in g.series for m in s.markers]
    lat = [m.y for s in g.series for m in s.markers]
    fig.update_xaxes(**_axis(g.x_label, macs, fmt=lambda v: si(v * g.x_scale)))
    fig.update_xaxes(matches="x")  # both panels show the same MACs range
    fig.update_yaxes(**_axis("median latency p50 (ms, measured)", lat), row=1, col=1)
    if g.throughput:
        tps = [t for s in g.series for t in s.throughput]
        fig.update_yaxes(**_axis("throughput (images/s)", tps), row=1, col=2)
    fig.update_annotations(font={"size": 13})
    return _finish(fig, 500, legend={"title": {"text": "block family "}}, margin={"t": 60})


def scaling_figure(s: Scaling) -> go.Figure:
    """Latency and peak memory vs tokens on log-log axes, with the fitted exponent in each legend entry."""
    panels = [("latency vs input size", "median latency p50 (ms, measured)", "ms")]
    if s.memory_label is not None:
        panels.append(("peak memory vs input size", s.memory_label, "MiB"))
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[p[0] for p in panels], horizontal_spacing=0.1)
    ticks: dict[int, str] = {}
    for i, ser in enumerate(s.series):
        color = PALETTE[i % len(PALETTE)]
        slopes = []
        if ser.latency_slope is not None:
            slopes.append(f"latency ∝ N^{ser.latency_slope + 0.0:.2f}".replace("-0.00", "0.00"))
        if ser.memory_slope is not None:
            slopes.append(f"memory ∝ N^{ser.memory_slope + 0.0:.2f}".replace("-0.00", "0.00"))
        name = ser.name + (f" ({', '.join(slopes)})" if slopes else "")
        hover = [
            f"<b>{html.escape(ser.name)}</b><br>input: {sz} ({n:,} tokens)"
            for sz, n in zip(ser.sizes, ser.tokens, strict=True)
        ]
        for col, ys in ((1, ser.latency_ms), (2, ser.memory_mib))[: len(panels)]:
            unit = panels[col - 1][2]
            fig.add_trace(
                go.Scatter(
                    x=ser.tokens,
                    y=_rs(ys),
                    mode="lines+markers",
                    name=name,
                    legendgroup=ser.name,
                    showlegend=col == 1,
                    line={"color": color},
                    marker={"size": 8},
                    hovertext=[f"{h}<br>{cell(y)} {unit}" for h, y in zip(hover, ys, strict=True)],
                    hovertemplate="%{hovertext}<extra></extra>",
                ),
                row=1,
                col=col,
            )
        ticks.update({n: sz for n, sz in zip(ser.tokens, ser.sizes, strict=True)})
    tickvals = sorted(ticks)
    fig.update_xaxes(
        title_text=s.x_label,
        type="log",
        tickvals=tickvals,
        ticktext=[f"{n:,}<br>({ticks[n]})" for n in tickvals],
    )
    for col, (_, label, _) in enumerate(panels, 1):
        ys = [y for ser in s.series for y in (ser.latency_ms if col == 1 else ser.memory_mib)]
        fig.update_yaxes(title_text=label, type="log", **log_ticks(ys), row=1, col=col)
    if len(s.series) == 1:  # one series: its name and fitted exponents go above the panels, not into a legend
        title = fig.layout.annotations[0]
        title.text = f"{title.text} · {html.escape(fig.data[0].name)}"
    fig.update_annotations(font={"size": 13})
    return _finish(fig, 500, margin={"t": 60})


def breakdown_figure(b: Breakdown) -> go.Figure:
    """100 % stacked bars: each design's share of MACs per part, and its share of measured time when known."""
    rows: list[tuple[str, dict[str, float | None]]] = []
    parts: list[str] = []
    for item in b.items:
        parts += [p for p in item.parts if p not in parts]
        rows.append((f"{item.design} · MACs", dict(zip(item.parts, item.macs_share, strict=True))))
        if item.time_share:
            rows.append((f"{item.design} · time", dict(zip(item.parts, item.time_share, strict=True))))
    labels = [r for r, _ in rows][::-1]  # first design on top
    shares = [s for _, s in rows][::-1]
    fig = go.Figure()
    colors = iter(PARTS_PALETTE)
    for part in parts:
        xs = [s.get(part) for s in shares]
        fig.add_trace(
            go.Bar(
                y=labels,
                x=_rs(xs),
                name=part,
                orientation="h",
                marker={"color": GREY if part.startswith("other") else next(colors, GREY)},
                text=[f"{x:.0f}%" if x is not None and x >= 6 else "" for x in xs],
                textposition="inside",
                insidetextanchor="middle",
                hovertemplate=f"{html.escape(part)}: %{{x:.1f}} % of %{{y}}<extra></extra>",
            )
        )
    return _finish(
        fig,
        max(200, 110 + 44 * len(labels), 60 + 22 * len(parts)),
        barmode="stack",
        xaxis={"title": {"text": "share of the design (%)"}, "range": [0, 100]},
        yaxis={"automargin": True},
        legend={"title": {"text": "part"}, "traceorder": "normal"},
    )


def importance_figure(ins: Insight) -> go.Figure:
    fig = go.Figure()
    for i, imp in enumerate(ins.importance):
        fig.add_trace(
            go.Bar(
                y=imp.knobs,
                x=_rs(imp.eta2),
                name=imp.objective,
                orientation="h",
                marker={"color": PALETTE[i % len(PALETTE)]},
                hovertemplate="%{y}: η² = %{x:.3f}<extra>" + html.escape(imp.objective) + "</extra>",
            )
        )
    knobs = {k for imp in ins.importance for k in imp.knobs}
    return _finish(
        fig,
        max(260, 150 + 34 * len(knobs) * max(1, len(ins.importance))),
        barmode="group",
        xaxis={
            "title": {"text": "η² (share of the objective's variance explained by the knob alone)"},
            "range": [0, 1],
        },
        yaxis={"autorange": "reversed"},
    )


def parallel_figure(ins: Insight) -> go.Figure:
    """Parallel coordinates drawn in SVG (plotly's parcoords needs WebGL): one polyline per design."""
    fig = go.Figure()
    n = len(ins.axes)
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
        fig.add_trace(
            go.Scatter(
                x=xs, y=ys, mode="lines", name=name, line=line, opacity=0.85, hoverinfo="skip", legendgroup=group
            )
        )
        # hover at the last axis (latency) names the design; one point per design keeps the page small
        ends = [ln for ln in lines if ln.ys and ln.ys[-1] is not None]
        fig.add_trace(
            go.Scatter(
                x=[n - 1] * len(ends),
                y=[round(ln.ys[-1], 4) for ln in ends],
                mode="markers",
                marker={"color": line["color"], "size": 5},
                text=[html.escape(ln.id) for ln in ends],
                hovertemplate="%{text}<extra></extra>",
                legendgroup=group,
                showlegend=False,
            )
        )
    for i, axis in enumerate(ins.axes):
        fig.add_shape(type="line", x0=i, x1=i, y0=0, y1=1, line={"color": "#555", "width": 1}, layer="below")
        for pos, text in axis.ticks:
            fig.add_annotation(
                x=i,
                y=pos,
                text=html.escape(text),
                showarrow=False,
                xanchor="left",
                xshift=4,
                font={"size": 11},
                bgcolor="rgba(255,255,255,0.75)",
            )
    return _finish(
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


def _integer_ticks(values: Sequence[int]) -> dict[str, Any]:
    """Whole-number ticks for counts (trial numbers, measurement order), at most about ten of them."""
    if not values:
        return {}
    return {"tick0": 0, "dtick": max(1, math.ceil((max(values) - min(values) + 1) / 10))}


def hypervolume_figure(ins: Insight) -> go.Figure:
    hv = ins.hypervolume
    assert hv is not None
    fig = go.Figure(
        go.Scatter(
            x=hv.trials,
            y=_rs(hv.values),
            mode="lines+markers",
            line={"shape": "hv", "color": FEASIBLE},
            name="hypervolume",
            hovertemplate="after trial %{x}: %{y:.4g}<extra></extra>",
        )
    )
    return _finish(
        fig,
        380,
        xaxis={"title": {"text": "trial number"}, **_integer_ticks(hv.trials)},
        yaxis={"title": {"text": "hypervolume (quality × ms)"}, "rangemode": "tozero"},
        showlegend=False,
    )


def iqr_figure(t: Trust) -> go.Figure:
    fig = go.Figure()
    for flagged, name, color in ((False, "no flags", FEASIBLE), (True, "flagged (see the table)", BEST)):
        ms = [
            Marker(m.id + (f" ({f})" if f else ""), m.x, m.y, [])
            for m, f in zip(t.iqr, t.iqr_flags, strict=True)
            if bool(f) == flagged
        ]
        if ms:
            fig.add_trace(_points(ms, name, {"color": color, "size": 9}, "latency p50 (ms)", "IQR / median (%)"))
    yaxis = _axis("latency IQR / median (%)", [m.y for m in t.iqr] + [5.0], fmt=lambda v: f"{tick_text(v)} %")
    fig.add_hline(y=5, line={"color": BUDGET, "dash": "dash"})
    fig.add_annotation(
        x=1, xref="paper", y=math.log10(5) if yaxis.get("type") == "log" else 5,
        text="protocol target: IQR/median ≤ 5 %", showarrow=False, xanchor="right", yanchor="bottom",
        font={"color": BUDGET, "size": 12},
    )  # fmt: skip
    return _finish(
        fig,
        420,
        xaxis=_axis("median latency p50 (ms, measured)", [m.x for m in t.iqr]),
        yaxis=yaxis,
        showlegend=any(t.iqr_flags),  # "flagged" needs saying even when every design is flagged
    )


def drift_figure(t: Trust) -> go.Figure:
    fig = go.Figure()
    for i, s in enumerate(t.drift):
        fig.add_trace(
            go.Scatter(
                x=s.order,
                y=_rs(s.ms),
                mode="lines+markers",
                name=s.name,
                line={"color": PALETTE[i % len(PALETTE)]},
                hovertext=[html.escape(x) for x in s.ids],
                hovertemplate="%{hovertext}<br>reference p50: %{y:.4g} ms<extra></extra>",
            )
        )
    return _finish(
        fig,
        380,
        xaxis={
            "title": {"text": "measurement order (n-th Record)"},
            **_integer_ticks([x for s in t.drift for x in s.order]),
        },
        yaxis={"title": {"text": "reference module p50 (ms)"}, "rangemode": "tozero"},
    )


def prediction_figure(t: Trust) -> go.Figure:
    p = t.prediction
    assert p is not None
    hi = max(p.measured + p.predicted) * 1.05
    fig = go.Figure()
    for factor, name, dash in (
        (1.0, "prediction = measurement", "solid"),
        (1.1, "±10 %", "dot"),
        (0.9, "±10 %", "dot"),
    ):
        fig.add_trace(
            go.Scatter(
                x=[0, hi],
                y=[0, hi * factor],
                mode="lines",
                name=name,
                line={"color": "#777", "dash": dash, "width": 1},
                hoverinfo="skip",
                showlegend=factor != 0.9,
            )
        )
    fig.add_trace(
        go.Scatter(
            x=_rs(p.measured),
            y=_rs(p.predicted),
            mode="markers",
            name="designs",
            marker={"color": FEASIBLE, "size": 9},
            hovertext=[html.escape(i) for i in p.ids],
            hovertemplate="%{hovertext}<br>measured %{x:.4g} ms, predicted %{y:.4g} ms<extra></extra>",
        )
    )
    return _finish(
        fig,
        440,
        xaxis={"title": {"text": f"measured latency ({p.statistic}, ms)"}, "range": [0, hi]},
        yaxis={"title": {"text": "predicted latency (ms)"}, "range": [0, hi]},
    )


# ---------------------------------------------------------------------------------------------------- page


def _figure_html(fig: go.Figure, div_id: str) -> str:
    return fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id, config=CONFIG)


def table_html(t: Table, cls: str = "") -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in t.columns)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="{"num" if isinstance(v, int | float) and not isinstance(v, bool) else ""}">'
            f"{html.escape(cell(v))}</td>"
            for v in row
        )
        + "</tr>"
        for row in t.rows
    )
    table = f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
    return f'<div class="table-wrap">{table}</div>'


def _notes(notes: Sequence[str]) -> str:
    return "".join(f'<p class="note">{html.escape(n)}</p>' for n in notes)


def _facts_html(rows: Sequence[tuple[str, Any]]) -> str:
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(cell(v))}</td></tr>" for k, v in rows)
    return f'<table class="facts">{body}</table>'


def _summary_html(s: Summary) -> str:
    objs = "".join(
        f"<li>{html.escape(o.display)}: {html.escape(o.direction)}d"
        + (' <span class="badge">proxy</span>' if o.is_proxy else "")
        + "</li>"
        for o in s.objectives
    )
    budgets = "".join(f"<li>{html.escape(b.name)}: {html.escape(b.text)}</li>" for b in s.budgets)
    parts = [_facts_html(s.facts)]
    if objs:
        parts.append(f"<h3>Objectives</h3><ul>{objs}</ul>")
    if budgets:
        loosest = "the loosest latency budget is the search's constraint; tighter ones slice the front below"
        parts.append(f'<h3>Budgets</h3><ul>{budgets}</ul><p class="hint">{loosest}.</p>')
    parts.append(_notes(s.notes))
    if s.best is not None:
        parts.append(f"<h3>{html.escape(s.best_title)}</h3>{table_html(s.best)}")
    return "".join(parts)


def _front_html(f: Front) -> str:
    parts = [_notes(f.notes), _figure_html(front_figure(f), "fig-front")]
    hint = f'<p class="hint">{html.escape(f.slices_hint)}</p>' if f.slices_hint else ""
    parts.append("<h3>The front per budget</h3>" + hint + table_html(f.slices))
    if f.least_violating is not None:
        parts.append("<h3>Least-violating designs</h3>" + table_html(f.least_violating))
    return "".join(parts)


def _gap_html(g: Gap) -> str:
    return (
        _figure_html(gap_figure(g), "fig-gap")
        + "<h3>Rank correlations</h3>"
        + table_html(g.correlations)
        + _notes(g.notes)
    )


def _insight_html(ins: Insight) -> str:
    parts = []
    if ins.importance:
        parts.append(
            "<h3>Knob importance</h3>" + _figure_html(importance_figure(ins), "fig-importance") + _notes(ins.notes)
        )
    if ins.axes:
        parts.append("<h3>Parallel coordinates</h3>" + _figure_html(parallel_figure(ins), "fig-parallel"))
    if ins.hypervolume is not None:
        parts.append(
            "<h3>Hypervolume history</h3>"
            + f'<p class="hint">{html.escape(ins.hypervolume.reference_text)}.</p>'
            + _figure_html(hypervolume_figure(ins), "fig-hypervolume")
        )
    return "".join(parts)


def _trust_html(t: Trust) -> str:
    parts = []
    if t.iqr:
        parts.append(
            "<h3>Latency spread per design</h3>" + _figure_html(iqr_figure(t), "fig-iqr") + _notes([t.iqr_note])
        )
    if t.flags is not None:
        parts.append("<h3>Flags</h3>" + table_html(t.flags))
    if t.drift:
        parts.append(
            "<h3>Reference-module drift</h3>" + _notes([t.drift_note]) + _figure_html(drift_figure(t), "fig-drift")
        )
        if t.drift_table is not None:
            parts.append(table_html(t.drift_table))
    if t.prediction is not None:
        p = t.prediction
        parts.append(
            "<h3>Predicted vs measured latency</h3>"
            + f'<p class="hint">{100 * p.within:.0f} % of {len(p.ids)} predictions within ±10 %; '
            + f"mean absolute error {p.mape:.1f} %.</p>"
            + _figure_html(prediction_figure(t), "fig-prediction")
        )
    if t.calibration is not None:
        parts.append("<h3>Proxy calibration</h3>" + table_html(t.calibration))
    return "".join(parts)


_SECTIONS = (
    ("summary", "Summary"),
    ("front", "Pareto front: quality vs measured latency"),
    ("gap", "The indirect-metric gap: MACs vs measured speed"),
    ("scaling", "Scaling with input size"),
    ("breakdown", "Where the work goes"),
    ("insight", "Search insight"),
    ("trust", "How far to trust the numbers"),
    ("provenance", "Provenance"),
)

_CSS = """
body{font-family:__FONT__;color:#222;margin:0;background:#fafafa}
main{max-width:1240px;margin:0 auto;padding:24px 28px 60px;background:#fff}
h1{font-size:1.6em;margin:0 0 4px}h2{font-size:1.3em;margin:36px 0 10px;border-bottom:1px solid #ddd;padding-bottom:4px}
h3{font-size:1.05em;margin:22px 0 8px}
.sub{color:#666;margin:0 0 12px}nav{font-size:.92em;margin:8px 0 16px}nav a{margin-right:14px;color:#0072B2}
.note{background:#fff6e0;border-left:4px solid #E69F00;padding:6px 10px;margin:8px 0}
.hint{color:#555;font-size:.92em}
.badge{background:#E69F00;color:#fff;border-radius:3px;padding:0 5px;font-size:.8em}
.table-wrap{overflow-x:auto}
table{border-collapse:collapse;font-size:.88em;margin:6px 0 10px}
th,td{border-bottom:1px solid #e4e4e4;padding:4px 9px;text-align:left;vertical-align:top}
thead th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}
table.facts{width:100%}table.facts th{font-weight:600;background:none;width:200px}
#effscope-errors{background:#fde8e8;border-left:4px solid #c00;padding:8px 12px;white-space:pre-wrap}
"""

# Any script error shows as a visible banner (a report that silently misses a figure misleads).
_ERROR_SINK = """
window.effscopeErrors=[];
function effscopeError(m){window.effscopeErrors.push(String(m));var b=document.getElementById('effscope-errors');
if(b){b.hidden=false;b.textContent='A figure failed to render: '+window.effscopeErrors.join(' | ');}}
window.addEventListener('error',function(e){effscopeError(e.message||e);});
window.addEventListener('unhandledrejection',function(e){effscopeError(e.reason);});
document.addEventListener('DOMContentLoaded',function(){if(window.effscopeErrors.length)effscopeError('');});
"""


def _plotly_script(mode: str) -> str:
    import plotly.offline

    if mode == "inline":
        return f'<script type="text/javascript">{plotly.offline.get_plotlyjs()}</script>'
    if mode == "directory":
        return f'<script src="{PLOTLYJS_FILE}"></script>'
    if mode == "cdn":
        return f'<script src="https://cdn.plot.ly/plotly-{plotly.offline.get_plotlyjs_version()}.min.js"></script>'
    raise ReportError(f"--plotlyjs must be one of {', '.join(PLOTLYJS_MODES)}, but got '{mode}'")


def write_plotlyjs(folder: Path) -> Path:
    """Write the shared plotly.min.js into `folder` (once; reports beside it load it with a relative path)."""
    import plotly.offline

    from effscope.output import write_atomic

    path = folder / PLOTLYJS_FILE
    text = plotly.offline.get_plotlyjs()
    if not path.is_file() or path.stat().st_size != len(text.encode()):
        write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return path


def render(data: ReportData, *, plotlyjs: str = "inline") -> str:
    """The whole report as one HTML document."""
    script = _plotly_script(plotlyjs)
    bodies = {
        "summary": _summary_html(data.summary),
        "front": _front_html(data.front) if data.front else None,
        "gap": _gap_html(data.gap) if data.gap else None,
        "scaling": (_figure_html(scaling_figure(data.scaling), "fig-scaling") + _notes(data.scaling.notes))
        if data.scaling
        else None,
        "breakdown": (_figure_html(breakdown_figure(data.breakdown), "fig-breakdown") + _notes(data.breakdown.notes))
        if data.breakdown
        else None,
        "insight": _insight_html(data.insight) if data.insight else None,
        "trust": _trust_html(data.trust) if data.trust else None,
        "provenance": _facts_html([(str(k), v) for k, v in data.provenance.rows]),
    }
    order = list(_SECTIONS)
    for section in REGISTERED:  # each after the section it names (registered ones may follow each other)
        if section.key in data.registered:
            bodies[section.key] = section.render(data.registered[section.key])
            keys = [k for k, _ in order]
            at = keys.index(section.after) + 1 if section.after in keys else len(order) - 1
            order.insert(at, (section.key, section.title))
    shown = [(key, title) for key, title in order if bodies[key] is not None]
    nav = "".join(f'<a href="#{key}">{i}. {html.escape(title)}</a>' for i, (key, title) in enumerate(shown, 1))
    sections = "".join(
        f'<section id="{key}"><h2>{i}. {html.escape(title)}</h2>{bodies[key]}</section>'
        for i, (key, title) in enumerate(shown, 1)
    )
    made = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(data.title)}</title>"
        f"<style>{_CSS.replace('__FONT__', FONT)}</style>"
        f"<script>{_ERROR_SINK}</script>{script}</head>"
        '<body><main><div id="effscope-errors" hidden></div>'
        f"<h1>{html.escape(data.title)}</h1>"
        f'<p class="sub">made by effscope {__version__} on {made}</p>'
        f"<nav>{nav}</nav>{sections}</main></body></html>\n"
    )
