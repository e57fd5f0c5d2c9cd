"""End to end: a real dockerd (20.10, in its own namespace on 198.51.100.0/24 as host
198.51.100.39) uses ``shrike server`` as the IPAM driver of a bridge network."""

from __future__ import annotations

import time

import pytest
from docker.models.networks import Network

from shrike_cli.pools import Pool, Pools
from tests.fixtures.dockerd import DockerDaemon, Tracker
from tests.fixtures.plugin import HOST_ADDRESS, ROUTER, SUBNET, Plugin, endpoint, run

pytestmark = pytest.mark.docker


def test_network_create_records_gateway_and_aux(plugin: Plugin, network: Network, dockerd: DockerDaemon) -> None:
    config = dockerd.client.api.inspect_network(network.id)["IPAM"]["Config"][0]
    assert (config["Subnet"], config["Gateway"]) == (SUBNET, HOST_ADDRESS)
    assert plugin.ipam.lease(HOST_ADDRESS).kind == "host"
    # The aux address DefaultGatewayIPv4 is the LAN's router, which no container may get
    # anyway: acknowledged, not recorded, so it never blocks a host or a later network.
    assert plugin.ipam.lease(ROUTER) is None
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
