"""Profiling: counting (params, MACs with fvcore + handles, cross-checked), measuring in a worker process, and the
record store.

`import effscope.profile` stays cheap: torch and fvcore load only when something is counted or measured.
`effscope.profile(...)` (this package, called) is the Python API's profile function.
"""

from __future__ import annotations

from effscope.api import callable_package
from effscope.profile.counting import CountError, Counts, count
from effscope.profile.record import Record, Workload
from effscope.profile.store import RecordStore, StoreError

__all__ = ["CountError", "Counts", "Record", "RecordStore", "StoreError", "Workload", "count"]

callable_package(__name__, "profile")
