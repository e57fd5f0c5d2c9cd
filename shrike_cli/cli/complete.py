"""Values for shell completion: Docker networks, and subnets, addresses and names from the store.

Each public function here is the ``autocompletion=`` callback of a ``typer.Option``. They
run while the shell is drawing the command line (the shell calls the program with
``_SHRIKE_COMPLETE`` set; no command runs), so they

- never write to the terminal: any failure (no store yet, etcd or dockerd down, a bug)
  means no candidates, and stderr is silenced meanwhile, since the Docker SDK and grpc
  may log on their own;
- stay quick: only the options that need the store open it, with the global options
  already typed on the command line (``--cluster-store``, ``--state-dir``, ...) or set in
  the environment; Docker is asked with a short timeout;
- never create anything: without an embedded store file, there is nothing to offer.

Typer keeps the candidates that start with what was typed, and shows the help part of
a ``(value, help)`` pair in zsh and fish.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
from collections.abc import Callable, Iterable, Iterator

import typer

from ..ipam import Ipam
from ..model import KIND_CONTAINER, KIND_HOST
from ..stores import store_file
from .state import Globals

#: A candidate value, or a value with a short description.
Candidate = str | tuple[str, str]
#: What a completion callback looks like to Typer.
Completer = Callable[[typer.Context, str], list[Candidate]]

#: Seconds Docker may take to answer: the user is waiting at the prompt.
DOCKER_TIMEOUT = 2.0


@contextlib.contextmanager
def _silenced() -> Iterator[None]:
    """Send fd 2 to /dev/null meanwhile: C extensions (grpc) write there directly."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def _completer(produce: Callable[[typer.Context], Iterable[Candidate]]) -> Completer:
    """Make ``produce`` a completion callback that is silent and has no candidates on failure.

    Not :func:`functools.wraps`: Typer reads the callback's signature to know what to
    pass, and ``__wrapped__`` would make it read ``produce``'s.
    """

    def complete(ctx: typer.Context, incomplete: str) -> list[Candidate]:
        try:
            with _silenced():
                return list(produce(ctx))
        except Exception:  # a completion must never show a traceback
            return []

    complete.__name__ = complete.__qualname__ = produce.__name__
    complete.__doc__ = produce.__doc__
    return complete


@contextlib.contextmanager
def _ipam(ctx: typer.Context) -> Iterator[Ipam | None]:
    """This host's Ipam on the store the global options name; None when there is no
    embedded store yet (opening it would create it)."""
    root = ctx.find_root()
    if isinstance(root.obj, Globals):  # called from a running command: reuse its store
        yield root.obj.ipam()
        return
    # While completing, the root callback did not run; its parameters are parsed, and
    # Globals' fields are named after them.
    names = [f.name for f in dataclasses.fields(Globals) if f.init and not f.name.startswith("_")]
    options = Globals(**{name: root.params[name] for name in names if name in root.params})
    if not (options.cluster_store or "").strip() and not store_file(options.state_dir).is_file():
        yield None
        return
    try:
        yield options.ipam()
    finally:
        options.close()


@_completer
def lan_subnets(ctx: typer.Context) -> Iterator[Candidate]:
    """The LAN subnets that have container ranges (``reserve --subnet``), with their gateway."""
    with _ipam(ctx) as ipam:
        if ipam is None:
            return
        config = ipam.config()
        subnets = {config.lan_of(r) for r in config.ip_ranges}
        for subnet in sorted(subnets):
            gateway = config.gateway_of(subnet)
            yield (str(subnet), f"gateway {gateway}") if gateway else str(subnet)


def _lease_candidates(ctx: typer.Context, kind: str) -> Iterator[Candidate]:
    """The addresses held (or reserved) as ``kind``, described by holder and host."""
    with _ipam(ctx) as ipam:
        if ipam is None:
            return
        for lease in ipam.leases():
            if lease.kind != kind:
                continue
            holder = lease.holder
            where = f"on {lease.host}" if lease.host else ""
            yield lease.ip, " ".join(part for part in (lease.state, holder, where) if part)


@_completer
def container_addresses(ctx: typer.Context) -> Iterator[Candidate]:
    """Container addresses held or reserved (``release --ip``)."""
    return _lease_candidates(ctx, KIND_CONTAINER)


@_completer
def host_addresses(ctx: typer.Context) -> Iterator[Candidate]:
    """Host addresses recorded by ``create-network`` (``release --host``)."""
    return _lease_candidates(ctx, KIND_HOST)


@_completer
def reservation_names(ctx: typer.Context) -> Iterator[Candidate]:
    """Names given to ``reserve`` (``release --name``), with their address."""
    with _ipam(ctx) as ipam:
        if ipam is None:
            return
        held: dict[str, list[str]] = {}
        for lease in ipam.leases():
            if lease.name:
                held.setdefault(lease.name, []).append(f"{lease.ip} {lease.state}")
        for name, addresses in held.items():  # a name may hold an IPv4 and an IPv6 address
            yield name, ", ".join(addresses)


@_completer
def shrike_networks(ctx: typer.Context) -> Iterator[Candidate]:
    """Docker networks made by ``create-network`` (``--name``, to re-run or ``--undo`` it).

    The dockerd is the one ``DOCKER_HOST`` names, as for the command itself.
    """
    # Imported here: the Docker SDK takes a good part of a second to load, which only
    # this completion should pay.
    from ..docker_api import docker_client
    from ..hostnet.docker_net import LABEL_PREFIX

    with contextlib.closing(docker_client(DOCKER_TIMEOUT)) as client:
        networks = client.api.networks(filters={"label": LABEL_PREFIX + "mode"})
    for network in sorted(networks, key=lambda n: n["Name"]):
        labels = {k.removeprefix(LABEL_PREFIX): v for k, v in (network.get("Labels") or {}).items()}
        mode = " ".join(filter(None, (labels.get("mode"), labels.get("bridge"))))  # "bridge br0"
        on = f" on {labels['uplink']}" if labels.get("uplink") else ""
        yield network["Name"], f"{mode}{on}, host {labels.get('host-ip', '?')}"


@_completer
def interfaces(ctx: typer.Context) -> Iterator[Candidate]:
    """This host's network interfaces (``create-network --uplink``)."""
    return (name for name in sorted(os.listdir("/sys/class/net")) if name != "lo")
