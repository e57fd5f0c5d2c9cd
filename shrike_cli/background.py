"""Work beside the plugin server: :class:`BackgroundTask` runs loops on threads until it
is stopped, and :class:`Backoff` spaces their retries."""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Self

log = logging.getLogger("shrike.background")


class Backoff:
    """Waits growing from ``first`` to ``most`` seconds, cut short by ``stopping``, or by
    ``early`` when given, which also starts the growth over (whoever sets ``stopping``
    must then set ``early`` too)."""

    def __init__(
        self, stopping: threading.Event, first: float, most: float, *, early: threading.Event | None = None
    ) -> None:
        self.stopping = stopping
        self.early = early
        self.first, self.most = first, most
        self.delay = first

    def reset(self) -> None:
        self.delay = self.first

    def wait(self) -> None:
        """Wait the current delay, then double it; less if stopping, or told early (the
        next wait is then the first one's)."""
        if self.early is None:
            self.stopping.wait(self.delay)
        elif self.early.wait(self.delay):
            self.early.clear()
            self.delay = self.first
            return
        self.delay = min(self.delay * 2, self.most)


class BackgroundTask(ABC):
    """Threads that run beside the plugin server until :meth:`stop`; a context manager.

    Subclasses name their loops in :meth:`loops`; each must return soon after
    ``self.stopping`` is set, and must never raise: the server goes on without them.
    """

    def __init__(self) -> None:
        self.stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    @abstractmethod
    def loops(self) -> dict[str, Callable[[], None]]:
        """The loops to run, by thread name."""

    def start(self) -> None:
        for name, loop in self.loops().items():
            thread = threading.Thread(target=loop, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the loops to end and wait up to ``timeout`` seconds for each; idempotent."""
        self.stopping.set()
        self.wake()
        for thread in self._threads:
            thread.join(timeout)
            if thread.is_alive():
                log.warning("%s did not stop within %g s", thread.name, timeout)
        self._threads = []

    def wake(self) -> None:  # noqa: B027 - optional: only loops that block elsewhere need it
        """Unblock loops waiting on something other than ``stopping``."""

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
