"""Which IPAM plugin names are in use on this host, for ``doctor`` and ``reconcile``.

A network names its IPAM plugin (``docker network create --ipam-driver NAME``), and
the plugin answers on ``PLUGIN_DIR/NAME.sock``. When the ``--plugin-name`` given
matches no network, either the name is wrong or the dockerd is (``DOCKER_HOST``):
:func:`in_use` gathers what tells them apart, the IPAM drivers of the dockerd's
networks and the plugin sockets that answer ``Plugin.Activate`` as an IPAM driver,
and :meth:`InUse.hint` words the fix for what was found.
"""

from __future__ import annotations

import contextlib
import http.client
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .docker_api import docker_errors, docker_host
from .plugin import PLUGIN_DIR
from .plugin.client import PluginClient

if TYPE_CHECKING:
    import docker

#: IPAM drivers built into dockerd (``null`` serves the host and none networks).
BUILTIN_DRIVERS = frozenset({"", "default", "null", "windowsipam"})
#: Seconds a plugin socket may take to answer Plugin.Activate (it answers from memory).
ACTIVATE_TIMEOUT = 2.0


def networks_of(client: docker.DockerClient, plugin_name: str) -> list[dict[str, Any]]:
    """What dockerd says of each of its networks whose IPAM driver is ``plugin_name``."""
    with docker_errors():
        networks = client.api.networks()
    return [n for n in networks if (n.get("IPAM") or {}).get("Driver") == plugin_name]


def networks_by_driver(client: docker.DockerClient) -> dict[str, tuple[str, ...]]:
    """Each IPAM plugin that networks of ``client``'s dockerd name, with those networks."""
    with docker_errors():
        networks = client.api.networks()
    found: dict[str, list[str]] = {}
    for network in sorted(networks, key=lambda n: n["Name"]):
        driver = (network.get("IPAM") or {}).get("Driver") or ""
        if driver not in BUILTIN_DRIVERS:
            found.setdefault(driver, []).append(network["Name"])
    return {driver: tuple(names) for driver, names in found.items()}


def is_ipam_driver(status: int, reply: Any) -> bool:
    """Whether a Plugin.Activate answer is an IPAM driver's."""
    implements = reply.get("Implements") if isinstance(reply, dict) else None
    return status == 200 and isinstance(implements, list) and "IpamDriver" in implements


def live_plugins(plugin_dir: Path = PLUGIN_DIR, timeout: float = ACTIVATE_TIMEOUT) -> tuple[str, ...]:
    """Names of the sockets in ``plugin_dir`` that answer Plugin.Activate as an IPAM
    driver, as dockerd asks it; sockets left by a dead plugin or serving another kind
    are left out."""
    names = []
    for path in sorted(plugin_dir.glob("*.sock")) if plugin_dir.is_dir() else ():
        with (
            contextlib.suppress(OSError, ValueError, http.client.HTTPException, json.JSONDecodeError),
            PluginClient(path, timeout=timeout) as client,
        ):
            if is_ipam_driver(*client.call("Plugin.Activate")):
                names.append(path.name.removesuffix(".sock"))
    return tuple(names)


@dataclass(frozen=True)
class InUse:
    """The IPAM plugins this host's dockerd and plugin folder know."""

    #: plugin name -> the dockerd's networks that use it
    networks: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: plugin names answering on a socket in ``plugin_dir``
    live: tuple[str, ...] = ()
    plugin_dir: Path = PLUGIN_DIR

    def hint(self, name: str) -> str:
        """Why no network of the dockerd uses the plugin ``name``, and what to do (the
        likely cause first), in one sentence."""
        return ": ".join(self.explain(name))

    def explain(self, name: str) -> tuple[str, str]:
        """:meth:`hint` in two parts: what was found, and what to do."""
        unused = f"no network of this dockerd uses the IPAM driver '{name}'"
        other_dockerd = f"check DOCKER_HOST (now {docker_host()})"
        # Live plugins first: a network whose plugin is gone is a leftover.
        others = sorted((d for d in self.networks if d != name), key=lambda d: (d not in self.live, d))
        if others:
            used = ", ".join(f"'{d}' ({', '.join(self.networks[d])})" for d in others)
            return (
                f"{unused}; networks here use {used}",
                f"give --plugin-name {others[0]} (or, if the plugin is '{name}', {other_dockerd})",
            )
        if name in self.live:
            return (
                f"{unused}, which answers on {self.plugin_dir / name}.sock",
                f"create one (shrike create-network --ip HOST_IP --plugin-name {name}, or docker network create "
                f"--ipam-driver {name} ...), or, if its networks are on another dockerd, {other_dockerd}",
            )
        if self.live:
            answering = ", ".join(f"'{n}'" for n in self.live) + (" does" if len(self.live) == 1 else " do")
            return (
                f"{unused}, and none answers as '{name}' in {self.plugin_dir}; {answering}",
                f"give --plugin-name {self.live[0]}, or {other_dockerd}",
            )
        return (
            f"{unused}, no network here uses an IPAM plugin, and no plugin answers in {self.plugin_dir}",
            f"{other_dockerd}, and that shrike server runs",
        )


def in_use(networks: Mapping[str, tuple[str, ...]], plugin_dir: Path = PLUGIN_DIR) -> InUse:
    """What :class:`InUse` needs, given the dockerd's plugin networks
    (:func:`networks_by_driver`); the plugin sockets are asked now."""
    return InUse(networks, live_plugins(plugin_dir), plugin_dir)
