"""Decisions under noise: a design whose measured budget statistic lies within its own uncertainty of the budget is
neither clearly feasible nor clearly infeasible. It is measured again (once, by default) and, if still undecided,
labelled uncertain (flag `latency-uncertain`) in the trial, the tables and the report.

The uncertainty is the statistic's 95 % confidence interval from the timing samples (Record.latency
`<statistic>_lo` / `_hi`, profile/measure.py latency_intervals). A statistic without one (the mean) is decided on
its value alone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from effscope.profile.record import Record

__all__ = ["FEASIBLE", "INFEASIBLE", "UNCERTAIN", "UNMEASURED", "measure_and_decide", "verdict"]

FEASIBLE, INFEASIBLE, UNCERTAIN, UNMEASURED = "feasible", "infeasible", "uncertain", "unmeasured"


def verdict(latency: dict, statistic: str, limit: float) -> str:
    """Where a measurement stands against a latency budget: clearly within, clearly over, or uncertain."""
    value = latency.get(statistic)
    if value is None:
        return UNMEASURED
    lo, hi = latency.get(f"{statistic}_lo"), latency.get(f"{statistic}_hi")
    if lo is None or hi is None:
        return FEASIBLE if value <= limit else INFEASIBLE
    if hi <= limit:
        return FEASIBLE
    if lo > limit:
        return INFEASIBLE
    return UNCERTAIN


def measure_and_decide(
    measure: Callable[[], Record], statistic: str, limit: float, remeasures: int = 1
) -> tuple[Record, int, str]:
    """Measure; while the verdict is uncertain, measure again up to `remeasures` times (the newest measurement is
    kept: each comes from a fresh warm-up, and pooling would mix states of a drifting machine).

    Returns:
        (record, times re-measured, verdict of the kept record).
    """
    record = measure()
    done = 0
    decided = verdict(record.latency, statistic, limit) if record.status == "ok" else UNMEASURED
    while decided == UNCERTAIN and done < remeasures and "aborted-over-budget" not in record.flags:
        record = measure()
        done += 1
        decided = verdict(record.latency, statistic, limit) if record.status == "ok" else UNMEASURED
    return record, done, decided
