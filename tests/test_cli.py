"""Each command as an operator types it, on both stores: output, exit codes, stderr."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from shrike_cli.cli import app
from shrike_cli.state import CONFIG_KEY
from shrike_cli.stores import Put
from tests.fixtures.stores import open_store_args

Run = Callable[..., "Result"]

COMMANDS = ["host-range", "ip-range", "server", "create-network", "leases", "release"]


class Result:
    def __init__(self, code: int, stdout: str, stderr: str) -> None:
        self.code, self.stdout, self.stderr = code, stdout, stderr

    def json(self) -> object:
        return json.loads(self.stdout)


@pytest.fixture
def shrike(store_args: list[str]) -> Run:
    """Run the CLI in-process against the test's store (this module's own ``shrike``: it
    overrides the one of tests/fixtures/hostnet.py here)."""
    runner = CliRunner()

    def run(*args: str) -> Result:
        result = runner.invoke(app, [*store_args, *args], env={"CLUSTER_STORE": "", "DEBUG": ""})
        return Result(result.exit_code, result.stdout, result.stderr)

    return run


def declare_original_flow(shrike: Run) -> None:
    hosts = shrike("host-range", "--ip-start=172.25.60.0/22", "--ip-end=172.25.60.182/22", "--gateway=172.25.63.254")
    assert hosts.code == 0, hosts.stderr
    assert "skipping 172.25.60.0: the network address" in hosts.stderr
    containers = shrike("ip-range", "--ip-start=172.25.60.187/24", "--ip-end=172.25.60.192/24")
    assert containers.code == 0, containers.stderr
    assert "in 172.25.60.0/22" in containers.stdout


def test_original_flow_and_listings(shrike: Run) -> None:
    declare_original_flow(shrike)
    listing = shrike("ip-range", "--output", "json").json()
    assert listing == [
        {
            "kind": "container",
            "start": "172.25.60.187",
            "end": "172.25.60.192",
            "prefixlen": 24,
            "subnet": "172.25.60.0/22",
            "gateway": "172.25.63.254",
            "size": 6,
            "held": 0,
            "reserved": 0,
            "free": 6,
        }
    ]
    table = shrike("host-range").stdout
    assert "172.25.60.1 " in table and "172.25.63.254" in table
    again = shrike("ip-range", "--ip-start=172.25.60.187/24", "--ip-end=172.25.60.192/24")
    assert again.code == 0 and "already declared" in again.stdout


BAD_INPUT = [
    (
        ["host-range", "--ip-start=172.25.60.0", "--ip-end=172.25.60.182/22", "--gateway=172.25.63.254"],
        "no prefix length",
    ),
    (["ip-range", "--ip-start=172.25.60.199/24", "--ip-end=172.25.60.190/24"], "is after"),
    (["ip-range", "--ip-start=172.25.60.180/22", "--ip-end=172.25.60.190/22"], "overlaps the host range"),
    (["ip-range", "--ip-start=172.25.60.190/24", "--ip-end=172.25.60.195/24"], "overlaps the container range"),
    (["ip-range", "--ip-start=172.25.61.1/24", "--ip-end=172.25.62.1/24"], "outside 172.25.61.0/24"),
    (["ip-range", "--ip-start=172.25.60.1/33", "--ip-end=172.25.60.9/33"], "invalid prefix length"),
    (["host-range", "--ip-start=10.0.0.1/24", "--ip-end=10.0.0.9/24", "--gateway=10.0.1.1"], "not a usable address"),
    (["release", "--ip", "172.25.60.188"], "no container holds"),
    (["release", "--host", "172.25.60.5"], "no host holds"),
    (["release", "--ip", "banana"], "not a valid IPv4"),
    (["release", "--name", "nobody"], "no reservation named nobody"),
]


@pytest.mark.parametrize(("args", "message"), BAD_INPUT, ids=[m for _, m in BAD_INPUT])
def test_bad_input_is_one_line_and_changes_nothing(shrike: Run, args: list[str], message: str) -> None:
    declare_original_flow(shrike)
    before = (shrike("ip-range", "-o", "json").stdout, shrike("leases", "-o", "json", "--all").stdout)
    result = shrike(*args)
    assert result.code == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("shrike: error: ") and message in lines[0], result.stderr
    assert (shrike("ip-range", "-o", "json").stdout, shrike("leases", "-o", "json", "--all").stdout) == before


USAGE_ERRORS = [
    (["leases", "--output", "yaml"], "'yaml' is not one of 'table', 'json'"),
    (["leases", "--kind", "banana"], "'banana' is not one of"),
    (["no-such-command"], "No such command 'no-such-command'"),
    (["ip-range", "--ip-start=172.25.60.200/24"], "give both --ip-start and --ip-end"),
    (["host-range", "--gateway=172.25.63.254"], "--gateway goes with --ip-start and --ip-end"),
    (["release"], "give exactly one of --ip, --host or --name"),
    (["release", "--ip", "172.25.60.188", "--name", "web1"], "give exactly one of --ip, --host or --name"),
    (["reserve"], "Missing argument"),
    (["create-network"], "give --ip, this host's own address"),
    (["create-network", "--ip", "172.25.60.5", "--force"], "--force goes with --undo"),
    (["create-network", "--ip", "172.25.60.5", "--macvlan-shim"], "--macvlan-shim goes with --mode macvlan"),
    (["doctor", "--output", "yaml"], "'yaml' is not one of 'table', 'json'"),
]


@pytest.mark.parametrize(("args", "message"), USAGE_ERRORS, ids=[" ".join(args) for args, _ in USAGE_ERRORS])
def test_usage_errors_exit_2_with_the_usage_and_change_nothing(shrike: Run, args: list[str], message: str) -> None:
    """A command line that is wrong whatever the store holds (unknown or missing options,
    options that conflict, a value not among the choices) exits 2, as click prints it."""
    declare_original_flow(shrike)
    before = (shrike("ip-range", "-o", "json").stdout, shrike("leases", "-o", "json", "--all").stdout)
    result = shrike(*args)
    assert result.code == 2
    assert result.stdout == ""
    assert result.stderr.startswith("Usage: ") and message in result.stderr, result.stderr
    assert (shrike("ip-range", "-o", "json").stdout, shrike("leases", "-o", "json", "--all").stdout) == before


def test_reserve_leases_and_release(shrike: Run) -> None:
    declare_original_flow(shrike)
    reserved = shrike("reserve", "web1")
    assert (reserved.code, reserved.stdout) == (0, "172.25.60.187\n")
    assert shrike("reserve", "web1").stdout == "172.25.60.187\n"
    leases = shrike("leases", "-o", "json").json()
    assert [(lease["ip"], lease["kind"], lease["state"], lease["name"]) for lease in leases] == [
        ("172.25.60.187", "container", "reserved", "web1")
    ]
    assert "web1" in shrike("leases").stdout
    released = shrike("release", "--name", "web1")
    assert released.code == 0 and "released 172.25.60.187" in released.stdout
    assert shrike("leases", "-o", "json").json() == []
    assert shrike("leases", "-o", "json", "--all").json()[0]["state"] == "released"


def test_old_release_commands_still_run_but_are_hidden(shrike: Run) -> None:
    declare_original_flow(shrike)
    ip = shrike("reserve", "x").stdout.strip()
    assert shrike("release-ip", "--ip", ip).code == 0
    assert shrike("release-host", "--ip", "172.25.60.9").code == 1
    help_text = shrike("--help").stdout
    assert "release-ip" not in help_text and "release-host" not in help_text


def test_help_lists_the_six_commands(shrike: Run) -> None:
    help_text = shrike("--help").stdout
    for command in COMMANDS:
        assert command in help_text
    for command in COMMANDS:
        assert shrike(command, "--help").code == 0


@pytest.mark.parametrize("script", ["shrike", "oam-docker-ipam"])
def test_console_scripts(script: str, tmp_path: Path) -> None:
    env = {**os.environ, "SHRIKE_STATE_DIR": str(tmp_path), "CLUSTER_STORE": ""}
    run = subprocess.run(
        [script, "host-range", "--ip-start=198.51.100.1/24", "--ip-end=198.51.100.9/24", "--gateway=198.51.100.254"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "shrike.db").exists()


def test_unreachable_etcd_is_one_line_naming_it(tmp_path: Path) -> None:
    from tests.fixtures.etcd import free_port

    url = f"http://127.0.0.1:{free_port()}"
    run = subprocess.run(
        ["shrike", "--cluster-store", url, "leases"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "CLUSTER_STORE": ""},
    )
    assert run.returncode == 1
    assert len(run.stderr.strip().splitlines()) == 1 and url in run.stderr and "Traceback" not in run.stderr


def test_bad_cluster_store_url(tmp_path: Path) -> None:
    run = subprocess.run(
        ["shrike", "--cluster-store", "ftp://x", "leases"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "CLUSTER_STORE": ""},
    )
    assert run.returncode == 1 and len(run.stderr.strip().splitlines()) == 1


def test_reserve_names_the_lans_to_choose_from(shrike: Run) -> None:
    declare_original_flow(shrike)
    shrike("host-range", "--ip-start=203.0.113.1/24", "--ip-end=203.0.113.9/24", "--gateway=203.0.113.254")
    shrike("ip-range", "--ip-start=203.0.113.100/24", "--ip-end=203.0.113.109/24")
    several = shrike("reserve", "web1")
    assert several.code == 1
    assert "several LANs (172.25.60.0/22, 203.0.113.0/24)" in several.stderr
    # --subnet must be one of them, not any subnet around a range.
    wide = shrike("reserve", "web1", "--subnet", "172.0.0.0/8")
    assert wide.code == 1 and "is not a LAN with container ranges (those: 172.25.60.0/22" in wide.stderr
    assert shrike("reserve", "web1", "--subnet", "203.0.113.0/24").stdout == "203.0.113.100\n"


def test_a_damaged_store_record_is_one_clear_line(shrike: Run, store_args: list[str]) -> None:
    declare_original_flow(shrike)
    with open_store_args(store_args) as store:
        store.txn([], [Put(CONFIG_KEY, {"gateways": [], "ip_ranges": 7})])
    result = shrike("ip-range")
    assert result.code == 1
    assert result.stderr.startswith("shrike: error: the store's declarations at 'config' is damaged")
    assert "unexpected" not in result.stderr and "Traceback" not in result.stderr
