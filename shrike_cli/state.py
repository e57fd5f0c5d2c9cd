"""The state layout: every key shrike keeps in a store, and the rules that tie them together.

This is the only module that knows a key. Above it, code speaks of leases, cursors, idle
addresses, reservations and pools; below it, a :class:`~shrike_cli.stores.base.Store`
knows only keys, JSON values and revisions.

Keys (relative to the store's prefix), each holding a JSON object a person can read:

=================================  ==========================================================
``config``                         the declarations (:class:`~shrike_cli.model.Config`)
``leases/<ip>``                    one :class:`~shrike_cli.model.Lease` per address handed out
                                   (held, reserved or released); IPv6 in canonical text
``ranges/<range-id>[@<s>-<e>]``    a window's cursor ``{"next": n}``: every address at offset
                                   ``n`` or later was never handed out dynamically
``free/<range-id>/<ns>-<ip>``      a released address, ``{"ip", "mac"}``, keyed by its release
                                   time so the longest idle comes first
``macs/<mac>[/6]``                 ``{"ip"}``: the IPv4 (``/6``: IPv6) address a MAC holds or
                                   last held (a dual-stack container holds one of each)
``names/<name>[/6]``               ``{"ip"}``: the IPv4 (``/6``: IPv6) address a reservation
                                   name holds
``parked/<host>/<ip>``             an address kept for a stopped container of ``host``:
                                   ``{"ip", "mac", "range", "owner", "at"}``
``pools/<subnet>[/<sub-pool>]``    a Docker pool, how many networks of each host use it, and
                                   the gateway and aux addresses each host asked for in it
                                   (``+eui64`` after an IPv6 pool deriving addresses from MACs)
=================================  ==========================================================

The invariants, kept by :meth:`Change.write`, the one place that writes a lease:

1. a free-list key exists exactly while its lease is released, and the lease names it
   (``free_key``); both change in one transaction, so a compare on either guards both;
2. ``parked/<host>/<ip>`` exists exactly while the lease of ``ip`` is parked (taken by
   ``host``), and changes with it, so it too guards its lease;
3. ``names/<name>`` (``names/<name>/6`` for IPv6) exists exactly while a lease of that
   family carries that name (names and MACs hold no "/");
4. ``macs/<mac>`` (``macs/<mac>/6``) points at the address of that family a MAC last held; it
   goes when that lease passes to another MAC, so the index never outgrows the leases. A
   container address outside every range (derived from its MAC: EUI-64) has no entry: the
   MAC finds it without one, and its lease goes when it is released (:meth:`Change.delete`).
   The MAC of a ``conflict`` (a stranger's, found answering on the LAN) is never indexed:
   it holds nothing shrike gave;
5. a cursor only moves forward: a stale copy costs one failed compare, never a wrong answer.

A record that does not have the shape shrike writes (edited by hand) is reported as
:class:`~shrike_cli.errors.Damaged`, naming its key, never as a crash.

:meth:`State.check` verifies these invariants (and that every lease lies in the declared
ranges, in a state its kind may have, and every cursor inside its range) in one snapshot
of the store, where what one transaction keeps holds exactly; only what may lag is
allowed: a MAC with no entry. :meth:`State.repair` fixes a missing or dangling index,
free-list or parked entry with a compare-and-swap on the records it was found in.

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
from datetime import datetime
from typing import Any, TypeVar

from . import cas
from .errors import Conflict, Damaged, InvalidInput, ShrikeError
from .model import (
    IP,
    KIND_AUX,
    KIND_CONFLICT,
    KIND_CONTAINER,
    KIND_GATEWAY,
    KIND_HOST,
    SHARED_KINDS,
    STATE_HELD,
    STATE_PARKED,
    STATE_RELEASED,
    STATE_RESERVED,
    Config,
    Lease,
    Subnet,
    Window,
    int_to_ip,
    ip_to_int,
    now_iso,
)
from .stores.base import MAX_TXN_OPS, Compare, Delete, Entry, KeyChange, Op, Put, Store, Watch

T = TypeVar("T")

CONFIG_KEY = "config"
LEASES = "leases/"
CURSORS = "ranges/"
FREE = "free/"
MACS = "macs/"
NAMES = "names/"
#: The suffix of the MAC and reservation index entries of IPv6 addresses.
V6_SUFFIX = "/6"
#: The suffix of the key (and id) of an IPv6 pool whose containers get the address
#: their MAC derives (:class:`~shrike_cli.pools.Pool`).
EUI64_SUFFIX = "+eui64"
PARKED = "parked/"
POOLS = "pools/"


def _lease_key(ip: str) -> str:
    return LEASES + ip


def _family_suffix(version: int) -> str:
    return V6_SUFFIX if version == 6 else ""


def _mac_key(mac: str, version: int) -> str:
    return MACS + mac + _family_suffix(version)


def _name_key(name: str, version: int) -> str:
    return NAMES + name + _family_suffix(version)


def _indexed(key: str, prefix: str) -> tuple[str, int]:
    """The name (or MAC) and family an index entry's key names."""
    rest = key.removeprefix(prefix)
    return (rest.removesuffix(V6_SUFFIX), 6) if rest.endswith(V6_SUFFIX) else (rest, 4)


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


@dataclass(frozen=True)
class Guard:
    """A precondition of a caller's: the reservation ``name`` (of the family ``version``)
    is still as it was read (``revision`` 0: absent). A change carrying it fails with
    :class:`PreconditionFailed` once someone else wrote that name."""

    name: str
    revision: int
    version: int = 4

    @property
    def _compare(self) -> Compare:
        return (_name_key(self.name, self.version), self.revision)


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
        version = lease.ip.version
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
            self.ops.append(Delete(_mac_key(previous_mac, version)))
        # A released address keeps its MAC's entry as it is; one outside every range
        # (derived from its MAC) has none.
        if mac and lease.range and not lease.free_key:
            self.ops.append(Put(_mac_key(mac, version), {"ip": lease.ip}))
        if previous_name and previous_name != lease.name:
            self.ops.append(Delete(_name_key(previous_name, version)))
        if lease.name and lease.name != previous_name:
            self.ops.append(Put(_name_key(lease.name, version), {"ip": lease.ip}))

    def delete(self, lease: Lease) -> None:
        """Forget ``lease``: host and gateway records, and container addresses outside
        every range (derived from their MAC), none of which has index entries."""
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
            raise PreconditionFailed(_indexed(failed.key, NAMES)[0]) from None

    # -- indexes
    def address_of_mac(self, mac: str, version: int = 4) -> IP | None:
        """The address of family ``version`` that ``mac`` holds or last held, if any."""
        entry = self.store.get(_mac_key(mac, version))
        return _decoded(entry, "MAC index entry", lambda v: IP(v["ip"])) if entry else None

    def reservation(self, name: str, version: int = 4) -> tuple[IP | None, Guard]:
        """The address of family ``version`` reserved for ``name`` (None: no reservation),
        and a guard that holds while nobody changes that."""
        entry = self.store.get(_name_key(name, version))
        if entry is None:
            return None, Guard(name, 0, version)
        return _decoded(entry, "reservation", lambda v: IP(v["ip"])), Guard(name, entry.revision, version)

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

    def lease_states(self) -> list[tuple[int, str]]:
        """Every lease's address (an integer) and state, without reading whole leases:
        what counting the ranges needs (:func:`~shrike_cli.ranges.usage_by_state`)."""
        return [
            _decoded(entry, "lease", lambda value: (ip_to_int(value["ip"]), str(value["state"])))
            for entry in self.store.get_prefix(LEASES)
        ]

    # -- changes, for watching the state (``shrike events``)
    def revision(self) -> int:
        """The store's revision now: changes after it are yet to come."""
        return self.store.revision()

    def lease_changes(self, after: int, until: int) -> list[LeaseChange]:
        """How the leases changed at the store revisions in ``(after, until]``; raises
        :class:`~shrike_cli.stores.base.HistoryLost` when the store no longer has them."""
        return [_lease_change(change) for change in self.store.changes(LEASES, after, until)]

    def watch_leases(self, after: int | None = None) -> LeaseWatch:
        """Follow the leases' changes after revision ``after`` (None: from now on)."""
        return LeaseWatch(self.store.watch(LEASES, after))

    # -- consistency
    def check(self) -> Survey:
        """Every record that breaks a rule between records (see the module docstring), or
        that shrike does not know, read in one snapshot of the store: what a change made
        in one transaction keeps holds there exactly. Each finding says what
        :meth:`repair` would do about it, if anything is safe to do."""
        entries = self.store.get_prefix("")
        return Survey(len(entries), tuple(_Checker(entries).run()))

    def repair(self, finding: Finding) -> bool:
        """Apply ``finding``'s repair (a missing or dangling index, free-list or parked
        entry) in one transaction, only if every record it was decided from is still as
        :meth:`check` read it; False when one changed since (check again) or when the
        finding has no repair."""
        return finding._change is not None and self.commit(finding._change).succeeded


# ----------------------------------------------------------------- consistency
#: The problems :meth:`State.check` reports, one code per broken rule (scripts read them).
UNKNOWN_RECORD = "unknown-record"
DAMAGED_RECORD = "damaged-record"
LEASE_MISFILED = "lease-misfiled"
LEASE_OUTSIDE = "lease-outside-ranges"
LEASE_STATE = "lease-state"
FREE_MISSING = "free-entry-missing"
FREE_DANGLING = "free-entry-dangling"
PARKED_MISSING = "parked-entry-missing"
PARKED_DANGLING = "parked-entry-dangling"
NAME_MISSING = "name-missing"
NAME_DANGLING = "name-dangling"
NAME_TWICE = "name-on-two-leases"
MAC_DANGLING = "mac-dangling"
CURSOR_OUTSIDE = "cursor-outside-range"

#: The states a lease of each kind may be in.
_STATES = {
    KIND_CONTAINER: (STATE_HELD, STATE_RELEASED, STATE_RESERVED, STATE_PARKED),
    KIND_HOST: (STATE_HELD,),
    KIND_GATEWAY: (STATE_HELD,),
    KIND_AUX: (STATE_HELD,),
    KIND_CONFLICT: (STATE_HELD,),
}


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


@dataclass(frozen=True)
class Finding:
    """A record that breaks a rule between records (see the module docstring), or one
    shrike does not know, as :meth:`State.check` found it in one snapshot of the store."""

    #: which rule (one of the codes above)
    problem: str
    #: the address it concerns ("" for none)
    ip: str
    #: what is wrong, for people, naming the records
    detail: str
    #: what :meth:`State.repair` does about it; "" when nothing is safe to do (a person must look)
    repair: str = ""
    _change: Change | None = field(default=None, repr=False, compare=False)

    def to_json(self) -> dict[str, str]:
        return {"problem": self.problem, "ip": self.ip, "detail": self.detail, "repair": self.repair}


@dataclass(frozen=True)
class Survey:
    """What :meth:`State.check` read (how many records) and found."""

    records: int
    findings: tuple[Finding, ...]


def _fix(compares: Sequence[Compare], ops: Sequence[Op]) -> Change:
    """A repair: ``ops`` only if every record it was decided from is as it was read."""
    change = Change()
    change.compares += compares
    change.ops += ops
    return change


def _since_ns(lease: Lease) -> int:
    """When ``lease`` was last written (its ``since``), in ns since the epoch; now if unreadable."""
    try:
        return int(datetime.fromisoformat(lease.since.replace("Z", "+00:00")).timestamp() * 1e9)
    except ValueError:
        return time.time_ns()


class _Checker:
    """The rules between the records of one snapshot of the store (:meth:`State.check`)."""

    def __init__(self, entries: Sequence[Entry]) -> None:
        self.found: list[Finding] = []
        self.config = Config()
        #: leases by the address their key names, with their revisions
        self.leases: dict[str, tuple[Lease, int]] = {}
        self.by_kind: dict[str, list[Entry]] = {kind.name: [] for kind in RECORD_KINDS}
        for entry in entries:
            kind = next((kind for kind in RECORD_KINDS if kind.owns(entry.key)), None)
            if kind is None:
                self.add(UNKNOWN_RECORD, "", f"'{entry.key}' is no record shrike writes (left alone)")
            else:
                self.by_kind[kind.name].append(entry)

    def add(self, problem: str, ip: str, detail: str, repair: str = "", change: Change | None = None) -> None:
        self.found.append(Finding(problem, ip, detail, repair, change))

    def decoded(self, entry: Entry, what: str, decode: Callable[[dict[str, Any]], T]) -> T | None:
        """``decode(entry.value)``, or None with a finding when the record is damaged."""
        try:
            return _decoded(entry, what, decode)
        except Damaged as err:
            self.add(DAMAGED_RECORD, "", str(err))
            return None

    def run(self) -> list[Finding]:
        for entry in self.by_kind["declarations"]:
            self.config = self.decoded(entry, "declarations", Config.from_json) or Config()
        for entry in self.by_kind["leases"]:
            self.lease(entry)
        self.free_list()
        self.parked()
        self.names()
        self.macs()
        for entry in self.by_kind["cursors"]:
            self.cursor(entry)
        for entry in self.by_kind["pools"]:
            self.decoded(entry, "pool record", _pool_record(entry.key))
        return self.found

    # -- leases
    def lease(self, entry: Entry) -> None:
        lease = self.decoded(entry, "lease", Lease.from_json)
        if lease is None:
            return
        named = entry.key.removeprefix(LEASES)
        if lease.ip != named:
            self.add(LEASE_MISFILED, named, f"'{entry.key}' holds the lease of {lease.ip}: {named} is held twice")
            return
        self.leases[named] = (lease, entry.revision)
        where = self.placement(lease)
        if where:
            self.add(LEASE_OUTSIDE, lease.ip, f"the {lease.kind} lease of {lease.ip} {where}")
        wrong = self.state_of(lease)
        if wrong:
            self.add(LEASE_STATE, lease.ip, f"the {lease.kind} lease of {lease.ip} is {lease.state} {wrong}")

    def placement(self, lease: Lease) -> str:
        """Why ``lease`` is not where the declarations allow it ("" when it is)."""
        address, config = int(lease.ip), self.config
        if not lease.subnet.contains(address):
            return f"lies outside its subnet {lease.subnet}"
        declared = config.container_range_of(address)
        # A conflict is a container address found answering on the LAN: where containers' are.
        if lease.kind in (KIND_CONTAINER, KIND_CONFLICT):
            if declared is None and not lease.range and lease.kind == KIND_CONTAINER and self.derivable(lease):
                return ""  # an address its MAC derives (EUI-64): a container's outside the ranges
            if declared is None:
                return "lies outside every declared container range"
            if lease.range != declared.id:
                return f"names the range '{lease.range}', not {declared.id}, which holds it"
            if not config.lan_of(declared).holds(lease.subnet):
                return f"names the subnet {lease.subnet}, outside its LAN {config.lan_of(declared)}"
        elif declared is not None:
            return f"lies in the container range {declared}"
        elif lease.kind == KIND_HOST and config.host_range_of(address) is None:
            return "lies outside every declared host range"
        elif lease.kind != KIND_HOST and not any(lan.holds(lease.subnet) for lan in self.lans()):
            return f"names the subnet {lease.subnet}, outside every LAN shrike serves"
        return ""

    def lans(self) -> set[Subnet]:
        return set(self.config.lans) | {self.config.lan_of(r) for r in self.config.ip_ranges}

    def derivable(self, lease: Lease) -> bool:
        """Whether ``lease`` (naming no range) may hold an address derived from its MAC: an
        IPv6 /64 of a LAN shrike serves, off the host ranges and the LANs' gateways."""
        address, config = int(lease.ip), self.config
        return (
            (lease.subnet.version, lease.subnet.prefixlen) == (6, 64)
            and any(lan.holds(lease.subnet) for lan in self.lans())
            and config.host_range_of(address) is None
            and not config.is_lan_gateway(address)
        )

    @staticmethod
    def state_of(lease: Lease) -> str:
        """Why ``lease``'s kind and state do not go together ("" when they do)."""
        if lease.state not in _STATES.get(lease.kind, ()):
            return "(no state a lease of that kind has)"
        if lease.state == STATE_RELEASED and lease.name:
            return f"and still names the reservation {lease.name}"
        if lease.state != STATE_RELEASED and lease.free_key:
            return f"and still names the free-list entry '{lease.free_key}'"
        if lease.state == STATE_RESERVED and not lease.name:
            return "and names no reservation"
        if lease.state == STATE_PARKED and lease.name:
            return f"for the reservation {lease.name}, which keeps it as reserved"
        if lease.kind in SHARED_KINDS and not lease.users:
            return "and no host's network uses it any more"
        return ""

    def lease_compare(self, ip: str) -> Compare:
        """The lease of ``ip`` is as read (absent: revision 0)."""
        return (_lease_key(ip), self.leases[ip][1] if ip in self.leases else 0)

    # -- free lists
    def free_list(self) -> None:
        listed = set()
        for entry in self.by_kind["free"]:
            idle = self.decoded(entry, "free-list entry", lambda _, e=entry: _free_entry(e))
            if idle is None:
                continue
            listed.add(entry.key)
            lease = self.leases.get(idle.ip, (None, 0))[0]
            if lease is None or lease.state != STATE_RELEASED or lease.free_key != entry.key:
                what = "no lease" if lease is None else f"its lease is {lease.state}"
                if lease is not None and lease.state == STATE_RELEASED:
                    what = f"its lease waits at '{lease.free_key}'"
                self.add(
                    FREE_DANGLING,
                    idle.ip,
                    f"'{entry.key}' offers {idle.ip}, but {what}: it could be handed out twice",
                    "remove the entry",
                    _fix([(entry.key, entry.revision), self.lease_compare(idle.ip)], [Delete(entry.key)]),
                )
        for ip, (lease, revision) in self.leases.items():
            if lease.state != STATE_RELEASED or lease.free_key in listed:
                continue
            where = f"'{lease.free_key}'" if lease.free_key else "no free-list entry"
            fixed = lease if lease.free_key else released(lease)
            change = _fix([(_lease_key(ip), revision)], [])
            if lease.free_key:
                change.compares.append((lease.free_key, 0))
                change.ops.append(Put(lease.free_key, {"ip": lease.ip, "mac": lease.mac}))
            else:
                change.write(fixed, previous=lease)
            self.add(
                FREE_MISSING,
                ip,
                f"{ip} is released but {where} is missing from its range's free list: it is never handed out again",
                "put it back on the free list",
                change,
            )

    # -- parked addresses
    def parked(self) -> None:
        listed = set()
        for entry in self.by_kind["parked"]:
            kept = self.decoded(entry, "parked entry", lambda _, e=entry: _parked(e))
            if kept is None:
                continue
            listed.add(entry.key)
            lease = self.leases.get(kept.ip, (None, 0))[0]
            if lease is None or lease.state != STATE_PARKED or _parked_key(lease) != entry.key:
                what = "no lease" if lease is None else f"its lease is {lease.state} ({lease.host or 'no host'})"
                self.add(
                    PARKED_DANGLING,
                    kept.ip,
                    f"'{entry.key}' keeps {kept.ip} for {kept.name or kept.container_id or 'a container'}, but {what}:"
                    " it could be handed out twice",
                    "remove the entry",
                    _fix([(entry.key, entry.revision), self.lease_compare(kept.ip)], [Delete(entry.key)]),
                )
        for ip, (lease, revision) in self.leases.items():
            if lease.state != STATE_PARKED or (key := _parked_key(lease)) in listed:
                continue
            value = {**_parked_value(lease), "at": _since_ns(lease)}
            self.add(
                PARKED_MISSING,
                ip,
                f"{ip} is parked for {lease.holder or 'a container'} on {lease.host}, but '{key}' is missing:"
                " its container does not get it back",
                "put the parked entry back",
                _fix([(_lease_key(ip), revision), (key, 0)], [Put(key, value)]),
            )

    # -- indexes
    def names(self) -> None:
        # A name holds one address of each family: each family's index entry is its own.
        carriers: dict[tuple[str, int], list[str]] = {}
        for ip, (lease, _) in self.leases.items():
            if lease.name:
                carriers.setdefault((lease.name, lease.ip.version), []).append(ip)
        indexed = {}
        for entry in self.by_kind["reservations"]:
            ip = self.decoded(entry, "reservation", lambda v: IP(v["ip"]))
            if ip is None:
                continue
            name, version = _indexed(entry.key, NAMES)
            indexed[(name, version)] = ip
            holders = carriers.get((name, version), [])
            if ip in holders:
                continue
            detail = f"the reservation {name} points at {ip}, whose lease does not carry it"
            if not holders:
                self.add(
                    NAME_DANGLING,
                    ip,
                    detail,
                    "remove the index entry",
                    _fix([(entry.key, entry.revision), self.lease_compare(ip)], [Delete(entry.key)]),
                )
            elif len(holders) == 1:
                self.add(
                    NAME_DANGLING,
                    ip,
                    f"{detail}; {holders[0]}'s does",
                    f"point it at {holders[0]}",
                    _fix(
                        [(entry.key, entry.revision), self.lease_compare(ip), self.lease_compare(holders[0])],
                        [Put(entry.key, {"ip": holders[0]})],
                    ),
                )
        for (name, version), ips in carriers.items():
            if len(ips) > 1:
                self.add(NAME_TWICE, ips[0], f"the leases of {', '.join(ips)} all carry the reservation {name}")
            elif (name, version) not in indexed:
                key = _name_key(name, version)
                self.add(
                    NAME_MISSING,
                    ips[0],
                    f"the lease of {ips[0]} carries the reservation {name}, but '{key}' is missing",
                    "put the index entry back",
                    _fix([self.lease_compare(ips[0]), (key, 0)], [Put(key, {"ip": ips[0]})]),
                )

    def macs(self) -> None:
        # An entry may be missing (it goes when the address it pointed at passes to another
        # MAC, even if the MAC holds another address by then): only a wrong one is a problem.
        for entry in self.by_kind["macs"]:
            ip = self.decoded(entry, "MAC index entry", lambda v: IP(v["ip"]))
            if ip is None:
                continue
            mac, version = _indexed(entry.key, MACS)
            lease = self.leases.get(ip, (None, 0))[0]
            if lease is None or _indexed_mac(lease) != mac or ip.version != version:
                what = "no lease" if lease is None else f"its lease names the MAC {lease.mac or 'none'}"
                if lease is not None and lease.mac == mac:
                    what = f"the entry is for IPv{version} addresses"
                self.add(
                    MAC_DANGLING,
                    ip,
                    f"the MAC {mac} points at {ip}, but {what}",
                    "remove the index entry",
                    _fix([(entry.key, entry.revision), self.lease_compare(ip)], [Delete(entry.key)]),
                )

    # -- cursors
    def cursor(self, entry: Entry) -> None:
        value = self.decoded(entry, "cursor", lambda v: int(v["next"]))
        if value is None:
            return
        range_id, _, narrowed = entry.key.removeprefix(CURSORS).partition("@")
        declared = next((r for r in self.config.ip_ranges if r.id == range_id), None)
        if declared is None:
            self.add(CURSOR_OUTSIDE, "", f"'{entry.key}' is the cursor of {range_id}, no declared container range")
            return
        start, end = declared.start, declared.end
        if narrowed:
            first, _, last = narrowed.partition("-")
            try:
                start, end = int(IP(first)), int(IP(last))
            except InvalidInput:
                start, end = 1, 0
        if not declared.start <= start <= end <= declared.end:
            self.add(CURSOR_OUTSIDE, "", f"'{entry.key}' is the cursor of a window outside the range {declared}")
        elif not 0 <= value <= end - start + 1:
            self.add(CURSOR_OUTSIDE, "", f"'{entry.key}' stands at {value}, outside its window of {end - start + 1}")


def _free_entry(entry: Entry) -> Idle:
    """A free-list entry, its key and value agreeing (``free/<range-id>/<ns>-<ip>``)."""
    range_id, _, tail = entry.key.removeprefix(FREE).rpartition("/")
    idle = _idle(range_id, entry)
    if tail.partition("-")[2] != idle.ip or not range_id:
        raise ValueError(f"its key names another address than its value ({idle.ip})")
    return idle


def _pool_record(key: str) -> Callable[[dict[str, Any]], None]:
    """Checks a pool record (``{"subnet", "sub_pool", "refs"}``) at ``key``."""

    def check(value: dict[str, Any]) -> None:
        subnet, sub_pool = Subnet.parse(value["subnet"]), value.get("sub_pool")
        name = f"{subnet}/{Subnet.parse(sub_pool)}" if sub_pool else str(subnet)
        name += EUI64_SUFFIX if value.get("eui64") else ""
        if key.removeprefix(POOLS) != name:
            raise ValueError(f"its key does not name its pool {name}")
        if not all(type(n) is int and n > 0 for n in dict(value.get("refs", {})).values()):
            raise ValueError("its counts are not all positive numbers")

    return check
