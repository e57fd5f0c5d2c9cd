"""The choice of an address, over any :class:`~shrike_cli.stores.base.Store`.

Storage grows with what is held, not with range size. Each container range keeps:

* a cursor ``ranges/<range-id>`` = ``{"next": offset}``: every address at or after it
  has never been handed out dynamically, so fresh addresses cost one compare-and-swap;
* a free list ``free/<range-id>/<release-time-ns>-<ip>``: released addresses ordered by
  the time they were released, so the longest-idle one is the first key.

Dynamic requests take never-used addresses first and only then the longest-idle ones,
so the LAN's ARP caches do not send a new container's traffic to an old MAC. Each lease
lives at ``leases/<ip>``; a released lease stays there (state ``released``) until its
address is taken again, and names its free-list key. The invariant "a free-list key
exists exactly while its lease is released" is kept by changing both in one
transaction, so a compare on either one guards both.

Every change is one optimistic transaction; on conflict the allocator re-reads what
the failed transaction returned and tries again, so concurrent allocators on many
hosts never hand out the same address and never fail because of each other.
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from .errors import Conflict, ShrikeError
from .model import (
    KIND_CONTAINER,
    STATE_RELEASED,
    STATE_RESERVED,
    AddressRange,
    Lease,
    int_to_ip,
    ip_to_int,
    now_iso,
)
from .stores.base import Compare, Delete, Entry, Op, Put, Store

LEASES = "leases/"
CURSORS = "ranges/"
FREE = "free/"
MACS = "macs/"
NAMES = "names/"
#: How many free-list entries one read fetches.
FREE_BATCH = 64


def lease_key(ip: str) -> str:
    return LEASES + ip


def mac_key(mac: str) -> str:
    return MACS + mac


def name_key(name: str) -> str:
    return NAMES + name


@dataclass(frozen=True)
class Window:
    """Where dynamic addresses may come from: a container range, possibly narrowed
    (Docker's ``--ip-range`` sub-pool) to ``[start, end]``."""

    range: AddressRange
    start: int
    end: int

    @classmethod
    def whole(cls, r: AddressRange) -> Window:
        return cls(r, r.start, r.end)

    @property
    def cursor_key(self) -> str:
        if (self.start, self.end) == (self.range.start, self.range.end):
            return CURSORS + self.range.id
        return f"{CURSORS}{self.range.id}@{int_to_ip(self.start)}-{int_to_ip(self.end)}"

    @property
    def free_prefix(self) -> str:
        return f"{FREE}{self.range.id}/"

    def contains(self, ip: int) -> bool:
        return self.start <= ip <= self.end


class ContentionTimeout(ShrikeError):
    """Retries did not get through before the deadline (the store is overloaded)."""


class Retry:
    """Deadline and back-off for optimistic transactions that lost a race."""

    def __init__(self, max_wait: float) -> None:
        self.deadline = time.monotonic() + max_wait
        self.conflicts = 0

    def conflict(self) -> None:
        self.conflicts += 1
        if time.monotonic() > self.deadline:
            raise ContentionTimeout(f"gave up after {self.conflicts} conflicting attempts")
        if self.conflicts > 3:
            # Jitter breaks lock-step retries between many contending clients.
            time.sleep(random.uniform(0, min(0.05, 0.001 * self.conflicts)))


class Allocator:
    """Hands out, claims and releases container addresses atomically."""

    def __init__(self, store: Store, *, max_wait: float = 30.0) -> None:
        self.store = store
        self.max_wait = max_wait
        # Cursor entries as last seen: cursors only move forward, so a stale one costs
        # one failed compare, never a wrong answer.
        self._cursors: dict[str, Entry | None] = {}
        self._free: dict[str, deque[Entry]] = {}
        # One Allocator serves all the plugin server's threads: each takes its own entry
        # off the shared free queues.
        self._free_lock = threading.Lock()
        self._cursor_locks: dict[str, threading.Lock] = {}

    # ----------------------------------------------------------------- dynamic
    def allocate(
        self,
        windows: Sequence[Window],
        template: Lease,
        *,
        guards: Sequence[Compare] = (),
    ) -> Lease:
        """Hand out one address from ``windows``: the MAC's previous address if it is
        free, else a never-used one, else the longest-idle one. ``template`` carries
        everything but the address; raises :class:`Conflict` when all are taken."""
        retry = Retry(self.max_wait)
        if template.mac:
            lease = self._take_sticky(windows, template, guards, retry)
            if lease:
                return lease
        for window in windows:
            lease = self._take_fresh(window, template, guards, retry)
            if lease:
                return lease
        while True:
            with self._free_lock:
                heads = [(queue[0], queue) for w in windows if (queue := self._free_queue(w))]
                if not heads:
                    where = ", ".join(str(w.range) for w in windows) or "no container range"
                    raise Conflict(f"no free address left in {where}")
                free, queue = min(heads, key=lambda head: head[0].key)
                queue.popleft()
            lease = self._take_released(free, template, guards)
            if lease:
                return lease
            queue.clear()  # others took from it: read the current list
            retry.conflict()

    def _take_fresh(self, window: Window, template: Lease, guards: Sequence[Compare], retry: Retry) -> Lease | None:
        # Threads of one process (the plugin server's) queue for a cursor rather than race
        # for it: all but one would lose each compare-and-swap, and back off.
        lock = self._cursor_locks.setdefault(window.cursor_key, threading.Lock())
        if not lock.acquire(timeout=max(retry.deadline - time.monotonic(), 0.0)):
            raise ContentionTimeout(f"gave up waiting for the cursor of {window.range} after {self.max_wait:g} s")
        try:
            return self._take_fresh_locked(window, template, guards, retry)
        finally:
            lock.release()

    def _take_fresh_locked(
        self, window: Window, template: Lease, guards: Sequence[Compare], retry: Retry
    ) -> Lease | None:
        key = window.cursor_key
        if key not in self._cursors:
            self._cursors[key] = self.store.get(key)
        while True:
            cursor = self._cursors[key]
            offset = cursor.value["next"] if cursor else 0
            ip = window.start + offset
            if ip > window.end:
                return None
            revision = cursor.revision if cursor else 0
            advance = Put(key, {"next": offset + 1})
            lease = self._held(template, int_to_ip(ip), window)
            lkey = lease_key(lease.ip)
            result = self.store.txn(
                [(key, revision), (lkey, 0), *guards],
                [advance, *self._lease_ops(lease)],
                reads=[key, lkey, *(k for k, _ in guards)],
            )
            if result.succeeded:
                self._cursors[key] = Entry(key, advance.value, result.revision)
                return lease
            _check_guards(guards, result.entries)
            current = result.entries[key]
            if (current.revision if current else 0) == revision:
                # Nobody moved the cursor: the address was claimed explicitly ahead of it.
                self._cursors[key] = self._advance(key, revision, advance)
            else:
                self._cursors[key] = current
                retry.conflict()

    def _advance(self, key: str, revision: int, advance: Put) -> Entry | None:
        """Step the cursor over an unusable address; returns the cursor as it now is."""
        result = self.store.txn([(key, revision)], [advance], reads=[key])
        return Entry(key, advance.value, result.revision) if result.succeeded else result.entries[key]

    def _free_queue(self, window: Window) -> deque[Entry]:
        """The window's longest-idle free-list entries, oldest first.

        Read in batches: a range read costs etcd 3.4 time in proportion to all keys under
        the prefix, whatever the limit, so one read serves many allocations. An entry
        someone else took meanwhile just fails its compare and is dropped.
        """
        queue = self._free.setdefault(window.cursor_key, deque())
        if not queue:
            # A sub-pool looks further into its range's list for addresses of its own.
            limit = FREE_BATCH if window == Window.whole(window.range) else 16 * FREE_BATCH
            for entry in self.store.get_prefix(window.free_prefix, limit=limit):
                if window.contains(ip_to_int(entry.value["ip"])):
                    queue.append(entry)
        return queue

    def _take_released(self, free: Entry, template: Lease, guards: Sequence[Compare]) -> Lease | None:
        """Take the released address behind free-list entry ``free``; None if it went."""
        ip = free.value["ip"]
        window_range = free.key[len(FREE) :].rpartition("/")[0]
        lease = replace(self._held(template, ip, None), range=window_range)
        ops = [Delete(free.key), *self._lease_ops(lease, previous_mac=free.value.get("mac", ""))]
        result = self.store.txn([(free.key, free.revision), *guards], ops, reads=[k for k, _ in guards])
        if result.succeeded:
            return lease
        _check_guards(guards, result.entries)
        return None

    def _take_sticky(
        self, windows: Sequence[Window], template: Lease, guards: Sequence[Compare], retry: Retry
    ) -> Lease | None:
        """DHCP-like stickiness: a MAC that held an address gets it back while it is free."""
        pointer = self.store.get(mac_key(template.mac))
        if pointer is None:
            return None
        ip = pointer.value["ip"]
        if not any(w.contains(ip_to_int(ip)) for w in windows):
            return None
        previous = self.store.get(lease_key(ip))
        if previous is None:
            return None
        old = Lease.from_json(previous.value)
        if old.state != STATE_RELEASED or old.mac != template.mac:
            return None
        lease = replace(self._held(template, ip, None), range=old.range)
        result = self.store.txn(
            [(previous.key, previous.revision), *guards],
            [Delete(old.free_key), *self._lease_ops(lease)],
            reads=[k for k, _ in guards],
        )
        if result.succeeded:
            return lease
        _check_guards(guards, result.entries)
        retry.conflict()
        return None

    # ---------------------------------------------------------------- explicit
    def claim(
        self,
        ip: str,
        template: Lease,
        *,
        may_take: Callable[[Lease], bool] = lambda old: old.state == STATE_RELEASED,
        guards: Sequence[Compare] = (),
    ) -> Lease:
        """Take a specific address: granted if nobody holds it, or if ``may_take`` accepts
        its current lease (by default: released ones). Raises :class:`Conflict` otherwise."""
        retry = Retry(self.max_wait)
        key = lease_key(ip)
        while True:
            entry = self.store.get(key)
            lease = replace(template, ip=ip, since=template.since or now_iso())
            ops: list[Op] = []
            if entry is not None:
                old = Lease.from_json(entry.value)
                if not may_take(old):
                    raise Conflict(f"{ip} is already in use ({describe(old)})")
                if old.free_key:
                    ops.append(Delete(old.free_key))
                lease = replace(lease, name=lease.name or old.name)
                previous_mac = old.mac
            else:
                previous_mac = ""
            ops += self._lease_ops(lease, previous_mac=previous_mac)
            result = self.store.txn(
                [(key, entry.revision if entry else 0), *guards],
                ops,
                reads=[k for k, _ in guards],
            )
            if result.succeeded:
                return lease
            _check_guards(guards, result.entries)
            retry.conflict()

    # ----------------------------------------------------------------- release
    def release(self, ip: str, *, end_reservation: bool = False) -> Lease | None:
        """Give a container address back and return its lease as it now stands.

        A named reservation outlives its container: the address becomes ``reserved``
        so the container gets it back on its next start. With ``end_reservation`` the
        name lets go of it: a reserved address is freed, a held one stays with its
        running container as a plain lease. Anything else, or nothing, is left alone.
        """
        retry = Retry(self.max_wait)
        key = lease_key(ip)
        while True:
            entry = self.store.get(key)
            if entry is None:
                return None
            old = Lease.from_json(entry.value)
            if old.kind != KIND_CONTAINER or old.state == STATE_RELEASED:
                return old
            ops: list[Op] = []
            if not old.name:
                new = self._released(old)
            elif not end_reservation:
                if old.state == STATE_RESERVED:
                    return old
                new = replace(old, state=STATE_RESERVED, since=now_iso(), owner={})
            else:
                ops.append(Delete(name_key(old.name)))
                new = self._released(old) if old.state == STATE_RESERVED else replace(old, name="")
            ops.append(Put(key, new.to_json()))
            if new.free_key:
                ops.append(Put(new.free_key, {"ip": new.ip, "mac": new.mac}))
            if self.store.txn([(key, entry.revision)], ops).succeeded:
                return new
            retry.conflict()

    @staticmethod
    def _released(old: Lease) -> Lease:
        free_key = f"{FREE}{old.range}/{time.time_ns():020d}-{old.ip}"
        return replace(old, state=STATE_RELEASED, since=now_iso(), free_key=free_key, name="", owner={})

    # ----------------------------------------------------------------- helpers
    @staticmethod
    def _held(template: Lease, ip: str, window: Window | None) -> Lease:
        return replace(
            template,
            ip=ip,
            range=window.range.id if window else template.range,
            since=template.since or now_iso(),
        )

    @staticmethod
    def _lease_ops(lease: Lease, *, previous_mac: str = "") -> list[Op]:
        ops: list[Op] = [Put(lease_key(lease.ip), lease.to_json())]
        if previous_mac and previous_mac != lease.mac:
            # Keeps the MAC index as small as the lease table.
            ops.append(Delete(mac_key(previous_mac)))
        if lease.mac:
            ops.append(Put(mac_key(lease.mac), {"ip": lease.ip}))
        if lease.name:
            ops.append(Put(name_key(lease.name), {"ip": lease.ip}))
        return ops


class PreconditionFailed(Exception):
    """A compare the caller added (``guards``) no longer holds; nothing was written."""


def _check_guards(guards: Sequence[Compare], entries: dict[str, Entry | None]) -> None:
    for key, revision in guards:
        current = entries.get(key)
        if (current.revision if current else 0) != revision:
            raise PreconditionFailed(key)


def describe(lease: Lease) -> str:
    """A short phrase for messages: who holds an address."""
    who = lease.owner.get("name") or lease.name or lease.host
    return f"{lease.kind} {lease.state}" + (f" by {who}" if who else "")
