"""How commands talk: tables or JSON on stdout, notes and errors as single lines on stderr."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from enum import Enum
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table


class Format(str, Enum):
    table = "table"
    json = "json"


OutputOption = Annotated[
    Format,
    typer.Option("--output", "-o", help="Output format: a table for people, json for scripts.", case_sensitive=False),
]

#: Messages go to stderr so that stdout stays parseable; rich drops colour when
#: stderr is not a terminal or NO_COLOR is set.
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def note(message: str) -> None:
    """A remark the user should see (never part of the machine-readable output)."""
    err_console.print(message, markup=False)


def error(message: str) -> None:
    """One line on stderr, prefixed like the rest of the Unix tools."""
    err_console.print(f"shrike: error: {message}", markup=False, style="red")


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False) + "\n")


def emit_table(rows: Iterable[dict[str, Any]], columns: Sequence[tuple[str, str]], *, empty: str) -> None:
    """Render ``rows`` with ``columns`` as ``(key, header)``; say ``empty`` when there are none."""
    rows = list(rows)
    if not rows:
        note(empty)
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    for _, header in columns:
        table.add_column(header, overflow="fold")
    for row in rows:
        table.add_row(*(_cell(row.get(key)) for key, _ in columns))
    # Piped output keeps one record per line for grep and awk; a terminal folds cells.
    Console(highlight=False, width=None if sys.stdout.isatty() else 4096).print(table)


def _cell(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value)) or "-"
    return str(value)


def emit(
    fmt: Format, data: Any, rows: Iterable[dict[str, Any]], columns: Sequence[tuple[str, str]], *, empty: str
) -> None:
    """JSON of ``data`` or a table of ``rows``, as the user asked."""
    if fmt is Format.json:
        emit_json(data)
    else:
        emit_table(rows, columns, empty=empty)
