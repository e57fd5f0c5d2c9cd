"""``doctor``: check what this host needs, and say what is wrong and what to run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..plugin import PLUGIN_DIR
from ..stores import store_file
from . import output
from .app import app
from .compat import PLUGIN_NAME, PluginNameOption
from .output import Column, Format, OutputOption
from .state import globals_of

# What was found and what to do are whole sentences: never cut.
COLUMNS = [
    Column("status", "STATUS"),
    Column("name", "CHECK"),
    Column("detail", "FOUND", width=None),
    Column("hint", "WHAT TO DO", width=None),
]


@app.command("doctor")
def doctor(
    ctx: typer.Context,
    plugin_name: PluginNameOption = PLUGIN_NAME,
    plugin_dir: Annotated[
        Path, typer.Option("--plugin-dir", help="Where the plugin socket is.", file_okay=False)
    ] = PLUGIN_DIR,
    network: Annotated[
        str | None,
        typer.Option(
            "--network",
            help="Check only this Docker network [default: every network whose IPAM driver is PLUGIN_NAME].",
        ),
    ] = None,
    fmt: OutputOption = Format.table,
) -> None:
    """Check this host: the store and its declarations, the plugin answering on its socket,
    Docker, the networks that use the plugin (however they were made), that the plugin
    starts before dockerd, the bridge and routes of a network create-network made, that
    the plugin probes the LANs this host is on, and this host's lease.

    Each problem is said in plain words with what to run. Exits 1 if a check fails,
    0 otherwise (warnings included). Changes nothing.
    """
    # Imported here: the checks pull in the Docker SDK and pyroute2, which other
    # commands need not load.
    from ..doctor import FAIL, WARN, Target, diagnose, failed

    options = globals_of(ctx)
    store_path = None if options.cluster_store else store_file(options.state_dir)
    target = Target(
        options.store, store_path, options.host, plugin_dir=plugin_dir, plugin_name=plugin_name, network=network
    )
    with output.progress(fmt, "checking") as progress:
        checks = diagnose(target, progress.update)
    if fmt is Format.json:
        output.emit_json({"ok": not failed(checks), "checks": [check.to_json() for check in checks]})
    else:
        output.emit_table((check.to_json() for check in checks), COLUMNS, empty="nothing was checked")
        fails, warns = (sum(check.status == status for check in checks) for status in (FAIL, WARN))
        warnings = f"{warns} warning{'s' if warns != 1 else ''}"
        if fails:
            output.note(f"{fails} of {len(checks)} checks failed{', ' + warnings if warns else ''}: see WHAT TO DO")
        elif warns:
            output.note(f"no check failed, {warnings}")
        else:
            output.note(f"all {len(checks)} checks passed")
    if failed(checks):
        raise typer.Exit(1)
