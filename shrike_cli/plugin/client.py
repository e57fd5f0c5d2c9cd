"""A minimal client of the plugin socket that calls it the way dockerd does.

POST with no Content-Type, an ``Accept`` header and an empty ``Host``, the handshake calls
with empty bodies, one kept-alive connection. Used by the tests, the benchmark and
diagnostics::

    with PluginClient("/run/docker/plugins/shrike.sock") as client:
        status, reply = client.call("IpamDriver.RequestPool", {"Pool": "198.51.100.0/24"})
"""

from __future__ import annotations

import http.client
import json
import socket
from pathlib import Path
from typing import Any

from ..errors import ShrikeError

ACCEPT = "application/vnd.docker.plugins.v1.2+json"


class PluginError(ShrikeError):
    """The plugin answered a call with an error (non-200 and ``Err``)."""

    def __init__(self, endpoint: str, status: int, err: str) -> None:
        super().__init__(f"{endpoint}: {err} (HTTP {status})")
        self.status = status
        self.err = err


class UnixHTTPConnection(http.client.HTTPConnection):
    """:class:`http.client.HTTPConnection` to a unix socket instead of a TCP port."""

    def __init__(self, path: Path | str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = str(path)

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self.socket_path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


class PluginClient:
    """One kept-alive connection to a plugin socket; not thread-safe (one per thread).

    A failed call closes the connection and is not retried: the plugin may have acted
    on it, and only the caller knows whether trying again is safe.
    """

    def __init__(self, path: Path | str, *, timeout: float = 30.0) -> None:
        self.connection = UnixHTTPConnection(path, timeout)

    def send(
        self, path: str, body: bytes, *, method: str = "POST", headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        """One raw request; returns the status and the body as bytes."""
        try:
            self.connection.request(method, path, body=body, headers={"Accept": ACCEPT, "Host": "", **(headers or {})})
            response = self.connection.getresponse()
            data = response.read()
        except BaseException:
            self.connection.close()
            raise
        if response.will_close:
            self.connection.close()
        return response.status, data

    def call(self, endpoint: str, payload: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
        """Call ``endpoint`` (``IpamDriver.RequestAddress``); no payload sends an empty
        body, like dockerd's handshake. Returns the status and the decoded reply."""
        body = b"" if payload is None else json.dumps(payload).encode() + b"\n"
        status, data = self.send("/" + endpoint, body)
        return status, json.loads(data)

    def ok(self, endpoint: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        """:meth:`call`, raising :class:`PluginError` unless the plugin answered 200."""
        status, reply = self.call(endpoint, payload)
        if status != 200:
            raise PluginError(endpoint, status, str(reply.get("Err", reply)))
        return reply

    def request_pool(self, subnet: str, sub_pool: str = "") -> str:
        """RequestPool as ``docker network create --subnet`` sends it; returns the PoolID."""
        payload = {"AddressSpace": "shrike-local", "Pool": subnet, "SubPool": sub_pool, "Options": {}, "V6": False}
        return str(self.ok("IpamDriver.RequestPool", payload)["PoolID"])

    def request_address(self, pool_id: str, address: str = "", mac: str | None = None) -> str:
        """A container's RequestAddress (``docker run``, ``--ip`` when ``address``);
        returns ``a.b.c.d/len``."""
        options = {"com.docker.network.endpoint.macaddress": mac} if mac else {}
        return str(
            self.ok("IpamDriver.RequestAddress", {"PoolID": pool_id, "Address": address, "Options": options})["Address"]
        )

    def release_address(self, pool_id: str, address: str) -> None:
        self.ok("IpamDriver.ReleaseAddress", {"PoolID": pool_id, "Address": address})

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> PluginClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
