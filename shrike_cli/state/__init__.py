"""The state layout: every key shrike keeps in a store, and the rules that tie them together.

This is the only package that knows a key. Above it, code speaks of leases, cursors, idle
addresses, reservations and pools; below it, a :class:`~shrike_cli.stores.base.Store`
knows only keys, JSON values and revisions.

Keys (relative to the store's prefix), each holding a JSON object a person can read:

=================================  ==========================================================
``config``                         the declarations (:class:`~shrike_cli.model.Config`)
``leases/<ip>``                    one :class:`~shrike_cli.model.Lease` per address handed out
                                   (held, reserved or released); IPv6 in canonical text
``ranges/<range-id>[@<s>-<e>]``    a window's cursor ``{"next": n}``: every address at offset
                                   ``n`` or later was never handed out dynamically
``free/<range-id>/<ns>-<ip>``      a released address, ``{"ip", "mac"}``, keyed by its release
                                   time so the longest idle comes first
``macs/<mac>[/6]``                 ``{"ip"}``: the IPv4 (``/6``: IPv6) address a MAC holds or
                                   last held (a dual-stack container holds one of each)
``names/<name>[/6]``               ``{"ip"}``: the IPv4 (``/6``: IPv6) address a reservation
                                   name holds
``parked/<host>/<ip>``             an address kept for a stopped container of ``host``:
                                   ``{"ip", "mac", "range", "owner", "at"}``
``pools/<subnet>[/<sub-pool>]``    a Docker pool, how many networks of each host use it, and
                                   the gateway and aux addresses each host asked for in it
                                   (``+eui64`` after an IPv6 pool deriving addresses from MACs)
=================================  ==========================================================

The invariants, kept by :meth:`Change.write`, the one place that writes a lease:

1. a free-list key exists exactly while its lease is released, and the lease names it
   (``free_key``); both change in one transaction, so a compare on either guards both;
2. ``parked/<host>/<ip>`` exists exactly while the lease of ``ip`` is parked (taken by
   ``host``), and changes with it, so it too guards its lease;
3. ``names/<name>`` (``names/<name>/6`` for IPv6) exists exactly while a lease of that
   family carries that name (names and MACs hold no "/");
4. ``macs/<mac>`` (``macs/<mac>/6``) points at the address of that family a MAC last held; it
   goes when that lease passes to another MAC, so the index never outgrows the leases. A
   container address outside every range (derived from its MAC: EUI-64) has no entry: the
   MAC finds it without one, and its lease goes when it is released (:meth:`Change.delete`).
   The MAC of a ``conflict`` (a stranger's, found answering on the LAN) is never indexed:
   it holds nothing shrike gave;
5. a cursor only moves forward: a stale copy costs one failed compare, never a wrong answer.

A record that does not have the shape shrike writes (edited by hand) is reported as
:class:`~shrike_cli.errors.Damaged`, naming its key, never as a crash.

:meth:`State.check` verifies these invariants (and that every lease lies in the declared
ranges, in a state its kind may have, and every cursor inside its range) in one snapshot
of the store, where what one transaction keeps holds exactly; only what may lag is
allowed: a MAC with no entry. :meth:`State.repair` fixes a missing or dangling index,
free-list or parked entry with a compare-and-swap on the records it was found in.

Changes are built as a :class:`Change` (preconditions and effects in domain terms) and
committed as one compare-and-swap transaction by :meth:`State.commit`.

:meth:`State.export` writes the whole state as one document, its records listed by kind
(:data:`RECORD_KINDS`), and :meth:`State.import_` writes such a document into another store.

Its modules, each one idea: :mod:`.layout` (the keys and the kinds of records),
:mod:`.values` (records as read), :mod:`.change` (a change, where the invariants are kept),
:mod:`.state` (:class:`State`), :mod:`.watch` (the leases' changes) and :mod:`.check` (the
consistency check). Everything the layers above use is imported from here.
"""

from .change import Change, Guard, Outcome, PreconditionFailed, freed, parked, released
from .check import (
    CURSOR_OUTSIDE,
    DAMAGED_RECORD,
    FREE_DANGLING,
    FREE_MISSING,
    LEASE_MISFILED,
    LEASE_OUTSIDE,
    LEASE_STATE,
    MAC_DANGLING,
    NAME_DANGLING,
    NAME_MISSING,
    NAME_TWICE,
    PARKED_DANGLING,
    PARKED_MISSING,
    UNKNOWN_RECORD,
    Finding,
    Survey,
)
from .layout import (
    CONFIG_KEY,
    CURSORS,
    EUI64_SUFFIX,
    EXPORT_FORMAT,
    EXPORT_VERSION,
    FREE,
    LEASES,
    MACS,
    NAMES,
    PARKED,
    POOLS,
    RECORD_KINDS,
    V6_SUFFIX,
    RecordKind,
    pool_key,
)
from .state import ADD_BATCH, State
from .values import Cursor, Idle, Parked, StoredLease, Waiting
from .watch import LeaseChange, LeaseWatch

__all__ = [
    "ADD_BATCH",
    "CONFIG_KEY",
    "CURSORS",
    "CURSOR_OUTSIDE",
    "DAMAGED_RECORD",
    "EUI64_SUFFIX",
    "EXPORT_FORMAT",
    "EXPORT_VERSION",
    "FREE",
    "FREE_DANGLING",
    "FREE_MISSING",
    "LEASES",
    "LEASE_MISFILED",
    "LEASE_OUTSIDE",
    "LEASE_STATE",
    "MACS",
    "MAC_DANGLING",
    "NAMES",
    "NAME_DANGLING",
    "NAME_MISSING",
    "NAME_TWICE",
    "PARKED",
    "PARKED_DANGLING",
    "PARKED_MISSING",
    "POOLS",
    "RECORD_KINDS",
    "UNKNOWN_RECORD",
    "V6_SUFFIX",
    "Change",
    "Cursor",
    "Finding",
    "Guard",
    "Idle",
    "LeaseChange",
    "LeaseWatch",
    "Outcome",
    "Parked",
    "PreconditionFailed",
    "RecordKind",
    "State",
    "StoredLease",
    "Survey",
    "Waiting",
    "freed",
    "parked",
    "pool_key",
    "released",
]
