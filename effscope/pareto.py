"""Pareto dominance and the non-dominated set: the one implementation the search summary and the report share.

Standard library only, so either side imports it without pulling in the other.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

__all__ = ["dominates", "nondominated"]

T = TypeVar("T")


def dominates(a: Sequence[float], b: Sequence[float], directions: Sequence[str]) -> bool:
    """True when `a` is at least as good as `b` in every objective and better in one.

    Args:
        directions: "maximize" or "minimize", one per objective.
    """
    better = False
    for x, y, d in zip(a, b, directions, strict=True):
        if d == "minimize":
            x, y = -x, -y
        if x < y:
            return False
        if x > y:
            better = True
    return better


def nondominated(
    items: Iterable[T], values: Callable[[T], Sequence[float | None]], directions: Sequence[str]
) -> list[T]:
    """The items no other item dominates, in their input order; items with equal values all stay.

    An item with a missing (None) or NaN value has no place on the front and is left out. Two objectives take
    one sort and a sweep (reports hold thousands of trials); more take the pairwise comparison.

    Args:
        values: an item's objective values, one per direction.
        directions: "maximize" or "minimize", one per objective.
    """
    signs = [-1.0 if d == "maximize" else 1.0 for d in directions]  # to "lower is better" on every axis
    kept: list[tuple[int, T, tuple[float, ...]]] = []
    for i, item in enumerate(items):
        v = values(item)
        if all(x is not None and not math.isnan(x) for x in v):
            kept.append((i, item, tuple(s * x for s, x in zip(signs, v, strict=True))))
    if len(directions) == 1:
        best = min((b[0] for _, _, b in kept), default=None)
        return [item for _, item, b in kept if b[0] == best]
    if len(directions) == 2:
        front: list[tuple[int, T]] = []
        best_0 = best_1 = None  # of the first point with the lowest second value so far
        for i, item, (b0, b1) in sorted(kept, key=lambda k: (k[2], k[0])):
            if best_1 is None or b1 < best_1:
                front.append((i, item))
                best_0, best_1 = b0, b1
            elif b1 == best_1 and b0 == best_0:  # equal to the point that set the best: neither dominates
                front.append((i, item))
        return [item for _, item in sorted(front, key=lambda f: f[0])]
    lowest = ["minimize"] * len(directions)
    return [item for _, item, b in kept if not any(dominates(o, b, lowest) for _, _, o in kept)]
