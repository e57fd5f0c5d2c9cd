"""Shell completion: the committed scripts are what completions/generate.py writes, and
completing with them in real bash, zsh and fish offers commands, choices, and values
from the store (embedded or etcd) and from Docker.

The programs are run as pip installs them: a ``shrike`` console script (and
``oam-docker-ipam``, the same) calling ``shrike_cli.cli:main`` from this checkout, found
on PATH by the scripts. zsh and interactive bash run on a pseudo-terminal, since their
completion only runs in the line editor; fish answers ``complete -C`` without one.
"""

from __future__ import annotations

import contextlib
import os
import pty
import re
import select
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from shrike_cli.ipam import Ipam
from shrike_cli.stores import EtcdStore, open_store
from tests.fixtures.dockerd import DockerDaemon, Tracker
from tests.fixtures.netns import free_name
from tests.fixtures.plugin import console_scripts

REPO = Path(__file__).resolve().parent.parent
COMPLETIONS = REPO / "completions"
COMMAND_NAMES = ["host-range", "ip-range", "server", "create-network", "leases", "release", "reserve"]

#: What the populated store holds (see the ``state`` fixture).
SUBNET = "198.51.100.0/24"
ROUTER = "198.51.100.254"
HOST_IP = "198.51.100.39"
RESERVATIONS = {"web1": "198.51.100.100", "web2": "198.51.100.101"}
RELEASED = "198.51.100.102"  # held once, released: not offered

#: A completion answers while the user waits at the prompt; an unreachable store or
#: dockerd must not make it wait for the store's 5 s timeout (this allows a loaded machine).
QUICK = 4.5

# Escape sequences and control characters a line editor draws with.
_TERMINAL_NOISE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[()][0-9A-B]|\x1b[=>]|[\r\x07\x08]")


def populate(ipam: Ipam) -> None:
    """A LAN, its container range, two reservations, a released address and a host's address."""
    ipam.declare_host_range("198.51.100.1/24", "198.51.100.99/24", ROUTER)
    ipam.declare_ip_range("198.51.100.100/24", "198.51.100.199/24")
    for name, ip in RESERVATIONS.items():
        ipam.reserve(name, ip=ip)
    ipam.reserve("gone", ip=RELEASED)
    ipam.release_name("gone")
    ipam.claim_host(HOST_IP)


@pytest.fixture(scope="module")
def programs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bin folder holding ``shrike`` and ``oam-docker-ipam`` as pip writes them."""
    return console_scripts(tmp_path_factory.mktemp("bin"))


@pytest.fixture
def env(programs: Path, tmp_path: Path) -> dict[str, str]:
    """The programs first on PATH; no store or dockerd from the caller's environment; a
    state dir with no store in it; HOME (fish's history) in the test's folder."""
    skip = {"CLUSTER_STORE", "DEBUG", "DOCKER_HOST", "DOCKER_CONTEXT", "PYTHONPATH"}
    base = {k: v for k, v in os.environ.items() if k not in skip and not k.startswith("SHRIKE_")}
    home = tmp_path / "home"
    home.mkdir()
    return {
        **base,
        "PATH": f"{programs}{os.pathsep}{base.get('PATH', '/usr/bin:/bin')}",
        "PYTHONPATH": str(REPO),
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_DATA_HOME": str(home / ".local/share"),
        "SHRIKE_STATE_DIR": str(tmp_path / "empty-state"),
        "TERM": "xterm",
    }


@pytest.fixture
def state(tmp_path: Path) -> Path:
    """A state dir whose embedded store is :func:`populate`\\ d."""
    directory = tmp_path / "state"
    store = open_store(None, directory)
    try:
        populate(Ipam(store, host="host-a"))
    finally:
        store.close()
    return directory


def bash_complete(line: str, env: dict[str, str]) -> list[str]:
    """What bash offers at the end of ``line`` with the committed script: the script is
    sourced and its completion function called the way bash calls it at a TAB."""
    program = line.split()[0]
    driver = r"""
        source "$SCRIPT"
        spec=$(complete -p "$PROGRAM") && func=${spec##*-F } && func=${func%% *}
        COMP_LINE=$LINE COMP_POINT=${#LINE}
        read -ra COMP_WORDS <<< "$LINE"
        [[ $LINE == *' ' ]] && COMP_WORDS+=('')
        COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
        "$func" "$PROGRAM" "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
        printf '%s\n' "${COMPREPLY[@]}"
    """
    started = time.monotonic()
    result = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", driver],
        env={**env, "SCRIPT": str(COMPLETIONS / f"{program}.bash"), "PROGRAM": program, "LINE": line},
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", f"completion wrote to the terminal: {result.stderr!r}"
    assert time.monotonic() - started < QUICK, f"completing {line!r} took {time.monotonic() - started:.1f} s"
    return [word for word in result.stdout.splitlines() if word]


class Terminal:
    """An interactive shell on a pseudo-terminal: type into it, wait for what it draws."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self._fd, child = pty.openpty()
        self.process = subprocess.Popen(argv, stdin=child, stdout=child, stderr=child, env=env, start_new_session=True)
        os.close(child)
        self._screen = ""

    def type(self, text: str) -> None:
        os.write(self._fd, text.encode())

    def expect(self, pattern: str, timeout: float = 10.0) -> str:
        """Wait until the output since the last match matches ``pattern``; return it."""
        deadline = time.monotonic() + timeout
        while not (found := re.search(pattern, _TERMINAL_NOISE.sub("", self._screen))):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{pattern!r} never shown; the terminal shows:\n{self._clean()}")
            if select.select([self._fd], [], [], min(remaining, 0.1))[0]:
                try:
                    self._screen += os.read(self._fd, 65536).decode(errors="replace")
                except OSError:  # the shell is gone
                    raise AssertionError(f"the shell exited; it showed:\n{self._clean()}") from None
        shown, self._screen = self._clean(), ""
        return shown[: found.end()]

    def complete(self, line: str, pattern: str) -> str:
        """Type ``line`` (ending in TAB), wait for ``pattern``, then clear the line (^U)."""
        self.type(line)
        shown = self.expect(pattern)
        self.type("\x15")
        return shown

    def _clean(self) -> str:
        return _TERMINAL_NOISE.sub("", self._screen)

    def close(self) -> None:
        # The shell leads a session of its own: its group holds it and any completion
        # it still runs.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)
        os.close(self._fd)


StartTerminal = Callable[[list[str], dict[str, str]], Terminal]


@pytest.fixture
def terminal() -> Iterator[StartTerminal]:
    """Start :class:`Terminal`\\ s; each is killed after the test."""
    started: list[Terminal] = []

    def start(argv: list[str], env: dict[str, str]) -> Terminal:
        started.append(Terminal(argv, env))
        return started[-1]

    yield start
    for term in started:
        term.close()


def needs(shell: str) -> None:
    if shutil.which(shell) is None:
        pytest.skip(f"{shell} is not installed (apt-get install {shell})")


# ------------------------------------------------------------------ the scripts
def test_committed_scripts_are_what_generate_writes() -> None:
    result = subprocess.run(
        [sys.executable, str(COMPLETIONS / "generate.py"), "--check"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"{result.stderr}{result.stdout}"
    for program in ("shrike", "oam-docker-ipam"):
        for shell in ("bash", "zsh", "fish"):
            assert (COMPLETIONS / f"{program}.{shell}").is_file()


# ------------------------------------------------------------------------- bash
@pytest.mark.parametrize(
    "line, offered",
    [
        ("shrike cre", ["create-network"]),
        ("shrike ", COMMAND_NAMES),  # in the order of --help
        ("shrike leases --output ", ["table", "json"]),
        ("shrike leases --output=j", ["json"]),
        ("shrike create-network --mode m", ["macvlan"]),
        ("oam-docker-ipam lea", ["leases"]),
        ("oam-docker-ipam release-ip --i", ["--ip"]),
    ],
)
def test_bash_completes_commands_options_and_choices(env: dict[str, str], line: str, offered: list[str]) -> None:
    got = bash_complete(line, env)
    if line == "shrike ":  # more commands come after these; the old names are hidden
        assert not {"release-ip", "release-host"} & set(got)
        got = [name for name in got if name in offered]
    assert got == offered


@pytest.mark.parametrize(
    "words, offered",
    [
        ("release --ip ", list(RESERVATIONS.values())),
        ("release --ip 198.51.100.10", list(RESERVATIONS.values())),
        ("release-ip --ip ", list(RESERVATIONS.values())),
        ("release --host ", [HOST_IP]),
        ("release-host --ip ", [HOST_IP]),
        ("release --name ", list(RESERVATIONS)),
        ("release --name web2", ["web2"]),
        ("reserve db1 --subnet ", [SUBNET]),
    ],
)
def test_bash_completes_values_from_the_embedded_store(
    env: dict[str, str], state: Path, words: str, offered: list[str]
) -> None:
    # The store named by the global option typed on the line, with = (split by bash) ...
    assert bash_complete(f"shrike --state-dir={state} {words}", env) == offered
    # ... or by its environment variable.
    assert bash_complete(f"shrike {words}", {**env, "SHRIKE_STATE_DIR": str(state)}) == offered


def test_values_from_etcd_named_on_the_line(env: dict[str, str], etcd_store: EtcdStore) -> None:
    populate(Ipam(etcd_store, host="host-b"))
    store = f"--cluster-store=http://{etcd_store.endpoints[0].split('://', 1)[1]} --store-prefix={etcd_store.prefix}"
    assert bash_complete(f"shrike {store} release --name ", env) == list(RESERVATIONS)
    assert bash_complete(f"shrike {store} release --host ", env) == [HOST_IP]
    via_env = {**env, "CLUSTER_STORE": etcd_store.endpoints[0], "SHRIKE_STORE_PREFIX": etcd_store.prefix}
    assert bash_complete("shrike reserve db1 --subnet ", via_env) == [SUBNET]


@pytest.mark.parametrize(
    "global_options, environment",
    [
        pytest.param("", {}, id="no-store-yet"),
        pytest.param("--cluster-store http://127.0.0.1:9 ", {}, id="etcd-unreachable"),
        pytest.param("", {"DOCKER_HOST": "unix:///nonexistent/docker.sock"}, id="docker-unreachable"),
        pytest.param("", {"DOCKER_HOST": "tcp://127.0.0.1:9"}, id="docker-refused"),
    ],
)
def test_no_store_or_no_docker_means_no_values_quietly(
    env: dict[str, str], global_options: str, environment: dict[str, str]
) -> None:
    env = {**env, **environment}
    for words in ("release --ip ", "release --name ", "reserve x --subnet ", "create-network --name "):
        assert bash_complete(f"shrike {global_options}{words}", env) == []  # also: stderr empty, quick
    assert not Path(env["SHRIKE_STATE_DIR"]).exists(), "a completion created the embedded store"


def test_uplink_offers_this_hosts_interfaces(env: dict[str, str]) -> None:
    links = sorted(name for name in os.listdir("/sys/class/net") if name != "lo")
    assert bash_complete("shrike create-network --uplink ", env) == links


@pytest.mark.docker
def test_network_names_come_from_docker(env: dict[str, str], dockerd: DockerDaemon, docker_cleanup: Tracker) -> None:
    from shrike_cli.hostnet.docker_net import LABEL_PREFIX

    made, other = (f"shk-{kind}-{uuid.uuid4().hex[:8]}" for kind in ("made", "other"))
    bridge = free_name("shkb")
    labels = {"mode": "bridge", "bridge": bridge, "uplink": "up0", "host-ip": HOST_IP}
    for name, subnet, label in ((made, "203.0.113.240/29", labels), (other, "203.0.113.248/29", {})):
        network = dockerd.client.networks.create(
            name,
            driver="bridge",
            options={"com.docker.network.bridge.name": label.get("bridge") or free_name("shkb")},
            ipam={"Config": [{"Subnet": subnet}]},
            labels={LABEL_PREFIX + k: v for k, v in label.items()},
        )
        docker_cleanup.track_network(network)
    env = {**env, "DOCKER_HOST": dockerd.url}
    # Only the network create-network made: the one to re-run or --undo.
    assert bash_complete("shrike create-network --undo --name ", env) == [made]
    assert fish_complete("shrike create-network --name shk-", env) == [
        f"{made}\tbridge {bridge} on up0, host {HOST_IP}"
    ]


def test_bash_at_the_keyboard(env: dict[str, str], state: Path, terminal: StartTerminal) -> None:
    """The script sourced in an interactive bash, words split by bash itself (at = and :)."""
    bash = terminal(["bash", "--norc", "--noprofile", "-i"], {**env, "PS1": "$ "})
    script = COMPLETIONS / "shrike.bash"
    bash.type(f"source {script}; bind 'set show-all-if-ambiguous on'; bind 'set bell-style none'; echo REA''DY\n")
    bash.expect(r"\nREADY")
    bash.complete("shrike cre\t", r"shrike create-network $")
    bash.complete("shrike leases --output=j\t", r"--output=json $")
    shown = bash.complete(f"shrike --state-dir={state} release --name \t", r"web1 +web2")
    assert "web1" in shown


def test_bash_completes_ipv6_addresses_at_the_keyboard(
    env: dict[str, str], terminal: StartTerminal, tmp_path: Path
) -> None:
    """bash splits words at ':' too, and replaces only what follows the last one: an IPv6
    address still completes whole."""
    directory = tmp_path / "state6"
    store = open_store(None, directory)
    try:
        ipam = Ipam(store, host="host-a")
        ipam.declare_host_range("2001:db8:1::1/64", "2001:db8:1::ff/64", "fe80::1")
        ipam.declare_ip_range("2001:db8:1::100/64", "2001:db8:1::1ff/64")
        ipam.reserve("web6", ip="2001:db8:1::150")
    finally:
        store.close()
    bash = terminal(["bash", "--norc", "--noprofile", "-i"], {**env, "PS1": "$ "})
    bash.type(f"source {COMPLETIONS / 'shrike.bash'}; bind 'set bell-style none'; echo REA''DY\n")
    bash.expect(r"\nREADY")
    bash.complete(f"shrike --state-dir={directory} release --ip 2001:db8:1::1\t", r"--ip 2001:db8:1::150 $")
    bash.complete(f"shrike --state-dir={directory} release --ip=2001:db\t", r"--ip=2001:db8:1::150 $")


# -------------------------------------------------------------------------- zsh
@pytest.mark.parametrize("install", ["fpath", "source"])
def test_zsh_at_the_keyboard(
    env: dict[str, str], state: Path, terminal: StartTerminal, tmp_path: Path, install: str
) -> None:
    """Installed as _shrike in $fpath (autoloaded by compinit) or sourced after compinit;
    the first TAB completes, and the ones after it."""
    needs("zsh")
    functions = tmp_path / "zfunc"
    functions.mkdir()
    if install == "fpath":
        shutil.copy(COMPLETIONS / "shrike.zsh", functions / "_shrike")
        setup = f"fpath=({functions} $fpath); autoload -Uz compinit; compinit -u -D"
    else:
        setup = f"autoload -Uz compinit; compinit -u -D; source {COMPLETIONS / 'shrike.zsh'}"
    zsh = terminal(["zsh", "-f", "-i"], {**env, "PS1": "%% ", "SHRIKE_STATE_DIR": str(state)})
    zsh.type(f"{setup}; unsetopt beep list_ambiguous; print REA''DY\n")
    zsh.expect(r"\nREADY")
    for _ in range(3):
        zsh.complete("shrike cre\t", r"shrike create-network ")
    shown = zsh.complete("shrike release --name \t", r"web2 +-- +198\.51\.100\.101 reserved")
    assert re.search(r"web1 +-- +198\.51\.100\.100 reserved", shown), shown


# ------------------------------------------------------------------------- fish
def fish_complete(line: str, env: dict[str, str]) -> list[str]:
    """``complete -C LINE`` in fish with the committed script: candidates with help after a tab."""
    needs("fish")
    program = line.split()[0]
    result = subprocess.run(
        ["fish", "--no-config", "-c", "source $argv[1]; complete -C $argv[2]", COMPLETIONS / f"{program}.fish", line],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr
    return result.stdout.splitlines()


def test_fish_completes_with_descriptions(env: dict[str, str], state: Path) -> None:
    [create] = fish_complete("shrike cre", env)
    assert create.startswith("create-network\tPut this host's containers"), create  # its help's first words
    assert fish_complete("oam-docker-ipam leases --output ", env) == ["json", "table"]  # fish sorts
    assert fish_complete(f"shrike --state-dir={state} release --ip ", env) == [
        f"{ip}\treserved {name} on host-a" for name, ip in RESERVATIONS.items()
    ]
    assert fish_complete(f"shrike --state-dir {state} release --host ", env) == [f"{HOST_IP}\theld on host-a"]
    assert fish_complete(f"shrike --state-dir {state} reserve x --subnet ", env) == [f"{SUBNET}\tgateway {ROUTER}"]
