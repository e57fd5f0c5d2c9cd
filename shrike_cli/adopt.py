"""Addresses this host holds by dockerd's account that the store does not record as
such: recorded as held, with their owners (``shrike adopt``).

It finishes a takeover from the original (whose leases name no host or container until
then: :mod:`.takeover`) and rebuilds a lost store from what dockerd knows. Two kinds of
addresses are looked at, on the networks of this dockerd whose IPAM driver is the plugin:

* each running container's address, recorded as held by that container (its MAC, id,
  name and network) on this host;
* each network's gateway that lies in a host range: a bridge network's gateway is the
  bridge's address, this host's own on the LAN (``create-network`` made it so), recorded
  as this host's address.

An address the store gives to another container or host is a conflict: reported, never
overwritten (:meth:`.Hosts.adoptable` says what may be taken). Every write is a
compare-and-swap on the lease as read, so a plugin allocating meanwhile loses nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import docker

from .errors import Conflict, InvalidInput
from .ipam import Ipam
from .model import IP, KIND_CONTAINER, KIND_HOST, SHARED_KINDS, Config, Lease
from .owners import Endpoint, endpoints
from .plugin_names import networks_of

ADOPTED = "adopted"  # recorded now (with dry_run: would be)
HELD = "held"  # recorded as such already
CONFLICT = "conflict"  # the store gives it to someone else: left as it is


@dataclass(frozen=True)
class Adoption:
    """One address this host holds by dockerd's account, and what adopt did about it."""

    ip: str
    kind: str
    #: the container's name, or for a host address this host's name
    holder: str
    network: str
    status: str
    #: what the store had before (a conflict: who holds it)
    detail: str = ""

    def to_json(self) -> dict[str, str]:
        return {
            "ip": self.ip,
            "kind": self.kind,
            "holder": self.holder,
            "network": self.network,
            "status": self.status,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class AdoptReport:
    """What one adopt found on this host, and did."""

    host: str
    #: names of the networks using the plugin
    networks: tuple[str, ...]
    adoptions: tuple[Adoption, ...]
    dry_run: bool

    def count(self, status: str) -> int:
        return sum(a.status == status for a in self.adoptions)

    def to_json(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "networks": list(self.networks),
            "dry_run": self.dry_run,
            "addresses": [a.to_json() for a in self.adoptions],
        }


def _before(lease: Lease | None) -> str:
    """What the store had, for the report."""
    if lease is None:
        return "no lease"
    return lease.describe() + ("" if lease.host or lease.users else ", naming no host")


def adopt(ipam: Ipam, client: docker.DockerClient, plugin_name: str, *, dry_run: bool = False) -> AdoptReport:
    """Record what this host holds on the networks of ``client``'s dockerd that use the
    plugin ``plugin_name`` (see the module docstring); with ``dry_run``, only say what."""
    networks = networks_of(client, plugin_name)
    if not networks:
        raise InvalidInput(
            f"no network of this dockerd uses the IPAM driver '{plugin_name}': nothing to adopt"
            " (check --plugin-name and DOCKER_HOST)"
        )
    names = tuple(n["Name"] for n in networks)
    config = ipam.config()
    gateways = {
        IP(pool["Gateway"]): n["Name"]
        for n in networks
        for pool in (n.get("IPAM") or {}).get("Config") or ()
        if pool.get("Gateway")
    }
    adoptions = [_host(ipam, ip, network, dry_run) for ip, network in gateways.items() if config.host_range_of(int(ip))]
    adoptions += [_container(ipam, config, e, dry_run) for e in endpoints(client) if e.network in names]
    return AdoptReport(ipam.host, names, tuple(adoptions), dry_run)


def _host(ipam: Ipam, ip: IP, network: str, dry_run: bool) -> Adoption:
    lease = ipam.lease(ip)

    def row(status: str, detail: str = _before(lease)) -> Adoption:
        return Adoption(ip, KIND_HOST, ipam.host, network, status, detail)

    if lease is not None and (lease.is_host_of(ipam.host) or lease.kind in SHARED_KINDS):
        return row(HELD)  # this host's, or recorded as the network's gateway
    if not ipam.adoptable(lease, KIND_HOST):
        return row(CONFLICT)
    if not dry_run:
        try:
            ipam.claim_host(ip, adopt=True)
        except Conflict as err:  # taken meanwhile
            return row(CONFLICT, str(err))
    return row(ADOPTED)


def _container(ipam: Ipam, config: Config, endpoint: Endpoint, dry_run: bool) -> Adoption:
    stored = ipam.state.lease(endpoint.ip)
    lease = stored.lease if stored else None

    def row(status: str, detail: str = _before(lease)) -> Adoption:
        return Adoption(endpoint.ip, KIND_CONTAINER, endpoint.container_name, endpoint.network, status, detail)

    if stored is not None and stored.lease.is_container_of(ipam.host, endpoint.mac):
        if stored.lease.owner != endpoint.owner and not dry_run:
            ipam.set_owner(stored.lease, stored.revision, endpoint.owner)
        return row(HELD)
    if config.container_range_of(int(IP(endpoint.ip))) is None:
        return row(CONFLICT, f"{endpoint.ip} is outside every container range")
    if not ipam.adoptable(lease, KIND_CONTAINER, endpoint.mac):
        return row(CONFLICT)
    if not dry_run:
        try:
            ipam.adopt_container(endpoint.ip, mac=endpoint.mac, owner=endpoint.owner)
        except (Conflict, InvalidInput) as err:  # taken meanwhile, or declarations changed
            return row(CONFLICT, str(err))
    return row(ADOPTED)
