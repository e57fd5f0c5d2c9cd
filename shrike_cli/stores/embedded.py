"""The embedded store: one SQLite file shared by every shrike process on the host.

WAL mode lets readers run while one writer commits. ``synchronous=FULL`` syncs the WAL
to disk at every commit, so a grant the plugin has answered survives a power cut (with
``NORMAL`` the last commits could be lost, and their addresses handed out again after the
reboot). Every :meth:`txn` is one ``BEGIN IMMEDIATE`` transaction: it takes the write
lock up front, so the compares and the writes see the same state and concurrent writers
queue on the busy timeout instead of failing half way.

Only a missing file makes a new store, and the new file appears complete or not at all
(built under a temporary name, then linked into place), mode 0600 like its ``-wal`` and
``-shm`` files, which SQLite gives the mode of the store file. A file that exists but is
not a shrike store (empty, another SQLite database, anything else) is an error: taking it
for a new, empty store would hand out again every address it held.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

from .base import Compare, Entry, Op, Put, Store, StoreError, TxnResult, decode, encode, validate_txn

_SCHEMA = (
    # WITHOUT ROWID: the key is the only index, so lookups and prefix scans use it directly.
    "CREATE TABLE IF NOT EXISTS kv ( key TEXT PRIMARY KEY, value TEXT NOT NULL, rev INTEGER NOT NULL) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS store_revision ( id INTEGER PRIMARY KEY CHECK (id = 0), rev INTEGER NOT NULL)",
    "INSERT OR IGNORE INTO store_revision (id, rev) VALUES (0, 0)",
)

#: The tables of :data:`_SCHEMA`: a file holding both is a shrike store.
_TABLES = ("kv", "store_revision")
_HAS_TABLES = "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN (?, ?)"

# The same SQL strings every time, so sqlite3's statement cache hands back prepared
# statements. Text keys compare with SQLite's default BINARY collation (memcmp of UTF-8),
# which is byte order, like etcd.
_GET = "SELECT value, rev FROM kv WHERE key = ?"
_REV_OF = "SELECT rev FROM kv WHERE key = ?"
_STORE_REV = "SELECT rev FROM store_revision WHERE id = 0"
_SET_STORE_REV = "UPDATE store_revision SET rev = ? WHERE id = 0"
_PUT = "INSERT OR REPLACE INTO kv (key, value, rev) VALUES (?, ?, ?)"
_DELETE = "DELETE FROM kv WHERE key = ?"
_PREFIX = "SELECT key, value, rev FROM kv WHERE key >= ? AND key < ? ORDER BY key LIMIT ?"
_ALL = "SELECT key, value, rev FROM kv WHERE key >= ? ORDER BY key LIMIT ?"


def prefix_successor(prefix: str) -> str | None:
    """The smallest string greater than every string starting with ``prefix``, or ``None``
    when no such bound exists (empty prefix, or only U+10FFFF characters).

    Code point order equals UTF-8 byte order, so bumping the last code point gives the
    exclusive upper bound of the prefix range; surrogates cannot be stored, so the bump
    skips over them.
    """
    chars = list(prefix)
    while chars:
        last = ord(chars.pop())
        if last < 0x10FFFF:
            bumped = 0xE000 if 0xD800 <= last + 1 <= 0xDFFF else last + 1
            return "".join(chars) + chr(bumped)
    return None


class EmbeddedStore(Store):
    """A :class:`Store` in a local SQLite file, safe for many processes and threads."""

    def __init__(self, path: Path | str, timeout: float = 10.0) -> None:
        """Open the store file at ``path``, creating it (and its folder) if it is missing;
        ``timeout`` is how long a call waits for another process's write lock before
        failing."""
        self.path = Path(path)
        self.location = str(self.path)
        self._timeout = timeout
        self._lock = threading.Lock()
        self._conn = self._connect()

    def _connect(self) -> sqlite3.Connection:
        try:
            # The mode applies only to a directory this creates.
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            if not self.path.exists():
                self._create()
            elif self.path.is_file() and self.path.stat().st_size == 0:
                raise self._not_a_store("it is empty (0 bytes)")
            # mode=rw: never create a file here, only _create does.
            conn = sqlite3.connect(
                f"file:{quote(str(self.path))}?mode=rw",
                uri=True,
                timeout=self._timeout,
                isolation_level=None,
                check_same_thread=False,
            )
        except (OSError, sqlite3.Error) as exc:
            raise self._error(exc) from None
        try:
            # Before anything that could write to someone else's database.
            if conn.execute(_HAS_TABLES, _TABLES).fetchone()[0] != len(_TABLES):
                raise self._not_a_store(f"it is an SQLite database without shrike's tables ({', '.join(_TABLES)})")
            self._enable_wal(conn)
            conn.execute("PRAGMA synchronous = FULL")
        except sqlite3.Error as exc:
            conn.close()
            raise self._error(exc) from None
        except StoreError:
            conn.close()
            raise
        self._pid = os.getpid()
        return conn

    def _create(self) -> None:
        """Make a new, empty store at :attr:`path`: built in a temporary file (mode 0600)
        next to it, then linked into place, so that no process ever opens a half-made
        store; when another process links its own first, that one is the store."""
        fd, temporary = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".new", dir=self.path.parent)
        os.close(fd)
        try:
            conn = sqlite3.connect(temporary, isolation_level=None)
            try:
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = FULL")
                conn.execute("BEGIN IMMEDIATE")
                for statement in _SCHEMA:
                    conn.execute(statement)
                conn.execute("COMMIT")
            finally:
                conn.close()  # the last connection: its WAL is checkpointed into the file
            with contextlib.suppress(FileExistsError):
                os.link(temporary, self.path)
        finally:
            os.unlink(temporary)
        # The new name must survive a power cut like the commits made under it.
        directory = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    def _not_a_store(self, what: str) -> StoreError:
        return StoreError(
            f"cannot use the store {self.path}: {what}, not a shrike store; restore the file from a backup,"
            " or move it away to start a new, empty store (every address then counts as free)"
        )

    def _enable_wal(self, conn: sqlite3.Connection) -> None:
        """Switch the file to WAL mode (a no-op once it is).

        The switch needs the file to itself and, unlike other statements, fails at once
        with "database is locked" instead of waiting on the busy timeout when processes
        open a new file together; so wait here.
        """
        deadline = time.monotonic() + self._timeout
        while True:
            try:
                conn.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
            time.sleep(0.005)

    def _error(self, exc: BaseException) -> StoreError:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        if isinstance(exc, sqlite3.DatabaseError) and "not a database" in reason:
            return self._not_a_store(reason)
        return StoreError(f"cannot use the store {self.path}: {' '.join(reason.split())}")

    def _connection(self) -> sqlite3.Connection:
        # A SQLite connection must not cross fork(): a child reopens its own.
        if self._pid != os.getpid():
            self._conn = self._connect()
        return self._conn

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def get(self, key: str) -> Entry | None:
        with self._lock:
            try:
                row = self._connection().execute(_GET, (key,)).fetchone()
            except sqlite3.Error as exc:
                raise self._error(exc) from None
        return None if row is None else Entry(key, decode(row[0]), row[1])

    def _get_prefix(self, prefix: str, limit: int | None) -> list[Entry]:
        end = prefix_successor(prefix)
        # SQLite reads LIMIT -1 as "no limit".
        sql, bounds = (_ALL, (prefix,)) if end is None else (_PREFIX, (prefix, end))
        with self._lock:
            try:
                rows = self._connection().execute(sql, (*bounds, limit or -1)).fetchall()
            except sqlite3.Error as exc:
                raise self._error(exc) from None
        return [Entry(key, decode(value), rev) for key, value, rev in rows]

    def txn(
        self,
        compares: Sequence[Compare],
        ops: Sequence[Op],
        reads: Sequence[str] = (),
    ) -> TxnResult:
        validate_txn(compares, ops, reads)
        # Encode before taking the write lock, keeping the locked section short; a value of
        # None marks a delete.
        writes = [(op.key, encode(op.value) if isinstance(op, Put) else None) for op in ops]
        with self._lock:
            conn = self._connection()
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    result = self._apply(conn, compares, writes, reads)
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise self._error(exc) from None
        return result

    @staticmethod
    def _apply(
        conn: sqlite3.Connection,
        compares: Sequence[Compare],
        writes: list[tuple[str, str | None]],
        reads: Sequence[str],
    ) -> TxnResult:
        """The body of :meth:`txn`, run inside its transaction."""
        for key, revision in compares:
            row = conn.execute(_REV_OF, (key,)).fetchone()
            if (0 if row is None else row[0]) != revision:
                entries: dict[str, Entry | None] = {}
                for read in reads:
                    row = conn.execute(_GET, (read,)).fetchone()
                    entries[read] = None if row is None else Entry(read, decode(row[0]), row[1])
                return TxnResult(succeeded=False, entries=entries)
        current = conn.execute(_STORE_REV).fetchone()[0]
        new = current + 1
        changed = False
        for key, value in writes:
            if value is not None:
                conn.execute(_PUT, (key, value, new))
                changed = True
            else:
                # Like etcd, deleting an absent key changes nothing and takes no revision.
                changed = conn.execute(_DELETE, (key,)).rowcount > 0 or changed
        if not changed:
            return TxnResult(succeeded=True, revision=current)
        conn.execute(_SET_STORE_REV, (new,))
        return TxnResult(succeeded=True, revision=new)
