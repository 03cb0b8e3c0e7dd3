"""Numbers in the units people read: counts with an SI prefix, sizes in binary units. Missing stays missing."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["binary_bytes", "si", "si_unit"]


def si_unit(values: Iterable[float | None]) -> tuple[str, float]:
    """The SI prefix (G, M, K or none) under which the largest value is at least 1, and its scale."""
    big = max((abs(v) for v in values if v is not None), default=0.0)
    for prefix, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if big >= scale:
            return prefix, scale
    return "", 1.0


def si(value: float) -> str:
    """A count with an SI prefix: 13,984 -> '13.98 K', 781,049,600 -> '781 M'."""
    prefix, scale = si_unit([value])
    return f"{value / scale:.4g} {prefix}".strip()


def binary_bytes(value: float) -> str:
    """A size in bytes with a binary prefix: 135,148,564,480 -> '125.9 GiB'."""
    for prefix, scale in (("Ti", 2**40), ("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10)):
        if abs(value) >= scale:
            return f"{value / scale:.1f} {prefix}B"
    return f"{value:.0f} B"
