"""The choice of an address: which one a request gets, which one it may claim, and how
it goes back.

The policy is :meth:`Allocator.candidates`: the order in which addresses are tried.
How each kind of candidate is taken quickly and safely under concurrency is
:mod:`.sources`'s business; what is written, and the invariants between the records,
:mod:`.state`'s. Every change is one compare-and-swap transaction, retried on a lost
race, so concurrent allocators on many hosts never hand out the same address and never
fail because of each other.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from functools import partial

from . import metrics
from .cas import Retry
from .errors import Conflict
from .model import KIND_CONTAINER, STATE_HELD, STATE_RELEASED, STATE_RESERVED, Holder, IPv4, Lease, Window, now_iso
from .sources import LongestIdle, NeverUsed
from .state import Change, Guard, State, StoredLease, parked

#: One way to find an address: given the guards and the shared retry budget, a lease or
#: None when it has nothing to give.
Candidate = Callable[[Sequence[Guard], Retry], Lease | None]


def _counted_as(how: str, candidate: partial[Lease | None]) -> partial[Lease | None]:
    """``candidate``, whose allocations count as ``how`` (:data:`~shrike_cli.metrics.ALLOCATIONS`;
    untagged ones count as dynamic)."""
    candidate.how = how  # type: ignore[attr-defined]
    return candidate


class Allocator:
    """Hands out, claims and releases container addresses atomically."""

    def __init__(self, state: State, *, max_wait: float) -> None:
        self.state = state
        self.max_wait = max_wait
        self._never_used = NeverUsed(state)
        self._idle = LongestIdle(state)

    def candidates(self, windows: Sequence[Window], holder: Holder) -> Iterator[Candidate]:
        """Where a dynamic address comes from, in order: this is the allocation policy."""
        if holder.mac:
            # DHCP-like: a MAC that held an address gets it back while it is free.
            yield _counted_as(metrics.STICKY, partial(self._previous_of_mac, windows, holder))
        for window in windows:
            # Never-used addresses before released ones, so the LAN's ARP caches do not
            # send a new container's traffic to an old MAC...
            yield partial(self._never_used.take, window, holder)
        # ...and among released ones, the longest idle.
        yield partial(self._idle.take, windows, holder)

    def allocate(self, windows: Sequence[Window], holder: Holder, *, guards: Sequence[Guard] = ()) -> Lease:
        """Hand out one address of ``windows`` to ``holder``, the first :meth:`candidates`
        gives; :class:`Conflict` when all are taken."""
        retry = Retry(self.max_wait)
        for candidate in self.candidates(windows, holder):
            lease = candidate(guards, retry)
            if lease is not None:
                metrics.allocated(getattr(candidate, "how", metrics.DYNAMIC))
                return lease
        where = ", ".join(str(w.range) for w in windows) or "no container range"
        raise Conflict(f"no free address left in {where}", reason="full")

    def _previous_of_mac(
        self, windows: Sequence[Window], holder: Holder, guards: Sequence[Guard], retry: Retry
    ) -> Lease | None:
        ip = self.state.address_of_mac(holder.mac)
        if ip is None or not any(w.contains(int(ip)) for w in windows):
            return None
        stored = self.state.lease(ip)
        if stored is None or stored.lease.state != STATE_RELEASED or stored.lease.mac != holder.mac:
            return None
        lease = holder.lease(ip, stored.lease.range)
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

        gave_back = False  # whether the change committed took the address from its container

        def decide(stored: StoredLease | None) -> tuple[Lease | None, Change | None]:
            nonlocal gave_back
            gave_back = False
            if stored is None or expected_revision not in (None, stored.revision):
                return None, None
            old = stored.lease
            if old.kind != KIND_CONTAINER or old.state == STATE_RELEASED:
                return old, None
            if not old.name:
                new = parked(old)
            elif not end_reservation:
                if old.state == STATE_RESERVED:
                    return old, None
                new = replace(old, state=STATE_RESERVED, since=now_iso(), owner={})
            else:
                new = parked(old) if old.state == STATE_RESERVED else replace(old, name="")
            gave_back = old.state == STATE_HELD and new.state != STATE_HELD
            change = Change()
            change.write(new, previous=old)
            return new, change

        lease = self.state.update_lease(ip, decide, max_wait=self.max_wait)
        if gave_back:
            metrics.released()
        return lease
