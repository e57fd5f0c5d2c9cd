"""``host-range`` and ``ip-range``: declare the LAN and the container addresses, or list them."""

from __future__ import annotations

from typing import Annotated

import typer

from ..ranges import Declared, usage
from . import output
from .app import app
from .output import Format, OutputOption
from .state import globals_of

START_HELP = "First address with the subnet's prefix length, e.g. 172.25.60.1/22."
END_HELP = "Last address, with the same prefix length."

LIST_COLUMNS = [
    ("start", "START"),
    ("end", "END"),
    ("subnet", "SUBNET"),
    ("gateway", "GATEWAY"),
    ("size", "SIZE"),
    ("held", "HELD"),
    ("reserved", "RESERVED"),
    ("free", "FREE"),
]


def _report(fmt: Format, declared: Declared) -> None:
    for remark in declared.notes:
        output.note(f"note: {remark}")
    if fmt is Format.json:
        output.emit_json(declared.to_json())
        return
    r = declared.range
    what = "declared" if declared.created else "already declared, nothing changed:"
    gateway = f", gateway {declared.gateway}" if declared.gateway else ""
    print(f"{what} {declared.kind} range {r} ({r.size} addresses) in {declared.subnet}{gateway}")


def _list(ctx: typer.Context, fmt: Format, kind: str) -> None:
    ipam = globals_of(ctx).ipam()
    with output.progress(fmt, f"counting the addresses of the {kind} ranges"):
        rows = [u.to_json() for u in usage(ipam.config(), ipam.leases()) if u.kind == kind]
    output.emit(fmt, rows, rows, LIST_COLUMNS, empty=f"no {kind} range declared")


def _both_or_neither(ip_start: str | None, ip_end: str | None) -> bool:
    if (ip_start is None) != (ip_end is None):
        output.usage_error("give both --ip-start and --ip-end (or neither, to list)")
    return ip_start is not None


@app.command("host-range")
def host_range(
    ctx: typer.Context,
    ip_start: Annotated[str | None, typer.Option("--ip-start", help=START_HELP)] = None,
    ip_end: Annotated[str | None, typer.Option("--ip-end", help=END_HELP)] = None,
    gateway: Annotated[
        str | None, typer.Option("--gateway", help="The LAN's default gateway (router); needed for a new subnet.")
    ] = None,
    fmt: OutputOption = Format.table,
) -> None:
    """Declare the LAN subnet, its gateway and the addresses kept for hosts; without options, list them.

    The subnet comes from the prefix length: --ip-start=172.25.60.1/22 declares
    172.25.60.0/22. Container addresses are never taken from a host range.
    """
    if not _both_or_neither(ip_start, ip_end):
        if gateway is not None:
            output.usage_error("--gateway goes with --ip-start and --ip-end")
        _list(ctx, fmt, "host")
        return
    assert ip_start is not None and ip_end is not None
    _report(fmt, globals_of(ctx).ipam().declare_host_range(ip_start, ip_end, gateway))


@app.command("ip-range")
def ip_range(
    ctx: typer.Context,
    ip_start: Annotated[str | None, typer.Option("--ip-start", help=START_HELP)] = None,
    ip_end: Annotated[str | None, typer.Option("--ip-end", help=END_HELP)] = None,
    fmt: OutputOption = Format.table,
) -> None:
    """Declare a range of addresses handed to containers; without options, list them.

    A range serves every declared LAN subnet that contains it: a range typed /24
    inside a /22 LAN serves the /22. Ranges may not overlap each other or host ranges.
    """
    if not _both_or_neither(ip_start, ip_end):
        _list(ctx, fmt, "container")
        return
    assert ip_start is not None and ip_end is not None
    _report(fmt, globals_of(ctx).ipam().declare_ip_range(ip_start, ip_end))
