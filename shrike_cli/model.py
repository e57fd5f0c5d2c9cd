"""Values: addresses, subnets, ranges, the range configuration and leases.

Addresses are IPv4 integers internally (cheap to compare and step through); text is
parsed and printed with netaddr at the edges. Nothing here touches a store.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

import netaddr

from .errors import InvalidInput

KIND_CONTAINER = "container"
KIND_HOST = "host"
KIND_GATEWAY = "gateway"
#: Docker's auxiliary addresses (``--aux-address``), e.g. the LAN router.
KIND_RESERVED = "reserved"

STATE_HELD = "held"
STATE_RELEASED = "released"
#: A named reservation whose container is not running: nobody else may take it.
STATE_RESERVED = "reserved"


def ip_to_int(text: str) -> int:
    """Parse a dotted IPv4 address (no prefix length); strict, no shorthand or octal."""
    try:
        return struct.unpack("!I", socket.inet_pton(socket.AF_INET, text))[0]
    except (OSError, TypeError):
        raise InvalidInput(f"'{text}' is not an IPv4 address") from None


def int_to_ip(value: int) -> str:
    """Format an IPv4 integer as dotted text (hot path: avoids netaddr)."""
    return socket.inet_ntoa(struct.pack("!I", value))


def parse_address(text: str, what: str, *, prefix: str = "required") -> tuple[int, int | None]:
    """Parse ``a.b.c.d/len`` into ``(address, prefixlen)``.

    ``prefix`` is ``"required"`` (the original's range syntax), ``"optional"`` or
    ``"forbidden"``. ``what`` names the option in the error message.
    """
    address, slash, length = text.strip().partition("/")
    try:
        ip = ip_to_int(address)
    except InvalidInput:
        raise InvalidInput(f"{what}: '{text}' is not a valid IPv4 address") from None
    if slash and prefix == "forbidden":
        raise InvalidInput(f"{what}: '{text}' must be a plain address without /prefix")
    if not slash and prefix == "required":
        raise InvalidInput(f"{what}: '{text}' has no prefix length; write it with one, e.g. {text}/24")
    if not slash:
        return ip, None
    if not length.isdigit() or not 0 < int(length) <= 32:
        raise InvalidInput(f"{what}: '{text}' has an invalid prefix length (1-32)")
    return ip, int(length)


@dataclass(frozen=True, order=True)
class Subnet:
    """An IPv4 network: ``network`` is the first address, ``prefixlen`` its mask length."""

    network: int
    prefixlen: int

    @classmethod
    def of(cls, ip: int, prefixlen: int) -> Subnet:
        mask = (0xFFFFFFFF << (32 - prefixlen)) & 0xFFFFFFFF
        return cls(ip & mask, prefixlen)

    @classmethod
    def parse(cls, text: str, what: str = "subnet") -> Subnet:
        """Parse a CIDR (``198.51.100.0/24``); host bits set are an error."""
        ip, length = parse_address(text, what)
        assert length is not None
        subnet = cls.of(ip, length)
        if subnet.network != ip:
            raise InvalidInput(f"{what}: '{text}' is not a network address (did you mean {subnet}?)")
        return subnet

    @property
    def broadcast(self) -> int:
        return self.network | (0xFFFFFFFF >> self.prefixlen) if self.prefixlen < 32 else self.network

    def contains(self, ip: int) -> bool:
        return self.network <= ip <= self.broadcast

    def covers(self, start: int, end: int) -> bool:
        """Whether [start, end] lies inside the subnet, off its network and broadcast addresses."""
        if self.prefixlen >= 31:
            return self.network <= start and end <= self.broadcast
        return self.network < start and end < self.broadcast

    def __str__(self) -> str:
        return f"{int_to_ip(self.network)}/{self.prefixlen}"


@dataclass(frozen=True)
class AddressRange:
    """An inclusive range of addresses typed with a prefix length (``start/len - end/len``)."""

    start: int
    end: int
    prefixlen: int

    @property
    def id(self) -> str:
        """Stable name used in store keys."""
        return f"{int_to_ip(self.start)}-{int_to_ip(self.end)}"

    @property
    def subnet(self) -> Subnet:
        """The subnet the range was typed in."""
        return Subnet.of(self.start, self.prefixlen)

    @property
    def size(self) -> int:
        return self.end - self.start + 1

    def contains(self, ip: int) -> bool:
        return self.start <= ip <= self.end

    def overlaps(self, other: AddressRange) -> bool:
        return self.start <= other.end and other.start <= self.end

    def to_json(self) -> dict[str, Any]:
        return {"start": int_to_ip(self.start), "end": int_to_ip(self.end), "prefixlen": self.prefixlen}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AddressRange:
        return cls(ip_to_int(data["start"]), ip_to_int(data["end"]), int(data["prefixlen"]))

    def __str__(self) -> str:
        return f"{int_to_ip(self.start)}/{self.prefixlen}-{int_to_ip(self.end)}/{self.prefixlen}"


@dataclass(frozen=True)
class ParsedRange:
    """A range as typed by the user, clamped off its network/broadcast addresses."""

    range: AddressRange
    notes: tuple[str, ...]


def parse_range(start_text: str, end_text: str) -> ParsedRange:
    """Validate ``--ip-start``/``--ip-end`` as the original tool takes them.

    Both need the same prefix length, start must not be after end, and end must lie in
    start's subnet. A range that includes the subnet's network or broadcast address is
    accepted with those skipped; the returned notes say so.
    """
    start, start_len = parse_address(start_text, "--ip-start")
    end, end_len = parse_address(end_text, "--ip-end")
    if start_len != end_len:
        raise InvalidInput(f"--ip-start and --ip-end have different prefix lengths (/{start_len} and /{end_len})")
    assert start_len is not None
    if start > end:
        raise InvalidInput(f"--ip-start {int_to_ip(start)} is after --ip-end {int_to_ip(end)}")
    subnet = Subnet.of(start, start_len)
    if not subnet.contains(end):
        raise InvalidInput(f"--ip-end {int_to_ip(end)} is outside {subnet}, the subnet of --ip-start")
    notes = []
    if subnet.prefixlen < 31:
        if start == subnet.network:
            notes.append(f"skipping {int_to_ip(start)}: the network address of {subnet}")
            start += 1
        if end == subnet.broadcast:
            notes.append(f"skipping {int_to_ip(end)}: the broadcast address of {subnet}")
            end -= 1
        if start > end:
            raise InvalidInput(f"the range holds only the network and broadcast addresses of {subnet}")
    return ParsedRange(AddressRange(start, end, start_len), tuple(notes))


@dataclass(frozen=True)
class Config:
    """Everything declared with ``host-range`` and ``ip-range``, stored as one document.

    Keeping it in one key lets a declaration check overlaps and write with a single
    compare-and-swap, so two concurrent declarations can never both succeed when they
    overlap.
    """

    #: subnet CIDR -> default gateway of that LAN subnet
    gateways: dict[str, str] = field(default_factory=dict)
    host_ranges: tuple[AddressRange, ...] = ()
    ip_ranges: tuple[AddressRange, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "gateways": dict(sorted(self.gateways.items())),
            "host_ranges": [r.to_json() for r in self.host_ranges],
            "ip_ranges": [r.to_json() for r in self.ip_ranges],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Config:
        return cls(
            gateways=dict(data.get("gateways", {})),
            host_ranges=tuple(AddressRange.from_json(r) for r in data.get("host_ranges", [])),
            ip_ranges=tuple(AddressRange.from_json(r) for r in data.get("ip_ranges", [])),
        )

    def all_ranges(self) -> Iterator[tuple[str, AddressRange]]:
        yield from ((KIND_HOST, r) for r in self.host_ranges)
        yield from ((KIND_CONTAINER, r) for r in self.ip_ranges)

    def container_range_of(self, ip: int) -> AddressRange | None:
        return next((r for r in self.ip_ranges if r.contains(ip)), None)

    def host_range_of(self, ip: int) -> AddressRange | None:
        return next((r for r in self.host_ranges if r.contains(ip)), None)

    def container_ranges_in(self, subnet: Subnet, sub_pool: Subnet | None = None) -> list[AddressRange]:
        """Container ranges serving ``subnet`` (a range belongs to every subnet holding it),
        narrowed to ``sub_pool`` when given (a range is cut to its part inside it)."""
        ranges = [r for r in self.ip_ranges if subnet.covers(r.start, r.end)]
        if sub_pool is None:
            return ranges
        narrowed = []
        for r in ranges:
            start, end = max(r.start, sub_pool.network), min(r.end, sub_pool.broadcast)
            if start <= end:
                narrowed.append(replace(r, start=start, end=end) if (start, end) != (r.start, r.end) else r)
        return narrowed

    def lan_subnet_of(self, ip: int) -> Subnet | None:
        """The declared LAN subnet (from host-range) holding ``ip``, the widest if several."""
        candidates = [Subnet.parse(c) for c in self.gateways]
        holding = [s for s in candidates if s.contains(ip)]
        return min(holding, key=lambda s: s.prefixlen) if holding else None

    def gateway_of(self, subnet: Subnet) -> str | None:
        return self.gateways.get(str(subnet))


def now_iso() -> str:
    """UTC wall-clock time, second precision, for lease records people read."""
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class Lease:
    """Who holds an address, and since when. Stored as JSON at ``leases/<ip>``."""

    ip: str
    kind: str
    state: str
    #: the pool subnet the address was handed out in, e.g. ``198.51.100.0/24``
    subnet: str
    host: str = ""
    since: str = ""
    mac: str = ""
    #: the container range the address belongs to (its id), empty for host/gateway
    range: str = ""
    #: reservation name: the address stays with this name across container restarts
    name: str = ""
    #: what is known about the holder: container id/name, network, endpoint
    owner: dict[str, str] = field(default_factory=dict)
    #: while released: the key of this address in its range's free list
    free_key: str = ""
    #: gateway/aux records are shared by every host whose network uses them
    users: tuple[str, ...] = ()

    @property
    def cidr(self) -> str:
        """The address with its pool's prefix length, as Docker wants it."""
        return f"{self.ip}/{self.subnet.partition('/')[2]}"

    def to_json(self) -> dict[str, Any]:
        # Shallow on purpose: asdict deep-copies, and this is on every allocation's path.
        data = {name: getattr(self, name) for name in self.__dataclass_fields__}
        data["users"], data["owner"] = list(self.users), dict(self.owner)
        # Empty fields are noise for a person reading etcdctl output.
        return {k: v for k, v in data.items() if v or k in ("ip", "kind", "state", "subnet")}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Lease:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known["users"] = tuple(known.get("users", ()))
        known["owner"] = dict(known.get("owner", {}))
        return cls(**known)


def validate_mac(text: str) -> str:
    """Normalise a MAC address to lower-case colon form."""
    try:
        return str(netaddr.EUI(text, dialect=netaddr.mac_unix_expanded))
    except (netaddr.AddrFormatError, TypeError, ValueError):
        raise InvalidInput(f"'{text}' is not a MAC address") from None
