"""Output files (Records exports, reports): checked before any work, never written onto a database in use or over
a file effscope did not write, and written to a temporary file in the same folder that replaces the target only
once it is complete.

A failed write (a full disk, a vanished folder) therefore leaves the old file, or none, never a truncated one. An
existing file is replaced only when it is empty or is effscope's own output of that kind (a Records export, a
report, the plotly.js bundle written beside a report): rerunning a command refreshes its files, while a user's
other file of the same name is never lost.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import stat
from collections.abc import Callable, Iterable
from pathlib import Path

from effscope.errors import EffscopeError

__all__ = ["OutputError", "check_output", "write_atomic"]

# SQLite keeps a database in up to four files; writing over any of them corrupts it.
_SQLITE_COMPANIONS = ("", "-wal", "-shm", "-journal")


class OutputError(EffscopeError):
    """An output file cannot be written: no such folder, not writable, a folder, or a database in use."""


def _database_files(databases: Iterable[str | Path | None]) -> list[Path]:
    from effscope.urls import sqlite_path

    files = []
    for db in databases:
        if db is None:
            continue
        path = sqlite_path(str(db)) if "://" in str(db) else Path(db).expanduser().resolve()
        if path is not None:
            files += [Path(f"{path}{suffix}") for suffix in _SQLITE_COMPANIONS]
    return files


def _same_file(a: Path, b: Path) -> bool:
    if a == b:
        return True
    try:
        sa, sb = a.stat(), b.stat()
    except OSError:  # one does not exist: only equal paths are the same file
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def check_output(path: str | Path, *, databases: Iterable[str | Path | None] = (), create_folder: bool = False) -> Path:
    """Check that `path` can be written, before any work is done; returns it resolved.

    Args:
        databases: database URLs or files in use; `path` must be none of them (compared by resolved path and by
            inode, so another spelling or a hard link is caught too).
        create_folder: the file's folder may be missing when its own parent exists (it is created on writing);
            folders are never created further up.

    Raises:
        OutputError: one sentence naming the path and what is wrong with it.
    """
    given = str(path)
    try:
        return _check_output(given, Path(path).expanduser().resolve(), databases, create_folder)
    except OSError as e:  # the checks below stat the path: a name over the file system's limit fails each one
        if e.errno != errno.ENAMETOOLONG:
            raise
        raise OutputError(f"cannot write '{given}': a name in it is longer than the file system allows") from None


def _check_output(given: str, path: Path, databases: Iterable[str | Path | None], create_folder: bool) -> Path:
    for db in _database_files(databases):
        if _same_file(path, db):
            raise OutputError(
                f"cannot write '{given}': it is a database this command uses ({db}); choose another file name"
            )
    folder = path.parent
    if not folder.is_dir():
        if not (create_folder and folder.parent.is_dir()):
            raise OutputError(f"cannot write '{given}': folder {folder} does not exist")
        folder = folder.parent  # the folder is made on writing: its parent must take it
    if path.is_dir():
        raise OutputError(f"cannot write '{given}': it is a folder; give a file name")
    if path.exists():
        mode = path.stat().st_mode
        if not stat.S_ISREG(mode):
            raise OutputError(f"cannot write '{given}': it is not a regular file")
        if not os.access(path, os.W_OK) or not mode & stat.S_IWUSR:
            raise OutputError(f"cannot write '{given}': the file is read-only")
        if not _replaceable(path):
            raise OutputError(
                f"cannot write '{given}': the file exists and is not effscope's output (a Records export, a report); "
                "remove it or choose another name"
            )
    try:  # the real test (permissions, read-only mounts, /proc): create and remove a file there
        probe = _temp_name(folder, path.name)
        os.close(os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        probe.unlink()
    except OSError as e:
        raise OutputError(f"cannot write '{given}': folder {folder} does not take new files ({_cause(e)})") from None
    return path


def write_atomic(
    path: str | Path,
    write: Callable[[Path], None],
    *,
    databases: Iterable[str | Path | None] = (),
    create_folder: bool = False,
) -> Path:
    """Check `path` (see `check_output`), let `write(tmp)` fill a temporary file beside it, then rename it into place.

    The temporary file keeps the target's suffix (writers that infer a format from it see the same one).

    Raises:
        OutputError: the path is unusable, or writing failed (a full disk, ...); nothing is left behind.
    """
    given = str(path)
    path = check_output(path, databases=databases, create_folder=create_folder)
    try:
        path.parent.mkdir(exist_ok=True)  # create_folder: one level, its parent was checked
    except OSError as e:
        raise OutputError(f"cannot write '{given}': cannot create folder {path.parent} ({_cause(e)})") from None
    tmp = _temp_name(path.parent, path.name)
    try:
        # umask-respecting permissions like any new file; an existing file keeps its own
        os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        if path.exists():
            os.chmod(tmp, stat.S_IMODE(path.stat().st_mode))
        write(tmp)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot write '{given}': {_cause(e)}; nothing was written") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


# How the start of each kind of effscope output looks: an export of Records or of a study's trials (their first
# columns are always these), a report, the plotly.js bundle. Parquet keeps its column names in the footer: read
# through its schema.
_EXPORT_COLUMNS = (("created_at", "uid", "target"), ("study", "trial", "state"))
_CSV_HEADS = b"|".join(re.escape(",".join(c).encode()) for c in _EXPORT_COLUMNS)
_JSON_FIRST_KEYS = b"|".join(re.escape(c[0].encode()) for c in _EXPORT_COLUMNS)
_OWN_HEADS = {
    ".csv": re.compile(rb"\A(\xef\xbb\xbf)?(" + _CSV_HEADS + rb")[,\r\n]"),
    ".json": re.compile(rb'\A\s*\[\s*(\]|\{\s*"(' + _JSON_FIRST_KEYS + rb')"\s*:)'),
    ".html": re.compile(rb"<title>effscope report", re.IGNORECASE),
    ".js": re.compile(rb"plotly\.js"),
}


def _replaceable(path: Path) -> bool:
    """Whether an existing regular file may be replaced: it is empty, or effscope's own output of its kind."""
    if path.stat().st_size == 0:
        return True
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        try:
            import pyarrow.parquet as pq

            names = pq.read_schema(path).names
            return any(tuple(names[: len(c)]) == c for c in _EXPORT_COLUMNS)
        except Exception:  # not parquet, or unreadable: not ours to replace
            return False
    head = _OWN_HEADS.get(".html" if suffix == ".htm" else suffix)
    if head is None:
        return False
    with path.open("rb") as fh:
        return bool(head.search(fh.read(4096)))


def _temp_name(folder: Path, name: str) -> Path:
    return folder / f".{secrets.token_hex(4)}.tmp.{name}"


def _cause(e: OSError) -> str:
    return e.strerror or str(e) or type(e).__name__
