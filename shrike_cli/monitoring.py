"""``shrike server --metrics-address``: Prometheus metrics and a health check over HTTP.

* ``/metrics``: what this server did (:mod:`.metrics`: allocations, refusals, store
  operations..., each labelled with this host's name), and the address space as the
  store holds it, the same on every host: per range its size and its held, reserved
  and free addresses, per LAN the hosts' own addresses.
* ``/healthz``: 200 while the store answers a cheap read within :data:`HEALTH_TIMEOUT`,
  503 with the reason otherwise.

The address space is counted by :class:`Usage` in the background, every ``refresh``
seconds, with one read of the declarations and one of the leases (the count
``ip-range`` lists). A scrape only reads what was counted last, so scrapes cost the
store nothing, however many come; the figures are at most ``refresh`` seconds old, and
``shrike_usage_read_timestamp_seconds`` says when they were read. Counting in the store
instead (a counter per range written with every lease) would add a write and a key
every allocation of the range contends for, where allocations of one range are batched
and those of several hosts never wait on each other.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import socketserver
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .background import BackgroundTask
from .errors import ShrikeError
from .ipam import Ipam
from .model import KIND_HOST
from .ranges import RangeUsage, usage_by_state

log = logging.getLogger("shrike.monitoring")

#: How long /healthz waits for the store.
HEALTH_TIMEOUT = 2.0
#: How often the address space is counted, by default: an alert on a range filling up
#: needs no fresher figures, and a LAN of 10,000 leases costs about 0.1 s of CPU a count.
DEFAULT_REFRESH = 30.0


# ------------------------------------------------------------------ the address
@dataclass(frozen=True)
class MetricsAddress:
    """Where /metrics is served: a TCP ``host`` and ``port``, or a unix socket ``path``."""

    host: str = ""
    port: int = 0
    path: Path | None = None

    def __str__(self) -> str:
        if self.path is not None:
            return str(self.path)
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_metrics_address(text: str) -> MetricsAddress:
    """``HOST:PORT``, ``[IPV6]:PORT``, ``:PORT`` (every address) or a unix socket's path
    (with a ``/``). Raises :class:`ValueError` (a usage error as an option's parser)."""
    if "/" in text:
        return MetricsAddress(path=Path(text))
    match = re.fullmatch(r"(?:\[([0-9A-Fa-f:.]+)\]|([^:\[\]]*)):(\d{1,5})", text.strip())
    if not match or not 0 < int(match[3]) < 65536:
        raise ValueError(f"'{text}' is not HOST:PORT, [IPV6]:PORT, :PORT or a socket path")
    return MetricsAddress(host=match[1] or match[2] or "0.0.0.0", port=int(match[3]))


# ------------------------------------------------------------ the address space
class Usage(BackgroundTask):
    """The address space as the store holds it, counted every ``refresh`` seconds and
    served to scrapes as counted (a prometheus_client collector)."""

    def __init__(self, ipam: Ipam, refresh: float = DEFAULT_REFRESH) -> None:
        super().__init__()
        self.ipam = ipam
        self.refresh = refresh
        self._figures: list[RangeUsage] = []
        self._read_at = 0.0
        self._read_seconds = 0.0
        self._up = False

    def loops(self) -> dict[str, Callable[[], None]]:
        return {"shrike-usage": self._run}

    def _run(self) -> None:
        while True:
            self.read()
            if self.stopping.wait(self.refresh):
                return

    def read(self) -> None:
        """Count the address space now; on failure keep the last figures, and say so."""
        started = time.perf_counter()
        try:
            figures = usage_by_state(self.ipam.config(), self.ipam.state.lease_states())
        except Exception as err:  # never the loop's end: the next count may succeed
            if self._up or not self._read_at:
                log.warning(
                    "cannot count the address space for /metrics: %s", err, exc_info=not isinstance(err, ShrikeError)
                )
            self._up = False
            return
        self._figures, self._up = figures, True
        self._read_at, self._read_seconds = time.time(), time.perf_counter() - started

    def collect(self) -> Iterator[Metric]:
        figures = self._figures  # one consistent list, whatever a refresh does meanwhile
        labels = ["lan", "range", "kind"]
        families = {
            name: GaugeMetricFamily(f"shrike_range_{name}", text, labels=labels)
            for name, text in (
                ("size", "Addresses in the range."),
                ("held", "Addresses of the range held (by containers, or hosts in a host range)."),
                ("reserved", "Addresses of the range kept for a reservation whose container is not running."),
                ("free", "Addresses of the range neither held nor reserved."),
                ("free_ratio", "The free addresses' share of the range (0 to 1)."),
            )
        }
        hosts_held: dict[str, int] = defaultdict(int)
        for figure in figures:
            values = (str(figure.subnet), figure.range.id, figure.kind)
            size = figure.range.size
            free = size - figure.held - figure.reserved
            for name, value in (
                ("size", size),
                ("held", figure.held),
                ("reserved", figure.reserved),
                ("free", free),
                ("free_ratio", free / size),
            ):
                families[name].add_metric(values, value)
            if figure.kind == KIND_HOST:
                hosts_held[str(figure.subnet)] += figure.held
        yield from families.values()
        lans = GaugeMetricFamily("shrike_lan_host_addresses_held", "Hosts' addresses held in a LAN.", labels=["lan"])
        for lan, held in sorted(hosts_held.items()):
            lans.add_metric([lan], held)
        yield lans
        host = [self.ipam.host]
        for name, text, value in (
            ("shrike_store_up", "1 when the last count of the address space could read the store, else 0.", self._up),
            ("shrike_usage_read_timestamp_seconds", "When the figures of the ranges were read.", self._read_at),
            ("shrike_usage_read_duration_seconds", "How long the last count of the ranges took.", self._read_seconds),
        ):
            family = GaugeMetricFamily(name, text, labels=["host"])
            family.add_metric(host, float(value))
            yield family


class _WithHost(Collector):
    """The metrics of ``source`` with the label ``host``: they count this host's work."""

    def __init__(self, source: Collector, host: str) -> None:
        self.source = source
        self.host = host

    def collect(self) -> Iterable[Metric]:
        for family in self.source.collect():
            family.samples = [sample._replace(labels={"host": self.host, **sample.labels}) for sample in family.samples]
            yield family


# ------------------------------------------------------------------ health
class Health:
    """Whether the store answers: one cheap read, waited for at most ``timeout`` seconds.
    A read that hangs is not started again until it ends: checks wait on it instead."""

    def __init__(self, ipam: Ipam, timeout: float = HEALTH_TIMEOUT) -> None:
        self.ipam = ipam
        self.timeout = timeout
        self._lock = threading.Lock()
        self._read: tuple[threading.Event, list[str]] | None = None

    def problem(self) -> str | None:
        """None while the store answers, else why it does not."""
        with self._lock:
            if self._read is None or self._read[0].is_set():
                self._read = (threading.Event(), [])
                threading.Thread(target=self._check, args=self._read, name="shrike-health", daemon=True).start()
            done, errors = self._read
        if not done.wait(self.timeout):
            return f"the store ({self.ipam.store.location}) did not answer within {self.timeout:g} s"
        return errors[0] if errors else None

    def _check(self, done: threading.Event, errors: list[str]) -> None:
        try:
            self.ipam.state.config()
        except Exception as err:  # any failure is the answer, never the thread's end
            errors.append(str(err) if isinstance(err, ShrikeError) else f"{type(err).__name__}: {err}")
        finally:
            done.set()


# ------------------------------------------------------------------ HTTP
class _Handler(BaseHTTPRequestHandler):
    server: Any  # _TCPServer or _UnixServer, with .registry and .health

    def address_string(self) -> str:
        # client_address is '' on a unix socket; the stock method would raise.
        return self.client_address[0] if isinstance(self.client_address, tuple) else "unix"

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        path = self.path.partition("?")[0]
        if path == "/metrics":
            self._send(200, generate_latest(self.server.registry), CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            problem = self.server.health.problem()
            self._send(503 if problem else 200, f"{problem or 'ok'}\n".encode())
        else:
            self._send(404, b"shrike serves /metrics and /healthz\n")

    def _send(self, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's naming)
        log.debug("metrics %s: " + format, self.address_string(), *args)


class _TCPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: MetricsAddress) -> None:
        self.address_family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
        super().__init__((address.host, address.port), _Handler)


class _UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, address: MetricsAddress) -> None:
        assert address.path is not None
        with contextlib.suppress(FileNotFoundError):
            if _stale(address.path):
                address.path.unlink()
        previous = os.umask(0o117)  # rw for its owner and group only
        try:
            super().__init__(str(address.path), _Handler)
        finally:
            os.umask(previous)


def _stale(path: Path) -> bool:
    """Whether ``path`` is a socket left by a server that is gone (nobody accepts on it)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except ConnectionRefusedError:
            return True
        except OSError:
            return False
    return False


class MetricsServer(BackgroundTask):
    """/metrics and /healthz of ``ipam``'s server on ``address``, and the :class:`Usage`
    behind them; a context manager, like the server's other helpers."""

    def __init__(self, ipam: Ipam, address: MetricsAddress, *, refresh: float = DEFAULT_REFRESH) -> None:
        super().__init__()
        self.address = address
        self.usage = Usage(ipam, refresh)
        registry = CollectorRegistry()
        registry.register(_WithHost(REGISTRY, ipam.host))
        registry.register(self.usage)
        try:
            self._server: _TCPServer | _UnixServer = (
                _UnixServer(address) if address.path is not None else _TCPServer(address)
            )
        except OSError as err:
            raise ShrikeError(f"cannot serve metrics on {address}: {err.strerror or err}") from None
        self._server.registry = registry  # type: ignore[attr-defined]
        self._server.health = Health(ipam)  # type: ignore[attr-defined]

    def loops(self) -> dict[str, Callable[[], None]]:
        return {"shrike-metrics": lambda: self._server.serve_forever(poll_interval=0.2)}

    def start(self) -> None:
        self.usage.start()
        super().start()
        log.info("metrics on %s (/metrics, /healthz)", self.address)

    def wake(self) -> None:
        if self._threads:  # shutdown() waits for serve_forever, which must be running
            self._server.shutdown()

    def stop(self, timeout: float = 10.0) -> None:
        super().stop(timeout)
        self._server.server_close()
        self.usage.stop(timeout)
        if self.address.path is not None:
            with contextlib.suppress(FileNotFoundError):
                self.address.path.unlink()
