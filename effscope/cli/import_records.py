"""`effscope import`: add the Records of a JSON file to the record store, skipping those it already holds."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from effscope.cli._app import DB_HELP, app, esc, out, shown_url
from effscope.errors import SpecError

if TYPE_CHECKING:
    from effscope.profile.record import Record


@app.command("import")
def import_records(
    records: str = typer.Argument(
        ..., metavar="FILE.json", help="A JSON array of Records in their own form (Record.to_dict())."
    ),
    db: str = typer.Option(None, "--db", help=DB_HELP),
) -> None:
    """Add the Records in FILE.json to the record store. A Record is known by its uid: one the store already holds
    is skipped, so importing a file again adds nothing twice."""
    from effscope.profile.store import RecordStore, StoreError

    found = read_records(records)  # all of them checked before the first is stored
    store = RecordStore(db)  # --db as every command reads it: the path or URL, else $EFFSCOPE_DB, else ./effscope.db
    added = skipped = 0
    for record in found:
        try:
            if store.add_if_new(record):
                added += 1
            else:
                skipped += 1
        except StoreError as e:
            raise StoreError(
                f"{e} (after adding {added} and skipping {skipped} of the {len(found)} Records in {records}; importing "
                "the file again adds the rest)"
            ) from None
    out.print(
        f"{added} record(s) from {esc(records)} added to {shown_url(store.url)}; {skipped} skipped (already stored)"
    )


def read_records(path: str | Path) -> list[Record]:
    """The Records in a JSON file: an array of Record objects (or one object), each complete and with its uid.

    Raises:
        SpecError: the file is unreadable, not JSON, holds no Records, holds flat rows, or holds something that is
            not a Record (named by its position).
    """
    import json

    from effscope.profile.record import NotARecordError, Record
    from effscope.profile.store import row_problem

    table = Path(path).suffix.lower()
    if table in (".csv", ".parquet"):
        raise SpecError(
            f"cannot import '{path}': a {table[1:].upper()} file holds flat rows (as effscope profile --csv and "
            f"effscope export write them), not Records; `effscope report {path}` reads it as it is"
        )
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"cannot import '{path}': no such file") from None
    except (OSError, UnicodeDecodeError) as e:  # a folder, no permission, a binary file
        raise SpecError(f"cannot import '{path}': {getattr(e, 'strerror', None) or e}") from None
    try:
        data = json.loads(text)
    except RecursionError:  # Python's parser recurses once per level
        raise SpecError(f"cannot import '{path}': {_TOO_DEEP}") from None
    except ValueError as e:
        raise SpecError(f"cannot import '{path}': it is not JSON ({e})") from None
    if _depth_over(data, MAX_DEPTH):  # what parsed may still be too deep to copy, store or read back
        raise SpecError(f"cannot import '{path}': {_TOO_DEEP}")
    rows = [data] if isinstance(data, dict) else data
    if not isinstance(rows, list):
        raise SpecError(f"cannot import '{path}': it holds a JSON {_JSON_TYPES.get(type(data), 'value')}, not Records")
    if not rows:
        raise SpecError(f"cannot import '{path}': it holds no Records")
    found = []
    for i, row in enumerate(rows, 1):
        if isinstance(row, dict) and "target" in row and "workload" not in row:
            # Record.flat() merges the sections and leaves out the details: no Record can be rebuilt from it
            raise SpecError(
                f"cannot import '{path}': it holds flat rows (as effscope profile --json and effscope export write "
                f"them), which lack the Records' sections and details; `effscope report {path}` reads it as it is"
            )
        try:
            record = Record.from_dict(row, strict=True)  # a field dropped here would be lost from the store for good
        except NotARecordError as why:
            raise SpecError(f"cannot import '{path}': item {i} is not an effscope Record ({why})") from None
        if not isinstance(row.get("uid"), str) or not row["uid"]:
            raise SpecError(
                f"cannot import '{path}': item {i} has no uid, so it could not be told from a copy already stored"
            )
        problem = row_problem(record)
        if problem is not None:
            raise SpecError(f"cannot import '{path}': item {i} cannot be stored: {problem}")
        found.append(record)
    return found


_JSON_TYPES = {str: "string", int: "number", float: "number", bool: "true or false", type(None): "null"}

# A Record nests 6 levels (details.count.macs_by_module...); far deeper is no Record, and would exhaust Python's
# recursion when the Record is copied, stored or read back.
MAX_DEPTH = 64
_TOO_DEEP = f"its JSON nests arrays or objects more than {MAX_DEPTH} levels deep, which no effscope Record does"


def _depth_over(data: object, limit: int) -> bool:
    """Whether JSON data nests arrays or objects deeper than `limit` levels (iterative: no recursion to exhaust)."""
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth > limit:
                return True
            stack.extend((v, depth + 1) for v in (value.values() if isinstance(value, dict) else value))
    return False
