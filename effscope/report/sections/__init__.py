"""Report sections as units: a section is its data builder and its renderer, side by side, registered once.

    from effscope.report.sections import Section, register_section

    def build(source):                 # plain data from the designs, or None to leave the section out
        return {"n": len(source.points)}

    def render(data):                  # the section's HTML body (import plotly here, not at the top)
        return f"<p>{data['n']} designs</p>"

    register_section(Section("count", "How many designs", build, render, after="gap"))

The built-in sections (summary, front, gap, scaling, breakdown, insight, trust, provenance) are made the same way,
one module each in this package: its dataclasses, its builder and its renderer. A report builds and draws every
section, built-in or registered, in `page_order()`; each sits after the one its `after` names.
"""

from __future__ import annotations

from effscope.errors import SpecError
from effscope.report.sections import breakdown, front, gap, insight, provenance, scaling, summary, trust
from effscope.report.sections._section import Section

__all__ = ["BUILT_IN", "REGISTERED", "Section", "page_order", "register_section", "unregister_section"]

BUILT_IN_SECTIONS = tuple(m.SECTION for m in (summary, front, gap, scaling, breakdown, insight, trust, provenance))
BUILT_IN = tuple(s.key for s in BUILT_IN_SECTIONS)

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


def page_order() -> list[Section]:
    """The built-in and registered sections in the order a report shows them: each after the section its `after`
    names (a later one nearer to it), the first with `after=None` on top. A section whose `after` is gone (it was
    unregistered) goes before the last section, provenance."""
    order: list[Section] = []
    for section in (*BUILT_IN_SECTIONS, *REGISTERED):
        keys = [s.key for s in order]
        if section.after is None:
            at = 0
        elif section.after in keys:
            at = keys.index(section.after) + 1
        else:
            at = len(order) - 1
        order.insert(at, section)
    return order
