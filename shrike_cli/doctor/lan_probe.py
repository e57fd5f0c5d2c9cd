"""LAN probes (ARP for IPv4, duplicate address detection for IPv6): does the plugin
probe each LAN this host is on before it hands out its addresses, and can it from here?"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from ..model import IP, Config, Subnet
from .check import OK, WARN, Check
from .network import DockerNetwork
from .start_order import Process


def lan_probe_checks(config: Config, networks: Sequence[DockerNetwork], plugin_path: Path | None) -> Iterator[Check]:
    """Whether the plugin probes each LAN with container ranges before it hands out
    its addresses: for the LANs this host is on (those it is not on are probed from
    hosts that are), and for those create-network put it on."""
    from ..lanprobe.links import interface_toward

    made = {Subnet.parse(pool) for net in networks if "mode" in net.labels for pool in net.pools}
    plugin = Process.listening_on(plugin_path) if plugin_path else None
    off = plugin is not None and probing_off(plugin.pid)
    lans = {config.lan_of(r): r for r in reversed(config.ip_ranges)}
    for lan, declared in sorted(lans.items()):
        name = "lan probe" if len(lans) == 1 else f"lan probe ({lan})"
        interface = interface_toward(IP(declared.start), lan)
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


def probing_off(pid: int) -> bool:
    """Whether the plugin's process ``pid`` runs with ``--no-probe`` (or SHRIKE_PROBE off)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"--no-probe" in argv or any(v in environ for v in (b"SHRIKE_PROBE=0", b"SHRIKE_PROBE=false"))


def lan_probe_check(name: str, lan: Subnet, interface: str, off: bool) -> Check:
    """``lan``, reached through ``interface``: can it be probed there, and does the plugin?"""
    from ..lanprobe.arp import ArpSocket
    from ..lanprobe.ndp import NdpSocket
    from ..lanprobe.wire import ProbeUnavailable

    if off:
        return Check(
            name,
            WARN,
            f"the plugin runs with --no-probe: addresses of {lan} are handed out without checking that nothing"
            " else answers for them on the LAN",
            "start shrike server without --no-probe, unless probes are unwelcome on this LAN",
        )
    probes, how = (ArpSocket, "ARP") if lan.version == 4 else (NdpSocket, "DAD")
    try:
        probes(interface).close()
    except ProbeUnavailable as err:
        return Check(name, WARN, f"cannot tell: {err}", "run doctor as root (shrike server runs as root)")
    return Check(name, OK, f"{lan} is probed on {interface} ({how}) before its addresses are handed out")
