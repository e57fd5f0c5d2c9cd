"""``scan``: what answers on the LAN, against what the store says."""

from __future__ import annotations

from typing import Annotated

import typer

from ..lanprobe.scan import COUNT, RATE, WAIT, scan
from ..model import Subnet
from . import complete, output
from .app import app
from .output import Column, Format, OutputOption
from .state import globals_of

COLUMNS = [
    Column("ip", "ADDRESS"),
    Column("finding", "FINDING"),
    Column("macs", "ANSWERED FROM"),
    Column("detail", "DETAIL", width=None),
]


@app.command("scan")
def scan_command(
    ctx: typer.Context,
    subnet: Annotated[
        str | None,
        typer.Option(
            "--subnet",
            help="The LAN to sweep [default: every LAN with container ranges].",
            autocompletion=complete.lan_subnets,
        ),
    ] = None,
    mark: Annotated[
        bool,
        typer.Option("--mark", help="Record the squatters on free addresses as conflicts: never handed out."),
    ] = False,
    rate: Annotated[
        float, typer.Option("--rate", min=1.0, max=500.0, metavar="N", help="Probes sent per second, at most.")
    ] = RATE,
    count: Annotated[int, typer.Option("--count", min=1, max=5, metavar="N", help="Probes per address.")] = COUNT,
    wait: Annotated[
        float,
        typer.Option("--wait", min=0.1, max=10.0, metavar="SECONDS", help="How long answers are awaited at the end."),
    ] = WAIT,
    fmt: OutputOption = Format.table,
) -> None:
    """Sweep the container and host ranges of a LAN with ARP probes (as root, from a host
    on that LAN), and report what the store does not know.

    Squatters answer for container addresses shrike holds for nobody (or for a
    container that is not running); duplicates are held addresses answered by another
    MAC than their lease's, or by two. Hosts answering in host ranges, conflicts found
    before and held addresses nobody answers for (leaked?) are reported too. Exits 1
    when a squatter or a duplicate is found, for cron and monitoring.
    """
    lan = Subnet.parse(subnet, "--subnet") if subnet else None
    ipam = globals_of(ctx).ipam()
    with output.progress(fmt, "sweeping the LAN") as progress:
        sweeps = scan(ipam, lan, rate=rate, count=count, wait=wait, mark=mark, progress=progress.update)
    findings = [finding for sweep in sweeps for finding in sweep.findings]
    if fmt is Format.json:
        output.emit_json({"sweeps": [sweep.to_json() for sweep in sweeps]})
    else:
        output.emit_table((f.to_json() for f in findings), COLUMNS, empty="nothing to report")
        for sweep in sweeps:
            output.note(
                f"{sweep.lan}: {sweep.answered} of {sweep.probed} addresses answered on {sweep.interface}"
                f"; {len(sweep.problems)} problems" + (f", {len(sweep.marked)} marked as conflicts" if mark else "")
            )
    if any(sweep.problems for sweep in sweeps):
        raise typer.Exit(1)
