"""Plain HTML pieces every section's body is made of: formatted cells, tables, notes, fact lists (no plotly)."""

from __future__ import annotations

import html
import math
import re
from collections.abc import Sequence
from typing import Any

from effscope.report.data import Table

__all__ = ["FONT", "cell", "facts_html", "inline_html", "notes_html", "size_text", "table_html"]


FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, 'DejaVu Sans', sans-serif"


def cell(v: Any) -> str:
    """A table cell or hover value: '-' for missing, thousands separators, 4 significant digits."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if abs(v) >= 1e12 or (v != 0 and abs(v) < 1e-3):
            return f"{v:.3e}"
        if abs(v) >= 1e4:
            return f"{v:,.0f}"
        return f"{v:.4g}"
    return str(v)


def table_html(t: Table, cls: str = "") -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in t.columns)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="{"num" if isinstance(v, int | float) and not isinstance(v, bool) else ""}">'
            f"{html.escape(cell(v))}</td>"
            for v in row
        )
        + "</tr>"
        for row in t.rows
    )
    table = f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
    return f'<div class="table-wrap">{table}</div>'


_CODE = re.compile(r"`([^`\n]+)`")


def inline_html(text: str) -> str:
    """Text escaped for HTML, with `backticked` spans (commands, keys) as <code>: a literal backtick reads as noise."""
    return _CODE.sub(r"<code>\1</code>", html.escape(text))


def notes_html(notes: Sequence[str]) -> str:
    return "".join(f'<p class="note">{inline_html(n)}</p>' for n in notes)


def facts_html(rows: Sequence[tuple[str, Any]]) -> str:
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(cell(v))}</td></tr>" for k, v in rows)
    # in a scrolling wrapper like every table: a long command or path must not widen the page on a phone
    return f'<div class="table-wrap"><table class="facts">{body}</table></div>'


def size_text(size: tuple[int, int], kinds: set[str | None] | str | None) -> str:
    """An input size with its unit: tokens for blocks, px for models; bare where the designs are of both kinds."""
    kinds = {kinds} if kinds is None or isinstance(kinds, str) else kinds
    unit = {frozenset({"block"}): " tokens", frozenset({"model"}): " px"}.get(frozenset(kinds), "")
    return f"{size[0]}x{size[1]}{unit}"
