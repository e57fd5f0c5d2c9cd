"""etcd under faults (issue 10, section 4): a real etcd killed or stopped under
concurrent writes from one store's threads and through the plugin socket, and silent
endpoints. Every error tells the truth: unreachable, and for a write that may have
reached etcd, outcome unknown; never a refusal, never an internal error; and one
deadline bounds a call."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from shrike_cli.ipam import Ipam
from shrike_cli.plugin.client import PluginClient
from shrike_cli.stores import EtcdStore, Put, StoreError
from tests.fixtures.etcd import EtcdServer
from tests.fixtures.plugin import SHRIKE, ServerProcess, random_mac

#: Threads (or plugin clients) writing at once, as in the 8-client burst of the issue.
WRITERS = 8


@pytest.fixture(scope="module")
def own_etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    """An etcd of this module's own, which tests kill and stop (the session's is shared)."""
    server = EtcdServer(tmp_path_factory.mktemp("etcd"))
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def etcd(own_etcd: EtcdServer) -> Iterator[EtcdServer]:
    """``own_etcd``, running and not stopped again after the test, whatever it did."""
    own_etcd.start()
    yield own_etcd
    if own_etcd.process is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(own_etcd.process.pid, signal.SIGCONT)
    own_etcd.start()


@dataclass
class Outcomes:
    """What the writers saw: successes, StoreError messages, anything else raised."""

    ok: int = 0
    store_errors: list[str] = field(default_factory=list)
    other: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def write_until(store: EtcdStore, stop: threading.Event, outcomes: Outcomes) -> None:
    """Put new keys, one transaction each, until ``stop``; record every outcome."""
    name = uuid.uuid4().hex
    count = 0
    while not stop.is_set():
        count += 1
        try:
            store.txn([(f"w/{name}/{count}", 0)], [Put(f"w/{name}/{count}", {"n": count})])
        except StoreError as err:
            with outcomes.lock:
                outcomes.store_errors.append(str(err))
        except Exception as err:  # what the issue saw: ValueError from a closed channel
            with outcomes.lock:
                outcomes.other.append(f"{type(err).__name__}: {err}")
        else:
            with outcomes.lock:
                outcomes.ok += 1


def burst(store: EtcdStore, fault: threading.Thread) -> Outcomes:
    """WRITERS threads writing through ``store`` while ``fault`` runs, and a moment after."""
    outcomes, stop = Outcomes(), threading.Event()
    with ThreadPoolExecutor(WRITERS) as pool:
        writers = [pool.submit(write_until, store, stop, outcomes) for _ in range(WRITERS)]
        fault.start()
        fault.join()
        stop.set()
        for writer in writers:
            writer.result(timeout=60)
    return outcomes


def assert_truthful(messages: list[str], *, writes: bool) -> None:
    """Every failure says the store is unreachable, and nothing is called a refusal or a
    closed channel; with ``writes`` (every call was a write), one that may have reached
    etcd says that its outcome is unknown."""
    assert messages, "the fault produced no error at all"
    for message in messages:
        assert "unreachable" in message, message
        assert "refused the request" not in message and "Channel closed" not in message, message
        assert "\n" not in message
        if writes and "cannot connect: " not in message:  # then it was never sent
            assert "outcome unknown" in message, message


def assert_recovers(store: EtcdStore) -> None:
    """The same store handle writes again once etcd is back (within 20 s: a loaded
    machine may take a while to catch up), without being reopened."""
    deadline = time.monotonic() + 20
    while True:
        try:
            assert store.txn([], [Put("after", {})]).succeeded
            return
        except StoreError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_etcd_killed_under_concurrent_writes(etcd: EtcdServer) -> None:
    """One etcd killed (SIGKILL) while 8 threads of one EtcdStore write: no error but
    StoreError (today: ValueError "Cannot invoke RPC on closed channel"), each one true."""

    def kill_then_restart() -> None:
        time.sleep(0.3)
        etcd.stop()  # SIGKILL
        time.sleep(1.5)

    with EtcdStore(etcd.url, prefix=f"/faults-{uuid.uuid4().hex}/", timeout=2) as store:
        outcomes = burst(store, threading.Thread(target=kill_then_restart))
        assert outcomes.other == []
        assert_truthful(outcomes.store_errors, writes=True)
        assert outcomes.ok > 0
        etcd.start()
        assert_recovers(store)


def test_etcd_stopped_under_concurrent_writes(etcd: EtcdServer) -> None:
    """etcd stopped (SIGSTOP) past the store timeout under 8 writing threads, then
    continued: every error says "unreachable ... outcome unknown" (today most said
    "refused ... Channel closed!"), and the store works again without reopening."""
    assert etcd.process is not None
    pid = etcd.process.pid

    def stop_then_continue() -> None:
        time.sleep(0.3)
        os.kill(pid, signal.SIGSTOP)
        time.sleep(2.5)
        os.kill(pid, signal.SIGCONT)

    with EtcdStore(etcd.url, prefix=f"/faults-{uuid.uuid4().hex}/", timeout=1) as store:
        outcomes = burst(store, threading.Thread(target=stop_then_continue))
        assert outcomes.other == []
        assert_truthful(outcomes.store_errors, writes=True)
        assert_recovers(store)


def test_etcd_killed_under_plugin_burst(etcd: EtcdServer, socket_dir: Path, tmp_path: Path) -> None:
    """The same through the plugin socket: 8 clients request and release addresses while
    etcd is killed and restarted; no reply is an "internal error", every Err is true."""
    prefix = f"/faults-plugin-{uuid.uuid4().hex}/"
    with EtcdStore(etcd.url, prefix=prefix) as store:
        ipam = Ipam(store)
        ipam.declare_host_range("198.51.100.1/24", "198.51.100.9/24", "198.51.100.254")
        ipam.declare_ip_range("198.51.100.10/24", "198.51.100.249/24")
    server = ServerProcess(
        ["--cluster-store", etcd.url, "--store-prefix", prefix],
        socket_dir,
        "faults",
        tmp_path / "server.log",
        debug=False,
    )
    server.start()
    errors: list[str] = []
    stop = threading.Event()

    def client_loop() -> None:
        with PluginClient(server.path, timeout=30.0) as client:
            pool_id = client.request_pool("198.51.100.0/24")
            while not stop.is_set():
                options = {"com.docker.network.endpoint.macaddress": random_mac()}
                status, reply = client.call(
                    "IpamDriver.RequestAddress", {"PoolID": pool_id, "Address": "", "Options": options}
                )
                if status != 200:
                    errors.append(str(reply.get("Err")))
                    continue
                address = str(reply["Address"]).split("/")[0]
                status, reply = client.call("IpamDriver.ReleaseAddress", {"PoolID": pool_id, "Address": address})
                if status != 200:
                    errors.append(str(reply.get("Err")))

    try:
        with ThreadPoolExecutor(WRITERS) as pool:
            clients = [pool.submit(client_loop) for _ in range(WRITERS)]
            time.sleep(0.5)
            etcd.stop()
            time.sleep(1.5)
            etcd.start()
            time.sleep(0.5)
            stop.set()
            for done in clients:
                done.result(timeout=60)
        assert server.alive()
    finally:
        server.stop()
    assert not [err for err in errors if "internal error" in err], errors
    assert_truthful(errors, writes=False)
    assert "Traceback" not in server.log()


# ------------------------------------------------------------------ one deadline per call
@pytest.fixture
def silent_endpoints() -> Iterator[list[str]]:
    """Three etcd URLs on loopback whose sockets listen but never answer: the kernel
    completes the handshake, nothing reads."""
    sockets = []
    try:
        for _ in range(3):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sock.listen(16)
            sockets.append(sock)
        yield [f"http://127.0.0.1:{sock.getsockname()[1]}" for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def test_one_deadline_across_silent_endpoints(silent_endpoints: list[str]) -> None:
    """A read or a write to three silent endpoints ends after the store's timeout (today
    a read waits the timeout once per endpoint), naming the endpoints and the wait."""
    with EtcdStore(silent_endpoints, timeout=1.5) as store:
        started = time.monotonic()
        with pytest.raises(StoreError) as read:
            store.get("k")
        read_took = time.monotonic() - started
        started = time.monotonic()
        with pytest.raises(StoreError) as write:
            store.txn([], [Put("k", {})])
        write_took = time.monotonic() - started
    # Generous bounds: the point is one deadline, not three (4.5 s).
    assert read_took < 3 and write_took < 3, (read_took, write_took)
    message = str(read.value)
    assert re.match(rf"etcd at {re.escape(', '.join(silent_endpoints))} is unreachable after 1\.\d s: ", message)
    assert "no answer within 0." in message
    # A write may have reached a silent etcd: it cannot go on to the next one.
    assert "unreachable: no answer within 1.5 s (outcome unknown" in str(write.value)


def test_cli_store_timeout(silent_endpoints: list[str]) -> None:
    """``--store-timeout`` and SHRIKE_STORE_TIMEOUT set that deadline."""
    env = {**os.environ, "CLUSTER_STORE": ",".join(silent_endpoints), "SHRIKE_STORE_TIMEOUT": "0.6"}
    for extra, timeout in (([], 0.6), (["--store-timeout", "1.2"], 1.2)):
        run = subprocess.run([*SHRIKE, *extra, "leases"], capture_output=True, text=True, env=env, timeout=60)
        assert run.returncode == 1
        lines = run.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("shrike: error: etcd at "), run.stderr
        assert all(url in lines[0] for url in silent_endpoints)
        waited = re.search(r" is unreachable after (\d+\.\d) s: ", lines[0])
        assert waited is not None and timeout <= float(waited.group(1)) < timeout + 1, lines[0]
