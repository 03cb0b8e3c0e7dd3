"""Interleaved A/B timing in one process, shared by vs_official.py and attention_core.py."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

__all__ = ["ABTiming", "interleaved", "time_chunk"]


def time_chunk(fn: Callable[[], object], n: int, device: torch.device) -> float:
    """Seconds per call over n back-to-back calls (the GPU synchronized around them)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - t0) / n


@dataclass(frozen=True)
class ABTiming:
    """Per-round seconds per call of A and B, and the statistics the reports print."""

    a: list[float]
    b: list[float]

    @property
    def ratios(self) -> list[float]:
        return [x / y for x, y in zip(self.a, self.b, strict=True)]

    @property
    def ratio_median(self) -> float:
        return statistics.median(self.ratios)

    @property
    def ratio_quartiles(self) -> tuple[float, float]:
        if len(self.ratios) < 2:
            return self.ratios[0], self.ratios[0]
        q = statistics.quantiles(self.ratios, n=4)
        return q[0], q[2]

    @property
    def ratio_of_min(self) -> float:
        """min(A) / min(B): contention only adds time, so the fastest chunks are the steadier comparison."""
        return min(self.a) / min(self.b)


def interleaved(
    a: Callable[[], object],
    b: Callable[[], object],
    *,
    rounds: int,
    chunk_s: float,
    device: torch.device,
    warmup_s: float = 0.3,
) -> ABTiming:
    """Warm both up for `warmup_s` (allocator and caches settle: glibc serves large fresh tensors from mmap until
    its dynamic threshold has grown past them), then `rounds` rounds of one chunk of A and one of B, in alternating
    order so that drift hits both alike; a chunk is as many calls as fit in about `chunk_s` seconds."""
    end = time.perf_counter() + warmup_s
    a(), b()
    while time.perf_counter() < end:
        a(), b()
    n = max(1, round(chunk_s / max(time_chunk(a, 1, device), time_chunk(b, 1, device))))
    ta, tb = [], []
    for r in range(rounds):
        if r % 2:
            tb.append(time_chunk(b, n, device))
            ta.append(time_chunk(a, n, device))
        else:
            ta.append(time_chunk(a, n, device))
            tb.append(time_chunk(b, n, device))
    return ABTiming(ta, tb)
