"""Section "scaling": latency and peak memory against input size, for designs measured at several sizes."""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from effscope.metrics import MIB
from effscope.report.data import LATENCY, Point, Source, knob_text
from effscope.report.markup import cell, notes_html
from effscope.report.sections._section import Section

if TYPE_CHECKING:
    import plotly.graph_objects as go

__all__ = ["SECTION", "Scaling", "ScalingSeries", "scaling_figure", "scaling_html", "scaling_section"]


@dataclass
class ScalingSeries:
    name: str
    kind: str | None
    tokens: list[int]
    sizes: list[str]
    latency_ms: list[float | None]
    memory_mib: list[float | None]
    latency_slope: float | None
    memory_slope: float | None


@dataclass
class Scaling:
    x_label: str
    memory_label: str | None  # None: memory was not measured, latency only
    series: list[ScalingSeries]
    notes: list[str]


def scaling_section(source: Source) -> Scaling | None:
    """Latency and peak memory against the number of tokens (or pixels), per design measured at several sizes."""
    groups: dict[str, list[Point]] = {}
    for p in source.points:
        if p.size and p.measured:
            wl = {k: v for k, v in p.workload.items() if k != "size"}
            key = json.dumps([p.target, p.knobs, wl, p.device_label], sort_keys=True, default=str)
            groups.setdefault(key, []).append(p)
    multi = {k: g for k, g in groups.items() if len({p.size for p in g}) >= 2}
    if not multi:
        return None
    mem_key = "peak_mem_bytes" if any(p.get("peak_mem_bytes") is not None for g in multi.values() for p in g) else None
    mem_key = mem_key or "peak_rss_bytes"
    names = _series_names([g[0] for g in multi.values()])
    series = []
    for (_key, g), name in zip(multi.items(), names, strict=True):
        latest: dict[tuple[int, int], Point] = {}
        for p in sorted(g, key=lambda p: p.order or ""):
            latest[p.size] = p  # a re-measurement replaces the older one
        sizes = sorted(latest, key=lambda s: (s[0] * s[1], s))
        tokens = [h * w for h, w in sizes]
        lat = [latest[s].get(LATENCY) for s in sizes]
        mem = [latest[s].get(mem_key) for s in sizes]
        mem_mib = [m / MIB if m is not None else None for m in mem]
        series.append(
            ScalingSeries(
                name,
                g[0].kind,
                tokens,
                [f"{h}x{w}" for h, w in sizes],
                lat,
                mem_mib,
                _slope(tokens, lat),
                _slope(tokens, mem),
            )
        )
    kinds = {s.kind for s in series}
    x_label = (
        "tokens N (H×W of the token grid)"
        if kinds == {"block"}
        else "input pixels (H×W)"
        if kinds == {"model"}
        else "tokens (blocks) or input pixels (models), H×W"
    )
    memory_label: str | None = (
        "peak GPU memory allocated (MiB)" if mem_key == "peak_mem_bytes" else "peak RSS increase (MiB, CPU)"
    )
    notes = [
        "Both axes are logarithmic; the slope in each legend entry is the fitted exponent: latency ∝ N^slope "
        "(about 1 for linear attention, up to 2 for global attention once attention dominates)."
    ]
    if not any(m is not None for s in series for m in s.memory_mib):
        memory_label = None
        why = sorted({p.missing.get(mem_key, "") for g in multi.values() for p in g} - {""})
        notes.append("Peak memory was not measured for these designs" + (f": {why[0]}." if why else "."))
    return Scaling(x_label, memory_label, series, notes)


def _series_names(firsts: Sequence[Point]) -> list[str]:
    """Series names: the target, plus whatever tells same-target series apart (knobs, batch, dtype, device)."""
    names = []
    for p in firsts:
        same = [q for q in firsts if q.target == p.target and q is not p]
        extra = []
        for q in same:
            extra += [f"{k}={knob_text(v)}" for k, v in p.knobs.items() if q.knobs.get(k) != v]
            extra += [f"{k}={v}" for k, v in p.workload.items() if k != "size" and q.workload.get(k) != v]
        extra = list(dict.fromkeys(extra))
        names.append(p.target + (f" ({', '.join(extra)})" if extra else ""))
    return names


def _slope(xs: Sequence[float], ys: Sequence[float | None]) -> float | None:
    """Least-squares slope of log(y) on log(x): 1 = linear, 2 = quadratic growth."""
    pairs = [(math.log(x), math.log(y)) for x, y in zip(xs, ys, strict=True) if y is not None and y > 0 and x > 0]
    if len({a for a, _ in pairs}) < 2:
        return None
    mx = sum(a for a, _ in pairs) / len(pairs)
    my = sum(b for _, b in pairs) / len(pairs)
    sxx = sum((a - mx) ** 2 for a, _ in pairs)
    return sum((a - mx) * (b - my) for a, b in pairs) / sxx


# ------------------------------------------------------------------ drawing (plotly loads here, not on import)


def scaling_figure(s: Scaling) -> go.Figure:
    """Latency and peak memory vs tokens on log-log axes, with the fitted exponent in each legend entry."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from effscope.report.figures import PALETTE, finish_figure, log_ticks, rounded

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
                    y=rounded(ys),
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
    return finish_figure(fig, 500, margin={"t": 60})


def scaling_html(s: Scaling) -> str:
    """The figure and notes."""
    from effscope.report.figures import figure_html

    return figure_html(scaling_figure(s), "fig-scaling") + notes_html(s.notes)


SECTION = Section("scaling", "Scaling with input size", scaling_section, scaling_html, after="gap")
