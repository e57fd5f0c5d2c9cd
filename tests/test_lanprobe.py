"""The LAN, not only the store (issue 12): RFC 5227 probes before an address is handed
out, conflicts, ``shrike scan``, and announcements of a container's new MAC.

Real packets, only inside namespaces the tests make: LANs of :mod:`tests.fixtures.netns`
and, for ``docker run``, the session's dockerd, whose network on 203.0.113.0/24 is cabled
to a LAN of this module's own (:func:`probed_lan`). The allocator's rules about conflicts
are checked on both stores through a :class:`~shrike_cli.allocator.LanCheck` that says
which addresses answer, as a prober would.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from docker.models.networks import Network

from shrike_cli.allocator import MAX_CONFLICTS
from shrike_cli.errors import Conflict
from shrike_cli.ipam import Ipam
from shrike_cli.lanprobe import arp, ndp
from shrike_cli.lanprobe.links import in_namespace
from shrike_cli.lanprobe.wire import PACKET_OUTGOING, Answers
from shrike_cli.model import SEEN, IPv4, IPv6, Lease
from shrike_cli.plugin.client import PluginClient
from shrike_cli.stores import EmbeddedStore
from tests.fixtures.dockerd import API_CLEANUP_BUDGET, DockerDaemon, Tracker
from tests.fixtures.netns import Host, Lan, free_name, ping_argv, session_prefix
from tests.fixtures.plugin import SHRIKE, ServerProcess, create_network, endpoint, random_mac, run, wait_until
from tests.fixtures.stores import LAN

STRANGER = "0a:00:00:00:00:01"


def mac_of(host: Host) -> str:
    return json.loads(host.run(["ip", "-j", "link", "show", host.uplink], check=True).stdout)[0]["address"]


def neighbour_mac(host: Host, ip: str) -> str | None:
    """The MAC ``host``'s neighbour table has for ``ip``, if any."""
    entries = json.loads(host.run(["ip", "-j", "neigh", "show", ip], check=True).stdout or "[]")
    return next((e.get("lladdr") for e in entries), None)


# ----------------------------------------------------------------------- the wire
@pytest.mark.netns
def test_a_probe_finds_who_answers_and_teaches_nobody(lan: Lan) -> None:
    prober = lan.add_host("a", "198.51.100.10/24")
    other = lan.add_host("b", "198.51.100.11/24")
    targets = [IPv4("198.51.100.11"), IPv4("198.51.100.12"), IPv4("198.51.100.254")]
    answers = in_namespace(prober.netns_path, lambda: arp.probe("up0", targets, count=2, timeout=0.3))
    router = json.loads(lan.run(["ip", "-j", "link", "show", "br0"], check=True).stdout)[0]["address"]
    assert answers == {"198.51.100.11": (mac_of(other),), "198.51.100.254": (router,)}
    # A probe claims no address (sender 0.0.0.0): nobody learnt one from it.
    assert neighbour_mac(other, prober.ip) is None
    assert json.loads(lan.run(["ip", "-j", "neigh", "show", prober.ip], check=True).stdout or "[]") == []


# ------------------------------------------- the wire, IPv6: duplicate address detection
LAN6 = "2001:db8:5::/64"


def hold(host: Host, ip: str) -> None:
    """``ip`` (of :data:`LAN6`) on ``host``'s uplink, usable at once (no duplicate address
    detection of its own)."""
    host.run(["ip", "addr", "add", f"{ip}/64", "dev", host.uplink, "nodad"], check=True)


def ping6_argv(target: str) -> list[str]:
    argv = ping_argv(target, count=1)
    after = argv.index("ping") + 1
    return [*argv[:after], "-6", *argv[after:]]


def neighbour_macs6(host: Host) -> set[str]:
    """The MACs in ``host``'s IPv6 neighbour table."""
    entries = json.loads(host.run(["ip", "-j", "-6", "neigh", "show"], check=True).stdout or "[]")
    return {e["lladdr"] for e in entries if e.get("lladdr")}


@pytest.mark.netns
def test_a_dad_probe_finds_who_holds_an_ipv6_address_and_teaches_nobody(lan: Lan) -> None:
    prober = lan.add_host("a", "198.51.100.10/24")
    holder = lan.add_host("b", "198.51.100.11/24")
    hold(holder, "2001:db8:5::11")
    targets = [IPv6("2001:db8:5::11"), IPv6("2001:db8:5::12")]
    answers = in_namespace(prober.netns_path, lambda: ndp.probe("up0", targets, count=2, timeout=0.3))
    assert answers == {"2001:db8:5::11": (mac_of(holder),)}
    # Nothing holds ::12: silent.
    assert in_namespace(prober.netns_path, lambda: ndp.probe("up0", targets[1:], count=2, timeout=0.3)) == {}
    # A probe claims no address (source ::): nobody learnt one from it.
    assert mac_of(prober) not in neighbour_macs6(holder)


@dataclass(frozen=True)
class Solicitation:
    """A Neighbor Solicitation seen on the wire."""

    source: str
    target: str
    mac: str


def solicitations(frames: list[tuple[bytes, tuple[Any, ...]]]) -> list[Solicitation]:
    """The Neighbor Solicitations among ``frames`` (a packet socket's) that came in."""
    seen = []
    for data, address in frames:
        if address[2] != PACKET_OUTGOING and len(data) >= 78 and data[20] == 58 and data[54] == 135:
            source, target = (IPv6(int.from_bytes(data[at : at + 16], "big")) if any(data[at : at + 16]) else "::"
                              for at in (22, 62))  # fmt: skip
            seen.append(Solicitation(source, target, arp.mac_text(data[6:12])))
    return seen


@pytest.mark.netns
def test_another_hosts_dad_or_address_resolution_is_no_answer(lan: Lan) -> None:
    """Another host probing the same address at the same moment (from ::), or resolving
    it (from an address of its own), does not say that anything holds it."""
    prober = lan.add_host("a", "198.51.100.10/24")
    other = lan.add_host("c", "198.51.100.12/24")
    hold(other, "2001:db8:5::13")
    target = IPv6("2001:db8:5::12")

    def meanwhile() -> None:
        time.sleep(0.1)
        with in_namespace(other.netns_path, lambda: ndp.NdpSocket("up0")) as sock:
            for _ in range(3):
                sock.probe(target)
                time.sleep(0.05)
        other.run(ping6_argv(target))  # a Neighbor Solicitation for it from 2001:db8:5::13

    def probe_and_watch() -> tuple[Answers, list[Solicitation]]:
        with ndp.NdpSocket("up0") as watch:
            answers = ndp.probe("up0", [target], count=3, timeout=1.0)
            watch.sock.setblocking(False)
            frames = []
            with contextlib.suppress(BlockingIOError):
                while True:
                    frames.append(watch.sock.recvfrom(2048))
        return answers, solicitations(frames)

    other_side = threading.Thread(target=meanwhile)
    other_side.start()
    try:
        answers, seen = in_namespace(prober.netns_path, probe_and_watch)
    finally:
        other_side.join()
    assert answers == {}
    # Both did reach the prober while it listened.
    assert Solicitation("::", target, mac_of(other)) in seen
    assert Solicitation("2001:db8:5::13", target, mac_of(other)) in seen


@pytest.mark.netns
def test_an_unsolicited_advertisement_moves_an_ipv6_address_to_a_new_mac(lan: Lan) -> None:
    before = lan.add_host("b", "198.51.100.11/24")
    after = lan.add_host("m", "198.51.100.12/24")
    neighbour = lan.add_host("n", "198.51.100.13/24")
    hold(before, "2001:db8:5::11")
    hold(neighbour, "2001:db8:5::13")
    assert neighbour.run(ping6_argv("2001:db8:5::11")).returncode == 0
    assert neighbour_mac(neighbour, "2001:db8:5::11") == mac_of(before)
    # The address comes back elsewhere (a restarted container's new MAC), and says so.
    with in_namespace(after.netns_path, lambda: ndp.NdpSocket("up0")) as sock:
        sock.announce(IPv6("2001:db8:5::11"))
    wait_until(
        lambda: neighbour_mac(neighbour, "2001:db8:5::11") == mac_of(after),
        timeout=1.0,
        what="the neighbour learning the new MAC",
    )


def test_dad_frames_as_rfc_4861_says() -> None:
    mac, target = arp.mac_bytes("02:00:00:00:00:0a"), socket.inet_pton(socket.AF_INET6, "2001:db8:5::1:2:3")
    probe = ndp.solicitation(mac, target)
    assert probe[:14] == arp.mac_bytes("33:33:ff:02:00:03") + mac + b"\x86\xdd"
    assert (probe[20], probe[21]) == (58, 255)  # ICMPv6, hop limit 255
    assert probe[22:38] == bytes(16)  # from ::
    assert probe[38:54] == socket.inet_pton(socket.AF_INET6, "ff02::1:ff02:3")  # solicited-node
    assert (probe[54], probe[55], probe[62:]) == (135, 0, target)  # no option
    # The checksum sums to zero over the pseudo-header and the message.
    assert ndp.checksum(probe[22:38], probe[38:54], probe[54:]) == 0
    # A Neighbor Solicitation from :: is another host's probe, not an answer.
    assert ndp.parse(probe) is None
    holder = arp.mac_bytes("02:00:00:00:00:0b")
    defended = ndp.advertisement(holder, target)
    assert ndp.parse(defended) == ("2001:db8:5::1:2:3", "02:00:00:00:00:0b")
    assert ndp.checksum(defended[22:38], defended[38:54], defended[54:]) == 0
    assert defended[:6] == arp.mac_bytes("33:33:00:00:00:01") and defended[58] & 0x20  # to all nodes, Override
    # Without a target link-layer address option, the frame's source answered.
    bare = defended[:18] + (24).to_bytes(2, "big") + defended[20:78]
    assert ndp.parse(bare) == ("2001:db8:5::1:2:3", "02:00:00:00:00:0b")
    # Not from this link (a router forwarded it: hop limit below 255): ignored.
    assert ndp.parse(defended[:21] + b"\xfe" + defended[22:]) is None


# ------------------------------------------------------- the allocator's rules
class Answering:
    """A :class:`LanCheck` that says which addresses answer, as a prober finds them."""

    def __init__(self, answers: dict[str, str]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    def answering(self, ip: IPv4) -> str | None:
        self.asked.append(ip)
        return self.answers.get(ip)

    def vacated(self, ip: IPv4) -> None:
        self.answers.pop(ip, None)


def test_a_dynamic_address_that_answers_becomes_a_conflict_and_the_next_is_handed_out(lan_ipam: Ipam) -> None:
    lan_ipam.probe_with(Answering({"198.51.100.101": STRANGER}))
    mac = "02:42:00:00:00:01"
    leases = [lan_ipam.request_address(LAN, mac=mac if n == 1 else None).ip for n in range(3)]
    assert leases == ["198.51.100.100", "198.51.100.102", "198.51.100.103"]
    conflict = lan_ipam.lease("198.51.100.101")
    assert conflict is not None
    assert (conflict.kind, conflict.state, conflict.mac, conflict.host) == ("conflict", "held", STRANGER, "hostA")
    assert conflict.range == "198.51.100.100-198.51.100.109" and conflict.owner[SEEN].endswith("Z")
    # The stranger's MAC is no container's: the MAC index points at what the container got.
    assert lan_ipam.state.address_of_mac(STRANGER) is None
    assert lan_ipam.state.address_of_mac(mac) == "198.51.100.102"
    assert "conflict: 0a:00:00:00:00:01 answered for it on the LAN" in conflict.describe()


def test_an_address_asked_for_that_answers_is_refused_naming_the_mac(lan_ipam: Ipam) -> None:
    lan_ipam.probe_with(Answering({"198.51.100.105": STRANGER, "198.51.100.106": STRANGER}))
    with pytest.raises(Conflict, match=f"198.51.100.105 is in use on the LAN: {STRANGER} answers for it; recorded"):
        lan_ipam.request_address(LAN, "198.51.100.105")
    assert lan_ipam.lease("198.51.100.105").kind == "conflict"
    # Asked again: the store refuses it, naming the MAC too.
    with pytest.raises(Conflict, match=f"198.51.100.105 is already in use \\(conflict: {STRANGER} answered"):
        lan_ipam.reserve("web1", ip="198.51.100.105")
    # A reservation whose address something else took meanwhile stays a reservation.
    lan_ipam.probe_with(None)
    lan_ipam.reserve("web2", ip="198.51.100.106")
    lan_ipam.probe_with(Answering({"198.51.100.106": STRANGER}))
    with pytest.raises(Conflict, match=f"{STRANGER} answers for it, though it is container reserved by web2"):
        lan_ipam.request_address(LAN, "198.51.100.106")
    reserved = lan_ipam.lease("198.51.100.106")
    assert reserved is not None and (reserved.kind, reserved.name) == ("container", "web2")


def test_a_conflict_is_freed_once_silent_and_given_out_again(lan_ipam: Ipam) -> None:
    lan_ipam.probe_with(Answering({"198.51.100.100": STRANGER}))
    assert lan_ipam.request_address(LAN).ip == "198.51.100.101"
    [(conflict, revision)] = lan_ipam.conflicts()
    # Still answering: seen again, from the MAC that answers now.
    seen = lan_ipam.settle_conflict(conflict, revision, "0a:00:00:00:00:02")
    assert seen is not None and (seen.kind, seen.mac) == ("conflict", "0a:00:00:00:00:02")
    assert lan_ipam.settle_conflict(conflict, revision, None) is None  # written since: left alone
    [(conflict, revision)] = lan_ipam.conflicts()
    freed = lan_ipam.settle_conflict(conflict, revision, None)
    assert freed is not None and (freed.kind, freed.state, freed.mac) == ("container", "released", "")
    assert lan_ipam.conflicts() == []
    # Back on the free list: once the never-used addresses are gone, it is handed out.
    lan_ipam.probe_with(None)
    rest = [lan_ipam.request_address(LAN).ip for _ in range(9)]
    assert rest[-1] == "198.51.100.100"


def test_release_ip_frees_a_conflict_at_once(lan_ipam: Ipam) -> None:
    lan_ipam.probe_with(Answering({"198.51.100.100": STRANGER}))
    lan_ipam.request_address(LAN)
    released = lan_ipam.release_container("198.51.100.100")
    assert (released.kind, released.state) == ("container", "released")


def test_a_container_found_answering_is_adopted_over_its_conflict(lan_ipam: Ipam) -> None:
    container = "02:42:00:00:00:07"  # running, its address lost with the store
    lan_ipam.probe_with(Answering({"198.51.100.100": container}))
    lan_ipam.request_address(LAN)
    with pytest.raises(Conflict):
        lan_ipam.adopt_container("198.51.100.100", mac="02:42:00:00:00:08")
    adopted = lan_ipam.adopt_container("198.51.100.100", mac=container, owner={"name": "web1"})
    assert (adopted.kind, adopted.mac, adopted.holder) == ("container", container, "web1")
    assert lan_ipam.state.address_of_mac(container) == "198.51.100.100"


def test_a_router_answering_for_every_address_does_not_eat_the_range(lan_ipam: Ipam) -> None:
    everything = Answering({f"198.51.100.{n}": STRANGER for n in range(100, 110)})
    lan_ipam.probe_with(everything)
    with pytest.raises(Conflict, match=f"{MAX_CONFLICTS} addresses in a row answer on the LAN .*\\(proxy ARP\\)"):
        lan_ipam.request_address(LAN)
    assert len(lan_ipam.conflicts()) == MAX_CONFLICTS


# ---------------------------------------------------------------------- scan
@dataclass
class ScannedLan:
    lan: Lan
    host: Host
    state: Path
    ipam: Ipam

    def shrike(self, *args: str) -> subprocess.CompletedProcess[str]:
        """The command line on this store, run on the host (in its namespace)."""
        return self.host.run([*SHRIKE, "--state-dir", str(self.state), *args], timeout=60)


@pytest.fixture
def scanned(lan: Lan, tmp_path: Path) -> Iterator[ScannedLan]:
    """A host (.39) on the LAN 198.51.100.0/24 with hosts .1-.99 and containers .100-.109."""
    host = lan.add_host("h", "198.51.100.39/24")
    store = EmbeddedStore(tmp_path / "state" / "shrike.db")
    try:
        ipam = Ipam(store)
        ipam.declare_host_range("198.51.100.1/24", "198.51.100.99/24", "198.51.100.254")
        ipam.declare_ip_range("198.51.100.100/24", "198.51.100.109/24")
        ipam.claim_host(host.ip)
        yield ScannedLan(lan, host, tmp_path / "state", ipam)
    finally:
        store.close()


def findings(result: subprocess.CompletedProcess[str]) -> dict[str, dict[str, Any]]:
    [sweep] = json.loads(result.stdout)["sweeps"]
    return {f["ip"]: f for f in sweep["findings"]}


@pytest.mark.netns
def test_scan_reports_squatters_and_duplicates_and_marks_squatters(scanned: ScannedLan) -> None:
    squatter = scanned.lan.add_host("sq", "198.51.100.101/24")
    twin = scanned.lan.add_host("tw", "198.51.100.102/24")
    neighbour = scanned.lan.add_host("nb", "198.51.100.7/24")
    silent = scanned.ipam.request_address(LAN, mac="02:42:00:00:00:64")  # .100: nobody answers
    scanned.ipam.request_address(LAN, "198.51.100.102", mac="02:42:00:00:00:66")  # another MAC answers

    result = scanned.shrike("scan", "--mark", "--rate", "200", "--output", "json")
    assert result.returncode == 1, result.stderr
    found = findings(result)
    assert (found["198.51.100.101"]["finding"], found["198.51.100.101"]["macs"]) == ("squatter", [mac_of(squatter)])
    assert found["198.51.100.101"]["lease"] is None
    assert found["198.51.100.102"]["finding"] == "duplicate"
    assert found["198.51.100.102"]["detail"].startswith(f"answered by {mac_of(twin)}, but container held by")
    assert found[silent.ip]["finding"] == "silent"
    assert (found["198.51.100.7"]["finding"], found["198.51.100.7"]["detail"]) == (
        "host",
        "answers: recorded as no host's",
    )
    assert (found[scanned.host.ip]["finding"], found[scanned.host.ip]["macs"]) == ("host", [mac_of(scanned.host)])
    assert json.loads(result.stdout)["sweeps"][0]["marked"] == ["198.51.100.101"]
    marked = scanned.ipam.lease("198.51.100.101")
    assert marked is not None and (marked.kind, marked.mac) == ("conflict", mac_of(squatter))
    assert neighbour_mac(neighbour, scanned.host.ip) is None  # probes teach nobody

    # Once the squatter and the twin are gone, the conflict is silent, and nothing needs a person.
    scanned.lan.remove_host("sq")
    scanned.lan.remove_host("tw")
    scanned.ipam.release_address("198.51.100.102")
    again = scanned.shrike("scan", "--subnet", LAN, "--rate", "200", "--output", "json")
    assert again.returncode == 0, again.stderr
    assert findings(again)["198.51.100.101"]["finding"] == "conflict"


@pytest.mark.netns
def test_scan_from_a_host_off_the_lan_says_so(scanned: ScannedLan) -> None:
    # This process's namespace has no interface on 198.51.100.0/24.
    result = subprocess.run(
        [*SHRIKE, "--state-dir", str(scanned.state), "scan"], capture_output=True, text=True, timeout=60
    )
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (
        "shrike: error: this host has no interface on 198.51.100.0/24: scan it from a host on that LAN\n"
    )
    unknown = scanned.shrike("scan", "--subnet", "203.0.113.0/24")
    assert unknown.returncode == 1
    assert "--subnet 203.0.113.0/24 is not a declared LAN (198.51.100.0/24)" in unknown.stderr


# ------------------------------------------------- the plugin, on an IPv6 LAN
SQUATTED6 = ("2001:db8:5::101", "2001:db8:5::103")


@pytest.mark.netns
def test_the_plugin_never_hands_out_an_ipv6_address_a_squatter_defends(
    lan: Lan, socket_dir: Path, tmp_path: Path
) -> None:
    """``shrike server`` on a host of an IPv6 LAN (containers ::100-::103) where a squatter
    holds ::101 and ::103: its duplicate address detection finds them, as ARP does."""
    host = lan.add_host("h", "198.51.100.39/24")
    hold(host, "2001:db8:5::39")
    squatter = lan.add_host("sq", "198.51.100.40/24")
    for ip in SQUATTED6:
        hold(squatter, ip)
    squatter_mac = mac_of(squatter)
    state = tmp_path / "state"
    store = EmbeddedStore(state / "shrike.db")
    server = ServerProcess(
        ["--state-dir", str(state)],
        socket_dir,
        "dad",
        tmp_path / "server.log",
        server_args=["--no-follow-docker", "--conflict-recheck", "1s"],
        netns=host.netns_path,
    )
    try:
        ipam = Ipam(store)
        ipam.declare_host_range("2001:db8:5::1/64", "2001:db8:5::ff/64", "fe80::1")
        ipam.declare_ip_range("2001:db8:5::100/64", "2001:db8:5::103/64")
        server.start()
        with PluginClient(server.path, timeout=30.0) as client:
            pool = {"AddressSpace": "shrike-local", "Pool": LAN6, "SubPool": "", "Options": {}, "V6": True}
            pool_id = client.ok("IpamDriver.RequestPool", pool)["PoolID"]

            def request(address: str = "") -> tuple[int, dict[str, Any]]:
                mac = {"com.docker.network.endpoint.macaddress": random_mac()}  # a container's, not a gateway
                body = {"PoolID": pool_id, "Address": address, "Options": mac}
                return client.call("IpamDriver.RequestAddress", body)

            # Asked for by name: refused, naming the squatter's MAC.
            status, reply = request(SQUATTED6[1])
            assert status == 500
            assert reply["Err"].startswith(f"{SQUATTED6[1]} is in use on the LAN: {squatter_mac} answers for it")
            # Dynamic requests: every address but the squatted ones, then none.
            given = [request() for _ in range(2)]
            assert given == [(200, {"Address": f"2001:db8:5::{n}/64", "Data": {}}) for n in (100, 102)]
            status, reply = request()
            assert status == 500 and "no free address left in 2001:db8:5::100/64-2001:db8:5::103/64" in reply["Err"]
            for ip in SQUATTED6:
                conflict = ipam.lease(ip)
                assert conflict is not None and (conflict.kind, conflict.mac) == ("conflict", squatter_mac)
            assert "LAN 2001:db8:5::/64: probed on up0" in server.log()
            # doctor on that host says so too (no dockerd there: its checks say that apart).
            doctor = subprocess.run(
                ["nsenter", f"--net={host.netns_path}", *SHRIKE, "--state-dir", str(state), "doctor", "-o", "json"]
                + ["--plugin-name", "dad", "--plugin-dir", str(socket_dir)],
                capture_output=True,
                text=True,
                env={**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/no-dockerd.sock"},
            )
            [check] = [c for c in json.loads(doctor.stdout)["checks"] if c["name"] == "lan probe"]
            assert (check["status"], check["detail"]) == (
                "ok",
                "2001:db8:5::/64 is probed on up0 (DAD) before its addresses are handed out",
            )

            # The squatter leaves: silent at its next probe, its addresses are free again.
            lan.remove_host("sq")
            wait_until(
                lambda: all(ipam.lease(ip).kind == "container" for ip in SQUATTED6),  # type: ignore[union-attr]
                timeout=20,
                what="the conflicts freed",
            )
            assert request()[1]["Address"] in {f"{ip}/64" for ip in SQUATTED6}
    finally:
        server.stop()
        store.close()


# --------------------------------------------------- with dockerd and the plugin
PROBED = "203.0.113.0/24"
PROBED_ROUTER = "203.0.113.254"
#: The bridge's address, Docker's gateway: in the host range, a plain gateway record.
PROBED_GATEWAY = "203.0.113.1"
CONTAINERS = ("203.0.113.100", "203.0.113.101", "203.0.113.102", "203.0.113.103")
SQUATTED = CONTAINERS[1]


@dataclass
class ProbedLan:
    """The session's dockerd with a network on 203.0.113.0/24 whose bridge is cabled to
    ``lan`` (a LAN of this test's, router .254), and ``shrike server`` beside dockerd,
    in its namespace (as on a real host), probing that LAN. ``squatter`` sat on
    :data:`SQUATTED` before the server started."""

    dockerd: DockerDaemon
    lan: Lan
    squatter: Host
    server: ServerProcess
    ipam: Ipam
    network: Network
    tracker: Tracker

    def shrike(self, *args: str) -> subprocess.CompletedProcess[str]:
        """The command line on the plugin's store, in dockerd's namespace."""
        return subprocess.run(
            ["nsenter", f"--net={self.dockerd.host.netns_path}", *SHRIKE, *self.server.store_args, *args],
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
            env=self.dockerd.env,
        )

    def run(self, *args: str) -> tuple[str, str]:
        return run(self.dockerd, self.tracker, self.network, *args)

    def address(self, container: str) -> str:
        return endpoint(self.dockerd, container, self.network)["IPAddress"]

    def lease(self, ip: str) -> Lease:
        lease = self.ipam.lease(ip)
        assert lease is not None, f"no lease for {ip}"
        return lease


@pytest.fixture
def probed_lan(dockerd: DockerDaemon, tmp_path: Path) -> Iterator[ProbedLan]:
    state = tmp_path / "state"
    store = EmbeddedStore(state / "shrike.db")
    ipam = Ipam(store)
    ipam.declare_host_range("203.0.113.1/24", "203.0.113.99/24", PROBED_ROUTER)
    ipam.declare_ip_range(f"{CONTAINERS[0]}/24", f"{CONTAINERS[-1]}/24")
    lan = Lan(PROBED, PROBED_ROUTER, prefix=f"{session_prefix()}p{uuid.uuid4().hex[:4]}-")
    server = ServerProcess(
        ["--state-dir", str(state)],
        Path(dockerd.plugin_dir),
        dockerd.unique_plugin_name(),
        tmp_path / "server.log",
        server_args=["--conflict-recheck", "1s"],
        env=dockerd.env,
        netns=dockerd.host.netns_path,
    )
    tracker = Tracker(dockerd.client)
    cable, lan_end = free_name("shkc"), free_name("shkc")
    try:
        squatter = lan.add_host("sq", f"{SQUATTED}/24")
        server.start()
        network = create_network(
            dockerd, tracker, server.name, PROBED, PROBED_GATEWAY, {"DefaultGatewayIPv4": PROBED_ROUTER}
        )
        bridge = network.attrs["Options"]["com.docker.network.bridge.name"]
        # The cable is born in dockerd's namespace; its LAN end moves to the LAN.
        dockerd.host.run(["ip", "link", "add", cable, "type", "veth", "peer", "name", lan_end], check=True)
        dockerd.host.run(["ip", "link", "set", lan_end, "netns", lan.netns], check=True)
        lan.run(["ip", "link", "set", lan_end, "master", "br0", "up"], check=True)
        dockerd.host.run(["ip", "link", "set", cable, "master", bridge, "up"], check=True)
        wait_until(lambda: f"probed on {bridge}" in server.log(), what="the server probing the network's bridge")
        yield ProbedLan(dockerd, lan, squatter, server, ipam, network, tracker)
    finally:
        errors = tracker.cleanup(time.monotonic() + API_CLEANUP_BUDGET)
        server.stop()
        lan.cleanup()  # the cable goes with its LAN end
        dockerd.host.run(["ip", "link", "del", cable])
        store.close()
        assert not errors, errors


@pytest.mark.docker
def test_docker_run_never_gets_an_address_a_squatter_answers_for(probed_lan: ProbedLan) -> None:
    p = probed_lan
    squatter_mac = mac_of(p.squatter)

    # Filling the range: every address but the squatter's.
    containers = [p.run()[0] for _ in range(3)]
    assert sorted(p.address(c) for c in containers) == [CONTAINERS[0], *CONTAINERS[2:]]
    _, error = p.run()
    assert "no free address left in 203.0.113.100/24-203.0.113.103/24" in error
    conflict = p.lease(SQUATTED)
    assert (conflict.kind, conflict.mac) == ("conflict", squatter_mac)

    _, error = p.run("--ip", SQUATTED)
    assert f"{SQUATTED} is already in use (conflict: {squatter_mac} answered for it on the LAN" in error

    scan = p.shrike("scan", "--subnet", PROBED, "--rate", "200", "--output", "json")
    assert scan.returncode == 1, scan.stderr
    found = findings(scan)[SQUATTED]
    assert (found["finding"], found["macs"]) == ("squatter", [squatter_mac])

    doctor = p.shrike("doctor", "--plugin-name", p.server.name, "--plugin-dir", p.dockerd.plugin_dir, "-o", "json")
    [check] = [c for c in json.loads(doctor.stdout)["checks"] if c["name"] == "lan probe"]
    bridge = p.network.attrs["Options"]["com.docker.network.bridge.name"]
    assert (check["status"], check["detail"]) == (
        "ok",
        f"{PROBED} is probed on {bridge} (ARP) before its addresses are handed out",
    )

    # The squatter leaves: at its next probe (1 s after it last answered) the address is
    # free again, and the next docker run gets it.
    p.lan.remove_host("sq")
    wait_until(lambda: p.lease(SQUATTED).kind == "container", timeout=20, what="the conflict freed")
    name, error = p.run()
    assert error == "" and p.address(name) == SQUATTED


@pytest.mark.docker
def test_a_restarted_containers_new_mac_reaches_its_neighbours_at_once(probed_lan: ProbedLan) -> None:
    p = probed_lan
    neighbour = p.lan.add_host("nb", "203.0.113.50/24")
    ip = p.ipam.reserve("web1", subnet=PROBED).ip
    name, error = p.run("--ip", ip)
    assert error == ""
    before = endpoint(p.dockerd, name, p.network)["MacAddress"]
    assert neighbour.ping(ip).returncode == 0
    assert neighbour_mac(neighbour, ip) == before

    p.dockerd.docker_cli("restart", "-t", "0", name)
    after = endpoint(p.dockerd, name, p.network)["MacAddress"]
    assert p.address(name) == ip and after != before  # dockerd 20.10: a new MAC at every start
    wait_until(lambda: neighbour_mac(neighbour, ip) == after, timeout=1.0, what="the neighbour learning the new MAC")
