"""Reading changes back (Store.changes and Store.watch), on both stores: what ``shrike
events`` stands on. And the embedded store's record of changes, which it writes only
while someone watches."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from shrike_cli.stores import Delete, EmbeddedStore, EtcdStore, Put, Store
from shrike_cli.stores.base import HistoryLost, KeyChange, StoreError, Watch
from shrike_cli.stores.embedded import TRIM_EVERY
from tests.fixtures.etcd import EtcdServer, compact
from tests.fixtures.stores import StoreFactory


def write(store: Store, *ops: Put | Delete) -> int:
    result = store.txn([], list(ops))
    assert result.succeeded
    return result.revision


def collect(watch: Watch, count: int, timeout: float = 10.0) -> list[KeyChange]:
    """The next ``count`` changes of ``watch`` (fewer if they do not come in time)."""
    found: list[KeyChange] = []
    deadline = time.monotonic() + timeout
    while len(found) < count and time.monotonic() < deadline:
        found += watch.next(0.5)
    return found


def summary(changes: list[KeyChange]) -> list[tuple[int, str, object, object]]:
    return [
        (c.revision, c.key, c.before.value if c.before else None, c.after.value if c.after else None) for c in changes
    ]


def test_a_watch_sees_puts_and_deletes_under_its_prefix_with_before_and_after(store: Store) -> None:
    write(store, Put("leases/a", {"v": 0}))
    with store.watch("leases/") as watch:
        first = write(store, Put("leases/a", {"v": 1}), Put("macs/m", {"ip": "a"}))
        second = write(store, Put("leases/b", {"v": 2}))
        third = write(store, Delete("leases/a"), Put("other/x", {}))
        changes = collect(watch, 3)
        assert watch.next(0.3) == []
        assert watch.position == third
    assert summary(changes) == [
        (first, "leases/a", {"v": 0}, {"v": 1}),
        (second, "leases/b", None, {"v": 2}),
        (third, "leases/a", {"v": 1}, None),
    ]
    # Entries carry their revisions, as get() would give them.
    assert changes[1].after.revision == second
    assert changes[2].before.revision == first


def test_changes_reads_a_window_of_revisions(store: Store) -> None:
    with store.watch("leases/"):  # the embedded store records while someone watches
        revisions = [write(store, Put(f"leases/{n}", {"n": n})) for n in range(5)]
        write(store, Put("ranges/r", {"next": 5}))
        until = store.revision()
        assert summary(store.changes("leases/", revisions[1], revisions[3])) == [
            (revisions[2], "leases/2", None, {"n": 2}),
            (revisions[3], "leases/3", None, {"n": 3}),
        ]
        assert [c.key for c in store.changes("leases/", revisions[0] - 1, until)] == [f"leases/{n}" for n in range(5)]
        assert store.changes("leases/", until, until) == []


def test_a_watch_goes_on_from_a_revision(store: Store) -> None:
    with store.watch("leases/") as first:
        write(store, Put("leases/a", {"v": 1}))
        seen = collect(first, 1)
        write(store, Put("leases/a", {"v": 2}))
        write(store, Put("leases/a", {"v": 3}))
        # Another watcher, from where the first stopped reading, gets what came next.
        with store.watch("leases/", first.position) as again:
            assert [c.after.value for c in collect(again, 2)] == [{"v": 2}, {"v": 3}]
    assert seen[0].after.value == {"v": 1}


def test_the_embedded_store_records_nothing_while_nobody_watches(tmp_path: Path) -> None:
    with EmbeddedStore(tmp_path / "shrike.db") as store:
        before = write(store, Put("leases/a", {"v": 1}))
        with pytest.raises(HistoryLost) as lost:
            store.watch("leases/", 0)
        assert lost.value.available_after == before
        assert "records changes only while they are watched" in str(lost.value)
        write(store, Put("leases/a", {"v": 2}), Delete("macs/x"))
        # A commit does what it did before there was a record: no trigger, no row.
        assert triggers(tmp_path) == set()
        with sqlite3.connect(tmp_path / "shrike.db") as db:
            assert db.execute("SELECT count(*) FROM changes").fetchone() == (0,)
        with store.watch("leases/"), store.watch("leases/"):
            assert triggers(tmp_path) == {"record_put", "record_delete"}
        assert triggers(tmp_path) == set()  # the last watcher to go took them


def triggers(tmp_path: Path) -> set[str]:
    with sqlite3.connect(tmp_path / "shrike.db") as db:
        return {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")}


def test_a_dead_watcher_stops_the_record_once_expired(tmp_path: Path) -> None:
    with EmbeddedStore(tmp_path / "shrike.db") as store:
        watch = store.watch("leases/")
        write(store, Put("leases/a", {"v": 1}))
        assert len(collect(watch, 1)) == 1
        # The process died without closing it: its registration just runs out.
        with sqlite3.connect(tmp_path / "shrike.db") as db:
            db.execute("UPDATE watchers SET expires = 0")
        for n in range(TRIM_EVERY):  # one of these commits drops expired watchers
            write(store, Put("ranges/r", {"next": n}))
        write(store, Put("leases/a", {"v": 2}))
        with sqlite3.connect(tmp_path / "shrike.db") as db:
            assert db.execute("SELECT count(*) FROM watchers").fetchone() == (0,)
            assert db.execute("SELECT count(*) FROM changes WHERE key = 'leases/a'").fetchone() == (1,)
        assert triggers(tmp_path) == set()
        # The next watcher starts the record afresh; the watch that outlived its
        # registration is told it missed changes.
        with store.watch("leases/"), pytest.raises(HistoryLost):
            watch.next(0.5)
        watch.close()


def test_etcd_tells_a_compacted_revision(store_factory: StoreFactory) -> None:
    store = store_factory.store
    if not isinstance(store, EtcdStore):
        pytest.skip("compaction is etcd's")
    first = write(store, Put("leases/a", {"v": 1}))
    latest = write(store, Put("leases/a", {"v": 2}))
    compact(store, latest)
    with pytest.raises(HistoryLost) as lost, store.watch("leases/", first - 1) as watch:
        watch.next(5)  # etcd makes the watch, then cancels it
    assert lost.value.available_after == latest - 1
    with pytest.raises(HistoryLost):
        store.changes("leases/", first - 1, latest)


def test_a_watch_on_a_stopped_etcd_fails_and_a_new_one_goes_on(etcd_server: EtcdServer, etcd_store: EtcdStore) -> None:
    with etcd_store.watch("leases/") as watch:
        start = watch.position
        try:
            etcd_server.stop()
            with pytest.raises(StoreError, match="is unreachable") as failure:
                collect(watch, 1, timeout=10)
            assert failure.value.reason == "unreachable"
        finally:
            etcd_server.start()
    revision = write(etcd_store, Put("leases/a", {"v": 1}))
    with etcd_store.watch("leases/", start) as again:
        assert [c.revision for c in collect(again, 1)] == [revision]
