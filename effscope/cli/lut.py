"""`effscope lut build`: a per-block latency table for a search space, fitted and validated (issue 6)."""

from __future__ import annotations

import shlex

import typer
from rich.table import Table

from effscope.cli._app import (
    DB_HELP,
    app,
    command_line,
    err,
    esc,
    fmt,
    interrupt_exit_code,
    out,
    shown_url,
    sigterm_as_interrupt,
)
from effscope.stats import MIN_RANK_PAIRS

lut_app = typer.Typer(help="Latency lookup tables: predict to reject, never to accept.", no_args_is_help=True)
app.add_typer(lut_app, name="lut")


@lut_app.command("build")
def build(
    space: str = typer.Argument(..., help="A shipped space (effscope search --list) or a .toml file."),
    device: str = typer.Option(None, "--device", help="cpu, cuda or cuda:N (replaces the space's)."),
    db: str = typer.Option(None, "--db", help=DB_HELP),
    name: str = typer.Option(None, "--name", help="Table name (default <space>-<device>); the newest of a name wins."),
    samples: int = typer.Option(16, "--samples", help="Random designs measured as wholes to fit the correction on."),
    holdout: int = typer.Option(8, "--holdout", help="Further random designs measured as wholes, only to validate."),
    seed: int = typer.Option(None, "--seed", help="Seed of the design sample (default: the space's)."),
) -> None:
    """Measure the blocks of a sample of the space's designs, fit sum + correction, validate on held-out designs."""
    from effscope.cli.search import check_space_device
    from effscope.profile.store import check_store_location
    from effscope.search.predictor import build_table
    from effscope.search.space import load_space
    from effscope.urls import database_url, mask_url

    sp = load_space(space).with_overrides(device=device)
    check_space_device(sp, device)
    url = database_url(db)
    check_store_location(url)  # before the designs are drawn, which can take minutes; the store opens once they are

    def progress(text: str) -> None:
        err.print(text, markup=False, highlight=False)

    try:
        with sigterm_as_interrupt():
            table = build_table(
                sp,
                store=url,  # opened once the options are checked: a refused build creates no database
                name=name,
                samples=samples,
                holdout=holdout,
                seed=seed,
                command=command_line(),
                on_progress=progress,
            )
    except KeyboardInterrupt as e:  # typer would exit 130 silently
        measured = getattr(e, "measured", 0)
        kept = (
            f"the {measured} measurement(s) taken are kept as Records in {mask_url(url)}, and a rebuild reuses "
            "its block measurements"
            if measured
            else "nothing was measured"
        )
        err.print(f"interrupted: no latency table was stored; {kept}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(interrupt_exit_code(e)) from None
    v = table.validation
    wholes = v["n_train"] + v["n_holdout"]  # every design is also measured whole: those measurements count too
    out.print(
        f"latency table '{esc(table.name)}' (uid {table.uid}) in {shown_url(url)}: {len(table.entries)} block "
        f"entries ({v['measured'] - wholes} measured, {v['cached']} reused from stored Records), {v['n_train']} "
        f"training and {v['n_holdout']} held-out designs measured whole, predicting {table.statistic}"
    )
    t = Table(title=f"held-out validation ({v['n_holdout']} designs measured as wholes)", title_justify="left")
    for col in ("predictor", "MAPE", "within 5 %", "within 10 %", "Kendall tau"):
        t.add_column(col, justify="left" if col == "predictor" else "right")
    t.add_row(
        f"chosen: {v['fit']}",
        fmt(v["mape"], ".1%"),
        fmt(v["within_5"], ".0%"),
        fmt(v["within_10"], ".0%"),
        fmt(v["kendall_tau"], "+.3f"),
    )
    for kind in ("sum", "affine", "full"):
        if f"baseline_{kind}_mape" in v and kind != v["fit"]:  # the chosen fit's row is above
            t.add_row(
                f"baseline: {kind}",
                fmt(v[f"baseline_{kind}_mape"], ".1%"),
                fmt(v.get(f"baseline_{kind}_within_5"), ".0%"),
                fmt(v[f"baseline_{kind}_within_10"], ".0%"),
                fmt(v[f"baseline_{kind}_kendall_tau"], "+.3f"),
            )
    out.print(t)
    for note in table.notes:
        out.print(f"[dim]note: {esc(note)}[/dim]")
    if v["n_holdout"] < MIN_RANK_PAIRS:
        out.print(
            f"[dim]note: {v['n_holdout']} held-out design(s) are too few to judge the predictor (no Kendall tau "
            f"under {MIN_RANK_PAIRS}); build again with --holdout 8 or more[/dim]"
        )
    if sp.kind == "block":  # every point the table holds is a stored Record, which a search reuses before predicting
        out.print(
            "[dim]note: a search of a block space measures or reuses every design: the table holds only points it "
            "measured, which the search finds stored, so --predictor skips none here[/dim]"
        )
        return
    # the search must run where the table was measured, and read it from the same database
    where = ([] if device is None else ["--device", device]) + ([] if db is None else ["--db", mask_url(db)])
    hint = shlex.join(["effscope", "search", space, *where, "--predictor", table.name])
    out.print(f"use it: {esc(hint)}", soft_wrap=True)
