"""What every benchmark module shares: the rows of the table, the test LAN of the store
benchmarks, and how a rate and its latencies are measured."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

from shrike_cli.ipam import Ipam
from shrike_cli.stores import Store

# Store contents only: nothing is configured on an interface, no packet is sent.
LAN = "172.25.0.0/16"
LAN6 = "2001:db8:1::/64"


@dataclass
class Row:
    measure: str
    store: str
    value: str
    target: str
    ok: bool | None = None


def percentile(samples: list[float], q: float) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[round(q) - 1]


def timed(action: Callable[[], object], count: int) -> tuple[float, list[float]]:
    """Run ``action`` ``count`` times: (operations per second, latencies in ms)."""
    latencies = []
    start = time.perf_counter()
    for _ in range(count):
        t0 = time.perf_counter()
        action()
        latencies.append((time.perf_counter() - t0) * 1000)
    return count / (time.perf_counter() - start), latencies


def fresh_ipam(store: Store) -> Ipam:
    ipam = Ipam(store, host="bench")
    ipam.declare_host_range("172.25.0.1/16", "172.25.0.254/16", "172.25.255.254")
    ipam.declare_ip_range("172.25.1.0/16", "172.25.255.253/16")
    return ipam
