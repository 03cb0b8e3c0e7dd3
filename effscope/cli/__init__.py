"""The `effscope` command line: parses, calls one library function, prints its result.

Every EffscopeError reaches the user as one sentence on stderr with exit code 2 (`--debug` shows the traceback);
Ctrl-C ends any command with exit code 130 and no traceback, start-up included (so typer, rich and the command
modules are imported inside `main`). One module per command group; importing them registers their commands.
"""

from __future__ import annotations

import sys

from effscope.errors import EffscopeError

__all__ = ["app", "main"]


def _load_app():
    from effscope.cli import export, lut, profile, report, search, zoo  # noqa: F401  (register commands)
    from effscope.cli._app import app

    return app


def __getattr__(name: str):
    if name == "app":
        return _load_app()
    raise AttributeError(f"module 'effscope.cli' has no attribute '{name}'")


def _debug() -> bool:
    loaded = sys.modules.get("effscope.cli._app")
    return bool(loaded and loaded.state["debug"])


def main() -> None:
    """Console-script entry point."""
    try:
        _load_app()()
    except EffscopeError as e:
        if _debug():
            raise
        from effscope.cli._app import err

        err.print(f"error: {e}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:  # outside a command's own handling (start-up, a long import)
        if _debug():
            raise
        print("interrupted", file=sys.stderr)
        sys.exit(130)
