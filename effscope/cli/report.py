"""`effscope report`: one self-contained HTML report from a study, a record store or a Records export."""

from __future__ import annotations

import typer

from effscope.cli._app import app, command_line, esc, out


@app.command()
def report(
    records: str = typer.Argument(
        None, metavar="RECORDS.csv", help="A Records export (CSV, Parquet or JSON), or Records kept whole in JSON."
    ),
    storage: str = typer.Option(None, "--storage", help="Study storage: SQLite file or SQLAlchemy URL."),
    study: str = typer.Option(None, "--study", help="Study name (optional when the storage holds one study)."),
    db: str = typer.Option(None, "--db", help="Record store: report on every profile Record in it."),
    output: str = typer.Option(None, "--output", "-o", help="Report file (default reports/NAME.html)."),
    plotlyjs: str = typer.Option(
        "inline",
        "--plotlyjs",
        help="inline: one offline file (~5 MB); directory: a shared plotly.min.js beside it; cdn: needs internet.",
    ),
) -> None:
    """Write an HTML report: Pareto front, FLOPs-vs-speed gap, scaling, breakdown, trust and provenance."""
    from effscope.report import build_report
    from effscope.report.build import written_message

    path = build_report(
        output=output,
        storage=storage,
        study=study,
        db=db,
        records_csv=records,
        plotlyjs=plotlyjs,
        command=command_line(),
    )
    out.print(esc(written_message(path, plotlyjs)))
