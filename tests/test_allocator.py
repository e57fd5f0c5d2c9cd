"""The allocator's rules, through the Ipam API, on both stores."""

from __future__ import annotations

import multiprocessing
from collections import Counter

import pytest

from shrike_cli.errors import Conflict, InvalidInput, NotFound
from shrike_cli.ipam import Ipam
from shrike_cli.model import STATE_RELEASED, STATE_RESERVED
from tests.fixtures.stores import LAN, open_store_spec

# lan_ipam (tests/fixtures/stores.py): host "hostA", LAN with hosts .1-.50, gateway .254
# and ten container addresses, .100-.109, on both stores.


def fill(ipam: Ipam) -> list[str]:
    return [ipam.request_address(LAN).ip for _ in range(10)]


def test_addresses_in_order_with_pool_prefix(lan_ipam: Ipam) -> None:
    lease = lan_ipam.request_address(LAN, mac="02:42:C6:33:64:64")
    assert lease.cidr == "198.51.100.100/24"
    assert (lease.kind, lease.state, lease.host, lease.mac) == ("container", "held", "hostA", "02:42:c6:33:64:64")
    assert lease.since.endswith("Z")


def test_full_range_is_the_only_failure(lan_ipam: Ipam) -> None:
    assert fill(lan_ipam) == [f"198.51.100.{n}" for n in range(100, 110)]
    with pytest.raises(Conflict, match="no free address left"):
        lan_ipam.request_address(LAN)


def test_unknown_subnet(lan_ipam: Ipam) -> None:
    with pytest.raises(NotFound, match="no container range in 203.0.113.0/24"):
        lan_ipam.request_address("203.0.113.0/24")


def test_released_addresses_come_back_last_longest_idle_first(lan_ipam: Ipam) -> None:
    first = [lan_ipam.request_address(LAN).ip for _ in range(3)]
    lan_ipam.release_address(first[1])
    lan_ipam.release_address(first[0])
    # Never-used addresses go first...
    fresh = [lan_ipam.request_address(LAN).ip for _ in range(7)]
    assert first[1] not in fresh and first[0] not in fresh
    # ...then the longest idle.
    assert lan_ipam.request_address(LAN).ip == first[1]
    assert lan_ipam.request_address(LAN).ip == first[0]


def test_release_is_harmless_twice_and_for_unknown(lan_ipam: Ipam) -> None:
    ip = lan_ipam.request_address(LAN).ip
    assert lan_ipam.release_address(ip).state == STATE_RELEASED
    assert lan_ipam.release_address(ip).state == STATE_RELEASED
    assert lan_ipam.release_address("198.51.100.200") is None
    with pytest.raises(NotFound):
        lan_ipam.release_container(ip)


def test_specific_address(lan_ipam: Ipam) -> None:
    assert lan_ipam.request_address(LAN, "198.51.100.105").cidr == "198.51.100.105/24"
    with pytest.raises(Conflict, match="already in use"):
        lan_ipam.request_address(LAN, "198.51.100.105")
    # Dynamic allocation steps over the explicitly claimed address.
    assert "198.51.100.105" not in fill_remaining(lan_ipam)


def fill_remaining(ipam: Ipam) -> list[str]:
    got = []
    while True:
        try:
            got.append(ipam.request_address(LAN).ip)
        except Conflict:
            return got


@pytest.mark.parametrize(
    ("ip", "message"),
    [
        ("198.51.100.7", "host address"),
        ("198.51.100.254", "gateway"),
        ("198.51.100.60", "outside every container range"),
        ("203.0.113.5", "outside the subnet"),
        ("198.51.100.0/24", "without /prefix"),
    ],
)
def test_specific_address_refused(lan_ipam: Ipam, ip: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        lan_ipam.request_address(LAN, ip)


def test_gateway_and_host_addresses_never_dynamic(lan_ipam: Ipam) -> None:
    lan_ipam.declare_ip_range("198.51.100.51/24", "198.51.100.53/24")
    got = set(fill_remaining(lan_ipam))
    assert len(got) == 13
    assert all(100 <= int(ip.rsplit(".", 1)[1]) <= 109 or 51 <= int(ip.rsplit(".", 1)[1]) <= 53 for ip in got)


def test_sub_pool_narrows(lan_ipam: Ipam) -> None:
    assert lan_ipam.request_address(LAN, sub_pool="198.51.100.104/30").ip == "198.51.100.104"
    assert lan_ipam.request_address(LAN).ip == "198.51.100.100"
    with pytest.raises(NotFound):
        lan_ipam.request_address(LAN, sub_pool="198.51.100.64/28")


def test_mac_gets_its_address_back(lan_ipam: Ipam) -> None:
    a = lan_ipam.request_address(LAN, mac="02:00:00:00:00:01").ip
    lan_ipam.request_address(LAN, mac="02:00:00:00:00:02")
    lan_ipam.release_address(a)
    assert lan_ipam.request_address(LAN, mac="02:00:00:00:00:01").ip == a


def test_mac_whose_address_went_gets_a_fresh_one(lan_ipam: Ipam) -> None:
    a = lan_ipam.request_address(LAN, mac="02:00:00:00:00:01").ip
    lan_ipam.release_address(a)
    assert lan_ipam.request_address(LAN, a).ip == a  # someone else took it explicitly
    again = lan_ipam.request_address(LAN, mac="02:00:00:00:00:01")
    assert again.ip not in (a,) and again.mac == "02:00:00:00:00:01"
    lan_ipam.release_address(again.ip)
    assert lan_ipam.request_address(LAN, mac="02:00:00:00:00:01").ip == again.ip


def test_mac_index_stays_small(lan_ipam: Ipam, store) -> None:
    for n in range(30):
        lease = lan_ipam.request_address(LAN, mac=f"02:00:00:00:01:{n:02x}")
        lan_ipam.release_address(lease.ip)
    assert len(store.get_prefix("macs/")) <= 10


def test_reservation_survives_release_and_is_never_dynamic(lan_ipam: Ipam) -> None:
    ip = lan_ipam.reserve("web1")
    assert lan_ipam.reserve("web1") == ip  # idempotent
    assert ip.state == STATE_RESERVED
    others = fill_remaining(lan_ipam)
    assert ip.ip not in others
    held = lan_ipam.request_address(LAN, ip.ip)  # docker run --ip
    assert (held.state, held.name) == ("held", "web1")
    assert lan_ipam.release_address(ip.ip).state == STATE_RESERVED  # container stopped
    assert lan_ipam.release_name("web1").state == STATE_RELEASED
    assert lan_ipam.request_address(LAN).ip == ip.ip


def test_reserve_specific_and_conflicts(lan_ipam: Ipam) -> None:
    assert lan_ipam.reserve("db", ip="198.51.100.108").ip == "198.51.100.108"
    with pytest.raises(Conflict, match="db already holds"):
        lan_ipam.reserve("db", ip="198.51.100.107")
    with pytest.raises(Conflict, match="already in use"):
        lan_ipam.reserve("other", ip="198.51.100.108")
    with pytest.raises(NotFound):
        lan_ipam.release_name("nobody")


def test_host_addresses(lan_ipam: Ipam, store) -> None:
    assert lan_ipam.claim_host("198.51.100.39").kind == "host"
    assert lan_ipam.claim_host("198.51.100.39").host == "hostA"  # idempotent
    with pytest.raises(Conflict):
        Ipam(store, host="hostB").claim_host("198.51.100.39")
    with pytest.raises(InvalidInput, match="not in any host range"):
        lan_ipam.claim_host("198.51.100.100")
    with pytest.raises(InvalidInput, match="not a container's"):
        lan_ipam.release_container("198.51.100.39")
    assert lan_ipam.release_host("198.51.100.39").ip == "198.51.100.39"
    with pytest.raises(NotFound):
        lan_ipam.release_host("198.51.100.39")


def test_gateway_and_aux_are_shared_records(lan_ipam: Ipam, store) -> None:
    other = Ipam(store, host="hostB")
    lan_ipam.claim_host("198.51.100.39")
    assert lan_ipam.request_gateway(LAN, "198.51.100.39").kind == "host"
    with pytest.raises(Conflict, match="address of host hostA"):
        other.request_gateway(LAN, "198.51.100.39")
    lan_ipam.request_gateway(LAN, "198.51.100.250", kind="aux")
    assert other.request_gateway(LAN, "198.51.100.250", kind="aux").users == ("hostA", "hostB")
    with pytest.raises(InvalidInput, match="container address"):
        lan_ipam.request_gateway(LAN, "198.51.100.100")
    lan_ipam.release_address("198.51.100.250")
    assert other.release_address("198.51.100.250").users == ()
    assert lan_ipam.lease("198.51.100.250") is None
    assert lan_ipam.request_address(LAN).ip == "198.51.100.100"
    # The LAN's gateway, and a host address, as aux addresses: kept from containers
    # already, they are acknowledged and nothing is recorded, so no host is ever blocked.
    assert lan_ipam.request_gateway(LAN, "198.51.100.254", kind="aux") is None
    assert other.request_gateway(LAN, "198.51.100.40", kind="aux") is None
    assert lan_ipam.lease("198.51.100.254") is None and lan_ipam.lease("198.51.100.40") is None


def _allocate_many(spec: dict, count: int, queue: multiprocessing.Queue) -> None:
    store = open_store_spec(spec)
    ipam = Ipam(store, host=f"proc{multiprocessing.current_process().pid}")
    got, errors = [], []
    for _ in range(count):
        try:
            got.append(ipam.request_address("198.51.100.0/24").ip)
        except Exception as err:  # noqa: BLE001 - every failure is reported to the test
            errors.append(repr(err))
    queue.put((got, errors))
    store.close()


def test_many_processes_one_range(lan_ipam: Ipam, store_factory) -> None:
    lan_ipam.declare_ip_range("198.51.100.110/24", "198.51.100.249/24")
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    procs = [context.Process(target=_allocate_many, args=(store_factory.spec, 30, queue)) for _ in range(5)]
    for proc in procs:
        proc.start()
    results = [queue.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(timeout=30)
    got = [ip for ips, _ in results for ip in ips]
    assert [err for _, errs in results for err in errs] == []
    assert len(got) == 150
    assert [ip for ip, n in Counter(got).items() if n > 1] == []
    assert {lease.ip for lease in lan_ipam.leases()} == set(got)
