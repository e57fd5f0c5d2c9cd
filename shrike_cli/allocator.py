"""The choice of an address: which one a request gets, which one it may claim, and how
it goes back.

The policy is :meth:`Allocator.candidates`: the order in which addresses are tried.
An address a container released while it still exists (stopped, restarting) is parked
for it: the container gets it back when it comes back, and nobody else gets it before
the container is removed, unless nothing else is left. How a request is recognised as
a container coming back is :class:`Returning`'s business.
How each kind of candidate is taken quickly and safely under concurrency is
:mod:`.sources`'s business; what is written, and the invariants between the records,
:mod:`.state`'s. Every change is one compare-and-swap transaction, retried on a lost
race, so concurrent allocators on many hosts never hand out the same address and never
fail because of each other.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from functools import partial

from . import metrics
from .cas import Retry
from .errors import Conflict
from .model import (
    KIND_CONTAINER,
    STATE_HELD,
    STATE_PARKED,
    STATE_RELEASED,
    STATE_RESERVED,
    Holder,
    IPv4,
    Lease,
    Window,
    now_iso,
)
from .sources import LongestIdle, NeverUsed
from .state import Change, Guard, Parked, State, StoredLease, parked, released

#: Seconds a copy of a host's parked addresses is trusted (see :class:`ParkedCache`).
PARKED_TTL = 2.0

#: One way to find an address: given the guards and the shared retry budget, a lease or
#: None when it has nothing to give.
Candidate = Callable[[Sequence[Guard], Retry], Lease | None]


class Exhausted(Conflict):
    """Every address a request may have is taken."""


def _counted_as(how: str, candidate: partial[Lease | None]) -> partial[Lease | None]:
    """``candidate``, whose allocations count as ``how`` (:data:`~shrike_cli.metrics.ALLOCATIONS`;
    untagged ones count as dynamic)."""
    candidate.how = how  # type: ignore[attr-defined]
    return candidate


@dataclass(frozen=True)
class Returning:
    """A request that may come from a container coming back, and how to find the address
    parked for it among those its host (the holder's) parked.

    ``name``: the container's name, which newer engines send with every request
    (``com.docker.network.endpoint.name``): the match is exact. Without it (dockerd
    20.10 sends nothing that tells containers apart), the request gets the address its
    host parked last: a restarting container asks again right after its release.
    """

    name: str = ""

    def choose(self, parked: Sequence[Parked]) -> Parked | None:
        if self.name:
            return next((p for p in parked if p.name == self.name), None)
        return max(parked, key=lambda p: p.at, default=None)


class ParkedCache:
    """Each host's parked addresses as last read, for at most :data:`PARKED_TTL` seconds.

    Every dynamic request of a plugin looks for its host's parked addresses; the list is
    nearly always short and unchanged, and only that host's server adds to it (when it
    parks; then its copy is read again). An entry someone took meanwhile just fails its
    compare, and the list is read again.
    """

    def __init__(self, state: State) -> None:
        self.state = state
        self._lists: dict[str, tuple[float, list[Parked]]] = {}
        self._lock = threading.Lock()

    def of(self, host: str) -> list[Parked]:
        with self._lock:
            read_at, listed = self._lists.get(host, (0.0, []))
        if time.monotonic() - read_at > PARKED_TTL:
            listed = self.state.parked(host)
            with self._lock:
                self._lists[host] = (time.monotonic(), listed)
        return listed

    def taken(self, ip: IPv4) -> None:
        """``ip`` was taken (or tried): no copy offers it again."""
        with self._lock:
            self._lists = {h: (at, [p for p in kept if p.ip != ip]) for h, (at, kept) in self._lists.items()}

    def invalidate(self, host: str | None = None) -> None:
        """Read ``host``'s list (None: every list) again at its next use."""
        with self._lock:
            for known in list(self._lists):
                if host is None or known == host:
                    del self._lists[known]


class Allocator:
    """Hands out, claims and releases container addresses atomically."""

    def __init__(self, state: State, *, max_wait: float) -> None:
        self.state = state
        self.max_wait = max_wait
        self._never_used = NeverUsed(state)
        self._idle = LongestIdle(state)
        self._parked_hosts = ParkedCache(state)

    def candidates(
        self, windows: Sequence[Window], holder: Holder, returning: Returning | None = None
    ) -> Iterator[Candidate]:
        """Where a dynamic address comes from, in order: this is the allocation policy."""
        if returning is not None:
            # A container coming back gets the address parked for it.
            yield _counted_as(metrics.STICKY, partial(self._parked, windows, holder, holder.host, returning.choose))
        if holder.mac:
            # DHCP-like: a MAC that held an address gets it back while it is free.
            yield _counted_as(metrics.STICKY, partial(self._previous_of_mac, windows, holder))
        for window in windows:
            # Never-used addresses before released ones, so the LAN's ARP caches do not
            # send a new container's traffic to an old MAC...
            yield partial(self._never_used.take, window, holder)
        # ...and among released ones, the longest idle.
        yield partial(self._idle.take, windows, holder)
        # Last, rather than fail: an address parked for a stopped container, the one
        # parked longest ago (that container gets another when it starts).
        yield partial(self._parked, windows, holder, None, lambda kept: min(kept, key=lambda p: p.at, default=None))

    def allocate(
        self,
        windows: Sequence[Window],
        holder: Holder,
        *,
        returning: Returning | None = None,
        guards: Sequence[Guard] = (),
        where: str = "",
    ) -> Lease:
        """Hand out one address of ``windows`` to ``holder``, the first :meth:`candidates`
        gives; :class:`Exhausted` (naming ``where``, by default the ranges) when all are
        taken."""
        retry = Retry(self.max_wait)
        for candidate in self.candidates(windows, holder, returning):
            lease = candidate(guards, retry)
            if lease is not None:
                metrics.allocated(getattr(candidate, "how", metrics.DYNAMIC))
                return lease
        where = where or ", ".join(str(w.range) for w in windows) or "no container range"
        raise Exhausted(f"no free address left in {where}", reason="full")

    def _parked(
        self,
        windows: Sequence[Window],
        holder: Holder,
        host: str | None,
        choose: Callable[[Sequence[Parked]], Parked | None],
        guards: Sequence[Guard],
        retry: Retry,
    ) -> Lease | None:
        """The parked address of ``host`` (None: of any host) in ``windows`` that
        ``choose`` picks; None when it picks none."""
        while True:
            listed = self._parked_hosts.of(host) if host is not None else self.state.parked(None)
            chosen = choose([p for p in listed if any(w.contains(int(p.ip)) for w in windows)])
            if chosen is None:
                return None
            lease = holder.lease(chosen.ip, chosen.range_id)
            if host is not None:
                # Its own container coming back, as far as known (the server's next look at
                # dockerd corrects a wrong guess): a restart right away finds it parked again.
                lease = replace(lease, owner={**chosen.owner, **holder.owner})
            change = Change(guards)
            change.take(chosen, lease)
            outcome = self.state.commit(change)
            self._parked_hosts.taken(chosen.ip)
            if outcome.succeeded:
                return lease
            self._parked_hosts.invalidate()
            retry.conflict()

    def _previous_of_mac(
        self, windows: Sequence[Window], holder: Holder, guards: Sequence[Guard], retry: Retry
    ) -> Lease | None:
        ip = self.state.address_of_mac(holder.mac)
        if ip is None or not any(w.contains(int(ip)) for w in windows):
            return None
        stored = self.state.lease(ip)
        if stored is None or stored.lease.mac != holder.mac:
            return None
        old = stored.lease
        if old.state != STATE_RELEASED:
            return None
        lease = holder.lease(ip, old.range)
        change = Change(guards)
        change.expect_lease(ip, stored.revision)
        change.write(lease, previous=stored.lease)
        if self.state.commit(change).succeeded:
            return lease
        retry.conflict()
        return None

    def claim(
        self,
        ip: IPv4,
        holder: Holder,
        range_id: str = "",
        *,
        may_take: Callable[[Lease], bool] = lambda old: old.state == STATE_RELEASED,
        guards: Sequence[Guard] = (),
    ) -> Lease:
        """Take the address ``ip`` (of container range ``range_id``, if any): granted if
        nobody holds it, or if ``may_take`` accepts its current lease (by default:
        released ones). Raises :class:`Conflict` otherwise."""

        def decide(stored: StoredLease | None) -> tuple[Lease, Change]:
            lease = holder.lease(ip, range_id)
            change = Change()
            old = stored.lease if stored else None
            if old is not None:
                if not may_take(old):
                    raise Conflict(f"{ip} is already in use ({old.describe()})", reason="in_use")
                lease = replace(lease, name=lease.name or old.name)
            change.write(lease, previous=old)
            return lease, change

        lease = self.state.update_lease(ip, decide, max_wait=self.max_wait, guards=guards)
        if holder.kind == KIND_CONTAINER:
            metrics.allocated(metrics.EXPLICIT)
        return lease

    def release(
        self,
        ip: str,
        *,
        end_reservation: bool = False,
        expected_revision: int | None = None,
        keep: bool = False,
        accept: Callable[[Lease], bool] = lambda lease: True,
    ) -> Lease | None:
        """Give a container address back and return its lease as it now stands.

        A named reservation outlives its container: the address becomes ``reserved``
        so the container gets it back on its next start. With ``end_reservation`` the
        name lets go of it: a reserved address is freed, a held one stays with its
        running container as a plain lease. With ``keep``, a held address whose lease
        names its container is parked for it (dockerd releases the addresses of
        containers that stop); a parked one is freed. Anything else, or nothing, or a
        lease ``accept`` refuses, is left alone.

        With ``expected_revision``, only the lease as written at that store revision is
        released: if it was written since (released, taken again), nothing changes and
        the answer is None.
        """

        gave_back = False  # whether the change committed took the address from its container

        def decide(stored: StoredLease | None) -> tuple[Lease | None, Change | None]:
            nonlocal gave_back
            gave_back = False
            if stored is None or expected_revision not in (None, stored.revision):
                return None, None
            old = stored.lease
            if old.kind != KIND_CONTAINER or old.state == STATE_RELEASED or not accept(old):
                return old, None
            if not old.name:
                new = parked(old) if keep and old.state == STATE_HELD and old.owner else released(old)
            elif not end_reservation:
                if old.state == STATE_RESERVED:
                    return old, None
                new = replace(old, state=STATE_RESERVED, since=now_iso(), owner={})
            else:
                new = released(old) if old.state == STATE_RESERVED else replace(old, name="")
            gave_back = old.state == STATE_HELD and new.state != STATE_HELD
            change = Change()
            change.write(new, previous=old)
            return new, change

        lease = self.state.update_lease(ip, decide, max_wait=self.max_wait)
        if gave_back:
            metrics.released()
        if lease is not None and lease.state == STATE_PARKED:
            self._parked_hosts.invalidate(lease.host)
        return lease
