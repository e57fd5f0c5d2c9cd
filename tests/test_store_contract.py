"""The store contract (shrike_cli/stores/base.py), checked against both stores."""

from __future__ import annotations

import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.synchronize import Barrier as BarrierType
from pathlib import Path

import pyetcd
import pytest

from shrike_cli.errors import InvalidInput
from shrike_cli.stores import (
    MAX_TXN_OPS,
    Delete,
    EmbeddedStore,
    Entry,
    EtcdStore,
    Put,
    Store,
    StoreError,
    default_state_dir,
    open_store,
)
from tests.fixtures.etcd import EtcdServer, free_port
from tests.fixtures.processes import run_together
from tests.fixtures.stores import StoreFactory, StoreSpec, open_store_spec


def put(store: Store, key: str, value: dict) -> int:
    result = store.txn([], [Put(key, value)])
    assert result.succeeded
    return result.revision


def test_get_put_delete(store: Store) -> None:
    assert store.get("leases/a") is None
    revision = put(store, "leases/a", {"owner": "c1"})
    entry = store.get("leases/a")
    assert entry is not None
    assert (entry.key, entry.value, entry.revision) == ("leases/a", {"owner": "c1"}, revision)
    assert store.txn([], [Delete("leases/a")]).succeeded
    assert store.get("leases/a") is None


def test_revisions_increase_and_are_shared_within_a_txn(store: Store) -> None:
    first = store.txn([], [Put("a", {"n": 1}), Put("b", {"n": 1})])
    assert first.succeeded
    assert store.get("a").revision == store.get("b").revision == first.revision
    second = put(store, "c", {"n": 2})
    third = put(store, "a", {"n": 3})
    assert first.revision < second < third
    assert [e.revision for e in store.get_prefix("")] == [third, first.revision, second]


def test_compare_on_absent_key_is_zero(store: Store) -> None:
    assert store.txn([("k", 0)], [Put("k", {"v": 1})]).succeeded
    assert not store.txn([("k", 0)], [Put("k", {"v": 2})]).succeeded
    assert store.get("k").value == {"v": 1}
    assert store.txn([("k", store.get("k").revision)], [Delete("k")]).succeeded
    assert store.txn([("k", 0)], [Put("k", {"v": 3})]).succeeded


def test_failed_compare_writes_nothing_and_returns_reads(store: Store) -> None:
    revision = put(store, "held", {"owner": "c1"})
    result = store.txn(
        [("held", revision), ("free", revision)],
        [Put("held", {"owner": "c2"}), Put("other", {"x": 1})],
        reads=["held", "free"],
    )
    assert not result.succeeded
    assert result.entries["held"].value == {"owner": "c1"}
    assert result.entries["held"].revision == revision
    assert result.entries["free"] is None
    assert store.get("other") is None
    assert store.get("held").revision == revision
    # A later successful txn still gets a fresh revision.
    assert put(store, "next", {}) > revision


def test_compare_with_stale_revision_fails(store: Store) -> None:
    old = put(store, "k", {"v": 1})
    put(store, "k", {"v": 2})
    result = store.txn([("k", old)], [Put("k", {"v": 3})], reads=["k"])
    assert not result.succeeded
    assert result.entries["k"].value == {"v": 2}


def test_deleting_absent_keys_is_fine(store: Store) -> None:
    revision = put(store, "k", {})
    result = store.txn([("ghost", 0)], [Delete("ghost"), Delete("ghost2")])
    # Nothing changed, so (as in etcd) the store revision did not move.
    assert (result.succeeded, result.revision) == (True, revision)
    assert [e.key for e in store.get_prefix("")] == ["k"]


def test_txn_limits(store: Store) -> None:
    with pytest.raises(ValueError):
        store.txn([], [Put("k", {}), Delete("k")])
    with pytest.raises(ValueError):
        store.txn([], [Put(f"k{i}", {}) for i in range(MAX_TXN_OPS + 1)])
    assert store.txn([], [Put(f"k{i}", {}) for i in range(MAX_TXN_OPS)]).succeeded
    assert len(store.get_prefix("k")) == MAX_TXN_OPS


def test_get_prefix_order_limit_and_bounds(store: Store) -> None:
    keys = ["a/b", "a/Z", "a/é", "a/z", "a/", "a0", "a", "a/\U0001f600", "a/a/1", "b/a", "A/a"]
    store.txn([], [Put(key, {"key": key}) for key in keys])
    inside = sorted((k for k in keys if k.startswith("a/")), key=lambda k: k.encode())
    assert [e.key for e in store.get_prefix("a/")] == inside
    assert [e.value["key"] for e in store.get_prefix("a/")] == inside
    assert [e.key for e in store.get_prefix("a/", limit=2)] == inside[:2]
    assert [e.key for e in store.get_prefix("a/", limit=100)] == inside
    assert [e.key for e in store.get_prefix("")] == sorted(keys, key=lambda k: k.encode())
    assert store.get_prefix("c") == []
    with pytest.raises(ValueError):
        store.get_prefix("a/", limit=0)


def test_get_prefix_ending_in_extreme_code_points(store: Store) -> None:
    # The embedded store's upper bound must step over U+10FFFF and the surrogate gap.
    keys = ["p\U0010ffff", "p\U0010ffff/x", "q", "r\ud7ff", "r\ud7ff/x", "r\ue000"]
    store.txn([], [Put(key, {}) for key in keys])
    assert [e.key for e in store.get_prefix("p\U0010ffff")] == keys[:2]
    assert [e.key for e in store.get_prefix("r\ud7ff")] == keys[3:5]


def test_get_prefix_limit_one_on_a_large_range(store: Store) -> None:
    for start in range(0, 2048, MAX_TXN_OPS):
        store.txn([], [Put(f"free/x/{i:05d}", {}) for i in range(start, start + MAX_TXN_OPS)])
    put(store, "free/y/00000", {})
    assert [e.key for e in store.get_prefix("free/x/", limit=1)] == ["free/x/00000"]
    assert len(store.get_prefix("free/x/")) == 2048


def test_json_round_trip(store: Store) -> None:
    value = {
        "name": "Zoë's 容器 ☃",
        "nested": {"list": [1, 2.5, None, True, {"deep": ["x"]}], "empty": {}},
        "big": 2**53 + 1,
    }
    put(store, "leases/ünïcode", value)
    assert store.get("leases/ünïcode").value == value
    assert store.get_prefix("leases/")[0].value == value


def test_second_handle_sees_writes(store_factory: StoreFactory) -> None:
    revision = put(store_factory.store, "k", {"v": 1})
    other = store_factory()
    assert other.get("k").revision == revision
    assert other.txn([("k", revision)], [Put("k", {"v": 2})]).succeeded
    assert store_factory.store.get("k").value == {"v": 2}


def _increment(spec: StoreSpec, times: int, barrier: BarrierType) -> None:
    """Child process: open the store and increment the counter with the others."""
    with open_store_spec(spec) as store:
        # Start together: spawning takes longer than 200 embedded increments.
        barrier.wait(timeout=30)
        _cas_increment(store, times)


def _cas_increment(store: Store, times: int) -> None:
    """Add 1 to the counter ``times`` times by compare-and-swap, retrying on conflicts."""
    entry = store.get("counter")
    for _ in range(times):
        while True:
            revision = entry.revision if entry else 0
            count = entry.value["n"] if entry else 0
            result = store.txn([("counter", revision)], [Put("counter", {"n": count + 1})], reads=["counter"])
            if result.succeeded:
                entry = Entry("counter", {"n": count + 1}, result.revision)
                break
            # The failed txn returned the current counter: retry without a get.
            entry = result.entries["counter"]


def test_concurrent_cas_from_threads(store: Store) -> None:
    threads, times = 4, 50
    with ThreadPoolExecutor(threads) as pool:
        for done in [pool.submit(_cas_increment, store, times) for _ in range(threads)]:
            done.result(timeout=60)
    assert store.get("counter").value == {"n": threads * times}


def test_concurrent_cas_from_processes(store_factory: StoreFactory) -> None:
    processes, times = 4, 200
    run_together(_increment, (store_factory.spec, times), processes)
    assert store_factory.store.get("counter").value == {"n": processes * times}


def test_unreachable_etcd_fails_fast_with_one_line() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with EtcdStore(url, timeout=2) as store:
        with pytest.raises(StoreError) as failure:
            store.get("k")
        with pytest.raises(StoreError):
            store.txn([], [Put("k", {})])
    assert time.monotonic() - started < 5
    message = str(failure.value)
    assert message.startswith(f"etcd at {url} is unreachable: ")
    assert "\n" not in message


def test_etcd_fails_over_to_a_live_endpoint(etcd_server: EtcdServer) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    prefix = f"/shrike-test-{uuid.uuid4().hex}/"
    with EtcdStore(f"{dead},{etcd_server.url}", prefix=prefix) as store:
        assert store.location == f"{dead}, {etcd_server.url}"
        revision = put(store, "k", {"v": 1})
        assert store.get("k").revision == revision
        assert store.get_prefix("") == [store.get("k")]


def test_etcd_keeps_readable_json_under_its_prefix(etcd_server: EtcdServer, etcd_store: EtcdStore) -> None:
    put(etcd_store, "leases/10.0.0.5", {"owner": "c1", "pool": "é"})
    port = int(etcd_server.url.rsplit(":", 1)[1])
    with pyetcd.Etcd3Client("127.0.0.1", port, timeout=5) as raw:
        value, _ = raw.get(etcd_store.prefix + "leases/10.0.0.5")
    assert value == '{"owner":"c1","pool":"é"}'.encode()


def test_etcd_recovers_after_restart(etcd_server: EtcdServer, etcd_store: EtcdStore) -> None:
    revision = put(etcd_store, "k", {"v": 1})
    try:
        etcd_server.stop()
        started = time.monotonic()
        with pytest.raises(StoreError, match="is unreachable"):
            etcd_store.get("k")
        with pytest.raises(StoreError, match="is unreachable"):
            etcd_store.txn([], [Put("k", {"v": 2})])
        assert time.monotonic() - started < 5
    finally:
        etcd_server.start()
    assert etcd_store.get("k").revision == revision
    assert put(etcd_store, "k", {"v": 2}) > revision


@pytest.mark.parametrize(
    "url",
    [
        "etcd://h:2379",
        "http://h",
        "http://:2379",
        "h:2379",
        "http://h:0",
        "http://h:99999",
        "http://h:2379/x",
        "http://u:p@h:2379",
    ],
)
def test_bad_cluster_store_urls(url: str, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="invalid etcd endpoint"):
        open_store(f"http://127.0.0.1:2379,{url}", tmp_path)


def test_open_store_picks_the_store(tmp_path: Path) -> None:
    with open_store(None, tmp_path) as store:
        assert isinstance(store, EmbeddedStore)
        assert store.location == str(tmp_path / "shrike.db")
    with open_store("http://127.0.0.1:2379, https://[::1]:2379", tmp_path) as store:
        assert isinstance(store, EtcdStore)
        assert store.endpoints == ["http://127.0.0.1:2379", "https://[::1]:2379"]
    with open_store("", tmp_path, prefix="/lan2/", user=None) as store:
        assert isinstance(store, EmbeddedStore)
    with open_store("http://127.0.0.1:2379", tmp_path, prefix=None, user=None) as store:
        assert isinstance(store, EtcdStore) and store.prefix == "/shrike/"


def test_default_state_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 0)
    assert default_state_dir() == Path("/var/lib/shrike")
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert default_state_dir() == tmp_path / "shrike"
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_state_dir() == tmp_path / ".local" / "state" / "shrike"


def test_unusable_embedded_path(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    with pytest.raises(StoreError) as failure:
        EmbeddedStore(not_a_dir / "state" / "shrike.db")
    assert str(not_a_dir / "state" / "shrike.db") in str(failure.value)
    assert "\n" not in str(failure.value)

    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match=f"{re.escape(str(garbage))}.*not a database"):
        EmbeddedStore(garbage)


def test_embedded_creates_a_private_directory(tmp_path: Path) -> None:
    path = tmp_path / "new" / "shrike.db"
    with EmbeddedStore(path) as store:
        put(store, "k", {})
    assert path.is_file()
    assert path.parent.stat().st_mode & 0o777 == 0o700
