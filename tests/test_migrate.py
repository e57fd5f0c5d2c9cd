"""Taking a LAN over from oam-docker-ipam, the original (its state in etcd's v2 API, written
here as its commands wrote it), live with a real dockerd; ``adopt``; and moving shrike's
whole state from one store to another with ``export`` and ``import shrike``."""

from __future__ import annotations

import json
import shlex
import socket
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from shrike_cli.cli import app
from shrike_cli.errors import Conflict, NotFound
from shrike_cli.ipam import Ipam
from shrike_cli.model import STATE_HELD, STATE_RELEASED
from shrike_cli.pools import Pool, Pools
from shrike_cli.state import EXPORT_VERSION, State
from shrike_cli.stores import EmbeddedStore, Put, Store, open_store
from tests.fixtures.dockerd import DockerDaemon, Tracker
from tests.fixtures.etcd import EtcdServer
from tests.fixtures.original import OriginalPlugin, OriginalTree
from tests.fixtures.plugin import (
    HOST_ADDRESS,
    ROUTER,
    SHRIKE,
    SUBNET,
    ServerProcess,
    create_network,
    endpoint,
    random_mac,
    run,
    wait_until,
)

#: The seed's LAN 172.25.60.0/22 and its ip-range typed /24 moved to the test LAN: a /24
#: LAN, its ip-range typed /25 in the half whose network address is the LAN's (the
#: original keyed a range by its own network address and answered RequestPool with the
#: LAN's: only such ranges ever served its networks).
HOST_RANGE = ("198.51.100.0/24", "198.51.100.99/24")
IP_RANGE = ("198.51.100.100/25", "198.51.100.120/25")
#: The LAN's router, as the original's tree and networks name it. The original answered
#: RequestAddress with its range's prefix length (/25 here, /24 in the seed's /22), also
#: for the network's gateway: the bridge then holds a /25, and dockerd refuses a
#: DefaultGatewayIPv4 outside it ("default gateway ip must be part of the network"). So
#: its LANs that worked had their router in that part of the LAN.
LAN_GATEWAY = "198.51.100.126"
#: The PoolID the original gave networks on the LAN, and its ranges' key.
POOL_ID = "198.51.100.0"
RANGE_ADDRESSES = {f"198.51.100.{n}" for n in range(100, 121)}


def shrike(store_args: list[str], *args: str, env: dict[str, str] | None = None, input: str | None = None) -> Any:
    """The CLI in-process; exit code, stdout and stderr in the result."""
    settings = {"CLUSTER_STORE": "", "DEBUG": "", **(env or {})}
    return CliRunner().invoke(app, [*store_args, *args], env=settings, input=input)


def shrike_json(store_args: list[str], *args: str, env: dict[str, str] | None = None) -> Any:
    result = shrike(store_args, *args, "--output", "json", env=env)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def originals_lan(tree: OriginalTree) -> str:
    """The original's walk-through on the test LAN: the hosts (from the network address,
    as the seed typed it), the containers, this host's address taken by create-network,
    and an address a container of another host holds. Returns the ranges' key."""
    tree.host_range(*HOST_RANGE, LAN_GATEWAY)
    net = tree.ip_range(*IP_RANGE)
    tree.allocate_host(HOST_ADDRESS)
    tree.allocate_ip(net, "198.51.100.110")
    return net


def import_original(store_args: list[str], tree: OriginalTree, *more: str) -> Any:
    return shrike(store_args, "import", "oam-docker-ipam", "--from", tree.url, "--prefix", tree.prefix, *more)


#: What :func:`view` shows of an empty store.
EMPTY = {"leases": [], "ip-range": [], "host-range": []}


def view(store_args: list[str]) -> dict[str, Any]:
    """What an operator sees of a store: every listing, as JSON."""
    return {
        "leases": shrike_json(store_args, "leases", "--all"),
        "ip-range": shrike_json(store_args, "ip-range"),
        "host-range": shrike_json(store_args, "host-range"),
    }


# ------------------------------------------------------- the original's tree
def test_the_originals_tree_becomes_shrikes_declarations_and_leases(
    original_tree: OriginalTree, store_args: list[str]
) -> None:
    net = originals_lan(original_tree)
    original_tree.allocate_ip(net, "198.51.100.100")
    assert net == POOL_ID

    plan = json.loads(import_original(store_args, original_tree, "--dry-run", "--output", "json").stdout)
    assert plan["dry_run"] and (plan["lan"], plan["gateway"]) == (SUBNET, LAN_GATEWAY)
    assert [(d["kind"], d["what"], d["created"]) for d in plan["declarations"]] == [
        ("lan", f"{SUBNET} (gateway {LAN_GATEWAY})", True),
        ("host", "198.51.100.1/24-198.51.100.99/24", True),
        ("container", "198.51.100.100/25-198.51.100.120/25", True),
    ]
    assert [(lease["ip"], lease["kind"]) for lease in plan["leases"]] == [
        (HOST_ADDRESS, "host"), ("198.51.100.100", "container"), ("198.51.100.110", "container"),
    ]  # fmt: skip
    # The network address the original's host-range counted is not a host's.
    assert [f["key"] for f in plan["findings"]] == ["hosts/pool/198.51.100.0"]
    assert view(store_args) == EMPTY, "--dry-run wrote"

    done = import_original(store_args, original_tree)
    assert done.exit_code == 0, done.stderr
    assert "recorded as held" in done.stdout and "next, on each host: shrike adopt" in done.stderr
    assert "hosts/pool/198.51.100.0: 198.51.100.0 is the network address of the LAN" in done.stderr
    seen = view(store_args)
    assert [(r["start"], r["end"], r["prefixlen"], r["subnet"], r["held"]) for r in seen["ip-range"]] == [
        ("198.51.100.100", "198.51.100.120", 25, SUBNET, 2)
    ]
    assert [(r["start"], r["end"], r["gateway"], r["held"]) for r in seen["host-range"]] == [
        ("198.51.100.1", "198.51.100.99", LAN_GATEWAY, 1)
    ]
    # Held, by no host yet: adopt names them.
    assert [(lease["ip"], lease["kind"], lease["state"], lease.get("host")) for lease in seen["leases"]] == [
        (HOST_ADDRESS, "host", STATE_HELD, None),
        ("198.51.100.100", "container", STATE_HELD, None),
        ("198.51.100.110", "container", STATE_HELD, None),
    ]

    # Safe to run again: everything is there already, nothing is written.
    again = json.loads(import_original(store_args, original_tree, "--output", "json").stdout)
    assert not any(d["created"] for d in again["declarations"]) and again["leases"] == []
    assert len(again["present"]) == 3
    assert view(store_args) == seen


def test_requests_under_the_originals_pool_id_allocate_from_its_range(
    original_tree: OriginalTree, tmp_path: Path
) -> None:
    net = originals_lan(original_tree)
    store_args = ["--state-dir", str(tmp_path)]
    assert import_original(store_args, original_tree).exit_code == 0
    with EmbeddedStore(tmp_path / "shrike.db") as store:
        ipam = Ipam(store)
        pool = ipam.pool(net)
        assert (str(pool.subnet), str(pool.sub_pool)) == (SUBNET, "198.51.100.0/25")
        given = [ipam.request_address(pool, mac=random_mac()).cidr for _ in range(3)]
        # Never-used addresses of the original's range first, never the one it handed out.
        assert given == ["198.51.100.100/24", "198.51.100.101/24", "198.51.100.102/24"]
        assert ipam.request_address(pool, "198.51.100.115").ip == "198.51.100.115"
        with pytest.raises(Conflict, match="198.51.100.110 is already in use"):
            ipam.request_address(pool, "198.51.100.110")
        with pytest.raises(NotFound, match="no container range is keyed by 203.0.113.0"):
            ipam.pool("203.0.113.0")


def test_a_hand_damaged_tree_gets_a_report_not_a_crash(original_tree: OriginalTree, tmp_path: Path) -> None:
    net = originals_lan(original_tree)
    tree = original_tree
    tree.put(f"containers/{net}/assigned/198.51.100.200")  # outside its range's network
    tree.put(f"containers/{net}/assigned/198.51.100.105")  # free and assigned: a crash between two writes
    tree.put(f"containers/{net}/assigned/198.51.100.50")  # a host address too
    tree.put(f"containers/{net}/pool/not-an-address")
    tree.put("containers/198.51.100.128/config", "{nonsense")  # its ranges typed /25
    tree.put("containers/198.51.100.128/pool/198.51.100.130")
    tree.put("containers/203.0.113.0/assigned/203.0.113.7")  # no config, outside the LAN
    tree.put("version", "1")
    store_args = ["--state-dir", str(tmp_path)]

    result = import_original(store_args, tree, "--output", "json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    findings = {f["key"]: f["message"] for f in report["findings"]}
    expected = {
        f"containers/{net}/assigned/198.51.100.200": "198.51.100.200 is outside 198.51.100.0/25",
        f"containers/{net}/assigned/198.51.100.105": "both free and assigned: taken as assigned",
        f"containers/{net}/assigned/198.51.100.50": "also a host address",
        f"containers/{net}/pool/not-an-address": "is not an IPv4 address",
        "containers/198.51.100.128/config": "taken as typed in 198.51.100.128/25",
        "containers/203.0.113.0/config": "missing: its ranges are taken as typed in 203.0.113.0/24",
        "containers/203.0.113.0/assigned/203.0.113.7": "outside the LAN 198.51.100.0/24",
        "version": "not a key of the original's",
    }
    for key, message in expected.items():
        assert message in findings.get(key, ""), (key, findings)
    held = [lease["ip"] for lease in report["leases"] if lease["kind"] == "container"]
    assert held == ["198.51.100.105", "198.51.100.110"]
    ranges = shrike_json(store_args, "ip-range")
    assert [(r["start"], r["end"], r["prefixlen"]) for r in ranges] == [
        ("198.51.100.100", "198.51.100.120", 25),
        ("198.51.100.130", "198.51.100.130", 25),
    ]

    # Without the LAN's config nothing can be declared: one line, nothing written.
    tree.delete("hosts/config")
    refused = import_original(["--state-dir", str(tmp_path / "other")], tree)
    assert (refused.exit_code, refused.stdout) == (1, "")
    assert refused.stderr.startswith("shrike: error: the original's hosts/config") and refused.stderr.count("\n") == 1
    assert view(["--state-dir", str(tmp_path / "other")]) == EMPTY


def test_declarations_that_overlap_shrikes_are_refused_whole(original_tree: OriginalTree, tmp_path: Path) -> None:
    originals_lan(original_tree)
    store_args = ["--state-dir", str(tmp_path)]
    for declare in (
        ["host-range", "--ip-start", "198.51.100.1/24", "--ip-end", "198.51.100.20/24", "--gateway", LAN_GATEWAY],
        ["ip-range", "--ip-start", "198.51.100.105/24", "--ip-end", "198.51.100.115/24"],
    ):
        assert shrike(store_args, *declare).exit_code == 0
    before = view(store_args)
    refused = import_original(store_args, original_tree)
    assert refused.exit_code == 1
    assert "the original's declarations conflict with shrike's: host range 198.51.100.1/24-198.51.100.99/24" in (
        refused.stderr
    )
    assert "nothing was imported" in refused.stderr
    assert view(store_args) == before


def test_where_the_originals_state_is_not(etcd_server: EtcdServer, original_tree: OriginalTree, tmp_path: Path) -> None:
    store_args = ["--state-dir", str(tmp_path)]
    cases = [
        ([etcd_server.url, "/talkingdata"], "does not serve etcd's v2 API, where the original kept its state"),
        ([original_tree.url, "/nonesuch"], "holds no /nonesuch, where the original kept its state"),
        (["http://127.0.0.1:9", "/talkingdata"], "cannot read the original's state: http://127.0.0.1:9:"),
        (["ftp://x", "/talkingdata"], "ftp://x"),
    ]
    for (url, prefix), message in cases:
        result = shrike(store_args, "import", "oam-docker-ipam", "--from", url, "--prefix", prefix)
        assert result.exit_code == 1, (url, result.stderr)
        assert result.stderr.startswith("shrike: error:") and message in result.stderr, result.stderr
    assert view(store_args) == EMPTY


# ------------------------------------------------------------ export, import
def busy(ipam: Ipam) -> None:
    """Every kind of record: declarations, host and gateway leases, held, reserved and
    released and parked container leases (free lists, parked entries, MAC and name
    indexes), cursors, pool records."""
    ipam.declare_host_range("198.51.100.1/24", "198.51.100.99/24", ROUTER)
    ipam.declare_ip_range("198.51.100.100/24", "198.51.100.199/24")
    ipam.declare_host_range("203.0.113.1/24", "203.0.113.9/24", "203.0.113.254")
    ipam.declare_ip_range("203.0.113.10/24", "203.0.113.20/24")
    ipam.claim_host(HOST_ADDRESS)
    ipam.pools.acquire(Pool.of(SUBNET))
    ipam.pools.acquire(Pool.of(SUBNET, "198.51.100.128/25"))
    ipam.request_gateway(SUBNET, "198.51.100.250", kind="aux")
    ipam.reserve("web1", subnet=SUBNET)
    ipam.reserve("db", subnet="203.0.113.0/24")
    for n in range(12):
        ipam.request_address(SUBNET if n % 3 else "203.0.113.0/24", mac=f"02:00:5e:00:53:{n:02x}")
    for ip in ("198.51.100.103", "198.51.100.102", "203.0.113.11"):
        ipam.release_address(ip)
    ipam.request_address(Pool.of(SUBNET, "198.51.100.128/25"))
    # An address parked for a stopped container (dockerd released it, the container remains).
    stopped = ipam.request_address(SUBNET, owner={"container_id": "c0ffee", "name": "stopped"}).ip
    ipam.release_address(stopped, keep=True)


@pytest.fixture
def etcd_args(etcd_server: EtcdServer) -> list[str]:
    """The CLI's options for an empty store in the session's etcd."""
    return ["--cluster-store", etcd_server.url, "--store-prefix", f"/shrike-move-{uuid.uuid4().hex}/"]


def test_export_piped_into_import_moves_a_lan_from_the_embedded_store_to_etcd(
    tmp_path: Path, etcd_args: list[str]
) -> None:
    source = ["--state-dir", str(tmp_path)]
    with EmbeddedStore(tmp_path / "shrike.db") as store:
        busy(Ipam(store, host="hostA"))
    pipe = f"{shlex.join([*SHRIKE, *source, 'export'])} | {shlex.join([*SHRIKE, *etcd_args, 'import', 'shrike', '-'])}"
    moved = subprocess.run(["sh", "-c", pipe], capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert moved.returncode == 0, moved.stderr
    assert moved.stdout.startswith("wrote ") and "18 leases, 3 free" in moved.stdout

    assert view(etcd_args) == view(source)
    assert shrike_json(etcd_args, "leases") == shrike_json(source, "leases")
    held = {lease["ip"] for lease in shrike_json(source, "leases")}
    [parked] = [lease["ip"] for lease in shrike_json(source, "leases") if lease["state"] == "parked"]
    with EmbeddedStore(tmp_path / "shrike.db") as embedded, open_store(etcd_args[1], prefix=etcd_args[3]) as etcd:
        # Every record as it was: cursors, free lists and indexes too.
        assert State(etcd).export()["records"] == State(embedded).export()["records"]
        assert Pools(etcd, "hostA").list() == Pools(embedded, "hostA").list()
        # Allocation goes on where it was, the same on both stores, never on a held address:
        # never-used ones first, then the longest idle, last the parked one.
        next_ones = [
            [Ipam(s, host="hostA").request_address(SUBNET, mac=f"02:00:5e:00:54:{n:02x}").ip for n in range(92)]
            for s in (embedded, etcd)
        ]
        assert next_ones[0] == next_ones[1]
        assert not held & set(next_ones[0][:89])
        assert next_ones[0][-3:] == ["198.51.100.103", "198.51.100.102", parked]


def test_import_refuses_what_it_cannot_take_whole(tmp_path: Path, etcd_args: list[str]) -> None:
    source = ["--state-dir", str(tmp_path)]
    with EmbeddedStore(tmp_path / "shrike.db") as store:
        busy(Ipam(store, host="hostA"))
    export_file = tmp_path / "state.json"
    written = shrike(source, "export", "--output", str(export_file))
    assert written.exit_code == 0 and written.stdout == "" and str(export_file) in written.stderr
    document = json.loads(export_file.read_text())
    assert (document["format"], document["version"]) == ("shrike-state", EXPORT_VERSION)
    assert set(document["records"]) == {
        "declarations", "leases", "free", "macs", "reservations", "parked", "cursors", "pools",
    }  # fmt: skip

    def refused(doc: object, message: str, args: list[str] = etcd_args) -> None:
        result = shrike(args, "import", "shrike", "-", input=json.dumps(doc))
        assert result.exit_code == 1 and message in result.stderr, result.stderr
        assert result.stderr.count("\n") == 1

    refused({**document, "version": EXPORT_VERSION + 1}, "written by a newer shrike")
    refused(
        {**document, "records": {**document["records"], "squatters": {}}}, "kinds this shrike does not know (squatters)"
    )
    refused({"leases": {}}, "not a shrike export")
    bad_lease = {**document["records"]["leases"], "198.51.100.7": {"ip": "198.51.100.7"}}
    refused({**document, "records": {**document["records"], "leases": bad_lease}}, "leases 198.51.100.7 in the export")
    result = shrike(etcd_args, "import", "shrike", str(tmp_path / "none.json"))
    assert result.exit_code == 1 and "cannot read" in result.stderr
    result = shrike(etcd_args, "import", "shrike", "-", input="{nonsense")
    assert result.exit_code == 1 and "standard input is not JSON" in result.stderr
    assert view(etcd_args) == EMPTY, "a refused import wrote"

    # --dry-run writes nothing; an import again writes nothing more (an import cut short
    # resumes); into a store that holds anything else, nothing.
    dry = json.loads(shrike(etcd_args, "import", "shrike", str(export_file), "--dry-run", "-o", "json").stdout)
    assert dry["records"]["leases"] == 18 and view(etcd_args)["leases"] == []
    assert shrike(etcd_args, "import", "shrike", str(export_file)).exit_code == 0
    again = json.loads(shrike(etcd_args, "import", "shrike", str(export_file), "-o", "json").stdout)
    assert sum(again["records"].values()) == 0
    refused({**document, "records": {**document["records"], "declarations": {}}}, "its 'config' differs")
    shrike(etcd_args, "reserve", "late", "--subnet", SUBNET)
    refused(document, "is not empty")


def test_an_unknown_record_stops_an_export(tmp_path: Path) -> None:
    """A kind of record missing from state.RECORD_KINDS would be lost by a move: refused."""
    with EmbeddedStore(tmp_path / "shrike.db") as store:
        busy(Ipam(store, host="hostA"))
        store.txn([], [Put("squatters/web1", {"ip": "198.51.100.100"})])
    result = shrike(["--state-dir", str(tmp_path)], "export", "--output", str(tmp_path / "out.json"))
    assert result.exit_code == 1
    assert "the store holds 'squatters/web1', a record this shrike does not know" in result.stderr
    assert not (tmp_path / "out.json").exists()


# ---------------------------------------------------------------- live
@dataclass
class LiveLan:
    """The session dockerd's LAN, a plugin name of its own, and the shrike server that
    takes over from the original's plugin under that name (not started)."""

    dockerd: DockerDaemon
    name: str
    socket: Path
    store_args: list[str]
    server: ServerProcess
    store: Store

    def shrike(self, *args: str) -> Any:
        result = shrike(self.store_args, *args, env={"DOCKER_HOST": self.dockerd.url})
        assert result.exit_code == 0, result.stderr
        return result

    def json(self, *args: str) -> Any:
        return shrike_json(self.store_args, *args, env={"DOCKER_HOST": self.dockerd.url})

    def lease(self, ip: str) -> dict[str, Any]:
        return next(lease for lease in self.json("leases", "--all") if lease["ip"] == ip)


@pytest.fixture
def live_lan(dockerd: DockerDaemon, tmp_path: Path) -> Iterator[LiveLan]:
    """Requested before docker_cleanup: the server outlives the containers and networks."""
    name = dockerd.unique_plugin_name()
    store_args = ["--state-dir", str(tmp_path / "state")]
    server = ServerProcess(store_args, Path(dockerd.plugin_dir), name, tmp_path / "server.log", env=dockerd.env)
    store = EmbeddedStore(tmp_path / "state" / "shrike.db")
    try:
        yield LiveLan(dockerd, name, Path(dockerd.plugin_dir) / f"{name}.sock", store_args, server, store)
    finally:
        server.stop()
        store.close()


@pytest.mark.docker
def test_a_live_lan_moves_from_the_original_to_shrike_with_no_container_stopped(
    original_tree: OriginalTree, live_lan: LiveLan, docker_cleanup: Tracker, etcd_args: list[str]
) -> None:
    lan, dockerd = live_lan, live_lan.dockerd
    net = originals_lan(original_tree)
    with OriginalPlugin(original_tree, lan.socket) as old:
        # The original's create-network: its options, its plugin (here under a name of the test's).
        network = create_network(
            dockerd, docker_cleanup, lan.name, SUBNET, HOST_ADDRESS, {"DefaultGatewayIPv4": LAN_GATEWAY}
        )
        assert [request["Pool"] for call, request in old.calls if call == "/IpamDriver.RequestPool"] == [SUBNET]
        # dockerd shows the LAN as the network's subnet (the original answered the Pool asked
        # for) and keeps its PoolID to itself: it sends it with every address request.
        ipam_config = dockerd.client.api.inspect_network(network.id)["IPAM"]["Config"]
        assert [(c["Subnet"], c["Gateway"]) for c in ipam_config] == [(SUBNET, HOST_ADDRESS)]
        containers = {}
        for ip in ("198.51.100.100", "198.51.100.101", "198.51.100.103"):
            name, error = run(dockerd, docker_cleanup, network, "--ip", ip)
            assert error == "", error
            containers[ip] = name
        assert endpoint(dockerd, containers["198.51.100.100"], network)["IPPrefixLen"] == 25  # the original's mask
        assert {r["PoolID"] for call, r in old.calls if call == "/IpamDriver.RequestAddress"} == {POOL_ID}
        assert set(original_tree.names(f"containers/{net}/assigned")) == {
            "198.51.100.100", "198.51.100.101", "198.51.100.103", "198.51.100.110",
        }  # fmt: skip

        assert import_original(lan.store_args, original_tree, "--dry-run").exit_code == 0
        assert lan.json("leases", "--all") == []
        assert import_original(lan.store_args, original_tree).exit_code == 0
    # The original's plugin is gone; shrike answers under its name, on the same store.
    lan.server.start()

    # Before adopt: the store lost .101 (released by hand), and .103 is another host's.
    lan.shrike("release", "--ip", "198.51.100.101")
    other = Ipam(lan.store, host="hostB")
    other.release_container("198.51.100.103")
    other.request_address(other.pool(POOL_ID), "198.51.100.103", mac=random_mac())

    nowhere = shrike(lan.store_args, "adopt", "--plugin-name", "nonesuch", env={"DOCKER_HOST": dockerd.url})
    assert nowhere.exit_code == 1 and "no network of this dockerd uses the IPAM driver 'nonesuch'" in nowhere.stderr
    before = lan.json("leases", "--all")
    planned = lan.json("adopt", "--plugin-name", lan.name, "--dry-run")
    assert planned["dry_run"] and lan.json("leases", "--all") == before, "--dry-run wrote"

    report = lan.json("adopt", "--plugin-name", lan.name)
    assert [a["status"] for a in report["addresses"]] == [a["status"] for a in planned["addresses"]]
    statuses = {a["ip"]: (a["kind"], a["status"]) for a in report["addresses"]}
    assert statuses == {
        HOST_ADDRESS: ("host", "adopted"),
        "198.51.100.100": ("container", "adopted"),
        "198.51.100.101": ("container", "adopted"),
        "198.51.100.103": ("container", "conflict"),
    }
    assert report["networks"] == [network.name]
    assert "hostB" in next(a["detail"] for a in report["addresses"] if a["ip"] == "198.51.100.103")
    assert lan.lease("198.51.100.103")["host"] == "hostB", "a conflict was overwritten"
    web1 = lan.lease("198.51.100.100")
    info = dockerd.client.api.inspect_container(containers["198.51.100.100"])
    assert web1["owner"] == {"container_id": info["Id"], "name": containers["198.51.100.100"], "network": network.name}
    assert web1["mac"] == endpoint(dockerd, containers["198.51.100.100"], network)["MacAddress"]
    assert lan.lease(HOST_ADDRESS)["host"] == web1["host"]
    again = lan.json("adopt", "--plugin-name", lan.name)
    assert {a["ip"]: a["status"] for a in again["addresses"]}["198.51.100.100"] == "held"

    # Running containers kept their addresses; restarted, they get them again from shrike,
    # under the original's PoolID, with the LAN's prefix length.
    for ip, name in containers.items():
        assert endpoint(dockerd, name, network)["IPAddress"] == ip
    dockerd.docker_cli("restart", "-t", "0", containers["198.51.100.100"])
    settings = endpoint(dockerd, containers["198.51.100.100"], network)
    assert (settings["IPAddress"], settings["IPPrefixLen"]) == ("198.51.100.100", 24)
    assert lan.lease("198.51.100.100")["state"] == STATE_HELD

    # New containers never get an address the original handed out.
    assigned = {"198.51.100.100", "198.51.100.101", "198.51.100.103", "198.51.100.110", HOST_ADDRESS}
    for _ in range(2):
        name, error = run(dockerd, docker_cleanup, network)
        assert error == "", error
        ip = endpoint(dockerd, name, network)["IPAddress"]
        assert ip in RANGE_ADDRESSES and ip not in assigned, ip
    _, error = run(dockerd, docker_cleanup, network, "--ip", "198.51.100.110")
    assert "198.51.100.110 is already in use" in error
    # release works on what was imported.
    lan.shrike("release", "--ip", "198.51.100.110")
    assert lan.lease("198.51.100.110")["state"] == STATE_RELEASED
    name, error = run(dockerd, docker_cleanup, network, "--ip", "198.51.100.110")
    assert error == "" and endpoint(dockerd, name, network)["IPAddress"] == "198.51.100.110"

    # The state moves to etcd whole, once the server (following dockerd) has recorded who
    # holds the addresses of this host's containers just started: it writes them on its own.
    wait_until(
        lambda: all(
            lease.get("owner")
            for lease in lan.json("leases")
            if (lease["kind"], lease["state"], lease.get("host")) == ("container", "held", socket.gethostname())
        ),
        what="owners recorded",
    )
    exported = shrike(lan.store_args, "export")
    assert shrike(etcd_args, "import", "shrike", "-", input=exported.stdout).exit_code == 0
    assert view(etcd_args) == view(lan.store_args)
    assert lan.server.alive()
