"""Who holds each address: this host's container leases, matched with its dockerd.

IPAM calls carry no container or network id (dockerd 20.10), so the plugin learns its
callers from dockerd itself, through the Docker SDK. :func:`record_owners` matches the
endpoints dockerd has (a container's address and MAC in one of its networks) with the
held container leases of this host and writes ``owner`` = container id, name and network
on each. :func:`settle_parked` frees the addresses parked for containers that are gone
and follows renames. :class:`OwnerTracker` does both once on (re)connecting, then after
dockerd's container and network events, on background threads of ``shrike server``; it
also notes containers just created, which the plugin asks (:meth:`new_container_starting`).

Every write is a compare-and-swap on the lease as read (:meth:`Ipam.set_owner`), and the
leases are read before dockerd is asked: an address released or taken again meanwhile
is never labelled with a container that no longer holds it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import docker

from .background import BackgroundTask, Backoff
from .docker_api import DockerConnect, DockerError, docker_client, docker_errors
from .ipam import Ipam
from .model import KIND_CONTAINER, STATE_HELD, Lease

log = logging.getLogger("shrike.owners")

#: dockerd events after which owners may have changed. ``rename`` changes a name; the
#: others add or remove endpoints; ``create`` announces a container's first start.
EVENT_FILTERS = {
    "type": ["container", "network"],
    "event": ["create", "start", "die", "destroy", "rename", "connect", "disconnect"],
}
#: How long a container created but not started counts as starting (``docker run`` starts
#: it at once; ``docker create`` may never).
STARTING = 30.0
#: After an event, wait this long for the rest of a burst (``docker compose up``, a
#: dockerd restarting its containers) so that one sweep serves it.
SETTLE = 0.2
#: How often at most a call from dockerd makes a lost event stream connect again.
NUDGE_EVERY = 1.0
#: First and longest wait before connecting to dockerd again, or retrying a sweep. Short:
#: dockerd is local, a try costs nothing, and while it is not followed a container
#: restarting by its policy (right after a dockerd that started late) loses its address.
BACKOFF = (1.0, 10.0)


@dataclass(frozen=True)
class Endpoint:
    """A container's address in one Docker network, as dockerd reports it."""

    ip: str
    mac: str
    container_id: str
    container_name: str
    network: str

    @property
    def owner(self) -> dict[str, str]:
        """What a lease records about its holder (the keys ``shrike leases`` shows)."""
        return {"container_id": self.container_id, "name": self.container_name, "network": self.network}


def containers(client: docker.DockerClient) -> list[dict[str, Any]]:
    """Every container of this dockerd, running or not, as the API lists them."""
    with docker_errors():
        return list(client.api.containers(all=True))


#: The states in which a container holds its addresses.
HOLDING = ("running", "paused")


def endpoints(client: docker.DockerClient) -> list[Endpoint]:
    """Every address of this dockerd's running (or paused) containers, in every network,
    IPv4 and IPv6 (a dual-stack endpoint is two): one API call. A stopped container holds
    no address, but dockerd 20.10 may still show one on it, stale: on a container it killed
    while starting up (one that ran on through its previous shutdown, as with
    live-restore); those are left out."""
    found = []
    for container in containers(client):
        if container.get("State") not in HOLDING:
            continue
        name = (container.get("Names") or [""])[0].lstrip("/")
        networks: dict[str, dict[str, Any]] = (container.get("NetworkSettings") or {}).get("Networks") or {}
        for network, settings in networks.items():
            mac = (settings.get("MacAddress") or "").lower()
            for field in ("IPAddress", "GlobalIPv6Address"):
                if settings.get(field):
                    found.append(Endpoint(settings[field], mac, container["Id"], name, network))
    return found


def host_container_leases(ipam: Ipam) -> list[tuple[Lease, int]]:
    """The held container leases this host's dockerd asked for, with their revisions."""
    return [
        (lease, revision)
        for lease, revision in ipam.lease_entries()
        if lease.kind == KIND_CONTAINER and lease.state == STATE_HELD and lease.host == ipam.host
    ]


def record_owners(ipam: Ipam, client: docker.DockerClient) -> None:
    """Write on this host's held container leases which container holds each. An endpoint
    with another MAC than the lease's is not its holder: the address changed hands between
    the two reads, or another network of this dockerd uses the same address."""
    leases = host_container_leases(ipam)  # before dockerd: see the module docstring
    by_ip: dict[str, list[Endpoint]] = {}
    for endpoint in endpoints(client):
        by_ip.setdefault(endpoint.ip, []).append(endpoint)
    for lease, revision in leases:
        holders = [e for e in by_ip.get(lease.ip, []) if not (lease.mac and e.mac) or lease.mac == e.mac]
        if holders and lease.owner != holders[0].owner and ipam.set_owner(lease, revision, holders[0].owner):
            log.debug("%s is held by %s on %s", lease.ip, holders[0].container_name, holders[0].network)


def settle_parked(ipam: Ipam, client: docker.DockerClient) -> None:
    """Free the addresses parked for this host's containers that are gone (removed while
    shrike was not looking, or just now), and follow the renames of those that remain.
    The parked entries are read before dockerd is asked, so a container created after
    the read cannot be missed; each write is a compare-and-swap on the lease."""
    parked = ipam.parked()
    if not parked:
        return
    names = {c["Id"]: (c.get("Names") or [""])[0].lstrip("/") for c in containers(client)}
    for entry in parked:
        if entry.container_id in names:
            if entry.name != names[entry.container_id] and ipam.rename_parked(entry, names[entry.container_id]):
                log.debug("%s: its container %s is now %s", entry.ip, entry.name, names[entry.container_id])
        elif (entry.container_id or entry.name not in names.values()) and ipam.release_parked(entry):
            log.info("released %s, parked for %s: the container is gone", entry.ip, entry.name or entry.container_id)


def live_holders(connect: DockerConnect = docker_client) -> Callable[[str], list[str]]:
    """For ``shrike release``: a function naming this host's containers that hold an
    address, asking dockerd when called; none when dockerd cannot be reached (the
    lease's owner is then all shrike knows)."""

    def holding(ip: str) -> list[str]:
        try:
            with contextlib.closing(connect()) as client:
                found = endpoints(client)
        except DockerError as err:
            log.debug("cannot ask dockerd who holds %s: %s", ip, err)
            return []
        return sorted({e.container_name for e in found if e.ip == ip})

    return holding


class OwnerTracker(BackgroundTask):
    """Keeps the owners of this host's container leases up to date while dockerd runs.

    One thread reads dockerd's event stream (reconnecting with backoff when dockerd
    restarts or is not up yet) and marks the leases dirty; another sweeps them with
    :func:`record_owners` when they are, a burst of events at a time. A sweep follows
    every (re)connection, for the events missed while disconnected.
    """

    def __init__(
        self,
        ipam: Ipam,
        *,
        connect: DockerConnect = docker_client,
        backoff: tuple[float, float] = BACKOFF,
        listeners: Sequence[Callable[[dict[str, Any]], None]] = (),
    ):
        super().__init__()
        self.ipam = ipam
        self.connect = connect
        self.backoff = backoff
        #: told every event as it comes (they must return at once, and never raise)
        self.listeners = tuple(listeners)
        self._dirty = threading.Event()
        #: set when dockerd calls the plugin: it is up, so a lost event stream is retried now
        self._dockerd_up = threading.Event()
        #: set when the event stream is back: a sweep that failed meanwhile is retried now
        self._reconnected = threading.Event()
        self._next_nudge = 0.0
        self._stream_lock = threading.Lock()
        self._stream: Any = None  # the SDK's CancellableStream while connected
        self._created: dict[str, float] = {}  # container id -> when its create event came

    def dockerd_called(self) -> None:
        """dockerd just called the plugin: it is up, or coming up (it restarts containers
        before it opens its API). If its event stream is lost, connect again now and
        retry quickly, rather than after a grown backoff: a container that starts and
        dies while the stream is down cannot be recorded, and loses its address at its
        restart. At most every :data:`NUDGE_EVERY` seconds: a plugin serving calls while
        the event stream cannot be had (DOCKER_HOST names no dockerd) must not spin."""
        if self._connected():
            return
        now = time.monotonic()
        if now >= self._next_nudge:
            self._next_nudge = now + NUDGE_EVERY
            self._dockerd_up.set()

    def new_container_starting(self) -> bool:
        """Whether a container was created on this host in the last :data:`STARTING`
        seconds and has not started yet: the plugin's next request is probably its."""
        horizon = time.monotonic() - STARTING
        with self._stream_lock:
            self._created = {cid: at for cid, at in self._created.items() if at > horizon}
            return bool(self._created)

    def _note(self, event: dict[str, Any]) -> None:
        if event.get("Type") != "container":
            return
        container_id = (event.get("Actor") or {}).get("ID") or event.get("id", "")
        with self._stream_lock:
            if event.get("Action") == "create":
                self._created[container_id] = time.monotonic()
            elif event.get("Action") in ("start", "destroy"):
                self._created.pop(container_id, None)

    def loops(self) -> dict[str, Callable[[], None]]:
        return {"shrike-docker-events": self._watch, "shrike-owners": self._sweep}

    def wake(self) -> None:
        self._dirty.set()
        self._dockerd_up.set()  # the loops' backoffs wait on these
        self._reconnected.set()
        with self._stream_lock:
            stream = self._stream
        if stream is not None:
            # Shuts the stream's socket down: the watcher's blocking read returns.
            with contextlib.suppress(Exception):
                stream.close()

    def _connected(self) -> bool:
        with self._stream_lock:
            return self._stream is not None

    def _watch(self) -> None:
        backoff = Backoff(self.stopping, *self.backoff, early=self._dockerd_up)
        said = ""  # the last failure logged: the same one again is a debug line
        while not self.stopping.is_set():
            try:
                self._follow_events(backoff)
                said = ""
                if not self.stopping.is_set():
                    log.warning("lost dockerd's event stream; reconnecting")
            except Exception as err:  # never fatal: dockerd may come (back) later
                level = logging.DEBUG if str(err) == said else logging.WARNING
                log.log(level, "cannot follow dockerd (%s); retrying in %g s", err, backoff.delay)
                said = str(err)
            backoff.wait()

    def _follow_events(self, backoff: Backoff) -> None:
        client = self.connect()
        try:
            with docker_errors():
                stream = client.events(decode=True, filters=EVENT_FILTERS)
            with self._stream_lock:
                self._stream = stream
            if self.stopping.is_set():  # stop() came before there was a stream to close
                return
            log.info("following dockerd's container and network events")
            backoff.reset()
            self._reconnected.set()
            self._dirty.set()
            for event in stream:  # ends when dockerd goes away or stop() closes the stream
                self._note(event)
                for listener in self.listeners:
                    listener(event)
                self._dirty.set()
        finally:
            with self._stream_lock:
                self._stream = None
            client.close()

    def _sweep(self) -> None:
        # A sweep that failed while dockerd restarted waits no longer than its return:
        # containers that start and die right after it are recorded only by a sweep.
        backoff = Backoff(self.stopping, *self.backoff, early=self._reconnected)
        client: docker.DockerClient | None = None
        try:
            while True:
                self._dirty.wait()
                if self.stopping.wait(SETTLE):
                    return
                self._dirty.clear()
                try:
                    client = client or self.connect()
                    record_owners(self.ipam, client)
                    settle_parked(self.ipam, client)
                    backoff.reset()
                except Exception as err:  # the store or dockerd failed: try again later
                    if client is not None:
                        client.close()
                        client = None
                    if self._connected():  # else the watcher asks for a sweep once it is back
                        log.warning("recording container owners failed (%s); retrying in %g s", err, backoff.delay)
                        backoff.wait()
                        self._dirty.set()
        finally:
            if client is not None:
                client.close()
