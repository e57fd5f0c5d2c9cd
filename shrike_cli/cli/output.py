"""How commands talk: tables or JSON on stdout, notes and errors as single lines on stderr.

Colour and other terminal effects only reach a terminal: rich leaves them out when the
stream is not one, and :func:`console` leaves them out everywhere when ``NO_COLOR`` is
set. Progress (:func:`progress`) shows only on a terminal, never with ``--output json``.

Values come from anyone who can name a reservation or a container, so a table shows
each cell as text, never as terminal codes or markup: control characters are escaped
(an ESC reads ``\x1b``) and a cell longer than its column's width ends in an ellipsis.
Error lines are escaped the same way (one line stays one line). JSON has every value
exactly as stored.

With ``--log-format json`` (:func:`set_log_format`) everything written on stderr, log
records, notes and errors, is one JSON object a line (:func:`log_record`), for log
shippers.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import threading
import unicodedata
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from enum import Enum
from typing import Annotated, Any, NamedTuple, NoReturn, Protocol

import typer
from rich.console import Console
from rich.status import Status
from rich.table import Table
from rich.text import Text

#: Work shorter than this shows no progress at all: a spinner that flashes up and
#: vanishes is noise, and quick commands then write no terminal control codes.
PROGRESS_DELAY = 0.5
#: The most characters a table cell shows unless its column says otherwise: enough for
#: any address, MAC, host or container name in use; a longer value is cut.
CELL_WIDTH = 40
ELLIPSIS = "\u2026"
#: Characters a terminal acts on or does not show: controls (C0, DEL, C1), format
#: characters (bidirectional overrides, zero-width ones), line and paragraph
#: separators, and lone surrogates (which cannot even be written out).
_UNPRINTABLE = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})


class Format(str, Enum):
    table = "table"
    json = "json"


OutputOption = Annotated[
    Format,
    typer.Option("--output", "-o", help="Output format: a table for people, json for scripts.", case_sensitive=False),
]


class LogFormat(str, Enum):
    text = "text"
    json = "json"


_log_format = LogFormat.text


def set_log_format(log_format: LogFormat) -> None:
    """How stderr is written from now on (logging is set up by the caller)."""
    global _log_format
    _log_format = log_format


def log_record(level: str, event: str, fields: Mapping[str, Any] | None = None, *, created: float | None = None) -> str:
    """One JSON line for stderr: ``time`` (UTC, to the millisecond), ``level``, ``event``
    (what a text line would say), then ``fields``, the details a machine filters on."""
    moment = datetime.fromtimestamp(created, timezone.utc) if created is not None else datetime.now(timezone.utc)
    record = {"time": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"), "level": level, "event": event}
    return json_line({**record, **(fields or {})})


class JsonLogFormatter(logging.Formatter):
    """Log records as :func:`log_record` lines; a record's ``fields`` (``extra={"fields":
    {...}}``) are added to it, with the logger's name."""

    def format(self, record: logging.LogRecord) -> str:
        fields = {"logger": record.name, **getattr(record, "fields", {})}
        if record.exc_info:
            fields["exception"] = self.formatException(record.exc_info)
        return log_record(record.levelname.lower(), record.getMessage(), fields, created=record.created)


def no_color() -> bool:
    """Whether the user asked for no colour (https://no-color.org: set and not empty)."""
    return os.environ.get("NO_COLOR", "") != ""


def console(*, stderr: bool = True, **options: Any) -> Console:
    """A console on stderr (or stdout) that writes plain text unless it is a terminal
    and ``NO_COLOR`` is unset.

    Made per use, so that it follows the streams and environment of the moment. Rich
    alone drops colours for NO_COLOR but still writes bold and other styles; no colour
    system at all writes none of them.
    """
    if no_color():
        options["color_system"] = None
    return Console(stderr=stderr, highlight=False, **options)


class UsageProblem(typer.BadParameter):
    """A command line that is wrong whatever the store holds (options missing or in
    conflict): click prints the usage, ``Error: MESSAGE``, and exits 2."""

    def format_message(self) -> str:
        return self.message


def usage_error(message: str, ctx: typer.Context | None = None) -> NoReturn:
    """Stop with a usage error (exit 2); click adds the command's usage line (that of
    ``ctx``, needed while the command line is parsed, before a command runs)."""
    raise UsageProblem(message, ctx=ctx)


class Progress(Protocol):
    def update(self, message: str) -> None:
        """Say what is being done now."""


class _Silent:
    def update(self, message: str) -> None:
        pass


class _Spinner:
    """rich's status spinner on stderr, started only once the work has taken
    :data:`PROGRESS_DELAY` seconds, and erased when it ends."""

    def __init__(self, message: str) -> None:
        self._status = Status(message, console=console(stderr=True))
        self._lock = threading.Lock()
        self._started = self._ended = False
        self._timer = threading.Timer(PROGRESS_DELAY, self._start)
        self._timer.daemon = True
        self._timer.start()

    def _start(self) -> None:
        with self._lock:
            if not self._ended:
                self._status.start()
                self._started = True

    def update(self, message: str) -> None:
        self._status.update(message)

    def end(self) -> None:
        self._timer.cancel()
        with self._lock:  # the timer may be starting the spinner right now
            self._ended = True
            if self._started:
                self._status.stop()


@contextlib.contextmanager
def progress(fmt: Format, message: str) -> Iterator[Progress]:
    """Show ``message`` with a spinner on stderr while the block runs, if it runs longer
    than :data:`PROGRESS_DELAY`; ``update`` changes the message.

    Only for tables with both stdout and stderr on a terminal: JSON is for scripts, and
    a pager or pipe reading stdout shares the terminal the spinner would draw on.
    """
    if fmt is not Format.table or not (console(stderr=True).is_interactive and console(stderr=False).is_terminal):
        yield _Silent()
        return
    spinner = _Spinner(message)
    try:
        yield spinner
    finally:
        spinner.end()


def note(message: str) -> None:
    """A remark the user should see (never part of the machine-readable output)."""
    if _log_format is LogFormat.json:
        sys.stderr.write(log_record("info", message) + "\n")
        return
    console(stderr=True, soft_wrap=True).print(message, markup=False)


def error(message: str) -> None:
    """One line on stderr, prefixed like the rest of the Unix tools."""
    if _log_format is LogFormat.json:
        sys.stderr.write(log_record("error", message) + "\n")
        return
    console(stderr=True, soft_wrap=True).print(f"shrike: error: {printable(message)}", markup=False, style="red")


def printable(text: str) -> str:
    """``text`` with each character a terminal would act on escaped (``\\x1b``, ``\\n``,
    ``\\u202e``)."""
    if text.isprintable():  # the usual case, and quick
        return text
    return "".join(map(_escaped, text))


def _escaped(char: str) -> str:
    if unicodedata.category(char) in _UNPRINTABLE:
        return char.encode("unicode_escape").decode("ascii")
    return char


class Column(NamedTuple):
    """A table column: the rows' ``key``, its ``header``, and the most characters one of
    its cells shows (None: all of them, for shrike's own text such as doctor's hints)."""

    key: str
    header: str
    width: int | None = CELL_WIDTH


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False) + "\n")


def json_line(data: Any) -> str:
    """``data`` as JSON on one line, for streams of one object a line."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def emit_table(rows: Iterable[dict[str, Any]], columns: Sequence[Column | tuple[str, str]], *, empty: str) -> None:
    """Render ``rows`` with ``columns`` (a :class:`Column`, or ``(key, header)`` for one of
    the usual width); say ``empty`` when there are none."""
    rows = list(rows)
    if not rows:
        note(empty)
        return
    shown = [Column(*column) for column in columns]
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in shown:
        table.add_column(column.header, overflow="fold")
    for row in rows:
        # Text, not str: rich would read "[red]" in a value as markup.
        table.add_row(*(Text(cell(row.get(column.key), column.width)) for column in shown))
    # Piped output keeps one record per line for grep and awk; a terminal folds cells.
    console(stderr=False, width=None if sys.stdout.isatty() else 4096).print(table)


def cell(value: Any, width: int | None = CELL_WIDTH) -> str:
    """``value`` as a table shows it: ``-`` for nothing, a list joined with commas, control
    characters escaped, and at most ``width`` characters, the last an ellipsis if cut."""
    text = ",".join(map(str, value)) if isinstance(value, (list, tuple)) else "" if value is None else str(value)
    if not text:
        return "-"
    shown = printable(text)
    if width is None or len(shown) <= width:
        return shown
    kept, used = [], 0
    for char in text:  # whole escapes only: half of "\\x1b" would read as something else
        piece = _escaped(char)
        if used + len(piece) > width - 1:
            break
        kept.append(piece)
        used += len(piece)
    return "".join(kept) + ELLIPSIS


def emit(
    fmt: Format, data: Any, rows: Iterable[dict[str, Any]], columns: Sequence[tuple[str, str]], *, empty: str
) -> None:
    """JSON of ``data`` or a table of ``rows``, as the user asked."""
    if fmt is Format.json:
        emit_json(data)
    else:
        emit_table(rows, columns, empty=empty)
