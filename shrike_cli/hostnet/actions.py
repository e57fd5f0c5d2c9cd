"""The steps of ``create-network`` and its undo: one value each, printable (``--dry-run``
shows ``str(action)``). :mod:`.plan` puts them in order; :mod:`.setup` carries each out
and journals its inverse.
"""

from __future__ import annotations

from dataclasses import dataclass

from .docker_net import NetworkSpec
from .hostview import Address, Route, Shim


@dataclass(frozen=True)
class ClaimLease:
    ip: str

    def __str__(self) -> str:
        return f"record {self.ip} as this host's address (host lease)"


@dataclass(frozen=True)
class ReleaseLease:
    ip: str

    def __str__(self) -> str:
        return f"release the host lease of {self.ip}"


@dataclass(frozen=True)
class CreateNetwork:
    spec: NetworkSpec

    def __str__(self) -> str:
        return f"create Docker network {self.spec.describe()}"


@dataclass(frozen=True)
class RemoveNetwork:
    name: str
    #: containers to disconnect first (only with --force)
    containers: tuple[str, ...] = ()

    def __str__(self) -> str:
        detach = f", disconnecting {', '.join(self.containers)}" if self.containers else ""
        return f"remove Docker network {self.name}{detach}"


@dataclass(frozen=True)
class TakeIdentity:
    """``link`` (the bridge) takes ``source``'s (the uplink's) place on the LAN: its MAC,
    its IPv6 link-local addresses (the LAN's routers and neighbours know the host by them;
    a bridge's own derives from the MAC it was created with), and, where ``source`` took
    them, IPv6 router advertisements (``accept_ra`` 2: also while the host forwards, as
    Docker's IPv6 networks make it)."""

    link: str
    mac: str
    source: str = ""
    link_local: tuple[Address, ...] = ()
    accept_ra: bool = False

    def __str__(self) -> str:
        text = f"set {self.link}'s MAC to {self.mac}"
        if self.link_local:
            text += f", put {self.source}'s link-local {', '.join(map(str, self.link_local))} on it"
        if self.accept_ra:
            text += ", accept IPv6 router advertisements on it"
        return text


@dataclass(frozen=True)
class AddAddresses:
    link: str
    addresses: tuple[Address, ...]

    def __str__(self) -> str:
        return f"put {', '.join(map(str, self.addresses))} on {self.link}"


@dataclass(frozen=True)
class DeleteAddresses:
    link: str
    addresses: tuple[Address, ...]

    def __str__(self) -> str:
        return f"remove {', '.join(map(str, self.addresses))} from {self.link}"


@dataclass(frozen=True)
class SetMaster:
    """Make ``port`` a port of ``master``, or of no bridge when ``master`` is None."""

    port: str
    master: str | None

    def __str__(self) -> str:
        return f"make {self.port} a port of {self.master}" if self.master else f"release {self.port} from its bridge"


@dataclass(frozen=True)
class MoveRoute:
    """Replace ``route`` through ``source`` by the same route through ``target``: one
    netlink replace, so a default route is never absent, not even for a moment."""

    route: Route
    source: str
    target: str

    def __str__(self) -> str:
        return f"move route {self.route} from {self.source} to {self.target}"


@dataclass(frozen=True)
class AddShim:
    shim: Shim

    def __str__(self) -> str:
        s = self.shim
        routes = ", ".join(s.routes) or "nothing"
        return f"add macvlan shim {s.name} on {s.parent} with {s.address}, routing {routes} through it"


@dataclass(frozen=True)
class RemoveShim:
    shim: Shim

    def __str__(self) -> str:
        return f"remove macvlan shim {self.shim.name} (and its routes)"


@dataclass(frozen=True)
class WriteFiles:
    """Set files to the given text; ``None`` removes the file."""

    files: tuple[tuple[str, str | None], ...]

    def __str__(self) -> str:
        return "; ".join(f"{'write' if text is not None else 'remove'} {path}" for path, text in self.files)


Action = (
    ClaimLease | ReleaseLease | CreateNetwork | RemoveNetwork | TakeIdentity | AddAddresses | DeleteAddresses
    | SetMaster | MoveRoute | AddShim | RemoveShim | WriteFiles
)  # fmt: skip
