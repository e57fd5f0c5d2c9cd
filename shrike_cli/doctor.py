"""``shrike doctor``: check what a host needs, and say in plain words what is wrong.

:func:`diagnose` runs the checks in the order a host is set up: the store and its
declarations, the plugin socket, Docker, the Docker network, the bridge (or macvlan
uplink) the network's labels describe, and this host's lease. Each gives a
:class:`Check`: a status (ok, warn or fail), what was found, and for anything not ok a
hint saying what to run. A check that needs what an earlier one found missing (the
network checks without Docker) is left out rather than failed a second time.

Nothing is changed, not even a missing embedded store, which opening would create.
Docker and pyroute2 are imported only when their checks run: they take a third of a
second to load.
"""

from __future__ import annotations

import http.client
import logging
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ShrikeError
from .ipam import Ipam
from .model import KIND_HOST, Config, Subnet
from .plugin import socket_path
from .plugin.client import PluginClient
from .stores.base import Store

if TYPE_CHECKING:
    import docker

    from .hostnet.hostview import HostView

log = logging.getLogger("shrike.doctor")

OK, WARN, FAIL = "ok", "warn", "fail"

#: Seconds the plugin may take to answer Plugin.Activate (it answers from memory).
PLUGIN_TIMEOUT = 2.0
#: Seconds Docker may take to answer one API call.
DOCKER_TIMEOUT = 3.0
DEFAULT_PLUGIN_DIR = Path("/run/docker/plugins")


@dataclass(frozen=True)
class Check:
    """One finding: ``detail`` says what was found, ``hint`` what to do about it."""

    name: str
    status: str
    detail: str
    hint: str = ""

    def to_json(self) -> dict[str, str]:
        return asdict(self)


@dataclass(frozen=True)
class Target:
    """What to check, as the command line gave it."""

    #: opens the store (the caller closes it)
    open_store: Callable[[], Store]
    #: the embedded store's file, None with etcd: a missing file is reported, not created
    store_file: Path | None
    plugin_dir: Path = DEFAULT_PLUGIN_DIR
    plugin_name: str = "shrike"
    network: str = "mynet"
    plugin_timeout: float = PLUGIN_TIMEOUT
    docker_timeout: float = DOCKER_TIMEOUT


def diagnose(target: Target, progress: Callable[[str], None] = lambda message: None) -> list[Check]:
    """Run every check that can run; ``progress`` hears which one is under way."""
    with _Diagnosis(target) as diagnosis:
        return list(diagnosis.run(progress))


def failed(checks: list[Check]) -> bool:
    return any(check.status == FAIL for check in checks)


@dataclass
class _Diagnosis:
    """The checks, and what each found that later ones need."""

    target: Target
    ipam: Ipam | None = None
    config: Config | None = None
    client: docker.DockerClient | None = None
    #: the network's create-network labels, without their prefix
    labels: dict[str, str] = field(default_factory=dict)
    #: the LAN router the network's containers use, for hints
    router: str | None = None

    def __enter__(self) -> _Diagnosis:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.client is not None:
            self.client.close()

    def run(self, progress: Callable[[str], None]) -> Iterator[Check]:
        steps: list[tuple[str, str, Callable[[], Iterator[Check]]]] = [
            ("store", "reading the store", self.store),
            ("plugin", "asking the plugin", self.plugin),
            ("docker", "asking Docker", self.docker),
            ("network", "looking up the Docker network", self.network),
            ("host network", "reading this host's links and routes", self.host_links),
            ("host lease", "looking up this host's lease", self.host_lease),
        ]
        for name, doing, step in steps:
            progress(doing)
            try:
                yield from step()
            except Exception as err:  # one broken check must not hide the others
                log.debug("the %s check failed", name, exc_info=True)
                yield Check(
                    name, FAIL, f"could not check: {str(err) or type(err).__name__}", "run with --debug for details"
                )

    # ------------------------------------------------------------------ store
    def store(self) -> Iterator[Check]:
        path = self.target.store_file
        if path is not None and not path.exists():
            yield Check(
                "store",
                FAIL,
                f"there is no embedded store at {path}: nothing is declared on this host",
                "declare the LAN with 'shrike host-range --ip-start=FIRST/LEN --ip-end=LAST/LEN --gateway=ROUTER'; "
                "if this host uses etcd, give --cluster-store (or CLUSTER_STORE)",
            )
            return
        what = "embedded store" if path is not None else "etcd at"
        try:
            store = self.target.open_store()
            ipam = Ipam(store)
            config = ipam.config()
        except ShrikeError as err:
            hint = (
                f"check that {path} is readable (run as root?)"
                if path is not None
                else "check that etcd runs, and that --cluster-store (CLUSTER_STORE) and the --etcd-* options are right"
            )
            yield Check("store", FAIL, f"cannot read the store: {err}", hint)
            return
        self.ipam, self.config = ipam, config
        yield Check("store", OK, f"{what} {store.location} answers")
        yield declarations(config)

    # ----------------------------------------------------------------- plugin
    def plugin(self) -> Iterator[Check]:
        t = self.target
        try:
            path = socket_path(t.plugin_dir, t.plugin_name)
        except ShrikeError as err:
            yield Check("plugin", FAIL, str(err), "give the --plugin-name 'shrike server' runs with")
            return
        start = f"shrike server --plugin-name {t.plugin_name}"
        if t.plugin_dir != DEFAULT_PLUGIN_DIR:
            start += f" --plugin-dir {t.plugin_dir}"
        if not os.path.lexists(path):
            yield Check(
                "plugin", FAIL, f"there is no plugin socket {path}: the plugin is not running", f"start it: {start}"
            )
            return
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            yield Check("plugin", FAIL, f"{path} is not a socket", f"remove it, then start the plugin: {start}")
            return
        yield _activate(path, t.plugin_timeout, start)

    # ----------------------------------------------------------------- docker
    def docker(self) -> Iterator[Check]:
        from .docker_api import DockerError, docker_client, docker_errors

        where = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock (the default)"
        try:
            client = docker_client(timeout=self.target.docker_timeout)
            with docker_errors():
                version = client.version()
        except DockerError as err:
            hint = (
                "run as root, or as a member of the docker group"
                if "Permission denied" in str(err)
                else "start dockerd (systemctl start docker), or set DOCKER_HOST to where it listens"
            )
            yield Check("docker", FAIL, f"{err}; the network is not checked without it", hint)
            return
        self.client = client
        yield Check(
            "docker", OK, f"Docker {version.get('Version', '?')} (API {version.get('ApiVersion', '?')}) at {where}"
        )

    # ---------------------------------------------------------------- network
    def network(self) -> Iterator[Check]:
        if self.client is None:
            return
        from .hostnet.docker_net import LABEL_PREFIX, find

        t = self.target
        view = find(self.client, t.network)
        if view is None:
            yield Check(
                "network",
                FAIL,
                f"Docker has no network named {t.network}",
                f"create it: shrike create-network --ip HOST_IP --name {t.network} --plugin-name {t.plugin_name} "
                "(HOST_IP: this host's own address)",
            )
            return
        pool_configs = (self.client.api.inspect_network(view.id).get("IPAM") or {}).get("Config") or []
        # IPv4 only: shrike serves no IPv6 pool (a dual-stack network has one from elsewhere).
        pools = [c["Subnet"] for c in pool_configs if c.get("Subnet") and ":" not in c["Subnet"]]
        aux = [c.get("AuxiliaryAddresses") or {} for c in pool_configs]
        self.router = next((a["DefaultGatewayIPv4"] for a in aux if "DefaultGatewayIPv4" in a), None)
        self.labels = {k.removeprefix(LABEL_PREFIX): v for k, v in view.labels.items() if k.startswith(LABEL_PREFIX)}
        if view.ipam_driver != t.plugin_name:
            driver = view.ipam_driver or "default"
            yield Check(
                "network",
                FAIL,
                f"network {t.network} uses the IPAM driver {driver}, not {t.plugin_name}",
                f"if the plugin runs as {driver}, give --plugin-name {driver}; otherwise remove the network "
                f"(shrike create-network --undo --name {t.network}) and create it with --plugin-name {t.plugin_name}",
            )
        else:
            yield pool_check(t.network, pools, self.config, self.ipam.store.location if self.ipam else "")
        if "mode" not in self.labels:
            yield Check(
                "host network",
                WARN,
                f"network {t.network} was not made by create-network: its bridge and this host's links are not checked",
            )

    # ------------------------------------------------------------ host network
    def host_links(self) -> Iterator[Check]:
        labels = self.labels
        if "mode" not in labels:
            return
        from .hostnet.links import Netlink

        with Netlink() as net:
            host = net.read()
        uplink = labels.get("uplink", "")
        if labels["mode"] == "bridge":
            bridge, host_ip = labels.get("bridge", ""), labels.get("host-ip", "")
            yield from bridge_checks(host, self.target.network, bridge, uplink, host_ip, self.router)
        else:
            yield macvlan_check(host, self.target.network, uplink, labels.get("shim"))

    # ------------------------------------------------------------- host lease
    def host_lease(self) -> Iterator[Check]:
        if self.ipam is not None:
            yield host_lease_check(self.ipam, self.labels.get("host-ip"), self.target.network)


def host_lease_check(ipam: Ipam, host_ip: str | None, network: str) -> Check:
    """``host_ip`` (the address create-network recorded on ``network``) is this host's
    lease; without one, some address is."""
    me = ipam.host
    record = f"shrike create-network --ip {host_ip or 'HOST_IP'} --name {network} records it"
    if host_ip is None:
        mine = ipam.own_addresses()
        if not mine:
            return Check("host lease", FAIL, f"no address is recorded as this host's ({me})", record)
        return Check("host lease", OK, f"{', '.join(mine)} recorded as this host's ({me})")
    lease = ipam.lease(host_ip)
    if lease is None:
        return Check(
            "host lease",
            FAIL,
            f"{host_ip}, this host's address on {network}, is not recorded in the store",
            f"{record} (on a host already set up it changes nothing else)",
        )
    if not lease.is_host_of(me):
        holder = f"host {lease.host}'s" if lease.kind == KIND_HOST else f"a {lease.kind} address"
        return Check(
            "host lease",
            FAIL,
            f"{host_ip} is recorded as {holder}, not as this host's ({me})",
            "two hosts must not share an address: find out which one has it, "
            f"and remove the wrong record with 'shrike release --host {host_ip}'",
        )
    return Check("host lease", OK, f"{host_ip} recorded as this host's ({me})")


def declarations(config: Config) -> Check:
    """A LAN subnet and a container range are declared; each LAN has container addresses."""
    if not config.lans:
        return Check(
            "declarations",
            FAIL,
            "no LAN subnet is declared",
            "declare it: shrike host-range --ip-start=FIRST/LEN --ip-end=LAST/LEN --gateway=ROUTER",
        )
    lans = sorted(config.lans)
    if not config.ip_ranges:
        return Check(
            "declarations",
            FAIL,
            f"LAN {', '.join(map(str, lans))} is declared, but no container range",
            f"declare the addresses containers get: shrike ip-range --ip-start=FIRST/{lans[0].prefixlen} "
            f"--ip-end=LAST/{lans[0].prefixlen}",
        )
    found, empty = [], []
    for lan in lans:
        ranges = config.container_ranges_in(lan)
        hosts = sum(r.size for r in config.host_ranges if lan.covers(r.start, r.end))
        count = sum(r.size for r in ranges)
        found.append(
            f"LAN {lan} (gateway {config.gateway_of(lan)}): {hosts} host and {count} container addresses"
            f" in {len(ranges)} range{'s' if len(ranges) != 1 else ''}"
        )
        if not ranges:
            empty.append(str(lan))
    if empty:
        return Check(
            "declarations",
            WARN,
            "; ".join(found),
            f"containers on {', '.join(empty)} cannot get addresses: declare a range there with shrike ip-range",
        )
    return Check("declarations", OK, "; ".join(found))


def _activate(path: Path, timeout: float, start: str) -> Check:
    """Call Plugin.Activate as dockerd does; an IPAM driver must answer it."""
    try:
        with PluginClient(path, timeout=timeout) as client:
            status, reply = client.call("Plugin.Activate")
    except ConnectionRefusedError:
        return Check(
            "plugin",
            FAIL,
            f"the socket {path} exists but nothing answers: is shrike server running?",
            f"start it: {start} (it replaces the stale socket)",
        )
    except PermissionError:
        return Check(
            "plugin",
            FAIL,
            f"cannot connect to {path}: permission denied",
            "run as root, or as a member of the docker group",
        )
    except TimeoutError:
        return Check(
            "plugin",
            FAIL,
            f"{path} took the connection but did not answer Plugin.Activate within {timeout:g} s",
            "the plugin is stuck or overloaded: look at its log (journalctl -u shrike), then restart it",
        )
    except (OSError, ValueError, http.client.HTTPException) as err:
        return Check(
            "plugin",
            FAIL,
            f"{path} did not answer Plugin.Activate properly: {str(err) or type(err).__name__}",
            f"is something else listening there? Stop it, then start the plugin: {start}",
        )
    implements: Any = reply.get("Implements") if isinstance(reply, dict) else None
    if status != 200 or not isinstance(implements, list) or "IpamDriver" not in implements:
        what = ", ".join(map(str, implements)) if isinstance(implements, list) and implements else f"HTTP {status}"
        return Check(
            "plugin",
            FAIL,
            f"{path} answers Plugin.Activate with {what}, not as an IPAM driver",
            "another plugin has this name: run shrike server with another --plugin-name",
        )
    return Check("plugin", OK, f"{path} answers Plugin.Activate as an IPAM driver")


def pool_check(network: str, pools: list[str], config: Config | None, location: str) -> Check:
    """The network's subnets lie in a declared LAN and hold container addresses."""
    if not pools:
        return Check("network", FAIL, f"network {network} has no IPv4 subnet", "create it again with create-network")
    if config is None:
        return Check(
            "network",
            WARN,
            f"network {network} uses subnet {', '.join(pools)}; the store could not tell if it is declared",
        )
    for text in pools:
        pool = Subnet.parse(text)
        lan = config.lan_subnet_of(pool.network)
        if lan is None or lan.prefixlen > pool.prefixlen:
            return Check(
                "network",
                FAIL,
                f"network {network}'s subnet {pool} is not declared in the store {location}",
                "declare it with shrike host-range, or give the --cluster-store or --state-dir 'shrike server' uses",
            )
        if not config.container_ranges_in(pool):
            return Check(
                "network",
                FAIL,
                f"no container range lies in {pool}: containers on {network} cannot get addresses",
                f"declare one: shrike ip-range --ip-start=FIRST/{pool.prefixlen} --ip-end=LAST/{pool.prefixlen}",
            )
    return Check("network", OK, f"{network} uses this plugin, on the declared subnet {', '.join(pools)}")


def bridge_checks(
    host: HostView, network: str, bridge: str, uplink: str, host_ip: str, router: str | None = None
) -> Iterator[Check]:
    """Bridge mode as create-network leaves it: the bridge is up and holds HOST_IP, the
    uplink is its port, and the default route goes through it."""
    redo = (
        f"set it up again: shrike create-network --undo --name {network}, "
        f"then shrike create-network --ip {host_ip} --name {network}"
    )
    link = host.link(bridge)
    if link is None or link.kind != "bridge":
        what = "there is no such link" if link is None else f"{bridge} is a {link.kind or 'plain'} link, not a bridge"
        yield Check("bridge", FAIL, f"{network} needs bridge {bridge}, but {what}", redo)
        return
    if link.up:
        yield Check("bridge", OK, f"bridge {bridge} is up")
    else:
        yield Check("bridge", FAIL, f"bridge {bridge} is down", f"ip link set {bridge} up")

    holder = host.holder_of(host_ip)
    if holder is not None and holder.name == bridge:
        yield Check("host address", OK, f"{bridge} holds this host's address {host_ip}")
    else:
        where = f"is on {holder.name}" if holder else "is on no interface of this host"
        yield Check("host address", FAIL, f"{host_ip} {where}, not on {bridge}", redo)

    port = host.link(uplink)
    if port is None:
        yield Check("uplink", FAIL, f"the uplink {uplink} recorded on {network} is gone", redo)
    elif port.master != bridge:
        elsewhere = f" (it is a port of {port.master})" if port.master else ""
        yield Check(
            "uplink", FAIL, f"{uplink} is not a port of {bridge}{elsewhere}", f"ip link set {uplink} master {bridge}"
        )
    elif not port.up:
        yield Check("uplink", FAIL, f"{uplink}, the port of {bridge}, is down", f"ip link set {uplink} up")
    else:
        yield Check("uplink", OK, f"{uplink} is a port of {bridge}")

    yield _default_route(host, bridge, router)


def _default_route(host: HostView, bridge: str, router: str | None) -> Check:
    from .hostnet.hostview import TABLE_MAIN

    defaults = [
        (route.metric or 0, dev, route)
        for dev, routes in host.routes.items()
        for route in routes
        if route.is_default and route.table == TABLE_MAIN
    ]
    add = f"ip route replace default via {router or 'ROUTER'} dev {bridge}"
    if not defaults:
        return Check("default route", FAIL, "this host has no default route", add)
    _, dev, route = min(defaults, key=lambda found: found[0])  # the kernel uses the lowest metric
    if dev != bridge:
        return Check("default route", FAIL, f"the default route ({route}) goes through {dev}, not {bridge}", add)
    return Check("default route", OK, f"the default route ({route}) goes through {bridge}")


def macvlan_check(host: HostView, network: str, uplink: str, shim: str | None) -> Check:
    """Macvlan mode: the parent link of the network (and the host's shim) are there and up."""
    port = host.link(uplink)
    if port is None or not port.up:
        state = "gone" if port is None else "down"
        return Check("uplink", FAIL, f"{uplink}, the parent link of {network}, is {state}", f"ip link set {uplink} up")
    if shim and host.link(shim) is None:
        return Check(
            "uplink",
            FAIL,
            f"the macvlan shim {shim} is missing: this host cannot reach its containers",
            f"shrike create-network --undo --name {network}, then create it again with --macvlan-shim",
        )
    return Check(
        "uplink", OK, f"{network}'s containers sit on {uplink}" + (f", reached through {shim}" if shim else "")
    )
