"""Which started first, the plugin or dockerd: by their systemd units' order, else by
their processes' start times (and when the networks that use the plugin were made)."""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from .check import OK, WARN, Check
from .network import DockerNetwork
from .plugin import PLUGIN_TIMEOUT

#: Where the Docker SDK goes without DOCKER_HOST.
DEFAULT_DOCKER_SOCKET = "/var/run/docker.sock"
#: dockerd's systemd unit, which the plugin's unit must come before.
DOCKER_UNIT = "docker.service"
#: Seconds systemctl may take to answer.
SYSTEMCTL_TIMEOUT = 5.0


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


def start_order_checks(plugin_path: Path, networks: Sequence[DockerNetwork], plugin_name: str) -> Iterator[Check]:
    """Whether the plugin listening on ``plugin_path`` starts before dockerd; nothing if
    that cannot be told."""
    plugin = Process.listening_on(plugin_path)
    if plugin is None:
        return
    docker_socket = _docker_socket()
    dockerd = Process.listening_on(docker_socket) if docker_socket else None
    uses = [net for net in networks if net.ipam_driver == plugin_name]
    # dockerd over TCP, or its socket held by systemd (socket activation): its
    # process cannot be told from here, only the units' order.
    check = start_order_check(plugin, dockerd if dockerd and dockerd.name == "dockerd" else None, uses)
    if check is not None:
        yield check


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
