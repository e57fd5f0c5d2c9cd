"""``shrike check``: the rules between the records, found broken and repaired on both
stores (State.check and State.repair), the command as an operator types it, and the
comparison with a real dockerd (20.10) and ``shrike server``."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from shrike_cli.cli import app
from shrike_cli.ipam import Ipam
from shrike_cli.model import KIND_AUX, STATE_PARKED, STATE_RELEASED
from shrike_cli.pools import Pool
from shrike_cli.state import (
    CURSOR_OUTSIDE,
    DAMAGED_RECORD,
    FREE_DANGLING,
    FREE_MISSING,
    LEASE_MISFILED,
    LEASE_OUTSIDE,
    LEASE_STATE,
    MAC_DANGLING,
    NAME_DANGLING,
    NAME_MISSING,
    NAME_TWICE,
    PARKED_DANGLING,
    PARKED_MISSING,
    UNKNOWN_RECORD,
)
from shrike_cli.stores import Delete, Put, Store
from tests.fixtures.dockerd import DockerDaemon, Tracker
from tests.fixtures.plugin import SHRIKE, SmallLan, run
from tests.fixtures.stores import LAN, open_store_args
from tests.test_reconcile import leak

MAC_A = "02:00:5e:00:53:0a"
MAC_B = "02:00:5e:00:53:0b"
OWNER = {"container_id": "c0ffee", "name": "web1", "network": "lan"}
RANGE = "198.51.100.100-198.51.100.109"
#: No dockerd answers there: only the store is checked.
NO_DOCKER = "unix:///nonexistent/docker.sock"


def write(store: Store, *ops: Put | Delete) -> None:
    """Change records behind shrike's back, as a person with etcdctl or sqlite3 would."""
    assert store.txn([], list(ops)).succeeded


def every_kind_of_record(ipam: Ipam) -> dict[str, str]:
    """Leases in every state, with every index entry, cursor and pool record shrike writes;
    returns the addresses by what they are."""
    held = ipam.request_address(LAN, mac=MAC_A, owner=OWNER).ip
    released = ipam.request_address(LAN, mac=MAC_B).ip
    ipam.release_address(released)
    parked = ipam.request_address(LAN, mac="02:00:5e:00:53:0c", owner={**OWNER, "name": "db"}).ip
    ipam.release_address(parked, keep=True)
    reserved = ipam.reserve("cache").ip
    ipam.request_address(Pool.of(LAN, "198.51.100.104/30"))  # a window's cursor
    ipam.request_pool(Pool.of(LAN))
    ipam.request_gateway(LAN, "198.51.100.60", kind=KIND_AUX)
    ipam.claim_host("198.51.100.39")
    return {"held": held, "released": released, "parked": parked, "reserved": reserved}


def problems(ipam: Ipam) -> dict[str, str]:
    """What check finds: problem -> address."""
    return {finding.problem: finding.ip for finding in ipam.state.check().findings}


# ------------------------------------------------------------- the store alone
def test_a_store_written_by_every_path_breaks_no_rule(lan_ipam: Ipam) -> None:
    every_kind_of_record(lan_ipam)
    survey = lan_ipam.state.check()
    assert survey.findings == ()
    assert survey.records == len(lan_ipam.store.get_prefix(""))


def test_each_broken_rule_is_found_and_what_is_safe_is_repaired(lan_ipam: Ipam) -> None:
    ip = every_kind_of_record(lan_ipam)
    store = lan_ipam.store
    [free_key] = [e.key for e in store.get_prefix("free/")]
    write(
        store,
        # the index, free-list and parked entries: missing ones...
        Delete(free_key),
        Delete(f"parked/hostA/{ip['parked']}"),
        Delete("names/cache"),
        # ...and dangling ones (a free entry for a held address would hand it out twice)
        Put(f"free/{RANGE}/00000000000000000001-{ip['held']}", {"ip": ip["held"], "mac": ""}),
        Put(f"parked/hostB/{ip['held']}", {"ip": ip["held"], "mac": "", "range": RANGE, "owner": {}, "at": 1}),
        Put("names/ghost", {"ip": ip["held"]}),
        Put("macs/02:00:5e:00:53:ff", {"ip": ip["held"]}),
    )
    found = problems(lan_ipam)
    assert found == {
        FREE_MISSING: ip["released"],
        PARKED_MISSING: ip["parked"],
        NAME_MISSING: ip["reserved"],
        FREE_DANGLING: ip["held"],
        PARKED_DANGLING: ip["held"],
        NAME_DANGLING: ip["held"],
        MAC_DANGLING: ip["held"],
    }
    assert all(lan_ipam.state.repair(finding) for finding in lan_ipam.state.check().findings)
    assert problems(lan_ipam) == {}
    # Repaired, the indexes serve again: the parked address goes back to its container,
    # the released one to its MAC, the reservation to its name.
    assert [p.ip for p in lan_ipam.parked()] == [ip["parked"]]
    assert lan_ipam.request_address(LAN, mac=MAC_B).ip == ip["released"]
    assert lan_ipam.reserve("cache").ip == ip["reserved"]


def test_what_a_person_must_look_at_is_found_and_left_alone(lan_ipam: Ipam) -> None:
    ip = every_kind_of_record(lan_ipam)
    store = lan_ipam.store
    held = store.get(f"leases/{ip['held']}")
    assert held is not None
    outside = {**held.value, "ip": "198.51.100.150", "free_key": ""}
    write(
        store,
        Put("leases/198.51.100.107", {**held.value, "name": "cache"}),  # under another address
        Put("leases/198.51.100.150", outside),  # in no container range
        Put("leases/198.51.100.108", {**held.value, "ip": "198.51.100.108", "state": "reserved", "mac": ""}),
        Put("leases/198.51.100.104", {**held.value, "ip": "198.51.100.104", "free_key": "free/x", "mac": ""}),
        Put("leases/198.51.100.109", {"ip": "198.51.100.109"}),  # damaged
        Put(f"ranges/{RANGE}", {"next": 11}),  # past its range
        Put("leftover/x", {}),
    )
    found = problems(lan_ipam)
    assert set(found) == {LEASE_MISFILED, LEASE_OUTSIDE, LEASE_STATE, DAMAGED_RECORD, CURSOR_OUTSIDE, UNKNOWN_RECORD}
    assert found[LEASE_MISFILED] == "198.51.100.107"
    assert {f.ip for f in lan_ipam.state.check().findings if f.problem == LEASE_STATE} == {
        "198.51.100.108",  # reserved, for no name
        "198.51.100.104",  # held, with a free-list key
    }
    assert not any(finding.repair for finding in lan_ipam.state.check().findings)
    # Two leases carrying one reservation name.
    write(
        store, *(Put(f"leases/{a}", {**outside, "ip": a, "name": "web1"}) for a in ("198.51.100.105", "198.51.100.106"))
    )
    assert problems(lan_ipam)[NAME_TWICE] in ("198.51.100.105", "198.51.100.106")


def test_a_repair_writes_only_over_the_records_it_read(lan_ipam: Ipam) -> None:
    ip = every_kind_of_record(lan_ipam)
    [free_key] = [e.key for e in lan_ipam.store.get_prefix("free/")]
    write(lan_ipam.store, Delete(free_key))
    [finding] = lan_ipam.state.check().findings
    # The address is taken again (its MAC comes back) before the repair: putting the old
    # free-list entry back now would hand it out twice.
    assert lan_ipam.request_address(LAN, mac=MAC_B).ip == ip["released"]
    assert lan_ipam.state.repair(finding) is False
    assert lan_ipam.store.get(free_key) is None
    assert problems(lan_ipam) == {}


def test_a_released_lease_with_no_free_list_key_is_put_back_on_the_list(lan_ipam: Ipam) -> None:
    ip = every_kind_of_record(lan_ipam)
    lease = lan_ipam.store.get(f"leases/{ip['released']}")
    assert lease is not None
    without = {k: v for k, v in lease.value.items() if k != "free_key"}
    write(lan_ipam.store, Put(lease.key, without), Delete(lease.value["free_key"]))
    [finding] = lan_ipam.state.check().findings
    assert (finding.problem, finding.ip) == (FREE_MISSING, ip["released"])
    assert lan_ipam.state.repair(finding)
    assert problems(lan_ipam) == {}
    assert lan_ipam.lease(ip["released"]).state == STATE_RELEASED


# --------------------------------------------------------------- the command
def shrike(store_args: list[str], *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(
        app, [*store_args, *args], env={"CLUSTER_STORE": "", "DEBUG": "", "DOCKER_HOST": NO_DOCKER}
    )
    return result.exit_code, result.stdout, result.stderr


def test_check_and_repair_as_typed(store_args: list[str]) -> None:
    ipam = Ipam(open_store_args(store_args), host="hostA")
    try:
        ipam.declare_host_range("198.51.100.1/24", "198.51.100.50/24", "198.51.100.254")
        ipam.declare_ip_range("198.51.100.100/24", "198.51.100.109/24")
        ip = ipam.request_address(LAN, mac=MAC_A, owner=OWNER).ip
        ipam.release_address(ip, keep=True)

        code, out, err = shrike(store_args, "check")
        assert (code, out) == (0, "")
        assert "no problem found" in err and "all agree" in err
        assert f"dockerd not compared: cannot use dockerd at {NO_DOCKER}" in err

        write(ipam.store, Delete(f"parked/hostA/{ip}"), Put("leftover", {}))
        code, out, err = shrike(store_args, "check")
        assert code == 1
        assert PARKED_MISSING in out and ip in out and "put the parked entry back" in out
        assert "2 problems; 'shrike check --repair' repairs 1" in err
        code, out, _ = shrike(store_args, "check", "--output", "json")
        report = json.loads(out)
        assert (code, report["ok"], report["docker"]["checked"]) == (1, False, False)
        assert [(p["where"], p["problem"], p["status"]) for p in report["problems"]] == [
            ("store", UNKNOWN_RECORD, "found"),
            ("store", PARKED_MISSING, "found"),
        ]
        # --repair repairs what it can and says so; the unknown record is left: exit 1.
        code, out, _ = shrike(store_args, "check", "--repair", "--output", "json")
        statuses = {p["problem"]: p["status"] for p in json.loads(out)["problems"]}
        assert (code, statuses) == (1, {UNKNOWN_RECORD: "found", PARKED_MISSING: "repaired"})
        assert ipam.lease(ip).state == STATE_PARKED and [p.ip for p in ipam.parked()] == [ip]
        write(ipam.store, Delete("leftover"))
        assert shrike(store_args, "check", "--repair")[0] == 0
    finally:
        ipam.store.close()


# ---------------------------------------------------------- with dockerd
def check_json(small_lan: SmallLan, *args: str) -> tuple[int, dict[str, object]]:
    result = small_lan.shrike("check", "--plugin-name", small_lan.plugin.name, "--output", "json", *args, check=False)
    return result.returncode, json.loads(result.stdout)


def test_check_compares_the_leases_with_the_containers(
    small_lan: SmallLan, dockerd: DockerDaemon, docker_cleanup: Tracker
) -> None:
    name, error = run(dockerd, docker_cleanup, small_lan.network)
    assert error == ""
    live = small_lan.address_of(name)
    code, report = check_json(small_lan)
    assert (code, report["problems"]) == (0, [])
    docker = report["docker"]
    assert (docker["checked"], docker["networks"], docker["leases"]) == (True, [small_lan.network.name], 1)
    assert docker["endpoints"] >= 1  # the session's dockerd may run other tests' containers

    # A lease no container holds: leaked once older than --grace.
    leaked = leak(small_lan, MAC_A)
    assert check_json(small_lan)[0] == 0  # taken just now: its container may be starting
    code, report = check_json(small_lan, "--grace", "0s")
    assert code == 1
    assert [(p["where"], p["problem"], p["ip"]) for p in report["problems"]] == [("docker", "no-endpoint", leaked)]

    # The store gives a running container's address to another host.
    lease = small_lan.plugin.ipam.store.get(f"leases/{live}")
    assert lease is not None
    write(small_lan.plugin.ipam.store, Put(lease.key, {**lease.value, "host": "elsewhere"}))
    code, report = check_json(small_lan)
    assert code == 1
    [problem] = report["problems"]
    assert (problem["problem"], problem["ip"]) == ("endpoint-not-held", live)
    assert "container held by" in problem["detail"] and "on host elsewhere" in problem["detail"]
    write(small_lan.plugin.ipam.store, Put(lease.key, lease.value))


def test_check_says_when_no_network_uses_the_plugin(small_lan: SmallLan) -> None:
    leak(small_lan, MAC_A)
    result = small_lan.shrike("check", "--plugin-name", "nonesuch", "--output", "json", check=False)
    report = json.loads(result.stdout)
    assert result.returncode == 1
    [problem] = report["problems"]
    assert problem["problem"] == "no-plugin-network"
    assert "no network of this dockerd uses the IPAM driver 'nonesuch'" in problem["detail"]


def test_the_host_name_is_the_one_the_leases_carry(small_lan: SmallLan) -> None:
    """Two hosts on one store from one machine: --host-name, or SHRIKE_HOST_NAME."""
    store_args = [*small_lan.plugin.server.store_args]
    reserve = ["reserve", "--subnet", LAN]
    subprocess.run([*SHRIKE, *store_args, "--host-name", "h1", *reserve, "a"], check=True, capture_output=True)
    env = {"PATH": "/usr/bin:/bin", "SHRIKE_HOST_NAME": "h2"}
    subprocess.run([*SHRIKE, *store_args, *reserve, "b"], check=True, capture_output=True, env=env)
    hosts = {
        lease["name"]: lease["host"]
        for lease in json.loads(small_lan.shrike("leases", "--output", "json").stdout)
        if lease.get("name")
    }
    assert hosts == {"a": "h1", "b": "h2"}
    refused = small_lan.shrike("--host-name", "a/b", "leases", check=False)
    assert refused.returncode == 2 and "is not a usable host name" in refused.stderr


@pytest.mark.parametrize("wrong", ["", "x y", "a/b"])
def test_a_host_name_leases_and_keys_cannot_carry_is_a_usage_error(wrong: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["--state-dir", str(tmp_path), "--host-name", wrong, "leases"])
    assert result.exit_code == 2 and "is not a usable host name" in result.stderr
