"""Values: addresses, subnets, ranges, the range configuration and leases.

Ranges and subnets hold integers (cheap to compare and step through, and a /64 costs
what a /24 costs); a single address is an :class:`IP` (:class:`IPv4` or :class:`IPv6`),
text that knows its integer. Text is parsed once, where it enters; IPv6 text is written
in its canonical form (RFC 5952: lower case, the longest run of zero groups as ``::``),
so that one address is always one store key. Nothing here touches a store.

Both families share one integer space: below :data:`V6_START` an integer is an IPv4
address, from it on an IPv6 one. IPv6 addresses in ``::/80`` (the unspecified and
loopback addresses, the IPv4-compatible and IPv4-mapped ones: never a LAN's) are
refused, so an integer alone says its family, and a subnet or range of one family never
holds an address of the other.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any

import netaddr

from .errors import InvalidInput

KIND_CONTAINER = "container"
KIND_HOST = "host"
KIND_GATEWAY = "gateway"
#: Docker's auxiliary addresses (``--aux-address``). Records written before 0.2 say
#: ``reserved``, the word reservations use; they are read as ``aux``.
KIND_AUX = "aux"
_LEGACY_AUX = "reserved"
#: Kinds whose record is shared by every host whose Docker network names the address.
SHARED_KINDS = (KIND_GATEWAY, KIND_AUX)
#: An address of a container range that something shrike does not know answers for on
#: the LAN (an ARP probe found it): nobody is handed it until it is silent again. Its
#: lease records the MAC that answered, when that was first found (``since``) and when
#: it last answered (``owner["seen"]``).
KIND_CONFLICT = "conflict"
#: The key of ``Lease.owner`` saying when a conflict's address last answered.
SEEN = "seen"

STATE_HELD = "held"
STATE_RELEASED = "released"
#: A named reservation whose container is not running: nobody else may take it.
STATE_RESERVED = "reserved"
#: Released by a container that still exists (stopped, restarting): kept for it until it
#: is removed, or until its range has nothing else to give.
STATE_PARKED = "parked"

#: The first integer that is an IPv6 address (see the module docstring).
V6_START = 1 << 32
#: IPv6 addresses below this (``::/80``) are refused.
_V6_REFUSED = 1 << 48
_BITS = {4: 32, 6: 128}
_V4 = struct.Struct("!I")
#: fe80::/10, where a router's link-local address (a v6 LAN's usual gateway) lies.
LINK_LOCAL = (0xFE80 << 112, (0xFEC0 << 112) - 1)


def version_of(value: int) -> int:
    """The family of an address (or a subnet's network) given as an integer: 4 or 6."""
    return 4 if value < V6_START else 6


def ip_to_int(text: str) -> int:
    """Parse an IPv4 address (dotted, strict: no shorthand or octal) or an IPv6 address
    (no prefix length, no zone)."""
    try:
        if ":" not in text:
            return _V4.unpack(socket.inet_pton(socket.AF_INET, text))[0]
        value = int.from_bytes(socket.inet_pton(socket.AF_INET6, text), "big")
    except (OSError, TypeError, ValueError):  # ValueError: a NUL character
        raise InvalidInput(f"{text!r} is not an IPv4 address, nor an IPv6 one") from None
    if value < _V6_REFUSED:
        raise _NotALanAddress(
            f"{text!r} is not a LAN address: IPv6 addresses in ::/80 (unspecified, loopback, IPv4-compatible"
            " or IPv4-mapped) are not used"
        )
    return value


class _NotALanAddress(InvalidInput):
    """An IPv6 address in ::/80 (see the module docstring)."""


def int_to_ip(value: int) -> str:
    """Format an address integer as text, IPv6 in canonical form (hot path: no netaddr)."""
    if value < V6_START:
        return socket.inet_ntoa(_V4.pack(value))
    return socket.inet_ntop(socket.AF_INET6, value.to_bytes(16, "big"))


class IP(str):
    """A checked address: its text (IPv6 in canonical form), which also knows its integer
    (``int(ip)``) and family (``ip.version``). ``IP(text or int)`` is an :class:`IPv4` or
    an :class:`IPv6`; ``IPv4(...)`` and ``IPv6(...)`` accept their family only.

    A ``str`` so that it is stored, printed, compared with text and written to JSON as the
    text it is; parsed once, where it enters, so no code below parses it again.
    """

    _value: int
    version: int

    def __new__(cls, address: str | int) -> IP:
        if isinstance(address, IP):
            if isinstance(address, cls):
                return address
            raise InvalidInput(f"{str(address)!r} is not an {cls.__name__} address")
        if isinstance(address, int):
            value, text = address, int_to_ip(address)
        else:
            value = ip_to_int(address)
            text = address if value < V6_START else int_to_ip(value)
        family = IPv4 if value < V6_START else IPv6
        if cls is not IP and family is not cls:
            raise InvalidInput(f"{text!r} is not an {cls.__name__} address")
        ip = str.__new__(family, text)
        ip._value = value
        return ip

    def __int__(self) -> int:
        return self._value

    def __getnewargs__(self) -> tuple[str]:  # pickling (multiprocessing) rebuilds it from text
        return (str(self),)


class IPv4(IP):
    """An IPv4 address (see :class:`IP`)."""

    version = 4


class IPv6(IP):
    """An IPv6 address, as canonical text (see :class:`IP`)."""

    version = 6


def parse_address(text: str, what: str, *, prefix: str = "required") -> tuple[int, int | None]:
    """Parse ``address/len`` (either family) into ``(address, prefixlen)``.

    ``prefix`` is ``"required"`` (the original's range syntax), ``"optional"`` or
    ``"forbidden"``. ``what`` names the option in the error message.
    """
    address, slash, length = text.strip().partition("/")
    try:
        ip = ip_to_int(address)
    except _NotALanAddress as err:
        raise InvalidInput(f"{what}: {err}") from None
    except InvalidInput:
        raise InvalidInput(f"{what}: '{text}' is not a valid IPv4 or IPv6 address") from None
    if slash and prefix == "forbidden":
        raise InvalidInput(f"{what}: '{text}' must be a plain address without /prefix")
    if not slash and prefix == "required":
        example = 24 if ip < V6_START else 64
        raise InvalidInput(f"{what}: '{text}' has no prefix length; write it with one, e.g. {text}/{example}")
    if not slash:
        return ip, None
    bits = _BITS[version_of(ip)]
    if not length.isdigit() or not 0 < int(length) <= bits:
        raise InvalidInput(f"{what}: '{text}' has an invalid prefix length (1-{bits})")
    return ip, int(length)


def parse_ip(text: str, what: str) -> IP:
    """A plain address typed by someone (no prefix length); ``what`` names the option."""
    return IP(parse_address(text, what, prefix="forbidden")[0])


@dataclass(frozen=True, order=True)
class Subnet:
    """A network of either family: ``network`` is the first address, ``prefixlen`` its
    mask length; the family follows from ``network`` (see the module docstring)."""

    network: int
    prefixlen: int

    @classmethod
    def of(cls, ip: int, prefixlen: int) -> Subnet:
        """The subnet of ``ip`` with ``prefixlen``; an IPv6 prefix so short that the subnet
        would hold ``::/80`` is an error."""
        bits = _BITS[version_of(ip)]
        network = ip & ~((1 << (bits - prefixlen)) - 1)
        if ip >= V6_START and network < _V6_REFUSED:
            raise InvalidInput(f"{int_to_ip(ip)}/{prefixlen}: an IPv6 prefix that short would hold ::/80")
        return cls(network, prefixlen)

    @classmethod
    def parse(cls, text: str, what: str = "subnet") -> Subnet:
        """Parse a CIDR (``198.51.100.0/24``, ``2001:db8:1::/64``); host bits set are an error."""
        return _parse_subnet(text, what)

    @property
    def version(self) -> int:
        return version_of(self.network)

    @property
    def broadcast(self) -> int:
        """The last address (IPv4's broadcast address)."""
        return self.network | ((1 << (_BITS[self.version] - self.prefixlen)) - 1)

    def contains(self, ip: int) -> bool:
        return self.network <= ip <= self.broadcast

    def holds(self, other: Subnet) -> bool:
        """Whether ``other`` lies wholly inside this subnet."""
        return self.contains(other.network) and self.contains(other.broadcast)

    def overlaps(self, other: Subnet) -> bool:
        return self.holds(other) or other.holds(self)

    def covers(self, start: int, end: int) -> bool:
        """Whether [start, end] lies inside the subnet, off the addresses no host may have:
        IPv4's network and broadcast addresses, IPv6's Subnet-Router anycast address (the
        first; an IPv6 subnet has no broadcast). Point-to-point subnets (/31, /127) have none."""
        if self.prefixlen >= _BITS[self.version] - 1:
            return self.network <= start and end <= self.broadcast
        last = self.broadcast - 1 if self.version == 4 else self.broadcast
        return self.network < start and end <= last

    def __str__(self) -> str:
        return f"{int_to_ip(self.network)}/{self.prefixlen}"


@lru_cache(maxsize=256)
def _parse_subnet(text: str, what: str) -> Subnet:
    # Cached: leases name their subnet as text, and a store holds few subnets.
    ip, length = parse_address(text, what)
    assert length is not None
    subnet = Subnet.of(ip, length)
    if subnet.network != ip:
        raise InvalidInput(f"{what}: '{text}' is not a network address (did you mean {subnet}?)")
    return subnet


def is_link_local(ip: int) -> bool:
    """Whether ``ip`` is an IPv6 link-local address (fe80::/10)."""
    return LINK_LOCAL[0] <= ip <= LINK_LOCAL[1]


def eui64(subnet: Subnet, mac: str) -> IPv6:
    """The address a host with ``mac`` forms in the IPv6 /64 ``subnet`` by SLAAC's EUI-64
    rule (RFC 4291 appendix A): the MAC's halves around ``ff:fe``, the universal/local
    bit flipped. ``mac`` as :func:`validate_mac` writes it."""
    if subnet.version != 6 or subnet.prefixlen != 64:
        raise InvalidInput(f"addresses derived from MACs (EUI-64) need an IPv6 /64, not {subnet}")
    octets = bytes.fromhex(mac.replace(":", ""))
    interface = bytes([octets[0] ^ 0x02, *octets[1:3], 0xFF, 0xFE, *octets[3:6]])
    return IPv6(subnet.network | int.from_bytes(interface, "big"))


def holds_eui64_addresses(start: int, end: int) -> bool:
    """Whether [start, end] holds an address of EUI-64 form (``ff:fe`` in the middle of its
    interface id): one a SLAAC host may form from its MAC."""
    first, last = start >> 24, end >> 24  # the interface id's bits 24-39 are ff:fe
    candidate = (first & ~0xFFFF) | 0xFFFE
    if candidate < first:
        candidate += 0x10000
    return candidate <= last


@dataclass(frozen=True)
class AddressRange:
    """An inclusive range of addresses typed with a prefix length (``start/len - end/len``)."""

    start: int
    end: int
    prefixlen: int

    @property
    def version(self) -> int:
        return version_of(self.start)

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
    """A range as typed by the user, clamped off the addresses no host may have."""

    range: AddressRange
    notes: tuple[str, ...]


def parse_range(start_text: str, end_text: str) -> ParsedRange:
    """Validate ``--ip-start``/``--ip-end`` as the original tool takes them.

    Both need the same prefix length, start must not be after end, and end must lie in
    start's subnet. A range that includes the subnet's network or broadcast address (IPv6:
    its Subnet-Router anycast address) is accepted with those skipped; the returned notes
    say so.
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
    if not subnet.covers(start, start):
        first = "network" if subnet.version == 4 else "Subnet-Router anycast"
        notes.append(f"skipping {int_to_ip(start)}: the {first} address of {subnet}")
        start += 1
    if start <= end and not subnet.covers(end, end):
        notes.append(f"skipping {int_to_ip(end)}: the broadcast address of {subnet}")
        end -= 1
    if start > end:
        raise InvalidInput(f"the range holds only addresses no host may have in {subnet} (its first and last)")
    return ParsedRange(AddressRange(start, end, start_len), tuple(notes))


@dataclass(frozen=True)
class Window:
    """Where dynamic addresses may come from: a container range, possibly narrowed
    (Docker's ``--ip-range`` sub-pool) to ``[start, end]``."""

    range: AddressRange
    start: int
    end: int

    @classmethod
    def whole(cls, r: AddressRange) -> Window:
        return cls(r, r.start, r.end)

    @property
    def is_whole(self) -> bool:
        return (self.start, self.end) == (self.range.start, self.range.end)

    def contains(self, ip: int) -> bool:
        return self.start <= ip <= self.end

    def __str__(self) -> str:
        return str(self.range) if self.is_whole else f"{int_to_ip(self.start)}-{int_to_ip(self.end)} of {self.range}"


@dataclass(frozen=True)
class Config:
    """Everything declared with ``host-range`` and ``ip-range``, stored as one document.

    Keeping it in one key lets a declaration check overlaps and write with a single
    compare-and-swap, so two concurrent declarations can never both succeed when they
    overlap.
    """

    #: the declared LAN subnets, each with its default gateway (stored as ``gateways``)
    lans: Mapping[Subnet, IP] = field(default_factory=dict)
    host_ranges: tuple[AddressRange, ...] = ()
    ip_ranges: tuple[AddressRange, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "gateways": {str(lan): gateway for lan, gateway in sorted(self.lans.items())},
            "host_ranges": [r.to_json() for r in self.host_ranges],
            "ip_ranges": [r.to_json() for r in self.ip_ranges],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Config:
        return cls(
            lans={Subnet.parse(cidr): IP(gateway) for cidr, gateway in data.get("gateways", {}).items()},
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

    def container_ranges_in(self, subnet: Subnet) -> list[AddressRange]:
        """Container ranges serving ``subnet``: a range belongs to every subnet holding it."""
        return [r for r in self.ip_ranges if subnet.covers(r.start, r.end)]

    def lan_subnet_of(self, ip: int) -> Subnet | None:
        """The declared LAN subnet (from host-range) holding ``ip``, the widest if several."""
        holding = [lan for lan in self.lans if lan.contains(ip)]
        return min(holding, key=lambda s: s.prefixlen) if holding else None

    def lan_of(self, declared: AddressRange) -> Subnet:
        """The LAN a range belongs to: the declared LAN holding it, else (no LAN declared
        there) the subnet it was typed in."""
        return self.lan_subnet_of(declared.start) or declared.subnet

    def lan_of_address(self, ip: int) -> Subnet | None:
        """The LAN an address belongs to: its container range's, else the declared LAN
        holding it (None: neither)."""
        declared = self.container_range_of(ip)
        return self.lan_of(declared) if declared else self.lan_subnet_of(ip)

    def gateway_of(self, subnet: Subnet) -> IP | None:
        return self.lans.get(subnet)

    def is_lan_gateway(self, ip: int) -> bool:
        return any(int(gateway) == ip for gateway in self.lans.values())


def now_iso() -> str:
    """UTC wall-clock time, second precision, for lease records people read."""
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def parse_time(text: str) -> datetime | None:
    """A time :func:`now_iso` wrote, as an aware datetime; None if it is not one."""
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))  # Python 3.10 reads no "Z"
    except ValueError:
        return None


@dataclass(frozen=True)
class Lease:
    """Who holds an address, and since when. Stored as JSON, one record per address."""

    ip: IP
    kind: str
    state: str
    #: the pool subnet the address was handed out in, e.g. ``198.51.100.0/24``
    subnet: Subnet
    host: str = ""
    since: str = ""
    mac: str = ""
    #: the container range the address belongs to (its id), empty for host/gateway
    range: str = ""
    #: reservation name: the address stays with this name across container restarts
    name: str = ""
    #: what is known about the holder: container id/name, network, endpoint
    owner: dict[str, str] = field(default_factory=dict)
    #: while released: where the address waits in its range's free list (see :mod:`..state`)
    free_key: str = ""
    #: gateway/aux records are shared: per host, how many of its networks use the
    #: address, by pool (``{"hostA": {"198.51.100.0/24": 2}}``)
    refs: Mapping[str, Mapping[str, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Text is accepted where a lease is written by hand (tests, old records) and
        # checked here, once.
        if not isinstance(self.ip, IP):
            object.__setattr__(self, "ip", IP(self.ip))
        if not isinstance(self.subnet, Subnet):
            object.__setattr__(self, "subnet", Subnet.parse(self.subnet))

    @property
    def cidr(self) -> str:
        """The address with its pool's prefix length, as Docker wants it."""
        return f"{self.ip}/{self.subnet.prefixlen}"

    @property
    def users(self) -> tuple[str, ...]:
        """The hosts whose networks use a shared gateway/aux record."""
        return tuple(sorted(host for host, pools in self.refs.items() if any(pools.values())))

    def is_host_of(self, host: str) -> bool:
        """Whether this is ``host``'s own LAN address."""
        return self.kind == KIND_HOST and self.host == host

    def is_container_of(self, host: str, mac: str) -> bool:
        """Whether this is held by a container of ``host`` with the MAC ``mac`` (where
        either MAC is unknown, any)."""
        return (
            self.kind == KIND_CONTAINER
            and self.state == STATE_HELD
            and self.host == host
            and (not self.mac or not mac or self.mac == mac)
        )

    @property
    def holder(self) -> str:
        """The container or reservation holding the address, as far as the record knows:
        the container's name, else its short id, else the reservation's name ("")."""
        return self.owner.get("name") or self.owner.get("container_id", "")[:12] or self.name

    def describe(self) -> str:
        """A short phrase for messages: ``container held by web1``."""
        if self.kind == KIND_CONFLICT:
            return f"conflict: {self.mac} answered for it on the LAN, last at {self.owner.get(SEEN) or self.since}"
        who = self.holder or self.host
        return f"{self.kind} {self.state}" + (f" by {who}" if who else "")

    def to_json(self) -> dict[str, Any]:
        # Shallow on purpose: asdict deep-copies, and this is on every allocation's path.
        data = {name: getattr(self, name) for name in self.__dataclass_fields__}
        data["ip"], data["subnet"] = str(self.ip), str(self.subnet)
        data["refs"] = {host: dict(sorted(pools.items())) for host, pools in sorted(self.refs.items())}
        data["owner"] = dict(self.owner)
        # Empty fields are noise for a person reading etcdctl output.
        return {k: v for k, v in data.items() if v or k in ("ip", "kind", "state", "subnet")}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Lease:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        # Before 0.2 a shared record listed its hosts (one network each, pool unknown:
        # ""), and aux kind records said "reserved".
        refs = known.get("refs") or {host: {"": 1} for host in data.get("users", ())}
        known["refs"] = {str(h): {str(p): int(n) for p, n in dict(pools).items()} for h, pools in dict(refs).items()}
        known["owner"] = {str(k): str(v) for k, v in dict(known.get("owner", {})).items()}
        if known.get("kind") == _LEGACY_AUX:
            known["kind"] = KIND_AUX
        return cls(**known)


@dataclass(frozen=True)
class Holder:
    """Who asks for an address: everything its lease will record but the address."""

    kind: str
    state: str
    subnet: Subnet
    host: str
    mac: str = ""
    name: str = ""
    owner: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def stranger(cls, subnet: Subnet, host: str, mac: str) -> Holder:
        """A device shrike does not know, which ``host`` found answering with ``mac`` just now."""
        return cls(KIND_CONFLICT, STATE_HELD, subnet, host, mac=mac, owner={SEEN: now_iso()})

    def lease(self, ip: IP, range_id: str = "") -> Lease:
        """The lease this holder gets for ``ip`` (of the container range ``range_id``), now."""
        return Lease(
            ip=ip,
            kind=self.kind,
            state=self.state,
            subnet=self.subnet,
            host=self.host,
            since=now_iso(),
            mac=self.mac,
            range=range_id,
            name=self.name,
            owner=dict(self.owner),
        )


def validate_mac(text: str) -> str:
    """Normalise a MAC address to lower-case colon form."""
    try:
        return str(netaddr.EUI(text, dialect=netaddr.mac_unix_expanded))
    except (netaddr.AddrFormatError, TypeError, ValueError):
        raise InvalidInput(f"'{text}' is not a MAC address") from None
