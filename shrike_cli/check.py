"""``shrike check``: the rules the state keeps, and its agreement with this host's dockerd.

* In the store (:meth:`State.check`, one snapshot): every record one shrike writes, each
  lease inside the declared ranges and subnets in a state its kind may have, the free
  lists, parked entries and indexes agreeing with the leases, cursors inside their
  ranges. ``repair`` fixes what is safe (a missing or dangling index, free-list or
  parked entry), each in one compare-and-swap transaction on the records as read.
* Against this host's dockerd, when it answers (what :func:`~.reconcile.reconcile` sees,
  changing nothing): every endpoint in a container range is held by this host for that
  container (:func:`~.reconcile.duplicates`), and every container lease of this host
  has an endpoint, unless taken less than ``grace`` ago (its container may be starting),
  and every address parked here is kept for a container that exists. Those are for
  ``reconcile --fix`` or a person, never repaired here.

dockerd is read after the leases, and a container that starts or stops between the two
reads looks wrong for a moment: a problem seen on the docker side is reported only if a
second look, :data:`CONFIRM` seconds later, sees it again.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .docker_api import DockerConnect, DockerError, docker_client
from .ipam import Ipam
from .model import STATE_HELD
from .plugin import PLUGIN_DIR
from .reconcile import reconcile
from .state import Finding

#: A lease younger than this with no endpoint is a container starting, not a leak.
DEFAULT_GRACE = 60.0
#: Seconds between the two looks at dockerd (see the module docstring).
CONFIRM = 1.0

NO_ENDPOINT = "no-endpoint"
PARKED_FOR_GONE = "parked-for-gone"
NOT_HELD = "endpoint-not-held"
NO_NETWORK = "no-plugin-network"

FOUND = "found"
REPAIRED = "repaired"
CHANGED = "changed"  # not repaired: a record changed since it was read


@dataclass(frozen=True)
class Checked:
    """One problem found, where (``store`` or ``docker``), and what became of it."""

    where: str
    finding: Finding
    status: str = FOUND

    def to_json(self) -> dict[str, str]:
        return {"where": self.where, **self.finding.to_json(), "status": self.status}


@dataclass(frozen=True)
class DockerSide:
    """What was compared with dockerd: nothing (``reason`` says why), or how much."""

    checked: bool
    reason: str = ""
    #: the networks using the plugin
    networks: tuple[str, ...] = ()
    #: this host's held container leases, and the addresses its containers hold
    leases: int = 0
    endpoints: int = 0

    def to_json(self) -> dict[str, Any]:
        if not self.checked:
            return {"checked": False, "reason": self.reason}
        return {"checked": True, "networks": list(self.networks), "leases": self.leases, "endpoints": self.endpoints}


@dataclass(frozen=True)
class Report:
    """What one check saw."""

    host: str
    store: str
    #: records read from the store
    records: int
    problems: tuple[Checked, ...]
    docker: DockerSide = field(default_factory=lambda: DockerSide(False))

    @property
    def ok(self) -> bool:
        """Nothing is wrong any more: no problem, or every one repaired."""
        return all(problem.status == REPAIRED for problem in self.problems)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "host": self.host,
            "store": {"location": self.store, "records": self.records},
            "docker": self.docker.to_json(),
            "problems": [problem.to_json() for problem in self.problems],
        }


def check(
    ipam: Ipam,
    *,
    repair: bool = False,
    docker: bool = True,
    connect: DockerConnect = docker_client,
    plugin_name: str | None = None,
    plugin_dir: Path = PLUGIN_DIR,
    grace: float = DEFAULT_GRACE,
    confirm: float = CONFIRM,
) -> Report:
    """Check the store of ``ipam`` and, with ``docker``, its agreement with the dockerd
    ``connect`` reaches (see the module docstring); with ``repair``, repair the store."""
    survey = ipam.state.check()
    problems = [Checked("store", f, _repaired(ipam, f) if repair else FOUND) for f in survey.findings]
    side = DockerSide(False, "not asked")
    if docker:
        side, seen = _docker(ipam, connect, plugin_name, plugin_dir, grace)
        if seen:
            time.sleep(confirm)
            side, again = _docker(ipam, connect, plugin_name, plugin_dir, grace)
            seen = [f for f in again if any((f.problem, f.ip) == (s.problem, s.ip) for s in seen)]
        problems += [Checked("docker", finding) for finding in seen]
    return Report(ipam.host, ipam.store.location, survey.records, tuple(problems), side)


def _repaired(ipam: Ipam, finding: Finding) -> str:
    if not finding.repair:
        return FOUND
    return REPAIRED if ipam.state.repair(finding) else CHANGED


def _docker(
    ipam: Ipam, connect: DockerConnect, plugin_name: str | None, plugin_dir: Path, grace: float
) -> tuple[DockerSide, list[Finding]]:
    """What dockerd says against the leases of this host, as problems."""
    try:
        client = connect()
    except DockerError as err:
        return DockerSide(False, str(err)), []
    with contextlib.closing(client):
        seen = reconcile(ipam, client, plugin_name=plugin_name, plugin_dir=plugin_dir)
    side = DockerSide(True, "", seen.networks or (), seen.checked, seen.endpoints)
    if seen.hint:
        # Every lease would look leaked: the dockerd or the plugin name is likely wrong.
        held = f"this host holds {seen.checked} container leases, but {seen.hint}"
        return side, [Finding(NO_NETWORK, "", held)] if seen.checked else []
    problems = []
    for leak in seen.leaks:
        lease, who = leak.lease, leak.lease.holder or "a container"
        if lease.state != STATE_HELD:
            detail = f"{lease.ip} is kept for {who}, which no longer exists; 'shrike reconcile --fix' frees it"
            problems.append(Finding(PARKED_FOR_GONE, lease.ip, detail))
        elif leak.age is None or leak.age >= grace:
            detail = (
                f"{lease.ip} is held for {who} on {ipam.host} since {lease.since or 'an unknown time'}, but no"
                " container of its dockerd holds it: leaked, 'shrike reconcile --fix' releases it"
            )
            problems.append(Finding(NO_ENDPOINT, lease.ip, detail))
    for duplicate in seen.duplicates:
        detail = f"{duplicate.ip} is held here by {', '.join(duplicate.containers)}: {duplicate.problem}"
        problems.append(Finding(NOT_HELD, duplicate.ip, detail))
    return side, problems
