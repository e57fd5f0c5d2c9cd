"""What ``create-network`` will do, decided from what was read; no side effects.

The host (:class:`.hostview.HostView`), the store's declarations and the Docker
network of that name are read first (``Netlink.read``, ``Ipam.config``,
``docker_net.find``). From them :func:`build_setup` and :func:`build_teardown`
check every precondition and return a :class:`Plan`: an ordered list of
:data:`.actions.Action` values, each printable (``--dry-run``) and each executed,
with its undo, by :mod:`.setup`. Everything here is a plain value, so tests build
hosts and plans without touching a network namespace.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

import netaddr

from ..errors import Conflict, InvalidInput, NotFound
from ..model import IP, KIND_HOST, Config, Lease, Subnet, int_to_ip, parse_address
from .actions import (
    Action,
    AddAddresses,
    AddShim,
    ClaimLease,
    CreateNetwork,
    DeleteAddresses,
    MoveRoute,
    ReleaseLease,
    RemoveNetwork,
    RemoveShim,
    SetMaster,
    TakeIdentity,
    WriteFiles,
)
from .docker_net import LABEL_PREFIX, NetworkView, bridge_spec, check_name, macvlan_spec
from .hostview import Address, HostView, Layout, Link, Route, Shim

MODE_BRIDGE = "bridge"
MODE_MACVLAN = "macvlan"
MODES = (MODE_BRIDGE, MODE_MACVLAN)

#: Linux's limit for interface names.
IFNAMSIZ_MAX = 15
#: What Docker puts on the bridge of an IPv6 network, besides its gateway: on a bridge
#: that is the host's place on the LAN, it would claim an address LAN routers often have.
DOCKER_LINK_LOCAL = Address("fe80::1", 64)


# ----------------------------------------------------------------- the LAN as declared
@dataclass(frozen=True)
class LanView:
    """What the store says about HOST_IP's LAN."""

    host_ip: str
    subnet: Subnet
    router: str
    #: the container ranges of that subnet as CIDRs (the macvlan shim routes them)
    container_cidrs: tuple[str, ...]


def lan_of(config: Config, host_ip: str, what: str = "--ip") -> LanView:
    """HOST_IP's LAN from the declarations; an error unless a host range holds it."""
    address = parse_address(host_ip, what, prefix="forbidden")[0]
    host_ip = IP(address)  # IPv6 as the host shows it: canonical
    if config.host_range_of(address) is None:
        raise InvalidInput(f"{what} {host_ip} is not in any host range: declare the LAN with 'shrike host-range' first")
    subnet = config.lan_subnet_of(address)
    router = config.gateway_of(subnet) if subnet else None
    if subnet is None or router is None:
        raise InvalidInput(
            f"no gateway is declared for the LAN of {host_ip}: declare it with 'shrike host-range --gateway'"
        )
    cidrs = tuple(
        str(cidr)
        for r in config.container_ranges_in(subnet)
        for cidr in netaddr.IPRange(int_to_ip(r.start), int_to_ip(r.end)).cidrs()
    )
    return LanView(host_ip=host_ip, subnet=subnet, router=router, container_cidrs=cidrs)


def host_ip6_of(config: Config, host: HostView, host_ip: str) -> str | None:
    """This host's IPv6 LAN address, when ``--ip6`` does not name it: the one global IPv6
    address on HOST_IP's link that lies in a host range; None when there is none (the
    network is then IPv4 only)."""
    holder = host.holder_of(host_ip)
    if holder is None:
        return None  # build_setup says what is wrong
    found = [
        a.ip
        for a in host.addresses_of(holder.name)
        if a.version == 6 and not a.is_link_local and config.host_range_of(int(IP(a.ip)))
    ]
    if len(found) > 1:
        raise InvalidInput(
            f"{holder.name} holds several IPv6 addresses in host ranges ({', '.join(found)}): give --ip6"
        )
    return found[0] if found else None


# ------------------------------------------------------------------------- plans
@dataclass(frozen=True)
class Request:
    """The options of ``create-network``."""

    host_ip: str
    name: str = "mynet"
    bridge: str = "br0"
    uplink: str | None = None
    plugin: str = "shrike"
    mode: str = MODE_BRIDGE
    shim: bool = False
    #: this host's IPv6 LAN address: the network is dual-stack (bridge mode only)
    host_ip6: str | None = None

    @property
    def shim_name(self) -> str:
        return f"shim-{self.name}"[:IFNAMSIZ_MAX]


@dataclass(frozen=True)
class Plan(Layout):
    """The checked outcome: ``actions`` to run in order (none when ``already`` set up),
    and the layout they lead to (or, for an undo, the one they take apart): the
    addresses and routes that belong on the bridge. ``--persist`` renders that layout,
    also on a rerun.
    """

    mode: str
    host_ip: str
    actions: tuple[Action, ...]
    already: bool = False
    host_ip6: str | None = None

    def with_actions(self, *more: Action) -> Plan:
        return replace(self, actions=(*self.actions, *more))

    def to_json(self) -> dict[str, Any]:
        return {
            "network": self.network,
            "mode": self.mode,
            "host_ip": self.host_ip,
            **({"host_ip6": self.host_ip6} if self.host_ip6 else {}),
            "uplink": self.uplink.name,
            "bridge": self.bridge,
            "already_set_up": self.already,
            "steps": [str(a) for a in self.actions],
            "files": {path: text for a in self.actions if isinstance(a, WriteFiles) for path, text in a.files},
        }


def move_order(routes: Iterable[Route], addresses: Iterable[Address]) -> tuple[Route, ...]:
    """The order to move routes in: those whose gateway is on a moved address's subnet
    (or that have none) before those through another route's gateway, and among them
    the default route first, so it spends the least time on the old link."""
    subnets = [a.network for a in addresses]

    def key(route: Route) -> tuple[int, int]:
        on_link = route.gateway is None or any(netaddr.IPAddress(route.gateway) in s for s in subnets)
        return (0 if on_link else 1, 0 if route.is_default else 1)

    return tuple(sorted(routes, key=key))


def labels_of(request: Request, uplink: str) -> dict[str, str]:
    """What create-network records on the Docker network: ``--undo`` and reruns read it."""
    labels = {"mode": request.mode, "host-ip": request.host_ip, "uplink": uplink}
    if request.host_ip6:
        labels["host-ip6"] = request.host_ip6
    if request.mode == MODE_BRIDGE:
        labels["bridge"] = request.bridge
    elif request.shim:
        labels["shim"] = request.shim_name
    return {LABEL_PREFIX + k: v for k, v in labels.items()}


def _check_lease(lease: Lease | None, me: str, host_ip: str | None) -> bool:
    """Whether HOST_IP is already this host's lease; an error if someone else's."""
    if lease is None:
        return False
    if lease.is_host_of(me):
        return True
    holder = f"host {lease.host}" if lease.kind == KIND_HOST else f"a {lease.kind} address"
    raise Conflict(f"{host_ip} is already recorded as {holder}; give this host's own address")


def _find_uplink(request: Request, host: HostView, lan: LanView, lan6: LanView | None) -> Link:
    holder = host.holder_of(request.host_ip)
    if holder is None:
        named = f" (--uplink {request.uplink} does not hold it either)" if request.uplink else ""
        raise NotFound(f"no interface of this host holds {request.host_ip}{named}: --ip must be the host's own address")
    if request.uplink and holder.name != request.uplink:
        raise InvalidInput(f"{request.host_ip} is on {holder.name}, not on --uplink {request.uplink}")
    if holder.kind == "bridge" and request.mode == MODE_BRIDGE:
        raise InvalidInput(
            f"{request.host_ip} is on bridge {holder.name}: this host already bridges its uplink "
            f"(create-network only moves an address off a plain interface)"
        )
    if holder.master:
        raise InvalidInput(f"{holder.name} is already a port of {holder.master}")
    if not holder.up:
        raise InvalidInput(f"the uplink {holder.name} is down")
    for view in (lan, lan6):
        if view is None:
            continue
        address = next((a for a in host.addresses_of(holder.name) if a.ip == view.host_ip), None)
        if address is None:
            raise NotFound(f"{holder.name}, which holds {request.host_ip}, does not hold --ip6 {view.host_ip}")
        if address.prefixlen != view.subnet.prefixlen:
            raise InvalidInput(
                f"{address} on {holder.name} does not match the declared LAN {view.subnet}: "
                "fix the host-range declaration or the host's address first"
            )
    return holder


def check_interface_name(name: str, what: str) -> None:
    """A name Linux takes for a link (1 to 15 characters; no '/', ':' or white space),
    and no control characters, since it goes into files and commands."""
    if not (
        0 < len(name) <= IFNAMSIZ_MAX
        and name not in (".", "..")
        and name.isprintable()
        and not any(c.isspace() or c in "/:" for c in name)
    ):
        raise InvalidInput(
            f"{what} '{name}' is not an interface name: 1 to {IFNAMSIZ_MAX} characters, "
            "no '/', ':', spaces or control characters"
        )


def _ensure_free_name(host: HostView, name: str, what: str) -> None:
    existing = host.link(name)
    if existing is not None:
        kind = f"a {existing.kind} link" if existing.kind else "a link"
        raise Conflict(f"{what} {name} is taken: the host already has {kind} of that name")


def _leases(request: Request, held: bool, held6: bool) -> tuple[Action, ...]:
    """Recording this host's addresses as its host leases, those not recorded yet."""
    return tuple(ClaimLease(ip) for ip, done in ((request.host_ip, held), (request.host_ip6, held6)) if ip and not done)


def _setup_actions(
    request: Request,
    lan: LanView,
    lan6: LanView | None,
    uplink: Link,
    host: HostView,
    routes: tuple[Route, ...],
    leases: tuple[Action, ...],
) -> tuple[Action, ...]:
    labels = labels_of(request, uplink.name)
    if request.mode == MODE_MACVLAN:
        spec = macvlan_spec(request.name, uplink.name, request.plugin, lan.subnet, lan.router, labels)
        shim = Shim(request.shim_name, uplink.name, Address(request.host_ip, 32), lan.container_cidrs)
        return (*leases, CreateNetwork(spec), *((AddShim(shim),) if request.shim else ()))
    ipv6 = (lan6.subnet, lan6.host_ip, lan6.router) if lan6 else None
    spec = bridge_spec(
        request.name, request.bridge, uplink.mtu, request.plugin, lan.subnet, request.host_ip, lan.router, labels, ipv6
    )
    # The uplink keeps its link-local addresses (every IPv6 link has its own); the
    # bridge gets copies. Every other address moves.
    addresses = tuple(a for a in host.addresses_of(uplink.name) if not a.is_link_local)
    link_local = tuple(a for a in host.addresses_of(uplink.name) if a.is_link_local)
    return (
        *leases,
        CreateNetwork(spec),
        *((DeleteAddresses(request.bridge, (DOCKER_LINK_LOCAL,)),) if lan6 else ()),
        # The uplink's MAC, so that the LAN sees no new MAC for this host's address
        # (and its link-local address, and router advertisements taken as before).
        TakeIdentity(request.bridge, uplink.mac, uplink.name, link_local, uplink.name in host.accepts_ra),
        # Docker has put HOST_IP on the bridge (its gateway); other addresses follow.
        AddAddresses(request.bridge, addresses),
        SetMaster(uplink.name, request.bridge),
        *(MoveRoute(route, uplink.name, request.bridge) for route in routes),
        # Last: deleting an address also deletes the routes through it, moved by now.
        DeleteAddresses(uplink.name, tuple(reversed(addresses))),
    )


def _already_set_up(request: Request, host: HostView, network: NetworkView, leases: tuple[Action, ...]) -> Plan:
    """The plan for a rerun: nothing to do if the host is as the network's labels say."""
    labels = network.labels
    if LABEL_PREFIX + "mode" not in labels:
        raise Conflict(
            f"a Docker network named {request.name} already exists (driver {network.driver}) and was not made by "
            "create-network: choose another --name"
        )
    uplink_name = labels.get(LABEL_PREFIX + "uplink", "")
    wanted = labels_of(request, request.uplink or uplink_name)
    differs = sorted(
        k.removeprefix(LABEL_PREFIX) for k in wanted.keys() | labels.keys() if wanted.get(k) != labels.get(k)
    )
    if network.ipam_driver != request.plugin:
        differs.append("plugin-name")
    if differs:
        raise Conflict(
            f"Docker network {request.name} exists with other settings ({', '.join(differs)}): "
            f"remove it first with 'shrike create-network --undo --name {request.name}'"
        )
    uplink = host.link(uplink_name)
    problem = _setup_problem(request, host, uplink)
    if problem:
        raise Conflict(
            f"Docker network {request.name} exists but {problem}: "
            f"run 'shrike create-network --undo --name {request.name}', then create it again"
        )
    assert uplink is not None
    on_bridge = request.mode == MODE_BRIDGE
    where = request.bridge if on_bridge else uplink.name
    return Plan(
        network=request.name,
        mode=request.mode,
        host_ip=request.host_ip,
        uplink=uplink,
        bridge=request.bridge if on_bridge else None,
        addresses=host.addresses_of(where),
        routes=host.routes_of(where),
        actions=leases,
        already=True,
        host_ip6=request.host_ip6,
        accepts_ra=where in host.accepts_ra,
    )


def _setup_problem(request: Request, host: HostView, uplink: Link | None) -> str | None:
    """What differs from a finished setup, or None."""
    if uplink is None:
        return "its uplink is gone"
    holder = host.holder_of(request.host_ip)
    if request.mode == MODE_MACVLAN:
        if holder is None or holder.name != uplink.name:
            return f"{request.host_ip} is not on {uplink.name}"
        if request.shim and host.link(request.shim_name) is None:
            return f"the shim {request.shim_name} is missing"
        return None
    if uplink.master != request.bridge:
        return f"{uplink.name} is not a port of {request.bridge}"
    for ip in filter(None, (request.host_ip, request.host_ip6)):
        holder = host.holder_of(ip)
        if holder is None or holder.name != request.bridge:
            return f"{ip} is not on {request.bridge}"
    return None


def build_setup(
    request: Request,
    lan: LanView,
    host: HostView,
    network: NetworkView | None,
    lease: Lease | None,
    me: str,
    lan6: LanView | None = None,
    lease6: Lease | None = None,
) -> Plan:
    """Check everything and plan ``create-network``; raises with a clear message when
    something is wrong, before anything has changed.

    ``lease`` is HOST_IP's current lease and ``me`` this host's name in the store;
    ``lan6`` and ``lease6`` the same for the host's IPv6 address, for a dual-stack network.
    """
    if request.mode not in MODES:
        raise InvalidInput(f"--mode must be one of {', '.join(MODES)}")
    check_name(request.name)
    if request.mode == MODE_BRIDGE:
        check_interface_name(request.bridge, "--bridge")
    if request.shim and request.mode != MODE_MACVLAN:
        raise InvalidInput("--macvlan-shim goes with --mode macvlan")
    if lan6 is not None and request.mode != MODE_BRIDGE:
        raise InvalidInput("--ip6: macvlan networks are IPv4 only; dual-stack networks use bridge mode")
    request = replace(request, host_ip6=lan6.host_ip if lan6 else None)
    leases = _leases(request, _check_lease(lease, me, request.host_ip), _check_lease(lease6, me, request.host_ip6))
    if network is not None:
        return _already_set_up(request, host, network, leases)
    uplink = _find_uplink(request, host, lan, lan6)
    if request.mode == MODE_BRIDGE:
        _ensure_free_name(host, request.bridge, "--bridge")
    elif request.shim:
        _ensure_free_name(host, request.shim_name, "the shim's name")
    addresses = host.addresses_of(uplink.name)
    routes = move_order(host.routes_of(uplink.name), addresses)
    return Plan(
        network=request.name,
        mode=request.mode,
        host_ip=request.host_ip,
        uplink=uplink,
        bridge=request.bridge if request.mode == MODE_BRIDGE else None,
        addresses=addresses,
        routes=routes,
        actions=_setup_actions(request, lan, lan6, uplink, host, routes, leases),
        host_ip6=request.host_ip6,
        accepts_ra=uplink.name in host.accepts_ra,
    )


def build_teardown(
    name: str,
    network: NetworkView | None,
    host: HostView,
    lease: Lease | None,
    me: str,
    *,
    force: bool = False,
    before_removal: tuple[Action, ...] = (),
    lease6: Lease | None = None,
) -> Plan:
    """Plan ``create-network --undo``: the inverse of a setup, read back from the host
    and the network's labels. All reversible steps (and ``before_removal``) come
    first; removing the Docker network (which deletes the bridge) comes last."""
    if network is None:
        raise NotFound(f"there is no Docker network named {name}")
    labels = {k.removeprefix(LABEL_PREFIX): v for k, v in network.labels.items() if k.startswith(LABEL_PREFIX)}
    if "mode" not in labels:
        raise InvalidInput(f"Docker network {name} was not made by create-network: remove it with docker network rm")
    if network.containers and not force:
        raise Conflict(
            f"containers are attached to {name} ({', '.join(network.containers)}): "
            "stop them, or give --force to disconnect them"
        )
    uplink = host.link(labels["uplink"])
    if uplink is None:
        raise NotFound(f"the uplink {labels['uplink']} recorded on {name} is gone: nothing to move back")
    release = tuple(
        ReleaseLease(labels[label])
        for label, held in (("host-ip", lease), ("host-ip6", lease6))
        if held is not None and held.is_host_of(me)
    )
    remove = RemoveNetwork(name, network.containers)
    bridge = labels.get("bridge")
    if labels["mode"] == MODE_MACVLAN:
        shim_name = labels.get("shim")
        shim_link = host.link(shim_name) if shim_name else None
        shims: tuple[Action, ...] = ()
        if shim_link is not None:
            assert shim_name is not None
            shim = Shim(
                shim_name, uplink.name, Address(labels["host-ip"], 32), tuple(r.dst for r in host.routes_of(shim_name))
            )
            shims = (RemoveShim(shim),)
        actions: tuple[Action, ...] = (*shims, *release, *before_removal, remove)
        addresses, routes = host.addresses_of(uplink.name), host.routes_of(uplink.name)
    else:
        assert bridge is not None
        # Link-local addresses stay: the uplink kept its own, the bridge goes.
        addresses = tuple(a for a in host.addresses_of(bridge) if not a.is_link_local)
        routes = move_order(host.routes_of(bridge), addresses)
        # Each part only if there is something to move back: an earlier, partial undo
        # may have done the rest. The addresses leave the bridge before its port does,
        # so that the LAN's subnet route never points at a bridge without ports.
        moves = (
            *((AddAddresses(uplink.name, addresses),) if addresses else ()),
            *(MoveRoute(route, bridge, uplink.name) for route in routes),
            *((DeleteAddresses(bridge, tuple(reversed(addresses))),) if addresses else ()),
            *((SetMaster(uplink.name, None),) if uplink.master == bridge else ()),
        )
        actions = (*moves, *release, *before_removal, remove)
    return Plan(
        network=name,
        mode=labels["mode"],
        host_ip=labels["host-ip"],
        uplink=uplink,
        bridge=bridge,
        addresses=addresses,
        routes=routes,
        actions=actions,
        host_ip6=labels.get("host-ip6"),
    )
