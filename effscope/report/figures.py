"""What the sections' figures share: the plotly template and palettes, axes, marker traces, page-ready divs.

Imported only by the sections' drawing functions, so plotly loads when a report is drawn, not when its data is made.
Every figure is SVG (no WebGL), so a report renders in any browser, headless ones included.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from typing import Any

import plotly.graph_objects as go

from effscope.report.data import Marker
from effscope.report.markup import FONT, cell

__all__ = [
    "BEST",
    "BUDGET",
    "CONFIG",
    "FEASIBLE",
    "FLAGGED",
    "GREY",
    "PALETTE",
    "PARTS_PALETTE",
    "TEMPLATE",
    "axis_layout",
    "figure_html",
    "finish_figure",
    "integer_ticks",
    "log_ticks",
    "log_worthy",
    "marker_trace",
    "point_trace",
    "rounded",
    "tick_text",
]


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
# a design with a trust flag: Okabe-Ito black, apart from BEST (vermillion means "best" in the front and parallel
# coordinates) and from FEASIBLE's blue for every colour vision
FLAGGED = "#000000"
BUDGET = "#CC79A7"


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


def _r(v: Any) -> Any:
    """Round a number to 5 significant digits (smaller pages, same picture)."""
    if isinstance(v, float) and math.isfinite(v):
        return float(f"{v:.5g}")
    return v


def rounded(values: Sequence[Any]) -> list[Any]:
    """Numbers rounded to 5 significant digits, for a trace's data."""
    return [_r(v) for v in values]


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


def log_worthy(values: Sequence[float | None]) -> bool:
    """Whether the positive values span more than 20x, so that a log axis shows them better."""
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


def axis_layout(
    title: str, values: Sequence[float | None], fmt: Callable[[float], str] = tick_text, **more: Any
) -> dict[str, Any]:
    """An axis with its title; logarithmic when the values span more than 20x, every tick labelled in full by `fmt`."""
    axis: dict[str, Any] = {"title": {"text": title}, **more}
    if log_worthy(values):
        axis["type"] = "log"
        axis.update(log_ticks(values, fmt))
    return axis


def marker_trace(ms: Sequence[Marker], name: str, **marker: Any) -> go.Scatter:
    """Markers with every hover line of each design and the 95 % interval of x as a bar where measured."""
    customdata, template = _hover_data(ms)
    error_x = _interval_bars(ms, marker.get("color"))
    return _scatter(ms, name, marker, customdata=customdata, hovertemplate=template, error_x=error_x)


def _interval_bars(ms: Sequence[Marker], color: str | None) -> dict[str, Any] | None:
    """Each marker's 95 % interval of x as a horizontal bar (none where it was not measured)."""
    if not any(m.x_interval for m in ms):
        return None
    below = [m.x - m.x_interval[0] if m.x_interval and m.x is not None else None for m in ms]
    above = [m.x_interval[1] - m.x if m.x_interval and m.x is not None else None for m in ms]
    return {
        "type": "data",
        "symmetric": False,
        "array": rounded(above),
        "arrayminus": rounded(below),
        "width": 0,
        "thickness": 1,
        "color": color,
    }


def point_trace(
    ms: Sequence[Marker], name: str, marker: dict[str, Any], x_label: str, y_label: str, **trace: Any
) -> go.Scatter:
    """Markers whose hover is their name and the two plotted numbers (compact: no per-point labels)."""
    template = f"<b>%{{text}}</b><br>{html.escape(x_label)}: %{{x:.4g}}<br>{html.escape(y_label)}: %{{y:.4g}}"
    text = [html.escape(m.id) for m in ms]
    return _scatter(ms, name, marker, text=text, hovertemplate=template + "<extra>%{fullData.name}</extra>", **trace)


def _scatter(ms: Sequence[Marker], name: str, marker: dict[str, Any], **trace: Any) -> go.Scatter:
    """One marker per design at its (x, y), rounded."""
    return go.Scatter(
        x=rounded([m.x for m in ms]), y=rounded([m.y for m in ms]), mode="markers", name=name, marker=marker, **trace
    )


def finish_figure(fig: go.Figure, height: int, **layout: Any) -> go.Figure:
    """Template and height; a legend only where it tells two or more things apart (unless `showlegend` says)."""
    entries = {t.legendgroup or t.name for t in fig.data if t.showlegend is not False and t.name}
    layout.setdefault("showlegend", len(entries) > 1)
    fig.update_layout(template=TEMPLATE, height=height, **layout)
    return fig


def integer_ticks(values: Sequence[int]) -> dict[str, Any]:
    """Whole-number ticks for counts (trial numbers, measurement order), at most about ten of them."""
    if not values:
        return {}
    return {"tick0": 0, "dtick": max(1, math.ceil((max(values) - min(values) + 1) / 10))}


def figure_html(fig: go.Figure, div_id: str, phone: go.Figure | None = None) -> str:
    """A figure as a div for the page (plotly.js comes once, with the page).

    `phone`: the figure as a phone shows it, its traces `fig`'s with x and y swapped. Only its layout goes into the
    page (layout.meta.phone, without the template): on a phone, the page's script (report/html.py) swaps x and y of
    `fig`'s traces and draws them with that layout, so the traces' data is in the page once.
    """
    if phone is not None:
        layout = phone.layout.to_plotly_json()
        layout.pop("template", None)
        fig = go.Figure(fig).update_layout(meta={"phone": layout})
    return fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id, config=CONFIG)
