"""The values read from the store: records decoded into what the layers above speak of,
each with the revision a later compare-and-swap checks. A record not of the shape shrike
writes is :class:`~shrike_cli.errors.Damaged`, naming its key, never a crash."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..errors import Damaged, InvalidInput
from ..model import IP, Lease, Window
from ..stores.base import Entry

T = TypeVar("T")


@dataclass(frozen=True)
class StoredLease:
    """A lease as read, with the revision a later compare-and-swap checks."""

    lease: Lease
    revision: int


@dataclass(frozen=True)
class Cursor:
    """A window's cursor: addresses from ``start + next`` on were never handed out."""

    window: Window
    next: int
    revision: int

    @property
    def first_unused(self) -> int:
        return self.window.start + self.next


@dataclass(frozen=True)
class Waiting:
    """An address not held, waiting in a list where it can be taken from: its lease is
    released (:class:`Idle`) or parked (:class:`Parked`)."""

    ip: IP
    #: the MAC that last held it
    mac: str
    range_id: str
    _key: str = field(repr=False)
    _revision: int = field(repr=False)


@dataclass(frozen=True)
class Idle(Waiting):
    """A released address in its range's free list (oldest release first)."""

    #: when it was released (ns since the epoch): the order in which idle addresses go
    released: int = 0


@dataclass(frozen=True)
class Parked(Waiting):
    """An address kept for a container that still exists but released it (stopped,
    restarting, disconnected)."""

    #: the container it is kept for, as its lease recorded it (id, name, network)
    owner: Mapping[str, str] = field(default_factory=dict)
    #: when it was parked (ns since the epoch)
    at: int = 0

    @property
    def container_id(self) -> str:
        return self.owner.get("container_id", "")

    @property
    def name(self) -> str:
        return self.owner.get("name", "")


def _decoded(entry: Entry, what: str, decode: Callable[[dict[str, Any]], T]) -> T:
    """``decode(entry.value)``, or :class:`Damaged` naming the record."""
    try:
        return decode(entry.value)
    except (KeyError, TypeError, ValueError, AttributeError, InvalidInput) as err:
        reason = f"{type(err).__name__}: {err}" if isinstance(err, (KeyError, TypeError)) else str(err)
        raise Damaged(f"the store's {what} at '{entry.key}' is damaged ({reason}); fix or remove that record") from None


def _stored(entry: Entry | None) -> StoredLease | None:
    if entry is None:
        return None
    return StoredLease(_decoded(entry, "lease", Lease.from_json), entry.revision)


def _cursor(window: Window, entry: Entry | None) -> Cursor:
    if entry is None:
        return Cursor(window, 0, 0)
    return Cursor(window, _decoded(entry, "cursor", lambda v: int(v["next"])), entry.revision)


def _idle(range_id: str, entry: Entry) -> Idle:
    def decode(value: dict[str, Any]) -> Idle:
        released_at = int(entry.key.rpartition("/")[2].partition("-")[0])
        return Idle(IP(value["ip"]), str(value.get("mac", "")), range_id, entry.key, entry.revision, released_at)

    return _decoded(entry, "free-list entry", decode)


def _parked(entry: Entry) -> Parked:
    def decode(value: dict[str, Any]) -> Parked:
        return Parked(
            IP(value["ip"]),
            str(value.get("mac", "")),
            str(value["range"]),
            entry.key,
            entry.revision,
            owner={str(k): str(v) for k, v in dict(value.get("owner", {})).items()},
            at=int(value["at"]),
        )

    return _decoded(entry, "parked entry", decode)
