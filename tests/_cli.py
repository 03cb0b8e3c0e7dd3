"""The console entry point run in the test's own process, for tests of what a user sees."""

from __future__ import annotations

import sys


def effscope(monkeypatch, capfd, args: list[str]) -> tuple[int, str, str]:
    """Run `effscope.cli.main` on `args`: (exit code, stdout, stderr). An uncaught exception fails the test."""
    from effscope.cli import main

    monkeypatch.setattr(sys, "argv", ["effscope", *args])
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    out, err = capfd.readouterr()
    return code, out, err
