"""The state as the layers above use it: reads, changes committed atomically, the whole
state as one document, the leases' changes, and the consistency check."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from .. import cas
from ..errors import Conflict
from ..model import IP, Config, Lease, Window, ip_to_int, now_iso
from ..stores.base import MAX_TXN_OPS, Delete, Entry, Op, Put, Store
from .change import Change, Guard, Outcome, PreconditionFailed
from .check import Finding, Survey, _Checker
from .layout import (
    CONFIG_KEY,
    EXPORT_FORMAT,
    EXPORT_VERSION,
    LEASES,
    NAMES,
    POOLS,
    RECORD_KINDS,
    _cursor_key,
    _free_prefix,
    _indexed,
    _kind_of,
    _lease_key,
    _mac_key,
    _name_key,
    _parked_prefix,
    _records_of,
    pool_key,
)
from .values import Cursor, Idle, Parked, StoredLease, _cursor, _decoded, _idle, _parked, _stored
from .watch import LeaseChange, LeaseWatch, _lease_change

T = TypeVar("T")
#: Leases :meth:`State.add_leases` writes per transaction (each: a compare, a read and up to
#: three puts: the lease, its MAC's and its name's index entries).
ADD_BATCH = 32


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
        """Every record that breaks a rule between records (see the package docstring), or
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
