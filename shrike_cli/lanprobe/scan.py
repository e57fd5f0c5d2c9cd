"""``shrike scan``: sweep a LAN's declared ranges with ARP probes, and compare what
answers with what the store says.

Every address of the LAN's container and host ranges is probed ``count`` times, the
frames at most ``rate`` a second (a /24's ranges take seconds; a /16's, an hour at the
default rate: scan a busy LAN's /16 with care). What it finds:

* **squatters**: addresses of a container range that answer although shrike holds them
  for nobody (no lease, released, a conflict recorded before), or for a container that
  is not running (reserved, parked); ``mark`` records the free ones as conflicts, so
  they are never handed out;
* **duplicates**: a held address answered by a MAC other than its lease's, or by two MACs;
* **hosts** answering in host ranges, and **conflicts** now silent (informational);
* **silent**: held leases nobody answers for, possible leaks (informational; in macvlan
  mode without a shim this host's own containers cannot answer it).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidInput, ShrikeError
from ..ipam import Ipam
from ..model import (
    KIND_CONFLICT,
    KIND_CONTAINER,
    KIND_HOST,
    STATE_HELD,
    STATE_PARKED,
    STATE_RELEASED,
    STATE_RESERVED,
    AddressRange,
    Config,
    IPv4,
    Lease,
    Subnet,
)
from . import arp
from .links import Routes

SQUATTER = "squatter"
DUPLICATE = "duplicate"
HOST = "host"
CONFLICT = "conflict"
SILENT = "silent"
#: Findings that need a person: ``shrike scan`` exits 1.
PROBLEMS = (SQUATTER, DUPLICATE)

#: Probe frames per second, at most (well under what a switch or an IDS would notice).
RATE = 50.0
#: Probes per address: one lost frame does not hide a squatter.
COUNT = 2
#: Seconds answers are awaited after the last probe.
WAIT = 1.0


@dataclass(frozen=True)
class Finding:
    ip: IPv4
    finding: str
    #: the MACs that answered for it
    macs: tuple[str, ...]
    #: its lease, if it has one
    lease: Lease | None
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {
            "ip": self.ip,
            "finding": self.finding,
            "macs": list(self.macs),
            "lease": self.lease.to_json() if self.lease else None,
            "detail": self.detail,
        }


@dataclass
class Sweep:
    """One LAN swept: where from, how many addresses, and what was found."""

    lan: Subnet
    interface: str
    probed: int
    answered: int
    findings: list[Finding] = field(default_factory=list)
    #: squatters recorded as conflicts (``mark``)
    marked: list[IPv4] = field(default_factory=list)

    @property
    def problems(self) -> list[Finding]:
        return [f for f in self.findings if f.finding in PROBLEMS]

    def to_json(self) -> dict[str, Any]:
        return {
            "subnet": str(self.lan),
            "interface": self.interface,
            "probed": self.probed,
            "answered": self.answered,
            "findings": [f.to_json() for f in self.findings],
            "marked": list(self.marked),
        }


def lans_to_scan(config: Config, subnet: Subnet | None) -> list[Subnet]:
    """``subnet`` if it is a LAN with ranges, else every IPv4 LAN with a container range
    (ARP is IPv4's, and a /64 cannot be swept: IPv6 LANs are not, their addresses are
    checked by duplicate address detection before they are handed out, see :mod:`.ndp`)."""
    lans = sorted({config.lan_of(r) for r in config.ip_ranges} | set(config.lans))
    if subnet is None:
        v4 = [lan for lan in lans if lan.version == 4]
        return sorted({config.lan_of(r) for r in config.ip_ranges if r.version == 4}) or v4
    if subnet not in lans:
        raise InvalidInput(f"--subnet {subnet} is not a declared LAN ({', '.join(map(str, lans)) or 'none declared'})")
    if subnet.version != 4:
        raise InvalidInput(f"--subnet {subnet}: scan sends ARP, which is IPv4's; IPv6 LANs are not scanned")
    return [subnet]


def ranges_of(config: Config, lan: Subnet) -> list[tuple[str, AddressRange]]:
    """The container and host ranges of ``lan``."""
    return [(kind, r) for kind, r in config.all_ranges() if config.lan_of(r) == lan]


def scan(
    ipam: Ipam,
    subnet: Subnet | None = None,
    *,
    rate: float = RATE,
    count: int = COUNT,
    wait: float = WAIT,
    mark: bool = False,
    progress: Callable[[str], None] = lambda message: None,
) -> list[Sweep]:
    """Sweep each LAN (``subnet``, or every LAN with container ranges) from this host."""
    config = ipam.config()
    leases = {lease.ip: lease for lease in ipam.leases(include_released=True)}
    sweeps = []
    for lan in lans_to_scan(config, subnet):
        targets = [(kind, IPv4(ip)) for kind, r in ranges_of(config, lan) for ip in range(r.start, r.end + 1)]
        if targets:
            sweeps.append(_sweep(lan, targets, leases, rate=rate, count=count, wait=wait, progress=progress))
            if mark:
                sweeps[-1].marked = _mark(ipam, sweeps[-1].findings)
    return sweeps


def _sweep(
    lan: Subnet,
    targets: Sequence[tuple[str, IPv4]],
    leases: Mapping[IPv4, Lease],
    *,
    rate: float,
    count: int,
    wait: float,
    progress: Callable[[str], None],
) -> Sweep:
    """Probe ``targets`` (each with the kind of its range) and classify what answered."""
    # Toward a container address: the host's own address (in a host range) routes locally.
    toward = next((ip for kind, ip in targets if kind == KIND_CONTAINER), targets[-1][1])
    interface = Routes().toward(toward, lan)
    if interface is None:
        raise ShrikeError(f"this host has no interface on {lan}: scan it from a host on that LAN")
    frames = count * len(targets)
    doing = f"probing {len(targets)} addresses of {lan} on {interface.name}"
    progress(f"{doing}, {math.ceil(frames / rate)} s")
    with arp.ArpSocket(interface.name) as sock:
        answers = dict(
            arp.exchange(
                sock,
                [ip for _, ip in targets],
                count=count,
                spacing=1 / rate,
                wait=wait,
                progress=lambda sent: progress(f"{doing}: {sent} of {frames} probes sent"),
            )
        )
        answers[interface.address] = (arp.mac_text(sock.mac),)  # this host does not hear itself
    sweep = Sweep(lan, interface.name, len(targets), sum(1 for _, ip in targets if ip in answers))
    for kind, ip in targets:
        finding = classify(kind, ip, answers.get(ip, ()), leases.get(ip))
        if finding is not None:
            sweep.findings.append(finding)
    return sweep


def classify(range_kind: str, ip: IPv4, macs: Sequence[str], lease: Lease | None) -> Finding | None:
    """What an address of a ``range_kind`` range that ``macs`` answered for (none:
    silent) says about the store's ``lease`` of it; None: nothing to say."""
    macs = tuple(macs)
    if lease is not None and lease.kind == KIND_CONFLICT:
        if macs:  # known, and never handed out; but still there, for a person to look at
            return Finding(ip, SQUATTER, macs, lease, f"answers, recorded as a conflict since {lease.since}")
        return Finding(ip, CONFLICT, macs, lease, "recorded as a conflict, silent now: free again at its next probe")
    if not macs:
        if lease is not None and lease.state == STATE_HELD and lease.kind in (KIND_CONTAINER, KIND_HOST):
            return Finding(ip, SILENT, macs, lease, f"{lease.describe()}, but nothing answers for it: leaked?")
        return None
    if len(macs) > 1:
        return Finding(ip, DUPLICATE, macs, lease, f"{len(macs)} MACs answer for it")
    if range_kind == KIND_HOST:
        who = f"host {lease.host}" if lease is not None and lease.kind == KIND_HOST else "recorded as no host's"
        return Finding(ip, HOST, macs, lease, f"answers: {who}")
    if lease is None or lease.state == STATE_RELEASED:
        return Finding(ip, SQUATTER, macs, lease, "answers, but shrike gave it to nobody")
    if lease.state in (STATE_RESERVED, STATE_PARKED):
        return Finding(ip, SQUATTER, macs, lease, f"answers, though it is {lease.describe()} (not running)")
    if lease.mac and macs[0] != lease.mac:
        return Finding(ip, DUPLICATE, macs, lease, f"answered by {macs[0]}, but {lease.describe()} has {lease.mac}")
    return None


def _mark(ipam: Ipam, findings: Sequence[Finding]) -> list[IPv4]:
    """Record the free squatters as conflicts; the addresses recorded."""
    marked = []
    for finding in findings:
        free = finding.lease is None or finding.lease.state == STATE_RELEASED
        if finding.finding == SQUATTER and free and ipam.mark_conflict(finding.ip, finding.macs[0]):
            marked.append(finding.ip)
    return marked
