"""Reports: one self-contained HTML file per study or set of Records, read instead of tables.

    build_report(output="reports/hilo.html", storage="effscope.db", study="hilo-search")

Each section is one module in sections/: its plain data (tested on its own), then its plotly figures. data.py holds
the designs and what the sections share; contents.py gathers every section's data and html.py draws the page. plotly,
optuna and pandas load only when a report is built. `effscope.report(...)` (this package, called) is the Python API's
report function.
"""

from __future__ import annotations

from effscope.api import callable_package
from effscope.report.build import DEFAULT_FOLDER, build_report, check_report_output
from effscope.report.data import ReportError

__all__ = ["DEFAULT_FOLDER", "ReportError", "build_report", "check_report_output"]

callable_package(__name__, "report")
