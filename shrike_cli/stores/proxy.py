"""Which HTTP proxy, if any, gRPC would send an etcd endpoint's traffic through.

gRPC's C core takes the first *set* variable of ``grpc_proxy``, ``https_proxy`` and
``http_proxy`` (lowercase only; set but empty means no proxy, and a proxy URL whose
scheme is not ``http`` is ignored), and skips a host that ``no_grpc_proxy`` (or, when
that is unset, ``no_proxy``) matches as a case-insensitive suffix or, for an address, a
CIDR range. It proxies loopback too, and ignores ``NO_PROXY``.

shrike decides itself, from the same variables, and tells gRPC the outcome per channel:
loopback hosts and hosts in any of ``no_grpc_proxy``, ``no_proxy`` or ``NO_PROXY`` are
never proxied (``grpc.enable_http_proxy`` 0). Every host gRPC would skip is skipped here
too, so a channel this module says is proxied really is, and errors can name the proxy.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

#: Where gRPC looks for the proxy, in its order.
PROXY_VARIABLES = ("grpc_proxy", "https_proxy", "http_proxy")
#: Lists of hosts not to proxy: gRPC's two, and the upper-case spelling other tools read.
NO_PROXY_VARIABLES = ("no_grpc_proxy", "no_proxy", "NO_PROXY")


@dataclass(frozen=True)
class Proxy:
    """An HTTP CONNECT proxy and the variable that named it."""

    url: str
    variable: str

    def __str__(self) -> str:
        # The URL may carry a user and password for the proxy: never show them.
        parts = urlsplit(self.url)
        shown = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
        return f"the proxy {shown} from {self.variable}"


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback address (``host`` without brackets)."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    return (mapped or address).is_loopback


def _listed(host: str, entry: str) -> bool:
    """Whether one ``no_proxy`` entry covers ``host``: ``*``, a suffix of it (as gRPC
    matches: ``example.com`` covers ``db.example.com``), or a CIDR range holding it."""
    if entry == "*" or host.lower().endswith(entry.lower()):
        return True
    try:
        return ipaddress.ip_address(host) in ipaddress.ip_network(entry, strict=False)
    except ValueError:
        return False


def proxy_for(host: str, environ: Mapping[str, str]) -> Proxy | None:
    """The proxy gRPC is to use for ``host`` (without brackets), or ``None``."""
    variable = next((name for name in PROXY_VARIABLES if name in environ), None)
    if variable is None or is_loopback(host):
        return None
    url = environ[variable].strip()
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.netloc:
        return None  # gRPC ignores it (and logs why)
    for name in NO_PROXY_VARIABLES:
        entries = (entry.strip() for entry in environ.get(name, "").split(","))
        if any(_listed(host, entry) for entry in entries if entry):
            return None
    return Proxy(url, variable)


def channel_options(proxy: Proxy | None) -> list[tuple[str, str | int]]:
    """gRPC channel options that make it use ``proxy``, or none at all."""
    if proxy is None:
        return [("grpc.enable_http_proxy", 0)]
    return [("grpc.http_proxy", proxy.url)]
