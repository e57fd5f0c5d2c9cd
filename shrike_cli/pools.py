"""Docker address pools: their stable ids and which hosts use them.

A pool is what ``docker network create --subnet S [--ip-range R]`` asks for: a subnet,
optionally narrowed by a sub-pool, and for an IPv6 /64 optionally the choice of addresses
derived from the containers' MACs (``--ipam-opt eui64=true``). Its id is derived from
them (``shrike/198.51.100.0/24``, ``shrike/198.51.100.0/24/198.51.100.128/25``,
``shrike/2001:db8:1::/64+eui64``), so every host and every restart names the same pool
the same way, and a RequestAddress carrying only the id says where and how to allocate
without any lookup: dockerd stores pool ids with its networks and keeps using them
across its own and the plugin's restarts.

A pool's record (``{"subnet": ..., "sub_pool": ..., "refs": {host: n}}``, see
:mod:`.state`) counts, per host, the networks using the pool (RequestPool adds one,
ReleasePool drops one; the record goes when nobody uses it). It is bookkeeping for people
and for the CLI; allocation never depends on it.

Networks created with oam-docker-ipam, the original, carry its pool ids: a bare network
address (``172.25.60.0``), see :meth:`Pool.original`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from .errors import InvalidInput, NotFound
from .model import Config, IPv4, Subnet
from .state import EUI64_SUFFIX, State, pool_key
from .stores.base import Store

ID_PREFIX = "shrike/"


def _address(text: str) -> IPv4 | None:
    try:
        return IPv4(text)
    except InvalidInput:
        return None


@dataclass(frozen=True)
class Pool:
    """A subnet, the sub-pool dynamic addresses come from (None: the whole subnet),
    whether a container with a MAC gets the address it derives (``eui64``, IPv6 /64
    only), and how many networks of each host use it."""

    subnet: Subnet
    sub_pool: Subnet | None = None
    refs: Mapping[str, int] = field(default_factory=dict)
    eui64: bool = False

    @classmethod
    def of(cls, subnet: str, sub_pool: str | None = None, *, eui64: bool = False) -> Pool:
        """Parse a subnet and optional sub-pool; a sub-pool equal to the subnet is none.
        Whether the sub-pool lies inside the subnet is :meth:`Ipam.windows`'s to check."""
        pool = Subnet.parse(subnet, "subnet")
        narrow = Subnet.parse(sub_pool, "sub-pool") if sub_pool else None
        if eui64 and (pool.version, pool.prefixlen) != (6, 64):
            raise InvalidInput(f"addresses derived from MACs (eui64) need an IPv6 /64 subnet, not {pool}")
        return cls(pool, None if narrow == pool else narrow, eui64=eui64)

    @classmethod
    def from_id(cls, pool_id: str, config: Config | None = None) -> Pool:
        """The pool an id names. A bare subnet is accepted too, as older plugins used it,
        and with ``config``, the original's ids (:meth:`original`)."""
        if config is not None and (address := _address(pool_id)) is not None:
            return cls.original(address, config)
        body = pool_id.removeprefix(ID_PREFIX)
        eui64 = body.endswith(EUI64_SUFFIX)
        cidrs = body.removesuffix(EUI64_SUFFIX).split("/")
        if len(cidrs) not in (2, 4):
            raise InvalidInput(
                f"'{pool_id}' is not a shrike pool id (expected {ID_PREFIX}SUBNET[/SUB-POOL][{EUI64_SUFFIX}])"
            )
        try:
            return cls.of("/".join(cidrs[:2]), "/".join(cidrs[2:]) or None, eui64=eui64)
        except InvalidInput as err:
            raise InvalidInput(f"'{pool_id}' is not a shrike pool id: {err}") from None

    @classmethod
    def original(cls, pool_id: IPv4, config: Config) -> Pool:
        """The pool of a network oam-docker-ipam created, from the id it gave it.

        The original answered RequestPool with the network address of the subnet asked for
        (``172.25.60.0`` for ``--subnet 172.25.60.0/22``, the LAN) and handed out addresses
        from the ip-ranges it had keyed by that address: those typed with a prefix whose
        network address it is (``172.25.60.187/24``). So the pool is the LAN those ranges
        belong to, narrowed to the widest subnet they were typed in (``172.25.60.0/24``).
        """
        keyed = [r for r in config.ip_ranges if r.subnet.network == int(pool_id)]
        if not keyed:
            raise NotFound(
                f"no container range is keyed by {pool_id}, the oam-docker-ipam pool id of this network:"
                " import the original's ranges with 'shrike import oam-docker-ipam'"
            )
        typed = min((r.subnet for r in keyed), key=lambda subnet: subnet.prefixlen)
        lan = config.lan_of(keyed[0])
        return cls(lan, typed if lan.holds(typed) and typed != lan else None)

    @property
    def name(self) -> str:
        """``subnet[/sub-pool][+eui64]``: the id without its prefix, and the record's key suffix."""
        name = f"{self.subnet}/{self.sub_pool}" if self.sub_pool else str(self.subnet)
        return name + EUI64_SUFFIX if self.eui64 else name

    @property
    def id(self) -> str:
        return ID_PREFIX + self.name

    @property
    def key(self) -> str:
        """Where the pool's record is stored."""
        return pool_key(self.name)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"id": self.id, "subnet": str(self.subnet), "refs": dict(sorted(self.refs.items()))}
        if self.sub_pool:
            data["sub_pool"] = str(self.sub_pool)
        if self.eui64:
            data["eui64"] = True
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Pool:
        pool = cls.of(data["subnet"], data.get("sub_pool"), eui64=bool(data.get("eui64")))
        return replace(pool, refs=dict(data.get("refs", {})))


class Pools:
    """Reference counts of pools, kept for one host (``host``) with compare-and-swap."""

    def __init__(self, store: Store, host: str, *, max_wait: float = 30.0) -> None:
        self.state = State(store)
        self.host = host
        self.max_wait = max_wait

    def acquire(self, pool: Pool) -> Pool:
        """Count one more network of this host using ``pool``; returns the record."""
        return self._update(pool, +1)

    def release(self, pool: Pool) -> Pool:
        """Count one network less; releasing a pool this host does not use changes nothing."""
        return self._update(pool, -1)

    def list(self) -> list[Pool]:
        """Every pool some host uses, in key order."""
        return [Pool.from_json(record) for record in self.state.pool_records()]

    def _update(self, pool: Pool, delta: int) -> Pool:
        def decide(record: Mapping[str, Any] | None) -> tuple[Pool, dict[str, Any] | None, bool]:
            old = dict(Pool.from_json(record).refs) if record else {}
            refs = {host: n for host, n in old.items() if host != self.host}
            if (count := old.get(self.host, 0) + delta) > 0:
                refs[self.host] = count
            new = replace(pool, refs=refs)
            return new, new.to_json() if refs else None, refs != old

        return self.state.update_pool_record(pool.name, decide, max_wait=self.max_wait)
