"""Which plugin names are in use: live plugin sockets found by asking them as dockerd does
(a real server, a stale socket, a socket of another kind of plugin), and the hint each
finding leads to."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from shrike_cli.ipam import Ipam
from shrike_cli.plugin import Driver, PluginServer
from shrike_cli.plugin_names import InUse, live_plugins
from shrike_cli.stores import EmbeddedStore


@pytest.fixture
def network_plugin(socket_dir: Path) -> Iterator[Path]:
    """A socket answering Plugin.Activate as a network driver (not an IPAM driver)."""
    path = socket_dir / "netplugin.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(4)
    body = json.dumps({"Implements": ["NetworkDriver"]}).encode()
    reply = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)

    def answer() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            with connection:
                connection.recv(65536)
                connection.sendall(reply)

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    try:
        yield path
    finally:
        listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        thread.join(5)


def test_live_plugins_are_the_sockets_answering_as_an_ipam_driver(
    socket_dir: Path, tmp_path: Path, network_plugin: Path
) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stale:
        stale.bind(str(socket_dir / "stale.sock"))  # what a server killed with SIGKILL leaves
    (socket_dir / "file.sock").write_text("")
    store = EmbeddedStore(tmp_path / "shrike.db")
    try:
        with PluginServer(Driver(Ipam(store)), socket_dir / "talkingdata.sock"):
            assert live_plugins(socket_dir) == ("talkingdata",)
    finally:
        store.close()
    assert live_plugins(socket_dir) == ()
    assert live_plugins(tmp_path / "nowhere") == ()


HINTS = [
    (
        InUse({"talkingdata": ("mynet",), "gone": ("old",)}, ("talkingdata",)),
        "no network of this dockerd uses the IPAM driver 'shrike'; networks here use 'talkingdata' (mynet), "
        "'gone' (old): give --plugin-name talkingdata (or, if the plugin is 'shrike', check DOCKER_HOST (now X))",
    ),
    (
        InUse({}, ("shrike",)),
        "no network of this dockerd uses the IPAM driver 'shrike', which answers on /run/docker/plugins/shrike.sock: "
        "create one (shrike create-network --ip HOST_IP --plugin-name shrike, or docker network create --ipam-driver "
        "shrike ...), or, if its networks are on another dockerd, check DOCKER_HOST (now X)",
    ),
    (
        InUse({}, ("talkingdata",)),
        "no network of this dockerd uses the IPAM driver 'shrike', and none answers as 'shrike' in "
        "/run/docker/plugins; 'talkingdata' does: give --plugin-name talkingdata, or check DOCKER_HOST (now X)",
    ),
    (
        InUse(),
        "no network of this dockerd uses the IPAM driver 'shrike', no network here uses an IPAM plugin, and no "
        "plugin answers in /run/docker/plugins: check DOCKER_HOST (now X), and that shrike server runs",
    ),
]


@pytest.mark.parametrize(("found", "hint"), HINTS, ids=["other-name", "unused", "other-live", "nothing"])
def test_the_hint_names_the_likely_cause_first(found: InUse, hint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "X")
    assert found.hint("shrike") == hint
