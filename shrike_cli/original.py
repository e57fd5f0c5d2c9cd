"""The state oam-docker-ipam, the original, left in etcd, read as shrike's terms.

The original kept everything in etcd's v2 key space (etcd 3.x serves it when started with
``--enable-v2``, as the original required), under ``/talkingdata``, each key written on
its own (no transaction):

=======================================  ====================================================
``hosts/config``                         ``{"Subnet":"172.25.60.0/22","Gateway":"..."}``: the
                                         LAN and its router, from ``host-range``
``hosts/pool/<ip>``                      a free host address (value empty)
``hosts/assigned/<ip>``                  a host address ``create-network`` took
``containers/<net>/config``              ``{"Ipnet":"172.25.60.0","Mask":"24"}``, from
                                         ``ip-range``: ``<net>`` is the network address of
                                         the range computed with its own prefix length
``containers/<net>/pool/<ip>``           a free container address
``containers/<net>/assigned/<ip>``       a container address handed out
=======================================  ====================================================

Its ranges are not stored as such: each command wrote one key per address. They are
read back as the runs of consecutive addresses, free or assigned, each typed with the
prefix length it was declared with. An address moved between ``pool`` and ``assigned``
with two writes, so a crash between them left it in both (read as assigned: it may be in
use) or in neither (a gap that splits its range in two).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import InvalidInput, NotFound, ShrikeError
from .model import AddressRange, IPv4, Subnet, int_to_ip
from .stores.etcd import parse_endpoints

#: Where the original kept its keys.
DEFAULT_PREFIX = "/talkingdata"
#: Seconds one read of the tree may take.
TIMEOUT = 10.0


@dataclass(frozen=True)
class Finding:
    """Something odd in the original's tree, and what the import does about it."""

    #: the key, relative to the prefix (``containers/172.25.60.0/assigned/172.25.60.9``)
    key: str
    message: str

    def to_json(self) -> dict[str, str]:
        return {"key": self.key, "message": self.message}


@dataclass(frozen=True)
class OriginalState:
    """What the original's tree holds, as shrike declares and records it."""

    lan: Subnet
    gateway: IPv4
    host_ranges: tuple[AddressRange, ...]
    ip_ranges: tuple[AddressRange, ...]
    #: addresses ``create-network`` gave hosts
    hosts: tuple[IPv4, ...]
    #: addresses handed to containers
    containers: tuple[IPv4, ...]
    findings: tuple[Finding, ...]


# ------------------------------------------------------------------- reading
def read_tree(urls: str, prefix: str = DEFAULT_PREFIX, *, timeout: float = TIMEOUT) -> dict[str, str]:
    """Every key under ``prefix`` of the etcd v2 API at the first of ``urls`` (comma
    separated ``http(s)://HOST:PORT``) that answers, relative to ``prefix``, with its value."""
    prefix = "/" + prefix.strip("/")
    failures = []
    for endpoint in parse_endpoints(urls):
        url = f"{endpoint.url}/v2/keys{prefix}?recursive=true&sorted=true"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as reply:
                body = json.load(reply)
        except urllib.error.HTTPError as err:
            raise _refusal(endpoint.url, prefix, err) from None
        except (urllib.error.URLError, OSError) as err:
            failures.append(f"{endpoint.url}: {getattr(err, 'reason', err)}")
            continue
        except ValueError:
            raise ShrikeError(f"{endpoint.url} answered with something else than etcd's v2 JSON") from None
        node = body.get("node") if isinstance(body, dict) else None
        if not isinstance(node, dict) or not node.get("dir"):
            raise InvalidInput(f"{prefix} at {endpoint.url} is a single key, not the original's tree: check --prefix")
        return dict(_leaves(node, len(prefix) + 1))
    raise ShrikeError(f"cannot read the original's state: {'; '.join(failures)}")


def _refusal(url: str, prefix: str, err: urllib.error.HTTPError) -> ShrikeError:
    text = err.read(2000).decode(errors="replace")
    try:
        code = json.loads(text).get("errorCode")
    except (ValueError, AttributeError):
        code = None
    if code == 100:  # etcd v2: key not found
        return NotFound(f"{url} holds no {prefix}, where the original kept its state: check --from and --prefix")
    if err.code == 404:
        return ShrikeError(
            f"{url} does not serve etcd's v2 API, where the original kept its state"
            " (etcd 3.x serves it when started with --enable-v2)"
        )
    return ShrikeError(f"{url} refused to read {prefix}: HTTP {err.code} {' '.join(text.split())[:200]}")


def _leaves(node: Mapping[str, Any], strip: int) -> Iterable[tuple[str, str]]:
    for child in node.get("nodes") or ():
        if child.get("dir"):
            yield from _leaves(child, strip)
        else:
            yield child["key"][strip:], child.get("value", "")


# -------------------------------------------------------------- interpreting
class _Reader:
    """Collects findings while the tree is read."""

    def __init__(self) -> None:
        self.findings: list[Finding] = []

    def note(self, key: str, message: str) -> None:
        self.findings.append(Finding(key, message))


def interpret(tree: Mapping[str, str]) -> OriginalState:
    """The original's tree (:func:`read_tree`) in shrike's terms, with what was odd in it.
    Raises :class:`InvalidInput` when it does not name the LAN (``hosts/config``)."""
    reader = _Reader()
    lan, gateway = _lan(tree)
    hosts: dict[str, dict[int, str]] = {"pool": {}, "assigned": {}}
    nets: dict[str, dict[str, Any]] = {}
    for key, value in tree.items():
        parts = key.split("/")
        if parts[0] == "hosts" and len(parts) == 3 and parts[1] in hosts:
            _collect(reader, hosts[parts[1]], key, parts[2])
        elif parts[0] == "containers" and len(parts) == 3 and parts[2] == "config":
            nets.setdefault(parts[1], {"pool": {}, "assigned": {}})["config"] = value
        elif parts[0] == "containers" and len(parts) == 4 and parts[2] in ("pool", "assigned"):
            _collect(reader, nets.setdefault(parts[1], {"pool": {}, "assigned": {}})[parts[2]], key, parts[3])
        elif key != "hosts/config":
            reader.note(key, "not a key of the original's: ignored")

    host_addresses = _usable(reader, lan, gateway, hosts, "hosts")
    host_ranges = _runs(host_addresses, lan.prefixlen)
    taken = set(host_addresses)
    ip_ranges: list[AddressRange] = []
    containers: list[int] = []
    for net, records in sorted(nets.items()):
        typed = _typed_subnet(reader, lan, net, records.get("config"))
        if typed is None:
            continue
        addresses = _usable(reader, lan, gateway, records, f"containers/{net}", typed, taken)
        taken.update(addresses)
        ip_ranges += _runs(addresses, typed.prefixlen)
        containers += [ip for ip, assigned in addresses.items() if assigned]
    return OriginalState(
        lan=lan,
        gateway=gateway,
        host_ranges=tuple(host_ranges),
        ip_ranges=tuple(ip_ranges),
        hosts=tuple(IPv4(ip) for ip, assigned in sorted(host_addresses.items()) if assigned),
        containers=tuple(IPv4(ip) for ip in sorted(containers)),
        findings=tuple(reader.findings),
    )


def _config(value: str | None, fields: tuple[str, ...]) -> dict[str, str] | str:
    """A config of the original's (a JSON object of strings ``fields``), or why it is none."""
    if value is None:
        return "missing"
    try:
        data = json.loads(value)
    except ValueError:
        data = None
    if not isinstance(data, dict) or not all(isinstance(data.get(f), str) for f in fields):
        return f"not the original's config (a JSON object with {', '.join(fields)})"
    return data


def _lan(tree: Mapping[str, str]) -> tuple[Subnet, IPv4]:
    config = _config(tree.get("hosts/config"), ("Subnet", "Gateway"))
    try:
        if isinstance(config, str):
            raise InvalidInput(config)
        lan, gateway = Subnet.parse(config["Subnet"]), IPv4(config["Gateway"])
    except InvalidInput as err:
        raise InvalidInput(
            f"the original's hosts/config (the LAN's subnet and gateway, from its host-range) is not usable: {err}"
        ) from None
    if not lan.covers(int(gateway), int(gateway)):
        raise InvalidInput(f"the original's gateway {gateway} is not a usable address of its LAN {lan}")
    return lan, gateway


def _collect(reader: _Reader, into: dict[int, str], key: str, name: str) -> None:
    try:
        into[int(IPv4(name))] = key
    except InvalidInput:
        reader.note(key, f"'{name}' is not an IPv4 address: ignored")


def _typed_subnet(reader: _Reader, lan: Subnet, net: str, value: str | None) -> Subnet | None:
    """The subnet an ip-range was typed in, from ``containers/<net>/config``."""
    key = f"containers/{net}/config"
    try:
        network = IPv4(net)
    except InvalidInput:
        reader.note(f"containers/{net}", f"'{net}' is not a network address: its addresses are left out")
        return None
    config = _config(value, ("Ipnet", "Mask"))
    if isinstance(config, dict):
        mask = config["Mask"]
        if mask.isdigit() and 0 < int(mask) <= 32 and config["Ipnet"] == net:
            return Subnet.of(int(network), int(mask))
        config = f"Ipnet {config['Ipnet']!r} and Mask {mask!r} do not name the network {net}"
    # The widest subnet, up to the LAN's size, whose network address <net> is.
    prefixlen = lan.prefixlen
    while Subnet.of(int(network), prefixlen).network != int(network):
        prefixlen += 1
    typed = Subnet.of(int(network), prefixlen)
    reader.note(key, f"{config}: its ranges are taken as typed in {typed}")
    return typed


def _usable(
    reader: _Reader,
    lan: Subnet,
    gateway: IPv4,
    records: Mapping[str, Mapping[int, str]],
    where: str,
    typed: Subnet | None = None,
    taken: set[int] | frozenset[int] = frozenset(),
) -> dict[int, bool]:
    """The addresses of one part of the tree shrike can take, each with whether it is
    assigned; the others are findings."""
    free, assigned = records["pool"], records["assigned"]
    usable: dict[int, bool] = {}
    for ip in sorted({*free, *assigned}):
        key = assigned.get(ip) or free[ip]
        address = int_to_ip(ip)
        if typed is not None and not typed.contains(ip):
            reader.note(key, f"{address} is outside {typed}, the network of {where}: left out")
        elif not lan.covers(ip, ip):
            where_in_lan = "the network address of" if ip == lan.network else "the broadcast address of"
            reader.note(key, f"{address} is {where_in_lan if lan.contains(ip) else 'outside'} the LAN {lan}: left out")
        elif ip == int(gateway):
            reader.note(key, f"{address} is the LAN's gateway: left out")
        elif ip in taken:
            reader.note(key, f"{address} is also a host address or under another network: left out here")
        else:
            if ip in free and ip in assigned:
                reader.note(key, f"{address} is both free and assigned: taken as assigned")
            usable[ip] = ip in assigned
    return usable


def _runs(addresses: Iterable[int], prefixlen: int) -> list[AddressRange]:
    """The runs of consecutive ``addresses``, as ranges typed with ``prefixlen``."""
    runs: list[AddressRange] = []
    for ip in sorted(addresses):
        if runs and runs[-1].end + 1 == ip:
            runs[-1] = AddressRange(runs[-1].start, ip, prefixlen)
        else:
            runs.append(AddressRange(ip, ip, prefixlen))
    return runs
