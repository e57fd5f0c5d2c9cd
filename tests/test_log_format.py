"""``--log-format json`` (and SHRIKE_LOG_FORMAT): everything on stderr is one JSON object
a line, for commands and for the server, whose requests carry their fields."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

from shrike_cli.ipam import Ipam
from shrike_cli.plugin.client import PluginClient
from shrike_cli.stores import EmbeddedStore
from tests.fixtures.plugin import SHRIKE, ServerProcess, declare_lan, random_mac

TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def records(stderr: str) -> list[dict[str, Any]]:
    """Each line of ``stderr`` as the JSON object it must be."""
    found = [json.loads(line) for line in stderr.splitlines()]
    for record in found:
        assert TIME.fullmatch(record["time"]) and record["level"] and record["event"], record
    return found


def shrike(state: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SHRIKE, "--state-dir", str(state), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
    )


def test_a_commands_error_and_notes_are_json_lines(tmp_path: Path) -> None:
    failed = shrike(tmp_path, "--log-format", "json", "release", "--ip", "198.51.100.7")
    assert failed.returncode == 1
    [error] = records(failed.stderr)
    assert (error["level"], error["event"]) == ("error", "no container holds 198.51.100.7")

    noted = shrike(
        tmp_path,
        "host-range", "--ip-start", "198.51.100.0/24", "--ip-end", "198.51.100.99/24", "--gateway", "198.51.100.254",
        env={"SHRIKE_LOG_FORMAT": "JSON"},
    )  # fmt: skip
    assert noted.returncode == 0
    assert [(r["level"], r["event"]) for r in records(noted.stderr)] == [
        ("info", "note: skipping 198.51.100.0: the network address of 198.51.100.0/24")
    ]
    assert noted.stdout.startswith("declared host range")  # stdout is the command's, as it was

    wrong = shrike(tmp_path, "--log-format", "xml", "leases")
    assert wrong.returncode == 2 and "'xml' is not one of" in wrong.stderr


def test_the_servers_requests_are_json_records_with_their_fields(tmp_path: Path, socket_dir: Path) -> None:
    state = tmp_path / "state"
    with EmbeddedStore(state / "shrike.db") as store:
        declare_lan(Ipam(store))
    server = ServerProcess(
        ["--state-dir", str(state)],
        socket_dir,
        "logs",
        tmp_path / "server.log",
        server_args=["--no-follow-docker"],
        env={**os.environ, "SHRIKE_LOG_FORMAT": "json"},
    )
    try:
        server.start()
        with PluginClient(server.path) as client:
            pool = client.request_pool("198.51.100.0/24")
            address = client.request_address(pool, mac=random_mac())
            options = {"com.docker.network.endpoint.macaddress": random_mac()}
            client.call("IpamDriver.RequestAddress", {"PoolID": pool, "Address": "198.51.100.5", "Options": options})
    finally:
        server.stop()
    logged = records(server.log())
    # shrike's own records only: no library's debug lines (pyroute2, asyncio) among them
    assert {r["logger"].partition(".")[0] for r in logged} == {"shrike"}
    [pool_record] = [r for r in logged if r.get("path") == "/IpamDriver.RequestPool"]
    assert (pool_record["status"], pool_record["pool"]) == (200, pool)
    [granted] = [r for r in logged if r.get("address") == address]
    assert (granted["level"], granted["method"], granted["path"]) == ("debug", "POST", "/IpamDriver.RequestAddress")
    assert granted["duration_ms"] > 0 and granted["event"].startswith("POST /IpamDriver.RequestAddress 200 ")
    [refused] = [r for r in logged if r["level"] == "warning"]
    assert (refused["status"], refused["error"]) == (
        500,
        "198.51.100.5 is a host address (host-range 198.51.100.1/24-198.51.100.99/24), not for containers",
    )
