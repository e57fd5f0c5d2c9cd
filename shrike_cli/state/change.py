"""A change of the state, in domain terms: the preconditions it was decided from and its
effects, committed as one compare-and-swap transaction (:meth:`State.commit`) and read
back as an :class:`Outcome`. :meth:`Change.write` is the one place that writes a lease,
so the invariants between records (the package's docstring) are kept there."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ..model import KIND_CONTAINER, STATE_PARKED, STATE_RELEASED, Lease, Window, now_iso
from ..stores.base import Compare, Delete, Entry, Op, Put
from .layout import _cursor_key, _free_prefix, _indexed_mac, _lease_key, _mac_key, _name_key, _parked_key
from .values import Cursor, StoredLease, Waiting, _cursor, _stored


@dataclass(frozen=True)
class Guard:
    """A precondition of a caller's: the reservation ``name`` (of the family ``version``)
    is still as it was read (``revision`` 0: absent). A change carrying it fails with
    :class:`PreconditionFailed` once someone else wrote that name."""

    name: str
    revision: int
    version: int = 4

    @property
    def _compare(self) -> Compare:
        return (_name_key(self.name, self.version), self.revision)


class PreconditionFailed(Exception):
    """A :class:`Guard` no longer holds; nothing was written."""


class Change:
    """One atomic change of the state, in domain terms: preconditions (the leases,
    cursors and idle entries it was decided from) and effects. Nothing is written until
    :meth:`State.commit`."""

    def __init__(self, guards: Sequence[Guard] = ()) -> None:
        self.compares: list[Compare] = [g._compare for g in guards]
        self.ops: list[Op] = []
        self.reads: list[str] = [g._compare[0] for g in guards]
        self.guards = tuple(guards)

    # -- preconditions (read back when the change fails)
    def expect_lease(self, ip: str, revision: int) -> None:
        """The lease of ``ip`` is as read at ``revision`` (0: there is none)."""
        key = _lease_key(ip)
        self.compares.append((key, revision))
        self.reads.append(key)

    def expect_cursor(self, cursor: Cursor) -> None:
        key = _cursor_key(cursor.window)
        self.compares.append((key, cursor.revision))
        self.reads.append(key)

    # -- effects
    def write(self, lease: Lease, previous: Lease | None = None) -> None:
        """Write ``lease`` over ``previous`` (the record it replaces, None for a new one),
        with the free-list and index entries the invariants ask for."""
        if previous is None:
            self._write(lease, "", "", "")
        else:
            waiting = previous.free_key or (_parked_key(previous) if previous.state == STATE_PARKED else "")
            self._write(lease, _indexed_mac(previous), waiting, previous.name)

    def take(self, waiting: Waiting, lease: Lease) -> None:
        """Hand out the waiting address ``waiting`` as ``lease``, if it still waits."""
        self.compares.append((waiting._key, waiting._revision))
        self._write(lease, waiting.mac, waiting._key, "")

    def _write(self, lease: Lease, previous_mac: str, previous_waiting: str, previous_name: str) -> None:
        version = lease.ip.version
        self.ops.append(Put(_lease_key(lease.ip), lease.to_json()))
        waiting = lease.free_key or (_parked_key(lease) if lease.state == STATE_PARKED else "")
        if previous_waiting and previous_waiting != waiting:
            self.ops.append(Delete(previous_waiting))
        if lease.free_key:
            if lease.free_key != previous_waiting:
                self.ops.append(Put(waiting, {"ip": lease.ip, "mac": lease.mac}))
        elif waiting:  # parked: its entry says for whom, which may have changed (a rename)
            self.ops.append(Put(waiting, _parked_value(lease)))
        mac = _indexed_mac(lease)
        if previous_mac and previous_mac != mac:
            self.ops.append(Delete(_mac_key(previous_mac, version)))
        # A released address keeps its MAC's entry as it is; one outside every range
        # (derived from its MAC) has none.
        if mac and lease.range and not lease.free_key:
            self.ops.append(Put(_mac_key(mac, version), {"ip": lease.ip}))
        if previous_name and previous_name != lease.name:
            self.ops.append(Delete(_name_key(previous_name, version)))
        if lease.name and lease.name != previous_name:
            self.ops.append(Put(_name_key(lease.name, version), {"ip": lease.ip}))

    def delete(self, lease: Lease) -> None:
        """Forget ``lease``: host and gateway records, and container addresses outside
        every range (derived from their MAC), none of which has index entries."""
        self.ops.append(Delete(_lease_key(lease.ip)))

    def advance(self, cursor: Cursor, to: int) -> Cursor:
        """Move ``cursor`` to offset ``to``; returns the cursor as it will be (its
        revision is known once committed)."""
        self.ops.append(Put(_cursor_key(cursor.window), {"next": to}))
        return replace(cursor, next=to)


def released(lease: Lease) -> Lease:
    """``lease`` released: back on its range's free list, behind every address released
    before it. Its name and owner go; its MAC stays, so that MAC can get it back."""
    free_key = f"{_free_prefix(lease.range)}{time.time_ns():020d}-{lease.ip}"
    return replace(lease, state=STATE_RELEASED, since=now_iso(), free_key=free_key, name="", owner={})


def freed(conflict: Lease) -> Lease:
    """A ``conflict`` whose address went silent: a released container address again, on
    its range's free list, behind every address released before it."""
    return released(replace(conflict, kind=KIND_CONTAINER, mac=""))


def parked(lease: Lease) -> Lease:
    """``lease`` kept for its container, which released it but still exists."""
    return replace(lease, state=STATE_PARKED, since=now_iso(), free_key="")


def _parked_value(lease: Lease) -> dict[str, Any]:
    return {
        "ip": lease.ip,
        "mac": lease.mac,
        "range": lease.range,
        "owner": dict(lease.owner),
        "at": time.time_ns(),
    }


@dataclass(frozen=True)
class Outcome:
    """What :meth:`State.commit` did. When it failed, the preconditions' current values
    (read atomically with the failed compares) answer :meth:`lease` and :meth:`cursor`."""

    succeeded: bool
    revision: int
    _entries: Mapping[str, Entry | None]

    def lease(self, ip: str) -> StoredLease | None:
        return _stored(self._entries[_lease_key(ip)])

    def cursor(self, window: Window) -> Cursor:
        return _cursor(window, self._entries[_cursor_key(window)])

    def check(self, guards: Sequence[Guard]) -> None:
        """Raise :class:`PreconditionFailed` if a guard no longer holds."""
        for guard in guards:
            current = self._entries.get(guard._compare[0])
            if (current.revision if current else 0) != guard.revision:
                raise PreconditionFailed(guard.name)
