"""Where each record lives: the store's keys (relative to its prefix), and the kinds of
records they group into, as an exported document lists them.

The package's docstring says what each key holds; the other modules of the package build
keys with the prefixes and builders here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidInput, ShrikeError
from ..model import KIND_CONFLICT, Config, Lease, Window, int_to_ip

CONFIG_KEY = "config"
LEASES = "leases/"
CURSORS = "ranges/"
FREE = "free/"
MACS = "macs/"
NAMES = "names/"
#: The suffix of the MAC and reservation index entries of IPv6 addresses.
V6_SUFFIX = "/6"
#: The suffix of the key (and id) of an IPv6 pool whose containers get the address
#: their MAC derives (:class:`~shrike_cli.pools.Pool`).
EUI64_SUFFIX = "+eui64"
PARKED = "parked/"
POOLS = "pools/"


def _lease_key(ip: str) -> str:
    return LEASES + ip


def _family_suffix(version: int) -> str:
    return V6_SUFFIX if version == 6 else ""


def _mac_key(mac: str, version: int) -> str:
    return MACS + mac + _family_suffix(version)


def _name_key(name: str, version: int) -> str:
    return NAMES + name + _family_suffix(version)


def _indexed(key: str, prefix: str) -> tuple[str, int]:
    """The name (or MAC) and family an index entry's key names."""
    rest = key.removeprefix(prefix)
    return (rest.removesuffix(V6_SUFFIX), 6) if rest.endswith(V6_SUFFIX) else (rest, 4)


def _parked_prefix(host: str | None) -> str:
    return f"{PARKED}{host}/" if host is not None else PARKED


def _parked_key(lease: Lease) -> str:
    return f"{_parked_prefix(lease.host)}{lease.ip}"


def _indexed_mac(lease: Lease) -> str:
    """The MAC whose index entry points at ``lease`` (invariant 4)."""
    return "" if lease.kind == KIND_CONFLICT else lease.mac


def _cursor_key(window: Window) -> str:
    if window.is_whole:
        return CURSORS + window.range.id
    return f"{CURSORS}{window.range.id}@{int_to_ip(window.start)}-{int_to_ip(window.end)}"


def _free_prefix(range_id: str) -> str:
    return f"{FREE}{range_id}/"


def pool_key(name: str) -> str:
    """The key of the record of the Docker pool ``name`` (``subnet[/sub-pool]``)."""
    return POOLS + name


@dataclass(frozen=True)
class RecordKind:
    """A kind of record, as an exported document lists it: under ``name``, every key under
    ``prefix`` (ending in "/") by the rest of its key, or the one key ``prefix`` as its
    value. ``check`` reads a record back into its value, so that an import refuses a
    malformed one before writing anything."""

    name: str
    prefix: str
    check: Callable[[dict[str, Any]], object] | None = None

    @property
    def single(self) -> bool:
        return not self.prefix.endswith("/")

    def owns(self, key: str) -> bool:
        return key == self.prefix if self.single else key.startswith(self.prefix)


#: Every kind of record shrike keeps, one line each: a new kind is one more line (an
#: export refuses a key no kind owns). In the order an import writes them: the
#: declarations last, so that nothing is allocated from a store whose import was cut short.
RECORD_KINDS = (
    RecordKind("leases", LEASES, Lease.from_json),
    RecordKind("free", FREE),
    RecordKind("macs", MACS),
    RecordKind("reservations", NAMES),
    RecordKind("parked", PARKED),
    RecordKind("cursors", CURSORS),
    RecordKind("pools", POOLS),
    RecordKind("declarations", CONFIG_KEY, Config.from_json),
)
EXPORT_FORMAT = "shrike-state"
#: The version of the documents :meth:`State.export` writes. A shrike that changes what a
#: record means raises it, and upgrades older documents as it imports them (or refuses them).
EXPORT_VERSION = 1


def _kind_of(key: str) -> RecordKind:
    kind = next((kind for kind in RECORD_KINDS if kind.owns(key)), None)
    if kind is None:
        raise ShrikeError(f"the store holds '{key}', a record this shrike does not know: export with a newer shrike")
    return kind


def _records_of(document: Any) -> list[tuple[RecordKind, str, dict[str, Any]]]:
    """The records of an exported document as (kind, key, value), in the order they are
    written; :class:`InvalidInput` for anything this shrike cannot take as it is."""
    if not isinstance(document, Mapping) or document.get("format") != EXPORT_FORMAT:
        raise InvalidInput(f'not a shrike export (it has no "format": "{EXPORT_FORMAT}")')
    version = document.get("version")
    if type(version) is not int or version < 1:
        raise InvalidInput(f"the export has no valid version ({version!r})")
    if version > EXPORT_VERSION:
        raise InvalidInput(
            f"the export is of version {version}, written by a newer shrike; this one reads version"
            f" {EXPORT_VERSION}: import it with a shrike as new as the one that wrote it"
        )
    records = document.get("records")
    if not isinstance(records, Mapping):
        raise InvalidInput('the export has no "records" object')
    if unknown := sorted(set(records) - {kind.name for kind in RECORD_KINDS}):
        raise InvalidInput(
            f"the export holds records of kinds this shrike does not know ({', '.join(map(str, unknown))}):"
            " import it with a shrike as new as the one that wrote it"
        )
    found = []
    for kind in RECORD_KINDS:
        section = records.get(kind.name)
        if section is None:
            continue
        if not kind.single and not isinstance(section, Mapping):
            raise InvalidInput(f"the {kind.name} of the export are not an object")
        for name, value in [("", section)] if kind.single else section.items():
            where = f"{kind.name} {name}".strip()
            if not isinstance(value, dict) or not (kind.single or name):
                raise InvalidInput(f"{where} in the export is not a record")
            try:
                if kind.check:
                    kind.check(value)
            except (ShrikeError, TypeError, KeyError, ValueError) as err:
                raise InvalidInput(f"{where} in the export is not a valid record: {err}") from None
            found.append((kind, kind.prefix + name, value))
    return found
