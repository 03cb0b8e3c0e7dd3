"""`effscope export`: every stored Record (or a filtered subset) as one flat table, for pandas, spreadsheets, jq."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from effscope.cli._app import DB_HELP, app, check_format, esc, out, shown_url, write_rows
from effscope.errors import SpecError

if TYPE_CHECKING:
    from effscope.profile.store import RecordStore


@app.command()
def export(
    output: str = typer.Option(
        ..., "--output", "-o", help="FILE.csv, FILE.parquet or FILE.json (by suffix), or - for stdout with --format."
    ),
    db: str = typer.Option(None, "--db", help=DB_HELP),
    storage: str = typer.Option(
        None, "--storage", help="A search's storage: export its study's trials (one row per trial) instead of Records."
    ),
    format_: str = typer.Option(
        None, "--format", help="With -o -: json or csv (default csv); with a file name it must match its suffix."
    ),
    target: str = typer.Option(None, "--target", help="Only this target's Records."),
    study: str = typer.Option(
        None, "--study", help="Only the Records of this search study; with --storage, the study whose trials to export."
    ),
    status: str = typer.Option(None, "--status", help="Only Records with this status: ok or failed."),
) -> None:
    """Write the record store as one flat table: one row per Record, knobs as knob.NAME, environment as env.NAME.
    With --storage, a search study's trials instead: quality, feasibility, constraints, front, knobs, per trial."""
    from effscope.output import check_output
    from effscope.profile.store import RecordStore, export_format, write_table
    from effscope.urls import database_url

    if storage is not None:
        if db is not None or target is not None or status is not None:
            raise SpecError(
                "--storage exports a study's trials and takes only --study: --db, --target and --status select "
                "Records, which an export without --storage writes"
            )
    url = database_url(storage if storage is not None else db)
    if output == "-":
        format_ = format_ or "csv"
        if check_format(format_) == "table":
            raise SpecError("-o - writes json or csv; give --format json or --format csv")
    else:
        table_format = export_format(output)
        if format_ is not None and check_format(format_) != table_format:
            raise SpecError(
                f"--format {format_} does not match {output}, which its suffix makes {table_format}; the suffix "
                "chooses a file's format (--format is for -o -)"
            )
        check_output(output, databases=[url])
    if storage is not None:
        _export_trials(storage, study, output, format_ if output == "-" else table_format, url)
        return
    # Export only reads: it needs no write access and must not create a file or the Record table.
    store = RecordStore(url, read_only=True)
    if status not in (None, "ok", "failed"):
        raise SpecError(f"--status must be ok or failed, but got '{status}'")
    filters = {"target": target, "study": study, "status": status}
    frame = store.dataframe(**filters)
    if frame.empty:
        raise SpecError(_nothing_matched(store, filters))
    if output == "-":
        write_rows(frame.to_dict(orient="records"), format_)
        return
    written = write_table(frame, output, table_format, databases=[store.url])
    out.print(f"{len(frame)} record(s) from {shown_url(store.url)} written to {esc(written)}")


_PLURAL = {"target": "targets", "study": "studies", "status": "statuses"}


def _nothing_matched(store: RecordStore, filters: dict[str, str | None]) -> str:
    """Why the export is empty: an empty store, or each filter value the store lacks, with the values it holds."""
    from effscope.registry import did_you_mean
    from effscope.urls import mask_url

    where = mask_url(store.url)
    if not any(filters.values()):
        return f"no Record in {where}; effscope profile and search store them"
    for column, value in filters.items():
        held = store.distinct(column) if value is not None else []
        if value is not None and value not in held:
            return (
                f"no Record in {where} has --{column} {value} ({_PLURAL[column]} there: {', '.join(held) or 'none'})"
                f"{did_you_mean(value, held)}"
            )
    return f"no Record in {where} matches all of the filters together"


def _export_trials(storage: str, study: str | None, output: str, fmt: str, url: str) -> None:
    """A study's finished trials as one flat table (search.summary.trials_table), read without writing."""
    from effscope.profile.store import rows_frame, write_table
    from effscope.report._load import open_study, require_effscope_study
    from effscope.search.study import study_info
    from effscope.search.summary import trials_table

    loaded, _, _ = open_study(storage, study)
    require_effscope_study(loaded)
    rows = trials_table(loaded.get_trials(deepcopy=False), study_info(loaded), loaded.study_name)
    if not rows:
        raise SpecError(f"study '{loaded.study_name}' has no finished trials yet; run `effscope search` on it first")
    if output == "-":
        write_rows(rows, fmt)
        return
    written = write_table(rows_frame(rows), output, fmt, databases=[url])
    out.print(f"{len(rows)} trial(s) of study {esc(loaded.study_name)} written to {esc(written)}")
