"""``shrike events``: what each change of a lease means, read from the store on both
stores, and a follower that sees another host's server through that server's restarts
and etcd's."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shrike_cli import events
from shrike_cli.ipam import Ipam
from shrike_cli.plugin.client import PluginClient
from shrike_cli.stores import EmbeddedStore, EtcdStore
from tests.fixtures.etcd import EtcdServer, compact
from tests.fixtures.plugin import SHRIKE, ServerProcess, random_mac, wait_until

LAN = "198.51.100.0/24"


def test_each_change_of_a_lease_is_named(lan_ipam: Ipam) -> None:
    state = lan_ipam.state
    seen: list[events.Event] = []
    stopping = threading.Event()
    with state.watch_leases():  # the embedded store records the changes from here on
        follower = threading.Thread(
            target=events.follow, args=(state, seen.append, stopping), kwargs={"after": state.revision(), "poll": 0.2}
        )
        follower.start()
        try:
            mac = random_mac()
            lan_ipam.reserve("web1")  # .100
            lease = lan_ipam.request_address(LAN, mac=mac)  # .101
            lan_ipam.release_address(lease.ip)
            lan_ipam.request_address(LAN, mac=mac)  # .101 again, for the same MAC
            lan_ipam.set_owner(lan_ipam.lease(lease.ip), lan_ipam.state.lease(lease.ip).revision, {"name": "c1"})
            lan_ipam.claim_host("198.51.100.7")
            lan_ipam.release_host("198.51.100.7")
            lan_ipam.release_name("web1")
            wait_until(lambda: len(seen) >= 8, what="eight events")
        finally:
            stopping.set()
            follower.join(10)
    assert [(e.event, e.lease.ip, e.lease.state) for e in seen] == [
        ("reserved", "198.51.100.100", "reserved"),
        ("allocated", "198.51.100.101", "held"),
        ("released", "198.51.100.101", "released"),
        ("allocated", "198.51.100.101", "held"),
        ("updated", "198.51.100.101", "held"),
        ("recorded", "198.51.100.7", "held"),
        ("removed", "198.51.100.7", "held"),
        ("released", "198.51.100.100", "released"),
    ]
    assert [e.revision for e in seen] == sorted(e.revision for e in seen)
    sticky = seen[3].to_json()
    assert (sticky["host"], sticky["mac"], sticky["previous_state"]) == ("hostA", mac, "released")
    assert seen[4].to_json()["holder"] == "c1"


def test_recent_events_and_going_on_from_a_revision(lan_ipam: Ipam) -> None:
    state = lan_ipam.state
    with state.watch_leases():  # the embedded store records while someone watches
        start = state.revision()
        first = lan_ipam.request_address(LAN)
        middle = state.revision()
        lan_ipam.release_address(first.ip)
        found, _ = events.recent(state)
        assert [(e.event, e.lease.ip) for e in found][-2:] == [("allocated", first.ip), ("released", first.ip)]
        later, _ = events.recent(state, after=middle)
        assert [e.event for e in later] == ["released"]
        again, _ = events.recent(state, after=start)
        assert [(e.revision, e.event, e.time) for e in again] == [(e.revision, e.event, e.time) for e in found[-2:]]


# ------------------------------------------------------------- from the CLI
class Follower:
    """``shrike events --follow --output json`` as a subprocess; its lines as they come."""

    def __init__(self, store_args: list[str], log: Path) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.log = log
        with open(log, "wb") as stderr:
            self.process = subprocess.Popen(
                [*SHRIKE, "--debug", *store_args, "events", "--follow", "--output", "json"],
                stdout=subprocess.PIPE,
                stderr=stderr,
                stdin=subprocess.DEVNULL,
                text=True,
            )
        threading.Thread(target=self._read, daemon=True).start()
        wait_until(lambda: "watching the leases" in log.read_text(), what="the follower watching")

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)

    def next_event(self, timeout: float = 20.0) -> dict[str, Any]:
        try:
            return json.loads(self.lines.get(timeout=timeout))
        except queue.Empty:
            raise AssertionError(f"no event within {timeout:g} s; its stderr:\n{self.log.read_text()}") from None

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
            raise


@pytest.fixture
def etcd_args(etcd_server: EtcdServer) -> list[str]:
    return ["--cluster-store", etcd_server.url, "--store-prefix", f"/shrike-events-{uuid.uuid4().hex}/"]


@pytest.fixture
def follower(etcd_args: list[str], tmp_path: Path) -> Iterator[Follower]:
    follower = Follower(etcd_args, tmp_path / "events.log")
    try:
        yield follower
    finally:
        if follower.process.poll() is None:
            follower.stop()


def other_host_server(etcd_args: list[str], socket_dir: Path, tmp_path: Path) -> ServerProcess:
    """``shrike server`` on a host named hostB (a UTS namespace of its own)."""
    return ServerProcess(
        etcd_args,
        socket_dir,
        "hostb",
        tmp_path / "hostB.log",
        server_args=["--no-follow-docker"],
        prefix=["unshare", "--uts", "sh", "-c", 'hostname hostB && exec "$@"', "sh"],
    )


def test_follow_sees_another_hosts_server_through_its_restart_and_etcds(
    etcd_server: EtcdServer, etcd_args: list[str], follower: Follower, socket_dir: Path, tmp_path: Path
) -> None:
    prefix = etcd_args[-1]
    with EtcdStore([etcd_server.url], prefix=prefix) as store:
        Ipam(store, host="hostA").declare_ip_range("198.51.100.100/24", "198.51.100.199/24")
    server = other_host_server(etcd_args, socket_dir, tmp_path)
    try:
        server.start()
        with PluginClient(server.path) as client:
            pool = client.request_pool(LAN)
            first = client.request_address(pool, mac=random_mac())
        event = follower.next_event()
        assert (event["event"], f"{event['ip']}/24", event["host"]) == ("allocated", first, "hostB")

        server.stop()
        server.start()
        with PluginClient(server.path) as client:
            client.release_address(pool, first.split("/")[0])
        assert (follower.next_event()["event"], follower.lines.empty()) == ("released", True)

        etcd_server.stop()
        try:
            wait_until(lambda: "watching again" in follower.log.read_text(), what="the follower noticing")
        finally:
            etcd_server.start()
        with PluginClient(server.path) as client:
            second = client.request_address(pool, mac=random_mac())
        event = follower.next_event(timeout=30)
        assert (event["event"], f"{event['ip']}/24", event["host"]) == ("allocated", second, "hostB")
    finally:
        server.stop()
    assert follower.stop() == 0


def test_events_without_follow_lists_what_the_store_has(
    etcd_server: EtcdServer, etcd_args: list[str], tmp_path: Path
) -> None:
    prefix = etcd_args[-1]
    with EtcdStore([etcd_server.url], prefix=prefix) as store:
        ipam = Ipam(store, host="hostA")
        ipam.declare_ip_range("198.51.100.100/24", "198.51.100.199/24")
        lease = ipam.request_address(LAN)
        middle = store.revision()
        ipam.release_address(lease.ip)

    def shrike(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*SHRIKE, *etcd_args, "events", *args], capture_output=True, text=True, timeout=60)

    listed = shrike("--output", "json")
    assert listed.returncode == 0, listed.stderr
    assert [json.loads(line)["event"] for line in listed.stdout.splitlines()] == ["allocated", "released"]
    resumed = shrike("--after", str(middle))
    assert resumed.returncode == 0
    assert [line.split()[1:3] for line in resumed.stdout.splitlines()] == [["released", lease.ip]]

    # On the embedded store, nothing is recorded while nobody follows: it says so.
    with EmbeddedStore(tmp_path / "state" / "shrike.db") as store:
        Ipam(store, host="hostA").declare_ip_range("198.51.100.100/24", "198.51.100.199/24")
    embedded = subprocess.run(
        [*SHRIKE, "--state-dir", str(tmp_path / "state"), "events"], capture_output=True, text=True, timeout=60
    )
    assert (embedded.returncode, embedded.stdout) == (0, "")
    assert embedded.stderr.startswith("note: no event to show: ")
    assert "records changes only while they are watched" in embedded.stderr


def test_a_revision_no_longer_kept_is_one_error_line(etcd_server: EtcdServer, etcd_args: list[str]) -> None:
    with EtcdStore([etcd_server.url], prefix=etcd_args[-1]) as store:
        compact(store, store.revision())
    result = subprocess.run([*SHRIKE, *etcd_args, "events", "--after", "1"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.startswith("shrike: error: etcd at ")
    assert "has compacted the changes before revision" in result.stderr
    assert len(result.stderr.splitlines()) == 1
