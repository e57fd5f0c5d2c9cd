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

Whether an address is in use on the LAN by something shrike does not know is a
:class:`LanCheck`'s (the plugin server's ARP prober): a candidate that answers becomes a
``conflict``, and the next one is tried.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Protocol

from . import metrics
from .cas import Retry
from .errors import Conflict
from .model import (
    IP,
    KIND_CONFLICT,
    KIND_CONTAINER,
    SEEN,
    STATE_HELD,
    STATE_PARKED,
    STATE_RELEASED,
    STATE_RESERVED,
    Holder,
    Lease,
    Window,
    now_iso,
)
from .sources import KeptFor, LongestIdle, NeverUsed
from .state import Change, Guard, Parked, State, StoredLease, freed, parked, released

#: One way to find an address: given the guards and the shared retry budget, a lease or
#: None when it has nothing to give.
Candidate = Callable[[Sequence[Guard], Retry], Lease | None]
#: Most candidates in a row one request may find answering on the LAN before it fails:
#: a router doing proxy ARP answers for every address, and must not turn a whole range
#: into conflicts.
MAX_CONFLICTS = 8


class LanCheck(Protocol):
    """Whether an address is in use on the LAN (see :mod:`shrike_cli.lanprobe`)."""

    def answering(self, ip: IP) -> str | None:
        """The MAC of a device answering for ``ip`` on the LAN; None when none does, or
        when this host cannot tell."""
        ...

    def vacated(self, ip: IP) -> None:
        """``ip`` was given back just now by the container that held it, whose interface
        dockerd removed first: nothing answered for it then (a container coming back to
        it waits for no probe)."""
        ...


def _free(old: Lease | None) -> bool:
    return old is None or old.state == STATE_RELEASED


def _parked_longest_ago(kept: Sequence[Parked]) -> Parked | None:
    return min(kept, key=lambda p: p.at, default=None)


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


class Allocator:
    """Hands out, claims and releases container addresses atomically."""

    def __init__(self, state: State, *, max_wait: float, lan: LanCheck | None = None) -> None:
        self.state = state
        self.max_wait = max_wait
        #: asked about every address handed out dynamically (None: the LAN is not checked)
        self.lan = lan
        self._never_used = NeverUsed(state)
        self._idle = LongestIdle(state)
        self._kept = KeptFor(state)

    def candidates(
        self, windows: Sequence[Window], holder: Holder, returning: Returning | None = None
    ) -> Iterator[Candidate]:
        """Where a dynamic address comes from, in order: this is the allocation policy."""
        if returning is not None:
            # A container coming back gets the address parked for it.
            yield _counted_as(metrics.STICKY, partial(self._kept.take, windows, holder, holder.host, returning.choose))
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
        yield partial(self._kept.take, windows, holder, None, _parked_longest_ago)

    def likely_next(self, windows: Sequence[Window], host: str, count: int) -> list[IP]:
        """The addresses :meth:`candidates` will most likely give the next requests of
        ``host``, for probing them ahead: the ``count`` parked last for its stopped
        containers (one coming back gets its own), then in each window the next
        ``count`` never used, topped up from its longest idle where fewer are left. A
        guess: an address handed out that is not among them is probed then."""
        kept = sorted(self.state.parked(host), key=lambda p: p.at, reverse=True)[:count]
        found = [p.ip for p in kept]
        for window in windows:
            first = self.state.cursor(window).first_unused
            fresh = [IP(ip) for ip in range(first, min(first + count, window.end + 1))]
            found += fresh
            if len(fresh) < count:
                idle = self.state.idle(window.range.id, count - len(fresh))
                found += [i.ip for i in idle if window.contains(int(i.ip))]
        return list(dict.fromkeys(found))

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
        gives that nothing answers for on the LAN; :class:`Exhausted` (naming ``where``,
        by default the ranges) when all are taken.

        A candidate found answering on the LAN is taken first, then recorded as a
        conflict: nobody else can be handed it meanwhile."""
        retry = Retry(self.max_wait)
        answering: list[str] = []
        while True:
            first = self._first(windows, holder, returning, guards, retry)
            if first is None:
                where = where or ", ".join(str(w.range) for w in windows) or "no container range"
                raise Exhausted(f"no free address left in {where}", reason="full")
            lease, how = first
            mac = self.lan.answering(lease.ip) if self.lan is not None else None
            if mac is None:
                metrics.allocated(how)
                return lease
            stranger = Holder.stranger(lease.subnet, holder.host, mac)
            self.record_conflict(lease.ip, stranger, lease.range, over=partial(operator.eq, lease))
            answering.append(f"{lease.ip} ({mac})")
            returning = None  # its parked address is somebody else's now: it gets another
            if len(answering) == MAX_CONFLICTS:
                raise Conflict(
                    f"{MAX_CONFLICTS} addresses in a row answer on the LAN ({', '.join(answering)}), recorded as"
                    " conflicts: does a router answer ARP for addresses it does not hold (proxy ARP)?",
                    reason="lan_conflicts",
                )

    def _first(
        self,
        windows: Sequence[Window],
        holder: Holder,
        returning: Returning | None,
        guards: Sequence[Guard],
        retry: Retry,
    ) -> tuple[Lease, str] | None:
        """The address the first of :meth:`candidates` that has one gives, and how it
        counts (:data:`~shrike_cli.metrics.ALLOCATIONS`)."""
        for candidate in self.candidates(windows, holder, returning):
            lease = candidate(guards, retry)
            if lease is not None:
                return lease, getattr(candidate, "how", metrics.DYNAMIC)
        return None

    def _previous_of_mac(
        self, windows: Sequence[Window], holder: Holder, guards: Sequence[Guard], retry: Retry
    ) -> Lease | None:
        ip = self.state.address_of_mac(holder.mac, holder.subnet.version)
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

    def record_conflict(
        self, ip: IP, stranger: Holder, range_id: str, *, over: Callable[[Lease | None], bool] = _free
    ) -> Lease | None:
        """Record that ``stranger`` answers for ``ip`` on the LAN: a ``conflict`` lease,
        written over the address's lease (None: there is none) only if ``over`` accepts
        it (by default: none, or a released one). Returns the conflict, None if not written."""

        def decide(stored: StoredLease | None) -> tuple[Lease | None, Change | None]:
            old = stored.lease if stored else None
            if not over(old):
                return None, None
            conflict = stranger.lease(ip, range_id)
            change = Change()
            change.write(conflict, previous=old)
            return conflict, change

        conflict = self.state.update_lease(ip, decide, max_wait=self.max_wait)
        self._kept.invalidate()  # it may have been parked
        return conflict

    def settle_conflict(self, conflict: Lease, revision: int, mac: str | None) -> Lease | None:
        """A conflict (read at store ``revision``) probed again: ``mac`` still answers,
        and it was seen now; or nothing does (None), and its address is free again. None
        when the lease was written since."""

        def decide(stored: StoredLease | None) -> tuple[Lease | None, Change | None]:
            if stored is None or stored.revision != revision or stored.lease.kind != KIND_CONFLICT:
                return None, None
            new = replace(conflict, mac=mac, owner={SEEN: now_iso()}) if mac else freed(conflict)
            change = Change()
            change.write(new, previous=conflict)
            return new, change

        return self.state.update_lease(conflict.ip, decide, max_wait=self.max_wait)

    def claim(
        self,
        ip: IP,
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

        An address outside every range (derived from its container's MAC) is never parked
        or kept: its record goes, and the answer is the lease as released.
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
            change = Change()
            if not old.range:
                change.delete(old)
                return replace(old, state=STATE_RELEASED, since=now_iso(), owner={}), change
            if not old.name:
                new = parked(old) if keep and old.state == STATE_HELD and old.owner else released(old)
            elif not end_reservation:
                if old.state == STATE_RESERVED:
                    return old, None
                new = replace(old, state=STATE_RESERVED, since=now_iso(), owner={})
            else:
                new = released(old) if old.state == STATE_RESERVED else replace(old, name="")
            gave_back = old.state == STATE_HELD and new.state != STATE_HELD
            change.write(new, previous=old)
            return new, change

        lease = self.state.update_lease(ip, decide, max_wait=self.max_wait)
        if gave_back:
            metrics.released()
        if lease is not None and lease.state == STATE_PARKED:
            self._kept.invalidate(lease.host)
        return lease
