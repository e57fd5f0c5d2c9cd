"""Taking over a LAN from oam-docker-ipam, the original: its declarations and the
addresses it handed out, written into shrike's store (``shrike import oam-docker-ipam``).

The original's ranges become shrike's (its LAN and gateway, host ranges, container ranges
typed as the original's were, so that its networks' pool ids still name them:
:meth:`~shrike_cli.pools.Pool.original`), and every address it gave a container or a host
becomes a held lease. The original never recorded which host or container holds an
address: those leases name no host until ``shrike adopt``, run on each host, finds their
holders (:mod:`.adopt`). Until then nobody else gets them, and ``reconcile`` (which looks at
a host's own leases) leaves them alone.

Nothing is overwritten: declarations that overlap shrike's differently refuse the whole
import before anything is written, and an address shrike already has a lease for keeps
it. So an import can run again: what is there already is left as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import InvalidInput
from .ipam import Ipam
from .model import KIND_CONTAINER, KIND_HOST, STATE_HELD, Config, Holder, Lease
from .original import OriginalState
from .ranges import add_host_range, add_ip_range, add_lan
from .state import State

#: The kind of the declaration of the LAN itself (its subnet and gateway).
KIND_LAN = "lan"


@dataclass(frozen=True)
class Declaration:
    """One declaration the original's tree asks for."""

    kind: str
    #: ``172.25.60.0/22 (gateway 172.25.63.254)`` or a range as shrike writes it
    what: str
    #: False when shrike had exactly that already
    created: bool

    def to_json(self) -> dict[str, object]:
        return {"kind": self.kind, "what": self.what, "created": self.created}


@dataclass(frozen=True)
class Takeover:
    """What an import of the original's state wrote (with ``dry_run``: would write)."""

    original: OriginalState
    declarations: tuple[Declaration, ...]
    #: leases written
    leases: tuple[Lease, ...]
    #: the original's addresses shrike had a lease for already: left as they are
    present: tuple[Lease, ...]
    dry_run: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "lan": str(self.original.lan),
            "gateway": self.original.gateway,
            "declarations": [d.to_json() for d in self.declarations],
            "leases": [lease.to_json() for lease in self.leases],
            "present": [lease.to_json() for lease in self.present],
            "findings": [f.to_json() for f in self.original.findings],
        }


def declare(config: Config, original: OriginalState) -> tuple[Config, list[Declaration]]:
    """``config`` with the original's declarations, and what each one did; refuses (with
    :class:`InvalidInput`) declarations that conflict with shrike's."""
    try:
        with_lan = add_lan(config, original.lan, original.gateway)
        declarations = [Declaration(KIND_LAN, f"{original.lan} (gateway {original.gateway})", with_lan != config)]
        config = with_lan
        for kind, ranges, add in (
            (KIND_HOST, original.host_ranges, add_host_range),
            (KIND_CONTAINER, original.ip_ranges, add_ip_range),
        ):
            for declared in ranges:
                updated = add(config, declared)
                declarations.append(Declaration(kind, str(declared), updated is not None))
                config = updated or config
    except InvalidInput as err:
        raise InvalidInput(f"the original's declarations conflict with shrike's: {err}; nothing was imported") from None
    return config, declarations


def _leases(config: Config, original: OriginalState) -> list[Lease]:
    """The leases of the addresses the original handed out, naming no host."""
    leases = [Holder(KIND_HOST, STATE_HELD, original.lan, host="").lease(ip) for ip in original.hosts]
    for ip in original.containers:
        declared = config.container_range_of(int(ip))
        assert declared is not None, "every assigned container address lies in a range of the original's"
        leases.append(Holder(KIND_CONTAINER, STATE_HELD, original.lan, host="").lease(ip, declared.id))
    return leases


def take_over(ipam: Ipam, original: OriginalState, *, dry_run: bool = False) -> Takeover:
    """Declare the original's ranges and record its addresses as held (see the module
    docstring); with ``dry_run``, only say what that would write."""
    state = ipam.state
    outcome: dict[str, tuple[Config, list[Declaration]]] = {}

    def change(config: Config) -> Config | None:
        outcome["declared"] = declare(config, original)
        new = outcome["declared"][0]
        return None if dry_run or new == config else new

    state.update_config(change, max_wait=ipam.max_wait)
    config, declarations = outcome["declared"]
    existing = {stored.lease.ip: stored.lease for stored in state.leases()}
    wanted = _leases(config, original)
    missing = [lease for lease in wanted if lease.ip not in existing]
    written = missing if dry_run else state.add_leases(missing)
    done = {lease.ip for lease in written}
    present = [existing.get(lease.ip) or _current(state, lease) for lease in wanted if lease.ip not in done]
    return Takeover(original, tuple(declarations), tuple(written), tuple(present), dry_run)


def _current(state: State, lease: Lease) -> Lease:
    """The lease of ``lease``'s address, written by someone else during the import."""
    stored = state.lease(lease.ip)
    return stored.lease if stored else lease
