"""The promises under a storm: two hosts (each its own dockerd 20.10 and ``shrike server``)
on one etcd, a seeded random churn of containers on both at once, a shared range that
fills at times, and faults (a server killed with SIGKILL, etcd frozen and killed, a
dockerd restarted) while it runs. See tests/fixtures/storm.py.

Afterwards no address is on two running containers, every running container's address
is held by its host for it, and ``reconcile --fix`` then ``check`` on each host report
nothing. The seed and every action are printed: ``SHRIKE_STORM_SEED=N`` replays the
same choices (their timing, and so some outcomes, may differ). ``SHRIKE_STORM_SECONDS``
sets how long the churn runs (60 by default). Deselect with ``-m "not storm"``.
"""

from __future__ import annotations

import json
import os
import random
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.dockerd import term_as_interrupt
from tests.fixtures.storm import Cluster, addresses_twice, describe, settle, store_problems, storm

pytestmark = [pytest.mark.docker, pytest.mark.storm]

SECONDS = float(os.environ.get("SHRIKE_STORM_SECONDS", "60"))


@pytest.fixture
def cleanup_on_sigterm() -> Iterator[None]:
    """A CI job cancelled with SIGTERM still stops the storm's dockerds and namespaces."""
    if os.geteuid() != 0:
        pytest.skip("the storm needs root: dockerd and network namespaces")
    previous = signal.getsignal(signal.SIGTERM)
    if previous is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, term_as_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@pytest.mark.timeout(900)
@pytest.mark.usefixtures("cleanup_on_sigterm")
def test_two_hosts_keep_every_promise_through_churn_and_faults(tmp_path: Path) -> None:
    seed = int(os.environ.get("SHRIKE_STORM_SEED") or random.randrange(1_000_000))
    print(f"SHRIKE_STORM_SEED={seed}")
    with Cluster(tmp_path) as cluster:
        log = storm(cluster, seed, SECONDS)
        print(log)
        counts = {
            host.name: sum(a.host == host.name and a.outcome == "ok" for a in log.actions) for host in cluster.hosts
        }
        print("actions done:", counts)
        assert all(counts.values()), "a host did nothing: the storm did not run"

        try:
            promises_kept(cluster)
        finally:
            print(describe(cluster))


def promises_kept(cluster: Cluster) -> None:
    """What must hold after the storm (see the module docstring)."""
    assert addresses_twice(cluster) == []
    assert settle(cluster) == []
    assert store_problems(cluster) == []
    for host in cluster.hosts:
        fixed = host.shrike("reconcile", "--fix", "--grace", "0s", "--plugin-name", host.server.name, "-o", "json")
        assert fixed.returncode == 0, f"{host.name}: {fixed.stdout}{fixed.stderr}"
        print(host.name, "reconcile --fix released", [leak["ip"] for leak in json.loads(fixed.stdout)["leaks"]])
    for host in cluster.hosts:
        checked = host.shrike("check", "--plugin-name", host.server.name, "-o", "json")
        report = json.loads(checked.stdout)
        assert (checked.returncode, report["problems"]) == (0, []), f"{host.name}: {report}{checked.stderr}"
        assert report["docker"]["checked"], report
