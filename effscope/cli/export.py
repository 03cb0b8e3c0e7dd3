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
    format_: str = typer.Option(
        None, "--format", help="With -o -: json or csv (default csv); with a file name it must match its suffix."
    ),
    target: str = typer.Option(None, "--target", help="Only this target's Records."),
    study: str = typer.Option(None, "--study", help="Only the Records of this search study."),
    status: str = typer.Option(None, "--status", help="Only Records with this status: ok or failed."),
) -> None:
    """Write the record store as one flat table: one row per Record, knobs as knob.NAME, environment as env.NAME."""
    from effscope.output import check_output
    from effscope.profile.store import RecordStore, export_format, write_table
    from effscope.urls import database_url

    url = database_url(db)
    # Export only reads: it needs no write access and must not create a file or the Record table.
    store = RecordStore(url, read_only=True)
    if status not in (None, "ok", "failed"):
        raise SpecError(f"--status must be ok or failed, but got '{status}'")
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
