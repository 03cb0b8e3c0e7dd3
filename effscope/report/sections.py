"""Report sections as units: a section is its data builder and its renderer, side by side, registered once.

    from effscope.report.sections import Section, register_section

    def build(source):                 # plain data from the designs, or None to leave the section out
        return {"n": len(source.points)}

    def render(data):                  # the section's HTML body (import plotly here, not at the top)
        return f"<p>{data['n']} designs</p>"

    register_section(Section("count", "How many designs", build, render, after="gap"))

The built-in sections (summary, front, gap, scaling, breakdown, insight, trust, provenance) are built by
report/data.py and drawn by report/html.py; a registered section is placed after the one named by `after`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from effscope.errors import SpecError

__all__ = ["BUILT_IN", "REGISTERED", "Section", "register_section", "unregister_section"]

BUILT_IN = ("summary", "front", "gap", "scaling", "breakdown", "insight", "trust", "provenance")


@dataclass(frozen=True)
class Section:
    """One report section: `build(source)` returns its data (plotly-free, testable alone) or None when it has
    nothing to show; `render(data)` returns its HTML body. `after` names the section it follows."""

    key: str
    title: str
    build: Callable[[Any], Any]  # takes the report's data.Source (not imported here: data.py imports this module)
    render: Callable[[Any], str]
    after: str = "trust"


REGISTERED: list[Section] = []


def register_section(section: Section) -> Section:
    """Add a section to every report built from now on.

    Raises:
        SpecError: the key is taken, or `after` names no section.
    """
    taken = {*BUILT_IN, *(s.key for s in REGISTERED)}
    if section.key in taken:
        raise SpecError(f"report section '{section.key}' exists already; choose another key")
    if section.after not in taken:
        raise SpecError(
            f"report section '{section.key}': after='{section.after}' names no section ({', '.join(taken)})"
        )
    REGISTERED.append(section)
    return section


def unregister_section(key: str) -> None:
    """Remove a registered section (tests, notebooks)."""
    REGISTERED[:] = [s for s in REGISTERED if s.key != key]
