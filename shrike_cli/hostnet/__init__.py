"""Bridging a host onto its LAN for Docker: ``shrike create-network``.

:mod:`.plan` decides (pure values, checked up front), :mod:`.links` (pyroute2) and
:mod:`.docker_net` (Docker SDK) act, :mod:`.persist` renders the boot-time
configuration, and :mod:`.setup` runs a plan as a transaction that either completes
or undoes what it did.
"""
