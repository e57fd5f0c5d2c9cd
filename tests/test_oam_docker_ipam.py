"""Drop-in use for the original oam-docker-ipam: its program name, its plugin's name
(``talkingdata``), its settings (``IPAM_*``) and the flag spellings its CLI library took.

The seed's four steps run word for word (on the test LAN, with a real etcd) through an
``oam-docker-ipam`` console script, against a dockerd of their own in a host namespace.
They need the plugin's own name, ``talkingdata``, in /run/docker/plugins, a folder every
dockerd on the machine shares: that dockerd, the server and create-network each run in a
mount namespace of their own where /run/docker/plugins is the test's own folder
(``with_plugin_dir``), so no other dockerd or test sees that socket, and the step lines
carry no ``--plugin-dir``. The original's systemd unit and conf file start the server the
same way.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import logging
import os
import re
import shlex
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from typer.testing import CliRunner

from shrike_cli.cli import app
from shrike_cli.cli.compat import BOOLEANS
from shrike_cli.ipam import Ipam
from shrike_cli.plugin.client import PluginClient
from shrike_cli.stores import EtcdStore
from tests.fixtures.dockerd import DockerDaemon, Tracker, with_plugin_dir
from tests.fixtures.etcd import EtcdServer
from tests.fixtures.hostnet import REPO, assert_reaches, snapshot
from tests.fixtures.plugin import console_scripts

#: The seed's LAN 172.25.60.0/22 moved to the test LAN: the host ranges from the network
#: address (accepted, skipped), the router last, the container range typed with a narrower
#: prefix than the LAN's (/25 in a /24 as the seed's /24 in a /22), the host .39.
HOST_RANGE = ("198.51.100.0/24", "198.51.100.182/24")
ROUTER = "198.51.100.254"
IP_RANGE = ("198.51.100.187/25", "198.51.100.192/25")
HOST_IP = "198.51.100.39"
#: Settings of the caller that would change what the commands do.
SETTINGS = ("CLUSTER_STORE", "DEBUG", "IPAM_CLUSTER_STORE", "IPAM_DEBUG", "SHRIKE_STATE_DIR", "SHRIKE_STORE_PREFIX")
SERVER_READY_TIMEOUT = 20.0


def in_ip_range(ip: str) -> bool:
    first, last = (ipaddress.IPv4Address(a.split("/")[0]) for a in IP_RANGE)
    return first <= ipaddress.IPv4Address(ip) <= last


# ------------------------------------------------------------ parsing, in-process
def run(*args: str, program: str = "oam-docker-ipam", env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """The CLI in-process as ``program``; none of the caller's settings apply."""
    result = CliRunner().invoke(app, list(args), prog_name=program, env={**dict.fromkeys(SETTINGS), **(env or {})})
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize("command", ["server", "create-network", "reconcile", "doctor"])
def test_the_plugin_name_defaults_to_talkingdata_as_oam_docker_ipam_only(command: str) -> None:
    for program, default in (("oam-docker-ipam", "talkingdata"), ("shrike", "shrike")):
        code, out, _ = run(command, "--help", program=program)
        assert code == 0
        assert f"[default: {default}]" in " ".join(out.split()), (program, out)


def debug_after(args: Sequence[str], env: dict[str, str]) -> bool:
    """Whether the global options ARGS (and ``env``) turn --debug on: the root logger's
    level once they are handled (``ip-range --help`` then runs nothing)."""
    code, _, err = run(*args, "ip-range", "--help", env=env)
    assert code == 0, err
    return logging.getLogger().level == logging.DEBUG


DEBUG_CASES = [
    ([], {}, False),
    (["--debug"], {}, True),
    (["--debug=true"], {}, True),
    (["-debug=1"], {}, True),
    (["-debug"], {}, True),
    (["--debug=false"], {"DEBUG": "true"}, False),  # the command line wins
    (["--debug=False"], {"IPAM_DEBUG": "true"}, False),
    (["--debug=yes", "--debug=no"], {}, False),  # the last one wins, as in Go
    ([], {"DEBUG": "t"}, True),
    ([], {"IPAM_DEBUG": "true"}, True),  # the original's name, read when DEBUG is not set
    ([], {"DEBUG": "0", "IPAM_DEBUG": "true"}, False),
]


@pytest.mark.parametrize(("args", "env", "debug"), DEBUG_CASES, ids=[f"{a} {e}" for a, e, _ in DEBUG_CASES])
def test_debug_is_a_flag_with_an_optional_value(args: list[str], env: dict[str, str], debug: bool) -> None:
    assert debug_after(args, env) is debug


def test_the_command_line_and_the_environment_take_the_same_boolean_words() -> None:
    """Go's strconv.ParseBool words (1, t, T, TRUE, true, True and their false ones) and
    yes/no, on/off, y/n, in any case."""
    for word, value in BOOLEANS.items():
        for spelled in {word, word.upper(), word.capitalize()}:
            assert debug_after([f"--debug={spelled}"], {}) is value, spelled
            assert debug_after([], {"DEBUG": spelled}) is value, spelled


def test_the_originals_flag_spellings_declare_the_lan(etcd_store: EtcdStore) -> None:
    """One dash or two, values after "=" or as the next word, on both levels."""
    store = [f"-cluster-store={etcd_store.endpoints[0]}", "-store-prefix", etcd_store.prefix]
    hosts = ["host-range", "-ip-start", HOST_RANGE[0], "-ip-end=" + HOST_RANGE[1], "--gateway", ROUTER]
    code, out, err = run(*store, "-debug=true", *hosts)
    assert code == 0, err
    assert "declared host range 198.51.100.1/24-198.51.100.182/24 (182 addresses) in 198.51.100.0/24" in out
    code, out, err = run(*store, "ip-range", "--ip-start", IP_RANGE[0], "--ip-end", IP_RANGE[1])
    assert code == 0, err
    assert "in 198.51.100.0/24" in out
    code, out, _ = run(*store, "ip-range", "-output=json")
    assert code == 0 and '"start": "198.51.100.187"' in out


REFUSED = [
    (["--debug", "true", "server"], "--debug takes its value after '=': --debug=true"),
    (["--debug=maybe", "server"], "--debug=maybe is neither true nor false: give --debug or --debug=false"),
    (["--debug=", "server"], "--debug= is neither true nor false"),
    (["server", "--debug"], "--debug is a global option: give it before the command (oam-docker-ipam --debug server"),
    (["server", "-debug=true"], "--debug=true is a global option: give it before the command"),
    (["ip-range", "--cluster-store", "http://x"], "--cluster-store is a global option: give it before the command"),
]


@pytest.mark.parametrize(("args", "message"), REFUSED, ids=[" ".join(args) for args, _ in REFUSED])
def test_spellings_refused_say_the_accepted_form(args: list[str], message: str, tmp_path: Path) -> None:
    code, out, err = run("--state-dir", str(tmp_path), *args)
    assert (code, out) == (2, "")
    assert err.startswith("Usage: oam-docker-ipam") and message in " ".join(err.split()), err
    assert not (tmp_path / "shrike.db").exists()


def test_a_flag_before_the_command_keeps_the_command(tmp_path: Path) -> None:
    """``--debug server``: the flag, then the command (Go takes a boolean's value only after "=")."""
    code, out, _ = run("--debug", "server", "--help")
    assert code == 0 and out.startswith("Usage: oam-docker-ipam server")
    for asked in (["-h"], ["-help"], ["--h"], ["server", "-h"]):
        code, out, _ = run(*asked)
        assert code == 0 and out.startswith("Usage: oam-docker-ipam"), asked


def test_the_installed_script_is_the_original_by_its_name() -> None:
    """The console script pip installs (as tests/test_cli.py runs it, from PATH)."""
    env = {k: v for k, v in os.environ.items() if k not in SETTINGS}
    result = subprocess.run(
        ["oam-docker-ipam", "server", "--help"], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "[default: talkingdata]" in " ".join(result.stdout.split())


# ----------------------------------------------------------- the real thing
@pytest.fixture(scope="module")
def programs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return console_scripts(tmp_path_factory.mktemp("bin"))


def environment(programs: Path, **more: str) -> dict[str, str]:
    """The caller's environment without its settings, with ``programs`` first on PATH
    and this checkout's code."""
    env = {k: v for k, v in os.environ.items() if k not in SETTINGS}
    return {**env, "PATH": f"{programs}{os.pathsep}{env['PATH']}", "PYTHONPATH": str(REPO), **more}


def execute(argv: Sequence[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, env=env, cwd=REPO, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
    )


@contextlib.contextmanager
def serving(argv: Sequence[str], env: dict[str, str], socket: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``argv`` (a plugin server) running until it answers Plugin.Activate on
    ``socket``; SIGTERM, and the socket gone, at the end."""
    with open(log, "ab") as out:
        # setpriv: TERM if the test process dies first
        process = subprocess.Popen(["setpriv", "--pdeathsig", "TERM", *argv], env=env, cwd=REPO, stdout=out,
                                   stderr=out, stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + SERVER_READY_TIMEOUT
        while True:
            with (
                contextlib.suppress(OSError, ValueError, http.client.HTTPException),
                PluginClient(socket, timeout=2.0) as client,
            ):
                if client.call("Plugin.Activate")[0] == 200:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the server did not answer on {socket}:\n{log.read_text()}")
            time.sleep(0.05)
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        socket.unlink(missing_ok=True)  # the server removes it; a killed one cannot


@pytest.fixture(scope="module")
def seed_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerDaemon]:
    """A LAN host (198.51.100.39, router .254) with a dockerd of its own that finds
    plugins in a folder of its own."""
    if os.geteuid() != 0:
        pytest.skip("needs root: namespaces and dockerd")
    daemon = DockerDaemon(tmp_path_factory.mktemp("seed-dockerd"), private_plugin_dir=True)
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.stop()


@pytest.fixture(scope="module")
def seed_etcd(seed_host: DockerDaemon, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    """etcd on that host, http://198.51.100.39:2379, as the seed's on 172.25.60.39."""
    assert seed_host.host is not None
    server = EtcdServer(tmp_path_factory.mktemp("seed-etcd"), host=seed_host.host)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.mark.netns
@pytest.mark.docker
def test_the_seeds_four_steps_build_the_lan(
    seed_host: DockerDaemon, seed_etcd: EtcdServer, programs: Path, tmp_path: Path
) -> None:
    """Every step on the host, as the seed typed it (``./oam-docker-ipam`` is on PATH)."""
    assert seed_host.host is not None
    env = environment(programs, DOCKER_HOST=seed_host.url)
    store = f"--cluster-store={seed_etcd.url}"

    def on_host(*words: str) -> list[str]:
        return with_plugin_dir(seed_host.plugin_dir, ["nsenter", f"--net={seed_host.netns_path}", *words])

    before = snapshot(seed_host.host)
    # 1. and 2.: the LAN and the container addresses
    step = execute(on_host("oam-docker-ipam", store, "host-range", f"--ip-start={HOST_RANGE[0]}",
                           f"--ip-end={HOST_RANGE[1]}", f"--gateway={ROUTER}"), env)  # fmt: skip
    assert step.returncode == 0, step.stderr
    assert "skipping 198.51.100.0: the network address" in step.stderr
    step = execute(on_host("oam-docker-ipam", store, "ip-range", f"--ip-start={IP_RANGE[0]}",
                           f"--ip-end={IP_RANGE[1]}"), env)  # fmt: skip
    assert step.returncode == 0, step.stderr
    assert "(6 addresses) in 198.51.100.0/24" in step.stdout

    # 3.: the plugin, answering on talkingdata.sock where this dockerd looks
    socket, log = Path(seed_host.plugin_dir) / "talkingdata.sock", tmp_path / "server.log"
    tracker = Tracker(seed_host.client)
    with serving(on_host("oam-docker-ipam", "--debug=true", store, "server"), env, socket, log):
        try:
            # 4.: the host onto br0, and mynet
            step = execute(on_host("oam-docker-ipam", "--debug=true", store, "create-network", "--ip", HOST_IP), env)
            assert step.returncode == 0, step.stderr
            assert f"created Docker network mynet: {HOST_IP} is on bridge br0" in step.stdout
            assert seed_host.client.networks.get("mynet").attrs["IPAM"]["Driver"] == "talkingdata"
            assert f"br0 {HOST_IP}/24 brd -" in snapshot(seed_host.host)["addresses"]

            # 5.: a container on mynet, with an address from the ip-range, on the LAN
            container = seed_host.client.containers.run(seed_host.image, ["sleep", "60"], network="mynet", detach=True)
            tracker.track_container(container)
            container.reload()
            ip = container.attrs["NetworkSettings"]["Networks"]["mynet"]["IPAddress"]
            assert in_ip_range(ip), ip
            code, out = container.exec_run(["ping", "-c", "2", "-W", "1", ROUTER])
            assert code == 0, out.decode()
            assert_reaches(seed_host.host, ip)
            assert re.search(r"^DEBUG .*RequestAddress", log.read_text(), re.MULTILINE)  # --debug=true
        finally:
            errors = tracker.cleanup(time.monotonic() + 60)
            undo = execute(on_host("oam-docker-ipam", store, "create-network", "--undo", "--force"), env)
    assert not errors, errors
    assert undo.returncode == 0, undo.stderr
    assert snapshot(seed_host.host) == before, "the steps and their undo left the host changed"


# ------------------------------------------------------- the original's unit
#: The unit the original's package installed (/usr/lib/systemd/system/oam-docker-ipam.service)
#: as its READMEs show it: "systemctl status" listed "/usr/bin/oam-docker-ipam --debug=true
#: --cluster-store=http://... server", the values of the conf file below.
ORIGINAL_UNIT = """\
[Unit]
Description=oam-docker-ipam
After=network.target

[Service]
EnvironmentFile=/etc/oam-docker-ipam/oam-docker-ipam.conf
ExecStart=/usr/bin/oam-docker-ipam --debug=${IPAM_DEBUG} --cluster-store=${IPAM_CLUSTER_STORE} server
Restart=on-failure

[Install]
WantedBy=multi-user.target
"""
#: /etc/oam-docker-ipam/oam-docker-ipam.conf, with the test's etcd.
ORIGINAL_CONF = """\
# [ipam]
IPAM_DEBUG=true
IPAM_CLUSTER_STORE={store}
"""


def systemd_environment(conf: str) -> dict[str, str]:
    """What EnvironmentFile= sets: VAR=value lines; "#" and ";" lines are comments."""
    lines = (line.strip() for line in conf.splitlines())
    return dict(line.split("=", 1) for line in lines if line and line[0] not in "#;")


def exec_start(unit: str, env: dict[str, str], program: str) -> list[str]:
    """ExecStart= as systemd runs it: ${VAR} replaced by its value, one word; the program
    ``program`` (the same name) in place of /usr/bin/oam-docker-ipam."""
    line = re.search(r"^ExecStart=(.*)$", unit, re.MULTILINE)
    assert line is not None
    argv = [re.sub(r"\$\{(\w+)\}", lambda m: env.get(m[1], ""), word) for word in shlex.split(line[1])]
    assert Path(argv[0]).name == Path(program).name
    return [program, *argv[1:]]


@pytest.mark.parametrize(
    "unit",
    [ORIGINAL_UNIT, ORIGINAL_UNIT.replace(" --debug=${IPAM_DEBUG} --cluster-store=${IPAM_CLUSTER_STORE}", "")],
    ids=["settings-on-the-command-line", "settings-from-the-environment"],
)
def test_the_originals_unit_and_conf_start_the_server(
    unit: str, etcd_store: EtcdStore, programs: Path, socket_dir: Path, tmp_path: Path
) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: a mount namespace for the plugin folder")
    ipam = Ipam(etcd_store)
    ipam.declare_host_range(*HOST_RANGE, ROUTER)
    ipam.declare_ip_range(*IP_RANGE)
    settings = systemd_environment(ORIGINAL_CONF.format(store=etcd_store.endpoints[0]))
    env = {**environment(programs, SHRIKE_STORE_PREFIX=etcd_store.prefix), **settings}  # the session's etcd is shared
    argv = exec_start(unit, env, str(programs / "oam-docker-ipam"))
    log = tmp_path / "server.log"
    with serving(with_plugin_dir(socket_dir, argv), env, socket_dir / "talkingdata.sock", log):
        with PluginClient(socket_dir / "talkingdata.sock") as client:
            pool = {"AddressSpace": "", "Pool": "198.51.100.0/24", "SubPool": "", "Options": {}, "V6": False}
            status, reply = client.call("IpamDriver.RequestPool", pool)
            assert status == 200, reply
            status, given = client.call("IpamDriver.RequestAddress", {"PoolID": reply["PoolID"], "Address": ""})
            assert status == 200, given
            ip = given["Address"].split("/")[0]
            assert in_ip_range(ip), given  # from the etcd IPAM_CLUSTER_STORE names
            client.call("IpamDriver.ReleaseAddress", {"PoolID": reply["PoolID"], "Address": ip})
            client.call("IpamDriver.ReleasePool", {"PoolID": reply["PoolID"]})
        assert re.search(r"^DEBUG .*RequestAddress", log.read_text(), re.MULTILINE)  # IPAM_DEBUG=true
