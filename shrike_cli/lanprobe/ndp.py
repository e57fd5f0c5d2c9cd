"""IPv6 on the wire: duplicate address detection probes (RFC 4862 section 5.4), and the
answers to them; what ARP probes are to IPv4 (see :mod:`.arp`).

One raw ``AF_PACKET`` socket per use, bound to one interface and to IPv6 frames only
(root, or ``CAP_NET_RAW``). A *probe* is a Neighbor Solicitation for the address from
the unspecified address ``::``, sent to the address's solicited-node multicast group
(``ff02::1:ffXX:XXXX``, Ethernet ``33:33:ff:XX:XX:XX``), hop limit 255, and without a
source link-layer address option (RFC 4861 section 7.1.1 forbids one from ``::``): it
claims no address, so no neighbour learns anything from it, and a host using the address
defends it with a Neighbor Advertisement to all nodes (``ff02::1``).

What counts as an answer for a probed address:

* a Neighbor Advertisement whose target it is (the holder defending it, or announcing
  it): the MAC of its target link-layer address option, else the frame's source;
* a Neighbor Solicitation whose IPv6 *source* it is (the holder resolving a neighbour,
  as an ARP request whose sender is the address): the MAC of its source link-layer
  address option, else the frame's source.

Not answers: a Neighbor Solicitation *for* a probed address from ``::`` is another
host's duplicate address detection of it, made at the same moment: two shrike hosts of
one LAN probe the same next addresses, and the store, not the LAN, decides which of them
hands one out (as for ARP probes from 0.0.0.0). Nor is one for a probed address from a
unicast source: that host is resolving the address (a router with a stale route, a
client of the container that held it), which says nothing of who holds it.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Collection

from ..errors import InvalidInput
from ..model import IP, IPv6
from . import wire
from .wire import Answers, ProbeSocket, ProbeUnavailable, mac_text

ETH_P_IPV6 = 0x86DD
IPPROTO_ICMPV6 = 58
ND_NEIGHBOR_SOLICIT = 135
ND_NEIGHBOR_ADVERT = 136
ND_OPT_SOURCE_LINKADDR = 1
ND_OPT_TARGET_LINKADDR = 2
#: Neighbor Discovery packets are sent, and only accepted, with this hop limit: they
#: never crossed a router.
HOP_LIMIT = 255
#: the Override flag of a Neighbor Advertisement
NA_OVERRIDE = 0x20000000
UNSPECIFIED = bytes(16)
ALL_NODES = socket.inet_pton(socket.AF_INET6, "ff02::1")
_SOLICITED_NODE = socket.inet_pton(socket.AF_INET6, "ff02::1:ff00:0")[:13]
_ETHER_HEADER = struct.Struct("!6s6sH")
_IPV6_HEADER = struct.Struct("!IHBB16s16s")
#: type, code, checksum, reserved or flags, target
_ND = struct.Struct("!BBHI16s")


class NdpUnavailable(ProbeUnavailable):
    """No Neighbor Solicitation can be sent here: not root, or the interface is gone."""


def solicited_node(address: bytes) -> bytes:
    """The solicited-node multicast address of ``address`` (its last 24 bits under
    ``ff02::1:ff00:0/104``), which a host holding it listens to."""
    return _SOLICITED_NODE + address[13:]


def multicast_mac(group: bytes) -> bytes:
    """The Ethernet address an IPv6 multicast group is sent to: 33:33 and its last 32 bits."""
    return b"\x33\x33" + group[12:]


def checksum(source: bytes, destination: bytes, icmp: bytes) -> int:
    """The ICMPv6 checksum of ``icmp`` (its checksum field zero) between these addresses:
    the ones' complement of the ones' complement sum over the pseudo-header (RFC 8200
    section 8.1) and the message."""
    data = source + destination + struct.pack("!I3xB", len(icmp), IPPROTO_ICMPV6) + icmp
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def packet(ether_source: bytes, source: bytes, destination: bytes, message: bytes) -> bytes:
    """An Ethernet frame carrying ``message`` (an ICMPv6 Neighbor Discovery message, its
    checksum zero) from ``source`` to the multicast group ``destination``."""
    icmp = message[:2] + struct.pack("!H", checksum(source, destination, message)) + message[4:]
    ipv6 = _IPV6_HEADER.pack(6 << 28, len(icmp), IPPROTO_ICMPV6, HOP_LIMIT, source, destination)
    return _ETHER_HEADER.pack(multicast_mac(destination), ether_source, ETH_P_IPV6) + ipv6 + icmp


def solicitation(ether_source: bytes, target: bytes) -> bytes:
    """A duplicate address detection probe for ``target``: a Neighbor Solicitation from
    ``::`` to its solicited-node group, with no option."""
    message = _ND.pack(ND_NEIGHBOR_SOLICIT, 0, 0, 0, target)
    return packet(ether_source, UNSPECIFIED, solicited_node(target), message)


def advertisement(ether_source: bytes, target: bytes) -> bytes:
    """An unsolicited Neighbor Advertisement (RFC 4861 section 7.2.6) of ``target`` at
    ``ether_source``, from ``target`` to all nodes, Override set: neighbours that know
    the address update its MAC at once."""
    option = struct.pack("!BB6s", ND_OPT_TARGET_LINKADDR, 1, ether_source)
    message = _ND.pack(ND_NEIGHBOR_ADVERT, 0, 0, NA_OVERRIDE, target) + option
    return packet(ether_source, target, ALL_NODES, message)


def _link_address(options: bytes, kind: int) -> bytes | None:
    """The link-layer address of the first option of ``kind`` (1: source, 2: target)."""
    while len(options) >= 8:
        option, length = options[0], options[1] * 8
        if length == 0 or length > len(options):
            return None  # malformed (RFC 4861 section 4.6: the packet is to be dropped)
        if option == kind:
            return options[2:8]
        options = options[length:]
    return None


def _address(raw: bytes) -> IPv6 | None:
    try:
        return IPv6(socket.inet_ntop(socket.AF_INET6, raw))
    except InvalidInput:  # ::, ::1, a mapped IPv4 address: nobody's on a LAN
        return None


def parse(data: bytes) -> tuple[IPv6, str] | None:
    """The address an Ethernet frame says is in use on the link, and at which MAC: the
    target of a Neighbor Advertisement, or the source of a Neighbor Solicitation that
    has one (see the module docstring); None for anything else."""
    start = _ETHER_HEADER.size + _IPV6_HEADER.size
    if len(data) < start + _ND.size:
        return None
    _, ether_source, ethertype = _ETHER_HEADER.unpack_from(data)
    _, _, next_header, hop_limit, source, _ = _IPV6_HEADER.unpack_from(data, _ETHER_HEADER.size)
    if ethertype != ETH_P_IPV6 or next_header != IPPROTO_ICMPV6 or hop_limit != HOP_LIMIT:
        return None
    kind, code, _, _, target = _ND.unpack_from(data, start)
    options = data[start + _ND.size :]
    if code != 0:
        return None
    if kind == ND_NEIGHBOR_ADVERT:
        ip, mac = _address(target), _link_address(options, ND_OPT_TARGET_LINKADDR)
    elif kind == ND_NEIGHBOR_SOLICIT and source != UNSPECIFIED:  # from ::, another host's probe
        ip, mac = _address(source), _link_address(options, ND_OPT_SOURCE_LINKADDR)
    else:
        return None
    return (ip, mac_text(mac or ether_source)) if ip is not None else None


class NdpSocket(ProbeSocket):
    """A packet socket for Neighbor Discovery on one interface of the calling thread's
    network namespace."""

    ethertype = ETH_P_IPV6
    what = "IPv6 neighbour solicitations"
    unavailable = NdpUnavailable

    def probe_frame(self, ip: IP) -> bytes:
        """A duplicate address detection probe for ``ip`` (from ``::``)."""
        return solicitation(self.mac, socket.inet_pton(socket.AF_INET6, ip))

    def answer(self, data: bytes) -> tuple[IP, str] | None:
        return parse(data)

    def announce(self, ip: IPv6) -> None:
        """Tell the LAN that ``ip`` is at this interface's MAC (unsolicited advertisement)."""
        self.sock.send(advertisement(self.mac, socket.inet_pton(socket.AF_INET6, ip)))

    def __enter__(self) -> NdpSocket:
        return self


def probe(interface: str, targets: Collection[IPv6], *, count: int, timeout: float) -> Answers:
    """Which of ``targets`` answer duplicate address detection probes on ``interface``:
    ``count`` probes each, spread evenly over ``timeout`` seconds, the last answers
    awaited until then (as :func:`.arp.probe`)."""
    return wire.probe(NdpSocket, interface, targets, count=count, timeout=timeout)
