"""A dual-stack LAN for real, inside network namespaces only: ``create-network`` moves the
host's IPv4 and IPv6 addresses and routes onto the bridge (and all of it back, also when a
step fails), and containers on the network get an address of each family from the
declared ranges, reach the LAN over both, and keep both across restarts.

The LAN of tests/fixtures/hostnet.py (198.51.100.0/24) also carries 2001:db8:1::/64 here:
its router holds 2001:db8:1::fe and the link-local fe80::1 (the usual IPv6 gateway, which
Docker would also put on the bridge), the host 2001:db8:1::39 with its IPv6 default route
through fe80::1 and one more route, host "b" 2001:db8:1::40.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.dockerd import DockerDaemon
from tests.fixtures.hostnet import HOST_IP, Shrike, Snapshot, snapshot
from tests.fixtures.netns import Host, ping_argv
from tests.fixtures.plugin import wait_until

pytestmark = [pytest.mark.netns, pytest.mark.docker]

HOST_IP6 = "2001:db8:1::39"
ROUTER6 = "2001:db8:1::fe"
ROUTER_LINK_LOCAL = "fe80::1"
OTHER_HOST6 = "2001:db8:1::40"
CONTAINER_RANGE6 = ("2001:db8:1::100", "2001:db8:1::1ff")
#: set up on the host and the LAN by the ``ipv6`` fixture, removed after the module
HOST_SETUP = [
    ["addr", "add", f"{HOST_IP6}/64", "dev", "up0", "nodad"],
    ["-6", "route", "add", "default", "via", ROUTER_LINK_LOCAL, "dev", "up0"],
    ["-6", "route", "add", "2001:db8:9::/48", "via", "2001:db8:1::fd", "dev", "up0", "metric", "50"],
]


def ping6(host: Host, target: str) -> None:
    argv = ping_argv(target)
    after = argv.index("ping") + 1
    result = host.run([*argv[:after], "-6", *argv[after:]], timeout=20)
    assert result.returncode == 0, f"{host.name} cannot reach {target}: {result.stdout}{result.stderr}"


@pytest.fixture(scope="module")
def ipv6(daemon: DockerDaemon) -> Iterator[None]:
    """2001:db8:1::/64 on the LAN, the host and host "b" (see the module docstring)."""
    assert daemon.lan is not None and daemon.host is not None
    lan, host, other = daemon.lan, daemon.host, daemon.lan.hosts["b"]
    lan.run(["ip", "addr", "add", f"{ROUTER6}/64", "dev", "br0", "nodad"], check=True)
    lan.run(["ip", "addr", "add", f"{ROUTER_LINK_LOCAL}/64", "dev", "br0", "nodad"], check=True)
    other.run(["ip", "addr", "add", f"{OTHER_HOST6}/64", "dev", "up0", "nodad"], check=True)
    done = []
    try:
        for args in HOST_SETUP:
            host.run(["ip", *args], check=True)
            done.append(args)
        yield
    finally:
        for args in reversed(done):
            host.run(["ip", *_deleting(args)], check=True)
        other.run(["ip", "addr", "del", f"{OTHER_HOST6}/64", "dev", "up0"], check=True)
        for address in (ROUTER_LINK_LOCAL, ROUTER6):
            lan.run(["ip", "addr", "del", f"{address}/64", "dev", "br0"], check=True)


def _deleting(args: list[str]) -> list[str]:
    """The ``ip`` arguments that undo ``ip ARGS`` (an ``add``)."""
    words = [w for w in args if w != "nodad"]
    at = words.index("add")
    return [*words[:at], "del", *words[at + 1 :]]


@pytest.fixture
def dual(ipv6: None, shrike: Shrike) -> Shrike:
    """The ``shrike`` fixture's LAN and plugin, with the IPv6 LAN declared too: hosts
    ::1-::99 (router fe80::1), containers ::100-::1ff."""
    for declare in (
        ["host-range", "--ip-start", "2001:db8:1::1/64", "--ip-end", "2001:db8:1::99/64", "--gateway", "fe80::1"],
        ["ip-range", "--ip-start", f"{CONTAINER_RANGE6[0]}/64", "--ip-end", f"{CONTAINER_RANGE6[1]}/64"],
    ):
        result = shrike(*declare)
        assert result.returncode == 0, result.stderr
    return shrike


def addresses(shrike: Shrike, container: str, network: str = "mynet") -> tuple[str, str]:
    settings = shrike.daemon.client.api.inspect_container(container)["NetworkSettings"]["Networks"][network]
    return settings["IPAddress"], settings["GlobalIPv6Address"]


def run(shrike: Shrike, *args: str) -> str:
    """``docker run -d --net mynet ARGS busybox sleep 300``: the container's name."""
    name = f"shk-{uuid.uuid4().hex[:12]}"
    shrike.tracker.track_container(name)
    result = shrike.daemon.docker_cli("run", "-d", "--name", name, "--net", "mynet", *args, shrike.daemon.image,
                                      "sleep", "300", check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return name


def neighbour_mac(host: Host, ip: str) -> str | None:
    entries = json.loads(host.run(["ip", "-j", "neigh", "show", ip], check=True).stdout or "[]")
    return next((e.get("lladdr") for e in entries), None)


def accepts_ra(host: Host, link: str) -> bool:
    """Whether ``link`` takes router advertisements: accept_ra 2, or 1 while not forwarding."""
    accept, forwarding = (
        host.run(["sysctl", "-n", f"net.ipv6.conf.{link}.{name}"], check=True).stdout.strip()
        for name in ("accept_ra", "forwarding")
    )
    return accept == "2" or (accept, forwarding) == ("1", "0")


def in_range6(ip: str) -> bool:
    first, last = (int(a.rpartition(":")[2], 16) for a in CONTAINER_RANGE6)
    return ip.startswith("2001:db8:1::") and first <= int(ip.rpartition(":")[2], 16) <= last


# ---------------------------------------------------------------- end to end
def test_a_dual_stack_lan_end_to_end(dual: Shrike) -> None:
    before = snapshot(dual.host)
    up0_link_local = [line for line in before["link_local"] if line.startswith("up0 ")]
    took_ra = accepts_ra(dual.host, "up0")
    result = dual.create()
    assert result.returncode == 0, result.stderr
    assert f"created Docker network mynet: {HOST_IP} and {HOST_IP6} are on bridge br0" in result.stdout

    state = snapshot(dual.host)
    assert f"br0 {HOST_IP6}/64 scope global" in state["addresses"]
    assert not any(line.startswith("up0 ") for line in state["addresses"])
    # The uplink keeps its link-local address, and the bridge answers to it too; Docker's
    # fe80::1 is not on the bridge (the LAN's router has it).
    assert [line for line in state["link_local"] if line.startswith("up0 ")] == up0_link_local
    assert up0_link_local[0].replace("up0 ", "br0 ") in state["link_local"]
    assert f"br0 {ROUTER_LINK_LOCAL}/64 scope link" not in state["link_local"]
    assert any(line.startswith(f"default via {ROUTER_LINK_LOCAL} dev br0 ") for line in state["routes"])
    assert any(line.startswith("2001:db8:9::/48 via 2001:db8:1::fd dev br0 metric 50 ") for line in state["routes"])
    # Router advertisements on the bridge as on up0 before: with accept_ra 2, since Docker's
    # IPv6 networks turn forwarding on (the module's first one did).
    assert f"br0 {2 if took_ra else 0}" in state["accept_ra"]
    ping6(dual.host, ROUTER6)
    ping6(dual.other_host, HOST_IP6)

    leases = dual.leases()
    assert (leases[HOST_IP6]["kind"], leases[HOST_IP6]["state"]) == ("host", "held")
    network = dual.daemon.client.api.inspect_network("mynet")
    assert [c["Subnet"] for c in network["IPAM"]["Config"]] == ["198.51.100.0/24", "2001:db8:1::/64"]
    assert network["EnableIPv6"] is True

    # A container gets one address of each family, reaches the LAN over both, and is
    # reached.
    container = run(dual)
    ip, ip6 = addresses(dual, container)
    assert ip.startswith("198.51.100.1") and in_range6(ip6), (ip, ip6)
    for target in (ROUTER6, OTHER_HOST6):
        code, out = dual.daemon.client.containers.get(container).exec_run(["ping", "-6", "-c", "2", "-W", "1", target])
        assert code == 0, out.decode()
    ping6(dual.other_host, ip6)
    leases = dual.leases()
    assert (leases[ip6]["kind"], leases[ip6]["state"], leases[ip6]["subnet"]) == (
        "container",
        "held",
        "2001:db8:1::/64",
    )
    assert leases[ip6]["mac"] == leases[ip]["mac"]

    # Both addresses come back after a restart: the server parks both.
    wait_until(
        lambda: all(dual.leases()[a].get("owner", {}).get("name") == container for a in (ip, ip6)),
        what="owners recorded",
    )
    for _ in range(2):
        dual.daemon.docker_cli("restart", "-t", "0", container)
        assert addresses(dual, container) == (ip, ip6)
    # Host "b" knew the container's MAC (it pinged it); a new one (dockerd 20.10 makes one
    # up at every start) reaches it at once: announced from inside the container.
    mac = dual.daemon.client.api.inspect_container(container)["NetworkSettings"]["Networks"]["mynet"]["MacAddress"]
    wait_until(lambda: neighbour_mac(dual.other_host, ip6) == mac, timeout=2.0, what="host b learning the new MAC")
    dual.daemon.docker_cli("stop", "-t", "0", container)
    parked = dual.leases()
    assert (parked[ip]["state"], parked[ip6]["state"]) == ("parked", "parked")
    other = run(dual)
    assert set(addresses(dual, other)).isdisjoint({ip, ip6})
    dual.daemon.docker_cli("start", container)
    assert addresses(dual, container) == (ip, ip6)
    # reconcile sees both families' endpoints: nothing leaked, nothing held twice.
    report = dual("reconcile", "--plugin-name", dual.plugin, "-o", "json")
    assert report.returncode == 0, report.stderr
    found = json.loads(report.stdout)
    assert (found["endpoints"], found["leaks"], found["duplicates"]) == (4, [], [])
    checked = dual("check", "--plugin-name", dual.plugin)
    assert checked.returncode == 0, checked.stdout + checked.stderr

    undone = dual("create-network", "--undo", "--force")
    assert undone.returncode == 0, undone.stderr
    assert f"{HOST_IP} and {HOST_IP6} and their routes are on up0 again" in undone.stdout
    assert HOST_IP6 not in dual.leases()
    assert snapshot(dual.host) == before
    ping6(dual.host, ROUTER6)


def test_containers_started_with_ip_and_ip6_keep_both(dual: Shrike) -> None:
    assert dual.create().returncode == 0
    container = run(dual, "--ip", "198.51.100.150", "--ip6", "2001:db8:1::150")
    assert addresses(dual, container) == ("198.51.100.150", "2001:db8:1::150")
    dual.daemon.docker_cli("restart", "-t", "0", container)
    dual.daemon.docker_cli("stop", "-t", "0", container)
    dual.daemon.docker_cli("start", container)
    assert addresses(dual, container) == ("198.51.100.150", "2001:db8:1::150")
    # Nobody else gets it meanwhile, and --ip6 has --ip's rules: no host address, no
    # gateway, nothing outside the container ranges.
    for ip6, error in (
        ("2001:db8:1::150", "2001:db8:1::150 is already in use"),
        (HOST_IP6, f"{HOST_IP6} is a host address"),
        ("2001:db8:1::2:1", "outside every container range"),
    ):
        name = f"shk-{uuid.uuid4().hex[:12]}"
        dual.tracker.track_container(name)
        refused = dual.daemon.docker_cli("run", "-d", "--name", name, "--net", "mynet", "--ip6", ip6,
                                         dual.daemon.image, "sleep", "300", check=False)  # fmt: skip
        assert refused.returncode != 0 and error in refused.stderr, refused.stderr


def test_a_reservation_holds_one_address_of_each_family(dual: Shrike) -> None:
    assert dual.create().returncode == 0
    reserved = dual("reserve", "web1", "--family", "both")
    assert reserved.returncode == 0, reserved.stderr
    ip, ip6 = reserved.stdout.split()
    assert dual("reserve", "web1").stdout.strip() == ip
    assert dual("reserve", "web1", "--family", "6").stdout.strip() == ip6
    container = run(dual, "--ip", ip, "--ip6", ip6)
    assert addresses(dual, container) == (ip, ip6)
    released = dual("release", "--name", "web1", "-o", "json")
    assert released.returncode == 0, released.stderr
    assert [lease["ip"] for lease in json.loads(released.stdout)] == [ip, ip6]


def test_a_pinned_mac_keeps_its_derived_address_without_state(dual: Shrike) -> None:
    """``--ipam-opt eui64=true``: the IPv6 address is the one the MAC derives (as SLAAC
    would), so a container with a pinned MAC keeps it, and its record goes with it."""
    # A LAN of its own: Docker's bridges may not share a subnet.
    for declare in (
        ["host-range", "--ip-start", "203.0.113.1/24", "--ip-end", "203.0.113.99/24", "--gateway", "203.0.113.254"],
        ["ip-range", "--ip-start", "203.0.113.100/24", "--ip-end", "203.0.113.199/24"],
        ["host-range", "--ip-start", "2001:db8:2::1/64", "--ip-end", "2001:db8:2::99/64", "--gateway", "fe80::1"],
        ["ip-range", "--ip-start", "2001:db8:2::100/64", "--ip-end", "2001:db8:2::1ff/64"],
    ):
        assert dual(*declare).returncode == 0
    dual.daemon.docker_cli(
        "network", "create", "--ipv6", "--ipam-driver", dual.plugin, "--ipam-opt", "eui64=true",
        "--subnet", "203.0.113.0/24", "--gateway", "203.0.113.1", "--subnet", "2001:db8:2::/64",
        "--gateway", "2001:db8:2::1", "-o", "com.docker.network.bridge.name=shkeui0", "eui",
    )  # fmt: skip
    dual.tracker.track_network("eui")
    container = dual.daemon.client.containers.run(
        dual.daemon.image, ["sleep", "300"], network="eui", mac_address="02:42:c6:33:64:96", detach=True
    )
    dual.tracker.track_container(container)
    derived = "2001:db8:2:0:42:c6ff:fe33:6496"
    assert addresses(dual, container.id, "eui") == ("203.0.113.100", derived)
    container.restart(timeout=0)
    assert addresses(dual, container.id, "eui") == ("203.0.113.100", derived)
    container.remove(force=True)
    assert derived not in dual("leases", "--all", "-o", "json").stdout


# -------------------------------------------------------- failures: all undone
def _assert_rolled_back(shrike: Shrike, result: object, before: Snapshot, step: str) -> None:
    assert result.returncode == 1  # type: ignore[attr-defined]
    stderr = result.stderr  # type: ignore[attr-defined]
    assert f"could not {step}" in stderr, stderr
    assert "every change made before it was undone: the host is as it was" in stderr
    assert snapshot(shrike.host) == before
    assert shrike.network_labels("mynet") is None
    assert not {HOST_IP, HOST_IP6} & set(shrike.leases())
    ping6(shrike.host, ROUTER6)


def test_a_failure_in_a_netlink_step_undoes_both_families(dual: Shrike) -> None:
    dual.host.run(["ip", "link", "add", "mvblk", "link", "up0", "type", "macvlan", "mode", "bridge"], check=True)
    try:
        before = snapshot(dual.host)
        result = dual.create()
        _assert_rolled_back(dual, result, before, "make up0 a port of br0: Device or resource busy")
        assert f"- undo: put {HOST_IP}/24, {HOST_IP6}/64 on br0" in result.stderr
    finally:
        dual.host.run(["ip", "link", "del", "mvblk"], check=True)


def test_a_failure_in_the_last_step_moves_both_families_back(dual: Shrike, tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc" / "sysconfig").mkdir(parents=True)
    (root / "etc" / "sysconfig" / "network-scripts").write_text("not a folder\n")
    before = snapshot(dual.host)
    result = dual.create("--persist", "--network-manager", "ifcfg", "--root", str(root))
    _assert_rolled_back(dual, result, before, f"write {root}/etc/sysconfig/network-scripts/ifcfg-br0")
    undone = [line for line in result.stderr.splitlines() if line.startswith("- undo: ")]
    assert f"- undo: remove {HOST_IP6}/64, {HOST_IP}/24 from up0" in undone
    assert f"- undo: move route default via {ROUTER_LINK_LOCAL} metric 1024 from up0 to br0" in undone


def test_persist_writes_both_families(dual: Shrike, tmp_path: Path) -> None:
    root = tmp_path / "root"
    folder = root / "etc/systemd/network"
    folder.mkdir(parents=True)
    ra = "IPv6AcceptRA=yes\n" if accepts_ra(dual.host, "up0") else ""
    result = dual.create("--persist", "--network-manager", "networkd", "--root", str(root), "--dry-run")
    assert result.returncode == 0, result.stderr
    assert f"[Network]\n{ra}Address={HOST_IP}/24\nAddress={HOST_IP6}/64\n" in result.stdout
    assert f"[Route]\nGateway={ROUTER_LINK_LOCAL}\nMetric=1024" in result.stdout
    assert "fe80:" not in result.stdout.split("[Network]")[1].split("[Route]")[0]
