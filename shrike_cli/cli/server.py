"""``server``: run the Docker IPAM plugin."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..ipam import Ipam
from ..plugin import Driver, PluginServer, socket_path
from .app import app
from .state import globals_of

#: Longest a request may spend on store conflicts before it is answered with an error:
#: dockerd waits for the answer with no timeout of its own.
MAX_WAIT = 10.0


@app.command("server")
def server(
    ctx: typer.Context,
    plugin_name: Annotated[
        str,
        typer.Option(
            "--plugin-name",
            help="The name networks use with --ipam-driver; the original plugin's was talkingdata.",
        ),
    ] = "shrike",
    plugin_dir: Annotated[
        Path,
        typer.Option("--plugin-dir", help="Where dockerd looks for plugin sockets.", file_okay=False),
    ] = Path("/run/docker/plugins"),
) -> None:
    """Run the Docker IPAM plugin on PLUGIN_DIR/PLUGIN_NAME.sock until SIGTERM or SIGINT.

    Start it before dockerd: networks created with --ipam-driver PLUGIN_NAME get their
    addresses from it. Logs go to stderr, one line per request with --debug.
    """
    path = socket_path(plugin_dir, plugin_name)
    ipam = Ipam(globals_of(ctx).store(), max_wait=MAX_WAIT)
    PluginServer(Driver(ipam), path).run()
