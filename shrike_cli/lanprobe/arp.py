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
"""

from __future__ import annotations

import select
import socket
import struct
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass

from ..errors import ShrikeError
from ..model import IPv4

ETH_P_ARP = 0x0806
ETH_P_IP = 0x0800
ARPHRD_ETHER = 1
ARPOP_REQUEST = 1
ARPOP_REPLY = 2
#: ``sll_pkttype`` of a frame this host sent itself (a packet socket sees those too).
PACKET_OUTGOING = 4
BROADCAST = b"\xff" * 6
ZERO_MAC = b"\x00" * 6
NO_ADDRESS = b"\x00" * 4
_ETHER_HEADER = struct.Struct("!6s6sH")
_ARP = struct.Struct("!HHBBH6s4s6s4s")


class ArpUnavailable(ShrikeError):
    """No ARP can be sent here: not root, or the interface is gone."""


def mac_text(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def mac_bytes(text: str) -> bytes:
    return bytes(int(part, 16) for part in text.split(":"))


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


class ArpSocket:
    """A packet socket for ARP on one interface of the calling thread's network namespace."""

    def __init__(self, interface: str) -> None:
        try:
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
        except PermissionError:
            raise ArpUnavailable(f"sending ARP needs root (CAP_NET_RAW) to probe on {interface}") from None
        try:
            self.sock.bind((interface, ETH_P_ARP))
        except OSError as err:
            self.sock.close()
            raise ArpUnavailable(f"cannot send ARP on {interface}: {err.strerror or err}") from None
        self.interface = interface
        self.mac: bytes = self.sock.getsockname()[4][:6]

    def probe(self, ip: IPv4) -> None:
        """Ask who has ``ip``, claiming no address (RFC 5227 probe)."""
        self.sock.send(frame(self.mac, ARPOP_REQUEST, self.mac, NO_ADDRESS, socket.inet_aton(ip)))

    def announce(self, ip: IPv4) -> None:
        """Tell the LAN that ``ip`` is at this interface's MAC (RFC 5227 announcement)."""
        address = socket.inet_aton(ip)
        self.sock.send(frame(self.mac, ARPOP_REQUEST, self.mac, address, address))

    def senders(self, until: float) -> Iterator[Sender]:
        """The senders of the ARP packets that arrive (not those this host sends) until
        the monotonic time ``until``."""
        while (left := until - time.monotonic()) > 0:
            ready, _, _ = select.select([self.sock], [], [], left)
            if not ready:
                return
            data, address = self.sock.recvfrom(2048)
            if address[2] == PACKET_OUTGOING:
                continue
            sender = parse(data)
            if sender is not None and mac_bytes(sender.mac) != self.mac:
                yield sender

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> ArpSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: What answered: each probed address that did, with the MACs that answered for it.
Answers = Mapping[IPv4, tuple[str, ...]]


def exchange(
    sock: ArpSocket,
    targets: Collection[IPv4],
    *,
    count: int,
    spacing: float,
    wait: float,
    progress: Callable[[int], None] | None = None,
) -> Answers:
    """Probe each of ``targets`` ``count`` times and collect who answers.

    Frames leave ``spacing`` seconds apart, all targets once, then all again (so that
    the probes of one address are spread out), and answers are read meanwhile; after the
    last frame, answers are awaited ``wait`` seconds more. It ends early once every
    target has answered. ``progress`` hears how many frames have been sent."""
    wanted = set(targets)
    found: dict[IPv4, list[str]] = {}
    order = [ip for _ in range(count) for ip in targets]
    start = time.monotonic()
    for sent, ip in enumerate(order):
        due = start + sent * spacing
        _collect(sock, wanted, found, due)
        if not wanted - found.keys():
            break
        if ip not in found:
            sock.probe(ip)
        if progress is not None:
            progress(sent + 1)
    else:
        _collect(sock, wanted, found, start + max(len(order) - 1, 0) * spacing + wait)
    return {ip: tuple(macs) for ip, macs in found.items()}


def _collect(sock: ArpSocket, wanted: set[IPv4], found: dict[IPv4, list[str]], until: float) -> None:
    for sender in sock.senders(until):
        if sender.ip in wanted and sender.mac not in found.setdefault(sender.ip, []):
            found[sender.ip].append(sender.mac)
        if not wanted - found.keys():
            return


def probe(interface: str, targets: Collection[IPv4], *, count: int, timeout: float) -> Answers:
    """Which of ``targets`` answer on ``interface``: ``count`` probes each, spread evenly
    over ``timeout`` seconds, the last answers awaited until then. Many targets cost no
    more time than one."""
    frames = max(count, 1) * max(len(targets), 1)
    with ArpSocket(interface) as sock:
        return exchange(sock, list(targets), count=max(count, 1), spacing=timeout / frames, wait=timeout / frames)
