"""This host's links for the networks create-network made: the bridge holding this host's
address with the uplink as its port and the default route through it, or the macvlan
parent link (and shim)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from .check import FAIL, OK, Check
from .network import DockerNetwork, of_network

if TYPE_CHECKING:
    from ..hostnet.hostview import HostView


def host_network_checks(networks: Sequence[DockerNetwork]) -> Iterator[Check]:
    """Each network create-network made (its labels say how), as this host's links show it."""
    made = [net for net in networks if "mode" in net.labels]
    if not made:
        return
    from ..hostnet.links import Netlink

    with Netlink() as netlink:
        host = netlink.read()
    for net in made:
        labels = net.labels
        uplink = labels.get("uplink", "")
        if labels["mode"] == "bridge":
            bridge, host_ip = labels.get("bridge", ""), labels.get("host-ip", "")
            checks = list(bridge_checks(host, net.name, bridge, uplink, host_ip, net.router))
        else:
            checks = [macvlan_check(host, net.name, uplink, labels.get("shim"))]
        for check in checks:
            yield of_network(check, net, networks)


def bridge_checks(
    host: HostView, network: str, bridge: str, uplink: str, host_ip: str, router: str | None = None
) -> Iterator[Check]:
    """Bridge mode as create-network leaves it: the bridge is up and holds HOST_IP, the
    uplink is its port, and the default route goes through it."""
    redo = (
        f"set it up again: shrike create-network --undo --name {network}, "
        f"then shrike create-network --ip {host_ip} --name {network}"
    )
    link = host.link(bridge)
    if link is None or link.kind != "bridge":
        what = "there is no such link" if link is None else f"{bridge} is a {link.kind or 'plain'} link, not a bridge"
        yield Check("bridge", FAIL, f"{network} needs bridge {bridge}, but {what}", redo)
        return
    if link.up:
        yield Check("bridge", OK, f"bridge {bridge} is up")
    else:
        yield Check("bridge", FAIL, f"bridge {bridge} is down", f"ip link set {bridge} up")

    holder = host.holder_of(host_ip)
    if holder is not None and holder.name == bridge:
        yield Check("host address", OK, f"{bridge} holds this host's address {host_ip}")
    else:
        where = f"is on {holder.name}" if holder else "is on no interface of this host"
        yield Check("host address", FAIL, f"{host_ip} {where}, not on {bridge}", redo)

    port = host.link(uplink)
    if port is None:
        yield Check("uplink", FAIL, f"the uplink {uplink} recorded on {network} is gone", redo)
    elif port.master != bridge:
        elsewhere = f" (it is a port of {port.master})" if port.master else ""
        yield Check(
            "uplink", FAIL, f"{uplink} is not a port of {bridge}{elsewhere}", f"ip link set {uplink} master {bridge}"
        )
    elif not port.up:
        yield Check("uplink", FAIL, f"{uplink}, the port of {bridge}, is down", f"ip link set {uplink} up")
    else:
        yield Check("uplink", OK, f"{uplink} is a port of {bridge}")

    yield _default_route(host, bridge, router)


def _default_route(host: HostView, bridge: str, router: str | None) -> Check:
    from ..hostnet.hostview import TABLE_MAIN

    defaults = [
        (route.metric or 0, dev, route)
        for dev, routes in host.routes.items()
        for route in routes
        if route.is_default and route.version == 4 and route.table == TABLE_MAIN
    ]
    add = f"ip route replace default via {router or 'ROUTER'} dev {bridge}"
    if not defaults:
        return Check("default route", FAIL, "this host has no default route", add)
    _, dev, route = min(defaults, key=lambda found: found[0])  # the kernel uses the lowest metric
    if dev != bridge:
        return Check("default route", FAIL, f"the default route ({route}) goes through {dev}, not {bridge}", add)
    return Check("default route", OK, f"the default route ({route}) goes through {bridge}")


def macvlan_check(host: HostView, network: str, uplink: str, shim: str | None) -> Check:
    """Macvlan mode: the parent link of the network (and the host's shim) are there and up."""
    port = host.link(uplink)
    if port is None or not port.up:
        state = "gone" if port is None else "down"
        return Check("uplink", FAIL, f"{uplink}, the parent link of {network}, is {state}", f"ip link set {uplink} up")
    if shim and host.link(shim) is None:
        return Check(
            "uplink",
            FAIL,
            f"the macvlan shim {shim} is missing: this host cannot reach its containers",
            f"shrike create-network --undo --name {network}, then create it again with --macvlan-shim",
        )
    return Check(
        "uplink", OK, f"{network}'s containers sit on {uplink}" + (f", reached through {shim}" if shim else "")
    )
