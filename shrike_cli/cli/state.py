"""What the global options select: the store (opened on first use) and this host's Ipam."""

from __future__ import annotations

import logging
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import typer

from ..ipam import Ipam
from ..stores import STORE_TIMEOUT, open_store
from ..stores.base import Store
from .output import JsonLogFormatter, LogFormat, set_log_format


@dataclass
class Globals:
    cluster_store: str | None
    state_dir: Path | None
    store_prefix: str | None
    debug: bool
    etcd_ca: Path | None = None
    etcd_cert: Path | None = None
    etcd_key: Path | None = None
    etcd_user: str | None = None
    etcd_password: str | None = None
    #: ``--host-name``; None: the machine's hostname
    host_name: str | None = None
    store_timeout: float = STORE_TIMEOUT
    _store: Store | None = field(default=None, repr=False)
    _ipam: Ipam | None = field(default=None, repr=False)

    def store(self) -> Store:
        if self._store is None:
            user, password = self.etcd_user, self.etcd_password
            if user is not None and password is None and ":" in user:
                user, _, password = user.partition(":")  # etcdctl's --user USER:PASSWORD
            self._store = open_store(
                self.cluster_store,
                self.state_dir,
                timeout=self.store_timeout,
                prefix=self.store_prefix,
                ca_cert=self.etcd_ca,
                cert_cert=self.etcd_cert,
                cert_key=self.etcd_key,
                user=user,
                password=password,
            )
        return self._store

    @property
    def host(self) -> str:
        """The name this host's leases carry: ``--host-name``, else the machine's hostname."""
        return self.host_name or socket.gethostname()

    def ipam(self) -> Ipam:
        if self._ipam is None:
            self._ipam = Ipam(self.store(), host=self.host)
        return self._ipam

    def close(self) -> None:
        if self._store is not None:
            self._store.close()


def globals_of(ctx: typer.Context) -> Globals:
    """The root command's options, from any subcommand."""
    obj = ctx.find_root().obj
    assert isinstance(obj, Globals)
    return obj


class _CurrentStderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time, not the one at set-up: server
    threads may outlive a replaced stream (tests capture it per test)."""

    @property  # type: ignore[override]
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _: TextIO) -> None:
        pass


def configure_logging(debug: bool, log_format: LogFormat = LogFormat.text) -> None:
    handler = _CurrentStderr()
    if log_format is LogFormat.json:
        handler.setFormatter(JsonLogFormatter())
    else:
        # One line per record with no timestamp: journald adds its own.
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    set_log_format(log_format)
    handler.addFilter(_quiet_libraries)
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO, handlers=[handler], force=True)


#: Libraries whose debug lines (every HTTP call to dockerd, every netlink message, the
#: event loop pyroute2 starts) would drown ours.
_NOISY = ("urllib3", "docker", "pyroute2", "asyncio")


def _quiet_libraries(record: logging.LogRecord) -> bool:
    # A filter on the handler, not logger levels: pyroute2 resets its level when imported.
    return record.levelno >= logging.INFO or record.name.partition(".")[0] not in _NOISY
