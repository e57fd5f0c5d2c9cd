"""The examples work as their text says: the systemd unit and its settings file, the
provisioning script (run for real on a host namespace with its own dockerd, as
tests/test_create_network.py does), and the three-host walk-through (its commands
parse; its declarations and checks run against the session's etcd as three hosts).
"""

from __future__ import annotations

import configparser
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import typer

from shrike_cli.cli import app
from shrike_cli.stores import EtcdStore
from tests.fixtures.dockerd import DockerDaemon, wait_gone
from tests.fixtures.hostnet import CONTAINER_RANGE, HOST_IP, ROUTER, Shrike, in_container_range, snapshot
from tests.fixtures.plugin import SHRIKE

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"


def read_unit(path: Path) -> configparser.ConfigParser:
    """A systemd unit as sections of settings (names keep their case; no % expansion)."""
    unit = configparser.ConfigParser(interpolation=None, strict=True)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string(path.read_text())
    return unit


def unit_defaults() -> dict[str, str]:
    """The unit's ``Environment=`` settings (what applies without the conf file)."""
    return dict(item.split("=", 1) for item in read_unit(EXAMPLES / "shrike.service")["Service"]["Environment"].split())


def cli_envvars() -> set[str]:
    """The environment variables the global options and the server's options read."""
    group = typer.main.get_command(app)
    assert isinstance(group, typer.core.TyperGroup)
    return {
        name
        for param in [*group.params, *group.commands["server"].params]
        for name in ([param.envvar] if isinstance(param.envvar, str) else param.envvar or [])
    }


def parses(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``shrike ARGS --help``: exit 0 only if every command and option in ARGS exists
    (click parses the whole line before the eager --help runs; nothing else runs)."""
    return subprocess.run(
        [*SHRIKE, *args, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env={**(env or os.environ), "PYTHONPATH": str(REPO)},
        stdin=subprocess.DEVNULL,
    )


# ------------------------------------------------------------------ the unit
def test_the_unit_starts_before_docker_restarts_and_reads_the_conf() -> None:
    unit = read_unit(EXAMPLES / "shrike.service")
    assert "docker.service" in unit["Unit"]["Before"].split()
    assert unit["Service"]["Restart"] == "on-failure"
    assert unit["Service"]["EnvironmentFile"] == "-/etc/shrike/shrike.conf"
    assert set(unit["Install"]["WantedBy"].split()) == {"docker.service", "multi-user.target"}
    start = shlex.split(unit["Service"]["ExecStart"])
    assert start[:2] == ["/usr/local/bin/shrike", "server"]
    # Its options exist (with the defaults the unit sets in place of ${...}).
    defaults = unit_defaults()
    args = [re.sub(r"\$\{(\w+)\}", lambda m: defaults[m[1]], word) for word in start[1:]]
    assert parses(args).returncode == 0, args


def test_the_unit_waits_until_the_plugin_socket_is_there(tmp_path: Path) -> None:
    """ExecStartPost, as systemd runs it ("$$" is "$"), returns once the socket exists."""
    post = read_unit(EXAMPLES / "shrike.service")["Service"]["ExecStartPost"]
    argv = [word.replace("$$", "$") for word in shlex.split(post)]
    env = {**os.environ, "PLUGIN_DIR": str(tmp_path), "PLUGIN_NAME": "late"}
    listener = socket.socket(socket.AF_UNIX)
    timer = threading.Timer(0.5, listener.bind, [str(tmp_path / "late.sock")])
    started = time.monotonic()
    timer.start()
    try:
        result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=15)
    finally:
        timer.cancel()
        listener.close()
    assert result.returncode == 0, result.stderr
    assert 0.5 <= time.monotonic() - started < 5


def test_the_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    # verify checks that ExecStart's program exists: /usr/local/bin/shrike may not, here.
    unit = tmp_path / "shrike.service"
    unit.write_text((EXAMPLES / "shrike.service").read_text().replace("/usr/local/bin/shrike", sys.executable))
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    # verify exits 0 on settings it ignores, but names them: nothing may be said.
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_every_setting_of_the_conf_is_read_by_shrike_or_the_unit() -> None:
    conf = (EXAMPLES / "shrike.conf").read_text()
    named = set(re.findall(r"^#?([A-Z][A-Z0-9_]*)=", conf, re.MULTILINE))
    unit = (EXAMPLES / "shrike.service").read_text()
    used_by_unit = set(re.findall(r"\$\{(\w+)\}", unit))
    assert named - cli_envvars() - used_by_unit == set()
    assert {"CLUSTER_STORE", "DEBUG", "PLUGIN_NAME", "PLUGIN_DIR"} <= named
    # The unit's defaults are what the file sets (so that removing a line changes nothing).
    values = dict(re.findall(r"^([A-Z][A-Z0-9_]*)=(.*)$", conf, re.MULTILINE))
    defaults = unit_defaults()
    assert {name: values[name] for name in defaults} == defaults
    # It is a shell file too (three-hosts.md sources it): the values are what systemd reads.
    shell = subprocess.run(
        ["bash", "-c", 'set -a; . "$0"; set +a; env -0', str(EXAMPLES / "shrike.conf")],
        capture_output=True, text=True, env={"PATH": os.environ["PATH"]}, timeout=30,
    )  # fmt: skip
    exported = dict(item.split("=", 1) for item in shell.stdout.split("\0") if "=" in item)
    assert {name: exported[name] for name in values} == values


def test_the_prometheus_examples_pass_promtool() -> None:
    """The scrape configuration and the alert rules are valid, and each alert fires on
    the series its unit test gives (promtool test rules)."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian package prometheus)")
    for check in (
        ["check", "config", "prometheus.yml"],
        ["check", "rules", "shrike-alerts.yml"],
        ["test", "rules", "shrike-alerts.test.yml"],
    ):
        result = subprocess.run(
            [promtool, *check], cwd=EXAMPLES / "prometheus", capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stdout + result.stderr


# ------------------------------------------------------- the provisioning script
def provision(env: dict[str, str], netns: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run examples/provision-host.sh (inside network namespace ``netns`` if given)."""
    prefix = ["nsenter", f"--net={netns}"] if netns else []
    return subprocess.run(
        [*prefix, "bash", str(EXAMPLES / "provision-host.sh")],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
    )


def test_the_script_says_which_variables_are_missing() -> None:
    env = {"PATH": os.environ["PATH"], "HOST_IP": "198.51.100.39"}
    result = provision(env)
    assert result.returncode == 1
    assert "set HOST_RANGE_START HOST_RANGE_END GATEWAY IP_RANGE_START IP_RANGE_END" in result.stderr
    bad = provision({**env, **dict.fromkeys(("HOST_RANGE_START", "HOST_RANGE_END", "GATEWAY"), "x"),
                     "IP_RANGE_START": "x", "IP_RANGE_END": "x", "SERVER": "cron"})  # fmt: skip
    assert bad.returncode == 1 and "SERVER=cron: use auto, systemd or background" in bad.stderr


def stop_by_pid_file(pid_file: Path) -> list[str]:
    """Stop the server the script started: SIGTERM, then SIGKILL after 10 s."""
    if not pid_file.exists():
        return []
    pid = int(pid_file.read_text())
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return []
    if not wait_gone([pid], 10):
        return []
    os.kill(pid, signal.SIGKILL)
    return [f"shrike server {pid} ignored SIGTERM for 10 s; killed"]


# ``daemon`` (tests/fixtures/hostnet.py): the module's own dockerd in a host namespace,
# with a second LAN host: provisioning rewires that host, so the session's dockerd is not used.
@pytest.mark.netns
@pytest.mark.docker
def test_the_script_provisions_a_host_from_scratch(daemon: DockerDaemon, tmp_path: Path) -> None:
    cli = Shrike(daemon, tmp_path / "state", tmp_path / "unused.log")
    before = snapshot(cli.host)
    pid_file = tmp_path / "run" / "shrike.pid"
    env = {
        **cli.env,
        "HOST_IP": HOST_IP,
        "HOST_RANGE_START": "198.51.100.1/24",
        "HOST_RANGE_END": "198.51.100.99/24",
        "GATEWAY": ROUTER,
        "IP_RANGE_START": f"{CONTAINER_RANGE[0]}/24",
        "IP_RANGE_END": f"{CONTAINER_RANGE[1]}/24",
        "STATE_DIR": str(cli.state),
        "PLUGIN_NAME": cli.plugin,
        "PLUGIN_DIR": daemon.plugin_dir,
        "SERVER": "background",  # also where systemd runs the machine: it knows no test unit
        "PID_FILE": str(pid_file),
        "LOG_FILE": str(tmp_path / "log" / "shrike.log"),
        "SHRIKE": shlex.join(SHRIKE),
    }
    errors: list[str] = []
    try:
        first = provision(env, daemon.netns_path)
        assert first.returncode == 0, first.stderr
        assert f"started shrike server in the background: pid {pid_file.read_text().strip()}" in first.stderr
        assert f"created Docker network mynet: {HOST_IP} is on bridge br0" in first.stdout
        assert re.search(rf"^{re.escape(HOST_IP)} +198\.51\.100\.0/24 +host +held", first.stdout, re.MULTILINE)
        server_pid = pid_file.read_text()

        again = provision(env, daemon.netns_path)
        assert again.returncode == 0, again.stderr
        assert "already declared, nothing changed" in again.stdout
        assert "it already answers on" in again.stderr
        assert "Docker network mynet is already set up" in again.stdout
        assert pid_file.read_text() == server_pid

        container, ip = cli.run_container("mynet")
        assert in_container_range(ip), ip
        code, out = container.exec_run(["ping", "-c", "2", "-W", "1", ROUTER])
        assert code == 0, out.decode()
        leases = cli.leases()
        assert (leases[HOST_IP]["kind"], leases[ip]["kind"]) == ("host", "container")
    finally:
        errors += cli.cleanup()  # create-network --undo, containers: while the plugin runs
        errors += stop_by_pid_file(pid_file)
    assert not errors, errors
    assert snapshot(cli.host) == before, "provisioning and undo left the host changed"


# ------------------------------------------------------------ the walk-through
WALKTHROUGH = EXAMPLES / "three-hosts.md"


def walkthrough_commands() -> list[list[str]]:
    """Every shrike command line in three-hosts.md: in code blocks (a line, or inside
    ``$(...)``) and in inline code, as argument lists without the program name."""
    text = WALKTHROUGH.read_text()
    blocks = re.findall(r"^```\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
    lines = [line for block in blocks for line in block.replace("\\\n", " ").splitlines()]
    found = [m for line in lines for m in re.findall(r'(?:^|\$\()shrike ([^)"#\n]*)', line)]
    found += re.findall(r"`shrike ([^`]*)`", re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL))
    return [shlex.split(command) for command in found]


def test_every_shrike_command_of_the_walkthrough_exists() -> None:
    commands = walkthrough_commands()
    subcommands = {args[next(i for i, a in enumerate(args) if not a.startswith("-"))] for args in commands}
    assert {"host-range", "ip-range", "create-network", "leases", "reserve", "release"} <= subcommands
    for args in commands:
        result = parses(args)
        assert result.returncode == 0, f"shrike {shlex.join(args)}: {result.stderr}"


def key_kinds(store: EtcdStore) -> set[str]:
    """The first component of every key under the store's prefix: ``config``, ``leases``..."""
    return {entry.key.partition("/")[0] for entry in store.get_prefix("")}


def test_the_walkthrough_on_three_hosts(etcd_store: EtcdStore) -> None:
    """Sections 4 and 6 against one etcd from three hosts (UTS namespaces named h1-h3:
    shrike records the host name): the declarations once and again, a reservation made
    on one host seen and ended from the others, and the keys the text describes."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare (util-linux) for the hosts' names")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SHRIKE_")},
        "CLUSTER_STORE": ",".join(etcd_store.endpoints),
        "SHRIKE_STORE_PREFIX": etcd_store.prefix,
        "PYTHONPATH": str(REPO),
    }

    def on(host: str, *args: str) -> str:
        result = subprocess.run(
            ["unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', host, *SHRIKE, *args],
            env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert result.returncode == 0, f"{host}: shrike {shlex.join(args)}: {result.stderr}"
        return result.stdout

    declarations = [args for args in walkthrough_commands() if args[0] in ("host-range", "ip-range")]
    assert len(declarations) == 2
    for number, host in enumerate(("h1", "h2", "h3")):
        for args in declarations:
            said = on(host, *args)
            assert said.startswith("declared" if number == 0 else "already declared, nothing changed"), said

    ip = on("h2", "reserve", "db").strip()
    assert in_container_range(ip), ip
    [lease] = [lease for lease in json.loads(on("h3", "leases", "--output", "json")) if lease["ip"] == ip]
    assert (lease["name"], lease["host"], lease["state"]) == ("db", "h2", "reserved")
    kinds = key_kinds(etcd_store)
    on("h1", "release", "--name", "db")
    assert all(lease["ip"] != ip for lease in json.loads(on("h3", "leases", "-o", "json")))
    kinds |= key_kinds(etcd_store)

    # "etcdctl get --prefix /shrike/ --keys-only": each kind of key is explained.
    assert {"config", "leases", "names", "ranges", "free"} <= kinds
    explained = WALKTHROUGH.read_text().split("etcdctl get /shrike/config", 1)[1]
    assert {kind for kind in kinds if f"`{kind}" not in explained} == set()
