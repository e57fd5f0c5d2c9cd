"""The embedded store under mistakes (issue 10, section 4): a blank cluster store is an
error, not this host's own store."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from shrike_cli.errors import InvalidInput
from shrike_cli.stores import open_store
from tests.fixtures.plugin import SHRIKE


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
