"""What watching shrike costs, for ``benchmarks/run.py``: rows of the same table.

* :func:`bench_metrics_overhead`: RequestAddress/s over the socket from 8 clients, by a
  ``shrike server`` with ``--metrics-address`` (scraped every second) against one
  without, in interleaved rounds (off on, on off, ...), each on a fresh store.
* :func:`bench_handle_overhead`: the same without HTTP or clients, in this process:
  :meth:`Driver.handle` on a store timed for the metrics and on the bare store.
* :func:`bench_scrape`: a /16 with 10,000 leases: how long one scrape takes and how many
  store operations it makes, and how long the background count of the ranges takes.
* :func:`bench_change_record`: what the embedded store's record of changes (for ``shrike
  events``) costs allocations while a watch records.
"""

from __future__ import annotations

import json
import os
import statistics
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from benchmarks.common import LAN, Row, fresh_ipam, percentile
from benchmarks.plugin import CLIENTS, SOCKET_SUBNET, serving, socket_lan, socket_rate
from shrike_cli.plugin import Driver
from shrike_cli.plugin.client import PluginClient
from shrike_cli.ranges import usage_by_state
from shrike_cli.stores import DB_NAME, EmbeddedStore, EtcdStore, Store
from shrike_cli.stores.measured import MeasuredStore
from tests.fixtures.etcd import free_port
from tests.fixtures.metrics import Scrape, scrape
from tests.fixtures.plugin import random_mac

#: Leases in the /16 of :func:`bench_scrape`.
SCRAPE_LEASES = 10_000


def _scraping(url: str, stop: threading.Event, every: float = 1.0) -> threading.Thread:
    """A thread that GETs ``url``/metrics every ``every`` seconds until ``stop``."""

    def loop() -> None:
        while not stop.wait(every):
            with urllib.request.urlopen(f"{url}/metrics", timeout=10) as reply:
                reply.read()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    return thread


def bench_metrics_overhead(etcd_url: str, workdir: Path, calls: int, rounds: int) -> list[Row]:
    """RequestAddress/s with 8 clients, metrics on and off, ``rounds`` of each per store
    (``calls`` per round on the embedded store, half as many on etcd)."""
    rows = []
    clients = max(CLIENTS)
    sockets = workdir / "metrics-sockets"
    sockets.mkdir()
    for kind, count in (("embedded", calls), ("etcd", calls // 2)):
        rates: dict[bool, list[float]] = {False: [], True: []}
        cpu: dict[bool, list[float]] = {False: [], True: []}  # the server's CPU seconds per call
        for round_ in range(rounds):
            for on in (False, True) if round_ % 2 == 0 else (True, False):
                name = f"m{kind[0]}{round_}{'on' if on else 'off'}"
                options = socket_lan(kind, etcd_url, workdir, name)
                address = f"127.0.0.1:{free_port()}"
                # The ranges are counted at the start and then every 30 s: that cost is
                # bench_scrape's row, per count.
                extra = ["--metrics-address", address] if on else []
                with serving(options, sockets, name, workdir / f"server-{name}.log", server_args=extra) as server:
                    with PluginClient(server.path) as client:
                        pool_id = client.request_pool(SOCKET_SUBNET)
                    stop = threading.Event()
                    scraper = _scraping(f"http://{address}", stop) if on else None
                    used = _cpu_seconds(server.pid)
                    try:
                        rate, _ = socket_rate(server.path, pool_id, clients, count)
                    finally:
                        stop.set()
                        if scraper:
                            scraper.join(15)
                    cpu[on].append((_cpu_seconds(server.pid) - used) / count)
                rates[on].append(rate)
        on, off = statistics.median(rates[True]), statistics.median(rates[False])
        # Each round's two runs are side by side: their ratio is the least noisy figure.
        ratio = statistics.median(a / b for a, b in zip(rates[True], rates[False], strict=True))
        what = f"RequestAddress/s, {clients} clients: metrics on / off, median of {rounds} paired rounds"
        rows.append(Row(what, kind, f"{on:,.0f} / {off:,.0f}: {ratio:.3f}", ">= 0.95", ratio >= 0.95))
        # What the server itself spends, whatever else the machine runs meanwhile.
        per_call = statistics.median(b / a for a, b in zip(cpu[True], cpu[False], strict=True))
        on_us, off_us = statistics.median(cpu[True]) * 1e6, statistics.median(cpu[False]) * 1e6
        rows.append(
            Row(
                "RequestAddress per server CPU second: metrics on / off",
                kind,
                f"off {off_us:.0f}, on {on_us:.0f} us a call: {per_call:.3f}",
                ">= 0.95",
                per_call >= 0.95,
            )
        )
    return rows


def _cpu_seconds(pid: int) -> float:
    """CPU time process ``pid`` has used, user and system (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_handle_overhead(workdir: Path, count: int, rounds: int) -> list[Row]:
    """The plugin's own work for one RequestAddress (:meth:`Driver.handle`, in this
    process, no HTTP), on a store timed for the metrics (:class:`MeasuredStore`, what
    ``--metrics-address`` adds to each request) and on the bare store, in CPU time."""
    cpu: dict[bool, list[float]] = {False: [], True: []}
    path = "/IpamDriver.RequestAddress"
    for round_ in range(rounds):
        for on in (False, True) if round_ % 2 == 0 else (True, False):
            with EmbeddedStore(workdir / f"handle-{on}-{round_}.db") as bare:
                driver = Driver(fresh_ipam(MeasuredStore(bare) if on else bare))
                options = {"com.docker.network.endpoint.macaddress": ""}
                bodies = []
                for _ in range(count):
                    options["com.docker.network.endpoint.macaddress"] = random_mac()
                    bodies.append(json.dumps({"PoolID": f"shrike/{LAN}", "Address": "", "Options": options}).encode())
                started = time.process_time()
                for body in bodies:
                    driver.handle(path, body)
                cpu[on].append((time.process_time() - started) / count)
    ratio = statistics.median(off / on for on, off in zip(cpu[True], cpu[False], strict=True))
    on_us, off_us = statistics.median(cpu[True]) * 1e6, statistics.median(cpu[False]) * 1e6
    return [
        Row(
            f"Driver.handle(RequestAddress) per CPU second, in process: metrics on / off, {rounds} paired rounds",
            "embedded",
            f"off {off_us:.0f}, on {on_us:.0f} us a call: {ratio:.3f}",
            ">= 0.95",
            ratio >= 0.95,
        )
    ]


def _store_operations(found: Scrape) -> float:
    return sum(s.value for s in found.samples if s.name == "shrike_store_operation_duration_seconds_count")


def bench_scrape(open_: Callable[[str], Store], etcd_url: str, workdir: Path, samples: int) -> list[Row]:
    """One scrape and one count of the ranges, on a /16 holding :data:`SCRAPE_LEASES` leases."""
    rows = []
    sockets = workdir / "scrape-sockets"
    sockets.mkdir()
    for kind in ("embedded", "etcd"):
        # The server opens the embedded store by its folder: the file has its usual name.
        store = open_(kind) if kind == "etcd" else EmbeddedStore(workdir / "scrape-state" / DB_NAME)
        ipam = fresh_ipam(store)
        for _ in range(SCRAPE_LEASES):
            ipam.request_address(LAN)
        counts = []
        for _ in range(5):
            started = time.perf_counter()
            figures = usage_by_state(ipam.config(), ipam.state.lease_states())
            counts.append((time.perf_counter() - started) * 1000)
        assert sum(f.held for f in figures) == SCRAPE_LEASES
        if isinstance(store, EtcdStore):
            options = ["--cluster-store", etcd_url, "--store-prefix", store.prefix]
        else:
            assert isinstance(store, EmbeddedStore)
            options = ["--state-dir", str(store.path.parent)]
            store.close()
        address = f"127.0.0.1:{free_port()}"
        url = f"http://{address}"
        # Counted once, at the start: any store operation later would be a scrape's.
        extra = ["--metrics-address", address, "--metrics-refresh", "1h"]
        with serving(options, sockets, f"scrape-{kind}", workdir / f"server-scrape-{kind}.log", server_args=extra):
            deadline = time.monotonic() + 60
            while not (first := scrape(url)).value("shrike_usage_read_timestamp_seconds"):
                assert time.monotonic() < deadline, "the server did not count the ranges within 60 s"
                time.sleep(0.1)
            assert first.value("shrike_range_held", range="172.25.1.0-172.25.255.253") == SCRAPE_LEASES
            times = []
            for _ in range(samples):
                started = time.perf_counter()
                scrape(url)
                times.append((time.perf_counter() - started) * 1000)
            operations = _store_operations(scrape(url)) - _store_operations(first)
        quantiles = f"{percentile(times, 50):.2f} / {percentile(times, 99):.2f} ({operations:.0f} store operations)"
        rows.append(
            Row(
                f"one scrape of /metrics, /16 with {SCRAPE_LEASES:,} leases: p50 / p99 (ms)",
                kind,
                quantiles,
                "no store operation",
                operations == 0,
            )
        )
        rows.append(
            Row(
                f"counting the ranges for /metrics, {SCRAPE_LEASES:,} leases, once per --metrics-refresh (ms)",
                kind,
                f"{statistics.median(counts):.0f}",
                "",
            )
        )
    return rows


def bench_change_record(workdir: Path, count: int, rounds: int) -> list[Row]:
    """Allocations per CPU second in one process on the embedded store (CPU time: the
    machine's other work does not count), while a watch records the changes and while
    nobody watches (then no trigger exists: a commit does what it did before)."""
    rates: dict[str, list[float]] = {"idle": [], "watched": []}
    for round_ in range(rounds):
        for variant in list(rates) if round_ % 2 == 0 else list(reversed(rates)):
            with EmbeddedStore(workdir / f"record-{variant}-{round_}.db") as store:
                watch = store.watch("leases/") if variant == "watched" else None
                ipam = fresh_ipam(store)
                started = time.process_time()
                for _ in range(count):
                    ipam.request_address(LAN)
                rates[variant].append(count / (time.process_time() - started))
                if watch is not None:
                    watch.close()
    idle, watched = statistics.median(rates["idle"]), statistics.median(rates["watched"])
    # Each round's runs are side by side: their ratio is the least noisy figure.
    ratio = statistics.median(a / b for a, b in zip(rates["watched"], rates["idle"], strict=True))
    return [
        Row(
            f"allocations per CPU second: while shrike events --follow records / nobody watching, {rounds} rounds",
            "embedded",
            f"{watched:,.0f} / {idle:,.0f}: {ratio:.3f}",
            "",
        )
    ]
