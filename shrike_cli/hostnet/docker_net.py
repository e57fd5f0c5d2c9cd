"""The Docker side of ``create-network``: the network's settings, and creating,
finding and removing it with the Docker SDK (``DOCKER_HOST`` and the rest of the
SDK's environment are honoured)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

import docker
import docker.errors
from docker.types import IPAMConfig, IPAMPool

from ..errors import Conflict, ShrikeError
from ..model import Subnet

#: Labels create-network puts on the network it makes (mode, host-ip, uplink, ...).
LABEL_PREFIX = "shrike.create-network."

BRIDGE_OPTIONS = "com.docker.network.bridge."
MTU_OPTION = "com.docker.network.driver.mtu"


class DockerError(ShrikeError):
    """Docker is unreachable or refused a request."""


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

    def describe(self) -> str:
        aux = "".join(f", {k} {v}" for k, v in self.aux_addresses.items())
        options = "".join(f", {k.rpartition('.')[2]}={v}" for k, v in sorted(self.options.items()))
        return (
            f"{self.name}: driver {self.driver}{options}, IPAM driver {self.ipam_driver}, "
            f"subnet {self.subnet}, gateway {self.gateway}{aux}"
        )


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
    name: str, bridge: str, mtu: int, plugin: str, subnet: Subnet, host_ip: str, router: str, labels: Mapping[str, str]
) -> NetworkSpec:
    """The bridge network: the host's own address is the bridge's (Docker's gateway), and
    containers route through the LAN's router (``DefaultGatewayIPv4``), unmasqueraded."""
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
        aux_addresses={"DefaultGatewayIPv4": router},
        labels=dict(labels),
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


def connect() -> docker.DockerClient:
    """A client for the Docker engine of the environment; a clear error if unreachable."""
    where = os.environ.get("DOCKER_HOST") or "the default socket"
    try:
        # version="auto" asks the daemon for its API version: it checks reachability too.
        client = docker.from_env(version="auto")
        client.ping()
    except docker.errors.DockerException as err:
        raise DockerError(f"cannot reach Docker at {where}: {err}") from None
    return client


def _explain(err: docker.errors.DockerException) -> str:
    if isinstance(err, docker.errors.APIError) and err.explanation:
        return str(err.explanation)
    return str(err)


def find(client: docker.DockerClient, name: str) -> NetworkView | None:
    """The network called exactly ``name``, or None."""
    try:
        # Docker's name filter matches substrings: keep the exact name only.
        matches = [n for n in client.api.networks(names=[name]) if n["Name"] == name]
        if not matches:
            return None
        attrs = client.api.inspect_network(matches[0]["Id"])
    except docker.errors.DockerException as err:
        raise DockerError(f"cannot look up Docker network {name}: {_explain(err)}") from None
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
    pool = IPAMPool(subnet=spec.subnet, gateway=spec.gateway, aux_addresses=dict(spec.aux_addresses) or None)
    try:
        network = client.networks.create(
            spec.name,
            driver=spec.driver,
            options=dict(spec.options),
            ipam=IPAMConfig(driver=spec.ipam_driver, pool_configs=[pool]),
            labels=dict(spec.labels),
            check_duplicate=True,
        )
    except docker.errors.DockerException as err:
        raise DockerError(f"Docker refused to create network {spec.name}: {_explain(err)}") from None
    return str(network.id)


def remove(client: docker.DockerClient, name: str, *, force: bool = False) -> None:
    """Remove the network; attached containers are disconnected with ``force``, else an error."""
    try:
        network = client.networks.get(name)
        attached = network.attrs.get("Containers") or {}
        if attached and not force:
            names = ", ".join(sorted(c.get("Name", cid[:12]) for cid, c in attached.items()))
            raise Conflict(f"containers are attached to {name} ({names})")
        for container_id in attached:
            network.disconnect(container_id, force=True)
        network.remove()
    except docker.errors.DockerException as err:
        raise DockerError(f"cannot remove Docker network {name}: {_explain(err)}") from None
