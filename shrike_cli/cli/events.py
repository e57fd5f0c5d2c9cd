"""``events``: what happens to the addresses, from the store, one line per event."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Annotated

import typer

from .. import events as events_
from ..state import State
from . import output
from .app import app
from .output import Format, OutputOption
from .state import globals_of


def _line(event: events_.Event) -> str:
    """One event for people: time, event, address, then what is known of its holder."""
    lease = event.lease
    host = ",".join(lease.users) if lease.users else lease.host
    known = (("host", host), ("mac", lease.mac), ("holder", lease.holder))
    details = [f"{name}={value}" for name, value in known if value]
    return " ".join([event.time, f"{event.event:<9}", f"{lease.ip:<15}", lease.kind, lease.state, *details])


@contextlib.contextmanager
def _stopped_by_signals() -> Iterator[threading.Event]:
    """An event set by SIGINT or SIGTERM meanwhile: following ends there, quietly."""
    stopping = threading.Event()
    handlers = {sig: signal.signal(sig, lambda *_: stopping.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stopping
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


@app.command("events")
def events(
    ctx: typer.Context,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Go on: show events as they happen, until interrupted.")
    ] = False,
    after: Annotated[
        int | None,
        typer.Option(
            "--after",
            min=0,
            metavar="REVISION",
            help="Only events after this store revision (each JSON event carries its own): to go on where a"
            " previous run stopped.",
        ),
    ] = None,
    fmt: OutputOption = Format.table,
) -> None:
    """Show what happens to the addresses of every host: allocations, releases, reservations, records of hosts.

    Read from the store, so it sees every host's server and needs none. Without
    --follow: the recent events the store still has (etcd keeps its history until it is
    compacted; the embedded store records events only while 'shrike events --follow'
    runs). --output json writes one JSON object a line.
    """
    state = State(globals_of(ctx).store())

    def emit(event: events_.Event) -> None:
        sys.stdout.write((output.json_line(event.to_json()) if fmt is Format.json else _line(event)) + "\n")
        sys.stdout.flush()

    try:
        if not follow:
            found, note = events_.recent(state, after)
            if note and not found:
                output.note(f"note: no event to show: {note}")
            for event in found:
                emit(event)
            return
        with _stopped_by_signals() as stopping:
            events_.follow(state, emit, stopping, after=after)
    except BrokenPipeError:
        # The reader went away (| head): not an error. Point stdout at /dev/null so that
        # flushing it at exit does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
