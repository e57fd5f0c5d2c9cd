"""The plugin's HTTP server: the standard library's ``http.server`` on a unix socket.

One thread per connection (dockerd keeps its connections alive and calls concurrently),
HTTP/1.1 keep-alive with exact Content-Length, bodies capped at
:data:`~shrike_cli.plugin.protocol.MAX_BODY`. No client pins a thread for long: a
kept-alive connection with no request for :data:`IDLE_TIMEOUT` is closed, a request
whose headers and body have not all arrived :data:`REQUEST_TIMEOUT` after its first
byte is cut off (a client trickling a byte a second), and at most
:data:`MAX_CONNECTIONS` connections are served at once: one more waits up to
:data:`CONNECTION_WAIT` for a free place, then is answered 503 and closed. The answer to
every request is bounded by the store's timeouts and the Ipam's ``max_wait``; dockerd
itself would wait forever.

The socket ``PLUGIN_DIR/NAME.sock`` is bound under a restrictive umask, then opened to
the ``docker`` group if there is one (0660), so it is never wider than intended. A
socket left by a crash (nobody answers on it) is replaced; a live one is an error. On
SIGTERM or SIGINT the socket is removed first (dockerd stops finding us), requests in
progress finish and get their answers, and the server exits.
"""

from __future__ import annotations

import contextlib
import fcntl
import grp
import io
import json
import logging
import os
import re
import signal
import socket
import socketserver
import stat
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from types import FrameType
from typing import Any

from ..errors import Conflict, InvalidInput, ShrikeError
from .protocol import MAX_BODY, Driver

log = logging.getLogger("shrike.plugin")

CONTENT_TYPE = "application/vnd.docker.plugins.v1.2+json"
#: Where dockerd looks for legacy plugin sockets.
PLUGIN_DIR = Path("/run/docker/plugins")
#: A keep-alive connection with no request for this long is closed (dockerd reconnects).
IDLE_TIMEOUT = 30.0
#: Seconds from a request's first byte until its headers and body must all have come.
#: dockerd sends a request (well under a kilobyte) in one write: only a client that
#: trickles its bytes gets near this.
REQUEST_TIMEOUT = 5.0
#: Connections served at once. dockerd keeps a few alive per plugin and opens more only
#: for concurrent calls; beyond this bound, threads and file descriptors would grow
#: with every client that connects and stays.
MAX_CONNECTIONS = 64
#: Seconds a connection beyond :data:`MAX_CONNECTIONS` waits for a place to free up
#: before it is refused. New connections wait in the listening queue meanwhile.
CONNECTION_WAIT = 2.0
#: An oversized body up to this size is read and thrown away before it is refused.
DRAIN_LIMIT = 1024 * 1024
#: How long a stop waits for requests in progress; more than a request can take.
STOP_GRACE = 15.0
SOCKET_MODE = 0o660
DOCKER_GROUP = "docker"


@dataclass(frozen=True)
class Limits:
    """How long, and how many, clients are served (tests shorten them)."""

    idle_timeout: float = IDLE_TIMEOUT
    request_timeout: float = REQUEST_TIMEOUT
    max_connections: int = MAX_CONNECTIONS
    connection_wait: float = CONNECTION_WAIT


def socket_path(plugin_dir: Path | str, name: str) -> Path:
    """Where dockerd looks for the legacy plugin ``name``: ``PLUGIN_DIR/NAME.sock``."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise InvalidInput(f"'{name}' is not a usable plugin name (letters, digits, '.', '_' and '-')")
    return Path(plugin_dir) / f"{name}.sock"


class _Stop(Exception):
    """Raised by the SIGTERM/SIGINT handler in the main thread."""


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop(signal.Signals(signum).name)


class PluginHandler(BaseHTTPRequestHandler):
    """One connection: POST requests answered by the server's :class:`Driver`."""

    protocol_version = "HTTP/1.1"
    # Also for a request line too broken to name a version: the stock HTTP/0.9 would
    # answer it with a bare body and no status line.
    default_request_version = "HTTP/1.1"
    # Buffered: headers and body leave in one write.
    wbufsize = 64 * 1024
    server: _UnixHTTPServer

    def setup(self) -> None:
        limits = self.server.limits
        self.timeout = limits.idle_timeout
        super().setup()
        # Reads go through a reader that knows when the request began (see handle_one_request).
        self.reader = _DeadlineReader(self.connection, limits)
        self.rfile = io.BufferedReader(self.reader)
        self.server.track(self.connection, open_=True)

    def handle_one_request(self) -> None:
        # Waiting for the request's first byte is bounded by the idle timeout; from that
        # byte on, the whole request by the request timeout.
        self.reader.next_request()
        super().handle_one_request()

    def finish(self) -> None:
        self.server.track(self.connection, open_=False)
        super().finish()

    def address_string(self) -> str:
        # client_address is '' on a unix socket; the stock method would raise while logging.
        return "unix"

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        started = time.monotonic()
        with self.server.busy():
            if self.server.stopping:
                # Neither answered nor acted on: dockerd sends it again, to the next server.
                self.close_connection = True
                return
            body = self._read_body()
            if body is None:
                return
            status, reply = self.server.driver.handle(self.path, body)
            self._send_json(status, reply)
        self._log(status, reply, time.monotonic() - started)

    def _read_body(self) -> bytes | None:
        """The request body, or None when the request was answered with an error."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.send_error(411, "send the body with a Content-Length")
            return None
        try:
            length = int(self.headers.get("Content-Length") or 0)
            if length < 0:
                raise ValueError(length)
        except ValueError:
            self.send_error(400, "invalid Content-Length")
            return None
        if length > MAX_BODY:
            # A body of reasonable size is read first, so that its sender reads the answer
            # rather than a broken pipe; then hang up either way.
            if length <= DRAIN_LIMIT:
                self._discard(length)
            self.send_error(413, f"request body over {MAX_BODY} bytes")
            return None
        body = self.rfile.read(length)
        if len(body) < length:
            self.close_connection = True  # the client hung up half way
            return None
        return body

    def _discard(self, length: int) -> None:
        while length > 0 and (chunk := self.rfile.read(min(length, 65536))):
            length -= len(chunk)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Protocol-level failures (bad request line, unsupported method, oversized body):
        JSON like every other answer, and the connection is closed."""
        reply = {"Err": message or self.responses.get(code, ("error",))[0]}
        self._send_json(code, reply, close=True)
        self._log(code, reply, 0.0)

    def _send_json(self, status: int, reply: dict[str, Any], *, close: bool = False) -> None:
        data = json.dumps(reply).encode()
        # The read deadline may have left the socket almost no time for the write.
        self.connection.settimeout(self.server.limits.idle_timeout)
        self.send_response(status)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(data)))
        if close or self.server.stopping:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)
        # Sent before the request counts as done: a stop closes connections right after.
        self.wfile.flush()

    def _log(self, status: int, reply: dict[str, Any], seconds: float) -> None:
        if status == 200 and not log.isEnabledFor(logging.DEBUG):
            return
        # A request line that did not parse leaves no command or path.
        path = getattr(self, "path", "-")[:200]
        line = f"{self.command or '-'} {path} {status} {seconds * 1000:.1f}ms"
        # The same, for --log-format json.
        fields: dict[str, Any] = {"method": self.command, "path": path, "status": status}
        fields["duration_ms"] = round(seconds * 1000, 3)
        if status != 200:
            log.warning("%s: %s", line, reply.get("Err"), extra={"fields": {**fields, "error": reply.get("Err")}})
        else:
            result = reply.get("Address") or reply.get("PoolID")
            if result:
                fields["address" if "Address" in reply else "pool"] = result
            log.debug("%s%s", line, f" {result}" if result else "", extra={"fields": fields})

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Requests are logged by :meth:`_log`, with their outcome."""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib signature)
        # What http.server still reports itself: idle connections timing out.
        log.debug("connection: " + format, *args)


class _DeadlineReader(io.RawIOBase):
    """The connection's bytes for :class:`io.BufferedReader`, each read bounded: by the
    idle timeout until a request's first byte, then by what is left of the request
    timeout (and never more than the idle timeout for one read)."""

    def __init__(self, connection: socket.socket, limits: Limits) -> None:
        super().__init__()
        self.connection = connection
        self.limits = limits
        self._deadline: float | None = None

    def next_request(self) -> None:
        self._deadline = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        wait = self.limits.idle_timeout
        if self._deadline is not None:
            wait = min(wait, self._deadline - time.monotonic())
            if wait <= 0:
                self._too_slow()
        self.connection.settimeout(wait)
        try:
            count = self.connection.recv_into(buffer)
        except TimeoutError:
            if self._deadline is not None and self._deadline <= time.monotonic():
                self._too_slow()
            raise  # idle: quietly closed, dockerd reconnects
        if self._deadline is None:
            self._deadline = time.monotonic() + self.limits.request_timeout
        return count

    def _too_slow(self) -> None:
        log.warning("connection: a request still incomplete %g s after it began: closed", self.limits.request_timeout)
        raise TimeoutError("request incomplete at its deadline")


class _UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """The listening socket and connection threads, plus what a clean stop needs."""

    daemon_threads = True
    # Idle keep-alive threads are ended by stop(), not joined.
    block_on_close = False
    # socketserver's default backlog of 5 makes a burst of connections fail with EAGAIN
    # on a unix socket (no SYN retry as with TCP).
    request_queue_size = socket.SOMAXCONN

    def __init__(self, path: Path, driver: Driver, limits: Limits) -> None:
        super().__init__(str(path), PluginHandler, bind_and_activate=False)
        self.driver = driver
        self.limits = limits
        self._places = threading.BoundedSemaphore(limits.max_connections)
        self.stopping = False
        self._connections: set[socket.socket] = set()
        self._busy = 0
        self._idle = threading.Condition()

    def track(self, connection: socket.socket, *, open_: bool) -> None:
        """Remember open connections, for :meth:`close_connections`."""
        with self._idle:
            if open_:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def process_request(self, request: Any, client_address: Any) -> None:
        """A thread for the connection once a place is free (see :data:`MAX_CONNECTIONS`)."""
        # Waiting here holds up accept(): later connections wait in the listening queue.
        if not self._places.acquire(timeout=self.limits.connection_wait):
            self._refuse(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._places.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._places.release()

    def _refuse(self, connection: socket.socket) -> None:
        """Answer 503 without reading the request, and hang up."""
        log.warning(
            "connection refused: %d connections are open, the most served at once, and none closed within %g s",
            self.limits.max_connections,
            self.limits.connection_wait,
        )
        data = json.dumps({"Err": "the plugin serves too many connections: try again"}).encode()
        head = (
            f"HTTP/1.1 503 Service Unavailable\r\nContent-Type: {CONTENT_TYPE}\r\n"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
        )
        with contextlib.suppress(OSError):
            connection.setblocking(False)  # never wait on a client that does not read
            connection.sendall(head.encode() + data)
        self.shutdown_request(connection)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A connection failed outside the driver (the driver answers its own errors)."""
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError):
            log.debug("connection: the client went away (%s)", error)
        else:
            log.exception("connection failed")

    @contextlib.contextmanager
    def busy(self) -> Iterator[None]:
        """Marks a request in progress, for :meth:`wait_idle`."""
        with self._idle:
            self._busy += 1
        try:
            yield
        finally:
            with self._idle:
                self._busy -= 1
                self._idle.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        with self._idle:
            return self._idle.wait_for(lambda: self._busy == 0, timeout)

    def close_connections(self) -> None:
        """End every connection; a handler blocked reading the next request sees EOF."""
        with self._idle:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class PluginServer:
    """Serves a :class:`Driver` on ``path`` until :meth:`stop` (or a signal, with :meth:`run`)."""

    def __init__(
        self,
        driver: Driver,
        path: Path | str,
        *,
        idle_timeout: float = IDLE_TIMEOUT,
        request_timeout: float = REQUEST_TIMEOUT,
        max_connections: int = MAX_CONNECTIONS,
        connection_wait: float = CONNECTION_WAIT,
    ) -> None:
        self.driver = driver
        self.path = Path(path)
        limits = Limits(idle_timeout, request_timeout, max_connections, connection_wait)
        self._server = _UnixHTTPServer(self.path, driver, limits)
        self._thread: threading.Thread | None = None
        self._identity: tuple[int, int] | None = None

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Create the socket and serve on a background thread."""
        try:
            self._listen()
        except BaseException:
            self._server.server_close()
            raise
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name="shrike-plugin", daemon=True
        )
        self._thread.start()
        log.info(
            "IPAM plugin listening on %s (store: %s, host: %s)",
            self.path,
            self.driver.ipam.store.location,
            self.driver.ipam.host,
        )

    def _listen(self) -> None:
        try:
            self.path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            with _locked(self.path.parent):
                # Under the lock, so that two servers starting together cannot both find
                # the path free (or stale), and the winner listens when the other looks.
                _clear_stale(self.path)
                previous = os.umask(0o177)
                try:
                    self._server.server_bind()
                finally:
                    os.umask(previous)
                self._server.server_activate()
        except OSError as err:
            raise ShrikeError(f"cannot listen on {self.path}: {err.strerror or err}") from None
        st = os.lstat(self.path)
        self._identity = (st.st_dev, st.st_ino)
        _open_to_docker_group(self.path)

    def stop(self, grace: float = STOP_GRACE) -> None:
        """Stop: remove the socket, let requests in progress finish (up to ``grace``
        seconds), close every connection. Idempotent."""
        if self._thread is None:
            return
        self._server.stopping = True
        self._remove_socket()
        self._server.shutdown()
        # Connections still queued on the listening socket are reset, not left hanging:
        # dockerd would wait on them forever.
        self._server.server_close()
        if not self._server.wait_idle(grace):
            log.warning("stopping with requests still in progress after %g s", grace)
        self._server.close_connections()
        self._thread.join()
        self._thread = None
        log.info("IPAM plugin on %s stopped", self.path)

    def run(self) -> None:
        """Serve until SIGTERM or SIGINT (call from the main thread), then stop cleanly."""
        handlers = {sig: signal.signal(sig, _raise_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.start()
            while True:
                time.sleep(3600)
        except _Stop as received:
            log.info("%s received", received)
        finally:
            # A second signal must not cut the stop short: it is bounded by STOP_GRACE.
            for sig in handlers:
                signal.signal(sig, signal.SIG_IGN)
            try:
                self.stop()
            finally:
                for sig, handler in handlers.items():
                    signal.signal(sig, handler)

    def __enter__(self) -> PluginServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _remove_socket(self) -> None:
        # Only our own: a server started after us may have replaced it.
        with contextlib.suppress(FileNotFoundError):
            st = os.lstat(self.path)
            if (st.st_dev, st.st_ino) == self._identity:
                self.path.unlink()


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """An exclusive flock on ``directory`` (no lock file left in the plugin folder)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _clear_stale(path: Path) -> None:
    """Remove a socket nobody listens on; refuse a live one or a file that is no socket."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ShrikeError(f"{path} exists and is not a socket: remove it or choose another --plugin-name")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(2.0)
        try:
            probe.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            log.warning("replacing the stale socket %s (left by a server that did not stop cleanly)", path)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            return
        except OSError:
            pass  # a listener too busy to accept is alive
    raise Conflict(f"another shrike server is listening on {path}: stop it, or choose another --plugin-name")


def _open_to_docker_group(path: Path) -> None:
    """root:docker 0660 when a docker group exists; otherwise the socket stays 0600."""
    try:
        gid = grp.getgrnam(DOCKER_GROUP).gr_gid
    except KeyError:
        return
    try:
        os.chown(path, -1, gid)
    except PermissionError:
        log.warning("cannot give %s to group %s; only its owner can connect", path, DOCKER_GROUP)
        return
    os.chmod(path, SOCKET_MODE)
