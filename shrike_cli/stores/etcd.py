"""The etcd store: shrike's state under a key prefix in an etcd v3 cluster.

It speaks to etcd over gRPC with pyetcd's generated protobuf messages and stubs, and
manages its own channels: one per endpoint, shared by the calls of every thread.

Under faults it tells the truth. A channel that failed is replaced, but closed only once
no call in flight uses it (closing it would cancel those calls, which then look refused
although etcd may have applied them). A read tries the endpoints in turn; a write goes on
to another endpoint only when the failed one surely never got it, and otherwise says
that its outcome is unknown. One deadline, the store's ``timeout``, bounds each call
across endpoints, retries and authentication. Proxies: see :mod:`.proxy`.
"""

from __future__ import annotations

import os
import queue
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

# gRPC's C core otherwise prints its own log lines (TLS handshake errors...) on stderr,
# next to the one-line StoreError; GRPC_VERBOSITY=ERROR brings them back for debugging.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

import grpc  # noqa: E402 - after GRPC_VERBOSITY
from google.protobuf.message import Message
from pyetcd import etcdrpc
from pyetcd.utils import prefix_range_end

from ..errors import InvalidInput
from .base import (
    STORE_TIMEOUT,
    Compare,
    Entry,
    HistoryLost,
    KeyChange,
    Op,
    Put,
    Store,
    StoreError,
    TxnResult,
    Watch,
    decode,
    encode,
    validate_txn,
)
from .proxy import Proxy, channel_options, proxy_for

# A full get_prefix over a large range can exceed gRPC's default 4 MiB reply limit.
_CHANNEL_OPTIONS = [("grpc.max_receive_message_length", -1)]

# What a lost connection or a missing answer looks like; CANCELLED is a channel closed
# under a call. None of them says whether etcd applied a write.
_UNREACHABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED)

#: Reading past changes, how long to wait for more once the last put is in: etcd sends a
#: watch's backlog in batches a tenth of a second apart.
_BACKLOG_GRACE = 0.5

# How gRPC words an UNAVAILABLE that never reached the server (refused, no route, DNS).
_NOT_CONNECTED = "failed to connect to all addresses"
_NOT_RESOLVED = "errors resolving"
_CONNECT_FAILURE = re.compile(_NOT_CONNECTED + r"; last error: [A-Z_]+: \S+: (.+)")


@dataclass(frozen=True)
class EtcdEndpoint:
    """One parsed cluster store URL."""

    url: str
    #: As in the URL: an IPv6 literal in brackets, as gRPC wants it.
    host: str
    port: int
    secure: bool

    @property
    def hostname(self) -> str:
        """The host without brackets."""
        return self.host.strip("[]")


def parse_endpoints(endpoints: Sequence[str] | str) -> list[EtcdEndpoint]:
    """Parse ``http(s)://HOST:PORT`` URLs (a list, or one comma separated string).

    Raises :class:`InvalidInput` naming the first malformed URL.
    """
    urls = endpoints.split(",") if isinstance(endpoints, str) else list(endpoints)
    urls = [url.strip() for url in urls if url.strip()]
    if not urls:
        raise InvalidInput("no etcd endpoint given: expected http://HOST:PORT or https://HOST:PORT")
    parsed = []
    for url in urls:
        parts = urlsplit(url)
        try:
            port = parts.port
        except ValueError:
            port = None
        if (
            parts.scheme not in ("http", "https")
            or not parts.hostname
            or not port
            or parts.path not in ("", "/")
            or parts.query
            or parts.fragment
            or parts.username is not None
        ):
            raise InvalidInput(f"invalid etcd endpoint {url!r}: expected http://HOST:PORT or https://HOST:PORT")
        # gRPC wants IPv6 literals in brackets, as in the URL.
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        parsed.append(EtcdEndpoint(url.rstrip("/"), host, port, parts.scheme == "https"))
    return parsed


def _read(path: str | Path | None, what: str) -> bytes | None:
    if path is None:
        return None
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise InvalidInput(f"cannot read the etcd {what} {path}: {exc.strerror}") from None
    # gRPC would only fail at the first call, with "Failed to create security handshaker".
    if b"-----BEGIN " not in data:
        raise InvalidInput(f"the etcd {what} {path} is not a PEM file")
    return data


# gRPC's words for a failed TLS connection name the mechanism, not the likely cause.
_TLS_HINTS = {
    "CERTIFICATE_VERIFY_FAILED": "etcd's certificate is not signed by a trusted CA: give the CA certificate",
    # TLS 1.3 ends the handshake before the server checks the client certificate, so its
    # refusal arrives as an alert on the first record the client reads.
    "TSI_DATA_CORRUPTED": "etcd ended the TLS session: does it want a client certificate it trusts?",
    "Failed to create security handshaker": "check the CA certificate, and that the client key is the certificate's",
}
_PLAIN_HINTS = {"Socket closed": "does etcd there want https://?"}


def _hint(details: str, secure: bool) -> str:
    """``details`` followed by the likely cause of a TLS mismatch, if it looks like one."""
    for marker, hint in (_TLS_HINTS if secure else _PLAIN_HINTS).items():
        if marker in details:
            return f"{details} ({hint})"
    return details


def _describe(exc: grpc.RpcError) -> tuple[grpc.StatusCode, str, bool]:
    """The status code, a one-line reason, and whether the request surely never reached
    etcd (so that sending it elsewhere cannot apply it twice)."""
    code: grpc.StatusCode = exc.code()  # type: ignore[attr-defined]
    details = " ".join((exc.details() or code.name).split())  # type: ignore[attr-defined]
    never_sent = code == grpc.StatusCode.UNAVAILABLE and details.startswith((_NOT_CONNECTED, _NOT_RESOLVED))
    # "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: Failed
    # to connect to remote host: Connection refused": keep the cause, and that it is one.
    cause = _CONNECT_FAILURE.match(details)
    if cause:
        reason = cause.group(1).removesuffix(": OK").removeprefix("Failed to connect to remote host: ")
        details = f"cannot connect: {reason}"
    return code, details, never_sent


class _Connection:
    """A gRPC channel to one endpoint, with the auth token sent on it.

    Shared by the calls of every thread: ``users`` counts the calls in flight, and a
    connection that failed is ``retired`` (no new call takes it) and closed by the last
    call that leaves it.
    """

    def __init__(self, index: int, channel: grpc.Channel, metadata: tuple[tuple[str, str], ...] | None) -> None:
        self.index = index
        self.channel = channel
        self.kv = etcdrpc.KVStub(channel)
        self.metadata = metadata
        self.users = 0
        self.retired = False
        #: Whether etcd answered on it: then it speaks the right protocol to etcd.
        self.answered = False


class _Failure(Exception):
    """One attempt on one endpoint failed without an answer from etcd."""

    def __init__(self, details: str, *, never_sent: bool, expired_token: bool = False, timed_out: bool = False) -> None:
        super().__init__(details)
        self.details = details
        #: No answer came within the time given (rather than a lost or refused connection).
        self.timed_out = timed_out
        #: The request surely never reached etcd: sending it elsewhere cannot apply it twice.
        self.never_sent = never_sent
        #: etcd refused the auth token: authenticate again and retry on the same endpoint.
        self.expired_token = expired_token


class EtcdStore(Store):
    """A :class:`Store` in etcd; keys live under ``prefix``, values are compact JSON.

    Each call starts with the endpoint that answered last. ``timeout`` bounds a whole
    call: a read that gets no answer gives each endpoint left its share of the time left,
    a write the whole of it (it cannot be sent elsewhere once it may have arrived). A
    connection to an endpoint that failed is replaced on next use, so the store recovers
    by itself once etcd is back.
    """

    def __init__(
        self,
        endpoints: Sequence[str] | str,
        prefix: str = "/shrike/",
        timeout: float = STORE_TIMEOUT,
        ca_cert: str | Path | None = None,
        cert_key: str | Path | None = None,
        cert_cert: str | Path | None = None,
        user: str | None = None,
        password: str | None = None,
    ) -> None:
        self._endpoints = parse_endpoints(endpoints)
        self.endpoints = [ep.url for ep in self._endpoints]
        self.location = ", ".join(self.endpoints)
        if not prefix:
            raise InvalidInput("the etcd key prefix must not be empty")
        if not timeout > 0:
            raise InvalidInput(f"the store timeout must be a positive number of seconds, not {timeout:g}")
        self.prefix = prefix
        self._prefix = prefix.encode()
        self._timeout = timeout
        if (cert_key is None) != (cert_cert is None):
            raise InvalidInput("an etcd client certificate needs both its key and its certificate")
        if (user is None) != (password is None):
            raise InvalidInput("etcd authentication needs both a user and a password")
        self._user = user
        self._password = password
        self._tls: grpc.ChannelCredentials | None = None
        if not any(ep.secure for ep in self._endpoints):
            if (ca_cert, cert_key) != (None, None):
                raise InvalidInput("etcd TLS certificates need https:// endpoints")
        else:
            # Without a CA file gRPC verifies the server against the system's roots.
            self._tls = grpc.ssl_channel_credentials(
                _read(ca_cert, "CA certificate"),
                _read(cert_key, "client key"),
                _read(cert_cert, "client certificate"),
            )
        self._proxies = [proxy_for(ep.hostname, os.environ) for ep in self._endpoints]
        self._lock = threading.Lock()
        self._connections: dict[int, _Connection] = {}
        self._current = 0

    # -- connections ---------------------------------------------------------------------

    def _connect(self, index: int, timeout: float) -> _Connection:
        """A new connection to endpoint ``index``, authenticated when a user is set."""
        ep = self._endpoints[index]
        options = [*_CHANNEL_OPTIONS, *channel_options(self._proxies[index])]
        target = f"{ep.host}:{ep.port}"
        if ep.secure:
            assert self._tls is not None
            channel = grpc.secure_channel(target, self._tls, options=options)
        else:
            channel = grpc.insecure_channel(target, options=options)
        metadata = None
        if self._user is not None:
            request = etcdrpc.AuthenticateRequest(name=self._user, password=self._password)
            try:
                token = etcdrpc.AuthStub(channel).Authenticate(request, timeout).token
            except BaseException:
                channel.close()
                raise
            metadata = (("token", token),)
        return _Connection(index, channel, metadata)

    def _acquire(self, index: int, timeout: float) -> _Connection:
        """The connection to endpoint ``index`` (made if there is none), counted as used
        until :meth:`_release`."""
        with self._lock:
            connection = self._connections.get(index)
            if connection is not None:
                connection.users += 1
                return connection
        made = self._connect(index, timeout)
        with self._lock:
            # Another thread may have connected meanwhile: keep one connection.
            connection = self._connections.setdefault(index, made)
            connection.users += 1
        if connection is not made:
            made.channel.close()  # never used by anyone
        return connection

    def _release(self, connection: _Connection, *, failed: bool) -> None:
        """A call is done with ``connection``. After a failure it is retired: gRPC would
        otherwise keep a failed channel in reconnect backoff (up to two minutes) after
        etcd is back. It is closed when its last call is done, never under one."""
        with self._lock:
            connection.users -= 1
            if failed and self._connections.get(connection.index) is connection:
                del self._connections[connection.index]
                connection.retired = True
            idle = connection.retired and connection.users == 0
        if idle:
            connection.channel.close()

    def close(self) -> None:
        with self._lock:
            connections, self._connections = list(self._connections.values()), {}
            for connection in connections:
                connection.retired = True
            idle = [connection for connection in connections if connection.users == 0]
        for connection in idle:
            connection.channel.close()

    # -- calls ---------------------------------------------------------------------------

    def _attempt(self, index: int, method: str, request: Message, timeout: float, fresh_token: bool) -> Any:
        """Send ``request`` to endpoint ``index`` once, within ``timeout`` seconds.

        Raises :class:`_Failure` (and retires the connection) when etcd was not reached,
        did not answer or refused a token that was not fresh, and :class:`StoreError` when
        it refused the request.
        """
        ep, proxy = self._endpoints[index], self._proxies[index]
        try:
            connection = self._acquire(index, timeout)
        except grpc.RpcError as exc:  # authenticating failed: the request was not sent
            raise self._failure(exc, ep, proxy, timeout, answered=False, never_sent=True) from None
        try:
            result = getattr(connection.kv, method)(request, timeout, metadata=connection.metadata)
        except grpc.RpcError as exc:
            code = exc.code()  # type: ignore[attr-defined]
            expired = code == grpc.StatusCode.UNAUTHENTICATED and not fresh_token
            self._release(connection, failed=expired or code in _UNREACHABLE)
            if expired:
                raise _Failure("the auth token expired", never_sent=True, expired_token=True) from None
            raise self._failure(exc, ep, proxy, timeout, answered=connection.answered) from None
        connection.answered = True
        self._release(connection, failed=False)
        return result

    @staticmethod
    def _failure(
        exc: grpc.RpcError,
        ep: EtcdEndpoint,
        proxy: Proxy | None,
        timeout: float,
        *,
        answered: bool,
        never_sent: bool = False,
    ) -> _Failure:
        """What ``exc`` means: a :class:`_Failure` when etcd was unreachable; raises
        :class:`StoreError` when etcd refused."""
        code, details, not_sent = _describe(exc)
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            details = f"no answer within {timeout:.1f} s"
        elif proxy is None and not answered:
            # A channel etcd answered on speaks the right protocol: no TLS mismatch there.
            details = _hint(details, ep.secure)
        if proxy is not None:
            details = f"{details} (through {proxy})"
        if code not in _UNREACHABLE:
            raise StoreError(f"etcd at {ep.url} refused the request: {details}", reason="refused")
        return _Failure(details, never_sent=never_sent or not_sent, timed_out=code == grpc.StatusCode.DEADLINE_EXCEEDED)

    def _call(self, method: str, request: Message, *, write: bool) -> Any:
        """Send ``request`` to the KV service's ``method``, trying the endpoints in turn
        until one answers or the store's timeout has passed.

        A write moves on to the next endpoint only when the failed one was never reached:
        after a timeout or a lost connection etcd may have applied it, and sending it
        again could apply it twice, so the error says its outcome is unknown.
        """
        started = time.monotonic()
        deadline = started + self._timeout
        count = len(self._endpoints)
        start = self._current
        failures: list[tuple[str, str]] = []
        kind = "unreachable"
        for attempt in range(count):
            index = (start + attempt) % count
            url = self._endpoints[index].url
            for fresh_token in (False, True):
                left = deadline - time.monotonic()
                if left <= 0:
                    failures.append((url, f"not tried: the store timeout of {self._timeout:g} s ran out"))
                    break
                # A read may go on to the endpoints left, so it takes only its share of the time.
                timeout = left if write else left / (count - attempt)
                try:
                    result = self._attempt(index, method, request, timeout, fresh_token)
                except _Failure as failure:
                    if failure.expired_token:
                        continue
                    if failure.timed_out:
                        kind = "timeout"
                    if write and not failure.never_sent:
                        self._current = (index + 1) % count
                        raise StoreError(
                            f"etcd at {url} is unreachable: {failure.details}"
                            " (outcome unknown: the change may have been applied)",
                            reason=kind,
                        ) from None
                    failures.append((url, failure.details))
                    break
                self._current = index
                return result
        raise self._unreachable(failures, time.monotonic() - started, kind)

    def _unreachable(self, failures: list[tuple[str, str]], waited: float, kind: str) -> StoreError:
        """The error when no endpoint answered: why, for each endpoint, and for how long."""
        if len(failures) == 1:
            return StoreError(f"etcd at {self.location} is unreachable: {failures[0][1]}", reason=kind)
        reasons = {reason for _, reason in failures}
        if len(reasons) == 1:
            why = f"{reasons.pop()}, from each"
        else:
            why = "; ".join(f"{url}: {reason}" for url, reason in failures)
        return StoreError(f"etcd at {self.location} is unreachable after {waited:.1f} s: {why}", reason=kind)

    # -- the Store interface -------------------------------------------------------------

    def _key(self, key: str) -> bytes:
        return self._prefix + key.encode()

    def _entry(self, kv: etcdrpc.KeyValue) -> Entry:
        key = kv.key[len(self._prefix) :].decode()
        return Entry(key, decode(kv.value.decode()), kv.mod_revision)

    def _op(self, op: Op) -> etcdrpc.RequestOp:
        if isinstance(op, Put):
            put = etcdrpc.PutRequest(key=self._key(op.key), value=encode(op.value).encode())
            return etcdrpc.RequestOp(request_put=put)
        delete = etcdrpc.DeleteRangeRequest(key=self._key(op.key))
        return etcdrpc.RequestOp(request_delete_range=delete)

    def get(self, key: str) -> Entry | None:
        reply = self._call("Range", etcdrpc.RangeRequest(key=self._key(key)), write=False)
        return self._entry(reply.kvs[0]) if reply.kvs else None

    def _get_prefix(self, prefix: str, limit: int | None) -> list[Entry]:
        start = self._key(prefix)
        # No explicit sort: etcd returns a range in ascending key order anyway, and asking
        # for a sort makes etcd 3.4 read every value in the range before applying the limit.
        end = prefix_range_end(start)
        request = etcdrpc.RangeRequest(key=start, range_end=end, limit=limit or 0)
        return [self._entry(kv) for kv in self._call("Range", request, write=False).kvs]

    def txn(
        self,
        compares: Sequence[Compare],
        ops: Sequence[Op],
        reads: Sequence[str] = (),
    ) -> TxnResult:
        validate_txn(compares, ops, reads)
        request = etcdrpc.TxnRequest(
            # etcd reports an absent key's mod revision as 0, as the contract wants.
            compare=[
                etcdrpc.Compare(
                    key=self._key(key),
                    result=etcdrpc.Compare.EQUAL,
                    target=etcdrpc.Compare.MOD,
                    mod_revision=revision,
                )
                for key, revision in compares
            ],
            success=[self._op(op) for op in ops],
            failure=[etcdrpc.RequestOp(request_range=etcdrpc.RangeRequest(key=self._key(key))) for key in reads],
        )
        reply = self._call("Txn", request, write=True)
        if reply.succeeded:
            return TxnResult(succeeded=True, revision=reply.header.revision)
        entries: dict[str, Entry | None] = {}
        for key, response in zip(reads, reply.responses, strict=False):
            kvs = response.response_range.kvs
            entries[key] = self._entry(kvs[0]) if kvs else None
        return TxnResult(succeeded=False, entries=entries)

    def revision(self) -> int:
        request = etcdrpc.RangeRequest(key=self._prefix, count_only=True)
        return int(self._call("Range", request, write=False).header.revision)

    def changes(self, prefix: str, after: int, until: int) -> list[KeyChange]:
        if until <= after:
            return []
        # A watch has no end: read until the last put under the prefix up to ``until`` is
        # in, then as long as more comes quickly (the deletes after it leave no trace).
        start = self._key(prefix)
        newest = etcdrpc.RangeRequest(
            key=start,
            range_end=prefix_range_end(start),
            revision=until,
            keys_only=True,
            limit=1,
            sort_order=etcdrpc.RangeRequest.DESCEND,
            sort_target=etcdrpc.RangeRequest.MOD,
        )
        kvs = self._call("Range", newest, write=False).kvs
        last_put = kvs[0].mod_revision if kvs else 0
        found: list[KeyChange] = []
        with self.watch(prefix, after) as watch:
            reached = last_put <= after
            while True:
                batch = watch.next(_BACKLOG_GRACE if reached else self._timeout)
                if not batch:
                    if reached:
                        return found
                    raise StoreError(
                        f"etcd at {self.location} sent no change within {self._timeout:g} s", reason="timeout"
                    )
                found += [change for change in batch if change.revision <= until]
                if batch[-1].revision >= until:
                    return found
                reached = reached or batch[-1].revision >= last_put

    def watch(self, prefix: str, after: int | None = None) -> Watch:
        return _EtcdWatch(self, prefix, after)


class _EtcdWatch(Watch):
    """An etcd watch stream on one endpoint (with ``prev_kv``); a thread reads it."""

    def __init__(self, store: EtcdStore, prefix: str, after: int | None) -> None:
        self._store = store
        self._index = store._current
        self._url = store._endpoints[self._index].url
        self._requests: queue.SimpleQueue[etcdrpc.WatchRequest | None] = queue.SimpleQueue()
        self._responses: queue.SimpleQueue[Any] = queue.SimpleQueue()
        start = store._key(prefix)
        create = etcdrpc.WatchCreateRequest(
            key=start, range_end=prefix_range_end(start), prev_kv=True, start_revision=0 if after is None else after + 1
        )
        self._requests.put(etcdrpc.WatchRequest(create_request=create))
        try:
            # Held (counted as a user) until close: the channel is not closed under the stream.
            self._connection = store._acquire(self._index, store._timeout)
        except grpc.RpcError as exc:
            raise self._failure(exc) from None
        self._failed = False
        self._call = etcdrpc.WatchStub(self._connection.channel).Watch(
            iter(self._requests.get, None), metadata=self._connection.metadata
        )
        self._reader = threading.Thread(target=self._read, name="shrike-etcd-watch", daemon=True)
        self._reader.start()
        try:
            # etcd answers "created" at once, or that the revision is compacted.
            created = self._take(store._timeout)
            if created is None:
                self._failed = True
                raise StoreError(
                    f"etcd at {self._url} did not start the watch within {store._timeout:g} s", reason="timeout"
                )
        except BaseException:
            self.close()
            raise
        # From now on: the revision etcd was at when it made the watch.
        self.position = created.header.revision if after is None else after

    def _read(self) -> None:
        try:
            for response in self._call:
                self._responses.put(response)
        except grpc.RpcError as exc:
            self._responses.put(exc)

    def _failure(self, exc: grpc.RpcError) -> StoreError:
        code, details, _ = _describe(exc)
        self._failed = True  # the connection is retired when the watch closes
        # The next watch tries the next endpoint.
        self._store._current = (self._index + 1) % len(self._store._endpoints)
        if code in _UNREACHABLE:
            return StoreError(f"etcd at {self._url} is unreachable: {details}", reason="unreachable")
        return StoreError(f"etcd at {self._url} ended the watch: {details}", reason="refused")

    def _take(self, timeout: float) -> etcdrpc.WatchResponse | None:
        """The next response (None: none within ``timeout``); failures raised."""
        try:
            item = self._responses.get(timeout=max(timeout, 0.0))
        except queue.Empty:
            return None
        if isinstance(item, grpc.RpcError):
            if item.code() == grpc.StatusCode.CANCELLED:  # type: ignore[attr-defined]
                raise StoreError(f"the watch on etcd at {self._url} was closed", reason="cancelled")
            raise self._failure(item)
        if item.compact_revision:
            raise HistoryLost(
                f"etcd at {self._url} has compacted the changes before revision {item.compact_revision}",
                item.compact_revision - 1,
            )
        if item.canceled:
            raise StoreError(
                f"etcd at {self._url} ended the watch: {item.cancel_reason or 'no reason given'}", reason="refused"
            )
        return item

    def next(self, timeout: float) -> list[KeyChange]:
        response = self._take(timeout)
        if response is None:
            return []
        store = self._store
        changes = [
            KeyChange(
                event.kv.mod_revision,
                event.kv.key[len(store._prefix) :].decode(),
                store._entry(event.prev_kv) if event.HasField("prev_kv") else None,
                None if event.type == event.DELETE else store._entry(event.kv),
            )
            for event in response.events
        ]
        if changes:
            self.position = changes[-1].revision
        return changes

    def close(self) -> None:
        self._call.cancel()
        self._requests.put(None)
        self._reader.join(5)
        self._store._release(self._connection, failed=self._failed)
