"""The LAN, not only the store (see the README's "Checking the LAN").

* :mod:`.arp`: RFC 5227 probes and announcements on a raw packet socket;
* :mod:`.ndp`: IPv6's: duplicate address detection probes, unsolicited advertisements;
* :mod:`.wire`: what both share: the packet socket, probes sent and answers collected;
* :mod:`.links`: the interface toward a LAN, and entering a container's namespace;
* :mod:`.prober`: is an address in use on the LAN? (the allocator's
  :class:`~shrike_cli.allocator.LanCheck`), answered ahead in the background;
* :mod:`.announce`: a starting container's addresses, announced from inside it;
* :mod:`.scan`: ``shrike scan``'s sweep and what it finds.
"""
