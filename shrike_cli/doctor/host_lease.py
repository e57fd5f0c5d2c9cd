"""This host's lease: the address create-network recorded is this host's in the store;
for networks made otherwise, their gateway is nobody else's."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from ..ipam import Ipam
from ..model import KIND_CONTAINER, KIND_HOST
from .check import FAIL, OK, WARN, Check
from .network import DockerNetwork, of_network


def host_lease_checks(ipam: Ipam, networks: Sequence[DockerNetwork], named: str | None) -> Iterator[Check]:
    """This host's lease on each network create-network made, else the gateway of each
    network made otherwise, else (no network, or this host already has addresses) that
    some address is this host's; ``named``: the network the command line named."""
    made = [net for net in networks if "host-ip" in net.labels]
    if made:
        for net in made:
            yield of_network(host_lease_check(ipam, net.labels["host-ip"], net.name), net, networks)
    elif networks and not ipam.own_addresses():
        # Made otherwise: nothing says which address is this host's, but the gateway,
        # often this host's own address on the bridge, must be nobody else's.
        for net in networks:
            yield of_network(gateway_lease_check(ipam, net.name, net.gateway), net, networks)
    else:
        yield host_lease_check(ipam, None, named or "mynet")


def host_lease_check(ipam: Ipam, host_ip: str | None, network: str) -> Check:
    """``host_ip`` (the address create-network recorded on ``network``) is this host's
    lease; without one, some address is."""
    me = ipam.host
    record = f"shrike create-network --ip {host_ip or 'HOST_IP'} --name {network} records it"
    if host_ip is None:
        mine = ipam.own_addresses()
        if not mine:
            return Check("host lease", FAIL, f"no address is recorded as this host's ({me})", record)
        return Check("host lease", OK, f"{', '.join(mine)} recorded as this host's ({me})")
    lease = ipam.lease(host_ip)
    if lease is None:
        return Check(
            "host lease",
            FAIL,
            f"{host_ip}, this host's address on {network}, is not recorded in the store",
            f"{record} (on a host already set up it changes nothing else)",
        )
    if not lease.is_host_of(me):
        holder = f"host {lease.host}'s" if lease.kind == KIND_HOST else f"a {lease.kind} address"
        return Check(
            "host lease",
            FAIL,
            f"{host_ip} is recorded as {holder}, not as this host's ({me})",
            "two hosts must not share an address: find out which one has it, "
            f"and remove the wrong record with 'shrike release --host {host_ip}'",
        )
    return Check("host lease", OK, f"{host_ip} recorded as this host's ({me})")


def gateway_lease_check(ipam: Ipam, network: str, gateway: str | None) -> Check:
    """A network not made by create-network: its gateway is recorded in the store (as the
    network asked for it), and not as another host's address or a container's."""
    me = ipam.host
    if gateway is None:
        return Check("host lease", OK, f"network {network} names no gateway: no address of this host is needed")
    lease = ipam.lease(gateway)
    if lease is None:
        return Check(
            "host lease",
            WARN,
            f"{gateway}, the gateway of {network}, is not recorded in the store {ipam.store.location}",
            "the network was made with another store (or before this one was reset): give the --cluster-store or "
            "--state-dir 'shrike server' uses, or create the network again",
        )
    if lease.kind == KIND_HOST and not lease.is_host_of(me):
        return Check(
            "host lease",
            FAIL,
            f"{gateway}, the gateway of {network}, is recorded as host {lease.host}'s address, not this host's ({me})",
            "two hosts must not share an address: give the network this host's own address as --gateway",
        )
    if lease.kind == KIND_CONTAINER:
        return Check(
            "host lease",
            FAIL,
            f"{gateway}, the gateway of {network}, is recorded as a container's address ({lease.describe()})",
            f"one address for two uses: see 'shrike leases', and create {network} again with another --gateway",
        )
    what = f"this host's ({me})" if lease.is_host_of(me) else f"a {lease.kind} address"
    return Check("host lease", OK, f"{gateway}, the gateway of {network}, is recorded as {what}")
