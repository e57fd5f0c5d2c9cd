"""The test infrastructure itself: namespaces, LANs and the private dockerd work."""

from __future__ import annotations

import ipaddress
import os
import subprocess
from collections.abc import Iterator

import pytest

from tests.fixtures.dockerd import DockerDaemon, Tracker, unique_plugin_name
from tests.fixtures.netns import Lan, free_name, session_prefix

pytestmark = pytest.mark.netns


def _root_links() -> set[str]:
    out = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True, check=True)
    # "veth1@if5 UP ..." -> "veth1"
    return {line.split()[0].split("@")[0] for line in out.stdout.splitlines() if line.strip()}


_ROOT_LINKS_AT_START: set[str] = set()


@pytest.fixture(scope="session", autouse=True)
def _root_namespace_untouched() -> Iterator[None]:
    # Session scope + autouse: the snapshot is taken before the session's
    # dockerd starts (when this module is the first to use it), and the
    # check at teardown runs after dockerd and every LAN are gone.
    _ROOT_LINKS_AT_START.update(_root_links())
    yield
    new = _root_links() - _ROOT_LINKS_AT_START
    assert not new, f"links left in the machine's own namespace: {sorted(new)}"


def test_free_name_is_short_and_unique() -> None:
    names = {free_name("shkt") for _ in range(50)}
    assert len(names) == 50
    assert all(len(n) <= 15 for n in names)
    with pytest.raises(ValueError):
        free_name("a-prefix-much-too-long")


def test_lan_hosts_ping_each_other(lan: Lan) -> None:
    a = lan.add_host("a", "198.51.100.10/24")
    b = lan.add_host("b", "198.51.100.11/24")
    assert a.netns.startswith(session_prefix()) and lan.netns.startswith(session_prefix())
    assert a.netns_path == f"/var/run/netns/{a.netns}"
    assert os.path.exists(a.netns_path) and os.path.exists(lan.netns_path)
    assert a.uplink == "up0"
    assert "198.51.100.10/24" in a.run(["ip", "-br", "addr", "show", "up0"]).stdout
    assert "default via 198.51.100.254" in a.run("ip route").stdout

    r = a.ping(b.ip)
    assert r.returncode == 0, r.stdout + r.stderr
    r = b.ping("198.51.100.254")
    assert r.returncode == 0, r.stdout + r.stderr


def test_lan_cleanup_removes_namespaces_and_is_idempotent() -> None:
    lan = Lan("203.0.113.0/24", "203.0.113.254")
    host = lan.add_host("h", "203.0.113.5/24", with_default_route=False)
    assert "default" not in host.run("ip route").stdout
    namespaces = [lan.netns, host.netns]
    lan.cleanup()
    lan.cleanup()
    for ns in namespaces:
        assert not os.path.exists(f"/var/run/netns/{ns}")


def test_dockerd_runs_a_container(dockerd: DockerDaemon) -> None:
    assert dockerd.startup_seconds is not None and dockerd.startup_seconds < 30
    print(f"dockerd came up in {dockerd.startup_seconds:.2f}s")
    out = dockerd.client.containers.run(dockerd.image, ["ip", "addr"], remove=True)
    text = out.decode()
    assert "lo:" in text and "127.0.0.1" in text


def test_dockerd_lives_on_its_own_lan(dockerd: DockerDaemon) -> None:
    assert dockerd.url == f"unix://{dockerd.socket}"
    assert dockerd.env["DOCKER_HOST"] == dockerd.url
    assert dockerd.plugin_dir == "/run/docker/plugins"
    assert os.path.isdir(dockerd.plugin_dir)
    assert dockerd.lan is not None and dockerd.host is not None
    assert dockerd.netns == dockerd.host.netns
    addr = dockerd.host.run(["ip", "-br", "addr", "show", "up0"]).stdout
    assert "198.51.100.39/24" in addr
    r = dockerd.host.ping("198.51.100.254")
    assert r.returncode == 0, r.stdout + r.stderr
    # --bridge=none: no docker0 anywhere
    assert "docker0" not in dockerd.host.run(["ip", "-br", "link"]).stdout
    # the docker CLI (a newer client) talks to it through .env
    version = dockerd.docker_cli("version", "--format", "{{.Server.APIVersion}}").stdout
    assert version.strip() == "1.41"


def test_unique_plugin_names() -> None:
    a, b = unique_plugin_name(), unique_plugin_name()
    assert a != b and str(os.getpid()) in a


_TRACKED: dict[str, str] = {}


def test_container_on_builtin_bridge_network(dockerd: DockerDaemon, docker_cleanup: Tracker) -> None:
    bridge = free_name("shkb")
    net = dockerd.client.networks.create(
        free_name("shkn"),
        driver="bridge",
        ipam={"Config": [{"Subnet": "203.0.113.0/24", "Gateway": "203.0.113.1"}]},
        options={"com.docker.network.bridge.name": bridge},
    )
    docker_cleanup.track_network(net)
    c = dockerd.client.containers.run(dockerd.image, ["sleep", "60"], network=net.name, detach=True)
    docker_cleanup.track_container(c)
    _TRACKED.update(container=c.id, network=net.name)

    c.reload()
    ip = c.attrs["NetworkSettings"]["Networks"][net.name]["IPAddress"]
    assert ipaddress.IPv4Address(ip) in ipaddress.IPv4Network("203.0.113.0/24")
    code, out = c.exec_run(["ip", "addr", "show", "eth0"])
    assert code == 0 and f"{ip}/24" in out.decode()
    code, out = c.exec_run(["ping", "-c", "2", "-W", "1", "203.0.113.1"])
    assert code == 0, out.decode()

    # the bridge lives in dockerd's namespace, not the machine's
    assert bridge in dockerd.host.run(["ip", "-br", "link"]).stdout
    assert bridge not in _root_links()


def test_docker_cleanup_removed_the_previous_tests_objects(dockerd: DockerDaemon) -> None:
    if not _TRACKED:
        pytest.skip("runs after test_container_on_builtin_bridge_network")
    ids = {c.id for c in dockerd.client.containers.list(all=True)}
    assert _TRACKED["container"] not in ids
    assert _TRACKED["network"] not in {n.name for n in dockerd.client.networks.list()}


def test_root_namespace_has_no_new_links() -> None:
    new = _root_links() - _ROOT_LINKS_AT_START
    assert not new, f"links in the machine's own namespace: {sorted(new)}"
