"""Does a container keep its address (and its MAC) when it restarts? For ``benchmarks/run.py``.

On a private dockerd 20.10, a container on a shrike network (embedded store, the server
following dockerd as in production) and its twin on a network with Docker's built-in
IPAM go through each kind of restart side by side; each row counts the restarts after
which the container had the address (MAC) it had before. Then ten containers of each
network restart at once. dockerd 20.10 tells an IPAM driver nothing about which
container asks, so that last row measures shrike's restart rule (see the README), not a
promise; no address may ever be on two containers, which is checked every time.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import uuid
from collections.abc import Callable
from pathlib import Path

from benchmarks.common import Row
from benchmarks.plugin import twin_networks
from shrike_cli.ipam import Ipam
from shrike_cli.stores import DB_NAME, EmbeddedStore
from tests.fixtures.dockerd import DockerDaemon, Tracker
from tests.fixtures.plugin import wait_until

#: Restart policies back off (0.1 s, doubling) while a container lives under 10 s.
POLICY_RESTARTS = 5
AT_ONCE = 10


class Twin:
    """A container on a network (``--restart always``), and what it had when last seen
    running."""

    def __init__(self, dockerd: DockerDaemon, tracker: Tracker, network: str, *command: str) -> None:
        self.dockerd = dockerd
        self.network = network
        self.name = tracker.track_container(f"shk-{uuid.uuid4().hex[:12]}")
        dockerd.docker_cli(
            "run", "-d", "--name", self.name, "--net", network, "--restart", "always",
            dockerd.image, *(command or ("sleep", "3600")),
        )  # fmt: skip
        self.address, self.mac = self.seen()

    def seen(self) -> tuple[str, str]:
        """The address and MAC once the container runs with its endpoint (a restart by
        policy may be caught between the two)."""

        def endpoint() -> tuple[str, str] | None:
            info = self.dockerd.client.api.inspect_container(self.name)
            settings = info["NetworkSettings"]["Networks"][self.network]
            running = info["State"]["Running"] and settings["IPAddress"]
            return (settings["IPAddress"], settings["MacAddress"]) if running else None

        return wait_until(endpoint, timeout=60, what=f"{self.name} running")

    def kept(self) -> tuple[bool, bool]:
        """Whether the address and the MAC are as before; remembers the new ones."""
        address, mac = self.seen()
        kept = (address == self.address, mac == self.mac)
        self.address, self.mac = address, mac
        return kept


def _running(dockerd: DockerDaemon, name: str) -> bool:
    return bool(dockerd.client.api.inspect_container(name)["State"]["Running"])


def _restart_kinds(dockerd: DockerDaemon) -> dict[str, Callable[[str], None]]:
    def cli(*steps: tuple[str, ...]) -> Callable[[str], None]:
        def restart(name: str) -> None:
            for step in steps:
                dockerd.docker_cli(*step, name)

        return restart

    return {
        "docker restart": cli(("restart", "-t", "0")),
        "docker stop, start": cli(("stop", "-t", "0"), ("start",)),
        "docker kill, start": cli(("kill",), ("start",)),
    }


def _no_address_twice(dockerd: DockerDaemon, networks: tuple[str, ...]) -> None:
    for network in networks:
        attached = dockerd.client.api.inspect_network(network)["Containers"] or {}
        addresses = [c["IPv4Address"] for c in attached.values()]
        assert len(addresses) == len(set(addresses)), f"one address on two containers in {network}: {addresses}"


def bench_restarts(workdir: Path, count: int) -> list[Row]:
    """Rows: restarts of each kind keeping the address and the MAC, shrike and built-in."""
    with twin_networks(workdir, "restarts") as lan, contextlib.closing(EmbeddedStore(lan.state / DB_NAME)) as store:
        dockerd, tracker, ours = lan.dockerd, lan.tracker, lan.ours
        ipam = Ipam(store)
        networks = {"shrike (embedded)": ours.name, "built-in IPAM": lan.builtin.name}
        twins = {who: Twin(dockerd, tracker, network) for who, network in networks.items()}
        # The server records a container as its address's holder once it sees it start.
        shrike_twin = twins["shrike (embedded)"]
        wait_until(lambda: ipam.lease(shrike_twin.address).owner.get("name") == shrike_twin.name, what="followed")

        results: dict[tuple[str, str], list[tuple[bool, bool]]] = {}
        kinds = _restart_kinds(dockerd)
        for kind, restart in kinds.items():
            for _ in range(count):
                for who, twin in twins.items():
                    restart(twin.name)
                    results.setdefault((kind, who), []).append(twin.kept())
                _no_address_twice(dockerd, tuple(networks.values()))
        for _ in range(min(count, 5)):
            dockerd.restart()
            for who, twin in twins.items():
                wait_until(lambda t=twin: _running(dockerd, t.name), timeout=60, what="running again")
                results.setdefault(("dockerd restart", who), []).append(twin.kept())
            _no_address_twice(dockerd, tuple(networks.values()))
        for who, network in networks.items():
            policy = Twin(dockerd, tracker, network, "sh", "-c", "sleep 1; exit 1")
            for restarts in range(1, POLICY_RESTARTS + 1):
                wait_until(
                    lambda p=policy, n=restarts: (
                        dockerd.client.api.inspect_container(p.name)["RestartCount"] >= n and _running(dockerd, p.name)
                    ),
                    timeout=60,
                    what="a restart by policy",
                )
                results.setdefault(("restart policy", who), []).append(policy.kept())
            _no_address_twice(dockerd, tuple(networks.values()))
        at_once: dict[str, tuple[int, int]] = {}
        for who, network in networks.items():
            group = [Twin(dockerd, tracker, network) for _ in range(AT_ONCE)]
            if network == ours.name:
                for twin in group:
                    wait_until(lambda t=twin: ipam.lease(t.address).owner.get("name") == t.name, what="followed")
            with concurrent.futures.ThreadPoolExecutor(AT_ONCE) as pool:
                list(pool.map(lambda t: dockerd.docker_cli("restart", "-t", "0", t.name), group))
            kept = [twin.kept() for twin in group]
            _no_address_twice(dockerd, (network,))
            at_once[who] = (sum(a for a, _ in kept), sum(m for _, m in kept))
    rows = []
    for (kind, who), outcomes in results.items():
        addresses, macs = sum(a for a, _ in outcomes), sum(m for _, m in outcomes)
        target, met = (f"= {len(outcomes)}", addresses == len(outcomes)) if who.startswith("shrike") else ("", None)
        rows.append(Row(f"{kind}: address kept, of {len(outcomes)}", who, f"{addresses}", target, met))
        rows.append(Row(f"{kind}: MAC kept, of {len(outcomes)}", who, f"{macs}", ""))
    for who, (addresses, macs) in at_once.items():
        rows.append(Row(f"{AT_ONCE} restarted at once: addresses / MACs kept", who, f"{addresses} / {macs}", ""))
    return rows
