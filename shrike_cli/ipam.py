"""The Python API: what the CLI commands and the Docker plugin call.

>>> from shrike_cli.stores import open_store
>>> ipam = Ipam(open_store(None, "/tmp/shrike-doc"))            # doctest: +SKIP
>>> ipam.declare_host_range("198.51.100.1/24", "198.51.100.99/24", "198.51.100.254")  # doctest: +SKIP
>>> ipam.declare_ip_range("198.51.100.100/24", "198.51.100.199/24")  # doctest: +SKIP
>>> ipam.request_address("198.51.100.0/24").cidr               # doctest: +SKIP
'198.51.100.100/24'

Pools and subnets are taken as values (:class:`~shrike_cli.pools.Pool`,
:class:`~shrike_cli.model.Subnet`); text is accepted too and parsed once, here, for
people and scripts. Addresses are text, checked as they come in.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TypeVar

from .allocator import Allocator
from .errors import Conflict, InvalidInput, NotFound
from .model import (
    KIND_CONTAINER,
    KIND_GATEWAY,
    KIND_HOST,
    SHARED_KINDS,
    STATE_HELD,
    STATE_RELEASED,
    STATE_RESERVED,
    Config,
    Holder,
    IPv4,
    Lease,
    Subnet,
    Window,
    parse_address,
    validate_mac,
)
from .pools import Pool, Pools
from .ranges import Declared, declare_host_range, declare_ip_range
from .state import Change, PreconditionFailed, State, StoredLease
from .stores.base import Store

T = TypeVar("T")

#: How long a long-running caller (the plugin) trusts its copy of the declarations.
CONFIG_TTL = 2.0


def _address(text: str, what: str) -> IPv4:
    """A plain address typed by someone (no prefix length)."""
    return IPv4(parse_address(text, what, prefix="forbidden")[0])


def _pool(pool: Pool | str, sub_pool: str | None = None) -> Pool:
    return Pool.of(pool, sub_pool) if isinstance(pool, str) else pool


def _subnet(subnet: Subnet | str, what: str = "subnet") -> Subnet:
    return Subnet.parse(subnet, what) if isinstance(subnet, str) else subnet


class Ipam:
    """Address management over one store, acting for one host (``host``).

    ``max_wait`` bounds how long one call may spend retrying compare-and-swap
    conflicts before it fails (the store is overloaded)."""

    def __init__(self, store: Store, *, host: str | None = None, max_wait: float = 30.0) -> None:
        self.store = store
        self.host = host or socket.gethostname()
        self.max_wait = max_wait
        self.state = State(store)
        self.allocator = Allocator(self.state, max_wait=max_wait)
        self.pools = Pools(store, self.host, max_wait=max_wait)
        self._config: Config | None = None
        self._config_read = 0.0

    # ------------------------------------------------------------ declarations
    def declare_host_range(self, ip_start: str, ip_end: str, gateway: str | None = None) -> Declared:
        """Declare the LAN subnet (from the prefix length), its gateway and host addresses."""
        self._config = None
        return declare_host_range(self.state, ip_start, ip_end, gateway, max_wait=self.max_wait)

    def declare_ip_range(self, ip_start: str, ip_end: str) -> Declared:
        """Declare a range handed to containers."""
        self._config = None
        return declare_ip_range(self.state, ip_start, ip_end, max_wait=self.max_wait)

    def config(self, *, fresh: bool = True) -> Config:
        """The declarations; ``fresh=False`` accepts a copy up to CONFIG_TTL seconds old."""
        if fresh or self._config is None or time.monotonic() - self._config_read > CONFIG_TTL:
            self._config = self.state.config()[0]
            self._config_read = time.monotonic()
        return self._config

    def _with_config(self, action: Callable[[Config], T]) -> T:
        """Run ``action`` on the cached declarations; if it finds something unknown,
        the cache may predate a new declaration, so try once more on a fresh read."""
        try:
            return action(self.config(fresh=False))
        except (NotFound, InvalidInput):
            return action(self.config())

    # --------------------------------------------------------------- containers
    def windows(self, pool: Pool | str) -> list[Window]:
        """Where dynamic addresses of ``pool`` come from; errors when there is nowhere."""
        pool = _pool(pool)
        subnet, narrow = pool.subnet, pool.sub_pool
        if narrow and not subnet.holds(narrow):
            raise InvalidInput(f"sub-pool {narrow} is not inside {subnet}")

        def find(config: Config) -> list[Window]:
            windows = [
                Window(r, max(r.start, narrow.network), min(r.end, narrow.broadcast)) if narrow else Window.whole(r)
                for r in config.container_ranges_in(subnet)
                if not narrow or (r.start <= narrow.broadcast and narrow.network <= r.end)
            ]
            if not windows:
                where = f"{subnet}" + (f" within {narrow}" if narrow else "")
                raise NotFound(f"no container range in {where}: declare one with 'shrike ip-range'", reason="no_range")
            return windows

        return self._with_config(find)

    def request_address(
        self,
        pool: Pool | str,
        ip: str | None = None,
        *,
        sub_pool: str | None = None,
        mac: str | None = None,
        owner: dict[str, str] | None = None,
    ) -> Lease:
        """Give a container an address of ``pool``: ``ip`` if given and free (Docker's
        ``--ip``), else the next one by the allocation policy. The lease's ``cidr``
        carries the pool's prefix length. ``sub_pool`` narrows a pool given as text."""
        pool = _pool(pool, sub_pool)
        holder = Holder(
            kind=KIND_CONTAINER,
            state=STATE_HELD,
            subnet=pool.subnet,
            host=self.host,
            mac=validate_mac(mac) if mac else "",
            owner=dict(owner or {}),
        )
        if ip is None:
            return self.allocator.allocate(self.windows(pool), holder)
        return self._claim_container(holder, _address(ip, "address"))

    def _claim_container(self, holder: Holder, ip: IPv4, **kwargs: object) -> Lease:
        pool = holder.subnet
        address = int(ip)

        def locate(config: Config) -> str:
            container_range = config.container_range_of(address)
            if container_range and pool.covers(container_range.start, container_range.end):
                return container_range.id
            if not pool.contains(address):
                raise InvalidInput(f"{ip} is outside the subnet {pool}", reason="outside_subnet")
            if config.host_range_of(address):
                raise InvalidInput(
                    f"{ip} is a host address (host-range {config.host_range_of(address)}), not for containers",
                    reason="host_address",
                )
            if config.is_lan_gateway(address):
                raise InvalidInput(f"{ip} is the gateway of the LAN, not for containers", reason="lan_gateway")
            raise InvalidInput(f"{ip} is outside every container range of {pool}", reason="outside_ranges")

        range_id = self._with_config(locate)
        return self.allocator.claim(
            ip,
            holder,
            range_id,
            # Docker's --ip may take up a reservation (its container starting); another
            # reservation may not.
            may_take=lambda old: (
                old.state == STATE_RELEASED
                or (old.state == STATE_RESERVED and old.kind == KIND_CONTAINER and not holder.name)
            ),
            **kwargs,  # type: ignore[arg-type]
        )

    def release_address(self, ip: str) -> Lease | None:
        """Docker's ReleaseAddress: free a container address (a named reservation stays
        reserved), drop this host from a shared gateway/aux record; host addresses and
        unknown addresses are left alone."""
        stored = self.state.lease(ip)
        if stored is None:
            return None
        lease = stored.lease
        if lease.kind == KIND_CONTAINER:
            return self.allocator.release(ip)
        if lease.kind in SHARED_KINDS:
            return self._update_shared(_address(ip, "address"), remove=True)
        return lease

    def release_container(self, ip: str) -> Lease:
        """The operator's ``release --ip``: free a container address, ending its
        reservation if it has one. An address no container holds is an error."""
        _address(ip, "--ip")
        current = self.lease(ip)
        if current is None or current.state == STATE_RELEASED:
            raise NotFound(f"no container holds {ip}")
        if current.kind != KIND_CONTAINER:
            hint = " (use --host)" if current.kind == KIND_HOST else ""
            raise InvalidInput(f"{ip} is a {current.kind} address, not a container's{hint}")
        lease = self.allocator.release(ip, end_reservation=True)
        if lease is not None and lease.state == STATE_HELD:
            # A reservation ended on a running container; the operator asked for the address.
            lease = self.allocator.release(ip)
        assert lease is not None
        return lease

    def release_if_unchanged(self, ip: str, revision: int) -> Lease | None:
        """Reconcile's release of a leaked address: like :meth:`release_address` (a named
        reservation stays reserved), but only if the lease is still as written at store
        ``revision``. A lease re-taken or released since is left alone and the answer is
        None, so a reconcile racing a new allocation never frees a live address."""
        return self.allocator.release(ip, expected_revision=revision)

    def set_owner(self, lease: Lease, revision: int, owner: dict[str, str]) -> Lease | None:
        """Record who holds ``lease`` (container id, name, network), read at store
        ``revision``: if the lease was written since (released, taken again), nothing is
        written and the answer is None. One compare-and-swap, no retry: the caller's
        view of the holder is as stale as the lease."""
        new = replace(lease, owner=dict(owner))
        change = Change()
        change.expect_lease(lease.ip, revision)
        change.write(new, previous=lease)
        return new if self.state.commit(change).succeeded else None

    # ---------------------------------------------------------- reservations
    def reserve(self, name: str, ip: str | None = None, subnet: Subnet | str | None = None) -> Lease:
        """Reserve a container address for ``name`` (idempotent): it is never handed to a
        dynamic request, and survives its container's stops."""
        if not name or "/" in name:
            raise InvalidInput(f"'{name}' is not a usable reservation name")
        address = _address(ip, "--ip") if ip else None
        while True:
            reserved, guard = self.state.reservation(name)
            if reserved is not None:
                if address and reserved != address:
                    raise Conflict(f"{name} already holds {reserved}")
                lease = self.lease(reserved)
                if lease is not None:
                    return lease
            pool = self._reservation_subnet(address, subnet)
            holder = Holder(kind=KIND_CONTAINER, state=STATE_RESERVED, subnet=pool, host=self.host, name=name)
            try:
                if address is None:
                    return self.allocator.allocate(self.windows(Pool(pool)), holder, guards=[guard])
                return self._claim_container(holder, address, guards=[guard])
            except PreconditionFailed:
                continue  # someone reserved the same name meanwhile: answer with theirs

    def _reservation_subnet(self, ip: IPv4 | None, subnet: Subnet | str | None) -> Subnet:
        if subnet:
            return _subnet(subnet, "--subnet")
        config = self.config(fresh=False)
        if ip:
            container_range = config.container_range_of(int(ip))
            if container_range is None:
                raise InvalidInput(f"{ip} is outside every container range")
            return config.lan_of(container_range)
        subnets = {config.lan_of(r) for r in config.ip_ranges}
        if len(subnets) != 1:
            raise InvalidInput(
                "give --subnet: " + ("no container range is declared" if not subnets else "there are several subnets")
            )
        return subnets.pop()

    def release_name(self, name: str) -> Lease:
        """End a reservation; a running container keeps its address until it stops."""
        reserved, guard = self.state.reservation(name)
        if reserved is None:
            raise NotFound(f"no reservation named {name}")
        lease = self.allocator.release(reserved, end_reservation=True)
        if lease is None:
            # The index outlived its lease (should not happen): drop the dangling name.
            self.state.drop_dangling_reservation(guard)
            raise NotFound(f"no reservation named {name}")
        return lease

    # ------------------------------------------------------------------ hosts
    def claim_host(self, ip: str) -> Lease:
        """Record ``ip`` (in a host range) as this host's address; idempotent."""
        address = _address(ip, "--ip")

        def locate(config: Config) -> Subnet:
            if config.host_range_of(int(address)) is None:
                raise InvalidInput(f"{ip} is not in any host range (declare one with 'shrike host-range')")
            subnet = config.lan_subnet_of(int(address))
            assert subnet is not None
            return subnet

        holder = Holder(kind=KIND_HOST, state=STATE_HELD, subnet=self._with_config(locate), host=self.host)
        return self.allocator.claim(address, holder, may_take=lambda old: old.is_host_of(self.host))

    def release_host(self, ip: str) -> Lease:
        """The operator's ``release --host``: forget a host's address."""
        _address(ip, "--host")

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

    def own_addresses(self, subnet: Subnet | None = None) -> list[IPv4]:
        """This host's own LAN addresses (recorded by ``create-network``), in ``subnet`` if given."""
        return [
            lease.ip
            for lease in self.leases()
            if lease.is_host_of(self.host) and (subnet is None or subnet.contains(int(lease.ip)))
        ]

    # ------------------------------------------------------- gateway and aux
    def request_gateway(self, pool: Pool | Subnet | str, ip: str, *, kind: str = KIND_GATEWAY) -> Lease:
        """Record a Docker network's gateway (``kind=gateway``) or aux address
        (``kind=reserved``). Shared by every host whose network names it; never a
        container address. This host's own host address is accepted as gateway."""
        subnet = pool.subnet if isinstance(pool, Pool) else _subnet(pool)
        address = _address(ip, "address")
        if not subnet.covers(int(address), int(address)):
            raise InvalidInput(f"{ip} is not a usable address of {subnet}")
        if self._with_config(lambda c: c.container_range_of(int(address))):
            raise InvalidInput(f"{ip} is a container address; a gateway or aux address must lie outside ip-range")
        return self._update_shared(address, Holder(kind=kind, state=STATE_HELD, subnet=subnet, host=self.host))

    def _update_shared(self, ip: IPv4, holder: Holder | None = None, *, remove: bool = False) -> Lease | None:
        """Add this host to the users of a shared gateway/aux record (``holder`` describes
        a new one), or with ``remove`` drop it; the record goes with its last user."""

        def decide(stored: StoredLease | None) -> tuple[Lease | None, Change | None]:
            old = stored.lease if stored else None
            if old is not None and old.kind == KIND_HOST:
                if old.host != self.host and not remove:
                    raise Conflict(f"{ip} is the address of host {old.host}", reason="host_address")
                return old, None
            if old is not None and old.kind == KIND_CONTAINER:
                if remove:
                    return old, None
                raise Conflict(f"{ip} is already in use ({old.describe()})", reason="in_use")
            users = set(old.users) if old else set()
            if remove:
                if old is None:
                    return None, None
                users.discard(self.host)
                base = old
            else:
                users.add(self.host)
                assert holder is not None
                base = old or holder.lease(ip)
            new = replace(base, users=tuple(sorted(users)))
            if old == new:
                return new, None
            change = Change()
            if new.users:
                change.write(new, previous=old)
            else:
                change.delete(new)
            return new, change

        return self.state.update_lease(ip, decide, max_wait=self.max_wait)

    # ----------------------------------------------------------------- reads
    def lease(self, ip: str) -> Lease | None:
        stored = self.state.lease(ip)
        return stored.lease if stored else None

    def leases(self, *, include_released: bool = False) -> list[Lease]:
        """Every recorded address in address order (released ones only on request)."""
        return [lease for lease, _ in self.lease_entries(include_released=include_released)]

    def lease_entries(self, *, include_released: bool = False) -> list[tuple[Lease, int]]:
        """:meth:`leases` with the store revision of each, for a compare-and-swap later
        (:meth:`release_if_unchanged`, :meth:`set_owner`)."""
        entries = [(s.lease, s.revision) for s in self.state.leases()]
        if not include_released:
            entries = [(lease, rev) for lease, rev in entries if lease.state != STATE_RELEASED]
        return sorted(entries, key=lambda entry: int(entry[0].ip))
