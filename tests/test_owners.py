"""Who holds an address across a container's life, with a real dockerd (20.10) and
``shrike server``: reservations that survive stops and a full range, MAC stickiness over
the plugin socket, and leases naming their containers (the owner tracker)."""

from __future__ import annotations

import contextlib
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shrike_cli.ipam import Ipam
from shrike_cli.owners import OwnerTracker
from shrike_cli.plugin.client import PluginClient
from tests.fixtures.dockerd import DockerDaemon, Tracker
from tests.fixtures.plugin import SMALL_ADDRESSES, SMALL_SUBNET, SmallLan, docker_connect, run, wait_until
from tests.fixtures.stores import LAN

MAC_A = "02:00:5e:00:53:0a"
MAC_B = "02:00:5e:00:53:0b"
#: Quick retries: these tests take dockerd away on purpose.
BACKOFF = (0.1, 0.5)


# ------------------------------------------------------------ the Ipam, no docker
def test_set_owner_writes_only_on_the_lease_as_read(lan_ipam: Ipam) -> None:
    ip = lan_ipam.request_address(LAN, mac=MAC_A).ip
    [(lease, revision)] = lan_ipam.lease_entries()
    owner = {"container_id": "c0ffee", "name": "web1", "network": "lan"}

    assert lan_ipam.set_owner(lease, revision, owner) == lan_ipam.lease(ip)
    assert lan_ipam.lease(ip).owner == owner
    # The address is released and taken again, by the same MAC, between the tracker's
    # read and its write: the stale write is refused, the new lease keeps its owner.
    lan_ipam.release_address(ip)
    assert lan_ipam.request_address(LAN, mac=MAC_A, owner={"name": "db"}).ip == ip
    assert lan_ipam.set_owner(lease, revision, owner) is None
    assert lan_ipam.lease(ip).owner == {"name": "db"}


# --------------------------------------------------------------- with dockerd
def test_a_reserved_address_survives_stops_restarts_and_a_full_range(
    small_lan: SmallLan, dockerd: DockerDaemon, docker_cleanup: Tracker
) -> None:
    ip = small_lan.shrike("reserve", "web1", "--subnet", SMALL_SUBNET).stdout.strip()
    assert ip in SMALL_ADDRESSES
    web1, error = run(dockerd, docker_cleanup, small_lan.network, "--ip", ip)
    assert error == ""
    assert small_lan.address_of(web1) == ip

    dockerd.docker_cli("stop", "-t", "0", web1)
    assert (small_lan.lease(ip).state, small_lan.lease(ip).name) == ("reserved", "web1")
    # Dynamic containers fill the range around the stopped one's address.
    dynamic, error = [], ""
    for _ in SMALL_ADDRESSES:
        container, error = run(dockerd, docker_cleanup, small_lan.network)
        if error:
            break
        dynamic.append(small_lan.address_of(container))
    assert "no free address left" in error
    assert sorted(dynamic) == sorted(set(SMALL_ADDRESSES) - {ip})

    dockerd.docker_cli("start", web1)
    assert small_lan.address_of(web1) == ip
    dockerd.docker_cli("restart", "-t", "0", web1)
    assert small_lan.address_of(web1) == ip
    assert (small_lan.lease(ip).state, small_lan.lease(ip).name) == ("held", "web1")


def test_a_mac_gets_its_address_back_over_the_plugin_socket(small_lan: SmallLan) -> None:
    with PluginClient(small_lan.plugin.server.path) as client:
        pool = client.request_pool(SMALL_SUBNET)
        first = client.request_address(pool, mac=MAC_A)
        client.release_address(pool, first.partition("/")[0])
        # Another MAC gets a never-used address, not the one just released...
        assert client.request_address(pool, mac=MAC_B) != first
        # ...and the first MAC its old one, where the reuse rule alone gives the next fresh one.
        assert client.request_address(pool, mac=MAC_A) == first


def owners(small_lan: SmallLan) -> dict[str, str]:
    """Container address -> the name of its container, as the leases record them."""
    return {
        lease.ip: lease.owner.get("name", "")
        for lease in small_lan.plugin.ipam.leases()
        if lease.kind == "container" and lease.state == "held"
    }


def test_leases_name_the_containers_that_hold_them(
    small_lan: SmallLan, dockerd: DockerDaemon, docker_cleanup: Tracker
) -> None:
    reserved = small_lan.shrike("reserve", "web1", "--subnet", SMALL_SUBNET).stdout.strip()
    web, _ = run(dockerd, docker_cleanup, small_lan.network, "--ip", reserved)
    with OwnerTracker(small_lan.plugin.ipam, connect=docker_connect(dockerd.url), backoff=BACKOFF):
        # Running before the tracker started: found by its first sweep.
        wait_until(lambda: owners(small_lan) == {reserved: web}, what="the first sweep")
        db, _ = run(dockerd, docker_cleanup, small_lan.network)
        db_ip = small_lan.address_of(db)
        wait_until(lambda: owners(small_lan) == {reserved: web, db_ip: db}, what="a started container named")
        renamed = docker_cleanup.track_container(f"{db}-renamed")
        dockerd.docker_cli("rename", db, renamed)
        wait_until(lambda: owners(small_lan)[db_ip] == renamed, what="a renamed container named")
        dockerd.docker_cli("restart", "-t", "0", web)
        wait_until(lambda: owners(small_lan).get(reserved) == web, what="a restarted container named")

    [record] = [lease for lease in small_lan.shrike_json("leases") if lease["ip"] == db_ip]
    container_id = dockerd.client.api.inspect_container(renamed)["Id"]
    assert record["owner"] == {"container_id": container_id, "name": renamed, "network": small_lan.network.name}
    table = small_lan.shrike("leases", "--kind", "container").stdout
    assert f"{web} (web1)" in table and renamed in table
    # A stopped container's address shows no owner (the release clears it).
    dockerd.docker_cli("stop", "-t", "0", web)
    assert small_lan.lease(reserved).owner == {}


class UnixProxy:
    """Forwards connections on ``path`` to ``target``; :meth:`stop` closes the listener and
    every connection, as a dockerd restart does to its clients."""

    def __init__(self, path: Path, target: str) -> None:
        self.path = path
        self.target = target
        self._listener: socket.socket | None = None
        self._connections: list[socket.socket] = []

    def start(self) -> None:
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(self.path))
        self._listener.listen()
        threading.Thread(target=self._accept, args=(self._listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                downstream, _ = listener.accept()
            except OSError:
                return  # stopped
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(self.target)
            self._connections += [downstream, upstream]
            for source, sink in ((downstream, upstream), (upstream, downstream)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def stop(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept()
            self._listener.close()
            self._listener = None
        self.path.unlink(missing_ok=True)
        for connection in self._connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
            connection.close()
        self._connections = []


@pytest.fixture
def proxy(dockerd: DockerDaemon) -> Iterator[UnixProxy]:
    # Short: a unix socket path must fit in 108 bytes, pytest's tmp_path may not.
    directory = Path(tempfile.mkdtemp(prefix="shk-proxy-", dir="/tmp"))
    running = UnixProxy(directory / "docker.sock", dockerd.socket)
    running.start()
    yield running
    running.stop()
    shutil.rmtree(directory, ignore_errors=True)


def test_the_tracker_follows_dockerd_through_its_restarts(
    small_lan: SmallLan, dockerd: DockerDaemon, docker_cleanup: Tracker, proxy: UnixProxy
) -> None:
    connect = docker_connect(f"unix://{proxy.path}")
    with OwnerTracker(small_lan.plugin.ipam, connect=connect, backoff=BACKOFF):
        first, _ = run(dockerd, docker_cleanup, small_lan.network)
        wait_until(lambda: first in owners(small_lan).values(), what="a container named")
        # dockerd goes away (the tracker retries, failing), a container starts meanwhile,
        # and dockerd comes back: the sweep after reconnecting names it.
        proxy.stop()
        second, _ = run(dockerd, docker_cleanup, small_lan.network)
        time.sleep(1.0)  # a few failed reconnections
        assert second not in owners(small_lan).values()
        proxy.start()
        wait_until(lambda: second in owners(small_lan).values(), what="a container named after the reconnection")


def test_a_call_from_dockerd_ends_the_trackers_backoff(
    small_lan: SmallLan, dockerd: DockerDaemon, docker_cleanup: Tracker, proxy: UnixProxy
) -> None:
    """dockerd calling the plugin means it is up: a tracker waiting to reconnect (here for
    30 s) connects at once, so a container that starts and dies right after a dockerd
    restart is recorded, and keeps its address at its restart (today: up to a minute)."""
    connect = docker_connect(f"unix://{proxy.path}")
    with OwnerTracker(small_lan.plugin.ipam, connect=connect, backoff=(30.0, 30.0)) as tracker:
        first, _ = run(dockerd, docker_cleanup, small_lan.network)
        wait_until(lambda: first in owners(small_lan).values(), what="a container named")
        proxy.stop()  # the event stream is lost: the tracker waits 30 s before connecting again
        proxy.start()
        second, _ = run(dockerd, docker_cleanup, small_lan.network)
        time.sleep(1.0)
        assert second not in owners(small_lan).values()
        tracker.dockerd_called()
        wait_until(lambda: second in owners(small_lan).values(), timeout=10, what="a container named at once")
