"""ARP on the wire: RFC 5227 probes and announcements, and the answers to them.

One raw ``AF_PACKET`` socket per use, bound to one interface and to ARP frames only
(root, or ``CAP_NET_RAW``). A *probe* asks who has an address while claiming none itself
(sender address 0.0.0.0, RFC 5227 section 2.1.1), so no neighbour learns anything from
it; a host using that address answers it. An *announcement* (section 2.3) is an ARP
request whose sender and target are both the address: neighbours that know the address
update its MAC at once.

Only an ARP packet whose *sender* is a probed address counts as an answer (a reply, or a
request the holder makes itself). Another host probing the same address at the same
moment (sender 0.0.0.0) is no answer: two shrike hosts of one LAN probe the same next
addresses, and the store, not the LAN, decides which of them hands one out.

The socket and the exchange of probes and answers are :mod:`.wire`'s, shared with IPv6's
duplicate address detection (:mod:`.ndp`).
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Collection
from dataclasses import dataclass

from ..model import IP, IPv4
from . import wire
from .wire import PACKET_OUTGOING, Answers, ProbeSocket, ProbeUnavailable, exchange, mac_bytes, mac_text

__all__ = [
    "PACKET_OUTGOING",
    "Answers",
    "ArpSocket",
    "ArpUnavailable",
    "Sender",
    "exchange",
    "frame",
    "mac_bytes",
    "mac_text",
    "parse",
    "probe",
]

ETH_P_ARP = 0x0806
ETH_P_IP = 0x0800
ARPHRD_ETHER = 1
ARPOP_REQUEST = 1
ARPOP_REPLY = 2
BROADCAST = b"\xff" * 6
ZERO_MAC = b"\x00" * 6
NO_ADDRESS = b"\x00" * 4
_ETHER_HEADER = struct.Struct("!6s6sH")
_ARP = struct.Struct("!HHBBH6s4s6s4s")


class ArpUnavailable(ProbeUnavailable):
    """No ARP can be sent here: not root, or the interface is gone."""


def frame(source: bytes, op: int, sender_mac: bytes, sender_ip: bytes, target_ip: bytes) -> bytes:
    """An Ethernet broadcast carrying an ARP packet (the target MAC is unknown: zero)."""
    arp = _ARP.pack(ARPHRD_ETHER, ETH_P_IP, 6, 4, op, sender_mac, sender_ip, ZERO_MAC, target_ip)
    return _ETHER_HEADER.pack(BROADCAST, source, ETH_P_ARP) + arp


@dataclass(frozen=True)
class Sender:
    """Who an ARP packet says it came from."""

    ip: IPv4
    mac: str


def parse(data: bytes) -> Sender | None:
    """The sender of an Ethernet/IPv4 ARP packet, None for anything else or a sender
    that claims no address (a probe)."""
    if len(data) < _ETHER_HEADER.size + _ARP.size:
        return None
    htype, ptype, hlen, plen, op, sha, spa, _, _ = _ARP.unpack_from(data, _ETHER_HEADER.size)
    if (htype, ptype, hlen, plen) != (ARPHRD_ETHER, ETH_P_IP, 6, 4) or op not in (ARPOP_REQUEST, ARPOP_REPLY):
        return None
    if spa == NO_ADDRESS:
        return None
    return Sender(IPv4(socket.inet_ntoa(spa)), mac_text(sha))


class ArpSocket(ProbeSocket):
    """A packet socket for ARP on one interface of the calling thread's network namespace."""

    ethertype = ETH_P_ARP
    what = "ARP"
    unavailable = ArpUnavailable

    def probe_frame(self, ip: IP) -> bytes:
        """Who has ``ip``, claiming no address (RFC 5227 probe)."""
        return frame(self.mac, ARPOP_REQUEST, self.mac, NO_ADDRESS, socket.inet_aton(ip))

    def answer(self, data: bytes) -> tuple[IP, str] | None:
        """The sender of an ARP packet that claims an address."""
        sender = parse(data)
        return (sender.ip, sender.mac) if sender is not None else None

    def announce(self, ip: IPv4) -> None:
        """Tell the LAN that ``ip`` is at this interface's MAC (RFC 5227 announcement)."""
        address = socket.inet_aton(ip)
        self.sock.send(frame(self.mac, ARPOP_REQUEST, self.mac, address, address))

    def __enter__(self) -> ArpSocket:
        return self


def probe(interface: str, targets: Collection[IPv4], *, count: int, timeout: float) -> Answers:
    """Which of ``targets`` answer ARP probes on ``interface``: ``count`` probes each,
    spread evenly over ``timeout`` seconds, the last answers awaited until then. Many
    targets cost no more time than one."""
    return wire.probe(ArpSocket, interface, targets, count=count, timeout=timeout)
