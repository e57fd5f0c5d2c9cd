"""``server``: run the Docker IPAM plugin."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Annotated

import typer

from ..ipam import Ipam
from ..lanprobe.announce import Announcer
from ..lanprobe.links import Routes
from ..lanprobe.prober import CONFLICT_RECHECK, PROBE_COUNT, PROBE_TIMEOUT, ProbeAhead, Prober
from ..monitoring import DEFAULT_REFRESH, MetricsAddress, MetricsServer, parse_metrics_address
from ..owners import OwnerTracker
from ..plugin import PLUGIN_DIR, Driver, PluginServer, socket_path
from ..reconcile import PeriodicReconcile
from ..stores.measured import MeasuredStore
from .app import app
from .compat import PLUGIN_NAME, PluginNameOption
from .reconcile import parse_duration_option
from .state import globals_of

#: Longest a request may spend on store conflicts before it is answered with an error:
#: dockerd waits for the answer with no timeout of its own.
MAX_WAIT = 10.0


@app.command("server")
def server(
    ctx: typer.Context,
    plugin_name: PluginNameOption = PLUGIN_NAME,
    plugin_dir: Annotated[
        Path,
        typer.Option("--plugin-dir", help="Where dockerd looks for plugin sockets.", file_okay=False),
    ] = PLUGIN_DIR,
    follow_docker: Annotated[
        bool,
        typer.Option(
            "--follow-docker/--no-follow-docker",
            envvar="SHRIKE_FOLLOW_DOCKER",
            show_envvar=True,
            help="Follow dockerd (DOCKER_HOST, else the local socket) through its events: record on each"
            " lease the container and network holding it, keep a stopped container's address for it until"
            " it is removed, and reconnect when dockerd restarts.",
        ),
    ] = True,
    reconcile_every: Annotated[
        float | None,
        typer.Option(
            "--reconcile-every",
            parser=parse_duration_option,
            metavar="DURATION",
            help="Every DURATION (30s, 10m, 1h), release this host's leaked addresses taken over"
            " 10 minutes ago, as 'shrike reconcile --fix' does.",
        ),
    ] = None,
    metrics_address: Annotated[
        MetricsAddress | None,
        typer.Option(
            "--metrics-address",
            envvar="SHRIKE_METRICS_ADDRESS",
            show_envvar=True,
            parser=parse_metrics_address,
            metavar="HOST:PORT|PATH",
            help="Serve Prometheus metrics (/metrics) and a health check (/healthz) over HTTP there:"
            " HOST:PORT, :PORT for every address, or a unix socket's path.",
        ),
    ] = None,
    metrics_refresh: Annotated[
        float | None,
        typer.Option(
            "--metrics-refresh",
            parser=parse_duration_option,
            metavar="DURATION",
            help="How often the ranges' figures in /metrics are counted from the store, one read of every lease"
            f" [default: {DEFAULT_REFRESH:g}s].",
        ),
    ] = None,
    probe: Annotated[
        bool,
        typer.Option(
            "--probe/--no-probe",
            envvar="SHRIKE_PROBE",
            show_envvar=True,
            help="Before a container is handed an address, probe it on this host's interface on the LAN"
            " (where there is one; ARP for IPv4, duplicate address detection for IPv6): an address something"
            " else answers for is recorded as a conflict and not handed out. Likely next addresses are probed"
            " ahead, in the background.",
        ),
    ] = True,
    probe_count: Annotated[
        int, typer.Option("--probe-count", min=1, max=10, metavar="N", help="Probes per address.")
    ] = PROBE_COUNT,
    probe_timeout: Annotated[
        float,
        typer.Option(
            "--probe-timeout",
            min=0.01,
            max=10.0,
            metavar="SECONDS",
            help="Seconds the probes of one address are spread over: how long a request waits for an address"
            " that was not probed ahead (--ip).",
        ),
    ] = PROBE_TIMEOUT,
    conflict_recheck: Annotated[
        float,
        typer.Option(
            "--conflict-recheck",
            parser=parse_duration_option,
            metavar="DURATION",
            help="Probe a conflict again this long (30s, 10m, 1h) after it last answered; silent, it is free again.",
        ),
    ] = f"{int(CONFLICT_RECHECK) // 60}m",  # type: ignore[assignment]  # parsed by the option's parser
    announce: Annotated[
        bool,
        typer.Option(
            "--announce/--no-announce",
            envvar="SHRIKE_ANNOUNCE",
            show_envvar=True,
            help="When a container starts with an address of this host's, announce it (gratuitous ARP) from"
            " inside the container, so that neighbours learn its new MAC at once. Needs --follow-docker.",
        ),
    ] = True,
) -> None:
    """Run the Docker IPAM plugin on PLUGIN_DIR/PLUGIN_NAME.sock until SIGTERM or SIGINT.

    Start it before dockerd: networks created with --ipam-driver PLUGIN_NAME get their
    addresses from it. Logs go to stderr, one line per request with --debug.
    """
    path = socket_path(plugin_dir, plugin_name)
    options = globals_of(ctx)
    store = options.store()
    ipam = Ipam(MeasuredStore(store) if metrics_address else store, host=options.host, max_wait=MAX_WAIT)
    with contextlib.ExitStack() as helpers:
        if metrics_address:
            helpers.enter_context(MetricsServer(ipam, metrics_address, refresh=metrics_refresh or DEFAULT_REFRESH))
        listeners = []
        if follow_docker and announce:
            announcer = Announcer(ipam)
            helpers.enter_context(announcer)
            listeners.append(announcer.heard)
        tracker = helpers.enter_context(OwnerTracker(ipam, listeners=listeners)) if follow_docker else None
        if probe:
            routes = Routes(logging.INFO)  # where each LAN is probed, in the log
            prober = Prober(lambda: ipam.config(fresh=False), count=probe_count, timeout=probe_timeout, routes=routes)
            ipam.probe_with(prober)
            helpers.enter_context(ProbeAhead(ipam, prober, recheck=conflict_recheck))
        if reconcile_every:
            helpers.enter_context(
                PeriodicReconcile(ipam, reconcile_every, plugin_name=plugin_name, plugin_dir=plugin_dir)
            )
        PluginServer(Driver(ipam, tracker), path).run()
