"""``check``: the rules the state keeps, and its agreement with this host's dockerd."""

from __future__ import annotations

from typing import Annotated

import typer

from ..check import CHANGED, DEFAULT_GRACE, FOUND, REPAIRED, Report, check
from ..plugin import PLUGIN_DIR
from ..reconcile import format_duration
from . import output
from .app import app
from .compat import PLUGIN_NAME, PluginNameOption
from .output import Column, Format, OutputOption
from .reconcile import PluginDirHintOption, parse_duration_option
from .state import globals_of

COLUMNS = [
    Column("where", "WHERE"),
    Column("problem", "PROBLEM"),
    Column("ip", "ADDRESS"),
    Column("detail", "FOUND", width=None),
    Column("repair", "REPAIR", width=None),
    Column("status", "STATUS"),
]


@app.command("check")
def check_command(
    ctx: typer.Context,
    repair: Annotated[
        bool,
        typer.Option(
            "--repair",
            help="Repair what is safe to (a missing or dangling index, free-list or parked entry), each only if"
            " its records did not change since they were read, and list what was repaired.",
        ),
    ] = False,
    grace: Annotated[
        float | None,
        typer.Option(
            "--grace",
            parser=parse_duration_option,
            metavar="DURATION",
            help="A container lease with no endpoint counts as leaked once taken longer ago than this (30s, 10m)"
            f" [default: {format_duration(DEFAULT_GRACE)}].",
        ),
    ] = None,
    plugin_name: PluginNameOption = PLUGIN_NAME,
    plugin_dir: PluginDirHintOption = PLUGIN_DIR,
    fmt: OutputOption = Format.table,
) -> None:
    """Check the state: in the store, every record is one shrike writes, every lease lies in
    the declared ranges, and the free lists, parked addresses, reservation and MAC indexes
    and cursors agree with the leases; against this host's dockerd (DOCKER_HOST, else the
    local socket; skipped when it does not answer), every container's address in a
    container range is held by this host for it, and every container lease of this host
    has a container.

    Changes nothing unless --repair. Exits 1 if a problem is left (with --repair: one it
    could not repair; 'shrike reconcile --fix' frees leaked addresses).
    """
    ipam = globals_of(ctx).ipam()
    with output.progress(fmt, f"checking the store and the containers of {ipam.host}"):
        report = check(
            ipam,
            repair=repair,
            plugin_name=plugin_name,
            plugin_dir=plugin_dir,
            grace=DEFAULT_GRACE if grace is None else grace,
        )
    if fmt is Format.json:
        output.emit_json(report.to_json())
    else:
        _print(report, repair)
    if not report.ok:
        raise typer.Exit(1)


def _print(report: Report, repair: bool) -> None:
    rows = [{**problem.to_json(), "repair": problem.finding.repair} for problem in report.problems]
    output.emit_table(rows, COLUMNS, empty="no problem found")
    store = [p for p in report.problems if p.where == "store"]
    said = f"the store {report.store}: {report.records} records"
    if store:
        counts = {status: sum(p.status == status for p in store) for status in (FOUND, REPAIRED, CHANGED)}
        said += f", {len(store)} problem{'s' if len(store) != 1 else ''}"
        if repair:
            said += f" ({counts[REPAIRED]} repaired"
            said += f", {counts[CHANGED]} changed since read: check again)" if counts[CHANGED] else ")"
        elif repairable := sum(bool(p.finding.repair) for p in store):
            said += f"; 'shrike check --repair' repairs {repairable}"
    else:
        said += ", all agree"
    output.note(said)
    docker = report.docker
    if docker.checked:
        wrong = sum(p.where == "docker" for p in report.problems)
        output.note(
            f"dockerd: {docker.endpoints} container addresses, {docker.leases} held container leases of"
            f" {report.host}" + (f", {wrong} problem{'s' if wrong != 1 else ''}" if wrong else ", all agree")
        )
    else:
        output.note(f"dockerd not compared: {docker.reason}")
