"""Is an address in use on the LAN? Asked before a container is handed one.

:class:`Prober` answers the allocator (:class:`~shrike_cli.allocator.LanCheck`): from
a verdict at most :data:`FRESH` seconds old when it has one, else by probing at once
(``count`` probes spread over ``timeout`` seconds: RFC 5227 ARP probes for an IPv4
address, see :mod:`.arp`, duplicate address detection for an IPv6 one, see :mod:`.ndp`).
On a LAN this host has no interface on, or where it may not send them (not root), it
answers "nobody" and the address is handed out unprobed: as without probing.

:class:`ProbeAhead` runs beside the plugin server. It keeps the verdicts of the addresses
the next requests will most likely get (:meth:`~shrike_cli.ipam.Ipam.likely_next`)
fresh, so that a ``docker run`` waits for no probe, and it probes the recorded conflicts
again once ``recheck`` has passed since they last answered: silent, they are free again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from ..background import BackgroundTask, Backoff
from ..ipam import Ipam
from ..model import IP, SEEN, Config, Lease, parse_time
from . import arp, ndp
from .links import Interface, Routes
from .wire import ProbeUnavailable

log = logging.getLogger("shrike.lanprobe")

#: Probes per address, and the seconds they are spread over (the wait of a request whose
#: address was not probed ahead). RFC 5227 asks for 3 over 1-2 s, then 2 s of waiting, for
#: a host configuring itself; on one LAN segment an answer comes within milliseconds.
PROBE_COUNT = 3
PROBE_TIMEOUT = 0.3
#: Seconds a verdict is trusted by a request: a device that starts using an address
#: later than that after it was found silent is missed (``shrike scan`` finds it). Shorter
#: costs more broadcasts: the likely next addresses are probed again every REFRESH s.
FRESH = 15.0
#: The probe-ahead probes a likely next address again once its verdict is this old, so
#: that a request finds it fresh.
REFRESH = 10.0
#: Likely next addresses kept probed, per window (and among the parked ones).
AHEAD = 4
#: The probe-ahead looks at the store at least this often (and at once after a request
#: used a verdict, but at most every GAP seconds: a busy server's requests come by the
#: thousand a second).
TICK = 2.0
GAP = 0.1
#: Seconds after a conflict last answered before it is probed again (``--conflict-recheck``).
CONFLICT_RECHECK = 600.0
#: The longest pause between two looks for conflicts due again.
CONFLICT_TICK = 300.0
BACKOFF = (1.0, 60.0)

#: What is known of an address: when it was probed (monotonic) and the MAC that
#: answered (None: nothing did).
Verdict = tuple[float, str | None]


class Prober:
    """Probes addresses on the interface toward their LAN and remembers what answered.

    ``config`` gives the declarations (where each LAN is). Thread-safe: the plugin's
    request threads and the probe-ahead share one.
    """

    def __init__(
        self,
        config: Callable[[], Config],
        *,
        count: int = PROBE_COUNT,
        timeout: float = PROBE_TIMEOUT,
        routes: Routes | None = None,
    ) -> None:
        self.config = config
        self.count = count
        self.timeout = timeout
        self.routes = routes or Routes()
        #: set whenever a request used a verdict: the probe-ahead looks again
        self.used = threading.Event()
        self._verdicts: dict[IP, Verdict] = {}
        self._lock = threading.Lock()
        self._warned: set[tuple[str, int]] = set()

    def interface(self, ip: IP) -> Interface | None:
        """The interface ``ip``'s LAN is probed on (its address there is of ``ip``'s
        family); None: it is not probed from this host."""
        lan = self.config().lan_of_address(int(ip))
        return self.routes.toward(ip, lan) if lan is not None else None

    def answering(self, ip: IP) -> str | None:
        """The MAC answering for ``ip`` on its LAN (None: nothing does, or this host cannot
        tell), probed less than :data:`FRESH` seconds ago, or now."""
        known = self.verdict(ip, FRESH)
        if known is not None:
            mac = known[1]
        else:
            interface = self.interface(ip)
            if interface is None:
                return None  # a LAN this host is not on
            answers = self.probe(interface, [ip])
            mac = answers[ip] if answers is not None else None
        self.used.set()
        if mac is not None:
            log.warning("%s is in use on the LAN: %s answers for it", ip, mac)
        return mac

    def vacated(self, ip: IP) -> None:
        """``ip`` was given back by the container that held it, its interface removed:
        silent as of now."""
        with self._lock:
            self._verdicts[ip] = (time.monotonic(), None)

    def verdict(self, ip: IP, fresh: float) -> Verdict | None:
        """What was found of ``ip`` less than ``fresh`` seconds ago, if anything."""
        with self._lock:
            found = self._verdicts.get(ip)
        return found if found is not None and time.monotonic() - found[0] < fresh else None

    def probe(self, interface: Interface, ips: Collection[IP]) -> Mapping[IP, str | None] | None:
        """Probe ``ips`` (of ``interface``'s LAN, so of one family) on ``interface``
        together, by ARP for IPv4 and by duplicate address detection for IPv6: the MAC
        that answered for each (None: silent), or None when no probe can be sent there
        (said once in the log)."""
        family = interface.address.version
        protocol = arp if family == 4 else ndp
        try:
            answers = protocol.probe(interface.name, ips, count=self.count, timeout=self.timeout)
        except (ProbeUnavailable, OSError) as err:  # OSError: the link went down meanwhile
            if (interface.name, family) not in self._warned:
                self._warned.add((interface.name, family))
                log.warning("%s: addresses are handed out unprobed", err)
            return None
        now = time.monotonic()
        found = {ip: answers[ip][0] if ip in answers else None for ip in ips}
        with self._lock:
            self._verdicts.update((ip, (now, mac)) for ip, mac in found.items())
            # Forget what no request will trust any more.
            self._verdicts = {ip: v for ip, v in self._verdicts.items() if now - v[0] < FRESH}
        return found


@dataclass(frozen=True)
class _Due:
    lease: Lease
    revision: int


def last_seen(conflict: Lease) -> datetime:
    """When a conflict's address last answered (long ago if its record does not say)."""
    return parse_time(conflict.owner.get(SEEN) or conflict.since) or datetime.min.replace(tzinfo=timezone.utc)


class ProbeAhead(BackgroundTask):
    """Beside the plugin server: keeps the likely next addresses probed, and frees the
    conflicts that fell silent (see the module's docstring)."""

    def __init__(self, ipam: Ipam, prober: Prober, *, recheck: float = CONFLICT_RECHECK, ahead: int = AHEAD) -> None:
        super().__init__()
        self.ipam = ipam
        self.prober = prober
        self.recheck = recheck
        self.ahead = ahead

    def loops(self) -> dict[str, Callable[[], None]]:
        return {"shrike-probe-ahead": self._ahead, "shrike-conflicts": self._conflicts}

    def wake(self) -> None:
        self.prober.used.set()

    def _ahead(self) -> None:
        backoff = Backoff(self.stopping, *BACKOFF)
        while not self.stopping.is_set():
            self.prober.used.clear()
            try:
                self.probe_ahead()
                backoff.reset()
            except Exception as err:  # the store failed: try again later
                log.warning("probing ahead failed (%s); retrying in %g s", err, backoff.delay)
                backoff.wait()
                continue
            if not self.stopping.wait(GAP):
                self.prober.used.wait(TICK)

    def probe_ahead(self) -> None:
        """Probe the likely next addresses whose verdict is older than :data:`REFRESH`."""
        stale: dict[Interface, list[IP]] = {}
        for ip in self.ipam.likely_next(self.ahead):
            if self.prober.verdict(ip, REFRESH) is None and (interface := self.prober.interface(ip)) is not None:
                stale.setdefault(interface, []).append(ip)
        for interface, ips in stale.items():
            self.prober.probe(interface, ips)

    def _conflicts(self) -> None:
        tick = max(0.5, min(self.recheck / 2, CONFLICT_TICK))
        while not self.stopping.wait(tick):
            try:
                self.settle_conflicts()
            except Exception as err:  # the store failed: the next round tries again
                log.warning("probing conflicts again failed (%s)", err)

    def settle_conflicts(self) -> None:
        """Probe the conflicts that last answered ``recheck`` seconds ago or more: free
        those now silent, note when the others answered."""
        horizon = datetime.now(timezone.utc) - timedelta(seconds=self.recheck)
        due: dict[Interface, list[_Due]] = {}
        for lease, revision in self.ipam.conflicts():
            if last_seen(lease) <= horizon and (interface := self.prober.interface(lease.ip)) is not None:
                due.setdefault(interface, []).append(_Due(lease, revision))
        for interface, conflicts in due.items():
            answers = self.prober.probe(interface, [c.lease.ip for c in conflicts])
            if answers is None:
                continue
            for conflict in conflicts:
                mac = answers[conflict.lease.ip]
                settled = self.ipam.settle_conflict(conflict.lease, conflict.revision, mac)
                if settled is not None and mac is None:
                    log.info("%s is silent on the LAN now: free again", conflict.lease.ip)
