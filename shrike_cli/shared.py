"""The gateway and aux addresses of Docker networks: where they may lie, and the records
that keep them from containers.

Docker asks for a network's gateway (and its ``--aux-address`` es) with RequestAddress
on the network's pool. Such an address must lie outside every container range. In a host
range, a gateway is a host's own LAN address (a bridge network's gateway is the host's
address on its bridge: see :mod:`.hosts`), and an aux address there, or the LAN's
gateway, is kept from containers already, so nothing is recorded for it.

Elsewhere it gets a lease of kind ``gateway`` or ``aux``, shared by every network naming
the address, on any host: its ``refs`` count the uses per host and pool
(``{host: {pool name: n}}``), and the record goes with its last use. Counting per pool
lets ReleasePool drop what a failed ``network create`` asked for and never released.
"""

from __future__ import annotations

from dataclasses import replace

from .errors import Conflict, InvalidInput
from .hosts import Hosts
from .model import IP, KIND_CONTAINER, KIND_GATEWAY, KIND_HOST, SHARED_KINDS, STATE_HELD, Holder, Lease, parse_ip
from .pools import Pool
from .ranges import Declarations
from .state import Change, State, StoredLease


def _counted(refs: dict[str, dict[str, int]], host: str, pool: Pool | None, delta: int) -> dict[str, dict[str, int]]:
    """``refs`` of a shared record once ``host`` uses it once more (``delta`` +1) or once
    less (-1) in ``pool``, or no more (0) in ``pool`` (None: nobody, anywhere). A release
    whose pool has no count takes one from a count of unknown pool (records written
    before 0.2), or, naming no pool, from any of the host's."""
    if pool is None and delta == 0:
        return {}
    mine = refs.setdefault(host, {})
    name = pool.name if pool is not None else ""
    if delta < 0 and name not in mine:
        name = "" if "" in mine else (min(mine, default="") if pool is None else name)
    count = mine.get(name, 0) + delta if delta else 0
    if count > 0:
        mine[name] = count
    else:
        mine.pop(name, None)
    return {h: pools for h, pools in refs.items() if pools}


class SharedAddresses:
    """The gateway and aux records of the networks of one host (``host``)."""

    def __init__(self, state: State, declarations: Declarations, hosts: Hosts, host: str, *, max_wait: float) -> None:
        self.state = state
        self.declarations = declarations
        self.hosts = hosts
        self.host = host
        self.max_wait = max_wait

    def request(self, pool: Pool, ip: str, kind: str) -> Lease | None:
        """Record ``ip`` as a gateway or aux address (``kind``) of a network of ``pool``
        on this host; None when it is kept from containers without a record."""
        address = parse_ip(ip, "address")
        if not pool.subnet.covers(int(address), int(address)):
            raise InvalidInput(f"{ip} is not a usable address of {pool.subnet}")
        config = self.declarations.read()  # rare (network create), and a new host range must count
        if config.container_range_of(int(address)):
            raise InvalidInput(f"{ip} is a container address; a gateway or aux address must lie outside ip-range")
        if config.host_range_of(int(address)):
            return self.hosts.claim(address) if kind == KIND_GATEWAY else None
        if kind != KIND_GATEWAY and config.is_lan_gateway(int(address)):
            return None
        return self._update(address, pool, +1, Holder(kind=kind, state=STATE_HELD, subnet=pool.subnet, host=self.host))

    def release(self, ip: IP, pool: Pool | None) -> Lease | None:
        """One use less by a network of this host in ``pool`` (None: the release names none)."""
        return self._update(ip, pool, -1)

    def release_everywhere(self, ip: IP) -> Lease | None:
        """The operator's release: drop the record, whoever uses it."""
        return self._update(ip, None, 0)

    def release_pool(self, pool: Pool) -> None:
        """Drop this host's uses in ``pool`` of every record: its last network of ``pool`` is gone."""
        for stored in self.state.leases():
            lease = stored.lease
            if lease.kind in SHARED_KINDS and pool.name in lease.refs.get(self.host, {}):
                self._update(lease.ip, pool, 0)

    def _update(self, ip: IP, pool: Pool | None, delta: int, holder: Holder | None = None) -> Lease | None:
        """Count one more (``delta`` +1, ``holder`` describing a new record) or one less
        (-1) use of a shared record by this host's networks in ``pool``; 0 drops this
        host's uses in ``pool`` (all hosts' uses when ``pool`` is None). The record goes
        with its last use. A host's or a container's lease at ``ip`` is left alone."""

        def decide(stored: StoredLease | None) -> tuple[Lease | None, Change | None]:
            old = stored.lease if stored else None
            if old is not None and old.kind == KIND_HOST:
                if old.host != self.host and delta > 0:
                    raise Conflict(f"{ip} is the address of host {old.host}", reason="host_address")
                return old, None
            if old is not None and old.kind == KIND_CONTAINER:
                if delta <= 0:
                    return old, None
                raise Conflict(f"{ip} is already in use ({old.describe()})", reason="in_use")
            if old is None and delta <= 0:
                return None, None
            if old is None:
                assert holder is not None
                old_refs: dict[str, dict[str, int]] = {}
                base = holder.lease(ip)
            else:
                old_refs = {host: dict(pools) for host, pools in old.refs.items()}
                base = old
            refs = _counted(old_refs, self.host, pool, delta)
            new = replace(base, refs=refs)
            if old == new:
                return new, None
            change = Change()
            if new.users:
                change.write(new, previous=old)
            else:
                change.delete(new)
            return new, change

        return self.state.update_lease(ip, decide, max_wait=self.max_wait)
