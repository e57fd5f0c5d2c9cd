"""The consistency check: the invariants between records (the package's docstring), verified
in one snapshot of the store, each broken one a :class:`Finding` with the repair
:meth:`State.repair` may apply."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from ..errors import Damaged, InvalidInput
from ..model import (
    IP,
    KIND_AUX,
    KIND_CONFLICT,
    KIND_CONTAINER,
    KIND_GATEWAY,
    KIND_HOST,
    SHARED_KINDS,
    STATE_HELD,
    STATE_PARKED,
    STATE_RELEASED,
    STATE_RESERVED,
    Config,
    Lease,
    Subnet,
)
from ..stores.base import Compare, Delete, Entry, Op, Put
from .change import Change, _parked_value, released
from .layout import (
    CURSORS,
    EUI64_SUFFIX,
    FREE,
    LEASES,
    MACS,
    NAMES,
    POOLS,
    RECORD_KINDS,
    _indexed,
    _indexed_mac,
    _lease_key,
    _name_key,
    _parked_key,
)
from .values import Idle, _decoded, _idle, _parked

T = TypeVar("T")

#: The problems :meth:`State.check` reports, one code per broken rule (scripts read them).
UNKNOWN_RECORD = "unknown-record"
DAMAGED_RECORD = "damaged-record"
LEASE_MISFILED = "lease-misfiled"
LEASE_OUTSIDE = "lease-outside-ranges"
LEASE_STATE = "lease-state"
FREE_MISSING = "free-entry-missing"
FREE_DANGLING = "free-entry-dangling"
PARKED_MISSING = "parked-entry-missing"
PARKED_DANGLING = "parked-entry-dangling"
NAME_MISSING = "name-missing"
NAME_DANGLING = "name-dangling"
NAME_TWICE = "name-on-two-leases"
MAC_DANGLING = "mac-dangling"
CURSOR_OUTSIDE = "cursor-outside-range"

#: The states a lease of each kind may be in.
_STATES = {
    KIND_CONTAINER: (STATE_HELD, STATE_RELEASED, STATE_RESERVED, STATE_PARKED),
    KIND_HOST: (STATE_HELD,),
    KIND_GATEWAY: (STATE_HELD,),
    KIND_AUX: (STATE_HELD,),
    KIND_CONFLICT: (STATE_HELD,),
}


@dataclass(frozen=True)
class Finding:
    """A record that breaks a rule between records (see the package docstring), or one
    shrike does not know, as :meth:`State.check` found it in one snapshot of the store."""

    #: which rule (one of the codes above)
    problem: str
    #: the address it concerns ("" for none)
    ip: str
    #: what is wrong, for people, naming the records
    detail: str
    #: what :meth:`State.repair` does about it; "" when nothing is safe to do (a person must look)
    repair: str = ""
    _change: Change | None = field(default=None, repr=False, compare=False)

    def to_json(self) -> dict[str, str]:
        return {"problem": self.problem, "ip": self.ip, "detail": self.detail, "repair": self.repair}


@dataclass(frozen=True)
class Survey:
    """What :meth:`State.check` read (how many records) and found."""

    records: int
    findings: tuple[Finding, ...]


def _fix(compares: Sequence[Compare], ops: Sequence[Op]) -> Change:
    """A repair: ``ops`` only if every record it was decided from is as it was read."""
    change = Change()
    change.compares += compares
    change.ops += ops
    return change


def _since_ns(lease: Lease) -> int:
    """When ``lease`` was last written (its ``since``), in ns since the epoch; now if unreadable."""
    try:
        return int(datetime.fromisoformat(lease.since.replace("Z", "+00:00")).timestamp() * 1e9)
    except ValueError:
        return time.time_ns()


class _Checker:
    """The rules between the records of one snapshot of the store (:meth:`State.check`)."""

    def __init__(self, entries: Sequence[Entry]) -> None:
        self.found: list[Finding] = []
        self.config = Config()
        #: leases by the address their key names, with their revisions
        self.leases: dict[str, tuple[Lease, int]] = {}
        self.by_kind: dict[str, list[Entry]] = {kind.name: [] for kind in RECORD_KINDS}
        for entry in entries:
            kind = next((kind for kind in RECORD_KINDS if kind.owns(entry.key)), None)
            if kind is None:
                self.add(UNKNOWN_RECORD, "", f"'{entry.key}' is no record shrike writes (left alone)")
            else:
                self.by_kind[kind.name].append(entry)

    def add(self, problem: str, ip: str, detail: str, repair: str = "", change: Change | None = None) -> None:
        self.found.append(Finding(problem, ip, detail, repair, change))

    def decoded(self, entry: Entry, what: str, decode: Callable[[dict[str, Any]], T]) -> T | None:
        """``decode(entry.value)``, or None with a finding when the record is damaged."""
        try:
            return _decoded(entry, what, decode)
        except Damaged as err:
            self.add(DAMAGED_RECORD, "", str(err))
            return None

    def run(self) -> list[Finding]:
        for entry in self.by_kind["declarations"]:
            self.config = self.decoded(entry, "declarations", Config.from_json) or Config()
        for entry in self.by_kind["leases"]:
            self.lease(entry)
        self.free_list()
        self.parked()
        self.names()
        self.macs()
        for entry in self.by_kind["cursors"]:
            self.cursor(entry)
        for entry in self.by_kind["pools"]:
            self.decoded(entry, "pool record", _pool_record(entry.key))
        return self.found

    # -- leases
    def lease(self, entry: Entry) -> None:
        lease = self.decoded(entry, "lease", Lease.from_json)
        if lease is None:
            return
        named = entry.key.removeprefix(LEASES)
        if lease.ip != named:
            self.add(LEASE_MISFILED, named, f"'{entry.key}' holds the lease of {lease.ip}: {named} is held twice")
            return
        self.leases[named] = (lease, entry.revision)
        where = self.placement(lease)
        if where:
            self.add(LEASE_OUTSIDE, lease.ip, f"the {lease.kind} lease of {lease.ip} {where}")
        wrong = self.state_of(lease)
        if wrong:
            self.add(LEASE_STATE, lease.ip, f"the {lease.kind} lease of {lease.ip} is {lease.state} {wrong}")

    def placement(self, lease: Lease) -> str:
        """Why ``lease`` is not where the declarations allow it ("" when it is)."""
        address, config = int(lease.ip), self.config
        if not lease.subnet.contains(address):
            return f"lies outside its subnet {lease.subnet}"
        declared = config.container_range_of(address)
        # A conflict is a container address found answering on the LAN: where containers' are.
        if lease.kind in (KIND_CONTAINER, KIND_CONFLICT):
            if declared is None and not lease.range and lease.kind == KIND_CONTAINER and self.derivable(lease):
                return ""  # an address its MAC derives (EUI-64): a container's outside the ranges
            if declared is None:
                return "lies outside every declared container range"
            if lease.range != declared.id:
                return f"names the range '{lease.range}', not {declared.id}, which holds it"
            if not config.lan_of(declared).holds(lease.subnet):
                return f"names the subnet {lease.subnet}, outside its LAN {config.lan_of(declared)}"
        elif declared is not None:
            return f"lies in the container range {declared}"
        elif lease.kind == KIND_HOST and config.host_range_of(address) is None:
            return "lies outside every declared host range"
        elif lease.kind != KIND_HOST and not any(lan.holds(lease.subnet) for lan in self.lans()):
            return f"names the subnet {lease.subnet}, outside every LAN shrike serves"
        return ""

    def lans(self) -> set[Subnet]:
        return set(self.config.lans) | {self.config.lan_of(r) for r in self.config.ip_ranges}

    def derivable(self, lease: Lease) -> bool:
        """Whether ``lease`` (naming no range) may hold an address derived from its MAC: an
        IPv6 /64 of a LAN shrike serves, off the host ranges and the LANs' gateways."""
        address, config = int(lease.ip), self.config
        return (
            (lease.subnet.version, lease.subnet.prefixlen) == (6, 64)
            and any(lan.holds(lease.subnet) for lan in self.lans())
            and config.host_range_of(address) is None
            and not config.is_lan_gateway(address)
        )

    @staticmethod
    def state_of(lease: Lease) -> str:
        """Why ``lease``'s kind and state do not go together ("" when they do)."""
        if lease.state not in _STATES.get(lease.kind, ()):
            return "(no state a lease of that kind has)"
        if lease.state == STATE_RELEASED and lease.name:
            return f"and still names the reservation {lease.name}"
        if lease.state != STATE_RELEASED and lease.free_key:
            return f"and still names the free-list entry '{lease.free_key}'"
        if lease.state == STATE_RESERVED and not lease.name:
            return "and names no reservation"
        if lease.state == STATE_PARKED and lease.name:
            return f"for the reservation {lease.name}, which keeps it as reserved"
        if lease.kind in SHARED_KINDS and not lease.users:
            return "and no host's network uses it any more"
        return ""

    def lease_compare(self, ip: str) -> Compare:
        """The lease of ``ip`` is as read (absent: revision 0)."""
        return (_lease_key(ip), self.leases[ip][1] if ip in self.leases else 0)

    # -- free lists
    def free_list(self) -> None:
        listed = set()
        for entry in self.by_kind["free"]:
            idle = self.decoded(entry, "free-list entry", lambda _, e=entry: _free_entry(e))
            if idle is None:
                continue
            listed.add(entry.key)
            lease = self.leases.get(idle.ip, (None, 0))[0]
            if lease is None or lease.state != STATE_RELEASED or lease.free_key != entry.key:
                what = "no lease" if lease is None else f"its lease is {lease.state}"
                if lease is not None and lease.state == STATE_RELEASED:
                    what = f"its lease waits at '{lease.free_key}'"
                self.add(
                    FREE_DANGLING,
                    idle.ip,
                    f"'{entry.key}' offers {idle.ip}, but {what}: it could be handed out twice",
                    "remove the entry",
                    _fix([(entry.key, entry.revision), self.lease_compare(idle.ip)], [Delete(entry.key)]),
                )
        for ip, (lease, revision) in self.leases.items():
            if lease.state != STATE_RELEASED or lease.free_key in listed:
                continue
            where = f"'{lease.free_key}'" if lease.free_key else "no free-list entry"
            fixed = lease if lease.free_key else released(lease)
            change = _fix([(_lease_key(ip), revision)], [])
            if lease.free_key:
                change.compares.append((lease.free_key, 0))
                change.ops.append(Put(lease.free_key, {"ip": lease.ip, "mac": lease.mac}))
            else:
                change.write(fixed, previous=lease)
            self.add(
                FREE_MISSING,
                ip,
                f"{ip} is released but {where} is missing from its range's free list: it is never handed out again",
                "put it back on the free list",
                change,
            )

    # -- parked addresses
    def parked(self) -> None:
        listed = set()
        for entry in self.by_kind["parked"]:
            kept = self.decoded(entry, "parked entry", lambda _, e=entry: _parked(e))
            if kept is None:
                continue
            listed.add(entry.key)
            lease = self.leases.get(kept.ip, (None, 0))[0]
            if lease is None or lease.state != STATE_PARKED or _parked_key(lease) != entry.key:
                what = "no lease" if lease is None else f"its lease is {lease.state} ({lease.host or 'no host'})"
                self.add(
                    PARKED_DANGLING,
                    kept.ip,
                    f"'{entry.key}' keeps {kept.ip} for {kept.name or kept.container_id or 'a container'}, but {what}:"
                    " it could be handed out twice",
                    "remove the entry",
                    _fix([(entry.key, entry.revision), self.lease_compare(kept.ip)], [Delete(entry.key)]),
                )
        for ip, (lease, revision) in self.leases.items():
            if lease.state != STATE_PARKED or (key := _parked_key(lease)) in listed:
                continue
            value = {**_parked_value(lease), "at": _since_ns(lease)}
            self.add(
                PARKED_MISSING,
                ip,
                f"{ip} is parked for {lease.holder or 'a container'} on {lease.host}, but '{key}' is missing:"
                " its container does not get it back",
                "put the parked entry back",
                _fix([(_lease_key(ip), revision), (key, 0)], [Put(key, value)]),
            )

    # -- indexes
    def names(self) -> None:
        # A name holds one address of each family: each family's index entry is its own.
        carriers: dict[tuple[str, int], list[str]] = {}
        for ip, (lease, _) in self.leases.items():
            if lease.name:
                carriers.setdefault((lease.name, lease.ip.version), []).append(ip)
        indexed = {}
        for entry in self.by_kind["reservations"]:
            ip = self.decoded(entry, "reservation", lambda v: IP(v["ip"]))
            if ip is None:
                continue
            name, version = _indexed(entry.key, NAMES)
            indexed[(name, version)] = ip
            holders = carriers.get((name, version), [])
            if ip in holders:
                continue
            detail = f"the reservation {name} points at {ip}, whose lease does not carry it"
            if not holders:
                self.add(
                    NAME_DANGLING,
                    ip,
                    detail,
                    "remove the index entry",
                    _fix([(entry.key, entry.revision), self.lease_compare(ip)], [Delete(entry.key)]),
                )
            elif len(holders) == 1:
                self.add(
                    NAME_DANGLING,
                    ip,
                    f"{detail}; {holders[0]}'s does",
                    f"point it at {holders[0]}",
                    _fix(
                        [(entry.key, entry.revision), self.lease_compare(ip), self.lease_compare(holders[0])],
                        [Put(entry.key, {"ip": holders[0]})],
                    ),
                )
        for (name, version), ips in carriers.items():
            if len(ips) > 1:
                self.add(NAME_TWICE, ips[0], f"the leases of {', '.join(ips)} all carry the reservation {name}")
            elif (name, version) not in indexed:
                key = _name_key(name, version)
                self.add(
                    NAME_MISSING,
                    ips[0],
                    f"the lease of {ips[0]} carries the reservation {name}, but '{key}' is missing",
                    "put the index entry back",
                    _fix([self.lease_compare(ips[0]), (key, 0)], [Put(key, {"ip": ips[0]})]),
                )

    def macs(self) -> None:
        # An entry may be missing (it goes when the address it pointed at passes to another
        # MAC, even if the MAC holds another address by then): only a wrong one is a problem.
        for entry in self.by_kind["macs"]:
            ip = self.decoded(entry, "MAC index entry", lambda v: IP(v["ip"]))
            if ip is None:
                continue
            mac, version = _indexed(entry.key, MACS)
            lease = self.leases.get(ip, (None, 0))[0]
            if lease is None or _indexed_mac(lease) != mac or ip.version != version:
                what = "no lease" if lease is None else f"its lease names the MAC {lease.mac or 'none'}"
                if lease is not None and lease.mac == mac:
                    what = f"the entry is for IPv{version} addresses"
                self.add(
                    MAC_DANGLING,
                    ip,
                    f"the MAC {mac} points at {ip}, but {what}",
                    "remove the index entry",
                    _fix([(entry.key, entry.revision), self.lease_compare(ip)], [Delete(entry.key)]),
                )

    # -- cursors
    def cursor(self, entry: Entry) -> None:
        value = self.decoded(entry, "cursor", lambda v: int(v["next"]))
        if value is None:
            return
        range_id, _, narrowed = entry.key.removeprefix(CURSORS).partition("@")
        declared = next((r for r in self.config.ip_ranges if r.id == range_id), None)
        if declared is None:
            self.add(CURSOR_OUTSIDE, "", f"'{entry.key}' is the cursor of {range_id}, no declared container range")
            return
        start, end = declared.start, declared.end
        if narrowed:
            first, _, last = narrowed.partition("-")
            try:
                start, end = int(IP(first)), int(IP(last))
            except InvalidInput:
                start, end = 1, 0
        if not declared.start <= start <= end <= declared.end:
            self.add(CURSOR_OUTSIDE, "", f"'{entry.key}' is the cursor of a window outside the range {declared}")
        elif not 0 <= value <= end - start + 1:
            self.add(CURSOR_OUTSIDE, "", f"'{entry.key}' stands at {value}, outside its window of {end - start + 1}")


def _free_entry(entry: Entry) -> Idle:
    """A free-list entry, its key and value agreeing (``free/<range-id>/<ns>-<ip>``)."""
    range_id, _, tail = entry.key.removeprefix(FREE).rpartition("/")
    idle = _idle(range_id, entry)
    if tail.partition("-")[2] != idle.ip or not range_id:
        raise ValueError(f"its key names another address than its value ({idle.ip})")
    return idle


def _pool_record(key: str) -> Callable[[dict[str, Any]], None]:
    """Checks a pool record (``{"subnet", "sub_pool", "refs"}``) at ``key``."""

    def check(value: dict[str, Any]) -> None:
        subnet, sub_pool = Subnet.parse(value["subnet"]), value.get("sub_pool")
        name = f"{subnet}/{Subnet.parse(sub_pool)}" if sub_pool else str(subnet)
        name += EUI64_SUFFIX if value.get("eui64") else ""
        if key.removeprefix(POOLS) != name:
            raise ValueError(f"its key does not name its pool {name}")
        if not all(type(n) is int and n > 0 for n in dict(value.get("refs", {})).values()):
            raise ValueError("its counts are not all positive numbers")

    return check
