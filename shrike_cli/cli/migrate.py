"""``export``, ``import`` and ``adopt``: moving state between stores, taking a LAN over from
the original (oam-docker-ipam), and recording what this host's containers hold."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer

from ..adopt import ADOPTED, CONFLICT, HELD, Adoption, adopt
from ..docker_api import docker_client
from ..errors import InvalidInput
from ..model import Lease
from ..original import DEFAULT_PREFIX, interpret, read_tree
from ..takeover import Takeover, take_over
from . import output
from .app import app
from .compat import PLUGIN_NAME, PluginNameOption
from .output import Format, OutputOption
from .state import globals_of

DryRunOption = Annotated[bool, typer.Option("--dry-run", help="Say what would be written; write nothing.")]

TAKEOVER_COLUMNS = [("kind", "KIND"), ("what", "WHAT"), ("action", "ACTION")]
ADOPT_COLUMNS = [
    ("ip", "ADDRESS"),
    ("kind", "KIND"),
    ("holder", "HOLDER"),
    ("network", "NETWORK"),
    ("status", "STATUS"),
    ("detail", "BEFORE"),
]


# -------------------------------------------------------------------- export
@app.command("export")
def export(
    ctx: typer.Context,
    output_file: Annotated[
        Path | None,
        typer.Option(
            "--output",
            metavar="FILE",
            dir_okay=False,
            help="Write it to FILE (replaced whole, or left as it was on failure) [default: standard output].",
        ),
    ] = None,
) -> None:
    """Write the whole state (declarations, leases, reservations, cursors, free lists, pools)
    as one versioned JSON document.

    'shrike import shrike FILE' reads it into an empty store: 'shrike export | shrike
    --cluster-store URL import shrike -' moves a LAN from this host's embedded store to
    etcd. Stop 'shrike server' first: what it hands out after the export would be lost.
    """
    with output.progress(Format.table, "reading the state"):
        document = globals_of(ctx).ipam().state.export()
    text = json.dumps(document, indent=1, sort_keys=True) + "\n"
    if output_file is None:
        sys.stdout.write(text)
        return
    _write_whole(output_file, text)
    output.note(f"wrote the state, {len(document['records']['leases'])} leases and the rest, to {output_file}")


def _write_whole(path: Path, text: str) -> None:
    """Write ``path`` whole or not at all: a temporary file beside it (private, as the
    result is), renamed over it."""
    try:
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    except OSError as err:
        raise InvalidInput(f"cannot write {path}: {err.strerror or err}") from None
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.replace(temporary, path)
    except OSError as err:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise InvalidInput(f"cannot write {path}: {err.strerror or err}") from None


# -------------------------------------------------------------------- import
import_app = typer.Typer(
    name="import",
    help="Read state into this store: an export of shrike's, or the original's (oam-docker-ipam) from its etcd.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(import_app, name="import")


@import_app.command("shrike")
def import_shrike(
    ctx: typer.Context,
    source: Annotated[str, typer.Argument(metavar="FILE", help="What 'shrike export' wrote; - for standard input.")],
    dry_run: DryRunOption = False,
    fmt: OutputOption = Format.table,
) -> None:
    """Read an export of shrike's into this store, which must be empty (or hold part of
    this very export: an import cut short, run again).

    'shrike export | shrike --cluster-store URL import shrike -' moves a LAN from this
    host's embedded store to etcd.
    """
    document = _read_json(source)
    ipam = globals_of(ctx).ipam()
    with output.progress(fmt, f"writing into {ipam.store.location}"):
        counts = ipam.state.import_(document, dry_run=dry_run)
    if fmt is Format.json:
        output.emit_json({"dry_run": dry_run, "store": ipam.store.location, "records": counts})
        return
    total = sum(counts.values())
    what = ", ".join(f"{n} {kind}" for kind, n in counts.items() if n) or "nothing new"
    done = "would write" if dry_run else "wrote"
    print(f"{done} {total} records into {ipam.store.location}: {what}")


def _read_json(source: str) -> Any:
    where = "standard input" if source == "-" else source
    try:
        if source == "-":
            return json.load(sys.stdin)
        with open(source) as file:
            return json.load(file)
    except OSError as err:
        raise InvalidInput(f"cannot read {where}: {err.strerror or err}") from None
    except ValueError as err:
        raise InvalidInput(f"{where} is not JSON (an export of 'shrike export'?): {err}") from None


@import_app.command("oam-docker-ipam")
def import_original(
    ctx: typer.Context,
    from_: Annotated[
        str,
        typer.Option(
            "--from",
            metavar="URLS",
            help="The original's etcd: comma-separated http(s):// endpoints of its v2 API (etcd 3.x: --enable-v2).",
        ),
    ],
    prefix: Annotated[str, typer.Option("--prefix", help="Where the original kept its keys.")] = DEFAULT_PREFIX,
    dry_run: DryRunOption = False,
    fmt: OutputOption = Format.table,
) -> None:
    """Take a LAN over from oam-docker-ipam, the original: declare its LAN and ranges, and
    record every address it handed out as held; say what was odd in its state.

    Declarations that overlap shrike's differently are refused, nothing written; an
    address shrike has a lease for keeps it, so it is safe to run again. The original's
    networks keep working once 'shrike server' answers under its plugin name
    (talkingdata). Then run 'shrike adopt' on each host: it records which container and
    host holds each address.
    """
    ipam = globals_of(ctx).ipam()
    with output.progress(fmt, f"reading {prefix} from {from_}"):
        original = interpret(read_tree(from_, prefix))
        takeover = take_over(ipam, original, dry_run=dry_run)
    if fmt is Format.json:
        output.emit_json({"source": f"{from_} {prefix}", **takeover.to_json()})
        return
    output.emit_table(_takeover_rows(takeover), TAKEOVER_COLUMNS, empty="nothing to import")
    for finding in original.findings:
        output.note(f"note: {finding.key}: {finding.message}")
    declared = sum(d.created for d in takeover.declarations)
    counts = f"{declared} declarations and {len(takeover.leases)} leases"
    if dry_run:
        output.note(f"dry run: would write {counts}; nothing was written")
    else:
        output.note(f"wrote {counts} into {ipam.store.location}; next, on each host: shrike adopt")


def _takeover_rows(takeover: Takeover) -> list[dict[str, str]]:
    declared, held = ("to declare", "to record as held") if takeover.dry_run else ("declared", "recorded as held")

    def lease(lease: Lease, action: str) -> dict[str, str]:
        return {"kind": "lease", "what": f"{lease.ip} {lease.kind}", "action": action}

    rows = [
        {"kind": d.kind, "what": d.what, "action": declared if d.created else "declared already"}
        for d in takeover.declarations
    ]
    rows += [lease(new, held) for new in takeover.leases]
    rows += [lease(present, f"left as it is: {present.describe()}") for present in takeover.present]
    return rows


# --------------------------------------------------------------------- adopt
@app.command("adopt")
def adopt_command(
    ctx: typer.Context,
    plugin_name: PluginNameOption = PLUGIN_NAME,
    dry_run: DryRunOption = False,
    fmt: OutputOption = Format.table,
) -> None:
    """Record as held, with their owners, the addresses this host's containers hold on the
    networks using PLUGIN_NAME, and this host's own address (those networks' gateway), where
    the store does not; an address the store gives to another container or host is
    reported, never overwritten.

    Run it on each host after 'shrike import oam-docker-ipam', or to rebuild a lost store
    from what dockerd knows. dockerd is the one DOCKER_HOST names, else the local socket.
    """
    ipam = globals_of(ctx).ipam()
    with (
        output.progress(fmt, f"comparing what dockerd holds with the leases of {ipam.host}"),
        contextlib.closing(docker_client()) as client,
    ):
        report = adopt(ipam, client, plugin_name, dry_run=dry_run)
    if fmt is Format.json:
        output.emit_json(report.to_json())
        return
    rows = [_adoption_row(a, dry_run) for a in report.adoptions]
    networks = ", ".join(report.networks)
    output.emit_table(rows, ADOPT_COLUMNS, empty=f"no container of this dockerd holds an address on {networks}")
    counts = [
        f"{report.count(ADOPTED)} {'to adopt' if dry_run else 'adopted'}",
        f"{report.count(HELD)} held already",
        f"{report.count(CONFLICT)} in conflict, left as they are",
    ]
    output.note(f"{ipam.host}: " + "; ".join(counts) + ("; nothing was written" if dry_run else ""))


def _adoption_row(adoption: Adoption, dry_run: bool) -> dict[str, str]:
    row = adoption.to_json()
    if dry_run and adoption.status == ADOPTED:
        row["status"] = "to adopt"
    return row
