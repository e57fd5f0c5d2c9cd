"""Where shrike keeps its state: an embedded SQLite file, or etcd for a cluster."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .base import MAX_TXN_OPS, STORE_TIMEOUT, Delete, Entry, Put, Store, StoreError, TxnResult
from .embedded import EmbeddedStore
from .etcd import EtcdStore

__all__ = [
    "MAX_TXN_OPS",
    "Delete",
    "EmbeddedStore",
    "Entry",
    "EtcdStore",
    "Put",
    "Store",
    "StoreError",
    "STORE_TIMEOUT",
    "TxnResult",
    "default_state_dir",
    "open_store",
    "store_file",
]

#: The embedded store's file name inside the state directory.
DB_NAME = "shrike.db"


def default_state_dir() -> Path:
    """``/var/lib/shrike`` for root, else the XDG state directory (``~/.local/state/shrike``)."""
    if os.geteuid() == 0:
        return Path("/var/lib/shrike")
    xdg = os.environ.get("XDG_STATE_HOME", "")
    # The XDG spec says to ignore relative paths.
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".local" / "state"
    return base / "shrike"


def store_file(state_dir: Path | str | None) -> Path:
    """The embedded store's file in ``state_dir`` (None: :func:`default_state_dir`)."""
    return (Path(state_dir) if state_dir is not None else default_state_dir()) / DB_NAME


def open_store(
    cluster_store: str | None,
    state_dir: Path | str | None = None,
    *,
    timeout: float = STORE_TIMEOUT,
    **tls_and_auth: Any,
) -> Store:
    """Open the etcd store at ``cluster_store`` (comma separated ``http(s)://HOST:PORT``
    URLs), or without one (``None`` or ``""``) the embedded store in ``state_dir``.

    ``tls_and_auth`` are :class:`EtcdStore`'s ``prefix``, ``ca_cert``, ``cert_key``,
    ``cert_cert``, ``user`` and ``password``; ``None`` values are left to its defaults, and
    all of them are ignored without a cluster store. Raises :class:`InvalidInput` for
    malformed URLs, and for a ``cluster_store`` that names no endpoint (blank, commas):
    falling back to this host's own store there would split a cluster's state.
    """
    if cluster_store:
        options = {name: value for name, value in tls_and_auth.items() if value is not None}
        return EtcdStore(cluster_store, timeout=timeout, **options)
    return EmbeddedStore(store_file(state_dir), timeout=timeout)
