"""``shrike doctor``: check what a host needs, and say in plain words what is wrong.

:func:`diagnose` runs the checks in the order a host is set up: the store and its
declarations, the plugin socket, Docker, the Docker networks that use the plugin (however
they were made; or the one named), whether the plugin starts before dockerd, the bridge
(or macvlan uplink) that create-network's labels describe, whether the LANs this host is
on are ARP-probed before their addresses are handed out, and this host's lease (or, for
networks made otherwise, their gateway's). Each gives a :class:`Check`: a status (ok,
warn or fail), what was found, and for anything not ok a hint saying what to run. A
check that needs what an earlier one found missing (the network checks without Docker)
is left out rather than failed a second time. When several networks are checked, the
name of each network's checks ends with it: ``network (mynet)``.

Nothing is changed, not even a missing embedded store, which opening would create.
Docker and pyroute2 are imported only when their checks run: they take a third of a
second to load.
"""

from __future__ import annotations

import http.client
import logging
import os
import re
import socket
import stat
import struct
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ShrikeError
from .ipam import Ipam
from .model import KIND_CONTAINER, KIND_HOST, Config, IPv4, Subnet
from .plugin import PLUGIN_DIR, socket_path
from .plugin.client import PluginClient
from .plugin_names import in_use, is_ipam_driver, networks_by_driver
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
#: Where the Docker SDK goes without DOCKER_HOST.
DEFAULT_DOCKER_SOCKET = "/var/run/docker.sock"
#: dockerd's systemd unit, which the plugin's unit must come before.
DOCKER_UNIT = "docker.service"
#: Seconds systemctl may take to answer.
SYSTEMCTL_TIMEOUT = 5.0


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
    #: the name this host's leases carry (None: the machine's hostname)
    host: str | None = None
    plugin_dir: Path = PLUGIN_DIR
    plugin_name: str = "shrike"
    #: the one network to check; None: every network whose IPAM driver is the plugin
    network: str | None = None
    plugin_timeout: float = PLUGIN_TIMEOUT
    docker_timeout: float = DOCKER_TIMEOUT


def diagnose(target: Target, progress: Callable[[str], None] = lambda message: None) -> list[Check]:
    """Run every check that can run; ``progress`` hears which one is under way."""
    with _Diagnosis(target) as diagnosis:
        return list(diagnosis.run(progress))


def failed(checks: list[Check]) -> bool:
    return any(check.status == FAIL for check in checks)


@dataclass(frozen=True)
class DockerNetwork:
    """A Docker network as the checks need it."""

    name: str
    ipam_driver: str
    #: when it was created (None if dockerd does not say)
    created: datetime | None = None
    #: its pools, IPv4 then IPv6 (a dual-stack network has one of each)
    pools: tuple[str, ...] = ()
    #: the gateway of its first IPv4 pool that names one
    gateway: str | None = None
    #: the LAN router its containers use, for hints
    router: str | None = None
    #: create-network's labels, without their prefix (none: made otherwise)
    labels: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def inspect(cls, client: docker.DockerClient, name: str) -> DockerNetwork:
        from .docker_api import docker_errors
        from .hostnet.docker_net import LABEL_PREFIX

        with docker_errors():
            attrs = client.api.inspect_network(name)
        ipam = attrs.get("IPAM") or {}
        every = [c for c in ipam.get("Config") or [] if c.get("Subnet")]
        configs = [c for c in every if ":" not in c["Subnet"]]
        aux = [c.get("AuxiliaryAddresses") or {} for c in configs]
        labels = attrs.get("Labels") or {}
        return cls(
            name=attrs["Name"],
            ipam_driver=ipam.get("Driver") or "default",
            created=_docker_time(attrs.get("Created") or ""),
            pools=tuple(c["Subnet"] for c in sorted(every, key=lambda c: ":" in c["Subnet"])),
            gateway=next((c["Gateway"] for c in configs if c.get("Gateway")), None),
            router=next((a["DefaultGatewayIPv4"] for a in aux if "DefaultGatewayIPv4" in a), None),
            labels={k.removeprefix(LABEL_PREFIX): v for k, v in labels.items() if k.startswith(LABEL_PREFIX)},
        )


@dataclass
class _Diagnosis:
    """The checks, and what each found that later ones need."""

    target: Target
    ipam: Ipam | None = None
    config: Config | None = None
    client: docker.DockerClient | None = None
    #: the plugin's socket, once it answered
    plugin_path: Path | None = None
    #: the networks checked: those using the plugin, or the one named
    networks: list[DockerNetwork] = field(default_factory=list)

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
            ("network", "looking up the Docker networks", self.network),
            ("start order", "comparing when the plugin and dockerd started", self.start_order),
            ("host network", "reading this host's links and routes", self.host_links),
            ("lan probe", "checking that the LAN can be probed from here", self.lan_probe),
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
            ipam = Ipam(store, host=self.target.host)
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
        if t.plugin_dir != PLUGIN_DIR:
            start += f" --plugin-dir {t.plugin_dir}"
        if not os.path.lexists(path):
            yield Check(
                "plugin", FAIL, f"there is no plugin socket {path}: the plugin is not running", f"start it: {start}"
            )
            return
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            yield Check("plugin", FAIL, f"{path} is not a socket", f"remove it, then start the plugin: {start}")
            return
        check = _activate(path, t.plugin_timeout, start)
        if check.status == OK:
            self.plugin_path = path
        yield check

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
        t = self.target
        if t.network is not None:
            yield from self._named_network(t.network)
        else:
            by_driver = networks_by_driver(self.client)
            names = by_driver.get(t.plugin_name, ())
            if not names:
                found, fix = in_use(by_driver, t.plugin_dir).explain(t.plugin_name)
                yield Check("network", FAIL, found, fix)
                return
            self.networks = [DockerNetwork.inspect(self.client, name) for name in names]
            location = self.ipam.store.location if self.ipam else ""
            for net in self.networks:
                yield self._of(pool_check(net.name, list(net.pools), self.config, location), net)
        plain = [net.name for net in self.networks if "mode" not in net.labels]
        if plain:
            one = len(plain) == 1
            yield Check(
                "host network",
                WARN,
                f"network{'' if one else 's'} {', '.join(plain)} {'was' if one else 'were'} not made by "
                f"create-network: {'its bridge' if one else 'their bridges'} and this host's links are not checked",
            )

    def _named_network(self, name: str) -> Iterator[Check]:
        """``--network NAME``: that network, whatever plugin it uses."""
        from .hostnet.docker_net import find

        assert self.client is not None
        t = self.target
        view = find(self.client, name)
        if view is None:
            yield Check(
                "network",
                FAIL,
                f"Docker has no network named {name}",
                f"create it: shrike create-network --ip HOST_IP --name {name} --plugin-name {t.plugin_name} "
                "(HOST_IP: this host's own address)",
            )
            return
        net = DockerNetwork.inspect(self.client, view.id)
        self.networks = [net]
        if net.ipam_driver != t.plugin_name:
            yield Check(
                "network",
                FAIL,
                f"network {name} uses the IPAM driver {net.ipam_driver}, not {t.plugin_name}",
                f"if the plugin runs as {net.ipam_driver}, give --plugin-name {net.ipam_driver}; otherwise remove the "
                f"network (shrike create-network --undo --name {name}) and create it with --plugin-name "
                f"{t.plugin_name}",
            )
        else:
            yield pool_check(name, list(net.pools), self.config, self.ipam.store.location if self.ipam else "")

    def _of(self, check: Check, net: DockerNetwork) -> Check:
        """``check`` about ``net``: its name ends with the network's when there are several."""
        return replace(check, name=f"{check.name} ({net.name})") if len(self.networks) > 1 else check

    # ------------------------------------------------------------ start order
    def start_order(self) -> Iterator[Check]:
        if self.client is None or self.plugin_path is None:
            return
        plugin = Process.listening_on(self.plugin_path)
        if plugin is None:
            return
        docker_socket = _docker_socket()
        dockerd = Process.listening_on(docker_socket) if docker_socket else None
        uses = [net for net in self.networks if net.ipam_driver == self.target.plugin_name]
        # dockerd over TCP, or its socket held by systemd (socket activation): its
        # process cannot be told from here, only the units' order.
        check = start_order_check(plugin, dockerd if dockerd and dockerd.name == "dockerd" else None, uses)
        if check is not None:
            yield check

    # ------------------------------------------------------------ host network
    def host_links(self) -> Iterator[Check]:
        made = [net for net in self.networks if "mode" in net.labels]
        if not made:
            return
        from .hostnet.links import Netlink

        with Netlink() as netlink:
            host = netlink.read()
        for net in made:
            labels = net.labels
            uplink = labels.get("uplink", "")
            if labels["mode"] == "bridge":
                bridge, host_ip = labels.get("bridge", ""), labels.get("host-ip", "")
                checks = list(bridge_checks(host, net.name, bridge, uplink, host_ip, net.router))
            else:
                checks = [macvlan_check(host, net.name, uplink, labels.get("shim"))]
            for check in checks:
                yield self._of(check, net)

    # -------------------------------------------------------------- lan probe
    def lan_probe(self) -> Iterator[Check]:
        """Whether the plugin probes each LAN with container ranges before it hands out
        its addresses: for the LANs this host is on (those it is not on are probed from
        hosts that are), and for those create-network put it on."""
        if self.config is None:
            return
        from .lanprobe.links import interface_toward

        config = self.config
        made = {Subnet.parse(pool) for net in self.networks if "mode" in net.labels for pool in net.pools}
        plugin = Process.listening_on(self.plugin_path) if self.plugin_path else None
        off = plugin is not None and probing_off(plugin.pid)
        lans = {config.lan_of(r): r for r in reversed(config.ip_ranges)}
        for lan, declared in sorted(lans.items()):
            name = "lan probe" if len(lans) == 1 else f"lan probe ({lan})"
            interface = interface_toward(IPv4(declared.start), lan)
            if interface is None:
                if any(lan.holds(pool) for pool in made):
                    yield Check(
                        name,
                        WARN,
                        f"no interface of this host is on {lan}: its addresses are handed out without probing it",
                        "put the host back on the LAN (see the bridge checks)",
                    )
                continue
            yield lan_probe_check(name, lan, interface.name, off)

    # ------------------------------------------------------------- host lease
    def host_lease(self) -> Iterator[Check]:
        ipam = self.ipam
        if ipam is None:
            return
        made = [net for net in self.networks if "host-ip" in net.labels]
        if made:
            for net in made:
                yield self._of(host_lease_check(ipam, net.labels["host-ip"], net.name), net)
        elif self.networks and not ipam.own_addresses():
            # Made otherwise: nothing says which address is this host's, but the gateway,
            # often this host's own address on the bridge, must be nobody else's.
            for net in self.networks:
                yield self._of(gateway_lease_check(ipam, net.name, net.gateway), net)
        else:
            yield host_lease_check(ipam, None, self.target.network or "mynet")


def probing_off(pid: int) -> bool:
    """Whether the plugin's process ``pid`` runs with ``--no-probe`` (or SHRIKE_PROBE off)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"--no-probe" in argv or any(v in environ for v in (b"SHRIKE_PROBE=0", b"SHRIKE_PROBE=false"))


def lan_probe_check(name: str, lan: Subnet, interface: str, off: bool) -> Check:
    """``lan``, reached through ``interface``: can ARP be sent there, and does the plugin?"""
    from .lanprobe.arp import ArpSocket, ArpUnavailable

    if off:
        return Check(
            name,
            WARN,
            f"the plugin runs with --no-probe: addresses of {lan} are handed out without checking that nothing"
            " else answers for them on the LAN",
            "start shrike server without --no-probe, unless ARP probes are unwelcome on this LAN",
        )
    try:
        ArpSocket(interface).close()
    except ArpUnavailable as err:
        return Check(name, WARN, f"cannot tell: {err}", "run doctor as root (shrike server runs as root)")
    return Check(name, OK, f"{lan} is probed on {interface} (ARP) before its addresses are handed out")


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
    if not is_ipam_driver(status, reply):
        implements: Any = reply.get("Implements") if isinstance(reply, dict) else None
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
        if route.is_default and route.version == 4 and route.table == TABLE_MAIN
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


def gateway_lease_check(ipam: Ipam, network: str, gateway: str | None) -> Check:
    """A network not made by create-network: its gateway is recorded in the store (as the
    network asked for it), and not as another host's address or a container's."""
    me = ipam.host
    if gateway is None:
        return Check("host lease", OK, f"network {network} names no gateway: no address of this host is needed")
    lease = ipam.lease(gateway)
    if lease is None:
        return Check(
            "host lease",
            WARN,
            f"{gateway}, the gateway of {network}, is not recorded in the store {ipam.store.location}",
            "the network was made with another store (or before this one was reset): give the --cluster-store or "
            "--state-dir 'shrike server' uses, or create the network again",
        )
    if lease.kind == KIND_HOST and not lease.is_host_of(me):
        return Check(
            "host lease",
            FAIL,
            f"{gateway}, the gateway of {network}, is recorded as host {lease.host}'s address, not this host's ({me})",
            "two hosts must not share an address: give the network this host's own address as --gateway",
        )
    if lease.kind == KIND_CONTAINER:
        return Check(
            "host lease",
            FAIL,
            f"{gateway}, the gateway of {network}, is recorded as a container's address ({lease.describe()})",
            f"one address for two uses: see 'shrike leases', and create {network} again with another --gateway",
        )
    what = f"this host's ({me})" if lease.is_host_of(me) else f"a {lease.kind} address"
    return Check("host lease", OK, f"{gateway}, the gateway of {network}, is recorded as {what}")


@dataclass(frozen=True)
class Process:
    """A running process, as the start-order check needs it."""

    pid: int
    #: its command name (``dockerd``)
    name: str
    #: clock ticks from boot to its start: exact for comparing two processes
    start_ticks: int
    #: the same as wall-clock time, for comparing with Docker's times
    started: datetime
    #: the systemd unit it runs in (``shrike.service``), if any
    unit: str | None

    @classmethod
    def listening_on(cls, path: str | Path) -> Process | None:
        """The process listening on the unix socket ``path`` (the one that called
        listen(), as the kernel says), or None if that cannot be told."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                probe.settimeout(PLUGIN_TIMEOUT)
                probe.connect(str(path))
                pid, _, _ = struct.unpack("3i", probe.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
            return cls.of(pid) if pid > 0 else None
        except OSError:
            return None

    @classmethod
    def of(cls, pid: int) -> Process:
        proc = Path(f"/proc/{pid}")
        stat_text = (proc / "stat").read_text()
        # The command name is in parentheses and may hold spaces: fields follow the last ')'.
        name = stat_text[stat_text.index("(") + 1 : stat_text.rindex(")")]
        ticks = int(stat_text[stat_text.rindex(")") + 2 :].split()[19])
        # The ticks count from boot on the boot-time clock: how long ago that was, by it.
        ago = time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
        started = datetime.fromtimestamp(time.time() - ago, timezone.utc)
        try:
            unit = unit_of((proc / "cgroup").read_text())
        except OSError:
            unit = None
        return cls(pid, name, ticks, started, unit)


def unit_of(cgroup: str) -> str | None:
    """The systemd service a process runs in, from its ``/proc/PID/cgroup``: the unified
    hierarchy's path (``0::/system.slice/shrike.service``) or, on cgroup v1, systemd's own
    (``1:name=systemd:/system.slice/shrike.service``)."""
    for line in cgroup.splitlines():
        hierarchy, _, path = line.partition(":")[2].partition(":")
        if hierarchy in ("", "name=systemd"):
            service = next((part for part in reversed(path.split("/")) if part.endswith(".service")), None)
            if service:
                return service
    return None


def ordered_before(unit: str, other: str) -> bool | None:
    """Whether systemd starts ``unit`` before ``other`` (``Before=``, or ``After=`` in the
    other unit, which systemd shows on both); None if systemctl cannot tell."""
    try:
        shown = subprocess.run(
            ["systemctl", "show", "--property=Before", "--value", unit],
            capture_output=True,
            text=True,
            timeout=SYSTEMCTL_TIMEOUT,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if shown.returncode != 0:
        return None
    return other in shown.stdout.split()


def start_order_check(
    plugin: Process, dockerd: Process | None, networks: Sequence[DockerNetwork], ordered: bool | None = None
) -> Check | None:
    """The plugin must start before dockerd: at its start dockerd asks the plugin about each
    network that uses it, and without it stalls about 60 s, and leaves --restart always
    containers on those networks exited. Under systemd the units' order says it (given
    as ``ordered``, else asked); otherwise which process started first (None when
    dockerd's process is not known either)."""
    if plugin.unit and ordered is None:
        ordered = ordered_before(plugin.unit, DOCKER_UNIT)
    if plugin.unit and ordered is not None:
        if ordered:
            return Check("start order", OK, f"systemd starts {plugin.unit} before {DOCKER_UNIT}")
        return Check(
            "start order",
            WARN,
            f"{plugin.unit}, which runs shrike server, is not ordered before {DOCKER_UNIT}: if dockerd starts first at "
            "boot, it stalls about 60 s and --restart always containers on the plugin's networks stay exited",
            f"systemctl edit {plugin.unit}, add 'Before={DOCKER_UNIT}' under [Unit] (as examples/shrike.service has), "
            "then systemctl daemon-reload",
        )
    if dockerd is None:
        return None
    if plugin.start_ticks <= dockerd.start_ticks:
        return Check("start order", OK, f"shrike server (pid {plugin.pid}) started before dockerd (pid {dockerd.pid})")
    # Networks made after the plugin started were not there when dockerd started.
    there = [net.name for net in networks if net.created is None or net.created < plugin.started]
    if not there:
        return Check(
            "start order",
            OK,
            f"shrike server (pid {plugin.pid}) started after dockerd (pid {dockerd.pid}), but before the networks "
            "that use it were made",
        )
    return Check(
        "start order",
        WARN,
        f"shrike server (pid {plugin.pid}) started after dockerd (pid {dockerd.pid}), which has networks that use it "
        f"({', '.join(there)}): if dockerd starts first at boot, it stalls about 60 s and --restart always "
        "containers on them stay exited",
        "start shrike server before dockerd: with systemd, install examples/shrike.service (Before=docker.service); "
        "otherwise order it before docker in the init system",
    )


def _docker_socket() -> str | None:
    """The unix socket the Docker SDK goes to (``DOCKER_HOST``, else the default); None
    for dockerd over TCP or SSH."""
    host = os.environ.get("DOCKER_HOST") or f"unix://{DEFAULT_DOCKER_SOCKET}"
    return host.removeprefix("unix://") if host.startswith("unix://") else None


def _docker_time(text: str) -> datetime | None:
    """Docker's RFC 3339 times (nanoseconds, ``Z``) as a datetime; None if unreadable."""
    match = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", text)
    if match is None:
        return None
    whole, fraction, zone = match.groups()
    try:
        return datetime.fromisoformat(f"{whole}.{(fraction or '0')[:6]:0<6}{'+00:00' if zone == 'Z' else zone}")
    except ValueError:
        return None
