"""The store interface: a small transactional key-value contract both stores honour.

It is deliberately the subset of etcd v3 the allocator needs, so that the etcd store
maps onto it one to one and the embedded store can emulate it inside one SQLite
transaction:

* keys are strings relative to the store's prefix (``leases/198.51.100.7``);
* values are JSON objects (``dict``), stored so a person can read them;
* every write gets a store-wide, strictly increasing revision; an entry remembers the
  revision of its last write (``Entry.revision``, etcd's ``mod_revision``), and an absent
  key has revision 0;
* :meth:`Store.txn` is compare-and-swap: if every ``(key, revision)`` compare holds,
  all operations are applied atomically; otherwise nothing is written and the current
  entries of ``reads`` are returned, so the caller can retry without another round trip;
* the changes of the keys under a prefix can be read back in revision order, each with
  the entry before and after it (:meth:`Store.changes`, :meth:`Store.watch`), like an
  etcd watch with ``prev_kv``.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import ShrikeError

#: How values are stored: compact JSON with sorted keys, non-ASCII kept as it is, so a
#: person reading the store (etcdctl, sqlite3) sees what shrike sees.
encode = json.JSONEncoder(separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode
decode = json.JSONDecoder().decode


#: Seconds one store call may take by default: etcd's whole call (every endpoint, retries
#: and authentication included), or the embedded store's wait for another process's write.
STORE_TIMEOUT = 5.0


class StoreError(ShrikeError):
    """The store could not be used (unreachable, timed out, corrupt); the message names it,
    ``reason`` says which (``unreachable``, ``timeout``, ``refused``, ``locked``, ...)."""


class HistoryLost(StoreError):
    """The changes asked for are no longer kept; those after ``available_after`` are."""

    def __init__(self, message: str, available_after: int = 0) -> None:  # a default, for copy and pickle
        super().__init__(message, reason="history_lost")
        self.available_after = available_after


@dataclass(frozen=True)
class Entry:
    """One stored key with its decoded value and the revision of its last write."""

    key: str
    value: dict[str, Any]
    revision: int


@dataclass(frozen=True)
class Put:
    """Write ``value`` at ``key`` (create or replace)."""

    key: str
    value: dict[str, Any]


@dataclass(frozen=True)
class Delete:
    """Remove ``key``; removing an absent key is not an error."""

    key: str


Op = Put | Delete


@dataclass(frozen=True)
class KeyChange:
    """One write of ``key`` at store ``revision``: its entry before and after (None: absent)."""

    revision: int
    key: str
    before: Entry | None
    after: Entry | None


class Watch(ABC):
    """The changes of the keys under a prefix, in revision order, as they happen."""

    #: Every change up to this revision has been returned by :meth:`next`: a watch made
    #: again from it misses nothing.
    position: int

    @abstractmethod
    def next(self, timeout: float) -> list[KeyChange]:
        """The next changes, waiting up to ``timeout`` seconds for some (``[]``: none came).

        Raises :class:`HistoryLost` when changes were dropped before they could be read,
        :class:`StoreError` when the store cannot be reached (watch again from the last
        revision read)."""

    def close(self) -> None:  # noqa: B027 - optional for watches holding no resources
        """Stop watching."""

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: ``(key, revision)``: holds when the key's last-write revision equals ``revision``;
#: ``0`` means "the key must be absent".
Compare = tuple[str, int]

#: Most compares, most ops and most reads one :meth:`Store.txn` may carry (each counted
#: separately): etcd's default ``--max-txn-ops``. Both stores enforce it so code tested on
#: the embedded store does not break on etcd; batch larger writes.
MAX_TXN_OPS = 128


def validate_txn(compares: Sequence[Compare], ops: Sequence[Op], reads: Sequence[str]) -> None:
    """Raise :class:`ValueError` for a transaction etcd would refuse (see :meth:`Store.txn`)."""
    if max(len(compares), len(ops), len(reads)) > MAX_TXN_OPS:
        raise ValueError(f"a transaction takes at most {MAX_TXN_OPS} compares, ops and reads each")
    if len({op.key for op in ops}) != len(ops):
        raise ValueError("a transaction must not name a key twice in its ops")


@dataclass(frozen=True)
class TxnResult:
    """What :meth:`Store.txn` did.

    ``revision`` is the revision the writes got when ``succeeded``; every key put by the
    transaction now has that revision. When the compares failed, ``entries`` maps each key
    of ``reads`` to its current entry (``None`` when absent), read atomically with the
    failed compares.
    """

    succeeded: bool
    revision: int = 0
    entries: dict[str, Entry | None] = field(default_factory=dict)


class Store(ABC):
    """A transactional key-value store holding shrike's state."""

    #: Human-readable location, used in messages (a file path or etcd endpoints).
    location: str

    @abstractmethod
    def get(self, key: str) -> Entry | None:
        """Return the entry at ``key`` or ``None``."""

    def get_prefix(self, prefix: str, limit: int | None = None) -> list[Entry]:
        """Return the entries whose key starts with ``prefix``, in ascending key order
        (byte order), at most ``limit`` of them."""
        if limit is not None and limit < 1:
            raise ValueError("limit must be a positive number or None")
        return self._get_prefix(prefix, limit)

    @abstractmethod
    def _get_prefix(self, prefix: str, limit: int | None) -> list[Entry]:
        """:meth:`get_prefix` once ``limit`` is checked."""

    @abstractmethod
    def txn(
        self,
        compares: Sequence[Compare],
        ops: Sequence[Op],
        reads: Sequence[str] = (),
    ) -> TxnResult:
        """Apply ``ops`` atomically if all ``compares`` hold (see the module docstring).

        Raises :class:`ValueError`, before touching the store, when ``compares``, ``ops``
        or ``reads`` exceed :data:`MAX_TXN_OPS` or ``ops`` name a key twice (etcd refuses
        both).
        """

    @abstractmethod
    def revision(self) -> int:
        """The store's current revision (that of its last write)."""

    @abstractmethod
    def changes(self, prefix: str, after: int, until: int) -> list[KeyChange]:
        """The changes of the keys under ``prefix`` with a revision in ``(after, until]``,
        in revision order. Raises :class:`HistoryLost` when those after ``after`` are no
        longer all kept."""

    @abstractmethod
    def watch(self, prefix: str, after: int | None = None) -> Watch:
        """Follow the changes of the keys under ``prefix`` with a revision above ``after``
        (None: from now on). Raises :class:`HistoryLost`, here or at the first
        :meth:`Watch.next`, when those are no longer all kept."""

    def close(self) -> None:  # noqa: B027 - optional for stores holding no resources
        """Release connections or file handles."""

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
