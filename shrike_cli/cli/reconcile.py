"""``reconcile``: leaked addresses, found by comparing this host's leases with its dockerd."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated

import typer

from ..docker_api import docker_client
from ..plugin import PLUGIN_DIR
from ..reconcile import (
    CHANGED,
    DEFAULT_GRACE,
    RELEASED,
    TOO_YOUNG,
    Leak,
    Report,
    format_duration,
    parse_duration,
    reconcile,
)
from . import output
from .app import app
from .compat import PLUGIN_NAME, PluginNameOption
from .leases import lease_row
from .output import Format, OutputOption
from .state import globals_of

LEAK_COLUMNS = [
    ("ip", "ADDRESS"),
    ("subnet", "SUBNET"),
    ("mac", "MAC"),
    ("owner", "LAST OWNER"),
    ("since", "SINCE"),
    ("age", "AGE"),
    ("status", "STATUS"),
]

#: ``--plugin-dir`` of the commands that compare this host's leases with its dockerd.
PluginDirHintOption = Annotated[
    Path,
    typer.Option(
        "--plugin-dir",
        help="Where plugins answer, to tell a wrong plugin name from a wrong dockerd.",
        file_okay=False,
    ),
]


def parse_duration_option(text: str) -> float:
    """:func:`parse_duration` for Typer's ``parser=``: a bad value is a usage error."""
    try:
        return parse_duration(text)
    except ValueError as err:
        raise typer.BadParameter(str(err)) from None


def _row(leak: Leak) -> dict[str, object]:
    age = "-" if leak.age is None else format_duration(leak.age)
    return {**lease_row(leak.lease), "age": age, "status": leak.status}


@app.command("reconcile")
def reconcile_command(
    ctx: typer.Context,
    fix: Annotated[
        bool, typer.Option("--fix", help="Release the leaked addresses older than --grace (a reservation stays).")
    ] = False,
    grace: Annotated[
        float | None,
        typer.Option(
            "--grace",
            parser=parse_duration_option,
            metavar="DURATION",
            help="Only leases taken longer ago than this are released (30s, 10m, 1h) [default: 10m].",
        ),
    ] = None,
    plugin_name: PluginNameOption = PLUGIN_NAME,
    plugin_dir: PluginDirHintOption = PLUGIN_DIR,
    fmt: OutputOption = Format.table,
) -> None:
    """List this host's container addresses that no container of its dockerd holds (leaked
    when dockerd or the plugin died between allocation and release); --fix releases them.

    dockerd is the one DOCKER_HOST names, else the local socket. An address a container
    holds in any network counts as held. --fix releases a lease only if it is older than
    --grace and was not written since it was read: a new allocation racing reconcile keeps
    its address. It releases nothing unless a network of this dockerd uses the plugin
    PLUGIN_NAME; it then says which plugin names this dockerd's networks and the live plugin
    sockets use.

    It also reports duplicates (one address on two containers, or held here but given to
    someone else by the store) and then exits 1: those need a person.
    """
    grace = DEFAULT_GRACE if grace is None else grace
    ipam = globals_of(ctx).ipam()
    with (
        output.progress(fmt, f"comparing the leases of {ipam.host} with dockerd"),
        contextlib.closing(docker_client()) as client,
    ):
        report = reconcile(ipam, client, fix=fix, grace=grace, plugin_name=plugin_name, plugin_dir=plugin_dir)
    if fmt is Format.json:
        output.emit_json(report.to_json())
    else:
        _print(report, fix, grace, plugin_name)
    if report.duplicates:
        raise typer.Exit(1)


def _print(report: Report, fix: bool, grace: float, plugin_name: str) -> None:
    output.emit_table(
        map(_row, report.leaks),
        LEAK_COLUMNS,
        empty=f"no leaked address: containers hold all {report.checked} container leases of {report.host}",
    )
    if report.hint:
        output.note(report.hint)
    if report.leaks:
        counts = [
            f"{report.count(RELEASED)} released",
            f"{report.count(TOO_YOUNG)} kept: taken less than {format_duration(grace)} ago",
            f"{report.count(CHANGED)} kept: taken again meanwhile",
        ]
        done = "; ".join(c for c in counts if not c.startswith("0 ")) if fix else "release them with --fix"
        output.note(f"{len(report.leaks)} of {report.checked} container leases of {report.host} are leaked; {done}")
    for duplicate in report.duplicates:
        output.error(f"duplicate: {duplicate.ip}, held here by {', '.join(duplicate.containers)}: {duplicate.problem}")
