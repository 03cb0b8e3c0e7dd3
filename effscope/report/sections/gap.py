"""Section "gap": MACs against measured latency and throughput, per family, with rank correlations: the gap
between the indirect metric and real speed."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from effscope.report.data import (
    LATENCY,
    Marker,
    Point,
    Source,
    Table,
    dedupe_measurements,
    differing_workload_parts,
    study_device_parts,
    workload_groups,
    workload_parts,
)
from effscope.report.markup import cell, notes_html, size_text, table_html
from effscope.report.sections._section import Section
from effscope.stats import MIN_RANK_PAIRS, kendall_tau, spearman_rho
from effscope.units import si, si_unit

if TYPE_CHECKING:
    import plotly.graph_objects as go

__all__ = [
    "Gap",
    "GapSeries",
    "SECTION",
    "correlations",
    "gap_figure",
    "gap_html",
    "gap_section",
    "shown_correlations",
    "why_no_gap",
]


@dataclass
class GapSeries:
    family: str
    markers: list[Marker]  # x = MACs (G), y = latency p50 (ms); hover is the id and the plotted numbers
    throughput: list[float | None]  # img/s, aligned with markers
    kinds: list[str | None]  # "block" / "model", aligned with markers
    label: str = ""  # what the legend says: the targets too, where the family's name alone would mislead


@dataclass
class Gap:
    series: list[GapSeries]
    correlations: Table
    headline: dict[str, Any]  # overall n, spearman/kendall for latency and throughput
    notes: list[str]
    x_label: str  # MACs with the SI prefix the markers' x is in
    x_scale: float  # the markers' x times this is MACs
    throughput: bool  # plot throughput: some design ran at batch > 1 (at batch 1 it is 1000 / latency)
    n_throughput: list[int] = field(default_factory=list)  # per correlation row: designs with MACs and throughput
    shown: dict[str, str] = field(default_factory=dict)  # series / row name -> what the page says (targets, units)


MIN_GAP_DESIGNS = 3


def gap_section(source: Source) -> Gap | None:
    """MACs against measured latency and throughput, per family, with rank correlations; designs measured under
    different workloads (a study's trials: of different CPUs) are drawn and correlated apart, never together."""
    pts = _gap_points(source)
    if _why_no_gap(pts) is not None:
        return None
    # a study's trials share one workload, but not always one CPU (study_device_parts)
    keys = study_device_parts(pts) if source.kind == "study" else differing_workload_parts(pts)
    groups = workload_groups(pts, keys)
    prefix, scale = si_unit(p.get("macs") for p in pts)
    shown = _shown_names(groups, keys)
    series = [
        GapSeries(
            name := " · ".join(x for x in (fam, workload) if x),
            [Marker(p.id, p.get("macs") / scale, p.get(LATENCY), []) for p in fam_pts],
            [p.get("throughput_img_s") for p in fam_pts],
            [p.kind for p in fam_pts],
            shown.get(name, name),
        )
        for workload, wl_pts in groups.items()
        for fam, fam_pts in sorted(_families(wl_pts).items())
    ]
    throughput = any((p.workload.get("batch") or 1) > 1 for p in pts if p.get("throughput_img_s") is not None)
    columns = ["designs", "n", "Spearman ρ (MACs, latency)", "Kendall τ (MACs, latency)"]
    if throughput:
        columns += ["Spearman ρ (MACs, throughput)", "Kendall τ (MACs, throughput)"]
    correlated = _correlated_groups(groups)
    rows = [_correlation_row(name, fp)[: len(columns)] for name, fp in correlated]
    n_throughput = [correlations(fp, "throughput_img_s")[0] for _, fp in correlated]
    # one workload: the headline is over all designs; several: no headline, since none may span workloads
    headline = dict(zip(columns[1:], rows[0][1:], strict=True)) if len(groups) == 1 else {}
    notes = [
        "A rank correlation of 1 would mean MACs order the designs exactly as measured latency does; "
        "anything less is the gap between the indirect metric and real speed on this device."
    ]
    if len(groups) > 1:
        notes.insert(
            0,
            f"The designs were measured under {len(groups)} workloads ({'; '.join(shown[w] for w in groups)}): each is "
            "drawn as its own series and correlated on its own, since latencies of different workloads are not "
            "comparable.",
        )
    if not throughput and any(p.get("throughput_img_s") is not None for p in pts):
        notes.append(
            "Throughput is not plotted: every design ran at batch 1, and its measured throughput is in "
            "`effscope export` (it is timed in its own window, so it need not equal 1000 / latency)."
        )
    kinds = {p.kind for p in pts}
    if len(kinds) > 1:
        notes.append(
            "Blocks (circles) and whole models (diamonds) are mixed here; "
            "compare within a family for a like-for-like gap."
        )
    x_label = f"MACs ({prefix or 'count'}, fvcore convention)"
    return Gap(series, Table(columns, rows), headline, notes, x_label, scale, throughput, n_throughput, shown)


def _gap_points(source: Source) -> list[Point]:
    return [p for p in dedupe_measurements(source.points) if p.measured and p.get("macs") is not None]


def why_no_gap(source: Source) -> str | None:
    """Why the gap section is left out, in one line; None when it is drawn."""
    return _why_no_gap(_gap_points(source))


def _why_no_gap(pts: Sequence[Point]) -> str | None:
    if len(pts) < MIN_GAP_DESIGNS:
        return (
            f"Left out: a MACs-vs-latency gap needs at least {MIN_GAP_DESIGNS} fully measured designs with MACs, "
            f"and this report has {len(pts)}."
        )
    if len({p.get("macs") for p in pts}) < 2:
        return "Left out: every measured design has the same MACs, so MACs cannot rank them."
    return None


def _shown_names(groups: dict[str, list[Point]], keys: Sequence[str]) -> dict[str, str]:
    """What the page calls each workload, series and correlation row: the input size with its unit, and a family
    with its targets where they are not the family's namesake (target hilo is of the litv2 family)."""
    shown: dict[str, str] = {}
    for workload, pts in groups.items():
        wl = workload
        if "size" in keys:  # the label's parts, in its order, the size with its unit (blocks: tokens, models: px)
            parts = workload_parts(pts[0])
            parts["size"] = size_text(pts[0].size, {p.kind for p in pts}) if pts[0].size else parts["size"]
            wl = ", ".join(parts.get(k, f"{k} not recorded") for k in keys)
        if workload:
            shown[workload] = wl
        shown["all designs" + (f" at {workload}" if workload else "")] = "all designs" + (f" at {wl}" if wl else "")
        for fam, fp in _families(pts).items():
            targets = list(dict.fromkeys(p.target for p in fp))
            name = fam
            if targets != [fam]:
                more = f" and {len(targets) - 3} more" if len(targets) > 3 else ""
                name = f"{', '.join(targets[:3])}{more} ({fam} family)"
            shown[" · ".join(x for x in (fam, workload) if x)] = " · ".join(x for x in (name, wl) if x)
    return shown


def _families(pts: Sequence[Point]) -> dict[str, list[Point]]:
    families: dict[str, list[Point]] = {}
    for p in pts:
        families.setdefault(p.family or p.target, []).append(p)
    return families


def _correlated_groups(groups: dict[str, list[Point]]) -> list[tuple[str, list[Point]]]:
    """What the correlation table has a row for: all designs of each workload, then each family within it that has
    3 designs or more (where a workload holds several families)."""
    chosen = []
    for workload, pts in groups.items():
        chosen.append(("all designs" + (f" at {workload}" if workload else ""), pts))
        families = _families(pts)
        chosen += [
            (" · ".join(x for x in (fam, workload) if x), fp)
            for fam, fp in sorted(families.items())
            if len(fp) >= MIN_GAP_DESIGNS and len(families) > 1
        ]
    return chosen


def correlations(points: Sequence[Point], y: str) -> tuple[int, float, float]:
    """(n, Spearman ρ, Kendall τ) of MACs against `y` over the points that have both."""
    pairs = [(p.get("macs"), p.get(y)) for p in points if p.get("macs") is not None and p.get(y) is not None]
    xs, ys = [a for a, _ in pairs], [b for _, b in pairs]
    return len(pairs), spearman_rho(xs, ys), kendall_tau(xs, ys)


def _correlation_row(name: str, pts: Sequence[Point]) -> list[Any]:
    n, rho_l, tau_l = correlations(pts, LATENCY)
    _, rho_t, tau_t = correlations(pts, "throughput_img_s")
    return [name, n, _nan_none(rho_l), _nan_none(tau_l), _nan_none(rho_t), _nan_none(tau_t)]


def _nan_none(v: float) -> float | None:
    return None if v is None or math.isnan(v) else v


def _too_few(n: int) -> str:
    return f"too few designs ({n}) for a rank correlation"


def shown_correlations(g: Gap) -> Table:
    """The correlation table as the page prints it: rows named as shown (targets, size units), and no coefficient
    where fewer than MIN_RANK_PAIRS designs back it (it says so instead)."""
    rows = []
    for i, row in enumerate(g.correlations.rows):
        row = [g.shown.get(row[0], row[0]), *row[1:]]
        n_tp = g.n_throughput[i] if i < len(g.n_throughput) else row[1]
        for col, n in ((2, row[1]), (4, n_tp)):  # each (Spearman, Kendall) pair, by its own n
            if col < len(row) and n < MIN_RANK_PAIRS:
                row[col : col + 2] = [_too_few(n), ""]
        rows.append(row)
    return Table(g.correlations.columns, rows)


def _headline(rho: Any, tau: Any, n: int) -> str:
    """A panel title's correlation line: ρ and τ, or why there is none."""
    if n < MIN_RANK_PAIRS:
        return _too_few(n)
    return f"Spearman ρ = {cell(rho)}, Kendall τ = {cell(tau)} (n = {n})"


# ------------------------------------------------------------------ drawing (plotly loads here, not on import)


def gap_figure(g: Gap) -> go.Figure:
    """MACs vs measured latency, one colour per family; throughput beside it (same MACs axis) when batch > 1."""
    from plotly.subplots import make_subplots

    from effscope.report.figures import PALETTE, axis_layout, finish_figure, point_trace

    h = g.headline
    single = _name(g.series[0]) if len(g.series) == 1 else None  # one family: named in the title, no legend
    # two lines: one would be cut off on a phone
    n_tp = g.n_throughput[0] if g.n_throughput else h.get("n", 0)
    titles = [
        "latency vs MACs"
        + ((f" ({single})" if "(" not in single else f": {single}") if single else "")
        + "<br>"
        + _headline(h.get("Spearman ρ (MACs, latency)"), h.get("Kendall τ (MACs, latency)"), h["n"])
        if h
        else "latency vs MACs, per family and workload<br>(correlated within each workload: the table)"
    ]
    if g.throughput and not h:
        titles.append("throughput vs MACs,<br>per family and workload")
    elif g.throughput:
        titles.append(
            "throughput vs MACs<br>"
            + _headline(h.get("Spearman ρ (MACs, throughput)"), h.get("Kendall τ (MACs, throughput)"), n_tp)
        )
    fig = make_subplots(rows=1, cols=len(titles), subplot_titles=titles, horizontal_spacing=0.1)
    for i, s in enumerate(g.series):
        color = PALETTE[i % len(PALETTE)]
        symbols = ["diamond" if k == "model" else "circle" for k in s.kinds]
        marker = {"color": color, "size": 10, "symbol": symbols if len(set(symbols)) > 1 else symbols[0]}
        fig.add_trace(
            point_trace(s.markers, _name(s), marker, g.x_label, "latency p50 (ms)", legendgroup=s.family), row=1, col=1
        )
        keep = [j for j, t in enumerate(s.throughput) if t is not None]
        if g.throughput and keep:
            tp = [Marker(s.markers[j].id, s.markers[j].x, s.throughput[j], []) for j in keep]
            if len(set(symbols)) > 1:
                marker = {**marker, "symbol": [symbols[j] for j in keep]}
            right = point_trace(tp, _name(s), marker, g.x_label, "throughput (img/s)", legendgroup=s.family)
            right.update(showlegend=False)
            fig.add_trace(right, row=1, col=2)
    macs = [m.x for s in g.series for m in s.markers]
    lat = [m.y for s in g.series for m in s.markers]
    fig.update_xaxes(**axis_layout(g.x_label, macs, fmt=lambda v: si(v * g.x_scale)))
    fig.update_xaxes(matches="x")  # both panels show the same MACs range
    fig.update_yaxes(**axis_layout("median latency p50 (ms, measured)", lat), row=1, col=1)
    if g.throughput:
        tps = [t for s in g.series for t in s.throughput]
        fig.update_yaxes(**axis_layout("throughput (images/s)", tps), row=1, col=2)
    fig.update_annotations(font={"size": 13})
    legend = "family " if h else "family · workload "
    return finish_figure(fig, 500, legend={"title": {"text": legend}}, margin={"t": 70})


def _name(s: GapSeries) -> str:
    return s.label or s.family


def gap_html(g: Gap) -> str:
    """The figure, the rank correlations and notes."""
    from effscope.report.figures import figure_html

    return (
        figure_html(gap_figure(g), "fig-gap")
        + "<h3>Rank correlations</h3>"
        + table_html(shown_correlations(g))
        + notes_html(g.notes)
    )


SECTION = Section(
    "gap",
    "The indirect-metric gap: MACs vs measured speed",
    gap_section,
    gap_html,
    after="front",
    why_absent=why_no_gap,
)
