"""The Python API: what the CLI commands and the Docker plugin call.

>>> from shrike_cli.stores import open_store
>>> ipam = Ipam(open_store(None, "/tmp/shrike-doc"))            # doctest: +SKIP
>>> ipam.declare_host_range("198.51.100.1/24", "198.51.100.99/24", "198.51.100.254")  # doctest: +SKIP
>>> ipam.declare_ip_range("198.51.100.100/24", "198.51.100.199/24")  # doctest: +SKIP
>>> ipam.request_address("198.51.100.0/24").cidr               # doctest: +SKIP
'198.51.100.100/24'
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TypeVar

from .allocator import LEASES, Allocator, PreconditionFailed, Window, describe, lease_key, name_key
from .cas import update
from .errors import Conflict, InvalidInput, NotFound
from .model import (
    KIND_CONTAINER,
    KIND_GATEWAY,
    KIND_HOST,
    KIND_RESERVED,
    STATE_HELD,
    STATE_RELEASED,
    STATE_RESERVED,
    Config,
    Lease,
    Subnet,
    ip_to_int,
    now_iso,
    parse_address,
    validate_mac,
)
from .ranges import Declared, declare_host_range, declare_ip_range, load_config
from .stores.base import Delete, Entry, Op, Put, Store

T = TypeVar("T")

#: How long a long-running caller (the plugin) trusts its copy of the declarations.
CONFIG_TTL = 2.0


class Ipam:
    """Address management over one store, acting for one host (``host``)."""

    def __init__(self, store: Store, *, host: str | None = None, max_wait: float = 30.0) -> None:
        self.store = store
        self.host = host or socket.gethostname()
        self.allocator = Allocator(store, max_wait=max_wait)
        self._config: Config | None = None
        self._config_read = 0.0

    # ------------------------------------------------------------ declarations
    def declare_host_range(self, ip_start: str, ip_end: str, gateway: str | None = None) -> Declared:
        """Declare the LAN subnet (from the prefix length), its gateway and host addresses."""
        self._config = None
        return declare_host_range(self.store, ip_start, ip_end, gateway)

    def declare_ip_range(self, ip_start: str, ip_end: str) -> Declared:
        """Declare a range handed to containers."""
        self._config = None
        return declare_ip_range(self.store, ip_start, ip_end)

    def config(self, *, fresh: bool = True) -> Config:
        """The declarations; ``fresh=False`` accepts a copy up to CONFIG_TTL seconds old."""
        if fresh or self._config is None or time.monotonic() - self._config_read > CONFIG_TTL:
            self._config = load_config(self.store)[0]
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
    def windows(self, subnet: str, sub_pool: str | None = None) -> list[Window]:
        """Where dynamic addresses of ``subnet`` come from; errors when there is nowhere."""
        pool = Subnet.parse(subnet, "subnet")
        narrow = Subnet.parse(sub_pool, "sub-pool") if sub_pool else None
        if narrow and not (pool.contains(narrow.network) and pool.contains(narrow.broadcast)):
            raise InvalidInput(f"sub-pool {narrow} is not inside {pool}")

        def find(config: Config) -> list[Window]:
            windows = [
                Window(r, max(r.start, narrow.network), min(r.end, narrow.broadcast)) if narrow else Window.whole(r)
                for r in config.container_ranges_in(pool)
                if not narrow or (r.start <= narrow.broadcast and narrow.network <= r.end)
            ]
            if not windows:
                where = f"{pool}" + (f" within {narrow}" if narrow else "")
                raise NotFound(f"no container range in {where}: declare one with 'shrike ip-range'")
            return windows

        return self._with_config(find)

    def request_address(
        self,
        subnet: str,
        ip: str | None = None,
        *,
        sub_pool: str | None = None,
        mac: str | None = None,
        owner: dict[str, str] | None = None,
    ) -> Lease:
        """Give a container an address of ``subnet``: ``ip`` if given and free (Docker's
        ``--ip``), else the next one by the reuse rule. The lease's ``cidr`` carries the
        subnet's prefix length."""
        template = Lease(
            ip="",
            kind=KIND_CONTAINER,
            state=STATE_HELD,
            subnet=str(Subnet.parse(subnet, "subnet")),
            host=self.host,
            mac=validate_mac(mac) if mac else "",
            owner=dict(owner or {}),
        )
        if ip is None:
            return self.allocator.allocate(self.windows(subnet, sub_pool), template)
        return self._claim_container(template, ip)

    def _claim_container(self, template: Lease, ip: str, **kwargs: object) -> Lease:
        address = parse_address(ip, "address", prefix="forbidden")[0]
        pool = Subnet.parse(template.subnet)

        def locate(config: Config) -> str:
            container_range = config.container_range_of(address)
            if container_range and pool.covers(container_range.start, container_range.end):
                return container_range.id
            if not pool.contains(address):
                raise InvalidInput(f"{ip} is outside the subnet {pool}")
            if config.host_range_of(address):
                raise InvalidInput(
                    f"{ip} is a host address (host-range {config.host_range_of(address)}), not for containers"
                )
            if ip in config.gateways.values():
                raise InvalidInput(f"{ip} is the gateway of the LAN, not for containers")
            raise InvalidInput(f"{ip} is outside every container range of {pool}")

        range_id = self._with_config(locate)
        return self.allocator.claim(
            ip,
            replace(template, range=range_id),
            # Docker's --ip may take up a reservation (its container starting); another
            # reservation may not.
            may_take=lambda old: (
                old.state == STATE_RELEASED
                or (old.state == STATE_RESERVED and old.kind == KIND_CONTAINER and not template.name)
            ),
            **kwargs,  # type: ignore[arg-type]
        )

    def release_address(self, ip: str) -> Lease | None:
        """Docker's ReleaseAddress: free a container address (a named reservation stays
        reserved), drop this host from a shared gateway/aux record; host addresses and
        unknown addresses are left alone."""
        entry = self.store.get(lease_key(ip))
        if entry is None:
            return None
        lease = Lease.from_json(entry.value)
        if lease.kind == KIND_CONTAINER:
            return self.allocator.release(ip)
        if lease.kind in (KIND_GATEWAY, KIND_RESERVED):
            return self._update_shared(ip, remove=True)
        return lease

    def release_container(self, ip: str) -> Lease:
        """The operator's ``release --ip``: free a container address, ending its
        reservation if it has one. An address no container holds is an error."""
        parse_address(ip, "--ip", prefix="forbidden")
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
        key = lease_key(lease.ip)
        return new if self.store.txn([(key, revision)], [Put(key, new.to_json())]).succeeded else None

    # ---------------------------------------------------------- reservations
    def reserve(self, name: str, ip: str | None = None, subnet: str | None = None) -> Lease:
        """Reserve a container address for ``name`` (idempotent): it is never handed to a
        dynamic request, and survives its container's stops."""
        if not name or "/" in name:
            raise InvalidInput(f"'{name}' is not a usable reservation name")
        while True:
            existing = self.store.get(name_key(name))
            if existing is not None:
                lease = self.lease(existing.value["ip"])
                if ip and existing.value["ip"] != ip:
                    raise Conflict(f"{name} already holds {existing.value['ip']}")
                if lease is not None:
                    return lease
            pool = self._reservation_subnet(ip, subnet)
            template = Lease(
                ip="", kind=KIND_CONTAINER, state=STATE_RESERVED, subnet=str(pool), host=self.host, name=name
            )
            guards = [(name_key(name), existing.revision if existing else 0)]
            try:
                if ip is None:
                    return self.allocator.allocate(self.windows(str(pool)), template, guards=guards)
                return self._claim_container(template, ip, guards=guards)
            except PreconditionFailed:
                continue  # someone reserved the same name meanwhile: answer with theirs

    def _reservation_subnet(self, ip: str | None, subnet: str | None) -> Subnet:
        if subnet:
            return Subnet.parse(subnet, "--subnet")
        config = self.config(fresh=False)
        if ip:
            address = parse_address(ip, "--ip", prefix="forbidden")[0]
            container_range = config.container_range_of(address)
            if container_range is None:
                raise InvalidInput(f"{ip} is outside every container range")
            return config.lan_subnet_of(address) or container_range.subnet
        subnets = {config.lan_subnet_of(r.start) or r.subnet for r in config.ip_ranges}
        if len(subnets) != 1:
            raise InvalidInput(
                "give --subnet: " + ("no container range is declared" if not subnets else "there are several subnets")
            )
        return subnets.pop()

    def release_name(self, name: str) -> Lease:
        """End a reservation; a running container keeps its address until it stops."""
        entry = self.store.get(name_key(name))
        if entry is None:
            raise NotFound(f"no reservation named {name}")
        lease = self.allocator.release(entry.value["ip"], end_reservation=True)
        if lease is None:
            # The index outlived its lease (should not happen): drop the dangling name.
            self.store.txn([(entry.key, entry.revision)], [Delete(entry.key)])
            raise NotFound(f"no reservation named {name}")
        return lease

    # ------------------------------------------------------------------ hosts
    def claim_host(self, ip: str) -> Lease:
        """Record ``ip`` (in a host range) as this host's address; idempotent."""
        address = parse_address(ip, "--ip", prefix="forbidden")[0]

        def locate(config: Config) -> Subnet:
            if config.host_range_of(address) is None:
                raise InvalidInput(f"{ip} is not in any host range (declare one with 'shrike host-range')")
            subnet = config.lan_subnet_of(address)
            assert subnet is not None
            return subnet

        subnet = self._with_config(locate)
        lease = Lease(ip=ip, kind=KIND_HOST, state=STATE_HELD, subnet=str(subnet), host=self.host, since=now_iso())
        return self.allocator.claim(ip, lease, may_take=lambda old: old.kind == KIND_HOST and old.host == self.host)

    def release_host(self, ip: str) -> Lease:
        """The operator's ``release --host``: forget a host's address."""
        parse_address(ip, "--host", prefix="forbidden")

        def decide(entry: Entry | None) -> tuple[Lease, list[Op]]:
            if entry is None:
                raise NotFound(f"no host holds {ip}")
            lease = Lease.from_json(entry.value)
            if lease.kind != KIND_HOST:
                raise InvalidInput(f"{ip} is a {lease.kind} address, not a host's")
            return lease, [Delete(entry.key)]

        return update(self.store, lease_key(ip), decide, max_wait=self.allocator.max_wait)

    # ------------------------------------------------------- gateway and aux
    def request_gateway(self, subnet: str, ip: str, *, kind: str = KIND_GATEWAY) -> Lease:
        """Record a Docker network's gateway (``kind=gateway``) or aux address
        (``kind=reserved``). Shared by every host whose network names it; never a
        container address. This host's own host address is accepted as gateway."""
        pool = Subnet.parse(subnet, "subnet")
        address = parse_address(ip, "address", prefix="forbidden")[0]
        if not pool.covers(address, address):
            raise InvalidInput(f"{ip} is not a usable address of {pool}")
        if self._with_config(lambda c: c.container_range_of(address)):
            raise InvalidInput(f"{ip} is a container address; a gateway or aux address must lie outside ip-range")
        return self._update_shared(ip, kind=kind, subnet=str(pool))

    def _update_shared(self, ip: str, *, kind: str = "", subnet: str = "", remove: bool = False) -> Lease | None:
        def decide(entry: Entry | None) -> tuple[Lease | None, list[Op]]:
            old = Lease.from_json(entry.value) if entry else None
            if old is not None and old.kind == KIND_HOST:
                if old.host != self.host and not remove:
                    raise Conflict(f"{ip} is the address of host {old.host}")
                return old, []
            if old is not None and old.kind == KIND_CONTAINER:
                if remove:
                    return old, []
                raise Conflict(f"{ip} is already in use ({describe(old)})")
            users = set(old.users) if old else set()
            if remove:
                if old is None:
                    return None, []
                users.discard(self.host)
                new = replace(old, users=tuple(sorted(users)))
            else:
                users.add(self.host)
                base = old or Lease(ip=ip, kind=kind, state=STATE_HELD, subnet=subnet, host=self.host, since=now_iso())
                new = replace(base, users=tuple(sorted(users)))
            if old == new:
                return new, []
            return new, [Put(lease_key(ip), new.to_json()) if new.users else Delete(lease_key(ip))]

        return update(self.store, lease_key(ip), decide, max_wait=self.allocator.max_wait)

    # ----------------------------------------------------------------- reads
    def lease(self, ip: str) -> Lease | None:
        entry = self.store.get(lease_key(ip))
        return Lease.from_json(entry.value) if entry else None

    def leases(self, *, include_released: bool = False) -> list[Lease]:
        """Every recorded address in address order (released ones only on request)."""
        return [lease for lease, _ in self.lease_entries(include_released=include_released)]

    def lease_entries(self, *, include_released: bool = False) -> list[tuple[Lease, int]]:
        """:meth:`leases` with the store revision of each, for a compare-and-swap later
        (:meth:`release_if_unchanged`, :meth:`set_owner`)."""
        entries = [(Lease.from_json(e.value), e.revision) for e in self.store.get_prefix(LEASES)]
        if not include_released:
            entries = [(lease, rev) for lease, rev in entries if lease.state != STATE_RELEASED]
        return sorted(entries, key=lambda entry: ip_to_int(entry[0].ip))
