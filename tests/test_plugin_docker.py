"""End to end: a real dockerd (20.10, in its own namespace on 198.51.100.0/24 as host
198.51.100.39) uses ``shrike server`` as the IPAM driver of a bridge network."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker.types
import pytest
from docker.models.networks import Network

from shrike_cli.ipam import Ipam
from shrike_cli.pools import Pool, Pools
from shrike_cli.stores import EmbeddedStore
from tests.fixtures.dockerd import DockerDaemon, Tracker
from tests.fixtures.netns import free_name
from tests.test_plugin_protocol import HOST_ADDRESS, ROUTER, SUBNET, ServerProcess, declare_lan

pytestmark = pytest.mark.docker


@dataclass
class Plugin:
    """A running ``shrike server`` and an Ipam on its embedded store, to look inside."""

    name: str
    server: ServerProcess
    ipam: Ipam


@pytest.fixture
def plugin(request: pytest.FixtureRequest, dockerd: DockerDaemon, tmp_path: Path) -> Iterator[Plugin]:
    """``shrike server`` on an embedded store with the test LAN declared; a test marked
    ``follow_docker`` gets it with ``--follow-docker``, as operators run it."""
    state = tmp_path / "state"
    store = EmbeddedStore(state / "shrike.db")
    # This process and the server run on the same machine: the same host name.
    ipam = Ipam(store)
    declare_lan(ipam)
    follow = request.node.get_closest_marker("follow_docker") is not None
    server = ServerProcess(
        ["--state-dir", str(state)],
        Path(dockerd.plugin_dir),
        dockerd.unique_plugin_name(),
        tmp_path / "server.log",
        server_args=["--follow-docker"] if follow else [],
        env=dockerd.env,
    )
    try:
        server.start()
        yield Plugin(server.name, server, ipam)
    finally:
        server.stop()
        store.close()


@pytest.fixture
def network(plugin: Plugin, dockerd: DockerDaemon, docker_cleanup: Tracker) -> Network:
    """``docker network create --ipam-driver PLUGIN --subnet 198.51.100.0/24 --gateway
    198.51.100.39 --aux-address DefaultGatewayIPv4=198.51.100.254``, removed before the
    plugin stops (docker_cleanup is set up after the plugin)."""
    pool = docker.types.IPAMPool(subnet=SUBNET, gateway=HOST_ADDRESS, aux_addresses={"DefaultGatewayIPv4": ROUTER})
    created = dockerd.client.networks.create(
        f"shk-{uuid.uuid4().hex[:12]}",
        driver="bridge",
        ipam=docker.types.IPAMConfig(driver=plugin.name, pool_configs=[pool]),
        options={
            "com.docker.network.bridge.name": free_name("shkb"),
            "com.docker.network.bridge.enable_ip_masquerade": "false",
        },
    )
    docker_cleanup.track_network(created)
    return created


def run(dockerd: DockerDaemon, docker_cleanup: Tracker, network: Network, *args: str) -> tuple[str, str]:
    """``docker run -d --net NETWORK ARGS busybox sleep 300``; returns the container name
    and the CLI's stderr (empty on success). The container is removed after the test."""
    name = f"shk-{uuid.uuid4().hex[:12]}"
    docker_cleanup.track_container(name)
    result = dockerd.docker_cli(
        "run", "-d", "--name", name, "--net", network.name, *args, dockerd.image, "sleep", "300", check=False
    )
    return name, result.stderr if result.returncode else ""


def endpoint(dockerd: DockerDaemon, container: str, network: Network) -> dict[str, str]:
    info = dockerd.client.api.inspect_container(container)
    return info["NetworkSettings"]["Networks"][network.name]


def test_network_create_records_gateway_and_aux(plugin: Plugin, network: Network, dockerd: DockerDaemon) -> None:
    config = dockerd.client.api.inspect_network(network.id)["IPAM"]["Config"][0]
    assert (config["Subnet"], config["Gateway"]) == (SUBNET, HOST_ADDRESS)
    assert plugin.ipam.lease(HOST_ADDRESS).kind == "host"
    router = plugin.ipam.lease(ROUTER)
    assert (router.kind, router.state) == ("reserved", "held")
    assert Pools(plugin.ipam.store, plugin.ipam.host).list() == [
        Pool(Pool.of(SUBNET).subnet, None, {plugin.ipam.host: 1})
    ]


def test_run_gets_an_address_from_the_range_and_gives_it_back(
    plugin: Plugin, network: Network, dockerd: DockerDaemon, docker_cleanup: Tracker
) -> None:
    container, error = run(dockerd, docker_cleanup, network)
    assert error == ""
    settings = endpoint(dockerd, container, network)
    # The aux address DefaultGatewayIPv4 is the container's gateway, not the bridge's.
    assert (settings["IPAddress"], settings["IPPrefixLen"], settings["Gateway"]) == ("198.51.100.100", 24, ROUTER)
    assert f"default via {ROUTER}" in dockerd.docker_cli("exec", container, "ip", "route").stdout
    lease = plugin.ipam.lease("198.51.100.100")
    assert (lease.kind, lease.state, lease.mac) == ("container", "held", settings["MacAddress"])

    dockerd.docker_cli("rm", "-f", container)
    assert plugin.ipam.lease("198.51.100.100").state == "released"


def test_run_with_ip_gets_exactly_that_address_also_after_a_restart(
    plugin: Plugin, network: Network, dockerd: DockerDaemon, docker_cleanup: Tracker
) -> None:
    container, error = run(dockerd, docker_cleanup, network, "--ip", "198.51.100.150")
    assert error == ""
    assert endpoint(dockerd, container, network)["IPAddress"] == "198.51.100.150"
    dockerd.docker_cli("restart", "-t", "0", container)
    assert endpoint(dockerd, container, network)["IPAddress"] == "198.51.100.150"
    assert plugin.ipam.lease("198.51.100.150").state == "held"
    # Nobody else gets it meanwhile.
    _, error = run(dockerd, docker_cleanup, network, "--ip", "198.51.100.150")
    assert "198.51.100.150 is already in use" in error


@pytest.mark.follow_docker
def test_the_server_names_the_containers_holding_leases(
    plugin: Plugin, network: Network, dockerd: DockerDaemon, docker_cleanup: Tracker
) -> None:
    name, error = run(dockerd, docker_cleanup, network)
    assert error == ""
    ip = endpoint(dockerd, name, network)["IPAddress"]
    deadline = time.monotonic() + 20
    while (plugin.ipam.lease(ip).owner.get("name") != name) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert plugin.ipam.lease(ip).owner == {
        "container_id": dockerd.client.api.inspect_container(name)["Id"],
        "name": name,
        "network": network.name,
    }


def test_a_host_address_is_refused(
    plugin: Plugin, network: Network, dockerd: DockerDaemon, docker_cleanup: Tracker
) -> None:
    container, error = run(dockerd, docker_cleanup, network, "--ip", "198.51.100.5")
    assert "198.51.100.5 is a host address" in error
    assert dockerd.client.api.inspect_container(container)["State"]["Running"] is False
    assert plugin.ipam.lease("198.51.100.5") is None


def test_network_rm_releases_gateway_aux_and_pool(plugin: Plugin, network: Network, dockerd: DockerDaemon) -> None:
    network.remove()
    assert plugin.ipam.lease(ROUTER) is None
    assert plugin.ipam.lease(HOST_ADDRESS).kind == "host"
    assert Pools(plugin.ipam.store, plugin.ipam.host).list() == []
    assert plugin.server.alive()
