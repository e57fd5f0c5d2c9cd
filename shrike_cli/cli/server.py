"""``server``: run the Docker IPAM plugin."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated

import typer

from ..ipam import Ipam
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
        tracker = helpers.enter_context(OwnerTracker(ipam)) if follow_docker else None
        if reconcile_every:
            helpers.enter_context(
                PeriodicReconcile(ipam, reconcile_every, plugin_name=plugin_name, plugin_dir=plugin_dir)
            )
        PluginServer(Driver(ipam, tracker), path).run()
