"""shrike: containers on the host's own LAN subnet, through a Docker IPAM plugin."""
