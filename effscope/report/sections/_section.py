"""The Section type: one report section's data builder and renderer (the package __init__ keeps the registry)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from effscope.report.data import Source

__all__ = ["Section"]


@dataclass(frozen=True)
class Section:
    """One report section: `build(source)` returns its data (plotly-free, testable alone) or None when it has
    nothing to show; `render(data)` returns its HTML body. `after` names the section it follows (None: the first).
    `why_absent(source)`, where given, says in one line why a section without data is left out (None: say nothing,
    the absence is expected, e.g. a study's front in a report on Records); the page then shows that line."""

    key: str
    title: str
    build: Callable[[Source], Any]
    render: Callable[[Any], str]
    after: str | None = "trust"
    why_absent: Callable[[Source], str | None] | None = None
