"""What a client can hold of the plugin server: ``shrike server`` over its real socket, with
raw clients that trickle their bytes or never send any, next to well-behaved kept-alive
clients (dockerd's way)."""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shrike_cli.plugin.client import PluginClient
from shrike_cli.plugin.server import CONNECTION_WAIT, MAX_CONNECTIONS, REQUEST_TIMEOUT
from tests.fixtures.plugin import ServerProcess

#: Far beyond the server's deadline: a connection still open then is held for good.
PATIENCE = REQUEST_TIMEOUT + 15.0


@pytest.fixture
def server(socket_dir: Path, tmp_path: Path) -> Iterator[ServerProcess]:
    """``shrike server`` with its production limits, on a fresh embedded store."""
    running = ServerProcess(["--state-dir", str(tmp_path / "state")], socket_dir, "limits", tmp_path / "server.log")
    running.start()
    try:
        yield running
    finally:
        running.stop()


def connect(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(str(path))
    return sock


def closed_by_server(sock: socket.socket) -> bool:
    """Whether the server has hung up (what it sent before, if anything, is read away)."""
    while select.select([sock], [], [], 0)[0]:
        try:
            if not sock.recv(65536):
                return True
        except ConnectionError:
            return True
    return False


def trickle(sock: socket.socket, head: bytes, tail: bytes, outcome: dict[str, float | None]) -> None:
    """Send ``head`` at once, then ``tail`` a byte every 0.5 s, until the server hangs up
    (``outcome['cut']`` is then the seconds it took) or PATIENCE runs out."""
    started = time.monotonic()
    outcome["cut"] = None
    sock.sendall(head)
    for byte in tail:
        if time.monotonic() - started > PATIENCE:
            return
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(bytes([byte]))
        if closed_by_server(sock):
            outcome["cut"] = time.monotonic() - started
            return
        time.sleep(0.5)


def test_requests_trickled_a_byte_at_a_time_are_cut_off_and_kept_alive_clients_stay(server: ServerProcess) -> None:
    with PluginClient(server.path, timeout=10) as kept_alive:
        assert kept_alive.call("Plugin.Activate")[0] == 200
        first = kept_alive.connection.sock
        slow = {
            "headers": (b"POST /Plugin.Activate HTTP/1.1\r\n", b"X-Slow: " + b"a" * 99),
            "body": (b"POST /Plugin.Activate HTTP/1.1\r\nContent-Length: 2000\r\n\r\n", b"{" + b" " * 1998 + b"}"),
        }
        outcomes: dict[str, dict[str, float | None]] = {name: {} for name in slow}
        with contextlib.ExitStack() as stack:
            threads = [
                threading.Thread(target=trickle, args=(stack.enter_context(connect(server.path)), *parts, outcome))
                for parts, outcome in zip(slow.values(), outcomes.values(), strict=True)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(PATIENCE + 10)
        for name, outcome in outcomes.items():
            assert outcome["cut"] is not None, f"a request trickling its {name} was still open after {PATIENCE:g} s"
            assert outcome["cut"] >= REQUEST_TIMEOUT - 0.5, outcome
        # Idle for longer than the request deadline: a kept-alive connection waits for
        # its next request as long as before, and is served on the same socket.
        assert kept_alive.call("IpamDriver.GetCapabilities")[0] == 200
        assert kept_alive.connection.sock is first
    assert server.log().count("a request still incomplete") == 2, server.log()


def test_connections_beyond_the_bound_wait_briefly_then_are_refused(server: ServerProcess) -> None:
    with contextlib.ExitStack() as stack:
        # Clients that connect and say nothing: each holds a place until its idle timeout.
        silent = [stack.enter_context(connect(server.path)) for _ in range(MAX_CONNECTIONS)]

        # One more waits for a place; one of the silent clients leaves meanwhile.
        with PluginClient(server.path, timeout=30) as queued:
            threading.Timer(CONNECTION_WAIT / 4, silent.pop().close).start()
            assert queued.call("Plugin.Activate")[0] == 200

            # The server is full again: the next one is answered 503 once the wait is over.
            with PluginClient(server.path, timeout=30) as refused:
                started = time.monotonic()
                status, reply = refused.call("Plugin.Activate")
                waited = time.monotonic() - started
        assert (status, reply) == (503, {"Err": "the plugin serves too many connections: try again"})
        assert waited >= CONNECTION_WAIT - 0.5
        assert f"connection refused: {MAX_CONNECTIONS} connections are open" in server.log()

        # A place is free once a client goes.
        silent.pop().close()
        with PluginClient(server.path, timeout=30) as later:
            assert later.call("Plugin.Activate")[0] == 200
