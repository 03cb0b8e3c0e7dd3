"""The `effscope` command line: parses, calls one library function, prints its result.

Every EffscopeError reaches the user as one sentence on stderr with exit code 2 (`--debug` shows the traceback);
Ctrl-C ends any command with exit code 130 and no traceback, start-up included (so typer, rich and the command
modules are imported inside `main`). One module per command group; importing them registers their commands.
"""

from __future__ import annotations

import errno
import os
import sys

from effscope.errors import EffscopeError

__all__ = ["app", "main"]


def _load_app():
    from effscope.cli import export, import_records, lut, profile, report, search, zoo  # noqa: F401 (register commands)
    from effscope.cli._app import app

    return app


def __getattr__(name: str):
    if name == "app":
        return _load_app()
    raise AttributeError(f"module 'effscope.cli' has no attribute '{name}'")


def _debug() -> bool:
    loaded = sys.modules.get("effscope.cli._app")
    return bool(loaded and loaded.state["debug"])


def _debug_first(argv: list[str]) -> list[str]:
    """`--debug` is an option of `effscope` itself; accept it after the command too (`effscope profile X --debug`),
    but never after `--`, where arguments are taken as they are."""
    end = argv.index("--") if "--" in argv else len(argv)
    if "--debug" not in argv[1:end]:
        return argv
    return [argv[0], "--debug", *(a for a in argv[1:end] if a != "--debug"), *argv[end:]]


def main() -> None:
    """Console-script entry point."""
    sys.argv = _debug_first(sys.argv)
    try:
        _load_app()()
    except EffscopeError as e:
        if _debug():
            import traceback

            traceback.print_exc()  # the same exit code as without --debug: scripts can rely on it
        else:
            from effscope.cli._app import err

            err.print(f"error: {e}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:  # outside a command's own handling (start-up, a long import)
        if _debug():
            raise
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except SystemExit as e:
        # typer turns an interrupt before a command's own handling (its imports) into a silent exit 130; a
        # command's own ending is raised `from None`, so only typer's keeps the interrupt as its cause
        if isinstance(getattr(e.__context__, "__cause__", None), KeyboardInterrupt):
            print("interrupted", file=sys.stderr)
        raise
    except OSError as e:
        # output nowhere to go (stdout on a full device, `> /dev/full`): a command's own files say so themselves
        if e.errno not in _NO_ROOM or _debug():
            raise
        _silence_stdout()
        print(f"error: cannot write to {e.filename or 'standard output'}: {e.strerror}", file=sys.stderr)
        sys.exit(2)


_NO_ROOM = {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EFBIG}


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's last flush of what could not be written raises nothing."""
    try:
        sys.stdout.flush()
    except OSError:
        pass
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):  # no file descriptor (a captured stdout)
        pass
