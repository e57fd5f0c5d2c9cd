"""``create-network``: bridge the host onto its LAN and create the Docker network (or undo it)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from . import complete, output
from .app import app
from .compat import PLUGIN_NAME, PluginNameOption
from .output import Format, OutputOption
from .state import globals_of

if TYPE_CHECKING:
    from ..hostnet.setup import Outcome


class Mode(str, Enum):
    bridge = "bridge"
    macvlan = "macvlan"


class Manager(str, Enum):
    ifcfg = "ifcfg"
    networkd = "networkd"


def _report(fmt: Format, outcome: Outcome) -> None:
    from ..hostnet.setup import Status  # loaded already: it made the outcome

    if fmt is Format.json:
        output.emit_json(outcome.to_json())
        return
    plan, summary = outcome.plan, outcome.plan.to_json()
    if outcome.status is Status.PLANNED:
        print(f"plan for Docker network {plan.network} ({plan.mode} mode); nothing was changed:")
        for number, step in enumerate(summary["steps"], 1):
            print(f"  {number}. {step}")
        if not plan.actions:
            print("  nothing to do: it is already set up")
        for path, text in summary["files"].items():
            print(f"\n--- {path}\n{text if text is not None else '(removed)'}", end="" if text else "\n")
        return
    if plan.bridge:
        where = f"bridge {plan.bridge} with {plan.uplink.name} as its port"
    else:
        where = f"macvlan on {plan.uplink.name}"
    held, two = (f"{plan.host_ip} and {plan.host_ip6}", True) if plan.host_ip6 else (plan.host_ip, False)
    if outcome.status is Status.ALREADY:
        done = "; " + "; ".join(summary["steps"]) if plan.actions else ", nothing changed"
        print(f"Docker network {plan.network} is already set up ({where}){done}")
    elif outcome.status is Status.CREATED:
        print(f"created Docker network {plan.network}: {held} {'are' if two else 'is'} on {where}")
    else:
        routes = "their routes" if two else "its routes"
        back = f"; {held} and {routes} are on {plan.uplink.name} again" if plan.bridge else ""
        print(f"removed Docker network {plan.network}{back}")


@app.command("create-network")
def create_network(
    ctx: typer.Context,
    ip: Annotated[
        str | None,
        typer.Option(
            "--ip",
            help="This host's own address (HOST_IP), in a host range; its interface is the uplink. "
            "Required except with --undo.",
        ),
    ] = None,
    name: Annotated[
        str, typer.Option("--name", help="The Docker network's name.", autocompletion=complete.shrike_networks)
    ] = "mynet",
    bridge: Annotated[
        str, typer.Option("--bridge", help="The bridge that takes over the uplink's address (bridge mode).")
    ] = "br0",
    uplink: Annotated[
        str | None,
        typer.Option(
            "--uplink",
            help="The interface holding HOST_IP, to make sure the right one is used [default: found by the address].",
            autocompletion=complete.interfaces,
        ),
    ] = None,
    ip6: Annotated[
        str | None,
        typer.Option(
            "--ip6",
            help="This host's own IPv6 address, in an IPv6 host range, on the same interface: the network is"
            " dual-stack (bridge mode) [default: the uplink's one IPv6 address in a host range, if any].",
        ),
    ] = None,
    plugin_name: PluginNameOption = PLUGIN_NAME,
    mode: Annotated[
        Mode,
        typer.Option(
            "--mode",
            help="bridge: the host's address moves onto a bridge; "
            "macvlan: containers sit on the uplink, the host is unchanged.",
        ),
    ] = Mode.bridge,
    macvlan_shim: Annotated[
        bool,
        typer.Option(
            "--macvlan-shim",
            help="macvlan mode: add a macvlan link on the host, with routes to the container ranges, "
            "so that the host reaches its containers.",
        ),
    ] = False,
    persist_: Annotated[
        bool,
        typer.Option(
            "--persist",
            help="Also write the network manager's configuration so the bridge survives a reboot "
            "(networking is not restarted).",
        ),
    ] = False,
    network_manager: Annotated[
        Manager | None,
        typer.Option("--network-manager", help="The format --persist writes [default: detected from --root]."),
    ] = None,
    root: Annotated[
        Path, typer.Option("--root", help="Root of the filesystem --persist writes into.", file_okay=False)
    ] = Path("/"),
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Check, print the plan (and --persist files), change nothing.")
    ] = False,
    undo: Annotated[
        bool,
        typer.Option(
            "--undo",
            help="Put the host back: address and routes on the uplink, network and bridge removed, "
            "host lease released.",
        ),
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="With --undo: disconnect attached containers instead of refusing.")
    ] = False,
    fmt: OutputOption = Format.table,
) -> None:
    """Put this host's containers on its LAN: move HOST_IP and its routes from the uplink onto a
    bridge and create the Docker network that uses the bridge and shrike's IPAM plugin.

    The uplink's IPv6 addresses and routes move too; with an IPv6 LAN address (--ip6, or found
    on the uplink) the network is dual-stack.

    Everything is checked before anything changes; if a step fails, what was done is undone.
    Running it again on a host already set up changes nothing.
    """
    # Imported here: pyroute2 and the Docker SDK take a third of a second to load,
    # which no other command should pay.
    from ..hostnet.plan import Request
    from ..hostnet.setup import Persist, remove_network
    from ..hostnet.setup import create_network as create

    if force and not undo:
        output.usage_error("--force goes with --undo")
    if macvlan_shim and mode is not Mode.macvlan:
        output.usage_error("--macvlan-shim goes with --mode macvlan")
    if ip is None and not undo:
        output.usage_error("give --ip, this host's own address")
    if ip6 is not None and (undo or mode is not Mode.bridge):
        output.usage_error("--ip6 goes with bridge mode, without --undo")
    persist_to = Persist(root, network_manager.value if network_manager else None) if persist_ else None
    ipam = globals_of(ctx).ipam()
    if undo:
        outcome = remove_network(ipam, name, force=force, dry_run=dry_run, persist_to=persist_to, progress=output.note)
    else:
        assert ip is not None
        request = Request(
            host_ip=ip,
            name=name,
            bridge=bridge,
            uplink=uplink,
            plugin=plugin_name,
            mode=mode.value,
            shim=macvlan_shim,
            host_ip6=ip6,
        )
        outcome = create(ipam, request, dry_run=dry_run, persist_to=persist_to, progress=output.note)
    _report(fmt, outcome)
