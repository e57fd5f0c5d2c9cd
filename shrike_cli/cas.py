"""Optimistic updates: read a key, decide, write only if nobody wrote it meanwhile."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from . import metrics
from .errors import ShrikeError
from .stores.base import Compare, Entry, Op, Store

T = TypeVar("T")


class ContentionTimeout(ShrikeError):
    """Retries did not get through before the deadline (the store is overloaded)."""


class GuardFailed(Exception):
    """A caller's extra compare (a guard) no longer holds; nothing was written."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


class Retry:
    """Deadline and back-off for optimistic transactions that lost a race."""

    def __init__(self, max_wait: float) -> None:
        self.deadline = time.monotonic() + max_wait
        self.conflicts = 0

    def conflict(self) -> None:
        self.conflicts += 1
        if time.monotonic() > self.deadline:
            raise ContentionTimeout(f"gave up after {self.conflicts} conflicting attempts", reason="contention")
        metrics.cas_retry()
        if self.conflicts > 3:
            # Jitter breaks lock-step retries between many contending clients.
            time.sleep(random.uniform(0, min(0.05, 0.001 * self.conflicts)))


def update(
    store: Store,
    key: str,
    decide: Callable[[Entry | None], tuple[T, Sequence[Op]]],
    *,
    max_wait: float,
    guards: Sequence[Compare] = (),
) -> T:
    """Read ``key``, let ``decide`` return an answer and the operations to write (none:
    write nothing), and write them only if ``key`` is as read; on a race, read again.
    ``decide`` may raise to refuse. ``guards`` are compares of the caller's that must
    hold too: once one fails, :class:`GuardFailed` names its key and nothing is written."""
    retry = Retry(max_wait)
    reads = [k for k, _ in guards]
    while True:
        entry = store.get(key)
        answer, ops = decide(entry)
        if not ops:
            return answer
        result = store.txn([(key, entry.revision if entry else 0), *guards], ops, reads=reads)
        if result.succeeded:
            return answer
        for guard_key, revision in guards:
            current = result.entries[guard_key]
            if (current.revision if current else 0) != revision:
                raise GuardFailed(guard_key)
        retry.conflict()
