"""The typer app, its consoles and the small helpers every command module shares."""

from __future__ import annotations

import sys

import typer
from rich.console import Console
from rich.markup import escape

from effscope import __version__

app = typer.Typer(
    help="Hardware-aware efficiency profiler and architecture search for efficient vision transformers.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# Piped output (logs, README excerpts) gets wide tables instead of rich's 80-column default.
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)
state = {"debug": False}

SET_HELP = "Knob value, knob=value (repeatable); tuples as 2,2,6,2."


def command_line() -> str:
    """This command line as stored with Records, studies and reports (passwords in URLs masked)."""
    from effscope.urls import mask_command

    return mask_command(" ".join(["effscope", *sys.argv[1:]]))


def esc(text) -> str:
    """User or exception text for a rich string: its brackets shown as typed, never read as markup."""
    return escape(str(text))


def shown_url(url: str) -> str:
    """A database URL as printed: password masked, brackets escaped."""
    from effscope.urls import mask_url

    return esc(mask_url(url))


def fmt(value, spec: str = "", scale: float = 1.0) -> str:
    """A table cell: '-' for a missing number (missing is never shown as 0)."""
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    if not spec:
        return str(value)
    return format(value if scale == 1.0 else value / scale, spec)


def _version(value: bool) -> None:
    if value:
        out.print(f"effscope {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks instead of one-line errors."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    state["debug"] = debug
