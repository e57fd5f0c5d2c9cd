"""host-range / ip-range declarations through the library, on both stores."""

from __future__ import annotations

import pytest

from shrike_cli.errors import InvalidInput
from shrike_cli.ipam import Ipam
from shrike_cli.ranges import usage
from shrike_cli.state import CONFIG_KEY


@pytest.fixture
def ipam(store) -> Ipam:
    return Ipam(store, host="hostA")


def test_original_flow(ipam: Ipam) -> None:
    hosts = ipam.declare_host_range("172.25.60.0/22", "172.25.60.182/22", "172.25.63.254")
    assert str(hosts.subnet) == "172.25.60.0/22"
    assert hosts.gateway == "172.25.63.254"
    assert hosts.notes == ("skipping 172.25.60.0: the network address of 172.25.60.0/22",)
    assert hosts.range.size == 182
    containers = ipam.declare_ip_range("172.25.60.187/24", "172.25.60.192/24")
    # A range typed /24 inside the /22 LAN serves the /22.
    assert str(containers.subnet) == "172.25.60.0/22"
    assert ipam.request_address("172.25.60.0/22").cidr == "172.25.60.187/22"


def test_redeclaring_is_idempotent(ipam: Ipam, store) -> None:
    ipam.declare_host_range("198.51.100.1/24", "198.51.100.50/24", "198.51.100.254")
    revision = store.get(CONFIG_KEY).revision
    again = ipam.declare_host_range("198.51.100.1/24", "198.51.100.50/24", None)
    assert not again.created
    assert store.get(CONFIG_KEY).revision == revision


def test_broadcast_skipped_and_said(ipam: Ipam) -> None:
    declared = ipam.declare_ip_range("203.0.113.200/24", "203.0.113.255/24")
    assert declared.notes == ("skipping 203.0.113.255: the broadcast address of 203.0.113.0/24",)
    assert declared.range.size == 55


BAD = [
    ("host", ("198.51.100.1", "198.51.100.9/24", "198.51.100.254"), "no prefix length"),
    ("host", ("198.51.100.1/24", "198.51.100.9/25", "198.51.100.254"), "different prefix lengths"),
    ("host", ("198.51.100.9/24", "198.51.100.1/24", "198.51.100.254"), "is after"),
    ("host", ("198.51.100.1/24", "198.51.101.9/24", "198.51.100.254"), "outside 198.51.100.0/24"),
    ("host", ("198.51.100.1/24", "198.51.100.9/24", "203.0.113.1"), "not a usable address"),
    ("host", ("198.51.100.1/24", "198.51.100.9/24", "198.51.100.5"), "inside the host range"),
    ("host", ("203.0.113.1/24", "203.0.113.9/24", None), "no gateway"),
    ("host", ("198.51.100.300/24", "198.51.100.9/24", "198.51.100.254"), "not a valid IPv4"),
    ("host", ("198.51.100.1/33", "198.51.100.9/33", "198.51.100.254"), "invalid prefix length"),
    ("ip", ("198.51.100.1/24", "198.51.100.9/24"), "overlaps the host range"),
    ("ip", ("198.51.100.100/24", "198.51.100.160/24"), "overlaps the container range"),
    ("ip", ("198.51.100.250/24", "198.51.100.254/24"), "the gateway of"),
    ("ip", ("198.51.100.0/25", "198.51.100.127/25"), "overlaps the host range"),
    ("ip", ("nonsense", "198.51.100.9/24"), "not a valid IPv4"),
]


@pytest.mark.parametrize(("command", "args", "message"), BAD, ids=[m for _, _, m in BAD])
def test_bad_declarations_change_nothing(ipam: Ipam, store, command: str, args: tuple, message: str) -> None:
    ipam.declare_host_range("198.51.100.1/24", "198.51.100.50/24", "198.51.100.254")
    ipam.declare_ip_range("198.51.100.150/24", "198.51.100.199/24")
    before = store.get_prefix("")
    declare = ipam.declare_host_range if command == "host" else ipam.declare_ip_range
    with pytest.raises(InvalidInput, match=message):
        declare(*args)
    assert store.get_prefix("") == before


def test_conflicting_gateway_and_nested_subnet(ipam: Ipam) -> None:
    ipam.declare_host_range("198.51.100.1/24", "198.51.100.50/24", "198.51.100.254")
    with pytest.raises(InvalidInput, match="already has the gateway 198.51.100.254"):
        ipam.declare_host_range("198.51.100.60/24", "198.51.100.70/24", "198.51.100.253")
    with pytest.raises(InvalidInput, match="overlaps the declared subnet"):
        ipam.declare_host_range("198.51.100.60/25", "198.51.100.70/25", "198.51.100.126")
    # Same subnet, gateway inherited.
    assert ipam.declare_host_range("198.51.100.60/24", "198.51.100.70/24").gateway == "198.51.100.254"


def test_a_slash16_is_a_handful_of_keys(ipam: Ipam, store) -> None:
    ipam.declare_host_range("10.20.0.1/16", "10.20.0.254/16", "10.20.255.254")
    ipam.declare_ip_range("10.20.1.0/16", "10.20.255.253/16")
    ipam.request_address("10.20.0.0/16")
    assert len(store.get_prefix("")) <= 4


def test_usage_counts(ipam: Ipam) -> None:
    ipam.declare_host_range("198.51.100.1/24", "198.51.100.50/24", "198.51.100.254")
    ipam.declare_ip_range("198.51.100.150/24", "198.51.100.159/24")
    for _ in range(3):
        ipam.request_address("198.51.100.0/24")
    ipam.reserve("web1")
    ipam.claim_host("198.51.100.7")
    rows = {u.kind: u.to_json() for u in usage(ipam.config(), ipam.leases())}
    assert (rows["container"]["held"], rows["container"]["reserved"], rows["container"]["free"]) == (3, 1, 6)
    assert rows["host"]["held"] == 1
