"""Bridging a host onto its LAN for Docker: ``shrike create-network``.

:mod:`.hostview` holds the host's network as values (read, and as laid out),
:mod:`.actions` the steps, and :mod:`.plan` decides which steps to take (pure values,
checked up front). :mod:`.links` (pyroute2) and :mod:`.docker_net` (Docker SDK) act,
:mod:`.persist` renders the boot-time configuration of a layout, and :mod:`.setup`
runs a plan as a transaction that either completes or undoes what it did.
"""
