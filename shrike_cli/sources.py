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

Both return None when they have nothing (left) to give, and leave retries on a lost race
to the shared :class:`~shrike_cli.cas.Retry`.
"""

from __future__ import annotations

import copy
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from .cas import Retry
from .model import Holder, IPv4, Lease, Window
from .state import Change, Cursor, Guard, Idle, State

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
            batch = [requests[i].holder.lease(IPv4(first + n), window.range.id) for n, i in enumerate(chosen)]
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
