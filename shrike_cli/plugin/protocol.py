"""Docker's remote IPAM protocol over :class:`~shrike_cli.ipam.Ipam`, without HTTP.

:meth:`Driver.handle` takes a request path and body and returns an HTTP status and a JSON
object; the server only moves bytes. What dockerd (libnetwork) expects, as observed and
read from its source (see FIELD-NOTES.md):

* success is exactly 200 with a JSON object; a failure must be non-200 with ``{"Err": ...}``
  (dockerd reads a 200 carrying only ``Err`` as success);
* the handshake calls have empty bodies, read as ``{}``;
* a reply's ``Address`` carries the pool's prefix length: it becomes the container's
  netmask, and the bridge's own address for the gateway.

Status codes: 400 for a request that is not what the protocol says (not JSON, wrong types,
missing fields), 404 for an unknown path, 500 for everything refused or failed.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from .. import metrics
from ..errors import InvalidInput, ShrikeError
from ..ipam import Ipam, Returning
from ..model import IP, KIND_AUX, Lease, Subnet
from ..pools import Pool

log = logging.getLogger(__name__)

#: Largest request body accepted; dockerd's are a few hundred bytes.
MAX_BODY = 64 * 1024

IMPLEMENTS = {"Implements": ["IpamDriver"]}
# dockerd sends the MAC of every endpoint, so a container that comes back with its MAC
# gets its address back. No replay: leases are persisted, dockerd need not re-announce them.
CAPABILITIES = {"RequiresMACAddress": True, "RequiresRequestReplay": False}
ADDRESS_SPACES = {"LocalDefaultAddressSpace": "shrike-local", "GlobalDefaultAddressSpace": "shrike-global"}

#: Options keys of RequestAddress (libnetwork's netlabel and ipamapi constants).
REQUEST_ADDRESS_TYPE = "RequestAddressType"
GATEWAY_TYPE = "com.docker.network.gateway"
MAC_OPTION = "com.docker.network.endpoint.macaddress"
#: Sent by engines from 28.x on with every endpoint's request: the container's name.
ENDPOINT_NAME_OPTION = "com.docker.network.endpoint.name"
#: ``docker network create --ipam-opt eui64=true``: in the network's IPv6 /64, a container
#: gets the address its MAC derives (EUI-64), so one with a pinned MAC keeps it without
#: any state. dockerd sends the same options with the IPv4 pool, where it means nothing.
EUI64_OPTION = "eui64"
TRUE_WORDS, FALSE_WORDS = ("1", "t", "true", "yes", "on"), ("", "0", "f", "false", "no", "off")

Reply = tuple[int, dict[str, Any]]
Request = dict[str, Any]


class BadRequest(ShrikeError):
    """The request does not follow the protocol (answered with 400)."""


def decode(body: bytes) -> Request:
    """The request object; an empty body is ``{}`` (dockerd's handshake calls)."""
    if not body.strip():
        return {}
    try:
        request = json.loads(body)
    except (ValueError, RecursionError) as err:  # RecursionError: absurdly deep nesting
        raise BadRequest(f"the body is not JSON: {str(err)[:100]}") from None
    if not isinstance(request, dict):
        raise BadRequest(f"the body must be a JSON object, not {type(request).__name__}")
    return request


def _string(request: Request, name: str, *, required: bool = False) -> str:
    """A string field; absent or null is ``""`` unless ``required``."""
    value = request.get(name)
    if value is None:
        if required:
            raise BadRequest(f"missing field {name}")
        return ""
    if not isinstance(value, str):
        raise BadRequest(f"field {name} must be a string, not {type(value).__name__}")
    return value


def _options(request: Request) -> dict[str, str]:
    """The ``Options`` map; dockerd sends ``null`` as readily as ``{}``."""
    value = request.get("Options")
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise BadRequest("field Options must be an object of strings")
    return value


def _address(request: Request, *, required: bool) -> str:
    """The ``Address`` field: a plain address, or "" when not ``required``."""
    address = _string(request, "Address", required=required)
    if address or required:
        try:
            IP(address)
        except InvalidInput as err:
            raise BadRequest(f"field Address: {err}") from None
    return address


def _boolean(value: str, name: str) -> bool:
    if value.lower() not in TRUE_WORDS + FALSE_WORDS:
        raise InvalidInput(f"--ipam-opt {name}={value}: give true or false")
    return value.lower() in TRUE_WORDS


class Starts(Protocol):
    """What the server learns from its dockerd's events (:class:`~..owners.OwnerTracker`)."""

    def dockerd_called(self) -> None:
        """dockerd just called the plugin (it is up): never blocks."""
        ...

    def new_container_starting(self) -> bool:
        """Whether a container was created on this host moments ago and has not started."""
        ...


def _pool(request: Request, ipam: Ipam) -> Pool:
    try:
        return ipam.pool(_string(request, "PoolID", required=True))
    except InvalidInput as err:
        raise BadRequest(str(err)) from None


class Driver:
    """The IPAM driver over one :class:`Ipam` (this host's).

    ``docker`` is what the server learnt from its dockerd's events (None when it does not
    follow dockerd): whether a container was just created there, which tells a new
    container's first request from a stopped container's coming back on engines that
    send no container name (see :meth:`request_address`). It is never asked anything
    that needs dockerd: dockerd holds locks while it calls the plugin.
    """

    def __init__(self, ipam: Ipam, docker: Starts | None = None) -> None:
        self.ipam = ipam
        self.docker = docker
        self._endpoints: dict[str, Callable[[Request], dict[str, Any]]] = {
            "/Plugin.Activate": lambda _: IMPLEMENTS,
            "/IpamDriver.GetCapabilities": lambda _: CAPABILITIES,
            "/IpamDriver.GetDefaultAddressSpaces": lambda _: ADDRESS_SPACES,
            "/IpamDriver.RequestPool": self.request_pool,
            "/IpamDriver.ReleasePool": self.release_pool,
            "/IpamDriver.RequestAddress": self.request_address,
            "/IpamDriver.ReleaseAddress": self.release_address,
            # Swarm node discovery notifications: nothing to do with them.
            "/IpamDriver.DiscoverNew": lambda _: {},
            "/IpamDriver.DiscoverDelete": lambda _: {},
        }

    def handle(self, path: str, body: bytes) -> Reply:
        """Answer one call; never raises. Every call is timed, and every refusal counted
        with its reason (:func:`~shrike_cli.metrics.plugin_request`)."""
        started = time.perf_counter()
        if self.docker is not None:
            self.docker.dockerd_called()
        status, reply, refused = self._answer(path, body)
        known = path if path in self._endpoints else "/other"
        metrics.plugin_request(known[1:], time.perf_counter() - started, refused)
        return status, reply

    def _answer(self, path: str, body: bytes) -> tuple[int, dict[str, Any], str | None]:
        """The status, the reply and, for an error, its reason."""
        endpoint = self._endpoints.get(path)
        if endpoint is None:
            reply = {"Err": f"unknown endpoint {path[:100]}: shrike serves /Plugin.Activate and /IpamDriver.*"}
            return 404, reply, "unknown_endpoint"
        try:
            return 200, endpoint(decode(body)), None
        except BadRequest as err:
            return 400, {"Err": f"malformed request: {err}"}, err.reason
        except ShrikeError as err:
            return 500, {"Err": str(err)}, err.reason
        except Exception as err:  # a bug: answer it, keep serving, leave a traceback
            log.exception("%s failed", path)
            return 500, {"Err": f"internal error in shrike ({type(err).__name__}: {err})"}, "internal_error"

    # ------------------------------------------------------------------ pools
    def request_pool(self, request: Request) -> dict[str, Any]:
        v6 = request.get("V6", False)
        if not isinstance(v6, bool):
            raise BadRequest(f"field V6 must be a boolean, not {type(v6).__name__}")
        subnet, sub_pool = _string(request, "Pool"), _string(request, "SubPool")
        _string(request, "AddressSpace")  # checked, not used: a subnet is one pool in every space
        options = _options(request)
        if unknown := sorted(set(options) - {EUI64_OPTION}):
            log.warning("ignoring --ipam-opt %s: shrike takes only %s", ", ".join(unknown), EUI64_OPTION)
        eui64 = _boolean(options.get(EUI64_OPTION, ""), EUI64_OPTION)
        family = 6 if v6 else 4
        if not subnet:
            lans = sorted(lan for lan in self.ipam.config(fresh=False).lans if lan.version == family)
            declared = ", ".join(map(str, lans)) or "none declared yet"
            ipv6 = " for IPv6 too" if v6 else ""
            raise InvalidInput(
                f"give docker network create a --subnet{ipv6}: shrike serves the declared IPv{family} LANs ({declared})"
            )
        if (":" in subnet) != v6:
            raise InvalidInput(
                f"the request is for an IPv{family} pool (V6 {str(v6).lower()}), but {subnet} is an"
                f" IPv{10 - family} subnet"
            )
        # Refuses a subnet that is not a LAN, or holds no container range, or a sub-pool
        # outside it, now rather than at the first docker run.
        pool = self.ipam.request_pool(Pool.of(subnet, sub_pool or None, eui64=eui64 and v6))
        return {"PoolID": pool.id, "Pool": str(pool.subnet), "Data": {}}

    def release_pool(self, request: Request) -> dict[str, Any]:
        self.ipam.release_pool(_pool(request, self.ipam))
        return {}

    # -------------------------------------------------------------- addresses
    def request_address(self, request: Request) -> dict[str, Any]:
        """A gateway, an aux address, or a container's address.

        Which container asks: newer engines name it (``ENDPOINT_NAME_OPTION``), and its
        parked address (or reservation) is found by that name. dockerd 20.10 sends only a
        MAC, a new random one at each start: a request then gets the address this host
        parked last (a restarting container asks right after its release), unless a
        container was just created on this host, whose first request it probably is.
        """
        pool = _pool(request, self.ipam)
        address = _address(request, required=False)
        options = _options(request)
        lease: Lease | None
        if options.get(REQUEST_ADDRESS_TYPE) == GATEWAY_TYPE:
            lease = self.ipam.request_gateway(pool, address or self._own_address(pool.subnet))
        elif address and MAC_OPTION not in options and ENDPOINT_NAME_OPTION not in options:
            # An aux address (--aux-address, e.g. DefaultGatewayIPv4): dockerd sends them
            # with Options null, while every endpoint's request carries its MAC.
            lease = self.ipam.request_gateway(pool, address, kind=KIND_AUX)
        else:
            name = options.get(ENDPOINT_NAME_OPTION, "")
            if name:
                returning: Returning | None = Returning(name)
            elif self.docker is not None and not self.docker.new_container_starting():
                returning = Returning()
            else:
                returning = None
            lease = self.ipam.request_address(
                pool,
                address or None,
                mac=options.get(MAC_OPTION) or None,
                owner={"name": name} if name else None,
                returning=returning,
            )
        # The pool's prefix length, whatever subnet a shared gateway record was made in;
        # an aux address nothing records is acknowledged as asked.
        return {"Address": f"{lease.ip if lease else address}/{pool.subnet.prefixlen}", "Data": {}}

    def release_address(self, request: Request) -> dict[str, Any]:
        pool = _pool(request, self.ipam)
        self.ipam.release_address(_address(request, required=True), pool, keep=True)
        return {}

    def _own_address(self, subnet: Subnet) -> str:
        """The gateway of a network created without ``--gateway``: this host's own address
        in the subnet (recorded by ``create-network``), which a bridge network puts on its
        bridge. Anything else would need guessing, so it is an error."""
        mine = self.ipam.own_addresses(subnet)
        if len(mine) == 1:
            return mine[0]
        found = f"holds {', '.join(mine)}" if mine else "holds no address"
        raise InvalidInput(
            f"give docker network create a --gateway: this host ({self.ipam.host}) {found} in {subnet}"
            " (a bridge network's gateway is this host's LAN address, a macvlan network's the LAN router)"
        )
