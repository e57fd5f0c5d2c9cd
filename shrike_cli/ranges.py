"""Declaring LAN subnets, host ranges and container ranges (``host-range``, ``ip-range``),
and reading the declarations back (:class:`Declarations`).

The whole declaration lives in one document (:meth:`State.config`); a change is validated
against the document it read and written with a compare-and-swap on it, so two
concurrent declarations cannot both pass an overlap check they would fail together.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import TypeVar

from .cas import ContentionTimeout
from .errors import InvalidInput, NotFound
from .model import (
    IP,
    KIND_CONTAINER,
    KIND_HOST,
    STATE_HELD,
    STATE_PARKED,
    STATE_RESERVED,
    AddressRange,
    Config,
    Lease,
    Subnet,
    holds_eui64_addresses,
    int_to_ip,
    is_link_local,
    parse_address,
    parse_range,
)
from .state import State

T = TypeVar("T")

#: How long a long-running caller (the plugin) trusts its copy of the declarations.
CONFIG_TTL = 2.0


@dataclass(frozen=True)
class Declared:
    """The outcome of a declaration, for the CLI to report."""

    kind: str
    range: AddressRange
    subnet: Subnet
    gateway: IP | None
    #: False when exactly this range was declared already (nothing written)
    created: bool
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, object]:
        return {
            **_range_json(self.kind, self.range, self.subnet, self.gateway),
            "created": self.created,
            "notes": list(self.notes),
        }


def _range_json(kind: str, declared: AddressRange, subnet: Subnet, gateway: IP | None) -> dict[str, object]:
    """The fields every listing of a range shares."""
    return {
        "kind": kind,
        "start": int_to_ip(declared.start),
        "end": int_to_ip(declared.end),
        "prefixlen": declared.prefixlen,
        "subnet": str(subnet),
        "gateway": gateway,
        "size": declared.size,
    }


def _update(state: State, change: Callable[[Config], Config | None], max_wait: float) -> Config:
    try:
        return state.update_config(change, max_wait=max_wait)
    except ContentionTimeout as err:
        raise ContentionTimeout(f"could not update the range declarations: {err}") from None


def _check_free_of_ranges(config: Config, new: AddressRange, kind: str) -> None:
    for other_kind, other in config.all_ranges():
        if other.overlaps(new):
            raise InvalidInput(f"{kind} range {new} overlaps the {other_kind} range {other}")


def _check_subnet(config: Config, subnet: Subnet) -> None:
    """LAN subnets may repeat but not overlap partly (a /24 inside a declared /22)."""
    for other in config.lans:
        if other != subnet and other.overlaps(subnet):
            raise InvalidInput(f"subnet {subnet} overlaps the declared subnet {other}")


def add_lan(config: Config, subnet: Subnet, gateway: IP) -> Config:
    """``config`` with the LAN ``subnet`` and its default ``gateway`` declared; the same
    config when it already is, with that gateway."""
    known = config.gateway_of(subnet)
    if known is not None:
        if known != gateway:
            raise InvalidInput(f"subnet {subnet} already has the gateway {known}, not {gateway}")
        return config
    _check_subnet(config, subnet)
    for kind, declared in config.all_ranges():
        if declared.contains(int(gateway)):
            raise InvalidInput(f"the gateway {gateway} lies inside the {kind} range {declared}")
    return replace(config, lans={**config.lans, subnet: gateway})


def add_host_range(config: Config, new: AddressRange, gateway: IP | None = None) -> Config | None:
    """``config`` with the host range ``new`` and its LAN (the subnet it was typed in) with
    ``gateway``, which may be left out once the LAN has one; None when exactly that range
    is declared already."""
    gateway = gateway or config.gateway_of(new.subnet)
    if gateway is None:
        raise InvalidInput(f"subnet {new.subnet} has no gateway yet: give --gateway")
    if new.contains(int(gateway)):
        raise InvalidInput(f"the gateway {gateway} lies inside the host range {new}")
    config = add_lan(config, new.subnet, gateway)
    if new in config.host_ranges:
        return None
    _check_free_of_ranges(config, new, KIND_HOST)
    return replace(config, host_ranges=(*config.host_ranges, new))


def add_ip_range(config: Config, new: AddressRange) -> Config | None:
    """``config`` with the container range ``new``; None when exactly that range already is."""
    if new in config.ip_ranges:
        return None
    _check_free_of_ranges(config, new, KIND_CONTAINER)
    for lan_subnet, gw in config.lans.items():
        if new.contains(int(gw)):
            raise InvalidInput(f"container range {new} holds {gw}, the gateway of {lan_subnet}")
    lan = config.lan_of(new)
    if not lan.covers(new.start, new.end):
        raise InvalidInput(
            f"container range {new} must lie inside the subnet {lan}, off its network and broadcast addresses"
        )
    return replace(config, ip_ranges=(*config.ip_ranges, new))


def declare_host_range(state: State, ip_start: str, ip_end: str, gateway: str | None, *, max_wait: float) -> Declared:
    """Declare addresses kept for hosts, and with them the LAN subnet and its gateway.

    The subnet comes from the prefix length. ``gateway`` may be omitted when the subnet
    already has one; a different one than declared is an error.
    """
    parsed = parse_range(ip_start, ip_end)
    new = parsed.range
    subnet = new.subnet
    gateway_ip = _gateway(gateway, subnet) if gateway is not None else None
    outcome: dict[str, Declared] = {}

    def change(config: Config) -> Config | None:
        new_config = add_host_range(config, new, gateway_ip)
        final_gateway = gateway_ip or config.gateway_of(subnet)
        outcome["d"] = Declared(KIND_HOST, new, subnet, final_gateway, new_config is not None, parsed.notes)
        return new_config

    _update(state, change, max_wait)
    return outcome["d"]


def _gateway(text: str, subnet: Subnet) -> IP:
    """``--gateway``: a usable address of ``subnet``, or for an IPv6 LAN also a link-local
    one (routers usually advertise themselves by their link-local address)."""
    gw, gw_len = parse_address(text, "--gateway", prefix="optional")
    if gw_len is not None and gw_len != subnet.prefixlen:
        raise InvalidInput(f"--gateway {text} has another prefix length than the range (/{subnet.prefixlen})")
    gateway = IP(gw)
    if gateway.version != subnet.version:
        raise InvalidInput(f"--gateway {gateway} is not an IPv{subnet.version} address, as the subnet {subnet} is")
    if not subnet.covers(gw, gw) and not (subnet.version == 6 and is_link_local(gw)):
        link_local = " (nor link-local, fe80::/10)" if subnet.version == 6 else ""
        raise InvalidInput(f"--gateway {gateway} is not a usable address of the subnet {subnet}{link_local}")
    return gateway


def _slaac_note(declared: AddressRange) -> tuple[str, ...]:
    """A note when SLAAC hosts may form addresses of ``declared`` (an IPv6 /64 container
    range holding EUI-64 interface ids): see the README on router advertisements."""
    if declared.version != 6 or declared.prefixlen != 64 or not holds_eui64_addresses(declared.start, declared.end):
        return ()
    return (
        f"{declared} holds addresses of the form ...:xxff:fexx:xxxx, which SLAAC hosts form from their MACs:"
        " advertise the prefix without the autonomous flag, or declare a range below ::ff:fe00:0",
    )


def declare_ip_range(state: State, ip_start: str, ip_end: str, *, max_wait: float) -> Declared:
    """Declare a range of addresses handed to containers.

    The range serves every declared LAN subnet that contains it (a range typed /24
    inside a /22 LAN serves the /22) and, with no LAN declared, the subnet it was typed in.
    """
    parsed = parse_range(ip_start, ip_end)
    new = parsed.range
    notes = parsed.notes + _slaac_note(new)
    outcome: dict[str, Declared] = {}

    def change(config: Config) -> Config | None:
        lan = config.lan_of(new)
        new_config = add_ip_range(config, new)
        outcome["d"] = Declared(KIND_CONTAINER, new, lan, config.gateway_of(lan), new_config is not None, notes)
        return new_config

    _update(state, change, max_wait)
    return outcome["d"]


class Declarations:
    """The declarations as one :class:`~shrike_cli.ipam.Ipam` reads them: afresh, or from
    a copy up to CONFIG_TTL seconds old, so that a long-running caller (the plugin) does
    not read the store for every request."""

    def __init__(self, state: State) -> None:
        self.state = state
        self._config: Config | None = None
        self._read_at = 0.0

    def read(self, *, fresh: bool = True) -> Config:
        """The declarations; ``fresh=False`` accepts a copy up to CONFIG_TTL seconds old."""
        if fresh or self._config is None or time.monotonic() - self._read_at > CONFIG_TTL:
            self._config = self.state.config()[0]
            self._read_at = time.monotonic()
        return self._config

    def forget(self) -> None:
        """Drop the copy: this caller has just changed the declarations."""
        self._config = None

    def apply(self, action: Callable[[Config], T]) -> T:
        """Run ``action`` on the copy; if it finds something unknown, the copy may predate
        a new declaration, so try once more on a fresh read."""
        try:
            return action(self.read(fresh=False))
        except (NotFound, InvalidInput):
            return action(self.read())

    def container_range(self, ip: IP) -> tuple[Subnet, str]:
        """The LAN and the id of the container range holding ``ip``."""

        def locate(config: Config) -> tuple[Subnet, str]:
            declared = config.container_range_of(int(ip))
            if declared is None:
                raise InvalidInput(f"{ip} is outside every container range")
            return config.lan_of(declared), declared.id

        return self.apply(locate)


@dataclass(frozen=True)
class RangeUsage:
    """A declared range with how many of its addresses are taken, for listings."""

    kind: str
    range: AddressRange
    subnet: Subnet
    gateway: IP | None
    held: int
    reserved: int

    def to_json(self) -> dict[str, object]:
        return {
            **_range_json(self.kind, self.range, self.subnet, self.gateway),
            "held": self.held,
            "reserved": self.reserved,
            "free": self.range.size - self.held - self.reserved,
        }


def usage(config: Config, leases: Iterable[Lease]) -> list[RangeUsage]:
    """Every declared range with its counts of held and reserved addresses (reserved for
    a name, or parked for a stopped container: no other container gets them)."""
    return usage_by_state(config, ((int(lease.ip), lease.state) for lease in leases))


def usage_by_state(config: Config, states: Iterable[tuple[int, str]]) -> list[RangeUsage]:
    """:func:`usage` from each lease's address (an integer) and state alone
    (:meth:`State.lease_states`: the metrics count a large LAN often)."""
    counts: dict[tuple[str, AddressRange], Counter[str]] = {key: Counter() for key in config.all_ranges()}
    for address, state in states:
        for kind, declared in counts:
            if declared.contains(address):
                counts[(kind, declared)][state] += 1
    result = []
    for (kind, declared), count in counts.items():
        subnet = config.lan_of(declared)
        result.append(
            RangeUsage(
                kind,
                declared,
                subnet,
                config.gateway_of(subnet),
                count[STATE_HELD],
                count[STATE_RESERVED] + count[STATE_PARKED],
            )
        )
    return result
