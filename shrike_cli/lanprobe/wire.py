"""What ARP probes and IPv6 duplicate address detection share: a raw packet socket on one
interface, and the exchange that sends probes and collects who answers.

A protocol (:class:`~.arp.ArpSocket`, :class:`~.ndp.NdpSocket`) says what a probe for
an address looks like (:meth:`ProbeSocket.probe_frame`) and which frames answer one
(:meth:`ProbeSocket.answer`); :func:`exchange` and :func:`probe` do the rest the same way
for both. The socket is bound to the interface and to one EtherType (root, or
``CAP_NET_RAW``), and frames this host sends itself are never taken for answers.
"""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Callable, Collection, Iterator, Mapping

from ..errors import ShrikeError
from ..model import IP

#: ``sll_pkttype`` of a frame this host sent itself (a packet socket sees those too).
PACKET_OUTGOING = 4


class ProbeUnavailable(ShrikeError):
    """No probe can be sent here: not root, or the interface is gone."""


def mac_text(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def mac_bytes(text: str) -> bytes:
    return bytes(int(part, 16) for part in text.split(":"))


class ProbeSocket:
    """A packet socket on one interface of the calling thread's network namespace, for
    the frames of one EtherType; a protocol says what its probes and answers are."""

    #: the EtherType the socket sends and hears
    ethertype: int
    #: what it sends, for messages ("ARP")
    what: str
    #: raised when it cannot be opened
    unavailable: type[ProbeUnavailable] = ProbeUnavailable

    def __init__(self, interface: str) -> None:
        try:
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(self.ethertype))
        except PermissionError:
            raise self.unavailable(f"sending {self.what} needs root (CAP_NET_RAW) to probe on {interface}") from None
        try:
            self.sock.bind((interface, self.ethertype))
        except OSError as err:
            self.sock.close()
            raise self.unavailable(f"cannot send {self.what} on {interface}: {err.strerror or err}") from None
        self.interface = interface
        self.mac: bytes = self.sock.getsockname()[4][:6]

    def probe_frame(self, ip: IP) -> bytes:
        """The frame that asks who has ``ip`` (claiming no address)."""
        raise NotImplementedError

    def answer(self, data: bytes) -> tuple[IP, str] | None:
        """The address and MAC a received frame says is in use, None if it says none."""
        raise NotImplementedError

    def probe(self, ip: IP) -> None:
        self.sock.send(self.probe_frame(ip))

    def announce(self, ip: IP) -> None:
        """Tell the LAN that ``ip`` is at this interface's MAC."""
        raise NotImplementedError

    def answers(self, until: float) -> Iterator[tuple[IP, str]]:
        """The (address, MAC) of the answers that arrive (not from this host) until the
        monotonic time ``until``."""
        own = mac_text(self.mac)
        while (left := until - time.monotonic()) > 0:
            ready, _, _ = select.select([self.sock], [], [], left)
            if not ready:
                return
            data, address = self.sock.recvfrom(2048)
            if address[2] == PACKET_OUTGOING:
                continue
            found = self.answer(data)
            if found is not None and found[1] != own:
                yield found

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> ProbeSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: What answered: each probed address that did, with the MACs that answered for it.
Answers = Mapping[IP, tuple[str, ...]]


def exchange(
    sock: ProbeSocket,
    targets: Collection[IP],
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
    found: dict[IP, list[str]] = {}
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


def _collect(sock: ProbeSocket, wanted: set[IP], found: dict[IP, list[str]], until: float) -> None:
    for ip, mac in sock.answers(until):
        if ip in wanted and mac not in found.setdefault(ip, []):
            found[ip].append(mac)
        if not wanted - found.keys():
            return


def probe(kind: type[ProbeSocket], interface: str, targets: Collection[IP], *, count: int, timeout: float) -> Answers:
    """Which of ``targets`` answer ``kind``'s probes on ``interface``: ``count`` probes
    each, spread evenly over ``timeout`` seconds, the last answers awaited until then.
    Many targets cost no more time than one."""
    frames = max(count, 1) * max(len(targets), 1)
    with kind(interface) as sock:
        return exchange(sock, list(targets), count=max(count, 1), spacing=timeout / frames, wait=timeout / frames)
