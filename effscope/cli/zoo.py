"""`effscope blocks ...` and `effscope models ...`: the zoo, its knobs and parameter counts."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer
from rich.table import Table

from effscope.cli._app import FORMAT_HELP, SET_HELP, app, check_format, out, write_rows

if TYPE_CHECKING:
    from effscope.knobs import Config
    from effscope.spec import Spec

blocks_app = typer.Typer(help="The block zoo: every block variant of the efficient-ViT papers.", no_args_is_help=True)
models_app = typer.Typer(help="Backbones and their named presets.", no_args_is_help=True)
app.add_typer(blocks_app, name="blocks")
app.add_typer(models_app, name="models")


def _configured(spec: Spec, assignments: list[str]):
    from effscope.knobs import parse_assignments

    return spec.configure(parse_assignments(spec.config, assignments))


def _knob_table(spec: Spec, config: Config) -> Table:
    from effscope.knobs import format_value, knobs_of

    table = Table(title=f"{spec.kind} {spec.name}: knobs", title_justify="left")
    for col in ("knob", "value", "default", "domain", "unit", "help"):
        table.add_column(col)
    for k in knobs_of(config).values():
        value = getattr(config, k.name)
        table.add_row(
            k.name,
            format_value(value),
            format_value(getattr(spec.config, k.name)),
            k.domain.describe(),
            k.unit,
            k.help,
        )
    return table


def _layout_lines(doc: str) -> list[str]:
    """The docstring's "Input: ..." and "Output: ..." statements, each joined across its wrapped lines."""
    items: list[str] = []
    current: list[str] | None = None
    for line in doc.splitlines():
        text = line.strip()
        if text.startswith(("Input", "Output")):
            current = [text]
            items.append("")
        elif not text:
            current = None
        elif current is not None:
            current.append(text)
        if current is not None:
            items[-1] = " ".join(current)
    return items


def _param_count(spec: Spec, config: Config | None = None) -> int:
    return sum(p.numel() for p in spec.build(config, device="meta").parameters())


def _lookup(name: str, kind: str) -> Spec:
    """The block or model named `name`; a name of the other kind is pointed to its own command."""
    from effscope.errors import UnknownNameError
    from effscope.spec import blocks, models

    mine, other, other_kind = (blocks(), models(), "model") if kind == "block" else (models(), blocks(), "block")
    if name not in mine and name in other:
        raise UnknownNameError(f"'{name}' is a {other_kind}, not a {kind}: effscope {other_kind}s show {name}")
    return mine.get(name)


def _show(spec: Spec, assignments: list[str]) -> None:
    from effscope.knobs import format_value

    config = _configured(spec, assignments)
    out.print(f"[bold]{spec.name}[/bold] ({spec.family}; {spec.paper})")
    out.print(spec.summary)
    for line in _layout_lines(spec.module.__doc__ or ""):
        out.print(line, highlight=False)
    out.print(_knob_table(spec, config))
    derived = config.derived()
    if derived:
        shown = {k: f"{v:.4g}" if isinstance(v, float) else format_value(v) for k, v in derived.items()}
        out.print("derived: " + ", ".join(f"{k} = {v}" for k, v in shown.items()))  # alpha 0.8333, not 16 digits
    out.print(f"params: {_param_count(spec, config):,}")
    ref = spec.reference
    if ref is not None and config == spec.config:
        parts = [
            f"params {ref.params:,}" if ref.params is not None else None,
            f"MACs {ref.macs / 1e9:.4f} G at {ref.size[0]}x{ref.size[1]}" if ref.macs else None,
        ]
        shown = ", ".join(p for p in parts if p)
        if shown:
            out.print(f"reference ({ref.source}): {shown}")
    for note in spec.notes:
        out.print(f"note: {note}")


@blocks_app.command("list")
def blocks_list(format_: str = typer.Option("table", "--format", help=FORMAT_HELP)) -> None:
    """List every registered block: name, family, paper, one-line summary."""
    from effscope.spec import blocks

    rows = [{"block": s.name, "family": s.family, "paper": s.paper, "summary": s.summary} for s in blocks()]
    _print_rows(rows, check_format(format_))


def _print_rows(rows: list[dict], fmt: str, right: tuple[str, ...] = ()) -> None:
    """A listing as a table for people, or as JSON / CSV on stdout; a cell that is None shows as '-'."""
    if fmt != "table":
        write_rows(rows, fmt)
        return
    table = Table()
    for col in rows[0]:
        table.add_column(col.replace("_", " "), justify="right" if col in right else "left")
    for row in rows:
        table.add_row(*(f"{v:,}" if isinstance(v, int) else "-" if v is None else str(v) for v in row.values()))
    out.print(table)


@blocks_app.command("show")
def blocks_show(
    name: str = typer.Argument(..., help="Block name (see `effscope blocks list`)."),
    set_: list[str] = typer.Option([], "--set", "-s", help=SET_HELP),
) -> None:
    """Show a block's knobs (name, value, default, domain, unit, help), derived figures and parameter count."""
    _show(_lookup(name, "block"), set_)


@models_app.command("list")
def models_list(format_: str = typer.Option("table", "--format", help=FORMAT_HELP)) -> None:
    """List every model preset with its parameter count beside the official implementation's."""
    from effscope.spec import models

    fmt = check_format(format_)
    rows = []
    for spec in models():
        n = _param_count(spec)
        ref = spec.reference.params if spec.reference else None
        match = "n/a" if ref is None else ("exact" if n == ref else f"off by {n - ref:+,}")
        rows.append(
            {
                "model": spec.name,
                "family": spec.family,
                "params": n,
                "official_params": ref,
                "match": match,
                "summary": spec.summary,
            }
        )
    _print_rows(rows, fmt, right=("params", "official_params"))


@models_app.command("show")
def models_show(
    name: str = typer.Argument(..., help="Preset name (see `effscope models list`)."),
    set_: list[str] = typer.Option([], "--set", "-s", help=SET_HELP),
) -> None:
    """Show a preset's knobs, derived figures and parameter count."""
    _show(_lookup(name, "model"), set_)
