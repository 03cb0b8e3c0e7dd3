"""Section "trust": how far to trust the numbers: timing spread, flags, reference-module drift, latency
predictions and proxy calibration."""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from effscope.metrics import FLAGS
from effscope.report.data import (
    LATENCY,
    OVER_WHEN_REMEASURED,
    PREDICTED_INFEASIBLE,
    Marker,
    Point,
    Source,
    Table,
    budgets_of,
    dedupe_measurements,
    finite,
    latency_budgets,
    number_name,
    quantity,
    screening_statistic,
)
from effscope.report.markup import facts_html, notes_html, table_html
from effscope.report.sections._section import Section

if TYPE_CHECKING:
    import plotly.graph_objects as go

__all__ = [
    "DriftSeries",
    "Prediction",
    "SECTION",
    "Screening",
    "Trust",
    "drift_figure",
    "iqr_figure",
    "prediction_accuracy",
    "prediction_figure",
    "predictor_screening",
    "reference_drift",
    "trust_html",
    "trust_section",
]


PROTOCOL_IQR_TARGET = 0.05  # measure.py repeats until IQR/median <= 5 %

# +-10 %: the accuracy figure latency predictors are judged by (docs/search.md#latency-predictor)
PREDICTION_BAND = 0.10


@dataclass
class DriftSeries:
    name: str
    order: list[int]
    ids: list[str]
    ms: list[float]


@dataclass
class Prediction:
    statistic: str
    ids: list[str]
    measured: list[float]
    predicted: list[float]
    within: float  # fraction within +-10 %
    mape: float


@dataclass
class Screening:
    """A search screened by a latency predictor (docs/search.md#screening): the table and its held-out validation,
    what it screened, skipped and spot-checked, and the front re-measured in fresh processes."""

    facts: list[tuple[str, Any]]
    notes: list[str]
    remeasured: Table | None  # one row per re-measured front design


@dataclass
class Trust:
    iqr: list[Marker]  # x = p50 ms, y = IQR / median %
    iqr_flags: list[str]  # each design's flags, "" when none
    flags: Table | None
    drift: list[DriftSeries]
    drift_table: Table | None
    prediction: Prediction | None
    screening: Screening | None
    calibration: Table | None
    iqr_note: str
    drift_note: str


def trust_section(source: Source) -> Trust | None:
    """How far to trust the numbers: spread, flags, reference drift, predictions and proxy calibration."""
    pts = [p for p in dedupe_measurements(source.points) if p.measured]
    iqr = []
    flags = []
    for p in pts:
        med, spread = p.get(LATENCY), p.get("latency_ms_iqr")
        if med and spread is not None:
            iqr.append(Marker(p.id, med, 100 * spread / med, []))
            flags.append(", ".join(p.flags))
    flags_table = _flags_table(dedupe_measurements(source.points))
    drift, drift_table = reference_drift(pts)
    prediction = prediction_accuracy(dedupe_measurements(source.points), screening_statistic(source))
    screening = predictor_screening(source)
    calibration = _calibration_table(source.attrs.get("calibration") or {})
    if not (iqr or flags_table or drift or prediction or screening or calibration):
        return None
    iqr_note = (
        f"The protocol repeats timing until IQR/median ≤ {100 * PROTOCOL_IQR_TARGET:.0f} % or its time cap; "
        "designs above the line kept a wide spread."
    )
    drift_note = (
        "The reference module is a fixed workload timed beside every measurement: if its time drifts, "
        "the device (clocks, load, thermals) changed during the run and latencies drift with it."
    )
    return Trust(iqr, flags, flags_table, drift, drift_table, prediction, screening, calibration, iqr_note, drift_note)


def _flags_table(points: Sequence[Point]) -> Table | None:
    counts: dict[str, list[str]] = {}
    for p in points:
        for f in p.flags:
            counts.setdefault(f, []).append(p.id)
    if not counts:
        return None
    rows = []
    for flag, ids in sorted(counts.items()):
        shown = ", ".join(ids[:8]) + (f" and {len(ids) - 8} more" if len(ids) > 8 else "")
        rows.append([flag, FLAGS.get(flag, ""), len(ids), shown])
    return Table(["flag", "meaning", "designs", "which"], rows)


def reference_drift(points: Sequence[Point]) -> tuple[list[DriftSeries], Table | None]:
    """The reference module's median time in measurement order, per (reference, device), and its spread."""
    groups: dict[str, list[Point]] = {}
    for p in sorted(points, key=lambda p: (p.order or "", p.id)):
        if p.get("reference_ms_p50") is not None:
            groups.setdefault(p.device_label, []).append(p)
    series, rows = [], []
    for name, g in groups.items():
        ms = [p.get("reference_ms_p50") for p in g]
        series.append(DriftSeries(name, list(range(1, len(g) + 1)), [p.id for p in g], ms))
        med = _median(ms)
        spread: str | float | None = None
        if len(ms) == 1:  # one measurement has no spread to show: "0 %" would read as "no drift"
            spread = "one measurement: no drift can be seen"
        elif med:
            spread = 100 * (max(ms) - min(ms)) / med
        rows.append([name, len(ms), med, min(ms), max(ms), spread])
    table = Table(
        ["device", "measurements", "median (ms)", "min (ms)", "max (ms)", "spread (max-min)/median (%)"], rows
    )
    return series, table if rows else None


def _median(xs: Sequence[float]) -> float:
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def prediction_accuracy(points: Sequence[Point], statistic: str = LATENCY) -> Prediction | None:
    """Predicted vs measured latency where a predictor was used: share within ±10 % and the mean absolute % error."""
    pairs = [
        (p.id, p.get(statistic), p.get("predicted_latency_ms"))
        for p in points
        if p.measured and p.get(statistic) and p.get("predicted_latency_ms") is not None
    ]
    if not pairs:
        return None
    errors = [abs(pred - meas) / meas for _, meas, pred in pairs]
    within = sum(1 for e in errors if e <= PREDICTION_BAND + 1e-12) / len(errors)
    return Prediction(
        statistic,
        [i for i, _, _ in pairs],
        [m for _, m, _ in pairs],
        [q for _, _, q in pairs],
        within,
        100 * sum(errors) / len(errors),
    )


def predictor_screening(source: Source) -> Screening | None:
    """What a latency predictor did to a study (study user attr "predictor", as effscope/search/remeasure.py stores
    it: the table's summary and the counts), and the front's fresh-process re-measurement joined to its trials.
    None for a study the predictor did not screen, or Records."""
    from effscope.search.predictor import MARGIN_MAPES  # the rule the search applied, stated from its one source

    info = source.attrs.get("predictor") if source.kind == "study" else None
    if not info:
        return None
    stat = screening_statistic(source)
    name = number_name(stat)
    mape, margin, within = finite(info.get("mape")), finite(info.get("margin")), finite(info.get("within_10"))
    validation = "-"
    if mape is not None:
        validation = f"{100 * mape:.1f} % on {info.get('n_holdout') or '?'} held-out design(s)"
        validation += f" ({100 * within:.0f} % within ±10 %)" if within is not None else ""
    facts: list[tuple[str, Any]] = [
        ("latency table", str(info.get("name") or "unnamed")),
        ("predicts", name + (f" ({info['fit']} fit)" if info.get("fit") else "")),
        ("held-out MAPE", validation),
        (
            "rejection margin",
            f"budget × {margin:.3g} (1 + {MARGIN_MAPES:g} × MAPE): a candidate predicted above it is not measured"
            if margin is not None
            else "-",
        ),
    ]
    notes: list[str] = []
    if info.get("screened") is None:
        skipped = sum(1 for p in source.points if p.status == PREDICTED_INFEASIBLE)
        notes.append(
            "The search stored no screening counts (it stopped before its end, e.g. on Ctrl-C); "
            f"{skipped} trial(s) are {PREDICTED_INFEASIBLE} (not measured)."
        )
    else:
        spot, false = int(info.get("spot_checked") or 0), int(info.get("spot_false_rejections") or 0)
        rate = finite(info.get("false_rejection_rate"))
        facts += [
            ("screened (predicted before measuring)", info.get("screened")),
            ("no prediction (a block call the table lacks; measured)", info.get("unpredicted", "not recorded")),
            ("skipped as predicted infeasible (not measured)", info.get("skipped")),
            ("rejections spot-checked (measured anyway)", f"{spot} of {info.get('rejected')}"),
            (
                "false rejections",
                f"{false} of {spot} spot-checked turned out feasible ({100 * rate:.0f} %)"
                if spot and rate is not None
                else "unknown: no rejection was spot-checked",
            ),
        ]
    table = _remeasured_table(source, stat)
    if table is None and info.get("front_remeasured") == 0:
        facts.append(("front re-measured in fresh processes", "none: the search found no feasible design"))
    if table is not None:
        still = sum(1 for row in table.rows if row[-1] == "yes")
        limit = _limit_text(source, stat)
        facts.append(("front re-measured in fresh processes", f"{still} of {len(table.rows)} still under {limit}"))
        notes.append(
            "After the search, each design of its front was measured again in a fresh worker process. One over the "
            f"budget then is feasible by the search's measurement only; the front marks it '{OVER_WHEN_REMEASURED}'."
        )
    return Screening(facts, notes, table)


def _remeasured_table(source: Source, stat: str) -> Table | None:
    """Each re-measured front design (the trial re-measured, not its cached repeats): its budgeted statistic in
    the search and re-measured, and whether it is still under the budget."""
    rows = []
    for p in source.points:
        check = p.fresh_measurement
        if check is None or p.trial != check.trial:
            continue
        still = "yes" if check.feasible else f"no: {OVER_WHEN_REMEASURED}"
        if check.value is None:
            still = "no: the re-measurement failed"
        rows.append([p.id, p.get(stat), check.value, check.latency_ms_p50, still])
    if not rows:
        return None
    rows.sort(key=lambda r: (r[1] is None, r[1] or 0.0, r[0]))
    name = number_name(stat)
    columns = ["design", f"{name} in the search (ms)", f"{name} re-measured (ms)", "p50 re-measured (ms)"]
    return Table([*columns, f"still under {_limit_text(source, stat)}"], rows)


def _limit_text(source: Source, stat: str) -> str:
    """The loosest budget on `stat` ("latency p90 ≤ 12 ms"): the search's constraint, which it was judged on."""
    limits = [b for b in latency_budgets(budgets_of(source)) if b.statistic == stat]
    return f"{number_name(stat)} ≤ {quantity(limits[-1].limit, limits[-1].unit)}" if limits else "the budget"


def _calibration_table(calibration: Mapping[str, Any]) -> Table | None:
    if not calibration:
        return None
    from effscope.stats import MIN_RANK_PAIRS

    rows = []
    for name, c in sorted(calibration.items()):
        tau, why = finite(c.get("kendall_tau")), c.get("why_missing") or ""
        if tau is not None and isinstance(c.get("n"), int) and c["n"] < MIN_RANK_PAIRS:  # stored before this rule
            tau, why = None, f"too few designs ({c['n']}) for a rank correlation"
        rows.append([name, tau, c.get("n"), c.get("train_steps"), why])
    return Table(["proxy", "Kendall τ vs short-trained accuracy", "designs", "training steps", "why no τ"], rows)


# ------------------------------------------------------------------ drawing (plotly loads here, not on import)


def iqr_figure(t: Trust) -> go.Figure:
    """Each design's timing spread (IQR / median) against its median, flagged designs apart, with the target line."""
    import plotly.graph_objects as go

    from effscope.report.figures import BUDGET, FEASIBLE, FLAGGED, axis_layout, finish_figure, point_trace, tick_text

    fig = go.Figure()
    for flagged, name, color in ((False, "no flags", FEASIBLE), (True, "flagged (see the table)", FLAGGED)):
        ms = [
            Marker(m.id + (f" ({f})" if f else ""), m.x, m.y, [])
            for m, f in zip(t.iqr, t.iqr_flags, strict=True)
            if bool(f) == flagged
        ]
        if ms:
            fig.add_trace(point_trace(ms, name, {"color": color, "size": 9}, "latency p50 (ms)", "IQR / median (%)"))
    yaxis = axis_layout("latency IQR / median (%)", [m.y for m in t.iqr] + [5.0], fmt=lambda v: f"{tick_text(v)} %")
    fig.add_hline(y=5, line={"color": BUDGET, "dash": "dash"})
    fig.add_annotation(
        x=1, xref="paper", y=math.log10(5) if yaxis.get("type") == "log" else 5,
        text="protocol target: IQR/median ≤ 5 %", showarrow=False, xanchor="right", yanchor="bottom",
        font={"color": BUDGET, "size": 12},
    )  # fmt: skip
    return finish_figure(
        fig,
        420,
        xaxis=axis_layout("median latency p50 (ms, measured)", [m.x for m in t.iqr]),
        yaxis=yaxis,
        showlegend=any(t.iqr_flags),  # "flagged" needs saying even when every design is flagged
    )


def drift_figure(t: Trust) -> go.Figure:
    """The reference module's median time in measurement order, one line per device."""
    import plotly.graph_objects as go

    from effscope.report.figures import PALETTE, finish_figure, integer_ticks, rounded

    fig = go.Figure()
    for i, s in enumerate(t.drift):
        fig.add_trace(
            go.Scatter(
                x=s.order,
                y=rounded(s.ms),
                mode="lines+markers",
                name=s.name,
                line={"color": PALETTE[i % len(PALETTE)]},
                hovertext=[html.escape(x) for x in s.ids],
                hovertemplate="%{hovertext}<br>reference p50: %{y:.4g} ms<extra></extra>",
            )
        )
    return finish_figure(
        fig,
        380,
        xaxis={
            "title": {"text": "measurement order (n-th Record)"},
            **integer_ticks([x for s in t.drift for x in s.order]),
        },
        yaxis={"title": {"text": "reference module p50 (ms)"}, "rangemode": "tozero"},
    )


def prediction_figure(t: Trust) -> go.Figure:
    """Predicted against measured latency, with the identity line and the ±10 % band."""
    import plotly.graph_objects as go

    from effscope.report.figures import FEASIBLE, finish_figure, rounded

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
            x=rounded(p.measured),
            y=rounded(p.predicted),
            mode="markers",
            name="designs",
            marker={"color": FEASIBLE, "size": 9},
            hovertext=[html.escape(i) for i in p.ids],
            hovertemplate="%{hovertext}<br>measured %{x:.4g} ms, predicted %{y:.4g} ms<extra></extra>",
        )
    )
    return finish_figure(
        fig,
        440,
        xaxis={"title": {"text": f"measured latency ({p.statistic}, ms)"}, "range": [0, hi]},
        yaxis={"title": {"text": "predicted latency (ms)"}, "range": [0, hi]},
    )


def trust_html(t: Trust) -> str:
    """Spread, flags, drift, predictions and calibration, each where it has data."""
    from effscope.report.figures import figure_html

    parts = []
    if t.iqr:
        parts.append(
            "<h3>Latency spread per design</h3>" + figure_html(iqr_figure(t), "fig-iqr") + notes_html([t.iqr_note])
        )
    if t.flags is not None:
        parts.append("<h3>Flags</h3>" + table_html(t.flags))
    if t.drift:
        parts.append(
            "<h3>Reference-module drift</h3>" + notes_html([t.drift_note]) + figure_html(drift_figure(t), "fig-drift")
        )
        if t.drift_table is not None:
            parts.append(table_html(t.drift_table))
    if t.screening is not None:
        parts.append("<h3>Latency predictor screening</h3>" + facts_html(t.screening.facts))
        parts.append(notes_html(t.screening.notes))
        if t.screening.remeasured is not None:
            parts.append("<h4>The front re-measured in fresh processes</h4>" + table_html(t.screening.remeasured))
    if t.prediction is not None:
        p = t.prediction
        parts.append(
            "<h3>Predicted vs measured latency</h3>"
            + f'<p class="hint">{100 * p.within:.0f} % of {len(p.ids)} predictions within ±10 %; '
            + f"mean absolute error {p.mape:.1f} %.</p>"
            + figure_html(prediction_figure(t), "fig-prediction")
        )
    if t.calibration is not None:
        parts.append("<h3>Proxy calibration</h3>" + table_html(t.calibration))
    return "".join(parts)


SECTION = Section("trust", "How far to trust the numbers", trust_section, trust_html, after="insight")
