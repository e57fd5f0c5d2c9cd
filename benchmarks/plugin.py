"""The plugin as dockerd uses it, for ``benchmarks/run.py``: rows of the same table.

* :func:`bench_socket`: RequestAddress calls over the unix socket of a ``shrike server``
  subprocess, from 1 and from 8 client processes at once, on each store. The clients
  send what dockerd sends for ``docker run`` (a random MAC each, one kept-alive
  connection each). Store contents only: no address is configured anywhere.
* :func:`bench_docker_run`: what a user feels, ``docker run --rm --net N busybox true``
  (and with ``--ip``) on a bridge network whose IPAM driver is shrike, against the same
  on an equal bridge network with Docker's built-in IPAM, interleaved in one run on a
  private dockerd inside a network namespace of its own. The server runs in that
  namespace too, as on a real host: it probes the namespace's LAN before it hands out
  an address (the probes reach only namespaces the benchmark made).
* :func:`bench_probe`: RequestAddress with probing on against off, over the socket of
  two servers on a host namespace of a LAN namespace: dynamic requests while addresses
  probed ahead remain, and requests for a given address, which wait for their probes.

Both start ``shrike server`` as it runs in production (no ``--debug``: that would write a
log line per request) and stop everything they start, by PID, also on errors and Ctrl-C.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import statistics
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

from docker.models.networks import Network

from benchmarks.common import Row, percentile
from shrike_cli.ipam import Ipam
from shrike_cli.lanprobe.prober import AHEAD, PROBE_TIMEOUT
from shrike_cli.plugin.client import PluginClient
from shrike_cli.stores import DB_NAME, EmbeddedStore, EtcdStore, Store
from tests.fixtures.dockerd import API_CLEANUP_BUDGET, PLUGIN_DIR, DockerDaemon, Tracker
from tests.fixtures.netns import Lan
from tests.fixtures.plugin import HOST_ADDRESS, ROUTER, SUBNET, ServerProcess, create_network, declare_lan, random_mac

#: The socket benchmark's LAN (store contents only, no packet is sent): 16,126 container
#: addresses, more than a full run allocates.
SOCKET_SUBNET = "10.99.0.0/18"
#: The built-in IPAM's network, the twin of the LAN (SUBNET) that shrike serves:
#: bridge address .39, DefaultGatewayIPv4 .254, like the shrike network.
BUILTIN_SUBNET = "203.0.113.0/24"
BUILTIN_GATEWAY = "203.0.113.39"
BUILTIN_ROUTER = "203.0.113.254"

#: The addresses the ``--ip`` runs ask for, in each network.
GIVEN = "198.51.100.150"
BUILTIN_GIVEN = "203.0.113.150"
#: bench_probe: seconds between bursts, for the probe-ahead to probe the next addresses
#: (it starts as soon as a request used a verdict; one round of probes takes PROBE_TIMEOUT)...
PROBE_PAUSE = 1.0
#: ...and the addresses asked for by name afterwards (past those handed out dynamically).
PROBE_GIVEN = tuple(f"198.51.100.{n}" for n in range(190, 200))

CLIENTS = (1, 8)
#: The fork server imports this module (and so docker, pytest) before the first client.
CLIENT_READY_TIMEOUT = 120.0
#: A generous bound on one client's whole series (a stall fails the run, never hangs it).
CLIENT_RUN_TIMEOUT = 300.0
#: One docker run (a stuck one fails the run; dockerd has no timeout on plugin calls).
RUN_TIMEOUT = 60.0


@contextmanager
def serving(
    store_args: Sequence[str],
    plugin_dir: Path,
    name: str,
    log_path: Path,
    env: dict[str, str] | None = None,
    *,
    netns: str | None = None,
    server_args: Sequence[str] = (),
) -> Iterator[ServerProcess]:
    """``shrike [STORE OPTIONS] server`` running as in production (without the tests'
    ``--debug``; following the dockerd ``env``'s DOCKER_HOST names, if any; in the
    network namespace ``netns`` if given), stopped by its pid on the way out, also if it
    fails to start or on Ctrl-C. It dies with the benchmark (``setpriv --pdeathsig``)."""
    server = ServerProcess(store_args, plugin_dir, name, log_path, server_args, env=env, debug=False, netns=netns)
    try:
        server.start()
        yield server
    finally:
        server.stop()


# ------------------------------------------------------------------ the socket
def _client(path: str, pool_id: str, count: int, go: Event, out: Any) -> None:
    """One client process: connect, say ready, wait for ``go``, then ``count``
    RequestAddress calls; reports ``("done", began, ended, latencies)`` or an error."""
    try:
        macs = [random_mac() for _ in range(count)]
        with PluginClient(path) as client:
            client.call("Plugin.Activate")
            out.put(("ready",))
            if not go.wait(CLIENT_READY_TIMEOUT):
                return
            latencies = []
            # CLOCK_MONOTONIC: one clock for every process on the machine.
            began = time.monotonic()
            for mac in macs:
                t0 = time.perf_counter()
                client.request_address(pool_id, mac=mac)
                latencies.append((time.perf_counter() - t0) * 1000)
            out.put(("done", began, time.monotonic(), latencies))
    except BaseException as err:
        out.put(("error", f"client {os.getpid()}: {type(err).__name__}: {err}"))


def _collect(out: Any, processes: Sequence[BaseProcess], kind: str, timeout: float) -> list[tuple[Any, ...]]:
    """One message of ``kind`` from each client; an error message, a client that died
    or ``timeout`` seconds raise."""
    deadline = time.monotonic() + timeout
    messages = []
    while len(messages) < len(processes):
        try:
            message = out.get(timeout=0.5)
        except queue.Empty:
            # A client reports its own errors and exits with 0; not so one that failed to start.
            if died := [p.pid for p in processes if p.exitcode not in (None, 0)]:
                raise RuntimeError(f"client processes {died} died") from None
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(processes) - len(messages)} clients not {kind} after {timeout:g} s") from None
            continue
        if message[0] == "error":
            raise RuntimeError(message[1])
        messages.append(message)
    return messages


def socket_rate(path: Path, pool_id: str, clients: int, total: int) -> tuple[float, list[float]]:
    """``total`` RequestAddress calls from ``clients`` processes started together:
    (calls per second from the first call to the last answer, latencies in ms)."""
    # Not fork: this process may hold etcd (gRPC) connections and threads. A fork
    # server that has imported this module starts each client in a few milliseconds.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["__main__", __name__])
    out, go = context.Queue(), context.Event()
    processes: list[BaseProcess] = [
        context.Process(target=_client, args=(str(path), pool_id, total // clients, go, out), daemon=True)
        for _ in range(clients)
    ]
    done: list[tuple[Any, ...]] = []
    try:
        for process in processes:
            process.start()
        _collect(out, processes, "ready", CLIENT_READY_TIMEOUT)
        go.set()
        done = _collect(out, processes, "done", CLIENT_RUN_TIMEOUT)
    finally:
        for process in processes:
            if process.pid is None:
                continue  # never started
            process.join(5 if done else 0)
            if process.is_alive():
                process.kill()  # by its pid
                process.join(5)
    began, ended = min(d[1] for d in done), max(d[2] for d in done)
    latencies = [ms for d in done for ms in d[3]]
    return len(latencies) / (ended - began), latencies


def socket_lan(kind: str, etcd_url: str, workdir: Path, name: str) -> list[str]:
    """A fresh store of ``kind`` holding SOCKET_SUBNET (hosts .0.1-.0.254, gateway
    .63.254, containers the rest); returns the server's options for it."""
    store: Store
    if kind == "embedded":
        state = workdir / f"state-{name}"
        store, options = EmbeddedStore(state / DB_NAME), ["--state-dir", str(state)]
    else:
        prefix = f"/bench-plugin-{os.getpid()}-{name}/"
        store, options = EtcdStore([etcd_url], prefix=prefix), ["--cluster-store", etcd_url, "--store-prefix", prefix]
    try:
        ipam = Ipam(store)
        ipam.declare_host_range("10.99.0.1/18", "10.99.0.254/18", "10.99.63.254")
        ipam.declare_ip_range("10.99.1.0/18", "10.99.63.253/18")
    finally:
        store.close()
    return options


def bench_socket(etcd_url: str, workdir: Path, total: int) -> list[Row]:
    """Rate and latency of RequestAddress over the socket, for each store and each
    number of clients, each on a fresh store and server. ``total`` calls per embedded
    measurement, half as many on etcd."""
    rows: list[Row] = []
    sockets = workdir / "sockets"
    sockets.mkdir()
    for kind, target, calls in (("embedded", 2000, total), ("etcd", 1000, total // 2)):
        for clients in CLIENTS:
            name = f"{kind}-{clients}"
            options = socket_lan(kind, etcd_url, workdir, name)
            with serving(options, sockets, name, workdir / f"server-{name}.log") as server:
                with PluginClient(server.path) as client:
                    pool_id = client.request_pool(SOCKET_SUBNET)
                rate, latencies = socket_rate(server.path, pool_id, clients, calls)
            many = clients > 1
            who = f"{clients} client{'s' * many}"
            goal, met = (f">= {target:,}", rate >= target) if many else ("", None)
            rows.append(Row(f"RequestAddress/s over the socket, {who}", kind, f"{rate:,.0f}", goal, met))
            quantiles = f"{percentile(latencies, 50):.3f} / {percentile(latencies, 99):.3f}"
            rows.append(Row(f"RequestAddress p50 / p99 (ms), {who}", kind, quantiles, ""))
    return rows


# ---------------------------------------------------------------- docker run
def docker_run_times(
    dockerd: DockerDaemon, networks: Sequence[str], samples: int, options: Sequence[Sequence[str]] | None = None
) -> list[list[float]]:
    """``samples`` timings (ms) of ``docker run --rm --net N [OPTIONS] IMAGE true`` for
    each of ``networks`` (with the ``options`` of each), interleaved: each round runs
    them all, in an order that alternates (A B, then B A), after one run each that is
    not counted (warm-up)."""
    times: list[list[float]] = [[] for _ in networks]
    order = list(range(len(networks)))
    extra = options or [()] * len(networks)
    for round_ in range(samples + 1):
        for index in order if round_ % 2 else reversed(order):
            t0 = time.perf_counter()
            dockerd.docker_cli(
                "run", "--rm", "--net", networks[index], *extra[index], dockerd.image, "true", timeout=RUN_TIMEOUT
            )
            if round_:
                times[index].append((time.perf_counter() - t0) * 1000)
    return times


@dataclass
class Twins:
    """A private dockerd with two equal bridge networks: ``ours`` on a ``shrike server``
    (embedded store in ``state``, following that dockerd, as in production), ``builtin``
    on Docker's built-in IPAM; ``tracker`` removes what a benchmark adds."""

    dockerd: DockerDaemon
    state: Path
    tracker: Tracker
    ours: Network
    builtin: Network


@contextmanager
def twin_networks(workdir: Path, name: str) -> Iterator[Twins]:
    """:class:`Twins`, everything stopped and removed by PID on the way out."""
    with ExitStack() as cleanup:
        # Unwound in reverse: networks go while the plugin still answers, then the
        # plugin, then dockerd (its containers, namespaces and folders).
        dockerd = DockerDaemon(workdir)
        cleanup.callback(dockerd.stop)
        dockerd.start()
        state = workdir / f"{name}-state"
        store = EmbeddedStore(state / DB_NAME)
        try:
            declare_lan(Ipam(store))  # the same host name as the server's: this machine's
        finally:
            store.close()
        server = cleanup.enter_context(
            serving(
                ["--state-dir", str(state)],
                Path(PLUGIN_DIR),
                f"shrike-{name}-{os.getpid()}",
                workdir / f"{name}-server.log",
                env=dockerd.env,
                netns=dockerd.host.netns_path,  # beside dockerd, on its LAN: it probes there
            )
        )
        tracker = Tracker(dockerd.client)
        cleanup.callback(lambda: tracker.cleanup(time.monotonic() + API_CLEANUP_BUDGET))
        ours = create_network(dockerd, tracker, server.name, SUBNET, HOST_ADDRESS, {"DefaultGatewayIPv4": ROUTER})
        builtin = create_network(
            dockerd, tracker, "default", BUILTIN_SUBNET, BUILTIN_GATEWAY, {"DefaultGatewayIPv4": BUILTIN_ROUTER}
        )
        yield Twins(dockerd, state, tracker, ours, builtin)


def bench_docker_run(workdir: Path, samples: int) -> list[Row]:
    """The median ``docker run`` on a shrike (embedded store, probing the LAN) network
    over the same on an equal network with the built-in IPAM, measured side by side;
    then the same with ``--ip``, whose address shrike probes while dockerd waits."""
    with twin_networks(workdir, "docker-run") as twins:
        networks = [twins.ours.name, twins.builtin.name]
        shrike_ms, builtin_ms = docker_run_times(twins.dockerd, networks, samples)
        given = [("--ip", GIVEN), ("--ip", BUILTIN_GIVEN)]
        shrike_ip_ms, builtin_ip_ms = docker_run_times(twins.dockerd, networks, max(samples // 5, 1), given)
    ours_median, builtin_median = statistics.median(shrike_ms), statistics.median(builtin_ms)
    ratio = ours_median / builtin_median
    pairs = statistics.median(a / b for a, b in zip(shrike_ms, builtin_ms, strict=True))
    what = f"docker run --rm --net N busybox true, median of {samples} (ms)"
    given_what = f"docker run --rm --net N --ip A busybox true, median of {len(shrike_ip_ms)} (ms)"
    given_ratio = statistics.median(shrike_ip_ms) / statistics.median(builtin_ip_ms)
    return [
        Row(what, "embedded, probing", f"{ours_median:.0f}", ""),
        Row(what, "built-in IPAM", f"{builtin_median:.0f}", ""),
        Row(
            "docker run: shrike median / built-in median", "embedded, probing", f"{ratio:.3f}", "<= 1.05", ratio <= 1.05
        ),
        Row("docker run: median of the paired ratios", "embedded, probing", f"{pairs:.3f}", ""),
        Row(given_what, "embedded, probing", f"{statistics.median(shrike_ip_ms):.0f}", ""),
        Row(given_what, "built-in IPAM", f"{statistics.median(builtin_ip_ms):.0f}", ""),
        Row("docker run --ip: shrike median / built-in median", "embedded, probing", f"{given_ratio:.3f}", ""),
    ]


# -------------------------------------------------------------------- probing
def probe_latencies(path: Path, rounds: int, burst: int, given: Sequence[str]) -> tuple[list[float], list[float]]:
    """RequestAddress latencies (ms) over the socket ``path``: ``rounds`` bursts of
    ``burst`` dynamic requests, each after a pause in which the server may probe the
    next addresses ahead, then one request for each of the ``given`` addresses."""
    with PluginClient(path) as client:
        pool_id = client.request_pool(SUBNET)
        dynamic: list[float] = []
        for _ in range(rounds):
            time.sleep(PROBE_PAUSE)
            for _ in range(burst):
                t0 = time.perf_counter()
                client.request_address(pool_id, mac=random_mac())
                dynamic.append((time.perf_counter() - t0) * 1000)
        explicit = []
        for address in given:
            t0 = time.perf_counter()
            client.request_address(pool_id, address, mac=random_mac())
            explicit.append((time.perf_counter() - t0) * 1000)
    return dynamic, explicit


def bench_probe(workdir: Path, rounds: int) -> list[Row]:
    """RequestAddress with probing on against off (``--no-probe``): two servers on one
    host of a LAN namespace, each on a fresh store with the test LAN declared."""
    sockets = workdir / "probe-sockets"
    sockets.mkdir()
    lan = Lan(SUBNET, ROUTER)
    try:
        host = lan.add_host("h", f"{HOST_ADDRESS}/24")
        measured = {}
        for name, options in (("off", ["--no-probe"]), ("on", [])):
            state = workdir / f"probe-{name}"
            store = EmbeddedStore(state / DB_NAME)
            try:
                declare_lan(Ipam(store))
            finally:
                store.close()
            with serving(
                ["--state-dir", str(state)],
                sockets,
                f"probe-{name}",
                workdir / f"probe-{name}.log",
                netns=host.netns_path,
                server_args=["--no-follow-docker", *options],
            ) as server:
                measured[name] = probe_latencies(server.path, rounds, AHEAD, PROBE_GIVEN)
    finally:
        lan.cleanup()
    (off, _), (on, given) = measured["off"], measured["on"]
    ratio = percentile(on, 99) / percentile(off, 99)
    bound = PROBE_TIMEOUT * 1000 + 100
    who = f"{len(on)} requests, {AHEAD} at a time"

    def quantiles(samples: list[float]) -> str:
        return f"{percentile(samples, 50):.3f} / {percentile(samples, 99):.3f}"

    return [
        Row(f"RequestAddress p50 / p99 (ms), {who}", "embedded, no probing", quantiles(off), ""),
        Row(f"RequestAddress p50 / p99 (ms), {who}", "embedded, probed ahead", quantiles(on), ""),
        Row("RequestAddress p99: probing / no probing", "embedded", f"{ratio:.2f}", "<= 2", ratio <= 2),
        Row(
            f"RequestAddress of a given address (--ip) p50 / p99 (ms), {len(given)} requests",
            "embedded, probing",
            f"{percentile(given, 50):.0f} / {percentile(given, 99):.0f}",
            f"<= {bound:.0f} (--probe-timeout {PROBE_TIMEOUT:g} s)",
            percentile(given, 99) <= bound,
        ),
    ]
