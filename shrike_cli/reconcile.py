"""Leaked addresses: this host's container leases that no container of its dockerd holds.

An address leaks when dockerd or the plugin dies between RequestAddress and
ReleaseAddress: the lease stays held and nobody gives it back. :func:`reconcile` lists
such leases and, with ``fix``, releases them. Releasing a live address would give one
address to two containers, so it is careful:

* the leases are read before dockerd is asked: a lease allocated later is not looked at;
* an endpoint in ANY network of this dockerd counts, not only the plugin's networks: an
  address a container holds anywhere is never freed;
* only leases older than ``grace`` are released: an address is requested before its
  endpoint exists, and a container may be starting;
* each release is a compare-and-swap on the lease's store revision as read
  (:meth:`Ipam.release_if_unchanged`): a lease released and taken again meanwhile stays;
* given the plugin's name, nothing is released when no network of this dockerd uses it:
  a wrong ``DOCKER_HOST`` or plugin name would make every lease look leaked. The report
  then says which it is likely to be (:mod:`.plugin_names`).

A leaked named reservation goes back to ``reserved``, as when its container stops. An
address parked for a container that no longer exists is leaked too (the server frees
those itself while it follows dockerd).

Reconcile also reports what must never be: one address on two containers, a lease
naming another container than the one holding its address, and a container here holding
an address the store gives to someone else (or to nobody): those are :class:`Duplicate`,
for a person to look at; nothing is changed for them.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import docker

from . import metrics
from .background import BackgroundTask
from .docker_api import DockerConnect, docker_client
from .errors import InvalidInput
from .ipam import Ipam
from .model import IP, KIND_CONTAINER, STATE_HELD, STATE_PARKED, Lease, parse_time
from .owners import Endpoint, containers, endpoints, host_container_leases
from .plugin import PLUGIN_DIR
from .plugin_names import in_use, networks_by_driver

log = logging.getLogger("shrike.reconcile")

#: Long enough for any container start, short enough to get a leaked address back soon.
DEFAULT_GRACE = 600.0

LEAKED = "leaked"  # found; releasing was not asked for
TOO_YOUNG = "too-young"  # kept: not older than the grace period
RELEASED = "released"
CHANGED = "changed"  # kept: the lease was written after it was read (released, taken again)

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd])")


def parse_duration(text: str) -> float:
    """Seconds in ``30s``, ``10m``, ``1h30m``, ``2d`` or a bare number of seconds.

    Raises :class:`ValueError`, as ``float()`` does: used as an option's parser, a bad
    value is a usage error."""
    compact = text.strip().lower()
    if re.fullmatch(r"\d+(?:\.\d+)?", compact):
        return float(compact)
    parts = _DURATION.findall(compact)
    if not parts or "".join(number + unit for number, unit in parts) != compact:
        raise ValueError(f"'{text}' is not a duration (examples: 30s, 10m, 1h30m)")
    return sum(float(number) * _UNITS[unit] for number, unit in parts)


def format_duration(seconds: float) -> str:
    """``1h30m``, ``10m``, ``45s``: the two largest units that are not zero, for tables."""
    rest = int(seconds)
    parts = []
    for unit in "dhms":
        count, rest = divmod(rest, _UNITS[unit])
        if count or (unit == "s" and not parts):
            parts.append(f"{count}{unit}")
    return "".join(parts[:2])


def lease_age(lease: Lease, now: datetime) -> float | None:
    """Seconds since the lease was taken (its ``since``, to the second); None if unknown."""
    since = parse_time(lease.since)
    return None if since is None else (now - since).total_seconds()


@dataclass(frozen=True)
class Leak:
    """A held lease no container holds, and what reconcile did about it."""

    lease: Lease
    #: seconds since the lease was taken; None when its time is unreadable (never released)
    age: float | None
    status: str
    #: the lease once released (state ``released``, or ``reserved`` for a named one)
    after: Lease | None = None

    def to_json(self) -> dict[str, Any]:
        data = {**self.lease.to_json(), "age_seconds": None if self.age is None else int(self.age)}
        data["status"] = self.status
        if self.after is not None:
            data["state_after"] = self.after.state
        return data


@dataclass(frozen=True)
class Duplicate:
    """An address this host's containers hold that the store does not give to exactly them."""

    ip: str
    #: the containers of this host holding it
    containers: tuple[str, ...]
    #: what the store records for it (None: nothing)
    lease: Lease | None
    problem: str

    def to_json(self) -> dict[str, Any]:
        return {
            "ip": self.ip,
            "containers": list(self.containers),
            "lease": self.lease.to_json() if self.lease else None,
            "problem": self.problem,
        }


@dataclass(frozen=True)
class Report:
    """What one reconcile saw on this host, the leaks it found, and duplicates."""

    host: str
    #: held container leases of this host
    checked: int
    #: addresses containers of this dockerd hold, in any network
    endpoints: int
    #: names of the networks using the plugin (None when no plugin name was given)
    networks: tuple[str, ...] | None
    leaks: tuple[Leak, ...]
    #: when no network uses the plugin: why, likely, and what to do
    hint: str = ""
    duplicates: tuple[Duplicate, ...] = ()

    def count(self, status: str) -> int:
        return sum(leak.status == status for leak in self.leaks)

    def to_json(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "checked": self.checked,
            "endpoints": self.endpoints,
            "networks": None if self.networks is None else list(self.networks),
            "leaks": [leak.to_json() for leak in self.leaks],
            "duplicates": [duplicate.to_json() for duplicate in self.duplicates],
        }


def reconcile(
    ipam: Ipam,
    client: docker.DockerClient,
    *,
    fix: bool = False,
    grace: float = DEFAULT_GRACE,
    plugin_name: str | None = None,
    plugin_dir: Path = PLUGIN_DIR,
) -> Report:
    """Compare this host's held container leases with the endpoints of ``client``'s
    dockerd; with ``fix``, release the leaked ones older than ``grace`` seconds.
    ``plugin_dir`` is where plugins answer, for the hint when none of the dockerd's
    networks uses ``plugin_name``."""
    networks, hint = None, ""
    if plugin_name:
        by_driver = networks_by_driver(client)
        networks = by_driver.get(plugin_name, ())
        if not networks:
            hint = in_use(by_driver, plugin_dir).hint(plugin_name)
            if fix:
                raise InvalidInput(f"{hint}; nothing was released")
    leases = host_container_leases(ipam)  # before dockerd: see the module docstring
    parked = ipam.parked()
    found = endpoints(client)
    # Containers by id and by name (an address parked by name only: newer engines).
    existing = {key for c in containers(client) for key in (c["Id"], *(n.lstrip("/") for n in c.get("Names") or ()))}
    live = {endpoint.ip for endpoint in found}
    now = datetime.now(timezone.utc)
    leaks = []
    for lease, revision in leases:
        if lease.ip in live:
            continue
        age = lease_age(lease, now)
        after = None
        if not fix:
            status = LEAKED
        elif age is None or age < grace:
            status = TOO_YOUNG
        else:
            after = ipam.release_if_unchanged(lease.ip, revision)
            status = RELEASED if after is not None else CHANGED
        leaks.append(Leak(lease, age, status, after))
    for entry in parked:
        if entry.container_id in existing or (not entry.container_id and entry.name in existing):
            continue
        lease = ipam.lease(entry.ip)
        if lease is None or lease.state != STATE_PARKED:
            continue  # taken back meanwhile
        after = ipam.release_parked(entry) if fix else None
        status = (RELEASED if after is not None else CHANGED) if fix else LEAKED
        leaks.append(Leak(lease, lease_age(lease, now), status, after))
    return Report(ipam.host, len(leases), len(live), networks, tuple(leaks), hint, duplicates(ipam, found))


def duplicates(ipam: Ipam, found: list[Endpoint]) -> tuple[Duplicate, ...]:
    """The addresses of container ranges that this host's containers hold but the store
    does not give to exactly them (see the module docstring)."""
    config = ipam.config()
    holding: dict[str, set[tuple[str, str]]] = {}
    for endpoint in found:
        if config.container_range_of(int(IP(endpoint.ip))):
            holding.setdefault(endpoint.ip, set()).add((endpoint.container_id, endpoint.container_name))
    wrong = []
    for ip, holders in sorted(holding.items(), key=lambda item: int(IP(item[0]))):
        names = tuple(sorted(name for _, name in holders))
        lease = ipam.lease(ip)
        if len(holders) > 1:
            problem = f"{len(holders)} containers of this host hold it"
        elif lease is None:
            problem = "the store holds no lease for it: it may be handed out again"
        elif lease.kind != KIND_CONTAINER or lease.state != STATE_HELD or lease.host != ipam.host:
            problem = f"the store gives it to another: {lease.describe()} on host {lease.host}"
        elif lease.owner.get("container_id") not in (None, next(iter(holders))[0]):
            problem = f"its lease names container {lease.holder}, not {names[0]}, which holds it"
        else:
            continue
        wrong.append(Duplicate(ip, names, lease, problem))
    return tuple(wrong)


class PeriodicReconcile(BackgroundTask):
    """``shrike server --reconcile-every``: :func:`reconcile` with ``fix`` every ``every``
    seconds (the first after one period: dockerd may still be starting), logging what it
    released; failures are logged and tried again next period."""

    def __init__(
        self,
        ipam: Ipam,
        every: float,
        *,
        grace: float = DEFAULT_GRACE,
        plugin_name: str | None = None,
        plugin_dir: Path = PLUGIN_DIR,
        connect: DockerConnect = docker_client,
    ) -> None:
        super().__init__()
        self.ipam = ipam
        self.every = every
        self.grace = grace
        self.plugin_name = plugin_name
        self.plugin_dir = plugin_dir
        self.connect = connect
        #: the leaks the last pass found (address and time taken): found again, not new
        self._seen: set[tuple[str, str]] = set()

    def loops(self) -> dict[str, Callable[[], None]]:
        return {"shrike-reconcile": self._run}

    def _run(self) -> None:
        while not self.stopping.wait(self.every):
            try:
                client = self.connect()
                try:
                    report = reconcile(
                        self.ipam,
                        client,
                        fix=True,
                        grace=self.grace,
                        plugin_name=self.plugin_name,
                        plugin_dir=self.plugin_dir,
                    )
                finally:
                    client.close()
            except Exception as err:  # never fatal to the server
                log.warning("reconcile failed: %s", err)
                continue
            self._count(report)
            for leak in report.leaks:
                if leak.status == RELEASED:
                    lease = leak.lease
                    who = lease.holder or lease.mac or "an unknown container"
                    log.warning("released %s: taken %s by %s, no container holds it", lease.ip, lease.since, who)

    def _count(self, report: Report) -> None:
        found = {(leak.lease.ip, leak.lease.since) for leak in report.leaks}
        still = report.count(TOO_YOUNG) + report.count(LEAKED)
        metrics.reconciled(len(found - self._seen), report.count(RELEASED), still)
        self._seen = found
