"""The ``shrike`` (and ``oam-docker-ipam``) command line: Typer commands and their output only."""

from __future__ import annotations

from . import doctor, leases, migrate, network, ranges, reconcile, scan, server  # noqa: F401  (each registers its commands on app)
from .app import app


def main() -> None:
    """Console-script entry point."""
    app()


__all__ = ["app", "main"]
