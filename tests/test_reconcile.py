"""Leaked addresses: ``shrike reconcile`` and the server's periodic reconcile against a real
dockerd (20.10) and ``shrike server``; the compare-and-swap under them on both stores."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from docker.models.networks import Network

from shrike_cli.ipam import Ipam
from shrike_cli.model import STATE_HELD, STATE_PARKED, STATE_RELEASED, STATE_RESERVED
from shrike_cli.owners import host_container_leases
from shrike_cli.plugin.client import PluginClient
from shrike_cli.reconcile import PeriodicReconcile, format_duration, parse_duration
from tests.fixtures.dockerd import DockerDaemon, Tracker
from tests.fixtures.plugin import (
    SHRIKE,
    SMALL_SUBNET,
    Plugin,
    SmallLan,
    docker_connect,
    endpoint,
    run,
    wait_until,
)
from tests.fixtures.stores import LAN

MAC = "02:00:5e:00:53:01"
RESERVED_MAC = "02:00:5e:00:53:02"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("10m", 600), ("1h", 3600), ("1h30m", 5400), ("2d", 172800), ("0", 0), ("1.5", 1.5)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "m", "10x", "1h 30m", "-1s", "10m30"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(text)


def test_ages_read_as_the_two_largest_units() -> None:
    assert [format_duration(s) for s in (0, 59.9, 60, 61, 5400, 86700)] == ["0s", "59s", "1m", "1m1s", "1h30m", "1d5m"]


# ------------------------------------------------------------ the Ipam, no docker
def test_release_if_unchanged_is_a_compare_and_swap_on_the_lease(lan_ipam: Ipam) -> None:
    ip = lan_ipam.request_address(LAN, mac=MAC).ip
    [(_, stale)] = lan_ipam.lease_entries()
    # Released and taken again (the same MAC gets the same address) after the snapshot.
    lan_ipam.release_address(ip)
    assert lan_ipam.request_address(LAN, mac=MAC).ip == ip
    assert lan_ipam.release_if_unchanged(ip, stale) is None
    assert lan_ipam.lease(ip).state == STATE_HELD

    [(_, current)] = lan_ipam.lease_entries()
    assert lan_ipam.release_if_unchanged(ip, current).state == STATE_RELEASED
    # A leaked reservation goes back to reserved, as when its container stops.
    named = lan_ipam.reserve("web1").ip
    lan_ipam.request_address(LAN, named)
    [revision] = [rev for lease, rev in lan_ipam.lease_entries() if lease.ip == named]
    assert lan_ipam.release_if_unchanged(named, revision).state == STATE_RESERVED


def test_release_parked_frees_only_an_address_still_parked(lan_ipam: Ipam) -> None:
    """Regression (the storm): an address taken back between the read of the parked list
    and the release was said to be released (logged, and reported by reconcile --fix)."""
    owner = {"container_id": "c1", "name": "web1"}
    ip = lan_ipam.request_address(LAN, mac=MAC, owner=owner).ip
    assert lan_ipam.release_address(ip, keep=True).state == STATE_PARKED
    [entry] = lan_ipam.parked()
    lan_ipam.request_address(LAN, ip, owner=owner)  # its container comes back with --ip
    assert lan_ipam.release_parked(entry) is None
    assert lan_ipam.lease(ip).state == STATE_HELD

    lan_ipam.release_address(ip, keep=True)
    [entry] = lan_ipam.parked()
    assert lan_ipam.release_parked(entry).state == STATE_RELEASED


def test_an_unreachable_dockerd_is_one_line(tmp_path: Path) -> None:
    nowhere = f"unix://{tmp_path}/none.sock"
    result = subprocess.run(
        [*SHRIKE, "--state-dir", str(tmp_path), "reconcile"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "DOCKER_HOST": nowhere},
    )
    assert result.returncode == 1
    assert result.stderr == f"shrike: error: cannot use dockerd at {nowhere}: No such file or directory\n"


# --------------------------------------------------------------- with dockerd
def leak(small_lan: SmallLan, mac: str, address: str = "") -> str:
    """Allocate through the plugin socket as dockerd does, with no container: a leak."""
    with PluginClient(small_lan.plugin.server.path) as client:
        return client.request_address(client.request_pool(SMALL_SUBNET), address, mac=mac).partition("/")[0]


def reconcile(small_lan: SmallLan, *args: str) -> dict[str, str]:
    """``shrike reconcile --output json ARGS``: address -> status of each leak found."""
    report = small_lan.shrike_json("reconcile", "--plugin-name", small_lan.plugin.name, *args)
    return {leak["ip"]: leak["status"] for leak in report["leaks"]}


@pytest.fixture
def live(small_lan: SmallLan, dockerd: DockerDaemon, docker_cleanup: Tracker) -> tuple[str, str]:
    """A running container on the small LAN: its name and address."""
    name, error = run(dockerd, docker_cleanup, small_lan.network)
    assert error == ""
    return name, small_lan.address_of(name)


def test_reconcile_lists_leaks_and_frees_them_after_the_grace_period(
    small_lan: SmallLan, live: tuple[str, str]
) -> None:
    live_name, live_ip = live
    leaked = leak(small_lan, MAC)
    reserved = small_lan.shrike("reserve", "web1", "--subnet", SMALL_SUBNET).stdout.strip()
    leak(small_lan, RESERVED_MAC, reserved)  # its container died without a release
    taken = time.monotonic()

    assert reconcile(small_lan) == {leaked: "leaked", reserved: "leaked"}
    table = small_lan.shrike("reconcile", "--plugin-name", small_lan.plugin.name)
    assert leaked in table.stdout and "web1" in table.stdout
    assert "2 of 3 container leases" in table.stderr and "release them with --fix" in table.stderr

    assert reconcile(small_lan, "--fix", "--grace", "1h") == {leaked: "too-young", reserved: "too-young"}
    assert small_lan.lease(leaked).state == STATE_HELD
    time.sleep(max(0.0, taken + 3.5 - time.monotonic()))  # ages are counted in whole seconds
    assert reconcile(small_lan, "--fix", "--grace", "2s") == {leaked: "released", reserved: "released"}
    assert small_lan.lease(leaked).state == STATE_RELEASED
    assert (small_lan.lease(reserved).state, small_lan.lease(reserved).name) == (STATE_RESERVED, "web1")

    # A live container's address is never a leak, with no grace at all.
    assert reconcile(small_lan, "--fix", "--grace", "0") == {}
    assert small_lan.lease(live_ip).state == STATE_HELD
    assert small_lan.address_of(live_name) == live_ip


def test_reconcile_never_frees_an_address_taken_again_after_its_snapshot(small_lan: SmallLan) -> None:
    ipam = small_lan.plugin.ipam
    leaked = leak(small_lan, MAC)
    snapshot = {lease.ip: revision for lease, revision in host_container_leases(ipam)}
    # Between reconcile's read and its release, dockerd releases the address and a
    # container with the same MAC gets it back.
    with PluginClient(small_lan.plugin.server.path) as client:
        pool = client.request_pool(SMALL_SUBNET)
        client.release_address(pool, leaked)
        assert client.request_address(pool, mac=MAC).partition("/")[0] == leaked
    assert ipam.release_if_unchanged(leaked, snapshot[leaked]) is None
    assert ipam.lease(leaked).state == STATE_HELD


def test_reconcile_fixes_nothing_when_no_network_uses_the_plugin(small_lan: SmallLan) -> None:
    leaked = leak(small_lan, MAC)
    refused = small_lan.shrike("reconcile", "--fix", "--grace", "0", "--plugin-name", "nonesuch", check=False)
    assert refused.returncode == 1
    assert "no network of this dockerd uses the IPAM driver 'nonesuch'" in refused.stderr
    assert small_lan.lease(leaked).state == STATE_HELD
    listed = small_lan.shrike("reconcile", "--plugin-name", "nonesuch")
    assert leaked in listed.stdout and "check DOCKER_HOST" in listed.stderr


def test_without_plugin_name_the_hint_names_the_plugin_the_networks_use(small_lan: SmallLan) -> None:
    """Run as shrike (plugin name 'shrike') where the networks use another name, as after
    a migration from oam-docker-ipam ('talkingdata'): the name is what is wrong, not
    DOCKER_HOST."""
    leaked = leak(small_lan, MAC)
    plugin, network = small_lan.plugin.name, small_lan.network.name
    hint = (
        f"no network of this dockerd uses the IPAM driver 'shrike'; networks here use '{plugin}' ({network}): "
        f"give --plugin-name {plugin} (or, if the plugin is 'shrike', check DOCKER_HOST (now {small_lan.dockerd.url}))"
    )
    listed = small_lan.shrike("reconcile")
    assert leaked in listed.stdout
    assert hint in listed.stderr.splitlines()

    refused = small_lan.shrike("reconcile", "--fix", "--grace", "0", check=False)
    assert (refused.returncode, refused.stderr) == (1, f"shrike: error: {hint}; nothing was released\n")
    assert small_lan.lease(leaked).state == STATE_HELD
    # Given the name the hint gives, it finds and frees the leak.
    assert reconcile(small_lan, "--fix", "--grace", "0") == {leaked: "released"}


def test_the_server_reconciles_periodically(small_lan: SmallLan, dockerd: DockerDaemon, live: tuple[str, str]) -> None:
    _, live_ip = live
    leaked = leak(small_lan, MAC)
    ipam = small_lan.plugin.ipam
    periodic = PeriodicReconcile(
        ipam, 0.2, grace=0.0, plugin_name=small_lan.plugin.name, connect=docker_connect(dockerd.url)
    )
    with periodic:
        wait_until(lambda: ipam.lease(leaked).state == STATE_RELEASED, what="the leak released")
    assert ipam.lease(live_ip).state == STATE_HELD


@pytest.mark.follow_docker
def test_a_container_dockerd_killed_as_it_started_holds_no_address(
    plugin: Plugin, network: Network, dockerd: DockerDaemon, docker_cleanup: Tracker
) -> None:
    """Regression (the storm): a container that ran on through dockerd's shutdown (here
    with live-restore) is killed by the next dockerd as it starts, which releases its
    address but leaves it on the stopped container. reconcile took that stale address for
    one the container holds, and reported a duplicate."""
    dockerd.restart(config={"live-restore": True})
    try:
        container, error = run(dockerd, docker_cleanup, network)
        assert error == ""
        ip = endpoint(dockerd, container, network)["IPAddress"]
        wait_until(lambda: plugin.ipam.lease(ip).owner.get("name") == container, what="followed")
        dockerd.restart(config={})  # the live-restore dockerd leaves it running; the next kills it
    finally:
        if json.loads(Path(dockerd.root, "daemon.json").read_text()):
            dockerd.restart(config={})
    info = dockerd.client.api.inspect_container(container)
    assert not info["State"]["Running"]
    assert plugin.ipam.lease(ip).state == STATE_PARKED
    result = subprocess.run(
        [*SHRIKE, *plugin.server.store_args, "reconcile", "--plugin-name", plugin.name, "--output", "json"],
        capture_output=True, text=True, timeout=60, env=dockerd.env, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert (result.returncode, json.loads(result.stdout)["duplicates"]) == (0, [])
