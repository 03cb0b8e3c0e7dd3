"""`effscope export`: every stored Record (or a filtered subset) as one flat table, for pandas, spreadsheets, jq."""

from __future__ import annotations

import typer

from effscope.cli._app import DB_HELP, app, check_format, esc, out, shown_url, write_rows
from effscope.errors import SpecError


@app.command()
def export(
    output: str = typer.Option(
        ..., "--output", "-o", help="FILE.csv, FILE.parquet or FILE.json (by suffix), or - for stdout with --format."
    ),
    db: str = typer.Option(None, "--db", help=DB_HELP),
    format_: str = typer.Option("csv", "--format", help="With -o -: json or csv."),
    target: str = typer.Option(None, "--target", help="Only this target's Records."),
    study: str = typer.Option(None, "--study", help="Only the Records of this search study."),
    status: str = typer.Option(None, "--status", help="Only Records with this status: ok or failed."),
) -> None:
    """Write the record store as one flat table: one row per Record, knobs as knob.NAME, environment as env.NAME."""
    from effscope.output import check_output
    from effscope.profile.store import RecordStore, export_format, write_table
    from effscope.urls import database_url, mask_url

    url = database_url(db)
    # Export only reads: it needs no write access and must not create a file or the Record table.
    store = RecordStore(url, read_only=True)
    if status not in (None, "ok", "failed"):
        raise SpecError(f"--status must be ok or failed, but got '{status}'")
    if output == "-":
        if check_format(format_) == "table":
            raise SpecError("-o - writes json or csv; give --format json or --format csv")
    else:
        table_format = export_format(output)
        check_output(output, databases=[url])
    filters = {"target": target, "study": study, "status": status}
    frame = store.dataframe(**filters)
    if frame.empty:
        which = " the filters" if any(filters.values()) else ""
        raise SpecError(f"no Record matched{which} in {mask_url(store.url)}; effscope profile and search store them")
    if output == "-":
        write_rows(frame.to_dict(orient="records"), format_)
        return
    written = write_table(frame, output, table_format, databases=[store.url])
    out.print(f"{len(frame)} record(s) from {shown_url(store.url)} written to {esc(written)}")
