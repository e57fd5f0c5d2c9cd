"""install.sh, as the README tells a newcomer to use it, on a fresh minimal Debian 12.

The README's set-up command runs verbatim in a chroot made by debootstrap (see
tests/fixtures/fresh_host.py) until the plugin answers on its socket; then the installer
runs again (an upgrade that keeps the state) and uninstalls. The README's test line runs
there too, up to the tests themselves. These tests reach Debian's archive and the Python
package index the way this machine does; select them with ``-m install``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from shrike_cli.plugin.client import PluginClient
from tests.fixtures import project_version
from tests.fixtures.fresh_host import CHECKOUT, REPO, FreshHost, disk_usage

INSTALL = REPO / "install.sh"
SOCKET = "run/docker/plugins/shrike.sock"
#: What the installer puts outside /opt/shrike (the completions: see completions/README.md).
ADDED = [
    "usr/local/bin/shrike",
    "usr/local/bin/oam-docker-ipam",
    *(f"usr/share/bash-completion/completions/{p}" for p in ("shrike", "oam-docker-ipam")),
    *(f"usr/local/share/zsh/site-functions/_{p}" for p in ("shrike", "oam-docker-ipam")),
    *(f"usr/share/fish/vendor_completions.d/{p}.fish" for p in ("shrike", "oam-docker-ipam")),
]
INSTALL_TIMEOUT = 900  # a fresh host downloads its packages; ~1 min here


def readme_command(marker: str) -> str:
    """The fenced line after ``<!-- MARKER`` in README.md (as .ci/run reads the test line)."""
    match = re.search(rf"<!-- {marker}\b[^\n]*\n```\n(.+?)\n```", (REPO / "README.md").read_text())
    assert match is not None, f"README.md has no <!-- {marker} --> block"
    return match[1]


def succeeds(host: FreshHost, script: str, timeout: float = INSTALL_TIMEOUT) -> str:
    """Run ``script`` from the checkout in the host; its stdout, failing with its output."""
    result = host.run(f"cd {CHECKOUT} && {script}", timeout=timeout)
    assert result.returncode == 0, f"{script}: exit {result.returncode}\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
    return result.stdout


def activate(socket: Path) -> dict[str, object] | None:
    """The plugin's answer to dockerd's first call, or None while nothing answers."""
    if not socket.exists():
        return None
    try:
        with PluginClient(socket, timeout=5) as client:
            status, reply = client.call("Plugin.Activate")
    except OSError:
        return None
    assert status == 200, reply
    return reply


def declared_ranges(host: FreshHost) -> list[object]:
    return [json.loads(succeeds(host, f"shrike {kind} --output json")) for kind in ("host-range", "ip-range")]


# ------------------------------------------------------------------ without a host
def test_help_says_what_it_does() -> None:
    result = subprocess.run([str(INSTALL), "--help"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and result.stderr == ""
    for word in ("--test", "--uninstall", "--purge", "/opt/shrike", "/usr/local/bin", "/var/lib/shrike"):
        assert word in result.stdout


@pytest.mark.parametrize("args", [["--bogus"], ["--purge"], ["--test", "--uninstall"]])
def test_usage_errors_change_nothing(args: list[str]) -> None:
    result = subprocess.run([str(INSTALL), *args], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert result.stderr.startswith("install.sh: error: ") and "--help" in result.stderr


# ------------------------------------------------------------------ on a fresh Debian 12
@pytest.mark.install
@pytest.mark.timeout(2 * INSTALL_TIMEOUT)
def test_readme_setup_command_on_a_fresh_debian(fresh_host: FreshHost) -> None:
    command = readme_command("setup-command")
    assert command.startswith("./install.sh && ") and command.endswith(" && shrike server")
    socket = fresh_host.path(SOCKET)
    assert len(str(socket)) < 108, f"too long for a unix socket: {socket}"
    before = disk_usage(fresh_host.root)

    started = time.monotonic()
    process, log = fresh_host.start(f"cd {CHECKOUT} && {command}", "setup.log")
    deadline = started + INSTALL_TIMEOUT
    while (reply := activate(socket)) is None:
        assert process.poll() is None, f"exit {process.returncode}:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"no answer on {socket}:\n{log.read_text()[-3000:]}"
        time.sleep(0.5)
    answered = time.monotonic() - started
    assert reply == {"Implements": ["IpamDriver"]}
    # The plugin serves the LAN the command declared.
    with PluginClient(socket) as client:
        address = client.request_address(client.request_pool("198.51.100.0/24"))
    assert re.fullmatch(r"198\.51\.100\.1\d\d/24", address), address

    venv = disk_usage(fresh_host.root / "opt/shrike")
    added = disk_usage(fresh_host.root) - before
    print(f"README set-up command on a fresh Debian 12: the plugin answered after {answered:.0f} s;")
    print(f"  /opt/shrike {venv / 1e6:.0f} MB; the host grew by {added / 1e6:.0f} MB (packages, venv, caches, store)")

    # SIGTERM stops the server; it removes its socket; the command line ends well.
    servers = [pid for pid, argv in fresh_host.processes().items() if "server" in argv[1:]]
    assert len(servers) == 1, fresh_host.processes()
    os.kill(servers[0], signal.SIGTERM)
    assert process.wait(timeout=30) == 0, log.read_text()[-3000:]
    assert not socket.exists()

    # A login shell finds the command.
    assert succeeds(fresh_host, "shrike --version") == f"shrike {project_version()}\n"
    assert succeeds(fresh_host, "oam-docker-ipam -V") == f"shrike {project_version()}\n"
    for path in ADDED:
        assert (fresh_host.root / path).is_file() or (fresh_host.root / path).is_symlink(), path
    assert os.readlink(fresh_host.root / "usr/local/bin/shrike") == "/opt/shrike/bin/shrike"
    ranges = declared_ranges(fresh_host)

    # Again: an upgrade in place that keeps the state.
    started = time.monotonic()
    succeeds(fresh_host, "./install.sh")
    print(f"  ./install.sh again (upgrade): {time.monotonic() - started:.0f} s")
    assert declared_ranges(fresh_host) == ranges
    assert succeeds(fresh_host, "shrike --version") == f"shrike {project_version()}\n"

    # Uninstall: what it added goes, also the folders it made; the state stays.
    succeeds(fresh_host, "./install.sh --uninstall")
    for path in [*ADDED, "opt/shrike", "usr/local/share/zsh", "usr/share/fish"]:
        assert not os.path.lexists(fresh_host.root / path), path
    assert (fresh_host.root / "var/lib/shrike/shrike.db").exists()
    assert fresh_host.run("command -v shrike").returncode == 1
    # Installed again, it finds the state; --purge removes it.
    succeeds(fresh_host, "./install.sh")
    assert declared_ranges(fresh_host) == ranges
    succeeds(fresh_host, "./install.sh --uninstall --purge")
    assert not (fresh_host.root / "var/lib/shrike").exists()
    assert not (fresh_host.root / "opt/shrike").exists()


@pytest.mark.install
@pytest.mark.timeout(2 * INSTALL_TIMEOUT)
def test_readme_test_line_installs_what_the_tests_need(fresh_host: FreshHost) -> None:
    install, run_tests = readme_command("test-command").rsplit(" && ", 1)
    assert install.startswith("./install.sh --test") and " -m pytest" in run_tests
    started = time.monotonic()
    succeeds(fresh_host, install)
    print(f"README test line up to the tests, on a fresh Debian 12: {time.monotonic() - started:.0f} s")
    # The suite is importable there, and a test of the installed program passes.
    collected = succeeds(fresh_host, f"{run_tests} --collect-only")
    assert re.search(r"^\d+ tests collected", collected, re.MULTILINE), collected[-2000:]
    succeeds(fresh_host, f"{run_tests} tests/test_cli.py -k version")
