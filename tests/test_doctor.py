"""``shrike doctor`` against real things: stores, plugin sockets, dockerd, a host set up
by create-network in a namespace of its own.

Every run names its plugin directory and DOCKER_HOST, so that nothing of the machine's
own (a shrike or dockerd running on it) takes part.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from docker.models.networks import Network
from typer.testing import CliRunner

from shrike_cli.cli import app
from shrike_cli.doctor import (
    FAIL,
    OK,
    WARN,
    Check,
    Process,
    bridge_checks,
    gateway_lease_check,
    host_lease_check,
    macvlan_check,
    start_order_check,
    unit_of,
)
from shrike_cli.hostnet.hostview import Address, HostView, Link, Route
from shrike_cli.ipam import Ipam
from shrike_cli.stores import EmbeddedStore
from tests.fixtures.dockerd import DockerDaemon, Tracker
from tests.fixtures.etcd import free_port
from tests.fixtures.hostnet import HOST_IP, ROUTER, Shrike
from tests.fixtures.netns import free_name
from tests.fixtures.plugin import SHRIKE, Plugin, ServerProcess, declare_lan

NO_DOCKER = "unix:///nonexistent/docker.sock"
LAN = ["host-range", "--ip-start=198.51.100.1/24", "--ip-end=198.51.100.99/24", "--gateway=198.51.100.254"]
CONTAINERS = ["ip-range", "--ip-start=198.51.100.100/24", "--ip-end=198.51.100.199/24"]


class Report:
    """One run of ``doctor --output json``: its exit code and checks by name."""

    def __init__(self, code: int, stdout: str, stderr: str) -> None:
        self.code, self.stderr = code, stderr
        self.data: dict[str, Any] = json.loads(stdout)
        self.checks = {check["name"]: check for check in self.data["checks"]}
        assert_shape(self.data, code)

    def __getitem__(self, name: str) -> dict[str, str]:
        return self.checks[name]

    def status(self, name: str) -> str:
        return self.checks[name]["status"]


def assert_shape(data: dict[str, Any], code: int) -> None:
    """The JSON contract: ``ok`` and a list of checks with four strings each; a hint for
    every problem; exit 1 exactly when a check failed."""
    assert set(data) == {"ok", "checks"}
    for check in data["checks"]:
        assert set(check) == {"name", "status", "detail", "hint"}
        assert check["status"] in (OK, WARN, FAIL) and check["detail"]
        assert bool(check["hint"]) == (check["status"] == FAIL) or check["status"] == WARN, check
    names = [check["name"] for check in data["checks"]]
    assert len(names) == len(set(names)), names
    failed = any(check["status"] == FAIL for check in data["checks"])
    assert (data["ok"], code) == (not failed, 1 if failed else 0)


def cli(store: list[str], *args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """The CLI in-process; Docker is unreachable unless ``env`` names one."""
    result = CliRunner().invoke(
        app, [*store, *args], env={"CLUSTER_STORE": "", "DEBUG": "", "DOCKER_HOST": NO_DOCKER, **(env or {})}
    )
    return result.exit_code, result.stdout, result.stderr


def doctor(store: list[str], *args: str, plugin_dir: Path, env: dict[str, str] | None = None) -> Report:
    return Report(*cli(store, "doctor", "--output", "json", "--plugin-dir", str(plugin_dir), *args, env=env))


def declare(store: list[str], *declarations: list[str]) -> None:
    for args in declarations:
        code, _, stderr = cli(store, *args)
        assert code == 0, stderr


# --------------------------------------------------------------------- the store
def test_a_missing_store_fails_with_a_hint_to_run_host_range_and_stays_missing(tmp_path: Path) -> None:
    report = doctor(["--state-dir", str(tmp_path / "state")], plugin_dir=tmp_path)
    assert report.status("store") == FAIL
    assert (
        report["store"]["detail"]
        == f"there is no embedded store at {tmp_path}/state/shrike.db: nothing is declared on this host"
    )
    assert "shrike host-range --ip-start=" in report["store"]["hint"]
    assert "declarations" not in report.checks
    assert not (tmp_path / "state").exists()


def test_an_empty_store_fails_with_a_hint_to_run_host_range(store_args: list[str], tmp_path: Path) -> None:
    assert cli(store_args, "leases")[0] == 0  # the embedded store's file now exists, empty
    report = doctor(store_args, plugin_dir=tmp_path)
    assert report.status("store") == OK
    assert (report.status("declarations"), report["declarations"]["detail"]) == (FAIL, "no LAN subnet is declared")
    assert report["declarations"]["hint"].startswith("declare it: shrike host-range --ip-start=")
    assert report.code == 1


def test_a_lan_without_container_range_fails_with_a_hint_to_run_ip_range(
    store_args: list[str],
    tmp_path: Path,
) -> None:
    declare(store_args, LAN)
    check = doctor(store_args, plugin_dir=tmp_path)["declarations"]
    assert (check["status"], check["detail"]) == (FAIL, "LAN 198.51.100.0/24 is declared, but no container range")
    assert "shrike ip-range --ip-start=FIRST/24 --ip-end=LAST/24" in check["hint"]


def test_a_declared_store_passes_its_checks(store_args: list[str], tmp_path: Path) -> None:
    declare(store_args, LAN, CONTAINERS)
    report = doctor(store_args, plugin_dir=tmp_path)
    where = f"embedded store {tmp_path}/state/shrike.db" if "--state-dir" in store_args else f"etcd at {store_args[1]}"
    assert report["store"] == {"name": "store", "status": OK, "detail": f"{where} answers", "hint": ""}
    assert report["declarations"]["status"] == OK
    assert report["declarations"]["detail"] == (
        "LAN 198.51.100.0/24 (gateway 198.51.100.254): 99 host and 100 container addresses in 1 range"
    )


def test_an_unreachable_etcd_fails_naming_it(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    check = doctor(["--cluster-store", url], plugin_dir=tmp_path)["store"]
    assert check["status"] == FAIL and url in check["detail"] and "etcd" in check["hint"]


# -------------------------------------------------------------------- the plugin
def plugin_check(socket_dir: Path) -> dict[str, str]:
    return doctor([], "--plugin-name", "shrike", plugin_dir=socket_dir)["plugin"]


def test_a_missing_socket_fails_with_how_to_start_the_plugin(socket_dir: Path) -> None:
    check = plugin_check(socket_dir)
    assert check["status"] == FAIL
    assert check["detail"] == f"there is no plugin socket {socket_dir}/shrike.sock: the plugin is not running"
    assert check["hint"] == f"start it: shrike server --plugin-name shrike --plugin-dir {socket_dir}"


def test_a_stale_socket_is_told_apart(socket_dir: Path) -> None:
    # Bound and closed without listening: what a server killed with SIGKILL leaves.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stale:
        stale.bind(str(socket_dir / "shrike.sock"))
    check = plugin_check(socket_dir)
    assert check["status"] == FAIL
    assert (
        check["detail"] == f"the socket {socket_dir}/shrike.sock exists but nothing answers: is shrike server running?"
    )
    assert check["hint"].startswith("start it: shrike server --plugin-name shrike")


def test_a_socket_that_never_answers_fails_within_the_timeout(socket_dir: Path) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as silent:
        silent.bind(str(socket_dir / "shrike.sock"))
        silent.listen(1)  # the kernel takes the connection; nobody reads the request
        check = plugin_check(socket_dir)
    assert check["status"] == FAIL
    assert "did not answer Plugin.Activate within 2 s" in check["detail"]


def test_a_file_that_is_not_a_socket(socket_dir: Path) -> None:
    (socket_dir / "shrike.sock").write_text("")
    check = plugin_check(socket_dir)
    assert (check["status"], check["detail"]) == (FAIL, f"{socket_dir}/shrike.sock is not a socket")


def test_a_running_server_answers(socket_dir: Path, tmp_path: Path) -> None:
    server = ServerProcess(["--state-dir", str(tmp_path / "state")], socket_dir, "shrike", tmp_path / "server.log")
    try:
        server.start()
        check = plugin_check(socket_dir)
    finally:
        server.stop()
    assert check == {
        "name": "plugin",
        "status": OK,
        "detail": f"{socket_dir}/shrike.sock answers Plugin.Activate as an IPAM driver",
        "hint": "",
    }


# --------------------------------------------------------------------- Docker
def test_unreachable_docker_fails_naming_where_and_skips_the_network(tmp_path: Path) -> None:
    report = doctor(["--state-dir", str(tmp_path / "state")], plugin_dir=tmp_path)
    check = report["docker"]
    assert check["status"] == FAIL
    assert check["detail"].startswith(f"cannot use dockerd at {NO_DOCKER}: No such file or directory")
    assert "start dockerd" in check["hint"] and "DOCKER_HOST" in check["hint"]
    assert "network" not in report.checks and "host network" not in report.checks


def test_the_table_says_what_to_do_and_counts_on_stderr(tmp_path: Path) -> None:
    code, stdout, stderr = cli(["--state-dir", str(tmp_path / "state")], "doctor", "--plugin-dir", str(tmp_path))
    assert code == 1
    header, *rows = stdout.splitlines()
    assert header.split() == ["STATUS", "CHECK", "FOUND", "WHAT", "TO", "DO"]
    assert [row.split()[:2] for row in rows] == [["fail", "store"], ["fail", "plugin"], ["fail", "docker"]]
    assert stderr == "3 of 3 checks failed: see WHAT TO DO\n"


@pytest.mark.docker
def test_a_host_with_the_plugin_and_its_network_passes(
    plugin: Plugin,
    network: Network,
    dockerd: DockerDaemon,
) -> None:
    store = plugin.server.store_args
    env = {"DOCKER_HOST": dockerd.url}
    args = ("--plugin-name", plugin.name, "--network", network.name)
    report = doctor(store, *args, plugin_dir=Path(dockerd.plugin_dir), env=env)
    assert report.code == 0, report.data
    assert {name: check["status"] for name, check in report.checks.items()} == {
        "store": OK,
        "declarations": OK,
        "plugin": OK,
        "docker": OK,
        "network": OK,
        # The plugin started after dockerd, but before its network was made.
        "start order": OK,
        # A network made with docker network create, not create-network: no labels say
        # which bridge and uplink to look at.
        "host network": WARN,
        "host lease": OK,
    }
    assert report["docker"]["detail"].startswith("Docker 20.10")
    assert report["docker"]["detail"].endswith(f"at {dockerd.url}")
    assert report["network"]["detail"] == f"{network.name} uses this plugin, on the declared subnet 198.51.100.0/24"
    assert report["host lease"]["detail"] == f"198.51.100.39 recorded as this host's ({plugin.ipam.host})"

    missing = doctor(
        store, "--plugin-name", plugin.name, "--network", "nosuch", plugin_dir=Path(dockerd.plugin_dir), env=env
    )
    assert (missing.code, missing.status("network")) == (1, FAIL)
    assert missing["network"]["detail"] == "Docker has no network named nosuch"
    assert "shrike create-network --ip HOST_IP --name nosuch" in missing["network"]["hint"]

    other = doctor(
        store, "--plugin-name", "other", "--network", network.name, plugin_dir=Path(dockerd.plugin_dir), env=env
    )
    assert other["network"]["detail"] == f"network {network.name} uses the IPAM driver {plugin.name}, not other"
    assert f"--plugin-name {plugin.name}" in other["network"]["hint"]


@pytest.mark.docker
def test_a_network_on_a_subnet_the_store_does_not_declare_fails(
    plugin: Plugin,
    network: Network,
    dockerd: DockerDaemon,
    tmp_path: Path,
) -> None:
    # Another store, as on a host whose server and doctor look at different stores.
    elsewhere = ["--state-dir", str(tmp_path / "elsewhere")]
    declare(
        elsewhere,
        ["host-range", "--ip-start=203.0.113.1/24", "--ip-end=203.0.113.9/24", "--gateway=203.0.113.254"],
        ["ip-range", "--ip-start=203.0.113.100/24", "--ip-end=203.0.113.109/24"],
    )
    args = ("--plugin-name", plugin.name, "--network", network.name)
    report = doctor(elsewhere, *args, plugin_dir=Path(dockerd.plugin_dir), env={"DOCKER_HOST": dockerd.url})
    check = report["network"]
    assert check["status"] == FAIL
    assert check["detail"] == (
        f"network {network.name}'s subnet 198.51.100.0/24 is not declared in the store {tmp_path}/elsewhere/shrike.db"
    )
    assert "--cluster-store or --state-dir" in check["hint"]


# ------------------------------------------------ networks however they were made
def docker_network_create(dockerd: DockerDaemon, tracker: Tracker, plugin: str, subnet: str, gateway: str) -> str:
    """``docker network create --ipam-driver PLUGIN ...`` as the README's manual set-up does."""
    name = f"shk-{uuid.uuid4().hex[:8]}"
    router = subnet.rsplit(".", 1)[0] + ".254"
    tracker.track_network(name)
    dockerd.docker_cli(
        "network", "create", "--ipam-driver", plugin, "--subnet", subnet, "--gateway", gateway,
        "--aux-address", f"DefaultGatewayIPv4={router}", "-o", f"com.docker.network.bridge.name={free_name('shkb')}",
        "-o", "com.docker.network.bridge.enable_ip_masquerade=false", name,
    )  # fmt: skip
    return name


@pytest.mark.docker
def test_networks_made_by_docker_network_create_are_found_and_pass(
    plugin: Plugin, dockerd: DockerDaemon, docker_cleanup: Tracker
) -> None:
    # A host set up without create-network: no address is recorded as this host's.
    plugin.ipam.release_host(HOST_IP)
    lan = docker_network_create(dockerd, docker_cleanup, plugin.name, "198.51.100.0/24", HOST_IP)
    env = {"DOCKER_HOST": dockerd.url}
    args = ("--plugin-name", plugin.name)
    # No --network: the networks that use the plugin, whatever their names.
    report = doctor(plugin.server.store_args, *args, plugin_dir=Path(dockerd.plugin_dir), env=env)
    assert report.code == 0, report.data
    assert report["network"]["detail"] == f"{lan} uses this plugin, on the declared subnet 198.51.100.0/24"
    assert report.status("host network") == WARN
    # The gateway, this host's address, is recorded (as the gateway, or as this host's).
    assert report.status("host lease") == OK and report["host lease"]["detail"].startswith(HOST_IP)

    # Two networks: each one's checks carry its name.
    plugin.ipam.declare_host_range("203.0.113.1/24", "203.0.113.99/24", "203.0.113.254")
    plugin.ipam.declare_ip_range("203.0.113.100/24", "203.0.113.103/24")
    small = docker_network_create(dockerd, docker_cleanup, plugin.name, "203.0.113.0/24", "203.0.113.200")
    report = doctor(plugin.server.store_args, *args, plugin_dir=Path(dockerd.plugin_dir), env=env)
    assert report.code == 0, report.data
    assert report[f"network ({small})"]["detail"] == f"{small} uses this plugin, on the declared subnet 203.0.113.0/24"
    assert report.status(f"network ({lan})") == OK
    assert report["host network"]["detail"] == (
        f"networks {', '.join(sorted([lan, small]))} were not made by create-network: their bridges and this host's "
        "links are not checked"
    )


def test_a_gateway_is_checked_against_the_store(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path / "shrike.db")
    try:
        ipam = Ipam(store, host="host-a")
        ipam.declare_host_range("198.51.100.1/24", "198.51.100.99/24", ROUTER)
        ipam.declare_ip_range("198.51.100.100/24", "198.51.100.199/24")
        ipam.request_gateway("198.51.100.0/24", "198.51.100.250")
        Ipam(store, host="host-b").claim_host("198.51.100.40")
        found = {
            gateway: gateway_lease_check(ipam, "mynet", gateway)
            for gateway in ("198.51.100.250", "198.51.100.40", "198.51.100.251")
        }
    finally:
        store.close()
    assert (found["198.51.100.250"].status, found["198.51.100.250"].detail) == (
        OK,
        "198.51.100.250, the gateway of mynet, is recorded as a gateway address",
    )
    assert (found["198.51.100.40"].status, found["198.51.100.40"].detail) == (
        FAIL,
        "198.51.100.40, the gateway of mynet, is recorded as host host-b's address, not this host's (host-a)",
    )
    assert found["198.51.100.251"].status == WARN
    assert found["198.51.100.251"].detail.startswith("198.51.100.251, the gateway of mynet, is not recorded")


@pytest.mark.docker
def test_a_plugin_name_no_network_uses_is_told_apart_from_a_wrong_dockerd(
    plugin: Plugin, network: Network, dockerd: DockerDaemon
) -> None:
    env = {"DOCKER_HOST": dockerd.url}
    report = doctor(plugin.server.store_args, "--plugin-name", "shrike", plugin_dir=Path(dockerd.plugin_dir), env=env)
    check = report["network"]
    assert check["status"] == FAIL
    assert check["detail"].startswith(
        f"no network of this dockerd uses the IPAM driver 'shrike'; networks here use '{plugin.name}' ({network.name})"
    )
    assert check["hint"] == (
        f"give --plugin-name {plugin.name} (or, if the plugin is 'shrike', check DOCKER_HOST (now {dockerd.url}))"
    )


# ------------------------------------------------------------------ start order
@pytest.mark.docker
def test_a_plugin_started_after_dockerd_and_its_networks_is_warned_of(
    plugin: Plugin, network: Network, dockerd: DockerDaemon
) -> None:
    env = {"DOCKER_HOST": dockerd.url}
    args = ("--plugin-name", plugin.name)
    check = doctor(plugin.server.store_args, *args, plugin_dir=Path(dockerd.plugin_dir), env=env)["start order"]
    assert check == {
        "name": "start order",
        "status": OK,
        "detail": f"shrike server (pid {plugin.server.pid}) started after dockerd (pid {dockerd.pid}), "
        "but before the networks that use it were made",
        "hint": "",
    }

    # As after a boot that started dockerd first: the network was there before the plugin.
    plugin.server.stop()
    plugin.server.start()
    report = doctor(plugin.server.store_args, *args, plugin_dir=Path(dockerd.plugin_dir), env=env)
    assert report.code == 0  # a warning: it works now, and fails at the next boot
    assert report["start order"] == {
        "name": "start order",
        "status": WARN,
        "detail": f"shrike server (pid {plugin.server.pid}) started after dockerd (pid {dockerd.pid}), which has "
        f"networks that use it ({network.name}): if dockerd starts first at boot, it stalls about 60 s and "
        "--restart always containers on them stay exited",
        "hint": "start shrike server before dockerd: with systemd, install examples/shrike.service "
        "(Before=docker.service); otherwise order it before docker in the init system",
    }


def test_the_systemd_unit_of_a_process_and_its_order() -> None:
    shrike = Process(1, "shrike", 200, datetime.now(timezone.utc), "shrike.service")
    dockerd = Process(2, "dockerd", 100, datetime.now(timezone.utc), "docker.service")
    ordered = start_order_check(shrike, dockerd, [], ordered=True)
    assert ordered is not None
    assert (ordered.status, ordered.detail) == (OK, "systemd starts shrike.service before docker.service")
    # With docker.socket, systemd holds dockerd's socket: the units' order still tells.
    unordered = start_order_check(shrike, None, [], ordered=False)
    assert unordered is not None and unordered.status == WARN
    assert unordered.hint.startswith("systemctl edit shrike.service, add 'Before=docker.service' under [Unit]")
    for cgroup, unit in [
        ("0::/system.slice/shrike.service\n", "shrike.service"),
        ("12:memory:/system.slice/x.service\n1:name=systemd:/system.slice/shrike.service\n0::/\n", "shrike.service"),
        ("0::/user.slice/user-0.slice/session-3.scope\n", None),
        ("0::/\n", None),
    ]:
        assert unit_of(cgroup) == unit, cgroup


BRIDGE_CHECKS = ("bridge", "host address", "uplink", "default route")


@pytest.fixture
def set_up(shrike: Shrike) -> Iterator[Shrike]:
    """A host namespace that create-network has put on bridge br0 (undone by ``shrike``)."""
    result = shrike.create()
    assert result.returncode == 0, result.stderr
    yield shrike


def doctor_in(host: Shrike) -> Report:
    """``shrike doctor`` inside the host's namespace, with its dockerd and plugin."""
    result = host("doctor", "--plugin-name", host.plugin, "--output", "json")
    return Report(result.returncode, result.stdout, result.stderr)


@pytest.mark.netns
@pytest.mark.docker
def test_a_host_set_up_by_create_network_passes_and_each_breakage_is_named(set_up: Shrike) -> None:
    report = doctor_in(set_up)
    assert report.code == 0, report.data
    assert all(check["status"] == OK for check in report.data["checks"]), report.data
    assert [name for name in report.checks if name in BRIDGE_CHECKS] == list(BRIDGE_CHECKS)
    assert report["host address"]["detail"] == f"br0 holds this host's address {HOST_IP}"
    assert report["uplink"]["detail"] == "up0 is a port of br0"
    assert report["default route"]["detail"] == f"the default route (default via {ROUTER}) goes through br0"
    assert report["host lease"]["detail"].startswith(f"{HOST_IP} recorded as this host's (")

    # Each breakage is put right with the command doctor gives (the fixture checks that
    # the host ends exactly as it was).
    host = set_up.host
    route = host.run(["ip", "route", "show", "default"], check=True).stdout.split()
    host.run(["ip", "route", "del", "default"], check=True)
    try:
        check = doctor_in(set_up)["default route"]
        assert (check["status"], check["detail"]) == (FAIL, "this host has no default route")
        assert check["hint"] == f"ip route replace default via {ROUTER} dev br0"
    finally:
        host.run(["ip", "route", "add", *route], check=True)

    host.run(["ip", "link", "set", "up0", "nomaster"], check=True)
    try:
        report = doctor_in(set_up)
        assert (report.code, report["uplink"]["detail"]) == (1, "up0 is not a port of br0")
        assert report["uplink"]["hint"] == "ip link set up0 master br0"
    finally:
        host.run(report["uplink"]["hint"].split(), check=True)
    assert doctor_in(set_up).code == 0


# ------------------------------------------------ bridge checks on hosts as values
BR0 = Link("br0", 3, kind="bridge")
UP0 = Link("up0", 2, kind="veth", master="br0")


def bridge_host(**changes: Any) -> HostView:
    """A host as create-network leaves it, with ``changes`` to its parts."""
    parts: dict[str, Any] = {
        "links": (Link("lo", 1), UP0, BR0, Link("eth1", 4)),
        "addresses": {"br0": (Address(HOST_IP, 24),)},
        "routes": {"br0": (Route("0.0.0.0/0", ROUTER),)},
        **changes,
    }
    return HostView(**parts)


def findings(host: HostView) -> dict[str, tuple[str, str]]:
    checks: list[Check] = list(bridge_checks(host, "mynet", "br0", "up0", HOST_IP, ROUTER))
    return {check.name: (check.status, check.detail) for check in checks}


def test_bridge_checks_pass_on_a_host_as_create_network_leaves_it() -> None:
    assert {name: status for name, (status, _) in findings(bridge_host()).items()} == dict.fromkeys(BRIDGE_CHECKS, OK)


TWO_DEFAULTS = {
    "br0": (Route("0.0.0.0/0", ROUTER, metric=100),),
    "eth1": (Route("0.0.0.0/0", "10.9.0.1", metric=50),),
}
BROKEN = [
    ({"links": (UP0,)}, "bridge", "mynet needs bridge br0, but there is no such link"),
    (
        {"links": (UP0, Link("br0", 3, kind="veth"))},
        "bridge",
        "mynet needs bridge br0, but br0 is a veth link, not a bridge",
    ),
    ({"links": (UP0, Link("br0", 3, kind="bridge", up=False))}, "bridge", "bridge br0 is down"),
    ({"addresses": {"up0": (Address(HOST_IP, 24),)}}, "host address", f"{HOST_IP} is on up0, not on br0"),
    ({"addresses": {}}, "host address", f"{HOST_IP} is on no interface of this host, not on br0"),
    ({"links": (BR0,)}, "uplink", "the uplink up0 recorded on mynet is gone"),
    ({"links": (BR0, Link("up0", 2, master="br9"))}, "uplink", "up0 is not a port of br0 (it is a port of br9)"),
    ({"links": (BR0, Link("up0", 2, master="br0", up=False))}, "uplink", "up0, the port of br0, is down"),
    ({"routes": {}}, "default route", "this host has no default route"),
    (
        {"routes": TWO_DEFAULTS},
        "default route",
        "the default route (default via 10.9.0.1 metric 50) goes through eth1, not br0",
    ),
]


@pytest.mark.parametrize(("changes", "name", "detail"), BROKEN, ids=[detail for _, _, detail in BROKEN])
def test_bridge_checks_name_what_is_wrong(changes: dict[str, Any], name: str, detail: str) -> None:
    assert findings(bridge_host(**changes))[name] == (FAIL, detail)


def test_macvlan_check_names_a_missing_parent_or_shim() -> None:
    host = HostView(links=(Link("up0", 2), Link("shim-mynet", 5, kind="macvlan")))
    assert macvlan_check(host, "mynet", "up0", "shim-mynet").status == OK
    assert macvlan_check(host, "mynet", "up1", None).detail == "up1, the parent link of mynet, is gone"
    missing = macvlan_check(host, "mynet", "up0", "shim-other")
    assert (missing.status, missing.detail) == (
        FAIL,
        "the macvlan shim shim-other is missing: this host cannot reach its containers",
    )


# ------------------------------------------------------------- this host's lease
@pytest.fixture
def ipam(tmp_path: Path) -> Iterator[Ipam]:
    store = EmbeddedStore(tmp_path / "shrike.db")
    try:
        ipam = Ipam(store, host="host-a")
        declare_lan(ipam)  # claims 198.51.100.39 for host-a
        yield ipam
    finally:
        store.close()


def test_host_lease_of_this_host(ipam: Ipam) -> None:
    assert host_lease_check(ipam, "198.51.100.39", "mynet") == Check(
        "host lease", OK, "198.51.100.39 recorded as this host's (host-a)"
    )
    # No create-network label: any host address of this host does.
    assert host_lease_check(ipam, None, "mynet").detail == "198.51.100.39 recorded as this host's (host-a)"


def test_host_lease_missing_or_another_hosts(ipam: Ipam) -> None:
    missing = host_lease_check(ipam, "198.51.100.40", "mynet")
    assert (missing.status, missing.detail) == (
        FAIL,
        "198.51.100.40, this host's address on mynet, is not recorded in the store",
    )
    assert missing.hint.startswith("shrike create-network --ip 198.51.100.40 --name mynet records it")
    other = host_lease_check(Ipam(ipam.store, host="host-b"), "198.51.100.39", "mynet")
    assert (other.status, other.detail) == (
        FAIL,
        "198.51.100.39 is recorded as host host-a's, not as this host's (host-b)",
    )
    assert "shrike release --host 198.51.100.39" in other.hint
    nothing = host_lease_check(Ipam(ipam.store, host="host-b"), None, "mynet")
    assert (nothing.status, nothing.detail) == (FAIL, "no address is recorded as this host's (host-b)")


def test_doctor_is_listed_and_documented() -> None:
    code, stdout, _ = cli([], "doctor", "--help")
    assert code == 0 and "--plugin-name" in stdout and "Exits 1 if a check fails" in " ".join(stdout.split())
    assert "doctor" in cli([], "--help")[1]


def test_json_is_all_stdout_holds(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("CLUSTER_STORE", "DEBUG")}
    result = subprocess.run(
        [*SHRIKE, "--state-dir", str(tmp_path), "doctor", "-o", "json", "--plugin-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**env, "DOCKER_HOST": NO_DOCKER},
    )
    assert result.returncode == 1 and result.stderr == ""
    assert_shape(json.loads(result.stdout), result.returncode)
