"""What a search found, from its stored trials: counts, the feasible Pareto front, the presets' positions."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from effscope.knobs import format_value
from effscope.metrics import GRAPH_TIMED, TIMED
from effscope.pareto import dominates, nondominated
from effscope.search.space import ZOO_PARAM
from effscope.search.storage import named_constraints

__all__ = [
    "SearchSummary",
    "best_row",
    "count_designs",
    "feasible_front",
    "is_feasible",
    "summarize",
    "timed_seconds",
    "trial_row",
    "trials_table",
]


@dataclass
class SearchSummary:
    """The data of a finished (or interrupted) search: counts, the feasible front and the presets' positions.

    `trials` counts COMPLETE trials only and `counts` splits them by effscope status (measured, cached, invalid,
    ...); failed and still-running trials are counted apart and never as completed.

    Rows are plain dicts: trial, preset, status, quality, latency_ms_p50, latency_ms_p90, params, macs, knobs,
    feasible, on_front, dominated_by.
    """

    quality_name: str
    quality_label: str
    directions: list[str]
    counts: dict[str, int]
    trials: int
    feasible: int
    front: list[dict[str, Any]]
    presets: list[dict[str, Any]]
    slices: list[dict[str, Any]]
    budget: dict[str, Any]
    failed: int = 0
    running: int = 0
    all_failed: dict[str, Any] | None = None  # every completed trial failed: the commonest reason and its count


FAILED_STATUSES = ("failed", "invalid")  # a trial that measured nothing


def trial_row(t: Any) -> dict[str, Any]:
    """A completed trial as a plain dict (the rows of SearchSummary)."""
    a = t.user_attrs
    return {
        **{k: v for k, v in a.items() if k.startswith((*TIMED.values(), GRAPH_TIMED))},  # whatever the space timed
        "trial": t.number,
        "preset": a.get("preset"),
        "status": a.get("status"),
        "quality": a.get("quality"),
        "latency_ms_p50": a.get("latency_ms_p50"),
        "latency_ms_p90": a.get("latency_ms_p90"),
        "params": a.get("params"),
        "macs": a.get("macs"),
        "knobs": a.get("knobs", {}),
        "block": t.params.get(ZOO_PARAM),
        "reason": a.get("reason"),
        "feasible": is_feasible(t),
        "violations": {k: v for k, v in named_constraints(t.system_attrs).items() if v > 0},
        "values": list(t.values or []),
    }


def trials_table(trials: Sequence[Any], space_info: dict[str, Any], study_name: str) -> list[dict[str, Any]]:
    """One flat row per finished trial (`effscope export --storage`): what the search decided about each design.

    Columns: study, trial, state (COMPLETE or FAIL), status, preset, block, the quality objective's name and value,
    feasible, on_front (on the feasible front of the search's objectives, as the summary, Optuna and
    optuna-dashboard rank it; a cached repeat of a front design is on it too), constraint.NAME (<= 0 meets it),
    the timings, params and MACs the trial stored, knob.NAME, reason, record_uid (the Record in the store) and
    duration_s. Running trials are left out: nothing is decided about them yet.
    """
    directions = [o["direction"] for o in space_info["objectives"]]
    finished = [t for t in trials if t.state.name in ("COMPLETE", "FAIL")]
    rows = {t.number: trial_row(t) for t in finished if t.state.name == "COMPLETE"}
    feasible = [r for r in rows.values() if r["feasible"]]
    front = {r["trial"] for r in nondominated(feasible, _values, directions)}
    table = []
    for t in finished:
        r = rows.get(t.number) or {}
        a = t.user_attrs
        knobs = a.get("knobs") or {}  # sequences as the text --set accepts, as in a Records export
        timed = {k: v for k, v in r.items() if k.startswith((*TIMED.values(), GRAPH_TIMED))}
        table.append(
            {
                "study": study_name,
                "trial": t.number,
                "state": t.state.name,
                "status": a.get("status") or ("failed" if t.state.name == "FAIL" else None),
                "preset": a.get("preset"),
                "block": t.params.get(ZOO_PARAM),
                "quality_name": a.get("quality_name") or space_info["objectives"][0]["name"],
                "quality": a.get("quality"),
                "feasible": bool(r.get("feasible")),
                "on_front": t.number in front,
                **{f"constraint.{k}": v for k, v in named_constraints(t.system_attrs).items()},
                **timed,
                "params": a.get("params"),
                "macs": a.get("macs"),
                **{f"knob.{k}": format_value(v) if isinstance(v, list) else v for k, v in knobs.items()},
                "reason": a.get("reason") or t.system_attrs.get("fail_reason"),
                "record_uid": a.get("record_uid"),
                "duration_s": t.duration.total_seconds() if t.duration else None,
            }
        )
    return table


def timed_seconds(trials: Sequence[Any]) -> float:
    """Seconds the trials spent inside timed iterations (re-measurements included; cached and screened-out trials
    add none). Over the search's wall time this is its duty cycle: the share of the search spent measuring."""
    return sum(t.user_attrs.get("timed_s") or 0.0 for t in trials)


def is_feasible(t: Any) -> bool:
    """All constraints <= 0; a completed trial without constraints is not an effscope measurement."""
    c = named_constraints(t.system_attrs)
    return bool(c) and all(v <= 0.0 for v in c.values()) and t.values is not None and all(map(math.isfinite, t.values))


def _values(row: dict[str, Any]) -> list[float]:
    return row["values"]


def feasible_front(rows: list[dict[str, Any]], directions: Sequence[str]) -> list[dict[str, Any]]:
    """The non-dominated rows of feasible `rows`, one per design, by latency (see `_one_per_design`)."""
    return _one_per_design(nondominated(rows, _values, directions), directions)


def _design(row: dict[str, Any]) -> str:
    """What makes two rows the same design (a cached repeat shares its knobs and its values)."""
    return repr(sorted(row["knobs"].items())) + str(row["block"])


def _one_per_design(front: list[dict[str, Any]], directions: Sequence[str]) -> list[dict[str, Any]]:
    """Front rows by latency (2 objectives), one per design."""
    seen, unique = set(), []
    for r in sorted(front, key=lambda r: (r["values"][-1] if len(directions) > 1 else 0, r["trial"])):
        if _design(r) not in seen:
            seen.add(_design(r))
            unique.append(r)
    return unique


def best_row(rows: list[dict[str, Any]], direction: str, latency: str) -> dict[str, Any] | None:
    """The row of best quality (the first objective, by `direction`); among equal quality the fastest by the
    `latency` statistic, so the best is never a design that another dominates; None for no rows."""
    sign = 1.0 if direction == "maximize" else -1.0

    def rank(r: dict[str, Any]) -> tuple[float, float]:
        fast = r.get(latency)
        return sign * r["values"][0], -fast if fast is not None else -math.inf

    return max(rows, key=rank, default=None)


def count_designs(rows: list[dict[str, Any]]) -> int:
    """How many distinct designs `rows` hold: a cached repeat of a design counts once."""
    return len({_design(r) for r in rows})


def summarize(trials: Sequence[Any], space_info: dict[str, Any]) -> SearchSummary:
    """Counts, the feasible Pareto front and the presets' positions, from stored trials (pure: no storage)."""
    from optuna.trial import TrialState

    directions = [o["direction"] for o in space_info["objectives"]]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    counts: dict[str, int] = {}
    for t in complete:
        s = t.user_attrs.get("status", "unknown")
        counts[s] = counts.get(s, 0) + 1
    rows = [trial_row(t) for t in complete]
    feasible = [r for r in rows if r["feasible"]]
    front = nondominated(feasible, _values, directions)
    unique = _one_per_design(front, directions)
    if len(directions) == 1:
        unique.sort(key=lambda r: r["values"][0], reverse=directions[0] == "maximize")
    front_ids = {r["trial"] for r in front}
    presets = []
    for r in rows:
        if r["preset"] is None:
            continue
        r = dict(r, on_front=r["trial"] in front_ids)
        r["dominated_by"] = next(
            (f["trial"] for f in unique if r["feasible"] and dominates(f["values"], r["values"], directions)), None
        )
        presets.append(r)
    all_failed = None
    if complete and all(t.user_attrs.get("status") in FAILED_STATUSES for t in complete):
        reasons: dict[str, int] = {}
        for t in complete:
            reason = t.user_attrs.get("reason") or t.user_attrs.get("status")
            reasons[reason] = reasons.get(reason, 0) + 1
        reason = max(reasons, key=lambda r: reasons[r])  # the first of the commonest, in trial order
        all_failed = {"reason": reason, "count": reasons[reason]}
    budgets = [b for b in space_info["budgets"] if b["name"] == "latency"]
    loosest = max(budgets, key=lambda b: b["limit"])
    slices = []
    for b in sorted(budgets, key=lambda b: b["limit"]):
        under = [r for r in feasible if r.get(b["statistic"]) is not None and r[b["statistic"]] <= b["limit"]]
        best = best_row(under, directions[0], b["statistic"])
        slices.append(
            {"limit": b["limit"], "statistic": b["statistic"], "feasible": count_designs(under), "best": best}
        )
    return SearchSummary(
        quality_name=space_info["objectives"][0]["name"],
        quality_label=space_info["objectives"][0]["label"],
        directions=directions,
        counts=counts,
        trials=len(complete),
        failed=sum(1 for t in trials if t.state == TrialState.FAIL),
        running=sum(1 for t in trials if t.state == TrialState.RUNNING),
        feasible=count_designs(feasible),
        front=unique,
        presets=presets,
        slices=slices,
        budget=loosest,
        all_failed=all_failed,
    )
