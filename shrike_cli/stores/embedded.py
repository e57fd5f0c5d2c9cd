"""The embedded store: one SQLite file shared by every shrike process on the host.

WAL mode lets readers run while one writer commits. Every :meth:`txn` is one ``BEGIN
IMMEDIATE`` transaction: it takes the write lock up front, so the compares and the writes
see the same state and concurrent writers queue on the busy timeout instead of failing
half way.

A :meth:`txn` that wrote returns only once its commit is on disk, so a grant the plugin
has answered survives a power cut (without the sync, the last commits could be lost and
their addresses handed out again after the reboot). The sync is an ``fsync`` of the WAL
file after the commit, outside the write lock (``synchronous=NORMAL`` leaves it to us):
``synchronous=FULL`` would sync inside the lock, one writer after the other, while here
the threads that committed meanwhile share one sync and the next writer need not wait
for it. The WAL is written in order, so a sync covers every commit before it, those of
other processes included: anyone who acts on a commit it read syncs its own commit, and
with it that one. Checkpoints sync the WAL and the file as ``NORMAL`` does.

Only a missing file makes a new store, and the new file appears complete or not at all
(built under a temporary name, then linked into place), mode 0600 like its ``-wal`` and
``-shm`` files, which SQLite gives the mode of the store file. A file that exists but is
not a shrike store (empty, another SQLite database, anything else) is an error: taking it
for a new, empty store would hand out again every address it held.

Changes are recorded (the ``changes`` table, read by :meth:`EmbeddedStore.watch` and
:meth:`EmbeddedStore.changes`) only while someone watches: a watcher registers in
``watchers`` and renews its row; the first one creates the triggers that write
``changes``, the last one to go drops them. Recording costs an allocation a tenth of its
time or so (one more table written per commit), which nobody should pay for a watch that
is not running: without a watcher, a commit does exactly what it did before there was a
record (and every :data:`TRIM_EVERY` commits, one look for expired watchers).
``journal.since`` is the revision from which the record is complete: it is set when the
first watcher arrives, and moves up as old changes are trimmed (the last
:data:`JOURNAL_KEEP` revisions are kept). A watcher that dies leaves its row to expire.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote

from .base import (
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

T = TypeVar("T")

#: How many revisions of changes are kept while someone watches.
JOURNAL_KEEP = 10_000
#: Old changes and expired watchers are dropped by one commit in this many.
TRIM_EVERY = 256
#: A watcher's registration lasts this long unless renewed (a third of it before it ends).
WATCHER_TTL = 30.0
#: How often a watch looks for new changes.
POLL_INTERVAL = 0.1

_SCHEMA = (
    # WITHOUT ROWID: the key is the only index, so lookups and prefix scans use it directly.
    "CREATE TABLE IF NOT EXISTS kv ( key TEXT PRIMARY KEY, value TEXT NOT NULL, rev INTEGER NOT NULL) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS store_revision ( id INTEGER PRIMARY KEY CHECK (id = 0), rev INTEGER NOT NULL)",
    "INSERT OR IGNORE INTO store_revision (id, rev) VALUES (0, 0)",
    # The change record, written only while a watcher is registered (see the module docstring).
    "CREATE TABLE IF NOT EXISTS changes ( rev INTEGER NOT NULL, key TEXT NOT NULL, old TEXT, old_rev INTEGER,"
    " new TEXT, PRIMARY KEY (rev, key)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS watchers ( id INTEGER PRIMARY KEY, expires REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS journal ( id INTEGER PRIMARY KEY CHECK (id = 0), since INTEGER NOT NULL)",
    "INSERT OR IGNORE INTO journal (id, since) VALUES (0, 0)",
)

#: The triggers that record changes, there while a watcher is registered.
_RECORDING = (
    # BEFORE, so that the row being replaced (INSERT OR REPLACE) is still there to read.
    "CREATE TRIGGER IF NOT EXISTS record_put BEFORE INSERT ON kv BEGIN"
    " INSERT INTO changes (rev, key, old, old_rev, new) VALUES (NEW.rev, NEW.key,"
    " (SELECT value FROM kv WHERE key = NEW.key), (SELECT rev FROM kv WHERE key = NEW.key), NEW.value); END",
    # A delete's revision is the one the transaction is writing: txn() sets store_revision last.
    "CREATE TRIGGER IF NOT EXISTS record_delete AFTER DELETE ON kv BEGIN"
    " INSERT INTO changes (rev, key, old, old_rev, new) VALUES ((SELECT rev + 1 FROM store_revision WHERE id = 0),"
    " OLD.key, OLD.value, OLD.rev, NULL); END",
)
_NOT_RECORDING = ("DROP TRIGGER IF EXISTS record_put", "DROP TRIGGER IF EXISTS record_delete")
#: The tables of :data:`_SCHEMA`: a file holding both is a shrike store.
_TABLES = ("kv", "store_revision")
#: Every table of :data:`_SCHEMA`: a store lacking some was made by an earlier shrike.
_SCHEMA_TABLES = frozenset(s.split()[5] for s in _SCHEMA if s.startswith("CREATE TABLE IF NOT EXISTS"))
_TABLE_NAMES = "SELECT name FROM sqlite_master WHERE type = 'table'"

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
_CHANGES = "SELECT rev, key, old, old_rev, new FROM changes WHERE rev > ? AND rev <= ? AND key >= ? AND key < ?"
_ALL_CHANGES = "SELECT rev, key, old, old_rev, new FROM changes WHERE rev > ? AND rev <= ? AND key >= ?"
_IN_ORDER = " ORDER BY rev, key LIMIT ?"
_JOURNAL_SINCE = "SELECT since FROM journal WHERE id = 0"
_EXPIRE_WATCHERS = "DELETE FROM watchers WHERE expires < ?"
#: Most changes one read returns: a transaction writes at most MAX_TXN_OPS keys, far fewer.
_CHANGES_PAGE = 1000


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


def _sync_directory(path: Path) -> None:
    """Make the names in the folder ``path`` durable (a new file's, after its ``fsync``)."""
    directory = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


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
        #: write transactions committed by this process, and how many of them are synced
        self._committed = self._synced = 0
        self._sync_lock = threading.Lock()
        self._wal_named = False  # whether the WAL file's name is synced in its folder
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
            tables = {name for (name,) in conn.execute(_TABLE_NAMES)}
            if not tables.issuperset(_TABLES):
                raise self._not_a_store(f"it is an SQLite database without shrike's tables ({', '.join(_TABLES)})")
            self._enable_wal(conn)
            conn.execute("PRAGMA synchronous = NORMAL")  # txn() syncs (see the module docstring)
            if not tables.issuperset(_SCHEMA_TABLES):
                # A store made by an earlier shrike: add the tables it lacks (the change record).
                conn.execute("BEGIN IMMEDIATE")
                for statement in _SCHEMA:
                    conn.execute(statement)
                conn.execute("COMMIT")
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
        _sync_directory(self.path.parent)

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
        # "database is locked": another process held the write lock past the busy timeout.
        kind = "locked" if "locked" in reason or "busy" in reason else "io"
        return StoreError(f"cannot use the store {self.path}: {' '.join(reason.split())}", reason=kind)

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
        result = self._transaction(lambda conn: self._apply(conn, compares, writes, reads))
        if result.succeeded and writes:
            self._sync(self._committed)  # at least this commit's number
        return result

    def _sync(self, commit: int) -> None:
        """Make this process's commits up to number ``commit`` durable: one ``fsync`` of
        the WAL for every thread waiting here, or none if another thread's covered it."""
        with self._sync_lock:
            if self._synced >= commit:
                return
            upto = self._committed  # every commit counted so far is in the WAL file
            try:
                try:
                    fd = os.open(f"{self.path}-wal", os.O_RDONLY)
                except FileNotFoundError:  # checkpointed into the store file, and synced, as it closed
                    fd = os.open(self.path, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
                if not self._wal_named:
                    _sync_directory(self.path.parent)
                    self._wal_named = True
            except OSError as exc:
                raise self._error(exc) from None
            self._synced = upto

    def _transaction(self, body: Callable[[sqlite3.Connection], T], *, write: bool = True) -> T:
        """Run ``body`` in one transaction: a write transaction (the write lock taken up
        front), or a read one, which sees one snapshot of the file."""
        with self._lock:
            conn = self._connection()
            try:
                conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                try:
                    result = body(conn)
                    conn.execute("COMMIT")
                    if write:
                        self._committed += 1
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
        if new % TRIM_EVERY == 0 and _expire_watchers(conn):
            conn.execute("DELETE FROM changes WHERE rev <= ?", (new - JOURNAL_KEEP,))
            conn.execute("UPDATE journal SET since = max(since, ?) WHERE id = 0", (new - JOURNAL_KEEP,))
        return TxnResult(succeeded=True, revision=new)

    # -- changes -------------------------------------------------------------------------

    def revision(self) -> int:
        return self._transaction(lambda conn: conn.execute(_STORE_REV).fetchone()[0], write=False)

    def _register(self, watcher: int | None = None) -> int:
        """Register a watcher (or renew ``watcher``'s registration, registering anew if it
        expired); returns its id. The first watcher starts the record afresh."""

        def register(conn: sqlite3.Connection) -> int:
            now = time.time()
            if watcher is not None:
                renewed = conn.execute("UPDATE watchers SET expires = ? WHERE id = ?", (now + WATCHER_TTL, watcher))
                if renewed.rowcount:
                    return watcher
            if not _expire_watchers(conn):
                conn.execute("DELETE FROM changes")
                conn.execute("UPDATE journal SET since = (SELECT rev FROM store_revision WHERE id = 0) WHERE id = 0")
                for statement in _RECORDING:
                    conn.execute(statement)
            cursor = conn.execute("INSERT INTO watchers (expires) VALUES (?)", (now + WATCHER_TTL,))
            assert cursor.lastrowid is not None
            return cursor.lastrowid

        return self._transaction(register)

    def _unregister(self, watcher: int) -> None:
        def unregister(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM watchers WHERE id = ?", (watcher,))
            _expire_watchers(conn)

        self._transaction(unregister)

    def _recorded(self, prefix: str, after: int, until: int) -> list[KeyChange]:
        """The recorded changes under ``prefix`` in ``(after, until]`` (at most a page of
        them, whole revisions), or :class:`HistoryLost` if the record misses some."""
        end = prefix_successor(prefix)
        sql, bounds = (_ALL_CHANGES, (prefix,)) if end is None else (_CHANGES, (prefix, end))

        def read(conn: sqlite3.Connection) -> list[tuple[int, str, str | None, int | None, str | None]]:
            since = conn.execute(_JOURNAL_SINCE).fetchone()[0]
            if after < since:
                recorded = f"it has those after revision {since}"
                raise HistoryLost(f"{self.path} records changes only while they are watched: {recorded}", since)
            return conn.execute(sql + _IN_ORDER, (after, until, *bounds, _CHANGES_PAGE)).fetchall()

        rows = self._transaction(read, write=False)
        if len(rows) == _CHANGES_PAGE:  # the last revision may go on: read it whole next time
            rows = [row for row in rows if row[0] != rows[-1][0]]
        return [
            KeyChange(
                rev,
                key,
                None if old is None else Entry(key, decode(old), old_rev or 0),
                None if new is None else Entry(key, decode(new), rev),
            )
            for rev, key, old, old_rev, new in rows
        ]

    def changes(self, prefix: str, after: int, until: int) -> list[KeyChange]:
        watcher = self._register()
        try:
            found: list[KeyChange] = []
            while page := self._recorded(prefix, found[-1].revision if found else after, until):
                found += page
            return found
        finally:
            self._unregister(watcher)

    def watch(self, prefix: str, after: int | None = None) -> Watch:
        return _RecordWatch(self, prefix, after)


def _expire_watchers(conn: sqlite3.Connection) -> bool:
    """Drop the watchers whose registration ran out; once none is left, stop recording.
    Returns whether some watcher is left."""
    conn.execute(_EXPIRE_WATCHERS, (time.time(),))
    if conn.execute("SELECT 1 FROM watchers LIMIT 1").fetchone() is not None:
        return True
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'trigger' AND name = 'record_put'").fetchone():
        for statement in _NOT_RECORDING:
            conn.execute(statement)
    return False


class _RecordWatch(Watch):
    """A watch on the embedded store: registered as a watcher, it polls the record."""

    def __init__(self, store: EmbeddedStore, prefix: str, after: int | None) -> None:
        self._store = store
        self._prefix = prefix
        self._watcher: int | None = store._register()
        self._renewed = time.monotonic()
        try:
            # Registered first: from then on every change is recorded.
            self.position = store.revision() if after is None else after
            store._recorded(prefix, self.position, self.position)  # HistoryLost now rather than at the first read
        except BaseException:
            self.close()
            raise

    def next(self, timeout: float) -> list[KeyChange]:
        assert self._watcher is not None, "the watch is closed"
        deadline = time.monotonic() + timeout
        while True:
            if time.monotonic() - self._renewed > WATCHER_TTL / 3:
                self._watcher = self._store._register(self._watcher)
                self._renewed = time.monotonic()
            found = self._store._recorded(self._prefix, self.position, 2**63 - 1)
            if found:
                self.position = found[-1].revision
                return found
            if time.monotonic() >= deadline:
                return []
            time.sleep(min(POLL_INTERVAL, max(0.0, deadline - time.monotonic())))

    def close(self) -> None:
        if self._watcher is not None:
            watcher, self._watcher = self._watcher, None
            self._store._unregister(watcher)
