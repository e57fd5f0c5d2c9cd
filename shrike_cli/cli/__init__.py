"""The ``shrike`` (and ``oam-docker-ipam``) command line: Typer commands and their output only."""

from __future__ import annotations

from . import (  # noqa: F401  (each registers its commands on app)
    check,
    doctor,
    events,
    leases,
    migrate,
    network,
    ranges,
    reconcile,
    scan,
    server,
)
from .app import app


def main() -> None:
    """Console-script entry point."""
    app()


__all__ = ["app", "main"]
