"""The Docker side of ``create-network``: the network's settings, and creating,
finding and removing it with the Docker SDK (``DOCKER_HOST`` and the rest of the
SDK's environment are honoured)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import docker
from docker.types import IPAMConfig, IPAMPool

from ..docker_api import docker_client, docker_errors, docker_host
from ..errors import Conflict, InvalidInput
from ..model import IP, Subnet

#: Labels create-network puts on the network it makes (mode, host-ip, uplink, ...).
LABEL_PREFIX = "shrike.create-network."

BRIDGE_OPTIONS = "com.docker.network.bridge."
MTU_OPTION = "com.docker.network.driver.mtu"
#: Docker's rule for the names of networks (and containers): letters, digits, '_', '.'
#: and '-', the first a letter or digit.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
#: Seconds a call may take: the SDK's default, longer than elsewhere since creating a
#: network waits for the IPAM plugin (and dockerd retries a missing one for ~15 s).
NETWORK_TIMEOUT = 60.0


@dataclass(frozen=True)
class NetworkSpec:
    """Everything ``docker network create`` is given."""

    name: str
    driver: str
    options: Mapping[str, str]
    ipam_driver: str
    subnet: str
    gateway: str
    aux_addresses: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    #: a dual-stack network's IPv6 subnet and gateway (its aux addresses are with the others)
    subnet6: str | None = None
    gateway6: str | None = None

    def describe(self) -> str:
        aux = "".join(f", {k} {v}" for k, v in self.aux_addresses.items())
        options = "".join(f", {k.rpartition('.')[2]}={v}" for k, v in sorted(self.options.items()))
        ipv6 = f", IPv6 subnet {self.subnet6}, gateway {self.gateway6}" if self.subnet6 else ""
        return (
            f"{self.name}: driver {self.driver}{options}, IPAM driver {self.ipam_driver}, "
            f"subnet {self.subnet}, gateway {self.gateway}{ipv6}{aux}"
        )

    def pools(self) -> list[IPAMPool]:
        """The network's pools: IPv4, and IPv6 for a dual-stack one, each with its aux addresses."""
        pools = []
        for subnet, gateway in ((self.subnet, self.gateway), (self.subnet6, self.gateway6)):
            if subnet:
                version = Subnet.parse(subnet).version
                aux = {k: v for k, v in self.aux_addresses.items() if (":" in v) == (version == 6)}
                pools.append(IPAMPool(subnet=subnet, gateway=gateway, aux_addresses=aux or None))
        return pools


@dataclass(frozen=True)
class NetworkView:
    """A Docker network as found: what a rerun or ``--undo`` needs to know."""

    name: str
    id: str
    driver: str
    ipam_driver: str
    labels: Mapping[str, str]
    #: names of the attached containers
    containers: tuple[str, ...] = ()


def bridge_spec(
    name: str,
    bridge: str,
    mtu: int,
    plugin: str,
    subnet: Subnet,
    host_ip: str,
    router: str,
    labels: Mapping[str, str],
    ipv6: tuple[Subnet, str, str] | None = None,
) -> NetworkSpec:
    """The bridge network: the host's own address is the bridge's (Docker's gateway), and
    containers route through the LAN's router (``DefaultGatewayIPv4``), unmasqueraded.

    Dual-stack with ``ipv6`` (the IPv6 LAN, the host's address in it, its router): the
    same for IPv6 (``DefaultGatewayIPv6``), unless the router is known by its link-local
    address only, which Docker takes for no aux address: containers then route through
    the host's address, and the host through the router."""
    aux = {"DefaultGatewayIPv4": router}
    if ipv6 is not None and ipv6[0].contains(int(IP(ipv6[2]))):
        aux["DefaultGatewayIPv6"] = ipv6[2]
    return NetworkSpec(
        name=name,
        driver="bridge",
        options={
            BRIDGE_OPTIONS + "name": bridge,
            BRIDGE_OPTIONS + "enable_icc": "true",
            BRIDGE_OPTIONS + "enable_ip_masquerade": "false",
            BRIDGE_OPTIONS + "host_binding_ipv4": "0.0.0.0",
            MTU_OPTION: str(mtu),
        },
        ipam_driver=plugin,
        subnet=str(subnet),
        gateway=host_ip,
        aux_addresses=aux,
        labels=dict(labels),
        subnet6=str(ipv6[0]) if ipv6 else None,
        gateway6=ipv6[1] if ipv6 else None,
    )


def macvlan_spec(
    name: str, parent: str, plugin: str, subnet: Subnet, router: str, labels: Mapping[str, str]
) -> NetworkSpec:
    """The macvlan network: containers sit directly on the uplink, behind the LAN's router."""
    return NetworkSpec(
        name=name,
        driver="macvlan",
        options={"parent": parent},
        ipam_driver=plugin,
        subnet=str(subnet),
        gateway=router,
        labels=dict(labels),
    )


def check_name(name: str) -> str:
    """``name`` if it is a name Docker takes for a network; :class:`InvalidInput` if not
    (it also goes into the files ``--persist`` writes, and into logs)."""
    if not NAME.fullmatch(name):
        raise InvalidInput(
            f"'{name}' is not a Docker network name: use letters, digits, '_', '.' and '-', "
            "starting with a letter or digit"
        )
    return name


def connect() -> docker.DockerClient:
    """A client for the Docker engine of the environment; a clear error if unreachable."""
    return docker_client(NETWORK_TIMEOUT, failure=f"cannot reach Docker at {docker_host()}")


def find(client: docker.DockerClient, name: str) -> NetworkView | None:
    """The network called exactly ``name``, or None."""
    with docker_errors(f"cannot look up Docker network {name}"):
        # Docker's name filter matches substrings: keep the exact name only.
        matches = [n for n in client.api.networks(names=[name]) if n["Name"] == name]
        if not matches:
            return None
        attrs = client.api.inspect_network(matches[0]["Id"])
    containers = tuple(sorted(c.get("Name") or cid[:12] for cid, c in (attrs.get("Containers") or {}).items()))
    return NetworkView(
        name=attrs["Name"],
        id=attrs["Id"],
        driver=attrs.get("Driver", ""),
        ipam_driver=(attrs.get("IPAM") or {}).get("Driver", ""),
        labels=attrs.get("Labels") or {},
        containers=containers,
    )


def create(client: docker.DockerClient, spec: NetworkSpec) -> str:
    """Create the network; returns its id."""
    with docker_errors(f"Docker refused to create network {spec.name}"):
        network = client.networks.create(
            spec.name,
            driver=spec.driver,
            options=dict(spec.options),
            ipam=IPAMConfig(driver=spec.ipam_driver, pool_configs=spec.pools()),
            labels=dict(spec.labels),
            check_duplicate=True,
            enable_ipv6=spec.subnet6 is not None,
        )
    return str(network.id)


def remove(client: docker.DockerClient, name: str, *, force: bool = False) -> None:
    """Remove the network; attached containers are disconnected with ``force``, else an error."""
    with docker_errors(f"cannot remove Docker network {name}"):
        network = client.networks.get(name)
        attached = network.attrs.get("Containers") or {}
        if attached and not force:
            names = ", ".join(sorted(c.get("Name", cid[:12]) for cid, c in attached.items()))
            raise Conflict(f"containers are attached to {name} ({names})")
        for container_id in attached:
            network.disconnect(container_id, force=True)
        network.remove()
