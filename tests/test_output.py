"""The CLI's output rules, as a terminal and a pipe see them: colour only on a terminal
and never with NO_COLOR, progress only on a terminal and never with --output json.

Every command runs as a subprocess, its stdin, stdout and stderr on a pseudo-terminal
(:func:`on_terminal`) or on pipes, so that rich decides as it does for an operator.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import pytest

from tests.fixtures.plugin import SHRIKE

ESC = b"\x1b"
TIMEOUT = 60.0

#: Work that takes longer than output.PROGRESS_DELAY, shown with output.progress.
SLOW_WORK = """
import sys, time
from shrike_cli.cli import output
with output.progress(output.Format(sys.argv[1]), "counting the addresses") as progress:
    time.sleep(0.8)
    progress.update("still counting")
    time.sleep(0.4)
print("done")
"""


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """A colour terminal's environment, free of the variables that force rich's hand,
    with a store in which a LAN is declared."""
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in ("NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "CLUSTER_STORE", "COLUMNS")
    }
    clean.update(TERM="xterm-256color", SHRIKE_STATE_DIR=str(tmp_path / "state"), PYTHONPATH=str(Path.cwd()))
    for declare in (
        ["host-range", "--ip-start=198.51.100.1/24", "--ip-end=198.51.100.99/24", "--gateway=198.51.100.254"],
        ["ip-range", "--ip-start=198.51.100.100/24", "--ip-end=198.51.100.199/24"],
    ):
        subprocess.run([*SHRIKE, *declare], env=clean, check=True, capture_output=True, timeout=TIMEOUT)
    return clean


def on_terminal(argv: list[str], env: dict[str, str], stdout: IO[bytes] | None = None) -> tuple[int, bytes]:
    """Run ``argv`` with a pseudo-terminal as its stdin, stderr and (unless ``stdout`` is
    given) stdout; its exit status and everything it wrote on the terminal."""
    master, slave = pty.openpty()
    try:
        process = subprocess.Popen(
            argv, stdin=slave, stdout=stdout or slave, stderr=slave, env=env, start_new_session=True
        )
    finally:
        os.close(slave)
    written = bytearray()
    deadline = time.monotonic() + TIMEOUT
    try:
        while time.monotonic() < deadline:
            if select.select([master], [], [], 1.0)[0]:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: every holder of the terminal's other end has closed it
                    break
                if not chunk:
                    break
                written += chunk
        return process.wait(10), bytes(written)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        os.close(master)


def without_escapes(text: bytes) -> bytes:
    return re.sub(rb"\x1b\[[0-9;?]*[A-Za-z]", b"", text)


#: Commands that write colour or bold on a terminal: a table's header, an error in red.
COLOURFUL = [["ip-range"], ["leases", "--all"], ["release", "--ip", "198.51.100.150"]]


@pytest.mark.parametrize("args", COLOURFUL, ids=lambda args: " ".join(args))
def test_a_terminal_gets_styles_and_no_color_takes_every_escape_away(env: dict[str, str], args: list[str]) -> None:
    shrike = [*SHRIKE, *args]
    if args[0] == "leases":
        subprocess.run([*SHRIKE, "reserve", "web1"], env=env, check=True, capture_output=True, timeout=TIMEOUT)
    code, styled = on_terminal(shrike, env)
    assert ESC in styled, styled  # the test can see escapes when there are some
    # Not one escape: no style, and no spinner either (the listings read the store
    # inside output.progress, but a small store answers before a spinner would start).
    no_color_code, plain = on_terminal(shrike, {**env, "NO_COLOR": "1"})
    assert ESC not in plain, plain
    # Only the escapes went: the text and the exit status are the same.
    assert (no_color_code, plain) == (code, without_escapes(styled))


@pytest.mark.parametrize(
    "args", [*COLOURFUL, ["release"], ["doctor", "--plugin-dir", "/nonexistent"]], ids=lambda args: " ".join(args)
)
def test_piped_output_has_no_escapes(env: dict[str, str], args: list[str]) -> None:
    result = subprocess.run(
        [*SHRIKE, *args],
        env={**env, "DOCKER_HOST": "unix:///nonexistent/docker.sock"},
        capture_output=True,
        timeout=TIMEOUT,
        stdin=subprocess.DEVNULL,
    )
    assert result.stdout or result.stderr
    assert ESC not in result.stdout and ESC not in result.stderr, result


def test_progress_shows_on_a_terminal_only_while_work_lasts(env: dict[str, str]) -> None:
    code, written = on_terminal([sys.executable, "-c", SLOW_WORK, "table"], env)
    assert code == 0
    assert b"counting the addresses" in written and b"still counting" in written
    # The spinner is erased when the work ends: what stays is the command's output.
    assert written.rstrip().endswith(b"done")


def test_no_progress_with_json_on_a_terminal(env: dict[str, str]) -> None:
    code, written = on_terminal([sys.executable, "-c", SLOW_WORK, "json"], env)
    assert (code, written.replace(b"\r\n", b"\n")) == (0, b"done\n")


def test_no_progress_when_piped(env: dict[str, str]) -> None:
    result = subprocess.run(
        [sys.executable, "-c", SLOW_WORK, "table"], env=env, capture_output=True, timeout=TIMEOUT, check=True
    )
    assert (result.stdout, result.stderr) == (b"done\n", b"")


def test_no_progress_on_a_terminal_when_stdout_is_piped(env: dict[str, str], tmp_path: Path) -> None:
    """A pager reading stdout shares the terminal: a spinner on stderr would draw over it."""
    with open(tmp_path / "stdout", "w+b") as stdout:
        code, written = on_terminal([sys.executable, "-c", SLOW_WORK, "table"], env, stdout=stdout)
        stdout.seek(0)
        assert (code, written, stdout.read()) == (0, b"", b"done\n")


#: Reservation names as anyone may give them: terminal codes, markup, a line break, a
#: right-to-left override, and a name far wider than a terminal.
NASTY_NAMES = ["\x1b[31mred", "[bold]x", "two\nlines", "\u202eevil", "o" * 1000]


def test_tables_show_names_escaped_and_cut_and_json_keeps_them_whole(env: dict[str, str]) -> None:
    for name in NASTY_NAMES:
        subprocess.run([*SHRIKE, "reserve", name], env=env, check=True, capture_output=True, timeout=TIMEOUT)

    piped = subprocess.run([*SHRIKE, "leases"], env=env, capture_output=True, text=True, timeout=TIMEOUT, check=True)
    header, *rows = piped.stdout.splitlines()
    assert "\x1b" not in piped.stdout and "\u202e" not in piped.stdout
    owners = [row.split()[5] for row in rows]
    assert owners == [r"\x1b[31mred", "[bold]x", r"two\nlines", r"\u202eevil", "o" * 39 + "\u2026"]
    assert max(map(len, piped.stdout.splitlines())) < 200

    # On a terminal without colour, not one escape reaches it.
    code, written = on_terminal([*SHRIKE, "leases"], {**env, "NO_COLOR": "1"})
    assert code == 0 and ESC not in written, written

    as_json = subprocess.run(
        [*SHRIKE, "leases", "-o", "json"], env=env, capture_output=True, text=True, timeout=TIMEOUT, check=True
    )
    assert [lease["name"] for lease in json.loads(as_json.stdout)] == NASTY_NAMES


def test_an_error_naming_a_nasty_name_is_one_escaped_line(env: dict[str, str]) -> None:
    result = subprocess.run(
        [*SHRIKE, "release", "--name", "\x1b[31mred\nshrike: all is well"],
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "\x1b" not in result.stderr, result.stderr
    assert r"\x1b[31mred\nshrike: all is well" in result.stderr
