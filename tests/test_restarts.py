"""A container keeps its address, and no address is ever on two containers, with a real
dockerd 20.10 and ``shrike server`` following it (as operators run it).

dockerd 20.10 releases a container's address when it stops and asks again, with a new
random MAC and nothing else that names the container, when it starts: shrike parks the
address for the container meanwhile and gives it back (see the README's restart rule).
"""

from __future__ import annotations

import concurrent.futures
import json
import subprocess
import uuid

import pytest
from docker.models.networks import Network

from tests.fixtures.dockerd import DockerDaemon, Tracker
from tests.fixtures.plugin import SHRIKE, Plugin, endpoint, run, wait_until

pytestmark = [pytest.mark.docker, pytest.mark.follow_docker]

#: Restarts of each kind per test (the benchmark does 20 of each).
RESTARTS = 4


def address(dockerd: DockerDaemon, container: str, network: Network) -> str:
    return endpoint(dockerd, container, network)["IPAddress"]


def followed(plugin: Plugin, container: str, ip: str) -> None:
    """Wait until the server has recorded ``container`` as the holder of ``ip``."""
    wait_until(lambda: plugin.ipam.lease(ip).owner.get("name") == container, what=f"{container} owning {ip}")


def shrike(plugin: Plugin, dockerd: DockerDaemon, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SHRIKE, *plugin.server.store_args, *args],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        env=dockerd.env,
    )


def test_a_container_keeps_its_address_across_every_kind_of_restart(
    plugin: Plugin, network: Network, dockerd: DockerDaemon, docker_cleanup: Tracker
) -> None:
    container, error = run(dockerd, docker_cleanup, network)
    assert error == ""
    ip = address(dockerd, container, network)
    followed(plugin, container, ip)
    kinds = {
        "restart": [("restart", "-t", "0", container)],
        "stop, start": [("stop", "-t", "0", container), ("start", container)],
        "kill, start": [("kill", container), ("start", container)],
    }
    for kind, steps in kinds.items():
        for attempt in range(RESTARTS):
            for step in steps:
                dockerd.docker_cli(*step)
            assert address(dockerd, container, network) == ip, f"{kind} #{attempt + 1}"


def test_a_stopped_containers_address_waits_for_it_until_it_is_removed(
    plugin: Plugin, network: Network, dockerd: DockerDaemon, docker_cleanup: Tracker
) -> None:
    stopped, _ = run(dockerd, docker_cleanup, network)
    ip = address(dockerd, stopped, network)
    followed(plugin, stopped, ip)
    dockerd.docker_cli("stop", "-t", "0", stopped)
    assert plugin.ipam.lease(ip).state == "parked"
    # New containers meanwhile get other addresses...
    newcomers = [run(dockerd, docker_cleanup, network)[0] for _ in range(3)]
    assert ip not in {address(dockerd, c, network) for c in newcomers}
    # ...and it gets its own back.
    dockerd.docker_cli("start", stopped)
    assert address(dockerd, stopped, network) == ip
    # Removed, it frees its address (dockerd's destroy event).
    dockerd.docker_cli("rm", "-f", stopped)
    wait_until(lambda: plugin.ipam.lease(ip).state == "released", what=f"{ip} released")


def test_a_restart_policy_brings_the_container_back_with_its_address(
    plugin: Plugin, network: Network, dockerd: DockerDaemon, docker_cleanup: Tracker
) -> None:
    name = docker_cleanup.track_container(f"shk-{uuid.uuid4().hex[:12]}")
    dockerd.docker_cli(
        "run", "-d", "--name", name, "--net", network.name, "--restart", "always",
        dockerd.image, "sh", "-c", "sleep 1; exit 1",
    )  # fmt: skip
    seen: set[str] = set()

    def restarted_enough() -> bool:
        info = dockerd.client.api.inspect_container(name)
        settings = info["NetworkSettings"]["Networks"][network.name]
        if settings.get("IPAddress"):
            seen.add(settings["IPAddress"])
            if plugin.ipam.lease(settings["IPAddress"]).owner.get("name") != name:
                return False  # not followed yet: a restart now would not find it parked
        return info["RestartCount"] >= 3

    wait_until(restarted_enough, timeout=60, what="three restarts")
    assert len(seen) == 1, seen


def test_a_dockerd_restart_gives_the_container_its_address_back(
    plugin: Plugin, network: Network, dockerd: DockerDaemon, docker_cleanup: Tracker
) -> None:
    container, _ = run(dockerd, docker_cleanup, network, "--restart", "always")
    ip = address(dockerd, container, network)
    followed(plugin, container, ip)
    dockerd.restart()
    wait_until(lambda: dockerd.client.api.inspect_container(container)["State"]["Running"], what="running again")
    assert address(dockerd, container, network) == ip


def test_release_refuses_an_address_a_running_container_holds(
    plugin: Plugin, network: Network, dockerd: DockerDaemon, docker_cleanup: Tracker
) -> None:
    container, _ = run(dockerd, docker_cleanup, network)
    ip = address(dockerd, container, network)
    refused = shrike(plugin, dockerd, "release", "--ip", ip)
    assert refused.returncode == 1 and f"container {container}" in refused.stderr, refused.stderr
    assert plugin.ipam.lease(ip).state == "held"
    # --force releases it, with a warning, and reconcile then reports the duplicate risk.
    forced = shrike(plugin, dockerd, "release", "--ip", ip, "--force")
    assert forced.returncode == 0 and "two containers may share it" in forced.stderr, forced.stderr
    report = shrike(plugin, dockerd, "reconcile", "--plugin-name", plugin.name, "--output", "json")
    assert report.returncode == 1
    assert [d["ip"] for d in json.loads(report.stdout)["duplicates"]] == [ip]


def test_no_address_is_ever_on_two_containers_when_ten_restart_at_once(
    plugin: Plugin, network: Network, dockerd: DockerDaemon, docker_cleanup: Tracker
) -> None:
    """dockerd 20.10 tells the plugin nothing about which container asks: ten restarting
    at once may get each other's addresses back (the benchmark counts how many keep
    theirs), but never one address twice."""
    containers = [run(dockerd, docker_cleanup, network)[0] for _ in range(10)]
    before = {c: address(dockerd, c, network) for c in containers}
    for c, ip in before.items():
        followed(plugin, c, ip)
    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        list(pool.map(lambda c: dockerd.docker_cli("restart", "-t", "0", c), containers))
    after = {c: address(dockerd, c, network) for c in containers}
    assert len(set(after.values())) == 10
    assert set(after.values()) == set(before.values())  # they took back the parked ones
