"""The typer app, its consoles and the small helpers every command module shares."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

from effscope._version import __version__

app = typer.Typer(
    help="Hardware-aware efficiency profiler and architecture search for efficient vision transformers.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,  # click's plain help: flags without a "<bool>" value column, defaults shown
)

# Piped output (logs, README excerpts) gets wide tables instead of rich's 80-column default. No emoji codes: a name
# such as `tiny:sleepy` is printed as typed, also where the text is printed without markup.
out = Console(width=None if sys.stdout.isatty() else 160, emoji=False)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160, emoji=False)
state = {"debug": False}

SET_HELP = "Knob value, knob=value (repeatable); tuples as 2,2,6,2."
DB_HELP = "Record store: SQLite file or SQLAlchemy URL (default $EFFSCOPE_DB, else ./effscope.db)."
FORMATS = ("table", "json", "csv")
FORMAT_HELP = "table (for people), or json / csv on stdout (for programs; notes then go to stderr)."


def command_line() -> str:
    """This command line as stored with Records, studies and reports (passwords in URLs masked)."""
    from effscope.urls import mask_command

    return mask_command(" ".join(["effscope", *sys.argv[1:]]))


def esc(text: object) -> str:
    """User or exception text for a rich string: its brackets shown as typed, never read as markup (emoji codes such
    as `:sleepy:` in a target name are off on effscope's consoles)."""
    return escape(str(text))


def shown_url(url: str) -> str:
    """A database URL as printed: password masked, brackets escaped."""
    from effscope.urls import mask_url

    return esc(mask_url(url))


class Terminated(KeyboardInterrupt):
    """SIGTERM (`timeout`, a CI cancel, `kill`) raised as an interrupt by `sigterm_as_interrupt`: a command ends early
    as after Ctrl-C, with the exit code of the signal (`interrupt_exit_code`)."""


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within: SIGTERM raises `Terminated`, a KeyboardInterrupt, so that a command's Ctrl-C handling (what was
    finished is kept, written and said) also serves a termination; SIGTERM's previous handling comes back after.

    Only the main thread can set a handler; elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminated(_signum: int, _frame: object) -> None:
        raise Terminated

    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def interrupt_exit_code(e: KeyboardInterrupt) -> int:
    """The shell's code for a command ended by a signal, 128 + its number: 143 for SIGTERM, 130 for Ctrl-C."""
    return 128 + (signal.SIGTERM if isinstance(e, Terminated) else signal.SIGINT)


def fmt(value: float | None, spec: str = "", scale: float = 1.0) -> str:
    """A table cell: '-' for a missing number (missing is never shown as 0)."""
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    if not spec:
        return str(value)
    return format(value if scale == 1.0 else value / scale, spec)


def check_format(value: str) -> str:
    """The --format value, or one sentence saying what is allowed."""
    from effscope.errors import SpecError

    if value not in FORMATS:
        raise SpecError(f"--format must be one of {', '.join(FORMATS)}, but got '{value}'")
    return value


@contextlib.contextmanager
def data_on_stdout(fmt: str) -> Iterator[None]:
    """In json or csv format stdout carries the data alone: the command's notes and tables go to stderr meanwhile."""
    if fmt == "table":
        yield
        return
    out.file = sys.stderr
    try:
        yield
    finally:
        out.file = None  # back to whatever sys.stdout is then


def write_rows(rows: list[dict[str, Any]], fmt: str) -> None:
    """Rows as a JSON array or as CSV with a header, on stdout, written as `--json FILE` / `--csv FILE` write them."""
    from effscope.profile.store import rows_frame, write_frame

    write_frame(rows_frame(rows), sys.stdout, fmt)
    if fmt == "json":
        sys.stdout.write("\n")  # pandas ends the array without one
    sys.stdout.flush()


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
