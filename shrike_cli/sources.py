"""The mechanics behind the allocator's candidates: how never-used and idle addresses
are taken quickly and safely, whatever order :mod:`.allocator` tries them in.

* :class:`NeverUsed` hands out addresses past a window's cursor. The threads of one
  process (the plugin server's) do not race for a cursor, where all but one would lose
  each compare-and-swap: they queue, and the thread holding the cursor serves everyone
  queued in one transaction, so concurrent requests share a commit. Cursors are cached
  as last seen; they only move forward, so a stale one costs one failed compare.
* :class:`LongestIdle` hands out released addresses, the longest idle first, from
  free-list entries read in batches: a range read costs etcd 3.4 time in proportion to
  all keys under the prefix, whatever the limit, so one read serves many allocations.

* :class:`KeptFor` hands out addresses parked for stopped containers, from a short-lived
  copy of each host's list: every request of a plugin looks at its host's list, which
  is nearly always short and unchanged.

All return None when they have nothing (left) to give, and leave retries on a lost race
to the shared :class:`~shrike_cli.cas.Retry`.
"""

from __future__ import annotations

import copy
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from .cas import Retry
from .model import IP, Holder, Lease, Window
from .state import Change, Cursor, Guard, Idle, Parked, State

#: Seconds a copy of a host's parked addresses is trusted (see :class:`KeptFor`).
PARKED_TTL = 2.0
#: How many free-list entries one read fetches.
FREE_BATCH = 64
#: Most never-used addresses one transaction hands out (each adds a compare, two ops
#: and a read; etcd takes 128 of each).
FRESH_BATCH = 32


@dataclass(eq=False)
class _Waiting:
    """A request for a never-used address, queued for its window's cursor."""

    holder: Holder
    outcome: Lease | None = None
    error: BaseException | None = None
    done: bool = False


class NeverUsed:
    """Never-used addresses of each window, handed out in address order."""

    def __init__(self, state: State) -> None:
        self.state = state
        self._cursors: dict[Window, Cursor] = {}
        self._locks: dict[Window, threading.Lock] = {}
        self._queued: dict[Window, deque[_Waiting]] = {}

    def take(self, window: Window, holder: Holder, guards: Sequence[Guard], retry: Retry) -> Lease | None:
        """A never-used address of ``window`` for ``holder``; None when none is left.
        A request with ``guards`` (a reservation) has compares of its own and is served
        alone."""
        lock = self._locks.setdefault(window, threading.Lock())
        waiting = _Waiting(holder)
        if guards:
            with lock:
                return self._serve(window, [waiting], guards, retry)[0]
        queue = self._queued.setdefault(window, deque())
        queue.append(waiting)
        with lock:
            while not waiting.done:
                batch = [queue.popleft() for _ in range(min(len(queue), FRESH_BATCH))]
                try:
                    outcomes = self._serve(window, batch, (), retry)
                except BaseException as err:  # every request taken off the queue gets an answer
                    for w in batch:
                        w.error, w.done = copy.copy(err), True
                else:
                    for w, outcome in zip(batch, outcomes, strict=True):
                        w.outcome, w.done = outcome, True
        if waiting.error is not None:
            raise waiting.error
        return waiting.outcome

    def _serve(
        self, window: Window, requests: Sequence[_Waiting], guards: Sequence[Guard], retry: Retry
    ) -> list[Lease | None]:
        """Consecutive never-used addresses for ``requests``, in one transaction when
        nothing is in the way; None for those beyond the window's end."""
        if window not in self._cursors:
            self._cursors[window] = self.state.cursor(window)
        outcomes: list[Lease | None] = [None] * len(requests)
        todo = list(range(len(requests)))  # indexes still to serve, in arrival order
        limit = FRESH_BATCH
        while todo:
            cursor = self._cursors[window]
            first = cursor.first_unused
            chosen = _distinct_macs(todo[: min(limit, window.end - first + 1)], requests)
            if not chosen:
                break
            batch = [requests[i].holder.lease(IP(first + n), window.range.id) for n, i in enumerate(chosen)]
            change = Change(guards)
            change.expect_cursor(cursor)
            for lease in batch:
                change.expect_lease(lease.ip, 0)
                change.write(lease)
            advanced = change.advance(cursor, cursor.next + len(batch))
            outcome = self.state.commit(change)
            if outcome.succeeded:
                self._cursors[window] = Cursor(window, advanced.next, outcome.revision)
                for i, lease in zip(chosen, batch, strict=True):
                    outcomes[i] = lease
                todo = todo[len(chosen) :]
                limit = FRESH_BATCH
                continue
            current = outcome.cursor(window)
            if current.revision != cursor.revision:
                self._cursors[window] = current
                retry.conflict()
                continue
            # Nobody moved the cursor: an address ahead of it was claimed explicitly.
            taken = next((n for n, lease in enumerate(batch) if outcome.lease(lease.ip) is not None), 0)
            if taken:
                limit = taken  # hand out the addresses before it
            else:
                self._cursors[window] = self._step_over(cursor)
        return outcomes

    def _step_over(self, cursor: Cursor) -> Cursor:
        """Step the cursor over an address someone claimed; returns the cursor as it now is."""
        change = Change()
        change.expect_cursor(cursor)
        advanced = change.advance(cursor, cursor.next + 1)
        outcome = self.state.commit(change)
        return (
            Cursor(cursor.window, advanced.next, outcome.revision)
            if outcome.succeeded
            else outcome.cursor(cursor.window)
        )


def _distinct_macs(todo: Sequence[int], requests: Sequence[_Waiting]) -> list[int]:
    """The leading indexes of ``todo`` whose MACs differ: one transaction cannot write
    a MAC's index entry twice."""
    seen: set[str] = set()
    for n, i in enumerate(todo):
        mac = requests[i].holder.mac
        if mac in seen:
            return list(todo[:n])
        if mac:
            seen.add(mac)
    return list(todo)


class LongestIdle:
    """Released addresses of some windows, the one released longest ago first."""

    def __init__(self, state: State) -> None:
        self.state = state
        self._queues: dict[Window, deque[Idle]] = {}
        # One instance serves all the plugin server's threads: each takes its own entry
        # off the shared queues.
        self._lock = threading.Lock()

    def take(self, windows: Sequence[Window], holder: Holder, guards: Sequence[Guard], retry: Retry) -> Lease | None:
        """The longest-idle address of ``windows`` for ``holder``; None when none is idle."""
        while True:
            with self._lock:
                heads = [(queue[0], queue) for w in windows if (queue := self._queue(w))]
                if not heads:
                    return None
                idle, queue = min(heads, key=lambda head: head[0].released)
                queue.popleft()
            change = Change(guards)
            lease = holder.lease(idle.ip, idle.range_id)
            change.take(idle, lease)
            if self.state.commit(change).succeeded:
                return lease
            with self._lock:
                queue.clear()  # others took from it: read the current list
            retry.conflict()

    def _queue(self, window: Window) -> deque[Idle]:
        """The window's longest-idle entries, oldest first, read again when used up."""
        queue = self._queues.setdefault(window, deque())
        if not queue:
            # A sub-pool looks further into its range's list for addresses of its own.
            limit = FREE_BATCH if window.is_whole else 16 * FREE_BATCH
            queue.extend(idle for idle in self.state.idle(window.range.id, limit) if window.contains(int(idle.ip)))
        return queue


class KeptFor:
    """Addresses parked for stopped containers, the one a policy function chooses.

    Each host's list is copied for at most :data:`PARKED_TTL` seconds: only that host's
    server adds to it (when it parks; its copy is then read again), and an entry someone
    took meanwhile just fails its compare, and the list is read again.
    """

    def __init__(self, state: State) -> None:
        self.state = state
        self._lists: dict[str, tuple[float, list[Parked]]] = {}
        self._lock = threading.Lock()

    def take(
        self,
        windows: Sequence[Window],
        holder: Holder,
        host: str | None,
        choose: Callable[[Sequence[Parked]], Parked | None],
        guards: Sequence[Guard],
        retry: Retry,
    ) -> Lease | None:
        """The address parked by ``host`` (None: by any host) in ``windows`` that
        ``choose`` picks, for ``holder``; None when it picks none. Taken back by its own
        host, the lease keeps the container it was parked for, as far as known (the
        server's next look at dockerd corrects a wrong guess): a restart right away finds
        it parked again."""
        while True:
            listed = self._of(host) if host is not None else self.state.parked(None)
            chosen = choose([p for p in listed if any(w.contains(int(p.ip)) for w in windows)])
            if chosen is None:
                return None
            lease = holder.lease(chosen.ip, chosen.range_id)
            if host is not None:
                lease = replace(lease, owner={**chosen.owner, **holder.owner})
            change = Change(guards)
            change.take(chosen, lease)
            outcome = self.state.commit(change)
            self._taken(chosen.ip)
            if outcome.succeeded:
                return lease
            self.invalidate()
            retry.conflict()

    def invalidate(self, host: str | None = None) -> None:
        """Read ``host``'s list (None: every list) again at its next use."""
        with self._lock:
            for known in list(self._lists):
                if host is None or known == host:
                    del self._lists[known]

    def _of(self, host: str) -> list[Parked]:
        with self._lock:
            read_at, listed = self._lists.get(host, (0.0, []))
        if time.monotonic() - read_at > PARKED_TTL:
            listed = self.state.parked(host)
            with self._lock:
                self._lists[host] = (time.monotonic(), listed)
        return listed

    def _taken(self, ip: IP) -> None:
        """``ip`` was taken (or tried): no copy offers it again."""
        with self._lock:
            self._lists = {h: (at, [p for p in kept if p.ip != ip]) for h, (at, kept) in self._lists.items()}
