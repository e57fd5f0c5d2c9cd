"""The leases' changes, as the store's history and watch report them (``shrike events``)."""

from __future__ import annotations

from dataclasses import dataclass

from ..model import IP, Lease
from ..stores.base import KeyChange, Watch
from .layout import LEASES
from .values import _decoded


@dataclass(frozen=True)
class LeaseChange:
    """The lease of ``ip`` as it was and as it became at store ``revision`` (None: no
    record)."""

    revision: int
    ip: IP
    before: Lease | None
    after: Lease | None


def _lease_change(change: KeyChange) -> LeaseChange:
    before = _decoded(change.before, "lease", Lease.from_json) if change.before else None
    after = _decoded(change.after, "lease", Lease.from_json) if change.after else None
    return LeaseChange(change.revision, IP(change.key.removeprefix(LEASES)), before, after)


class LeaseWatch:
    """The leases' changes as they happen (:meth:`State.watch_leases`)."""

    def __init__(self, watch: Watch) -> None:
        self._watch = watch

    def next(self, timeout: float) -> list[LeaseChange]:
        """The next changes, waiting up to ``timeout`` seconds for some (see
        :meth:`Watch.next <shrike_cli.stores.base.Watch.next>`)."""
        return [_lease_change(change) for change in self._watch.next(timeout)]

    @property
    def position(self) -> int:
        """Every change up to this revision has been returned: watch again from it."""
        return self._watch.position

    def close(self) -> None:
        self._watch.close()

    def __enter__(self) -> LeaseWatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
