"""Reports: one self-contained HTML file per study or set of Records, read instead of tables.

    build_report(output="reports/hilo.html", storage="effscope.db", study="hilo-search")

data.py turns designs into plain data per figure (tested on its own); html.py renders it with plotly. plotly, optuna
and pandas load only when a report is built. `effscope.report(...)` (this package, called) is the Python API's
report function.
"""

from __future__ import annotations

from effscope.api import callable_package
from effscope.report.build import DEFAULT_FOLDER, build_report, check_report_output
from effscope.report.data import ReportError

__all__ = ["DEFAULT_FOLDER", "ReportError", "build_report", "check_report_output"]

callable_package(__name__, "report")
