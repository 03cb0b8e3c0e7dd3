"""Building one report: read the source, make its data, render and write the HTML file."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from effscope.errors import SpecError
from effscope.output import check_output, write_atomic
from effscope.report.data import ReportError

if TYPE_CHECKING:
    from effscope.profile.record import Record

__all__ = ["DEFAULT_FOLDER", "ReportError", "build_report", "check_report_output", "written_message"]

DEFAULT_FOLDER = "reports"


def build_report(
    *,
    output: str | Path | None = None,
    storage: str | None = None,
    study: str | None = None,
    db: str | None = None,
    records_csv: str | Path | None = None,
    records: Sequence[Record] | None = None,
    plotlyjs: str = "inline",
    command: str | None = None,
    protect: Sequence[str | None] = (),
    arguments: bool = False,
) -> Path:
    """Write one HTML report and return its path.

    Give one source: `storage` (with `study`, optional when the storage holds one study), `db` (every Record in a
    record store), `records_csv` (a Records export: CSV, Parquet or JSON) or `records` (Record objects, e.g. the
    ones `effscope profile` just measured). `study` with `db` reads the study from that database (studies and
    Records share one database).

    Args:
        output: the HTML file; None writes reports/<study or file name>.html under the working directory.
        plotlyjs: "inline" (one offline file), "directory" (a shared plotly.min.js beside the report) or "cdn".
        command: the command line that asked for the report, shown under provenance.
        protect: further databases (URLs or files) the report must never be written onto; the source's own
            database is always protected.
        arguments: name a wrong source or plotlyjs by effscope.report's keyword arguments (records=, db=, ...)
            instead of the command's options, and raise it as a SpecError, as effscope.profile's bad arguments.

    Raises:
        ReportError: no or several sources (SpecError with `arguments`), a missing or empty study, an unreadable
            file.
        OutputError: an unwritable output, or one that is a database in use (checked before anything is read).
    """
    from effscope.report import _load, html
    from effscope.report.contents import report_data

    _check_request(plotlyjs, [records, records_csv, db, storage], study, arguments=arguments)
    if study is not None and storage is None:
        storage, db = db, None
    protect = [*protect, storage, db]
    if output is not None:
        check_report_output(output, protect=protect)
    if storage is not None:
        source = _load.load_study(storage, study)
    elif db is not None:
        source = _load.load_records_db(db)
    elif records is not None:
        source = _load.records_source(records)
    else:
        source = _load.load_records_file(records_csv)
    path = Path(output) if output is not None else Path(DEFAULT_FOLDER) / f"{_file_name(source.name)}.html"
    document = html.render(report_data(source, command), plotlyjs=plotlyjs)
    if plotlyjs == "directory":  # plotly.min.js first: a report without its script would be blank
        check_output(path, databases=protect, create_folder=True)
        path.parent.mkdir(exist_ok=True)
        html.write_plotlyjs(path.parent)
    write_atomic(path, lambda tmp: tmp.write_text(document, encoding="utf-8"), databases=protect, create_folder=True)
    return path


def _check_request(plotlyjs: object, sources: list[object], study: str | None, *, arguments: bool) -> None:
    """Exactly one source, a study only with a database, and a known plotlyjs mode; each mistake named as the
    command's options, or with `arguments` as effscope.report's keyword arguments. `sources`: records, records_csv,
    db, storage (report's records= is one of the first two)."""
    from effscope.report.html import PLOTLYJS_MODES

    error = SpecError if arguments else ReportError
    if not isinstance(plotlyjs, str) or plotlyjs not in PLOTLYJS_MODES:
        name, got = ("plotlyjs", repr(plotlyjs)) if arguments else ("--plotlyjs", f"'{plotlyjs}'")
        raise error(f"{name} must be one of {', '.join(PLOTLYJS_MODES)}, but got {got}")
    names = ("records", "records", "db", "storage")
    given = [name for name, value in zip(names, sources, strict=True) if value is not None]
    if len(given) != 1:
        raise error(
            "give one source: records= (Records, or a Records export file), db= (a record store) or storage= (a "
            f"search's, with study=), but got {' and '.join(given) or 'none'}"
            if arguments
            else "give one source: --storage URL [--study NAME] for a search, --db URL for profile Records, "
            f"or a RECORDS.csv file (got {len(given)})"
        )
    if study is not None and given[0] == "records":  # a study lives in a database; it would be silently ignored
        raise error(
            f"study= names a search in storage=, but records= holds Records, not studies (got study={study!r})"
            if arguments
            else f"--study names a search in a database (--storage URL --study NAME); a Records file has no "
            f"studies (got --study '{study}')"
        )


def written_message(path: Path, plotlyjs: str = "inline") -> str:
    """What to tell a person once a report is written: its size, and for the other --plotlyjs modes what the page
    needs beside it (the shared plotly.min.js, or internet for the CDN)."""
    size = path.stat().st_size
    shown = f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{max(1, round(size / 1e3))} kB"
    if plotlyjs == "directory":
        from effscope.report.html import PLOTLYJS_FILE

        return (
            f"report written to {path} ({shown}); it loads {path.parent / PLOTLYJS_FILE}, written beside it: "
            "keep the two together"
        )
    if plotlyjs == "cdn":
        return f"report written to {path} ({shown}); it loads plotly.js from its CDN, so it needs internet to show"
    return f"report written to {path} ({shown})"


def check_report_output(output: str | Path, *, protect: Sequence[str | None] = ()) -> Path:
    """Check a report's file name before any work: an .html name, a writable place, not a database in `protect`.

    The report's folder is created when its parent exists; folders are never created further up.

    Raises:
        ReportError: not an .html name.
        OutputError: the file cannot be written there.
    """
    path = Path(output)
    if path.suffix.lower() not in (".html", ".htm"):
        raise ReportError(f"the report is an HTML file: give it a name ending in .html, not '{path}'")
    return check_output(path, databases=protect, create_folder=True)


def _file_name(name: str) -> str:
    """A file name for a study or Records source: other characters become '_', and when that changed the name a
    short hash of it follows, so that names such as 'a/b' and 'a_b' never share a default report file."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "report"
    if safe != name:
        safe += "-" + hashlib.sha256(name.encode()).hexdigest()[:8]
    return safe
