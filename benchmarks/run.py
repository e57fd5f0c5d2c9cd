"""Allocator, plugin and metrics benchmarks on both stores, in one run, printed as a Markdown table.

    python3 benchmarks/run.py               # everything (8-12 minutes on 2 cores)
    python3 benchmarks/run.py --no-docker   # without the docker run comparison
    python3 benchmarks/run.py --quick       # smaller samples, for a smoke run
    python3 benchmarks/run.py --only-ipv6   # only IPv6 against IPv4, on both stores

It starts its own etcd on a free loopback port (as the tests do) and an embedded store
in a temporary folder; the plugin rows (benchmarks/plugin.py) start ``shrike server``
subprocesses and, unless --no-docker, a private dockerd in a network namespace (root).
Figures are only comparable within one run: the rows that matter are ratios measured
side by side.
"""

from __future__ import annotations

import argparse
import random
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyetcd  # noqa: E402

from benchmarks.common import LAN, LAN6, Row, fresh_ipam, percentile, timed  # noqa: E402
from benchmarks.metrics import bench_change_record, bench_handle_overhead, bench_metrics_overhead, bench_scrape  # noqa: E402
from benchmarks.plugin import bench_docker_run, bench_probe, bench_socket  # noqa: E402
from benchmarks.restarts import bench_restarts  # noqa: E402
from shrike_cli.errors import Conflict  # noqa: E402
from shrike_cli.ipam import Ipam  # noqa: E402
from shrike_cli.stores import EmbeddedStore, EtcdStore, Put, Store  # noqa: E402
from tests.fixtures.dockerd import term_as_interrupt  # noqa: E402
from tests.fixtures.etcd import EtcdServer  # noqa: E402


@contextmanager
def stores(workdir: Path) -> Iterator[tuple[Callable[[str], Store], str]]:
    """Yields an opener, ``open_("embedded")`` or ``open_("etcd")`` gives an empty store,
    and the etcd's URL."""
    etcd = EtcdServer(workdir / "etcd")
    (workdir / "etcd").mkdir()
    etcd.start()
    opened: list[Store] = []

    def open_(kind: str) -> Store:
        store: Store
        if kind == "embedded":
            store = EmbeddedStore(workdir / f"{uuid.uuid4().hex}.db")
        else:
            store = EtcdStore([etcd.url], prefix=f"/bench-{uuid.uuid4().hex}/")
        opened.append(store)
        return store

    try:
        yield open_, etcd.url
    finally:
        for store in opened:
            store.close()
        etcd.stop()


def bench_rate(open_: Callable[[str], Store], count: int) -> list[Row]:
    rows = []
    # Each commit waits for its fsync (an answered grant survives a power cut): the disk
    # sets the pace, so the allocator is measured against the store's bare commits.
    bare_store = open_("embedded")
    prefix = f"bench-bare-{uuid.uuid4().hex}/"
    counter = iter(range(10**9))

    def put_if_absent_embedded() -> None:
        key = f"{prefix}{next(counter)}"
        bare_store.txn([(key, 0)], [Put(key, {"ip": "172.25.1.1"})])

    bare, _ = timed(put_if_absent_embedded, count // 4)
    embedded = fresh_ipam(open_("embedded"))
    rate, lat = timed(lambda: embedded.request_address(LAN), count)
    rows.append(Row("bare put-if-absent txns/s (durable)", "embedded", f"{bare:,.0f}", "baseline"))
    rows.append(Row("allocations/s, one process", "embedded", f"{rate:,.0f}", ">= 0.5 x baseline", rate >= bare / 2))
    rows.append(Row("allocations / bare txns", "embedded", f"{rate / bare:.2f}", ">= 0.50", rate >= bare / 2))
    rows.append(
        Row("allocation p50 / p99 (ms)", "embedded", f"{percentile(lat, 50):.3f} / {percentile(lat, 99):.3f}", "")
    )

    etcd_store = open_("etcd")
    assert isinstance(etcd_store, EtcdStore)
    host, _, port = etcd_store.endpoints[0].rpartition("/")[2].partition(":")
    client = pyetcd.Etcd3Client(host=host, port=int(port), timeout=5)
    prefix = f"/bench-bare-{uuid.uuid4().hex}/"
    counter = iter(range(10**9))

    def put_if_absent() -> None:
        key = f"{prefix}{next(counter)}"
        client.transaction(
            compare=[client.transactions.version(key) == 0],
            success=[client.transactions.put(key, '{"ip":"172.25.1.1"}')],
            failure=[],
        )

    etcd_count = max(count // 5, 500)
    bare, _ = timed(put_if_absent, etcd_count)
    ipam = fresh_ipam(etcd_store)
    rate, lat = timed(lambda: ipam.request_address(LAN), etcd_count)
    rows.append(Row("bare put-if-absent txns/s", "etcd", f"{bare:,.0f}", "baseline"))
    rows.append(Row("allocations/s, one process", "etcd", f"{rate:,.0f}", ">= 0.5 x baseline", rate >= bare / 2))
    rows.append(Row("allocations / bare txns", "etcd", f"{rate / bare:.2f}", ">= 0.50", rate >= bare / 2))
    rows.append(Row("allocation p50 / p99 (ms)", "etcd", f"{percentile(lat, 50):.3f} / {percentile(lat, 99):.3f}", ""))
    return rows


def dual_stack_ipam(store: Store) -> Ipam:
    """:func:`fresh_ipam`'s /16, and next to it an IPv6 /64 whose container range is
    the /64 itself (2^64 - 2^16 addresses)."""
    ipam = fresh_ipam(store)
    ipam.declare_host_range("2001:db8:1::1/64", "2001:db8:1::ffff/64", "fe80::1")
    ipam.declare_ip_range("2001:db8:1::1:0/64", "2001:db8:1:0:ffff:ffff:ffff:ffff/64")
    return ipam


def bench_ipv6(open_: Callable[[str], Store], kind: str, count: int) -> list[Row]:
    """IPv6 allocations (a /64) against IPv4 ones (a /16) on one store, in the same run:
    the calls alternate one by one (each family first every other time), so that both
    meet the same phases of the machine and of the growing store."""
    ipam = dual_stack_ipam(open_(kind))
    latencies: dict[str, list[float]] = {LAN: [], LAN6: []}
    for n in range(count):
        for pool in (LAN, LAN6) if n % 2 == 0 else (LAN6, LAN):
            start = time.perf_counter()
            ipam.request_address(pool)
            latencies[pool].append((time.perf_counter() - start) * 1000)
    rate = {pool: 1000 * len(lat) / sum(lat) for pool, lat in latencies.items()}
    p99 = {pool: percentile(lat, 99) for pool, lat in latencies.items()}
    rate_ratio, p99_ratio = rate[LAN6] / rate[LAN], p99[LAN6] / p99[LAN]
    return [
        Row("IPv4 allocations/s; p99 (ms), same run", kind, f"{rate[LAN]:,.0f}; {p99[LAN]:.3f}", ""),
        Row("IPv6 allocations/s (a /64); p99 (ms)", kind, f"{rate[LAN6]:,.0f}; {p99[LAN6]:.3f}", ""),
        Row("IPv6 rate / IPv4 rate", kind, f"{rate_ratio:.2f}", ">= 0.83 (1 / 1.2)", rate_ratio >= 1 / 1.2),
        Row("IPv6 p99 / IPv4 p99", kind, f"{p99_ratio:.2f}", "<= 1.2", p99_ratio <= 1.2),
    ]


def bench_fill(open_: Callable[[str], Store], kind: str, sample: int) -> list[Row]:
    """p99 latency at 1 % and at 99 % of a /16, and declaring a whole /16."""
    store = open_(kind)
    t0 = time.perf_counter()
    ipam = fresh_ipam(store)
    declare = time.perf_counter() - t0
    size = ipam.config().ip_ranges[0].size
    keys_after_declare = len(store.get_prefix(""))

    def allocate() -> None:
        ipam.request_address(LAN)

    for _ in range(size // 100 - sample // 2):
        allocate()
    _, low = timed(allocate, sample)
    for _ in range(size * 99 // 100 - size // 100 - sample // 2 - sample):
        allocate()
    _, high = timed(allocate, sample)
    p99_low, p99_high = percentile(low, 99), percentile(high, 99)
    # Full range, then churn: released addresses come back from the free lists.
    while True:
        try:
            allocate()
        except Conflict:
            break
    held = [lease.ip for lease in ipam.leases()]
    for ip in random.Random(7).sample(held, sample):
        ipam.release_address(ip)
    _, reuse = timed(allocate, sample)
    return [
        Row(
            "ip-range of a /16 + host-range (s)",
            kind,
            f"{declare:.3f} ({keys_after_declare} keys)",
            "< 1 s",
            declare < 1,
        ),
        Row(
            "p99 at 1 % full / at 99 % full (ms)",
            kind,
            f"{p99_low:.3f} / {p99_high:.3f}",
            "ratio <= 2",
            p99_high <= 2 * p99_low,
        ),  # fmt: skip
        Row("p99 reusing released addresses, /16 full (ms)", kind, f"{percentile(reuse, 99):.3f}", ""),
    ]


def render(rows: list[Row]) -> str:
    lines = ["| measure | store | measured | target | met |", "| --- | --- | --- | --- | --- |"]
    for row in rows:
        met = "" if row.ok is None else ("yes" if row.ok else "NO")
        lines.append(f"| {row.measure} | {row.store} | {row.value} | {row.target} | {met} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small samples: checks that it runs, not how fast")
    parser.add_argument("--no-docker", action="store_true", help="skip the rows that need dockerd (and root)")
    parser.add_argument(
        "--only-restarts", action="store_true", help="only the restart rows (a private dockerd: needs root)"
    )
    parser.add_argument("--only-ipv6", action="store_true", help="only the rows comparing IPv6 with IPv4")
    args = parser.parse_args()

    # SIGTERM unwinds like Ctrl-C, so that the finally blocks stop what was started.
    signal.signal(signal.SIGTERM, term_as_interrupt)
    count, sample = (2000, 200) if args.quick else (20000, 1000)
    plugin_calls, docker_runs, restarts = (800, 5, 3) if args.quick else (10000, 100, 20)
    rounds, scrapes = (1, 10) if args.quick else (11, 50)
    probe_rounds = 5 if args.quick else 20
    with tempfile.TemporaryDirectory(prefix="shrike-bench-") as tmp, stores(Path(tmp)) as (open_, etcd_url):
        rows = []
        if args.only_ipv6:
            for kind in ("embedded", "etcd"):
                rows += bench_ipv6(open_, kind, count if kind == "embedded" else max(count // 5, 500))
        elif not args.only_restarts:
            rows += bench_rate(open_, count)
            for kind in ("embedded", "etcd"):
                rows += bench_ipv6(open_, kind, count if kind == "embedded" else max(count // 5, 500))
            for kind in ("embedded", "etcd"):
                rows += bench_fill(open_, kind, sample)
            rows += bench_socket(etcd_url, Path(tmp), plugin_calls)
            rows += bench_metrics_overhead(etcd_url, Path(tmp), plugin_calls * 2 // 5, rounds)
            rows += bench_handle_overhead(Path(tmp), count // 5, rounds)
            rows += bench_scrape(open_, etcd_url, Path(tmp), scrapes)
            rows += bench_change_record(Path(tmp), count // 5, rounds)
            if not args.no_docker:  # namespaces: root, as dockerd
                rows += bench_probe(Path(tmp), probe_rounds)
                rows += bench_docker_run(Path(tmp), docker_runs)
        if not args.no_docker and not args.only_ipv6:
            rows += bench_restarts(Path(tmp), restarts)
    print(render(rows))
    return 0 if all(row.ok is not False for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
