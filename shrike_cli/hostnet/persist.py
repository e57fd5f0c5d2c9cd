"""``--persist``: the bridge setup as the host's network manager would build it at boot.

Two formats: RHEL/CentOS network-scripts (``ifcfg-*``, ``route-*`` and ``route6-*``
files, what the original tool wrote) and systemd-networkd (``.netdev``/``.network``).
Both carry the IPv6 addresses and routes too, and whether the bridge takes router
advertisements; link-local addresses are the network manager's to make. Files are only
written, never applied: networking is not restarted.

Every file written carries :data:`HEADER`. A file that would be replaced or must go
away (the uplink's old configuration) is first kept as ``NAME.shrike.orig``, a suffix
that both network-scripts and networkd ignore; the undo puts those back and removes
the files with the header. ``root`` is the filesystem root (``/``; tests use a
temporary directory).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from ..errors import InvalidInput
from .docker_net import check_name
from .hostview import TABLE_MAIN, Address, Layout, Route

IFCFG = "ifcfg"
NETWORKD = "networkd"
MANAGERS = (IFCFG, NETWORKD)

IFCFG_DIR = "etc/sysconfig/network-scripts"
NETWORKD_DIR = "etc/systemd/network"
NETWORKD_ENABLED = "etc/systemd/system/multi-user.target.wants/systemd-networkd.service"
#: networkd applies the first matching .network file in lexical order.
NETWORKD_PREFIX = "10-shrike-"
BACKUP_SUFFIX = ".shrike.orig"

HEADER = "# Written by shrike create-network"


def detect(root: Path) -> str:
    """The network manager of the system at ``root``: networkd if it is enabled, else
    network-scripts if its folder exists; an error when neither is recognisable."""
    # lexists: the unit link points into /lib of that system, not of ours.
    if os.path.lexists(root / NETWORKD_ENABLED):
        return NETWORKD
    if (root / IFCFG_DIR).is_dir():
        return IFCFG
    raise InvalidInput(
        f"cannot tell the network manager of {root} (neither systemd-networkd enabled nor {root / IFCFG_DIR}): "
        "give --network-manager ifcfg|networkd"
    )


def _header(layout: Layout, what: str) -> str:
    return f"{HEADER} for Docker network {layout.network}: {what}"


def _bridge(layout: Layout) -> str:
    if layout.bridge is None:
        raise InvalidInput(
            "--persist applies to bridge mode: in macvlan mode the host's own configuration does not change"
        )
    return layout.bridge


def _persisted_routes(layout: Layout, version: int | None = None) -> list[Route]:
    # Routes of other tables need policy rules the managers would configure elsewhere.
    return [r for r in layout.routes if r.table == TABLE_MAIN and version in (None, r.version)]


def _persisted_addresses(layout: Layout, version: int | None = None) -> list[Address]:
    return [a for a in layout.addresses if not a.is_link_local and version in (None, a.version)]


def render_ifcfg(layout: Layout) -> dict[str, str]:
    """``ifcfg-<bridge>``, ``ifcfg-<uplink>`` and, for routes besides the default,
    ``route-<bridge>``: paths relative to the network-scripts folder."""
    bridge, uplink = _bridge(layout), layout.uplink
    lines = [
        _header(layout, f"{bridge} holds the host's address, {uplink.name} is its port"),
        f"DEVICE={bridge}",
        "TYPE=Bridge",
    ]
    lines += ["ONBOOT=yes", "BOOTPROTO=none", "DELAY=0", "STP=no", f"MACADDR={uplink.mac}", f"MTU={uplink.mtu}"]
    addresses = _persisted_addresses(layout, 4)
    numbered = len(addresses) > 1
    for n, address in enumerate(addresses):
        suffix = str(n) if numbered else ""
        lines += [f"IPADDR{suffix}={address.ip}", f"PREFIX{suffix}={address.prefixlen}"]
    routes = _persisted_routes(layout, 4)
    default = next((r for r in routes if r.is_default), None)
    if default is not None and default.gateway:
        lines.append(f"GATEWAY={default.gateway}")
        if default.metric is not None:
            lines.append(f"METRIC={default.metric}")
    addresses6, routes6 = _persisted_addresses(layout, 6), _persisted_routes(layout, 6)
    default6 = next((r for r in routes6 if r.is_default), None)
    if addresses6 or routes6 or layout.accepts_ra:
        lines += ["IPV6INIT=yes", f"IPV6_AUTOCONF={'yes' if layout.accepts_ra else 'no'}"]
        if addresses6:
            lines.append(f"IPV6ADDR={addresses6[0].cidr}")
        if addresses6[1:]:
            lines.append(f'IPV6ADDR_SECONDARIES="{" ".join(a.cidr for a in addresses6[1:])}"')
        if default6 is not None and default6.gateway:
            lines.append(f"IPV6_DEFAULTGW={default6.gateway}%{bridge}")
    files = {f"ifcfg-{bridge}": "\n".join(lines) + "\n"}
    for name, others in (("route", routes), ("route6", routes6)):
        others = [r for r in others if r is not default and r is not default6]
        if others:
            # Each line is what 'ip route add' is given.
            route_lines = [f"{r} dev {bridge}" for r in others]
            files[f"{name}-{bridge}"] = "\n".join([_header(layout, f"routes through {bridge}"), *route_lines]) + "\n"
    files[f"ifcfg-{uplink.name}"] = (
        "\n".join(
            [
                _header(layout, f"{uplink.name} is a port of {bridge}, which holds its address"),
                f"DEVICE={uplink.name}",
                "TYPE=Ethernet",
                "ONBOOT=yes",
                "BOOTPROTO=none",
                f"HWADDR={uplink.mac}",
                f"MTU={uplink.mtu}",
                f"BRIDGE={bridge}",
            ]
        )
        + "\n"
    )
    return files


def render_networkd(layout: Layout) -> dict[str, str]:
    """The bridge's ``.netdev`` and ``.network`` and the uplink's ``.network``: paths
    relative to networkd's folder."""
    bridge, uplink = _bridge(layout), layout.uplink
    netdev = [
        _header(layout, f"the bridge {bridge}, with {uplink.name}'s MAC"),
        "[NetDev]",
        f"Name={bridge}",
        "Kind=bridge",
    ]
    netdev += [f"MACAddress={uplink.mac}", f"MTUBytes={uplink.mtu}"]
    network = [_header(layout, f"{bridge} holds the host's address"), "[Match]", f"Name={bridge}", "", "[Network]"]
    if layout.accepts_ra:
        network.append("IPv6AcceptRA=yes")
    network += [f"Address={a.cidr}" for a in _persisted_addresses(layout)]
    for route in _persisted_routes(layout):
        network += ["", "[Route]"]
        if not route.is_default:
            network.append(f"Destination={route.dst}")
        if route.gateway:
            network.append(f"Gateway={route.gateway}")
        if route.metric is not None:
            network.append(f"Metric={route.metric}")
        if route.onlink:
            network.append("GatewayOnLink=yes")
    port = [_header(layout, f"{uplink.name} is a port of {bridge}"), "[Match]", f"Name={uplink.name}", "", "[Network]"]
    port.append(f"Bridge={bridge}")
    return {
        f"{NETWORKD_PREFIX}{bridge}.netdev": "\n".join(netdev) + "\n",
        f"{NETWORKD_PREFIX}{bridge}.network": "\n".join(network) + "\n",
        f"{NETWORKD_PREFIX}{uplink.name}.network": "\n".join(port) + "\n",
    }


def folder(root: Path, manager: str) -> Path:
    return root / (IFCFG_DIR if manager == IFCFG else NETWORKD_DIR)


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except (FileNotFoundError, NotADirectoryError):
        return None


def _names_link(text: str, link: str) -> bool:
    """Whether a networkd .network file's [Match] names ``link`` exactly."""
    return any(line.strip().startswith("Name=") and link in line.split("=", 1)[1].split() for line in text.splitlines())


def _stale(root: Path, manager: str, layout: Layout) -> Iterable[Path]:
    """Existing files that would configure the uplink's address at boot."""
    where = folder(root, manager)
    if manager == IFCFG:
        yield where / f"route-{layout.uplink.name}"
        yield where / f"route6-{layout.uplink.name}"
        return
    if where.is_dir():
        for path in sorted(where.glob("*.network")):
            text = _read(path)
            if text is not None and not text.startswith(HEADER) and _names_link(text, layout.uplink.name):
                yield path


def _with_backup(path: Path, text: str | None) -> list[tuple[str, str | None]]:
    """Set ``path`` to ``text``, keeping a file not written by us as a backup first."""
    old = _read(path)
    if old == text:
        return []
    changes: list[tuple[str, str | None]] = []
    backup = path.with_name(path.name + BACKUP_SUFFIX)
    if old is not None and not old.startswith(HEADER) and not backup.exists():
        changes.append((str(backup), old))
    changes.append((str(path), text))
    return changes


def setup_files(root: Path, manager: str, layout: Layout) -> tuple[tuple[str, str | None], ...]:
    """The file changes that persist a bridge-mode ``layout`` (absolute paths; ``None`` removes):
    only those that differ from what is there, so a rerun changes nothing."""
    if manager not in MANAGERS:
        raise InvalidInput(f"--network-manager must be one of {', '.join(MANAGERS)}")
    # The name goes into every file's header: no line break may make it a setting.
    check_name(layout.network)
    where = folder(root, manager)
    rendered = render_ifcfg(layout) if manager == IFCFG else render_networkd(layout)
    changes = [change for name, text in rendered.items() for change in _with_backup(where / name, text)]
    changes += [
        change for path in _stale(root, manager, layout) if path.exists() for change in _with_backup(path, None)
    ]
    return tuple(changes)


def teardown_files(root: Path, manager: str) -> tuple[tuple[str, str | None], ...]:
    """The changes that undo :func:`setup_files`: remove what we wrote, restore backups."""
    where = folder(root, manager)
    if not where.is_dir():
        return ()
    changes: list[tuple[str, str | None]] = []
    restored = set()
    for backup in sorted(where.glob("*" + BACKUP_SUFFIX)):
        original = backup.with_name(backup.name.removesuffix(BACKUP_SUFFIX))
        changes += [(str(original), backup.read_text()), (str(backup), None)]
        restored.add(original)
    for path in sorted(where.iterdir()):
        text = _read(path) if path.is_file() else None
        if path not in restored and text is not None and text.startswith(HEADER):
            changes.append((str(path), None))
    return tuple(changes)
