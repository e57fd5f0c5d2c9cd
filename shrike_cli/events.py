"""What happens to the addresses, as events (``shrike events``): allocations, releases,
reservations, hosts' and gateways' records, read from the store itself.

The store says how each lease changed (:meth:`State.watch_leases`, an etcd watch or the
embedded store's record of changes); :func:`event_of` says what that change means. So
events come from every host of the LAN, and a watcher needs no server: it goes on
through servers' restarts, and through the store's own (it watches again from the last
revision it saw).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .background import Backoff
from .model import KIND_CONTAINER, STATE_HELD, STATE_RELEASED, STATE_RESERVED, Lease, now_iso
from .state import LeaseChange, State
from .stores.base import HistoryLost, StoreError

log = logging.getLogger("shrike.events")

#: Without a starting revision, ``shrike events`` shows the changes of this many last
#: store revisions (those the store still has).
HISTORY = 10_000

# What happened. A lease that comes to a state says which event it is:
ALLOCATED = "allocated"  # a container holds the address
RELEASED = "released"  # the address went back to its range
RESERVED = "reserved"  # kept for a name (its container stopped, or it was reserved)
# a state added later is its own event, named after it
#: A record that is not a container's (a host's, a gateway's) came.
RECORDED = "recorded"
#: A record was removed (a host's address released, a gateway no network uses).
REMOVED = "removed"
#: Anything else: the holder recorded (--follow-docker), a gateway's users...
UPDATED = "updated"

_STATE_EVENTS = {STATE_HELD: ALLOCATED, STATE_RELEASED: RELEASED, STATE_RESERVED: RESERVED}


@dataclass(frozen=True)
class Event:
    """One change of one address, and what it means."""

    revision: int
    #: when it happened: the lease's time when the change set it, else when it was seen
    time: str
    event: str
    #: the lease as it became (as it was, when removed)
    lease: Lease
    previous: Lease | None

    def to_json(self) -> dict[str, Any]:
        return {
            "time": self.time,
            "revision": self.revision,
            "event": self.event,
            **self.lease.to_json(),
            "holder": self.lease.holder,
            "previous_state": self.previous.state if self.previous else None,
        }


def event_of(change: LeaseChange, seen: str) -> Event:
    """The meaning of ``change``, seen at time ``seen``."""
    before, after = change.before, change.after
    if after is None:
        assert before is not None
        return Event(change.revision, seen, REMOVED, before, before)
    if before is not None and before.kind != after.kind:
        before = None  # another kind of record: new, as far as its meaning goes
    if after.kind != KIND_CONTAINER:
        event = RECORDED if before is None else UPDATED
    elif before is None or before.state != after.state:
        event = _STATE_EVENTS.get(after.state, after.state)
    else:
        event = UPDATED
    # A new state or record is written with its time; an update keeps the time it had.
    time = after.since if after.since and event != UPDATED else seen
    return Event(change.revision, time, event, after, change.before)


def recent(state: State, after: int | None = None) -> tuple[list[Event], str | None]:
    """The events after revision ``after`` (None: of the last :data:`HISTORY` revisions
    the store still has), and a note when the store has fewer than asked.

    Raises :class:`HistoryLost` when ``after`` was given and the store no longer has
    everything after it."""
    until = state.revision()
    note = None
    try:
        changes = state.lease_changes(max(until - HISTORY, 0) if after is None else after, until)
    except HistoryLost as lost:
        if after is not None:
            raise
        note = str(lost)
        changes = state.lease_changes(lost.available_after, until)
    seen = now_iso()
    return [event_of(change, seen) for change in changes], note


def follow(
    state: State,
    emit: Callable[[Event], None],
    stopping: threading.Event,
    *,
    after: int | None = None,
    poll: float = 1.0,
) -> None:
    """Hand each event after revision ``after`` (None: from now on) to ``emit`` as it
    happens, until ``stopping`` is set. When the store cannot be reached, wait and watch
    again from the last revision seen; when it has dropped changes meanwhile, say so
    (a warning) and go on with what it has."""
    backoff = Backoff(stopping, 0.5, 10.0)
    position = after
    while not stopping.is_set():
        try:
            with state.watch_leases(position) as watch:
                position = watch.position
                log.debug("watching the leases after revision %s", position)
                backoff.reset()
                while not stopping.is_set():
                    changes = watch.next(poll)
                    seen = now_iso()
                    for change in changes:
                        emit(event_of(change, seen))
                    position = watch.position
        except HistoryLost as lost:
            log.warning("events after revision %s were missed: %s", position, lost)
            position = lost.available_after
        except StoreError as err:
            log.warning("%s; watching again from revision %s", err, position)
            backoff.wait()
