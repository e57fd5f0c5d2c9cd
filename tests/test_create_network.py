"""``shrike create-network`` for real, inside network namespaces only.

This module runs its own dockerd in a host namespace of its own (``<prefix>dkr``,
uplink ``up0`` with 198.51.100.39/24, default route via the LAN's router
198.51.100.254), since every test here rewires that host and the session's
``dockerd`` is shared. A second host, 198.51.100.40, sits on the same LAN. The CLI
runs inside the host namespace (``nsenter --net``), against that dockerd and a
``shrike server`` started per test; each test must leave the host exactly as it
found it, which the ``shrike`` fixture checks at teardown. The fixtures (``daemon``,
module-scoped, and ``shrike``) are in tests/fixtures/hostnet.py.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from shrike_cli.ipam import Ipam
from shrike_cli.stores import open_store
from tests.fixtures.dockerd import DockerDaemon
from tests.fixtures.hostnet import (
    HOST_IP,
    REPO,
    ROUTER,
    Shrike,
    Snapshot,
    assert_reaches,
    in_container_range,
    snapshot,
)

pytestmark = [pytest.mark.netns, pytest.mark.docker]


@pytest.fixture
def extras(daemon: DockerDaemon) -> Iterator[None]:
    """More on the uplink to move and restore: a secondary address, a route through a
    gateway with a metric, and a link-scope route."""
    host = daemon.host
    assert host is not None
    added = [
        ["addr", "add", "198.51.100.41/24", "brd", "+", "dev", "up0"],
        ["route", "add", "203.0.113.0/25", "via", "198.51.100.253", "dev", "up0", "metric", "50"],
        ["route", "add", "203.0.113.128/25", "dev", "up0"],
    ]
    for args in added:
        host.run(["ip", *args], check=True)
    yield
    for args in reversed(added):
        host.run(["ip", args[0], "del", *args[2:]], check=True)


# ---------------------------------------------------------------- bridge mode
def test_bridge_mode_end_to_end(shrike: Shrike) -> None:
    up0_mac = next(line for line in snapshot(shrike.host)["links"] if line.startswith("up0 ")).split()[-1]
    result = shrike.create()
    assert result.returncode == 0, result.stderr
    assert f"created Docker network mynet: {HOST_IP} is on bridge br0 with up0 as its port" in result.stdout

    state = snapshot(shrike.host)
    assert f"br0 {HOST_IP}/24 brd -" in state["addresses"]
    assert not any(line.startswith("up0 ") for line in state["addresses"])
    assert f"up0 mtu 1500 master br0 mac {up0_mac}" in state["links"]
    assert f"br0 mtu 1500 master - mac {up0_mac}" in state["links"]
    assert f"default via {ROUTER} dev br0 proto static " in state["routes"]
    assert_reaches(shrike.host, ROUTER)

    container, ip = shrike.run_container("mynet")
    assert in_container_range(ip), ip
    code, out = container.exec_run(["ip", "route"])
    assert f"default via {ROUTER}" in out.decode()
    code, out = container.exec_run(["ping", "-c", "2", "-W", "1", ROUTER])
    assert code == 0, out.decode()
    assert_reaches(shrike.host, ip)
    assert_reaches(shrike.other_host, ip)

    leases = shrike.leases()
    assert (leases[HOST_IP]["kind"], leases[HOST_IP]["state"]) == ("host", "held")
    assert leases[ip]["kind"] == "container"

    attached = snapshot(shrike.host)
    refused = shrike("create-network", "--undo")
    assert refused.returncode == 1 and "containers are attached to mynet" in refused.stderr
    assert snapshot(shrike.host) == attached
    forced = shrike("create-network", "--undo", "--force")
    assert forced.returncode == 0, forced.stderr
    assert HOST_IP not in shrike.leases()
    assert_reaches(shrike.host, ROUTER)


def test_rerun_changes_nothing_and_undo_restores_the_host_exactly(extras: None, shrike: Shrike) -> None:
    before = snapshot(shrike.host)
    assert shrike.create().returncode == 0
    network_id = shrike.daemon.client.networks.get("mynet").id
    set_up = snapshot(shrike.host)
    assert "br0 198.51.100.41/24 brd 198.51.100.255" in set_up["addresses"]
    assert "203.0.113.0/25 via 198.51.100.253 dev br0 metric 50 " in set_up["routes"]

    again = shrike.create()
    assert again.returncode == 0, again.stderr
    assert "is already set up (bridge br0 with up0 as its port), nothing changed" in again.stdout
    assert again.stderr == ""  # no step ran
    assert snapshot(shrike.host) == set_up
    assert shrike.daemon.client.networks.get("mynet").id == network_id

    undone = shrike("create-network", "--undo", "-o", "json")
    assert undone.returncode == 0, undone.stderr
    assert json.loads(undone.stdout)["status"] == "removed"
    assert snapshot(shrike.host) == before
    assert shrike.network_labels("mynet") is None
    assert HOST_IP not in shrike.leases()
    assert_reaches(shrike.host, ROUTER)


def test_dry_run_changes_nothing(shrike: Shrike, tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    before = snapshot(shrike.host)
    result = shrike.create("--dry-run", "--persist", "--network-manager", "ifcfg", "--root", str(root))
    assert result.returncode == 0, result.stderr
    assert "nothing was changed" in result.stdout
    assert "make up0 a port of br0" in result.stdout
    assert f"move route default via {ROUTER} from up0 to br0" in result.stdout
    assert f"--- {root}/etc/sysconfig/network-scripts/ifcfg-br0" in result.stdout
    assert f"IPADDR={HOST_IP}" in result.stdout
    assert snapshot(shrike.host) == before
    assert shrike.network_labels("mynet") is None
    assert shrike.leases() == {}
    assert list(root.iterdir()) == []


# ------------------------------------------------------ failures: nothing changes
def _claim_for_another_host(shrike: Shrike) -> None:
    store = open_store(None, shrike.state)
    try:
        Ipam(store, host="other-host").claim_host(HOST_IP)
    finally:
        store.close()


@pytest.mark.parametrize(
    "arrange, args, env, message",
    [
        pytest.param(
            lambda s: s.tracker.track_network(
                s.daemon.client.networks.create(
                    "mynet", driver="bridge", options={"com.docker.network.bridge.name": "blk0"},
                    ipam={"Config": [{"Subnet": "203.0.113.0/28"}]},
                )
            ),
            [], {}, "a Docker network named mynet already exists (driver bridge) and was not made by create-network",
            id="network-name-taken",
        ),
        pytest.param(
            lambda s: s.host.run(["ip", "link", "add", "br0", "type", "veth", "peer", "name", "br0peer"], check=True),
            [], {}, "--bridge br0 is taken: the host already has a veth link of that name",
            id="bridge-name-is-a-veth",
        ),
        pytest.param(
            _claim_for_another_host, [], {}, f"{HOST_IP} is already recorded as host other-host",
            id="address-of-another-host",
        ),
        pytest.param(
            lambda s: None, [], {"DOCKER_HOST": "unix:///nonexistent/docker.sock"},
            "cannot reach Docker at unix:///nonexistent/docker.sock", id="docker-unreachable",
        ),
        pytest.param(
            lambda s: None, ["--uplink", "up9"], {}, f"{HOST_IP} is on up0, not on --uplink up9", id="wrong-uplink"
        ),
        pytest.param(
            lambda s: None, ["--bridge", "br\n0"], {}, "--bridge 'br\\n0' is not an interface name",
            id="bridge-name-with-a-line-break",
        ),
    ],
)  # fmt: skip
def test_a_failed_check_changes_nothing(
    shrike: Shrike, arrange: object, args: list[str], env: dict[str, str], message: str
) -> None:
    arrange(shrike)  # type: ignore[operator]
    try:
        before, leases = snapshot(shrike.host), shrike.leases()
        result = shrike("create-network", "--ip", HOST_IP, "--plugin-name", shrike.plugin, *args, env=env)
        assert result.returncode == 1
        assert message in result.stderr
        assert "- " not in result.stderr  # failed before the first step
        assert snapshot(shrike.host) == before
        assert shrike.leases() == leases
        assert_reaches(shrike.host, ROUTER)
    finally:
        shrike.host.run(["ip", "link", "del", "br0"])  # only the veth case made one


@pytest.mark.parametrize("dry_run", [False, True], ids=["run", "dry-run"])
def test_a_network_name_docker_does_not_take_is_refused_before_anything(
    shrike: Shrike, tmp_path: Path, dry_run: bool
) -> None:
    """The name goes into the header comment of every --persist file: a line break in it
    would make the rest of the name a setting of the host's network manager."""
    folder = tmp_path / "root/etc/systemd/network"
    folder.mkdir(parents=True)
    before, leases = snapshot(shrike.host), shrike.leases()
    name = "evil\n[Network]\nDNS=203.0.113.53"
    persist = ["--persist", "--network-manager", "networkd", "--root", str(tmp_path / "root")]
    result = shrike.create("--name", name, *persist, *(["--dry-run"] if dry_run else []))
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (
        "shrike: error: 'evil\\n[Network]\\nDNS=203.0.113.53' is not a Docker network name: use letters, digits, "
        "'_', '.' and '-', starting with a letter or digit\n"
    )
    assert list(folder.iterdir()) == []
    assert (snapshot(shrike.host), shrike.leases()) == (before, leases)


def _assert_rolled_back(shrike: Shrike, result: subprocess.CompletedProcess[str], before: Snapshot, step: str) -> None:
    assert result.returncode == 1
    assert f"could not {step}" in result.stderr, result.stderr
    assert "every change made before it was undone: the host is as it was" in result.stderr
    assert snapshot(shrike.host) == before
    assert shrike.network_labels("mynet") is None
    assert HOST_IP not in shrike.leases()
    assert_reaches(shrike.host, ROUTER)


def test_a_failure_in_the_docker_step_is_undone(shrike: Shrike) -> None:
    # Docker's bridge driver refuses a second bridge network whose subnet overlaps.
    blocker = shrike.daemon.client.networks.create(
        "blocker", driver="bridge", options={"com.docker.network.bridge.name": "blk1"},
        ipam={"Config": [{"Subnet": "198.51.100.224/29"}]},
    )  # fmt: skip
    shrike.tracker.track_network(blocker)
    before = snapshot(shrike.host)
    result = shrike.create()
    _assert_rolled_back(shrike, result, before, "create Docker network mynet")
    assert "networks have overlapping IPv4" in result.stderr
    assert f"- undo: record {HOST_IP} as this host's address" in result.stderr


def test_a_failure_in_a_netlink_step_is_undone(shrike: Shrike) -> None:
    # A macvlan on the uplink holds its receive hook: the kernel refuses to make it a
    # bridge port (EBUSY) after the network exists and the bridge has its MAC.
    shrike.host.run(["ip", "link", "add", "mvblk", "link", "up0", "type", "macvlan", "mode", "bridge"], check=True)
    try:
        before = snapshot(shrike.host)
        result = shrike.create()
        _assert_rolled_back(shrike, result, before, "make up0 a port of br0: Device or resource busy")
        assert "- undo: set br0's MAC" in result.stderr
        assert "- undo: create Docker network mynet" in result.stderr
    finally:
        shrike.host.run(["ip", "link", "del", "mvblk"], check=True)


def test_sigterm_mid_way_rolls_back(shrike: Shrike) -> None:
    before = snapshot(shrike.host)
    argv = ["nsenter", f"--net={shrike.host.netns_path}", *shrike.argv("create-network", "--ip", HOST_IP)]
    process = subprocess.Popen(
        [*argv, "--plugin-name", shrike.plugin], env=shrike.env, cwd=REPO,
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert process.stderr is not None
        seen = []
        for line in process.stderr:
            seen.append(line)
            if line.startswith("- create Docker network"):
                # The step in progress finishes, then everything done so far is undone.
                process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 130, "".join(seen)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert any(line.startswith("- undo: create Docker network mynet") for line in seen), "".join(seen)
    assert snapshot(shrike.host) == before
    assert shrike.network_labels("mynet") is None
    assert HOST_IP not in shrike.leases()
    assert_reaches(shrike.host, ROUTER)


def test_a_failure_in_the_last_step_moves_everything_back(extras: None, shrike: Shrike, tmp_path: Path) -> None:
    # --persist writes last, after every netlink move: a root whose network-scripts
    # folder is a file makes that write fail.
    root = tmp_path / "root"
    (root / "etc" / "sysconfig").mkdir(parents=True)
    (root / "etc" / "sysconfig" / "network-scripts").write_text("not a folder\n")
    before = snapshot(shrike.host)
    result = shrike.create("--persist", "--network-manager", "ifcfg", "--root", str(root))
    _assert_rolled_back(shrike, result, before, f"write {root}/etc/sysconfig/network-scripts/ifcfg-br0")
    undone = [line for line in result.stderr.splitlines() if line.startswith("- undo: ")]
    assert undone[0].startswith("- undo: write ")  # the failed step's own partial work
    assert undone[1:] == [
        "- undo: remove 198.51.100.41/24, 198.51.100.39/24 from up0",
        "- undo: move route 203.0.113.128/25 from up0 to br0",
        "- undo: move route 203.0.113.0/25 via 198.51.100.253 metric 50 from up0 to br0",
        f"- undo: move route default via {ROUTER} from up0 to br0",
        "- undo: make up0 a port of br0",
        "- undo: put 198.51.100.39/24, 198.51.100.41/24 on br0",
        next(line for line in undone if line.startswith("- undo: set br0's MAC")),
        next(line for line in undone if line.startswith("- undo: create Docker network")),
        f"- undo: record {HOST_IP} as this host's address (host lease)",
    ]


# ---------------------------------------------------------------- macvlan mode
def test_macvlan_mode_end_to_end(shrike: Shrike) -> None:
    before = snapshot(shrike.host)
    result = shrike.create("--mode", "macvlan", "--name", "mvnet", "--macvlan-shim")
    assert result.returncode == 0, result.stderr
    assert "created Docker network mvnet: 198.51.100.39 is on macvlan on up0" in result.stdout
    state = snapshot(shrike.host)
    # The host's own address and routes are untouched; only the shim was added.
    assert [a for a in state["addresses"] if not a.startswith("shim-mvnet ")] == before["addresses"]
    assert f"default via {ROUTER} dev up0 proto static " in state["routes"]
    assert "198.51.100.128/26 dev shim-mvnet proto static scope link " in state["routes"]

    container, ip = shrike.run_container("mvnet")
    assert in_container_range(ip), ip
    code, out = container.exec_run(["ping", "-c", "2", "-W", "1", ROUTER])
    assert code == 0, out.decode()
    assert_reaches(shrike.host, ip)  # through the shim
    assert_reaches(shrike.other_host, ip)

    again = shrike.create("--mode", "macvlan", "--name", "mvnet", "--macvlan-shim")
    assert again.returncode == 0 and "already set up" in again.stdout, again.stderr
    container.remove(force=True)
    undone = shrike("create-network", "--undo", "--name", "mvnet")
    assert undone.returncode == 0, undone.stderr
    assert snapshot(shrike.host) == before
    assert HOST_IP not in shrike.leases()


# ------------------------------------------------------------------- persist
@pytest.mark.parametrize("manager", ["ifcfg", "networkd"])
def test_persist_writes_the_files_and_undo_restores_the_old_ones(shrike: Shrike, tmp_path: Path, manager: str) -> None:
    root = tmp_path / "root"
    if manager == "ifcfg":
        folder = root / "etc/sysconfig/network-scripts"
        folder.mkdir(parents=True)  # what detection looks for
        old = {"ifcfg-up0": f"DEVICE=up0\nIPADDR={HOST_IP}\nPREFIX=24\nGATEWAY={ROUTER}\n"}
    else:
        folder = root / "etc/systemd/network"
        folder.mkdir(parents=True)
        unit = root / "etc/systemd/system/multi-user.target.wants/systemd-networkd.service"
        unit.parent.mkdir(parents=True)
        unit.symlink_to("/lib/systemd/system/systemd-networkd.service")
        old = {"20-up0.network": f"[Match]\nName=up0\n\n[Network]\nAddress={HOST_IP}/24\nGateway={ROUTER}\n"}
    for name, text in old.items():
        (folder / name).write_text(text)

    result = shrike.create("--persist", "--root", str(root))
    assert result.returncode == 0, result.stderr
    written = {p.name: p.read_text() for p in folder.iterdir()}
    mac = next(line for line in snapshot(shrike.host)["links"] if line.startswith("br0 ")).split()[-1]
    if manager == "ifcfg":
        assert f"IPADDR={HOST_IP}\nPREFIX=24\nGATEWAY={ROUTER}\n" in written["ifcfg-br0"]
        assert f"MACADDR={mac}\n" in written["ifcfg-br0"]
        assert "BRIDGE=br0\n" in written["ifcfg-up0"]
        assert written["ifcfg-up0.shrike.orig"] == old["ifcfg-up0"]
    else:
        assert f"Address={HOST_IP}/24\n\n[Route]\nGateway={ROUTER}\n" in written["10-shrike-br0.network"]
        assert f"MACAddress={mac}\n" in written["10-shrike-br0.netdev"]
        assert "Bridge=br0\n" in written["10-shrike-up0.network"]
        assert "20-up0.network" not in written
        assert written["20-up0.network.shrike.orig"] == old["20-up0.network"]

    undone = shrike("create-network", "--undo", "--persist", "--root", str(root))
    assert undone.returncode == 0, undone.stderr
    assert {p.name: p.read_text() for p in folder.iterdir()} == old
    assert re.search(r"remove Docker network mynet$", undone.stderr.strip())
