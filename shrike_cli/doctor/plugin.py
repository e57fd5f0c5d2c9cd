"""The plugin: is its socket there, and does it answer Plugin.Activate as an IPAM driver?"""

from __future__ import annotations

import http.client
import os
import stat
from collections.abc import Generator
from pathlib import Path
from typing import Any

from ..errors import ShrikeError
from ..plugin import PLUGIN_DIR, socket_path
from ..plugin.client import PluginClient
from ..plugin_names import is_ipam_driver
from .check import FAIL, OK, Check

#: Seconds the plugin may take to answer Plugin.Activate (it answers from memory).
PLUGIN_TIMEOUT = 2.0


def plugin_check(plugin_dir: Path, plugin_name: str, timeout: float) -> Generator[Check, None, Path | None]:
    """Whether the plugin answers on its socket; returns the socket, once it did."""
    try:
        path = socket_path(plugin_dir, plugin_name)
    except ShrikeError as err:
        yield Check("plugin", FAIL, str(err), "give the --plugin-name 'shrike server' runs with")
        return None
    start = f"shrike server --plugin-name {plugin_name}"
    if plugin_dir != PLUGIN_DIR:
        start += f" --plugin-dir {plugin_dir}"
    if not os.path.lexists(path):
        yield Check(
            "plugin", FAIL, f"there is no plugin socket {path}: the plugin is not running", f"start it: {start}"
        )
        return None
    if not stat.S_ISSOCK(os.lstat(path).st_mode):
        yield Check("plugin", FAIL, f"{path} is not a socket", f"remove it, then start the plugin: {start}")
        return None
    check = _activate(path, timeout, start)
    yield check
    return path if check.status == OK else None


def _activate(path: Path, timeout: float, start: str) -> Check:
    """Call Plugin.Activate as dockerd does; an IPAM driver must answer it."""
    try:
        with PluginClient(path, timeout=timeout) as client:
            status, reply = client.call("Plugin.Activate")
    except ConnectionRefusedError:
        return Check(
            "plugin",
            FAIL,
            f"the socket {path} exists but nothing answers: is shrike server running?",
            f"start it: {start} (it replaces the stale socket)",
        )
    except PermissionError:
        return Check(
            "plugin",
            FAIL,
            f"cannot connect to {path}: permission denied",
            "run as root, or as a member of the docker group",
        )
    except TimeoutError:
        return Check(
            "plugin",
            FAIL,
            f"{path} took the connection but did not answer Plugin.Activate within {timeout:g} s",
            "the plugin is stuck or overloaded: look at its log (journalctl -u shrike), then restart it",
        )
    except (OSError, ValueError, http.client.HTTPException) as err:
        return Check(
            "plugin",
            FAIL,
            f"{path} did not answer Plugin.Activate properly: {str(err) or type(err).__name__}",
            f"is something else listening there? Stop it, then start the plugin: {start}",
        )
    if not is_ipam_driver(status, reply):
        implements: Any = reply.get("Implements") if isinstance(reply, dict) else None
        what = ", ".join(map(str, implements)) if isinstance(implements, list) and implements else f"HTTP {status}"
        return Check(
            "plugin",
            FAIL,
            f"{path} answers Plugin.Activate with {what}, not as an IPAM driver",
            "another plugin has this name: run shrike server with another --plugin-name",
        )
    return Check("plugin", OK, f"{path} answers Plugin.Activate as an IPAM driver")
