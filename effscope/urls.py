"""Database locations: one rule from what a user types (`--db`, `--storage`) to an SQLAlchemy URL, and masking.

Every command (profile, search, report, lut, calibrate) reads its database through `database_url`, so a location
means the same everywhere; every URL or command line that is printed or stored goes through `mask_url` or
`mask_command`, so a password never leaves the process.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from effscope.errors import SpecError

__all__ = ["DEFAULT_DB", "database_url", "mask_command", "mask_url", "shown_location", "sqlite_path"]

DEFAULT_DB = "effscope.db"  # in the working directory; EFFSCOPE_DB overrides
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"]+")


def database_url(location: str | None) -> str:
    """The SQLAlchemy URL of a database location.

    A bare path means an SQLite file (made absolute); None means $EFFSCOPE_DB or ./effscope.db. A bare
    postgresql:// names the installed driver: SQLAlchemy 2.1 maps it to psycopg 3, while effscope's `postgres`
    extra installs psycopg2.

    Raises:
        SpecError: an empty location, an in-memory SQLite URL (its data would vanish with the process and workers
            cannot share it), or text that is not a URL.
    """
    import importlib.util

    from sqlalchemy.engine import make_url

    if location is not None and not location.strip():  # `--db ""` (an unset shell variable, say) is not the default
        raise SpecError("the database location is empty; give an SQLite file path or an SQLAlchemy URL")
    location = location or os.environ.get("EFFSCOPE_DB") or DEFAULT_DB
    if "://" not in location:
        return f"sqlite:///{Path(location).expanduser().resolve()}"
    try:
        url = make_url(location)
    except Exception:  # sqlalchemy's ArgumentError, or ValueError for a bad port
        raise SpecError(
            f"'{mask_url(location)}' is not a database URL; give an SQLite file path or an SQLAlchemy URL such as "
            "postgresql://user@host/dbname"
        ) from None
    if url.drivername.split("+")[0] == "sqlite" and (
        url.database in (None, "", ":memory:") or url.query.get("mode") == "memory"
    ):
        raise SpecError(
            f"'{location}' is an in-memory SQLite database, which vanishes when the command ends and which worker "
            "processes cannot share; give an SQLite file path (e.g. effscope.db) or a server URL"
        )
    if url.drivername == "postgresql" and importlib.util.find_spec("psycopg") is None:
        if importlib.util.find_spec("psycopg2") is not None:
            return url.set(drivername="postgresql+psycopg2").render_as_string(hide_password=False)
    return location


def sqlite_path(url: str) -> Path | None:
    """The file of an SQLite URL (absolute), or None for other databases."""
    if not url.startswith("sqlite:///"):
        return None
    path = url.removeprefix("sqlite:///").split("?", 1)[0]
    return Path(path).expanduser().resolve() if path else None


def shown_location(location: str) -> str:
    """A database (or file) location for people to read: as the user gave it, password masked, and a file under the
    working directory relative to it ('effscope.db', not 'sqlite:////home/me/project/effscope.db')."""
    path = sqlite_path(location) if "://" in location else Path(location).expanduser()
    if path is not None:
        try:
            return str(path.resolve().relative_to(Path.cwd().resolve()))
        except ValueError:  # outside the working directory: as given
            pass
    return mask_url(location)


def mask_url(url: str) -> str:
    """The URL with its password shown as ***, for messages, tables, reports and stored provenance."""
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:  # not parseable: mask whatever sits between "user:" and "@"
        return re.sub(r"://([^:/@\s]*):[^@/\s]*@", r"://\1:***@", url)
    if parsed.password is None:
        return url
    return parsed.render_as_string(hide_password=True)


def mask_command(text: str) -> str:
    """A command line with the password of every URL in it masked (`--db=postgresql://u:pw@h/db` included)."""
    return _URL_IN_TEXT.sub(lambda m: mask_url(m.group(0)), text)
