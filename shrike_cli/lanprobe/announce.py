"""Telling the LAN where a container's address is now, as the container starts.

A container that comes back with its address has a new MAC (dockerd 20.10 makes one up
at every start), and neighbours keep sending to the old one until their ARP cache entry
expires (minutes; a switch may keep it for hours). :class:`Announcer` hears the
``start`` events of dockerd (an :class:`~shrike_cli.owners.OwnerTracker` listener: one
event stream, read in the background, never inside a plugin request), looks the
container up, and for each of its addresses that this host handed it, sends RFC 5227
announcements (IPv6: unsolicited Neighbor Advertisements with the Override flag, to all
nodes, RFC 4861 section 7.2.6) from the container's own interface, inside its network
namespace (its ``SandboxKey``): neighbours that know the address learn the new MAC at
once.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import queue
import time
from collections.abc import Callable
from typing import Any

import docker.errors

from ..background import BackgroundTask
from ..docker_api import DockerConnect, docker_client, docker_errors
from ..ipam import Ipam
from ..model import IP, KIND_CONTAINER, STATE_HELD, validate_mac
from .arp import ArpSocket
from .links import in_namespace, socket_for_mac
from .ndp import NdpSocket
from .wire import ProbeSocket

log = logging.getLogger("shrike.lanprobe")

#: Announcements per address, and the seconds between them (RFC 5227: 2, 2 s apart; the
#: second is for a neighbour that missed the first).
ANNOUNCE_COUNT = 2
ANNOUNCE_INTERVAL = 1.0


class Announcer(BackgroundTask):
    """Announces the addresses of this host's containers from inside each as it starts."""

    def __init__(
        self,
        ipam: Ipam,
        *,
        connect: DockerConnect = docker_client,
        count: int = ANNOUNCE_COUNT,
        interval: float = ANNOUNCE_INTERVAL,
    ) -> None:
        super().__init__()
        self.ipam = ipam
        self.connect = connect
        self.count = count
        self.interval = interval
        self._started: queue.Queue[str | None] = queue.Queue()
        # (when, tie-breaker, socket, address, announcements left): the repeats to come
        self._repeats: list[tuple[float, int, ProbeSocket, IP, int]] = []
        self._order = itertools.count()

    def heard(self, event: dict[str, Any]) -> None:
        """An event of dockerd's: a container that started is announced."""
        if event.get("Type") == "container" and event.get("Action") == "start":
            self._started.put((event.get("Actor") or {}).get("ID") or event.get("id", ""))

    def loops(self) -> dict[str, Callable[[], None]]:
        return {"shrike-announce": self._run}

    def wake(self) -> None:
        self._started.put(None)

    def _run(self) -> None:
        client = None
        try:
            while not self.stopping.is_set():
                wait = max(self._repeats[0][0] - time.monotonic(), 0.0) if self._repeats else None
                try:
                    container = self._started.get(timeout=wait)
                except queue.Empty:
                    container = None
                self._repeat_due()
                if not container:
                    continue
                try:
                    client = client or self.connect()
                    self.announce(client, container)
                except (FileNotFoundError, LookupError) as err:  # its namespace or interface went meanwhile
                    log.debug("container %s stopped before it was announced (%s)", container[:12], err)
                except Exception as err:  # dockerd, the store or the namespace: this one is not announced
                    log.warning("cannot announce the addresses of container %s: %s", container[:12], err)
                    if client is not None:
                        client.close()
                        client = None
        finally:
            if client is not None:
                client.close()
            for _, _, sock, _, _ in self._repeats:
                sock.close()

    def announce(self, client: Any, container: str) -> None:
        """Announce the addresses this host gave ``container``, from inside it."""
        with docker_errors():
            try:
                info = client.api.inspect_container(container)
            except docker.errors.NotFound:
                return  # removed already (docker run --rm of a short job)
        if not (info.get("State") or {}).get("Running"):
            return
        settings = info.get("NetworkSettings") or {}
        ours = []
        for network in (settings.get("Networks") or {}).values():
            mac = network.get("MacAddress")
            for ip in (network.get("IPAddress"), network.get("GlobalIPv6Address")):
                lease = self.ipam.lease(ip) if ip and mac else None
                if lease and (lease.kind, lease.state, lease.host) == (KIND_CONTAINER, STATE_HELD, self.ipam.host):
                    ours.append((lease.ip, validate_mac(mac)))
        if not ours:
            return
        sandbox = settings.get("SandboxKey") or f"/proc/{(info.get('State') or {}).get('Pid', 0)}/ns/net"
        for sock, ip in in_namespace(sandbox, lambda: _sockets(ours)):
            self._send(sock, ip, self.count)
            log.debug("announced %s from container %s", ip, container[:12])

    def _send(self, sock: ProbeSocket, ip: IP, left: int) -> None:
        try:
            sock.announce(ip)
        except OSError as err:  # the container stopped meanwhile
            log.debug("cannot announce %s again: %s", ip, err)
            left = 1
        if left > 1:
            heapq.heappush(self._repeats, (time.monotonic() + self.interval, next(self._order), sock, ip, left - 1))
        else:
            sock.close()

    def _repeat_due(self) -> None:
        while self._repeats and self._repeats[0][0] <= time.monotonic():
            _, _, sock, ip, left = heapq.heappop(self._repeats)
            self._send(sock, ip, left)


def _sockets(endpoints: list[tuple[IP, str]]) -> list[tuple[ProbeSocket, IP]]:
    """A socket on the interface of each (address, MAC) in the calling thread's
    namespace, ARP's or IPv6's; none left open if one cannot be had."""
    opened: list[tuple[ProbeSocket, IP]] = []
    try:
        for ip, mac in endpoints:
            opened.append((socket_for_mac(mac, ArpSocket if ip.version == 4 else NdpSocket), ip))
    except BaseException:
        for sock, _ in opened:
            with contextlib.suppress(OSError):
                sock.close()
        raise
    return opened
