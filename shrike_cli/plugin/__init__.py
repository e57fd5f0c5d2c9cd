"""The Docker remote IPAM plugin: protocol (:mod:`.protocol`), unix-socket HTTP server
(:mod:`.server`) and a small client of that socket (:mod:`.client`)."""

from .protocol import Driver
from .server import PluginServer, socket_path

__all__ = ["Driver", "PluginServer", "socket_path"]
