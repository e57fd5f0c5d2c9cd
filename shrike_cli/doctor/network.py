"""Docker and its networks: does dockerd answer, which networks use the plugin, and do
their pools lie in a declared LAN with container addresses?"""

from __future__ import annotations

import os
import re
from collections.abc import Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from ..model import Config, Subnet
from ..plugin_names import in_use, networks_by_driver
from .check import FAIL, OK, WARN, Check

if TYPE_CHECKING:
    import docker

#: Seconds Docker may take to answer one API call.
DOCKER_TIMEOUT = 3.0


@dataclass(frozen=True)
class DockerNetwork:
    """A Docker network as the checks need it."""

    name: str
    ipam_driver: str
    #: when it was created (None if dockerd does not say)
    created: datetime | None = None
    #: its pools, IPv4 then IPv6 (a dual-stack network has one of each)
    pools: tuple[str, ...] = ()
    #: the gateway of its first IPv4 pool that names one
    gateway: str | None = None
    #: the LAN router its containers use, for hints
    router: str | None = None
    #: create-network's labels, without their prefix (none: made otherwise)
    labels: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def inspect(cls, client: docker.DockerClient, name: str) -> DockerNetwork:
        from ..docker_api import docker_errors
        from ..hostnet.docker_net import LABEL_PREFIX

        with docker_errors():
            attrs = client.api.inspect_network(name)
        ipam = attrs.get("IPAM") or {}
        every = [c for c in ipam.get("Config") or [] if c.get("Subnet")]
        configs = [c for c in every if ":" not in c["Subnet"]]
        aux = [c.get("AuxiliaryAddresses") or {} for c in configs]
        labels = attrs.get("Labels") or {}
        return cls(
            name=attrs["Name"],
            ipam_driver=ipam.get("Driver") or "default",
            created=_docker_time(attrs.get("Created") or ""),
            pools=tuple(c["Subnet"] for c in sorted(every, key=lambda c: ":" in c["Subnet"])),
            gateway=next((c["Gateway"] for c in configs if c.get("Gateway")), None),
            router=next((a["DefaultGatewayIPv4"] for a in aux if "DefaultGatewayIPv4" in a), None),
            labels={k.removeprefix(LABEL_PREFIX): v for k, v in labels.items() if k.startswith(LABEL_PREFIX)},
        )


def of_network(check: Check, net: DockerNetwork, networks: Sequence[DockerNetwork]) -> Check:
    """``check`` about ``net``, one of the ``networks`` checked: its name ends with the
    network's when there are several."""
    return replace(check, name=f"{check.name} ({net.name})") if len(networks) > 1 else check


def docker_check(timeout: float) -> Generator[Check, None, docker.DockerClient | None]:
    """Whether Docker answers; returns its client (the caller closes it), once it did."""
    from ..docker_api import DockerError, docker_client, docker_errors

    where = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock (the default)"
    try:
        client = docker_client(timeout=timeout)
        with docker_errors():
            version = client.version()
    except DockerError as err:
        hint = (
            "run as root, or as a member of the docker group"
            if "Permission denied" in str(err)
            else "start dockerd (systemctl start docker), or set DOCKER_HOST to where it listens"
        )
        yield Check("docker", FAIL, f"{err}; the network is not checked without it", hint)
        return None
    yield Check("docker", OK, f"Docker {version.get('Version', '?')} (API {version.get('ApiVersion', '?')}) at {where}")
    return client


def find_networks(
    client: docker.DockerClient, name: str | None, plugin_name: str, plugin_dir: Path
) -> Generator[Check, None, list[DockerNetwork]]:
    """Returns the networks to check: the one ``name``d, whatever plugin it uses, else
    every network whose IPAM driver is the plugin. When there are none, a check says why."""
    if name is None:
        by_driver = networks_by_driver(client)
        names = by_driver.get(plugin_name, ())
        if not names:
            found, fix = in_use(by_driver, plugin_dir).explain(plugin_name)
            yield Check("network", FAIL, found, fix)
            return []
        return [DockerNetwork.inspect(client, each) for each in names]
    from ..hostnet.docker_net import find

    view = find(client, name)
    if view is None:
        yield Check(
            "network",
            FAIL,
            f"Docker has no network named {name}",
            f"create it: shrike create-network --ip HOST_IP --name {name} --plugin-name {plugin_name} "
            "(HOST_IP: this host's own address)",
        )
        return []
    return [DockerNetwork.inspect(client, view.id)]


def network_checks(
    networks: Sequence[DockerNetwork], named: bool, plugin_name: str, config: Config | None, location: str
) -> Iterator[Check]:
    """Each network's pools (a ``named`` network's once it is known to use the plugin:
    the others were found by it), then which networks create-network did not make."""
    for net in networks:
        if named and net.ipam_driver != plugin_name:
            yield Check(
                "network",
                FAIL,
                f"network {net.name} uses the IPAM driver {net.ipam_driver}, not {plugin_name}",
                f"if the plugin runs as {net.ipam_driver}, give --plugin-name {net.ipam_driver}; otherwise remove the "
                f"network (shrike create-network --undo --name {net.name}) and create it with --plugin-name "
                f"{plugin_name}",
            )
        else:
            yield of_network(pool_check(net.name, list(net.pools), config, location), net, networks)
    plain = [net.name for net in networks if "mode" not in net.labels]
    if plain:
        one = len(plain) == 1
        yield Check(
            "host network",
            WARN,
            f"network{'' if one else 's'} {', '.join(plain)} {'was' if one else 'were'} not made by "
            f"create-network: {'its bridge' if one else 'their bridges'} and this host's links are not checked",
        )


def pool_check(network: str, pools: list[str], config: Config | None, location: str) -> Check:
    """The network's subnets lie in a declared LAN and hold container addresses."""
    if not pools:
        return Check("network", FAIL, f"network {network} has no IPv4 subnet", "create it again with create-network")
    if config is None:
        return Check(
            "network",
            WARN,
            f"network {network} uses subnet {', '.join(pools)}; the store could not tell if it is declared",
        )
    for text in pools:
        pool = Subnet.parse(text)
        lan = config.lan_subnet_of(pool.network)
        if lan is None or lan.prefixlen > pool.prefixlen:
            return Check(
                "network",
                FAIL,
                f"network {network}'s subnet {pool} is not declared in the store {location}",
                "declare it with shrike host-range, or give the --cluster-store or --state-dir 'shrike server' uses",
            )
        if not config.container_ranges_in(pool):
            return Check(
                "network",
                FAIL,
                f"no container range lies in {pool}: containers on {network} cannot get addresses",
                f"declare one: shrike ip-range --ip-start=FIRST/{pool.prefixlen} --ip-end=LAST/{pool.prefixlen}",
            )
    return Check("network", OK, f"{network} uses this plugin, on the declared subnet {', '.join(pools)}")


def _docker_time(text: str) -> datetime | None:
    """Docker's RFC 3339 times (nanoseconds, ``Z``) as a datetime; None if unreadable."""
    match = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", text)
    if match is None:
        return None
    whole, fraction, zone = match.groups()
    try:
        return datetime.fromisoformat(f"{whole}.{(fraction or '0')[:6]:0<6}{'+00:00' if zone == 'Z' else zone}")
    except ValueError:
        return None
