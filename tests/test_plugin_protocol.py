"""The IPAM plugin over its real unix socket, on both stores, with dockerd's request shapes.

The request bodies are the ones dockerd 20.10 sends (see FIELD-NOTES.md): empty handshake
bodies, no Content-Type, ``Options: null`` for aux addresses, the MAC for endpoints.
"""

from __future__ import annotations

import concurrent.futures
import grp
import json
import os
import signal
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from shrike_cli.errors import Conflict, ShrikeError
from shrike_cli.ipam import Ipam
from shrike_cli.plugin import Driver, PluginServer
from shrike_cli.plugin.client import PluginClient
from shrike_cli.plugin.server import CONTENT_TYPE
from shrike_cli.pools import Pool, Pools
from shrike_cli.state import CONFIG_KEY
from shrike_cli.stores.base import Put, Store
from tests.fixtures.plugin import HOST_ADDRESS, ROUTER, SHRIKE, SUBNET, ServerProcess, declare_lan, random_mac

POOL_ID = "shrike/198.51.100.0/24"
MAC = "02:42:c6:33:64:0a"
THIS_HOST = "host-a"

GATEWAY_OPTIONS = {"RequestAddressType": "com.docker.network.gateway"}


def pool_request(subnet: str = SUBNET, sub_pool: str = "", **extra: Any) -> dict[str, Any]:
    """RequestPool exactly as ``docker network create --subnet`` sends it."""
    return {"AddressSpace": "shrike-local", "Pool": subnet, "SubPool": sub_pool, "Options": {}, "V6": False, **extra}


def address_request(address: str = "", options: dict[str, str] | None = None, pool_id: str = POOL_ID) -> dict[str, Any]:
    return {"PoolID": pool_id, "Address": address, "Options": options}


def container_options(mac: str = MAC) -> dict[str, str]:
    return {"com.docker.network.endpoint.macaddress": mac}


@pytest.fixture
def ipam(store: Store) -> Ipam:
    ipam = Ipam(store, host=THIS_HOST, max_wait=10.0)
    declare_lan(ipam)
    return ipam


@pytest.fixture
def server(ipam: Ipam, socket_dir: Path) -> Iterator[PluginServer]:
    with PluginServer(Driver(ipam), socket_dir / "shrike.sock") as running:
        yield running


@pytest.fixture
def client(server: PluginServer) -> Iterator[PluginClient]:
    with PluginClient(server.path, timeout=20.0) as connected:
        yield connected


def raw_exchange(path: Path, data: bytes, timeout: float = 10.0) -> bytes:
    """Send bytes as they are, read until the server closes the connection."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


# ---------------------------------------------------------------------- handshake
def test_handshake_with_empty_bodies_and_no_content_type(client: PluginClient) -> None:
    expected = {
        "/Plugin.Activate": {"Implements": ["IpamDriver"]},
        "/IpamDriver.GetCapabilities": {"RequiresMACAddress": True, "RequiresRequestReplay": False},
        "/IpamDriver.GetDefaultAddressSpaces": {
            "LocalDefaultAddressSpace": "shrike-local",
            "GlobalDefaultAddressSpace": "shrike-global",
        },
    }
    for path, reply in expected.items():
        status, body = client.send(path, b"")
        assert (status, json.loads(body)) == (200, reply)
    # {} and a trailing newline, as other dockerd bodies come, are the same call.
    assert client.send("/Plugin.Activate", b"{}\n")[0] == 200


def test_replies_are_keep_alive_json_with_exact_length(client: PluginClient) -> None:
    client.call("Plugin.Activate")
    first = client.connection.sock
    client.connection.request("POST", "/IpamDriver.GetCapabilities", body=b"", headers={"Host": ""})
    response = client.connection.getresponse()
    body = response.read()
    assert response.status == 200
    assert response.getheader("Content-Type") == CONTENT_TYPE
    assert int(response.getheader("Content-Length")) == len(body)
    assert json.loads(body)["RequiresMACAddress"] is True
    assert client.connection.sock is first, "the connection was not kept alive"


def test_discovery_notifications_are_acknowledged(client: PluginClient) -> None:
    payload = {"DiscoveryType": 1, "DiscoveryData": {"Address": "198.51.100.40", "self": False}}
    assert client.call("IpamDriver.DiscoverNew", payload) == (200, {})
    assert client.call("IpamDriver.DiscoverDelete", payload) == (200, {})


# -------------------------------------------------------------------------- pools
def test_pool_ids_are_derived_from_subnet_and_sub_pool(client: PluginClient) -> None:
    assert client.call("IpamDriver.RequestPool", pool_request()) == (
        200,
        {"PoolID": POOL_ID, "Pool": SUBNET, "Data": {}},
    )
    status, reply = client.call("IpamDriver.RequestPool", pool_request(sub_pool="198.51.100.128/25"))
    assert (status, reply["PoolID"]) == (200, "shrike/198.51.100.0/24/198.51.100.128/25")
    # The Python SDK sends Options null; an --ip-range equal to the subnet is no narrowing.
    assert client.request_pool(SUBNET, SUBNET) == POOL_ID
    assert client.call("IpamDriver.RequestPool", pool_request(Options=None))[1]["PoolID"] == POOL_ID


def test_requested_pools_are_counted_per_host_and_released(client: PluginClient, ipam: Ipam) -> None:
    pools = Pools(ipam.store, THIS_HOST)
    key = Pool.from_id(POOL_ID).key
    client.request_pool(SUBNET)
    client.request_pool(SUBNET)
    other_host = Pools(ipam.store, "host-b")
    other_host.acquire(Pool.of(SUBNET))
    assert pools.list() == [replace(Pool.of(SUBNET), refs={THIS_HOST: 2, "host-b": 1})]
    assert client.call("IpamDriver.ReleasePool", {"PoolID": POOL_ID}) == (200, {})
    assert ipam.store.get(key).value["refs"] == {THIS_HOST: 1, "host-b": 1}
    client.ok("IpamDriver.ReleasePool", {"PoolID": POOL_ID})
    other_host.release(Pool.of(SUBNET))
    assert ipam.store.get(key) is None
    # Releasing a pool nobody holds (or twice) is harmless.
    assert client.call("IpamDriver.ReleasePool", {"PoolID": POOL_ID}) == (200, {})


@pytest.mark.parametrize(
    ("request_body", "error"),
    [
        (pool_request(subnet=""), "--subnet"),
        (pool_request(subnet="", sub_pool="198.51.100.128/25"), "--subnet"),
        (pool_request(V6=True), "IPv4"),
        (pool_request(subnet="2001:db8::/64"), "IPv4"),
        (pool_request(subnet="203.0.113.0/24"), "no container range in 203.0.113.0/24"),
        (pool_request(sub_pool="198.51.100.0/28"), "no container range in 198.51.100.0/24 within 198.51.100.0/28"),
        (pool_request(sub_pool="203.0.113.0/25"), "not inside"),
        (pool_request(subnet="198.51.100.7/24"), "not a network address"),
    ],
    ids=[
        "no-subnet",
        "sub-pool-only",
        "v6",
        "v6-subnet",
        "no-range",
        "sub-pool-without-range",
        "sub-pool-outside",
        "host-bits",
    ],
)
def test_unservable_pools_are_refused_with_a_clear_err(
    client: PluginClient, request_body: dict[str, Any], error: str
) -> None:
    status, reply = client.call("IpamDriver.RequestPool", request_body)
    assert status == 500
    assert error in reply["Err"]


def test_no_subnet_names_the_declared_subnets(client: PluginClient) -> None:
    assert SUBNET in client.call("IpamDriver.RequestPool", pool_request(subnet=""))[1]["Err"]


# ---------------------------------------------------------------- network create
def test_network_create_records_gateway_and_aux_without_taking_container_addresses(
    client: PluginClient, ipam: Ipam
) -> None:
    # docker network create --subnet 198.51.100.0/24 --gateway 198.51.100.39
    #   --aux-address DefaultGatewayIPv4=198.51.100.254
    pool_id = client.request_pool(SUBNET)
    assert client.call("IpamDriver.RequestAddress", address_request(HOST_ADDRESS, GATEWAY_OPTIONS, pool_id)) == (
        200,
        {"Address": "198.51.100.39/24", "Data": {}},
    )
    assert client.call("IpamDriver.RequestAddress", address_request(ROUTER, None, pool_id)) == (
        200,
        {"Address": "198.51.100.254/24", "Data": {}},
    )
    held = {lease.ip: lease for lease in ipam.leases()}
    assert held[HOST_ADDRESS].kind == "host"
    # The LAN's router is kept from containers already: acknowledged, nothing recorded.
    assert ROUTER not in held
    # The first container still gets the first container address.
    assert client.request_address(pool_id, mac=MAC) == "198.51.100.100/24"

    # docker network rm: gateway and aux released, then the pool.
    for address in (HOST_ADDRESS, ROUTER):
        assert client.call("IpamDriver.ReleaseAddress", {"PoolID": pool_id, "Address": address}) == (200, {})
    client.ok("IpamDriver.ReleasePool", {"PoolID": pool_id})
    assert ipam.lease(ROUTER) is None
    assert ipam.lease(HOST_ADDRESS).kind == "host"


def test_gateway_outside_the_hosts_addresses_is_recorded_as_gateway(client: PluginClient, ipam: Ipam) -> None:
    # A macvlan network's gateway is the LAN router.
    assert client.request_pool(SUBNET) == POOL_ID
    reply = client.ok("IpamDriver.RequestAddress", address_request(ROUTER, GATEWAY_OPTIONS))
    assert reply["Address"] == "198.51.100.254/24"
    assert ipam.lease(ROUTER).kind == "gateway"


def test_network_without_gateway_gets_this_hosts_address(client: PluginClient) -> None:
    assert client.ok("IpamDriver.RequestAddress", address_request("", GATEWAY_OPTIONS))["Address"] == "198.51.100.39/24"


def test_network_without_gateway_on_a_host_without_address_is_refused(ipam: Ipam, socket_dir: Path) -> None:
    elsewhere = Ipam(ipam.store, host="host-b")
    with PluginServer(Driver(elsewhere), socket_dir / "b.sock") as server, PluginClient(server.path) as client:
        status, reply = client.call("IpamDriver.RequestAddress", address_request("", GATEWAY_OPTIONS))
    assert status == 500
    assert "--gateway" in reply["Err"] and "host-b" in reply["Err"]


@pytest.mark.parametrize(
    ("address", "error"),
    [
        ("198.51.100.150", "container address"),
        ("198.51.100.0", "not a usable address"),
        ("203.0.113.1", "not a usable address"),
    ],
)
def test_gateway_and_aux_must_lie_outside_container_ranges_inside_the_pool(
    client: PluginClient, address: str, error: str
) -> None:
    for options in (GATEWAY_OPTIONS, None):
        status, reply = client.call("IpamDriver.RequestAddress", address_request(address, options))
        assert status == 500 and error in reply["Err"]


# -------------------------------------------------------------------- containers
def test_container_address_carries_the_pool_prefix_and_the_mac(client: PluginClient, ipam: Ipam) -> None:
    name_options = {**container_options(), "com.docker.network.endpoint.name": "web1"}
    reply = client.ok("IpamDriver.RequestAddress", address_request("", name_options))
    assert reply == {"Address": "198.51.100.100/24", "Data": {}}
    lease = ipam.lease("198.51.100.100")
    assert (lease.kind, lease.state, lease.mac, lease.host, lease.owner) == (
        "container",
        "held",
        MAC,
        THIS_HOST,
        {"name": "web1"},
    )


def test_addresses_carry_the_prefix_of_a_pool_narrower_than_the_lan(client: PluginClient, ipam: Ipam) -> None:
    ipam.declare_ip_range("198.51.100.200/24", "198.51.100.250/24")
    pool_id = client.request_pool("198.51.100.192/26")
    assert client.request_address(pool_id, mac=MAC) == "198.51.100.200/26"
    aux = client.ok("IpamDriver.RequestAddress", address_request(ROUTER, None, pool_id))
    assert aux["Address"] == "198.51.100.254/26"


def test_sub_pool_narrows_dynamic_addresses_not_explicit_ones(client: PluginClient) -> None:
    pool_id = client.request_pool(SUBNET, "198.51.100.128/25")
    assert client.request_address(pool_id, mac=MAC) == "198.51.100.128/24"
    # Like Docker's own driver, an explicit address may lie anywhere a container may go.
    assert client.request_address(pool_id, "198.51.100.110", mac="02:42:c6:33:64:0b") == "198.51.100.110/24"


def test_explicit_address_is_granted_exactly_once(client: PluginClient) -> None:
    # docker run --ip 198.51.100.150
    assert client.request_address(POOL_ID, "198.51.100.150", mac=MAC) == "198.51.100.150/24"
    status, reply = client.call(
        "IpamDriver.RequestAddress", address_request("198.51.100.150", container_options("02:42:c6:33:64:0b"))
    )
    assert status == 500 and "already in use" in reply["Err"]
    # Dynamic requests go around it.
    assert client.request_address(POOL_ID) == "198.51.100.100/24"


@pytest.mark.parametrize(
    ("address", "error"),
    [
        (HOST_ADDRESS, "host address"),
        ("198.51.100.5", "host address"),
        (ROUTER, "gateway of the LAN"),
        ("198.51.100.220", "outside every container range"),
        ("203.0.113.9", "outside the subnet"),
    ],
)
def test_explicit_addresses_containers_may_not_have_are_refused(client: PluginClient, address: str, error: str) -> None:
    status, reply = client.call("IpamDriver.RequestAddress", address_request(address, container_options()))
    assert status == 500
    assert error in reply["Err"]


def test_release_frees_the_address_and_unknown_releases_are_harmless(client: PluginClient, ipam: Ipam) -> None:
    address = client.request_address(POOL_ID, mac=MAC).split("/")[0]
    assert client.call("IpamDriver.ReleaseAddress", {"PoolID": POOL_ID, "Address": address}) == (200, {})
    assert ipam.lease(address).state == "released"
    for unknown in (address, "198.51.100.180", HOST_ADDRESS):
        assert client.call("IpamDriver.ReleaseAddress", {"PoolID": POOL_ID, "Address": unknown}) == (200, {})
    assert ipam.lease(HOST_ADDRESS).kind == "host"
    # The same MAC comes back to the same address (docker start of the same endpoint).
    assert client.request_address(POOL_ID, mac=MAC) == f"{address}/24"


def test_restart_with_ip_gets_the_same_address_back(client: PluginClient) -> None:
    # docker restart of a container started with --ip: release, then the same request.
    for mac in (MAC, "02:42:c6:33:64:0b"):
        assert client.request_address(POOL_ID, "198.51.100.123", mac=mac) == "198.51.100.123/24"
        client.release_address(POOL_ID, "198.51.100.123")


# ---------------------------------------------------------------- malformed input
@pytest.mark.parametrize(
    ("path", "body", "error"),
    [
        ("/IpamDriver.RequestAddress", b"{not json", "not JSON"),
        ("/IpamDriver.RequestAddress", b"\xff\xfe\x00garbage", "not JSON"),
        ("/IpamDriver.RequestAddress", b"[" * 50_000, "not JSON"),
        ("/IpamDriver.RequestAddress", b'["PoolID"]', "JSON object"),
        ("/IpamDriver.RequestAddress", b'{"Address": ""}', "missing field PoolID"),
        ("/IpamDriver.RequestAddress", b'{"PoolID": 5}', "PoolID must be a string"),
        ("/IpamDriver.RequestAddress", b'{"PoolID": "nonsense"}', "not a shrike pool id"),
        ("/IpamDriver.RequestAddress", b'{"PoolID": "shrike/1.2.3.4/40"}', "not a shrike pool id"),
        (
            "/IpamDriver.RequestAddress",
            b'{"PoolID": "shrike/198.51.100.0/24", "Address": 7}',
            "Address must be a string",
        ),
        ("/IpamDriver.RequestAddress", b'{"PoolID": "shrike/198.51.100.0/24", "Options": "x"}', "Options"),
        ("/IpamDriver.RequestAddress", b'{"PoolID": "shrike/198.51.100.0/24", "Options": {"a": 1}}', "Options"),
        ("/IpamDriver.RequestPool", b'{"Pool": "198.51.100.0/24", "V6": "no"}', "V6 must be a boolean"),
        ("/IpamDriver.RequestPool", b'{"Pool": ["198.51.100.0/24"]}', "Pool must be a string"),
        ("/IpamDriver.ReleasePool", b"{}", "missing field PoolID"),
        ("/IpamDriver.ReleaseAddress", b'{"PoolID": "shrike/198.51.100.0/24"}', "missing field Address"),
        ("/IpamDriver.ReleaseAddress", b'{"PoolID": "shrike/198.51.100.0/24", "Address": "x"}', "not an IPv4 address"),
    ],
)
def test_malformed_bodies_get_400_and_the_server_goes_on(
    client: PluginClient, path: str, body: bytes, error: str
) -> None:
    status, data = client.send(path, body)
    assert status == 400
    assert error in json.loads(data)["Err"]
    assert client.call("Plugin.Activate")[0] == 200


def test_unknown_endpoints_and_methods_get_json_errors(client: PluginClient) -> None:
    status, reply = client.call("IpamDriver.Bogus", {})
    assert status == 404 and "unknown endpoint" in reply["Err"]
    status, data = client.send("/Plugin.Activate", b"", method="GET")
    assert status == 501 and "Err" in json.loads(data)
    assert client.call("Plugin.Activate")[0] == 200


def test_oversized_body_is_refused(client: PluginClient, server: PluginServer) -> None:
    status, data = client.send("/IpamDriver.RequestAddress", b" " * 100_000)
    assert status == 413 and "Err" in json.loads(data)
    # Only announced: refused before reading it.
    reply = raw_exchange(
        server.path, b"POST /IpamDriver.RequestPool HTTP/1.1\r\nContent-Length: 999999999\r\n\r\n", timeout=5
    )
    assert reply.startswith(b"HTTP/1.1 413")
    assert client.call("Plugin.Activate")[0] == 200


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"POST /Plugin.Activate HTTP/1.1\r\nContent-Length: -4\r\n\r\n",
        b"POST /Plugin.Activate HTTP/1.1\r\nContent-Length: many\r\n\r\n",
        b"POST /Plugin.Activate HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
        b"\x00\x01\x02 nonsense\r\n\r\n",
        b"POST /Plugin.Activate HTTP/1.1\r\n" + b"X-Long: " + b"a" * 70_000 + b"\r\n\r\n",
        b"POST /Plugin.Activate HTTP/1.1\r\n" + b"X-Many: 1\r\n" * 200 + b"\r\n",
    ],
    ids=["negative-length", "bad-length", "chunked", "garbage", "long-header", "many-headers"],
)
def test_broken_http_gets_an_error_and_the_server_goes_on(
    client: PluginClient, server: PluginServer, request_bytes: bytes
) -> None:
    reply = raw_exchange(server.path, request_bytes)
    status_line, _, rest = reply.partition(b"\r\n")
    assert int(status_line.split()[1]) >= 400
    assert b'"Err"' in rest
    assert client.call("Plugin.Activate")[0] == 200


def test_a_client_hanging_up_mid_body_does_not_disturb_others(client: PluginClient, server: PluginServer) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(server.path))
        sock.sendall(b'POST /IpamDriver.RequestPool HTTP/1.1\r\nContent-Length: 100\r\n\r\n{"Pool"')
    assert client.call("Plugin.Activate")[0] == 200


def test_idle_and_slow_connections_are_closed(ipam: Ipam, socket_dir: Path) -> None:
    with PluginServer(Driver(ipam), socket_dir / "idle.sock", idle_timeout=0.5) as server:
        for partial in (b"", b"POST /Plugin.Activate HTTP/1.1\r\n"):
            started = time.monotonic()
            assert raw_exchange(server.path, partial, timeout=10) == b""
            assert time.monotonic() - started < 5


# ------------------------------------------------------------------ the socket
def test_pool_ids_and_leases_survive_a_server_restart(ipam: Ipam, socket_dir: Path) -> None:
    path = socket_dir / "restart.sock"
    with PluginServer(Driver(ipam), path), PluginClient(path) as client:
        pool_id = client.request_pool(SUBNET, "198.51.100.128/25")
        first = client.request_address(pool_id, mac=MAC)
    assert not path.exists()
    restarted = Ipam(ipam.store, host=THIS_HOST)
    with PluginServer(Driver(restarted), path), PluginClient(path) as client:
        assert client.request_pool(SUBNET, "198.51.100.128/25") == pool_id
        # dockerd keeps using the id it got before the restart.
        assert client.request_address(pool_id, mac="02:42:c6:33:64:0b") != first
        client.release_address(pool_id, first.split("/")[0])
    assert Pools(ipam.store, THIS_HOST).list()[0].refs == {THIS_HOST: 2}


def test_socket_is_for_root_and_the_docker_group_only(server: PluginServer) -> None:
    st = os.stat(server.path)
    assert stat.S_ISSOCK(st.st_mode)
    try:
        docker_gid = grp.getgrnam("docker").gr_gid
    except KeyError:
        assert stat.S_IMODE(st.st_mode) == 0o600
    else:
        assert (stat.S_IMODE(st.st_mode), st.st_gid, st.st_uid) == (0o660, docker_gid, os.geteuid())


def test_stale_socket_is_replaced(ipam: Ipam, socket_dir: Path) -> None:
    path = socket_dir / "stale.sock"
    crashed = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    crashed.bind(str(path))
    crashed.close()  # the file stays, nobody listens: what kill -9 leaves
    with PluginServer(Driver(ipam), path), PluginClient(path) as client:
        assert client.call("Plugin.Activate")[0] == 200


def test_live_socket_is_not_taken_over(server: PluginServer, ipam: Ipam) -> None:
    second = PluginServer(Driver(ipam), server.path)
    with pytest.raises(Conflict, match="another shrike server is listening on"):
        second.start()
    with PluginClient(server.path) as client:
        assert client.call("Plugin.Activate")[0] == 200
    second.stop()


def test_a_file_that_is_no_socket_is_left_alone(ipam: Ipam, socket_dir: Path) -> None:
    path = socket_dir / "file.sock"
    path.write_text("not mine")
    with pytest.raises(ShrikeError, match="not a socket"):
        PluginServer(Driver(ipam), path).start()
    assert path.read_text() == "not mine"


def test_stop_finishes_requests_in_progress_and_removes_the_socket(ipam: Ipam, socket_dir: Path) -> None:
    path = socket_dir / "stop.sock"
    server = PluginServer(Driver(ipam), path)
    server.start()
    idle = PluginClient(path)
    idle.call("Plugin.Activate")  # an open keep-alive connection must not hold the stop
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 3
    assert not path.exists()
    with pytest.raises(OSError):
        idle.call("Plugin.Activate")
    server.stop()  # idempotent


def test_stop_waits_for_a_request_in_progress_and_answers_it(ipam: Ipam, socket_dir: Path) -> None:
    server = PluginServer(Driver(ipam), socket_dir / "busy.sock")
    server.start()
    body = json.dumps(address_request("", container_options())).encode()
    head = b"POST /IpamDriver.RequestAddress HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % len(body)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(server.path))
        sock.sendall(head + body[:10])
        time.sleep(0.3)  # the server is reading the body: the request is in progress
        stopper = threading.Thread(target=server.stop)
        stopper.start()
        time.sleep(0.3)
        assert stopper.is_alive(), "stop did not wait for the request in progress"
        assert not server.path.exists(), "the socket goes first, so dockerd stops finding us"
        sock.sendall(body[10:])
        reply = b"".join(iter(lambda: sock.recv(65536), b""))
        stopper.join(10)
    assert not stopper.is_alive()
    assert reply.startswith(b"HTTP/1.1 200") and b"Connection: close" in reply
    assert reply.endswith(b'{"Address": "198.51.100.100/24", "Data": {}}')


# ------------------------------------------------------------------ the command
def shrike(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the command line to its end."""
    return subprocess.run([*SHRIKE, *args], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_command_serves_logs_and_stops_on_signals(tmp_path: Path, socket_dir: Path, signum: int) -> None:
    state = ["--state-dir", str(tmp_path / "state")]
    declared = shrike(
        *state, "host-range", "--ip-start", "198.51.100.1/24", "--ip-end", "198.51.100.99/24", "--gateway", ROUTER
    )
    assert declared.returncode == 0, declared.stderr
    server = ServerProcess(state, socket_dir, "cmd", tmp_path / "server.log")
    try:
        server.start()
        with PluginClient(server.path) as client:
            status, reply = client.call("IpamDriver.RequestPool", pool_request())
        assert status == 500 and "no container range" in reply["Err"]
        assert server.signal(signum) == 0
        server.process = None
        assert not server.path.exists()
    finally:
        server.stop()
    log = server.log()
    assert "listening on" in log and "stopped" in log
    assert "POST /Plugin.Activate 200" in log
    assert "POST /IpamDriver.RequestPool 500" in log and "no container range" in log
    assert "Traceback" not in log


def test_command_refuses_a_second_server_on_the_same_socket(tmp_path: Path, socket_dir: Path) -> None:
    state = ["--state-dir", str(tmp_path / "state")]
    first = ServerProcess(state, socket_dir, "dup", tmp_path / "first.log")
    try:
        first.start()
        second = shrike(*state, "server", "--plugin-dir", str(socket_dir), "--plugin-name", "dup")
        assert second.returncode == 1
        assert "another shrike server is listening on" in second.stderr
        assert first.alive() and first.path.exists()
    finally:
        first.stop()


def test_command_refuses_unusable_plugin_names(tmp_path: Path) -> None:
    result = shrike("--state-dir", str(tmp_path), "server", "--plugin-name", "../evil")
    assert result.returncode == 1
    assert "not a usable plugin name" in result.stderr


# ---------------------------------------------------- no duplicate through any door
def test_a_release_frees_only_an_address_of_its_pool_taken_by_this_host(
    client: PluginClient, ipam: Ipam, socket_dir: Path
) -> None:
    address = client.request_address(POOL_ID, mac=MAC).partition("/")[0]
    # A release naming another pool (a late one, from another network) changes nothing...
    assert client.call("IpamDriver.ReleaseAddress", {"PoolID": "shrike/203.0.113.0/24", "Address": address}) == (
        200,
        {},
    )
    assert ipam.lease(address).state == "held"
    # ...nor does one from another host's dockerd.
    elsewhere = Ipam(ipam.store, host="host-b")
    with PluginServer(Driver(elsewhere), socket_dir / "b.sock") as server, PluginClient(server.path) as other:
        assert other.call("IpamDriver.ReleaseAddress", {"PoolID": POOL_ID, "Address": address}) == (200, {})
    assert ipam.lease(address).state == "held"
    client.release_address(POOL_ID, address)
    assert ipam.lease(address).state == "released"


def test_a_gateway_on_a_host_address_is_that_hosts_address(client: PluginClient, ipam: Ipam) -> None:
    pool_id = client.request_pool(SUBNET)
    # docker network create --gateway 198.51.100.40 (a free host address): this host's now.
    assert client.ok("IpamDriver.RequestAddress", address_request("198.51.100.40", GATEWAY_OPTIONS, pool_id)) == {
        "Address": "198.51.100.40/24",
        "Data": {},
    }
    lease = ipam.lease("198.51.100.40")
    assert (lease.kind, lease.host) == ("host", THIS_HOST)
    # Another host's address is refused, naming that host.
    Ipam(ipam.store, host="host-b").claim_host("198.51.100.41")
    status, reply = client.call("IpamDriver.RequestAddress", address_request("198.51.100.41", GATEWAY_OPTIONS, pool_id))
    assert status == 500 and "host host-b" in reply["Err"]
    # An aux address in a host range is acknowledged and blocks nobody afterwards.
    assert client.ok("IpamDriver.RequestAddress", address_request("198.51.100.42", None, pool_id))["Address"] == (
        "198.51.100.42/24"
    )
    assert ipam.lease("198.51.100.42") is None
    assert Ipam(ipam.store, host="host-c").claim_host("198.51.100.42").host == "host-c"
    # The network goes: the host addresses stay the hosts'.
    client.release_address(pool_id, "198.51.100.40")
    client.ok("IpamDriver.ReleasePool", {"PoolID": pool_id})
    assert ipam.lease("198.51.100.40").kind == "host"


@pytest.mark.parametrize("subnet", ["198.51.0.0/16", "128.0.0.0/1", "198.51.100.0/23"])
def test_a_pool_wider_than_the_lan_is_refused_naming_the_lan(client: PluginClient, subnet: str) -> None:
    status, reply = client.call("IpamDriver.RequestPool", pool_request(subnet=subnet))
    assert status == 500 and "wider than the LAN 198.51.100.0/24" in reply["Err"], reply


@pytest.mark.parametrize("endpoint", ["IpamDriver.RequestAddress", "IpamDriver.ReleaseAddress"])
@pytest.mark.parametrize("address", ["198.51.100.100\x00", "198.51.100.300"])
def test_a_malformed_address_is_a_bad_request(client: PluginClient, endpoint: str, address: str) -> None:
    request = {"PoolID": POOL_ID, "Address": address, "Options": container_options()}
    status, reply = client.call(endpoint, request)
    assert status == 400 and "not an IPv4 address" in reply["Err"] and "internal" not in reply["Err"]


def test_damaged_declarations_are_a_clear_error(client: PluginClient, ipam: Ipam) -> None:
    ipam.store.txn([], [Put(CONFIG_KEY, {"gateways": ["not", "a", "mapping"]})])
    status, reply = client.call("IpamDriver.RequestPool", pool_request())
    assert status == 500 and "damaged" in reply["Err"] and "'config'" in reply["Err"], reply


def test_a_failed_network_create_leaves_no_gateway_or_aux_record(client: PluginClient, ipam: Ipam) -> None:
    # A macvlan-like network: the LAN router as gateway, an aux address; dockerd fails
    # after the IPAM calls and sends only ReleasePool.
    pool_id = client.request_pool(SUBNET)
    client.ok("IpamDriver.RequestAddress", address_request(ROUTER, GATEWAY_OPTIONS, pool_id))
    client.ok("IpamDriver.RequestAddress", address_request("198.51.100.250", None, pool_id))
    assert {ipam.lease(ROUTER).kind, ipam.lease("198.51.100.250").kind} == {"gateway", "aux"}
    client.ok("IpamDriver.ReleasePool", {"PoolID": pool_id})
    assert ipam.lease(ROUTER) is None and ipam.lease("198.51.100.250") is None


def test_networks_sharing_a_gateway_count_their_uses(client: PluginClient, ipam: Ipam) -> None:
    pool_id = client.request_pool(SUBNET)
    for _ in range(2):  # two networks on one subnet: the same pool, two references
        client.request_pool(SUBNET)
        client.ok("IpamDriver.RequestAddress", address_request("198.51.100.250", None, pool_id))
    # docker network rm of the first: its aux address, then its pool.
    client.release_address(pool_id, "198.51.100.250")
    client.ok("IpamDriver.ReleasePool", {"PoolID": pool_id})
    assert ipam.lease("198.51.100.250").users == (THIS_HOST,)
    client.release_address(pool_id, "198.51.100.250")
    client.ok("IpamDriver.ReleasePool", {"PoolID": pool_id})
    assert ipam.lease("198.51.100.250") is None
    client.ok("IpamDriver.ReleasePool", {"PoolID": pool_id})


def test_the_operator_can_release_an_orphaned_aux_record(client: PluginClient, ipam: Ipam) -> None:
    pool_id = client.request_pool(SUBNET)
    client.ok("IpamDriver.RequestAddress", address_request("198.51.100.250", None, pool_id))
    assert ipam.release_container("198.51.100.250").ip == "198.51.100.250"
    assert ipam.lease("198.51.100.250") is None


def test_containers_named_in_their_requests_get_their_own_addresses_back(
    client: PluginClient, ipam: Ipam, server: PluginServer
) -> None:
    """Newer engines send the endpoint's (container's) name: ten containers restarting
    at once, each with a new random MAC, each gets its own address back."""
    names = [f"web{n}" for n in range(10)]

    def request(name: str) -> str:
        options = {**container_options(random_mac()), "com.docker.network.endpoint.name": name}
        with PluginClient(server.path) as own:
            return own.ok("IpamDriver.RequestAddress", address_request("", options))["Address"].partition("/")[0]

    first = {name: request(name) for name in names}
    fresh = client.request_address(POOL_ID, mac=MAC).partition("/")[0]
    for address in first.values():  # they all stop
        client.release_address(POOL_ID, address)
    assert {ipam.lease(a).state for a in first.values()} == {"parked"}
    with concurrent.futures.ThreadPoolExecutor(len(names)) as pool:
        again = dict(zip(names, pool.map(request, names), strict=True))
    assert again == first
    assert fresh not in again.values()


def test_a_parked_address_goes_to_another_only_when_nothing_else_is_left(client: PluginClient, ipam: Ipam) -> None:
    options = {**container_options(MAC), "com.docker.network.endpoint.name": "stopped"}
    kept = client.ok("IpamDriver.RequestAddress", address_request("", options))["Address"].partition("/")[0]
    client.release_address(POOL_ID, kept)
    others = [client.request_address(POOL_ID, mac=random_mac()).partition("/")[0] for _ in range(99)]
    assert kept not in others
    assert client.request_address(POOL_ID, mac=random_mac()) == f"{kept}/24"  # the last one left
    status, reply = client.call("IpamDriver.RequestAddress", address_request("", container_options(random_mac())))
    assert status == 500 and "no free address left" in reply["Err"]


def test_a_reserved_address_is_refused_to_a_container_of_another_name(client: PluginClient, ipam: Ipam) -> None:
    reserved = ipam.reserve("web1").ip
    status, reply = client.call(
        "IpamDriver.RequestAddress",
        address_request(reserved, {**container_options(), "com.docker.network.endpoint.name": "web2"}),
    )
    assert status == 500 and "reserved for web1" in reply["Err"]
    # web1 itself gets it, with --ip or without.
    named = {**container_options(), "com.docker.network.endpoint.name": "web1"}
    assert client.ok("IpamDriver.RequestAddress", address_request("", named))["Address"] == f"{reserved}/24"


def test_exhaustion_of_a_sub_pool_names_the_sub_pool(client: PluginClient) -> None:
    pool_id = client.request_pool(SUBNET, "198.51.100.128/30")
    for _ in range(4):
        client.request_address(pool_id, mac=random_mac())
    status, reply = client.call("IpamDriver.RequestAddress", address_request("", container_options(), pool_id))
    assert status == 500 and "sub-pool 198.51.100.128/30" in reply["Err"], reply
