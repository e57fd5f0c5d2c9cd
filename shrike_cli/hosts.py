"""Addresses recorded at this host's word rather than at a container's request: its own
LAN addresses, and the addresses adopted from dockerd's account.

A host lease records a host's address in a host range (``create-network`` records the
host's address on its bridge, and a bridge network's gateway is that address): it stays
the host's until the operator's ``release --host``, and another host's is never taken.

Adoption (``shrike adopt``, see :mod:`.adopt`) records an address this host holds by
dockerd's account over what the store says of it, as far as :meth:`Hosts.adoptable`
allows: it finishes a takeover from the original and rebuilds a lost store, so it may
take what names nobody, never what the store gives to another container or host.
"""

from __future__ import annotations

from .allocator import Allocator
from .errors import Conflict, InvalidInput, NotFound
from .model import (
    KIND_CONFLICT,
    KIND_CONTAINER,
    KIND_HOST,
    STATE_HELD,
    Config,
    Holder,
    Lease,
    Subnet,
    parse_ip,
    validate_mac,
)
from .ranges import Declarations
from .state import Change, State, StoredLease


class Hosts:
    """Host leases and adoption, for one host (``host``)."""

    def __init__(
        self, state: State, allocator: Allocator, declarations: Declarations, host: str, *, max_wait: float
    ) -> None:
        self.state = state
        self.allocator = allocator
        self.declarations = declarations
        self.host = host
        self.max_wait = max_wait

    def adoptable(self, old: Lease | None, kind: str, mac: str = "") -> bool:
        """Whether an address this host holds by dockerd's account (a container's with the
        MAC ``mac``, or for ``kind`` host, this host's own) may be recorded as such over its
        lease ``old``: when there is none, it is released or reserved (a container started
        with --ip takes up a reservation), it names no host (imported from the original),
        or it is this host's already; or it is a conflict found answering from that very
        MAC (the container was probed, its address not recorded)."""
        if old is None:
            return True
        if kind == KIND_HOST:
            return old.kind == KIND_HOST and old.host in ("", self.host)
        if old.kind == KIND_CONFLICT:
            return bool(mac) and old.mac == mac
        return old.kind == KIND_CONTAINER and (
            old.state != STATE_HELD or not old.host or old.is_container_of(self.host, mac)
        )

    def claim(self, ip: str, *, adopt: bool = False) -> Lease:
        """Record ``ip`` (in a host range) as this host's address; idempotent. With
        ``adopt``, also over a host lease naming no host (:meth:`adoptable`)."""
        address = parse_ip(ip, "--ip")

        def locate(config: Config) -> Subnet:
            if config.host_range_of(int(address)) is None:
                raise InvalidInput(f"{ip} is not in any host range (declare one with 'shrike host-range')")
            subnet = config.lan_subnet_of(int(address))
            assert subnet is not None
            return subnet

        def may_take(old: Lease) -> bool:
            if adopt and self.adoptable(old, KIND_HOST):
                return True
            if old.kind == KIND_HOST and old.host != self.host:
                raise Conflict(f"{ip} is the address of host {old.host}")
            return old.is_host_of(self.host)

        holder = Holder(kind=KIND_HOST, state=STATE_HELD, subnet=self.declarations.apply(locate), host=self.host)
        return self.allocator.claim(address, holder, may_take=may_take)

    def release(self, ip: str) -> Lease:
        """The operator's ``release --host``: forget a host's address."""
        ip = parse_ip(ip, "--host")  # IPv6 as stored: canonical

        def decide(stored: StoredLease | None) -> tuple[Lease, Change]:
            if stored is None:
                raise NotFound(f"no host holds {ip}")
            lease = stored.lease
            if lease.kind != KIND_HOST:
                raise InvalidInput(f"{ip} is a {lease.kind} address, not a host's")
            change = Change()
            change.delete(lease)
            return lease, change

        return self.state.update_lease(ip, decide, max_wait=self.max_wait)

    def adopt_container(self, ip: str, *, mac: str = "", owner: dict[str, str] | None = None) -> Lease:
        """Record ``ip``, which a container of this host holds by dockerd's account, as held
        by it (``mac``, ``owner``); :class:`Conflict` when the store gives it to another
        container or host (:meth:`adoptable`), :class:`InvalidInput` when it lies in no
        container range."""
        address = parse_ip(ip, "address")
        subnet, range_id = self.declarations.container_range(address)
        mac = validate_mac(mac) if mac else ""
        holder = Holder(KIND_CONTAINER, STATE_HELD, subnet, self.host, mac=mac, owner=dict(owner or {}))
        return self.allocator.claim(
            address, holder, range_id, may_take=lambda old: self.adoptable(old, KIND_CONTAINER, mac)
        )
