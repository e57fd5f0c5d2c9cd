"""The store: does it answer, and does it declare a LAN with container addresses?"""

from __future__ import annotations

from collections.abc import Callable, Generator
from pathlib import Path

from ..errors import ShrikeError
from ..ipam import Ipam
from ..model import Config
from ..stores.base import Store
from .check import FAIL, OK, WARN, Check


def store_check(
    store_file: Path | None, open_store: Callable[[], Store], host: str | None
) -> Generator[Check, None, tuple[Ipam, Config] | None]:
    """Whether the store answers; returns it and its configuration, once it did. A
    missing embedded store is reported, not created by opening it."""
    if store_file is not None and not store_file.exists():
        yield Check(
            "store",
            FAIL,
            f"there is no embedded store at {store_file}: nothing is declared on this host",
            "declare the LAN with 'shrike host-range --ip-start=FIRST/LEN --ip-end=LAST/LEN --gateway=ROUTER'; "
            "if this host uses etcd, give --cluster-store (or CLUSTER_STORE)",
        )
        return None
    what = "embedded store" if store_file is not None else "etcd at"
    try:
        store = open_store()
        ipam = Ipam(store, host=host)
        config = ipam.config()
    except ShrikeError as err:
        hint = (
            f"check that {store_file} is readable (run as root?)"
            if store_file is not None
            else "check that etcd runs, and that --cluster-store (CLUSTER_STORE) and the --etcd-* options are right"
        )
        yield Check("store", FAIL, f"cannot read the store: {err}", hint)
        return None
    yield Check("store", OK, f"{what} {store.location} answers")
    return ipam, config


def declarations(config: Config) -> Check:
    """A LAN subnet and a container range are declared; each LAN has container addresses."""
    if not config.lans:
        return Check(
            "declarations",
            FAIL,
            "no LAN subnet is declared",
            "declare it: shrike host-range --ip-start=FIRST/LEN --ip-end=LAST/LEN --gateway=ROUTER",
        )
    lans = sorted(config.lans)
    if not config.ip_ranges:
        return Check(
            "declarations",
            FAIL,
            f"LAN {', '.join(map(str, lans))} is declared, but no container range",
            f"declare the addresses containers get: shrike ip-range --ip-start=FIRST/{lans[0].prefixlen} "
            f"--ip-end=LAST/{lans[0].prefixlen}",
        )
    found, empty = [], []
    for lan in lans:
        ranges = config.container_ranges_in(lan)
        hosts = sum(r.size for r in config.host_ranges if lan.covers(r.start, r.end))
        count = sum(r.size for r in ranges)
        found.append(
            f"LAN {lan} (gateway {config.gateway_of(lan)}): {hosts} host and {count} container addresses"
            f" in {len(ranges)} range{'s' if len(ranges) != 1 else ''}"
        )
        if not ranges:
            empty.append(str(lan))
    if empty:
        return Check(
            "declarations",
            WARN,
            "; ".join(found),
            f"containers on {', '.join(empty)} cannot get addresses: declare a range there with shrike ip-range",
        )
    return Check("declarations", OK, "; ".join(found))
