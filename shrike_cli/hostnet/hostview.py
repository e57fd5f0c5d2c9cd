"""The host's network as values: what :meth:`.links.Netlink.read` finds, and how
``create-network`` lays it out.

:class:`HostView` is one network namespace as read (links, IPv4 and IPv6 addresses,
routes, which links accept IPv6 router advertisements);
:class:`Layout` is where a setup puts the host's addresses and routes, and
:class:`Shim` a macvlan link it adds. Plain values: the planner reads them, the netlink
side fills and applies them, ``--persist`` renders a layout.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import netaddr

LINK_LOCAL = netaddr.IPNetwork("fe80::/10")

#: The main routing table, and the one whose routes belong to addresses (never moved).
TABLE_MAIN = 254
TABLE_LOCAL = 255
#: Routes the kernel derives from an address (``proto kernel``) follow the address.
PROTO_KERNEL = 2
PROTO_BOOT = 3


# --------------------------------------------------------------- the host as read
@dataclass(frozen=True)
class Address:
    """An address on a link, as ``ip addr`` shows it (IPv4 with its broadcast address)."""

    ip: str
    prefixlen: int
    broadcast: str | None = None

    @property
    def cidr(self) -> str:
        return f"{self.ip}/{self.prefixlen}"

    @property
    def version(self) -> int:
        return 6 if ":" in self.ip else 4

    @property
    def is_link_local(self) -> bool:
        """An IPv6 link-local address (fe80::/10): every IPv6 link has its own, and
        keeps it; ``create-network`` copies the uplink's to the bridge."""
        return self.version == 6 and self.network in LINK_LOCAL

    @property
    def network(self) -> netaddr.IPNetwork:
        return netaddr.IPNetwork(self.cidr).cidr

    def __str__(self) -> str:
        return self.cidr


@dataclass(frozen=True)
class Route:
    """A unicast route through one link (its ``dev``), as ``ip route`` shows it."""

    dst: str  # a CIDR; 0.0.0.0/0 and ::/0 are the default routes
    gateway: str | None = None
    metric: int | None = None
    table: int = TABLE_MAIN
    proto: int = PROTO_BOOT
    scope: int = 0
    prefsrc: str | None = None
    onlink: bool = False

    @property
    def is_default(self) -> bool:
        return self.dst in ("0.0.0.0/0", "::/0")

    @property
    def version(self) -> int:
        return 6 if ":" in self.dst else 4

    def __str__(self) -> str:
        words = ["default" if self.is_default else self.dst]
        if self.gateway:
            words += ["via", self.gateway]
        if self.metric is not None:
            words += ["metric", str(self.metric)]
        if self.table != TABLE_MAIN:
            words += ["table", str(self.table)]
        if self.prefsrc:
            words += ["src", self.prefsrc]
        if self.onlink:
            words.append("onlink")
        return " ".join(words)


@dataclass(frozen=True)
class Link:
    """A network interface: ``kind`` is the rtnetlink kind (``bridge``, ``veth``,
    ``macvlan``; empty for a physical NIC), ``master`` the bridge it is a port of."""

    name: str
    index: int
    kind: str = ""
    mac: str = ""
    mtu: int = 1500
    up: bool = True
    master: str | None = None


@dataclass(frozen=True)
class HostView:
    """One network namespace: its links, their addresses, the routes through each link
    except those the kernel derives from addresses, and the links that accept IPv6
    router advertisements (``accept_ra`` 2, or 1 while not forwarding)."""

    links: tuple[Link, ...]
    addresses: Mapping[str, tuple[Address, ...]] = field(default_factory=dict)
    routes: Mapping[str, tuple[Route, ...]] = field(default_factory=dict)
    accepts_ra: frozenset[str] = frozenset()

    def link(self, name: str) -> Link | None:
        return next((link for link in self.links if link.name == name), None)

    def addresses_of(self, name: str) -> tuple[Address, ...]:
        return tuple(self.addresses.get(name, ()))

    def routes_of(self, name: str) -> tuple[Route, ...]:
        return tuple(self.routes.get(name, ()))

    def holder_of(self, ip: str) -> Link | None:
        """The link holding ``ip``: how the uplink is found (never by a route lookup,
        which would name whatever link leads to some outside address)."""
        name = next((n for n, addrs in self.addresses.items() if any(a.ip == ip for a in addrs)), None)
        return self.link(name) if name else None


# ---------------------------------------------------------- the host as laid out
@dataclass(frozen=True)
class Layout:
    """The host as ``create-network`` lays it out for Docker network ``network``: in
    bridge mode ``addresses`` and ``routes`` belong on ``bridge``, whose port is
    ``uplink``; in macvlan mode (``bridge`` None) they stay on ``uplink``."""

    network: str
    uplink: Link
    bridge: str | None
    addresses: tuple[Address, ...]
    routes: tuple[Route, ...]
    #: whether the bridge accepts IPv6 router advertisements (as the uplink did)
    accepts_ra: bool = field(default=False, kw_only=True)


@dataclass(frozen=True)
class Shim:
    """A macvlan link on the uplink through which the host reaches its own macvlan
    containers (the parent link never passes frames to its macvlan children)."""

    name: str
    parent: str
    address: Address
    routes: tuple[str, ...]
