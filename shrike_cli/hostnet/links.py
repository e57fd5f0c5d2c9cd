"""The netlink side of ``create-network`` (pyroute2), in the caller's network namespace.

:func:`Netlink.read` takes the snapshot plans are built from; the other methods are
the single operations the transaction in :mod:`.setup` runs and undoes.
"""

from __future__ import annotations

import errno
import os
from collections import defaultdict
from pathlib import Path
from types import TracebackType
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl.ifinfmsg import IFF_UP, ifinfmsg

from ..errors import NotFound
from .hostview import PROTO_KERNEL, TABLE_LOCAL, Address, HostView, Link, Route, Shim

AF_INET = 2
AF_INET6 = 10
RTN_UNICAST = 1
RTNH_F_ONLINK = 4
RT_SCOPE_LINK = 253
RT_SCOPE_HOST = 254
#: The address is the host's already: no duplicate address detection (the address would
#: be unusable, "tentative", for a second or more).
IFA_F_NODAD = 0x02
#: Where the per-link IPv6 settings are, for the network namespace of the process.
IPV6_CONF = Path("/proc/sys/net/ipv6/conf")


def describe_netlink_error(err: NetlinkError) -> str:
    return os.strerror(err.code) if err.code else str(err)


class Netlink:
    """pyroute2 operations on the caller's network namespace."""

    def __init__(self) -> None:
        self.ipr = IPRoute()

    def close(self) -> None:
        self.ipr.close()

    def __enter__(self) -> Netlink:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    # ------------------------------------------------------------------- reading
    def read(self) -> HostView:
        """Links, IPv4 and IPv6 addresses (but loopback's), the routes through each link
        that do not come from an address (``proto kernel``) or belong to the local table,
        and the links that accept IPv6 router advertisements."""
        raw = self.ipr.get_links()
        names = {msg["index"]: msg.get_attr("IFLA_IFNAME") for msg in raw}
        links = tuple(self._link(msg, names) for msg in raw)

        addresses: dict[str, list[Address]] = defaultdict(list)
        for family in (AF_INET, AF_INET6):
            for msg in self.ipr.get_addr(family=family):
                if msg["scope"] == RT_SCOPE_HOST and family == AF_INET6:  # ::1
                    continue
                ip = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
                addresses[names[msg["index"]]].append(Address(ip, msg["prefixlen"], msg.get_attr("IFA_BROADCAST")))

        routes: dict[str, list[Route]] = defaultdict(list)
        for family, default in ((AF_INET, "0.0.0.0"), (AF_INET6, "::")):
            for msg in self.ipr.get_routes(family=family):
                oif = msg.get_attr("RTA_OIF")
                table = msg.get_attr("RTA_TABLE") or msg["table"]
                # Multipath routes carry no RTA_OIF: they are left alone.
                if oif is None or table == TABLE_LOCAL or msg["proto"] == PROTO_KERNEL or msg["type"] != RTN_UNICAST:
                    continue
                routes[names[oif]].append(self._route(msg, default, table))
        return HostView(
            links=links,
            addresses={k: tuple(v) for k, v in addresses.items()},
            routes={k: tuple(v) for k, v in routes.items()},
            accepts_ra=frozenset(name for name in names.values() if accepts_ra(name)),
        )

    @staticmethod
    def _route(msg: Any, default: str, table: int) -> Route:
        return Route(
            dst=f"{msg.get_attr('RTA_DST') or default}/{msg['dst_len']}",
            gateway=msg.get_attr("RTA_GATEWAY"),
            metric=msg.get_attr("RTA_PRIORITY"),
            table=table,
            proto=msg["proto"],
            scope=msg["scope"],
            prefsrc=msg.get_attr("RTA_PREFSRC"),
            onlink=bool(msg["flags"] & RTNH_F_ONLINK),
        )

    @staticmethod
    def _link(msg: ifinfmsg, names: dict[int, str]) -> Link:
        info = msg.get_attr("IFLA_LINKINFO")
        master = msg.get_attr("IFLA_MASTER")
        return Link(
            name=msg.get_attr("IFLA_IFNAME"),
            index=msg["index"],
            kind=(info.get_attr("IFLA_INFO_KIND") or "") if info else "",
            mac=msg.get_attr("IFLA_ADDRESS") or "",
            mtu=msg.get_attr("IFLA_MTU") or 0,
            up=bool(msg["flags"] & IFF_UP),
            master=names.get(master) if master else None,
        )

    def index(self, name: str) -> int:
        found = self.ipr.link_lookup(ifname=name)
        if not found:
            raise NotFound(f"there is no link named {name}")
        return int(found[0])

    def link(self, name: str) -> Link:
        msg = self.ipr.get_links(self.index(name))[0]
        master = msg.get_attr("IFLA_MASTER")
        names = {master: self.ipr.get_links(master)[0].get_attr("IFLA_IFNAME")} if master else {}
        return self._link(msg, names)

    def held(self, name: str, address: Address) -> Address | None:
        """The address ``name`` holds with ``address``'s IP and prefix length (its
        broadcast may differ), or None."""
        same = (a for a in self.read().addresses_of(name) if (a.ip, a.prefixlen) == (address.ip, address.prefixlen))
        return next(same, None)

    def set_mac(self, name: str, mac: str) -> None:
        self.ipr.link("set", index=self.index(name), address=mac)

    def set_master(self, port: str, master: str | None) -> None:
        # master=0 is "nomaster"
        self.ipr.link("set", index=self.index(port), master=self.index(master) if master else 0)

    def add_address(self, name: str, address: Address) -> None:
        """Put ``address`` on ``name``. Every address create-network adds is one this host
        holds already (on another link, or a moment ago): an IPv6 one skips duplicate
        address detection, so it is usable at once."""
        extra: dict[str, object] = {"broadcast": address.broadcast} if address.broadcast else {}
        if address.version == 6:
            extra["flags"] = IFA_F_NODAD
        self.ipr.addr("add", index=self.index(name), address=address.ip, prefixlen=address.prefixlen, **extra)

    def accept_ra(self, name: str) -> int:
        """``name``'s IPv6 ``accept_ra`` setting."""
        return int((IPV6_CONF / name / "accept_ra").read_text())

    def set_accept_ra(self, name: str, value: int) -> None:
        (IPV6_CONF / name / "accept_ra").write_text(f"{value}\n")

    def delete_address(self, name: str, address: Address) -> None:
        """Remove ``address`` from ``name``; the kernel also deletes every route through
        ``name`` that needed it."""
        try:
            self.ipr.addr("del", index=self.index(name), address=address.ip, prefixlen=address.prefixlen)
        except NetlinkError as err:
            # Removing a primary address also removes its secondaries (unless
            # promote_secondaries is set): this one may be gone already.
            if err.code != errno.EADDRNOTAVAIL:
                raise

    def replace_route(self, route: Route, name: str) -> None:
        """Put ``route`` through ``name``: the route with the same destination, metric
        and table is swapped in one netlink message, so it never goes missing."""
        self.ipr.route("replace", oif=self.index(name), **_route_args(route))

    def add_shim(self, shim: Shim) -> None:
        """Create the macvlan shim with its address and routes, and bring it up."""
        self.ipr.link("add", ifname=shim.name, kind="macvlan", link=self.index(shim.parent), macvlan_mode="bridge")
        index = self.index(shim.name)
        self.ipr.addr("add", index=index, address=shim.address.ip, prefixlen=shim.address.prefixlen)
        self.ipr.link("set", index=index, state="up")
        for dst in shim.routes:
            self.ipr.route("add", dst=dst, oif=index, scope=RT_SCOPE_LINK)

    def delete_link(self, name: str, *, missing_ok: bool = False) -> None:
        """Delete a link (its addresses and routes go with it)."""
        if missing_ok and not self.ipr.link_lookup(ifname=name):
            return
        self.ipr.link("del", index=self.index(name))


def _route_args(route: Route) -> dict[str, object]:
    args: dict[str, object] = {
        "dst": route.dst,
        "table": route.table,
        "proto": route.proto,
        "scope": route.scope,
    }
    optional = {"gateway": route.gateway, "priority": route.metric, "prefsrc": route.prefsrc}
    args.update({k: v for k, v in optional.items() if v is not None})
    if route.onlink:
        args["flags"] = RTNH_F_ONLINK
    return args


def accepts_ra(name: str) -> bool:
    """Whether the link ``name`` takes IPv6 router advertisements: ``accept_ra`` 2, or 1
    while it does not forward (Docker turns forwarding on with its IPv6 networks)."""
    try:
        accept = int((IPV6_CONF / name / "accept_ra").read_text())
        forwarding = int((IPV6_CONF / name / "forwarding").read_text())
    except (OSError, ValueError):  # IPv6 off on the link, or in the kernel
        return False
    return accept == 2 or (accept == 1 and not forwarding)
