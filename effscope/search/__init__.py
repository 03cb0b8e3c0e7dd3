"""Architecture search: Optuna over declared design knobs, under latency budgets measured on the target device.

`import effscope.search` stays cheap: optuna and torch load when a search runs. `effscope.search(...)` (this
package, called) is the Python API's search function.
"""

from __future__ import annotations

from effscope.api import callable_package
from effscope.search.coordinator import SearchResult, run_search
from effscope.search.objectives import OBJECTIVES, QualityObjective
from effscope.search.space import Space, SpaceError, list_spaces, load_space
from effscope.search.summary import SearchSummary, summarize

__all__ = [
    "OBJECTIVES",
    "QualityObjective",
    "SearchResult",
    "SearchSummary",
    "Space",
    "SpaceError",
    "list_spaces",
    "load_space",
    "run_search",
    "summarize",
]

callable_package(__name__, "search")
