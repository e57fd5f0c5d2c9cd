"""gRPC and HTTP proxies (issue 10, section 4): etcd on loopback, or a host in NO_PROXY,
is reached directly whatever the proxy variables say; an endpoint reached through a
proxy names it in its errors. The proxy is a small CONNECT proxy on loopback, the
variables are set only in the test's process (monkeypatch) or subprocess."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from shrike_cli.stores import EtcdStore, Put, StoreError
from shrike_cli.stores.proxy import proxy_for
from tests.fixtures.etcd import EtcdServer
from tests.fixtures.plugin import SHRIKE


class ConnectProxy:
    """An HTTP CONNECT proxy on loopback, on threads: it records each CONNECT target and
    either refuses it (403), hangs up without a word, or forwards it to ``forward_to``
    (whatever name was asked for: nothing is resolved, no packet leaves loopback)."""

    def __init__(self, mode: str, forward_to: tuple[str, int] | None = None) -> None:
        self.mode = mode
        self.forward_to = forward_to
        self.targets: list[str] = []
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self._open: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            self._open.append(client)
            threading.Thread(target=self._handle, args=(client,), daemon=True).start()

    def _handle(self, client: socket.socket) -> None:
        with contextlib.suppress(OSError):
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = client.recv(4096)
                if not chunk:
                    return
                head += chunk
            self.targets.append(head.split(b"\r\n")[0].decode())
            if self.mode == "refuse":
                client.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            if self.mode != "forward":
                client.close()
                return
            assert self.forward_to is not None
            upstream = socket.create_connection(self.forward_to)
            self._open.append(upstream)
            client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            upstream.sendall(head.split(b"\r\n\r\n", 1)[1])
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
            self._pump(upstream, client)

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.listener.close()
        for sock in self._open:
            sock.close()


@pytest.fixture
def make_proxy() -> Iterator[Callable[..., ConnectProxy]]:
    """Makes :class:`ConnectProxy` instances, closed after the test."""
    made: list[ConnectProxy] = []

    def make(mode: str, forward_to: tuple[str, int] | None = None) -> ConnectProxy:
        made.append(ConnectProxy(mode, forward_to))
        return made[-1]

    yield make
    for proxy in made:
        proxy.close()


#: gRPC's proxy variables; NO_PROXY and friends are cleared by the tests.
PROXY_VARIABLES = ("grpc_proxy", "https_proxy", "http_proxy")
NO_PROXY_VARIABLES = ("no_grpc_proxy", "no_proxy", "NO_PROXY")


@pytest.fixture
def clean_proxy_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in (*PROXY_VARIABLES, *NO_PROXY_VARIABLES, "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.mark.parametrize("variable", PROXY_VARIABLES)
def test_loopback_etcd_is_never_proxied(
    variable: str, etcd_server: EtcdServer, make_proxy: Callable[..., ConnectProxy], clean_proxy_env: pytest.MonkeyPatch
) -> None:
    """With a proxy in any of gRPC's variables, etcd on 127.0.0.1 or localhost is reached
    directly (today: through the proxy, which refuses)."""
    proxy = make_proxy("refuse")
    clean_proxy_env.setenv(variable, proxy.url)
    prefix = f"/faults-{uuid.uuid4().hex}/"
    for url in (etcd_server.url, f"http://localhost:{etcd_server.client_port}"):
        with EtcdStore(url, prefix=prefix, timeout=3) as store:
            assert store.txn([], [Put("k", {"url": url})]).succeeded
            assert store.get("k") is not None
    assert proxy.targets == []


def test_a_proxied_endpoint_says_so(
    etcd_server: EtcdServer, make_proxy: Callable[..., ConnectProxy], clean_proxy_env: pytest.MonkeyPatch
) -> None:
    """An endpoint that is not loopback goes through the proxy (here one that forwards to
    etcd); when the proxy refuses or hangs up, the error names the proxy and its variable,
    and blames neither TLS nor etcd."""
    name = f"etcd.invalid:{etcd_server.client_port}"  # never resolved here: the proxy gets the name
    forwarding = make_proxy("forward", ("127.0.0.1", etcd_server.client_port))
    clean_proxy_env.setenv("https_proxy", forwarding.url)
    with EtcdStore(f"http://{name}", prefix=f"/faults-{uuid.uuid4().hex}/", timeout=3) as store:
        assert store.txn([], [Put("k", {})]).succeeded
    assert forwarding.targets and all(target == f"CONNECT {name} HTTP/1.1" for target in forwarding.targets)
    for mode in ("refuse", "hang up"):
        proxy = make_proxy(mode)
        clean_proxy_env.setenv("https_proxy", proxy.url)
        with EtcdStore(f"http://{name}", timeout=3) as store, pytest.raises(StoreError) as failure:
            store.get("k")
        message = str(failure.value)
        assert message.startswith(f"etcd at http://{name} is unreachable: "), message
        assert f"(through the proxy {proxy.url} from https_proxy)" in message, message
        assert "https://" not in message and "TLS" not in message, message
        assert proxy.targets == [f"CONNECT {name} HTTP/1.1"]


#: A name for 127.0.0.1 that is neither "localhost" nor an address, for the NO_PROXY test.
ALIAS = "etcd.shrike-test"


def test_no_proxy_hosts_are_not_proxied(
    etcd_server: EtcdServer, make_proxy: Callable[..., ConnectProxy], tmp_path: Path
) -> None:
    """A host in NO_PROXY (which gRPC ignores: it reads no_proxy) is reached directly.

    The CLI runs in a mount namespace of its own whose /etc/hosts names 127.0.0.1
    ALIAS, with gRPC's native resolver (getaddrinfo: /etc/hosts, no DNS query)."""
    proxy = make_proxy("refuse")
    hosts = tmp_path / "hosts"
    hosts.write_text(f"127.0.0.1 localhost {ALIAS}\n")
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in (*PROXY_VARIABLES, *NO_PROXY_VARIABLES, "CLUSTER_STORE", "IPAM_CLUSTER_STORE")
    }
    env |= {"https_proxy": proxy.url, "NO_PROXY": f"example.org,{ALIAS}", "GRPC_DNS_RESOLVER": "native"}
    store = [
        "--cluster-store",
        f"http://{ALIAS}:{etcd_server.client_port}",
        "--store-prefix",
        f"/faults-{uuid.uuid4().hex}/",
    ]
    command = " ".join(["mount", "--bind", str(hosts), "/etc/hosts", "&&", "exec", *SHRIKE, *store, "leases"])
    run = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", command],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert (run.returncode, run.stderr) == (0, "no address is held\n")  # the note goes to stderr
    assert proxy.targets == []


@pytest.mark.parametrize(
    ("host", "environ", "proxied"),
    [
        # gRPC's variables, in its order; set but empty means no proxy.
        (
            "etcd.lan",
            {"http_proxy": "http://p:1", "https_proxy": "http://p:2"},
            "the proxy http://p:2 from https_proxy",
        ),
        ("etcd.lan", {"grpc_proxy": "http://p:3", "https_proxy": "http://p:2"}, "the proxy http://p:3 from grpc_proxy"),
        ("etcd.lan", {"grpc_proxy": "", "https_proxy": "http://p:2"}, None),
        ("etcd.lan", {"HTTPS_PROXY": "http://p:2"}, None),  # gRPC reads lower case only
        ("etcd.lan", {"https_proxy": "https://p:2"}, None),  # gRPC ignores what it cannot use
        # Never a user's password in a message.
        ("etcd.lan", {"https_proxy": "http://u:secret@p:2"}, "the proxy http://p:2 from https_proxy"),
        # Loopback, in any spelling.
        ("127.0.0.1", {"https_proxy": "http://p:2"}, None),
        ("127.9.9.9", {"https_proxy": "http://p:2"}, None),
        ("::1", {"https_proxy": "http://p:2"}, None),
        ("::ffff:127.0.0.1", {"https_proxy": "http://p:2"}, None),
        ("LocalHost", {"https_proxy": "http://p:2"}, None),
        # Any of the three no-proxy lists: names as suffixes (as gRPC), addresses by range.
        ("etcd.lan", {"https_proxy": "http://p:2", "NO_PROXY": "x.org, .lan"}, None),
        ("etcd.lan", {"https_proxy": "http://p:2", "no_proxy": "etcd.lan"}, None),
        ("etcd.lan", {"https_proxy": "http://p:2", "no_grpc_proxy": "*"}, None),
        ("198.51.100.7", {"https_proxy": "http://p:2", "no_proxy": "198.51.100.0/24"}, None),
        (
            "198.51.101.7",
            {"https_proxy": "http://p:2", "no_proxy": "198.51.100.0/24"},
            "the proxy http://p:2 from https_proxy",
        ),
    ],
)
def test_which_hosts_are_proxied(host: str, environ: dict[str, str], proxied: str | None) -> None:
    proxy = proxy_for(host, environ)
    assert (str(proxy) if proxy else None) == proxied
