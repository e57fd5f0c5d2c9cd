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

import contextlib
import logging
import socket
from collections.abc import Callable, Sequence
from dataclasses import replace

from .allocator import Allocator, LanCheck, Returning
from .errors import Conflict, InvalidInput, NotFound
from .hosts import Hosts
from .model import (
    IP,
    KIND_CONFLICT,
    KIND_CONTAINER,
    KIND_GATEWAY,
    KIND_HOST,
    SHARED_KINDS,
    STATE_HELD,
    STATE_PARKED,
    STATE_RELEASED,
    STATE_RESERVED,
    Config,
    Holder,
    Lease,
    Subnet,
    Window,
    eui64,
    parse_ip,
    validate_mac,
)
from .pools import Pool, Pools
from .ranges import Declarations, Declared, declare_host_range, declare_ip_range
from .shared import SharedAddresses
from .state import Change, Parked, PreconditionFailed, State, StoredLease
from .stores.base import Store

log = logging.getLogger("shrike.ipam")


def _pool(pool: Pool | str, sub_pool: str | None = None) -> Pool:
    return Pool.of(pool, sub_pool) if isinstance(pool, str) else pool


def _subnet(subnet: Subnet | str, what: str = "subnet") -> Subnet:
    return Subnet.parse(subnet, what) if isinstance(subnet, str) else subnet


def _parked_as(lease: Lease, entry: Parked) -> bool:
    """Whether ``lease`` is still parked for the container ``entry`` was read for."""
    return lease.state == STATE_PARKED and lease.owner.get("container_id", "") == entry.container_id


class Ipam:
    """Address management over one store, acting for one host (``host``).

    ``max_wait`` bounds how long one call may spend retrying compare-and-swap
    conflicts before it fails (the store is overloaded). ``lan``, when given, is asked
    whether an address is in use on the LAN before a container is handed it
    (:meth:`probe_with`).

    Containers' addresses are requested, reserved, parked and released here; the rules
    behind the other calls have their own modules: the choice of an address
    :mod:`.allocator`, the declarations :mod:`.ranges`, pool ids and counts :mod:`.pools`,
    networks' gateway and aux addresses :mod:`.shared`, this host's own addresses and
    adoption :mod:`.hosts`."""

    def __init__(
        self, store: Store, *, host: str | None = None, max_wait: float = 30.0, lan: LanCheck | None = None
    ) -> None:
        self.store = store
        self.host = host or socket.gethostname()
        self.max_wait = max_wait
        self.state = State(store)
        self.allocator = Allocator(self.state, max_wait=max_wait, lan=lan)
        self.pools = Pools(store, self.host, max_wait=max_wait)
        self.declarations = Declarations(self.state)
        self.hosts = Hosts(self.state, self.allocator, self.declarations, self.host, max_wait=max_wait)
        self.shared = SharedAddresses(self.state, self.declarations, self.hosts, self.host, max_wait=max_wait)

    def probe_with(self, lan: LanCheck | None) -> None:
        """Check the LAN with ``lan`` from now on (None: no more)."""
        self.allocator.lan = lan

    def declare_host_range(self, ip_start: str, ip_end: str, gateway: str | None = None) -> Declared:
        """Declare the LAN subnet (from the prefix length), its gateway and host addresses."""
        self.declarations.forget()
        return declare_host_range(self.state, ip_start, ip_end, gateway, max_wait=self.max_wait)

    def declare_ip_range(self, ip_start: str, ip_end: str) -> Declared:
        """Declare a range handed to containers."""
        self.declarations.forget()
        return declare_ip_range(self.state, ip_start, ip_end, max_wait=self.max_wait)

    def config(self, *, fresh: bool = True) -> Config:
        """The declarations; ``fresh=False`` accepts a copy up to CONFIG_TTL seconds old."""
        return self.declarations.read(fresh=fresh)

    def pool(self, pool_id: str) -> Pool:
        """The pool a Docker pool id names: shrike's, or one oam-docker-ipam gave the
        networks it created (:meth:`Pool.original`)."""
        return self.declarations.apply(lambda config: Pool.from_id(pool_id, config))

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

        return self.declarations.apply(find)

    def likely_next(self, count: int) -> list[IP]:
        """The addresses this host's next dynamic requests will most likely get (see
        :meth:`Allocator.likely_next`), in every container range and in the sub-pools of
        the networks this host has."""
        config = self.config(fresh=False)
        windows = [Window.whole(r) for r in config.ip_ranges]
        for pool in self.pools.list():
            if pool.sub_pool and pool.refs.get(self.host):
                with contextlib.suppress(NotFound, InvalidInput):  # its ranges were changed since
                    windows += self.windows(pool)
        return self.allocator.likely_next(windows, self.host, count)

    def check_pool(self, pool: Pool) -> None:
        """Docker's RequestPool: ``pool`` must hold container addresses and lie in a LAN
        shrike serves (a declared LAN subnet, or where none is declared the subnet an
        ip-range was typed in), never wider: its prefix length becomes every container's
        netmask. A sub-pool (``--ip-range``) narrows where dynamic addresses come from.
        The declarations are read afresh: a network is created rarely, maybe right after
        a declaration."""
        config = self.config()
        self.windows(pool)
        lans = set(config.lans) | {config.lan_of(r) for r in config.ip_ranges}
        if any(lan.holds(pool.subnet) for lan in lans):
            return
        near = sorted(lan for lan in lans if lan.overlaps(pool.subnet))
        raise InvalidInput(
            f"{pool.subnet} is wider than the LAN {', '.join(map(str, near))}: give docker network create"
            f" --subnet {near[0]} (and --ip-range for a part of it)"
            if near
            else f"{pool.subnet} is not a LAN shrike serves ({', '.join(map(str, sorted(lans)))})"
        )

    def request_pool(self, pool: Pool) -> Pool:
        """Docker's RequestPool: check ``pool`` (:meth:`check_pool`) and count one more
        network of this host using it."""
        self.check_pool(pool)
        return self.pools.acquire(pool)

    def release_pool(self, pool: Pool) -> Pool:
        """Docker's ReleasePool: one network of this host less. With its last one, the
        gateway and aux addresses it asked for in the pool go too: dockerd releases
        them when it removes a network, but not when a ``network create`` fails."""
        record = self.pools.release(pool)
        if record.refs.get(self.host, 0) == 0:
            self.shared.release_pool(pool)
        return record

    def request_address(
        self,
        pool: Pool | str,
        ip: str | None = None,
        *,
        sub_pool: str | None = None,
        mac: str | None = None,
        owner: dict[str, str] | None = None,
        returning: Returning | None = None,
    ) -> Lease:
        """Give a container an address of ``pool``: ``ip`` if given and free (Docker's
        ``--ip``), else the next one by the allocation policy. The lease's ``cidr``
        carries the pool's prefix length. ``sub_pool`` narrows a pool given as text.

        ``owner`` is what the request says of its container; with a ``name`` (newer
        engines send it), that container's reservation (of the pool's family) is its
        address, and an address reserved or parked for another name is refused.
        ``returning`` says how to find the address parked for a container coming back
        (see :class:`Returning`). In a pool of addresses derived from MACs
        (:attr:`Pool.eui64`), a request with a MAC gets the one its MAC derives."""
        pool = _pool(pool, sub_pool)
        holder = Holder(
            kind=KIND_CONTAINER,
            state=STATE_HELD,
            subnet=pool.subnet,
            host=self.host,
            mac=validate_mac(mac) if mac else "",
            owner=dict(owner or {}),
        )
        container = holder.owner.get("name", "")
        if ip is None and container:
            reserved, _ = self.state.reservation(container, pool.subnet.version)
            if reserved is not None:
                ip = reserved
        if ip is not None:
            return self._claim_container(holder, parse_ip(ip, "address"))
        if pool.eui64 and holder.mac:
            return self._claim_container(holder, eui64(pool.subnet, holder.mac), derived=True)
        where = f"the network's sub-pool {pool.sub_pool} of {pool.subnet}" if pool.sub_pool else ""
        return self.allocator.allocate(self.windows(pool), holder, returning=returning, where=where)

    def _claim_container(self, holder: Holder, ip: IP, *, derived: bool = False, **kwargs: object) -> Lease:
        """Take ``ip`` for a container (Docker's ``--ip``, a reservation); ``derived``: the
        address its MAC derives, which may also lie outside every container range (its
        lease then names no range, and goes when it is released)."""
        pool = holder.subnet
        address = int(ip)
        source = f" (derived from the MAC {holder.mac})" if derived else ""

        def locate(config: Config) -> str:
            container_range = config.container_range_of(address)
            if container_range and pool.covers(container_range.start, container_range.end):
                return container_range.id
            if not pool.covers(address, address):
                raise InvalidInput(f"{ip}{source} is outside the subnet {pool}", reason="outside_subnet")
            if config.host_range_of(address):
                raise InvalidInput(
                    f"{ip}{source} is a host address (host-range {config.host_range_of(address)}), not for containers",
                    reason="host_address",
                )
            if config.is_lan_gateway(address):
                raise InvalidInput(f"{ip}{source} is the gateway of the LAN, not for containers", reason="lan_gateway")
            if derived:
                return ""
            raise InvalidInput(f"{ip} is outside every container range of {pool}", reason="outside_ranges")

        container = holder.owner.get("name", "")

        def may_take(old: Lease) -> bool:
            if old.state == STATE_RELEASED:
                return True
            if old.kind != KIND_CONTAINER or holder.name:  # a reservation takes no other's
                return False
            if old.state == STATE_RESERVED:
                # Docker's --ip may take up a reservation: its container starting. A
                # request that names its container must be that reservation's.
                if container and container != old.name:
                    raise Conflict(f"{ip} is reserved for {old.name}, not for {container}", reason="reserved")
                return True
            if old.state == STATE_PARKED and old.host == holder.host:
                # The same dockerd asks again for an address parked for one of its stopped
                # containers: a container started with --ip comes back with it.
                if container and old.owner.get("name") not in (None, "", container):
                    kept = f"{ip} is kept for the stopped container {old.holder} on {old.host}"
                    raise Conflict(kept, reason="parked")
                return True
            return False

        range_id = self.declarations.apply(locate)
        self._refuse_if_answering(ip, holder, range_id, may_take)
        return self.allocator.claim(ip, holder, range_id, may_take=may_take, **kwargs)  # type: ignore[arg-type]

    def _refuse_if_answering(self, ip: IP, holder: Holder, range_id: str, may_take: Callable[[Lease], bool]) -> None:
        """An address asked for by name is probed on the LAN first (where the store would
        grant it; otherwise the claim says why not): if something answers, the request
        is refused naming its MAC, and a free address is recorded as a conflict."""
        lan = self.allocator.lan
        stored = self.state.lease(ip)
        if lan is None or (stored is not None and not may_take(stored.lease)):
            return
        mac = lan.answering(ip)
        if mac is None:
            return
        if self.allocator.record_conflict(ip, Holder.stranger(holder.subnet, self.host, mac), range_id):
            why = "; recorded as a conflict, it is handed out once it is silent (or after 'shrike release --ip')"
        else:  # reserved or parked: it stays so
            why = f", though it is {stored.lease.describe()}" if stored else ""
        raise Conflict(f"{ip} is in use on the LAN: {mac} answers for it{why}")

    def release_address(self, ip: str, pool: Pool | None = None, *, keep: bool = False) -> Lease | None:
        """Docker's ReleaseAddress: free a container address (a named reservation stays
        reserved), or drop one reference of this host to a shared gateway/aux record.
        Host addresses and unknown addresses are left alone. With ``keep`` (dockerd's
        releases: it releases the addresses of containers that stop), an address whose
        lease names its container is parked for it instead of freed.

        Given the ``pool`` the release names, only an address of that pool that this host
        took is released: a late or stray release (from another host's dockerd, or naming
        another pool) is logged and changes nothing."""
        stored = self.state.lease(ip)
        if stored is None:
            return None
        lease = stored.lease

        def ours(current: Lease) -> bool:
            if pool is not None and not pool.subnet.contains(int(current.ip)):
                log.warning("not releasing %s: it is not in the pool %s the release names", ip, pool.name)
                return False
            if current.kind == KIND_CONTAINER and current.host != self.host:
                log.warning("not releasing %s: host %s took it, not this host (%s)", ip, current.host, self.host)
                return False
            return True

        if lease.kind == KIND_CONTAINER:
            released = self.allocator.release(ip, keep=keep, accept=ours)
            vacated = lease.state == STATE_HELD and released is not None and released.state != STATE_HELD
            if keep and vacated and self.allocator.lan is not None:
                self.allocator.lan.vacated(lease.ip)  # dockerd removed the container's interface first
            return released
        if lease.kind in SHARED_KINDS and ours(lease):
            return self.shared.release(lease.ip, pool)
        return lease

    def release_container(
        self, ip: str, *, force: bool = False, live: Callable[[str], Sequence[str]] | None = None
    ) -> Lease:
        """The operator's ``release --ip``: free a container address, ending its
        reservation if it has one, or an orphaned gateway/aux record. An address no
        container holds is an error.

        An address a live container holds is refused, as far as shrike can know: its
        lease names its container, or ``live(ip)`` (this host's dockerd, asked by the
        caller) names containers holding it. ``force`` releases it anyway, with a warning:
        two containers may then end up with one address."""
        ip = parse_ip(ip, "--ip")  # IPv6 as stored: canonical
        current = self.lease(ip)
        if current is None or current.state == STATE_RELEASED:
            raise NotFound(f"no container holds {ip}")
        if current.kind in SHARED_KINDS:
            return self.shared.release_everywhere(ip)
        if current.kind == KIND_CONFLICT:  # whatever answered for it has gone, says the operator
            stored = self.state.lease(ip)
            freed = self.allocator.settle_conflict(current, stored.revision, None) if stored else None
            if freed is None:
                raise Conflict(f"{ip} changed while it was being released: try again")
            return freed
        if current.kind != KIND_CONTAINER:
            hint = " (use --host)" if current.kind == KIND_HOST else ""
            raise InvalidInput(f"{ip} is a {current.kind} address, not a container's{hint}")
        holders = []
        if current.state == STATE_HELD:
            if current.owner:
                holders.append(f"container {current.holder} on host {current.host}")
            if live is not None and current.host == self.host:
                holders += [f"container {name} on host {self.host}" for name in live(ip) if name != current.holder]
        if holders and not force:
            raise Conflict(f"{ip} is held by {' and '.join(holders)}: stop it first, or give --force")
        if holders:
            log.warning("releasing %s although %s holds it: two containers may share it", ip, " and ".join(holders))
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

    def reserve(
        self, name: str, ip: str | None = None, subnet: Subnet | str | None = None, *, version: int | None = None
    ) -> Lease:
        """Reserve a container address for ``name`` (idempotent): it is never handed to a
        dynamic request, and survives its container's stops. A name holds one address of
        each family: ``version`` (4 or 6) says which, else the family of ``ip`` or
        ``subnet``, else IP where there is an IP LAN."""
        if not name or "/" in name:
            raise InvalidInput(f"'{name}' is not a usable reservation name")
        address = parse_ip(ip, "--ip") if ip else None
        given = address or (_subnet(subnet, "--subnet") if subnet else None)
        version = version or (given.version if given is not None else self._default_family())
        while True:
            reserved, guard = self.state.reservation(name, version)
            if reserved is not None:
                if address and reserved != address:
                    raise Conflict(f"{name} already holds {reserved}")
                lease = self.lease(reserved)
                if lease is not None:
                    return lease
            pool = self._reservation_subnet(address, subnet, version)
            holder = Holder(kind=KIND_CONTAINER, state=STATE_RESERVED, subnet=pool, host=self.host, name=name)
            try:
                if address is None:
                    return self.allocator.allocate(self.windows(Pool(pool)), holder, guards=[guard])
                return self._claim_container(holder, address, guards=[guard])
            except PreconditionFailed:
                continue  # someone reserved the same name meanwhile: answer with theirs

    def _default_family(self) -> int:
        """The family of a reservation that names none: IP, unless only IPv6 LANs have
        container ranges."""
        config = self.config()
        return 6 if config.ip_ranges and all(r.version == 6 for r in config.ip_ranges) else 4

    def _reservation_subnet(self, ip: IP | None, subnet: Subnet | str | None, version: int) -> Subnet:
        """The LAN a reservation is made in: ``subnet`` if given (it must be one with
        container ranges), else the LAN of ``ip``, else the only one of the family ``version``."""
        config = self.config()
        lans = sorted({config.lan_of(r) for r in config.ip_ranges})
        chosen: Subnet | None = None
        if subnet:
            chosen = _subnet(subnet, "--subnet")
            if chosen not in lans:
                served = ", ".join(map(str, lans)) or "none: no container range is declared"
                raise InvalidInput(f"--subnet {chosen} is not a LAN with container ranges (those: {served})")
        elif ip:
            container_range = config.container_range_of(int(ip))
            if container_range is None:
                raise InvalidInput(f"{ip} is outside every container range")
            chosen = config.lan_of(container_range)
        if chosen is not None:
            if chosen.version != version:
                raise InvalidInput(f"{subnet or ip} is not of the family asked for (IPv{version})")
            return chosen
        of_family = [lan for lan in lans if lan.version == version]
        if len(of_family) != 1:
            family = "IPv6 " if version == 6 else ""
            raise InvalidInput(
                "give --subnet: "
                + (
                    f"there are several {family}LANs ({', '.join(map(str, of_family))})"
                    if of_family
                    else f"no {family}container range is declared"
                )
            )
        return of_family[0]

    def reserved_families(self, name: str) -> list[int]:
        """The families (4, 6) in which ``name`` holds a reservation."""
        return [version for version in (4, 6) if self.state.reservation(name, version)[0] is not None]

    def release_name(self, name: str, version: int = 4) -> Lease:
        """End the reservation of ``name`` in the family ``version``; a running container
        keeps its address until it stops."""
        reserved, guard = self.state.reservation(name, version)
        if reserved is None:
            raise NotFound(f"no {'IPv6 ' if version == 6 else ''}reservation named {name}")
        lease = self.allocator.release(reserved, end_reservation=True)
        if lease is None:
            # The index outlived its lease (should not happen): drop the dangling name.
            self.state.drop_dangling_reservation(guard)
            raise NotFound(f"no reservation named {name}")
        return lease

    def parked(self) -> list[Parked]:
        """The addresses parked for this host's stopped containers."""
        return self.state.parked(self.host)

    def release_parked(self, entry: Parked) -> Lease | None:
        """Free an address parked for a container that no longer exists (None: it was
        taken back or changed meanwhile)."""
        lease = self.allocator.release(entry.ip, accept=lambda lease: _parked_as(lease, entry))
        # The allocator answers with the lease as it stands, also when it left it alone.
        return lease if lease is not None and lease.state == STATE_RELEASED else None

    def rename_parked(self, entry: Parked, name: str) -> Lease | None:
        """Follow a rename of the stopped container an address is parked for: a request
        naming the container by its new name gets the address back."""

        def decide(stored: StoredLease | None) -> tuple[Lease | None, Change | None]:
            if stored is None or not _parked_as(stored.lease, entry):
                return None, None
            new = replace(stored.lease, owner={**stored.lease.owner, "name": name})
            change = Change()
            change.write(new, previous=stored.lease)
            return new, change

        return self.state.update_lease(entry.ip, decide, max_wait=self.max_wait)

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

    def mark_conflict(self, ip: IP, mac: str) -> Lease | None:
        """Record that ``mac`` answers on the LAN for ``ip``, an address of a container
        range that nobody holds (``shrike scan --mark``); None when it is not free."""
        subnet, range_id = self.declarations.container_range(ip)
        return self.allocator.record_conflict(ip, Holder.stranger(subnet, self.host, mac), range_id)

    def conflicts(self) -> list[tuple[Lease, int]]:
        """The conflicts recorded, with their store revisions (for :meth:`settle_conflict`)."""
        return [(lease, revision) for lease, revision in self.lease_entries() if lease.kind == KIND_CONFLICT]

    def settle_conflict(self, conflict: Lease, revision: int, mac: str | None) -> Lease | None:
        """A conflict probed again: still answering from ``mac``, or silent (None) and free."""
        return self.allocator.settle_conflict(conflict, revision, mac)

    def request_gateway(self, pool: Pool | Subnet | str, ip: str, *, kind: str = KIND_GATEWAY) -> Lease | None:
        """Docker's RequestAddress of a network's gateway (``kind=gateway``) or aux address
        (``kind=aux``), never a container address: a record shared by every network naming
        the address, this host's host lease, or nothing (None), as :mod:`.shared` says."""
        pool = pool if isinstance(pool, Pool) else Pool(_subnet(pool))
        return self.shared.request(pool, ip, kind)

    def claim_host(self, ip: str, *, adopt: bool = False) -> Lease:
        """Record ``ip`` (in a host range) as this host's address (:meth:`.Hosts.claim`)."""
        return self.hosts.claim(ip, adopt=adopt)

    def release_host(self, ip: str) -> Lease:
        """The operator's ``release --host``: forget a host's address (:meth:`.Hosts.release`)."""
        return self.hosts.release(ip)

    def adoptable(self, old: Lease | None, kind: str, mac: str = "") -> bool:
        """Whether adoption may record an address of ``kind`` over its lease ``old``
        (:meth:`.Hosts.adoptable`)."""
        return self.hosts.adoptable(old, kind, mac)

    def adopt_container(self, ip: str, *, mac: str = "", owner: dict[str, str] | None = None) -> Lease:
        """Record ``ip`` as held by a container of this host, as dockerd says it is
        (:meth:`.Hosts.adopt_container`)."""
        return self.hosts.adopt_container(ip, mac=mac, owner=owner)

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

    def own_addresses(self, subnet: Subnet | None = None) -> list[IP]:
        """This host's own LAN addresses (recorded by ``create-network``), in ``subnet`` if given."""
        return [
            lease.ip
            for lease in self.leases()
            if lease.is_host_of(self.host) and (subnet is None or subnet.contains(int(lease.ip)))
        ]
