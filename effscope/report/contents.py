"""A report's contents: the data of every section, built-in and registered alike, from one source (no plotly).

html.py draws what `report_data` returns.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from effscope.report.data import Source, Table
from effscope.report.sections import BUILT_IN, page_order
from effscope.report.sections.breakdown import Breakdown
from effscope.report.sections.front import Front
from effscope.report.sections.gap import Gap
from effscope.report.sections.insight import Insight
from effscope.report.sections.scaling import Scaling
from effscope.report.sections.summary import Summary
from effscope.report.sections.trust import Trust

__all__ = ["ReportData", "report_data"]


@dataclass
class ReportData:
    """Everything a report shows; a section is None when its data does not exist."""

    title: str
    summary: Summary
    front: Front | None
    gap: Gap | None
    scaling: Scaling | None
    breakdown: Breakdown | None
    insight: Insight | None
    trust: Trust | None
    provenance: Table
    registered: dict[str, Any] = field(default_factory=dict)  # key -> data of each registered section that has data
    absent: dict[str, str] = field(default_factory=dict)  # key -> why a section without data is left out

    def section(self, key: str) -> Any:
        """The data of the section `key`, built-in or registered; None when it has nothing to show."""
        return getattr(self, key) if key in BUILT_IN else self.registered.get(key)


def report_data(source: Source, command: str | None = None) -> ReportData:
    """Every section's data from one source; `command` (the command line that asked for the report) goes under
    provenance."""
    if command is not None:
        source = dataclasses.replace(source, report_command=command)
    built = {s.key: s.build(source) for s in page_order()}
    registered = {key: data for key, data in built.items() if key not in BUILT_IN and data is not None}
    absent = {
        s.key: why
        for s in page_order()
        if built[s.key] is None and s.why_absent is not None and (why := s.why_absent(source))
    }
    return ReportData(
        title=built["summary"].title, **{key: built[key] for key in BUILT_IN}, registered=registered, absent=absent
    )
