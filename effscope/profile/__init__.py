"""Profiling: counting (params, MACs with fvcore + handles, cross-checked), measuring in a worker process, and the
record store.

`import effscope.profile` stays cheap: torch and fvcore load only when something is counted or measured.
"""

from __future__ import annotations

from effscope.profile.counting import CountError, Counts, count
from effscope.profile.record import Record, Workload
from effscope.profile.store import RecordStore, StoreError

__all__ = ["CountError", "Counts", "Record", "RecordStore", "StoreError", "Workload", "count"]
