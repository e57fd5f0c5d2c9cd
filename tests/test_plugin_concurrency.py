"""Two plugin servers ("two hosts") on one etcd, under concurrent load, a kill -9 and an
etcd outage. The servers are ``shrike server`` subprocesses sharing one key prefix."""

from __future__ import annotations

import http.client
import signal
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from shrike_cli.ipam import Ipam
from shrike_cli.plugin.client import PluginClient
from shrike_cli.stores import EtcdStore
from tests.fixtures.etcd import EtcdServer
from tests.fixtures.plugin import ServerProcess, random_mac

SUBNET = "198.51.100.0/24"
#: 240 container addresses, .10 to .249.
CONTAINER_RANGE = ("198.51.100.10/24", "198.51.100.249/24")


def request_address(client: PluginClient, pool_id: str, mac: str | None = None) -> tuple[int, dict[str, object]]:
    options = {"com.docker.network.endpoint.macaddress": mac or random_mac()}
    return client.call("IpamDriver.RequestAddress", {"PoolID": pool_id, "Address": "", "Options": options})


@dataclass
class Lan:
    """One etcd prefix with a declared LAN, and the plugin servers sharing it."""

    store: EtcdStore
    ipam: Ipam
    servers: dict[str, ServerProcess] = field(default_factory=dict)

    def held_containers(self) -> list[str]:
        return [lease.ip for lease in self.ipam.leases() if lease.kind == "container" and lease.state == "held"]


@pytest.fixture
def lan(etcd_server: EtcdServer, socket_dir: Path, tmp_path: Path) -> Iterator[Lan]:
    prefix = f"/shrike-plugin-{uuid.uuid4().hex}/"
    store = EtcdStore([etcd_server.url], prefix=prefix)
    ipam = Ipam(store)
    ipam.declare_host_range("198.51.100.1/24", "198.51.100.9/24", "198.51.100.254")
    ipam.declare_ip_range(*CONTAINER_RANGE)
    store_args = ["--cluster-store", etcd_server.url, "--store-prefix", prefix]
    result = Lan(store, ipam)
    try:
        for name in ("a", "b"):
            result.servers[name] = ServerProcess(store_args, socket_dir, name, tmp_path / f"{name}.log")
            result.servers[name].start()
        yield result
    finally:
        for server in result.servers.values():
            server.stop()
        store.close()


def pool_of(server: ServerProcess) -> str:
    with PluginClient(server.path) as client:
        return client.request_pool(SUBNET)


def run_workers(jobs: list[Callable[[], None]]) -> None:
    """Run ``jobs`` on threads, all at once; re-raise the first failure."""
    with ThreadPoolExecutor(len(jobs)) as pool:
        for future in [pool.submit(job) for job in jobs]:
            future.result()


def test_two_servers_never_hand_out_an_address_twice(lan: Lan) -> None:
    """16 clients over two sockets take and give back addresses (fresh ones, then reused
    ones): every request succeeds and no address is ever held by two clients at once."""
    pool_id = pool_of(lan.servers["a"])
    assert pool_of(lan.servers["b"]) == pool_id
    rounds, hold = 6, 10
    intervals: dict[str, list[tuple[float, float]]] = defaultdict(list)
    failures: list[str] = []
    lock = threading.Lock()

    def churn(server: ServerProcess) -> None:
        with PluginClient(server.path) as client:
            for _ in range(rounds):
                taken = []
                for _ in range(hold):
                    status, reply = request_address(client, pool_id)
                    if status != 200:
                        failures.append(f"{server.name}: {reply}")
                        continue
                    taken.append((str(reply["Address"]).split("/")[0], time.monotonic()))
                for address, acknowledged in taken:
                    releasing = time.monotonic()
                    client.release_address(pool_id, address)
                    with lock:
                        intervals[address].append((acknowledged, releasing))

    run_workers([lambda s=server: churn(s) for server in lan.servers.values() for _ in range(8)])

    assert failures == []
    assert sum(map(len, intervals.values())) == 2 * 8 * rounds * hold
    for address, held in intervals.items():
        held.sort()
        for (_, released), (next_acknowledged, _) in zip(held, held[1:], strict=False):
            assert released < next_acknowledged, f"{address} was held by two clients at once"
    assert lan.held_containers() == []
    # More allocations than addresses: the released ones were handed out again.
    assert len(intervals) == 240


def test_concurrent_requests_step_over_addresses_claimed_ahead(lan: Lan) -> None:
    """A burst served in shared transactions meets addresses taken with --ip ahead of the
    cursor, first in line and in the middle of a batch: they are skipped, not refused."""
    pool_id = pool_of(lan.servers["a"])
    claimed = {"198.51.100.10", "198.51.100.11", "198.51.100.17", "198.51.100.40", "198.51.100.41"}
    with PluginClient(lan.servers["b"].path) as client:
        for address in claimed:
            client.request_address(pool_id, address, mac=random_mac())
    given: list[str] = []

    def burst(server: ServerProcess) -> None:
        with PluginClient(server.path) as client:
            for _ in range(10):
                status, reply = request_address(client, pool_id)
                assert status == 200, reply
                given.append(str(reply["Address"]).split("/")[0])

    run_workers([lambda s=server: burst(s) for server in lan.servers.values() for _ in range(8)])

    assert len(given) == len(set(given)) == 160
    assert not claimed & set(given)
    assert set(lan.held_containers()) == claimed | set(given)


def test_concurrent_requests_with_one_mac_all_get_addresses(lan: Lan) -> None:
    """Requests served in one transaction may not share a MAC (one index entry each)."""
    pool_id = pool_of(lan.servers["a"])
    given: list[str] = []

    def burst(server: ServerProcess) -> None:
        with PluginClient(server.path) as client:
            for _ in range(5):
                status, reply = request_address(client, pool_id, "02:42:c6:33:64:01")
                assert status == 200, reply
                given.append(str(reply["Address"]).split("/")[0])

    run_workers([lambda s=server: burst(s) for server in lan.servers.values() for _ in range(8)])

    assert len(given) == len(set(given)) == 80


def test_kill_9_mid_burst_loses_nothing_and_duplicates_nothing(lan: Lan) -> None:
    """Clients on both servers allocate; server a is killed with SIGKILL mid-burst and
    restarted on its stale socket. Every acknowledged address is held, none twice, and
    at most one request per client of a (the one in flight) leaves an unacknowledged lease."""
    pool_id = pool_of(lan.servers["a"])
    per_client, clients_per_server = 25, 4
    acknowledged: list[str] = []
    failed_on: Counter[str] = Counter()
    lock = threading.Lock()
    killed = threading.Event()

    def burst(server: ServerProcess) -> None:
        client = PluginClient(server.path, timeout=30.0)
        done = 0
        deadline = time.monotonic() + 60
        while done < per_client and time.monotonic() < deadline:
            try:
                status, reply = request_address(client, pool_id)
            except (OSError, http.client.HTTPException):
                # Server gone (refused, reset, no socket): try again until it is back.
                with lock:
                    failed_on[server.name] += 1
                time.sleep(0.02)
                continue
            assert status == 200, reply
            with lock:
                acknowledged.append(str(reply["Address"]).split("/")[0])
            done += 1
            if server.name == "a" and done == per_client // 2:
                killed.wait(30)  # keep some of a's work for after the restart
        client.close()
        assert done == per_client

    with ThreadPoolExecutor(2 * clients_per_server) as pool:
        futures = [pool.submit(burst, s) for s in lan.servers.values() for _ in range(clients_per_server)]
        while len(acknowledged) < per_client:
            time.sleep(0.005)
        assert lan.servers["a"].signal(signal.SIGKILL) == -signal.SIGKILL
        assert lan.servers["a"].path.exists(), "kill -9 leaves the socket behind"
        killed.set()
        time.sleep(0.2)
        lan.servers["a"].start()
        for future in futures:
            future.result()

    assert "replacing the stale socket" in lan.servers["a"].log()
    assert failed_on["b"] == 0, "the other server's clients must not notice"
    assert len(acknowledged) == len(set(acknowledged)) == 2 * clients_per_server * per_client
    held = set(lan.held_containers())
    assert set(acknowledged) <= held, "an acknowledged address was lost"
    assert len(held - set(acknowledged)) <= clients_per_server


def test_etcd_outage_fails_fast_and_recovers_without_restart(lan: Lan, etcd_server: EtcdServer) -> None:
    server = lan.servers["a"]
    pool_id = pool_of(server)
    with PluginClient(server.path, timeout=30.0) as client:
        status, reply = request_address(client, pool_id)
        assert status == 200
        held = str(reply["Address"]).split("/")[0]
        etcd_server.stop()
        try:
            calls = [
                lambda: request_address(client, pool_id),
                lambda: client.call("IpamDriver.ReleaseAddress", {"PoolID": pool_id, "Address": held}),
                lambda: client.call("IpamDriver.RequestPool", {"Pool": SUBNET, "SubPool": "", "V6": False}),
            ]
            for call in calls * 2:
                started = time.monotonic()
                status, reply = call()
                assert status == 500
                assert etcd_server.url in str(reply["Err"]), "the Err must name the etcd endpoint"
                assert time.monotonic() - started < 3
            assert server.alive()
        finally:
            etcd_server.start()
        deadline = time.monotonic() + 20
        while (status := request_address(client, pool_id)[0]) != 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert status == 200, "the server did not recover when etcd came back"
        client.release_address(pool_id, held)
    assert server.alive()
    assert "Traceback" not in server.log()
