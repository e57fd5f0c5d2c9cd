"""``shrike server --metrics-address``: /metrics during a real ``docker run`` burst agrees
with ``shrike leases``, a full range shows it, /healthz follows etcd, refusals are counted
by their reason, and everything the README and the alert rules name is served."""

from __future__ import annotations

import ipaddress
import json
import re
import shutil
import socket
import subprocess
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from docker.models.networks import Network
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from shrike_cli.ipam import Ipam
from shrike_cli.model import STATE_HELD
from shrike_cli.plugin import Driver
from shrike_cli.plugin.client import PluginClient
from shrike_cli.stores import EmbeddedStore, EtcdStore
from shrike_cli.stores.measured import MeasuredStore
from tests.fixtures.dockerd import DockerDaemon, Tracker
from tests.fixtures.etcd import EtcdServer, free_port
from tests.fixtures.metrics import Scrape, healthz, scrape
from tests.fixtures.plugin import (
    SHRIKE,
    SMALL_SUBNET,
    SUBNET,
    Plugin,
    ServerProcess,
    SmallLan,
    declare_lan,
    random_mac,
    run,
    wait_until,
)

REPO = Path(__file__).resolve().parent.parent
REQUEST_ADDRESS = "IpamDriver.RequestAddress"


def fresh_figures(url: str, since: float) -> Scrape:
    """A scrape whose figures of the ranges were read after ``since`` (a time.time())."""

    def fresh() -> Scrape | None:
        found = scrape(url)
        read_at = found.value("shrike_usage_read_timestamp_seconds")
        return found if read_at is not None and read_at > since else None

    return wait_until(fresh, what="figures read after the burst")


@pytest.mark.docker
@pytest.mark.metrics
def test_a_scrape_during_a_docker_run_burst_agrees_with_the_leases(
    plugin: Plugin, network: Network, small_lan: SmallLan, dockerd: DockerDaemon, docker_cleanup: Tracker
) -> None:
    url = plugin.metrics_url
    scrapes: list[Scrape] = []
    failures: list[str] = []
    burst_over = threading.Event()

    def scrape_meanwhile() -> None:
        while not burst_over.is_set():
            try:
                scrapes.append(scrape(url))
            except Exception as err:  # noqa: BLE001 - every failure is reported below
                failures.append(repr(err))
            time.sleep(0.05)

    scraper = threading.Thread(target=scrape_meanwhile)
    scraper.start()
    try:
        # Eight containers on the LAN, and five on the small LAN's four addresses.
        with ThreadPoolExecutor(8) as pool:
            runs = [pool.submit(run, dockerd, docker_cleanup, network) for _ in range(8)]
            runs += [pool.submit(run, dockerd, docker_cleanup, small_lan.network) for _ in range(5)]
            errors = [future.result()[1] for future in runs]
    finally:
        burst_over.set()
        scraper.join()
    ended = time.time()
    assert failures == [] and len(scrapes) >= 3
    assert errors[:8] == [""] * 8
    assert sorted(bool(error) for error in errors[8:]) == [False] * 4 + [True]
    assert "no free address left" in "".join(errors[8:])

    figures = fresh_figures(url, ended)
    leases = small_lan.shrike_json("leases")
    ranges = small_lan.shrike_json("ip-range") + small_lan.shrike_json("host-range")
    assert len(figures.labelled("shrike_range_held")) == len(ranges) == 4
    for declared in ranges:
        first, last = (int(ipaddress.ip_address(declared[end])) for end in ("start", "end"))
        held = sum(
            lease["state"] == STATE_HELD and first <= int(ipaddress.ip_address(lease["ip"])) <= last for lease in leases
        )
        range_id = f"{declared['start']}-{declared['end']}"
        labels = {"range": range_id, "lan": declared["subnet"], "kind": declared["kind"]}
        assert figures.value("shrike_range_held", **labels) == held, range_id
        assert figures.value("shrike_range_size", **labels) == declared["size"]
    small = {"range": "203.0.113.100-203.0.113.103", "lan": SMALL_SUBNET}
    assert figures.value("shrike_range_held", **small) == 4
    assert figures.value("shrike_range_free", **small) == 0
    assert figures.value("shrike_range_free_ratio", **small) == 0
    assert figures.value("shrike_range_held", range="198.51.100.100-198.51.100.199") == 8
    assert figures.value("shrike_lan_host_addresses_held", lan=SUBNET) == 1  # the host's, .39

    host = socket.gethostname()
    assert figures.value("shrike_plugin_refusals_total", endpoint=REQUEST_ADDRESS, reason="full", host=host) == 1
    assert figures.value("shrike_allocations_total", how="dynamic", host=host) == 12
    assert figures.value("shrike_store_up", host=host) == 1
    # dockerd's calls were timed, each endpoint on its own.
    assert figures.value("shrike_plugin_request_duration_seconds_count", endpoint=REQUEST_ADDRESS) >= 13 + 2
    assert figures.value("shrike_store_operation_duration_seconds_count", operation="txn") >= 12


def test_healthz_follows_etcd(etcd_server: EtcdServer, socket_dir: Path, tmp_path: Path) -> None:
    store_args = ["--cluster-store", etcd_server.url, "--store-prefix", f"/shrike-health-{uuid.uuid4().hex}/"]
    with EtcdStore([etcd_server.url], prefix=store_args[-1]) as store:
        declare_lan(Ipam(store))
    address = f"127.0.0.1:{free_port()}"
    url = f"http://{address}"
    server = ServerProcess(
        store_args,
        socket_dir,
        "health",
        tmp_path / "server.log",
        server_args=["--no-follow-docker", "--metrics-address", address, "--metrics-refresh", "0.2s"],
    )
    try:
        server.start()
        assert healthz(url) == (200, "ok\n")
        etcd_server.stop()
        try:
            status, reason = wait_until(lambda: (found := healthz(url))[0] == 503 and found, what="503")
            assert reason.startswith(f"etcd at {etcd_server.url} is unreachable")
            down = wait_until(lambda: (found := scrape(url)).value("shrike_store_up") == 0 and found)
            assert down.value("shrike_store_errors_total", kind="unreachable") >= 1
        finally:
            etcd_server.start()
        wait_until(lambda: healthz(url)[0] == 200, what="200 again", timeout=30)
        wait_until(lambda: scrape(url).value("shrike_store_up") == 1, what="the store up again")
    finally:
        server.stop()


#: Counters of this process (the Driver below runs in it), by a short name.
COUNTERS = {
    **{how: ("shrike_allocations_total", {"how": how}) for how in ("dynamic", "explicit", "sticky")},
    **{
        reason: ("shrike_plugin_refusals_total", {"endpoint": REQUEST_ADDRESS, "reason": reason})
        for reason in ("full", "in_use", "host_address", "outside_ranges")
    },
    "releases": ("shrike_releases_total", {}),
}


def counters() -> dict[str, float]:
    return {short: REGISTRY.get_sample_value(name, labels) or 0.0 for short, (name, labels) in COUNTERS.items()}


def test_refusals_are_counted_by_reason_and_allocations_by_how(tmp_path: Path) -> None:
    pool = "shrike/198.51.100.0/24"
    with EmbeddedStore(tmp_path / "shrike.db") as store:
        ipam = Ipam(MeasuredStore(store), host="hostA")
        ipam.declare_host_range("198.51.100.1/24", "198.51.100.99/24", "198.51.100.254")
        ipam.declare_ip_range("198.51.100.100/24", "198.51.100.103/24")
        driver = Driver(ipam)
        before = counters()

        def call(endpoint: str, body: dict[str, object]) -> int:
            return driver.handle(f"/IpamDriver.{endpoint}", json.dumps(body).encode())[0]

        def request(address: str = "", mac: str | None = None) -> int:
            options = {"com.docker.network.endpoint.macaddress": mac or random_mac()}
            return call("RequestAddress", {"PoolID": pool, "Address": address, "Options": options})

        mac = random_mac()
        assert request(mac=mac) == 200  # .100, dynamic
        assert call("ReleaseAddress", {"PoolID": pool, "Address": "198.51.100.100"}) == 200
        assert request(mac=mac) == 200  # .100 again for its MAC: sticky
        assert request("198.51.100.102") == 200  # explicit
        assert request("198.51.100.102") == 500  # in use
        assert request("198.51.100.5") == 500  # a host address
        assert request("198.51.100.150") == 500  # outside the container ranges
        assert (request(), request()) == (200, 200)  # .101, .103
        assert request() == 500  # full
    after = counters()
    assert {short: after[short] - before[short] for short in COUNTERS} == {
        "dynamic": 3,
        "explicit": 1,
        "sticky": 1,
        "full": 1,
        "in_use": 1,
        "host_address": 1,
        "outside_ranges": 1,
        "releases": 1,
    }


def documented_metrics() -> set[str]:
    """The metric names of the README's table and those the example alert rules use."""
    table = re.findall(r"^\| `(shrike_[a-z_]+)` \|", (REPO / "README.md").read_text(), re.MULTILINE)
    rules = re.findall(r"\bshrike_[a-z_]+[a-z]", (REPO / "examples" / "prometheus" / "shrike-alerts.yml").read_text())
    assert len(table) >= 19 and rules
    return {*table, *rules}


def test_what_the_docs_name_is_served_also_on_a_unix_socket(tmp_path: Path, socket_dir: Path) -> None:
    state = tmp_path / "state"
    with EmbeddedStore(state / "shrike.db") as store:
        declare_lan(Ipam(store))
    path = socket_dir / "metrics.sock"
    server = ServerProcess(
        ["--state-dir", str(state)], socket_dir, "docs", tmp_path / "server.log",
        server_args=["--no-follow-docker", "--metrics-address", str(path)],
    )  # fmt: skip
    try:
        server.start()
        # A labelled counter shows once it has counted something: a refusal, a store error.
        with PluginClient(server.path) as client:
            client.call(
                REQUEST_ADDRESS,
                {
                    "PoolID": "shrike/198.51.100.0/24",
                    "Address": "198.51.100.5",
                    "Options": {"com.docker.network.endpoint.macaddress": random_mac()},
                },
            )

        def metrics() -> str:
            return subprocess.run(
                ["curl", "-s", "--unix-socket", str(path), "http://shrike/metrics"], capture_output=True, text=True,
                timeout=30,
            ).stdout  # fmt: skip

        text = wait_until(lambda: "shrike_range_size{" in (found := metrics()) and found, what="the ranges counted")
        served = set(re.findall(r"^(shrike_[a-z_]+?)(?:_total|_bucket|_count|_sum)?[{ ]", text, re.MULTILINE))
    finally:
        server.stop()
    assert not path.exists()
    missing = {name for name in documented_metrics() if name.removesuffix("_total") not in served}
    # Counted only once the store fails, as test_healthz_follows_etcd shows.
    assert missing <= {"shrike_store_errors_total"}
    # The exposition parses as Prometheus text, every family with its help text...
    families = list(text_string_to_metric_families(text))
    assert all(family.documentation for family in families if family.name.startswith("shrike_"))
    # ...and Prometheus' own linter, where installed, finds nothing to say about it.
    if promtool := shutil.which("promtool"):
        lint = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
        assert (lint.returncode, lint.stdout + lint.stderr) == (0, "")


def test_a_bad_metrics_address_is_a_usage_error_and_a_busy_one_one_line(tmp_path: Path, socket_dir: Path) -> None:
    def server(address: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*SHRIKE, "--state-dir", str(tmp_path), "server", "--no-follow-docker", "--plugin-dir", str(socket_dir),
             "--plugin-name", "x", "--metrics-address", address],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    bad = server("localhost")
    assert bad.returncode == 2 and "is not HOST:PORT" in bad.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        busy = server(address)
    assert busy.returncode == 1
    assert busy.stderr.startswith(f"shrike: error: cannot serve metrics on {address}: ")
    assert len(busy.stderr.splitlines()) == 1
    assert not (socket_dir / "x.sock").exists()
