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

import copy
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from .cas import Retry, update
from .errors import Conflict
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
#: Most never-used addresses one transaction hands out (each adds a compare, two ops
#: and a read; etcd takes 128 of each).
FRESH_BATCH = 32


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
        self._queued: dict[str, deque[_Waiting]] = {}

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
        # The MAC's history is looked up only when the fresh-address transaction finds
        # its index entry: dockerd sends a new random MAC on every start, so this spares
        # nearly every request a round trip.
        check_mac = bool(template.mac)
        for window in windows:
            lease = self._take_fresh(window, template, guards, retry, check_mac=check_mac)
            if lease is HAS_HISTORY:
                check_mac = False
                lease = self._take_sticky(windows, template, guards, retry)
                lease = lease or self._take_fresh(window, template, guards, retry, check_mac=False)
            if lease:
                assert isinstance(lease, Lease)
                return lease
        if check_mac:
            lease = self._take_sticky(windows, template, guards, retry)
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
            with self._free_lock:
                queue.clear()  # others took from it: read the current list
            retry.conflict()

    def _take_fresh(
        self, window: Window, template: Lease, guards: Sequence[Compare], retry: Retry, *, check_mac: bool
    ) -> Fresh:
        """A never-used address of ``window``; None when none is left, HAS_HISTORY when
        ``check_mac`` finds that the template's MAC held an address before.

        The threads of one process (the plugin server's) do not race for a cursor, where
        all but one would lose each compare-and-swap. They queue, and the thread holding
        the cursor serves everyone queued in one transaction: concurrent requests share
        a commit instead of waiting for one each. A request with ``guards`` (a
        reservation) has compares of its own and is served alone.
        """
        key = window.cursor_key
        lock = self._cursor_locks.setdefault(key, threading.Lock())
        waiting = _Waiting(template, check_mac)
        if guards:
            with lock:
                return self._take_fresh_locked(window, [waiting], guards, retry)[0]
        queue = self._queued.setdefault(key, deque())
        queue.append(waiting)
        with lock:
            while not waiting.done:
                batch = [queue.popleft() for _ in range(min(len(queue), FRESH_BATCH))]
                try:
                    outcomes = self._take_fresh_locked(window, batch, (), retry)
                except BaseException as err:  # every request taken off the queue gets an answer
                    for w in batch:
                        w.error, w.done = copy.copy(err), True
                else:
                    for w, outcome in zip(batch, outcomes, strict=True):
                        w.outcome, w.done = outcome, True
        if waiting.error is not None:
            raise waiting.error
        return waiting.outcome

    def _take_fresh_locked(
        self, window: Window, requests: Sequence[_Waiting], guards: Sequence[Compare], retry: Retry
    ) -> list[Fresh]:
        """Consecutive never-used addresses for ``requests``, in one transaction when
        nothing is in the way; None for those beyond the window's end."""
        key = window.cursor_key
        if key not in self._cursors:
            self._cursors[key] = self.store.get(key)
        outcomes: list[Fresh] = [None] * len(requests)
        todo = list(range(len(requests)))  # indexes still to serve, in arrival order
        limit = FRESH_BATCH
        while todo:
            cursor = self._cursors[key]
            offset = cursor.value["next"] if cursor else 0
            first = window.start + offset
            chosen = _distinct_macs(todo[: min(limit, window.end - first + 1)], requests)
            if not chosen:
                break
            batch = [self._held(requests[i].template, int_to_ip(first + n), window) for n, i in enumerate(chosen)]
            lease_keys = [lease_key(lease.ip) for lease in batch]
            mac_keys = [mac_key(lease.mac) for i, lease in zip(chosen, batch, strict=True) if requests[i].check_mac]
            revision = cursor.revision if cursor else 0
            advance = Put(key, {"next": offset + len(batch)})
            result = self.store.txn(
                [(key, revision), *((k, 0) for k in lease_keys + mac_keys), *guards],
                [advance, *(op for lease in batch for op in self._lease_ops(lease))],
                reads=[key, *lease_keys, *mac_keys, *(k for k, _ in guards)],
            )
            if result.succeeded:
                self._cursors[key] = Entry(key, advance.value, result.revision)
                for i, lease in zip(chosen, batch, strict=True):
                    outcomes[i] = lease
                todo = todo[len(chosen) :]
                limit = FRESH_BATCH
                continue
            _check_guards(guards, result.entries)
            current = result.entries[key]
            if (current.revision if current else 0) != revision:
                self._cursors[key] = current
                retry.conflict()
                continue
            # Nobody moved the cursor: a MAC has history, or an address ahead of the
            # cursor was claimed explicitly.
            known = {i for i in chosen if requests[i].check_mac and result.entries[mac_key(requests[i].template.mac)]}
            if known:
                for i in known:
                    outcomes[i] = HAS_HISTORY
                todo = [i for i in todo if i not in known]
                continue
            taken = next((n for n, k in enumerate(lease_keys) if result.entries[k] is not None), 0)
            if taken:
                limit = taken  # hand out the addresses before it
            else:
                self._cursors[key] = self._advance(key, revision, Put(key, {"next": offset + 1}))
        return outcomes

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
    def release(self, ip: str, *, end_reservation: bool = False, expected_revision: int | None = None) -> Lease | None:
        """Give a container address back and return its lease as it now stands.

        A named reservation outlives its container: the address becomes ``reserved``
        so the container gets it back on its next start. With ``end_reservation`` the
        name lets go of it: a reserved address is freed, a held one stays with its
        running container as a plain lease. Anything else, or nothing, is left alone.

        With ``expected_revision``, only the lease as written at that store revision is
        released: if it was written since (released, taken again), nothing changes and
        the answer is None.
        """
        key = lease_key(ip)

        def decide(entry: Entry | None) -> tuple[Lease | None, list[Op]]:
            if entry is None or (expected_revision is not None and entry.revision != expected_revision):
                return None, []
            old = Lease.from_json(entry.value)
            if old.kind != KIND_CONTAINER or old.state == STATE_RELEASED:
                return old, []
            ops: list[Op] = []
            if not old.name:
                new = self._released(old)
            elif not end_reservation:
                if old.state == STATE_RESERVED:
                    return old, []
                new = replace(old, state=STATE_RESERVED, since=now_iso(), owner={})
            else:
                ops.append(Delete(name_key(old.name)))
                new = self._released(old) if old.state == STATE_RESERVED else replace(old, name="")
            ops.append(Put(key, new.to_json()))
            if new.free_key:
                ops.append(Put(new.free_key, {"ip": new.ip, "mac": new.mac}))
            return new, ops

        return update(self.store, key, decide, max_wait=self.max_wait)

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


def _distinct_macs(todo: Sequence[int], requests: Sequence[_Waiting]) -> list[int]:
    """The leading indexes of ``todo`` whose MACs differ: one transaction cannot write
    (or compare) a MAC's index entry twice."""
    seen: set[str] = set()
    for n, i in enumerate(todo):
        mac = requests[i].template.mac
        if mac in seen:
            return list(todo[:n])
        if mac:
            seen.add(mac)
    return list(todo)


class _HasHistory:
    """Marker: the request's MAC held an address before; look at that one first."""


HAS_HISTORY = _HasHistory()
Fresh = Lease | _HasHistory | None


@dataclass(eq=False)
class _Waiting:
    """A request for a never-used address, queued for its window's cursor."""

    template: Lease
    check_mac: bool
    outcome: Fresh = None
    error: BaseException | None = None
    done: bool = False


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
