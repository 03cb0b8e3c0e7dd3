"""The report's shared data layer: designs (`Point`s) from a study's trials or from profile Records, and what the
sections read from them (the front, budgets, objectives, statistics, hover lines, design tables).

Nothing here draws or imports plotly (or optuna, or torch): the functions take designs and return numbers, labels and
tables, so a report's content is tested on its own, the way optuna computes `_get_pareto_front_info` before it plots.
Each section builds its own data from these (report/sections/); report/contents.py gathers every section's data.

Numbers keep effscope's unit-named keys (`latency_ms_p50`, `peak_mem_bytes`); tables and hover lines carry display
units in their labels ("MACs (G)", "peak memory (MiB)").
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from effscope.errors import EffscopeError
from effscope.knobs import format_value
from effscope.metrics import METRICS, MIB, TIMED, budgetable, display_value
from effscope.pareto import nondominated
from effscope.units import si_unit

__all__ = [
    "Budget",
    "Marker",
    "Objective",
    "Point",
    "ReportError",
    "Source",
    "Table",
    "ABORTED",
    "LATENCY_UNCERTAIN",
    "OVER_WHEN_REMEASURED",
    "PREDICTED_INFEASIBLE",
    "FreshMeasurement",
    "attach_fresh_measurements",
    "best_designs",
    "constraint_lines",
    "differing_workload_parts",
    "front_differences",
    "front_name",
    "missing_numbers",
    "objective_front",
    "parse_missing",
    "budget_slices",
    "budgets_of",
    "dedupe_measurements",
    "design_table",
    "device_of",
    "direction_of",
    "direction_sign",
    "eta_squared",
    "finite",
    "fresh_measurement_text",
    "front_statistic",
    "hover",
    "hypervolume_2d",
    "is_number",
    "knob_text",
    "knobs_short",
    "latency_budgets",
    "least_violating",
    "module_shares",
    "number_name",
    "objectives_of",
    "pareto_front",
    "points_from_records",
    "points_from_rows",
    "points_from_trials",
    "quality_of",
    "screening_statistic",
    "study_device_parts",
    "quantity",
    "study_timing",
    "timing_columns",
    "timing_key",
    "varying_knobs",
    "workload_groups",
    "workload_label",
    "workload_parts",
]


LATENCY = "latency_ms_p50"
TRAIN_STEP = TIMED["train"] + "p50"  # a training search's timing ([workload] mode = "train"), in place of LATENCY
QUALITY = "quality"
MAX_LEAST_VIOLATING = 5
IMPORTANCE_BINS = 5

# A trial a latency predictor rejected: never measured, its latency is only predicted (docs/search.md#screening).
PREDICTED_INFEASIBLE = "predicted-infeasible"
# Statuses of designs that have no trustworthy measurement (never on a front, never "least violating").
UNMEASURED = frozenset({"invalid", "failed", PREDICTED_INFEASIBLE})
# How a design feasible by the search's measurement but not by its fresh-process re-measurement is marked.
OVER_WHEN_REMEASURED = "over budget when re-measured"
# A design whose timing stopped early over the latency budget: its numbers are partial (a trial's status, a Record's
# flag), so it is shown as aborted and never counted as measured.
ABORTED = "aborted-over-budget"
# A feasible design whose budgeted statistic's 95 % interval still held the budget after measuring again.
LATENCY_UNCERTAIN = "latency-uncertain"


def number_keys() -> list[str]:
    """The numbers a design can carry (hover shows every one present): the metrics catalogue, read at call time so
    that a metric registered later is shown too, and the 95 % interval (`_lo`, `_hi`) of each budgetable one."""
    return [*METRICS, *(f"{name}{end}" for name in budgetable() for end in ("_lo", "_hi"))]


class ReportError(EffscopeError):
    """A report cannot be made: the study or file is missing, empty or unreadable, or an option is wrong."""


# ------------------------------------------------------------------------------------------------------- inputs


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
        """As a person reads it: "latency p90 ≤ 2 ms" (the summary names the statistic's key beside it)."""
        return f"{number_name(self.statistic)} ≤ {quantity(self.limit, self.unit)}"


def quantity(value: float | None, unit: str) -> str:
    """A number with its unit, bytes as MiB/GiB."""
    if value is None:
        return "-"
    if unit == "bytes":
        return f"{value / 2**30:.3g} GiB" if value >= 2**30 else f"{value / MIB:.4g} MiB"
    return f"{value:.4g} {unit}".strip()


@dataclass(frozen=True)
class FreshMeasurement:
    """A front design measured again in a fresh worker process after a search screened by a latency predictor
    (docs/search.md#screening; the study system attr `effscope:remeasured`): its budgeted statistic then, and whether
    that still met the budget. `value` is None where the re-measurement failed (then it is not feasible)."""

    trial: int  # the trial that was re-measured (cached repeats of its Record share this)
    statistic: str
    value: float | None
    latency_ms_p50: float | None
    latency_ms_p90: float | None
    feasible: bool


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
    study: str | None = None  # the search a Record was measured for, where it was
    remeasured: int = 0  # how many times a trial was measured again (its timed seconds add up every measurement)
    fresh_measurement: FreshMeasurement | None = None  # the front's fresh-process check after predictor screening
    device: str | None = None  # the device as the report names it (_name_devices); None: from env and workload

    @property
    def device_label(self) -> str:
        """The device this design was measured on, as the report names it: its name (else its type), with the
        CPU's identity where the report holds several CPUs of that name."""
        return self.device or str(self.env.get("device_name") or self.workload.get("device") or "unknown device")

    def get(self, key: str) -> float | None:
        """A finite number or None (missing is never 0)."""
        return finite(self.numbers.get(key))

    @property
    def aborted(self) -> bool:
        """Timing stopped early over the latency budget: the numbers are partial."""
        return self.status == ABORTED or ABORTED in self.flags

    @property
    def timed(self) -> bool:
        """Some timing exists (a full measurement or an aborted, partial one)."""
        return self.status not in UNMEASURED and (self.get(LATENCY) is not None or self.get(TRAIN_STEP) is not None)

    @property
    def measured(self) -> bool:
        """Fully measured: timed and not aborted (only these are ranked, correlated and plotted as measured)."""
        return self.timed and not self.aborted

    @property
    def violation(self) -> float:
        """Sum of the positive constraint values (Optuna sums them raw; effscope normalizes each)."""
        return sum(max(0.0, v) for v in self.constraints.values())

    @property
    def feasible(self) -> bool:
        return self.status not in UNMEASURED and all(v <= 0 for v in self.constraints.values())

    @property
    def over_budget_when_remeasured(self) -> bool:
        """Feasible by the search's measurement, over the budget (or unmeasurable) in its fresh-process check."""
        return self.fresh_measurement is not None and not self.fresh_measurement.feasible


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
    report_command: str | None = None  # the command line that asked for the report (provenance shows it)


@dataclass
class Table:
    """A table: column labels (with units) and rows of raw values (markup.py formats them)."""

    columns: list[str]
    rows: list[list[Any]]


@dataclass
class Marker:
    """One plotted design: position, name and hover lines."""

    id: str
    x: float | None
    y: float | None
    hover: list[tuple[str, Any]]
    x_interval: tuple[float, float] | None = None  # the 95 % interval of x, where measured (a band on the plot)


def finite(value: Any) -> float | None:
    """A finite float, or None for anything else (missing, NaN, inf, bool, text)."""
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


# ----------------------------------------------------------------------------------------- designs from sources


def points_from_records(records: Iterable[Any]) -> list[Point]:
    """One Point per Record (effscope.profile.record.Record), ids made unique ("vit 14x14", "vit 14x14 (2)"); a
    search's Record is named by its trial ("trial 21 (hilo_block-cpu)"), and where the Records were measured under
    several workloads each id carries the parts that differ ("vit 14x14 · batch 8")."""
    points = []
    for r in records:
        flat = r.flat()
        size = r.input_size()
        count = r.details.get("count") or {}
        points.append(
            Point(
                id=_record_label(r.target, size, r.study, r.trial),
                target=r.target,
                family=r.family,
                kind=r.kind,
                knobs=dict(r.knobs),
                numbers={k: flat.get(k) for k in number_keys() if k in flat},
                status=_record_status(r.status, r.flags),
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
                study=r.study,
            )
        )
    return _unique_ids(_name_workloads(_name_devices(points)))


# The Workload fields a flat row (Record.flat()) carries as columns of their own (size is height and width).
ROW_WORKLOAD_KEYS = (
    "device",
    "dtype",
    "batch",
    "threads",
    "channels_last",
    "compile",
    "cuda_graph",
    "flush_cache",
    "attention",
    "mode",
)


def points_from_rows(rows: Iterable[Mapping[str, Any]]) -> list[Point]:
    """Points from flat rows (`Record.flat()`, as exported to CSV/Parquet/JSON); breakdowns are not in them."""
    points = []
    for n, raw in enumerate(rows, 1):
        row = {k: _plain(v) for k, v in raw.items()}
        target = str(row.get("target"))
        h, w, trial = (_whole_column(row, key, n, target) for key in ("height", "width", "trial"))
        size = (h, w) if h is not None and w is not None else None
        workload = {k: _whole(row.get(k)) for k in ROW_WORKLOAD_KEYS if k in row}
        workload.update({k: _whole_column(row, k, n, target) for k in ("batch", "threads") if k in row})
        study = str(row["study"]) if row.get("study") is not None else None
        flags = tuple(f for f in str(row.get("flags") or "").split(",") if f)
        points.append(
            Point(
                id=_record_label(target, size, study, trial),
                target=target,
                family=row.get("family"),
                kind=row.get("kind"),
                knobs={k.removeprefix("knob."): v for k, v in row.items() if k.startswith("knob.")},
                numbers={k: row.get(k) for k in number_keys() if k in row},
                status=_record_status(str(row.get("status") or "ok"), flags),
                flags=flags,
                size=size,
                trial=trial,
                record_uid=row.get("uid"),
                order=row.get("created_at"),
                reason=row.get("error"),
                workload=workload,
                env={k.removeprefix("env."): v for k, v in row.items() if k.startswith("env.")},
                command=row.get("command"),
                missing=parse_missing(row.get("missing")),
                protocol=row.get("protocol"),
                study=study,
            )
        )
    return _unique_ids(_name_workloads(_name_devices(points)))


def _whole_column(row: Mapping[str, Any], key: str, n: int, target: str) -> int | None:
    """A flat row's height, width, trial, batch or threads as an int (a table may hold 14.0, or "14" in a column of
    text); None where missing.

    Raises:
        ReportError: anything else, naming the row, its target and the value.
    """
    value = row.get(key)
    if value is None:
        return None
    number = None
    if not isinstance(value, bool):
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError):
            pass
    low = 0 if key == "trial" else 1  # trial 0 is a search's first; a size is at least 1x1
    if number is None or not number.is_integer() or number < low:
        allowed = "a whole number ≥ 0" if key == "trial" else "a whole number ≥ 1"
        raise ReportError(f"record {n} (target '{target}') has {key} {value!r}, but {key} must be {allowed}")
    return int(number)


def parse_missing(text: Any) -> dict[str, str]:
    """The `missing` column of a flat row ("name: why; name2: why") back as {name: why}. A reason may itself hold
    "; ", so a new entry starts only where a metric-like name and ": " follow."""
    if not isinstance(text, str) or not text.strip():
        return {}
    parts = re.split(r"; (?=[A-Za-z_][\w.]*: )", text.strip())
    return dict(part.split(": ", 1) for part in parts if ": " in part)


def _whole(value: Any) -> Any:
    """A whole float read back from a table (batch 8.0) as the int it was written as."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _record_status(status: str, flags: Sequence[str]) -> str:
    """A Record's status as the report shows it: an ok Record whose timing was aborted over a budget is aborted."""
    return ABORTED if status == "ok" and ABORTED in flags else status


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
        quality = finite(values[0]) if values else None
        numbers[QUALITY] = quality if quality is not None else finite(attrs.get("quality"))
        if numbers.get(LATENCY) is None and numbers.get(TRAIN_STEP) is None and len(values) > 1:
            numbers[LATENCY] = finite(values[1])  # (a training search's second value is its step time, stored)
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
                reason=attrs.get("reason") or base.reason or _fail_reason(t),
                workload=base.workload,
                env=base.env,
                macs_by_module=base.macs_by_module,
                time_by_module_ms=base.time_by_module_ms,
                missing=base.missing,
                protocol=base.protocol,
                study=base.study,
                remeasured=int(finite(attrs.get("remeasured")) or 0),
            )
        )
    # over every trial, not per Record: a study resumed by name on another CPU (one made before effscope stored a
    # study's device_identity) holds trials of two CPUs of one name
    return _name_devices(points)


def _fail_reason(t: Any) -> str | None:
    """The exception Optuna stored for a trial that raised (a study effscope did not write)."""
    reason = (getattr(t, "system_attrs", None) or {}).get("fail_reason")
    return str(reason).strip().splitlines()[-1] if reason else None


def _trial_constraints(t: Any) -> dict[str, float]:
    """A trial's constraints by name: Optuna also lists, as `0`, `1`, ..., the unnamed copy that effscope writes
    for optuna-dashboard (docs/search.md#storage); a study with only unnamed constraints keeps those."""
    c = getattr(t, "constraints", None) or {}
    named = {k: v for k, v in c.items() if not k.isdigit()}
    return {k: float(v) for k, v in (named or c).items()}


def attach_fresh_measurements(points: list[Point], stored: Mapping[str, Any], statistic: str) -> list[Point]:
    """Join the front's fresh-process re-measurement (study system attr `effscope:remeasured`: {trial number:
    remeasured_latency_ms_p50 / _p90, remeasured_<statistic>, remeasured_feasible}) to its trials, and to every
    cached repeat of the same Record: one measurement, one verdict. `statistic` is the budgeted one it was judged on
    (`screening_statistic`). Malformed entries are skipped."""
    checks: dict[int, FreshMeasurement] = {}
    for key, row in (stored or {}).items():
        if not isinstance(row, Mapping):
            continue
        try:
            trial = int(row.get("trial", key))
        except (TypeError, ValueError):
            continue
        checks[trial] = FreshMeasurement(
            trial=trial,
            statistic=statistic,
            value=finite(row.get(f"remeasured_{statistic}")),
            latency_ms_p50=finite(row.get("remeasured_latency_ms_p50")),
            latency_ms_p90=finite(row.get("remeasured_latency_ms_p90")),
            feasible=row.get("remeasured_feasible") is True,
        )
    by_record = {p.record_uid: checks[p.trial] for p in points if p.trial in checks and p.record_uid}
    for p in points:
        check = checks.get(p.trial) if p.trial is not None else None
        p.fresh_measurement = check or by_record.get(p.record_uid or "") or p.fresh_measurement
    return points


def _iso(when: Any) -> str | None:
    return when.isoformat(timespec="seconds") if hasattr(when, "isoformat") else None


def _record_label(target: str, size: tuple[int, int] | None, study: str | None = None, trial: int | None = None) -> str:
    """A Record's name: a search's Record by its trial and study, else its target and input size."""
    if trial is not None:
        return f"trial {trial} ({study})" if study else f"trial {trial}"
    return f"{target} {size[0]}x{size[1]}" if size else target


def _name_workloads(points: list[Point]) -> list[Point]:
    """Append to each timed design's id the workload parts that differ between the timed designs (not its size when
    the id already shows it), so that designs measured under different workloads are never read as comparable."""
    keys = differing_workload_parts(points)
    for p in points:
        if p.timed and keys:
            shown = workload_label(p, [k for k in keys if not (k == "size" and p.size and p.trial is None)])
            if shown:
                p.id = f"{p.id} · {shown}"
    return points


def _name_devices(points: list[Point]) -> list[Point]:
    """Where the designs of one device name ran on different CPUs (a cloud VM names several generations alike, "AMD
    EPYC"), name each such design's device with its CPU's identity, so that its workload differs from the others'.
    A design whose environment records no identity (an older Record) keeps the bare name, as the search cache and
    the roofline also match it by name alone."""
    from effscope.profile.record import device_identity

    identities: dict[str, set[str]] = {}
    for p in points:
        if (identity := device_identity(p.env)) is not None:
            identities.setdefault(p.device_label, set()).add(identity)
    for p in points:
        identity = device_identity(p.env)
        if identity is not None and len(identities.get(p.device_label, ())) > 1:
            p.device = f"{p.device_label} ({identity})"
    return points


def _unique_ids(points: list[Point]) -> list[Point]:
    seen: dict[str, int] = {}
    for p in points:
        seen[p.id] = seen.get(p.id, 0) + 1
        if seen[p.id] > 1:
            p.id = f"{p.id} ({seen[p.id]})"
    return points


# ---------------------------------------------------------------------------------------------------- workloads

# The parts of a workload, in the order a label names them: latencies measured under different values of any of
# these are not comparable (a batch-8 forward is not a slower batch-1 one).
WORKLOAD_PARTS = (
    "device",
    "dtype",
    "batch",
    "threads",
    "size",
    "mode",
    "attention",
    "compile",
    "channels_last",
    "cuda_graph",
    "flush_cache",
)


def workload_parts(p: Point) -> dict[str, str]:
    """What a design was measured under, each part as a person reads it: the device's name (else its type), the
    threads torch used where the workload left them to torch, the input size ("default size" where none was set)."""
    wl = {k: v for k, v in p.workload.items() if v is not None and k != "size"}
    threads = wl.get("threads", p.env.get("torch_threads"))
    values = {
        **wl,
        "device": p.device_label,
        "threads": threads,
        "size": f"{p.size[0]}x{p.size[1]}" if p.size else None,
    }
    text = {
        "device": str(values["device"]),
        "dtype": str(values.get("dtype") or "fp32"),
        "batch": f"batch {_whole(values.get('batch') or 1)}",
        "threads": _threads_text(threads),
        "size": values["size"] or "default size",
        "mode": str(values.get("mode") or "infer"),
    }
    for key in WORKLOAD_PARTS:
        if key not in text and key in values:
            text[key] = f"{key} {knob_text(values[key])}"
    return text


def _threads_text(threads: Any) -> str:
    if threads is None:
        return "default threads"
    n = _whole(threads)
    return f"{n} thread" if n == 1 else f"{n} threads"


def differing_workload_parts(points: Sequence[Point]) -> list[str]:
    """The workload parts whose value differs between the timed designs, in WORKLOAD_PARTS order; empty when every
    timed design ran under one workload."""
    parts = [workload_parts(p) for p in points if p.timed]
    seen: dict[str, set[str]] = {}
    for named in parts:
        for key, text in named.items():
            seen.setdefault(key, set()).add(text)
    # a part some designs lack (an older Record) differs too: None stands for "not recorded"
    return [k for k in WORKLOAD_PARTS if k in seen and (len(seen[k]) > 1 or any(k not in named for named in parts))]


def workload_label(p: Point, keys: Sequence[str]) -> str:
    """The parts `keys` of a design's workload ("batch 8, bf16"); "" where there are none."""
    parts = workload_parts(p)
    return ", ".join(parts.get(k, f"{k} not recorded") for k in keys)


def study_device_parts(points: Sequence[Point]) -> list[str]:
    """The workload parts a study's timed trials are ranked and correlated apart by: ["device"] where they ran on
    several CPUs of one name (a study made before effscope stored its device_identity resumes by name on another
    CPU), else none. Only the device: a study has one workload, and a trial without its Record (no env) must not
    split off as a workload of its own."""
    timed = [p for p in points if p.timed]
    several = any(p.device for p in timed) and len({p.device_label for p in timed}) > 1
    return ["device"] if several else []


def workload_groups(points: Sequence[Point], keys: Sequence[str] | None = None) -> dict[str, list[Point]]:
    """The timed designs by workload, named by the parts that differ (or by `keys`), in order of first appearance;
    one group named "" when all ran under one workload."""
    keys = differing_workload_parts(points) if keys is None else keys
    groups: dict[str, list[Point]] = {}
    for p in points:
        if p.timed:
            groups.setdefault(workload_label(p, keys), []).append(p)
    return groups


# ---------------------------------------------------------------------------------------------------- the front


def direction_sign(direction: str) -> float:
    """1 where higher is better (maximize), -1 where lower is."""
    return 1.0 if direction == "maximize" else -1.0


def pareto_front(
    points: Sequence[Point], direction: str = "maximize", x: str = LATENCY, y: str = QUALITY
) -> list[Point]:
    """The points no other point dominates in (`y` better by `direction`, `x` lower), sorted by `x`.

    Points missing either number are ignored; equal points are all kept (neither dominates the other).
    """
    sign = direction_sign(direction)
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
    feasible = [p for p in dedupe_measurements(points) if p.feasible and p.measured]
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
    sign = direction_sign(direction)
    # an aborted design is timed: even its partial timing says by how much it missed
    measured = [p for p in points if p.timed and p.constraints.get("valid", 0.0) <= 0]
    measured.sort(key=lambda p: (p.violation, -sign * (p.get(QUALITY) or 0.0), p.get(LATENCY), p.id))
    return measured[:k]


def hypervolume_2d(
    points: Sequence[tuple[float, float]], reference: tuple[float, float], direction: str = "maximize"
) -> float:
    """Area dominated by (quality, latency) points up to `reference` (quality better by `direction`, latency lower)."""
    sign = direction_sign(direction)
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


# ------------------------------------------------------------------------------------------------- knob helpers


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


def is_number(v: Any) -> bool:
    """A real number (not a bool)."""
    return isinstance(v, int | float) and not isinstance(v, bool)


def eta_squared(levels: Sequence[Any], values: Sequence[float], bins: int = IMPORTANCE_BINS) -> float | None:
    """Share of the variance of `values` explained by grouping on `levels` alone (one-way η²).

    Numeric levels with more than `bins` distinct values are grouped into `bins` runs of neighbouring values, so a
    continuous knob does not explain everything by giving every design its own group. None when it cannot be said
    (fewer than two groups, or constant values).
    """
    keys = [knob_text(v) for v in levels]
    distinct = sorted({v for v in levels if is_number(v)})
    if len(distinct) > bins and all(is_number(v) for v in levels):
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


# ------------------------------------------------------------------------------------------------ study meaning


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
        if len(source.directions) > 1:  # read as latency; its label says the study never said so
            label = "values[1] (the study does not describe this objective; read as latency in ms)"
            objs.append(Objective(LATENCY, label, source.directions[1].lower(), False))
    return objs


def budgets_of(source: Source) -> list[Budget]:
    """The study's budgets from its attributes (none for Records); a budget without a finite limit is skipped."""
    out = []
    for b in source.attrs.get("budgets") or []:
        limit = finite(b.get("limit"))
        if limit is not None:
            out.append(Budget(str(b.get("name", "")), str(b.get("statistic", "")), limit, str(b.get("unit", ""))))
    return out


def screening_statistic(source: Source) -> str:
    """The statistic a latency predictor screened and its fresh re-measurement judged: its table's (the budgets' by
    construction), else the loosest latency budget's."""
    stat = (source.attrs.get("predictor") or {}).get("statistic")
    return str(stat) if stat else front_statistic(budgets_of(source))


def quality_of(source: Source) -> Objective | None:
    """The quality objective (the first one), or None where the study has none beside latency, or for Records."""
    objs = objectives_of(source)
    return objs[0] if objs and objs[0].name != LATENCY else None


def direction_of(source: Source) -> str:
    """Which way the quality objective is better; "maximize" where the study names no quality."""
    quality = quality_of(source)
    return quality.direction if quality else "maximize"


def best_designs(source: Source) -> list[Point]:
    """A study's best designs: the front of its feasible measured designs on the front section's statistic (the
    summary, the breakdown and the search insight show these designs); none for Records."""
    if source.kind != "study":
        return []
    feasible = [p for p in dedupe_measurements(source.points) if p.feasible and p.measured]
    return pareto_front(feasible, direction_of(source), x=front_statistic(budgets_of(source)))


def front_name(source: Source) -> str:
    """What the report's front is ranked on ("the Pareto front on latency p90, the budgets' statistic"): a study's
    loosest latency budget's statistic, so that a design left of a budget line meets it; else the median."""
    budgets = budgets_of(source)
    why = ", the budgets' statistic" if latency_budgets(budgets) else ""
    return f"the Pareto front on {number_name(front_statistic(budgets))}{why}"


def objective_front(source: Source) -> list[Point] | None:
    """A study's feasible front on its own objectives (quality and its declared median timing): the front the
    search's summary, Optuna and optuna-dashboard show. None for Records or a study without a timing objective."""
    timing = study_timing(source)
    if source.kind != "study" or timing is None or quality_of(source) is None:
        return None
    feasible = [p for p in dedupe_measurements(source.points) if p.feasible and p.measured]
    return pareto_front(feasible, direction_of(source), x=timing)


def front_differences(source: Source) -> tuple[list[Point], list[Point]]:
    """(designs on the objectives' front only, designs on the report's front only): the report ranks its front on the
    budgets' statistic, the search on its objectives; ([], []) when the two agree or cannot be compared."""
    theirs = objective_front(source)
    if theirs is None:
        return [], []
    ours = best_designs(source)
    ours_ids, theirs_ids = {p.id for p in ours}, {p.id for p in theirs}
    return [p for p in theirs if p.id not in ours_ids], [p for p in ours if p.id not in theirs_ids]


def missing_numbers(points: Sequence[Point]) -> list[tuple[str, str]]:
    """Each number missing for some timed designs, with how many and why (from each design's `missing`):
    ("energy_j_per_img, mean_power_w", "all 23 designs: energy and telemetry need an NVIDIA GPU"); numbers missing
    for as many designs and for the same reasons share one line."""
    designs = [p for p in dedupe_measurements(points) if p.timed]
    reasons: dict[str, dict[str, None]] = {}
    counts: dict[str, int] = {}
    for p in designs:
        for name, why in p.missing.items():
            counts[name] = counts.get(name, 0) + 1
            reasons.setdefault(name, {})[str(why)] = None
    texts: dict[str, list[str]] = {}  # one line per (how many, why): numbers missing for one reason share it
    for name, n in counts.items():
        many = f"all {n} designs" if n == len(designs) and n > 1 else f"{n} of {len(designs)} design(s)"
        texts.setdefault(f"{many}: {' | '.join(reasons[name])}", []).append(name)
    return [(", ".join(names), text) for text, names in texts.items()]


def device_of(source: Source) -> str:
    """The device the designs were measured on, as a person reads it."""
    names = sorted({p.device_label for p in source.points if p.env} - {"unknown device"})
    return str(source.attrs.get("device_name") or " | ".join(names) or "unknown device")


def hover(p: Point, quality: Objective | None = None, budgets: Sequence[Budget] = ()) -> list[tuple[str, Any]]:
    """Every knob and number of a design, as (label, value) lines in display units; its constraints as statements
    against the study's `budgets`."""
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
            lines.append((metric.label, _hover_value(metric.name, display_value(metric, v), p)))
    if p.remeasured:
        lines.append(("re-measured", p.remeasured))
    if p.fresh_measurement is not None:
        lines.append(("re-measured in a fresh process", fresh_measurement_text(p.fresh_measurement)))
    lines.extend(constraint_lines(p, budgets))
    if p.flags:
        lines.append(("flags", ", ".join(p.flags)))
    if p.reason:
        lines.append(("reason", p.reason))
    lines.extend((f"knob {k}", knob_text(v)) for k, v in p.knobs.items())
    return lines


def fresh_measurement_text(check: FreshMeasurement) -> str:
    """A fresh-process re-measurement as a person reads it: "latency p90 22.63 ms: over the budget"."""
    if check.value is None:
        return f"{number_name(check.statistic)} not measured: over the budget"
    verdict = "still under the budget" if check.feasible else "over the budget"
    return f"{number_name(check.statistic)} {check.value:.4g} ms: {verdict}"


def _hover_value(name: str, value: Any, p: Point) -> Any:
    # A re-measured trial's timed seconds add up every measurement, while its latencies are the kept one's.
    if name == "timed_s" and p.remeasured and is_number(value):
        return f"{value:.4g} (the sum of {p.remeasured + 1} measurements; the latencies are the kept one's)"
    return value


def constraint_lines(p: Point, budgets: Sequence[Budget] = ()) -> list[tuple[str, str]]:
    """A design's constraints as a person reads them: against a budget of the same name, the design's statistic as a
    share of the limit ("latency budget": "latency p90 at 16 % of the budget (2 ms)"). Validity is the status
    already, and a constraint at exactly 0 without a budget is the placeholder of a budget the study does not set;
    any other is shown raw, with its rule."""
    by_name: dict[str, list[Budget]] = {}
    for b in sorted(budgets, key=lambda b: b.limit):
        by_name.setdefault(b.name, []).append(b)  # the loosest of a name is the search's constraint, the rest slices
    lines = []
    for key, v in p.constraints.items():
        named = by_name.get(key)
        if named:
            b = named[-1]
            stat = p.get(b.statistic)
            if stat is None:
                text = f"{number_name(b.statistic)} not measured (counts as over the budget)"
            else:
                shares = [f"{100 * stat / t.limit:.0f} % of {quantity(t.limit, t.unit)}" for t in named[:-1]]
                shares.append(f"{100 * stat / b.limit:.0f} % of the budget ({quantity(b.limit, b.unit)})")
                text = f"{number_name(b.statistic)} at {', '.join(shares)}"
            lines.append((f"{b.name} budget", text))
        elif key != "valid" and v != 0.0:
            lines.append((f"constraint {key}", f"{v:.4g} (≤ 0 meets it)"))
    return lines


def dedupe_measurements(points: Sequence[Point]) -> list[Point]:
    """One point per measurement: cached trials reuse a Record, which must count once."""
    seen: set[str] = set()
    out = []
    for p in points:
        key = p.record_uid or p.id
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out


def study_timing(source: Source) -> str | None:
    """The median time a study minimizes, as its objectives declare it (latency_ms_p50, train_step_ms_p50, or
    latency_graph_ms_p50 for a budget on the CUDA-graph replay); None for Records or a study without one."""
    objs = objectives_of(source)
    name = objs[1].name if source.kind == "study" and len(objs) > 1 else None
    return name if name in METRICS else None


def timing_key(points: Sequence[Point], declared: str | None = None) -> str:
    """The median time to show: the one a study declares (`study_timing`), else a forward's latency, or, where every
    timed design was timed as a training step ([workload] mode = "train"), the step's."""
    if declared:
        return declared
    timed = [p for p in points if p.get(LATENCY) is not None or p.get(TRAIN_STEP) is not None]
    return TRAIN_STEP if timed and all(p.get(LATENCY) is None for p in timed) else LATENCY


def timing_columns(points: Sequence[Point], declared: str | None = None) -> dict[str, str]:
    """The two timing columns, key -> heading: p50 and p90 of `timing_key`."""
    p50 = timing_key(points, declared)
    return {k: METRICS[k].label for k in (p50, p50.replace("_p50", "_p90"))}


def number_name(key: str) -> str:
    """A number's label without its unit: latency_ms_p90 -> 'latency p90'."""
    metric = METRICS.get(key)
    return (metric.label if metric else key).split(" (")[0]


def design_table(
    rows_pts: Sequence[Point],
    all_pts: Sequence[Point],
    quality: Objective | None,
    *,
    with_violation: bool,
    timing: str | None = None,
    workload_keys: Sequence[str] = (),
) -> Table:
    """Designs as rows; the knobs column shows the knobs that vary between designs of the same target. `timing` is
    the study's declared timing (`study_timing`), if any; `workload_keys` (the workload parts that differ) adds a
    column naming each timed design's workload."""
    targets = {p.target for p in all_pts}
    varying = {t: varying_knobs([p for p in all_pts if p.target == t]) for t in targets}
    columns = ["design", *(["workload"] if workload_keys else [])]
    if quality is not None:
        columns.append(quality.display)
    p_prefix, p_scale = si_unit(p.get("params") for p in rows_pts)
    m_prefix, m_scale = si_unit(p.get("macs") for p in rows_pts)
    timing_heads = timing_columns(all_pts, timing)
    columns += [*timing_heads.values(), f"params ({p_prefix or 'count'})"]
    columns += [f"MACs ({m_prefix or 'count'})", "status"]
    if with_violation:
        columns.append("over budget")
    columns.append("knobs that vary" if len(targets) == 1 else "knobs that vary (within a target)")
    rows = []
    for p in rows_pts:
        row: list[Any] = [p.id]
        if workload_keys:
            row.append(workload_label(p, workload_keys) if p.timed else "")
        if quality is not None:
            row.append(p.get(QUALITY))
        params, macs = p.get("params"), p.get("macs")
        row += [
            *(p.get(k) for k in timing_heads),
            params / p_scale if params is not None else None,
            macs / m_scale if macs is not None else None,
            _status_text(p),
        ]
        if with_violation:
            row.append(_violation_text(p))
        row.append(knobs_short(p, varying.get(p.target) or []))
        rows.append(row)
    return Table(columns, rows)


def _status_text(p: Point) -> str:
    """The status with its reason where it is not plain success; an aborted design says its numbers are partial."""
    status = ABORTED if p.aborted else p.status
    if status == ABORTED:
        return f"{ABORTED} (partial timings)" + (f": {p.reason}" if p.reason else "")
    text = status + (f": {p.reason}" if p.reason and status not in ("ok", "measured", "cached") else "")
    if p.over_budget_when_remeasured:
        text += f"; {OVER_WHEN_REMEASURED} ({fresh_measurement_text(p.fresh_measurement)})"
    # beside the answer, not only in the trust section: a best design may meet its budget by chance
    flags = [f for f in p.flags if f != ABORTED]
    if flags:
        text += f"; flagged {', '.join(flags)}"
    return text


def _violation_text(p: Point) -> str:
    over = [f"{k} +{100 * v:.1f} %" for k, v in p.constraints.items() if v > 0]
    return ", ".join(over) or "none"
