"""``leases``, ``release`` and ``reserve``: who holds which address, and giving addresses back."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

import typer

from ..lanprobe.prober import Prober
from ..model import KIND_AUX, KIND_CONFLICT, KIND_CONTAINER, KIND_GATEWAY, KIND_HOST, Lease
from . import complete, output
from .app import app
from .output import Format, OutputOption
from .state import globals_of

LEASE_COLUMNS = [
    ("ip", "ADDRESS"),
    ("subnet", "SUBNET"),
    ("kind", "KIND"),
    ("state", "STATE"),
    ("mac", "MAC"),
    ("owner", "OWNER"),
    ("host", "HOST"),
    ("since", "SINCE"),
]


class Family(str, Enum):
    """``--family``: which address family a reservation is in."""

    v4 = "4"
    v6 = "6"
    both = "both"

    @property
    def versions(self) -> tuple[int, ...]:
        return (4, 6) if self is Family.both else (int(self.value),)


FamilyOption = Annotated[
    Family | None,
    typer.Option(
        "--family",
        help="The address family: 4, 6, or both (a name holds one address of each family).",
        case_sensitive=False,
    ),
]


class Kind(str, Enum):
    """``--kind``: a choice, so that a misspelt kind is a usage error, not an empty list."""

    container = KIND_CONTAINER
    host = KIND_HOST
    gateway = KIND_GATEWAY
    aux = KIND_AUX
    conflict = KIND_CONFLICT


def lease_row(lease: Lease) -> dict[str, object]:
    """A lease as a row of :data:`LEASE_COLUMNS` (also the start of ``reconcile``'s rows)."""
    owner = lease.holder
    if lease.name and owner != lease.name:
        owner = f"{owner} ({lease.name})" if owner else lease.name
    host = lease.host if not lease.users else ",".join(lease.users)
    return {**lease.to_json(), "owner": owner, "host": host}


def _emit_leases(fmt: Format, leases: list[Lease], empty: str) -> None:
    output.emit(fmt, [lease.to_json() for lease in leases], map(lease_row, leases), LEASE_COLUMNS, empty=empty)


@app.command("leases")
def leases(
    ctx: typer.Context,
    all_: Annotated[
        bool, typer.Option("--all", "-a", help="Include released addresses (kept for reuse ordering).")
    ] = False,
    kind: Annotated[Kind | None, typer.Option("--kind", help="Only addresses of this kind.")] = None,
    fmt: OutputOption = Format.table,
) -> None:
    """Show every held address: subnet, kind, state, MAC and owner where known, the host that took it, and when."""
    with output.progress(fmt, "reading the leases"):
        found = globals_of(ctx).ipam().leases(include_released=all_)
    if kind:
        found = [lease for lease in found if lease.kind == kind.value]
    _emit_leases(fmt, found, "no address is held")


@app.command("release")
def release(
    ctx: typer.Context,
    ip: Annotated[
        str | None,
        typer.Option(
            "--ip",
            help="A container address to give back (ends its reservation, if any).",
            autocompletion=complete.container_addresses,
        ),
    ] = None,
    host: Annotated[
        str | None,
        typer.Option("--host", help="A host address to give back.", autocompletion=complete.host_addresses),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(
            "--name",
            help="End the reservations of this name (IPv4 and IPv6; --family for one).",
            autocompletion=complete.reservation_names,
        ),
    ] = None,
    family: FamilyOption = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="With --ip: release it even though a running container holds it (two containers may then"
            " share the address).",
        ),
    ] = False,
    fmt: OutputOption = Format.table,
) -> None:
    """Give an address back: a container's (--ip), a host's (--host), or a reservation (--name).

    --ip refuses an address a running container holds, as far as shrike knows: the
    container its lease names, or (for this host's addresses) what dockerd says.
    """
    given = [option for option, value in (("--ip", ip), ("--host", host), ("--name", name)) if value]
    if len(given) != 1:
        output.usage_error("give exactly one of --ip, --host or --name")
    if force and not ip:
        output.usage_error("--force goes with --ip")
    if family and not name:
        output.usage_error("--family goes with --name")
    ipam = globals_of(ctx).ipam()
    if ip:
        from ..owners import live_holders  # the Docker SDK is slow to load: only here

        released = [ipam.release_container(ip, force=force, live=live_holders())]
    elif host:
        released = [ipam.release_host(host)]
    else:
        assert name is not None
        versions = family.versions if family else ipam.reserved_families(name) or (4,)
        released = [ipam.release_name(name, version) for version in versions]
    if fmt is Format.json:
        # One lease as an object, as always; a name's two reservations as a list.
        output.emit_json(released[0].to_json() if len(released) == 1 else [lease.to_json() for lease in released])
        return
    for lease in released:
        if lease.state == "held":
            print(f"reservation {name} ended; {lease.ip} stays with its running container until it stops")
        else:
            print(f"released {lease.ip}")


@app.command("release-ip", hidden=True)
def release_ip(
    ctx: typer.Context,
    ip: Annotated[str, typer.Option("--ip", help="A container address.", autocompletion=complete.container_addresses)],
    fmt: OutputOption = Format.table,
) -> None:
    """Old name of 'release --ip'."""
    release(ctx, ip=ip, host=None, name=None, family=None, force=False, fmt=fmt)


@app.command("release-host", hidden=True)
def release_host(
    ctx: typer.Context,
    ip: Annotated[str, typer.Option("--ip", help="A host address.", autocompletion=complete.host_addresses)],
    fmt: OutputOption = Format.table,
) -> None:
    """Old name of 'release --host'."""
    release(ctx, ip=None, host=ip, name=None, family=None, force=False, fmt=fmt)


@app.command("reserve")
def reserve(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Who the address is for, e.g. the container's name.")],
    ip: Annotated[str | None, typer.Option("--ip", help="Reserve this address instead of the next free one.")] = None,
    subnet: Annotated[
        str | None,
        typer.Option(
            "--subnet", help="The LAN subnet, when several are declared.", autocompletion=complete.lan_subnets
        ),
    ] = None,
    family: FamilyOption = None,
    fmt: OutputOption = Format.table,
) -> None:
    """Reserve a container address for NAME and print it; the same address again if NAME has one.

    Use it with docker run: --ip "$(shrike reserve web1)" --ip6 "$(shrike reserve web1 --family 6)".
    The address is never given to another container, also while web1 is stopped. NAME holds
    one address of each family: IPv4 unless --family (or --ip, --subnet) says otherwise;
    --family both prints both, the IPv4 one first. A new reservation's IPv4 address is
    probed on the LAN first (as root, on a host with an interface there): one that
    something answers for is not reserved.
    """
    if family is Family.both and (ip or subnet):
        output.usage_error("--family both goes without --ip and --subnet")
    ipam = globals_of(ctx).ipam()
    ipam.probe_with(Prober(lambda: ipam.config(fresh=False)))
    versions: tuple[int | None, ...] = family.versions if family else (None,)
    leases = [ipam.reserve(name, ip=ip, subnet=subnet, version=version) for version in versions]
    if fmt is Format.json:
        output.emit_json(leases[0].to_json() if len(leases) == 1 else [lease.to_json() for lease in leases])
    else:
        for lease in leases:
            print(lease.ip)
