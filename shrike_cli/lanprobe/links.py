"""Where probes go: the interface through which this host reaches a LAN, and a
container's own interface, inside its network namespace.

The interface a LAN is probed on is the one the kernel would itself send ARP (IPv6:
Neighbor Solicitations) for an address through: the route to that address, when it is
direct (no router between) and its link holds an address of the LAN. That is the bridge
``create-network`` made in bridge mode, the shim in macvlan mode with ``--macvlan-shim``
(it routes the container ranges), else the macvlan parent, which holds the host's
address; and on a host with no interface on the LAN (its route goes through a router),
none: nothing is probed there.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from ..errors import InvalidInput
from ..model import IP, Subnet
from .arp import ArpSocket, mac_text
from .wire import ProbeSocket

if TYPE_CHECKING:
    from pyroute2 import IPRoute

T = TypeVar("T")
S = TypeVar("S", bound=ProbeSocket)

log = logging.getLogger("shrike.lanprobe")

#: rtnetlink's route type of an ordinary unicast route (``ip route``'s default type).
RTN_UNICAST = 1
CLONE_NEWNET = 0x40000000
SIOCGIFHWADDR = 0x8927
#: Seconds the interface found for a LAN is trusted before it is looked up again: links
#: change rarely (create-network, --undo), and a lookup is a netlink round trip.
LINK_TTL = 30.0
#: The same when none was found: a network created a moment ago (its bridge holding the
#: host's address) is probed on from its first requests.
NO_LINK_TTL = 1.0


@dataclass(frozen=True)
class Interface:
    """The link the probes for a LAN go through."""

    name: str
    #: its address on the LAN, of the LAN's family (the sender of an announcement, never
    #: of a probe)
    address: IP


def interface_toward(ip: IP, lan: Subnet) -> Interface | None:
    """The interface through which this host reaches ``ip`` (of either family) directly,
    if it holds an address of ``lan``; None if ``ip`` lies behind a router, or no such
    link exists."""
    from pyroute2 import IPRoute  # a third of a second to load: only where a LAN is probed
    from pyroute2.netlink.exceptions import NetlinkError

    with IPRoute() as ipr:
        try:
            route = ipr.route("get", dst=str(ip))[0]
        except NetlinkError:  # unreachable
            return None
        index = route.get("RTA_OIF")
        if route["type"] != RTN_UNICAST or route.get("RTA_GATEWAY") or index is None:
            return None
        family = socket.AF_INET if ip.version == 4 else socket.AF_INET6
        held = _addresses(ipr, family, index)
        link = ipr.link("get", index=index)[0]
    mine = next((address for address in held if lan.contains(int(address))), None)
    return Interface(link.get("IFLA_IFNAME"), mine) if mine else None


def _addresses(ipr: IPRoute, family: int, index: int) -> list[IP]:
    """The addresses of ``family`` the link ``index`` holds (none of ``::/80``, which no
    LAN has)."""
    held = []
    for entry in ipr.get_addr(family=family, index=index):
        with contextlib.suppress(InvalidInput):
            held.append(IP(entry.get("IFA_ADDRESS")))
    return held


class Routes:
    """:func:`interface_toward` for each LAN, remembered for :data:`LINK_TTL` seconds
    (:data:`NO_LINK_TTL` when there is none); what is found is logged at ``level`` when
    it changes (the server says it: an operator wants to know where it probes)."""

    def __init__(self, level: int = logging.DEBUG) -> None:
        self.level = level
        self._found: dict[Subnet, tuple[float, Interface | None]] = {}
        self._lock = threading.Lock()

    def toward(self, ip: IP, lan: Subnet) -> Interface | None:
        with self._lock:
            at, interface = self._found.get(lan, (-LINK_TTL, None))
        if time.monotonic() - at < (LINK_TTL if interface else NO_LINK_TTL):
            return interface
        interface = interface_toward(ip, lan)
        with self._lock:
            first, before = lan not in self._found, self._found.get(lan, (0.0, None))[1]
            self._found[lan] = (time.monotonic(), interface)
        if first or interface != before:
            where = f"probed on {interface.name}" if interface else "no interface of this host is on it"
            log.log(self.level, "LAN %s: %s", lan, where)
        return interface


# ------------------------------------------------------------ other namespaces
def in_namespace(path: str, action: Callable[[], T]) -> T:
    """``action()``, run on a thread of its own that has entered the network namespace
    at ``path`` (a container's sandbox): sockets it opens belong to that namespace, and
    stay there once returned. No other thread ever leaves this process's namespace."""
    outcome: list[T] = []
    failure: list[BaseException] = []

    import ctypes  # only the announcer needs it

    # The C library this process runs on (its symbols are global): no ldconfig lookup.
    libc = ctypes.CDLL(None, use_errno=True)

    def run() -> None:
        try:
            with open(path, "rb") as namespace:
                if libc.setns(namespace.fileno(), CLONE_NEWNET) != 0:
                    errno = ctypes.get_errno()
                    raise OSError(errno, f"cannot enter the network namespace {path}: {os.strerror(errno)}")
            outcome.append(action())
        except BaseException as err:  # handed to the caller
            failure.append(err)

    thread = threading.Thread(target=run, name="shrike-netns")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return outcome[0]


def socket_for_mac(mac: str, kind: type[S] = ArpSocket) -> S:  # type: ignore[assignment]
    """A ``kind`` socket (ARP, or IPv6's :class:`~.ndp.NdpSocket`) on the interface of the
    calling thread's namespace whose MAC is ``mac`` (a container's end of its veth);
    :class:`LookupError` if there is none."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as query:
        for _, name in socket.if_nameindex():
            request = struct.pack("256s", name.encode())
            answer = fcntl.ioctl(query.fileno(), SIOCGIFHWADDR, request)
            if mac_text(answer[18:24]) == mac:
                return kind(name)
    raise LookupError(f"no interface has the MAC {mac}")
