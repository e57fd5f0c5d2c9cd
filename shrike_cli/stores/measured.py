"""A store that times its operations and counts its failures (for ``shrike server
--metrics-address``), whatever store it wraps: the stores themselves know nothing of it."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from .. import metrics
from .base import Compare, Entry, KeyChange, Op, Store, StoreError, TxnResult, Watch

T = TypeVar("T")


class MeasuredStore(Store):
    """``inner``, with each ``get``, ``get_prefix`` and ``txn`` timed
    (:data:`~shrike_cli.metrics.STORE_SECONDS`) and each failure counted by its reason
    (:data:`~shrike_cli.metrics.STORE_ERRORS`)."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.location = inner.location

    def _measured(self, operation: str, call: Callable[[], T]) -> T:
        started = time.perf_counter()
        try:
            result = call()
        except StoreError as err:
            metrics.store_operation(operation, time.perf_counter() - started, err.reason)
            raise
        metrics.store_operation(operation, time.perf_counter() - started)
        return result

    def get(self, key: str) -> Entry | None:
        return self._measured("get", lambda: self.inner.get(key))

    def _get_prefix(self, prefix: str, limit: int | None) -> list[Entry]:
        return self._measured("get_prefix", lambda: self.inner.get_prefix(prefix, limit))

    def txn(self, compares: Sequence[Compare], ops: Sequence[Op], reads: Sequence[str] = ()) -> TxnResult:
        return self._measured("txn", lambda: self.inner.txn(compares, ops, reads))

    def revision(self) -> int:
        return self.inner.revision()

    def changes(self, prefix: str, after: int, until: int) -> list[KeyChange]:
        return self.inner.changes(prefix, after, until)

    def watch(self, prefix: str, after: int | None = None) -> Watch:
        return self.inner.watch(prefix, after)

    def close(self) -> None:
        self.inner.close()
