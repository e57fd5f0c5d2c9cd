"""The Docker remote IPAM plugin: protocol (:mod:`.protocol`), unix-socket HTTP server
(:mod:`.server`) and a small client of that socket (:mod:`.client`)."""

from .protocol import Driver
from .server import PLUGIN_DIR, PluginServer, socket_path

__all__ = ["PLUGIN_DIR", "Driver", "PluginServer", "socket_path"]
