"""Plain data for each section of a report, computed from a study's trials or from profile Records.

Nothing here draws or imports plotly (or optuna, or torch): the functions take designs (`Point`s) and return numbers,
labels and tables, so a report's content is tested on its own, the way optuna computes `_get_pareto_front_info`
before it plots. html.py renders what `report_data` returns.

Numbers keep effscope's unit-named keys (`latency_ms_p50`, `peak_mem_bytes`); tables and hover lines carry display
units in their labels ("MACs (G)", "peak memory (MiB)").
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from effscope.errors import EffscopeError
from effscope.knobs import format_value
from effscope.metrics import FLAGS, METRICS, MIB, TIMED, budgetable, display_value
from effscope.pareto import nondominated
from effscope.profile.record import PROTOCOL
from effscope.report.sections import REGISTERED
from effscope.stats import kendall_tau, spearman_rho
from effscope.units import si_unit
from effscope.urls import mask_command, mask_url

__all__ = [
    "Budget",
    "Objective",
    "Point",
    "ReportData",
    "ReportError",
    "Source",
    "Table",
    "budget_slices",
    "eta_squared",
    "hypervolume_2d",
    "least_violating",
    "module_shares",
    "pareto_front",
    "points_from_records",
    "points_from_rows",
    "points_from_trials",
    "report_data",
]

LATENCY = "latency_ms_p50"
PROTOCOL_NOTE = {  # what a provenance table says beside a timing protocol's name
    PROTOCOL: " (warm-up ≥ 25 ms, adaptive repeats to IQR/median ≤ 5 %, synchronized windows, freed heap kept mapped)",
}
TRAIN_STEP = TIMED["train"] + "p50"  # a training search's timing ([workload] mode = "train"), in place of LATENCY
QUALITY = "quality"
PROTOCOL_IQR_TARGET = 0.05  # measure.py repeats until IQR/median <= 5 %
# +-10 %: the accuracy figure latency predictors are judged by (docs/search.md#latency-predictor)
PREDICTION_BAND = 0.10
MAX_LEAST_VIOLATING = 5
MAX_BEST_ROWS = 8
MAX_RECORD_ROWS = 100
MAX_BREAKDOWNS = 4
MIN_PART_SHARE = 2.0  # percent; smaller parts are folded into "other"
MAX_PARALLEL_KNOBS = 12
MAX_DISTINCT_TICKS = 6
IMPORTANCE_BINS = 5
MIN_IMPORTANCE_POINTS = 4

# Statuses of designs that have no trustworthy measurement (never on a front, never "least violating").
UNMEASURED = frozenset({"invalid", "failed", "predicted-infeasible"})


def number_keys() -> list[str]:
    """The numbers a design can carry (hover shows every one present): the metrics catalogue, read at call time so
    that a metric registered later is shown too, and the 95 % interval (`_lo`, `_hi`) of each budgetable one."""
    return [*METRICS, *(f"{name}{end}" for name in budgetable() for end in ("_lo", "_hi"))]


class ReportError(EffscopeError):
    """A report cannot be made: the study or file is missing, empty or unreadable, or an option is wrong."""


# ---------------------------------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class Objective:
    """An objective as the study declares it; a proxy is always named as one."""

    name: str
    label: str
    direction: str = "maximize"
    is_proxy: bool | None = None

    @property
    def display(self) -> str:
        """The label a person reads: proxies say so even if their label forgot to."""
        if self.is_proxy and "proxy" not in self.label.lower():
            return f"{self.label} (proxy, not accuracy)"
        if self.is_proxy is None:
            return f"{self.label} (the study does not say whether this is a proxy)"
        return self.label


@dataclass(frozen=True)
class Budget:
    """A limit on one statistic, e.g. latency_ms_p90 <= 12 ms."""

    name: str
    statistic: str
    limit: float
    unit: str = ""

    @property
    def text(self) -> str:
        return f"{self.statistic} ≤ {quantity(self.limit, self.unit)}"


def quantity(value: float | None, unit: str) -> str:
    """A number with its unit, bytes as MiB/GiB."""
    if value is None:
        return "-"
    if unit == "bytes":
        return f"{value / 2**30:.3g} GiB" if value >= 2**30 else f"{value / MIB:.4g} MiB"
    return f"{value:.4g} {unit}".strip()


@dataclass
class Point:
    """One design in a report: a study trial or a profile Record, with everything the figures need.

    Attributes:
        id: what a person reads ("trial 12", "hilo 14x14").
        numbers: unit-named numbers (`quality`, `latency_ms_p50`, `macs`, ...); a missing number is absent or None.
        status: a trial's status ("measured", "cached", "invalid", ...) or a Record's ("ok", "failed").
        constraints: the trial's constraint values (<= 0 is satisfied); empty for Records.
        order: when it was measured (ISO time), for drift plots.
    """

    id: str
    target: str
    family: str | None = None
    kind: str | None = None
    knobs: dict[str, Any] = field(default_factory=dict)
    numbers: dict[str, float | None] = field(default_factory=dict)
    status: str = "ok"
    constraints: dict[str, float] = field(default_factory=dict)
    preset: str | None = None
    flags: tuple[str, ...] = ()
    size: tuple[int, int] | None = None
    trial: int | None = None
    record_uid: str | None = None
    order: str | None = None
    reason: str | None = None
    workload: dict[str, Any] = field(default_factory=dict)
    env: dict[str, Any] = field(default_factory=dict)
    macs_by_module: dict[str, float] | None = None
    time_by_module_ms: dict[str, float] | None = None
    command: str | None = None
    missing: dict[str, str] = field(default_factory=dict)  # number -> why it could not be measured
    protocol: str | None = None  # the timing protocol's name (effscope-v2, litv2, ...), where known

    def get(self, key: str) -> float | None:
        """A finite number or None (missing is never 0)."""
        return _finite(self.numbers.get(key))

    @property
    def measured(self) -> bool:
        return self.status not in UNMEASURED and (self.get(LATENCY) is not None or self.get(TRAIN_STEP) is not None)

    @property
    def violation(self) -> float:
        """Sum of the positive constraint values (Optuna sums them raw; effscope normalizes each)."""
        return sum(max(0.0, v) for v in self.constraints.values())

    @property
    def feasible(self) -> bool:
        return self.status not in UNMEASURED and all(v <= 0 for v in self.constraints.values())


@dataclass
class Source:
    """Where a report's designs come from: one study (with its attributes) or a set of Records."""

    kind: str  # "study" or "records"
    name: str
    points: list[Point]
    storage: str | None = None
    attrs: dict[str, Any] = field(default_factory=dict)
    directions: list[str] = field(default_factory=list)
    n_running: int = 0


@dataclass
class Table:
    """A table: column labels (with units) and rows of raw values (html.py formats them)."""

    columns: list[str]
    rows: list[list[Any]]


def _finite(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _plain(value: Any) -> Any:
    """numpy scalars and NaN (from DataFrames) as plain Python values."""
    if hasattr(value, "item") and not isinstance(value, list | tuple | dict):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _size(value: Any) -> tuple[int, int] | None:
    if not value:
        return None
    h, w = list(value)[:2]
    return (int(h), int(w))


# ------------------------------------------------------------------------------------------- designs from sources


def points_from_records(records: Iterable[Any]) -> list[Point]:
    """One Point per Record (effscope.profile.record.Record), ids made unique ("vit 14x14", "vit 14x14 (2)")."""
    points = []
    for r in records:
        flat = r.flat()
        size = _size(r.workload.get("size"))
        count = r.details.get("count") or {}
        points.append(
            Point(
                id=_record_label(r.target, size),
                target=r.target,
                family=r.family,
                kind=r.kind,
                knobs=dict(r.knobs),
                numbers={k: flat.get(k) for k in number_keys() if k in flat},
                status=r.status,
                flags=tuple(r.flags),
                size=size,
                trial=r.trial,
                record_uid=r.uid,
                order=r.created_at,
                reason=r.error,
                workload=dict(r.workload),
                env=dict(r.env),
                macs_by_module=count.get("macs_by_module"),
                time_by_module_ms=r.details.get("time_by_module_ms"),
                command=r.command,
                missing=dict(r.missing),
                protocol=r.protocol.get("name"),
            )
        )
    return _unique_ids(points)


def points_from_rows(rows: Iterable[Mapping[str, Any]]) -> list[Point]:
    """Points from flat rows (`Record.flat()`, as exported to CSV/Parquet/JSON); breakdowns are not in them."""
    points = []
    workload_keys = ("device", "dtype", "batch", "threads", "channels_last", "compile", "attention")
    for raw in rows:
        row = {k: _plain(v) for k, v in raw.items()}
        h, w = row.get("height"), row.get("width")
        size = (int(h), int(w)) if h is not None and w is not None else None
        target = str(row.get("target"))
        trial = row.get("trial")
        points.append(
            Point(
                id=_record_label(target, size),
                target=target,
                family=row.get("family"),
                kind=row.get("kind"),
                knobs={k.removeprefix("knob."): v for k, v in row.items() if k.startswith("knob.")},
                numbers={k: row.get(k) for k in number_keys() if k in row},
                status=str(row.get("status") or "ok"),
                flags=tuple(f for f in str(row.get("flags") or "").split(",") if f),
                size=size,
                trial=int(trial) if trial is not None else None,
                record_uid=row.get("uid"),
                order=row.get("created_at"),
                reason=row.get("error"),
                workload={k: row.get(k) for k in workload_keys if k in row},
                env={k.removeprefix("env."): v for k, v in row.items() if k.startswith("env.")},
                command=row.get("command"),
                protocol=row.get("protocol"),
            )
        )
    return _unique_ids(points)


def points_from_trials(trials: Iterable[Any], records: Iterable[Any] = (), target: str = "") -> list[Point]:
    """One Point per finished trial (optuna FrozenTrial; duck-typed), joined to its Record by `record_uid`.

    The trial's user attributes (the search contract) come first; its Record fills in what they lack (IQR, flags,
    environment, the per-module MACs). Running and waiting trials are left out.
    """
    by_uid = {r.uid: r for r in records}
    points = []
    for t in trials:
        state = getattr(t.state, "name", str(t.state))
        if state not in ("COMPLETE", "FAIL", "PRUNED"):
            continue
        attrs = dict(t.user_attrs)
        record = by_uid.get(attrs.get("record_uid") or "")
        base = points_from_records([record])[0] if record is not None else Point(id="", target="")
        numbers = dict(base.numbers)
        numbers.update({k: attrs[k] for k in number_keys() if attrs.get(k) is not None})
        status = attrs.get("status") or ("measured" if state == "COMPLETE" else "failed")
        # An unmeasured design's objective values are placeholders for the sampler, not numbers to plot.
        values = list(t.values or []) if state == "COMPLETE" and status not in UNMEASURED else []
        quality = _finite(values[0]) if values else None
        numbers[QUALITY] = quality if quality is not None else _finite(attrs.get("quality"))
        if numbers.get(LATENCY) is None and numbers.get(TRAIN_STEP) is None and len(values) > 1:
            numbers[LATENCY] = _finite(values[1])  # (a training search's second value is its step time, stored)
        preset = attrs.get("preset")
        points.append(
            Point(
                id=f"trial {t.number}" + (f" ({preset})" if preset else ""),
                target=base.target or target,
                family=base.family,
                kind=base.kind,
                knobs=dict(attrs.get("knobs") or base.knobs or t.params),
                numbers=numbers,
                status=status,
                constraints=_trial_constraints(t),
                preset=preset,
                flags=tuple(attrs.get("flags") or base.flags),
                size=base.size,
                trial=t.number,
                record_uid=attrs.get("record_uid"),
                order=base.order or _iso(getattr(t, "datetime_complete", None)),
                reason=attrs.get("reason") or base.reason,
                workload=base.workload,
                env=base.env,
                macs_by_module=base.macs_by_module,
                time_by_module_ms=base.time_by_module_ms,
                missing=base.missing,
                protocol=base.protocol,
            )
        )
    return points


def _iso(when: Any) -> str | None:
    return when.isoformat(timespec="seconds") if hasattr(when, "isoformat") else None


def _record_label(target: str, size: tuple[int, int] | None) -> str:
    return f"{target} {size[0]}x{size[1]}" if size else target


def _unique_ids(points: list[Point]) -> list[Point]:
    seen: dict[str, int] = {}
    for p in points:
        seen[p.id] = seen.get(p.id, 0) + 1
        if seen[p.id] > 1:
            p.id = f"{p.id} ({seen[p.id]})"
    return points


# ------------------------------------------------------------------------------------------------- the front


def _better(direction: str) -> float:
    return 1.0 if direction == "maximize" else -1.0


def pareto_front(
    points: Sequence[Point], direction: str = "maximize", x: str = LATENCY, y: str = QUALITY
) -> list[Point]:
    """The points no other point dominates in (`y` better by `direction`, `x` lower), sorted by `x`.

    Points missing either number are ignored; equal points are all kept (neither dominates the other).
    """
    sign = _better(direction)
    front = nondominated(points, lambda p: (p.get(y), p.get(x)), (direction, "minimize"))
    return sorted(front, key=lambda p: (p.get(x), -sign * p.get(y)))


@dataclass
class Slice:
    """The front within one budget."""

    budget: Budget | None
    n_within: int
    front: list[Point]


def latency_budgets(budgets: Sequence[Budget]) -> list[Budget]:
    # A time budget: on a forward's latency or, in a training search, on the training step.
    return sorted((b for b in budgets if b.statistic.startswith(("latency", "train_step"))), key=lambda b: b.limit)


def front_statistic(budgets: Sequence[Budget]) -> str:
    """The latency statistic a front is drawn and ranked on: the loosest latency budget's (the search's
    constraint), so a design left of a budget line meets that budget; the median without latency budgets."""
    lat = latency_budgets(budgets)
    return lat[-1].statistic if lat else LATENCY


def budget_slices(points: Sequence[Point], budgets: Sequence[Budget], direction: str = "maximize") -> list[Slice]:
    """The front of the feasible designs within each latency budget, tightest first.

    A study runs at its loosest latency budget (the constraint); a tighter one keeps only the designs whose
    statistic is within its limit. Each front ranks latency by the budget's statistic, so a tighter budget's front
    is part of a looser one's. Other budgets (memory) are constraints already. Without latency budgets, one slice
    holds the whole feasible front.
    """
    feasible = [p for p in _dedupe_measurements(points) if p.feasible and p.measured]
    if not latency_budgets(budgets):
        return [Slice(None, len(feasible), pareto_front(feasible, direction))]
    slices = []
    for b in latency_budgets(budgets):
        within = [p for p in feasible if p.get(b.statistic) is not None and p.get(b.statistic) <= b.limit]
        slices.append(Slice(b, len(within), pareto_front(within, direction, x=b.statistic)))
    return slices


def least_violating(points: Sequence[Point], k: int = MAX_LEAST_VIOLATING, direction: str = "maximize") -> list[Point]:
    """The `k` measured designs that miss their budgets by the least (total violation), best quality first on ties.

    Invalid and failed designs are left out: their violation says nothing about how close they came.
    """
    sign = _better(direction)
    measured = [p for p in points if p.measured and p.constraints.get("valid", 0.0) <= 0]
    measured.sort(key=lambda p: (p.violation, -sign * (p.get(QUALITY) or 0.0), p.get(LATENCY), p.id))
    return measured[:k]


def hypervolume_2d(
    points: Sequence[tuple[float, float]], reference: tuple[float, float], direction: str = "maximize"
) -> float:
    """Area dominated by (quality, latency) points up to `reference` (quality better by `direction`, latency lower)."""
    sign = _better(direction)
    q_ref, l_ref = reference
    # badness: lower is better on both axes
    pts = [(lat, -sign * q) for q, lat in points if lat < l_ref and -sign * q < -sign * q_ref]
    pts.sort()
    area, best_b = 0.0, -sign * q_ref
    front = []
    for a, b in pts:
        if b < best_b:
            front.append((a, b))
            best_b = b
    for i, (a, b) in enumerate(front):
        a_next = front[i + 1][0] if i + 1 < len(front) else l_ref
        area += (a_next - a) * (-sign * q_ref - b)
    return area


# ---------------------------------------------------------------------------------------------- knob helpers


def knob_text(value: Any) -> str:
    return format_value(value)


def varying_knobs(points: Sequence[Point]) -> list[str]:
    """Knobs whose value differs between the designs, in first-seen order."""
    names: dict[str, set[str]] = {}
    for p in points:
        for k, v in p.knobs.items():
            names.setdefault(k, set()).add(knob_text(v))
    return [k for k, values in names.items() if len(values) > 1]


def knobs_short(p: Point, names: Sequence[str]) -> str:
    return ", ".join(f"{k}={knob_text(p.knobs[k])}" for k in names if k in p.knobs)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def eta_squared(levels: Sequence[Any], values: Sequence[float], bins: int = IMPORTANCE_BINS) -> float | None:
    """Share of the variance of `values` explained by grouping on `levels` alone (one-way η²).

    Numeric levels with more than `bins` distinct values are grouped into `bins` runs of neighbouring values, so a
    continuous knob does not explain everything by giving every design its own group. None when it cannot be said
    (fewer than two groups, or constant values).
    """
    keys = [knob_text(v) for v in levels]
    distinct = sorted({v for v in levels if _is_number(v)})
    if len(distinct) > bins and all(_is_number(v) for v in levels):
        index = {v: i * bins // len(distinct) for i, v in enumerate(distinct)}
        keys = [str(index[v]) for v in levels]
    if len(set(keys)) < 2 or len(values) < 2:
        return None
    mean = sum(values) / len(values)
    total = sum((v - mean) ** 2 for v in values)
    if total == 0:
        return None
    groups: dict[str, list[float]] = {}
    for key, v in zip(keys, values, strict=True):
        groups.setdefault(key, []).append(v)
    between = sum(len(g) * (sum(g) / len(g) - mean) ** 2 for g in groups.values())
    return between / total


def module_shares(macs_by_module: Mapping[str, float]) -> list[tuple[str, float]]:
    """Top-level parts of a module and their MACs: depth-1 children, numbered containers (stages.0, stages.1, ...)
    expanded one level, plus the MACs of ops outside any child. Parts without MACs are dropped."""
    total = macs_by_module.get("", 0) or 0
    parts: list[tuple[str, float]] = []
    for name, macs in macs_by_module.items():
        if not name or "." in name:
            continue
        kids = [k for k in macs_by_module if k.startswith(name + ".") and k.count(".") == 1]
        if len(kids) >= 2 and all(k.rsplit(".", 1)[1].isdigit() for k in kids):
            parts.extend((k, macs_by_module[k]) for k in kids)
        else:
            parts.append((name, macs))
    rest = total - sum(m for _, m in parts)
    if rest > 0:
        parts.append(("(outside submodules)", rest))
    return [(n, m) for n, m in parts if m]


def _slope(xs: Sequence[float], ys: Sequence[float | None]) -> float | None:
    """Least-squares slope of log(y) on log(x): 1 = linear, 2 = quadratic growth."""
    pairs = [(math.log(x), math.log(y)) for x, y in zip(xs, ys, strict=True) if y is not None and y > 0 and x > 0]
    if len({a for a, _ in pairs}) < 2:
        return None
    mx = sum(a for a, _ in pairs) / len(pairs)
    my = sum(b for _, b in pairs) / len(pairs)
    sxx = sum((a - mx) ** 2 for a, _ in pairs)
    return sum((a - mx) * (b - my) for a, b in pairs) / sxx


# ------------------------------------------------------------------------------------------------- sections


@dataclass
class Summary:
    title: str
    facts: list[tuple[str, Any]]
    objectives: list[Objective]
    budgets: list[Budget]
    best_title: str
    best: Table | None
    notes: list[str]


@dataclass
class Marker:
    """One plotted design: position, name and hover lines."""

    id: str
    x: float | None
    y: float | None
    hover: list[tuple[str, Any]]
    x_interval: tuple[float, float] | None = None  # the 95 % interval of x, where measured (a band on the plot)


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


@dataclass
class GapSeries:
    family: str
    markers: list[Marker]  # x = MACs (G), y = latency p50 (ms); hover is the id and the plotted numbers
    throughput: list[float | None]  # img/s, aligned with markers
    kinds: list[str | None]  # "block" / "model", aligned with markers


@dataclass
class Gap:
    series: list[GapSeries]
    correlations: Table
    headline: dict[str, Any]  # overall n, spearman/kendall for latency and throughput
    notes: list[str]
    x_label: str  # MACs with the SI prefix the markers' x is in
    x_scale: float  # the markers' x times this is MACs
    throughput: bool  # plot throughput: some design ran at batch > 1 (at batch 1 it is 1000 / latency)


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


@dataclass
class Insight:
    importance: list[Importance]
    axes: list[ParallelAxis]
    lines: list[ParallelLine]
    hypervolume: Hypervolume | None
    notes: list[str]


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
class Trust:
    iqr: list[Marker]  # x = p50 ms, y = IQR / median %
    iqr_flags: list[str]  # each design's flags, "" when none
    flags: Table | None
    drift: list[DriftSeries]
    drift_table: Table | None
    prediction: Prediction | None
    calibration: Table | None
    iqr_note: str
    drift_note: str


@dataclass
class ReportData:
    """Everything a report shows; a section is None when its data does not exist."""

    title: str
    summary: Summary
    front: Front | None
    gap: Gap | None
    scaling: Scaling | None
    breakdown: Breakdown | None
    insight: Insight | None
    trust: Trust | None
    provenance: Table
    registered: dict[str, Any] = field(default_factory=dict)  # key -> data of each registered section that has data


# ---------------------------------------------------------------------------------------------- study meaning


def objectives_of(source: Source) -> list[Objective]:
    """The study's objectives from its attributes; a study that does not describe them is said to be unclear."""
    declared = source.attrs.get("objectives") or []
    objs = [
        Objective(
            name=str(o.get("name", f"objective {i}")),
            label=str(o.get("label") or o.get("name") or f"objective {i}"),
            direction=str(o.get("direction") or (source.directions[i] if i < len(source.directions) else "maximize")),
            is_proxy=o.get("is_proxy"),
        )
        for i, o in enumerate(declared)
    ]
    if not objs and source.kind == "study":
        direction = source.directions[0] if source.directions else "maximize"
        objs = [Objective("quality", "quality (values[0])", direction.lower(), None)]
        if len(source.directions) > 1:
            objs.append(Objective(LATENCY, "median latency (ms, measured)", "minimize", False))
    return objs


def budgets_of(source: Source) -> list[Budget]:
    out = []
    for b in source.attrs.get("budgets") or []:
        limit = _finite(b.get("limit"))
        if limit is not None:
            out.append(Budget(str(b.get("name", "")), str(b.get("statistic", "")), limit, str(b.get("unit", ""))))
    return out


def _quality(source: Source) -> Objective | None:
    objs = objectives_of(source)
    return objs[0] if objs and objs[0].name != LATENCY else None


def device_of(source: Source) -> str:
    names = sorted({str(p.env.get("device_name") or p.workload.get("device")) for p in source.points if p.env})
    return str(source.attrs.get("device_name") or " | ".join(n for n in names if n != "None") or "unknown device")


def hover(p: Point, quality: Objective | None = None) -> list[tuple[str, Any]]:
    """Every knob and number of a design, as (label, value) lines in display units."""
    lines: list[tuple[str, Any]] = [("design", p.id), ("target", p.target), ("status", p.status)]
    if p.preset:
        lines.append(("preset", p.preset))
    if p.size:
        lines.append(("input", f"{p.size[0]}x{p.size[1]}"))
    if quality is not None and p.get(QUALITY) is not None:
        lines.append((quality.display, p.get(QUALITY)))
    for metric in list(METRICS.values()):
        v = p.get(metric.name)
        if v is not None:
            lines.append((metric.label, display_value(metric, v)))
    for key, v in p.constraints.items():
        lines.append((f"constraint {key}", v))
    if p.flags:
        lines.append(("flags", ", ".join(p.flags)))
    if p.reason:
        lines.append(("reason", p.reason))
    lines.extend((f"knob {k}", knob_text(v)) for k, v in p.knobs.items())
    return lines


def _marker(p: Point, x: str, y: str, quality: Objective | None, *, x_scale: float = 1.0) -> Marker:
    xv, yv = p.get(x), p.get(y)
    lo, hi = p.get(f"{x}_lo"), p.get(f"{x}_hi")
    interval = (lo / x_scale, hi / x_scale) if lo is not None and hi is not None else None
    return Marker(p.id, xv / x_scale if xv is not None else None, yv, hover(p, quality), interval)


def _dedupe_measurements(points: Sequence[Point]) -> list[Point]:
    """One point per measurement: cached trials reuse a Record, which must count once."""
    seen: set[str] = set()
    out = []
    for p in points:
        key = p.record_uid or p.id
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out


# ----------------------------------------------------------------------------------------------- section data


def summary_section(source: Source, front_points: Sequence[Point]) -> Summary:
    objs = objectives_of(source)
    budgets = budgets_of(source)
    quality = _quality(source)
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
            ("distinct measured designs", sum(1 for p in _dedupe_measurements(pts) if p.measured)),
            ("feasible designs", len(feasible)),
            ("trial statuses", ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items()))),
        ]
        if source.n_running:
            facts.append(("still running", source.n_running))
        if not feasible:
            notes.append("No design met every budget: the report lists the least-violating designs instead of a front.")
        best_pts = sorted(
            front_points, key=lambda p: -_better(quality.direction if quality else "maximize") * p.get(QUALITY)
        )[:MAX_BEST_ROWS]
        if not feasible:
            best_pts = least_violating(pts, direction=quality.direction if quality else "maximize")
        best_title = "Best designs (the Pareto front)" if feasible else "Least-violating designs (nothing feasible)"
        best = _design_table(best_pts, pts, quality, with_violation=not feasible) if best_pts else None
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
        best = _design_table(rows_pts[:MAX_RECORD_ROWS], pts, None, with_violation=False)
    if quality is not None and quality.is_proxy:
        notes.append(
            f"The quality objective is a proxy: {quality.display}. A front of a proxy is not an accuracy front."
        )
    targets = sorted({p.target for p in pts})
    name = target if len(targets) <= 3 or source.attrs.get("target") else f"{len(targets)} targets"
    title = f"effscope report: {name} on {device_of(source)}"
    return Summary(title, facts, objs, budgets, best_title, best, notes)


def _design_table(rows_pts: Sequence[Point], all_pts: Sequence[Point], quality, *, with_violation: bool) -> Table:
    """Designs as rows; the knobs column shows the knobs that vary between designs of the same target."""
    targets = {p.target for p in all_pts}
    varying = {t: varying_knobs([p for p in all_pts if p.target == t]) for t in targets}
    columns = ["design"]
    if quality is not None:
        columns.append(quality.display)
    p_prefix, p_scale = si_unit(p.get("params") for p in rows_pts)
    m_prefix, m_scale = si_unit(p.get("macs") for p in rows_pts)
    timing = _timing_columns(all_pts)
    columns += [*timing.values(), f"params ({p_prefix or 'count'})"]
    columns += [f"MACs ({m_prefix or 'count'})", "status"]
    if with_violation:
        columns.append("over budget")
    columns.append("knobs that vary" if len(targets) == 1 else "knobs that vary (within a target)")
    rows = []
    for p in rows_pts:
        row: list[Any] = [p.id]
        if quality is not None:
            row.append(p.get(QUALITY))
        params, macs = p.get("params"), p.get("macs")
        row += [
            *(p.get(k) for k in timing),
            params / p_scale if params is not None else None,
            macs / m_scale if macs is not None else None,
            p.status + (f": {p.reason}" if p.reason and p.status not in ("ok", "measured", "cached") else ""),
        ]
        if with_violation:
            row.append(_violation_text(p))
        row.append(knobs_short(p, varying.get(p.target) or []))
        rows.append(row)
    return Table(columns, rows)


def timing_key(points: Sequence[Point]) -> str:
    """The median time a study minimizes: a forward's latency, or, where every timed design was timed as a training
    step ([workload] mode = "train"), the step's."""
    timed = [p for p in points if p.get(LATENCY) is not None or p.get(TRAIN_STEP) is not None]
    return TRAIN_STEP if timed and all(p.get(LATENCY) is None for p in timed) else LATENCY


def _timing_columns(points: Sequence[Point]) -> dict[str, str]:
    """The two timing columns, key -> heading: p50 and p90 of `timing_key`."""
    p50 = timing_key(points)
    return {k: METRICS[k].label for k in (p50, p50.replace("_p50", "_p90"))}


def _trial_constraints(t: Any) -> dict[str, float]:
    """A trial's constraints by name: Optuna also lists, as `0`, `1`, ..., the unnamed copy that effscope writes
    for optuna-dashboard (docs/search.md#storage); a study with only unnamed constraints keeps those."""
    c = getattr(t, "constraints", None) or {}
    named = {k: v for k, v in c.items() if not k.isdigit()}
    return {k: float(v) for k, v in (named or c).items()}


def _violation_text(p: Point) -> str:
    over = [f"{k} +{100 * v:.1f} %" for k, v in p.constraints.items() if v > 0]
    return ", ".join(over) or "none"


def front_section(source: Source) -> Front | None:
    """Quality vs measured latency: groups, the front, presets, budget lines and the per-budget table.

    x is the statistic the latency budgets limit (`front_statistic`), so the picture, the budget lines and the
    per-budget table judge a design by one number.
    """
    quality = _quality(source)
    if source.kind != "study" or quality is None:
        return None
    budgets = budgets_of(source)
    stat = front_statistic(budgets)
    pts = [p for p in source.points if p.get(QUALITY) is not None and p.get(stat) is not None]
    if not pts:
        return None
    direction = quality.direction
    feasible = [p for p in _dedupe_measurements(pts) if p.feasible and p.measured]
    best = pareto_front(feasible, direction, x=stat)
    best_ids = {p.id for p in best}
    name = _number_name(stat)
    notes = [f"x is the measured {name}, the statistic the budgets limit: a design left of a budget line meets it."]
    if stat != LATENCY:
        notes[0] += f" The front is the best quality at each {name}; the search itself minimizes the median (p50)."
    groups: dict[str, list[Marker]] = {
        "infeasible": [_marker(p, stat, QUALITY, quality) for p in pts if not (p.feasible and p.measured)],
        "feasible": [_marker(p, stat, QUALITY, quality) for p in feasible if p.id not in best_ids],
        "best": [_marker(p, stat, QUALITY, quality) for p in best],
    }
    lv_table = None
    if not feasible:
        lv = least_violating(source.points, direction=direction)
        groups["least violating"] = [
            _marker(p, stat, QUALITY, quality) for p in lv if p.get(QUALITY) is not None and p.get(stat) is not None
        ]
        lv_table = _design_table(lv, source.points, quality, with_violation=True)
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
    lines = [
        (b.limit, f"budget {b.statistic} ≤ {quantity(b.limit, b.unit)}")
        for b in latency_budgets(budgets)
        if b.statistic == stat
    ]
    presets = [_marker(p, stat, QUALITY, quality) for p in pts if p.preset]
    if any(m.x_interval for ms in groups.values() for m in ms):
        notes.append(
            f"The horizontal bar through a design is the 95 % confidence interval of its {name}. A design whose "
            "interval contains a budget is measured again; if it still does, it is flagged latency-uncertain: "
            "feasible or not by chance."
        )
    return Front(
        x_statistic=stat,
        x_label=f"{name} (ms, measured; the budgets' statistic)"
        if stat != LATENCY
        else "median latency p50 (ms, measured)",
        y_label=quality.display,
        direction=direction,
        groups={k: v for k, v in groups.items() if v},
        front_line=[(p.get(stat), p.get(QUALITY)) for p in best],
        presets=presets,
        budget_lines=lines,
        slices=slice_table(source.points, budgets, quality),
        slices_hint=(
            "Each design is listed once, under the tightest budget it meets; the front within a looser budget is "
            "its own rows plus all the rows above it."
        )
        if len(latency_budgets(budgets)) > 1
        else None,
        least_violating=lv_table,
        notes=notes,
    )


def _number_name(key: str) -> str:
    """A number's label without its unit: latency_ms_p90 -> 'latency p90'."""
    metric = METRICS.get(key)
    return (metric.label if metric else key).split(" (")[0]


def slice_table(points: Sequence[Point], budgets: Sequence[Budget], quality: Objective) -> Table:
    """The fronts per budget, tightest budget first, each design once: under the tightest budget whose front it is
    on. A looser budget's front is its own rows plus the tighter budgets' rows; a budget nothing fits says so."""
    names = varying_knobs(points)
    timing = _timing_columns(points)
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
        ranked = sorted(new, key=lambda p: -_better(quality.direction) * p.get(QUALITY))
        for i, p in enumerate(ranked):
            shown = [label, s.n_within] if i == 0 else ["", ""]
            rows.append([*shown, p.id, p.get(QUALITY), *(p.get(k) for k in timing), knobs_short(p, names)])
        listed.update(p.id for p in s.front)
    return Table(columns, rows)


def gap_section(source: Source) -> Gap | None:
    """MACs against measured latency and throughput, per family, with rank correlations."""
    pts = [p for p in _dedupe_measurements(source.points) if p.measured and p.get("macs") is not None]
    if len(pts) < 3 or len({p.get("macs") for p in pts}) < 2:
        return None
    families: dict[str, list[Point]] = {}
    for p in pts:
        families.setdefault(p.family or p.target, []).append(p)
    prefix, scale = si_unit(p.get("macs") for p in pts)
    series = [
        GapSeries(
            fam,
            [Marker(p.id, p.get("macs") / scale, p.get(LATENCY), []) for p in fam_pts],
            [p.get("throughput_img_s") for p in fam_pts],
            [p.kind for p in fam_pts],
        )
        for fam, fam_pts in sorted(families.items())
    ]
    throughput = any((p.workload.get("batch") or 1) > 1 for p in pts if p.get("throughput_img_s") is not None)
    columns = ["designs", "n", "Spearman ρ (MACs, latency)", "Kendall τ (MACs, latency)"]
    if throughput:
        columns += ["Spearman ρ (MACs, throughput)", "Kendall τ (MACs, throughput)"]
    chosen = [("all designs", pts)]
    chosen += [(fam, fp) for fam, fp in sorted(families.items()) if len(fp) >= 3 and len(families) > 1]
    rows = [_correlation_row(name, fp)[: len(columns)] for name, fp in chosen]
    headline = dict(zip(columns[1:], rows[0][1:], strict=True))
    notes = [
        "A rank correlation of 1 would mean MACs order the designs exactly as measured latency does; "
        "anything less is the gap between the indirect metric and real speed on this device."
    ]
    if not throughput and any(p.get("throughput_img_s") is not None for p in pts):
        notes.append(
            "Throughput is not plotted: every design ran at batch 1, where images/s is 1000 / latency in ms, "
            "the latency panel again."
        )
    kinds = {p.kind for p in pts}
    if len(kinds) > 1:
        notes.append(
            "Blocks (circles) and whole models (diamonds) are mixed here; "
            "compare within a family for a like-for-like gap."
        )
    x_label = f"MACs ({prefix or 'count'}, fvcore convention)"
    return Gap(series, Table(columns, rows), headline, notes, x_label, scale, throughput)


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


def scaling_section(source: Source) -> Scaling | None:
    """Latency and peak memory against the number of tokens (or pixels), per design measured at several sizes."""
    groups: dict[str, list[Point]] = {}
    for p in source.points:
        if p.size and p.measured:
            wl = {k: v for k, v in p.workload.items() if k != "size"}
            key = json.dumps([p.target, p.knobs, wl, p.env.get("device_name")], sort_keys=True, default=str)
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


def breakdown_section(source: Source, front: Sequence[Point]) -> Breakdown | None:
    """Share of MACs per top-level part (stages of a model, attention/MLP of a block) beside share of time."""
    if source.kind == "study":
        chosen = [p for p in front if p.macs_by_module] or [p for p in source.points if p.macs_by_module][:1]
    else:
        latest: dict[str, Point] = {}
        for p in sorted(source.points, key=lambda p: (p.kind != "model", p.order or "")):
            if p.macs_by_module and p.target not in latest:
                latest[p.target] = p
        chosen = list(latest.values())
    items = []
    for p in chosen[:MAX_BREAKDOWNS]:
        parts = module_shares(p.macs_by_module or {})
        total = sum(m for _, m in parts)
        if not parts or total <= 0:
            continue
        time_share = None
        if p.time_by_module_ms:
            t_total = sum(p.time_by_module_ms.get(n, 0.0) for n, _ in parts)
            if t_total > 0:
                time_share = [
                    100 * p.time_by_module_ms[n] / t_total if n in p.time_by_module_ms else None for n, _ in parts
                ]
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
    return Breakdown(items, notes)


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


def insight_section(source: Source, front: Sequence[Point]) -> Insight | None:
    """Knob importance, parallel coordinates and the hypervolume history of a study."""
    quality = _quality(source)
    if source.kind != "study":
        return None
    measured = [p for p in _dedupe_measurements(source.points) if p.measured]
    names = varying_knobs(measured)
    if len(measured) < 2 or not names:
        return None
    timing = timing_key(measured)
    objectives = [(timing, "median training step (ms)" if timing == TRAIN_STEP else "median latency (ms)")]
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
    axes, lines = parallel_coordinates(measured, names[:MAX_PARALLEL_KNOBS], objectives, front)
    hv = hypervolume_history(source, quality) if quality is not None else None
    notes = [
        "Knob importance is η²: the share of an objective's variance that a knob explains on its own (numeric knobs "
        f"grouped into {IMPORTANCE_BINS} ranges). It ignores interactions and means little with few trials."
    ]
    return Insight(importance, axes, lines, hv, notes)


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
        if present and all(_is_number(v) for v in present):
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
    sign = _better(direction)
    trials = sorted((p for p in source.points if p.trial is not None), key=lambda p: p.trial)
    feasible = [p for p in trials if p.feasible and p.measured and p.get(QUALITY) is not None]
    if not feasible:
        return None
    qs = [p.get(QUALITY) for p in feasible]
    timing = timing_key(feasible)
    lats = [p.get(timing) for p in feasible]
    worst_q = min(qs) if sign > 0 else max(qs)
    q_span = (max(qs) - min(qs)) or abs(worst_q) or 1.0
    q_ref = worst_q - sign * 0.1 * q_span
    lat_budgets = latency_budgets(budgets_of(source))
    if lat_budgets:
        l_ref = lat_budgets[-1].limit
        l_text = "the loosest latency budget"
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
        f"feasible design), {_number_name(timing)} = {l_ref:.4g} ms ({l_text})"
    )
    return Hypervolume(xs, values, (q_ref, l_ref), text)


def trust_section(source: Source) -> Trust | None:
    """How far to trust the numbers: spread, flags, reference drift, predictions and proxy calibration."""
    pts = [p for p in _dedupe_measurements(source.points) if p.measured]
    iqr = []
    flags = []
    for p in pts:
        med, spread = p.get(LATENCY), p.get("latency_ms_iqr")
        if med and spread is not None:
            iqr.append(Marker(p.id, med, 100 * spread / med, []))
            flags.append(", ".join(p.flags))
    flags_table = _flags_table(_dedupe_measurements(source.points))
    drift, drift_table = reference_drift(pts)
    statistic = str((source.attrs.get("predictor") or {}).get("statistic", LATENCY))
    prediction = prediction_accuracy(_dedupe_measurements(source.points), statistic)
    calibration = _calibration_table(source.attrs.get("calibration") or {})
    if not (iqr or flags_table or drift or prediction or calibration):
        return None
    iqr_note = (
        f"The protocol repeats timing until IQR/median ≤ {100 * PROTOCOL_IQR_TARGET:.0f} % or its time cap; "
        "designs above the line kept a wide spread."
    )
    drift_note = (
        "The reference module is a fixed workload timed beside every measurement: if its time drifts, "
        "the device (clocks, load, thermals) changed during the run and latencies drift with it."
    )
    return Trust(iqr, flags, flags_table, drift, drift_table, prediction, calibration, iqr_note, drift_note)


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
            name = f"{p.env.get('device_name') or p.workload.get('device') or 'device'}"
            groups.setdefault(name, []).append(p)
    series, rows = [], []
    for name, g in groups.items():
        ms = [p.get("reference_ms_p50") for p in g]
        series.append(DriftSeries(name, list(range(1, len(g) + 1)), [p.id for p in g], ms))
        med = _median(ms)
        rows.append([name, len(ms), med, min(ms), max(ms), 100 * (max(ms) - min(ms)) / med if med else None])
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


def _calibration_table(calibration: Mapping[str, Any]) -> Table | None:
    if not calibration:
        return None
    rows = [
        [name, _finite(c.get("kendall_tau")), c.get("n"), c.get("train_steps")]
        for name, c in sorted(calibration.items())
    ]
    return Table(["proxy", "Kendall τ vs short-trained accuracy", "designs", "training steps"], rows)


def provenance_section(source: Source, command: str | None = None) -> Table:
    """Where every number comes from: device, driver, versions, workload, protocol, storage, commands."""
    rows: list[list[Any]] = []

    def distinct(values: Iterable[Any]) -> str:
        vals = list(dict.fromkeys(str(v) for v in values if v not in (None, "")))
        return " | ".join(vals) if vals else "-"

    pts = source.points
    env_keys = [
        ("device", "device_name"),
        ("device type", "device"),
        ("driver", "driver_version"),
        ("CUDA", "cuda_version"),
        ("cuDNN", "cudnn_version"),
        ("CPU", "cpu_model"),
        ("torch", "torch_version"),
        ("python", "python_version"),
        ("fvcore", "fvcore_version"),
        ("effscope (measurements)", "effscope_version"),
        ("host", "hostname"),
        ("OS", "os"),
        ("threads", "torch_threads"),
        ("TF32 matmul", "tf32_matmul"),
    ]
    device_name = source.attrs.get("device_name")
    for label, key in env_keys:
        value = distinct(p.env.get(key) for p in pts)
        if label == "device" and device_name:
            value = str(device_name)
        if value != "-":
            rows.append([label, value])
    for key in ("dtype", "batch", "attention", "compile", "channels_last", "cuda_graph", "flush_cache"):
        value = distinct(p.workload.get(key) for p in pts)
        if value == "-" and key in (source.attrs.get("workload") or {}):
            value = str(source.attrs["workload"][key])
        if value != "-":
            rows.append([f"workload {key}", value])
    sizes = distinct(f"{p.size[0]}x{p.size[1]}" for p in pts if p.size)
    if sizes != "-":
        rows.append(["input sizes", sizes])
    protocols = distinct(p.protocol for p in pts if p.protocol)
    if protocols != "-":
        rows.append(["timing protocol", protocols + PROTOCOL_NOTE.get(protocols, "")])
    if source.attrs.get("effscope_version"):
        rows.append(["effscope (search)", str(source.attrs["effscope_version"])])
    rows.append(["storage", mask_url(source.storage) if source.storage else "-"])
    rows.append(["study" if source.kind == "study" else "records", source.name])
    space = source.attrs.get("effscope_space") or {}
    if space:
        from effscope.urls import shown_location

        where = shown_location(str(space["path"])) if space.get("path") else ""
        rows.append(["search space", f"{space.get('name', '')} ({where})"])
    if source.attrs.get("command"):
        rows.append(["search command", mask_command(str(source.attrs["command"]))])
    if source.kind != "study":
        cmds = distinct(mask_command(p.command) for p in pts if p.command)
        if cmds != "-":
            rows.append(["profile commands", cmds])
    times = sorted(p.order for p in pts if p.order)
    if times:
        rows.append(["measured between", f"{times[0]} and {times[-1]}"])
    if command:
        rows.append(["report command", mask_command(command)])
    return Table(["field", "value"], rows)


def report_data(source: Source, command: str | None = None) -> ReportData:
    """All sections of a report from one source; each is None when its data does not exist."""
    quality = _quality(source)
    direction = quality.direction if quality else "maximize"
    feasible = [p for p in _dedupe_measurements(source.points) if p.feasible and p.measured]
    stat = front_statistic(budgets_of(source))  # the front section's statistic: the summary lists the same designs
    front = pareto_front(feasible, direction, x=stat) if source.kind == "study" else []
    summary = summary_section(source, front)
    return ReportData(
        title=summary.title,
        summary=summary,
        front=front_section(source),
        gap=gap_section(source),
        scaling=scaling_section(source),
        breakdown=breakdown_section(source, front or least_violating(source.points, direction=direction)),
        insight=insight_section(source, front),
        trust=trust_section(source),
        provenance=provenance_section(source, command),
        registered={s.key: d for s in REGISTERED if (d := s.build(source)) is not None},
    )
