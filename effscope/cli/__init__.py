"""The `effscope` command line: parses, calls one library function, prints its result.

Every EffscopeError reaches the user as one sentence on stderr with exit code 2 (`--debug` shows the traceback).
One module per command group; importing them registers their commands on the app.
"""

from __future__ import annotations

import sys

from effscope.cli import lut, profile, report, search, zoo  # noqa: F401  (register commands)
from effscope.cli._app import app, err, state
from effscope.errors import EffscopeError

__all__ = ["app", "main"]


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except EffscopeError as e:
        if state["debug"]:
            raise
        err.print(f"error: {e}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
