"""Statistics without scipy: rank correlations (Spearman's rho, Kendall's tau-b) and distribution-free confidence
intervals for quantiles, used by profile, search and report."""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["MIN_RANK_PAIRS", "kendall_tau", "quantile_interval", "spearman_rho"]

# Fewer pairs than this get no rank correlation reported: with 2 it is always ±1, with 3 it takes only 4 values.
MIN_RANK_PAIRS = 4


def _ranks(values: Sequence[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):  # ties share their average rank
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman_rho(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson correlation of the ranks; NaN with fewer than 2 points or a constant input."""
    if len(x) != len(y):
        raise ValueError(f"x and y must have the same length, but got ({len(x)}, {len(y)})")
    if len(x) < 2:
        return math.nan
    rx, ry = _ranks(x), _ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    vx = sum((a - mx) ** 2 for a in rx)
    vy = sum((b - my) ** 2 for b in ry)
    return cov / math.sqrt(vx * vy) if vx and vy else math.nan


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b (ties in either input handled); NaN with fewer than 2 points or a constant input."""
    if len(x) != len(y):
        raise ValueError(f"x and y must have the same length, but got ({len(x)}, {len(y)})")
    concordant = discordant = ties_x = ties_y = 0
    n = len(x)
    for i in range(n):
        for j in range(i + 1, n):
            dx, dy = x[i] - x[j], y[i] - y[j]
            if dx == 0 and dy == 0:
                continue
            if dx == 0:
                ties_x += 1
            elif dy == 0:
                ties_y += 1
            elif (dx > 0) == (dy > 0):
                concordant += 1
            else:
                discordant += 1
    denom = math.sqrt((concordant + discordant + ties_x) * (concordant + discordant + ties_y))
    return (concordant - discordant) / denom if denom else math.nan


def quantile_interval(samples: Sequence[float], q: float, confidence: float = 0.95) -> tuple[float, float] | None:
    """A distribution-free confidence interval for the `q`-quantile of the population the samples come from.

    The interval runs between two order statistics X(l) <= X(u), chosen so that the number of samples below the true
    quantile, which is Binomial(n, q), falls in [l, u - 1] with probability >= `confidence`, half the miss on each
    side. It assumes independent samples from one distribution (timings drift; treat it as a lower bound on the
    uncertainty). None when there are too few samples for that confidence (95 % needs 6 samples for a median, 36
    for a p90, 368 for a p99).
    """
    if not 0 < q < 1 or not 0 < confidence < 1:
        raise ValueError(f"q and confidence must lie in (0, 1), but got ({q}, {confidence})")
    x = sorted(samples)
    n = len(x)
    if n == 0:
        return None
    tail = (1 - confidence) / 2
    # cdf[k] = P(B <= k), B ~ Binomial(n, q), from log-pmfs (no underflow for large n)
    log_pmf = [
        math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) + k * math.log(q) + (n - k) * math.log1p(-q)
        for k in range(n + 1)
    ]
    cdf, total = [], 0.0
    for lp in log_pmf:
        total += math.exp(lp)
        cdf.append(total)
    lower = [k for k in range(1, n + 1) if cdf[k - 1] <= tail]  # P(B <= l - 1) <= tail
    upper = [k for k in range(1, n + 1) if cdf[k - 1] >= 1 - tail]  # P(B <= u - 1) >= 1 - tail
    if not lower or not upper:
        return None
    return x[max(lower) - 1], x[min(upper) - 1]
