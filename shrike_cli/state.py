"""The state layout: every key shrike keeps in a store, and the rules that tie them together.

This is the only module that knows a key. Above it, code speaks of leases, cursors, idle
addresses, reservations and pools; below it, a :class:`~shrike_cli.stores.base.Store`
knows only keys, JSON values and revisions.

Keys (relative to the store's prefix), each holding a JSON object a person can read:

=================================  ==========================================================
``config``                         the declarations (:class:`~shrike_cli.model.Config`)
``leases/<ip>``                    one :class:`~shrike_cli.model.Lease` per address handed out
                                   (held, reserved or released)
``ranges/<range-id>[@<s>-<e>]``    a window's cursor ``{"next": n}``: every address at offset
                                   ``n`` or later was never handed out dynamically
``free/<range-id>/<ns>-<ip>``      a released address, ``{"ip", "mac"}``, keyed by its release
                                   time so the longest idle comes first
``macs/<mac>``                     ``{"ip"}``: the address a MAC holds or last held
``names/<name>``                   ``{"ip"}``: the address a reservation name holds
``parked/<host>/<ip>``             an address kept for a stopped container of ``host``:
                                   ``{"ip", "mac", "range", "owner", "at"}``
``pools/<subnet>[/<sub-pool>]``    a Docker pool, how many networks of each host use it, and
                                   the gateway and aux addresses each host asked for in it
=================================  ==========================================================

The invariants, kept by :meth:`Change.write`, the one place that writes a lease:

1. a free-list key exists exactly while its lease is released, and the lease names it
   (``free_key``); both change in one transaction, so a compare on either guards both;
2. ``parked/<host>/<ip>`` exists exactly while the lease of ``ip`` is parked (taken by
   ``host``), and changes with it, so it too guards its lease;
3. ``names/<name>`` exists exactly while a lease carries that name;
4. ``macs/<mac>`` points at the address a MAC last held; it goes when that lease passes to
   another MAC, so the index never outgrows the leases. The MAC of a ``conflict`` (a
   stranger's, found answering on the LAN) is never indexed: it holds nothing shrike gave;
5. a cursor only moves forward: a stale copy costs one failed compare, never a wrong answer.

A record that does not have the shape shrike writes (edited by hand) is reported as
:class:`~shrike_cli.errors.Damaged`, naming its key, never as a crash.

Changes are built as a :class:`Change` (preconditions and effects in domain terms) and
committed as one compare-and-swap transaction by :meth:`State.commit`.

:meth:`State.export` writes the whole state as one document, its records listed by kind
(:data:`RECORD_KINDS`), and :meth:`State.import_` writes such a document into another store.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from . import cas
from .errors import Conflict, Damaged, InvalidInput, ShrikeError
from .model import (
    KIND_CONFLICT,
    KIND_CONTAINER,
    STATE_PARKED,
    STATE_RELEASED,
    Config,
    IPv4,
    Lease,
    Window,
    int_to_ip,
    now_iso,
)
from .stores.base import MAX_TXN_OPS, Compare, Delete, Entry, Op, Put, Store

T = TypeVar("T")

CONFIG_KEY = "config"
LEASES = "leases/"
CURSORS = "ranges/"
FREE = "free/"
MACS = "macs/"
NAMES = "names/"
PARKED = "parked/"
POOLS = "pools/"


def _lease_key(ip: str) -> str:
    return LEASES + ip


def _mac_key(mac: str) -> str:
    return MACS + mac


def _name_key(name: str) -> str:
    return NAMES + name


def _parked_prefix(host: str | None) -> str:
    return f"{PARKED}{host}/" if host is not None else PARKED


def _parked_key(lease: Lease) -> str:
    return f"{_parked_prefix(lease.host)}{lease.ip}"


def _indexed_mac(lease: Lease) -> str:
    """The MAC whose index entry points at ``lease`` (invariant 4)."""
    return "" if lease.kind == KIND_CONFLICT else lease.mac


def _cursor_key(window: Window) -> str:
    if window.is_whole:
        return CURSORS + window.range.id
    return f"{CURSORS}{window.range.id}@{int_to_ip(window.start)}-{int_to_ip(window.end)}"


def _free_prefix(range_id: str) -> str:
    return f"{FREE}{range_id}/"


def pool_key(name: str) -> str:
    """The key of the record of the Docker pool ``name`` (``subnet[/sub-pool]``)."""
    return POOLS + name


# ---------------------------------------------------------- the kinds of records
@dataclass(frozen=True)
class RecordKind:
    """A kind of record, as an exported document lists it: under ``name``, every key under
    ``prefix`` (ending in "/") by the rest of its key, or the one key ``prefix`` as its
    value. ``check`` reads a record back into its value, so that an import refuses a
    malformed one before writing anything."""

    name: str
    prefix: str
    check: Callable[[dict[str, Any]], object] | None = None

    @property
    def single(self) -> bool:
        return not self.prefix.endswith("/")

    def owns(self, key: str) -> bool:
        return key == self.prefix if self.single else key.startswith(self.prefix)


#: Every kind of record shrike keeps, one line each: a new kind is one more line (an
#: export refuses a key no kind owns). In the order an import writes them: the
#: declarations last, so that nothing is allocated from a store whose import was cut short.
RECORD_KINDS = (
    RecordKind("leases", LEASES, Lease.from_json),
    RecordKind("free", FREE),
    RecordKind("macs", MACS),
    RecordKind("reservations", NAMES),
    RecordKind("parked", PARKED),
    RecordKind("cursors", CURSORS),
    RecordKind("pools", POOLS),
    RecordKind("declarations", CONFIG_KEY, Config.from_json),
)
EXPORT_FORMAT = "shrike-state"
#: The version of the documents :meth:`State.export` writes. A shrike that changes what a
#: record means raises it, and upgrades older documents as it imports them (or refuses them).
EXPORT_VERSION = 1
#: Leases :meth:`State.add_leases` writes per transaction (each: a compare, a read and up to
#: three puts: the lease, its MAC's and its name's index entries).
ADD_BATCH = 32


def _kind_of(key: str) -> RecordKind:
    kind = next((kind for kind in RECORD_KINDS if kind.owns(key)), None)
    if kind is None:
        raise ShrikeError(f"the store holds '{key}', a record this shrike does not know: export with a newer shrike")
    return kind


def _records_of(document: Any) -> list[tuple[RecordKind, str, dict[str, Any]]]:
    """The records of an exported document as (kind, key, value), in the order they are
    written; :class:`InvalidInput` for anything this shrike cannot take as it is."""
    if not isinstance(document, Mapping) or document.get("format") != EXPORT_FORMAT:
        raise InvalidInput(f'not a shrike export (it has no "format": "{EXPORT_FORMAT}")')
    version = document.get("version")
    if type(version) is not int or version < 1:
        raise InvalidInput(f"the export has no valid version ({version!r})")
    if version > EXPORT_VERSION:
        raise InvalidInput(
            f"the export is of version {version}, written by a newer shrike; this one reads version"
            f" {EXPORT_VERSION}: import it with a shrike as new as the one that wrote it"
        )
    records = document.get("records")
    if not isinstance(records, Mapping):
        raise InvalidInput('the export has no "records" object')
    if unknown := sorted(set(records) - {kind.name for kind in RECORD_KINDS}):
        raise InvalidInput(
            f"the export holds records of kinds this shrike does not know ({', '.join(map(str, unknown))}):"
            " import it with a shrike as new as the one that wrote it"
        )
    found = []
    for kind in RECORD_KINDS:
        section = records.get(kind.name)
        if section is None:
            continue
        if not kind.single and not isinstance(section, Mapping):
            raise InvalidInput(f"the {kind.name} of the export are not an object")
        for name, value in [("", section)] if kind.single else section.items():
            where = f"{kind.name} {name}".strip()
            if not isinstance(value, dict) or not (kind.single or name):
                raise InvalidInput(f"{where} in the export is not a record")
            try:
                if kind.check:
                    kind.check(value)
            except (ShrikeError, TypeError, KeyError, ValueError) as err:
                raise InvalidInput(f"{where} in the export is not a valid record: {err}") from None
            found.append((kind, kind.prefix + name, value))
    return found


# ------------------------------------------------------------------ values read
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

    ip: IPv4
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


@dataclass(frozen=True)
class Guard:
    """A precondition of a caller's: the reservation ``name`` is still as it was read
    (``revision`` 0: absent). A change carrying it fails with :class:`PreconditionFailed`
    once someone else wrote that name."""

    name: str
    revision: int

    @property
    def _compare(self) -> Compare:
        return (_name_key(self.name), self.revision)


class PreconditionFailed(Exception):
    """A :class:`Guard` no longer holds; nothing was written."""


# --------------------------------------------------------------------- changes
class Change:
    """One atomic change of the state, in domain terms: preconditions (the leases,
    cursors and idle entries it was decided from) and effects. Nothing is written until
    :meth:`State.commit`."""

    def __init__(self, guards: Sequence[Guard] = ()) -> None:
        self.compares: list[Compare] = [g._compare for g in guards]
        self.ops: list[Op] = []
        self.reads: list[str] = [g._compare[0] for g in guards]
        self.guards = tuple(guards)

    # -- preconditions (read back when the change fails)
    def expect_lease(self, ip: str, revision: int) -> None:
        """The lease of ``ip`` is as read at ``revision`` (0: there is none)."""
        key = _lease_key(ip)
        self.compares.append((key, revision))
        self.reads.append(key)

    def expect_cursor(self, cursor: Cursor) -> None:
        key = _cursor_key(cursor.window)
        self.compares.append((key, cursor.revision))
        self.reads.append(key)

    # -- effects
    def write(self, lease: Lease, previous: Lease | None = None) -> None:
        """Write ``lease`` over ``previous`` (the record it replaces, None for a new one),
        with the free-list and index entries the invariants ask for."""
        if previous is None:
            self._write(lease, "", "", "")
        else:
            waiting = previous.free_key or (_parked_key(previous) if previous.state == STATE_PARKED else "")
            self._write(lease, _indexed_mac(previous), waiting, previous.name)

    def take(self, waiting: Waiting, lease: Lease) -> None:
        """Hand out the waiting address ``waiting`` as ``lease``, if it still waits."""
        self.compares.append((waiting._key, waiting._revision))
        self._write(lease, waiting.mac, waiting._key, "")

    def _write(self, lease: Lease, previous_mac: str, previous_waiting: str, previous_name: str) -> None:
        self.ops.append(Put(_lease_key(lease.ip), lease.to_json()))
        waiting = lease.free_key or (_parked_key(lease) if lease.state == STATE_PARKED else "")
        if previous_waiting and previous_waiting != waiting:
            self.ops.append(Delete(previous_waiting))
        if lease.free_key:
            if lease.free_key != previous_waiting:
                self.ops.append(Put(waiting, {"ip": lease.ip, "mac": lease.mac}))
        elif waiting:  # parked: its entry says for whom, which may have changed (a rename)
            self.ops.append(Put(waiting, _parked_value(lease)))
        mac = _indexed_mac(lease)
        if previous_mac and previous_mac != mac:
            self.ops.append(Delete(_mac_key(previous_mac)))
        if mac and not lease.free_key:  # a released address keeps its MAC's entry as it is
            self.ops.append(Put(_mac_key(mac), {"ip": lease.ip}))
        if previous_name and previous_name != lease.name:
            self.ops.append(Delete(_name_key(previous_name)))
        if lease.name and lease.name != previous_name:
            self.ops.append(Put(_name_key(lease.name), {"ip": lease.ip}))

    def delete(self, lease: Lease) -> None:
        """Forget ``lease`` (host and gateway records: they have no index entries)."""
        self.ops.append(Delete(_lease_key(lease.ip)))

    def advance(self, cursor: Cursor, to: int) -> Cursor:
        """Move ``cursor`` to offset ``to``; returns the cursor as it will be (its
        revision is known once committed)."""
        self.ops.append(Put(_cursor_key(cursor.window), {"next": to}))
        return replace(cursor, next=to)


def released(lease: Lease) -> Lease:
    """``lease`` released: back on its range's free list, behind every address released
    before it. Its name and owner go; its MAC stays, so that MAC can get it back."""
    free_key = f"{_free_prefix(lease.range)}{time.time_ns():020d}-{lease.ip}"
    return replace(lease, state=STATE_RELEASED, since=now_iso(), free_key=free_key, name="", owner={})


def freed(conflict: Lease) -> Lease:
    """A ``conflict`` whose address went silent: a released container address again, on
    its range's free list, behind every address released before it."""
    return released(replace(conflict, kind=KIND_CONTAINER, mac=""))


def parked(lease: Lease) -> Lease:
    """``lease`` kept for its container, which released it but still exists."""
    return replace(lease, state=STATE_PARKED, since=now_iso(), free_key="")


def _parked_value(lease: Lease) -> dict[str, Any]:
    return {
        "ip": lease.ip,
        "mac": lease.mac,
        "range": lease.range,
        "owner": dict(lease.owner),
        "at": time.time_ns(),
    }


@dataclass(frozen=True)
class Outcome:
    """What :meth:`State.commit` did. When it failed, the preconditions' current values
    (read atomically with the failed compares) answer :meth:`lease` and :meth:`cursor`."""

    succeeded: bool
    revision: int
    _entries: Mapping[str, Entry | None]

    def lease(self, ip: str) -> StoredLease | None:
        return _stored(self._entries[_lease_key(ip)])

    def cursor(self, window: Window) -> Cursor:
        return _cursor(window, self._entries[_cursor_key(window)])

    def check(self, guards: Sequence[Guard]) -> None:
        """Raise :class:`PreconditionFailed` if a guard no longer holds."""
        for guard in guards:
            current = self._entries.get(guard._compare[0])
            if (current.revision if current else 0) != guard.revision:
                raise PreconditionFailed(guard.name)


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
        return Idle(IPv4(value["ip"]), str(value.get("mac", "")), range_id, entry.key, entry.revision, released_at)

    return _decoded(entry, "free-list entry", decode)


def _parked(entry: Entry) -> Parked:
    def decode(value: dict[str, Any]) -> Parked:
        return Parked(
            IPv4(value["ip"]),
            str(value.get("mac", "")),
            str(value["range"]),
            entry.key,
            entry.revision,
            owner={str(k): str(v) for k, v in dict(value.get("owner", {})).items()},
            at=int(value["at"]),
        )

    return _decoded(entry, "parked entry", decode)


# ----------------------------------------------------------------------- state
class State:
    """shrike's state in ``store``: reads, and changes committed atomically."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def commit(self, change: Change) -> Outcome:
        """Apply ``change`` if all its preconditions hold; raises nothing on a lost race
        (the outcome says so), :class:`PreconditionFailed` when a guard broke."""
        result = self.store.txn(change.compares, change.ops, reads=change.reads)
        outcome = Outcome(result.succeeded, result.revision, result.entries)
        if not result.succeeded:
            outcome.check(change.guards)
        return outcome

    # -- leases
    def lease(self, ip: str) -> StoredLease | None:
        return _stored(self.store.get(_lease_key(ip)))

    def leases(self) -> list[StoredLease]:
        """Every lease record (released ones too), in key order."""
        return [StoredLease(_decoded(e, "lease", Lease.from_json), e.revision) for e in self.store.get_prefix(LEASES)]

    def update_lease(
        self,
        ip: str,
        decide: Callable[[StoredLease | None], tuple[T, Change | None]],
        *,
        max_wait: float,
        guards: Sequence[Guard] = (),
    ) -> T:
        """Read the lease of ``ip``, let ``decide`` answer and say what to change (None:
        nothing), and commit only if that lease is still as read; on a race, again.
        ``decide`` may raise to refuse."""

        def raw(entry: Entry | None) -> tuple[T, Sequence[Op]]:
            answer, change = decide(_stored(entry))
            assert change is None or change.compares == [], "update_lease compares the lease itself"
            return answer, change.ops if change else ()

        try:
            return cas.update(self.store, _lease_key(ip), raw, max_wait=max_wait, guards=[g._compare for g in guards])
        except cas.GuardFailed as failed:
            raise PreconditionFailed(failed.key.removeprefix(NAMES)) from None

    # -- indexes
    def address_of_mac(self, mac: str) -> IPv4 | None:
        """The address ``mac`` holds or last held, if any."""
        entry = self.store.get(_mac_key(mac))
        return _decoded(entry, "MAC index entry", lambda v: IPv4(v["ip"])) if entry else None

    def reservation(self, name: str) -> tuple[IPv4 | None, Guard]:
        """The address reserved for ``name`` (None: no reservation), and a guard that
        holds while nobody changes that."""
        entry = self.store.get(_name_key(name))
        if entry is None:
            return None, Guard(name, 0)
        return _decoded(entry, "reservation", lambda v: IPv4(v["ip"])), Guard(name, entry.revision)

    def drop_dangling_reservation(self, guard: Guard) -> None:
        """Remove a name index entry whose lease is gone (it should never happen)."""
        self.store.txn([guard._compare], [Delete(guard._compare[0])])

    # -- dynamic allocation
    def cursor(self, window: Window) -> Cursor:
        return _cursor(window, self.store.get(_cursor_key(window)))

    def idle(self, range_id: str, limit: int) -> list[Idle]:
        """The ``limit`` longest-idle addresses of a container range, oldest first."""
        return [_idle(range_id, e) for e in self.store.get_prefix(_free_prefix(range_id), limit=limit)]

    def parked(self, host: str | None) -> list[Parked]:
        """The addresses kept for stopped containers of ``host`` (None: of every host)."""
        return [_parked(e) for e in self.store.get_prefix(_parked_prefix(host))]

    # -- declarations
    def config(self) -> tuple[Config, int]:
        """The declarations and their store revision (0 when nothing is declared)."""
        entry = self.store.get(CONFIG_KEY)
        return (_decoded(entry, "declarations", Config.from_json), entry.revision) if entry else (Config(), 0)

    def update_config(self, change: Callable[[Config], Config | None], *, max_wait: float) -> Config:
        """Apply ``change`` to the declarations with compare-and-swap, again on a race;
        ``change`` returns None when there is nothing to write."""

        def decide(entry: Entry | None) -> tuple[Config, list[Op]]:
            config = _decoded(entry, "declarations", Config.from_json) if entry else Config()
            new = change(config)
            return (config, []) if new is None else (new, [Put(CONFIG_KEY, new.to_json())])

        return cas.update(self.store, CONFIG_KEY, decide, max_wait=max_wait)

    # -- Docker pools
    def pool_records(self) -> list[dict[str, Any]]:
        """Every pool record, in key order."""
        return [entry.value for entry in self.store.get_prefix(POOLS)]

    def update_pool_record(
        self,
        name: str,
        decide: Callable[[dict[str, Any] | None], tuple[T, dict[str, Any] | None, bool]],
        *,
        max_wait: float,
    ) -> T:
        """Compare-and-swap on pool record ``name``: ``decide`` gets the record (None when
        absent) and returns the answer, the new record (None: remove it) and whether
        anything changed."""
        key = pool_key(name)

        def raw(entry: Entry | None) -> tuple[T, list[Op]]:
            answer, record, changed = decide(entry.value if entry else None)
            if not changed:
                return answer, []
            return answer, [Put(key, record) if record is not None else Delete(key)]

        return cas.update(self.store, key, raw, max_wait=max_wait)

    # -- the whole state, as one document
    def export(self) -> dict[str, Any]:
        """Every record, by kind (:data:`RECORD_KINDS`), in a versioned document, read in
        one snapshot of the store."""
        records: dict[str, Any] = {kind.name: {} for kind in RECORD_KINDS if not kind.single}
        for entry in self.store.get_prefix(""):
            kind = _kind_of(entry.key)
            if kind.single:
                records[kind.name] = entry.value
            else:
                records[kind.name][entry.key.removeprefix(kind.prefix)] = entry.value
        return {"format": EXPORT_FORMAT, "version": EXPORT_VERSION, "exported": now_iso(), "records": records}

    def import_(self, document: Mapping[str, Any], *, dry_run: bool = False) -> dict[str, int]:
        """Write the records of ``document`` (written by :meth:`export`) into this store;
        returns how many of each kind were (with ``dry_run``: would be) written.

        The store must be empty, or hold only records of that very document (an import
        cut short, run again): anything else is refused before a record is written, as is a
        document this shrike cannot read. Records go in transactions of at most
        :data:`MAX_TXN_OPS` keys, each written only where no key is yet.
        """
        records = _records_of(document)
        wanted = {key: value for _, key, value in records}
        present = {entry.key: entry.value for entry in self.store.get_prefix("")}
        if foreign := sorted(key for key, value in present.items() if wanted.get(key) != value):
            why = "differs from the export" if foreign[0] in wanted else "is not in the export"
            more = f" (and {len(foreign) - 1} more records)" if len(foreign) > 1 else ""
            raise Conflict(
                f"the store at {self.store.location} is not empty: its '{foreign[0]}' {why}{more};"
                " import into an empty store (another --store-prefix or --state-dir)"
            )
        todo = [(kind, key, value) for kind, key, value in records if key not in present]
        for start in range(0, 0 if dry_run else len(todo), MAX_TXN_OPS):
            batch = todo[start : start + MAX_TXN_OPS]
            keys = [key for _, key, _ in batch]
            result = self.store.txn([(key, 0) for key in keys], [Put(key, value) for _, key, value in batch])
            if not result.succeeded:
                raise Conflict(
                    f"the store at {self.store.location} was written to during the import; run it again"
                    f" once nothing else uses that store ({start} of {len(todo)} records were written)"
                )
        written = Counter(kind.name for kind, _, _ in todo)
        return {kind.name: written[kind.name] for kind in RECORD_KINDS}

    def add_leases(self, leases: Sequence[Lease]) -> list[Lease]:
        """Write each of ``leases`` (with the index entries the invariants ask for) where its
        address has no lease yet; returns those written. A batch at a time (:data:`ADD_BATCH`):
        a lease written meanwhile by someone else is left as it is."""
        written: list[Lease] = []
        for start in range(0, len(leases), ADD_BATCH):
            batch = list(leases[start : start + ADD_BATCH])
            while batch:
                change = Change()
                for lease in batch:
                    change.expect_lease(lease.ip, 0)
                    change.write(lease)
                outcome = self.commit(change)
                if outcome.succeeded:
                    written += batch
                    break
                batch = [lease for lease in batch if outcome.lease(lease.ip) is None]
        return written
