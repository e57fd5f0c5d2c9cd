"""``shrike doctor``: check what a host needs, and say in plain words what is wrong.

:func:`diagnose` runs the checks in the order a host is set up: the store and its
declarations, the plugin socket, Docker, the Docker networks that use the plugin (however
they were made; or the one named), whether the plugin starts before dockerd, the bridge
(or macvlan uplink) that create-network's labels describe, whether the LANs this host is
on are ARP-probed before their addresses are handed out, and this host's lease (or, for
networks made otherwise, their gateway's). Each gives a :class:`Check`: a status (ok,
warn or fail), what was found, and for anything not ok a hint saying what to run. A
check that needs what an earlier one found missing (the network checks without Docker)
is left out rather than failed a second time. When several networks are checked, the
name of each network's checks ends with it: ``network (mynet)``.

This module holds only that order and what each check hands the next; the checks live
in a module each, named after them (:mod:`.store`, :mod:`.plugin`, :mod:`.network` with
Docker, :mod:`.start_order`, :mod:`.host_network`, :mod:`.lan_probe`,
:mod:`.host_lease`), on :mod:`.check`.

Nothing is changed, not even a missing embedded store, which opening would create.
Docker and pyroute2 are imported only when their checks run: they take a third of a
second to load.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..ipam import Ipam
from ..model import Config
from ..plugin import PLUGIN_DIR
from ..stores.base import Store
from .check import FAIL, OK, WARN, Check
from .host_lease import gateway_lease_check, host_lease_check, host_lease_checks
from .host_network import bridge_checks, host_network_checks, macvlan_check
from .lan_probe import lan_probe_checks
from .network import DOCKER_TIMEOUT, DockerNetwork, docker_check, find_networks, network_checks
from .plugin import PLUGIN_TIMEOUT, plugin_check
from .start_order import Process, start_order_check, start_order_checks, unit_of
from .store import declarations, store_check

if TYPE_CHECKING:
    import docker

# The names importers use (``shrike doctor``, the tests), wherever they live now.
__all__ = [
    "FAIL",
    "OK",
    "WARN",
    "Check",
    "Process",
    "Target",
    "bridge_checks",
    "diagnose",
    "failed",
    "gateway_lease_check",
    "host_lease_check",
    "macvlan_check",
    "start_order_check",
    "unit_of",
]

log = logging.getLogger("shrike.doctor")


@dataclass(frozen=True)
class Target:
    """What to check, as the command line gave it."""

    #: opens the store (the caller closes it)
    open_store: Callable[[], Store]
    #: the embedded store's file, None with etcd: a missing file is reported, not created
    store_file: Path | None
    #: the name this host's leases carry (None: the machine's hostname)
    host: str | None = None
    plugin_dir: Path = PLUGIN_DIR
    plugin_name: str = "shrike"
    #: the one network to check; None: every network whose IPAM driver is the plugin
    network: str | None = None
    plugin_timeout: float = PLUGIN_TIMEOUT
    docker_timeout: float = DOCKER_TIMEOUT


def diagnose(target: Target, progress: Callable[[str], None] = lambda message: None) -> list[Check]:
    """Run every check that can run; ``progress`` hears which one is under way."""
    with _Diagnosis(target) as diagnosis:
        return list(diagnosis.run(progress))


def failed(checks: list[Check]) -> bool:
    return any(check.status == FAIL for check in checks)


@dataclass
class _Diagnosis:
    """The checks in order, and what each found that later ones need."""

    target: Target
    ipam: Ipam | None = None
    config: Config | None = None
    client: docker.DockerClient | None = None
    #: the plugin's socket, once it answered
    plugin_path: Path | None = None
    #: the networks checked: those using the plugin, or the one named
    networks: list[DockerNetwork] = field(default_factory=list)

    def __enter__(self) -> _Diagnosis:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.client is not None:
            self.client.close()

    def run(self, progress: Callable[[str], None]) -> Iterator[Check]:
        steps: list[tuple[str, str, Callable[[], Iterator[Check]]]] = [
            ("store", "reading the store", self.store),
            ("plugin", "asking the plugin", self.plugin),
            ("docker", "asking Docker", self.docker),
            ("network", "looking up the Docker networks", self.network),
            ("start order", "comparing when the plugin and dockerd started", self.start_order),
            ("host network", "reading this host's links and routes", self.host_network),
            ("lan probe", "checking that the LAN can be probed from here", self.lan_probe),
            ("host lease", "looking up this host's lease", self.host_lease),
        ]
        for name, doing, step in steps:
            progress(doing)
            try:
                yield from step()
            except Exception as err:  # one broken check must not hide the others
                log.debug("the %s check failed", name, exc_info=True)
                yield Check(
                    name, FAIL, f"could not check: {str(err) or type(err).__name__}", "run with --debug for details"
                )

    def store(self) -> Iterator[Check]:
        t = self.target
        opened = yield from store_check(t.store_file, t.open_store, t.host)
        if opened is not None:
            self.ipam, self.config = opened
            yield declarations(self.config)

    def plugin(self) -> Iterator[Check]:
        t = self.target
        self.plugin_path = yield from plugin_check(t.plugin_dir, t.plugin_name, t.plugin_timeout)

    def docker(self) -> Iterator[Check]:
        self.client = yield from docker_check(self.target.docker_timeout)

    def network(self) -> Iterator[Check]:
        if self.client is None:
            return
        t = self.target
        self.networks = yield from find_networks(self.client, t.network, t.plugin_name, t.plugin_dir)
        location = self.ipam.store.location if self.ipam else ""
        yield from network_checks(self.networks, t.network is not None, t.plugin_name, self.config, location)

    def start_order(self) -> Iterator[Check]:
        if self.client is not None and self.plugin_path is not None:
            yield from start_order_checks(self.plugin_path, self.networks, self.target.plugin_name)

    def host_network(self) -> Iterator[Check]:
        yield from host_network_checks(self.networks)

    def lan_probe(self) -> Iterator[Check]:
        if self.config is not None:
            yield from lan_probe_checks(self.config, self.networks, self.plugin_path)

    def host_lease(self) -> Iterator[Check]:
        if self.ipam is not None:
            yield from host_lease_checks(self.ipam, self.networks, self.target.network)
