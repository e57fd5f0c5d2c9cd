"""The embedded store under mistakes and power cuts (issue 10, sections 4 and 5): a
blank cluster store is an error, not this host's own store; a file that is not a shrike
store is an error, not a new store; commits are durable; the files are private."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from multiprocessing.synchronize import Barrier as BarrierType
from pathlib import Path

import pytest

from shrike_cli.errors import InvalidInput
from shrike_cli.stores import EmbeddedStore, Put, open_store
from tests.fixtures.plugin import SHRIKE
from tests.fixtures.processes import run_together


# ------------------------------------------------------------------ a blank cluster store
@pytest.mark.parametrize(
    ("args", "variables", "named"),
    [
        (["--cluster-store", " "], {}, "--cluster-store"),
        (["--cluster-store", ""], {}, "--cluster-store"),
        (["-cluster-store="], {}, "--cluster-store"),  # the original's spelling
        ([], {"CLUSTER_STORE": " "}, "CLUSTER_STORE"),
        ([], {"IPAM_CLUSTER_STORE": "  "}, "IPAM_CLUSTER_STORE"),
    ],
)
def test_a_blank_cluster_store_is_an_error(
    args: list[str], variables: dict[str, str], named: str, tmp_path: Path
) -> None:
    """A cluster store given but blank is refused in one line (today: the embedded store,
    on a cluster a state of the host's own); nothing is created."""
    env = {name: value for name, value in os.environ.items() if name not in ("CLUSTER_STORE", "IPAM_CLUSTER_STORE")}
    env |= {"SHRIKE_STATE_DIR": str(tmp_path / "state"), **variables}
    run = subprocess.run([*SHRIKE, *args, "leases"], capture_output=True, text=True, env=env, timeout=60)
    assert run.returncode == 1
    assert run.stdout == ""
    assert run.stderr.splitlines() == [
        f"shrike: error: {named} is blank: give the etcd endpoints (http://HOST:PORT,...),"
        " or leave it unset for this host's embedded store"
    ]
    assert not (tmp_path / "state").exists()


def test_open_store_refuses_a_blank_cluster_store(tmp_path: Path) -> None:
    for blank in (" ", "\t", " , "):
        with pytest.raises(InvalidInput, match="no etcd endpoint given"):
            open_store(blank, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_an_unset_cluster_store_keeps_the_embedded_store(tmp_path: Path) -> None:
    env = {**os.environ, "SHRIKE_STATE_DIR": str(tmp_path), "CLUSTER_STORE": "", "IPAM_CLUSTER_STORE": ""}
    run = subprocess.run([*SHRIKE, "leases"], capture_output=True, text=True, env=env, timeout=60)
    assert (run.returncode, run.stderr) == (0, "no address is held\n")
    assert (tmp_path / "shrike.db").is_file()


# ------------------------------------------------------------------ the store file
def shrike_leases(state: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SHRIKE_STATE_DIR": str(state), "CLUSTER_STORE": "", "IPAM_CLUSTER_STORE": ""}
    return subprocess.run([*SHRIKE, "leases"], capture_output=True, text=True, env=env, timeout=60)


def foreign_sqlite(path: Path) -> None:
    with contextlib.closing(sqlite3.connect(path)) as other:
        other.execute("CREATE TABLE notes (body TEXT)")
        other.commit()


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda path: path.write_bytes(b""), "it is empty (0 bytes)"),
        (foreign_sqlite, "it is an SQLite database without shrike's tables (kv, store_revision)"),
        (lambda path: path.write_text("addresses: none\n" * 300), "file is not a database"),
    ],
    ids=["empty", "other-sqlite", "text"],
)
def test_a_file_that_is_not_a_store_is_an_error(make: Callable[[Path], object], says: str, tmp_path: Path) -> None:
    """An existing shrike.db that is not a shrike store is refused, saying what to do
    (today an empty one is a new, empty store: "no address is held"); it is left as it was."""
    path = tmp_path / "shrike.db"
    make(path)
    before = path.read_bytes()
    run = shrike_leases(tmp_path)
    assert run.returncode == 1 and run.stdout == ""
    assert run.stderr.splitlines() == [
        f"shrike: error: cannot use the store {path}: {says}, not a shrike store; restore the file from a backup,"
        " or move it away to start a new, empty store (every address then counts as free)"
    ]
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shrike.db"]


def test_only_a_missing_file_makes_a_store(tmp_path: Path) -> None:
    path = tmp_path / "shrike.db"
    assert shrike_leases(tmp_path).returncode == 0
    assert path.stat().st_size > 0
    # A store made before is opened as it is.
    with EmbeddedStore(path) as store:
        store.txn([], [Put("k", {})])
    with EmbeddedStore(path) as store:
        assert store.get("k") is not None


def _open_and_write(path: str, barrier: BarrierType) -> None:
    barrier.wait(timeout=30)
    with EmbeddedStore(path) as store:
        store.txn([], [Put(f"k{os.getpid()}", {})])


def test_processes_making_one_store_together(tmp_path: Path) -> None:
    """Processes that open a missing store at the same time share one store: none of them
    sees the others' file half made (an empty file is refused now)."""
    processes = 4
    path = tmp_path / "new" / "shrike.db"
    run_together(_open_and_write, (str(path),), processes)
    with EmbeddedStore(path) as store:
        assert len(store.get_prefix("k")) == processes
    assert sorted(p.name for p in path.parent.iterdir()) == ["shrike.db"]


_ONE_COMMIT = """
import sys
from shrike_cli.stores import EmbeddedStore, Put
with EmbeddedStore(sys.argv[1]) as store:
    store.txn([], [Put("leases/198.51.100.7", {"kind": "container"})])
    print("answered", flush=True)
"""


def test_an_answered_commit_is_on_disk(tmp_path: Path) -> None:
    """A commit is synced before txn returns (today: synchronous=NORMAL, which may lose
    the last commits in a power cut): in the system calls of a process that commits once
    and then answers, the WAL file is synced after its last write and before the answer."""
    path = tmp_path / "shrike.db"
    EmbeddedStore(path).close()
    trace = tmp_path / "trace"
    # -y names each descriptor's file; the process's own calls only (-f: its threads).
    command = ["strace", "-f", "-y", "-o", str(trace), "-e", "trace=pwrite64,write,fsync,fdatasync"]
    subprocess.run([*command, sys.executable, "-c", _ONE_COMMIT, str(path)], check=True, capture_output=True)
    calls = trace.read_text().splitlines()
    wal = f"<{path}-wal>"
    last_write = max(i for i, call in enumerate(calls) if "pwrite64(" in call and wal in call)
    answer = next(i for i, call in enumerate(calls) if "write(1" in call and "answered" in call)
    synced = [call for call in calls[last_write:answer] if ("fsync(" in call or "fdatasync(" in call) and wal in call]
    assert synced, "\n".join(calls[last_write:answer])


def test_store_files_are_private(tmp_path: Path) -> None:
    """The store file shrike creates, and its -wal and -shm files, are 0600 also in a
    folder that exists (today 0644 under the usual umask); a file the operator made
    keeps the mode given to it."""
    old_umask = os.umask(0o022)
    try:
        with EmbeddedStore(tmp_path / "shrike.db") as store:
            store.txn([], [Put("k", {})])
            modes = {path.name: path.stat().st_mode & 0o777 for path in tmp_path.iterdir()}
        assert modes == {"shrike.db": 0o600, "shrike.db-wal": 0o600, "shrike.db-shm": 0o600}
        chosen = tmp_path / "chosen"
        chosen.mkdir()
        (tmp_path / "shrike.db").rename(chosen / "shrike.db")
        (chosen / "shrike.db").chmod(0o640)
        with EmbeddedStore(chosen / "shrike.db") as store:
            store.txn([], [Put("k", {})])
            assert {path.name: path.stat().st_mode & 0o777 for path in chosen.iterdir()} == {
                "shrike.db": 0o640,
                "shrike.db-wal": 0o640,
                "shrike.db-shm": 0o640,
            }
    finally:
        os.umask(old_umask)
