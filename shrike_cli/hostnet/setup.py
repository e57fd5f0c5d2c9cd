"""``create-network`` and its undo as transactions.

Everything is read and checked first (:mod:`.plan`): an error then means nothing
changed. The plan's actions then run in order, and every change they make is
journaled with its inverse as it is made; if any action fails, or the user
interrupts, the journal is played backwards, so the host ends as it was, and the
error says which step failed and whether anything could not be undone.

Setup, bridge mode: claim the host lease, create the Docker network (Docker makes
the bridge with HOST_IP on it), give the bridge the uplink's MAC, add the uplink's
other addresses to it, enslave the uplink, move each route (the default route
first, each by an atomic replace), remove the addresses from the uplink, and write
the ``--persist`` files. Undo (``--undo``): addresses back on the uplink, routes
back, addresses off the bridge, uplink released, host lease released, files
restored, and last the one step that cannot be undone: removing the network.
"""

from __future__ import annotations

import os
import signal
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from functools import partial, singledispatch
from pathlib import Path
from types import FrameType
from typing import Any

import docker
from pyroute2.netlink.exceptions import NetlinkError

from ..errors import ShrikeError
from ..ipam import Ipam
from . import docker_net, persist
from .actions import (
    Action,
    AddAddresses,
    AddShim,
    ClaimLease,
    CreateNetwork,
    DeleteAddresses,
    MoveRoute,
    ReleaseLease,
    RemoveNetwork,
    RemoveShim,
    SetMaster,
    TakeIdentity,
    WriteFiles,
)
from .links import Netlink, describe_netlink_error
from .plan import MODE_BRIDGE, Plan, Request, build_setup, build_teardown, host_ip6_of, lan_of

Undo = Callable[[], Any]
Record = Callable[[Undo], None]
Progress = Callable[[str], None]


class TransactionFailed(ShrikeError):
    """A step failed; what was done before it has been undone (as far as possible)."""


@dataclass
class Env:
    """What the actions act on."""

    ipam: Ipam
    docker: docker.DockerClient
    net: Netlink


@dataclass(frozen=True)
class Persist:
    """``--persist``: where to write, and for which network manager (detected if None)."""

    root: Path
    manager: str | None = None

    def resolve(self) -> str:
        return self.manager or persist.detect(self.root)


class Status(str, Enum):
    """What became of a plan; ``--output json`` shows the value."""

    PLANNED = "planned"  # --dry-run: nothing was changed
    CREATED = "created"
    ALREADY = "already"  # set up before
    REMOVED = "removed"


@dataclass(frozen=True)
class Outcome:
    plan: Plan
    status: Status

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status.value, **self.plan.to_json()}


# ------------------------------------------------------------------ transaction
def run(actions: Sequence[Action], env: Env, progress: Progress) -> None:
    """Run ``actions`` in order; on failure undo every recorded change, newest first.

    SIGTERM and SIGINT roll back too, at the end of the step in progress (see
    :class:`_DeferredSignals`).
    """
    journal: list[tuple[Action, Undo]] = []
    with _DeferredSignals() as signals:
        for action in actions:
            progress(f"- {action}")

            def record(undo: Undo, action: Action = action) -> None:
                journal.append((action, undo))

            try:
                apply(action, env, record)
                signals.check()
            except BaseException as err:
                problems = _roll_back(journal, progress)
                if not isinstance(err, Exception):
                    raise  # an interrupt, after the rollback
                if problems:
                    after = "could NOT undo: " + "; ".join(problems) + " -- check the host by hand"
                elif journal:
                    after = "every change made before it was undone: the host is as it was"
                else:
                    after = "nothing had changed"
                raise TransactionFailed(f"could not {action}: {reason(err)}; {after}") from err


class _DeferredSignals:
    """SIGTERM (kill, systemd) and SIGINT (Ctrl-C) wait for the step in progress, then
    interrupt: a step cut half way, such as a Docker API call whose network dockerd
    creates anyway, could not be undone. Signal handlers can only be set from the main
    thread; elsewhere signals keep their default handling."""

    def __init__(self) -> None:
        self.received: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _DeferredSignals:
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._note) for sig in (signal.SIGTERM, signal.SIGINT)}
        return self

    def _note(self, signum: int, frame: FrameType | None) -> None:
        self.received = signal.Signals(signum).name

    def check(self) -> None:
        if self.received:
            raise KeyboardInterrupt(self.received)

    def __exit__(self, *exc: object) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)


def _roll_back(journal: list[tuple[Action, Undo]], progress: Progress) -> list[str]:
    problems = []
    undone: Action | None = None
    for action, undo in reversed(journal):
        if action is not undone:
            progress(f"- undo: {action}")
            undone = action
        try:
            undo()
        except Exception as err:  # keep undoing the rest: leave as little as possible
            problems.append(f"{action}: {reason(err)}")
    return problems


def reason(err: BaseException) -> str:
    if isinstance(err, NetlinkError):
        return describe_netlink_error(err)
    if isinstance(err, ShrikeError):
        return str(err)
    if isinstance(err, OSError) and err.strerror:
        return f"{err.strerror}: {err.filename}" if err.filename else err.strerror
    return f"{type(err).__name__}: {err}"


# ---------------------------------------------------------------------- actions
@singledispatch
def apply(action: Action, env: Env, record: Record) -> None:
    """Carry out ``action``, calling ``record`` with the inverse of each change right
    after making it, so a failure halfway through an action is undone too."""
    raise TypeError(f"no way to apply {action!r}")


@apply.register
def _claim(action: ClaimLease, env: Env, record: Record) -> None:
    current = env.ipam.lease(action.ip)
    if current is not None and current.is_host_of(env.ipam.host):
        return
    env.ipam.claim_host(action.ip)
    record(partial(env.ipam.release_host, action.ip))


@apply.register
def _release(action: ReleaseLease, env: Env, record: Record) -> None:
    env.ipam.release_host(action.ip)
    record(partial(env.ipam.claim_host, action.ip))


@apply.register
def _create_network(action: CreateNetwork, env: Env, record: Record) -> None:
    docker_net.create(env.docker, action.spec)
    record(partial(docker_net.remove, env.docker, action.spec.name, force=True))


@apply.register
def _remove_network(action: RemoveNetwork, env: Env, record: Record) -> None:
    # Not undoable (disconnected containers could not be put back): plans put it last.
    docker_net.remove(env.docker, action.name, force=bool(action.containers))


@apply.register
def _take_identity(action: TakeIdentity, env: Env, record: Record) -> None:
    old = env.net.link(action.link).mac
    env.net.set_mac(action.link, action.mac)
    record(partial(env.net.set_mac, action.link, old))
    for address in action.link_local:
        if env.net.held(action.link, address) is None:
            env.net.add_address(action.link, address)
            record(partial(env.net.delete_address, action.link, address))
    if action.accept_ra:
        accept = env.net.accept_ra(action.link)
        env.net.set_accept_ra(action.link, 2)
        record(partial(env.net.set_accept_ra, action.link, accept))


@apply.register
def _set_master(action: SetMaster, env: Env, record: Record) -> None:
    old = env.net.link(action.port).master
    env.net.set_master(action.port, action.master)
    record(partial(env.net.set_master, action.port, old))


@apply.register
def _add_addresses(action: AddAddresses, env: Env, record: Record) -> None:
    for address in action.addresses:
        current = env.net.held(action.link, address)
        if current == address and address.version == 4:
            continue
        if current is not None:
            # Docker's gateway address, with another broadcast (IPv4) or still being
            # checked for duplicates (IPv6): make it exactly the uplink's, usable at
            # once, so that the undo gives the uplink back what it had.
            record(partial(env.net.add_address, action.link, current))
            env.net.delete_address(action.link, current)
        record(partial(env.net.delete_address, action.link, address))
        env.net.add_address(action.link, address)


@apply.register
def _delete_addresses(action: DeleteAddresses, env: Env, record: Record) -> None:
    # Read before deleting any: removing a primary address can take its
    # secondaries along, and those must come back too.
    held = [current for address in action.addresses if (current := env.net.held(action.link, address))]
    for current in held:
        record(partial(env.net.add_address, action.link, current))
        env.net.delete_address(action.link, current)


@apply.register
def _move_route(action: MoveRoute, env: Env, record: Record) -> None:
    env.net.replace_route(action.route, action.target)
    record(partial(env.net.replace_route, action.route, action.source))


@apply.register
def _add_shim(action: AddShim, env: Env, record: Record) -> None:
    # Recorded first: a failure after the link exists must still remove it.
    record(partial(env.net.delete_link, action.shim.name, missing_ok=True))
    env.net.add_shim(action.shim)


@apply.register
def _remove_shim(action: RemoveShim, env: Env, record: Record) -> None:
    env.net.delete_link(action.shim.name)
    record(partial(env.net.add_shim, action.shim))


@apply.register
def _write_files(action: WriteFiles, env: Env, record: Record) -> None:
    for path, text in action.files:
        old = Path(path).read_text() if os.path.isfile(path) else None
        record(partial(set_file, path, old))
        set_file(path, text)


def set_file(path: str, text: str | None) -> None:
    """Write ``text`` to ``path`` atomically (a reader sees the old or the new file), or
    remove the file when ``text`` is None."""
    if text is None:
        if os.path.lexists(path):
            os.unlink(path)
        return
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".shrike-")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


# ------------------------------------------------------------------- commands
def _persist_setup(plan: Plan, options: Persist) -> tuple[Action, ...]:
    changes = persist.setup_files(options.root, options.resolve(), plan)
    return (WriteFiles(changes),) if changes else ()


def create_network(
    ipam: Ipam, request: Request, *, dry_run: bool = False, persist_to: Persist | None = None, progress: Progress
) -> Outcome:
    """``create-network``: plan, then (unless ``dry_run`` or already set up) run it. The
    network is dual-stack when the host has an IPv6 LAN address (``--ip6``, else found
    on HOST_IP's link: :func:`host_ip6_of`), in bridge mode."""
    config = ipam.config()
    lan = lan_of(config, request.host_ip)
    client = docker_net.connect()
    try:
        with Netlink() as net:
            network = docker_net.find(client, request.name)
            host = net.read()
            host_ip6 = request.host_ip6
            if host_ip6 is None and request.mode == MODE_BRIDGE:
                host_ip6 = host_ip6_of(config, host, request.host_ip)
            lan6 = lan_of(config, host_ip6, "--ip6") if host_ip6 else None
            lease6 = ipam.lease(lan6.host_ip) if lan6 else None
            plan = build_setup(request, lan, host, network, ipam.lease(lan.host_ip), ipam.host, lan6, lease6)
            if persist_to is not None:
                plan = plan.with_actions(*_persist_setup(plan, persist_to))
            if not dry_run:
                run(plan.actions, Env(ipam, client, net), progress)
    finally:
        client.close()
    return Outcome(plan, Status.PLANNED if dry_run else Status.ALREADY if plan.already else Status.CREATED)


def remove_network(
    ipam: Ipam,
    name: str,
    *,
    force: bool = False,
    dry_run: bool = False,
    persist_to: Persist | None = None,
    progress: Progress,
) -> Outcome:
    """``create-network --undo``: put the host back as it was before ``create-network``."""
    client = docker_net.connect()
    try:
        with Netlink() as net:
            network = docker_net.find(client, name)
            labels = network.labels if network else {}
            host_ip, host_ip6 = (labels.get(docker_net.LABEL_PREFIX + k, "") for k in ("host-ip", "host-ip6"))
            lease = ipam.lease(host_ip) if host_ip else None
            lease6 = ipam.lease(host_ip6) if host_ip6 else None
            files: tuple[Action, ...] = ()
            if persist_to is not None:
                changes = persist.teardown_files(persist_to.root, persist_to.resolve())
                files = (WriteFiles(changes),) if changes else ()
            plan = build_teardown(
                name, network, net.read(), lease, ipam.host, force=force, before_removal=files, lease6=lease6
            )
            if not dry_run:
                run(plan.actions, Env(ipam, client, net), progress)
    finally:
        client.close()
    return Outcome(plan, Status.PLANNED if dry_run else Status.REMOVED)
